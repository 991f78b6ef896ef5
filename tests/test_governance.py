from __future__ import annotations

import json
import os
import stat
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.conftest import Api
from tests.helpers import DynamoAttacker

from modelledger import Conflict, InvalidInput, NotFound, PermissionDenied, Registry


@pytest.fixture
def alice(api: Api) -> Registry:
    """Alice's registry on SQLite, on PostgreSQL and through a live server."""
    return api.open("alice@bank.example")


@pytest.fixture
def bob(api: Api) -> Registry:
    return api.open("bob@bank.example")


def _register(reg: Registry, model: object, **manifest: object) -> str:
    doc = {"gates": ["auc >= 0.80 on holdout"], "metrics": {"auc_holdout": 0.86}}
    doc.update(manifest)
    return reg.register("credit-risk", model, manifest=doc, capture=False).uri


def _actions(reg: Registry, uri: str) -> list[str]:
    return [e.action for e in reg.history(uri)]


def test_register_walks_the_early_stages(alice: Registry, fitted_pipeline) -> None:
    uri = _register(alice, fitted_pipeline)
    state = alice.state(uri)
    assert state.stage == "validated"
    assert state.registered_by == "alice@bank.example"
    assert _actions(alice, uri) == [
        "version.registered",
        "stage.changed",
        "stage.changed",
        "validation.evaluated",
    ]
    events = alice.history(uri)
    assert [e.data.get("stage") for e in events] == ["candidate", "data_prepared", "trained", "validated"]
    trained = events[2].data["details"]
    assert trained["digest"] == alice.get_version(uri).digest
    assert events[3].data["results"] == [{"gate": "auc >= 0.8 on holdout", "value": 0.86, "passed": True}]


def test_failing_gate_rejects_and_records_each_result(alice: Registry, fitted_pipeline) -> None:
    uri = _register(alice, fitted_pipeline, gates=["auc >= 0.80 on holdout", "ks > 0.3"])
    assert alice.state(uri).stage == "rejected"
    ev = alice.history(uri)[-1]
    assert ev.action == "validation.evaluated"
    assert ev.data["results"] == [
        {"gate": "auc >= 0.8 on holdout", "value": 0.86, "passed": True},
        {"gate": "ks > 0.3", "value": None, "passed": False},
    ]
    assert "ks > 0.3" in (ev.reason or "")
    # a rejected version comes back only through validation
    assert alice.validate(uri, metrics={"ks": 0.41}, dataset="holdout").stage == "validated"


def test_manual_stages_wait_for_a_transition(alice: Registry, bob: Registry, fitted_pipeline) -> None:
    uri = _register(alice, fitted_pipeline, stages={"trained": "manual"})
    assert alice.state(uri).stage == "data_prepared"
    with pytest.raises(Conflict, match="data_prepared: it cannot move to validated"):
        alice.validate(uri)
    alice.transition(uri, "trained", reason="training job 7 finished", details={"job": "7"})
    assert alice.validate(uri).stage == "validated"
    assert bob.approve(uri, reason="ok").stage == "approved"


@pytest.mark.parametrize(
    ("setup", "call", "error", "match"),
    [
        ("rejected", lambda r, u: r.deploy(u), Conflict, "only an approved version can be deployed"),
        ("validated", lambda r, u: r.deploy(u), Conflict, "only an approved version can be deployed"),
        ("data_prepared", lambda r, u: r.approve(u, reason="x"), Conflict, "only a validated version"),
        ("validated", lambda r, u: r.transition(u, "approved"), InvalidInput, "use `approve`"),
        ("validated", lambda r, u: r.transition(u, "bogus"), InvalidInput, "unknown stage"),
        ("retired", lambda r, u: r.transition(u, "retired"), Conflict, "terminal"),
        ("approved", lambda r, u: r.reject(u, reason="late"), Conflict, "cannot move to rejected"),
    ],
)
def test_illegal_transitions_are_refused(alice, bob, fitted_pipeline, setup, call, error, match) -> None:
    manifest: dict[str, object] = {"stages": {"trained": "manual"}} if setup == "data_prepared" else {}
    uri = _register(alice, fitted_pipeline, **manifest)
    if setup == "rejected":
        bob.reject(uri, reason="bias review failed")
    if setup in ("approved", "retired"):
        bob.approve(uri, reason="ok")
    if setup == "retired":
        alice.transition(uri, "retired", reason="superseded")
    before = len(alice.history(uri))
    with pytest.raises(error, match=match):
        call(bob, uri)
    assert len(alice.history(uri)) == before  # nothing recorded
    assert alice.state(uri).stage == setup


