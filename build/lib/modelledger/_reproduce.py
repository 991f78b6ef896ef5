"""Reproduce a version: run its training again and say whether the same model came out.

``Registry.reproduce("models:/credit-risk/3")`` runs the version's recorded training again
(:func:`modelledger._run.execute_run`: a clean checkout of the recorded revision, the recorded
Python and exact dependency versions in an isolated environment, the same data set versions by
digest), registers the result as a candidate linked ``reproduction_of`` the original, and
gives a verdict, recorded in the ledger (``version.reproduced``, about the original):

- **identical**: every artefact file has the same sha256 as the original's, and no recorded
  input differs;
- **equivalent**: the files differ, no recorded input differs, and the two models' predictions
  on the stored holdout data set agree within ``tolerance`` (the largest difference is given);
- **different**: a recorded input differs (a dependency, the Python version, a data set's
  digest, a parameter, a seed: another recipe, whatever came out of it), or the predictions
  differ by more than ``tolerance``; the reasons say which, and name the random sources left
  unseeded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ._domain import ModelVersion
from ._entrypoint import RunProgress, StepEvent
from ._environment import normalise_name
from ._run import NOT_INHERITED, RunHost, RunOutcome, execute_run
from .errors import RunFailed

__all__ = ["DEFAULT_TOLERANCE", "VERDICTS", "Reproduction", "input_differences", "reproduce"]

VERDICTS = ("identical", "equivalent", "different")
DEFAULT_TOLERANCE = 1e-9
"""Largest absolute difference between two predictions (a probability, a value) that still
counts as equal: floating-point noise from a different summation order, not a different model."""

# The roles whose data set a reproduction's predictions are compared on, in this order.
_COMPARE_ROLES = ("holdout", "test", "validation")
# What the ledger keeps of the environment: what it was, not where it lies on this machine.
_RECORDED_ENVIRONMENT = ("digest", "python_version", "installer", "modelledger_from")

# Run in the isolated environment (its modelledger, its frameworks): loads both versions,
# predicts on the data set, prints the largest difference. Only the public API is used, so
# any modelledger that has the run contract can run it.
_COMPARE = """
import json, sys
import numpy as np
from modelledger import Registry

first, second, data = sys.argv[1:4]
registry = Registry.open()
frame = registry.datasets.to_pandas(data)
outputs, kinds = [], []
for uri in (first, second):
    model = registry.load(uri)
    columns = [c.name for c in model.signature.inputs] if model.signature else list(frame.columns)
    rows = frame[columns]
    proba = getattr(model.raw, "predict_proba", None)
    if callable(proba):
        out, kind = model.predict_proba(rows), "predict_proba"
    else:
        out, kind = model.predict(rows), "predict"
    outputs.append(np.asarray(out))
    kinds.append(kind)
a, b = outputs
report = {"rows": int(len(frame)), "output": kinds[0]}
if a.shape != b.shape or kinds[0] != kinds[1]:
    report["problem"] = f"the outputs differ in shape: {a.shape} and {b.shape}"
elif np.issubdtype(a.dtype, np.number) and np.issubdtype(b.dtype, np.number):
    diff = np.abs(a.astype("float64") - b.astype("float64"))
    report["max_difference"] = float(np.nanmax(diff)) if diff.size else 0.0
    worst = diff.reshape(len(a), -1).max(axis=1) if diff.size else diff
    report["differing_rows"] = int(np.count_nonzero(worst > 0))
else:
    unequal = a != b
    report["max_difference"] = float(np.count_nonzero(unequal)) and 1.0
    report["differing_rows"] = int(np.count_nonzero(unequal.reshape(len(a), -1).any(axis=1)))
