"""What every command shares: options, the one error mapping, output and paging helpers.

:func:`registry_options` opens the registry for a command and is, with :func:`fail`, the
one place where a :class:`~modelledger.ModelLedgerError` (or anything unexpected) becomes
a red one-line message on stderr and exit code 1. :class:`OneLineUsageGroup` does the same
for click's usage errors (a missing argument, an unknown option...), which keep exit code 2.
Times and ages given on the command line stay text and are parsed by the library verbs that
take them (one set of forms everywhere: ISO 8601, a date, now, today, yesterday, or an age
such as 7d).

Exit codes: 0 success, 1 an error (a library error or a failed check), 2 a usage error,
3 ``register`` landed a version that is not where it was asked to be (rejected by its
gates, or short of ``--require-stage``; the version is registered all the same).
"""

from __future__ import annotations

import functools
import json
import os
import stat
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

import click

from modelledger import InvalidInput, MissingDependency, ModelLedgerError, Page, Registry, resolve_config

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_PROMOTED = 3
"""``register``: the version landed, but rejected by its gates or short of ``--require-stage``."""

EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 error; 2 usage error; 3 `register` landed a version its gates "
    "rejected, or short of --require-stage (the version is registered)."
)

TIME_HELP = "ISO 8601, a date, now, today, yesterday, or an age such as 90s, 30m, 24h, 7d, 2w"
"""The forms every time option takes (the library parses them, one rule for all)."""

PROGRESS_THRESHOLD = 4 * 1024 * 1024
"""Uploads larger than this (in bytes) get a progress bar."""

TABLE_SUFFIXES = (".csv", ".parquet")

F = Callable[..., Any]


def make_console(*, stderr: bool = False) -> Console:
    """A console on the current stdout/stderr (looked up per call, so tests can capture it).

    Output that is not a terminal gets a wide page, so piped tables do not fold
    digests and paths.
    """
    # rich is loaded by the commands that render, not by every command (`server` prints nothing)
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console.width = 240
    return console


def escape(text: str) -> str:
    """``text`` with rich's markup escaped, so that data is never read as markup."""
    from rich.markup import escape as escape_markup  # rich: loaded by the commands that render

    return escape_markup(text)


def echo_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, default=str))


