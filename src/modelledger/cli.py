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
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

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

if TYPE_CHECKING:
    from modelledger._governance import AliasChange, StateDifference
    from modelledger._ledger import LedgerEvent
    from modelledger._lifecycle import VersionState

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


def _parse_metrics(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for key, value in _parse_tags(ctx, param, values).items():
        try:
            metrics[key] = float(value)
        except ValueError:
            raise click.BadParameter(f"expected NAME=NUMBER, got {key}={value!r}") from None
    return metrics


def _parse_time(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    """An ISO 8601 time; without an offset it is UTC (the ledger's clock)."""
    if value is None:
        return None
    try:
        # Python 3.10's fromisoformat knows neither "Z" nor the "T" less common forms
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"expected an ISO 8601 time such as 2026-11-01T09:30:00Z, got {value!r}"
        ) from None


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
    """Add ``--registry``, ``--artifacts``, ``--as`` and ``--traceback``; open the registry; map errors.

    The command receives the open :class:`Registry` as its first argument. This is the
    one place where exceptions become messages and exit codes; click's own usage errors
    (exit code 2) pass through untouched.
    """

    @functools.wraps(fn)
    def wrapper(
        *args: Any,
        registry_url: str | None,
        artifacts_url: str | None,
        as_actor: str | None,
        show_traceback: bool,
        **kwargs: Any,
    ) -> Any:
        try:
            with Registry.open(registry_url, artifacts=artifacts_url, actor=as_actor) as registry:
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
            "--as",
            "as_actor",
            metavar="ACTOR",
            default=None,
            help="Act as ACTOR, as recorded in the ledger "
            "[env: MODELLEDGER_USER; default: git's user.email, else the OS user]",
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
reason_option = click.option("--reason", default=None, help="Why; recorded in the ledger.")
required_reason_option = click.option(
    "--reason", required=True, help="Why (the evidence reviewed); recorded in the ledger."
)


def output_option(help_text: str) -> Callable[[F], F]:
    """``-o/--output PATH`` (a file, not a folder), passed as ``output_path``."""
    return click.option(
        "-o",
        "--output",
        "output_path",
        default=None,
        type=click.Path(dir_okay=False, path_type=str),
        help=help_text,
    )


def _check_table_output(output_path: str | None) -> None:
    """Refuse an output path we cannot write before doing any work."""
    if output_path is not None and Path(output_path).suffix.lower() not in TABLE_SUFFIXES:
        raise InvalidInput(f"cannot write {output_path}: use a .csv or .parquet file")


def _write_table(frame: Any, output_path: str) -> None:
    """A pandas frame to .csv or .parquet (checked with :func:`_check_table_output`)."""
    try:
        if Path(output_path).suffix.lower() == ".csv":
            frame.to_csv(output_path, index=False)
        else:
            frame.to_parquet(output_path, index=False)
    except OSError as exc:
        raise InvalidInput(f"cannot write {output_path}: {exc}") from exc


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
    embedded registry in ./.modelledger. Read commands take --json. Who acts
    is recorded in the ledger: --as ACTOR, else MODELLEDGER_USER, else git's
    user.email, else the OS user.

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
@reason_option
@registry_options
def alias_set(registry: Registry, name: str, alias_name: str, version: int, reason: str | None) -> None:
    """Point ALIAS at a version of NAME (moving it if it was set); recorded in the ledger.

    \b
    Example:
        modelledger alias set credit-risk production 3
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
@output_option("Write predictions here (.csv or .parquet); default: CSV on stdout.")
@registry_options
def predict(registry: Registry, identifier: str, input_path: str, output_path: str | None) -> None:
    """Score a CSV or Parquet file: its columns plus a 'prediction' column.

    \b
    Example:
        modelledger predict models:/credit-risk@production applications.csv -o scored.parquet
        modelledger predict models:/credit-risk/3 applications.parquet > scored.csv
    """
    _check_table_output(output_path)
    model = registry.load(identifier)
    frame = _read_table(input_path)
    out = _with_predictions(frame, model.predict(frame))
    if output_path is None:
        click.echo(out.to_csv(index=False), nl=False)
        return
    _write_table(out, output_path)
    click.echo(f"Wrote {len(out)} predictions to {output_path}", err=True)


# ---- verify


def _render_report(report: VerifyReport, root: str) -> None:
    click.echo(
        f"Checked {report.versions_checked} versions, {report.datasets_checked} data sets, "
        f"{report.files_checked} files under {root}, "
        f"{report.events_checked} ledger events and {report.checkpoints_checked} signed checkpoints: "
        + ("no problems" if report.ok else f"{len(report.problems)} problems")
    )
    for problem in report.problems:
        click.secho(str(problem), fg="red")


@main.command()
@json_option
@registry_options
def verify(registry: Registry, as_json: bool) -> None:
    """Check everything the registry vouches for; exit code 1 on any problem.

    Recomputes the ledger's hash chain and its signed checkpoints (naming the first
    event that does not match, e.g. "ledger event 12"), compares the state tables
    with a replay of the ledger, and re-hashes every stored artefact and data set:
    changed, missing and orphaned files are all reported.

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


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: str) -> timedelta:
    """``30m``, ``24h``, ``7d``, ``90s`` or ``0`` as a timedelta (click.BadParameter otherwise)."""
    text = value.strip().lower()
    if text == "0":
        return timedelta(0)
    number, unit = text[:-1], text[-1:]
    if unit not in _DURATION_UNITS or not number.isdigit():
        raise click.BadParameter(f"{value!r} is not a duration like 30m, 24h or 7d")
    return timedelta(seconds=int(number) * _DURATION_UNITS[unit])


