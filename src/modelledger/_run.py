"""Running a registered version's training again: the engine of reproduce and refresh.

:func:`run_entrypoint` takes a version whose manifest records how it was trained (``run``,
see :mod:`modelledger._entrypoint`), and runs that command again in a clean checkout of the
recorded revision, in an isolated environment with the recorded Python and dependency
versions (:mod:`modelledger._environment`), on the recorded data set versions (or new ones),
and returns the candidate the run registered, linked to the version it came from.

The steps are :data:`STEPS`; each is announced to ``progress`` as a :class:`StepEvent`
(``started``, ``progress`` for what happens inside it, ``done`` or ``failed``), and a failure
raises :class:`~modelledger.errors.RunFailed` naming the step. Nothing is registered before the
run step; a run that registered a version and then failed (or registered one that does not
carry the link) has that version rejected, with the step in the reason, so no candidate of a
failed run is ever left to approve.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ._entrypoint import DATA_PREFIX, LINK_PREFIX, RUN_OUTPUT, STEPS, RunProgress, StepEvent, data_variables
from ._environment import Environment, build_environment, modelledger_source
from ._manifest import LINK_KINDS
from .errors import ModelLedgerError, RunFailed

if TYPE_CHECKING:
    from ._data import Datasets
    from ._domain import ModelVersion
    from ._lifecycle import VersionState

__all__ = [
    "NOT_INHERITED",
    "STEPS",
    "RunHost",
    "RunOutcome",
    "RunProgress",
    "StepEvent",
    "execute_run",
    "run_entrypoint",
]

# Variables of this process that must not leak into the run: they would point it at another
# environment, other data, another link or another runner's output file.
NOT_INHERITED = (
    "PYTHONPATH",
    "PYTHONHOME",
    "VIRTUAL_ENV",
    "PYTEST_CURRENT_TEST",
    "CONDA_PREFIX",
    # the environment is ours: the first run caches its bytecode there for every later one
    # (compiling every package at install time instead takes three times as long to build)
    "PYTHONDONTWRITEBYTECODE",
    RUN_OUTPUT,
)


class RunHost(Protocol):
    """What running a version again needs of the registry (a :class:`~modelledger.Registry`)."""

    @property
    def datasets(self) -> Datasets: ...

    def get_version(self, name_or_uri: str, version: int | None = None) -> ModelVersion: ...

    def process_environment(self) -> dict[str, str]: ...

    def reject(self, uri: str, *, reason: str) -> VersionState: ...


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What a run of a version's training produced.

    ``version`` is the candidate the run registered; ``data`` the role -> data set version it
    read; ``not_reproduced`` what of the original could not be run again (uncommitted changes
    at training time, data not read through the registry); ``checkout`` where the code came
    from; ``seconds`` the time of each step.
    """

    version: ModelVersion
    original: ModelVersion
    environment: Environment
    data: Mapping[str, str]
    not_reproduced: tuple[str, ...] = ()
    checkout: str = ""
    seconds: Mapping[str, float] = field(default_factory=dict)


@contextmanager
def _step(name: str, progress: RunProgress | None, seconds: dict[str, float]) -> Iterator[None]:
    """Announce step ``name``; any failure inside it becomes :class:`RunFailed` naming it."""
    import time  # only runs time their steps: not at import time

    say = progress or (lambda _event: None)
    say(StepEvent(name, "started"))
    started = time.monotonic()
    try:
        yield
    except RunFailed as exc:
        say(StepEvent(name, "failed", exc.detail))
        raise
    except Exception as exc:  # whatever failed, the caller learns which step it was
        detail = exc.message if isinstance(exc, ModelLedgerError) else f"{type(exc).__name__}: {exc}"
        say(StepEvent(name, "failed", detail))
        raise RunFailed(name, detail) from exc
    finally:
        seconds[name] = time.monotonic() - started


def _git(args: list[str], *, cwd: str | None = None) -> tuple[int, str]:
    import subprocess  # only runs check code out: not at import time

    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    return done.returncode, (done.stdout if done.returncode == 0 else done.stderr).strip()


