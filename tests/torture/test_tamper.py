"""An attacker with database or storage access edits the record behind the library's back.

Each kind of tampering must be detected by ``verify`` and named: the ledger event,
the checkpoint or the file.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from tests.helpers import DynamoAttacker, SqlEditor, ledger_editor

from modelledger import Registry


def _seq_of(editor: SqlEditor | DynamoAttacker, action: str, nth: int = 0) -> int:
    return int([e["seq"] for e in editor.events() if e["action"] == action][nth])


def _ledger_problem(reg: Registry) -> tuple[str, str]:
    # the chain's finding; an edited or re-signed event may also be named as unauthorized
    problems = [
        p for p in reg.verify().problems if p.path.startswith("ledger event") and p.kind != "unauthorized"
    ]
    assert len(problems) == 1, reg.verify().problems
    return problems[0].kind, problems[0].path


def test_edited_event(history: Registry, db_url: str) -> None:
    with ledger_editor(db_url) as editor:
        seq = _seq_of(editor, "version.approved")
        data = json.loads(next(e["data"] for e in editor.events() if e["seq"] == seq))
        data["registered_by"] = "someone-else@bank.example"
        editor.update_event(seq, actor="carol@bank.example", data=json.dumps(data))
    assert _ledger_problem(history) == ("edited_event", f"ledger event {seq}")


def test_edited_event_with_the_chain_recomputed(history: Registry, db_url: str) -> None:
    """A careful attacker re-hashes every later event; the signed checkpoints still disagree."""
    from modelledger._ledger import ChainBuilder, LedgerEvent

    with ledger_editor(db_url) as editor:
        seq = _seq_of(editor, "version.approved")
        builder = ChainBuilder()
        for r in editor.events():
            reason = "rubber-stamped" if r["seq"] == seq else r.get("reason")
            event = LedgerEvent(
                seq=r["seq"],
                time=r["time"],
                actor=r["actor"],
                action=r["action"],
                subject=r["subject"],
                data=json.loads(r["data"]),
                reason=reason,
            )
            digest = builder.append(event)
            editor.update_event(r["seq"], reason=reason, hash=digest)
    kind, _path = _ledger_problem(history)
    assert kind == "checkpoint_mismatch"


def test_deleted_event(history: Registry, db_url: str) -> None:
    with ledger_editor(db_url) as editor:
        seq = _seq_of(editor, "deployment.deployed", nth=0)
        editor.delete_event(seq)
    assert _ledger_problem(history) == ("deleted_event", f"ledger event {seq}")


def test_two_swapped_events(history: Registry, db_url: str) -> None:
    with ledger_editor(db_url) as editor:
        a = _seq_of(editor, "version.approved", nth=0)
        b = _seq_of(editor, "version.approved", nth=1)
        cols = ("time", "actor", "action", "subject", "data", "reason", "hash")
        ra, rb = ({k: e[k] for k in cols} for s in (a, b) for e in editor.events() if e["seq"] == s)
        for seq, row in ((a, rb), (b, ra)):
            editor.update_event(seq, **row)
    kind, path = _ledger_problem(history)
    assert kind == "reordered_events"
    assert path == f"ledger event {a}"


def test_forged_checkpoint_signature(history: Registry, db_url: str) -> None:
    with ledger_editor(db_url) as editor:
        last = editor.checkpoints()[-1]
        seq = last["seq"]
        forged = bytearray(base64.b64decode(last["signature"]))
        forged[0] ^= 0x01
        editor.update_checkpoint(seq, signature=base64.b64encode(bytes(forged)).decode())
    assert _ledger_problem(history) == ("bad_checkpoint_signature", f"ledger event {seq}")


def test_checkpoint_signed_with_another_key(history: Registry, db_url: str, tmp_path: Path) -> None:
    from modelledger._keys import generate_key, load_private_key
    from modelledger._ledger import sign_checkpoint

    generate_key(tmp_path / "mallory.key")
    mallory = load_private_key(tmp_path / "mallory.key")
    with ledger_editor(db_url) as editor:
        last = editor.checkpoints()[-1]
        seq = last["seq"]
        cp = sign_checkpoint(mallory, int(seq), last["head_hash"], last["time"])
        editor.update_checkpoint(seq, signature=cp.signature, key_id=cp.key_id)
    assert _ledger_problem(history) == ("checkpoint_wrong_key", f"ledger event {seq}")


def test_changed_artefact_byte(history: Registry, tmp_path: Path) -> None:
    v = history.get_version("models:/credit-risk/1")
    pkl = tmp_path / "artifacts" / v.folder / "artifacts" / "model.pkl"
    os.chmod(pkl, 0o644)
    data = bytearray(pkl.read_bytes())
    data[len(data) // 3] ^= 0x80
    pkl.write_bytes(bytes(data))
    problems = history.verify().problems
    assert [(p.kind, p.path, p.version) for p in problems] == [
        ("mismatch", f"{v.folder}/artifacts/model.pkl", "models:/credit-risk/1")
    ]


def test_changed_manifest_file(history: Registry, tmp_path: Path) -> None:
    v = history.get_version("models:/credit-risk/2")
    path = tmp_path / "artifacts" / v.folder / "manifest.json"
    record = json.loads(path.read_text())
    record["manifest"]["metrics"]["auc"] = 0.99
    os.chmod(path, 0o644)
    path.write_text(json.dumps(record))
    problems = history.verify().problems
    assert [(p.kind, p.path) for p in problems] == [("mismatch", f"{v.folder}/manifest.json")]


def test_changed_manifest_in_the_database_with_a_recomputed_digest(history: Registry, db_url: str) -> None:
    """Rewriting the manifest and its digest together still contradicts the ledger."""
    from modelledger._domain import FileEntry
    from modelledger._integrity import version_digest

    v = history.get_version("models:/credit-risk/2")
    manifest = dict(v.manifest)
    manifest["metrics"] = {"auc": 0.99}
    digest = version_digest([FileEntry.from_dict(f.to_dict()) for f in v.files], manifest)
    with ledger_editor(db_url) as editor:
        editor.update_version("credit-risk", 2, manifest=json.dumps(manifest), digest=digest)
    found = {(p.kind, p.path, p.detail) for p in history.verify().problems}
    assert ("mismatch", v.folder, "version digest differs from its registration in the ledger") in found
    assert ("mismatch", f"{v.folder}/manifest.json", "differs from the registered manifest") in found
