"""``versions list|show``, ``register`` (a new version), ``download`` (a version's files) and
``predict`` (score a file with one).

``predict`` serves a version as a deployed model would: when the acting identity may serve
the model (or with ``--capture``), every row gets a signed receipt, written as JSON lines
next to the predictions (``scored.parquet`` -> ``scored.receipts.jsonl``), and the rows are
captured in the registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click
from rich.markup import escape
from rich.table import Table

from modelledger import STAGES, InvalidInput, ModelVersion, Registry, VersionState

from ._common import (
    EXIT_NOT_PROMOTED,
    TABLE_SUFFIXES,
    RowBar,
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
    # the model's current name (a renamed model is listed by its old name too), read at once
    states = registry.states(page.items[0].model, [v.version for v in page]) if page.items else {}
    stages = {n: s.stage for n, s in states.items()}
    if as_json:
        doc = page_json(page)
        for item in doc["items"]:
            item["stage"] = stages[item["version"]]
        echo_json(doc)
        return
    table = Table("Version", "Stage", "Aliases", "Flavor", "Created", "By", "Metrics", "Digest")
    for v in page:
        metrics = v.manifest.get("metrics") or {}
        table.add_row(
            str(v.version),
            stages[v.version],
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


def _render_version(mv: ModelVersion, state: VersionState) -> None:
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
                ("Stage", state.stage),
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
    signed = m.get("model_signing")
    if signed:  # a folder signed with the OpenSSF model_signing tool, checked at registration
        sections.append(
            (
                "Signed (model_signing)",
                [
                    ("Key fingerprint", signed.get("key_fingerprint")),
                    ("Signed digest", signed.get("digest")),
                    ("Signature file", signed.get("signature")),
                    ("Files signed", signed.get("files")),
                ],
            )
        )
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
    state = registry.state(mv.uri)
    if as_json:
        echo_json({**mv.to_dict(), "stage": state.stage})
        return
    _render_version(mv, state)


# The stages a version walks through, in order. Rejected and retired are ends, not steps on
# the way: a version there meets no --require-stage.
PROGRESSION = tuple(s for s in STAGES if s not in ("rejected", "retired"))


def _stage_met(stage: str, required: str) -> bool:
    return stage in PROGRESSION and PROGRESSION.index(stage) >= PROGRESSION.index(required)


def _gate_results(registry: Registry, uri: str) -> list[dict[str, Any]]:
    """The gates of the version's latest validation, from the ledger (none when not validated)."""
    events = [e for e in registry.history(uri) if e.action == "validation.evaluated"]
    return [dict(r) for r in events[-1].data.get("results") or ()] if events else []


def _gate_text(result: dict[str, Any]) -> str:
    value = result.get("value")
    return f"{result['gate']} (got {'no value' if value is None else f'{value:.6g}'})"


@versions.command("retire")
@click.argument("identifier")
@required_reason_option
@json_option
@registry_options
def versions_retire(registry: Registry, identifier: str, reason: str, as_json: bool) -> None:
    """Retire a version: no deployments, no aliases, no loading by alias (by number still works).

    The same as `modelledger stage IDENTIFIER retired --reason ...`.

    \b
    Example:
        modelledger versions retire models:/credit-risk/3 --reason "superseded by version 5"
    """
    mv = registry.get_version(identifier)
    aliases = mv.aliases
    state = registry.retire(mv.uri, reason=reason)
    if as_json:
        echo_json({"uri": mv.uri, "stage": state.stage, "aliases_removed": list(aliases)})
        return
    gone = f" (aliases removed: {', '.join('@' + a for a in aliases)})" if aliases else ""
    click.echo(f"Retired {mv.uri}{gone}")