@main.command()
@click.option(
    "--older-than",
    default="24h",
    show_default=True,
    metavar="DURATION",
    help="only what was last written longer ago than this (30m, 24h, 7d, 0)",
)
@click.option("--delete", is_flag=True, help="remove what is listed (without it, nothing changes)")
@json_option
@registry_options
def gc(registry: Registry, older_than: str, delete: bool, as_json: bool) -> None:
    """List (and with --delete remove) stored files that nothing references.

    Version folders of registrations that failed or were never completed, and data set
    files of interrupted ingests: what `verify` reports as orphans. Registered versions and
    data sets are never touched, and neither is anything written more recently than
    --older-than (a registration may still be writing it).

    \b
    Example:
        modelledger gc --older-than 7d            # what would go
        modelledger gc --older-than 7d --delete
    """
    report = registry.gc(older_than=_duration(older_than), delete=delete)
    if as_json:
        _echo_json(report.to_dict())
        return
    if report.items:
        table = Table("Path", "Kind", "Size", "Last written")
        for item in report.items:
            when = item.modified.isoformat(timespec="seconds") if item.modified else "-"
            table.add_row(_text(item.path), item.kind, _size(item.size_bytes), when)
        _console().print(table)
    done = "removed" if delete else "would remove"
    click.echo(f"{done} {len(report.items)} unreferenced items, {_size(report.size_bytes)}")
    if report.recent:
        click.echo(f"left {report.recent} younger than {older_than} (or of unknown age) alone")
    if report.items and not delete:
        click.echo("dry run: run again with --delete to remove them")


# ---- governance: stages, validation, approval, deployment


def _state_json(mv: ModelVersion, state: VersionState) -> dict[str, Any]:
    return {"uri": mv.uri, **state.to_dict(), "aliases": list(mv.aliases)}


def _print_state(mv: ModelVersion, state: VersionState) -> None:
    _print_section(
        _console(),
        mv.uri,
        [
            ("Stage", state.stage),
            ("Registered by", state.registered_by),
            ("Approved by", state.approved_by),
            ("Decided at", state.decided_at),
            ("Aliases", ", ".join(mv.aliases) or None),
        ],
    )


def _show_state(registry: Registry, uri: str, as_json: bool) -> None:
    """Print a version's governance state after a verb (read again: aliases may have moved)."""
    mv = registry.get_version(uri)
    state = registry.state(mv.uri)
    if as_json:
        _echo_json(_state_json(mv, state))
    else:
        _print_state(mv, state)


def _latest_event(registry: Registry, uri: str, action: str) -> LedgerEvent | None:
    events = [e for e in registry.history(uri) if e.action == action]
    return events[-1] if events else None


@main.command()
@click.argument("identifier")
@json_option
@registry_options
def state(registry: Registry, identifier: str, as_json: bool) -> None:
    """Show where a version stands: stage, who registered and approved it, when it was decided.

    IDENTIFIER is a models:/ identifier or a model name (its latest version).

    \b
    Example:
        modelledger state models:/credit-risk/3
        modelledger state models:/credit-risk@production --json
    """
    _show_state(registry, identifier, as_json)


@main.command()
@click.argument("identifier")
@click.argument("stage_name", metavar="STAGE")
@reason_option
@click.option(
    "--detail",
    "details",
    multiple=True,
    callback=_parse_tags,
    metavar="KEY=VALUE",
    help="A detail recorded with the move (e.g. job=run-42); repeat for several.",
)
@json_option
@registry_options
def stage(
    registry: Registry,
    identifier: str,
    stage_name: str,
    reason: str | None,
    details: dict[str, str],
    as_json: bool,
) -> None:
    """Complete a manual stage (data_prepared, trained) or retire a version.

    Validated, approved, rejected and deployed have their own commands (validate,
    approve, reject, deploy), which record what those stages require.

    \b
    Example:
        modelledger stage models:/credit-risk/4 trained --detail job=run-42 --detail host=gpu-3
        modelledger stage models:/credit-risk/2 retired --reason "superseded by version 4"
    """
    mv = registry.get_version(identifier)
    registry.transition(mv.uri, stage_name, reason=reason, details=details)
    _show_state(registry, mv.uri, as_json)


