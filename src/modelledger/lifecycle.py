"""The stage machine, validation gates and approval rules.

Pure functions over current state: they decide what may happen and which ledger
events describe it; the metadata store applies the decision in one transaction.

::

    candidate -> data_prepared -> trained -> validated -> approved -> deployed -> retired
                                     |           |            ^
                                     +-----------+- rejected -+ (only by validating again)
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import Conflict, InvalidInput, InvalidManifest, PermissionDenied
from .policy import Policy

__all__ = [
    "STAGES",
    "Decision",
    "Gate",
    "GateResult",
    "VersionState",
    "check_transition",
    "evaluate_gates",
    "parse_gates",
    "stage_modes",
]

STAGES = ("candidate", "data_prepared", "trained", "validated", "approved", "rejected", "deployed", "retired")
EARLY = ("candidate", "data_prepared", "trained")

# stage -> stages it may move to by a transition
_NEXT: Mapping[str, frozenset[str]] = {
    "candidate": frozenset({"data_prepared"}),
    "data_prepared": frozenset({"trained"}),
    "trained": frozenset({"validated", "rejected"}),
    "validated": frozenset({"approved", "rejected", "validated"}),
    "approved": frozenset({"deployed", "retired"}),
    "rejected": frozenset({"validated"}),
    "deployed": frozenset({"deployed", "retired"}),
    "retired": frozenset(),
}

DEFAULT_MODES: Mapping[str, str] = {
    "data_prepared": "auto",
    "trained": "auto",
    "validated": "auto",
    "approved": "manual",
    "deployed": "manual",
}


@dataclass(frozen=True, slots=True)
class VersionState:
    """Where a version stands; an index of the ledger, rebuilt from it on demand."""

    model: str
    version: int
    stage: str
    registered_by: str
    approved_by: str | None = None
    decided_at: str | None = None
    last_seq: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "stage": self.stage,
            "registered_by": self.registered_by,
            "approved_by": self.approved_by,
            "decided_at": self.decided_at,
            "last_seq": self.last_seq,
        }


@dataclass(frozen=True, slots=True)
class EventDraft:
    """A ledger event before it gets its sequence number and hash."""

    action: str
    subject: str
    data: Mapping[str, Any]
    reason: str | None = None
    actor: str | None = None  # None: the acting user


@dataclass(frozen=True, slots=True)
class Decision:
    """What the store must apply, atomically, with the events that record it."""

    events: Sequence[EventDraft]
    stage: str | None = None
    approved_by: str | None = None
    aliases_set: Mapping[str, int] = field(default_factory=dict)
    aliases_deleted: Sequence[str] = ()
    policy: Policy | None = None


# ---------------------------------------------------------------- transitions


def check_transition(current: str, target: str, *, uri: str) -> None:
    if target not in STAGES:
        raise InvalidInput(f"unknown stage {target!r}: use one of {', '.join(STAGES)}")
    if target not in _NEXT[current]:
        allowed = ", ".join(sorted(_NEXT[current])) or "none (terminal)"
        raise Conflict(f"{uri} is {current}: it cannot move to {target} (allowed next: {allowed})")


def stage_modes(manifest: Mapping[str, Any]) -> dict[str, str]:
    modes = dict(DEFAULT_MODES)
    modes.update(manifest.get("stages") or {})
    return modes


def check_approver(state: VersionState, actor: str, policy: Policy, *, uri: str, automated: bool) -> None:
    if state.stage != "validated":
        raise Conflict(f"{uri} is {state.stage}: only a validated version can be approved")
    if automated:
        return
    if policy.approver_role and policy.approver_role not in policy.roles_of(actor):
        raise PermissionDenied(
            f"{actor} may not approve: the policy requires the role '{policy.approver_role}'"
        )
    if policy.four_eyes and actor == state.registered_by:
        raise PermissionDenied(
            f"{actor} registered {uri} and may not approve it too (four-eyes rule); "
            "another person must approve, or the policy must relax four_eyes"
        )


# ---------------------------------------------------------------- gates

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}
_GATE = re.compile(
    r"^\s*([A-Za-z_][\w.\-]*)\s*(>=|<=|==|>|<)\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*(?:on\s+(\w+))?\s*$"
)


@dataclass(frozen=True, slots=True)
class Gate:
    metric: str
    op: str
    threshold: float
    dataset: str | None = None

    def __str__(self) -> str:
        on = f" on {self.dataset}" if self.dataset else ""
        return f"{self.metric} {self.op} {self.threshold:g}{on}"


@dataclass(frozen=True, slots=True)
class GateResult:
    gate: str
    value: float | None
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "value": self.value, "passed": self.passed}


def parse_gates(raw: Any) -> list[Gate]:
    """Gates from a manifest: ``["auc >= 0.80 on holdout", {"metric": "ks", "op": ">", "value": 0.3}]``."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidManifest("gates", "must be a list of gates such as 'auc >= 0.80'")
    gates = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            m = _GATE.match(item)
            if not m:
                raise InvalidManifest(f"gates[{i}]", f"cannot be read: {item!r} (write e.g. 'auc >= 0.80')")
            gates.append(Gate(m.group(1), m.group(2), float(m.group(3)), m.group(4)))
        elif isinstance(item, Mapping):
            op = item.get("op", ">=")
            if op not in _OPS or not isinstance(item.get("metric"), str):
                raise InvalidManifest(f"gates[{i}]", "needs 'metric' and an 'op' among >=, >, <=, <, ==")
            value = item.get("value")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidManifest(f"gates[{i}].value", "must be a number")
            gates.append(Gate(item["metric"], op, float(value), item.get("dataset")))
        else:
            raise InvalidManifest(f"gates[{i}]", "must be a string or a mapping")
    return gates


def evaluate_gates(gates: Sequence[Gate], metrics: Mapping[str, float]) -> list[GateResult]:
    """Each gate against the metrics; a gate whose metric is missing fails."""
    out = []
    for gate in gates:
        keys = [f"{gate.metric}_{gate.dataset}", f"{gate.dataset}.{gate.metric}"] if gate.dataset else []
        keys.append(gate.metric)
        value = next((float(metrics[k]) for k in keys if k in metrics), None)
        passed = value is not None and _OPS[gate.op](value, gate.threshold)
        out.append(GateResult(str(gate), value, bool(passed)))
    return out