def test_four_eyes_and_its_recorded_relaxation(alice: Registry, bob: Registry, fitted_pipeline) -> None:
    uri = _register(alice, fitted_pipeline)
    with pytest.raises(PermissionDenied, match="four-eyes"):
        alice.approve(uri, reason="looks good to me")
    with pytest.raises(InvalidInput, match="reason"):
        bob.approve(uri, reason="")
    state = bob.approve(uri, reason="reviewed holdout report #41")
    assert (state.stage, state.approved_by) == ("approved", "bob@bank.example")
    approval = alice.history(uri)[-1]
    assert approval.action == "version.approved"
    assert approval.actor == "bob@bank.example"
    assert approval.reason == "reviewed holdout report #41"
    assert approval.data["registered_by"] == "alice@bank.example"

    alice.set_policy({"four_eyes": False}, reason="single-person team until March, ticket GOV-7")
    change = alice.audit(action="policy.changed").items[-1]
    assert change.data["relaxed"] == ["four_eyes"]
    assert change.actor == "alice@bank.example"
    assert change.reason and "GOV-7" in change.reason
    second = _register(alice, fitted_pipeline)
    assert alice.approve(second, reason="self-approved under GOV-7").approved_by == "alice@bank.example"


def test_approver_role(alice: Registry, bob: Registry, api: Api, fitted_pipeline) -> None:
    alice.set_policy(
        {"approver_role": "approver", "roles": {"carol@bank.example": ["approver"]}},
        reason="model risk policy v2",
    )
    uri = _register(alice, fitted_pipeline)
    with pytest.raises(PermissionDenied, match="role 'approver'"):
        bob.approve(uri, reason="ok")
    carol = api.open("carol@bank.example")
    assert carol.approve(uri, reason="validated by MRM").approved_by == "carol@bank.example"


def test_automated_approval_and_deployment(alice: Registry, fitted_pipeline) -> None:
    alice.set_policy({"auto_approve": True}, reason="low-risk model tier")
    uri = _register(
        alice, fitted_pipeline, stages={"approved": "auto", "deployed": "auto"}, target_alias="champion"
    )
    assert alice.state(uri).stage == "deployed"
    approval = next(e for e in alice.history(uri) if e.action == "version.approved")
    assert approval.actor == "policy:auto-approve"
    assert approval.data["automated"] is True
    assert alice.get_version("models:/credit-risk@champion").uri == uri
    # without the policy, a manifest cannot approve itself
    alice.set_policy({"auto_approve": False}, reason="back to manual")
    other = _register(alice, fitted_pipeline, stages={"approved": "auto"})
    assert alice.state(other).stage == "validated"


def test_deploy_rollback_and_alias_as_of(alice: Registry, bob: Registry, fitted_pipeline) -> None:
    v1 = _register(alice, fitted_pipeline)
    v2 = _register(alice, fitted_pipeline)
    for uri in (v1, v2):
        bob.approve(uri, reason="ok")
    t0 = datetime.now(timezone.utc)
    time.sleep(0.01)
    bob.deploy(v1, reason="first release")
    time.sleep(0.01)
    t1 = datetime.now(timezone.utc)
    time.sleep(0.01)
    bob.deploy(v2, reason="better auc")
    assert alice.get_version("models:/credit-risk@production").version == 2
    assert alice.get_version("models:/credit-risk@rollback").version == 1
    time.sleep(0.01)
    t2 = datetime.now(timezone.utc)
    time.sleep(0.01)
    assert bob.rollback("credit-risk", reason="incident 12: score drift") == 1
    assert alice.get_version("models:/credit-risk@production").version == 1
    with pytest.raises(NotFound):
        alice.get_version("models:/credit-risk@rollback")
    with pytest.raises(Conflict, match="nothing to roll back to"):
        bob.rollback("credit-risk")
    assert alice.alias_at("credit-risk", "production", t0) is None
    assert alice.alias_at("credit-risk", "production", t1) == 1
    assert alice.alias_at("credit-risk", "production", t2) == 2
    assert alice.alias_at("credit-risk", "production", datetime.now(timezone.utc)) == 1
    moves = [(c.alias, c.version, c.action) for c in alice.alias_history("credit-risk", "production")]
    assert moves == [
        ("production", 1, "deployment.deployed"),
        ("production", 2, "deployment.deployed"),
        ("production", 1, "deployment.rolled_back"),
    ]
    history = alice.history("models:/credit-risk@production")
    assert [e.action for e in history] == ["deployment.rolled_back"]
    assert history[0].reason == "incident 12: score drift"


