"""``search versions|models``: find versions by stage, alias, tag, metric, registrant and time,
and models by name, tag and the stage of their latest version."""

from __future__ import annotations

import click

from modelledger import Registry

from ._common import (
    as_text,
    cursor_option,
    echo_json,
    json_option,
    limit_option,
    make_console,
    page_args,
    page_json,
    print_next_cursor,
    registry_options,
    tag_option,
)


@click.group()
def search() -> None:
    """Search versions (a query) and models (name, tag, stage of the latest version).

    \b
    Example:
        modelledger search versions "stage = 'approved' and metrics.auc > 0.8"
        modelledger search models --stage deployed --tag team=risk
    """


@search.command("versions")
@click.argument("query", required=False, default="")
@click.option("--model", default=None, help="Only this model.")
@click.option("--stage", default=None, help="Only versions at this stage.")
@click.option("--alias", "alias_name", default=None, help="Only the version this alias points at.")
@click.option("--registered-by", default=None, help="Only versions this member registered.")
@click.option(
    "--since", default=None, help="Registered at or after (RFC 3339, a date, or 7d, 12h, yesterday)."
)
@click.option("--until", default=None, help="Registered before.")
@limit_option
@cursor_option
@json_option
@registry_options
def search_versions(
    registry: Registry,
    query: str,
    model: str | None,
    stage: str | None,
    alias_name: str | None,
    registered_by: str | None,
    since: str | None,
    until: str | None,
    limit: int | None,
    cursor: str | None,
    as_json: bool,
) -> None:
    """Versions of any model that meet QUERY and the options, newest first.

    QUERY joins conditions with `and`: model, version, stage, alias, registered_by,
    created, metrics.NAME, tags.KEY; operators = != < <= > >=; values are numbers,
    'quoted strings' or bare words.

    \b
    Example:
        modelledger search versions "stage = 'approved' and metrics.auc > 0.8"
        modelledger search versions "metrics.auc >= 0.85" --model credit-risk --since 30d --json
    """
    page = registry.search_versions(
        query,
        model=model,
        stage=stage,
        alias=alias_name,
        registered_by=registered_by,
        since=since,
        until=until,
        **page_args(limit, cursor),
    )
    if as_json:
        echo_json(page_json(page))
        return
    from rich.table import Table  # only the table view needs it

    table = Table("version", "registered", "by", "aliases", "metrics")
    for v in page:
        metrics = v.manifest.get("metrics") or {}
        shown = ", ".join(
            f"{k}={as_text(round(x, 4) if isinstance(x, float) else x)}" for k, x in metrics.items()
        )
        table.add_row(
            v.uri, v.created_at.strftime("%Y-%m-%d %H:%M"), v.created_by, ", ".join(v.aliases), shown
        )
    make_console().print(table)
    print_next_cursor(page)


@search.command("models")
@click.option("--prefix", default=None, help="Names starting with this.")
@tag_option
@click.option("--stage", default=None, help="Only models whose latest version is at this stage.")
@limit_option
@cursor_option
@json_option
@registry_options
def search_models(
    registry: Registry,
    prefix: str | None,
    tags: dict[str, str],
    stage: str | None,
    limit: int | None,
    cursor: str | None,
    as_json: bool,
) -> None:
    """Models by name prefix, tags and the stage of their latest version.

    \b
    Example:
        modelledger search models --stage approved --tag team=risk
    """
    page = registry.list_models(prefix=prefix, tags=tags, stage=stage, **page_args(limit, cursor))
    if as_json:
        echo_json(page_json(page))
        return
    from rich.table import Table  # only the table view needs it

    table = Table("model", "latest version", "description")
    for m in page:
        table.add_row(m.name, str(m.latest_version), m.description)
    make_console().print(table)
    print_next_cursor(page)


def _round(value: object) -> object:
    return round(value, 4) if isinstance(value, float) else value
