"""``in-toto`` export: a SLSA Provenance v1 statement in a DSSE envelope, checked with the
standard's own tools (securesystemslib verifies the envelope, the in-toto attestation protobuf
bindings validate the statement and its predicate) on the demo's registry."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from in_toto_attestation.v1.statement import Statement
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import SSlibKey
from tests.export_support import REPO, REVISION, Demo, check_golden, demo_fixture, golden_json  # noqa: F401

from modelledger._canonical import canonicalize
from modelledger._serving import verify_receipt

KINDS = ("model", "dataset", "prediction")


def _identifier(d: Demo, kind: str) -> str:
    return {"model": d.version.uri, "dataset": d.train.uri, "prediction": d.prediction_id}[kind]


@pytest.fixture(scope="module")
def exported(demo: Demo) -> dict[str, bytes]:
    return {kind: demo.registry.export(_identifier(demo, kind), format="in-toto") for kind in KINDS}


def _statement(envelope: bytes) -> dict[str, Any]:
    return json.loads(base64.b64decode(json.loads(envelope)["payload"]))


def _sslib_key(d: Demo, key_id: str) -> SSlibKey:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    public = load_pem_public_key(d.registry.public_key(key_id))
    return SSlibKey.from_crypto(public, keyid=key_id)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", KINDS)
def test_envelope_verifies_with_securesystemslib_and_fails_after_one_changed_byte(
    demo: Demo,
    exported: dict[str, bytes],
    kind: str,
) -> None:
    doc = json.loads(exported[kind])
    assert doc["payloadType"] == "application/vnd.in-toto+json"
    key_id = demo.registry.whoami()["key_id"]
    assert [s["keyid"] for s in doc["signatures"]] == [key_id]
    key = _sslib_key(demo, key_id)

    accepted = Envelope.from_dict(json.loads(exported[kind])).verify([key], threshold=1)
    assert list(accepted) == [key_id]

    payload = bytearray(base64.b64decode(doc["payload"]))
    payload[len(payload) // 2] ^= 0x01
    tampered = {**json.loads(exported[kind]), "payload": base64.b64encode(bytes(payload)).decode()}
    with pytest.raises(VerificationError):
        Envelope.from_dict(tampered).verify([key], threshold=1)


@pytest.mark.parametrize("kind", KINDS)
def test_statement_and_predicate_validate_with_the_in_toto_attestation_bindings(
    exported: dict[str, bytes], kind: str
) -> None:
    statement = _statement(exported[kind])
    # unknown or misspelt fields make ParseDict fail: the JSON names are the specification's
    pb = json_format.ParseDict(statement, statement_pb2.Statement())  # type: ignore[attr-defined]
    Statement.copy_from_pb(pb).validate()
    assert pb.type == "https://in-toto.io/Statement/v1"
    assert pb.predicate_type == "https://slsa.dev/provenance/v1"

    provenance = json_format.ParseDict(statement["predicate"], provenance_pb2.Provenance())  # type: ignore[attr-defined]
    # SLSA Provenance v1's required fields (the bindings leave them to the reader)
    assert provenance.build_definition.build_type.startswith("https://")
    assert provenance.build_definition.HasField("external_parameters")
    assert provenance.run_details.builder.id.startswith("https://")
    for rd in provenance.build_definition.resolved_dependencies:
        ResourceDescriptor.copy_from_pb(rd).validate()
        assert rd.uri and (rd.digest or rd.uri.startswith("pkg:"))


def test_model_statement_names_files_parameters_code_data_and_the_job(
    demo: Demo,
    exported: dict[str, bytes],
) -> None:
    statement = _statement(exported["model"])
    assert {s["name"]: s["digest"]["sha256"] for s in statement["subject"]} == {
        f.path: f.sha256 for f in demo.version.files
    }
    got = demo.registry.download(demo.version.uri, demo.root / "download-intoto")
    for subject in statement["subject"]:
        data = (Path(got.dest) / subject["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == subject["digest"]["sha256"]

    build = statement["predicate"]["buildDefinition"]
    assert build["buildType"] == "https://modelledger.dev/provenance/training/v1"
    external = build["externalParameters"]
    assert external["params"]["n_estimators"] == 5 and external["params"]["max_depth"] == 2
    assert external["source"] == {
        "repository": REPO,
        "path": "train.py",
        "revision": REVISION,
        "dirty": False,
    }
    assert external["datasets"] == {"train": demo.train.uri, "holdout": demo.holdout.uri}
    assert build["internalParameters"]["framework"] == "scikit-learn"

    deps = {d["uri"]: d for d in build["resolvedDependencies"]}
    git = deps[f"git+{REPO}@{REVISION}"]
    assert git["digest"] == {"gitCommit": REVISION}
    for dv, role in ((demo.train, "train"), (demo.holdout, "holdout"), (demo.clean, None), (demo.raw, None)):
        dep = deps[dv.uri]
        assert dep["digest"] == {"sha256": dv.file_sha256}
        assert dep["annotations"].get("role") == role
        parquet = (demo.root / "artifacts" / dv.path).read_bytes()
        assert hashlib.sha256(parquet).hexdigest() == dv.file_sha256
    import sklearn

    assert f"pkg:pypi/scikit-learn@{sklearn.__version__}" in deps

    run = statement["predicate"]["runDetails"]
    assert run["metadata"] == {
        "invocationId": "demo-run-1",
        "startedOn": "2026-11-01T10:00:00Z",
        "finishedOn": "2026-11-01T10:05:00Z",
    }


def test_dataset_and_prediction_subjects(demo: Demo, exported: dict[str, bytes]) -> None:
    (parquet,) = _statement(exported["dataset"])["subject"]
    data = (demo.root / "artifacts" / parquet["name"]).read_bytes()
    assert parquet["uri"] == demo.train.uri
    assert parquet["digest"] == {"sha256": hashlib.sha256(data).hexdigest()}
    deps = _statement(exported["dataset"])["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert {d["uri"] for d in deps} >= {demo.clean.uri, demo.raw.uri, f"git+{REPO}@{REVISION}"}

    statement = _statement(exported["prediction"])
    (subject,) = statement["subject"]
    receipt = demo.registry.prediction(demo.prediction_id)["receipt"]
    scorer_key = demo.registry.public_key(receipt["key_id"])
    assert verify_receipt(receipt, scorer_key)
    body = {k: v for k, v in receipt.items() if k not in ("proof", "signature")}
    assert subject["name"] == demo.prediction_id
    assert subject["digest"] == {"sha256": hashlib.sha256(canonicalize(body)).hexdigest()}
    files = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert {d["name"]: d["digest"]["sha256"] for d in files} == {f.path: f.sha256 for f in demo.version.files}
    assert statement["predicate"]["runDetails"]["metadata"]["invocationId"] == demo.prediction_id


def test_same_registry_exported_twice_gives_the_same_bytes(demo: Demo, exported: dict[str, bytes]) -> None:
    assert demo.registry.export(demo.version.uri, format="in-toto") == exported["model"]
    assert demo.registry.export(demo.prediction_id, format="in-toto") == exported["prediction"]


def test_golden(exported: dict[str, bytes]) -> None:
    envelope = json.loads(exported["model"])
    statement = _statement(exported["model"])
    document = {"envelope": {**envelope, "payload": "<payload>"}, "statement": statement}
    text = golden_json(document, volatile=("sig",))
    # the framework's version is the test environment's, also inside its package URL
    text = re.sub(r"pkg:pypi/scikit-learn@[^\"]+", "pkg:pypi/scikit-learn@<framework_version>", text)
    check_golden("intoto.json", text)
