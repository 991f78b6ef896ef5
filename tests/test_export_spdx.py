"""``export(..., format="spdx")``: SPDX 3.0.1 JSON-LD with the AI and Dataset profiles, read
and checked by the SPDX model bindings (``spdx-python-model``): every type, property and
enumerated value known to SPDX 3.0.1, every reference resolved, every required property set."""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import pytest
from spdx_python_model import v3_0_1 as spdx
from tests.export_std_support import edge_provenance, golden_text, shared_demo
from tests.export_support import RISK_OFFICER, Demo, check_golden

from modelledger._export import Provenance, collect
from modelledger._export import spdx as spdx_format

RELATIONSHIP = "https://spdx.org/rdf/3.0.1/terms/Core/RelationshipType/"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return shared_demo(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(demo: Demo) -> bytes:
    return demo.registry.export(demo.version.uri, format="spdx")


def load(document: bytes | dict[str, Any]) -> spdx.SHACLObjectSet:
    """The document read by the bindings, then checked as they check it: unknown types,
    properties or enumerated values and malformed values fail while reading, references to
    elements the document lacks are reported by ``link``, and a required property left out
    fails when the set is written back."""
    objects = spdx.SHACLObjectSet()
    if isinstance(document, bytes):
        spdx.JSONLDDeserializer().read(io.BytesIO(document), objects)
    else:
        spdx.JSONLDDeserializer().deserialize_data(document, objects)
    missing = objects.link()
    assert missing == set(), f"references to elements not in the document: {sorted(missing)}"
    spdx.JSONLDSerializer().serialize_data(objects)
    return objects


@pytest.fixture(scope="module")
def objects(exported: bytes) -> spdx.SHACLObjectSet:
    return load(exported)


def _one(objects: spdx.SHACLObjectSet, kind: type[Any]) -> Any:
    (found,) = list(objects.foreach_type(kind, match_subclass=False))
    return found


def _relationships(objects: spdx.SHACLObjectSet, kind: str) -> list[tuple[Any, list[Any]]]:
    return [
        (r.from_, list(r.to))
        for r in objects.foreach_type(spdx.Relationship)
        if r.relationshipType == RELATIONSHIP + kind
    ]


def _external_id(element: Any) -> str:
    return str(element.externalIdentifier[0].identifier)


def test_the_document_loads_and_validates_with_the_spdx_bindings(objects: spdx.SHACLObjectSet) -> None:
    document = _one(objects, spdx.SpdxDocument)
    conformance = {str(p).rsplit("/", 1)[-1] for p in document.profileConformance}
    assert {"core", "software", "ai", "dataset"} <= conformance
    (root,) = document.rootElement
    assert isinstance(root, spdx.ai_AIPackage)
    assert document.creationInfo.specVersion == "3.0.1"


@pytest.mark.parametrize(
    ("mutation", "why"),
    [
        (
            lambda e: e.pop("dataset_datasetType") if e["type"] == "dataset_DatasetPackage" else None,
            "required",
        ),
        (lambda e: e.update(relationshipType="trainedWith") if e["type"] == "Relationship" else None, "enum"),
        (lambda e: e.update(ai_foo="x") if e["type"] == "ai_AIPackage" else None, "unknown property"),
        (lambda e: e.update(to=["urn:example:nowhere"]) if e["type"] == "Relationship" else None, "dangling"),
    ],
)
def test_the_bindings_do_refuse_a_broken_document(exported: bytes, mutation: Any, why: str) -> None:
    broken = json.loads(exported)
    for element in broken["@graph"]:
        mutation(element)
    with pytest.raises((ValueError, KeyError, AssertionError)):
        load(broken)


def test_the_model_is_an_ai_package_trained_on_train_and_tested_on_holdout(
    objects: spdx.SHACLObjectSet, demo: Demo
) -> None:
    model = _one(objects, spdx.ai_AIPackage)
    assert (model.name, model.software_packageVersion) == ("credit-risk", str(demo.version.version))
    assert _external_id(model) == demo.version.uri
    assert [(h.algorithm.rsplit("/", 1)[-1], h.hashValue) for h in model.verifiedUsing] == [
        ("sha256", demo.version.digest.split(":", 1)[1])
    ]
    hyper = {e.key: e.value for e in model.ai_hyperparameter}
    assert hyper["n_estimators"] == "5"
    assert hyper["max_depth"] == "2"
    assert {e.key: e.value for e in model.ai_metric} == {"auc_holdout": "0.81"}
    assert {e.key: e.value for e in model.ai_metricDecisionThreshold} == {"auc_holdout": ">= 0.75"}
    assert "gradient-boosted trees" in model.ai_typeOfModel
    [(source, trained)] = _relationships(objects, "trainedOn")
    [(source2, tested)] = _relationships(objects, "testedOn")
    assert source is model and source2 is model
    assert [_external_id(d) for d in trained] == [demo.train.uri]
    assert [_external_id(d) for d in tested] == [demo.holdout.uri]
    [(container, files)] = _relationships(objects, "contains")
    assert container is model
    assert {(f.name, f.verifiedUsing[0].hashValue) for f in files} == {
        (f.path, f.sha256) for f in demo.version.files
    }


def test_every_data_set_version_is_a_dataset_package_with_its_file_hash(
    objects: spdx.SHACLObjectSet, demo: Demo
) -> None:
    packages = {_external_id(d): d for d in objects.foreach_type(spdx.dataset_DatasetPackage)}
    assert set(packages) == {d.uri for d in (demo.raw, demo.clean, demo.train, demo.holdout)}
    for dataset in (demo.raw, demo.clean, demo.train, demo.holdout):
        package = packages[dataset.uri]
        assert package.verifiedUsing[0].hashValue == dataset.file_sha256
        assert package.dataset_datasetSize == dataset.size_bytes
        assert [t.rsplit("/", 1)[-1] for t in package.dataset_datasetType] == ["structured"]
    assert "postgresql://dwh.bank.example/lending" in packages[demo.raw.uri].dataset_dataCollectionProcess
    # the split is a build that read the clean set and made the training set
    outputs = {id(b): [_external_id(o) for o in out] for b, out in _relationships(objects, "hasOutput")}
    inputs = {id(b): [_external_id(i) for i in ins] for b, ins in _relationships(objects, "hasInput")}
    assert any(outputs[b] == [demo.train.uri] and inputs.get(b) == [demo.clean.uri] for b in outputs)


def test_the_approval_is_a_review_annotation_created_by_the_approver(
    objects: spdx.SHACLObjectSet, demo: Demo
) -> None:
    model = _one(objects, spdx.ai_AIPackage)
    approvals = [
        a for a in objects.foreach_type(spdx.Annotation) if a.statement.startswith("version.approved")
    ]
    assert len(approvals) == 1
    approval = approvals[0]
    assert approval.subject is model
    assert approval.annotationType.endswith("/review")
    assert "MRM-2026-114" in approval.statement
    assert [agent.name for agent in approval.creationInfo.createdBy] == [RISK_OFFICER]


@pytest.mark.parametrize("which", ["dataset", "prediction"])
def test_a_data_set_and_a_prediction_export_validate_too(demo: Demo, which: str) -> None:
    identifier = demo.clean.uri if which == "dataset" else demo.prediction_id
    objects = load(demo.registry.export(identifier, format="spdx"))
    (root,) = _one(objects, spdx.SpdxDocument).rootElement
    if which == "dataset":
        assert isinstance(root, spdx.dataset_DatasetPackage)
        assert _external_id(root) == demo.clean.uri
    else:
        assert isinstance(root, spdx.ai_AIPackage)
        assert any(demo.prediction_id in a.statement for a in objects.foreach_type(spdx.Annotation))


def test_golden_file_and_same_registry_same_bytes(demo: Demo, exported: bytes) -> None:
    assert demo.registry.export(demo.version.uri, format="spdx") == exported
    provenance: Provenance = collect(demo.registry, demo.version.uri)
    check_golden("spdx.json", golden_text(exported, provenance))


def test_odd_names_an_unknown_source_and_an_alias_event_still_validate() -> None:
    p = edge_provenance()
    objects = load(spdx_format.render(p))
    model = _one(objects, spdx.ai_AIPackage)
    assert model.name == "Fraud.Scorer_v2"
    assert {e.key for e in model.ai_hyperparameter} == {"model__max depth", "a:b", "nested", "big"}
    assert _relationships(objects, "trainedOn") == []
    [(_, tested)] = _relationships(objects, "testedOn")
    assert [_external_id(d) for d in tested] == ["datasets:/scores.v2/3"]
    agents = {a.name: type(a).__name__ for a in objects.foreach_type(spdx.Agent)}
    assert agents["ops lead"] == "Agent"  # not an e-mail address: not said to be a person
    # no event recorded: the document is as of the version's registration
    quiet = load(spdx_format.render(dataclasses.replace(p, events=(), generated_at="")))
    assert _one(quiet, spdx.SpdxDocument).creationInfo.created.isoformat() == "2026-11-03T09:00:00+00:00"


def test_each_script_generates_what_it_made(objects: spdx.SHACLObjectSet, demo: Demo) -> None:
    made: dict[str, set[str]] = {}
    for script, targets in _relationships(objects, "generates"):
        assert isinstance(script, spdx.software_File)
        assert script.externalRef[0].locator == [demo.version.manifest["source"]["repo_url"]]
        made.setdefault(script.name, set()).update(
            _external_id(t) if isinstance(t, spdx.software_Package) else str(t) for t in targets
        )
    assert made == {
        "train.py": {demo.version.uri},
        "extract.py": {demo.raw.uri},
        "prepare.py": {demo.clean.uri, demo.train.uri, demo.holdout.uri},
    }
