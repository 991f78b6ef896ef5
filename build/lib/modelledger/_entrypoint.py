"""The entrypoint contract: what a training process records so that it can be run again.

A training script reads its data through the registry instead of from paths of its own::

    import modelledger

    frames = modelledger.inputs()          # {"train": DataFrame, "holdout": DataFrame}
    modelledger.seed(7)                    # seeds random and numpy's global generator, recorded
    model.fit(frames["train"][features], frames["train"]["defaulted"])
    registry.register("credit-risk", model)   # roles, command, seeds: recorded automatically

run as ``MODELLEDGER_DATA_TRAIN=datasets:/applications-train/3
MODELLEDGER_DATA_HOLDOUT=datasets:/applications-holdout/3 python train.py``. The same script
runs again on other data by changing the variables, never the script.

What one process remembers (the roles :func:`modelledger.inputs` read, the variables declared, the seeds
:func:`seed` set) goes into the manifest of the next registration in that process:

- ``datasets``: the roles read by ``inputs()``, unless ``register`` is given its own;
- ``run``: ``{"command": ["python", "train.py", ...], "cwd": "models/credit" (inside the
  repository), "env": {name: value} (the ``MODELLEDGER_DATA_*`` variables, the variables
  declared with ``inputs(env=[...])`` and ``PYTHONHASHSEED``; never a secret), "seeds":
  {name: int}, "unseeded": [names]}``: recorded for a model object registered from a script
  (not under a test runner or a notebook, whose command is not the training's), and only
  when the script is in a git checkout, the one place it can be run from again. Seeds come
  from :func:`seed` and from the model itself (every ``random_state``/``seed`` parameter a
  scikit-learn style ``get_params`` exposes: ``model__random_state``); a parameter left
  ``None`` is listed in ``unseeded``, which is why two runs may differ.
- ``links``: ``MODELLEDGER_LINK_REPRODUCTION_OF=models:/x/3`` (or ``..._REFRESH_OF``) makes
  the registration carry ``links: {"reproduction_of": "models:/x/3"}``; the reproduce and
  refresh verbs set it for the run they start.

:func:`modelledger._run.run_entrypoint` runs a registered version's recorded command again
(a clean checkout of its revision, its pinned environment, its data or new data).
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ._domain import ModelVersion
from ._manifest import DEFAULT_LIMITS, Manifest, ManifestLimits, check_manifest, checkout_top, running_script
from .errors import InvalidInput

__all__ = [
    "DATA_PREFIX",
    "LINK_PREFIX",
    "RUN_OUTPUT",
    "STEPS",
    "RunProgress",
    "StepEvent",
    "capture_run",
    "check_declared",
    "data_variables",
    "forget",
    "links_from_environment",
    "remember_inputs",
    "remembered_datasets",
    "report_registered",
    "seed",
    "with_run_facts",
]

DATA_PREFIX = "MODELLEDGER_DATA_"
"""``MODELLEDGER_DATA_<ROLE>=datasets:/name/N``: the data set version a run reads as ``<role>``."""
LINK_PREFIX = "MODELLEDGER_LINK_"
"""``MODELLEDGER_LINK_REPRODUCTION_OF=models:/x/3``: the link the run's registration carries."""
RUN_OUTPUT = "MODELLEDGER_RUN_OUTPUT"
"""A file the run appends the identifier of each version it registers to (set by the runner)."""
REGISTRY_VARIABLE = "MODELLEDGER_REGISTRY"
"""The registry :func:`inputs` reads from when none is given (else the default registry)."""

STEPS = ("checkout", "environment", "data", "run", "verdict")
"""The steps of running a version again, in order; :class:`~modelledger.errors.RunFailed` names one."""

# Names that hold credentials are never recorded, whoever declares them.
_SECRET = re.compile(r"(?i)(secret|token|passw|credential|api_?key|private|auth|session)")
_ROLE = re.compile(r"[a-z][a-z0-9_]*")
_SEED_PARAMS = ("random_state", "seed", "random_seed")


