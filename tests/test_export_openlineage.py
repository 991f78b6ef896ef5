"""OpenLineage export: run events valid against the OpenLineage JSON schemas (spec 2-0-2 and
the facets' own schemas, committed under tests/schemas/openlineage/), with the facets the
lineage needs, a connected graph, the same bytes on every export, and a golden file."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator
from referencing import Registry as SchemaRegistry
from referencing import Resource
from referencing.exceptions import NoSuchResource
from tests.export_support import (  # noqa: F401
    DATA_SCIENTIST,
    REPO,
    REVISION,
    RISK_OFFICER,
    Demo,
    applications,
    check_golden,
    demo_fixture,
    golden_json,
    public_key,
)

from modelledger import InvalidConfig, MissingDependency, Registry, resolve_config
from modelledger._export.openlineage import CUSTOM_FACETS_SCHEMA
from modelledger.cli import main

SCHEMAS = Path(__file__).parent / "schemas" / "openlineage"


def _no_network(uri: str) -> Resource[Any]:
    raise NoSuchResource(ref=uri)  # every schema must be committed: nothing is downloaded


def _load() -> tuple[SchemaRegistry[Any], dict[str, dict[str, Any]]]:
    documents = {}
    for path in [
        SCHEMAS / "OpenLineage.json",
        *sorted((SCHEMAS / "facets").glob("*.json")),
        CUSTOM_FACETS_SCHEMA,
    ]:
        doc = json.loads(path.read_text(encoding="utf-8"))
        documents[doc["$id"]] = doc
    resources = [(i, Resource.from_contents(d)) for i, d in documents.items()]
    return SchemaRegistry(retrieve=_no_network).with_resources(resources), documents  # type: ignore[call-arg]


REGISTRY, DOCUMENTS = _load()
EVENT_ID = "https://openlineage.io/spec/2-0-2/OpenLineage.json"


def validate(events: list[dict[str, Any]]) -> int:
    """Every event against the RunEvent schema and every facet against its own schema (chosen by
    its ``_schemaURL``, under its standard name); returns how many facets were checked."""
    event_validator = Draft202012Validator(
        {"$ref": f"{EVENT_ID}#/$defs/RunEvent"},
        registry=REGISTRY,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    checked = 0
    for event in events:
        event_validator.validate(event)
        groups = [event["job"].get("facets", {}), event["run"].get("facets", {})]
        for dataset in [*event.get("inputs", []), *event.get("outputs", [])]:
            groups.append(dataset.get("facets", {}))
            groups.append(dataset.get("inputFacets", {}))
        for facets in groups:
            for name, facet in facets.items():
                schema_id, _, pointer = facet["_schemaURL"].partition("#")
                assert schema_id in DOCUMENTS, f"facet {name}: no committed schema {schema_id}"
                document = DOCUMENTS[schema_id]
                assert name in document["properties"], f"{name} is not the name {schema_id} gives its facet"
                assert pointer == document["properties"][name]["$ref"][1:]
                Draft202012Validator(
                    document, registry=REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER
                ).validate({name: facet})
                checked += 1
    return checked


@pytest.fixture(scope="module")
def exported(demo: Demo) -> dict[str, bytes]:
    return {
        "model": demo.registry.export("models:/credit-risk@production", format="openlineage"),
        "dataset": demo.registry.export(demo.train.uri, format="openlineage"),
        "prediction": demo.registry.export(demo.prediction_id, format="openlineage"),
    }


@pytest.mark.parametrize("kind", ["model", "dataset", "prediction"])
def test_every_event_and_facet_is_valid_against_the_openlineage_schemas(exported, kind: str) -> None:
    events = json.loads(exported[kind])
    assert events and all(e["eventType"] == "COMPLETE" for e in events)
    assert validate(events) >= 3 * len(events)


def test_the_schemas_catch_what_is_wrong() -> None:
    """The validation above can fail: a run id that is not a UUID, a facet without its producer,
    a facet without its own required field."""
    from jsonschema import ValidationError

    good = {
        "eventType": "COMPLETE",
        "eventTime": "2026-11-01T10:00:00Z",
        "producer": "https://pypi.org/project/modelledger/",
        "schemaURL": f"{EVENT_ID}#/$defs/RunEvent",
        "run": {"runId": str(uuid.uuid4()), "facets": {}},
        "job": {"namespace": "modelledger", "name": "x.train", "facets": {}},
    }
    validate([good])
    with pytest.raises(ValidationError):
        validate([{**good, "run": {"runId": "not-a-uuid"}}])
    facet = {
        "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet"
    }
    bad = {
        **good,
        "outputs": [{"namespace": "m", "name": "d", "facets": {"version": {**facet, "datasetVersion": "1"}}}],
    }
    with pytest.raises(ValidationError, match="not valid under any"):
        validate([bad])  # the event schema: every facet needs _producer
    produced = {**facet, "_producer": "https://pypi.org/project/modelledger/"}
    unversioned = {**good, "outputs": [{"namespace": "m", "name": "d", "facets": {"version": produced}}]}
    with pytest.raises(ValidationError, match="'datasetVersion' is a required property"):
        validate([unversioned])  # the facet's own schema


def _by_job(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["job"]["name"]: e for e in events}


def test_a_job_per_data_step_and_for_the_training_linked_by_their_data_sets(exported, demo: Demo) -> None:
    events = _by_job(json.loads(exported["model"]))
    assert set(events) == {
        "applications-raw.extract",
        "applications-clean.drop-duplicates",
        "applications-train.split",
        "credit-risk.train",
        "credit-risk.approve",
        "credit-risk.deploy",
    }
    names = lambda datasets: [(d["namespace"], d["name"]) for d in datasets]  # noqa: E731
    extract = events["applications-raw.extract"]
    assert names(extract["inputs"]) == [("postgresql://dwh.bank.example", "lending")]
    assert extract["job"]["facets"]["sql"]["query"].startswith("SELECT * FROM loan_applications")
    assert names(events["applications-clean.drop-duplicates"]["inputs"]) == names(extract["outputs"])
    split = events["applications-train.split"]  # one run made both sets
    assert names(split["outputs"]) == [
        ("modelledger", "datasets/applications-train"),
        ("modelledger", "datasets/applications-holdout"),
    ]
    train = events["credit-risk.train"]
    assert names(train["inputs"]) == names(split["outputs"])
    assert [i["facets"]["modelledger_artifact"]["role"] for i in train["inputs"]] == ["train", "holdout"]
    assert names(train["outputs"]) == [("modelledger", "models/credit-risk")]
    assert names(events["credit-risk.deploy"]["inputs"]) == names(train["outputs"])
    # every run is its own, and every id is a UUID
    run_ids = [e["run"]["runId"] for e in events.values()]
    assert len(set(run_ids)) == len(run_ids)
    assert all(uuid.UUID(r).version == 7 for r in run_ids)


def test_the_facets_carry_code_parameters_versions_and_schemas(exported, demo: Demo) -> None:
    events = _by_job(json.loads(exported["model"]))
    train = events["credit-risk.train"]
    code = train["job"]["facets"]["sourceCodeLocation"]
    assert (code["type"], code["repoUrl"], code["path"], code["version"]) == (
        "git",
        REPO,
        "train.py",
        REVISION,
    )
    params = {p["key"]: p["value"] for p in train["run"]["facets"]["executionParameters"]["parameters"]}
    assert params["params.n_estimators"] == "5" and params["params.learning_rate"] == "0.1"
    assert params["training_job.id"] == "demo-run-1"
    assert train["eventTime"] == "2026-11-01T10:05:00.000000Z"  # the training's end, as recorded
    model = train["outputs"][0]["facets"]
    assert model["version"]["datasetVersion"] == "1"
    assert model["modelledger_artifact"]["digest"] == demo.version.digest
    assert [f["sha256"] for f in model["modelledger_artifact"]["files"]] == [
        f.sha256 for f in demo.version.files
    ]

    holdout = train["inputs"][1]["facets"]
    assert holdout["version"]["datasetVersion"] == str(demo.holdout.version)
    assert [f["name"] for f in holdout["schema"]["fields"]] == [c.name for c in demo.holdout.schema]
    assert holdout["modelledger_artifact"]["digest"] == demo.holdout.digest

    step = events["applications-clean.drop-duplicates"]
    assert step["job"]["facets"]["sourceCodeLocation"]["path"] == "prepare.py"
    step_params = {p["key"]: p["value"] for p in step["run"]["facets"]["executionParameters"]["parameters"]}
    assert step_params == {"step.kind": "deduplicate", "params.subset": '["application_id"]'}

    approval = events["credit-risk.approve"]["run"]["facets"]["modelledger_ledgerEvent"]
    assert (approval["actor"], approval["action"]) == (RISK_OFFICER, "version.approved")
    assert approval["reason"].startswith("Reviewed holdout AUC")
    deploy = events["credit-risk.deploy"]["run"]["facets"]["modelledger_ledgerEvent"]
    assert deploy["alias"] == "production" and deploy["seq"] > approval["seq"]


def test_a_data_set_exports_its_own_upstream_only(exported) -> None:
    events = _by_job(json.loads(exported["dataset"]))
    assert set(events) == {
        "applications-raw.extract",
        "applications-clean.drop-duplicates",
        "applications-train.split",
    }
    # the split run as far as this set knows it: the holdout set was not collected
    assert [o["name"] for o in events["applications-train.split"]["outputs"]] == [
        "datasets/applications-train"
    ]


def test_a_prediction_adds_the_call_that_made_it(exported, demo: Demo) -> None:
    events = _by_job(json.loads(exported["prediction"]))
    predict = events["credit-risk.predict"]
    params = {p["key"]: p["value"] for p in predict["run"]["facets"]["executionParameters"]["parameters"]}
    assert params["prediction_id"] == demo.prediction_id
    assert [i["name"] for i in predict["inputs"]] == ["models/credit-risk"]
    assert "credit-risk.train" in events


def test_exporting_the_same_registry_twice_gives_the_same_bytes(exported, demo: Demo) -> None:
    again = Registry.open(
        f"sqlite:///{demo.root / 'registry.db'}", artifacts=str(demo.root / "artifacts"), actor=RISK_OFFICER
    )
    with again:
        assert again.export("models:/credit-risk/1", format="openlineage") == exported["model"]
    assert demo.registry.export(demo.prediction_id, format="openlineage") == exported["prediction"]


def test_the_command_writes_the_same_bytes(exported, demo: Demo, tmp_path: Path) -> None:
    url = f"sqlite:///{demo.root / 'registry.db'}"
    out = tmp_path / "lineage.json"
    args = ["export", "models:/credit-risk@production", "--format", "openlineage", "--registry", url]
    result = CliRunner().invoke(main, [*args, "-o", str(out), "--as", DATA_SCIENTIST])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == exported["model"]
    printed = CliRunner().invoke(main, [*args, "--as", DATA_SCIENTIST])
    assert printed.exit_code == 0 and printed.stdout_bytes == exported["model"]
    missing = CliRunner().invoke(
        main, ["export", "models:/no-such-model/1", "--format", "openlineage", "--registry", url]
    )
    assert (
        missing.exit_code == 1 and missing.output.startswith("Error: ") and "no-such-model" in missing.output
    )


def test_golden_file(exported) -> None:
    check_golden("openlineage_model.json", golden_json(json.loads(exported["model"])))
    check_golden("openlineage_prediction.json", golden_json(json.loads(exported["prediction"])))


# ---------------------------------------------------------------------- emitting as it happens


class Receiver:
    """A tiny OpenLineage HTTP endpoint on loopback (``POST /api/v1/lineage``), in a thread."""

    def __init__(self, port: int = 0, *, delay: float = 0.0, refuse: str | None = None) -> None:
        received: list[dict[str, Any]] = []
        authorizations: list[str | None] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(delay)  # a receiver that takes its time
                ok = self.path == "/api/v1/lineage" and self.headers["Content-Type"] == "application/json"
                if ok and refuse is not None and json.loads(body)["job"]["name"] == refuse:
                    self.send_response(400)  # this event, never: as a receiver refuses a bad one
                    self.end_headers()
                    return
                if ok:
                    received.append(json.loads(body))
                    authorizations.append(self.headers["Authorization"])
                self.send_response(201 if ok else 404)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.received = received
        self.authorizations = authorizations
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1/lineage"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _story(root: Path, lineage: str, url: str | None = None) -> tuple[Registry, Registry]:
    """A registry (SQLite under ``root`` unless ``url``) sending events to ``lineage``: a raw
    set, a split of it, a folder model registered with both, approved by a second member and
    deployed."""
    url, artifacts = url or f"sqlite:///{root / 'registry.db'}", str(root / "artifacts")
    owner = Registry.open(url, artifacts=artifacts, actor=DATA_SCIENTIST, openlineage=lineage)
    owner.init()
    owner.enrol(RISK_OFFICER, public_key(RISK_OFFICER), roles=["approver", "deployer"])
    frame = applications(24)
    raw = owner.datasets.register(
        "applications-raw", frame, source={"uri": "postgresql://dwh/lending", "kind": "table"}, capture=False
    )
    split = {"name": "split", "kind": "train_test_split", "params": {"test_size": 0.25}, "inputs": [raw.uri]}
    train = owner.datasets.register("applications-train", frame.iloc[:18], steps=[split], capture=False)
    folder = root / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"weights")
    mv = owner.register(
        "credit-risk",
        folder,
        datasets={"train": train.uri},
        manifest={
            "params": {"C": 0.5},
            "source": {"repo_url": REPO, "path": "train.py", "revision": REVISION},
        },
        capture=False,
    )
    officer = Registry.open(url, artifacts=artifacts, actor=RISK_OFFICER, openlineage=lineage)
    officer.approve(mv.uri, reason="reviewed")
    officer.deploy(mv.uri, reason="release")
    return owner, officer


def test_writes_send_their_events_to_an_http_receiver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELLEDGER_OPENLINEAGE_API_KEY", "s3cret-key")
    receiver = Receiver()
    try:
        owner, officer = _story(tmp_path, receiver.url)
        officer.close()  # closing delivers what is still pending
        status = owner.flush_openlineage(timeout=10)
        owner.close()
    finally:
        receiver.stop()
    jobs = [e["job"]["name"] for e in receiver.received]
    assert sorted(jobs) == sorted(
        [
            "applications-raw.extract",
            "applications-train.split",
            "credit-risk.train",
            "credit-risk.approve",
            "credit-risk.deploy",
        ]
    )
    assert validate(receiver.received) >= 3 * len(jobs)
    assert set(receiver.authorizations) == {"Bearer s3cret-key"}
    assert (status["pending"], status["last_error"]) == (0, None)
    assert status["transport"] == receiver.url
    sent = [
        json.loads(line)
        for line in (tmp_path / "registry.db.openlineage" / "sent.jsonl").read_text().splitlines()
    ]
    assert sorted(s["runId"] for s in sent) == sorted(e["run"]["runId"] for e in receiver.received)
    # the same training and governance runs as an export of the registry gives
    again = Registry.open(f"sqlite:///{tmp_path / 'registry.db'}", artifacts=str(tmp_path / "artifacts"))
    with again:
        exported = {
            e["job"]["name"]: e["run"]["runId"]
            for e in json.loads(again.export("models:/credit-risk/1", format="openlineage"))
        }
    emitted = {e["job"]["name"]: e["run"]["runId"] for e in receiver.received}
    for job in ("credit-risk.train", "credit-risk.approve", "credit-risk.deploy", "applications-raw.extract"):
        assert emitted[job] == exported[job]


def test_a_receiver_that_is_down_fails_nothing_and_gets_the_events_later(tmp_path: Path) -> None:
    port = _free_port()
    lineage = f"http://127.0.0.1:{port}/api/v1/lineage"
    started = time.monotonic()
    owner, officer = _story(tmp_path, lineage)
    officer.close()
    assert time.monotonic() - started < 20  # nothing waited on the receiver (the story alone: ~1 s)
    assert owner.get_version("models:/credit-risk@production").version == 1
    status = owner.flush_openlineage(timeout=10)
    assert status["pending"] == 5 and status["sent"] == 0
    assert "Connection refused" in status["last_error"] or "URLError" in status["last_error"]
    owner.close()

    receiver = Receiver(port)  # back up: a later process delivers what waited, in order
    try:
        later = Registry.open(
            f"sqlite:///{tmp_path / 'registry.db'}",
            artifacts=str(tmp_path / "artifacts"),
            openlineage=lineage,
        )
        assert later.openlineage_status()["pending"] == 5
        status = later.flush_openlineage(timeout=10)
        later.close()
    finally:
        receiver.stop()
    assert (status["pending"], status["sent"], status["last_error"]) == (0, 5, None)
    jobs = [e["job"]["name"] for e in receiver.received]
    assert jobs[:2] == ["applications-raw.extract", "applications-train.split"]
    assert jobs[-2:] == ["credit-risk.approve", "credit-risk.deploy"]


def test_a_slow_receiver_does_not_slow_a_write(tmp_path: Path) -> None:
    receiver = Receiver(delay=1.5)
    try:
        registry = Registry.open(
            f"sqlite:///{tmp_path / 'r.db'}", artifacts=str(tmp_path / "a"), openlineage=receiver.url
        )
        registry.init()
        started = time.monotonic()
        dv = registry.datasets.register(
            "applications-raw", applications(8), source={"uri": "s3://lake/raw.csv"}
        )
        assert time.monotonic() - started < 1.0  # the write did not wait for the 1.5 s answer
        assert registry.flush_openlineage(timeout=10)["pending"] == 0
        registry.close()
    finally:
        receiver.stop()
    assert [e["outputs"][0]["facets"]["modelledger_artifact"]["uri"] for e in receiver.received] == [dv.uri]
    assert [(i["namespace"], i["name"]) for i in receiver.received[0]["inputs"]] == [("s3://lake", "raw.csv")]


def test_an_event_the_receiver_refuses_for_good_is_set_aside(tmp_path: Path) -> None:
    receiver = Receiver(refuse="applications-raw.extract")
    try:
        registry = Registry.open(
            f"sqlite:///{tmp_path / 'r.db'}", artifacts=str(tmp_path / "a"), openlineage=receiver.url
        )
        registry.init()
        raw = registry.datasets.register(
            "applications-raw", applications(8), source={"uri": "s3://lake/raw.csv"}
        )
        step = {"name": "dedupe", "kind": "deduplicate", "inputs": [raw.uri]}
        registry.datasets.register("applications-clean", applications(8).iloc[:6], steps=[step])
        status = registry.flush_openlineage(timeout=10)
        registry.close()
    finally:
        receiver.stop()
    assert [e["job"]["name"] for e in receiver.received] == ["applications-clean.dedupe"]  # not held back
    assert (status["pending"], status["rejected"], status["sent"]) == (0, 1, 1)
    assert status["last_error"] is None  # the receiver took the rest: it is up
    kept = list((tmp_path / "r.db.openlineage" / "rejected").glob("*.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text())["job"]["name"] == "applications-raw.extract"


def test_a_file_transport_appends_json_lines_and_the_command_shows_them(tmp_path: Path) -> None:
    target = tmp_path / "events" / "lineage.jsonl"
    owner, officer = _story(tmp_path, str(target))
    officer.close()
    owner.close()
    events = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(events) == 5 and validate(events) > 0
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    env = {"MODELLEDGER_OPENLINEAGE": f"file://{target}"}
    result = CliRunner().invoke(main, ["openlineage", "status", "--registry", url, "--json"], env=env)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert (shown["pending"], shown["sent"], shown["transport"]) == (0, 5, str(target))
    flushed = CliRunner().invoke(main, ["openlineage", "flush", "--registry", url], env=env)
    assert flushed.exit_code == 0 and "0 pending" in flushed.output
    unset = CliRunner().invoke(
        main, ["openlineage", "status", "--registry", url], env={"MODELLEDGER_OPENLINEAGE": ""}
    )
    assert unset.exit_code == 1 and "no OpenLineage transport is configured" in unset.output


def test_kafka_without_its_client_is_refused_at_open(tmp_path: Path) -> None:
    with pytest.raises(MissingDependency, match="confluent-kafka"):
        Registry.open(f"sqlite:///{tmp_path / 'r.db'}", openlineage="kafka://127.0.0.1:9092/lineage")
    with pytest.raises(InvalidConfig, match="kafka://<broker"):
        Registry.open(f"sqlite:///{tmp_path / 'r.db'}", openlineage="kafka://127.0.0.1:9092")
    with pytest.raises(InvalidConfig, match="transport must be"):
        Registry.open(f"sqlite:///{tmp_path / 'r.db'}", openlineage="ftp://example.com/x")


def test_approvals_and_deployments_a_registration_makes_itself_are_sent(tmp_path: Path) -> None:
    target = tmp_path / "lineage.jsonl"
    registry = Registry.open(
        f"sqlite:///{tmp_path / 'r.db'}", artifacts=str(tmp_path / "a"), openlineage=f"file://{target}"
    )
    registry.init()
    registry.set_policy({"auto_approve": True}, reason="low-risk tier")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"w")
    mv = registry.register(
        "credit-risk",
        folder,
        manifest={"stages": {"approved": "auto", "deployed": "auto"}, "target_alias": "champion"},
        capture=False,
    )
    registry.close()
    events = [json.loads(line) for line in target.read_text().splitlines()]
    assert [e["job"]["name"] for e in events] == [
        "credit-risk.train",
        "credit-risk.approve",
        "credit-risk.deploy",
    ]
    ledger = [e["run"]["facets"]["modelledger_ledgerEvent"] for e in events[1:]]
    assert (ledger[0]["actor"], ledger[0]["subject"]) == ("policy:auto-approve", mv.uri)
    assert ledger[1]["alias"] == "champion"
    assert validate(events) > 0


def test_a_database_server_registry_spools_in_the_state_folder(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: no registry folder, so the spool is a folder per database under
    ``$XDG_STATE_HOME``; the events are the same."""
    from tests.conftest import _pg_reset

    _pg_reset(pg_url)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    port = _free_port()
    owner, officer = _story(tmp_path, f"http://127.0.0.1:{port}/api/v1/lineage", url=pg_url)
    officer.close()
    status = owner.flush_openlineage(timeout=10)
    owner.close()
    assert status["pending"] == 5
    assert Path(status["spool"]).parent == tmp_path / "state" / "modelledger" / "openlineage"
    receiver = Receiver(port)
    try:
        later = Registry.open(pg_url, artifacts=str(tmp_path / "artifacts"), openlineage=receiver.url)
        later.close()  # closing alone delivers what earlier processes left
    finally:
        receiver.stop()
    assert len(receiver.received) == 5 and validate(receiver.received) > 0


def test_the_setting_comes_from_a_config_file_or_the_environment(tmp_path: Path) -> None:
    (tmp_path / "modelledger.toml").write_text('openlineage = "events/lineage.jsonl"\n')
    config = resolve_config(cwd=tmp_path, environ={})
    assert config.openlineage.value == str(tmp_path / "events" / "lineage.jsonl")  # relative to the file
    assert config.openlineage.source == str(tmp_path / "modelledger.toml")
    secret = "http://ol:hunter2@marquez:5000/api/v1/lineage"
    config = resolve_config(cwd=tmp_path, environ={"MODELLEDGER_OPENLINEAGE": secret})
    assert config.openlineage.value == secret and config.openlineage.kind == "environment"
    assert config.to_dict()["openlineage"]["value"] == "http://ol:***@marquez:5000/api/v1/lineage"
    assert resolve_config(cwd=tmp_path, openlineage="off", environ={}).openlineage.value == "off"
