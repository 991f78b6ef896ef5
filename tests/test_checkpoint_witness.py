"""The checkpoint density policy: copies of the newest checkpoint kept outside the database
(``Registry.witness_checkpoints``) every N events and at the end of each session, and the gap
they leave at the tail exactly as docs/verify.md states it: a cut inside the events after the
newest copy goes unseen by ``verify --trusted-checkpoint FOLDER``; a cut past it is
``truncated``. Real SQLite, PostgreSQL and DynamoDB, a real attacker's edits."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.helpers import ledger_editor

from modelledger import Registry
from modelledger._witness import witnessed_checkpoint
from modelledger.errors import InvalidInput


def _cut_after(db_url: str, seq: int) -> None:
    """Delete every event after ``seq`` with its checkpoints and set the head back to
    ``seq``, as someone with database access can."""
    with ledger_editor(db_url) as editor:
        digest = next(e["hash"] for e in editor.events() if e["seq"] == seq)
        editor.cut_after(seq)
        editor.set_head(seq, digest)


def _truncated(registry: Registry, folder: Path) -> list[str]:
    report = registry.verify(record=False, jobs=1, trusted_checkpoint=folder)
    return [p.path for p in report.problems if p.kind == "truncated"]


def test_a_cut_inside_the_gap_goes_unseen_and_one_past_the_newest_copy_is_named(
    db_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "witness"
    registry = Registry.open(db_url, artifacts=str(tmp_path / "artifacts"), actor="alice@example.com")
    witness = registry.witness_checkpoints(folder, every_events=5, every_seconds=None)
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.txt").write_text("v1\n")
    registry.register("m", src, capture=False, load_check=False)
    for i in range(12):
        registry.set_alias("m", f"a{i}", 1)
    head = registry.ledger_head()[0]
    kept = witnessed_checkpoint(folder)
    assert kept is not None and kept.seq == witness.last_seq()
    # the policy: a copy at the start of a write once 5 events or more are past the last one,
    # so fewer than 5 events plus the last write (1 event here) are not yet copied
    assert 0 < head - kept.seq <= 5
    assert len(list(folder.iterdir())) >= 2
    assert registry.verify(record=False, jobs=1, trusted_checkpoint=folder).ok

    # a cut that keeps the newest copy's event: inside the gap, unseen
    _cut_after(db_url, kept.seq)
    assert _truncated(registry, folder) == []
    # one event more: past the newest copy, named
    _cut_after(db_url, kept.seq - 1)
    assert _truncated(registry, folder) == [f"ledger event {kept.seq}"]
    registry.close()


def test_the_end_of_a_session_is_always_kept(db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "witness"
    registry = Registry.open(db_url, artifacts=str(tmp_path / "artifacts"), actor="alice@example.com")
    registry.witness_checkpoints(folder, every_events=None, every_seconds=None)
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.txt").write_text("v1\n")
    registry.register("m", src, capture=False, load_check=False)
    registry.set_alias("m", "champion", 1)
    head = registry.ledger_head()[0]
    registry.close()
    kept = witnessed_checkpoint(folder)
    assert kept is not None and kept.seq == head
    # after the session, no gap: cutting its last write is named
    reopened = Registry.open(db_url, artifacts=str(tmp_path / "artifacts"), actor="alice@example.com")
    _cut_after(db_url, head - 1)
    assert _truncated(reopened, folder) == [f"ledger event {head}"]
    reopened.close()


def test_a_policy_must_make_sense(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        registry.witness_checkpoints(tmp_path, every_events=0)
    with pytest.raises(InvalidInput):
        registry.verify(record=False, trusted_checkpoint=tmp_path)  # a folder no witness kept
