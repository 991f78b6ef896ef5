"""``datasets list|show|register|lineage``: immutable data set versions.

Each command calls one public verb (``registry.datasets.*``, ``registry.lineage``) and
renders its result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from modelledger import DatasetVersion, Registry, load_steps_file

from ._common import (
    TransferBar,
    as_text,
    cursor_option,
    echo_json,
    human_size,
    json_option,
    limit_option,
    make_console,
    page_args,
    print_next_cursor,
    print_section,
    registry_options,
)
from .lineage import lineage_tree


@click.group()
def datasets() -> None:
    """Data set versions: immutable Parquet copies with their source and processing steps.

    \b
    Example:
        modelledger datasets register applications-raw extract.csv --query "SELECT * FROM loans"
        modelledger datasets show applications-raw
    """


@datasets.command("list")
@click.option("--prefix", default=None, help="Only data sets whose name starts with this.")
@limit_option
@cursor_option
@json_option
@registry_options
def datasets_list(
    registry: Registry, prefix: str | None, limit: int | None, cursor: str | None, as_json: bool
) -> None:
    """List data sets by name, with their latest version.

    \b
    Example:
        modelledger datasets list --prefix applications
        modelledger datasets list --json
    """
    page = registry.datasets.list(prefix=prefix, **page_args(limit, cursor))
    if as_json:
        echo_json({"items": list(page.items), "next_cursor": page.next_cursor})
        return
    table = Table("Name", "Latest", "Description", "Created")
    for d in page:
        table.add_row(
            escape(d["name"]),
            str(d["latest_version"] or "-"),
            escape(d.get("description") or ""),
            escape(str(d["created_at"])[:16].replace("T", " ")),
        )
    make_console().print(table)
    print_next_cursor(page)


def _schema_table(dv: DatasetVersion) -> Table:
    table = Table(
        "Column", "Type", "Nullable", "Nulls", "Min", "Max", "Distinct", title="Schema", title_justify="left"
    )
    for col in dv.schema:
        stats = dv.stats.get(col.name, {})
        table.add_row(
            escape(col.name),
            col.type,
            "yes" if col.nullable else "no",
            as_text(stats.get("nulls")),
            as_text(stats.get("min")),
            as_text(stats.get("max")),
            as_text(stats.get("distinct")),
        )
    return table


def _code_text(code: Mapping[str, Any]) -> str | None:
    if not code:
        return None
    where = ":".join(str(code[k]) for k in ("repo_url", "path") if code.get(k))
    revision = str(code.get("revision") or "")[:12]
    dirty = " (dirty)" if code.get("dirty") else ""
    return f"{where} @ {revision}{dirty}" if revision else where or None


@datasets.command("show")
@click.argument("identifier", metavar="ID_OR_NAME")
@click.argument("version", type=int, required=False)
@json_option
@registry_options
def datasets_show(registry: Registry, identifier: str, version: int | None, as_json: bool) -> None:
    """Show a data set version: schema and statistics, source, processing steps, the models using it.

    ID_OR_NAME is a datasets:/ identifier, or a name with an optional VERSION (default latest).

    \b
    Example:
        modelledger datasets show datasets:/applications-train/2
        modelledger datasets show applications-train 2 --json
    """
    if version is not None and identifier.startswith("datasets:/"):
        raise click.UsageError("give VERSION only with a data set name, not with a datasets:/ identifier")
    dv = registry.datasets.get(identifier, version)
    users = registry.datasets.used_by(dv)
    if as_json:
        echo_json({**dv.to_dict(), "used_by": [{"model": m, "role": r} for m, r in users]})
        return
    console = make_console()
    src = dv.source
    print_section(
        console,
        dv.uri,
        [
            ("Digest", dv.digest),
            ("Rows", f"{dv.row_count:,}"),
            ("Columns", len(dv.schema)),
            ("Stored", f"{dv.path} ({human_size(dv.size_bytes)}, Parquet, sha256 {dv.file_sha256[:12]})"),
            ("Created", f"{dv.created_at.isoformat()} by {dv.created_by or '?'}"),
        ],
    )
    console.print()
    print_section(
        console,
        "Source",
        [
            ("Kind", src.kind),
            ("URI", src.uri),
            ("Query", src.query),
            ("Extracted", src.extracted_at),
            ("Code", _code_text(src.code)),
        ],
    )
    console.print()
    console.print(_schema_table(dv))
    console.print()
    if dv.steps:
        steps = Table(
            "#", "Step", "Kind", "Inputs", "Columns", "Params", "Code", title="Steps", title_justify="left"
        )
        for i, step in enumerate(dv.steps, 1):
            steps.add_row(
                str(i),
                escape(step.name),
                escape(step.kind),
                escape(", ".join(step.inputs)),
                escape(", ".join(step.columns)),
                as_text(dict(step.params)) if step.params else "",
                escape(_code_text(step.code) or ""),
            )
        console.print(steps)
    else:
        print_section(console, "Steps", [])
    console.print()
    print_section(console, "Used by", [(m, r) for m, r in users])


@datasets.command("register")
@click.argument("name")
@click.argument("location", metavar="PATH_OR_URL")
@click.option("--source-uri", default=None, help="Where the data came from (default: PATH_OR_URL).")
@click.option(
    "--source-kind",
    type=click.Choice(["file", "table", "query", "api"]),
    default=None,
    help="What the source is [default: query with --query, else file].",
)
@click.option("--query", default=None, help="The query that extracted the data.")
@click.option(
    "--steps",
    "steps_path",
    default=None,
    type=click.Path(dir_okay=False, path_type=str),
    help="JSON or YAML file of the processing steps that made the data "
    "(name, kind, params, columns, inputs: [datasets:/...], code).",
)
@json_option
@registry_options
def datasets_register(
    registry: Registry,
    name: str,
    location: str,
    source_uri: str | None,
    source_kind: str | None,
    query: str | None,
    steps_path: str | None,
    as_json: bool,
) -> None:
    """Store a CSV or Parquet file (a path or fsspec URL) as the data set's next version; prints it.

    The same content again returns the existing version and stores nothing.

    \b
    Example:
        modelledger datasets register applications-raw extract.csv --query "SELECT * FROM loans"
        modelledger datasets register scores s.parquet --source-uri https://bureau.example --source-kind api
        modelledger datasets register applications-train s3://lake/train.parquet --steps steps.yaml
    """
    steps = load_steps_file(steps_path) if steps_path else []
    source: dict[str, Any] | None = None
    if source_uri or source_kind or query:
        kind = source_kind or ("query" if query else "file")
        source = {"uri": source_uri or location, "kind": kind, "query": query}
    bar = TransferBar(f"Ingesting {name}")
    try:
        dv = registry.datasets.register(name, location, source=source, steps=steps, progress=bar)
    finally:
        bar.close()
    if as_json:
        echo_json(dv.to_dict())
        return
    click.echo(dv.uri)


@datasets.command("lineage")
@click.argument("identifier", metavar="ID")
@json_option
@registry_options
def datasets_lineage(registry: Registry, identifier: str, as_json: bool) -> None:
    """Show what uses a data set version: the data sets made from it and the models, as a tree.

    \b
    Example:
        modelledger datasets lineage datasets:/applications-raw/1
        modelledger datasets lineage applications-holdout --json
    """
    uri = registry.datasets.get(identifier).uri
    graph = registry.lineage(uri)
    models = [
        {"model": e.target, "role": e.label, "via": e.source}
        for e in graph.edges
        if graph.nodes[e.target].kind == "model"
    ]
    if as_json:
        echo_json({"dataset": uri, "used_by": models, "graph": graph.to_dict()})
        return
    console = make_console()
    console.print(lineage_tree(graph, downstream=True))
    if not models:
        console.print("[dim]No model version was trained or evaluated on it.[/]")
