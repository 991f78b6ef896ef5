"""The governance commands of the CLI, run in-process against real SQLite and PostgreSQL registries.

Versions are registered through the Python API as alice; the CLI acts as carol
(MODELLEDGER_USER) unless a test passes ``--as``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from tests.helpers import DynamoAttacker

from modelledger import Registry
from modelledger.cli import main

Run = Callable[..., Result]

ALICE = "alice@bank.example"  # registers
BOB = "bob@bank.example"  # reviews
CAROL = "carol@bank.example"  # operates (the default CLI actor here)
EVENT_KEYS = {"seq", "time", "actor", "action", "subject", "data", "reason"}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def art(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


@pytest.fixture
def cli(db_url: str, art: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """Run ``modelledger ARGS --registry db_url --artifacts art`` as carol and check the exit code."""
    monkeypatch.setenv("MODELLEDGER_USER", CAROL)
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Result:
        result = runner.invoke(main, [*args, "--registry", db_url, "--artifacts", str(art)])
        assert result.exit_code == code, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        return result

    return run


@pytest.fixture
def api(db_url: str, art: Path) -> Iterator[Registry]:
    registry = Registry.open(db_url, artifacts=str(art), actor=ALICE)
    yield registry
    registry.close()


@pytest.fixture
def register(api: Registry, fitted_pipeline: object) -> Callable[..., str]:
    """Register a version as alice; with the default metrics it walks to ``validated`` by itself."""

    def reg(name: str = "credit-risk", *, auc: float = 0.9, **manifest: Any) -> str:
        mv = api.register(
            name,
            fitted_pipeline,
            metrics={"auc": auc},
            manifest={"gates": ["auc >= 0.8"], **manifest},
            capture=False,
        )
        return mv.uri

    return reg


def _json(result: Result) -> Any:
    return json.loads(result.stdout)


def _lines(result: Result) -> list[dict[str, Any]]:
    """JSON lines: every line must be one JSON object with the event's keys."""
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(isinstance(e, dict) and set(e) == EVENT_KEYS for e in events), result.stdout
    return events


def _assert_one_line_error(result: Result, fragment: str) -> None:
    err = result.stderr.strip()
    assert err.startswith("Error: "), err
    assert "\n" not in err, err
    assert "Traceback" not in result.output
    assert fragment in err, err


def _state(cli: Run, identifier: str) -> dict[str, Any]:
    doc: dict[str, Any] = _json(cli("state", identifier, "--json"))
    return doc


def _between(earlier: str, later: str) -> str:
    a, b = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (earlier, later))
    assert a < b
    return (a + (b - a) / 2).isoformat()


def _engine(db_url: str) -> sa.Engine:
    return sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))


# --------------------------------------------------------------------------- the whole flow


