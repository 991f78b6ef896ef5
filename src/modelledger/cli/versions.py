"""``versions list|show``, ``register`` (a new version) and ``predict`` (score a file with one)."""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from modelledger import InvalidInput, ModelVersion, Registry

from ._common import (
    TransferBar,
    check_table_output,
    cursor_option,
    echo_json,
    human_size,
    json_option,
    limit_option,
    make_console,
    output_option,
    page_args,
    page_json,
    parse_tags,
    print_next_cursor,
    print_section,
    read_table,
    reason_option,
    registry_options,
    required_reason_option,
    tags_text,
    write_table,
)


@click.group()
def versions() -> None:
    """Versions of a model: list, show.

    \b
    Example:
        modelledger versions show models:/credit-risk@production
    """


@versions.command("list")
@click.argument("name")
@limit_option
@cursor_option
@json_option
@registry_options
def versions_list(
    registry: Registry, name: str, limit: int | None, cursor: str | None, as_json: bool
) -> None:
    """List a model's versions, newest first.

    \b
    Example:
        modelledger versions list credit-risk --limit 10
    """
    page = registry.list_versions(name, **page_args(limit, cursor))
    if as_json:
        echo_json(page_json(page))
        return
    table = Table("Version", "Aliases", "Flavor", "Created", "By", "Metrics", "Digest")
    for v in page:
        metrics = v.manifest.get("metrics") or {}
        table.add_row(
            str(v.version),
            escape(", ".join(v.aliases)),
            escape(v.flavor),
            v.created_at.strftime("%Y-%m-%d %H:%M"),
            escape(v.created_by),
            escape(", ".join(f"{k}={val:g}" for k, val in sorted(metrics.items()))),
            escape(v.digest[:19]),
        )
    make_console().print(table)
    print_next_cursor(page)


def _optional(key: str, value: Any) -> list[tuple[str, Any]]:
    """A row only when there is something to say: versions registered before the field
    existed keep the layout they had."""
    return [(key, value)] if value else []


def _dirty_paths(source: dict[str, Any]) -> str | None:
    paths = source.get("dirty_paths") or []
    if not paths:
        return None
    more = (source.get("dirty_count") or len(paths)) - len(paths)
    return ", ".join(paths) + (f" (and {more} more)" if more > 0 else "")


def _environment(env: Any) -> str | None:
    if not isinstance(env, dict) or not env.get("origin"):
        return None
    label = {"training": "the training environment", "registering-machine": "the registering machine"}
    origin = label.get(env["origin"], env["origin"])
    return f"{origin} ({env['from']})" if env.get("from") else origin


def _render_version(mv: ModelVersion) -> None:
    m = mv.manifest
    source = m.get("source") or {}
    job = m.get("training_job") or {}
    deps = m.get("dependencies") or {}
    framework = " ".join(str(x) for x in (m.get("framework"), m.get("framework_version")) if x)
    console = make_console()
    sections: list[tuple[str, list[tuple[str, Any]]]] = [
        (
            mv.uri,
            [
                ("Digest", mv.digest),
                ("Aliases", ", ".join(mv.aliases) or None),
                ("Flavor", mv.flavor),
                ("Entry", m.get("entry")),
                ("Folder", mv.folder),
                ("Created", f"{mv.created_at.isoformat()} by {mv.created_by or '?'}"),
                ("Description", m.get("description") or None),
                *_optional("Tags", ", ".join(f"{k}={v}" for k, v in sorted(mv.tags.items())) or None),
            ],
        ),
        (
            "Source",
            [
                ("Repository", source.get("repo_url")),
                ("Path", source.get("path")),
                ("Revision", source.get("revision")),
                ("Branch", source.get("branch")),
                ("Dirty", source.get("dirty")),
                *_optional("Dirty paths", _dirty_paths(source)),
                *_optional("Unknown", source.get("unknown")),
            ],
        ),
        (
            "Environment",
            [
                ("Algorithm", m.get("algorithm")),
                ("Framework", framework or None),
                ("Python", m.get("python")),
                ("Platform", m.get("platform")),
                ("Dependencies", f"{len(deps)} packages (--json lists them)"),
                *_optional("Recorded from", _environment(m.get("environment"))),
            ],
        ),
        (
            "Training job",
            [
                ("Id", job.get("id")),
                ("Started", job.get("started_at")),
                ("Ended", job.get("ended_at")),
                ("Host", job.get("host")),
            ],
        ),
        ("Params", sorted((m.get("params") or {}).items())),
        ("Metrics", sorted((m.get("metrics") or {}).items())),
    ]
    if m.get("settings"):
        sections.append(("Settings", sorted(m["settings"].items())))
    for title, rows in sections:
        print_section(console, title, rows)
        console.print()
    signature = mv.signature
    if signature is None:
        print_section(console, "Signature", [])
    else:
        table = Table("Column", "Type", "Nullable", title="Signature", title_justify="left")
        for kind, columns in (("input", signature.inputs), ("output", signature.outputs)):
            for col in columns:
                table.add_row(f"{kind}: {escape(col.name)}", col.type, "yes" if col.nullable else "no")
        console.print(table)
    console.print()
    files = Table("Path", "Size", "SHA-256", title="Files", title_justify="left")
    for f in mv.files:
        files.add_row(escape(f.path), human_size(f.size), f.sha256)
    console.print(files)


