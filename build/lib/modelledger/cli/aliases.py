"""``alias list|set|rm``: movable names for versions (``models:/NAME@ALIAS``)."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from modelledger import Registry

from ._common import echo_json, json_option, make_console, reason_option, registry_options


@click.group()
def alias() -> None:
    """Aliases: movable names for versions (models:/NAME@ALIAS): list, set, rm.

    \b
    Example:
        modelledger alias list credit-risk
        modelledger alias set credit-risk champion 3
    """


@alias.command("list")
@click.argument("name")
@json_option
@registry_options
def alias_list(registry: Registry, name: str, as_json: bool) -> None:
    """List a model's aliases, the version each points at, and who moved it last.

    \b
    Example:
        modelledger alias list credit-risk
        modelledger alias list credit-risk --json
    """
    registry.get_model(name)  # an unknown model is an error, not an empty list
    # the move that set each alias the model has now, by alias name
    current = registry.alias_history(name, latest=True)
    items: list[dict[str, str | int]] = [
        {
            "alias": c.alias,
            "uri": f"models:/{name}@{c.alias}",
            "version": c.version,
            "version_uri": f"models:/{name}/{c.version}",
            "moved_at": c.time,
            "moved_by": c.actor,
        }
        for c in current
        if c.version is not None  # never None with latest=True; narrows the type
    ]
    if as_json:
        echo_json({"model": name, "aliases": items})
        return
    if not items:
        click.echo(f"{name} has no aliases")
        return
    table = Table("Alias", "Version", "Moved at", "By")
    for item in items:
        table.add_row(*(escape(str(item[k])) for k in ("alias", "version_uri", "moved_at", "moved_by")))
    make_console().print(table)


@alias.command("set")
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@click.argument("version", type=int)
@reason_option
@json_option
@registry_options
def alias_set(
    registry: Registry, name: str, alias_name: str, version: int, reason: str | None, as_json: bool
) -> None:
    """Point ALIAS at a version of NAME (moving it if it was set); recorded in the ledger.

    \b
    Example:
        modelledger alias set credit-risk champion 3
        modelledger alias set credit-risk challenger 4 --reason "shadow test, RISK-88"
    """
    registry.set_alias(name, alias_name, version, reason=reason)
    if as_json:
        uri = f"models:/{name}/{version}"
        echo_json({"model": name, "alias": alias_name, "version": version, "uri": uri})
        return
    click.echo(f"models:/{name}@{alias_name} -> models:/{name}/{version}")


@alias.command("rm")
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@reason_option
@json_option
@registry_options
def alias_rm(registry: Registry, name: str, alias_name: str, reason: str | None, as_json: bool) -> None:
    """Remove an alias; recorded in the ledger.

    \b
    Example:
        modelledger alias rm credit-risk staging --reason "staging retired"
    """
    registry.delete_alias(name, alias_name, reason=reason)
    if as_json:
        echo_json({"model": name, "alias": alias_name, "removed": True})
        return
    click.echo(f"Removed models:/{name}@{alias_name}")
