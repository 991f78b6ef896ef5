"""``erase``: remove bytes that must go, as a recorded erasure."""

from __future__ import annotations

import click

from modelledger import Registry

from ._common import echo_json, json_option, registry_options


@click.command()
@click.argument("target")
@click.option("--reason", required=True, help="Why (the legal ground, a ticket); recorded in the ledger.")
@click.option("--yes", is_flag=True, help="Confirm: the bytes are destroyed and cannot be brought back.")
@json_option
@registry_options
def erase(registry: Registry, target: str, reason: str, yes: bool, as_json: bool) -> None:
    """Erase a version's artefacts, a data set version's file or a version's captured predictions.

    The erasure is recorded in the ledger (what, with its sha256s; who; when; why) before the
    bytes are removed; rows, digests and history stay, and `verify` lists the erasure.

    \b
    Example:
        modelledger erase models:/credit-risk/3 --reason "GDPR art. 17, ticket 812" --yes
        modelledger erase datasets:/applications/2 --reason "retention ended" --yes
        modelledger erase predictions:/credit-risk/3 --reason "retention ended" --yes
    """
    if not yes:
        raise click.UsageError(f"erasing {target} destroys its bytes for good: add --yes to confirm")
    erasure = registry.erase(target, reason=reason)
    if as_json:
        echo_json(erasure.to_dict())
        return
    click.echo(f"Erased {erasure.target}: {len(erasure.files)} file(s), ledger event {erasure.seq}")
