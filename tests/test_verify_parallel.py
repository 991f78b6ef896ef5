"""A full verify with worker processes (``jobs``) reports exactly what the one-process verify
reports: the same problems in the same order, the same counts, on registries tampered with
through a real attacker's edits (tests/helpers.py ``ledger_editor``), SQLite, PostgreSQL and DynamoDB."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.helpers import ledger_editor

from modelledger import Registry
from modelledger._domain import VerifyReport
from modelledger._ledger import BAD_CHECKPOINT_SIGNATURE, sign_checkpoint
from modelledger._verify_pool import PooledSignatures, VerifyPool
from modelledger.errors import InvalidInput
from modelledger.stores.artifacts import ArtifactStore


def _summary(report: VerifyReport) -> tuple[Any, ...]:
    return (
        [p.to_dict() for p in report.problems],
        report.events_checked,
        report.checkpoints_checked,
        report.versions_checked,
        report.files_checked,
        [(p.kind, p.path) for p in report.unrecorded],
        report.covered,
    )


def _grow(registry: Registry, tmp_path: Path, n: int = 4) -> None:
    for i in range(n):
        src = tmp_path / f"src-{i}"
        src.mkdir()
        (src / "weights.bin").write_bytes(bytes([i]) * 4096)
        (src / "notes.txt").write_text(f"version {i}\n")
        registry.register("m", src, capture=False, load_check=False)
        registry.set_alias("m", "champion", i + 1)


def _checkpoint_seqs(db_url: str) -> list[int]:
    with ledger_editor(db_url) as editor:
        return sorted(int(c["seq"]) for c in editor.checkpoints())


def _forge(db_url: str, seq: int, **changes: str) -> None:
    """Overwrite fields of the checkpoint at ``seq`` (a signature of another checkpoint, a
    head hash), as someone with database access but no key can."""
    with ledger_editor(db_url) as editor:
        editor.update_checkpoint(seq, **changes)


def _signature_at(db_url: str, seq: int) -> str:
    with ledger_editor(db_url) as editor:
        return str(next(c["signature"] for c in editor.checkpoints() if c["seq"] == seq))


def _forged_signatures(db_url: str) -> str:
    """Two checkpoints in the middle carry another checkpoint's signature: the first one is
    the problem, with the counts of the walk stopped there."""
    cps = _checkpoint_seqs(db_url)
    _forge(db_url, cps[4], signature=_signature_at(db_url, cps[1]))
    _forge(db_url, cps[7], signature=_signature_at(db_url, cps[2]))
    return f"ledger event {cps[4]}"


def _forged_and_rewritten(db_url: str) -> str:
    """A checkpoint whose head hash was changed and whose signature is not its own: the
    signature comes first, as when checked in turn."""
    cps = _checkpoint_seqs(db_url)
    _forge(db_url, cps[5], signature=_signature_at(db_url, cps[1]), head_hash="ab" * 32)
    return f"ledger event {cps[5]}"


def _edited_before_a_forgery(db_url: str) -> str:
    """An event edited before a forged checkpoint: the walk stops at the event."""
    cps = _checkpoint_seqs(db_url)
    _forge(db_url, cps[8], signature=_signature_at(db_url, cps[1]))
    edited = cps[3] - 1
    with ledger_editor(db_url) as editor:
        editor.update_event(edited, actor="mallory")
    return f"ledger event {edited}"


def _files_changed(db_url: str, art: Path) -> str:
    """Files changed, removed and planted in several version folders."""
    folders = sorted(p for p in (art / "models" / "m").iterdir() if p.is_dir())
    (folders[0] / "artifacts" / "weights.bin").write_bytes(b"changed")
    (folders[1] / "artifacts" / "notes.txt").unlink()
    (folders[2] / "artifacts" / "extra.bin").write_bytes(b"planted")
    (folders[3] / "manifest.json").write_text("{}")
    return f"models/m/{folders[0].name}/artifacts/weights.bin"


TAMPERS: dict[str, Callable[..., str]] = {
    "forged signatures": _forged_signatures,
    "forged and rewritten": _forged_and_rewritten,
    "edited before a forgery": _edited_before_a_forgery,
}


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_a_tampered_ledger_is_reported_the_same_with_worker_processes(
    registry: Registry, db_url: str, tmp_path: Path, tamper: str
) -> None:
    _grow(registry, tmp_path)
    where = TAMPERS[tamper](db_url)
    serial = registry.verify(record=False, jobs=1)
    pooled = registry.verify(record=False, jobs=2)
    assert serial.problems and serial.problems[0].path == where
    assert _summary(pooled) == _summary(serial)
    assert not [n for n in pooled.notes if "worker" in n]  # the workers did the work, not this process


def test_changed_files_are_reported_the_same_with_worker_processes(
    registry: Registry, db_url: str, tmp_path: Path
) -> None:
    _grow(registry, tmp_path)
    clean = registry.verify(record=False, jobs=2)
    assert clean.ok, [str(p) for p in clean.problems]
    assert _summary(clean) == _summary(registry.verify(record=False, jobs=1))
    where = _files_changed(db_url, tmp_path / "artifacts")
    serial = registry.verify(record=False, jobs=1)
    pooled = registry.verify(record=False, jobs=2)
    kinds = {p.kind for p in serial.problems}
    assert {"mismatch", "missing", "orphan"} <= kinds and where in {p.path for p in serial.problems}
    assert _summary(pooled) == _summary(serial)
    assert not [n for n in pooled.notes if "worker" in n]  # the workers did the work, not this process


def test_the_pool_checks_signatures_in_its_own_processes(tmp_path: Path) -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    good = [
        sign_checkpoint(key, seq, seq.to_bytes(32, "big"), "2026-01-01T00:00:00Z") for seq in range(1, 2501)
    ]
    forged = sign_checkpoint(other, 1700, bytes(32), "2026-01-01T00:00:00Z")
    cps = [*good[:1700], forged, *good[1700:]]
    with VerifyPool(2, ArtifactStore(tmp_path.as_uri())) as pool:
        checks = PooledSignatures(pool)
        for i, cp in enumerate(cps):
            checks.submit(i, key.public_key(), cp)
        assert checks.first_failure() == (1700, BAD_CHECKPOINT_SIGNATURE)
        assert pool.failures == 0  # checked by the children, not redone here


def test_jobs_must_be_positive(registry: Registry) -> None:
    with pytest.raises(InvalidInput):
        registry.verify(record=False, jobs=0)


@pytest.mark.parametrize("executable", ["/bin/false", "/nonexistent/python"])
def test_workers_that_fail_or_cannot_start_leave_the_work_to_this_process(
    registry: Registry, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, executable: str
) -> None:
    _grow(registry, tmp_path, 2)
    where = _files_changed_one(tmp_path / "artifacts")
    serial = registry.verify(record=False, jobs=1)
    monkeypatch.setattr(sys, "executable", executable)  # a child that exits at once, or none
    pooled = registry.verify(record=False, jobs=2)
    assert where in {p.path for p in serial.problems}
    assert _summary(pooled) == _summary(serial)
    assert [n for n in pooled.notes if "worker process" in n]  # and the report says so


def _files_changed_one(art: Path) -> str:
    folder = sorted(p for p in (art / "models" / "m").iterdir() if p.is_dir())[0]
    (folder / "artifacts" / "weights.bin").write_bytes(b"changed")
    return f"models/m/{folder.name}/artifacts/weights.bin"
