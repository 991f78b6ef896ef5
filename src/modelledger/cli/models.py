"""``models list|show|create``: registered models."""

from __future__ import annotations

from collections.abc import Iterable

import click
from rich.markup import escape
from rich.table import Table

from modelledger import Model, Registry

from ._common import (
    cursor_option,
    echo_json,
    json_option,
    limit_option,
    make_console,
    page_args,
    page_json,
    print_next_cursor,
    print_section,
    registry_options,
    tag_option,
    tags_text,
)


@click.group()
def models() -> None:
    """Registered models: list, show, create.

    \b
    Example:
        modelledger models list --prefix credit
    """


def _models_table(items: Iterable[Model]) -> Table:
    table = Table("Name", "Latest", "Description", "Tags", "Created")
    for m in items:
        table.add_row(
            escape(m.name),
            str(m.latest_version or "-"),
            escape(m.description),
            tags_text(m.tags),
            m.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    return table


@models.command("list")
@click.option("--prefix", default=None, help="Only models whose name starts with this.")
@tag_option
@limit_option
@cursor_option
@json_option
@registry_options
def models_list(
    registry: Registry,
    prefix: str | None,
    tags: dict[str, str],
    limit: int | None,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List models by name, filtered by name prefix and tags (all must match).

    \b
    Example:
        modelledger models list --prefix credit --tag team=risk --limit 20
        modelledger models list --json --cursor eyJhIjoxfQ
    """
    page = registry.list_models(prefix=prefix, tags=tags, **page_args(limit, cursor))
    if as_json:
        echo_json(page_json(page))
        return
    make_console().print(_models_table(page))
    print_next_cursor(page)


@models.command("show")
@click.argument("name")
@json_option
@registry_options
def models_show(registry: Registry, name: str, as_json: bool) -> None:
    """Show one model.

    \b
    Example:
        modelledger models show credit-risk
    """
    model = registry.get_model(name)
    if as_json:
        echo_json(model.to_dict())
        return
    print_section(
        make_console(),
        f"Model {model.name}",
        [
            ("Description", model.description or None),
            ("Tags", ", ".join(f"{k}={v}" for k, v in sorted(model.tags.items())) or None),
            ("Latest version", model.latest_version or None),
            ("Created", model.created_at.isoformat()),
        ],
    )


@models.command("create")
@click.argument("name")
@click.option("--description", default="", help="What the model is for.")
@tag_option
@json_option
@registry_options
def models_create(
    registry: Registry, name: str, description: str, tags: dict[str, str], as_json: bool
) -> None:
    """Create a registered model (register also creates it on first use).

    \b
    Example:
        modelledger models create credit-risk --description "Probability of default" --tag team=risk
    """
    model = registry.create_model(name, description=description, tags=tags)
    if as_json:
        echo_json(model.to_dict())
        return
    click.echo(f"Created model {model.name}")