@main.command()
@click.argument("identifier")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    callback=_parse_metrics,
    metavar="NAME=VALUE",
    help="A metric measured now (overrides the manifest's); repeat for several.",
)
@click.option("--dataset", default=None, help="The data set the metrics were measured on (e.g. holdout).")
@reason_option
@json_option
@registry_options
def validate(
    registry: Registry,
    identifier: str,
    metrics: dict[str, float],
    dataset: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    """Evaluate the manifest's gates: the version becomes validated if all pass, else rejected.

    Without --metric the gates are checked against the manifest's metrics. Prints
    each gate with its value; exit code 1 when a gate fails (the version is then
    rejected, and the ledger records why).

    \b
    Example:
        modelledger validate models:/credit-risk/3 --metric auc=0.84 --metric ks=0.41 --dataset holdout
    """
    mv = registry.get_version(identifier)
    result = registry.validate(mv.uri, metrics=metrics, dataset=dataset, reason=reason)
    event = _latest_event(registry, mv.uri, "validation.evaluated")
    gates: list[dict[str, Any]] = list(event.data.get("results") or []) if event else []
    passed = result.stage == "validated"
    if as_json:
        _echo_json({**_state_json(mv, result), "passed": passed, "gates": gates})
    else:
        console = _console()
        console.print(f"{escape(mv.uri)} is [bold]{escape(result.stage)}[/]")
        if gates:
            table = Table("Gate", "Value", "Result")
            for gate in gates:
                value = gate.get("value")
                table.add_row(
                    escape(str(gate.get("gate"))),
                    "missing" if value is None else f"{value:g}",
                    "[green]pass[/]" if gate.get("passed") else "[red]fail[/]",
                )
            console.print(table)
        else:
            console.print("  (the manifest has no gates)")
    if not passed:
        raise click.exceptions.Exit(1)


@main.command()
@click.argument("identifier")
@required_reason_option
@json_option
@registry_options
def approve(registry: Registry, identifier: str, reason: str, as_json: bool) -> None:
    """Approve a validated version. By default (four-eyes) not by whoever registered it.

    \b
    Example:
        modelledger approve models:/credit-risk/3 --reason "reviewed holdout report #41" --as bob@bank.example
    """
    mv = registry.get_version(identifier)
    registry.approve(mv.uri, reason=reason)
    _show_state(registry, mv.uri, as_json)


@main.command()
@click.argument("identifier")
@required_reason_option
@json_option
@registry_options
def reject(registry: Registry, identifier: str, reason: str, as_json: bool) -> None:
    """Reject a trained or validated version, with the reason.

    \b
    Example:
        modelledger reject models:/credit-risk/3 --reason "unstable on the Q3 cohort"
    """
    mv = registry.get_version(identifier)
    registry.reject(mv.uri, reason=reason)
    _show_state(registry, mv.uri, as_json)


@main.command()
@click.argument("identifier")
@click.option(
    "--alias",
    "alias_name",
    default=None,
    help="The alias to point at the version [default: the manifest's target_alias, else production]",
)
@reason_option
@json_option
@registry_options
def deploy(
    registry: Registry, identifier: str, alias_name: str | None, reason: str | None, as_json: bool
) -> None:
    """Point an alias at an approved version; the version it held before becomes @rollback.

    \b
    Example:
        modelledger deploy models:/credit-risk/3 --reason "CAB-1234"
        modelledger deploy models:/credit-risk/4 --alias canary
    """
    mv = registry.get_version(identifier)
    registry.deploy(mv.uri, alias=alias_name, reason=reason)
    event = _latest_event(registry, mv.uri, "deployment.deployed")
    target = str(event.data["alias"]) if event else (alias_name or "production")
    previous = event.data.get("previous") if event else None
    if as_json:
        _echo_json({"model": mv.model, "alias": target, "version": mv.version, "previous": previous})
        return
    click.echo(f"models:/{mv.model}@{target} -> {mv.uri}")
    if previous is not None:
        click.echo(f"models:/{mv.model}@rollback -> models:/{mv.model}/{previous}")


@main.command()
@click.argument("name", metavar="MODEL")
@click.option(
    "--alias", "alias_name", default="production", show_default=True, help="The alias to move back."
)
@reason_option
@json_option
@registry_options
def rollback(registry: Registry, name: str, alias_name: str, reason: str | None, as_json: bool) -> None:
    """Move an alias back to the version held by @rollback; prints which version now holds it.

    \b
    Example:
        modelledger rollback credit-risk --reason "INC-512: score drift"
    """
    version = registry.rollback(name, alias=alias_name, reason=reason)
    if as_json:
        _echo_json({"model": name, "alias": alias_name, "version": version})
        return
    click.echo(f"models:/{name}@{alias_name} -> models:/{name}/{version}")


# ---- history and audit


def _events_table(events: Iterable[LedgerEvent]) -> Table:
    table = Table("Seq", "Time", "Actor", "Action", "Subject", "Reason")
    for e in events:
        table.add_row(
            str(e.seq), escape(e.time), escape(e.actor), escape(e.action), escape(e.subject), _text(e.reason)
        )
    return table


def _split_alias(target: str) -> tuple[str, str | None]:
    """``MODEL@ALIAS`` or ``models:/MODEL@ALIAS`` -> (MODEL, ALIAS); anything else -> (target, None)."""
    rest = target[len("models:/") :] if target.startswith("models:/") else target
    name, sep, alias_name = rest.partition("@")
    if sep and "/" not in name:
        return name, alias_name
    return target, None


def _alias_moves(registry: Registry, name: str, alias_name: str) -> list[dict[str, Any]]:
    """Each move of the alias, with the reason of the ledger event that moved it."""
    changes: Sequence[AliasChange] = registry.alias_history(name, alias_name)
    reasons = {e.seq: e.reason for e in registry.history(name)} if changes else {}
    return [{**c.to_dict(), "reason": reasons.get(c.seq)} for c in changes]


@main.command()
@click.argument("target", metavar="MODEL[@ALIAS]")
@click.option(
    "--at",
    "when",
    default=None,
    callback=_parse_time,
    metavar="TIME",
    help="With MODEL@ALIAS: which version held the alias at this ISO 8601 time (UTC without offset).",
)
@json_option
@registry_options
def history(registry: Registry, target: str, when: datetime | None, as_json: bool) -> None:
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
        at = when.isoformat()
        if as_json:
            _echo_json({"model": name, "alias": alias_name, "at": at, "version": version})
        elif version is None:
            click.echo(f"models:/{name}@{alias_name} was not set at {at}")
        else:
            click.echo(f"models:/{name}@{alias_name} at {at}: models:/{name}/{version}")
        return
    if alias_name is not None:
        moves = _alias_moves(registry, name, alias_name)
        if as_json:
            _echo_json(moves)
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
                _text(m["reason"]),
            )
        _console().print(table)
        return
    events = registry.history(target)
    if as_json:
        _echo_json([e.to_dict() for e in events])
        return
    _console().print(_events_table(events))