def test_every_governance_action_is_in_the_ledger(alice: Registry, bob: Registry, fitted_pipeline) -> None:
    alice.set_policy({"four_eyes": True}, reason="restate policy")
    v1 = _register(alice, fitted_pipeline)
    v2 = _register(alice, fitted_pipeline)
    bob.reject(v2, reason="unfair on age")
    bob.approve(v1, reason="ok")
    bob.deploy(v1)
    alice.set_alias("credit-risk", "shadow", 2, reason="shadow test")
    alice.delete_alias("credit-risk", "shadow")
    bob.transition(v1, "retired", reason="superseded")
    actions = {e.action for e in alice.audit(limit=1000)}
    assert actions >= {
        "policy.changed",
        "version.registered",
        "stage.changed",
        "validation.evaluated",
        "version.rejected",
        "version.approved",
        "deployment.deployed",
        "alias.set",
        "alias.deleted",
    }
    by_bob = alice.audit(actor="bob@bank.example")
    assert {e.action for e in by_bob} == {
        "version.rejected",
        "version.approved",
        "deployment.deployed",
        "stage.changed",
    }
    only_v2 = alice.audit(model="credit-risk", version=2)
    assert all(e.subject == "models:/credit-risk/2" for e in only_v2)
    assert [e.action for e in alice.audit(action="version.*", model="credit-risk")] == [
        "version.registered",
        "version.registered",
        "version.rejected",
        "version.approved",
    ]
    page = alice.audit(limit=3)
    rest = alice.audit(limit=1000, cursor=page.next_cursor)
    assert [e.seq for e in page] + [e.seq for e in rest] == [e.seq for e in alice.audit(limit=1000)]
    future = alice.audit(since=datetime(2999, 1, 1, tzinfo=timezone.utc))
    assert list(future) == []
    assert alice.verify().ok


def _raw(db_url: str) -> sa.Engine:
    return sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))


@pytest.mark.sql_only(
    "the database's own triggers; on DynamoDB the writer's IAM policy denies it (test_dynamodb_store)"
)
@pytest.mark.parametrize("statement", ["UPDATE ledger_events SET reason = 'x'", "DELETE FROM ledger_events"])
def test_database_refuses_changes_to_the_ledger(
    alice: Registry, fitted_pipeline, api: Api, statement
) -> None:
    _register(alice, fitted_pipeline)
    engine = _raw(api.url)
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
        conn.exec_driver_sql(statement)
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM ledger_checkpoints")
    engine.dispose()
    assert alice.verify().ok


def test_state_tables_are_rebuilt_from_the_ledger(
    alice: Registry, bob: Registry, fitted_pipeline, api: Api
) -> None:
    v1 = _register(alice, fitted_pipeline)
    bob.approve(v1, reason="ok")
    bob.deploy(v1)
    admin = api.local("alice@bank.example")  # checking and rebuilding the tables needs the stores
    assert admin.check_state() == []
    if api.kind == "dynamodb":
        editor = DynamoAttacker(api.url)
        items = editor.model_items("credit-risk")
        state = next(i for i in items if i["sk"].startswith("T#"))
        editor.put_state({**state, "stage": "approved", "approved_by": "mallory"})
        for alias in (i for i in items if i["sk"].startswith("A#")):
            editor.delete_state(alias)
    else:
        engine = _raw(api.url)
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE version_state SET stage = 'approved', approved_by = 'mallory'")
            conn.exec_driver_sql("DELETE FROM model_aliases")
        engine.dispose()
    diffs = {d.what for d in admin.check_state()}
    assert diffs == {"state of models:/credit-risk/1", "models:/credit-risk@production"}
    assert {p.kind for p in alice.verify().problems} == {"state"}
    admin.rebuild_state()
    assert admin.check_state() == []
    assert alice.state(v1).stage == "deployed"
    assert alice.get_version("models:/credit-risk@production").version == 1