def test_register_approve_deploy_second_version_rollback(cli: Run, register: Callable[..., str]) -> None:
    v1 = register()
    assert v1 == "models:/credit-risk/1"
    doc = _state(cli, v1)
    assert doc["stage"] == "validated"  # candidate -> data_prepared -> trained -> validated, automatically
    assert doc["registered_by"] == ALICE and doc["approved_by"] is None

    shown = cli("approve", v1, "--reason", "reviewed holdout report #41", "--as", BOB).stdout
    assert "approved" in shown and BOB in shown
    doc = _state(cli, v1)
    assert (doc["stage"], doc["approved_by"]) == ("approved", BOB)
    assert doc["decided_at"]

    first = cli("deploy", v1, "--reason", "CAB-1")
    assert first.stdout.strip() == "models:/credit-risk@production -> models:/credit-risk/1"

    v2 = register(auc=0.92)
    cli("approve", v2, "--reason", "reviewed report #42", "--as", BOB)
    second = cli("deploy", v2, "--reason", "CAB-2").stdout
    assert "models:/credit-risk@production -> models:/credit-risk/2" in second
    assert "models:/credit-risk@rollback -> models:/credit-risk/1" in second
    assert _state(cli, "models:/credit-risk@production")["version"] == 2
    assert _state(cli, v1)["aliases"] == ["rollback"]

    back = cli("rollback", "credit-risk", "--reason", "INC-7: score drift")
    assert back.stdout.strip() == "models:/credit-risk@production -> models:/credit-risk/1"
    _assert_one_line_error(cli("rollback", "credit-risk", code=1), "@rollback is not set")
    doc = _state(cli, "models:/credit-risk@production")
    assert (doc["version"], doc["stage"], doc["aliases"]) == (1, "deployed", ["production"])
    assert _state(cli, v2)["stage"] == "deployed" and _state(cli, v2)["aliases"] == []

    human = cli("state", v1).stdout
    for fragment in ("models:/credit-risk/1", "deployed", ALICE, BOB, "production"):
        assert fragment in human

    # the model's events, for people and for scripts
    table = cli("history", "credit-risk").stdout
    for fragment in (
        "version.approved",
        "deployment.deployed",
        "deployment.rolled_back",
        "INC-7: score drift",
    ):
        assert fragment in table
    events = _json(cli("history", "credit-risk", "--json"))
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert [e["action"] for e in events if e["subject"] == v1] == [
        "version.registered",
        "stage.changed",
        "stage.changed",
        "validation.evaluated",
        "version.approved",
        "deployment.deployed",
    ]
    assert {e["subject"] for e in _json(cli("history", v2, "--json"))} == {v2}

    # the alias: each move, and which version held it when
    moves = _json(cli("history", "credit-risk@production", "--json"))
    assert [(m["version"], m["action"], m["reason"]) for m in moves] == [
        (1, "deployment.deployed", "CAB-1"),
        (2, "deployment.deployed", "CAB-2"),
        (1, "deployment.rolled_back", "INC-7: score drift"),
    ]
    assert "models:/credit-risk/2" in cli("history", "models:/credit-risk@production").stdout

    t1, t2, t3 = (m["time"] for m in moves)
    at = cli("history", "credit-risk@production", "--at", _between(t1, t2)).stdout
    assert at.strip().endswith(": models:/credit-risk/1")
    doc = _json(cli("history", "credit-risk@production", "--at", _between(t2, t3), "--json"))
    assert (doc["model"], doc["alias"], doc["version"]) == ("credit-risk", "production", 2)
    assert _json(cli("history", "credit-risk@production", "--at", t3, "--json"))["version"] == 1
    before = (datetime.fromisoformat(t1.replace("Z", "+00:00")) - timedelta(hours=1)).isoformat()
    assert "was not set" in cli("history", "credit-risk@production", "--at", before).stdout
    assert "--at needs MODEL@ALIAS" in cli("history", "credit-risk", "--at", t1, code=2).stderr
    # the library parses --at; a time it cannot read is its one-line error (exit code 1)
    bad_time = cli("history", "credit-risk@production", "--at", "soon", code=1).stderr
    assert bad_time.startswith("Error: ") and "ISO 8601" in bad_time and bad_time.count("\n") == 1

    # a superseded version is retired; its stage history shows the move and its reason
    retired = _json(cli("stage", v2, "retired", "--reason", "superseded", "--json"))
    assert retired["stage"] == "retired"
    last = _json(cli("history", v2, "--json"))[-1]
    assert (last["action"], last["data"]["stage"], last["reason"]) == (
        "stage.changed",
        "retired",
        "superseded",
    )


# --------------------------------------------------------------------------- refusals