@versions.command("show")
@click.argument("identifier")
@click.argument("version", type=int, required=False)
@json_option
@registry_options
def versions_show(registry: Registry, identifier: str, version: int | None, as_json: bool) -> None:
    """Show a version and its manifest: a models:/ identifier, or NAME [VERSION] (default latest).

    \b
    Example:
        modelledger versions show models:/credit-risk@production
        modelledger versions show credit-risk 3 --json
    """
    if version is not None and identifier.startswith("models:/"):
        raise click.UsageError("give VERSION only with a model name, not with a models:/ identifier")
    mv = registry.get_version(identifier, version)
    if as_json:
        echo_json(mv.to_dict())
        return
    _render_version(mv)


@versions.command("retire")
@click.argument("identifier")
@required_reason_option
@registry_options
def versions_retire(registry: Registry, identifier: str, reason: str) -> None:
    """Retire a version: no deployments, no aliases, no loading by alias (by number still works).

    The same as `modelledger stage IDENTIFIER retired --reason ...`.

    \b
    Example:
        modelledger versions retire models:/credit-risk/3 --reason "superseded by version 5"
    """
    mv = registry.get_version(identifier)
    aliases = mv.aliases
    registry.retire(mv.uri, reason=reason)
    gone = f" (aliases removed: {', '.join('@' + a for a in aliases)})" if aliases else ""
    click.echo(f"Retired {mv.uri}{gone}")


@versions.command("tag")
@click.argument("identifier")
@click.argument("tags", nargs=-1, callback=parse_tags)
@click.option("--remove", "removed", multiple=True, help="A tag key to remove (repeatable).")
@reason_option
@registry_options
def versions_tag(
    registry: Registry, identifier: str, tags: dict[str, str], removed: tuple[str, ...], reason: str | None
) -> None:
    """Set (KEY=VALUE) or remove (--remove KEY) tags of a version; recorded in the ledger.

    \b
    Example:
        modelledger versions tag models:/credit-risk/3 team=risk --remove old
    """
    changes: dict[str, str | None] = {**tags, **dict.fromkeys(removed)}
    if not changes:
        raise click.UsageError("give KEY=VALUE tags to set or --remove KEY")
    mv = registry.set_version_tags(identifier, changes, reason=reason)
    click.echo(f"{mv.uri} tags: {tags_text(mv.tags) or '(none)'}")


@click.command()
@click.argument("name")
@click.argument("folder", type=click.Path(path_type=str))
@click.option(
    "--manifest",
    "manifest_path",
    default=None,
    type=click.Path(dir_okay=False, path_type=str),
    help="YAML or JSON manifest: flavor, entry, params, metrics, source... (default: none, plain files)",
)
@click.option(
    "--code",
    "code_path",
    default=".",
    show_default=True,
    type=click.Path(path_type=str),
    help="The training code (script or folder) whose git repo, path and revision are recorded.",
)
@click.option("--execution-id", default=None, help="The training run's id; names the version folder.")
@click.option(
    "--sample",
    "sample_path",
    default=None,
    type=click.Path(dir_okay=False, path_type=str),
    help="A few input rows (.csv or .parquet) to record the input signature.",
)
@registry_options
def register(
    registry: Registry,
    name: str,
    folder: str,
    manifest_path: str | None,
    code_path: str,
    execution_id: str | None,
    sample_path: str | None,
) -> None:
    """Register a folder of artefact files as the model's next version; prints its identifier.

    \b
    Example:
        modelledger register credit-risk ./model --manifest manifest.yaml --sample sample.csv
    """
    sample = read_table(sample_path) if sample_path else None
    bar = TransferBar(f"Uploading {name}")
    try:
        mv = registry.register(
            name,
            folder,
            manifest=manifest_path,
            execution_id=execution_id,
            sample_input=sample,
            code_path=code_path,
            progress=bar,
        )
    finally:
        bar.close()
    click.echo(mv.uri)


def _with_predictions(frame: Any, predictions: Any) -> Any:
    import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast
    import pandas as pd  # heavy: loaded on first use so `import modelledger` stays fast

    out = frame.copy()
    if isinstance(predictions, pd.DataFrame):
        values = predictions.to_numpy()
        names = [f"prediction_{c}" for c in predictions.columns]
    else:
        values = np.asarray(predictions)
        names = None
    if values.ndim == 2 and values.shape[1] == 1:
        values, names = values[:, 0], None
    if len(values) != len(out):
        raise InvalidInput(f"the model returned {len(values)} predictions for {len(out)} input rows")
    if values.ndim == 1:
        out["prediction"] = values
    else:
        for i, column in enumerate(names or [f"prediction_{i}" for i in range(values.shape[1])]):
            out[column] = values[:, i]
    return out


@click.command()
@click.argument("identifier")
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, path_type=str))
@output_option("Write predictions here (.csv or .parquet); default: CSV on stdout.")
@registry_options
def predict(registry: Registry, identifier: str, input_path: str, output_path: str | None) -> None:
    """Score a CSV or Parquet file: its columns plus a 'prediction' column.

    \b
    Example:
        modelledger predict models:/credit-risk@production applications.csv -o scored.parquet
        modelledger predict models:/credit-risk/3 applications.parquet > scored.csv
    """
    check_table_output(output_path)
    model = registry.load(identifier)
    frame = read_table(input_path)
    out = _with_predictions(frame, model.predict(frame))
    if output_path is None:
        click.echo(out.to_csv(index=False), nl=False)
        return
    write_table(out, output_path)
    click.echo(f"Wrote {len(out)} predictions to {output_path}", err=True)