def test_registry_key_is_owner_only_and_exportable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELLEDGER_IDENTITIES", str(tmp_path / "ids"))
    reg = Registry.open(f"sqlite:///{tmp_path / 'r.db'}", artifacts=str(tmp_path / "a"))
    reg.init()
    # the key is the user's own, outside the registry's folder
    assert reg.key_path == tmp_path / "ids" / "alice@example.com.key"
    assert not (tmp_path / "r.db.key").exists()
    assert stat.S_IMODE(os.stat(reg.key_path).st_mode) == 0o600
    pem = reg.public_key()
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert reg.audit().items[0].action == "registry.initialized"
    os.chmod(reg.key_path, 0o644)
    other = Registry.open(f"sqlite:///{tmp_path / 'r.db'}", artifacts=str(tmp_path / "a"))
    with pytest.raises(PermissionDenied, match="chmod 600"):
        other.set_policy({"four_eyes": True}, reason="x")


def test_actor_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelledger._signing import current_actor

    monkeypatch.setenv("MODELLEDGER_USER", "svc-training@bank.example")
    assert current_actor() == "svc-training@bank.example"
    monkeypatch.delenv("MODELLEDGER_USER")
    monkeypatch.setenv("HOME", str(tmp_path))  # no global git config
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gitconfig").write_text("[user]\n\temail = dana@bank.example\n")
    assert current_actor() == "dana@bank.example"
    (tmp_path / "gitconfig").write_text("")
    import getpass

    assert current_actor() == getpass.getuser()


def test_audit_by_version_is_exact_and_verbs_follow_moving_aliases(alice: Registry, bob: Registry) -> None:
    for _ in range(10):
        alice.register("m", lambda rows: rows, capture=False)
    bob.approve("models:/m/1", reason="ok")
    events = alice.audit(model="m", version=1, limit=4)
    assert [e.subject for e in events] == ["models:/m/1"] * 4
    assert events.next_cursor is not None
    rest = alice.audit(model="m", version=1, cursor=events.next_cursor)
    assert [e.action for e in rest][-1] == "version.approved"
    assert all(e.subject == "models:/m/1" for e in alice.history("models:/m/1"))
    alice.set_alias("m", "staging", 1)
    # retiring through the alias removes the alias; the verb still reports the version's state
    assert bob.transition("models:/m@staging", "retired", reason="superseded").stage == "retired"
    # relative times are understood; what is not a time is refused
    assert [e.subject for e in alice.audit(since="yesterday", model="m", version=1)][:1] == ["models:/m/1"]
    assert list(alice.audit(since="now", until="1d")) == []
    with pytest.raises(InvalidInput, match="invalid since"):
        alice.audit(since="last tuesday")


def test_event_data_is_stored_as_the_canonical_text_the_chain_hashes(
    alice: Registry, fitted_pipeline, api: Api
) -> None:
    from modelledger._canonical import canonicalize_str
    from modelledger.stores.sql import tables as t

    # manifest values reach the events: non-ASCII text, a character beyond U+FFFF, floats
    uri = _register(alice, fitted_pipeline, training_job={"id": "entraîné-\U0001f680", "host": "hôte"})
    if api.kind == "dynamodb":
        stored = [e["data"] for e in DynamoAttacker(api.url).events()]
    else:
        with api.local("alice@bank.example")._meta._read() as conn:  # type: ignore[attr-defined]
            stored = [text for (text,) in conn.execute(sa.select(t.ledger_events.c.data)).all()]
    assert all(text == canonicalize_str(json.loads(text)) for text in stored)
    history = alice.history(uri)
    assert history[2].data["details"]["training_job"]["id"] == "entraîné-\U0001f680"
    assert history[3].data["results"][0]["value"] == 0.86
    report = api.local("alice@bank.example").verify_ledger()
    assert report.ok and report.events_checked == len(stored)


def test_states_of_several_versions_are_read_at_once(alice: Registry, bob: Registry, fitted_pipeline) -> None:
    first = _register(alice, fitted_pipeline)
    second = _register(alice, fitted_pipeline)
    bob.approve(first, reason="reviewed")
    states = alice.states("credit-risk", [1, 2, 99])
    assert {n: s.stage for n, s in states.items()} == {1: "approved", 2: alice.state(second).stage}
    assert states[1].approved_by == "bob@bank.example"
    assert alice.states("credit-risk", []) == {}
