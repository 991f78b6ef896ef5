"""``export(..., format="cyclonedx")``: a CycloneDX 1.6 ML-BOM valid against the standard's JSON
schema (the copy ``cyclonedx-python-lib`` ships: nothing is downloaded), whose model card,
data components and dependency graph say what the registry knows."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import datetime
from typing import Any

import pytest
from cyclonedx.model.bom import Bom
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL
from tests.export_std_support import edge_provenance, golden_text, shared_demo
from tests.export_support import RISK_OFFICER, Demo, check_golden

from modelledger._export import Provenance, collect
from modelledger._export import cyclonedx as cdx


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return shared_demo(tmp_path_factory)


@pytest.fixture(scope="module")
def validator() -> JsonStrictValidator:
    return JsonStrictValidator(SchemaVersion.V1_6)


@pytest.fixture(scope="module")
def exported(demo: Demo) -> bytes:
    return demo.registry.export(demo.version.uri, format="cyclonedx")


@pytest.fixture(scope="module")
def bom(exported: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(exported)
    return parsed


def _component(bom: dict[str, Any], ref: str) -> dict[str, Any]:
    (found,) = [c for c in bom["components"] if c["bom-ref"] == ref]
    return found


def _refs(bom: dict[str, Any]) -> list[str]:
    """Every bom-ref in the BOM, nested components and the model card included."""
    refs: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("bom-ref"), str):
                refs.append(value["bom-ref"])
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(bom)
    return refs


def test_the_bom_is_valid_against_the_cyclonedx_1_6_schema(
    exported: bytes, validator: JsonStrictValidator, bom: dict[str, Any]
) -> None:
    assert validator.validate_str(exported.decode("utf-8")) is None
    # and the CycloneDX library reads it into its own model
    read = Bom.from_json(bom)
    assert str(read.serial_number) == bom["serialNumber"].removeprefix("urn:uuid:")
    assert {c.bom_ref.value for c in read.components} == {c["bom-ref"] for c in bom["components"]}
    assert {d.ref.value for d in read.dependencies} == {d["ref"] for d in bom["dependencies"]}


def test_the_validator_does_refuse_a_broken_bom(bom: dict[str, Any], validator: JsonStrictValidator) -> None:
    broken = json.loads(json.dumps(bom))
    broken["components"][0]["type"] = "ml-model"  # not a component type
    assert validator.validate_str(json.dumps(broken)) is not None
    broken = json.loads(json.dumps(bom))
    broken["components"][0]["modelCard"]["modelParameters"]["approach"] = {"type": "guesswork"}
    assert validator.validate_str(json.dumps(broken)) is not None


def test_the_model_card_holds_parameters_data_metrics_and_signature(bom: dict[str, Any], demo: Demo) -> None:
    model = _component(bom, demo.version.uri)
    assert model["type"] == "machine-learning-model"
    assert (model["name"], model["version"]) == ("credit-risk", str(demo.version.version))
    assert model["hashes"] == [{"alg": "SHA-256", "content": demo.version.digest.split(":", 1)[1]}]
    assert {(f["name"], f["hashes"][0]["content"]) for f in model["components"]} == {
        (f.path, f.sha256) for f in demo.version.files
    }
    card = model["modelCard"]
    parameters = card["modelParameters"]
    assert parameters["approach"] == {"type": "supervised"}
    assert parameters["task"] == "classification"
    assert parameters["architectureFamily"] == "gradient-boosted trees"
    assert "GradientBoostingClassifier" in parameters["modelArchitecture"]
    assert parameters["datasets"] == [{"ref": demo.train.uri}, {"ref": demo.holdout.uri}]
    signature = demo.version.signature
    assert signature is not None
    assert [i["format"] for i in parameters["inputs"]] == [f"{c.name}: {c.type}" for c in signature.inputs]
    assert card["quantitativeAnalysis"]["performanceMetrics"] == [
        {"type": "auc", "value": "0.81", "slice": "holdout"}
    ]
    hyper = {p["name"]: p["value"] for p in card["properties"]}
    assert hyper["modelledger:hyperparameter:n_estimators"] == "5"
    assert hyper["modelledger:hyperparameter:learning_rate"] == "0.1"
    assert model["pedigree"]["commits"][0]["uid"] == demo.version.manifest["source"]["revision"]


def test_data_components_have_their_hashes_and_the_graph_follows_the_steps(
    bom: dict[str, Any], demo: Demo
) -> None:
    for dataset in (demo.raw, demo.clean, demo.train, demo.holdout):
        component = _component(bom, dataset.uri)
        assert component["type"] == "data"
        assert component["hashes"] == [{"alg": "SHA-256", "content": dataset.file_sha256}]
        assert component["data"][0]["type"] == "dataset"
    assert (
        _component(bom, demo.raw.uri)["data"][0]["contents"]["url"] == "postgresql://dwh.bank.example/lending"
    )
    graph = {d["ref"]: d["dependsOn"] for d in bom["dependencies"]}
    assert graph[demo.train.uri] == [demo.clean.uri]
    assert graph[demo.clean.uri] == [demo.raw.uri]
    assert graph[demo.raw.uri] == []
    assert graph[demo.version.uri][:2] == [demo.train.uri, demo.holdout.uri]
    framework = [c for c in bom["components"] if c["type"] == "framework"]
    assert [c["name"] for c in framework] == ["scikit-learn"]
    assert framework[0]["bom-ref"] in graph[demo.version.uri]
    # every reference points at something in the BOM, and no bom-ref is used twice
    refs = _refs(bom)
    assert len(refs) == len(set(refs))
    assert {r for targets in graph.values() for r in targets} | set(graph) <= set(refs)


def test_approvals_and_deployments_are_annotations_by_who_did_them(bom: dict[str, Any], demo: Demo) -> None:
    by_text = {a["text"].split(" ", 1)[0]: a for a in bom["annotations"]}
    approval = by_text["version.approved"]
    assert approval["annotator"] == {"individual": {"name": RISK_OFFICER}}
    assert approval["subjects"] == [demo.version.uri]
    assert "MRM-2026-114" in approval["text"]
    assert by_text["deployment.deployed"]["annotator"] == {"individual": {"name": RISK_OFFICER}}


def test_serial_number_time_and_version_come_from_the_registry_not_the_clock(
    bom: dict[str, Any], demo: Demo
) -> None:
    p = collect(demo.registry, demo.version.uri)
    assert datetime.fromisoformat(bom["metadata"]["timestamp"]) == datetime.fromisoformat(p.generated_at)
    assert bom["serialNumber"] == cdx.serial_number(p)
    assert uuid.UUID(bom["serialNumber"].removeprefix("urn:uuid:")).version == 5
    assert bom["version"] == len(p.events)
    tools = bom["metadata"]["tools"]["components"]
    assert [t["name"] for t in tools] == ["modelledger"]


def test_dependencies_become_pypi_purls_and_the_bom_stays_valid(
    demo: Demo, validator: JsonStrictValidator
) -> None:
    p = collect(demo.registry, demo.version.uri)
    assert p.model is not None
    manifest = {
        **p.model.manifest,
        "dependencies": {"Scikit_Learn": "1.5.2", "torch": "2.3.0+cpu", "numpy": "2.1.0"},
    }
    p = dataclasses.replace(p, model=dataclasses.replace(p.model, manifest=manifest))
    rendered = cdx.render(p)
    assert validator.validate_str(rendered.decode("utf-8")) is None
    bom = json.loads(rendered)
    software = {c["name"]: c for c in bom["components"] if c["type"] in ("library", "framework")}
    assert software["Scikit_Learn"]["type"] == "framework"  # the manifest's framework, by normalised name
    assert software["torch"]["purl"] == "pkg:pypi/torch@2.3.0%2Bcpu"
    for component in software.values():
        purl = PackageURL.from_string(component["purl"])
        assert (purl.type, purl.version) == ("pypi", component["version"])
        assert purl.to_string() == component["purl"] == component["bom-ref"]
    graph = {d["ref"]: d["dependsOn"] for d in bom["dependencies"]}
    assert {c["bom-ref"] for c in software.values()} <= set(graph[p.model.uri])


@pytest.mark.parametrize("which", ["dataset", "prediction"])
def test_a_data_set_and_a_prediction_export_are_valid_too(
    demo: Demo, validator: JsonStrictValidator, which: str
) -> None:
    identifier = demo.clean.uri if which == "dataset" else demo.prediction_id
    rendered = demo.registry.export(identifier, format="cyclonedx")
    assert validator.validate_str(rendered.decode("utf-8")) is None
    bom = json.loads(rendered)
    kinds = {c["type"] for c in bom["components"]}
    assert ("machine-learning-model" in kinds) is (which == "prediction")


def test_golden_file_and_same_registry_same_bytes(demo: Demo, exported: bytes) -> None:
    assert demo.registry.export(demo.version.uri, format="cyclonedx") == exported
    provenance: Provenance = collect(demo.registry, demo.version.uri)
    check_golden("cyclonedx.json", golden_text(exported, provenance))


def test_odd_names_and_a_card_with_considerations_stay_valid(validator: JsonStrictValidator) -> None:
    p = edge_provenance()
    assert p.model is not None
    rendered = cdx.render(p)
    assert validator.validate_str(rendered.decode("utf-8")) is None
    bom = json.loads(rendered)
    model = _component(bom, p.model.uri)
    assert model["modelCard"]["considerations"] == {
        "users": ["fraud analysts"],
        "ethicalConsiderations": [{"name": "bias", "mitigationStrategy": "audit"}],
    }
    assert model["modelCard"]["quantitativeAnalysis"]["performanceMetrics"] == [
        {"type": "rmse", "value": "0.25", "slice": "test"},
        {"type": "latency-ms", "value": "3"},
    ]
    assert "approach" not in model["modelCard"].get("modelParameters", {})  # a folder of files says nothing
    data = _component(bom, "datasets:/scores.v2/3")
    assert data["data"][0]["contents"]["url"] == "s3://bucket/raw%20data/scores%202026.csv"
    alias = [a for a in bom["annotations"] if a["text"].startswith("alias.set")]
    assert alias[0]["annotator"] == {"individual": {"name": "ops lead"}}
    # no event recorded: the time is the version's registration, and there is nothing to annotate
    quiet = json.loads(cdx.render(dataclasses.replace(p, events=(), generated_at="")))
    assert validator.validate_str(json.dumps(quiet)) is None
    assert quiet["metadata"]["timestamp"] == "2026-11-03T09:00:00Z"
    assert "annotations" not in quiet


def test_the_formulation_says_how_the_model_and_its_data_were_made(bom: dict[str, Any], demo: Demo) -> None:
    (formula,) = bom["formulation"]
    workflows = {w["bom-ref"]: w for w in formula["workflows"]}
    training = workflows[f"{demo.version.uri}#training"]
    assert training["uid"] == "demo-run-1"
    assert [i["resource"]["ref"] for i in training["inputs"] if "resource" in i] == [
        demo.train.uri,
        demo.holdout.uri,
    ]
    parameters = {p["name"]: p["value"] for i in training["inputs"] for p in i.get("parameters", ())}
    assert parameters["n_estimators"] == "5"
    assert training["outputs"] == [{"type": "artifact", "resource": {"ref": demo.version.uri}}]
    assert (
        training["resourceReferences"][0]["externalReference"]["url"]
        == demo.version.manifest["source"]["repo_url"]
    )
    dedup = workflows[f"{demo.clean.uri}#step-1"]
    assert (dedup["name"], dedup["description"]) == ("drop-duplicates", "deduplicate")
    assert [i["resource"]["ref"] for i in dedup["inputs"] if "resource" in i] == [demo.raw.uri]
    assert dedup["outputs"][0]["resource"]["ref"] == demo.clean.uri