@dataclass(frozen=True, slots=True)
class StepEvent:
    """One step's progress: ``status`` is ``"started"``, ``"done"`` or ``"failed"``;
    ``detail`` says what was done (``"environment cached: 3f2a..."``) or what failed."""

    step: str
    status: str
    detail: str = ""


RunProgress = Callable[[StepEvent], None]
"""Called with a :class:`StepEvent` as each step starts, ends or fails."""


@dataclass
class _Remembered:
    """What this process's training has read and declared, for its next registration."""

    datasets: dict[str, str] = field(default_factory=dict)  # role -> datasets:/name/N
    env: set[str] = field(default_factory=set)
    seeds: dict[str, int] = field(default_factory=dict)


# One training run is one process: the contract is that the script calls inputs() and then
# register() without threading a handle between them (they may live in different modules).
_remembered = _Remembered()
_lock = threading.Lock()


def data_variables(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Role -> data set identifier from ``MODELLEDGER_DATA_<ROLE>`` variables (role lower-cased).

    >>> data_variables({"MODELLEDGER_DATA_TRAIN": "datasets:/applications/3"})
    {'train': 'datasets:/applications/3'}
    """
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for name, value in sorted(env.items()):
        if not name.startswith(DATA_PREFIX) or not value:
            continue
        role = name[len(DATA_PREFIX) :].lower()
        if not _ROLE.fullmatch(role):
            raise InvalidInput(f"{name}: {role!r} is not a data set role (letters, digits, _)")
        if not value.startswith("datasets:/"):
            raise InvalidInput(f"{name} must name a data set version (datasets:/name/N), got {value!r}")
        out[role] = value
    return out


def seed(n: int) -> int:
    """Seed Python's ``random`` and numpy's global generator with ``n`` (when numpy is
    installed) and remember it for the next registration (``run.seeds``); returns ``n``.

    >>> modelledger.seed(7)  # doctest: +SKIP
    7
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise InvalidInput(f"a seed must be an integer, got {type(n).__name__}")
    import random  # only a training process seeds: not at import time

    random.seed(n)
    seeds = {"random": n}
    try:
        import numpy  # only a training process calls seed(): never at import time
    except ImportError:
        pass
    else:
        numpy.random.seed(n % 2**32)
        seeds["numpy.random"] = n
    with _lock:
        _remembered.seeds.update(seeds)
    return n


def remember_inputs(datasets: Mapping[str, str], env: Iterable[str]) -> None:
    """Remember the roles read and the variables declared, for the next registration."""
    with _lock:
        _remembered.datasets.update(datasets)
        _remembered.env.update(env)


def check_declared(names: Iterable[str]) -> list[str]:
    """``names`` as a list; a name that looks like a secret is refused (never recorded)."""
    out = [str(n) for n in names]
    for name in out:
        if _SECRET.search(name):
            raise InvalidInput(f"{name} looks like a secret: a run never records one (do not declare it)")
    return out


def remembered_datasets() -> dict[str, str]:
    """Role -> data set identifier of what ``inputs()`` read in this process."""
    with _lock:
        return dict(_remembered.datasets)


def forget() -> None:
    """Forget what this process read, declared and seeded (a new run in the same process)."""
    with _lock:
        _remembered.datasets.clear()
        _remembered.env.clear()
        _remembered.seeds.clear()


def links_from_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``links`` from ``MODELLEDGER_LINK_<KIND>`` variables (kind lower-cased).

    >>> links_from_environment({"MODELLEDGER_LINK_REPRODUCTION_OF": "models:/credit-risk/3"})
    {'reproduction_of': 'models:/credit-risk/3'}
    """
    env = os.environ if environ is None else environ
    return {
        name[len(LINK_PREFIX) :].lower(): value
        for name, value in sorted(env.items())
        if name.startswith(LINK_PREFIX) and value
    }


def _model_seeds(model: Any) -> tuple[dict[str, int], list[str]]:
    """(seeds, unseeded): every seed parameter the model's ``get_params(deep=True)`` exposes."""
    get_params = getattr(model, "get_params", None)
    if not callable(get_params):
        return {}, []
    try:
        params = get_params(deep=True)
    except Exception:  # a user's get_params may raise anything; seeds are then not known
        return {}, []
    seeds: dict[str, int] = {}
    unseeded: list[str] = []
    for name, value in sorted(params.items()):
        if name.rsplit("__", 1)[-1] not in _SEED_PARAMS:
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            seeds[name] = value
        else:  # None, or a generator object whose state is not a number we can record
            unseeded.append(name)
    return seeds, unseeded


def capture_run(model: Any = None, *, script: str | None = None) -> dict[str, Any] | None:
    """The ``run`` section for a registration from this process, or None when this process's
    command is not a training run that can be run again (a test runner, a notebook, the REPL,
    or a script outside any git checkout). ``script`` is the training code (default: the
    running script); ``model`` the object registered, whose seed parameters are read."""
    running, why_not = running_script()
    if why_not is not None:
        return None
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    if running is None and not any(a in ("-c", "-m") for a in argv[1:2]):
        return None  # the interactive interpreter: there is no command to run again
    where = script or running or os.getcwd()
    where_dir = where if os.path.isdir(where) else os.path.dirname(os.path.abspath(where))
    found = checkout_top(where_dir)
    if found is None:
        return None
    top = Path(os.path.realpath(found))
    cwd = Path(os.path.realpath(os.getcwd()))
    base = cwd if cwd == top or top in cwd.parents else top
    command = ["python", *(_relative_argument(a, cwd, base, top) for a in argv[1:])]
    env = _recorded_env()
    seeds, unseeded = _model_seeds(model)
    with _lock:
        seeds = {**_remembered.seeds, **seeds}
    out: dict[str, Any] = {
        "command": command,
        "cwd": base.relative_to(top).as_posix(),
        "env": env,
        "seeds": seeds,
    }
    if unseeded:
        out["unseeded"] = unseeded
    return out


def _relative_argument(arg: str, cwd: Path, base: Path, top: Path) -> str:
    """``arg`` as the recorded command takes it: a path inside the checkout relative to
    ``base`` (the recorded working folder), so the command runs from any clone."""
    if arg.startswith("-") or not arg:
        return arg
    path = Path(arg) if os.path.isabs(arg) else cwd / arg
    if not path.exists():
        return arg
    real = Path(os.path.realpath(path))
    if real != top and top not in real.parents:
        return arg  # outside the repository: kept as given (a clone will not have it)
    return os.path.relpath(real, base)


def _recorded_env() -> dict[str, str]:
    """The variables that matter for the run: data roles, declared ones, PYTHONHASHSEED."""
    with _lock:
        declared = set(_remembered.env)
    names = {n for n in os.environ if n.startswith(DATA_PREFIX)} | declared | {"PYTHONHASHSEED"}
    return {n: os.environ[n] for n in sorted(names) if n in os.environ and not _SECRET.search(n)}


def with_run_facts(
    doc: Manifest,
    source: Any,
    *,
    capture: bool,
    folder: bool,
    script: str | None = None,
    limits: ManifestLimits | None = None,
) -> Manifest:
    """``doc`` with ``links`` from the environment and, for a model object registered from a
    training script (``capture`` on, ``folder`` off), the ``run`` section; what ``doc``
    gives itself wins."""
    changed = doc
    links = links_from_environment()
    if links and not doc.links:
        changed = replace(changed, links=links)
    if capture and not folder and doc.run is None:
        run = capture_run(source, script=script)
        if run is not None:
            changed = replace(changed, run=run)
    if changed is doc:
        return doc
    return check_manifest(changed, limits or DEFAULT_LIMITS)


def report_registered(version: ModelVersion) -> None:
    """Tell the process that started this run which version it registered (a line in the file
    ``$MODELLEDGER_RUN_OUTPUT`` names; nothing when it is not set)."""
    target = os.environ.get(RUN_OUTPUT)
    if not target:
        return
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(version.uri + "\n")
