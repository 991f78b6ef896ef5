"""The ledger read back: ``history`` (of a model, version or alias) and ``audit`` (a search).

``--at``, ``--since`` and ``--until`` are passed to the library as given; it parses them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from modelledger import AliasChange, LedgerEvent, Registry, parse_model_uri

from ._common import (
    TIME_HELP,
    as_text,
    cursor_option,
    echo_json,
    json_option,
    limit_option,
    make_console,
    page_args,
    print_next_cursor,
    registry_options,
)


def _events_table(events: Iterable[LedgerEvent]) -> Table:
    table = Table("Seq", "Time", "Actor", "Action", "Subject", "Reason")
    for e in events:
        table.add_row(
            str(e.seq),
            escape(e.time),
            escape(e.actor),
            escape(e.action),
            escape(e.subject),
            as_text(e.reason),
        )
    return table


def _split_alias(target: str) -> tuple[str, str | None]:
    """``MODEL@ALIAS`` or ``models:/MODEL@ALIAS`` -> (MODEL, ALIAS); anything else -> (target, None)."""
    if "@" not in target:
        return target, None
    ref = parse_model_uri(target if target.startswith("models:/") else f"models:/{target}")
    return ref.name, ref.alias


def _alias_moves(registry: Registry, name: str, alias_name: str) -> list[dict[str, Any]]:
    """Each move of the alias, with the reason of the ledger event that moved it."""
    changes: Sequence[AliasChange] = registry.alias_history(name, alias_name)
    reasons = {e.seq: e.reason for e in registry.history(name)} if changes else {}
    return [{**c.to_dict(), "reason": reasons.get(c.seq)} for c in changes]


@click.command()
@click.argument("target", metavar="MODEL[@ALIAS]")
@click.option(
    "--at",
    "when",
    default=None,
    metavar="TIME",
    help=f"With MODEL@ALIAS: which version held the alias at this time ({TIME_HELP}; UTC without offset).",
)
@json_option
@registry_options
def history(registry: Registry, target: str, when: str | None, as_json: bool) -> None:
    """The ledger's events about a model or a version, or every move of an alias.

    MODEL and models:/MODEL/N list events (seq, time, actor, action, subject,
    reason); MODEL@ALIAS lists which version the alias pointed to after each move.

    \b
    Example:
        modelledger history credit-risk
        modelledger history models:/credit-risk/3 --json
        modelledger history credit-risk@production
        modelledger history credit-risk@production --at 2026-11-01T09:30:00Z
    """
    name, alias_name = _split_alias(target)
    if when is not None:
        if alias_name is None:
            raise click.UsageError("--at needs MODEL@ALIAS, e.g. credit-risk@production")
        version = registry.alias_at(name, alias_name, when)
        if as_json:
            echo_json({"model": name, "alias": alias_name, "at": when, "version": version})
        elif version is None:
            click.echo(f"models:/{name}@{alias_name} was not set at {when}")
        else:
            click.echo(f"models:/{name}@{alias_name} at {when}: models:/{name}/{version}")
        return
    if alias_name is not None:
        moves = _alias_moves(registry, name, alias_name)
        if as_json:
            echo_json(moves)
            return
        table = Table("Seq", "Time", "Actor", "Action", "Version", "Reason")
        for m in moves:
            version_text = f"models:/{name}/{m['version']}" if m["version"] is not None else "(removed)"
            table.add_row(
                str(m["seq"]),
                escape(m["time"]),
                escape(m["actor"]),
                escape(m["action"]),
                escape(version_text),
                as_text(m["reason"]),
            )
        make_console().print(table)
        return
    events = registry.history(target)
    if as_json:
        echo_json([e.to_dict() for e in events])
        return
    make_console().print(_events_table(events))


@click.command()
@click.option("--model", default=None, help="Only events about this model (its versions and aliases).")
@click.option("--version", type=int, default=None, help="Only events about this version (needs --model).")
@click.option("--actor", default=None, help="Only events by this actor.")
@click.option("--action", default=None, help="Only this action; may end with * (e.g. 'version.*').")
@click.option("--since", default=None, metavar="TIME", help=f"From this time ({TIME_HELP}).")
@click.option("--until", default=None, metavar="TIME", help="Up to this time.")
@limit_option
@cursor_option
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print every matching event as JSON lines (one object a line), following the pages.",
)
@registry_options
def audit(
    registry: Registry,
    model: str | None,
    version: int | None,
    actor: str | None,
    action: str | None,
    since: str | None,
    until: str | None,
    limit: int | None,
    cursor: str | None,
    as_json: bool,
) -> None:
    """Search the ledger, oldest first: one page as a table, or every event as JSON lines.

    With --json each line is one event (seq, time, actor, action, subject, data,
    reason) and the pages are followed to the end; --limit sets the page size.

    \b
    Example:
        modelledger audit --model credit-risk --action 'version.*' --since 2026-11-01
        modelledger audit --actor bob@bank.example --json > bob.jsonl
    """
    filters: dict[str, Any] = {
        "model": model,
        "version": version,
        "actor": actor,
        "action": action,
        "since": since,
        "until": until,
    }
    if not as_json:
        page = registry.audit(**filters, **page_args(limit, cursor))
        make_console().print(_events_table(page))
        print_next_cursor(page)
        return
    while True:  # one page in memory at a time
        page = registry.audit(**filters, **page_args(limit, cursor))
        for event in page:
            click.echo(json.dumps(event.to_dict(), default=str))
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