def _has_revision(location: str, revision: str) -> bool:
    code, _ = _git(["-C", location, "cat-file", "-e", f"{revision}^{{commit}}"])
    return code == 0


def _repository(source: Mapping[str, Any], revision: str, given: str | None) -> str:
    """Where to clone from: ``given``, else the recorded ``repo_url``, else the checkout this
    process runs in when it holds the revision."""
    if given:
        return given
    url = source.get("repo_url")
    if isinstance(url, str) and url:
        return url
    code, top = _git(["rev-parse", "--show-toplevel"], cwd=os.getcwd())
    if code == 0 and _has_revision(top, revision):
        return top
    raise RunFailed(
        "checkout",
        f"the version records no repository URL (its checkout had no remote), and the current "
        f"folder is not a checkout holding revision {revision[:12]}: run from the training "
        "repository, or give the repository (repository= / --repository)",
    )


def _checkout(location: str, revision: str, dest: Path) -> None:
    if location.startswith("file://"):  # a checkout without a remote records its own folder
        from urllib.parse import unquote, urlsplit  # only runs read file URLs: not at import time

        location = unquote(urlsplit(location).path)
    local = os.path.isdir(location)
    clone = ["clone", "--quiet", "--no-checkout"] + (["--shared"] if local else [])
    code, out = _git([*clone, location, str(dest)])
    if code != 0:
        raise RunFailed("checkout", f"cannot clone {location}: {out}")
    code, out = _git(["-C", str(dest), "checkout", "--quiet", "--detach", revision])
    if code != 0:
        raise RunFailed("checkout", f"revision {revision} is not in {location}: {out}")


def _plan(
    original: ModelVersion, allow_dirty: bool
) -> tuple[Mapping[str, Any], Mapping[str, Any], str, list[str]]:
    """(run, source, revision, what cannot be reproduced) of ``original``, or why it cannot run."""
    man = original.manifest
    run = man.get("run")
    if not isinstance(run, Mapping) or not run.get("command"):
        raise RunFailed(
            "checkout",
            f"{original.uri} records no run (how it was trained): only a version registered from a "
            "training script in a git checkout can be run again (see docs/reproduce.md)",
        )
    source = man.get("source") or {}
    revision = source.get("revision")
    if not revision:
        why = source.get("unknown") or "it was not trained in a git checkout"
        raise RunFailed("checkout", f"{original.uri} records no git revision ({why})")
    notes: list[str] = []
    if source.get("dirty"):
        paths = ", ".join(source.get("dirty_paths") or ()) or "files not named"
        if not allow_dirty:
            raise RunFailed(
                "checkout",
                f"{original.uri} was trained from a checkout with uncommitted changes ({paths}); "
                f"they are in no revision, so it cannot be rebuilt as it was trained "
                f"(allow_dirty / --allow-dirty runs revision {revision[:12]} without them)",
            )
        notes.append(
            f"uncommitted changes at training time ({paths}): revision {revision[:12]} was run without them"
        )
    if not data_variables(run.get("env") or {}) and man.get("datasets"):
        notes.append(
            "the training did not read its data through modelledger.inputs(): the same data is not guaranteed"
        )
    environment = man.get("environment") or {}
    if environment.get("origin") == "registering-machine":
        notes.append("the recorded packages are the registering machine's, not necessarily the training's")
    return run, source, str(revision), notes


def _data(
    registry: RunHost, original: ModelVersion, run: Mapping[str, Any], data: Mapping[str, str] | None
) -> dict[str, str]:
    """Role -> data set version the run reads: as recorded (each checked against its recorded
    digest), with ``data`` replacing roles."""
    recorded = {d["role"]: d for d in original.manifest.get("datasets") or () if isinstance(d, Mapping)}
    reads = data_variables(run.get("env") or {})
    out: dict[str, str] = {}
    for role, uri in {**reads, **dict(data or {})}.items():
        dv = registry.datasets.get(uri)
        given = data is not None and role in data
        expected = recorded.get(role)
        if (
            not given
            and expected is not None
            and expected.get("uri") == uri
            and expected.get("digest") != dv.digest
        ):
            raise RunFailed(
                "data",
                f"{uri} ({role}) has digest {dv.digest}, "
                f"not the {expected.get('digest')} recorded by {original.uri}",
            )
        registry.datasets.open(dv).close()  # its bytes are there (not erased) and readable
        out[role] = dv.uri
    return out


