"""``verify`` records what it proved; ``verify(since_last=True)`` checks only what came after,
plus the continuity with that record. Real SQLite, PostgreSQL and DynamoDB, real files, a real
attacker's edits (tests/helpers.py ``ledger_editor``)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
from dataclasses import replace
from pathlib import Path

from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.helpers import Doubler, ledger_editor

from modelledger import ModelVersion, Registry
from modelledger._canonical import canonicalize_str
from modelledger._keys import key_id, sign
from modelledger._verify import record_payload
from modelledger.cli import main


def _register(registry: Registry, tmp_path: Path, name: str, i: int) -> ModelVersion:
    src = tmp_path / f"src-{name}-{i}"
    src.mkdir()
    (src / "model.pkl").write_bytes(pickle.dumps(Doubler()))
    (src / "notes.txt").write_text(f"version {i}\n")
    return registry.register(name, src, manifest={"flavor": "python", "entry": "model.pkl"}, capture=False)


def _flip(path: Path) -> None:
    os.chmod(path, 0o644)  # stored read-only; the attacker does not care
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    path.write_bytes(bytes(data))


def _record_key(registry: Registry) -> str:
    return "verify:" + str(registry.whoami()["key_id"])


def test_since_last_checks_only_what_is_new(registry: Registry, tmp_path: Path) -> None:
    for i in range(3):
        _register(registry, tmp_path, "old", i)
    full = registry.verify()
    assert full.ok, [str(p) for p in full.problems]
    assert full.mode == "full" and full.recorded is not None and full.recorded.full
    assert full.versions_checked == 3 and full.covered.after_seq == 0
    first = full.recorded
    assert first.seq == full.covered.to_seq  # every write ends with a checkpoint

    new = [_register(registry, tmp_path, "new", i) for i in range(2)]
    report = registry.verify(since_last=True)
    assert report.ok, [str(p) for p in report.problems]
    assert report.mode == "since_last" and report.since == first
    assert report.versions_checked == 2  # only the two new versions
    assert report.covered.after_version_key == first.version_key
    assert report.covered.to_version_key == max(v.key for v in new)
    assert report.covered.after_seq == first.seq
    assert report.events_checked == report.covered.to_seq - first.seq > 0
    assert report.recorded is not None and not report.recorded.full
    assert report.recorded.full_time == first.full_time  # when the last full verify ran
    assert report.recorded.seq == report.covered.to_seq

    # nothing new: nothing to check, still a clean, recorded run
    idle = registry.verify(since_last=True)
    assert idle.ok and idle.versions_checked == 0 and idle.events_checked == 0
    assert idle.since == report.recorded


def test_since_last_without_a_record_is_a_full_verify(registry: Registry, tmp_path: Path) -> None:
    _register(registry, tmp_path, "m", 0)
    report = registry.verify(since_last=True, record=False)
    assert report.ok and report.mode == "full" and report.versions_checked == 1
    assert report.recorded is None and report.since is None
    assert any("ran a full verify" in note for note in report.notes)


def test_a_tampered_new_file_is_caught(registry: Registry, tmp_path: Path) -> None:
    _register(registry, tmp_path, "m", 0)
    assert registry.verify().ok
    v = _register(registry, tmp_path, "m", 1)
    _flip(tmp_path / "artifacts" / v.folder / "artifacts" / "notes.txt")
    report = registry.verify(since_last=True)
    assert report.mode == "since_last" and not report.ok
    assert [(p.kind, p.path) for p in report.problems] == [("mismatch", f"{v.folder}/artifacts/notes.txt")]
    assert report.recorded is None  # a run with problems proves nothing to start from
    # the failed run left the earlier record in place: the next run still starts there
    again = registry.verify(since_last=True)
    assert again.since == report.since and not again.ok


def test_an_old_file_is_re_hashed_only_by_a_full_verify(registry: Registry, tmp_path: Path) -> None:
    old = _register(registry, tmp_path, "m", 0)
    assert registry.verify().ok
    _flip(tmp_path / "artifacts" / old.folder / "artifacts" / "notes.txt")
    assert registry.verify(since_last=True).ok  # documented: old bytes are not re-read
    full = registry.verify()
    assert [p.kind for p in full.problems] == ["mismatch"]


def test_a_rewritten_old_ledger_breaks_continuity(registry: Registry, db_url: str, tmp_path: Path) -> None:
    v = _register(registry, tmp_path, "m", 0)
    assert registry.verify().ok
    _register(registry, tmp_path, "m", 1)
    # The attacker edits the old registration event and recomputes every hash after it (the
    # chain then links again) and the head row; checkpoints cannot be re-signed without a key.
    with ledger_editor(db_url) as editor:
        rows = [
            (e["seq"], e["time"], e["actor"], e["action"], e["subject"], e["data"], e.get("reason"))
            for e in editor.events()
        ]
        prev = bytes(32)
        for seq, time, actor, action, subject, data, reason in rows:
            record = json.loads(data)
            if (
                action == "version.registered"
                and record.get("version") == v.version
                and record.get("model") == "m"
            ):
                record["digest"] = "sha256:" + "0" * 64
                data = canonicalize_str(record)
                editor.update_event(seq, data=data)
            text = (
                '{"action":'
                + json.dumps(action)
                + ',"actor":'
                + json.dumps(actor)
                + ',"data":'
                + data
                + ',"reason":'
                + json.dumps(reason)
                + ',"seq":'
                + str(seq)
                + ',"subject":'
                + json.dumps(subject)
                + ',"time":'
                + json.dumps(time)
                + "}"
            )
            prev = hashlib.sha256(prev + text.encode()).digest()
            editor.update_event(seq, hash=prev.hex())
        editor.set_head(rows[-1][0], prev.hex())
    report = registry.verify(since_last=True)
    assert not report.ok and report.mode == "full"  # the break sends it back to a full verify
    assert report.problems[0].kind == "continuity"
    assert any("no longer holds" in note for note in report.notes)
    # the full verify that follows names the rewritten event too
    assert any(p.kind in ("checkpoint_mismatch", "edited_event") for p in report.problems[1:])


def test_deleted_old_events_break_continuity(registry: Registry, db_url: str, tmp_path: Path) -> None:
    _register(registry, tmp_path, "m", 0)
    _register(registry, tmp_path, "m", 1)
    full = registry.verify()
    assert full.ok and full.recorded is not None
    _register(registry, tmp_path, "m", 2)
    # one event in the middle of what was proved: the chain at the recorded seq is untouched
    with ledger_editor(db_url) as editor:
        editor.delete_event(full.recorded.seq - 1)
    report = registry.verify(since_last=True)
    assert not report.ok
    assert report.problems[0].kind == "continuity" and "deleted" in report.problems[0].detail


def test_a_tampered_record_is_caught(registry: Registry, db_url: str, tmp_path: Path) -> None:
    _register(registry, tmp_path, "m", 0)
    assert registry.verify().ok
    v = _register(registry, tmp_path, "m", 1)
    _flip(tmp_path / "artifacts" / v.folder / "artifacts" / "notes.txt")
    # the attacker moves the record past the tampered version, so since_last would skip it
    key = _record_key(registry)
    with ledger_editor(db_url) as editor:
        record = json.loads(editor.setting(key))
        record["version_key"] = v.key
        editor.set_setting(key, json.dumps(record))
    report = registry.verify(since_last=True)
    kinds = [p.kind for p in report.problems]
    assert kinds[0] == "verify_record" and "edited" in report.problems[0].detail
    assert report.mode == "full" and "mismatch" in kinds  # and the full verify found the file


def test_cli_since_last(registry: Registry, db_url: str, tmp_path: Path) -> None:
    _register(registry, tmp_path, "m", 0)
    runner = CliRunner()
    args = ["--registry", db_url, "--artifacts", str(tmp_path / "artifacts"), "--as", "alice@example.com"]
    first = runner.invoke(main, ["verify", "--json", *args])
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["recorded"]["full"] is True
    _register(registry, tmp_path, "m", 1)
    result = runner.invoke(main, ["verify", "--since-last", *args])
    assert result.exit_code == 0, result.output
    assert "Checked 1 versions" in result.output and "Since the verify of" in result.output


def test_since_last_checks_new_data_sets_only(registry: Registry, tmp_path: Path) -> None:
    import pandas as pd

    registry.datasets.register("old", pd.DataFrame({"x": [1, 2, 3]}))
    full = registry.verify()
    assert full.ok and full.datasets_checked == 1 and full.recorded is not None
    new = registry.datasets.register("new", pd.DataFrame({"x": [4, 5, 6]}))
    report = registry.verify(since_last=True)
    assert report.ok and report.datasets_checked == 1
    assert report.covered.after_dataset_key == full.recorded.dataset_key
    assert report.covered.to_dataset_key == new.key
    _flip(tmp_path / "artifacts" / new.path)
    # the record moved past it: only a full verify re-hashes it now
    assert registry.verify(since_last=True).datasets_checked == 0
    assert [p.path for p in registry.verify().problems] == [new.path]


def test_an_edited_new_event_is_caught(registry: Registry, db_url: str, tmp_path: Path) -> None:
    _register(registry, tmp_path, "m", 0)
    full = registry.verify()
    assert full.ok and full.recorded is not None
    registry.set_version_tags("models:/m/1", {"owner": "team-a"})
    # a new event edited in place (its stored hash left alone)
    with ledger_editor(db_url) as editor:
        seq = editor.events()[-1]["seq"]
        assert seq > full.recorded.seq
        editor.update_event(seq, actor="mallory@example.com")
    report = registry.verify(since_last=True)
    assert report.mode == "since_last"
    found = [(p.kind, p.path) for p in report.problems]
    assert ("edited_event", f"ledger event {seq}") in found  # the chain
    assert ("unauthorized", f"ledger event {seq}") in found  # and mallory holds no key


def test_deleting_the_last_proved_writes_breaks_continuity(
    registry: Registry, db_url: str, tmp_path: Path
) -> None:
    _register(registry, tmp_path, "m", 0)
    before = registry.ledger_head()[0]  # what is left once the attacker is done
    _register(registry, tmp_path, "m", 1)
    full = registry.verify()
    assert full.ok and full.recorded is not None and full.recorded.seq > before
    _register(registry, tmp_path, "m", 2)
    # Cut the ledger back to before the last proved write: its events and checkpoint, and
    # everything after, gone; the head row set back so the chain and the head agree again.
    with ledger_editor(db_url) as editor:
        for event in editor.events():
            if event["seq"] > before:
                editor.delete_event(event["seq"])
        for checkpoint in editor.checkpoints():
            if checkpoint["seq"] > before:
                editor.delete_checkpoint(checkpoint["seq"])
        editor.set_head(before, next(e["hash"] for e in editor.events() if e["seq"] == before))
    report = registry.verify(since_last=True)
    assert not report.ok and report.mode == "full"
    first = report.problems[0]
    assert (first.kind, first.path) == ("continuity", f"ledger event {full.recorded.seq}")
    assert "gone" in first.detail


def test_a_record_signed_by_another_key_is_not_used(registry: Registry, db_url: str, tmp_path: Path) -> None:
    _register(registry, tmp_path, "m", 0)
    full = registry.verify()
    assert full.ok and full.recorded is not None
    v = _register(registry, tmp_path, "m", 1)
    _flip(tmp_path / "artifacts" / v.folder / "artifacts" / "notes.txt")
    # The attacker holds a key of their own, enrolled nowhere, and writes the verifier's row:
    # a record that says everything up to the head, and past the tampered version, was proved.
    mallory = Ed25519PrivateKey.generate()
    head_seq, head_hash = registry.ledger_head()
    key = _record_key(registry)
    for claimed in (key_id(mallory), full.recorded.key_id):  # its own key id, then the verifier's
        forged = replace(
            full.recorded, seq=head_seq, head_hash=head_hash, version_key=v.key, key_id=claimed, signature=""
        )
        forged = replace(forged, signature=base64.b64encode(sign(mallory, record_payload(forged))).decode())
        with ledger_editor(db_url) as editor:
            editor.set_setting(key, json.dumps(forged.to_dict()))
        report = registry.verify(since_last=True, record=False)
        kinds = [p.kind for p in report.problems]
        assert kinds[0] == "verify_record", kinds
        assert report.mode == "full" and report.since is None
        assert ("mismatch", f"{v.folder}/artifacts/notes.txt") in [(p.kind, p.path) for p in report.problems]
