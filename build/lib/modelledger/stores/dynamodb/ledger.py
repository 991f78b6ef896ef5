"""The DynamoDB store's ledger: governed writes conditional on the head, the chain, checkpoints
and the governance state they index.

A governed write reads the head, decides, and sends ONE TransactWriteItems holding the head's
move (on the condition that it is still the head it read), the events, their pointers, the
signed checkpoint and every state item the events change. A writer that lost the race to
another has written nothing; it reads again and decides again. The chain never forks.
"""

from __future__ import annotations

import heapq
import json
import random
import re
import time as _time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..._delegation import DelegatedSigner
from ..._identifiers import fold_name
from ..._ledger import GENESIS, ChainBuilder, ChainSegment, Checkpoint, LedgerEvent
from ..._lifecycle import EventDraft, GovContext, ReplayedState, VersionState, chain_drafts, state_delta
from ..._members import AUTOMATED_PREFIX, MEMBER_ACTIONS, Roster, authorize_event
from ..._policy import Policy
from ..._time import now_text
from ...errors import AlreadyExists, Conflict, IntegrityError, NotFound, PermissionDenied, StorageError
from ..protocols import Decide, Signer
from .base import BUCKET, DynamoBase, Retry, TxItems, chunks, seq_key

__all__ = ["ALIAS_SLOTS", "DynamoLedger"]

ALIAS_SLOTS = 100  # an alias move's number = ledger seq * ALIAS_SLOTS + position in the event
ALIAS_NAMES = "#ALIASES"
"""Sort key (under ``M#<model id>``) of the set of every alias name the model ever had."""
_END_OF_TIME = "~"  # above every time text: the latest move of all
DATA_LIMIT = 350_000
"""Bytes of an event's data text kept on its item; more goes to chunk items (400 KB an item)."""
MAX_ATTEMPTS = 60
"""Governed writes retried after losing the head to another writer, before giving up."""

_POLICY_ACTIONS = ("policy.changed", "registry.initialized")
_VERIFY_RECORD = "verify:"  # settings sort key prefix of each verifier key's record


def _move_key(alias: str, time: str, move: int) -> str:
    """Sort key of an alias move: by alias, then time, then ledger order, so "the move in force
    at T" is the first item of one Query read backwards from ``W#<alias>#<T>#~``. ``#`` sorts
    below every character an alias name may hold, so one alias's range holds no other's."""
    return f"W#{alias}#{time}#{seq_key(move)}"


def scope_of(subject: str) -> str:
    """The subject up to its model (``models:/m/3`` -> ``models:/m``): audit's prefix index."""
    if subject.startswith("models:/"):
        return "/".join(subject.split("/")[:2]).split("@", 1)[0]
    return subject


@dataclass
class _Moves:
    """State changes of one append, final value per item (one operation per item per write)."""

    states: dict[tuple[int, int], tuple[dict[str, Any], bool]] = field(default_factory=dict)
    aliases: dict[tuple[int, str], int | None] = field(default_factory=dict)
    history: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)
    tags: dict[tuple[int, int, str], str | None] = field(default_factory=dict)
    archived: dict[str, str | None] = field(default_factory=dict)  # folded name -> time or None
    policy: Mapping[str, Any] | None = None
    renames: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (model item, new name)