def _run_environment(
    registry: RunHost,
    run: Mapping[str, Any],
    data: Mapping[str, str],
    link: tuple[str, str],
    environment: Environment,
    output: Path,
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in NOT_INHERITED and not k.startswith((DATA_PREFIX, LINK_PREFIX))
    }
    env.update(
        {str(k): str(v) for k, v in (run.get("env") or {}).items() if not str(k).startswith(DATA_PREFIX)}
    )
    env.update({f"{DATA_PREFIX}{role.upper()}": uri for role, uri in data.items()})
    env[f"{LINK_PREFIX}{link[0].upper()}"] = link[1]
    env.update(registry.process_environment())
    env[RUN_OUTPUT] = str(output)
    env["VIRTUAL_ENV"] = str(environment.folder)
    env["PATH"] = os.pathsep.join([str(environment.python.parent), env.get("PATH", "")])
    return env


def execute_run(
    registry: RunHost,
    version: ModelVersion | str,
    *,
    data: Mapping[str, str] | None,
    link: tuple[str, str],
    progress: RunProgress | None = None,
    allow_dirty: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    repository: str | None = None,
    pins: Mapping[str, str] | None = None,
    timeout: float | None = None,
    keep: Callable[[RunOutcome], Any] | None = None,
) -> RunOutcome:
    """:func:`run_entrypoint`, returning the whole :class:`RunOutcome`.

    ``repository`` is where to clone the code from (default: the recorded URL, else the
    checkout this process runs in); ``pins`` replaces recorded dependency versions
    (``{"scikit-learn": "1.5.2"}``: to see whether the version holds under an upgrade);
    ``timeout`` bounds the run in seconds. ``keep(outcome)`` runs while the checkout and the
    run's folder still exist (the verdict of reproduce): a failure in it counts as the
    ``verdict`` step's, and the candidate is rejected.
    """
    import shutil  # only runs make and remove scratch folders: not at import time
    import subprocess  # only runs start processes: not at import time
    import tempfile  # only runs make scratch folders: not at import time

    kind, target = link
    if kind not in LINK_KINDS:
        raise RunFailed("checkout", f"link must be one of {', '.join(LINK_KINDS)}, got {kind!r}")
    say = progress or (lambda _event: None)
    seconds: dict[str, float] = {}
    original = registry.get_version(version) if isinstance(version, str) else version
    scratch = Path(tempfile.mkdtemp(prefix="modelledger-run-"))
    registered: list[str] = []
    try:
        with _step("checkout", progress, seconds):
            run, source, revision, notes = _plan(original, allow_dirty)
            location = _repository(source, revision, repository)
            code = scratch / "code"
            _checkout(location, revision, code)
            workdir = (code / str(run.get("cwd") or ".")).resolve()
            if code.resolve() not in (workdir, *workdir.parents) or not workdir.is_dir():
                raise RunFailed(
                    "checkout",
                    f"the recorded working folder {run.get('cwd')!r} is not in revision {revision[:12]}",
                )
            say(StepEvent("checkout", "done", f"{location} @ {revision[:12]}"))
        with _step("environment", progress, seconds):
            python = original.manifest.get("python")
            if not python:
                raise RunFailed("environment", f"{original.uri} records no Python version")
            deps = {**dict(original.manifest.get("dependencies") or {}), **dict(pins or {})}
            environment = build_environment(
                python_version=str(python),
                pins=deps,
                source=modelledger_source(code, revision),
                cache_dir=cache_dir,
                progress=lambda message: say(StepEvent("environment", "progress", message)),
            )
            how = (
                "cached"
                if environment.cached
                else f"built with {environment.installer} in {environment.seconds:.1f} s"
            )
            say(StepEvent("environment", "done", f"Python {python}, {environment.packages} packages, {how}"))
        with _step("data", progress, seconds):
            used = _data(registry, original, run, data)
            say(
                StepEvent(
                    "data", "done", ", ".join(f"{r}={u}" for r, u in sorted(used.items())) or "none read"
                )
            )
        with _step("run", progress, seconds):
            output = scratch / "registered.txt"
            output.touch()
            command = [
                str(environment.python) if i == 0 and a == "python" else a
                for i, a in enumerate(run["command"])
            ]
            log = scratch / "run.log"
            try:
                with log.open("wb") as out:
                    done = subprocess.run(
                        command,
                        cwd=workdir,
                        env=_run_environment(registry, run, used, link, environment, output),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        timeout=timeout,
                        check=False,
                    )
            except subprocess.TimeoutExpired as exc:
                registered = output.read_text().split()
                raise RunFailed("run", f"the run took longer than {timeout} s") from exc
            registered = output.read_text().split()
            if done.returncode != 0:
                tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-15:])
                raise RunFailed("run", f"`{' '.join(run['command'])}` exited with {done.returncode}:\n{tail}")
            if not registered:
                raise RunFailed(
                    "run", "the run registered no version (does the training script call register?)"
                )
            if len(registered) > 1:
                raise RunFailed(
                    "run", f"the run registered {len(registered)} versions ({', '.join(registered)}), not one"
                )
            candidate = registry.get_version(registered[0])
            carried = dict(candidate.manifest.get("links") or {})
            if carried.get(kind) != target:
                raise RunFailed(
                    "run",
                    f"{candidate.uri} does not carry the link {kind}: {target} "
                    f"(its links: {carried or 'none'}); the environment's modelledger may predate "
                    "the run contract",
                )
            say(StepEvent("run", "done", f"registered {candidate.uri}"))
        outcome = RunOutcome(
            version=candidate,
            original=original,
            environment=environment,
            data=used,
            not_reproduced=tuple(notes),
            checkout=f"{location} @ {revision}",
            seconds=seconds,
        )
        if keep is not None:
            with _step("verdict", progress, seconds):
                keep(outcome)
        return outcome
    except BaseException as exc:
        step = exc.step if isinstance(exc, RunFailed) else "run"
        for uri in registered:
            _reject(registry, uri, f"the run that registered it failed at step {step!r}")
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _reject(registry: RunHost, uri: str, reason: str) -> None:
    """Reject the candidate of a failed run, so it is never approved (best effort: the run's
    failure is what the caller must see)."""
    with suppress(ModelLedgerError):
        registry.reject(uri, reason=reason)