@main.command()
@click.option("--model", default=None, help="Only events about this model (its versions and aliases).")
@click.option("--version", type=int, default=None, help="Only events about this version (needs --model).")
@click.option("--actor", default=None, help="Only events by this actor.")
@click.option("--action", default=None, help="Only this action; may end with * (e.g. 'version.*').")
@click.option(
    "--since", default=None, callback=_parse_time, metavar="TIME", help="From this time (ISO 8601)."
)
@click.option("--until", default=None, callback=_parse_time, metavar="TIME", help="Up to this time.")
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
    since: datetime | None,
    until: datetime | None,
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
        page = registry.audit(**filters, **_page_args(limit, cursor))
        _console().print(_events_table(page))
        _print_next_cursor(page)
        return
    while True:  # one page in memory at a time
        page = registry.audit(**filters, **_page_args(limit, cursor))
        for event in page:
            click.echo(json.dumps(event.to_dict(), default=str))
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


# ---- keys and policy


@main.group()
def keys() -> None:
    """The registry's signing key: export its public half to verify the ledger anywhere.

    \b
    Example:
        modelledger keys export -o registry.pub.pem
    """


@keys.command("export")
@output_option("Write the PEM here; default: stdout.")
@registry_options
def keys_export(registry: Registry, output_path: str | None) -> None:
    """Print or write the registry's public key (PEM).

    \b
    Example:
        modelledger keys export -o registry.pub.pem
        modelledger keys export > registry.pub.pem
    """
    pem = registry.public_key()
    if output_path is None:
        click.echo(pem.decode("ascii"), nl=False)
        return
    try:
        Path(output_path).write_bytes(pem)
    except OSError as exc:
        raise InvalidInput(f"cannot write {output_path}: {exc}") from exc
    click.echo(f"Wrote the registry's public key to {output_path}", err=True)


@main.group("policy")
def policy_group() -> None:
    """The approval policy: four-eyes, approver role, automatic approval, roles.

    \b
    Example:
        modelledger policy show
        modelledger policy set --approver-role model-risk --role carol@bank.example=model-risk --reason GOV-7
    """


def _print_policy(document: Mapping[str, Any]) -> None:
    roles = document.get("roles") or {}
    _print_section(
        _console(),
        "Policy",
        [
            ("Four eyes", document.get("four_eyes")),
            ("Approver role", document.get("approver_role")),
            ("Auto approve", document.get("auto_approve")),
            ("Roles", "; ".join(f"{a}={','.join(r)}" for a, r in sorted(roles.items())) or None),
        ],
    )


@policy_group.command("show")
@json_option
@registry_options
def policy_show(registry: Registry, as_json: bool) -> None:
    """Show the current approval policy.

    \b
    Example:
        modelledger policy show --json
    """
    document = registry.policy().to_dict()
    if as_json:
        _echo_json(document)
    else:
        _print_policy(document)