class DynamoLedger(DynamoBase):
    """Governed writes and the ledger."""

    # ------------------------------------------------------------ the write

    def _head(self) -> tuple[int, str]:
        row = self.get(self.state_table, "HEAD", "HEAD")
        if row is None:
            raise StorageError("the ledger head item is missing: run `modelledger init` (or it was deleted)")
        return int(row["seq"]), str(row["hash"])

    def _governed(self, attempt: Callable[[tuple[int, str]], tuple[TxItems, Any]]) -> Any:
        """Run ``attempt`` (head -> items and result) until its transaction commits."""
        for n in range(MAX_ATTEMPTS):
            tx, result = attempt(self._head())
            if not tx.items:
                return result
            try:
                self._send(tx)
            except Retry:
                # jittered backoff: writers that collided do not collide again in step
                _time.sleep(random.uniform(0, min(0.002 * 2**n, 0.2)))
                continue
            return result
        raise StorageError(f"the ledger head kept moving: gave up after {MAX_ATTEMPTS} attempts; try again")

    def _append(
        self,
        tx: TxItems,
        head: tuple[int, str],
        drafts: Sequence[EventDraft],
        *,
        actor: str,
        signer: Signer,
        models: dict[str, dict[str, Any]] | None = None,
    ) -> list[LedgerEvent]:
        """Add to ``tx`` the drafted events, chained on ``head``, with the head's conditional move,
        the pointers, the checkpoint and the state items the events change."""
        if not drafts:
            return []
        builder = ChainBuilder(head=head[1], next_seq=head[0] + 1)
        time = now_text()
        # a server writing for a member: each event says for whom, and how they proved it
        via = signer.via if isinstance(signer, DelegatedSigner) else None
        events, texts, hashes = chain_drafts(builder, drafts, actor=actor, via=via, time=time)
        self._authorize(events, signer.key_id)
        led, st = self.ledger_table, self.state_table
        tx.add(
            "Update",
            {
                "TableName": st,
                "Key": self.item({"pk": "HEAD", "sk": "HEAD"}),
                "UpdateExpression": "SET seq = :new, #h = :newh",
                "ConditionExpression": "seq = :old AND #h = :oldh",
                "ExpressionAttributeNames": {"#h": "hash"},
                "ExpressionAttributeValues": {
                    ":new": self.value(builder.last_seq),
                    ":newh": self.value(builder.head_hex),
                    ":old": self.value(head[0]),
                    ":oldh": self.value(head[1]),
                },
            },
            key=(st, "HEAD", "HEAD"),
        )
        for e, text, digest in zip(events, texts, hashes, strict=True):
            pk, sk = f"E#{e.seq // BUCKET}", seq_key(e.seq)
            row = {
                "pk": pk,
                "sk": sk,
                "seq": e.seq,
                "time": e.time,
                "actor": e.actor,
                "action": e.action,
                "subject": e.subject,
                "scope": scope_of(e.subject),
                "data": text,
                "reason": e.reason,
                "hash": digest,
            }
            data = text.encode()
            if len(data) > DATA_LIMIT:
                # an event naming every file of a large version: its data in chunk items beside it
                parts = list(chunks(data, DATA_LIMIT))
                row = {**row, "data": None, "chunks": len(parts)}
                for i, part in enumerate(parts):
                    self._put(tx, led, {"pk": f"ED#{e.seq}", "sk": f"{i:04d}", "part": part})
            self._put(tx, led, row)
            self._put(tx, led, {"pk": f"S#{e.subject}", "sk": sk, "act": e.action})
            group = self._group(e)
            if group is not None:
                self._put(tx, led, {"pk": f"G#{group}", "sk": sk, "act": e.action})
            if e.action == "registry.initialized":
                # the first policy too: a decision finds the policy in force with one Query,
                # not by reading every enrolment when the policy never changed
                self._put(tx, led, {"pk": "G#policy", "sk": sk, "act": e.action})
        cp = signer(builder.last_seq, builder.head, time)
        self._put(tx, led, {"pk": f"C#{cp.seq // BUCKET}", "sk": seq_key(cp.seq), **cp.to_dict()})
        moves = _Moves()
        known = dict(models or {})
        for e in events:
            self._apply(e, known, moves)
        self._write_moves(tx, moves, known)
        return events

    @staticmethod
    def _group(e: LedgerEvent) -> str | None:
        """The governance pointer group of an event that decisions read back, if any."""
        if e.action in MEMBER_ACTIONS:
            return "members"  # registry.initialized is also the first policy: both pointers below
        if e.action == "model.renamed":
            return "renames"
        if e.action == "policy.changed":
            return "policy"
        return None

    def _put(self, tx: TxItems, table: str, row: Mapping[str, Any], *, fail: Exception | None = None) -> None:
        tx.add(
            "Put",
            {"TableName": table, "Item": self.item(row), "ConditionExpression": "attribute_not_exists(pk)"},
            key=(table, str(row["pk"]), str(row["sk"])),
            fail=fail,
        )

    def _authorize(self, events: Sequence[LedgerEvent], kid: str) -> None:
        """Refuse the write unless key ``kid`` may sign every event: the rule ``verify`` checks."""
        roster = self._roster().copy()
        legacy = self._legacy_kid()
        automated = any(e.actor.startswith(AUTOMATED_PREFIX) for e in events)
        policy = self._ledger_policy() if automated else Policy()
        for event in events:
            problem = authorize_event(
                roster, event, kid=kid, legacy_kid=legacy, auto_approve=policy.auto_approve
            )
            if problem is not None:
                raise PermissionDenied(problem)
            roster.apply(event.action, event.seq, event.time, event.data)
            if event.action == "policy.changed":
                policy = Policy.from_dict(event.data["policy"])

    # ------------------------------------------------------------ state from events

    def _model_item(self, name: str) -> dict[str, Any] | None:
        return self.get(self.state_table, f"N#{fold_name(name)}", "MODEL")

    def _known(self, name: str, known: dict[str, dict[str, Any]]) -> dict[str, Any]:
        if name not in known:
            item = self._model_item(name)
            if item is None:
                raise NotFound("model", name)
            known[name] = item
        return known[name]

    def _apply(self, event: LedgerEvent, known: dict[str, dict[str, Any]], moves: _Moves) -> None:
        """Collect the state one event changes, by the same rule a rebuild uses."""
        eff = state_delta(event.action, event.actor, event.time, event.seq, event.data)
        if eff.fields and eff.model is not None and eff.version is not None:
            mid = int(self._known(eff.model, known)["id"])
            key = (mid, eff.version)
            values, new = moves.states.get(key, ({}, False))
            values = dict(eff.fields) if eff.new_version else {**values, **eff.fields}
            moves.states[key] = (values, new or eff.new_version)
        if eff.model is not None and eff.aliases:
            mid = int(self._known(eff.model, known)["id"])
            for i, (alias, version) in enumerate(sorted(eff.aliases.items())):
                moves.aliases[(mid, alias)] = version
                row = {
                    "alias": alias,
                    "version": version,
                    "time": event.time,
                    "actor": event.actor,
                    "action": event.action,
                }
                moves.history.append((mid, event.seq * ALIAS_SLOTS + i, row))
        if eff.policy is not None:
            moves.policy = eff.policy
        if eff.model is not None and eff.archived is not None:
            self._known(eff.model, known)
            moves.archived[eff.model] = event.time if eff.archived else None
        if eff.model is not None and eff.version is not None and eff.tags is not None:
            mid = int(self._known(eff.model, known)["id"])
            for k, v in eff.tags.items():
                moves.tags[(mid, eff.version, k)] = v
        if eff.model is not None and eff.renamed_to is not None:
            self._rename(eff.model, eff.renamed_to, known, moves)

    def _rename(self, old: str, new: str, known: dict[str, dict[str, Any]], moves: _Moves) -> None:
        """Give the model its new name; refused when the name is taken now or was ever a model's
        name (former names keep resolving, so they are never reused)."""
        item = self._known(old, known)
        taken = self._model_item(new)
        if taken is not None and int(taken["id"]) != int(item["id"]):  # a change of case is the same model
            raise AlreadyExists("model", new)
        former = {fold_name(n) for n in self._renames() if n != old}
        if fold_name(new) in former:
            raise Conflict(f"{new} is a former name of a model (it still resolves to it): choose another")
        moves.renames.append((dict(item), new))
        known.pop(old, None)
        known[new] = {**item, "name": new, "pk": f"N#{fold_name(new)}", "nf": fold_name(new)}

    def _write_moves(self, tx: TxItems, moves: _Moves, known: Mapping[str, Mapping[str, Any]]) -> None:
        st = self.state_table
        for (mid, number), (values, new) in moves.states.items():
            pk, sk = f"M#{mid}", f"T#{seq_key(number, 10)}"
            if new:
                tx.add(
                    "Put",
                    {"TableName": st, "Item": self.item({"pk": pk, "sk": sk, **values})},
                    key=(st, pk, sk),
                )
            else:
                names = {f"#f{i}": k for i, k in enumerate(sorted(values))}
                exprs = {f":f{i}": self.value(values[k]) for i, k in enumerate(sorted(values))}
                tx.add(
                    "Update",
                    {
                        "TableName": st,
                        "Key": self.item({"pk": pk, "sk": sk}),
                        "UpdateExpression": "SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(names))),
                        "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": exprs,
                    },
                    key=(st, pk, sk),
                )
        updated = now_text()
        for (mid, alias), version in moves.aliases.items():
            pk, sk = f"M#{mid}", f"A#{alias}"
            if version is None:
                tx.add("Delete", {"TableName": st, "Key": self.item({"pk": pk, "sk": sk})}, key=(st, pk, sk))
            else:
                row = {"pk": pk, "sk": sk, "alias": alias, "version": int(version), "updated_at": updated}
                tx.add("Put", {"TableName": st, "Item": self.item(row)}, key=(st, pk, sk))
        alias_names: dict[int, set[str]] = {}
        for mid, n, move in moves.history:
            sk = _move_key(str(move["alias"]), str(move["time"]), n)
            self._put(tx, st, {"pk": f"M#{mid}", "sk": sk, "move": n, **move})
            alias_names.setdefault(mid, set()).add(str(move["alias"]))
        for mid, added in alias_names.items():
            # every name the model's aliases ever had (a set: adding one twice is a no-op), so
            # the reads "at a time" know which aliases to ask about, removed ones included
            tx.add(
                "Update",
                {
                    "TableName": st,
                    "Key": self.item({"pk": f"M#{mid}", "sk": ALIAS_NAMES}),
                    "UpdateExpression": "ADD #n :n",
                    "ExpressionAttributeNames": {"#n": "names"},
                    "ExpressionAttributeValues": {":n": self.value(added)},
                },
                key=(st, f"M#{mid}", ALIAS_NAMES),
            )
        for (mid, number, k), v in moves.tags.items():
            pk, sk = f"M#{mid}", f"G#{seq_key(number, 10)}#{k}"
            if v is None:
                tx.add("Delete", {"TableName": st, "Key": self.item({"pk": pk, "sk": sk})}, key=(st, pk, sk))
            else:
                row = {"pk": pk, "sk": sk, "key": k, "value": v}
                tx.add("Put", {"TableName": st, "Item": self.item(row)}, key=(st, pk, sk))
        if moves.policy is not None:
            value = json.dumps(moves.policy, sort_keys=True)
            tx.add(
                "Put",
                {"TableName": st, "Item": self.item({"pk": "SET", "sk": "policy", "value": value})},
                key=(st, "SET", "policy"),
            )
        for item, new_name in moves.renames:
            self._write_rename(tx, item, new_name)
        for name, when in moves.archived.items():
            pk = f"N#{fold_name(str(known[name]['name']))}"
            if when is None:
                update: dict[str, Any] = {"UpdateExpression": "REMOVE archived_at"}
            else:
                update = {
                    "UpdateExpression": "SET archived_at = :w",
                    "ExpressionAttributeValues": {":w": self.value(when)},
                }
            tx.add(
                "Update",
                {"TableName": st, "Key": self.item({"pk": pk, "sk": "MODEL"}), **update},
                key=(st, pk, "MODEL"),
            )

    def _write_rename(self, tx: TxItems, item: Mapping[str, Any], new: str) -> None:
        """Move the model's name item to the new name (its id, and so its versions, stay)."""
        st = self.state_table
        old_pk, new_pk = str(item["pk"]), f"N#{fold_name(new)}"
        name_set = {"UpdateExpression": "SET #n = :n", "ExpressionAttributeNames": {"#n": "name"}}
        value = {":n": self.value(new)}
        if old_pk == new_pk:  # a change of case only
            body = {"TableName": st, "Key": self.item({"pk": old_pk, "sk": "MODEL"}), **name_set}
            tx.add("Update", {**body, "ExpressionAttributeValues": value}, key=(st, old_pk, "MODEL"))
        else:
            tx.add(
                "Delete",
                {
                    "TableName": st,
                    "Key": self.item({"pk": old_pk, "sk": "MODEL"}),
                    "ConditionExpression": "attribute_exists(pk)",
                },
                key=(st, old_pk, "MODEL"),
            )
            row = {**item, "pk": new_pk, "name": new, "nf": fold_name(new)}
            self._put(tx, st, row, fail=AlreadyExists("model", new))
        mid = f"M#{item['id']}"
        body = {"TableName": st, "Key": self.item({"pk": mid, "sk": "#NAME"}), **name_set}
        tx.add("Update", {**body, "ExpressionAttributeValues": value}, key=(st, mid, "#NAME"))

    # ------------------------------------------------------------ reading the ledger

    @staticmethod
    def _event(item: Mapping[str, Any]) -> LedgerEvent:
        return LedgerEvent(
            seq=int(item["seq"]),
            time=item["time"],
            actor=item["actor"],
            action=item["action"],
            subject=item["subject"],
            data=json.loads(item["data"]),
            reason=item.get("reason"),
        )

    def _whole(self, item: dict[str, Any]) -> dict[str, Any]:
        """An event item with its data text, joined from its chunk items when it has them."""
        if "chunks" in item:
            parts = self.query(self.ledger_table, f"ED#{item['seq']}")
            item["data"] = b"".join(p["part"] for p in parts).decode()
        return item

    def _events_at(self, seqs: Sequence[int]) -> list[dict[str, Any]]:
        """The event items with these seqs, in seq order (strongly consistent)."""
        found = self.batch_get(self.ledger_table, [(f"E#{s // BUCKET}", seq_key(s)) for s in seqs])
        return [self._whole(i) for i in sorted(found.values(), key=lambda item: int(item["seq"]))]

    def _pointed(self, pk: str, *, newest_first: bool = False, limit: int | None = None) -> list[int]:
        rows = self.query(self.ledger_table, pk, newest_first=newest_first, limit=limit)
        return [int(r["sk"]) for r in rows]

    def _range(
        self, table: str, prefix: str, lo: int, hi: int, limit: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Items of a bucketed series with seq in [lo, hi], in order."""
        left = limit
        for b in range(lo // BUCKET, hi // BUCKET + 1):
            start, stop = max(lo, b * BUCKET), min(hi, b * BUCKET + BUCKET - 1)
            for item in self.query(
                table, f"{prefix}#{b}", between=(seq_key(start), seq_key(stop)), limit=left
            ):
                yield item
                if left is not None:
                    left -= 1
                    if left == 0:
                        return

    def _renames(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self._events_at(self._pointed("G#renames")):
            record = json.loads(item["data"])
            old, new = str(record["model"]), str(record["new_name"])
            out = {k: (new if v == old else v) for k, v in out.items()}
            out[old] = new
        return out

    def renamed_models(self) -> dict[str, str]:
        return self._renames()

    def _ledger_policy(self) -> Policy:
        """The policy as the ledger last recorded it (policy.changed, or the initialisation)."""
        # "members": a ledger written before the initialisation had its policy pointer
        for group in ("policy", "members"):
            seqs = self._pointed(f"G#{group}", newest_first=True, limit=1 if group == "policy" else None)
            for item in self._events_at(seqs[:1] if group == "policy" else seqs)[::-1]:
                if item["action"] in _POLICY_ACTIONS and item["subject"] == "registry":
                    return Policy.from_dict(json.loads(item["data"])["policy"])
        return Policy()

    def policy(self) -> Policy:
        return self._ledger_policy()

    def _ledger_state(self, model: str, version: int) -> VersionState | None:
        """The version's state replayed from its own events (a decision never trusts the state
        items, which anyone with table access could edit); former names count too."""
        former = [old for old, new in self._renames().items() if new == model]
        rebuilt = ReplayedState(names={old: model for old in former})
        seqs: list[int] = []
        for name in (*former, model):
            seqs.extend(self._pointed(f"S#models:/{name}/{version}"))
        for item in self._events_at(sorted(set(seqs))):
            e = self._event(item)
            rebuilt.apply(state_delta(e.action, e.actor, e.time, e.seq, e.data), e.time)
        return rebuilt.versions.get((model, version))

    def _roster(self) -> Roster:
        """The roster as of now; rebuilt only when an enrolment event was appended since."""
        newest = self._pointed("G#members", newest_first=True, limit=1)
        last = newest[0] if newest else 0
        cached = self._roster_cache
        if cached is not None and cached.last_seq == last:
            return cached  # type: ignore[no-any-return]
        roster = Roster()
        for item in self._events_at(self._pointed("G#members")):
            roster.apply(item["action"], int(item["seq"]), item["time"], json.loads(item["data"]))
        roster.last_seq = last
        self._roster_cache = roster
        return roster

    def roster(self) -> Roster:
        return self._roster().copy()

    def _legacy_kid(self) -> str | None:
        stored = self.public_key()
        return None if stored is None else stored[0]

    def _recorded(self, subject: str, action: str) -> bool:
        """Whether the ledger holds an ``action`` event about ``subject``."""
        return any(p.get("act") == action for p in self.query(self.ledger_table, f"S#{subject}"))

    def _alias_map(self, mid: int) -> dict[str, int]:
        return {r["alias"]: int(r["version"]) for r in self.query(self.state_table, f"M#{mid}", begins="A#")}

    # ------------------------------------------------------------ LedgerStore

    def govern(
        self,
        model: str,
        version: int | None,
        decide: Decide,
        *,
        actor: str,
        signer: Signer,
        needs_state: bool = True,
        needs_policy: bool = True,
    ) -> list[LedgerEvent]:
        """Read the state, let ``decide`` choose the events, append them conditional on the head."""

        def attempt(head: tuple[int, str]) -> tuple[TxItems, list[LedgerEvent]]:
            name, state, archived, aliases = model, None, False, {}
            known: dict[str, dict[str, Any]] = {}
            if model:
                m = self._model_item(model)
                if m is None:
                    raise NotFound("model", model)
                name = str(m["name"])  # the stored spelling
                known[name] = m
                archived = m.get("archived_at") is not None
                aliases = self._alias_map(int(m["id"]))
                if version is not None:
                    if self.get(self.state_table, f"M#{m['id']}", f"V#{seq_key(version, 10)}") is None:
                        raise NotFound("model version", f"models:/{name}/{version}")
                    if needs_state:
                        state = self._ledger_state(name, version)
            ctx = GovContext(
                model=name,
                version=version,
                state=state,
                aliases=aliases,
                policy=self._ledger_policy() if needs_policy else Policy(),
                actor=actor,
                archived=archived,
            )
            tx = TxItems()
            events = self._append(tx, head, decide(ctx), actor=actor, signer=signer, models=known)
            return tx, events

        result: list[LedgerEvent] = self._governed(attempt)
        return result

    def add_public_key(
        self, kid: str, public_pem: bytes, decide: Decide, *, actor: str, signer: Signer
    ) -> bool:
        """Record the registry's public key and ``decide``'s events in one write; False, writing
        nothing, when a key is recorded already (a concurrent first use won)."""

        class _Taken(Exception):
            pass

        def attempt(head: tuple[int, str]) -> tuple[TxItems, bool]:
            if self.get(self.state_table, "KEY", "KEY") is not None:
                return TxItems(), False
            tx = TxItems()
            row = {
                "pk": "KEY",
                "sk": "KEY",
                "key_id": kid,
                "public_pem": public_pem.decode(),
                "created_at": now_text(),
            }
            self._put(tx, self.state_table, row, fail=_Taken())
            ctx = GovContext(
                model="", version=None, state=None, aliases={}, policy=self._ledger_policy(), actor=actor
            )
            self._append(tx, head, decide(ctx), actor=actor, signer=signer)
            return tx, True

        try:
            done: bool = self._governed(attempt)
        except _Taken:
            return False
        return done

    def public_key(self) -> tuple[str, bytes] | None:
        # The KEY item is written once (a conditional put) and never changed: once read, it is
        # kept, and the verbs that check a signature (trace, verify) stop asking for it.
        if self._public_key is None:
            found = self.get(self.state_table, "KEY", "KEY")
            if found is not None:
                self._public_key = (str(found["key_id"]), str(found["public_pem"]).encode())
        return self._public_key

    def ledger_head(self) -> tuple[int, str]:
        return self._head()

    def iter_events(self, *, after: int = 0, batch: int = 5000) -> Iterator[tuple[LedgerEvent, str]]:
        """Every event with its stored hash, in seq order, read in pages up to the moving head."""
        for event, digest, _text in self.iter_event_texts(after=after, batch=batch):
            yield event, digest

    def iter_event_texts(
        self, *, after: int = 0, batch: int = 5000
    ) -> Iterator[tuple[LedgerEvent, str, str]]:
        """Every event after ``after`` with its stored hash and its stored data text, in seq
        order, read in pages up to the moving head."""
        last = after
        while True:
            top = self._head()[0]
            if last >= top:
                return
            hi = min(top, last + batch)
            for item in self._range(self.ledger_table, "E", last + 1, hi):
                whole = self._whole(item)
                yield self._event(whole), str(whole["hash"]), str(whole["data"])
            last = hi

    @staticmethod
    def _checkpoint(item: Mapping[str, Any]) -> Checkpoint:
        return Checkpoint(
            seq=int(item["seq"]),
            head_hash=item["head_hash"],
            time=item["time"],
            key_id=item["key_id"],
            signature=item["signature"],
        )

    def checkpoints(self, *, after: int | None = None) -> list[Checkpoint]:
        top = self._head()[0]
        lo = 0 if after is None else after + 1
        if lo > top:
            return []
        return [self._checkpoint(i) for i in self._range(self.ledger_table, "C", lo, top)]

    def count_events(self, *, upto: int) -> int:
        n = 0
        for b in range(0, max(upto, 0) // BUCKET + 1):
            answer = self.client.query(
                TableName=self.ledger_table,
                KeyConditionExpression="pk = :p AND sk <= :hi",
                ExpressionAttributeValues={":p": self.value(f"E#{b}"), ":hi": self.value(seq_key(upto))},
                Select="COUNT",
                ConsistentRead=True,
            )
            n += int(answer["Count"])
            while answer.get("LastEvaluatedKey"):
                answer = self.client.query(
                    TableName=self.ledger_table,
                    KeyConditionExpression="pk = :p AND sk <= :hi",
                    ExpressionAttributeValues={":p": self.value(f"E#{b}"), ":hi": self.value(seq_key(upto))},
                    Select="COUNT",
                    ConsistentRead=True,
                    ExclusiveStartKey=answer["LastEvaluatedKey"],
                )
                n += int(answer["Count"])
        return n

    def version_state(self, model: str, version: int) -> VersionState:
        m = self._model_item(model)
        if m is None:
            raise NotFound("model", model)
        item = self.get(self.state_table, f"M#{m['id']}", f"T#{seq_key(version, 10)}")
        if item is None:
            raise NotFound("model version", f"models:/{m['name']}/{version}")
        return self._state(str(m["name"]), version, item)

    def version_states(self, model: str, versions: Sequence[int]) -> dict[int, VersionState]:
        m = self._model_item(model)
        if m is None:
            raise NotFound("model", model)
        keys = [(f"M#{m['id']}", f"T#{seq_key(v, 10)}") for v in versions]
        found = self.batch_get(self.state_table, keys)
        return {
            int(sk[2:]): self._state(str(m["name"]), int(sk[2:]), item) for (_pk, sk), item in found.items()
        }

    def verify_record(self, key_id: str) -> str | None:
        found = self.get(self.state_table, "SET", _VERIFY_RECORD + key_id)
        return None if found is None else str(found["value"])

    def save_verify_record(self, key_id: str, text: str) -> None:
        # Not a ledger event: a verifier may hold no role. The record is signed by the
        # verifier's key, which the next run checks.
        row = {"pk": "SET", "sk": _VERIFY_RECORD + key_id, "value": text}
        self.client.put_item(TableName=self.state_table, Item=self.item(row))

    def audit(
        self,
        *,
        subjects: Sequence[str],
        subject_prefixes: Sequence[str],
        actor: str | None,
        action: str | None,
        since: str | None,
        until: str | None,
        after: int,
        limit: int,
    ) -> list[tuple[LedgerEvent, str]]:
        """Events matching every filter, in seq order, seqs above ``after``. The most selective
        filter picks an index (subject, scope, actor, action) or the seq range; the others are
        checked per event. Indexes are eventually consistent: an event a moment old may be
        missing from a page (never from ``iter_events``)."""
        start = seq_key(after + 1)
        end = seq_key(10**20 - 1)

        def on(index: str, key: str, value: str) -> Iterator[dict[str, Any]]:
            return self.query(self.ledger_table, value, between=(start, end), index=index, key_name=key)

        streams: list[Iterator[dict[str, Any]]]
        if subjects or subject_prefixes:
            streams = [on("by_subject", "subject", x) for x in subjects]
            for p in subject_prefixes:
                if p.startswith("models:/") and scope_of(p) != "models:":
                    streams.append(on("by_scope", "scope", scope_of(p)))
                else:  # no index holds this prefix: the seq range, filtered
                    streams = [self._range(self.ledger_table, "E", after + 1, self._head()[0])]
                    break
        elif actor:
            streams = [on("by_actor", "actor", actor)]
        elif action and "*" not in action:
            streams = [on("by_action", "action", action)]
        else:
            streams = [self._range(self.ledger_table, "E", after + 1, self._head()[0])]
        pattern = None
        if action and "*" in action:
            pattern = re.compile(".*".join(re.escape(part) for part in action.split("*")), re.DOTALL)
        out: list[tuple[LedgerEvent, str]] = []
        last = after
        for item in heapq.merge(*streams, key=lambda i: int(i["seq"])):
            seq = int(item["seq"])
            if seq <= last:
                continue  # the same event from two streams
            subject, time = str(item["subject"]), str(item["time"])
            if (subjects or subject_prefixes) and not (
                subject in subjects or any(subject.startswith(p) for p in subject_prefixes)
            ):
                continue
            if actor and item["actor"] != actor:
                continue
            if action and (
                pattern.fullmatch(item["action"]) is None if pattern else item["action"] != action
            ):
                continue
            if (since and time < since) or (until and time > until):
                continue
            last = seq
            out.append((self._event(self._whole(dict(item))), str(item["hash"])))
            if len(out) >= limit:
                break
        return out

    def segment_for(self, subject: str, action: str) -> ChainSegment | None:
        for pointer in self.query(self.ledger_table, f"S#{subject}"):
            if pointer.get("act") == action:
                return self._segment(int(pointer["sk"]))
        return None

    def member_segments(self) -> list[ChainSegment]:
        """A chain segment for each write holding enrolment events, in ledger order."""
        out: list[ChainSegment] = []
        for seq in self._pointed("G#members"):
            if out and out[-1].checkpoint.seq >= seq:
                continue  # in the write the previous segment already covers
            out.append(self._segment(seq))
        return out

    def _segment(self, seq: int) -> ChainSegment:
        """Event ``seq`` and the events after it up to the checkpoint that signs them."""
        top = self._head()[0]
        found = list(self._range(self.ledger_table, "C", seq, top, limit=1))
        if not found:
            raise IntegrityError(f"ledger event {seq}", "no signed checkpoint covers it (truncated?)")
        cp = self._checkpoint(found[0])
        events = tuple(
            (self._event(self._whole(i)), str(i["hash"]))
            for i in self._range(self.ledger_table, "E", seq, cp.seq)
        )
        before = self._events_at([seq - 1]) if seq > 1 else []
        return ChainSegment(
            previous_hash=str(before[0]["hash"]) if before else GENESIS.hex(),
            events=events,
            checkpoint=cp,
        )

    def _model_id(self, model: str) -> tuple[str, int]:
        m = self._model_item(model)
        if m is None:
            raise NotFound("model", model)
        return str(m["name"]), int(m["id"])

    def _move_at(self, mid: int, alias: str, time: str) -> dict[str, Any] | None:
        """The move of ``alias`` in force at ``time``: one Query, from the end of the alias's
        moves up to ``time`` (latest time first, the later in the ledger first at a tie)."""
        rows = self.query(
            self.state_table,
            f"M#{mid}",
            between=(f"W#{alias}#", f"W#{alias}#{time}#~"),
            newest_first=True,
            limit=1,
        )
        return next(iter(rows), None)

    def _alias_names(self, mid: int) -> list[str]:
        found = self.get(self.state_table, f"M#{mid}", ALIAS_NAMES)
        return sorted(found["names"]) if found else []

    @staticmethod
    def _change(name: str, r: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "seq": int(r["move"]) // ALIAS_SLOTS,
            "model": name,
            "alias": r["alias"],
            "version": None if r.get("version") is None else int(r["version"]),
            "time": r["time"],
            "actor": r["actor"],
            "action": r["action"],
        }

    def alias_at(self, model: str, alias: str, time: str) -> int | None:
        _name, mid = self._model_id(model)
        move = self._move_at(mid, alias, time)
        return None if move is None or move.get("version") is None else int(move["version"])

    def alias_history(self, model: str, alias: str | None) -> list[dict[str, Any]]:
        # the whole history is what was asked for: one Query (paged), put in ledger order
        name, mid = self._model_id(model)
        rows = self.query(self.state_table, f"M#{mid}", begins="W#" if alias is None else f"W#{alias}#")
        return [self._change(name, r) for r in sorted(rows, key=lambda r: int(r["move"]))]

    def aliases_at(self, model: str, version: int, time: str) -> list[str]:
        # one Query per alias name the model ever had, however many times each moved
        _name, mid = self._model_id(model)
        out = []
        for alias in self._alias_names(mid):
            move = self._move_at(mid, alias, time)
            if move is not None and move.get("version") is not None and int(move["version"]) == version:
                out.append(alias)
        return out

    def current_alias_moves(self, model: str) -> list[dict[str, Any]]:
        # read from the moves, as the SQL store does (not from the alias items, which a
        # rebuild rewrites): the latest move of each name, kept when it set a version
        name, mid = self._model_id(model)
        out = []
        for alias in self._alias_names(mid):
            move = self._move_at(mid, alias, _END_OF_TIME)
            if move is not None and move.get("version") is not None:
                out.append(self._change(name, move))
        return out

    @staticmethod
    def _state(model: str, version: int, item: Mapping[str, Any]) -> VersionState:
        return VersionState(
            model=model,
            version=version,
            stage=item["stage"],
            registered_by=item["registered_by"],
            approved_by=item.get("approved_by"),
            decided_at=item.get("decided_at"),
            last_seq=int(item.get("last_seq", 0)),
        )
