"""The SQL store's ledger: governed writes, the hash chain, checkpoints and the state it indexes."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..._delegation import DelegatedSigner
from ..._identifiers import fold_name
from ..._ledger import GENESIS, ChainBuilder, ChainSegment, Checkpoint, LedgerEvent
from ..._lifecycle import EventDraft, GovContext, ReplayedState, VersionState, chain_drafts, state_delta
from ..._members import AUTOMATED_PREFIX, MEMBER_ACTIONS, Roster, authorize_event
from ..._policy import Policy
from ..._time import now, now_text
from ...errors import AlreadyExists, Conflict, IntegrityError, NotFound, PermissionDenied
from ..protocols import Decide, Signer
from . import tables as t
from .base import SqlBase
from .statements import (
    ESC,
    Q_ALIAS_AT,
    Q_ALIAS_DELETE,
    Q_ALIAS_HISTORY_INSERT,
    Q_ALIAS_LATEST_SEQS,
    Q_ALIAS_MOVES,
    Q_ALIASES_AT,
    Q_CHECKPOINT_INSERT,
    Q_EVENT_ROWS,
    Q_EVENTS_INSERT,
    Q_HEAD_UPDATE,
    Q_MEMBER_LAST,
    Q_MODEL_AND_VERSION,
    Q_POLICY_EVENT,
    Q_RENAMES,
    Q_STATE,
    Q_STATE_INSERT,
    Q_STATE_UPDATE,
    Q_SUBJECT_EVENTS,
    Q_VERSION_STATES,
    bp,
    const,
    like_escape,
    named,
    prefix_range,
)

__all__ = ["ALIAS_SLOTS", "SqlLedger"]

_VERIFY_RECORD = "verify:"  # registry_settings key prefix of each verifier key's record

ALIAS_SLOTS = 100  # alias_history.seq = ledger seq * ALIAS_SLOTS + position in the event


@dataclass
class _AliasMoves:
    """Alias changes of one append: final value per (model id, alias), and every move in order."""

    aliases: dict[tuple[int, str], int | None] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    # version state: (model id, version) -> (values, new row?), written once per append
    states: dict[tuple[int, int], tuple[dict[str, Any], bool]] = field(default_factory=dict)


class SqlLedger(SqlBase):
    """Governed writes and the ledger."""

    def _state(self, conn: Connection, model_id: int, model: str, version: int) -> VersionState | None:
        row = self.driver.first(conn, Q_STATE, {"mid": model_id, "version": version})
        if row is None:
            return None
        stage, registered_by, approved_by, decided_at, last_seq = row
        return VersionState(
            model=model,
            version=version,
            stage=stage,
            registered_by=registered_by,
            approved_by=approved_by,
            decided_at=decided_at,
            last_seq=int(last_seq),
        )

    def _ledger_state(self, conn: Connection, model: str, version: int) -> VersionState | None:
        """The version's state replayed from its own ledger events: a decision never trusts the
        state table, which anyone with database access could edit. Events written under a
        model's former names count as the model's."""
        renames = self._renames(conn)
        former = [old for old, new in renames.items() if new == model]
        rebuilt = ReplayedState(names={old: model for old in former})
        rows = []
        for name in (*former, model):
            subject = f"models:/{name}/{version}"
            rows.extend(self.driver.all(conn, Q_SUBJECT_EVENTS, {"subject": subject}))
        for seq, time, actor, action, data in sorted(rows, key=lambda r: int(r[0])):
            rebuilt.apply(state_delta(action, actor, time, int(seq), json.loads(data)), time)
        return rebuilt.versions.get((model, version))

    def _renames(self, conn: Connection) -> dict[str, str]:
        """Every former model name -> the name that model has now, from the ledger."""
        out: dict[str, str] = {}
        for (data,) in self.driver.all(conn, Q_RENAMES):
            record = json.loads(data)
            old, new = str(record["model"]), str(record["new_name"])
            out = {k: (new if v == old else v) for k, v in out.items()}
            out[old] = new
        return out

    def renamed_models(self) -> dict[str, str]:
        with self._read() as conn:
            return self._renames(conn)

    def _recorded(self, conn: Connection, subject: str, action: str) -> bool:
        """Whether the ledger holds an ``action`` event about ``subject``."""
        c = t.ledger_events.c
        query = sa.select(c.seq).where(c.subject == subject, c.action == action).limit(1)
        return conn.execute(query).first() is not None

    def _ledger_policy(self, conn: Connection) -> Policy:
        """The policy as the ledger last recorded it (the settings row is only an index)."""
        row = self.driver.first(conn, Q_POLICY_EVENT)
        return Policy.from_dict(json.loads(row[0])["policy"]) if row else Policy()

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
        """Read state under the write lock, let ``decide`` choose the events, append and apply them.

        A decision that needs neither the version's stage nor the policy (an alias move)
        skips reading them.
        """
        with self._write() as conn:
            head = self._lock_head(conn)
            state = None
            archived = False
            aliases: dict[str, int] = {}
            model_ids: dict[str, int] = {}
            if model:
                # one statement for the model and, when asked, whether the version exists
                m = self.driver.first(conn, Q_MODEL_AND_VERSION, {"name": model, "version": version or 0})
                if m is None:
                    raise NotFound("model", model)
                model_id, version_id, archived = int(m[0]), m[1], m[2] is not None
                model = str(m[3])  # the stored spelling: subjects never depend on the caller's case
                model_ids[model] = model_id
                aliases = self._alias_map(conn, model_id)
                if version is not None:
                    if version_id is None:
                        raise NotFound("model version", f"models:/{model}/{version}")
                    if needs_state:
                        state = self._ledger_state(conn, model, version)
            ctx = GovContext(
                model=model,
                version=version,
                state=state,
                aliases=aliases,
                policy=self._ledger_policy(conn) if needs_policy else Policy(),
                actor=actor,
                archived=archived,
            )
            return self._append(conn, head, decide(ctx), actor=actor, signer=signer, model_ids=model_ids)

    def _append(
        self,
        conn: Connection,
        head: tuple[int, str],
        drafts: Sequence[EventDraft],
        *,
        actor: str,
        signer: Signer,
        model_ids: dict[str, int] | None = None,
    ) -> list[LedgerEvent]:
        """Chain, store and apply the drafted events, move the head and sign a checkpoint.

        ``model_ids`` holds model ids the caller already read (name -> id), saving a lookup.
        """
        if not drafts:
            return []
        builder = ChainBuilder(head=head[1], next_seq=head[0] + 1)
        time = now_text()
        # a server writing for a member: each event says for whom, and how they proved it
        via = signer.via if isinstance(signer, DelegatedSigner) else None
        events, texts, hashes = chain_drafts(builder, drafts, actor=actor, via=via, time=time)
        rows = [
            {
                "seq": e.seq,
                "time": e.time,
                "actor": e.actor,
                "action": e.action,
                "subject": e.subject,
                "data": text,
                "reason": e.reason,
                "hash": digest,
            }
            for e, text, digest in zip(events, texts, hashes, strict=True)
        ]
        self._authorize(conn, events, signer.key_id)
        run = self.driver
        run.executemany(conn, Q_EVENTS_INSERT, rows)
        ids = dict(model_ids or {})
        moves = _AliasMoves()
        for event in events:
            self._apply(conn, event, ids, moves)
        self._write_states(conn, moves)
        self._write_alias_moves(conn, moves)
        run.execute(conn, Q_HEAD_UPDATE, {"new_seq": builder.last_seq, "new_hash": builder.head_hex})
        cp = signer(builder.last_seq, builder.head, time)
        run.execute(conn, Q_CHECKPOINT_INSERT, cp.to_dict())
        return events

    def _authorize(self, conn: Connection, events: Sequence[LedgerEvent], kid: str) -> None:
        """Refuse the write unless key ``kid`` may sign every event (enrolled to its actor,
        not revoked, holding the role its action needs): the rule ``verify`` checks after."""
        roster = self._roster(conn).copy()
        legacy = self._legacy_kid(conn)
        # the policy matters only to events the policy itself decides (auto-approval)
        automated = any(e.actor.startswith(AUTOMATED_PREFIX) for e in events)
        policy = self._ledger_policy(conn) if automated else Policy()
        for event in events:
            problem = authorize_event(
                roster, event, kid=kid, legacy_kid=legacy, auto_approve=policy.auto_approve
            )
            if problem is not None:
                raise PermissionDenied(problem)
            roster.apply(event.action, event.seq, event.time, event.data)
            if event.action == "policy.changed":
                policy = Policy.from_dict(event.data["policy"])

    def _legacy_kid(self, conn: Connection) -> str | None:
        """The registry's first key (the root's, or an older release's registry key): once
        recorded it never changes, so it is read once."""
        if self._first_kid is None:
            keys = t.registry_keys.c
            row = conn.execute(sa.select(keys.key_id).order_by(keys.created_at)).first()
            self._first_kid = row[0] if row else None
        return self._first_kid

    def _roster(self, conn: Connection, *, member_last: int | None = None) -> Roster:
        """The roster as of now; rebuilt only when an enrolment event was appended since
        (``member_last``: the newest enrolment event's seq, when the caller read it already)."""
        if member_last is None:
            found = self.driver.first(conn, Q_MEMBER_LAST)
            member_last = found[0] if found else None
        last = member_last or 0
        cached = self._roster_cache
        if cached is not None and cached.last_seq == last:
            return cached
        roster = Roster()
        q = (
            sa.select(
                t.ledger_events.c.seq,
                t.ledger_events.c.time,
                t.ledger_events.c.action,
                t.ledger_events.c.data,
            )
            .where(t.ledger_events.c.action.in_([const(a) for a in MEMBER_ACTIONS]))
            .order_by(t.ledger_events.c.seq)
        )
        for seq, time, action, data in conn.execute(q):
            roster.apply(action, int(seq), time, json.loads(data))
        roster.last_seq = int(last)
        self._roster_cache = roster
        return roster

    def roster(self) -> Roster:
        with self._read() as conn:
            return self._roster(conn).copy()

    def _model_id(self, conn: Connection, name: str, cache: dict[str, int]) -> int:
        if name not in cache:
            cache[name] = int(self._model_row(conn, name).id)
        return cache[name]

    def _apply(
        self, conn: Connection, event: LedgerEvent, model_ids: dict[str, int], moves: _AliasMoves
    ) -> None:
        """Update the state tables from one event, by the same rule a rebuild uses.

        Alias moves are collected in ``moves`` and written for the whole batch at once.
        """
        eff = state_delta(event.action, event.actor, event.time, event.seq, event.data)
        if eff.fields and eff.model is not None and eff.version is not None:
            mid = self._model_id(conn, eff.model, model_ids)
            key = (mid, eff.version)
            values, new = moves.states.get(key, ({}, False))
            # a version's first event inserts its row; later ones in the batch update the values
            values = dict(eff.fields) if eff.new_version else {**values, **eff.fields}
            moves.states[key] = (values, new or eff.new_version)
        if eff.model is not None and eff.aliases:
            mid = self._model_id(conn, eff.model, model_ids)
            for i, (alias, version) in enumerate(sorted(eff.aliases.items())):
                moves.aliases[(mid, alias)] = version
                moves.history.append(
                    {
                        # several alias moves in one event keep their own row, in order
                        "seq": event.seq * ALIAS_SLOTS + i,
                        "model_id": mid,
                        "alias": alias,
                        "version": version,
                        "time": event.time,
                        "actor": event.actor,
                        "action": event.action,
                    }
                )
        if eff.policy is not None:
            value = json.dumps(eff.policy, sort_keys=True)
            self.driver.execute(conn, self._upsert("setting"), {"key": "policy", "value": value})
        if eff.model is not None and eff.archived is not None:
            mid = self._model_id(conn, eff.model, model_ids)
            when = event.time if eff.archived else None
            conn.execute(t.models.update().where(t.models.c.id == mid).values(archived_at=when))
        if eff.model is not None and eff.version is not None and eff.tags is not None:
            self._write_version_tags(conn, self._model_id(conn, eff.model, model_ids), eff.version, eff.tags)
        if eff.model is not None and eff.renamed_to is not None:
            self._rename_model(conn, eff.model, eff.renamed_to, model_ids)

    def _write_version_tags(
        self, conn: Connection, mid: int, version: int, tags: Mapping[str, str | None]
    ) -> None:
        v = t.versions.c
        vid = conn.execute(sa.select(v.id).where(v.model_id == mid, v.version == version)).scalar()
        if vid is None:
            raise NotFound("model version", f"version {version} of model id {mid}")
        vt = t.version_tags.c
        for key, value in tags.items():
            conn.execute(t.version_tags.delete().where(vt.version_id == vid, vt.key == key))
            if value is not None:
                conn.execute(t.version_tags.insert().values(version_id=vid, key=key, value=value))

    def _rename_model(self, conn: Connection, old: str, new: str, model_ids: dict[str, int]) -> None:
        """Give the model its new name; refused when the name is taken now or was ever a model's
        name (former names keep resolving, so they are never reused)."""
        mid = self._model_id(conn, old, model_ids)
        taken = conn.execute(sa.select(t.models.c.id).where(named(new))).scalar()
        if taken is not None and int(taken) != mid:  # a change of case only is the same model
            raise AlreadyExists("model", new)
        former = {fold_name(n) for n, _current in self._renames(conn).items() if n != old}
        if fold_name(new) in former:
            raise Conflict(f"{new} is a former name of a model (it still resolves to it): choose another")
        conn.execute(t.models.update().where(t.models.c.id == mid).values(name=new))
        model_ids.pop(old, None)
        model_ids[new] = mid

    def _write_states(self, conn: Connection, moves: _AliasMoves) -> None:
        for (mid, version), (values, new) in moves.states.items():
            if new:
                self.driver.execute(conn, Q_STATE_INSERT, {"model_id": mid, "version": version, **values})
            else:
                stmt = self._state_update(tuple(sorted(values)))
                self.driver.execute(conn, stmt, {"mid_": mid, "version_": version, **values})

    def _state_update(self, columns: tuple[str, ...]) -> Any:
        """UPDATE version_state SET <columns> for one version, built once per column set."""
        stmt = self._state_updates.get(columns)
        if stmt is None:
            stmt = self._state_updates[columns] = Q_STATE_UPDATE.values({c: bp(c) for c in columns})
        return stmt

    def _write_alias_moves(self, conn: Connection, moves: _AliasMoves) -> None:
        if not moves.history:
            return
        updated = now()
        gone = [{"m": mid, "a": alias} for (mid, alias), v in moves.aliases.items() if v is None]
        if gone:
            self.driver.executemany(conn, Q_ALIAS_DELETE, gone)
        kept = [
            {"model_id": mid, "alias": alias, "version": v, "updated_at": updated}
            for (mid, alias), v in moves.aliases.items()
            if v is not None
        ]
        if kept:
            self.driver.executemany(conn, self._upsert("alias"), kept)
        self.driver.executemany(conn, Q_ALIAS_HISTORY_INSERT, moves.history)

    @staticmethod
    def _event(r: Any) -> LedgerEvent:
        return LedgerEvent(
            seq=int(r.seq),
            time=r.time,
            actor=r.actor,
            action=r.action,
            subject=r.subject,
            data=json.loads(r.data),
            reason=r.reason,
        )

    def iter_events(self, *, after: int = 0, batch: int = 5000) -> Iterator[tuple[LedgerEvent, str]]:
        """Every ledger event with its stored hash, in seq order, fetched in pages."""
        last = after
        c = t.ledger_events.c
        while True:
            q = sa.select(t.ledger_events).where(c.seq > last).order_by(c.seq).limit(batch)
            with self._read() as conn:
                rows = conn.execute(q).all()
            if not rows:
                return
            for r in rows:
                yield self._event(r), r.hash
            last = int(rows[-1].seq)

    def iter_event_texts(
        self, *, after: int = 0, batch: int = 20000
    ) -> Iterator[tuple[LedgerEvent, str, str]]:
        """Every ledger event after seq ``after`` with its stored hash and the stored text of
        its data, in seq order: plain rows in large pages, for a pass over the whole ledger
        (``verify``), where per-row overhead is what a large ledger pays for."""
        last = after
        while True:
            with self._read() as conn:
                rows = self.driver.all(conn, Q_EVENT_ROWS, {"after": last, "limit": batch})
            if not rows:
                return
            for seq, time, actor, action, subject, data, reason, digest in rows:
                event = LedgerEvent(
                    seq=int(seq),
                    time=time,
                    actor=actor,
                    action=action,
                    subject=subject,
                    data=json.loads(data),
                    reason=reason,
                )
                yield event, digest, data
            if len(rows) < batch:
                return
            last = int(rows[-1][0])

    @staticmethod
    def _checkpoint(r: Any) -> Checkpoint:
        return Checkpoint(
            seq=int(r.seq), head_hash=r.head_hash, time=r.time, key_id=r.key_id, signature=r.signature
        )

    def checkpoints(self, *, after: int | None = None) -> list[Checkpoint]:
        k = t.ledger_checkpoints.c
        q = sa.select(t.ledger_checkpoints).order_by(k.seq)
        if after is not None:
            q = q.where(k.seq > after)  # the primary key: a range read, not a scan
        with self._read() as conn:
            rows = conn.execute(q).all()
        return [self._checkpoint(r) for r in rows]

    def count_events(self, *, upto: int) -> int:
        c = t.ledger_events.c
        with self._read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).where(c.seq <= upto)).scalar() or 0)

    def verify_record(self, key_id: str) -> str | None:
        s = t.settings.c
        with self._read() as conn:
            row = conn.execute(sa.select(s.value).where(s.key == _VERIFY_RECORD + key_id)).first()
        return None if row is None else str(row[0])

    def save_verify_record(self, key_id: str, text: str) -> None:
        # Not a ledger event: a verifier may hold no role and the database may be read-only
        # to it. The record is signed by the verifier's key, which the next run checks.
        with self._write() as conn:
            self.driver.execute(
                conn, self._upsert("setting"), {"key": _VERIFY_RECORD + key_id, "value": text}
            )

    def public_key(self) -> tuple[str, bytes] | None:
        with self._read() as conn:
            row = conn.execute(
                sa.select(t.registry_keys).order_by(t.registry_keys.c.created_at).limit(1)
            ).first()
        return (row.key_id, row.public_pem.encode()) if row else None

    def add_public_key(
        self, kid: str, public_pem: bytes, decide: Decide, *, actor: str, signer: Signer
    ) -> bool:
        """Record the registry's public key and append ``decide``'s events in one governed write;
        False, writing nothing, when a key is recorded already (a concurrent first use won)."""
        with self._write() as conn:
            head = self._lock_head(conn)
            if conn.execute(sa.select(t.registry_keys.c.key_id)).first() is not None:
                return False
            conn.execute(
                t.registry_keys.insert().values(
                    key_id=kid, public_pem=public_pem.decode(), created_at=now_text()
                )
            )
            ctx = GovContext(
                model="", version=None, state=None, aliases={}, policy=self._policy(conn), actor=actor
            )
            self._append(conn, head, decide(ctx), actor=actor, signer=signer)
            return True

    def version_state(self, model: str, version: int) -> VersionState:
        with self._read() as conn:
            m = self._model_row(conn, model)
            state = self._state(conn, m.id, m.name, version)
        if state is None:
            raise NotFound("model version", f"models:/{m.name}/{version}")
        return state

    def version_states(self, model: str, versions: Sequence[int]) -> dict[int, VersionState]:
        """The state of several versions of one model, in one query (for listings)."""
        with self._read() as conn:
            rows = conn.execute(Q_VERSION_STATES, {"model": model, "versions": list(versions)}).all()
            if not rows:
                self._model_row(conn, model)  # an unknown model is NotFound, not "no states"
        return {
            int(r[0]): VersionState(
                model=r[6],  # the stored spelling
                version=int(r[0]),
                stage=r[1],
                registered_by=r[2],
                approved_by=r[3],
                decided_at=r[4],
                last_seq=int(r[5]),
            )
            for r in rows
        }

    def policy(self) -> Policy:
        with self._read() as conn:
            return self._ledger_policy(conn)

    def ledger_head(self) -> tuple[int, str]:
        with self._read() as conn:
            row = conn.execute(
                sa.select(t.ledger_head.c.seq, t.ledger_head.c.hash).where(t.ledger_head.c.id == 1)
            ).first()
        if row is None:
            raise IntegrityError("ledger head", "the head row is missing")
        return int(row.seq), str(row.hash)

    def segment_for(self, subject: str, action: str) -> ChainSegment | None:
        c = t.ledger_events.c
        with self._read(snapshot=True) as conn:
            first = conn.execute(
                sa.select(c.seq).where(c.subject == subject, c.action == action).order_by(c.seq).limit(1)
            ).first()
            if first is None:
                return None
            return self._segment(conn, int(first.seq))

    def member_segments(self) -> list[ChainSegment]:
        """A chain segment for each write holding enrolment events, in ledger order."""
        c = t.ledger_events.c
        out: list[ChainSegment] = []
        with self._read(snapshot=True) as conn:
            seqs = conn.execute(
                sa.select(c.seq).where(c.action.in_([const(a) for a in MEMBER_ACTIONS])).order_by(c.seq)
            ).scalars()
            for seq in list(seqs):
                if out and out[-1].checkpoint.seq >= seq:
                    continue  # in the write the previous segment already covers
                out.append(self._segment(conn, int(seq)))
        return out

    def _segment(self, conn: Connection, seq: int) -> ChainSegment:
        """Event ``seq`` and the events after it up to the checkpoint that signs them."""
        c, k = t.ledger_events.c, t.ledger_checkpoints.c
        cp_row = conn.execute(
            sa.select(t.ledger_checkpoints).where(k.seq >= seq).order_by(k.seq).limit(1)
        ).first()
        if cp_row is None:
            raise IntegrityError(f"ledger event {seq}", "no signed checkpoint covers it (truncated?)")
        rows = conn.execute(
            sa.select(t.ledger_events).where(c.seq >= seq, c.seq <= cp_row.seq).order_by(c.seq)
        ).all()
        before = conn.execute(sa.select(c.hash).where(c.seq == seq - 1)).scalar() if seq > 1 else None
        return ChainSegment(
            previous_hash=before or GENESIS.hex(),
            events=tuple((self._event(r), r.hash) for r in rows),
            checkpoint=self._checkpoint(cp_row),
        )

    def alias_at(self, model: str, alias: str, time: str) -> int | None:
        with self._read() as conn:
            m = self._model_row(conn, model)
            row = self.driver.first(conn, Q_ALIAS_AT, {"mid": m.id, "alias": alias, "time": time})
        return None if row is None else row[0]

    def aliases_at(self, model: str, version: int, time: str) -> list[str]:
        with self._read() as conn:
            m = self._model_row(conn, model)
            rows = self.driver.all(conn, Q_ALIASES_AT, {"mid": m.id, "version": version, "time": time})
        return sorted(str(r[0]) for r in rows)

    def alias_history(self, model: str, alias: str | None) -> list[dict[str, Any]]:
        h = t.alias_history.c
        with self._read() as conn:
            m = self._model_row(conn, model)
            q = sa.select(t.alias_history).where(h.model_id == m.id)
            if alias is not None:
                q = q.where(h.alias == alias)
            rows = conn.execute(q.order_by(h.seq)).all()
        return [_alias_change(r, m.name) for r in rows]

    def current_alias_moves(self, model: str) -> list[dict[str, Any]]:
        with self._read() as conn:
            m = self._model_row(conn, model)
            seqs = [seq for (seq,) in conn.execute(Q_ALIAS_LATEST_SEQS, {"mid": m.id}) if seq is not None]
            rows = conn.execute(Q_ALIAS_MOVES, {"seqs": seqs}).all() if seqs else []
        return [_alias_change(r, m.name) for r in rows]

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
        c = t.ledger_events.c
        conds = [c.subject == x for x in subjects]
        # a range of the subject index each (ix_ledger_events_subject_c on PostgreSQL), so a
        # model's history reads that model's events, not the ledger's
        conds.extend(prefix_range(c.subject, p) for p in subject_prefixes)
        if conds:
            # seq + 0: no index has that order, so the planner cannot choose to walk the whole
            # ledger in seq order, filtering subjects, to spare the sort of the few it wants
            order = c.seq + 0
            q = sa.select(t.ledger_events).where(sa.or_(*conds), order > after).order_by(order).limit(limit)
        else:
            q = sa.select(t.ledger_events).where(c.seq > after).order_by(c.seq).limit(limit)
        if actor:
            q = q.where(c.actor == actor)
        if action:
            if "*" in action:
                pattern = "%".join(like_escape(part) for part in action.split("*"))
                q = q.where(c.action.like(pattern, escape=ESC))
            else:
                q = q.where(c.action == action)
        if since:
            q = q.where(c.time >= since)
        if until:
            q = q.where(c.time <= until)
        with self._read() as conn:
            rows = conn.execute(q).all()
        return [(self._event(r), r.hash) for r in rows]

    def current_state(self) -> ReplayedState:
        """The state tables as they are (to compare with a replay of the ledger)."""
        out = ReplayedState()
        vs, m, a = t.version_state.c, t.models.c, t.aliases.c
        # joined, and in one snapshot where the database has them: a model created between two
        # reads must not leave a state row without its name
        with self._read(snapshot=True) as conn:
            for r in conn.execute(sa.select(t.version_state, m.name).join(t.models, m.id == vs.model_id)):
                out.versions[(r.name, r.version)] = VersionState(
                    model=r.name,
                    version=r.version,
                    stage=r.stage,
                    registered_by=r.registered_by,
                    approved_by=r.approved_by,
                    decided_at=r.decided_at,
                    last_seq=r.last_seq,
                )
            for name, alias, version in conn.execute(
                sa.select(m.name, a.alias, a.version).join(t.models, m.id == a.model_id)
            ):
                out.aliases[(name, alias)] = version
            out.policy = self._policy(conn)
            for name, when in conn.execute(
                sa.select(m.name, m.archived_at).where(m.archived_at.is_not(None))
            ):
                out.archived[name] = when
            vt, v = t.version_tags.c, t.versions.c
            q = (
                sa.select(m.name, v.version, vt.key, vt.value)
                .select_from(t.version_tags)
                .join(t.versions, v.id == vt.version_id)
                .join(t.models, m.id == v.model_id)
            )
            for name, version, key, value in conn.execute(q):
                out.tags.setdefault((name, version), {})[key] = value
        return out

    def rewrite_state(self, state: ReplayedState) -> None:
        """Replace the state tables with ``state`` (rebuilt from the ledger)."""
        with self._write() as conn:
            self._lock_head(conn)
            ids = {r.name: r.id for r in conn.execute(sa.select(t.models.c.id, t.models.c.name))}
            conn.execute(t.version_state.delete())
            conn.execute(t.aliases.delete())
            rows = [
                {
                    "model_id": ids[s.model],
                    "version": s.version,
                    "stage": s.stage,
                    "registered_by": s.registered_by,
                    "approved_by": s.approved_by,
                    "decided_at": s.decided_at,
                    "last_seq": s.last_seq,
                }
                for s in state.versions.values()
                if s.model in ids
            ]
            if rows:
                conn.execute(t.version_state.insert(), rows)
            updated = now()
            alias_rows = [
                {"model_id": ids[m], "alias": a, "version": v, "updated_at": updated}
                for (m, a), v in state.aliases.items()
                if m in ids
            ]
            if alias_rows:
                conn.execute(t.aliases.insert(), alias_rows)
            value = json.dumps(state.policy.to_dict(), sort_keys=True)
            conn.execute(t.settings.delete().where(t.settings.c.key == "policy"))
            conn.execute(t.settings.insert().values(key="policy", value=value))
            conn.execute(t.models.update().values(archived_at=None))
            for name, when in state.archived.items():
                if name in ids:
                    conn.execute(t.models.update().where(t.models.c.id == ids[name]).values(archived_at=when))
            conn.execute(t.version_tags.delete())
            v = t.versions.c
            keys = {
                (r.model_id, r.version): r.id for r in conn.execute(sa.select(v.id, v.model_id, v.version))
            }
            tag_rows = [
                {"version_id": keys[(ids[name], version)], "key": key, "value": value}
                for (name, version), tags in state.tags.items()
                if name in ids and (ids[name], version) in keys
                for key, value in tags.items()
            ]
            if tag_rows:
                conn.execute(t.version_tags.insert(), tag_rows)


def _alias_change(r: Any, model: str) -> dict[str, Any]:
    """A row of ``alias_history`` as ``alias_history`` returns it (the ledger's seq)."""
    return {
        "seq": r.seq // ALIAS_SLOTS,
        "model": model,
        "alias": r.alias,
        "version": r.version,
        "time": r.time,
        "actor": r.actor,
        "action": r.action,
    }