@versions.command("tag")
@click.argument("identifier")
@click.argument("tags", nargs=-1, callback=parse_tags)
@click.option("--remove", "removed", multiple=True, help="A tag key to remove (repeatable).")
@reason_option
@json_option
@registry_options
def versions_tag(
    registry: Registry,
    identifier: str,
    tags: dict[str, str],
    removed: tuple[str, ...],
    reason: str | None,
    as_json: bool,
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
    if as_json:
        echo_json({"uri": mv.uri, "tags": dict(mv.tags)})
        return
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
@click.option(
    "--require-stage",
    "require_stage",
    type=click.Choice(PROGRESSION),
    default=None,
    help="Exit with code 3 unless the new version reaches at least this stage by itself "
    "(the manifest's automatic stages); it stays registered either way.",
)
@json_option
@registry_options
def register(
    registry: Registry,
    name: str,
    folder: str,
    manifest_path: str | None,
    code_path: str,
    execution_id: str | None,
    sample_path: str | None,
    require_stage: str | None,
    as_json: bool,
) -> None:
    """Register a folder of artefact files as the model's next version; prints its identifier.

    Exit code 3 (after printing the identifier) when the version's gates rejected it, or when
    it stopped short of --require-stage; the version is registered either way.

    \b
    Example:
        modelledger register credit-risk ./model --manifest manifest.yaml --sample sample.csv
        modelledger register credit-risk ./model --manifest manifest.yaml --require-stage validated
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
    stage = registry.state(mv.uri).stage
    gates = _gate_results(registry, mv.uri)
    failed = [g for g in gates if not g.get("passed")]
    problems = []
    if stage == "rejected":
        problems.append(f"{mv.uri} was rejected by its gates: {'; '.join(map(_gate_text, failed))}")
    elif require_stage is not None and not _stage_met(stage, require_stage):
        problems.append(f"{mv.uri} stopped at stage {stage}, short of --require-stage {require_stage}")
    if as_json:
        echo_json(
            {
                **mv.to_dict(),
                "stage": stage,
                "gates": gates,
                "require_stage": require_stage,
                "ok": not problems,
            }
        )
    else:
        click.echo(mv.uri)
        for problem in problems:
            click.secho(problem, fg="red", err=True)
    if problems:
        raise click.exceptions.Exit(EXIT_NOT_PROMOTED)


@click.command()
@click.argument("identifier")
@click.argument("dest", type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--file",
    "files",
    multiple=True,
    help="Download only this file of the version (its path in the version; repeatable).",
)
@click.option("--overwrite", is_flag=True, help="Replace files in DEST that hold other bytes.")
@click.option(
    "--manifest",
    "with_manifest",
    is_flag=True,
    help="Also write modelledger-version.json: the version record (every file's sha256 and size).",
)
@json_option
@registry_options
def download(
    registry: Registry,
    identifier: str,
    dest: str,
    files: tuple[str, ...],
    overwrite: bool,
    with_manifest: bool,
    as_json: bool,
) -> None:
    """Fetch a version's files (any flavor) into the folder DEST, each checked against its
    recorded sha256 and size while it streams; prints the paths written.

    The version's registration is proven against the signed ledger first. Nothing takes its
    name in DEST until every file has matched; a mismatch is an error and leaves no file.
    A file already in DEST with the same bytes is kept; other bytes are refused without
    --overwrite. Works against a server too (--registry http://...).

    \b
    Example:
        modelledger download models:/bert-onnx/latest ./bert
        modelledger download models:/credit-risk@production ./model --file model.pkl
        modelledger download models:/credit-risk/3 ./v3 --manifest --registry http://models:8080
    """
    bar = TransferBar(f"Downloading {identifier}")
    try:
        got = registry.download(
            identifier,
            dest,
            files=list(files) or None,
            overwrite=overwrite,
            manifest=with_manifest,
            progress=bar,
        )
    finally:
        bar.close()
    if as_json:
        echo_json(got.to_dict())
        return
    new = set(got.downloaded)
    for path, rel in zip(got.paths, got.files, strict=True):
        click.echo(path if rel in new else f"{path} (already there)")
    if got.manifest_file is not None:
        click.echo(str(Path(got.dest) / got.manifest_file))
    click.echo(f"{got.version.uri}: {len(got.files)} file(s) verified in {got.dest}", err=True)


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


CHUNK_ROWS = 10_000
"""predict scores and signs this many rows at a time (bounded memory, a moving progress bar)."""


def _may_serve(registry: Registry, model: str) -> bool:
    """Whether the acting identity holds the serving role for ``model`` in this registry."""
    member = registry.whoami()["member"]
    if member is None:
        return False
    return any(m.name == member["name"] and m.has_role("serving", model) for m in registry.members())


def _receipts_path(output_path: str | None) -> str | None:
    """Next to the predictions: scored.parquet -> scored.receipts.jsonl (none for stdout or a device)."""
    if output_path is None or Path(output_path).suffix.lower() not in TABLE_SUFFIXES:
        return None
    return str(Path(output_path).with_suffix(".receipts.jsonl"))


def _chunks(frame: Any) -> Iterator[Any]:
    for start in range(0, max(len(frame), 1), CHUNK_ROWS):
        yield frame.iloc[start : start + CHUNK_ROWS]


def _open_text(path: str) -> IO[str]:
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc}") from exc


@click.command()
@click.argument("identifier")
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, path_type=str))
@output_option("Write predictions here (.csv or .parquet; /dev/null too); default: CSV on stdout.")
@click.option(
    "--capture/--no-capture",
    "capture",
    default=None,
    help="Sign a receipt per row and capture the rows, as a served model does "
    "[default: when you hold the serving role for the model]; --capture fails when you do not.",
)
@click.option(
    "--receipts",
    "receipts_path",
    default=None,
    type=click.Path(dir_okay=False, path_type=str),
    help="Write the receipts (one JSON object a line) here "
    "[default: next to -o, e.g. scored.receipts.jsonl; none without -o].",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout (needs -o).")
@registry_options
def predict(
    registry: Registry,
    identifier: str,
    input_path: str,
    output_path: str | None,
    capture: bool | None,
    receipts_path: str | None,
    as_json: bool,
) -> None:
    """Score a CSV or Parquet file: its columns plus a 'prediction' column.

    When you may serve the model (the serving role), or with --capture, each row also gets
    a signed receipt (written as JSON lines next to -o: scored.parquet ->
    scored.receipts.jsonl) and the rows are captured in the registry, so `trace` and
    `predictions` find them; prints the range of prediction ids. --no-capture only scores.
    Large inputs are scored 10,000 rows at a time, with a progress bar.

    \b
    Example:
        modelledger predict models:/credit-risk@production applications.csv -o scored.parquet
        modelledger predict models:/credit-risk/3 applications.parquet --no-capture > scored.csv
    """
    import pandas as pd  # heavy: loaded on first use so `import modelledger` stays fast

    if as_json and output_path is None:
        raise click.UsageError("--json needs -o/--output (without it the predictions go to stdout)")
    check_table_output(output_path)
    mv = registry.get_version(identifier)
    if capture is None:
        capture = _may_serve(registry, mv.model)
    receipts_path = receipts_path or (_receipts_path(output_path) if capture else None)
    if receipts_path is not None and not capture:
        raise click.UsageError("--receipts needs --capture: receipts are signed only when capturing")
    frame = read_table(input_path)
    # by number, not by the identifier: an alias may move while a long file is scored
    model: Any = registry.load(mv.uri, capture=capture)
    receipts_file = _open_text(receipts_path) if receipts_path else None
    bar = RowBar(f"Scoring {mv.uri}", total=len(frame), threshold=CHUNK_ROWS)
    parts, first_id, last_id, signed = [], None, None, 0
    try:
        for chunk in _chunks(frame):
            if capture:
                predictions, receipts = model.predict(chunk)
                if len(receipts):
                    first_id = first_id or receipts[0].prediction_id
                    last_id = receipts[len(receipts) - 1].prediction_id
                    signed += len(receipts)
                if receipts_file is not None:
                    receipts_file.writelines(r.to_json(indent=None) + "\n" for r in receipts)
            else:
                predictions = model.predict(chunk)
            parts.append(_with_predictions(chunk, predictions))
            bar.advance(len(chunk))
    finally:
        bar.close()
        if receipts_file is not None:
            receipts_file.close()
        if capture:
            model.close()  # writes the captured rows that are still buffered
    out = pd.concat(parts, ignore_index=True) if parts else frame
    stats = model.stats() if capture else None
    if output_path is None:
        click.echo(out.to_csv(index=False), nl=False)
    else:
        write_table(out, output_path)
    summary = {
        "uri": mv.uri,
        "rows": len(out),
        "output": output_path,
        "captured": bool(capture),
        "receipts": receipts_path,
        "first_prediction_id": first_id,
        "last_prediction_id": last_id,
        "signed": signed,
        "capture_written": stats.written if stats else 0,
        "capture_dropped": stats.dropped if stats else 0,
    }
    if as_json:
        echo_json(summary)
        return
    where = f" to {output_path}" if output_path else ""
    click.echo(f"Wrote {len(out)} predictions of {mv.uri}{where}", err=True)
    if capture:
        click.echo(f"Signed {signed} receipts, prediction ids {first_id} .. {last_id}", err=True)
        if receipts_path:
            click.echo(f"Receipts: {receipts_path}", err=True)
        if stats and stats.dropped:
            click.secho(f"{stats.dropped} rows were not captured (the store failed)", fg="yellow", err=True)
