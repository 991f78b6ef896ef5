"""``reproduce``: run a version's recorded training again and say whether it came out the same."""

from __future__ import annotations

import sys
from typing import Any

import click

from modelledger import Registry, StepEvent

from ._common import echo_json, escape, json_option, make_console, registry_options

_ORDER = ("identical", "equivalent", "different")


def _parse_pins(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    pins: dict[str, str] = {}
    for value in values:
        name, sep, version = value.partition("==")
        if not sep or not name.strip() or not version.strip():
            raise click.BadParameter(f"{value!r}: give NAME==VERSION")
        pins[name.strip()] = version.strip()
    return pins


@click.command()
@click.argument("identifier")
@click.option(
    "--allow-dirty", is_flag=True, help="Run a version trained from uncommitted changes at its revision."
)
@click.option(
    "--tolerance",
    type=float,
    default=None,
    help="Largest difference between two predictions that counts as equal [default: 1e-9].",
)
@click.option(
    "--repository", default=None, help="Clone the code from here (a path or URL), not the recorded URL."
)
@click.option(
    "--pin",
    "pins",
    multiple=True,
    callback=_parse_pins,
    metavar="NAME==VERSION",
    help="Replace a recorded dependency version (to see whether the version holds under an upgrade).",
)
@click.option(
    "--cache-dir",
    default=None,
    help="Where environments are cached [env: MODELLEDGER_ENV_CACHE; default: ~/.cache/modelledger].",
)
@click.option(
    "--require",
    type=click.Choice(["identical", "equivalent"]),
    default=None,
    help="Exit 3 when the verdict is worse than this.",
)
@json_option
@registry_options
def reproduce(
    registry: Registry,
    identifier: str,
    allow_dirty: bool,
    tolerance: float | None,
    repository: str | None,
    pins: dict[str, str],
    cache_dir: str | None,
    require: str | None,
    as_json: bool,
) -> None:
    """Rebuild a version from its record and compare it with the original.

    A clean checkout of the recorded revision, an isolated environment with the recorded
    Python and exact dependency versions (uv if installed, else pip; cached by digest), the
    same data set versions by digest, the recorded command. Its registration is a candidate
    linked reproduction_of the original. The verdict, recorded in the ledger: IDENTICAL (same
    artefact digests), EQUIVALENT (predictions on the stored holdout within the tolerance),
    or DIFFERENT (and why: a dependency, data digest, parameter or seed, or an unseeded random
    source). A failure names its step and leaves no candidate.

    \b
    Example:
        modelledger reproduce models:/credit-risk/3
        modelledger reproduce models:/credit-risk/3 --allow-dirty --require equivalent
        modelledger reproduce models:/credit-risk/3 --pin scikit-learn==1.5.2 --json
    """
    console = make_console(stderr=True)
    marks = {"done": "[green]✓[/green]", "failed": "[red]✗[/red]"}

    def show(event: StepEvent) -> None:
        if as_json:
            return
        if event.status == "started":
            console.print(f"[bold]{event.step}[/bold] ...")
        elif event.status == "progress":
            console.print(f"  {escape(event.detail)}", style="dim")
        else:
            console.print(f"{marks.get(event.status, '')} {event.step}: {escape(event.detail)}")

    options: dict[str, Any] = {}
    if tolerance is not None:
        options["tolerance"] = tolerance
    found = registry.reproduce(
        identifier,
        allow_dirty=allow_dirty,
        repository=repository,
        pins=pins or None,
        cache_dir=cache_dir,
        progress=show,
        **options,
    )
    if as_json:
        echo_json(found.to_dict())
    else:
        out = make_console()
        colour = {"identical": "green", "equivalent": "yellow", "different": "red"}[found.verdict]
        verdict = f"[bold {colour}]{found.verdict.upper()}[/bold {colour}]"
        out.print(f"{found.original} -> {found.reproduction}: {verdict}  (ledger event {found.seq})")
        if found.max_difference is not None:
            out.print(
                f"  largest difference in predictions: {found.max_difference:.3g} on {found.compared_on} "
                f"({found.rows} rows; tolerance {found.tolerance:g})"
            )
        for reason in found.reasons:
            out.print(f"  why: {escape(reason)}")
        for note in found.not_reproduced:
            out.print(f"  [yellow]not reproduced:[/yellow] {escape(note)}")
        env = found.environment
        out.print(
            f"  environment {str(env.get('digest', ''))[:19]}... Python {env.get('python_version')}, "
            f"modelledger from the {escape(str(env.get('modelledger_from', '')))}"
        )
    if require is not None and _ORDER.index(found.verdict) > _ORDER.index(require):
        sys.exit(3)