@policy_group.command("set")
@click.option(
    "--four-eyes/--no-four-eyes", default=None, help="Whether a registrant may approve their own version."
)
@click.option(
    "--approver-role", default=None, metavar="ROLE", help="Only actors with ROLE may approve ('' clears)."
)
@click.option(
    "--auto-approve/--no-auto-approve",
    default=None,
    help="Whether versions whose manifest asks for it are approved when all gates pass.",
)
@click.option(
    "--role",
    "roles",
    multiple=True,
    metavar="ACTOR=ROLE",
    help="Give ACTOR the ROLE (ACTOR= removes all their roles); repeat for several.",
)
@required_reason_option
@json_option
@registry_options
def policy_set(
    registry: Registry,
    four_eyes: bool | None,
    approver_role: str | None,
    auto_approve: bool | None,
    roles: tuple[str, ...],
    reason: str,
    as_json: bool,
) -> None:
    """Change the approval policy; the change, and any relaxation, is recorded with its reason.

    Only the settings given change; the rest stay as they are.

    \b
    Example:
        modelledger policy set --no-four-eyes --reason "team of one, GOV-7"
        modelledger policy set --approver-role model-risk --role carol@bank.example=model-risk --reason GOV-8
    """
    document = registry.policy().to_dict()
    changes = 0
    if four_eyes is not None:
        document["four_eyes"], changes = four_eyes, changes + 1
    if auto_approve is not None:
        document["auto_approve"], changes = auto_approve, changes + 1
    if approver_role is not None:
        document["approver_role"], changes = approver_role or None, changes + 1
    merged: dict[str, list[str]] = {a: list(r) for a, r in (document.get("roles") or {}).items()}
    for item in roles:
        who, sep, role = item.partition("=")
        if not sep or not who:
            raise click.BadParameter(f"expected ACTOR=ROLE, got {item!r}", param_hint="'--role'")
        if not role:
            merged.pop(who, None)
        elif role not in merged.setdefault(who, []):
            merged[who].append(role)
        changes += 1
    if not changes:
        raise click.UsageError(
            "nothing to change: give --four-eyes, --approver-role, --auto-approve or --role"
        )
    document["roles"] = merged
    new = registry.set_policy(document, reason=reason).to_dict()
    if as_json:
        _echo_json(new)
    else:
        _print_policy(new)


# ---- rebuild-state


def _differences_json(differences: Sequence[StateDifference]) -> list[dict[str, Any]]:
    return [{"what": d.what, "ledger": d.expected, "table": d.found} for d in differences]


@main.command("rebuild-state")
@click.option(
    "--check", is_flag=True, help="Only compare; exit code 1 when the tables differ from the ledger."
)
@json_option
@registry_options
def rebuild_state(registry: Registry, check: bool, as_json: bool) -> None:
    """Rewrite the state tables (stages, aliases, policy) from the ledger, or --check them.

    \b
    Example:
        modelledger rebuild-state --check
        modelledger rebuild-state
    """
    differences = registry.check_state() if check else registry.rebuild_state()
    if as_json:
        _echo_json({"checked_only": check, "differences": _differences_json(differences)})
    else:
        if not differences:
            click.echo("The state tables match the ledger")
        elif check:
            click.echo(f"{len(differences)} differences between the state tables and the ledger:")
        else:
            click.echo(f"Rebuilt the state tables from the ledger; {len(differences)} differences fixed:")
        for d in differences:
            click.secho(f"  {d}", fg="red" if check else None)
    if check and differences:
        raise click.exceptions.Exit(1)


# =========================================================================== receipts
# `modelledger receipt verify`: checks one prediction receipt offline. It needs no
# registry, only the public key, so it maps errors with `_fail` directly instead of
# through `registry_options` (which opens a registry).


@main.group()
def receipt() -> None:
    """Prediction receipts: check one offline with only the registry's public key.

    \b
    Example:
        modelledger receipt verify receipt.json --public-key registry.pub.pem
    """


@receipt.command("verify")
@click.argument("receipt_path", metavar="RECEIPT_JSON", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--public-key",
    "public_key_path",
    required=True,
    metavar="PEM",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The registry's public key (from `modelledger keys export`).",
)
@json_option
@click.option("--traceback", "show_traceback", is_flag=True, help="Show the full traceback of an error.")
def receipt_verify(receipt_path: Path, public_key_path: Path, as_json: bool, show_traceback: bool) -> None:
    """Check a prediction receipt: exit code 0 when genuine, 1 (with the reason) when not.

    Any changed field, a proof from another batch or another key's signature fails.

    \b
    Example:
        modelledger receipt verify receipt.json --public-key registry.pub.pem
        modelledger receipt verify receipt.json --public-key registry.pub.pem --json
    """
    from modelledger._serving import Receipt, check_receipt
    from modelledger.errors import InvalidReceipt

    try:
        try:
            text = receipt_path.read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read {receipt_path}: {exc.strerror or exc}") from exc
        try:
            pem = public_key_path.read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read {public_key_path}: {exc.strerror or exc}") from exc
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise InvalidInput(f"{receipt_path} is not JSON: {exc}") from exc
        try:
            check_receipt(raw, pem)
        except InvalidReceipt as exc:
            if as_json:
                _echo_json({"valid": False, "prediction_id": exc.prediction_id, "reason": exc.reason})
            raise
        parsed = Receipt.from_dict(raw)
    except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
        raise
    except Exception as exc:
        _fail(exc, show_traceback=show_traceback)
    if as_json:
        _echo_json({"valid": True, **parsed.to_dict()})
        return
    click.echo(
        f"Receipt {parsed.prediction_id} is valid: models:/{parsed.model}/{parsed.version} "
        f"({parsed.digest}) at {parsed.time}, signed by key {parsed.key_id}"
    )


