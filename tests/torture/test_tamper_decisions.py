"""A row edited behind the library's back cannot change what the library does.

The tables of versions, version state and policy are indexes of the ledger. Loading proves a
version's digest against its signed registration event; governance decisions replay the
version's own events and read the policy the ledger last recorded.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.helpers import DynamoAttacker, Tripwire, attacker, ledger_editor

from modelledger import Conflict, IntegrityError, PermissionDenied, Registry
from modelledger._integrity import version_digest


@pytest.fixture
def alice(db_url: str, tmp_path: Path) -> Registry:
    return Registry.open(db_url, artifacts=str(tmp_path / "artifacts"), actor="alice@bank.example")


@pytest.fixture
def bob(db_url: str, tmp_path: Path) -> Registry:
    return Registry.open(db_url, artifacts=str(tmp_path / "artifacts"), actor="bob@bank.example")


def test_a_substituted_artefact_with_a_rewritten_row_is_not_unpickled(
    alice: Registry, db_url: str, tmp_path: Path, fitted_pipeline: object
) -> None:
    v = alice.register("m", fitted_pipeline, capture=False)
    alice.load(v.uri)  # the genuine version loads
    # The attacker swaps the pickle for their own and rewrites the row's digests to match it.
    mark = tmp_path / "unpickled.txt"
    evil = pickle.dumps(Tripwire(str(mark)))
    target = tmp_path / "artifacts" / v.folder / "artifacts" / "model.pkl"
    target.chmod(0o644)
    target.write_bytes(evil)
    import hashlib

    sha = hashlib.sha256(evil).hexdigest()
    files = [{"path": "model.pkl", "size": len(evil), "sha256": sha}]
    forged = [type(v.files[0])(path="model.pkl", size=len(evil), sha256=sha)]
    digest = version_digest(forged, v.manifest)
    with ledger_editor(db_url) as editor:
        editor.update_version("m", v.version, files=json.dumps(files), digest=digest)
    fresh = Registry.open(db_url, artifacts=str(tmp_path / "artifacts"))
    with pytest.raises(IntegrityError, match="is not the one registered in the ledger"):
        fresh.load(v.uri)
    assert not mark.exists()  # nothing was unpickled
    assert not fresh.verify().ok


def test_an_edited_registration_event_is_caught_by_its_signed_checkpoint(
    alice: Registry, db_url: str, tmp_path: Path, fitted_pipeline: object
) -> None:
    v = alice.register("m", fitted_pipeline, capture=False)
    with ledger_editor(db_url) as editor:
        seq, text = next(
            (e["seq"], e["data"]) for e in editor.events() if e["action"] == "version.registered"
        )
        data = json.loads(text)
        data["digest"] = "sha256:" + "0" * 64
        editor.update_event(seq, data=json.dumps(data))
    fresh = Registry.open(db_url, artifacts=str(tmp_path / "artifacts"))
    with pytest.raises(IntegrityError, match=f"ledger event {seq}"):
        fresh.load(v.uri)


def test_a_relaxed_policy_row_does_not_allow_self_approval(
    alice: Registry, db_url: str, fitted_pipeline: object
) -> None:
    v = alice.register("m", fitted_pipeline, capture=False)
    assert alice.policy().four_eyes
    if db_url.startswith("dynamodb:"):
        DynamoAttacker(db_url).put_state(
            {"pk": "SET", "sk": "policy", "value": json.dumps({"four_eyes": False})}
        )
    else:
        with attacker(db_url) as conn:
            conn.exec_driver_sql("DELETE FROM registry_settings WHERE key = 'policy'")
            conn.execute(
                sa.text("INSERT INTO registry_settings (key, value) VALUES ('policy', :v)"),
                {"v": json.dumps({"four_eyes": False})},
            )
    assert alice.policy().four_eyes  # the policy is what the ledger recorded
    with pytest.raises(PermissionDenied, match="four-eyes"):
        alice.approve(v.uri, reason="I approve my own model")
    assert [d.what for d in alice.check_state()] == ["policy"]  # and the edit is reported


def test_an_edited_state_row_does_not_let_an_unapproved_version_deploy(
    alice: Registry, bob: Registry, db_url: str, fitted_pipeline: object
) -> None:
    v = alice.register("m", fitted_pipeline, capture=False)
    assert alice.state(v.uri).stage == "validated"
    if db_url.startswith("dynamodb:"):
        editor = DynamoAttacker(db_url)
        state = editor.version_item("m", v.version, "T")
        editor.put_state({**state, "stage": "approved", "approved_by": "bob@bank.example"})
    else:
        with attacker(db_url) as conn:
            conn.exec_driver_sql(
                "UPDATE version_state SET stage = 'approved', approved_by = 'bob@bank.example'"
            )
    assert bob.state(v.uri).stage == "approved"  # the index says so...
    with pytest.raises(Conflict, match="is validated: only an approved version can be deployed"):
        bob.deploy(v.uri)  # ...but the decision reads the ledger
    bob.approve(v.uri, reason="reviewed")
    assert bob.deploy(v.uri).stage == "deployed"


def test_gc_keeps_what_the_ledger_references_even_when_its_row_is_gone(
    alice: Registry, db_url: str, tmp_path: Path, fitted_pipeline: object
) -> None:
    v = alice.register("m", fitted_pipeline, capture=False)
    folder = tmp_path / "artifacts" / v.folder
    if db_url.startswith("dynamodb:"):
        editor = DynamoAttacker(db_url)
        for item in editor.model_items("m"):
            if item["sk"].startswith(("T#", "V#")):
                editor.delete_state(item)
    else:
        with attacker(db_url) as conn:
            conn.exec_driver_sql("DELETE FROM version_state")
            conn.exec_driver_sql("DELETE FROM model_versions")
    report = alice.gc(older_than="0", delete=True)
    assert v.folder not in {item.path for item in report.items}
    assert (folder / "manifest.json").exists()
    assert not alice.verify().ok  # and the missing row is reported