def as_text(value: Any) -> str:
    """A value as table-cell markup: JSON for structures, escaped so data is never markup."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list, tuple)):
        value = json.dumps(value, default=str)
    return escape(str(value))


def tags_text(tags: Mapping[str, str]) -> str:
    return escape(", ".join(f"{k}={v}" for k, v in sorted(tags.items())))


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def print_section(console: Console, title: str, rows: Iterable[tuple[str, Any]]) -> None:
    """A bold title, then ``key  value`` lines with aligned keys (no padding, so it greps well)."""
    console.print(f"[bold]{escape(title)}[/]")
    items = list(rows)
    if not items:
        console.print("  (none)")
        return
    width = max(len(key) for key, _ in items)
    for key, value in items:
        console.print(f"  {escape(key)}{' ' * (width - len(key))}  {as_text(value)}", soft_wrap=True)


def page_json(page: Page[Any]) -> dict[str, Any]:
    return {"items": [item.to_dict() for item in page], "next_cursor": page.next_cursor}


def print_next_cursor(page: Page[Any]) -> None:
    # quoted: a bare cursor such as NA or None would read as "no next page"
    if page.next_cursor:
        click.echo(f"Next page: --cursor '{page.next_cursor}'")


def exclusive(**flags: Any) -> None:
    """Refuse flags that cannot be honoured together: a usage error (one line, exit code 2).

    Give each flag's command-line spelling and whether (or with what value) it was used.
    """
    given = [name for name, value in flags.items() if value]
    if len(given) > 1:
        raise click.UsageError(f"{' and '.join(given)} cannot be used together")


def read_table(path: str) -> Any:
    """A CSV or Parquet file as a pandas DataFrame, chosen by extension."""
    import pandas as pd  # heavy: loaded on first use so `import modelledger` stays fast

    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InvalidInput(f"cannot read {path}: use a .csv or .parquet file")
    try:
        return pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pandas' parser errors are ValueErrors
        raise InvalidInput(f"cannot read {path}: {exc}") from exc


def parse_tags(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}")
        tags[key] = value
    return tags


def parse_metrics(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for key, value in parse_tags(ctx, param, values).items():
        try:
            metrics[key] = float(value)
        except ValueError:
            raise click.BadParameter(f"expected NAME=NUMBER, got {key}={value!r}") from None
    return metrics


def one_line(message: str) -> str:
    return " ".join(message.split())


class OneLineUsageError(click.UsageError):
    """A click usage error shown as one line: the problem, then where to find help."""

    def __init__(self, original: click.UsageError) -> None:
        super().__init__(original.format_message(), original.ctx)

    def show(self, file: IO[Any] | None = None) -> None:
        message = one_line(self.format_message())
        if not message.endswith((".", "?", "!")):
            message += "."
        ctx = self.ctx
        if ctx is not None and ctx.command.get_help_option(ctx) is not None:
            message += f" Try '{ctx.command_path} {max(ctx.help_option_names, key=len)}'."
        click.secho(
            f"Error: {message}", file=file, err=file is None, fg="red", color=ctx.color if ctx else None
        )


# click >= 8.2 raises this for a group run without a command: it prints the help, as it should
_SHOWS_HELP: tuple[type[BaseException], ...] = tuple(
    cls for cls in (getattr(click.exceptions, "NoArgsIsHelpError", None),) if cls is not None
)


class OneLineUsageGroup(click.Group):
    """The ``main`` group: every usage error below it prints one line and exits with code 2.

    Parsing happens in :meth:`make_context` (this group's options) and in :meth:`invoke`
    (each subcommand's), so wrapping those two covers every command.
    """

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise _one_line_usage(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _one_line_usage(exc) from None


def _one_line_usage(exc: click.UsageError) -> click.UsageError:
    if isinstance(exc, (OneLineUsageError, *_SHOWS_HELP)):
        return exc
    return OneLineUsageError(exc)


def fail(exc: BaseException, *, show_traceback: bool) -> NoReturn:
    """Report an error as one red line on stderr (after the traceback, if asked) and exit."""
    if show_traceback:
        click.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
    if isinstance(exc, MissingDependency):
        # the CLI may live in its own environment (pipx, a tool venv): say which one needs it
        message, code = f"{exc.message} (in the Python environment at {sys.prefix})", exc.exit_code
    elif isinstance(exc, ModelLedgerError):
        message, code = exc.message, exc.exit_code
    else:
        message = f"unexpected {type(exc).__name__}: {exc}"
        if not show_traceback:
            message += " (run again with --traceback for details)"
        code = 1
    click.secho(f"Error: {one_line(message)}", fg="red", err=True)
    raise click.exceptions.Exit(code)


def parse_storage_options(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> dict[str, Any] | None:
    """``KEY=VALUE`` pairs as fsspec storage options; a value that parses as JSON (``true``,
    ``9000``, ``{"a": 1}``) is that value, anything else is the text. None when none are given,
    so the environment and config files still apply."""
    if not values:
        return None
    options: dict[str, Any] = {}
    for item in values:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(text)
        except ValueError:
            options[key] = text
    return options


_WHERE_OPTIONS = [
    click.option(
        "--registry",
        "registry_url",
        metavar="URL",
        help="Metadata database: sqlite:///path.db, postgresql://... or dynamodb://<table-prefix>?region=... "
        "[env: MODELLEDGER_URL; else `registry` in modelledger.toml or the user config; "
        "default: the embedded ./.modelledger registry]",
    ),
    click.option(
        "--artifacts",
        "artifacts_url",
        metavar="URL",
        help="Artefact root: a folder, file://, s3:// or memory:// URL "
        "[env: MODELLEDGER_ARTIFACTS; else `artifacts` in modelledger.toml or the user config]",
    ),
    click.option(
        "--storage-option",
        "storage_options",
        multiple=True,
        callback=parse_storage_options,
        metavar="KEY=VALUE",
        help="An fsspec storage option for the artefact root (e.g. endpoint_url=http://minio:9000), "
        "or a dynamodb:// registry's dynamodb_endpoint_url / dynamodb_region; "
        "repeat for several; values are JSON when they parse, else text. Replaces the whole "
        "[storage_options] table of lower layers "
        "[env: MODELLEDGER_STORAGE_OPTIONS as a JSON object; else modelledger.toml or the user config]",
    ),
    click.option(
        "--object-lock",
        "object_lock",
        metavar="MODE:PERIOD[:legal-hold]",
        help="Write every artefact, manifest, data set and capture file with S3 Object Lock "
        "retention, e.g. governance:30d or compliance:52w:legal-hold; off turns it off "
        "[env: MODELLEDGER_OBJECT_LOCK; else `object_lock` in modelledger.toml or the user config]",
    ),
]

_TRACEBACK_OPTION = click.option(
    "--traceback", "show_traceback", is_flag=True, help="Show the full traceback of an error."
)


def _with_options(fn: F, options: list[Callable[[F], F]]) -> F:
    decorated = fn
    for option in reversed(options):
        decorated = option(decorated)
    return decorated


def _reported(show_traceback: bool, call: Callable[[], Any]) -> Any:
    """Run ``call``; any error but click's own becomes one line and an exit code (:func:`fail`)."""
    try:
        return call()
    except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
        raise
    except Exception as exc:
        fail(exc, show_traceback=show_traceback)


def registry_options(fn: F) -> F:
    """Add ``--registry``, ``--artifacts``, ``--storage-option``, ``--object-lock``, ``--as`` and
    ``--traceback``;
    open the registry; map errors.

    The command receives the open :class:`Registry` as its first argument. Options not given
    are resolved by :meth:`Registry.open` (environment, config files, default), the one path
    the Python API takes too. This is the one place where exceptions become messages and exit
    codes; click's own usage errors pass through to :class:`OneLineUsageGroup` (one line,
    exit code 2).
    """

    @functools.wraps(fn)
    def wrapper(
        *args: Any,
        registry_url: str | None,
        artifacts_url: str | None,
        storage_options: dict[str, Any] | None,
        object_lock: str | None,
        as_actor: str | None,
        show_traceback: bool,
        **kwargs: Any,
    ) -> Any:
        def run() -> Any:
            with Registry.open(
                registry_url,
                artifacts=artifacts_url,
                storage_options=storage_options,
                actor=as_actor,
                object_lock=object_lock,
            ) as registry:
                return fn(registry, *args, **kwargs)

        return _reported(show_traceback, run)

    as_option = click.option(
        "--as",
        "as_actor",
        metavar="ACTOR",
        default=None,
        help="Act as ACTOR, as recorded in the ledger "
        "[env: MODELLEDGER_USER; default: git's user.email, else the OS user]",
    )
    return _with_options(wrapper, [*_WHERE_OPTIONS, as_option, _TRACEBACK_OPTION])


def config_options(fn: F) -> F:
    """Like :func:`registry_options` (without ``--as``), but the command receives the
    :class:`ResolvedConfig` those options resolve to instead of an open registry."""

    @functools.wraps(fn)
    def wrapper(
        *args: Any,
        registry_url: str | None,
        artifacts_url: str | None,
        storage_options: dict[str, Any] | None,
        object_lock: str | None,
        show_traceback: bool,
        **kwargs: Any,
    ) -> Any:
        def run() -> Any:
            config = resolve_config(
                registry=registry_url,
                artifacts=artifacts_url,
                storage_options=storage_options,
                object_lock=object_lock,
            )
            return fn(config, *args, **kwargs)

        return _reported(show_traceback, run)

    return _with_options(wrapper, [*_WHERE_OPTIONS, _TRACEBACK_OPTION])


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


def _is_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def check_table_output(output_path: str | None) -> None:
    """Refuse an output path we cannot write before doing any work.

    A .csv or .parquet file, or a character device such as /dev/null or /dev/stdout
    (written as CSV); an existing file must be writable.
    """
    if output_path is None:
        return
    if Path(output_path).suffix.lower() not in TABLE_SUFFIXES and not _is_device(output_path):
        raise InvalidInput(f"cannot write {output_path}: use a .csv or .parquet file")
    if os.path.exists(output_path) and not os.access(output_path, os.W_OK):
        raise InvalidInput(f"cannot write {output_path}: permission denied")


def write_table(frame: Any, output_path: str) -> None:
    """A pandas frame to .csv or .parquet (checked with :func:`check_table_output`)."""
    try:
        if Path(output_path).suffix.lower() != ".parquet":
            frame.to_csv(output_path, index=False)
        else:
            frame.to_parquet(output_path, index=False)
    except OSError as exc:
        raise InvalidInput(f"cannot write {output_path}: {exc}") from exc


limit_option = click.option("--limit", type=int, default=None, help="Page size (1-1000, default 100).")
cursor_option = click.option(
    "--cursor", default=None, help="Continue a listing from its 'Next page: --cursor' value."
)
tag_option = click.option(
    "--tag",
    "tags",
    multiple=True,
    callback=parse_tags,
    metavar="KEY=VALUE",
    help="A tag; repeat for several.",
)


def page_args(limit: int | None, cursor: str | None) -> dict[str, Any]:
    args: dict[str, Any] = {"cursor": cursor}
    if limit is not None:
        args["limit"] = limit
    return args


class TransferBar:
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
            # rich's progress bars: loaded for a big transfer only
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=make_console(stderr=True),
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


class RowBar:
    """A rich bar on stderr counting rows, shown only when there are more than ``threshold``."""

    def __init__(self, label: str, *, total: int, threshold: int) -> None:
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if total > threshold:
            # rich's progress bars: loaded for a long run only
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=make_console(stderr=True),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(label, total=total)

    def advance(self, rows: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, rows)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
