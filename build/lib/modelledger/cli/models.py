"""``models list|show|create|archive|unarchive|rename``: registered models."""

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
    reason_option,
    registry_options,
    required_reason_option,
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
@click.option("--archived", "include_archived", is_flag=True, help="Also list archived models.")
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
    include_archived: bool = False,
) -> None:
    """List models by name, filtered by name prefix and tags (all must match).

    \b
    Example:
        modelledger models list --prefix credit --tag team=risk --limit 20
        modelledger models list --json --cursor eyJhIjoxfQ
    """
    page = registry.list_models(
        prefix=prefix, tags=tags, include_archived=include_archived, **page_args(limit, cursor)
    )
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
            *([("Archived", "yes")] if model.archived else []),
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


@models.command("archive")
@click.argument("name")
@reason_option
@json_option
@registry_options
def models_archive(registry: Registry, name: str, reason: str | None, as_json: bool) -> None:
    """Archive a model: hidden from `models list`, no new versions, no deployments.

    \b
    Example:
        modelledger models archive credit-risk-v0 --reason "replaced by credit-risk"
    """
    model = registry.archive_model(name, reason=reason)
    if as_json:
        echo_json(model.to_dict())
        return
    click.echo(f"Archived model {model.name}")


@models.command("unarchive")
@click.argument("name")
@reason_option
@json_option
@registry_options
def models_unarchive(registry: Registry, name: str, reason: str | None, as_json: bool) -> None:
    """Bring an archived model back.

    \b
    Example:
        modelledger models unarchive credit-risk-v0 --reason "needed for the 2026 audit"
    """
    model = registry.unarchive_model(name, reason=reason)
    if as_json:
        echo_json(model.to_dict())
        return
    click.echo(f"Unarchived model {model.name}")


@models.command("rename")
@click.argument("old")
@click.argument("new")
@required_reason_option
@json_option
@registry_options
def models_rename(registry: Registry, old: str, new: str, reason: str, as_json: bool) -> None:
    """Rename a model; its history stays with it and the old name keeps resolving.

    \b
    Example:
        modelledger models rename credit credit-risk --reason "naming convention GOV-12"
    """
    model = registry.rename_model(old, new, reason=reason)
    if as_json:
        echo_json({"renamed_from": old, **model.to_dict()})
        return
    click.echo(f"Renamed model {old} to {model.name}")
