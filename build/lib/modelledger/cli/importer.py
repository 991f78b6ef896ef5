"""``import mlflow``: copy an MLflow model registry into this registry."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from modelledger import ImportInterrupted, MlflowImport, Registry, import_mlflow

from ._common import echo_json, json_option, make_console, registry_options


@click.group("import")
def import_group() -> None:
    """Import models from another registry (MLflow).

    \b
    Example:
        modelledger import mlflow --tracking-uri http://127.0.0.1:5000
        modelledger import mlflow --tracking-uri sqlite:///mlflow.db
    """


class _Bar:
    """The library's ``progress(done, total, what)`` as a rich bar on stderr."""

    def __init__(self, enabled: bool) -> None:
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._enabled = enabled

    def __call__(self, done: int, total: int, what: str) -> None:
        if not self._enabled:
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=make_console(stderr=True),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("importing", total=total)
        assert self._task is not None
        self._progress.update(
            self._task, completed=done, total=total, description=f"importing {escape(what)}"
        )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _parse_renames(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for value in values:
        old, sep, new = value.partition("=")
        if not sep or not old or not new:
            raise click.BadParameter(f"{value!r}: use MLFLOW_NAME=NEW_NAME", param_hint="--rename")
        out[old] = new
    return out


def _show(summary: MlflowImport) -> None:
    console = make_console()
    counts = Table("", "Imported", "Skipped", "Failed", title=f"Imported from {escape(summary.tracking_uri)}")
    for kind, row in summary.counts().items():
        counts.add_row(f"{kind}s", *(str(row[s]) for s in ("imported", "skipped", "failed")))
    console.print(counts)
    notable = [
        o for o in summary.outcomes if o.status == "failed" or (o.reason and o.reason != "already imported")
    ]
    if notable:
        table = Table("What", "MLflow", "Status", "modelledger", "Why")
        for o in notable:
            table.add_row(o.kind, escape(o.source), o.status, escape(o.target or "-"), escape(o.reason))
        console.print(table)


@import_group.command("mlflow")
@click.option(
    "--tracking-uri",
    required=True,
    help="MLflow's tracking server (http://host:5000) or database (sqlite:///mlflow.db, postgresql://...)",
)
@click.option("--registry-uri", default=None, help="MLflow's model registry, if not the tracking URI")
@click.option(
    "--model", "models", multiple=True, metavar="NAME", help="Import only this MLflow model (repeatable)"
)
@click.option(
    "--rename",
    "renames",
    multiple=True,
    metavar="MLFLOW_NAME=NAME",
    help="Import an MLflow model under another name (repeatable)",
)
@click.option("--timeout", default=30, show_default=True, help="Seconds to wait for each MLflow request")
@click.option("--retries", default=1, show_default=True, help="Retries of a failed MLflow request")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar on stderr")
@json_option
@registry_options
def import_mlflow_command(
    registry: Registry,
    tracking_uri: str,
    registry_uri: str | None,
    models: tuple[str, ...],
    renames: tuple[str, ...],
    timeout: int,
    retries: int,
    progress: bool,
    as_json: bool,
) -> None:
    """Import MLflow's registered models, versions, aliases and runs; only what is new.

    Each version becomes a registered version (its MLflow model folder, verified against
    MLflow's listing and loaded back) whose manifest records the MLflow run, experiment and
    model URI. MLflow stages are recorded as the tag mlflow.stage, never acted on: approve
    and deploy through governance. Run it again to import what is new or to finish an
    interrupted import. Exit code 1 if anything failed.

    \b
    Example:
        modelledger import mlflow --tracking-uri http://127.0.0.1:5000
        modelledger import mlflow --tracking-uri sqlite:///mlflow.db --model churn --json
        modelledger import mlflow --tracking-uri sqlite:///mlflow.db --rename Fraud=fraud
    """
    bar = _Bar(progress and not as_json)
    try:
        summary = import_mlflow(
            registry,
            tracking_uri,
            registry_uri=registry_uri,
            models=list(models) if models else None,
            rename=_parse_renames(renames),
            progress=bar,
            timeout=timeout,
            retries=retries,
        )
    except ImportInterrupted as exc:
        bar.close()
        if isinstance(exc.summary, MlflowImport):
            if as_json:
                echo_json(exc.summary.to_dict())
            else:
                _show(exc.summary)
        raise
    finally:
        bar.close()
    if as_json:
        echo_json(summary.to_dict())
    else:
        _show(summary)
    if not summary.ok:
        raise click.exceptions.Exit(1)
