"""The ``modelledger`` command line: a thin face over the public Python API.

Every command opens the registry, calls one or two :class:`~modelledger.Registry`
verbs and renders what they return: rich tables for people, one JSON document
with ``--json`` for scripts. Library errors become one red line on stderr and
exit code 1, in one place (:func:`registry_options`).
"""

from __future__ import annotations

import functools
import json
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from modelledger import (
    InvalidInput,
    Model,
    ModelLedgerError,
    ModelVersion,
    Page,
    Registry,
    VerifyReport,
    __version__,
)

__all__ = ["main"]

PROGRESS_THRESHOLD = 4 * 1024 * 1024
"""Uploads larger than this (in bytes) get a progress bar."""

TABLE_SUFFIXES = (".csv", ".parquet")

F = Callable[..., Any]


# --------------------------------------------------------------------------- output helpers


def _console(*, stderr: bool = False) -> Console:
    """A console on the current stdout/stderr (looked up per call, so tests can capture it).

    Output that is not a terminal gets a wide page, so piped tables do not fold
    digests and paths.
    """
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console.width = 240
    return console


def _echo_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, default=str))


def _text(value: Any) -> str:
    """A value as table-cell markup: JSON for structures, escaped so data is never markup."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list, tuple)):
        value = json.dumps(value, default=str)
    return escape(str(value))


def _tags_text(tags: Mapping[str, str]) -> str:
    return escape(", ".join(f"{k}={v}" for k, v in sorted(tags.items())))


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def _print_section(console: Console, title: str, rows: Iterable[tuple[str, Any]]) -> None:
    """A bold title, then ``key  value`` lines with aligned keys (no padding, so it greps well)."""
    console.print(f"[bold]{escape(title)}[/]")
    items = list(rows)
    if not items:
        console.print("  (none)")
        return
    width = max(len(key) for key, _ in items)
    for key, value in items:
        console.print(f"  {escape(key)}{' ' * (width - len(key))}  {_text(value)}", soft_wrap=True)


def _page_json(page: Page[Any]) -> dict[str, Any]:
    return {"items": [item.to_dict() for item in page], "next_cursor": page.next_cursor}


def _print_next_cursor(page: Page[Any]) -> None:
    if page.next_cursor:
        click.echo(f"Next page: --cursor {page.next_cursor}")


def _read_table(path: str) -> Any:
    """A CSV or Parquet file as a pandas DataFrame, chosen by extension."""
    import pandas as pd

    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InvalidInput(f"cannot read {path}: use a .csv or .parquet file")
    try:
        return pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pandas' parser errors are ValueErrors
        raise InvalidInput(f"cannot read {path}: {exc}") from exc


def _parse_tags(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}")
        tags[key] = value
    return tags


# --------------------------------------------------------------------------- shared options


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _fail(exc: BaseException, *, show_traceback: bool) -> NoReturn:
    """Report an error as one red line on stderr (after the traceback, if asked) and exit."""
    if show_traceback:
        click.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
    if isinstance(exc, ModelLedgerError):
        message, code = exc.message, exc.exit_code
    else:
        message = f"unexpected {type(exc).__name__}: {exc}"
        if not show_traceback:
            message += " (run again with --traceback for details)"
        code = 1
    click.secho(f"Error: {_one_line(message)}", fg="red", err=True)
    raise click.exceptions.Exit(code)


def registry_options(fn: F) -> F:
    """Add ``--registry``, ``--artifacts`` and ``--traceback``; open the registry; map errors.

    The command receives the open :class:`Registry` as its first argument. This is the
    one place where exceptions become messages and exit codes; click's own usage errors
    (exit code 2) pass through untouched.
    """

    @functools.wraps(fn)
    def wrapper(
        *args: Any, registry_url: str | None, artifacts_url: str | None, show_traceback: bool, **kwargs: Any
    ) -> Any:
        try:
            with Registry.open(registry_url, artifacts=artifacts_url) as registry:
                return fn(registry, *args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            _fail(exc, show_traceback=show_traceback)

    options = [
        click.option(
            "--registry",
            "registry_url",
            envvar="MODELLEDGER_URL",
            metavar="URL",
            help="Metadata database: sqlite:///path.db or postgresql://... "
            "[env: MODELLEDGER_URL; default: the embedded ./.modelledger registry]",
        ),
        click.option(
            "--artifacts",
            "artifacts_url",
            envvar="MODELLEDGER_ARTIFACTS",
            metavar="URL",
            help="Artefact root: a folder, file://, s3:// or memory:// URL [env: MODELLEDGER_ARTIFACTS]",
        ),
        click.option(
            "--traceback", "show_traceback", is_flag=True, help="Show the full traceback of an error."
        ),
    ]
    decorated: F = wrapper
    for option in reversed(options):
        decorated = option(decorated)
    return decorated


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document on stdout, for scripts."
)
limit_option = click.option("--limit", type=int, default=None, help="Page size (1-1000, default 100).")
cursor_option = click.option("--cursor", default=None, help="Continue a listing from its 'Next page' cursor.")
tag_option = click.option(
    "--tag",
    "tags",
    multiple=True,
    callback=_parse_tags,
    metavar="KEY=VALUE",
    help="A tag; repeat for several.",
)


def _page_args(limit: int | None, cursor: str | None) -> dict[str, Any]:
    args: dict[str, Any] = {"cursor": cursor}
    if limit is not None:
        args["limit"] = limit
    return args


# --------------------------------------------------------------------------- commands


@click.group()
@click.version_option(__version__, prog_name="modelledger")
def main() -> None:
    """modelledger: a model registry built around lineage.

    Every command takes --registry and --artifacts (or the MODELLEDGER_URL and
    MODELLEDGER_ARTIFACTS environment variables); without them it uses the
    embedded registry in ./.modelledger. Read commands take --json.

    \b
    Example:
        modelledger init --registry sqlite:///reg.db --artifacts ./store
        modelledger register credit-risk ./model --manifest manifest.yaml
        modelledger predict models:/credit-risk/1 applications.csv -o scored.parquet
    """


def _init(registry: Registry) -> None:
    revision = registry.init()
    click.echo(f"Registry schema at revision {revision}")


@main.command()
@registry_options
def init(registry: Registry) -> None:
    """Create the registry schema, or upgrade it to this version's.

    \b
    Example:
        modelledger init --registry sqlite:///reg.db --artifacts ./store
    """
    _init(registry)


@main.command()
@registry_options
def migrate(registry: Registry) -> None:
    """Upgrade the registry schema (the same as init).

    \b
    Example:
        modelledger migrate --registry postgresql://ml@db/registry --artifacts s3://ml-models
    """
    _init(registry)


# ---- models


@main.group()
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
            _tags_text(m.tags),
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
    page = registry.list_models(prefix=prefix, tags=tags, **_page_args(limit, cursor))
    if as_json:
        _echo_json(_page_json(page))
        return
    _console().print(_models_table(page))
    _print_next_cursor(page)


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
        _echo_json(model.to_dict())
        return
    _print_section(
        _console(),
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
@registry_options
def models_create(registry: Registry, name: str, description: str, tags: dict[str, str]) -> None:
    """Create a registered model (register also creates it on first use).

    \b
    Example:
        modelledger models create credit-risk --description "Probability of default" --tag team=risk
    """
    model = registry.create_model(name, description=description, tags=tags)
    click.echo(f"Created model {model.name}")


# ---- versions


@main.group()
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
    page = registry.list_versions(name, **_page_args(limit, cursor))
    if as_json:
        _echo_json(_page_json(page))
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
    _console().print(table)
    _print_next_cursor(page)


def _render_version(mv: ModelVersion) -> None:
    m = mv.manifest
    source = m.get("source") or {}
    job = m.get("training_job") or {}
    deps = m.get("dependencies") or {}
    framework = " ".join(str(x) for x in (m.get("framework"), m.get("framework_version")) if x)
    console = _console()
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
        _print_section(console, title, rows)
        console.print()
    signature = mv.signature
    if signature is None:
        _print_section(console, "Signature", [])
    else:
        table = Table("Column", "Type", "Nullable", title="Signature", title_justify="left")
        for kind, columns in (("input", signature.inputs), ("output", signature.outputs)):
            for col in columns:
                table.add_row(f"{kind}: {escape(col.name)}", col.type, "yes" if col.nullable else "no")
        console.print(table)
    console.print()
    files = Table("Path", "Size", "SHA-256", title="Files", title_justify="left")
    for f in mv.files:
        files.add_row(escape(f.path), _size(f.size), f.sha256)
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
        _echo_json(mv.to_dict())
        return
    _render_version(mv)


# ---- register


class _TransferBar:
    """The ``progress(bytes_done, bytes_total)`` callback: a rich bar on stderr for big uploads."""

    def __init__(self, label: str, threshold: int = PROGRESS_THRESHOLD) -> None:
        self.label = label
        self.threshold = threshold
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __call__(self, done: int, total: int) -> None:
        if self._progress is None:
            if total <= self.threshold:
                return
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=_console(stderr=True),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=total)
        assert self._task is not None
        self._progress.update(self._task, completed=done, total=total)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


@main.command()
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
    sample = _read_table(sample_path) if sample_path else None
    bar = _TransferBar(f"Uploading {name}")
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


# ---- aliases


@main.group()
def alias() -> None:
    """Aliases: movable names for versions (models:/NAME@ALIAS).

    \b
    Example:
        modelledger alias set credit-risk production 3
    """


@alias.command("set")
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@click.argument("version", type=int)
@registry_options
def alias_set(registry: Registry, name: str, alias_name: str, version: int) -> None:
    """Point ALIAS at a version of NAME (moving it if it was set).

    \b
    Example:
        modelledger alias set credit-risk production 3
    """
    registry.set_alias(name, alias_name, version)
    click.echo(f"models:/{name}@{alias_name} -> models:/{name}/{version}")


@alias.command("rm")
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@registry_options
def alias_rm(registry: Registry, name: str, alias_name: str) -> None:
    """Remove an alias.

    \b
    Example:
        modelledger alias rm credit-risk staging
    """
    registry.delete_alias(name, alias_name)
    click.echo(f"Removed models:/{name}@{alias_name}")


# ---- predict


def _with_predictions(frame: Any, predictions: Any) -> Any:
    import numpy as np
    import pandas as pd

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


@main.command()
@click.argument("identifier")
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "-o",
    "--output",
    "output_path",
    default=None,
    type=click.Path(dir_okay=False, path_type=str),
    help="Write predictions here (.csv or .parquet); default: CSV on stdout.",
)
@registry_options
def predict(registry: Registry, identifier: str, input_path: str, output_path: str | None) -> None:
    """Score a CSV or Parquet file: its columns plus a 'prediction' column.

    \b
    Example:
        modelledger predict models:/credit-risk@production applications.csv -o scored.parquet
        modelledger predict models:/credit-risk/3 applications.parquet > scored.csv
    """
    if output_path is not None and Path(output_path).suffix.lower() not in TABLE_SUFFIXES:
        raise InvalidInput(f"cannot write {output_path}: use a .csv or .parquet file")
    model = registry.load(identifier)
    frame = _read_table(input_path)
    out = _with_predictions(frame, model.predict(frame))
    if output_path is None:
        click.echo(out.to_csv(index=False), nl=False)
        return
    try:
        if Path(output_path).suffix.lower() == ".csv":
            out.to_csv(output_path, index=False)
        else:
            out.to_parquet(output_path, index=False)
    except OSError as exc:
        raise InvalidInput(f"cannot write {output_path}: {exc}") from exc
    click.echo(f"Wrote {len(out)} predictions to {output_path}", err=True)


# ---- verify


def _render_report(report: VerifyReport, root: str) -> None:
    click.echo(
        f"Checked {report.versions_checked} versions, {report.files_checked} files under {root}: "
        + ("no problems" if report.ok else f"{len(report.problems)} problems")
    )
    for problem in report.problems:
        click.secho(str(problem), fg="red")


@main.command()
@json_option
@registry_options
def verify(registry: Registry, as_json: bool) -> None:
    """Re-hash every stored artefact; exit code 1 if any file is changed, missing or orphaned.

    \b
    Example:
        modelledger verify --registry postgresql://ml@db/registry --artifacts s3://ml-models
    """
    status = _console(stderr=True).status("Verifying artefacts...")
    checked = 0

    def tick(mv: ModelVersion) -> None:
        nonlocal checked
        checked += 1
        status.update(f"Verifying artefacts... {checked} versions ({mv.uri})")

    with status:
        report = registry.verify(progress=tick)
    if as_json:
        _echo_json(report.to_dict())
    else:
        _render_report(report, registry.artifact_root)
    if not report.ok:
        raise click.exceptions.Exit(1)
