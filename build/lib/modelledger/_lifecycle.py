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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from ._canonical import canonicalize_str
from ._ledger import ChainBuilder, LedgerEvent
from ._policy import Policy
from .errors import Conflict, InvalidInput, InvalidManifest, PermissionDenied

__all__ = [
    "ERASURE_ACTIONS",
    "PROTECTED_ALIASES",
    "STAGES",
    "EventDraft",
    "Gate",
    "GateResult",
    "GovContext",
    "ReplayedState",
    "StateDelta",
    "VersionState",
    "check_not_archived",
    "check_transition",
    "check_unprotected",
    "decide_alias",
    "decide_approval",
    "decide_archive",
    "decide_deploy",
    "decide_policy",
    "decide_registration",
    "decide_rename",
    "decide_rollback",
    "decide_stage",
    "decide_validation",
    "decide_version_tags",
    "evaluate_gates",
    "parse_gates",
    "record_captures",
    "record_dataset",
    "record_erasure",
    "replay",
    "stage_modes",
    "state_delta",
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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VersionState:
        return cls(
            model=str(data["model"]),
            version=int(data["version"]),
            stage=str(data["stage"]),
            registered_by=str(data["registered_by"]),
            approved_by=data.get("approved_by"),
            decided_at=data.get("decided_at"),
            last_seq=int(data.get("last_seq", 0)),
        )


@dataclass(frozen=True, slots=True)
class EventDraft:
    """A ledger event before it gets its sequence number and hash."""

    action: str
    subject: str
    data: Mapping[str, Any]
    reason: str | None = None
    actor: str | None = None  # None: the acting user


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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateResult:
        value = data.get("value")
        return cls(
            gate=str(data["gate"]), value=None if value is None else float(value), passed=bool(data["passed"])
        )


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


# ---------------------------------------------------------------- context and effects


@dataclass(frozen=True, slots=True)
class GovContext:
    """Current state read under the write lock, handed to a decision function."""

    model: str
    version: int | None
    state: VersionState | None
    aliases: Mapping[str, int]
    policy: Policy
    actor: str
    archived: bool = False  # the model is archived: no new versions, no deployments


@dataclass(frozen=True, slots=True)
class StateDelta:
    """What one ledger event changes in the state that is an index of the ledger.

    ``fields`` are the version state's fields that change (``stage``, ``registered_by``,
    ``approved_by``, ``decided_at``, ``last_seq``); ``new_version`` says the event starts a
    version's state. ``aliases`` maps an alias to its new version (``None``: removed).
    Derived from the event alone: the one rule used live by every store and when rebuilding.
    """

    model: str | None
    version: int | None
    actor: str
    fields: Mapping[str, Any]
    new_version: bool
    aliases: Mapping[str, int | None]
    policy: Mapping[str, Any] | None
    archived: bool | None = None  # model.archived / model.unarchived
    renamed_to: str | None = None  # model.renamed: the model's new name
    tags: Mapping[str, str | None] | None = None  # version.tagged: None removes a key


_ARCHIVED: Final = {"model.archived": True, "model.unarchived": False}


def state_delta(action: str, actor: str, time: str, seq: int, data: Mapping[str, Any]) -> StateDelta:
    """The state change the event ``action`` (by ``actor`` at ``time``, number ``seq``) records."""
    model, version, stage = data.get("model"), data.get("version"), data.get("stage")
    new_version = action == "version.registered"
    fields: dict[str, Any] = {}
    if model is not None and version is not None and (stage or new_version):
        if new_version:
            fields = {"stage": stage or "candidate", "registered_by": actor}
        elif stage:
            fields["stage"] = stage
        if action == "version.approved":
            fields.update(approved_by=actor, decided_at=time)
        elif action == "version.rejected":
            fields["decided_at"] = time
        fields["last_seq"] = seq
    return StateDelta(
        model=model,
        version=None if version is None else int(version),
        actor=actor,
        fields=fields,
        new_version=new_version and bool(fields),
        aliases=dict(data.get("aliases") or {}) if model is not None else {},
        policy=data.get("policy") if action == "policy.changed" else None,
        archived=_ARCHIVED.get(action),
        renamed_to=str(data["new_name"]) if action == "model.renamed" else None,
        tags=dict(data.get("tags") or {}) if action == "version.tagged" and version is not None else None,
    )


@dataclass
class ReplayedState:
    """Every piece of current state, as rebuilt from the ledger (or read from a store's tables)."""

    versions: dict[tuple[str, int], VersionState] = field(default_factory=dict)
    aliases: dict[tuple[str, str], int] = field(default_factory=dict)
    policy: Policy = field(default_factory=Policy)
    archived: dict[str, str] = field(default_factory=dict)  # model -> time it was archived
    tags: dict[tuple[str, int], dict[str, str]] = field(default_factory=dict)  # version tags
    names: dict[str, str] = field(default_factory=dict)  # former model name -> current name

    def apply(self, delta: StateDelta, time: str = "") -> None:
        """Apply one event's delta (of an event at ``time``), as a store applies it to its tables.

        Events name a model by the name it had then: ``names`` maps former names to the
        current one, so state is kept under the name the model has now."""
        model = None if delta.model is None else self.names.get(delta.model, delta.model)
        if delta.fields and model is not None and delta.version is not None:
            key = (model, delta.version)
            prev = self.versions.get(key)
            if prev is None or delta.new_version:
                prev = VersionState(model, delta.version, "candidate", delta.actor)
            f = delta.fields
            # built directly: dataclasses.replace's checks cost more than the rest of a replay
            self.versions[key] = VersionState(
                model=prev.model,
                version=prev.version,
                stage=f.get("stage", prev.stage),
                registered_by=f.get("registered_by", prev.registered_by),
                approved_by=f.get("approved_by", prev.approved_by),
                decided_at=f.get("decided_at", prev.decided_at),
                last_seq=f.get("last_seq", prev.last_seq),
            )
        if model is not None:
            for alias, version in delta.aliases.items():
                if version is None:
                    self.aliases.pop((model, alias), None)
                else:
                    self.aliases[(model, alias)] = int(version)
        if delta.policy is not None:
            self.policy = Policy.from_dict(delta.policy)
        if model is not None and delta.archived is not None:
            if delta.archived:
                self.archived[model] = time
            else:
                self.archived.pop(model, None)
        if model is not None and delta.version is not None and delta.tags is not None:
            held = self.tags.setdefault((model, delta.version), {})
            for key_, value in delta.tags.items():
                if value is None:
                    held.pop(key_, None)
                else:
                    held[key_] = value
            if not held:
                del self.tags[(model, delta.version)]
        if model is not None and delta.renamed_to is not None:
            self._rename(model, delta.renamed_to)

    def _rename(self, old: str, new: str) -> None:
        self.versions = {
            ((new, v) if m == old else (m, v)): (replace(s, model=new) if m == old else s)
            for (m, v), s in self.versions.items()
        }
        self.aliases = {((new if m == old else m), a): v for (m, a), v in self.aliases.items()}
        self.tags = {((new if m == old else m), v): t for (m, v), t in self.tags.items()}
        if old in self.archived:
            self.archived[new] = self.archived.pop(old)
        self.names = {k: (new if v == old else v) for k, v in self.names.items()}
        self.names[old] = new


def replay(events: Iterable[LedgerEvent]) -> ReplayedState:
    """Rebuild every table that shows current state from the ledger alone."""
    out = ReplayedState()
    for ev in events:
        out.apply(state_delta(ev.action, ev.actor, ev.time, ev.seq, ev.data), ev.time)
    return out


# ---------------------------------------------------------------- decisions


def _vdata(ctx: GovContext, **extra: Any) -> dict[str, Any]:
    return {"model": ctx.model, "version": ctx.version, **extra}


def _subject(ctx: GovContext) -> str:
    return f"models:/{ctx.model}/{ctx.version}"


def _need_state(ctx: GovContext) -> VersionState:
    if ctx.state is None:
        raise Conflict(f"{_subject(ctx)} has no governance state; run `modelledger verify`")
    return ctx.state


def decide_stage(
    ctx: GovContext, target: str, *, reason: str | None, details: Mapping[str, Any]
) -> list[EventDraft]:
    """A manual move along the early stages or to retired."""
    state = _need_state(ctx)
    if target in ("validated", "approved", "rejected", "deployed"):
        verb = {"validated": "validate", "approved": "approve", "rejected": "reject", "deployed": "deploy"}[
            target
        ]
        raise InvalidInput(f"use `{verb}` to move a version to {target}: it records what that stage requires")
    check_transition(state.stage, target, uri=_subject(ctx))
    data = _vdata(ctx, stage=target, previous=state.stage, details=dict(details))
    if target == "retired":
        data["aliases"] = {a: None for a, v in ctx.aliases.items() if v == ctx.version}
    return [EventDraft("stage.changed", _subject(ctx), data, reason)]


def decide_validation(
    ctx: GovContext, results: Sequence[GateResult], *, reason: str | None, dataset: str | None
) -> list[EventDraft]:
    state = _need_state(ctx)
    passed = all(r.passed for r in results)
    target = "validated" if passed else "rejected"
    check_transition(state.stage, target, uri=_subject(ctx))
    data = _vdata(
        ctx,
        stage=target,
        previous=state.stage,
        passed=passed,
        results=[r.to_dict() for r in results],
        dataset=dataset,
    )
    if not passed:
        failed = ", ".join(r.gate for r in results if not r.passed)
        reason = reason or f"validation gates failed: {failed}"
    return [EventDraft("validation.evaluated", _subject(ctx), data, reason)]


def decide_approval(
    ctx: GovContext, *, approve: bool, reason: str | None, automated: bool = False
) -> list[EventDraft]:
    state = _need_state(ctx)
    uri = _subject(ctx)
    if approve:
        check_approver(state, ctx.actor, ctx.policy, uri=uri, automated=automated)
        if not reason:
            raise InvalidInput("an approval needs a reason (what evidence was reviewed)")
        data = _vdata(
            ctx,
            stage="approved",
            previous=state.stage,
            registered_by=state.registered_by,
            automated=automated,
            four_eyes=ctx.policy.four_eyes,
        )
        return [EventDraft("version.approved", uri, data, reason)]
    if not reason:
        raise InvalidInput("a rejection needs a reason")
    check_transition(state.stage, "rejected", uri=uri)
    if state.stage not in ("trained", "validated"):
        raise Conflict(f"{uri} is {state.stage}: only a trained or validated version can be rejected")
    return [EventDraft("version.rejected", uri, _vdata(ctx, stage="rejected", previous=state.stage), reason)]


def check_not_archived(ctx: GovContext, doing: str) -> None:
    if ctx.archived:
        raise Conflict(
            f"models:/{ctx.model} is archived: it cannot {doing} "
            f"(`modelledger models unarchive {ctx.model}` first)"
        )


def decide_deploy(ctx: GovContext, alias: str, *, reason: str | None) -> list[EventDraft]:
    state = _need_state(ctx)
    uri = _subject(ctx)
    check_not_archived(ctx, "be deployed")
    if state.stage == "retired":
        raise Conflict(
            f"{uri} is retired: only an approved version can be deployed, and a retired one never again"
        )
    if state.stage not in ("approved", "deployed"):
        raise Conflict(f"{uri} is {state.stage}: only an approved version can be deployed")
    previous = ctx.aliases.get(alias)
    if previous == ctx.version:
        raise Conflict(f"{uri} already holds @{alias}")
    aliases: dict[str, int | None] = {alias: ctx.version}
    aliases["rollback"] = previous  # None removes a stale @rollback
    data = _vdata(
        ctx, stage="deployed", previous_stage=state.stage, alias=alias, previous=previous, aliases=aliases
    )
    return [EventDraft("deployment.deployed", uri, data, reason)]


def decide_rollback(ctx: GovContext, alias: str, *, reason: str | None) -> list[EventDraft]:
    current = ctx.aliases.get(alias)
    target = ctx.aliases.get("rollback")
    if target is None:
        raise Conflict(f"models:/{ctx.model}@rollback is not set: there is nothing to roll back to")
    if current is None:
        raise Conflict(f"models:/{ctx.model}@{alias} is not set: there is nothing to roll back")
    data = {
        "model": ctx.model,
        "alias": alias,
        "from": current,
        "to": target,
        "aliases": {alias: target, "rollback": None},
    }
    return [EventDraft("deployment.rolled_back", f"models:/{ctx.model}@{alias}", data, reason)]


PROTECTED_ALIASES = ("production", "rollback")
"""Aliases that move only through deploy and rollback (a policy may protect more)."""


def decide_alias(ctx: GovContext, alias: str, version: int | None, *, reason: str | None) -> list[EventDraft]:
    check_unprotected(ctx, alias)
    if version is not None and ctx.state is not None and ctx.state.stage == "retired":
        raise Conflict(f"models:/{ctx.model}/{version} is retired: no alias may point at it")
    previous = ctx.aliases.get(alias)
    action = "alias.set" if version is not None else "alias.deleted"
    data = {
        "model": ctx.model,
        "alias": alias,
        "version": version,
        "previous": previous,
        "aliases": {alias: version},
    }
    return [EventDraft(action, f"models:/{ctx.model}@{alias}", data, reason)]


def check_unprotected(ctx: GovContext, alias: str) -> None:
    """Refuse a direct move of a protected alias, naming the command that moves it."""
    if alias in PROTECTED_ALIASES or alias in ctx.policy.protected_aliases:
        how = (
            f"`modelledger rollback {ctx.model}`"
            if alias == "rollback"
            else f"`modelledger deploy models:/{ctx.model}/<N> --alias {alias}` (an approved version) "
            f"or `modelledger rollback {ctx.model} --alias {alias}`"
        )
        raise PermissionDenied(f"@{alias} is protected: it moves only through {how}")


def decide_policy(ctx: GovContext, policy: Policy, *, reason: str | None) -> list[EventDraft]:
    if not reason:
        raise InvalidInput("a policy change needs a reason")
    old = ctx.policy
    data: dict[str, Any] = {"policy": policy.to_dict(), "previous": old.to_dict()}
    relaxed = [
        name
        for name, was, now in (
            ("four_eyes", old.four_eyes, policy.four_eyes),
            ("approver_role", bool(old.approver_role), bool(policy.approver_role)),
        )
        if was and not now
    ]
    if policy.auto_approve and not old.auto_approve:
        relaxed.append("auto_approve")
    data["relaxed"] = relaxed
    return [EventDraft("policy.changed", "registry", data, reason)]


def decide_registration(
    ctx: GovContext, manifest: Mapping[str, Any], record: Mapping[str, Any]
) -> list[EventDraft]:
    """The one-call path: register, then walk every stage the manifest marks automatic.

    ``record`` describes the sealed version (folder, digest, flavor, files). The walk
    stops at the first manual stage; failing gates reject the version on the spot.
    """
    modes = stage_modes(manifest)
    uri = _subject(ctx)
    check_not_archived(ctx, "take new versions")
    source = manifest.get("source") or {}
    drafts = [
        EventDraft(
            "version.registered",
            uri,
            _vdata(
                ctx,
                stage="candidate",
                digest=record["digest"],
                folder=record["folder"],
                flavor=record["flavor"],
                source=dict(source),
                settings_digest=record.get("settings_digest"),
            ),
        )
    ]
    stage = "candidate"

    def move(target: str, details: Mapping[str, Any]) -> None:
        nonlocal stage
        drafts.append(
            EventDraft("stage.changed", uri, _vdata(ctx, stage=target, previous=stage, details=dict(details)))
        )
        stage = target

    if modes["data_prepared"] != "auto":
        return drafts
    move("data_prepared", {"datasets": list(manifest.get("datasets") or [])})
    if modes["trained"] != "auto":
        return drafts
    move(
        "trained",
        {
            "folder": record["folder"],
            "digest": record["digest"],
            "files": record["files"],
            "training_job": dict(manifest.get("training_job") or {}),
            "framework": manifest.get("framework"),
            "framework_version": manifest.get("framework_version"),
        },
    )
    if modes["validated"] != "auto":
        return drafts
    results = evaluate_gates(parse_gates(manifest.get("gates")), manifest.get("metrics") or {})
    state = VersionState(ctx.model, ctx.version or 0, stage, ctx.actor)
    vctx = GovContext(ctx.model, ctx.version, state, ctx.aliases, ctx.policy, ctx.actor)
    drafts.extend(decide_validation(vctx, results, reason=None, dataset=None))
    if not all(r.passed for r in results):
        return drafts
    if modes["approved"] != "auto" or not ctx.policy.auto_approve:
        return drafts
    actx = GovContext(
        ctx.model, ctx.version, replace(state, stage="validated"), ctx.aliases, ctx.policy, ctx.actor
    )
    for d in decide_approval(actx, approve=True, reason="all validation gates passed", automated=True):
        drafts.append(EventDraft(d.action, d.subject, d.data, d.reason, actor="policy:auto-approve"))
    if modes["deployed"] != "auto":
        return drafts
    dctx = GovContext(
        ctx.model, ctx.version, replace(state, stage="approved"), ctx.aliases, ctx.policy, ctx.actor
    )
    alias = manifest.get("target_alias") or "production"
    drafts.extend(decide_deploy(dctx, alias, reason="automatic deployment after approval"))
    return drafts


def record_dataset(uri: str, digest: str, file_sha256: str, size_bytes: int, path: str) -> EventDraft:
    """The ledger record of a data set version: what ``verify`` later holds its file to.

    It changes no governance state (no model in its data), so replay ignores it.
    """
    data = {"uri": uri, "digest": digest, "file_sha256": file_sha256, "size_bytes": size_bytes, "path": path}
    return EventDraft("dataset.registered", uri, data)


def record_captures(model: str, version: int, files: Sequence[Mapping[str, Any]]) -> EventDraft:
    """The ledger record of capture files written for a version (``path``, ``size``,
    ``sha256``, ``rows``, ``first_id``, ``last_id`` each): what ``verify`` holds them to, so
    that a capture file deleted or replaced is noticed. Its subject is
    ``predictions:/<model>/<version>``, apart from the version's governance history; replay
    ignores it."""
    data = {"model": model, "version": version, "files": [dict(f) for f in files]}
    return EventDraft("predictions.written", f"predictions:/{model}/{version}", data)


# ---------------------------------------------------------------- names, tags, erasure


def decide_archive(ctx: GovContext, *, archive: bool, reason: str | None) -> list[EventDraft]:
    """Archive a model (hidden from listings, no new versions, no deployments) or bring it back."""
    if archive and ctx.archived:
        raise Conflict(f"models:/{ctx.model} is already archived")
    if not archive and not ctx.archived:
        raise Conflict(f"models:/{ctx.model} is not archived")
    action = "model.archived" if archive else "model.unarchived"
    return [EventDraft(action, f"models:/{ctx.model}", {"model": ctx.model}, reason)]


def decide_rename(ctx: GovContext, new_name: str, *, reason: str | None) -> list[EventDraft]:
    """Rename a model. Events already written keep the old name (the ledger is append-only);
    replay maps it to the new one from this event on, and the old name keeps resolving."""
    if new_name == ctx.model:
        raise InvalidInput(f"models:/{ctx.model} is already called {new_name}")
    if not reason:
        raise InvalidInput("a rename needs a reason")
    data = {"model": ctx.model, "new_name": new_name}
    return [EventDraft("model.renamed", f"models:/{ctx.model}", data, reason)]


def decide_version_tags(
    ctx: GovContext, tags: Mapping[str, str | None], *, reason: str | None
) -> list[EventDraft]:
    """Set (a string) or remove (None) tags of a version."""
    if not tags:
        raise InvalidInput("give at least one tag to set or remove")
    return [EventDraft("version.tagged", _subject(ctx), _vdata(ctx, tags=dict(tags)), reason)]


ERASURE_ACTIONS = ("version.erased", "dataset.erased", "predictions.erased")
"""The ledger actions that record an erasure: what was removed (paths and digests), by whom,
when and why. The bytes are gone; the digests and every event stay."""


def record_erasure(
    action: str, subject: str, data: Mapping[str, Any], files: Sequence[Mapping[str, Any]], *, reason: str
) -> EventDraft:
    """The ledger record of an erasure (``files``: ``path``, ``sha256``, ``size`` each)."""
    if action not in ERASURE_ACTIONS:
        raise InvalidInput(f"unknown erasure {action!r}")
    if not reason or not reason.strip():
        raise InvalidInput("an erasure needs a reason (the legal ground, a ticket)")
    return EventDraft(action, subject, {**data, "files": [dict(f) for f in files]}, reason)


def chain_drafts(
    builder: ChainBuilder,
    drafts: Sequence[EventDraft],
    *,
    actor: str,
    via: Mapping[str, Any] | None,
    time: str,
) -> tuple[list[LedgerEvent], list[str], list[str]]:
    """The drafted events as ledger events appended to ``builder``: (events, the canonical
    text of each one's data, each one's hash). Every store appends through this, so the chain
    hashes the same events the same way on every backend. ``via`` (a server writing for a
    member: for whom, and how they proved it) goes into each event's data."""
    first = builder.next_seq
    events = [
        LedgerEvent(
            seq=first + i,
            time=time,
            actor=d.actor or actor,
            action=d.action,
            subject=d.subject,
            data=d.data if via is None else {**d.data, "via": dict(via)},
            reason=d.reason,
        )
        for i, d in enumerate(drafts)
    ]
    # The canonical text is both what the chain hashes and what a store keeps (any JSON reader
    # reads it back to the same value), so it is encoded once.
    texts = [canonicalize_str(e.data) for e in events]
    return events, texts, builder.extend(events, data_texts=texts)
