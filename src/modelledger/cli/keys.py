"""``keys export`` (the public half of the registry's signing key) and ``checkpoint export``
(the newest signed checkpoint): what to keep outside the registry to pin ``verify``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from modelledger import InvalidInput, Registry

from ._common import echo_json, json_option, output_option, registry_options


@click.group()
def keys() -> None:
    """The registry's signing key: export its public half to verify the ledger anywhere.

    \b
    Example:
        modelledger keys export -o registry.pub.pem
    """


@keys.command("export")
@output_option("Write the PEM (or with --bundle the JSON) here; default: stdout.")
@click.option(
    "--bundle",
    is_flag=True,
    help="Export the trust bundle: the root key and every signed enrolment, for `receipt verify --bundle`.",
)
@click.option(
    "--model-signing",
    "model_signing",
    is_flag=True,
    help="Export your model-signing key instead (ECDSA P-256, PEM), for `model_signing verify key`.",
)
@json_option
@registry_options
def keys_export(
    registry: Registry, output_path: str | None, bundle: bool, model_signing: bool, as_json: bool
) -> None:
    """Print or write the registry's root public key (PEM), or its trust bundle (JSON).

    \b
    Example:
        modelledger keys export -o registry.pub.pem
        modelledger keys export --bundle -o bundle.json
        modelledger keys export --model-signing -o model-signing.pub.pem
    """
    if bundle:  # a JSON document already, with or without --json
        _emit_json(registry.trust_bundle(), output_path, "the trust bundle")
        return
    pem = registry.model_signing_key() if model_signing else registry.public_key()
    if as_json and output_path is None:
        echo_json({"public_key": pem.decode("ascii")})
        return
    if output_path is None:
        click.echo(pem.decode("ascii"), nl=False)
        return
    try:
        Path(output_path).write_bytes(pem)
    except OSError as exc:
        raise InvalidInput(f"cannot write {output_path}: {exc}") from exc
    what = "your model-signing key" if model_signing else "the registry's public key"
    click.echo(f"Wrote {what} to {output_path}", err=True)


@click.group()
def checkpoint() -> None:
    """Signed checkpoints of the ledger: keep the latest outside the registry to pin `verify`.

    \b
    Example:
        modelledger checkpoint export -o cp.json
    """


@checkpoint.command("export")
@output_option("Write the JSON here; default: stdout.")
@json_option
@registry_options
def checkpoint_export(registry: Registry, output_path: str | None, as_json: bool) -> None:
    """Print or write the newest signed checkpoint (JSON), for `verify --trusted-checkpoint`.

    \b
    Example:
        modelledger checkpoint export -o cp.json
        modelledger checkpoint export > cp.json
    """
    del as_json  # the output is JSON with or without it; accepted so every command takes --json
    _emit_json(registry.latest_checkpoint().to_dict(), output_path, "the latest checkpoint")


def _emit_json(document: object, output_path: str | None, what: str) -> None:
    """Print ``document`` as JSON, or write it to ``output_path`` and say so on stderr."""
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    if output_path is None:
        click.echo(text, nl=False)
        return
    try:
        Path(output_path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot write {output_path}: {exc}") from exc
    click.echo(f"Wrote {what} to {output_path}", err=True)