print(json.dumps(report))
"""


@dataclass(frozen=True, slots=True)
class Reproduction:
    """The outcome of :meth:`Registry.reproduce`.

    ``verdict`` is one of :data:`VERDICTS`; ``reasons`` say why it is not identical (a
    differing input, an unseeded random source, the predictions' difference);
    ``max_difference`` is the largest absolute difference between the two models'
    predictions on ``compared_on`` (``rows`` rows), ``None`` when identical (nothing to
    compare) or when no holdout data set is recorded; ``not_reproduced`` what of the
    original could not be run again; ``environment`` the isolated environment
    (``Environment.to_dict()``); ``checkout`` the repository and revision run; ``seconds``
    each step's time; ``seq`` the ledger event that records the verdict.
    """

    original: str
    reproduction: str
    verdict: str
    reasons: tuple[str, ...] = ()
    tolerance: float = DEFAULT_TOLERANCE
    max_difference: float | None = None
    compared_on: str | None = None
    rows: int = 0
    not_reproduced: tuple[str, ...] = ()
    environment: Mapping[str, Any] = field(default_factory=dict)
    checkout: str = ""
    seconds: Mapping[str, float] = field(default_factory=dict)
    seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "original": self.original,
            "reproduction": self.reproduction,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "tolerance": self.tolerance,
            "max_difference": self.max_difference,
            "compared_on": self.compared_on,
            "rows": self.rows,
            "not_reproduced": list(self.not_reproduced),
            "environment": dict(self.environment),
            "checkout": self.checkout,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "seq": self.seq,
        }

    def event_data(self) -> dict[str, Any]:
        """What the ledger records: the verdict and why, never local paths or timings."""
        env = self.environment
        return {
            "reproduction": self.reproduction,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "tolerance": self.tolerance,
            "max_difference": self.max_difference,
            "compared_on": self.compared_on,
            "rows": self.rows,
            "not_reproduced": list(self.not_reproduced),
            "environment": {
                k: env[k] for k in ("digest", "python_version", "installer", "modelledger_from") if k in env
            },
        }


def _deps(manifest: Mapping[str, Any]) -> dict[str, str]:
    return {normalise_name(str(k)): str(v) for k, v in (manifest.get("dependencies") or {}).items()}


def _roles(manifest: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(d.get("role")): d for d in manifest.get("datasets") or () if isinstance(d, Mapping)}


def input_differences(original: Mapping[str, Any], other: Mapping[str, Any]) -> list[str]:
    """What differs between two manifests' recorded inputs: Python, each dependency, each data
    set role's digest, each parameter, each seed. Empty when they were built the same way.

    >>> input_differences({"dependencies": {"numpy": "2.1.0"}}, {"dependencies": {"numpy": "2.0.2"}})
    ['dependency numpy 2.1.0 -> 2.0.2']
    """
    out: list[str] = []
    if original.get("python") != other.get("python"):
        out.append(f"Python {original.get('python')} -> {other.get('python')}")
    a, b = _deps(original), _deps(other)
    for name in sorted(set(a) | set(b)):
        if a.get(name) != b.get(name):
            out.append(f"dependency {name} {a.get(name, '(absent)')} -> {b.get(name, '(absent)')}")
    ra, rb = _roles(original), _roles(other)
    for role in sorted(set(ra) | set(rb)):
        da, db = ra.get(role) or {}, rb.get(role) or {}
        if da.get("digest") != db.get("digest"):
            out.append(
                f"data {role}: {da.get('uri', '(none)')} ({str(da.get('digest', ''))[:19]}) -> "
                f"{db.get('uri', '(none)')} ({str(db.get('digest', ''))[:19]})"
            )
    pa, pb = dict(original.get("params") or {}), dict(other.get("params") or {})
    for name in sorted(set(pa) | set(pb)):
        if pa.get(name) != pb.get(name):
            out.append(f"parameter {name} {pa.get(name)!r} -> {pb.get(name)!r}")
    sa = dict((original.get("run") or {}).get("seeds") or {})
    sb = dict((other.get("run") or {}).get("seeds") or {})
    for name in sorted(set(sa) | set(sb)):
        if sa.get(name) != sb.get(name):
            out.append(f"seed {name} {sa.get(name)} -> {sb.get(name)}")
    return out


def _unseeded(manifest: Mapping[str, Any]) -> list[str]:
    return [str(n) for n in (manifest.get("run") or {}).get("unseeded") or ()]


def _same_files(a: ModelVersion, b: ModelVersion) -> bool:
    return sorted((f.path, f.sha256) for f in a.files) == sorted((f.path, f.sha256) for f in b.files)


def _compare_predictions(
    host: RunHost, outcome: RunOutcome, data_uri: str, environment: Mapping[str, str]
) -> dict[str, Any]:
    import subprocess  # only a verdict runs the comparison: not at import time

    done = subprocess.run(
        [
            str(outcome.environment.python),
            "-c",
            _COMPARE,
            outcome.original.uri,
            outcome.version.uri,
            data_uri,
        ],
        capture_output=True,
        text=True,
        check=False,
        env=environment,
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-10:])
        raise RunFailed("verdict", f"comparing the predictions on {data_uri} failed:\n{tail}")
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def judge(
    host: RunHost, outcome: RunOutcome, *, tolerance: float, environment: Mapping[str, str]
) -> Reproduction:
    """The verdict on ``outcome`` (see the module's documentation)."""
    original, candidate = outcome.original, outcome.version
    base = Reproduction(
        original=original.uri,
        reproduction=candidate.uri,
        verdict="different",
        tolerance=tolerance,
        not_reproduced=outcome.not_reproduced,
        environment=outcome.environment.to_dict(),
        checkout=outcome.checkout,
    )
    differ = input_differences(original.manifest, candidate.manifest)
    if _same_files(original, candidate):
        if not differ:
            return replace(base, verdict="identical")
        # the same bytes from another recipe: this run does not reproduce the recorded one
        same = "the artefact files are identical all the same"
        return replace(base, verdict="different", reasons=(*differ, same))
    reasons = list(differ)
    unseeded = _unseeded(original.manifest)
    roles = _roles(original.manifest)
    role = next((r for r in _COMPARE_ROLES if r in roles), None)
    if role is None:
        reasons.append(
            "the artefact files differ, and no holdout data set is recorded to compare predictions on"
        )
        reasons.extend(f"random source {n} is unseeded" for n in unseeded)
        return replace(base, verdict="different", reasons=tuple(reasons))
    data_uri = str(roles[role]["uri"])
    compared = _compare_predictions(host, outcome, data_uri, environment)
    rows = int(compared.get("rows", 0))
    if "problem" in compared:
        reasons.append(str(compared["problem"]))
        return replace(base, verdict="different", reasons=tuple(reasons), compared_on=data_uri, rows=rows)
    largest = float(compared["max_difference"])
    close = largest <= tolerance
    output = compared.get("output", "predict")
    if not close:
        reasons.append(
            f"{output} differs by up to {largest:.3g} on {data_uri} ({compared.get('differing_rows', 0)} "
            f"of {rows} rows), more than the tolerance {tolerance:g}"
        )
        reasons.extend(f"random source {n} is unseeded: each run draws other numbers" for n in unseeded)
        if not differ and not unseeded:
            reasons.append("no recorded input differs: the training is not deterministic (threads, hardware)")
    else:
        reasons.append(f"the artefact files differ; {output} agrees within {tolerance:g} on {data_uri}")
        reasons.extend(f"random source {n} is unseeded" for n in unseeded)
    verdict = "equivalent" if close and not differ else "different"
    return replace(
        base,
        verdict=verdict,
        reasons=tuple(reasons),
        max_difference=largest,
        compared_on=data_uri,
        rows=rows,
    )


def reproduce(
    host: RunHost,
    identifier: str,
    *,
    record: Callable[[ModelVersion, Reproduction], int],
    allow_dirty: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    repository: str | None = None,
    pins: Mapping[str, str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    progress: RunProgress | None = None,
) -> Reproduction:
    """Run ``identifier``'s training again, judge it, and ``record`` the verdict (which returns
    the ledger event's number). A failure at any step raises :class:`RunFailed` naming it and
    leaves no candidate (see :func:`modelledger._run.execute_run`)."""
    if tolerance < 0 or tolerance != tolerance:
        raise RunFailed("verdict", f"the tolerance must be a number >= 0, got {tolerance}")
    original = host.get_version(identifier)
    judged: list[Reproduction] = []

    def keep(outcome: RunOutcome) -> None:
        environment = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
        environment.update(host.process_environment())
        found = judge(host, outcome, tolerance=tolerance, environment=environment)
        seq = record(original, found)
        judged.append(replace(found, seq=seq))
        if progress is not None:
            progress(StepEvent("verdict", "done", f"{found.verdict} (ledger event {seq})"))

    outcome = execute_run(
        host,
        original,
        data=None,
        link=("reproduction_of", original.uri),
        progress=progress,
        allow_dirty=allow_dirty,
        cache_dir=cache_dir,
        repository=repository,
        pins=pins,
        timeout=timeout,
        keep=keep,
    )
    return replace(judged[0], seconds=dict(outcome.seconds))


def summary_lines(found: Reproduction) -> Sequence[str]:
    """The verdict for people, one line each (the CLI prints these)."""
    lines = [f"{found.original} -> {found.reproduction}: {found.verdict.upper()}"]
    if found.max_difference is not None:
        lines.append(
            f"largest difference in predictions: {found.max_difference:.3g} on {found.compared_on} "
            f"({found.rows} rows; tolerance {found.tolerance:g})"
        )
    lines.extend(f"why: {r}" for r in found.reasons)
    lines.extend(f"not reproduced: {n}" for n in found.not_reproduced)
    return lines
