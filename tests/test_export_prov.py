"""``export(..., format="prov")``: W3C PROV-JSON that the ``prov`` library reads, round-trips
and in which the lineage a reader looks for is there (the model derived from its training
data, the approval done by the approver)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prov.model import (
    ProvActivity,
    ProvAssociation,
    ProvDerivation,
    ProvDocument,
    ProvGeneration,
    ProvMembership,
    ProvUsage,
    QualifiedName,
)
from tests.export_std_support import edge_provenance, golden_text, shared_demo
from tests.export_support import RISK_OFFICER, Demo, check_golden

from modelledger._export import Provenance, collect, prov

PROV_RECORD_KINDS = (
    "entity",
    "activity",
    "agent",
    "used",
    "wasGeneratedBy",
    "wasDerivedFrom",
    "wasAttributedTo",
    "wasAssociatedWith",
    "wasInformedBy",
    "hadMember",
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return shared_demo(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(demo: Demo) -> bytes:
    return demo.registry.export(demo.version.uri, format="prov")


@pytest.fixture(scope="module")
def document(exported: bytes) -> ProvDocument:
    return ProvDocument.deserialize(content=exported.decode("utf-8"), format="json")


def _formal(record: Any) -> dict[str, Any]:
    """A relation's formal attributes by local name, qualified names as their full IRIs."""
    return {
        k.localpart: (v.uri if isinstance(v, QualifiedName) else v)
        for k, v in record.formal_attributes
        if v is not None
    }


def _attributes(record: Any) -> dict[str, set[Any]]:
    out: dict[str, set[Any]] = {}
    for k, v in record.attributes:
        out.setdefault(str(k), set()).add(v.uri if isinstance(v, QualifiedName) else v)
    return out


def _round_trip(text: str) -> tuple[ProvDocument, ProvDocument]:
    first = ProvDocument.deserialize(content=text, format="json")
    again = ProvDocument.deserialize(content=first.serialize(format="json"), format="json")
    return first, again


def test_the_export_round_trips_through_the_prov_library_record_for_record(exported: bytes) -> None:
    raw = json.loads(exported)
    first, again = _round_trip(exported.decode("utf-8"))
    # every record of the file was read (none dropped as unknown), and the library writes back
    # a document equal to the one it read
    assert len(first.get_records()) == sum(len(raw.get(kind, {})) for kind in PROV_RECORD_KINDS)
    assert set(raw) - {"prefix"} <= set(PROV_RECORD_KINDS)
    assert first == again
    assert {str(ns.uri) for ns in first.get_registered_namespaces()} >= {
        "models:/",
        "datasets:/",
        "sha256:",
        "urn:modelledger:terms:",
    }


def test_the_model_was_derived_from_its_training_data_and_only_used_its_holdout(
    document: ProvDocument, demo: Demo
) -> None:
    derivations = [_formal(r) for r in document.get_records(ProvDerivation)]
    from_model = {d["usedEntity"] for d in derivations if d["generatedEntity"] == demo.version.uri}
    assert from_model == {demo.train.uri}  # holdout data evaluates a model; it is not made from it
    usages = {
        (u["entity"], role)
        for r in document.get_records(ProvUsage)
        for u in [_formal(r)]
        if u["activity"] == f"{demo.version.uri}/training"
        for role in _attributes(r).get("prov:role", {None})
    }
    assert usages == {(demo.train.uri, "train"), (demo.holdout.uri, "holdout")}
    generated = [_formal(r) for r in document.get_records(ProvGeneration)]
    assert {"entity": demo.version.uri, "activity": f"{demo.version.uri}/training"} in [
        {k: v for k, v in g.items() if k in ("entity", "activity")} for g in generated
    ]