def run_entrypoint(
    registry: RunHost,
    version: ModelVersion | str,
    *,
    data: Mapping[str, str] | None,
    link: tuple[str, str],
    progress: RunProgress | None = None,
    allow_dirty: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ModelVersion:
    """Run ``version``'s recorded training again and return the candidate it registered.

    The steps (:data:`STEPS`): a clean checkout of the recorded revision (a version recorded
    from a dirty checkout is refused unless ``allow_dirty``), an isolated environment with
    the recorded Python and exact dependency versions (cached under ``cache_dir``), the data
    (the recorded data set versions, checked by digest; ``data`` replaces roles:
    ``{"train": "datasets:/applications/8"}``), the run (the recorded command, with
    ``MODELLEDGER_DATA_<ROLE>`` set and ``link`` = ``("reproduction_of" | "refresh_of",
    "models:/x/3")`` carried by its registration). A failure at any step raises
    :class:`~modelledger.errors.RunFailed` naming the step and leaves no candidate.

    >>> run_entrypoint(registry, "models:/credit-risk/3", data=None,
    ...                link=("reproduction_of", "models:/credit-risk/3"))  # doctest: +SKIP
    """
    return execute_run(
        registry,
        version,
        data=data,
        link=link,
        progress=progress,
        allow_dirty=allow_dirty,
        cache_dir=cache_dir,
    ).version
