"""The ledger pass of ``verify``: an event hashed over its stored data text (and again,
re-encoded, when that text is not what was hashed), and the unsigned tail: events after the
last signed checkpoint, which no write leaves, named as a problem. Real SQLite and
PostgreSQL and DynamoDB, a real attacker's edits (tests/helpers.py ``ledger_editor``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.helpers import ledger_editor

from modelledger import Registry
from modelledger._canonical import canonicalize_str
from modelledger._ledger import LedgerEvent, event_bytes


def _folder(tmp_path: Path, i: int) -> Path:
    src = tmp_path / f"src-{i}"
    src.mkdir()
    (src / "notes.txt").write_text(f"version {i}\n")
    return src


def test_a_data_text_stored_otherwise_still_verifies(registry: Registry, db_url: str, tmp_path: Path) -> None:
    registry.register("m", _folder(tmp_path, 0), capture=False, load_check=False)
    # The same data written as another encoder would (spaces, another key order): the text is
    # not the bytes the chain hashed, but the value is, so the chain holds.
    with ledger_editor(db_url) as editor:
        seq, data = next(
            (e["seq"], e["data"]) for e in editor.events() if e["action"] == "version.registered"
        )
        record = json.loads(data)
        loose = json.dumps(dict(reversed(list(record.items()))), indent=1)
        assert loose != data and json.loads(loose) == record
        editor.update_event(seq, data=loose)
    report = registry.verify(record=False)
    assert report.ok, [str(p) for p in report.problems]
    # a change of value in that text is still an edit
    with ledger_editor(db_url) as editor:
        record["digest"] = "sha256:" + "0" * 64
        editor.update_event(seq, data=json.dumps(record))
    problems = registry.verify(record=False).problems
    assert (problems[0].kind, problems[0].path) == ("edited_event", f"ledger event {seq}")


def _append_unsigned(db_url: str, *, actor: str) -> int:
    """Append an event at the tail with its correct hash and move the head row to it, as
    someone with database access but no key can: no checkpoint signs it."""
    with ledger_editor(db_url) as editor:
        seq, prev = editor.head()
        event = LedgerEvent(
            seq=int(seq) + 1,
            time="2026-01-01T00:00:00.000000Z",
            actor=actor,
            action="alias.set",
            subject="models:/m",
            data={"model": "m", "alias": "champion", "version": 1, "aliases": {"champion": 1}},
        )
        digest = hashlib.sha256(bytes.fromhex(prev) + event_bytes(event)).hexdigest()
        editor.insert_event(
            {
                "seq": event.seq,
                "time": event.time,
                "actor": event.actor,
                "action": event.action,
                "subject": event.subject,
                "data": canonicalize_str(event.data),
                "hash": digest,
            }
        )
        editor.set_head(event.seq, digest)
    return event.seq


def test_an_event_no_checkpoint_signs_is_named(registry: Registry, db_url: str, tmp_path: Path) -> None:
    registry.register("m", _folder(tmp_path, 0), capture=False, load_check=False)
    full = registry.verify()
    assert full.ok and full.recorded is not None
    signed = registry.ledger_head()[0]
    seq = _append_unsigned(db_url, actor="alice@example.com")
    for report in (registry.verify(record=False), registry.verify(since_last=True, record=False)):
        tail = [p for p in report.problems if p.kind == "unsigned_tail"]
        assert [p.path for p in tail] == [f"ledger event {seq}"], report.mode
        assert f"1 event(s) after the last signed checkpoint (seq {signed})" in tail[0].detail


def test_a_deleted_last_checkpoint_leaves_its_write_unsigned(
    registry: Registry, db_url: str, tmp_path: Path
) -> None:
    registry.register("m", _folder(tmp_path, 0), capture=False, load_check=False)
    before = registry.ledger_head()[0]
    registry.register("m", _folder(tmp_path, 1), capture=False, load_check=False)
    head = registry.ledger_head()[0]
    with ledger_editor(db_url) as editor:
        editor.delete_checkpoint(head)
    problems = registry.verify(record=False).problems
    tail = [p for p in problems if p.kind == "unsigned_tail"]
    assert [p.path for p in tail] == [f"ledger events {before + 1}..{head}"]
    assert f"{head - before} event(s)" in tail[0].detail
