"""``keys export``: the public half of the registry's signing key."""

from __future__ import annotations

from pathlib import Path

import click

from modelledger import InvalidInput, Registry

from ._common import output_option, registry_options


@click.group()
def keys() -> None:
    """The registry's signing key: export its public half to verify the ledger anywhere.

    \b
    Example:
        modelledger keys export -o registry.pub.pem
    """


@keys.command("export")
@output_option("Write the PEM here; default: stdout.")
@registry_options
def keys_export(registry: Registry, output_path: str | None) -> None:
    """Print or write the registry's public key (PEM).

    \b
    Example:
        modelledger keys export -o registry.pub.pem
        modelledger keys export > registry.pub.pem
    """
    pem = registry.public_key()
    if output_path is None:
        click.echo(pem.decode("ascii"), nl=False)
        return
    try:
        Path(output_path).write_bytes(pem)
    except OSError as exc:
        raise InvalidInput(f"cannot write {output_path}: {exc}") from exc
    click.echo(f"Wrote the registry's public key to {output_path}", err=True)