def test_the_approval_activity_is_associated_with_the_approver(document: ProvDocument, demo: Demo) -> None:
    approvals = [
        a
        for a in document.get_records(ProvActivity)
        if "urn:modelledger:terms:version.approved" in _attributes(a).get("prov:type", set())
    ]
    assert len(approvals) == 1
    approval = approvals[0]
    assert _attributes(approval)["ml:reason"] == {"Reviewed holdout AUC and bias report MRM-2026-114"}
    agents = {
        _formal(r)["agent"]: _attributes(r).get("prov:role", set())
        for r in document.get_records(ProvAssociation)
        if _formal(r)["activity"] == approval.identifier.uri
    }
    approver = f"urn:modelledger:identity:{RISK_OFFICER}"
    assert agents[approver] == {"urn:modelledger:terms:approver"}
    used = {
        _formal(r)["entity"]
        for r in document.get_records(ProvUsage)
        if _formal(r)["activity"] == approval.identifier.uri
    }
    assert used == {demo.version.uri}


def test_the_files_are_members_of_the_version_by_digest(document: ProvDocument, demo: Demo) -> None:
    members = {_formal(r)["entity"] for r in document.get_records(ProvMembership)}
    assert members == {f"sha256:{f.sha256}" for f in demo.version.files}


def test_the_data_is_traced_through_its_steps_to_the_warehouse(document: ProvDocument, demo: Demo) -> None:
    derivations = {
        (d["generatedEntity"], d["usedEntity"]) for d in map(_formal, document.get_records(ProvDerivation))
    }
    assert (demo.train.uri, demo.clean.uri) in derivations
    assert (demo.clean.uri, demo.raw.uri) in derivations
    source = f"{demo.raw.uri}/source"
    assert (demo.raw.uri, source) in derivations
    record = document.get_record(
        document.valid_qualified_name(f"datasets:{demo.raw.name}/{demo.raw.version}/source")
    )
    assert _attributes(record[0])["prov:location"] == {"postgresql://dwh.bank.example/lending"}


@pytest.mark.parametrize("which", ["dataset", "prediction"])
def test_a_data_set_and_a_prediction_export_round_trip_too(demo: Demo, which: str) -> None:
    identifier = demo.clean.uri if which == "dataset" else demo.prediction_id
    first, again = _round_trip(demo.registry.export(identifier, format="prov").decode("utf-8"))
    assert first == again
    if which == "prediction":
        generated = [_formal(r) for r in first.get_records(ProvGeneration)]
        prediction = f"urn:modelledger:prediction:{demo.prediction_id}"
        assert any(g["entity"] == prediction for g in generated)
        serving_used = {
            u["entity"]
            for u in map(_formal, first.get_records(ProvUsage))
            if u["activity"] == f"{prediction}/serving"
        }
        assert demo.version.uri in serving_used


def test_golden_file_and_same_registry_same_bytes(demo: Demo, exported: bytes) -> None:
    assert demo.registry.export(demo.version.uri, format="prov") == exported
    provenance: Provenance = collect(demo.registry, demo.version.uri)
    check_golden("prov.json", golden_text(exported, provenance))


def test_odd_names_nested_values_and_alias_events_still_round_trip() -> None:
    p = edge_provenance()
    assert p.model is not None
    first, again = _round_trip(prov.render(p).decode("utf-8"))
    assert first == again
    provn = first.get_provn()  # PROV-N too: the names are written as qualified names it accepts
    assert "entity(models:Fraud.Scorer_v2/12" in provn
    assert "agent(identity:ops%20lead" in provn
    model = first.get_record(first.valid_qualified_name("models:Fraud.Scorer_v2/12"))[0]
    attributes = _attributes(model)
    assert attributes["param:model__max%20depth"] == {3}
    assert attributes["param:a%3Ab"] == {"[1,2]"}
    # the alias move names no version in its subject: it is about the version it exported
    alias = [a for a in first.get_records(ProvActivity) if _attributes(a)["prov:label"] == {"alias.set"}]
    used = {
        _formal(r)["entity"]
        for r in first.get_records(ProvUsage)
        if _formal(r)["activity"] == alias[0].identifier.uri
    }
    assert used == {p.model.uri}
    # one file content under two paths is one entity with both paths
    members = [_formal(r)["entity"] for r in first.get_records(ProvMembership)]
    assert members == [f"sha256:{'01' * 32}"]
    # a test set is used, never derived from
    assert [_formal(r) for r in first.get_records(ProvDerivation)] == [
        {"generatedEntity": "datasets:/scores.v2/3", "usedEntity": "datasets:/scores.v2/3/source"}
    ]
