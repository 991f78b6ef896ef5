"""``alias set|rm``: movable names for versions (``models:/NAME@ALIAS``)."""

from __future__ import annotations

import click

from modelledger import Registry

from ._common import reason_option, registry_options


@click.group()
def alias() -> None:
    """Aliases: movable names for versions (models:/NAME@ALIAS).

    \b
    Example:
        modelledger alias set credit-risk champion 3
    """


@alias.command("set")
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@click.argument("version", type=int)
@reason_option
@registry_options
def alias_set(registry: Registry, name: str, alias_name: str, version: int, reason: str | None) -> None:
    """Point ALIAS at a version of NAME (moving it if it was set); recorded in the ledger.

    \b
    Example:
        modelledger alias set credit-risk champion 3
        modelledger alias set credit-risk challenger 4 --reason "shadow test, RISK-88"
    """
    registry.set_alias(name, alias_name, version, reason=reason)
    click.echo(f"models:/{name}@{alias_name} -> models:/{name}/{version}")


@alias.command("rm")
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@reason_option
@registry_options
def alias_rm(registry: Registry, name: str, alias_name: str, reason: str | None) -> None:
    """Remove an alias; recorded in the ledger.

    \b
    Example:
        modelledger alias rm credit-risk staging --reason "staging retired"
    """
    registry.delete_alias(name, alias_name, reason=reason)
    click.echo(f"Removed models:/{name}@{alias_name}")