# =========================================================================== data sets and lineage
# `datasets list|show|register|lineage`, `lineage` and `diff` (issue 4): each calls one
# public verb (registry.datasets.*, registry.lineage, registry.diff) and renders its result.

if TYPE_CHECKING:
    from modelledger._domain import DatasetVersion
    from modelledger._lineage import LineageEdge, LineageGraph, LineageNode, VersionDiff

LINEAGE_FORMATS = ("tree", "json", "dot", "mermaid")


def _digest_prefix(digest: str | None) -> str:
    """``sha256:`` and the first 12 hex digits: enough to tell versions apart on screen."""
    return (digest or "")[:19]


def _load_steps(path: str) -> list[Any]:
    """Processing steps from a JSON or YAML file: a list of steps, or ``{"steps": [...]}``."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read steps file {path}: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(text) if path.lower().endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise InvalidInput(f"steps file {path} is not valid JSON or YAML: {_one_line(str(exc))}") from exc
    if isinstance(doc, Mapping) and set(doc) == {"steps"}:
        doc = doc["steps"]
    if not isinstance(doc, list) or not all(isinstance(s, Mapping) for s in doc):
        raise InvalidInput(f"steps file {path} must hold a list of steps (mappings with at least a name)")
    return doc


@main.group()
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
    page = registry.datasets.list(prefix=prefix, **_page_args(limit, cursor))
    if as_json:
        _echo_json({"items": list(page.items), "next_cursor": page.next_cursor})
        return
    table = Table("Name", "Latest", "Description", "Created")
    for d in page:
        table.add_row(
            escape(d["name"]),
            str(d["latest_version"] or "-"),
            escape(d.get("description") or ""),
            escape(str(d["created_at"])[:16].replace("T", " ")),
        )
    _console().print(table)
    _print_next_cursor(page)


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
            _text(stats.get("nulls")),
            _text(stats.get("min")),
            _text(stats.get("max")),
            _text(stats.get("distinct")),
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
        _echo_json({**dv.to_dict(), "used_by": [{"model": m, "role": r} for m, r in users]})
        return
    console = _console()
    src = dv.source
    _print_section(
        console,
        dv.uri,
        [
            ("Digest", dv.digest),
            ("Rows", f"{dv.row_count:,}"),
            ("Columns", len(dv.schema)),
            ("Stored", f"{dv.path} ({_size(dv.size_bytes)}, Parquet, sha256 {dv.file_sha256[:12]})"),
            ("Created", f"{dv.created_at.isoformat()} by {dv.created_by or '?'}"),
        ],
    )
    console.print()
    _print_section(
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
                _text(dict(step.params)) if step.params else "",
                escape(_code_text(step.code) or ""),
            )
        console.print(steps)
    else:
        _print_section(console, "Steps", [])
    console.print()
    _print_section(console, "Used by", [(m, r) for m, r in users])


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
    steps = _load_steps(steps_path) if steps_path else []
    source: dict[str, Any] | None = None
    if source_uri or source_kind or query:
        kind = source_kind or ("query" if query else "file")
        source = {"uri": source_uri or location, "kind": kind, "query": query}
    bar = _TransferBar(f"Ingesting {name}")
    try:
        dv = registry.datasets.register(name, location, source=source, steps=steps, progress=bar)
    finally:
        bar.close()
    if as_json:
        _echo_json(dv.to_dict())
        return
    click.echo(dv.uri)


def _node_text(node: LineageNode, edge_label: str = "") -> str:
    """One line of a lineage tree, as rich markup."""
    d = node.data
    if node.kind == "dataset":
        digest = escape(_digest_prefix(d.get("digest")))
        text = f"[bold]{escape(node.id)}[/]  {d.get('rows', 0):,} rows  [dim]{digest}[/]"
    elif node.kind == "model":
        text = f"[bold cyan]{escape(node.label)}[/]"
    elif node.kind == "step":
        text = f"[yellow]{escape(node.label)}[/]"
        if d.get("columns"):
            text += f"  [dim]columns: {escape(', '.join(map(str, d['columns'])))}[/]"
    else:  # source
        text = f"[green]source {escape(node.label)}[/]"
        if d.get("query"):
            text += f"  [dim]{escape(_one_line(str(d['query'])))}[/]"
        if d.get("extracted_at"):
            text += f"  [dim]extracted {escape(str(d['extracted_at']))}[/]"
    return f"[dim]{escape(edge_label)}:[/] {text}" if edge_label else text


def _lineage_tree(graph: LineageGraph, *, downstream: bool) -> Any:
    """The graph as a rich Tree from its root, following edges one way; shared parts once."""
    from rich.tree import Tree

    def links(node_id: str) -> list[tuple[LineageEdge, LineageNode]]:
        return graph.downstream(node_id) if downstream else graph.upstream(node_id)

    def grow(branch: Any, node_id: str) -> None:
        for edge, node in links(node_id):
            child = branch.add(_node_text(node, edge.label))
            if node.id in expanded:
                if links(node.id):
                    child.add("[dim](shown above)[/]")
                continue
            expanded.add(node.id)
            grow(child, node.id)

    root = graph.nodes[graph.root]
    tree = Tree(_node_text(root))
    expanded = {root.id}
    grow(tree, root.id)
    return tree


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
        _echo_json({"dataset": uri, "used_by": models, "graph": graph.to_dict()})
        return
    console = _console()
    console.print(_lineage_tree(graph, downstream=True))
    if not models:
        console.print("[dim]No model version was trained or evaluated on it.[/]")


@main.command("lineage")
@click.argument("identifier")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(LINEAGE_FORMATS),
    default="tree",
    show_default=True,
    help="tree for people; json, dot (Graphviz) or mermaid for machines and pictures.",
)
@json_option
@registry_options
def lineage(registry: Registry, identifier: str, fmt: str, as_json: bool) -> None:
    """Show everything upstream of a model or data set version: data sets, steps and sources.

    \b
    Example:
        modelledger lineage models:/credit-risk/3
        modelledger lineage models:/credit-risk@production --format mermaid > lineage.mmd
        modelledger lineage datasets:/applications-train/2 --format dot | dot -Tsvg > lineage.svg
    """
    graph = registry.lineage(identifier)
    if as_json or fmt == "json":
        _echo_json(graph.to_dict())
    elif fmt == "dot":
        click.echo(graph.to_dot(), nl=False)
    elif fmt == "mermaid":
        click.echo(graph.to_mermaid(), nl=False)
    else:
        _console().print(_lineage_tree(graph, downstream=False))


def _print_changes(console: Console, title: str, changes: Mapping[str, tuple[Any, Any]]) -> None:
    if changes:
        _print_section(
            console, title, [(k, f"{_text(old)} -> {_text(new)}") for k, (old, new) in changes.items()]
        )
        console.print()


@main.command("diff")
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@json_option
@registry_options
def diff(registry: Registry, a: str, b: str, as_json: bool) -> None:
    """Show what changed between two model versions.

    Hyperparameters, code revision, framework and dependency versions, data sets (with their
    schema and row counts) and metrics.

    \b
    Example:
        modelledger diff models:/credit-risk/2 models:/credit-risk/3
        modelledger diff models:/credit-risk@production models:/credit-risk/4 --json
    """
    d: VersionDiff = registry.diff(a, b)
    if as_json:
        _echo_json(d.to_dict())
        return
    console = _console()
    if d.empty:
        console.print(f"No differences between {escape(d.a)} and {escape(d.b)}")
        return
    console.print(f"[bold]{escape(d.a)} -> {escape(d.b)}[/]")
    console.print()
    for title, changes in (
        ("Params", d.params),
        ("Metrics", d.metrics),
        ("Code", d.code),
        ("Framework", d.framework),
        ("Dependencies", d.dependencies),
    ):
        _print_changes(console, title, changes)
    for ds in d.datasets:
        schema = ds["schema"]
        rows = [
            ("Version", f"{ds['old'] or '-'} -> {ds['new'] or '-'}"),
            (
                "Digest",
                f"{_digest_prefix(ds['old_digest']) or '-'} -> {_digest_prefix(ds['new_digest']) or '-'}",
            ),
            ("Rows", f"{_text(ds['rows']['old'])} -> {_text(ds['rows']['new'])}"),
        ]
        if schema["added"]:
            rows.append(("Columns added", ", ".join(schema["added"])))
        if schema["removed"]:
            rows.append(("Columns removed", ", ".join(schema["removed"])))
        for col, change in schema["retyped"].items():
            rows.append((f"Column {col}", f"{change['old']} -> {change['new']}"))
        _print_section(console, f"Data set: {ds['role']}", rows)
        console.print()


# --------------------------------------------------------------------------- trace and captured predictions


def _dataset_lines(console: Console, entries: Iterable[Mapping[str, Any]], indent: str) -> None:
    for entry in entries:
        role = f"[{entry['role']}] " if entry.get("role") else ""
        src = entry.get("source") or {}
        where = src.get("uri") or src.get("query") or ""
        console.print(
            f"{indent}{escape(role)}{escape(entry['uri'])}  {entry['rows']:,} rows  "
            f"{escape(entry['digest'][:19])}...  source: {escape(str(src.get('kind')))} {escape(str(where))}",
            soft_wrap=True,
        )
        if entry.get("see_above"):
            console.print(f"{indent}    (steps shown above)")
            continue
        code = src.get("code") or {}
        if code.get("revision"):
            console.print(
                f"{indent}    extracted by {escape(str(code.get('path')))}"
                f" @ {escape(str(code['revision'])[:12])}"
            )
        for step in entry.get("steps") or ():
            cols = f" on {', '.join(step['columns'])}" if step.get("columns") else ""
            rev = (step.get("code") or {}).get("revision")
            console.print(
                f"{indent}    step {escape(step['name'])} ({escape(step['kind'])}){escape(cols)}"
                + (f" @ {escape(str(rev)[:12])}" if rev else ""),
                soft_wrap=True,
            )
            _dataset_lines(console, step.get("inputs") or (), indent + "        ")


@main.command("trace")
@click.argument("prediction_id")
@json_option
@registry_options
def trace(registry: Registry, prediction_id: str, as_json: bool) -> None:
    """Trace one prediction back to its model, approval, code and data.

    Prints the prediction and its receipt check, the model version and artefact digests, who
    approved and deployed it (from the ledger), the manifest (code, hyperparameters,
    framework, dependencies, training job) and the data sets with their sources and
    processing steps, recursively. Exits 1 when the receipt does not verify.

    \b
    Example:
        modelledger trace 01JD3M4Q8Z0000001K7WQ2X9RB
        modelledger trace 01JD3M4Q8Z0000001K7WQ2X9RB --json > trace.json
    """
    report = registry.trace(prediction_id)
    if as_json:
        _echo_json(report.to_dict())
    else:
        console = _console()
        p, m, g, man = report.prediction, report.model, report.governance, report.manifest
        check = "valid" if report.receipt_valid else f"INVALID: {report.receipt_problem}"
        _print_section(
            console,
            f"Prediction {p['id']}",
            [("time", p["time"]), ("input", p["input"]), ("output", p["output"]), ("receipt", check)],
        )
        console.print()
        _print_section(
            console,
            f"Model {m['uri']}",
            [
                ("digest", m["digest"]),
                ("folder", m["folder"]),
                ("registered", f"{m['registered_by']} {m['registered_at']}"),
            ]
            + [(f"file {f['path']}", f"sha256:{f['sha256']}") for f in m["files"]],
        )
        console.print()
        rows: list[tuple[str, Any]] = [("stage now", g["stage"])]
        rows += [
            (
                "approved",
                f"{a['actor']} {a['time']}: {a['reason']}" + (" (automated)" if a["automated"] else ""),
            )
            for a in g["approvals"]
        ]
        rows += [
            ("deployed", f"@{d['alias']} by {d['actor']} {d['time']}: {d['reason'] or ''}")
            for d in g["deployments"]
        ]
        rows.append(("aliases then", ", ".join(f"@{a}" for a in g["aliases_at_prediction"]) or "-"))
        _print_section(console, "Governance (from the ledger)", rows)
        console.print()
        src = man.get("source") or {}
        job = man.get("training_job") or {}
        _print_section(
            console,
            "How it was built",
            [
                (
                    "code",
                    f"{src.get('repo_url')} {src.get('path')} @ {src.get('revision')}"
                    f" dirty={src.get('dirty')}",
                ),
                ("algorithm", man.get("algorithm")),
                (
                    "framework",
                    f"{man.get('framework')} {man.get('framework_version')}, Python {man.get('python')}",
                ),
                ("dependencies", f"{len(man.get('dependencies') or {})} packages pinned"),
                ("params", man.get("params")),
                ("metrics", man.get("metrics")),
                (
                    "training job",
                    f"{job.get('id')} {job.get('started_at')} -> {job.get('ended_at')} on {job.get('host')}",
                ),
            ]
            + [
                (f"model step {s['name']}", f"{s.get('kind')} on {', '.join(s.get('columns') or [])}")
                for s in report.model_steps
            ],
        )
        console.print()
        console.print("[bold]Data[/]")
        _dataset_lines(console, report.datasets, "  ")
    if not report.receipt_valid:
        raise SystemExit(1)


@main.command("predictions")
@click.argument("identifier_or_model")
@click.option("--since", default=None, help="Only predictions at or after this time (ISO 8601).")
@click.option("--until", default=None, help="Only predictions before this time (ISO 8601).")
@output_option("Write them to a .csv or .parquet file (default: a summary on stdout).")
@registry_options
def predictions(
    registry: Registry,
    identifier_or_model: str,
    since: str | None,
    until: str | None,
    output_path: str | None,
) -> None:
    """Read captured predictions of a version, or of every version of a model, for a time range.

    \b
    Example:
        modelledger predictions credit-risk --since 2026-11-01 -o november.parquet
        modelledger predictions models:/credit-risk/3 --since 2026-11-27T00:00:00Z
    """
    _check_table_output(output_path)
    table = registry.predictions(identifier_or_model, since=since, until=until)
    if output_path is None:
        click.echo(f"{table.num_rows} captured prediction(s)")
        if table.num_rows:
            times = table.column("time")
            click.echo(f"from {times[0].as_py()} to {times[-1].as_py()}")
        return
    _write_table(table.to_pandas(), output_path)
    click.echo(f"wrote {table.num_rows} prediction(s) to {output_path}")
