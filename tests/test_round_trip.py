"""Every result type a Registry verb returns survives ``to_dict`` -> JSON -> ``from_dict``.

A remote client receives these dicts as JSON from a registry server and must hand back the
same types the local registry returns, equal to them. The instances come from a real
registry (SQLite and PostgreSQL): data sets with a processing step, versions that pass and
fail their gates, an approval and a deployment, captured predictions traced back, an alias
moved and removed, a member whose key is revoked, an erasure, an abandoned upload that gc
finds, and finally state tables and a ledger event tampered with, so that ``check_state``,
``verify`` and ``verify_ledger`` have something to report.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import DynamoAttacker, attacker

from modelledger import Registry
from modelledger._audit import AliasChange, StateDifference
from modelledger._domain import (
    ColumnSpec,
    DatasetSource,
    DatasetVersion,
    Erasure,
    FileEntry,
    GcItem,
    GcReport,
    Model,
    ModelVersion,
    Problem,
    ProcessingStep,
    Signature,
    UploadedVersion,
    VerifyReport,
)
from modelledger._ledger import ChainProblem, ChainReport
from modelledger._lifecycle import GateResult, VersionState
from modelledger._lineage import LineageEdge, LineageGraph, LineageNode, VersionDiff
from modelledger._members import Member, MemberKey
from modelledger._object_lock import ObjectLock, ObjectRetention
from modelledger._trace import TraceReport

REPO = "https://git.example.com/risk/credit.git"
QUERY = "SELECT * FROM applications WHERE applied_on >= '2024-01-01'"


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _survives(obj: Any) -> str | None:
    """Why ``obj`` does not come back equal from its dict through JSON, or None when it does."""
    data = _json(obj.to_dict())
    back = type(obj).from_dict(data)
    if type(back) is not type(obj):
        return f"{type(obj).__name__}: came back as {type(back).__name__}"
    if back != obj:
        return f"{type(obj).__name__}: {back!r} != {obj!r}"
    if _json(back.to_dict()) != data:
        return f"{type(obj).__name__}: its dict changed on the way: {back.to_dict()!r} != {data!r}"
    return None


def _check(objects: list[Any]) -> None:
    failures = [why for why in map(_survives, objects) if why is not None]
    assert not failures, "\n".join(failures)


@pytest.fixture
def world(db_url: str, tmp_path: Path, credit_data, fitted_pipeline) -> Iterator[dict[str, Any]]:
    """Results of (almost) every Registry verb, from one small but complete story."""
    from sklearn.linear_model import LogisticRegression

    art = str(tmp_path / "artifacts")
    alice = Registry.open(db_url, artifacts=art, actor="alice@example.com")
    bob = Registry.open(db_url, artifacts=art, actor="bob@example.com")
    dave = Registry.open(db_url, artifacts=art, actor="dave@example.com")
    out: dict[str, Any] = {"alice": alice}
    X, y = credit_data
    frame = X.assign(defaulted=y)
    raw = alice.datasets.register(
        "applications-raw",
        frame,
        source={
            "uri": "postgresql://dwh.example.com/risk",
            "kind": "query",
            "query": QUERY,
            "extracted_at": "2024-07-01T06:00:00+00:00",
            "code": {"repo_url": REPO, "path": "extract.py", "revision": "1" * 40},
        },
        capture=False,
    )
    split = {
        "name": "split",
        "kind": "train_test_split",
        "params": {"test_size": 0.25, "shuffle": False},
        "columns": ["age", "income"],
        "inputs": [raw.uri],
        "code": {"repo_url": REPO, "path": "prepare.py", "revision": "1" * 40},
    }
    train = alice.datasets.register("applications-train", frame.iloc[:300], steps=[split], capture=False)
    holdout = alice.datasets.register("applications-holdout", frame.iloc[300:], steps=[split], capture=False)
    scratch = alice.datasets.register("scratch", frame.head(10), capture=False)
    datasets = {"train": train, "holdout": holdout}
    manifest = {
        "source": {"repo_url": REPO, "path": "train.py", "revision": "1" * 40},
        "dependencies": {"scikit-learn": "1.4.2", "numpy": "1.26.4"},
    }
    v1 = alice.register(
        "credit-risk",
        fitted_pipeline,
        sample_input=X.head(),
        datasets=datasets,
        metrics={"auc": 0.81},
        manifest={**manifest, "gates": ["auc >= 0.8 on holdout"]},
    )
    # v2: another model, new code, and a gate on a metric it does not have, so it is rejected
    v2 = alice.register(
        "credit-risk",
        LogisticRegression(C=2.0, max_iter=500).fit(X[["age", "income"]], y),
        sample_input=X[["age", "income"]].head(),
        datasets={"train": frame.iloc[:200]},
        metrics={"auc": 0.84},
        params={"C": 2.0},
        manifest={
            "source": {**manifest["source"], "revision": "2" * 40},
            "dependencies": {"scikit-learn": "1.5.0"},
            "gates": ["auc >= 0.8", "ks > 0.3"],
        },
    )
    out["states"] = [bob.approve(v1.uri, reason="reviewed holdout report"), alice.state(v2.uri)]
    out["states"].append(bob.deploy(v1.uri, reason="release"))
    with alice.load("models:/credit-risk@production", capture=True, flush_rows=50) as predictor:
        result = predictor.predict(X.head(5))
    out["traces"] = [alice.trace(r.prediction_id) for r in result.receipts[:2]]
    alice.set_alias("credit-risk", "champion", 1, reason="best so far")
    alice.delete_alias("credit-risk", "champion", reason="no champion")
    out["alias_history"] = alice.alias_history("credit-risk")
    out["gates"] = [
        GateResult.from_dict(r)
        for uri in (v1.uri, v2.uri)
        for e in alice.history(uri)
        if e.action == "validation.evaluated"
        for r in e.data["results"]
    ]
    out["lineage"] = [alice.lineage(v1.uri), alice.lineage(v2.uri), alice.lineage(raw.uri)]
    out["diffs"] = [alice.diff(v1.uri, v2.uri), alice.diff(v1.uri, v1.uri)]
    out["models"] = [alice.get_model("credit-risk")]
    out["downloads"] = [alice.download(v1.uri, tmp_path / "download", manifest=True)]
    out["versions"] = [v1, v2, alice.get_version(v1.uri), *alice.list_versions("credit-risk")]
    out["datasets"] = [
        raw,
        train,
        holdout,
        alice.datasets.get(train.uri),
        alice.datasets.get("credit-risk-train"),
    ]
    pem = dave.whoami()["public_key"]
    enrolled = alice.enrol("dave@example.com", pem, roles=["viewer"], models=["credit-*"])
    revoked = alice.revoke_key("dave@example.com", enrolled.keys[0].key_id, reason="left the team")
    out["members"] = [enrolled, revoked, *alice.members()]
    out["erasures"] = [alice.erase(scratch.uri, reason="GDPR art. 17, ticket 812")]
    out["uploaded"] = alice.upload("credit-risk", fitted_pipeline, capture=False)  # never registered
    out["gc"] = alice.gc(older_than=timedelta(0))
    out["verify_before"] = alice.verify()  # the upload is young: in flight, not a problem
    out["ledger_before"] = alice.verify_ledger()
    out["policy"] = alice.policy()
    out["events"] = list(alice.audit(limit=500))
    out["token"] = alice.create_token("bob@example.com", expires="7d")[1]
    if db_url.startswith("dynamodb:"):
        editor = DynamoAttacker(db_url)
        for model in [m.name for m in alice.list_models(limit=1000)]:
            for item in editor.model_items(model):
                if item["sk"].startswith("T#"):
                    editor.put_state({**item, "approved_by": "mallory@example.com"})
                elif item["sk"].startswith("A#"):
                    editor.delete_state(item)
        editor.update_event(3, reason="nothing to see")
    else:
        with attacker(db_url) as conn:
            conn.exec_driver_sql("UPDATE version_state SET approved_by = 'mallory@example.com'")
            conn.exec_driver_sql("DELETE FROM model_aliases")
            conn.exec_driver_sql("UPDATE ledger_events SET reason = 'nothing to see' WHERE seq = 3")
    out["differences"] = alice.check_state()
    out["verify_after"] = alice.verify()
    out["ledger_after"] = alice.verify_ledger()
    yield out
    for reg in (alice, bob, dave):
        reg.close()


def _story_is_full(world: dict[str, Any]) -> None:
    """Something in every field that can be empty: a round trip of empty reports proves little."""
    assert {s.stage for s in world["states"]} == {"approved", "rejected", "deployed"}
    trace: TraceReport = world["traces"][0]
    assert trace.receipt_valid and trace.datasets and trace.model_steps
    assert trace.governance["approvals"] and trace.governance["deployments"]
    assert [c.version for c in world["alias_history"] if c.alias == "champion"] == [1, None]
    assert {(g.passed, g.value is None) for g in world["gates"]} == {(True, False), (False, True)}
    diff: VersionDiff = world["diffs"][0]
    assert diff.params and diff.metrics and diff.code and diff.framework and diff.dependencies
    assert diff.datasets and world["diffs"][1].empty
    assert any(n.kind == "source" for n in world["lineage"][0].nodes.values())
    assert any(n.kind == "model" for n in world["lineage"][2].nodes.values())  # downstream of raw
    dv: DatasetVersion = world["datasets"][1]
    assert dv.steps and dv.steps[0].inputs and dv.stats and dv.key
    assert world["datasets"][0].source.query and world["datasets"][0].source.code
    revoked: Member = world["members"][1]
    assert revoked.keys[0].revoked_seq is not None and revoked.keys[0].revoked_time
    assert revoked.models == ("credit-*",)
    assert any(m.root for m in world["members"])
    assert world["erasures"][0].files
    assert world["downloads"][0].downloaded and world["downloads"][0].manifest_file
    gc: GcReport = world["gc"]
    assert gc.items and all(i.modified is not None for i in gc.items)
    before: VerifyReport = world["verify_before"]
    assert before.ok and before.in_flight and before.erased
    after: VerifyReport = world["verify_after"]
    assert not after.ok and "state" in {p.kind for p in after.problems}
    assert world["ledger_before"].ok and world["ledger_before"].last_checkpoint_seq
    ledger_after: ChainReport = world["ledger_after"]
    assert not ledger_after.ok and ledger_after.first_problem is not None
    found = {d.what for d in world["differences"]}
    assert {"state of models:/credit-risk/1", "models:/credit-risk@production"} <= found


def _parts(world: dict[str, Any]) -> list[Any]:
    """The types inside the results, on their own (a client may receive them alone)."""
    graph: LineageGraph = world["lineage"][0]
    dv: DatasetVersion = world["datasets"][1]
    member: Member = world["members"][1]
    mv: ModelVersion = world["versions"][0]
    assert mv.signature is not None
    return [
        *graph.nodes.values(),
        *graph.edges,
        *world["verify_after"].problems,
        *world["verify_before"].in_flight,
        *world["gc"].items,
        *member.keys,
        *dv.schema,
        *dv.steps,
        dv.source,
        *mv.files,
        mv.signature,
        world["ledger_after"].first_problem,
    ]


def test_every_result_of_a_real_registry_round_trips(world: dict[str, Any]) -> None:
    """One story per database (building it is the slow part), every result checked."""
    _story_is_full(world)
    # every result the story collected, whatever is added to it later
    lists = [k for k, v in world.items() if isinstance(v, list)]
    singles = [k for k, v in world.items() if not isinstance(v, (list, Registry))]
    _check([obj for key in lists for obj in world[key]] + [world[k] for k in singles] + _parts(world))

    # each side of a state difference survives as the JSON value it was
    back = [StateDifference.from_dict(_json(d.to_dict())) for d in world["differences"]]
    alias = next(d for d in back if d.what == "models:/credit-risk@production")
    assert (alias.expected, alias.found) == (1, None)
    state = next(d for d in back if d.what == "state of models:/credit-risk/1")
    assert state.found["approved_by"] == "mallory@example.com"

    # from_dict copies: changing the received dict afterwards changes nothing
    trace: TraceReport = world["traces"][0]
    data = _json(trace.to_dict())
    copy = TraceReport.from_dict(data)
    data["model"]["uri"] = "models:/changed/1"
    assert copy.model["uri"] == trace.model["uri"]

    # a graph keeps its node order, which its renderings depend on
    graph: LineageGraph = world["lineage"][0]
    again = LineageGraph.from_dict(_json(graph.to_dict()))
    assert list(again.nodes) == list(graph.nodes)
    assert again.to_dot() == graph.to_dot() and again.to_mermaid() == graph.to_mermaid()

    # a listed version decodes its manifest and files lazily (LazyJSON, LazyFiles); its copy
    # holds a dict and a tuple, and the two compare equal both ways
    listed: ModelVersion = world["versions"][-1]
    assert type(listed.manifest).__name__ == "LazyJSON"
    mv = ModelVersion.from_dict(_json(listed.to_dict()))
    assert mv == listed and listed == mv
    assert isinstance(mv.manifest, dict) and isinstance(mv.files, tuple)

    # to_json copies the stored manifest and files as text, and says the same as to_dict,
    # for a version as read (lazy), once decoded, and for its plain copy
    for version in (world["versions"][0], listed, mv):
        assert json.loads(version.to_json(stage="approved")) == {**version.to_dict(), "stage": "approved"}
    registry = next(v for v in world.values() if isinstance(v, Registry))
    fresh = registry.list_versions("credit-risk").items[0]
    assert fresh.files.stored_text is not None  # not decoded yet: copied as stored
    assert json.loads(fresh.to_json()) == _json(fresh.to_dict())


# ----------------------------------------------------------------------------- by hand

WHEN = datetime(2026, 11, 1, 9, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "obj",
    [
        VersionState("m", 1, "candidate", "alice@example.com"),
        VersionState("m", 2, "approved", "a", approved_by="b", decided_at="2026-11-01T09:30:00Z", last_seq=9),
        GateResult("auc >= 0.8", None, False),
        GateResult("auc >= 0.8", 0.1 + 0.2, True),  # a float that prints with all its digits
        MemberKey("k1", "-----BEGIN PUBLIC KEY-----\n...\n", 1),
        MemberKey("k1", "pem", 1, "2026-11-01T09:30:00.000001Z", 5, "2026-11-02T00:00:00.000000Z"),
        Member("a", ("viewer",)),
        Member("a", (), models=(), keys=()),
        Member("a", ("admin", "serving"), ("x-*", "y"), (MemberKey("k", "p", 1),), root=True),
        Problem("orphan", "models/x/abc", "not referenced"),
        Problem("mismatch", "models/x/abc/a.bin", "sha256 differs", version="models:/x/1"),
        Erasure("models:/x/1", "version.erased", "a", "2026-11-01T09:30:00Z", "why", 4),
        Erasure("datasets:/d/1", "dataset.erased", "a", "t", "r", 5, ({"path": "p", "size": 1},)),
        VerifyReport(0, 0, ()),
        VerifyReport(
            1,
            2,
            (Problem("state", "s", "d"),),
            events_checked=3,
            checkpoints_checked=1,
            datasets_checked=4,
            in_flight=(Problem("orphan", "p", "d", "v"),),
            unrecorded=(Problem("unrecorded", "c", "d"),),
            erased=(Erasure("t", "a", "b", "c", "d", 1),),
            delegated={"key": 2, "token": 1},
        ),
        GcItem("datasets/.staging-x.parquet", "ingest staging", 0, None),
        GcItem("models/x/abc", "model folder", 10, WHEN + timedelta(microseconds=7)),
        GcReport((), deleted=False),
        GcReport((GcItem("p", "k", 3, None), GcItem("q", "k", 4, WHEN)), deleted=True, recent=2),
        GcReport(
            (), deleted=True, retained=(ObjectRetention("models/x/a/manifest.json", "compliance", WHEN),)
        ),
        ObjectRetention("p", None, None),
        ObjectRetention(
            "p", "governance", WHEN + timedelta(microseconds=3), legal_hold=True, version_id="v1"
        ),
        VerifyReport(0, 0, (), retention=(ObjectRetention("p", None, None, legal_hold=True),)),
        ObjectLock("compliance", timedelta(weeks=52), legal_hold=True),
        ObjectLock("governance", timedelta(seconds=90)),
        DatasetSource(),
        DatasetSource("s3://b/k.csv", "file", None, "2026-11-01", {"dirty": True}),
        ProcessingStep("s"),
        ColumnSpec("c", "float", nullable=True),
        Signature(()),
        DatasetVersion(
            "d", 1, "sha256:x", "datasets/d/x.parquet", "f", 0, 0, (), {}, DatasetSource(), created_at=WHEN
        ),
        UploadedVersion("m", "models/m/x", "sha256:x", "python", (), {}),
        UploadedVersion("m", "f", "d", "sklearn", (FileEntry("a", 1, "s"),), {"nested": {"k": [1, None]}}),
        LineageNode("n", "source", "label"),
        LineageEdge("a", "b"),
        LineageGraph("root"),
        LineageGraph(
            "b",
            {"a": LineageNode("a", "dataset", "A", {"rows": 3}), "b": LineageNode("b", "model", "B")},
            [LineageEdge("a", "b", "train")],
        ),
        VersionDiff("a", "b", {}, {}, {}, {}, {}, []),
        VersionDiff(
            "a", "b", {"C": (0.5, None)}, {"auc": (None, 0.9)}, {}, {"python": ("3.11", "3.12")}, {}, []
        ),
        TraceReport({}, False, "signed by key k, which is not enrolled", {}, {}, {}),
        TraceReport({"id": "p"}, True, None, {"uri": "models:/m/1"}, {"events": []}, {"params": None}),
        AliasChange(1, "m", "production", None, "2026-11-01T09:30:00Z", "a", "alias.deleted"),
        AliasChange(2, "m", "champion", 3, "t", "a", "alias.set"),
        StateDifference("policy", {"four_eyes": True}, {"four_eyes": False}),
        StateDifference("models:/m@x", None, 2),
        StateDifference("archived models:/m", True, False),
        ChainProblem("hash_mismatch", 3, "event 3 was altered"),
        ChainProblem("duplicate", 4, "d", other_seq=2),
        ChainReport(True, 0, None),
        ChainReport(False, 2, ChainProblem("gap", 3, "d"), 2, "ab" * 32, 1, None),
        Model("m", created_at=WHEN),
    ],
    ids=lambda obj: type(obj).__name__,
)
def test_hand_built_edge_cases(obj: Any) -> None:
    _check([obj])


def _drop(data: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in keys}


@pytest.mark.parametrize(
    ("build", "obj", "derived"),
    [
        (VerifyReport.from_dict, VerifyReport(1, 1, (Problem("missing", "p", "d"),)), "ok"),
        (GcReport.from_dict, GcReport((GcItem("p", "k", 3, None),), deleted=False), "size_bytes"),
        (
            DatasetVersion.from_dict,
            DatasetVersion("d", 2, "x", "p", "f", 1, 1, (), {}, DatasetSource(), created_at=WHEN),
            "uri",
        ),
    ],
)
def test_derived_fields_are_ignored_on_the_way_in(
    build: Callable[[Mapping[str, Any]], Any], obj: Any, derived: str
) -> None:
    data = obj.to_dict()
    assert derived in data
    lying = {**data, derived: "anything"}
    assert build(lying) == build(_drop(data, derived)) == obj


def test_datetimes_come_back_aware_and_equal() -> None:
    item = GcItem.from_dict(_json(GcItem("p", "k", 1, WHEN).to_dict()))
    assert item.modified == WHEN and item.modified is not None and item.modified.utcoffset() == timedelta(0)
    dv = DatasetVersion("d", 1, "x", "p", "f", 1, 1, (), {}, DatasetSource(), created_at=WHEN, key=7)
    back = DatasetVersion.from_dict(_json(dv.to_dict()))
    assert back.created_at == WHEN and back.key == 7
