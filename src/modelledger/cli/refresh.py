"""``refresh`` (train a new candidate from a version's recorded entrypoint on newer data) and
``scheduler`` (fire the refreshes manifests declare: on a cron schedule, when data lands)."""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

import click

from modelledger import Firing, RefreshReport, Registry, Scheduler, StepEvent

from ._common import echo_json, escape, json_option, make_console, print_section, registry_options


def _parse_data(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        role, sep, uri = item.partition("=")
        if not sep or not role or not uri:
            raise click.BadParameter(f"{item!r}: write ROLE=DATASET, e.g. train=datasets:/applications/8")
        if role in out:
            raise click.BadParameter(f"role {role!r} is given twice")
        out[role] = uri
    return out


def _progress(console: Any) -> Any:
    """Print each step of the run as it starts, ends or fails, on stderr (stdout is the result),
    as ``reproduce`` prints its steps."""
    marks = {"done": "[green]✓[/green]", "failed": "[red]✗[/red]"}

    def show(event: StepEvent) -> None:
        if event.status == "started":
            console.print(f"[bold]{escape(event.step)}[/bold] ...")
        elif event.status == "progress":
            console.print(f"  {escape(event.detail)}", style="dim")
        else:
            console.print(f"{marks.get(event.status, '')} {escape(event.step)}: {escape(event.detail)}")

    return show


def _gate_text(gate: Any) -> str:
    value = gate.get("value")
    measured = "missing" if value is None else f"{value:g}"
    return f"{gate.get('gate')}: {measured} ({'passed' if gate.get('passed') else 'FAILED'})"


def _print_report(report: RefreshReport) -> None:
    console = make_console()
    rows: list[tuple[str, Any]] = [("refresh of", report.source), ("stage", report.stage)]
    for role, uri in report.data.items():
        change = report.changed.get(role)
        rows.append((f"data {role}", f"{change['old']} -> {uri}" if change else f"{uri} (unchanged)"))
    rows += [("gate", _gate_text(g)) for g in report.gates]
    print_section(console, f"Candidate {report.candidate}", rows)


@click.command("refresh")
@click.argument("identifier")
@click.option(
    "--data",
    "data",
    multiple=True,
    callback=_parse_data,
    metavar="ROLE=DATASET",
    help="The data set version for a role (repeatable); other roles get the newest version "
    "of the data set the version was trained with.",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where built environments are cached [env: MODELLEDGER_ENV_CACHE; default: the user cache].",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop the run after this many seconds.",
)
@json_option
@registry_options
def refresh(
    registry: Registry,
    identifier: str,
    data: dict[str, str],
    cache_dir: str | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Train a new candidate from a version's recorded entrypoint, in its pinned environment,
    on newer data, registered `refresh_of` that version.

    The candidate walks its stages and gates as any registration; exit code 3 when its gates
    rejected it (it is registered, and never deployed). A failing step (checkout, environment,
    data, run) registers nothing and says which step failed.

    \b
    Example:
        modelledger refresh models:/credit-risk@production
        modelledger refresh models:/credit-risk@production --data train=datasets:/applications/8
    """
    progress = None if as_json else _progress(make_console(stderr=True))
    report = registry.refresh(
        identifier, data=data or None, progress=progress, cache_dir=cache_dir, timeout=timeout
    )
    if as_json:
        echo_json(report.to_dict())
    else:
        _print_report(report)
    if report.rejected:
        raise SystemExit(3)


def _print_firing(firing: Firing) -> None:
    console = make_console()
    why = f"due {firing.due}" if firing.trigger == "schedule" else ", ".join(firing.data.values())
    head = f"{firing.source} ({firing.trigger}: {why})"
    if firing.error is not None:
        console.print(f"[red]{escape(head)} failed: {escape(firing.error)}[/]", soft_wrap=True)
    else:
        console.print(
            f"{escape(head)} -> {escape(str(firing.candidate))} {escape(str(firing.stage))}", soft_wrap=True
        )


@click.command("scheduler")
@click.option("--once", is_flag=True, help="Tick once (fire what is due now) and exit.")
@click.option(
    "--interval",
    type=click.FloatRange(min=1.0),
    default=60.0,
    show_default=True,
    help="Seconds between ticks.",
)
@click.option(
    "--list", "list_only", is_flag=True, help="List the versions whose refreshes are watched, and exit."
)
@json_option
@registry_options
def scheduler(registry: Registry, once: bool, interval: float, list_only: bool, as_json: bool) -> None:
    """Fire the refreshes that manifests declare (`refresh: {schedule: "0 3 * * MON", on_data:
    [applications]}`), for the version holding the declared alias (default production).

    Each due time, or each new data set version, fires once: firings are recorded in the
    ledger, so two schedulers, or a restarted one, never fire the same one twice. Runs until
    interrupted; --once ticks once (exit code 1 if a refresh failed).

    \b
    Example:
        modelledger scheduler
        modelledger scheduler --once --json
        modelledger scheduler --list
    """
    runner = Scheduler(registry)
    if list_only:
        watched = runner.declarations()
        if as_json:
            echo_json([{"source": s, "alias": a, **d.to_dict()} for s, a, d in watched])
            return
        console = make_console()
        for source, alias, declaration in watched:
            parts = [f"schedule {declaration.schedule} (UTC)"] if declaration.schedule else []
            if declaration.on_data:
                parts.append("on new " + ", ".join(declaration.on_data))
            console.print(f"{escape(source)} @{escape(alias)}: {escape('; '.join(parts))}", soft_wrap=True)
        if not watched:
            console.print("No version declares a refresh.")
        return
    if once:
        firings = runner.tick()
        if as_json:
            echo_json([f.to_dict() for f in firings])
        else:
            for firing in firings:
                _print_firing(firing)
        if any(f.error is not None for f in firings):
            raise SystemExit(1)
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    errors = make_console(stderr=True)

    def on_firing(firing: Firing) -> None:
        if as_json:
            click.echo(firing_json(firing))
        else:
            _print_firing(firing)

    def on_error(exc: Exception) -> None:
        errors.print(
            f"[red]tick failed: {escape(str(exc))}[/] (trying again in {interval:g} s)", soft_wrap=True
        )

    try:
        runner.run(interval=interval, stop=stop, on_firing=on_firing, on_error=on_error)
    except KeyboardInterrupt:
        stop.set()


def firing_json(firing: Firing) -> str:
    """One firing as one line of JSON (a long-running scheduler prints a stream of them)."""
    return json.dumps(firing.to_dict(), sort_keys=True)
