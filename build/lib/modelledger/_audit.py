"""Reading governance back: the events about a subject, alias moves, and where the state
tables disagree with a replay of the ledger. Shared by the governance verbs, ``trace`` and
``verify``; it reads through the ledger port only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._ledger import LedgerEvent
from ._lifecycle import ReplayedState, state_delta
from .stores.protocols import LedgerStore

__all__ = ["AliasChange", "StateDifference", "state_differences", "subject_history"]


@dataclass(frozen=True, slots=True)
class AliasChange:
    """One move of an alias, from the ledger: ``version`` is None when it was removed."""

    seq: int
    model: str
    alias: str
    version: int | None
    time: str
    actor: str
    action: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "model": self.model,
            "alias": self.alias,
            "version": self.version,
            "time": self.time,
            "actor": self.actor,
            "action": self.action,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AliasChange:
        version = data.get("version")
        return cls(
            seq=int(data["seq"]),
            model=str(data["model"]),
            alias=str(data["alias"]),
            version=None if version is None else int(version),
            time=str(data["time"]),
            actor=str(data["actor"]),
            action=str(data["action"]),
        )


@dataclass(frozen=True, slots=True)
class StateDifference:
    """Where the state tables disagree with a replay of the ledger: ``expected`` is what the
    ledger says, ``found`` what the table holds (JSON values: a state's dict, an alias's
    version, a flag, tags, a policy's dict, or None for absent)."""

    what: str
    expected: Any
    found: Any

    def to_dict(self) -> dict[str, Any]:
        return {"what": self.what, "expected": self.expected, "found": self.found}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StateDifference:
        return cls(what=str(data["what"]), expected=data.get("expected"), found=data.get("found"))

    def __str__(self) -> str:
        return f"{self.what}: ledger says {self.expected!r}, table says {self.found!r}"


def subject_history(
    store: LedgerStore, subjects: Sequence[str], prefixes: Sequence[str], *, page: int = 1000
) -> list[LedgerEvent]:
    """Every ledger event whose subject is one of ``subjects`` or starts with one of ``prefixes``."""
    out: list[LedgerEvent] = []
    after = 0
    while True:
        rows = store.audit(
            subjects=subjects,
            subject_prefixes=prefixes,
            actor=None,
            action=None,
            since=None,
            until=None,
            after=after,
            limit=page,
        )
        out.extend(e for e, _ in rows)
        if len(rows) < page:
            return out
        after = rows[-1][0].seq


def state_differences(
    store: LedgerStore, rebuilt: ReplayedState, *, replayed_to: int | None = None
) -> list[StateDifference]:
    """How the state tables disagree with ``rebuilt`` (a replay of the whole ledger).

    With ``replayed_to`` (the seq the replay reached), writes that land meanwhile are
    caught up first: the tables are read between two looks at the ledger head, and the
    replay is carried forward to that head, so a busy registry is compared with itself
    rather than reported as different. Where the head keeps moving during the read (a store
    whose state is many requests, not one snapshot, under steady writes), an entry read
    while writes touched it is accepted when it equals the replay at some seq between the
    two looks: it was read at that moment. An entry that matches at no such seq is reported.
    """
    current = store.current_state()
    if replayed_to is None:
        return list(_differences(rebuilt, current).values())
    for _attempt in range(5):
        head = _catch_up(store, rebuilt, replayed_to)
        replayed_to = head
        current = store.current_state()
        moved_to = store.ledger_head()[0]
        if moved_to == head:
            return list(_differences(rebuilt, current).values())
    pending = _differences(rebuilt, current)
    for event, _hash in store.iter_events(after=replayed_to):
        if event.seq > moved_to:
            break
        rebuilt.apply(state_delta(event.action, event.actor, event.time, event.seq, event.data), event.time)
        if pending:
            still = _differences(rebuilt, current, only=pending)
            pending = {key: diff for key, diff in pending.items() if key in still}
    return list(pending.values())


def _catch_up(store: LedgerStore, rebuilt: ReplayedState, replayed_to: int) -> int:
    """Apply the events after ``replayed_to`` up to the head (read now) to ``rebuilt``."""
    head = store.ledger_head()[0]
    for event, _hash in store.iter_events(after=replayed_to):
        if event.seq > head:
            break
        rebuilt.apply(state_delta(event.action, event.actor, event.time, event.seq, event.data), event.time)
    return head


_Key = tuple[str, Any]


def _differences(
    rebuilt: ReplayedState, current: ReplayedState, only: Mapping[_Key, object] | None = None
) -> dict[_Key, StateDifference]:
    """Each disagreement by its key (``("version", (model, n))``, ``("alias", ...)``, ...), in
    report order; ``only`` limits the comparison to those keys."""

    def keys(kind: str, *sources: Any) -> list[Any]:
        if only is not None:
            return sorted(k for (c, k) in only if c == kind)
        return sorted(set().union(*sources))

    out: dict[_Key, StateDifference] = {}
    for key in keys("version", rebuilt.versions, current.versions):
        a, b = rebuilt.versions.get(key), current.versions.get(key)
        if a is None or b is None or a.to_dict() != b.to_dict():
            out[("version", key)] = StateDifference(
                f"state of models:/{key[0]}/{key[1]}", a and a.to_dict(), b and b.to_dict()
            )
    for key in keys("alias", rebuilt.aliases, current.aliases):
        held, found = rebuilt.aliases.get(key), current.aliases.get(key)
        if held != found:
            out[("alias", key)] = StateDifference(f"models:/{key[0]}@{key[1]}", held, found)
    for name in keys("archived", rebuilt.archived, current.archived):
        if (name in rebuilt.archived) != (name in current.archived):
            out[("archived", name)] = StateDifference(
                f"archived models:/{name}", name in rebuilt.archived, name in current.archived
            )
    for key in keys("tags", rebuilt.tags, current.tags):
        if rebuilt.tags.get(key, {}) != current.tags.get(key, {}):
            out[("tags", key)] = StateDifference(
                f"tags of models:/{key[0]}/{key[1]}", rebuilt.tags.get(key), current.tags.get(key)
            )
    if (only is None or ("policy", None) in only) and rebuilt.policy != current.policy:
        out[("policy", None)] = StateDifference("policy", rebuilt.policy.to_dict(), current.policy.to_dict())
    return out