def test_four_eyes_refuses_the_registrant(
    cli: Run, register: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = register()
    refused = cli("approve", uri, "--reason", "looks fine to me", "--as", ALICE, code=1)
    _assert_one_line_error(refused, "four-eyes")
    assert refused.stdout == ""
    # MODELLEDGER_USER is the global way to say who acts
    monkeypatch.setenv("MODELLEDGER_USER", ALICE)
    _assert_one_line_error(cli("approve", uri, "--reason", "still me", code=1), "four-eyes")
    assert _state(cli, uri)["stage"] == "validated"
    assert _json(cli("history", uri, "--json"))[-1]["action"] == "validation.evaluated"


def test_illegal_transitions_are_refused(cli: Run, register: Callable[..., str]) -> None:
    uri = register()
    rejected = _json(cli("reject", uri, "--reason", "unstable on the Q3 cohort", "--as", BOB, "--json"))
    assert (rejected["stage"], rejected["decided_at"] is not None) == ("rejected", True)

    _assert_one_line_error(cli("deploy", uri, code=1), "only an approved version can be deployed")
    _assert_one_line_error(cli("approve", uri, "--reason", "x", "--as", BOB, code=1), "only a validated")
    _assert_one_line_error(cli("stage", uri, "approved", code=1), "use `approve`")
    _assert_one_line_error(cli("stage", uri, "deployed", code=1), "use `deploy`")
    _assert_one_line_error(cli("stage", uri, "trained", code=1), "cannot move to trained")
    _assert_one_line_error(cli("stage", uri, "shipped", code=1), "unknown stage")
    _assert_one_line_error(cli("rollback", "credit-risk", code=1), "nothing to roll back")
    assert "--reason" in cli("approve", uri, code=2).stderr  # a reason is required
    assert _state(cli, uri)["stage"] == "rejected"


def test_manual_stages_record_their_details(cli: Run, register: Callable[..., str]) -> None:
    uri = register(stages={"data_prepared": "manual"})
    assert _state(cli, uri)["stage"] == "candidate"
    moved = cli("stage", uri, "data_prepared", "--detail", "rows=400", "--detail", "snapshot=2026-10")
    assert "data_prepared" in moved.stdout
    assert "KEY=VALUE" in cli("stage", uri, "trained", "--detail", "oops", code=2).stderr
    event = _json(cli("history", uri, "--json"))[-1]
    assert event["data"]["details"] == {"rows": "400", "snapshot": "2026-10"}


def test_validate_with_a_failing_metric_rejects_and_shows_the_gate(
    cli: Run, register: Callable[..., str]
) -> None:
    uri = register()
    failed = cli("validate", uri, "--metric", "auc=0.7", "--dataset", "holdout", code=1)
    assert "rejected" in failed.stdout
    assert "auc >= 0.8" in failed.stdout and "0.7" in failed.stdout and "fail" in failed.stdout
    assert _state(cli, uri)["stage"] == "rejected"
    event = _json(cli("history", uri, "--json"))[-1]
    assert event["action"] == "validation.evaluated" and event["data"]["dataset"] == "holdout"
    assert event["reason"] == "validation gates failed: auc >= 0.8"

    passed = _json(cli("validate", uri, "--metric", "auc=0.85", "--reason", "re-run on fixed data", "--json"))
    assert (passed["stage"], passed["passed"]) == ("validated", True)
    assert passed["gates"] == [{"gate": "auc >= 0.8", "value": 0.85, "passed": True}]
    assert "pass" in cli("validate", uri).stdout  # the manifest's own metrics pass too
    assert "NAME=NUMBER" in cli("validate", uri, "--metric", "auc=high", code=2).stderr


# --------------------------------------------------------------------------- audit


def test_audit_filters_and_json_lines(cli: Run, register: Callable[..., str]) -> None:
    v1 = register()
    register("fraud")
    cli("approve", v1, "--reason", "reviewed", "--as", BOB)
    cli("deploy", v1)
    v2 = register()

    everything = _lines(cli("audit", "--json"))
    assert [e["seq"] for e in everything] == sorted({e["seq"] for e in everything})
    # --json follows the pages: a page size of 2 still yields every event
    assert _lines(cli("audit", "--json", "--limit", "2")) == everything

    by_bob = _lines(cli("audit", "--actor", BOB, "--json"))
    assert [(e["action"], e["subject"]) for e in by_bob] == [("version.approved", v1)]
    by_carol = _lines(cli("audit", "--actor", CAROL, "--json"))
    assert [e["action"] for e in by_carol] == ["deployment.deployed"]

    versions = _lines(cli("audit", "--action", "version.*", "--json"))
    assert sorted(e["action"] for e in versions) == ["version.approved"] + ["version.registered"] * 3
    assert len(_lines(cli("audit", "--action", "stage.changed", "--json"))) == 6

    credit = _lines(cli("audit", "--model", "credit-risk", "--json"))
    assert credit and all(e["subject"].startswith("models:/credit-risk/") for e in credit)
    assert len(credit) == 4 + 4 + 2  # two registrations of 4 events, an approval, a deployment
    fraud = _lines(cli("audit", "--model", "fraud", "--json"))
    assert {e["subject"] for e in fraud} == {"models:/fraud/1"} and len(fraud) == 4
    only_v2 = _lines(cli("audit", "--model", "credit-risk", "--version", "2", "--json"))
    assert {e["subject"] for e in only_v2} == {v2} and len(only_v2) == 4

    since = by_bob[0]["time"]
    recent = _lines(cli("audit", "--since", since, "--json"))
    assert recent == [e for e in everything if e["time"] >= since]
    assert [e["action"] for e in recent][:2] == ["version.approved", "deployment.deployed"]
    assert _lines(cli("audit", "--until", since, "--json")) == [e for e in everything if e["time"] <= since]
    assert cli("audit", "--action", "nothing.*", "--json").stdout == ""

    # for people: one page as a table, with the cursor to the next
    page = cli("audit", "--model", "credit-risk", "--limit", "3").stdout
    assert "version.registered" in page and "Next page: --cursor " in page
    cursor = page.split("Next page: --cursor ")[1].split()[0].strip("'")
    rest = _lines(cli("audit", "--model", "credit-risk", "--cursor", cursor, "--json"))
    assert rest == credit[3:]
    _assert_one_line_error(cli("audit", "--version", "2", code=1), "needs the model")


# --------------------------------------------------------------------------- keys and policy


def test_keys_export(cli: Run, api: Registry, tmp_path: Path) -> None:
    printed = cli("keys", "export").stdout
    assert printed.startswith("-----BEGIN PUBLIC KEY-----")
    assert printed.rstrip().endswith("-----END PUBLIC KEY-----")
    out = tmp_path / "registry.pub.pem"
    cli("keys", "export", "-o", str(out))
    assert out.read_bytes() == printed.encode() == api.public_key()


def test_relaxing_four_eyes_lets_the_registrant_approve(cli: Run, register: Callable[..., str]) -> None:
    uri = register()
    shown = _json(cli("policy", "show", "--json"))
    assert shown["four_eyes"] is True
    assert "nothing to change" in cli("policy", "set", "--reason", "x", code=2).stderr
    assert "--reason" in cli("policy", "set", "--no-four-eyes", code=2).stderr

    relaxed = cli("policy", "set", "--no-four-eyes", "--reason", "team of one, GOV-7").stdout
    assert "Four eyes      no" in relaxed
    assert _json(cli("policy", "show", "--json"))["four_eyes"] is False
    approved = _json(cli("approve", uri, "--reason", "self-review allowed by GOV-7", "--as", ALICE, "--json"))
    assert (approved["stage"], approved["approved_by"]) == ("approved", ALICE)

    (change,) = _lines(cli("audit", "--action", "policy.changed", "--json"))
    assert change["data"]["relaxed"] == ["four_eyes"]
    assert change["reason"] == "team of one, GOV-7" and change["actor"] == CAROL


def test_approver_role(cli: Run, register: Callable[..., str]) -> None:
    uri = register()
    cli("policy", "set", "--approver-role", "model-risk", "--role", f"{BOB}=model-risk", "--reason", "GOV-8")
    doc = _json(cli("policy", "show", "--json"))
    assert (doc["four_eyes"], doc["approver_role"], doc["roles"]) == (
        True,
        "model-risk",
        {BOB: ["model-risk"]},
    )
    _assert_one_line_error(cli("approve", uri, "--reason", "x", code=1), "model-risk")
    cli("approve", uri, "--reason", "reviewed", "--as", BOB)

    cli("policy", "set", "--approver-role", "", "--role", f"{BOB}=", "--reason", "GOV-9")
    doc = _json(cli("policy", "show", "--json"))
    assert (doc["approver_role"], doc["roles"]) == (None, {})
    (_, last) = _lines(cli("audit", "--action", "policy.changed", "--json"))
    assert last["data"]["relaxed"] == ["approver_role"]


# --------------------------------------------------------------------------- verify and rebuild-state


def test_verify_counts_events_and_names_a_forged_one(
    cli: Run, register: Callable[..., str], db_url: str
) -> None:
    uri = register()
    cli("approve", uri, "--reason", "reviewed", "--as", BOB)
    n_events = len(_lines(cli("audit", "--json")))

    clean = cli("verify")
    assert f"{n_events} ledger events" in clean.stdout and "no problems" in clean.stdout
    report = _json(cli("verify", "--json"))
    assert report["ok"] is True and report["events_checked"] == n_events
    assert report["checkpoints_checked"] >= 2

    (approval,) = _lines(cli("audit", "--action", "version.approved", "--json"))
    seq = approval["seq"]
    if db_url.startswith("dynamodb:"):
        DynamoAttacker(db_url).update_event(seq, reason="forged")
        engine = None
    else:
        engine = _engine(db_url)
    sqlite = db_url.startswith("sqlite")
    try:
        if engine is not None:
            with engine.begin() as conn:
                if sqlite:
                    conn.exec_driver_sql("DROP TRIGGER ledger_events_no_update")
                else:
                    conn.exec_driver_sql("DROP TRIGGER ledger_events_append_only ON ledger_events")
                conn.execute(
                    sa.text("UPDATE ledger_events SET reason = 'forged' WHERE seq = :seq"), {"seq": seq}
                )

        broken = cli("verify", code=1)
        assert f"ledger event {seq}" in broken.stdout and "edited_event" in broken.stdout
        report = _json(cli("verify", "--json", code=1))
        assert report["ok"] is False
        assert {"kind": "edited_event", "path": f"ledger event {seq}"}.items() <= report["problems"][
            0
        ].items()
    finally:
        if engine is not None and not sqlite:  # the PostgreSQL database is shared: put its guard back
            with engine.begin() as conn:
                conn.exec_driver_sql(
                    "CREATE TRIGGER ledger_events_append_only BEFORE UPDATE OR DELETE ON ledger_events "
                    "FOR EACH ROW EXECUTE FUNCTION modelledger_append_only()"
                )
        if engine is not None:
            engine.dispose()


def test_rebuild_state_repairs_an_edited_state_table(
    cli: Run, register: Callable[..., str], db_url: str
) -> None:
    uri = register()
    assert "match the ledger" in cli("rebuild-state", "--check").stdout

    if db_url.startswith("dynamodb:"):
        editor = DynamoAttacker(db_url)
        editor.put_state({**editor.version_item("credit-risk", 1, "T"), "stage": "approved"})
    else:
        engine = _engine(db_url)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql("UPDATE version_state SET stage = 'approved'")
        finally:
            engine.dispose()
    assert _state(cli, uri)["stage"] == "approved"

    check = cli("rebuild-state", "--check", code=1).stdout
    assert "1 differences" in check and "state of models:/credit-risk/1" in check
    doc = _json(cli("rebuild-state", "--check", "--json", code=1))
    (diff,) = doc["differences"]
    assert (diff["ledger"]["stage"], diff["table"]["stage"]) == ("validated", "approved")
    assert "state" in cli("verify", code=1).stdout

    fixed = cli("rebuild-state").stdout
    assert "1 differences fixed" in fixed
    assert _state(cli, uri)["stage"] == "validated"
    cli("rebuild-state", "--check")
    cli("verify")
