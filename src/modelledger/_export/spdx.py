"""SPDX 3.0.1 JSON-LD with the AI, Dataset and Build profiles.

- The model version is an ``ai_AIPackage``: its digest as ``verifiedUsing``, hyperparameters
  (``ai_hyperparameter``), metrics (``ai_metric``), validation gates
  (``ai_metricDecisionThreshold``), the kind of model (``ai_typeOfModel``), what is known
  about its training (``ai_informationAboutTraining``) and its pipeline's preprocessing
  (``ai_modelDataPreprocessing``); it ``contains`` its artefact files (``software_File``, by
  sha256), is ``trainedOn`` the data sets it was fitted on and ``testedOn`` its holdout or
  test sets, and ``dependsOn`` its framework and every recorded package (PyPI purls).
- Each data set version upstream is a ``dataset_DatasetPackage`` (Parquet file's sha256,
  size, how it was collected: its source, and its preprocessing: its steps).
- The training and each processing step are ``build_Build`` elements that ``hasInput`` the
  data they read and ``hasOutput`` what they made (parameters, code location and revision,
  start and end times); the script that ran (a ``software_File`` with its repository and
  revision) ``generates`` what it made.
- Each ledger event about the subject (registration, approvals, deployments...) is an
  ``Annotation`` whose creation info names the identity that did it and when (``review`` for
  validations, approvals and rejections).
- The registry identity that exports is the document's creator (a ``SoftwareAgent`` named by
  its key id, with its Ed25519 public key); ``created`` is the newest event's time.

Identifiers are IRIs under ``urn:modelledger:<digest>:`` (the subject's digest, see
``_std.subject_digest``) followed by readable paths (``models/credit-risk/3``,
``datasets/applications-train/2``), so the same subject gets the same identifiers in every
export. SPDX 3 times have whole seconds only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .. import __version__
from ._std import (
    dumps,
    generated_at,
    is_trained_on,
    iso_seconds,
    model_kind,
    packages,
    pypi_name,
    pypi_purl,
    subject_digest,
    text_value,
)

if TYPE_CHECKING:
    from .._domain import DatasetVersion, ModelVersion
    from .._ledger import LedgerEvent
    from ._collect import Provenance

__all__ = ["CONTEXT", "SPEC_VERSION", "render"]

SPEC_VERSION = "3.0.1"
CONTEXT = "https://spdx.org/rdf/3.0.1/spdx-context.jsonld"
_CREATION = "_:creationinfo"
_REVIEWS = {"validation.evaluated", "version.approved", "version.rejected"}
_GATE = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(.+?)\s*$")


def _entries(values: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"type": "DictionaryEntry", "key": str(k), "value": text_value(v)} for k, v in values.items()]


def _hash(hex_digest: str, algorithm: str = "sha256") -> dict[str, str]:
    return {"type": "Hash", "algorithm": algorithm, "hashValue": hex_digest.split(":", 1)[-1]}


def _revision(revision: Any) -> list[dict[str, str]] | None:
    """A git revision as the hash it is: the SHA-1 (or, in a SHA-256 repository, the SHA-256)
    of the commit; an abbreviated or other revision says no hash, so none is claimed."""
    if isinstance(revision, str) and re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", revision):
        return [_hash(revision, "sha1" if len(revision) == 40 else "sha256")]
    return None


class _Graph:
    """The ``@graph`` under construction; every element gets the shared creation info."""

    def __init__(self, namespace: str) -> None:
        self.ns = namespace
        self.elements: list[dict[str, Any]] = []
        self.extra: list[dict[str, Any]] = []  # creation infos of annotations
        self.agents: dict[str, str] = {}
        self.scripts: dict[tuple[str, str, str], str] = {}
        self._relationships = 0

    def iri(self, path: str) -> str:
        return self.ns + quote(path, safe="/@-._~")

    def add(self, element: dict[str, Any]) -> str:
        element.setdefault("creationInfo", _CREATION)
        self.elements.append({k: v for k, v in element.items() if v not in (None, "", [])})
        return str(element["spdxId"])

    def agent(self, actor: str) -> str:
        """The ``Person`` (a name with ``@``, by its e-mail) or ``Agent`` that an actor is."""
        if actor not in self.agents:
            element: dict[str, Any] = {"type": "Person" if "@" in actor else "Agent"}
            element["spdxId"] = self.iri(f"identities/{actor}")
            element["name"] = actor
            if "@" in actor:
                element["externalIdentifier"] = [
                    {"type": "ExternalIdentifier", "externalIdentifierType": "email", "identifier": actor}
                ]
            self.agents[actor] = self.add(element)
        return self.agents[actor]

    def code(self, code: Mapping[str, Any]) -> str | None:
        """The ``software_File`` of a script (repository, path, revision), once per script and
        revision; None when nothing names the script."""
        repo, path, revision = code.get("repo_url"), code.get("path"), code.get("revision")
        if not path and not repo:
            return None
        key = (str(repo or ""), str(path or ""), str(revision or ""))
        if key not in self.scripts:
            self.scripts[key] = self.add(
                {
                    "type": "software_File",
                    "spdxId": self.iri(f"code/{len(self.scripts) + 1}"),
                    "name": str(path or repo),
                    "software_primaryPurpose": "source",
                    "externalRef": [{"type": "ExternalRef", "externalRefType": "vcs", "locator": [str(repo)]}]
                    if repo
                    else None,
                    "comment": f"at revision {revision}" if revision else None,
                }
            )
        return self.scripts[key]

    def relate(self, source: str, kind: str, targets: list[str], comment: str | None = None) -> None:
        if not targets:
            return
        self._relationships += 1
        self.add(
            {
                "type": "Relationship",
                "spdxId": self.iri(f"relationships/{self._relationships}"),
                "from": source,
                "relationshipType": kind,
                "to": targets,
                "comment": comment,
            }
        )


def _identifier(uri: str) -> list[dict[str, str]]:
    return [
        {
            "type": "ExternalIdentifier",
            "externalIdentifierType": "other",
            "identifier": uri,
            "issuingAuthority": "modelledger",
        }
    ]


def _add_model(g: _Graph, m: ModelVersion, dataset_ids: Mapping[str, str]) -> str:
    manifest = m.manifest
    _, task, family = model_kind(m)
    source = manifest.get("source") or {}
    job = manifest.get("training_job") or {}
    entries = manifest.get("datasets") or ()
    trained = [e for e in entries if is_trained_on(str(e.get("role") or ""))]
    tested = [e for e in entries if not is_trained_on(str(e.get("role") or ""))]
    about = []
    if trained:
        about.append("trained on " + ", ".join(f"{e.get('uri')} ({e.get('role')})" for e in trained))
    if tested:
        about.append("evaluated on " + ", ".join(f"{e.get('uri')} ({e.get('role')})" for e in tested))
    if job.get("id"):
        about.append(f"training job {job['id']}")
    if manifest.get("framework"):
        about.append(f"with {manifest['framework']} {manifest.get('framework_version') or ''}".rstrip())
    thresholds = []
    for gate in manifest.get("gates") or ():
        match = _GATE.match(gate) if isinstance(gate, str) else None
        key, value = (match.group(1), match.group(2)) if match else ("gate", text_value(gate))
        thresholds.append({"type": "DictionaryEntry", "key": key, "value": value})
    code = None
    if source.get("repo_url") or source.get("revision"):
        code = " ".join(
            str(x)
            for x in (source.get("repo_url"), source.get("path"), "@", source.get("revision"))
            if x is not None
        )
        if source.get("dirty"):
            code += " (with uncommitted changes)"
    model_id = g.add(
        {
            "type": "ai_AIPackage",
            "spdxId": g.iri(f"models/{m.model}/{m.version}"),
            "name": m.model,
            "software_packageVersion": str(m.version),
            "software_primaryPurpose": "model",
            "description": manifest.get("description"),
            "externalIdentifier": _identifier(m.uri),
            "verifiedUsing": [_hash(m.digest)],
            "releaseTime": iso_seconds(m.created_at),
            "builtTime": iso_seconds(job["ended_at"]) if job.get("ended_at") else None,
            "originatedBy": [g.agent(m.created_by)] if m.created_by else None,
            "software_sourceInfo": code,
            "ai_typeOfModel": [x for x in (family, task, manifest.get("algorithm")) if x],
            "ai_hyperparameter": _entries(manifest.get("params") or {}),
            "ai_metric": _entries(manifest.get("metrics") or {}),
            "ai_metricDecisionThreshold": thresholds,
            "ai_informationAboutTraining": "; ".join(about),
            "ai_modelDataPreprocessing": [
                f"{s.get('name')}: {s.get('kind')}"
                + (f" ({', '.join(map(str, s['columns']))})" if s.get("columns") else "")
                for s in manifest.get("steps") or ()
            ],
        }
    )
    files = [
        g.add(
            {
                "type": "software_File",
                "spdxId": g.iri(f"models/{m.model}/{m.version}/files/{f.path}"),
                "name": f.path,
                "verifiedUsing": [_hash(f.sha256)],
            }
        )
        for f in m.files
    ]
    g.relate(model_id, "contains", files)
    g.relate(model_id, "trainedOn", [dataset_ids[e["uri"]] for e in trained if e.get("uri") in dataset_ids])
    g.relate(model_id, "testedOn", [dataset_ids[e["uri"]] for e in tested if e.get("uri") in dataset_ids])

    # the training, as a build: what it read, what it made, with which code and parameters
    environment = {
        k: manifest[k] for k in ("framework", "framework_version", "python", "platform") if manifest.get(k)
    }
    training = g.add(
        {
            "type": "build_Build",
            "spdxId": g.iri(f"models/{m.model}/{m.version}/training"),
            "build_buildType": "urn:modelledger:build:training",
            "build_buildId": job.get("id"),
            "build_buildStartTime": iso_seconds(job["started_at"]) if job.get("started_at") else None,
            "build_buildEndTime": iso_seconds(job["ended_at"]) if job.get("ended_at") else None,
            "build_configSourceUri": [source["repo_url"]] if source.get("repo_url") else None,
            "build_configSourceEntrypoint": [source["path"]] if source.get("path") else None,
            "build_configSourceDigest": _revision(source.get("revision")),
            "build_parameter": _entries(manifest.get("params") or {}),
            "build_environment": _entries(environment),
        }
    )
    g.relate(
        training, "hasInput", [dataset_ids[str(e.get("uri"))] for e in entries if e.get("uri") in dataset_ids]
    )
    g.relate(training, "hasOutput", [model_id])
    script = g.code(source)
    if script is not None:
        # the training script made the model, as a source file makes a binary
        g.relate(script, "generates", [model_id])

    # the framework and every recorded package
    libraries = [
        g.add(
            {
                "type": "software_Package",
                "spdxId": g.iri(f"packages/pypi/{pypi_name(name)}"),
                "name": name,
                "software_packageVersion": version,
                "software_packageUrl": pypi_purl(name, version),
                "software_primaryPurpose": "framework" if is_framework else "library",
            }
        )
        for name, version, is_framework in packages(m)
    ]
    g.relate(model_id, "dependsOn", libraries)
    return model_id


def _add_dataset(g: _Graph, d: DatasetVersion) -> str:
    src = d.source
    collection = None
    if src.uri or src.query:
        collection = (
            f"{src.kind}" + (f" on {src.uri}" if src.uri else "") + (f": {src.query}" if src.query else "")
        )
        if src.extracted_at:
            collection += f" (extracted {src.extracted_at})"
    return g.add(
        {
            "type": "dataset_DatasetPackage",
            "spdxId": g.iri(f"datasets/{d.name}/{d.version}"),
            "name": d.name,
            "software_packageVersion": str(d.version),
            "software_primaryPurpose": "data",
            "externalIdentifier": _identifier(d.uri),
            "verifiedUsing": [_hash(d.file_sha256)],
            "releaseTime": iso_seconds(d.created_at),
            "originatedBy": [g.agent(d.created_by)] if d.created_by else None,
            "description": f"{d.row_count} rows: " + ", ".join(f"{c.name} ({c.type})" for c in d.schema),
            "dataset_datasetType": ["structured"],
            "dataset_datasetSize": d.size_bytes,
            "dataset_dataCollectionProcess": collection,
            "dataset_dataPreprocessing": [f"{s.name}: {s.kind}" for s in d.steps],
        }
    )


def _add_steps(g: _Graph, d: DatasetVersion, dataset_ids: Mapping[str, str]) -> None:
    extract = g.code(d.source.code)
    if extract is not None:
        g.relate(extract, "generates", [dataset_ids[d.uri]])  # the script that extracted it
    for number, step in enumerate(d.steps, start=1):
        build = g.add(
            {
                "type": "build_Build",
                "spdxId": g.iri(f"datasets/{d.name}/{d.version}/steps/{number}"),
                "build_buildType": "urn:modelledger:build:processing-step",
                "build_buildId": step.name,
                "build_parameter": _entries({"kind": step.kind, **step.params}),
                "build_configSourceUri": [step.code["repo_url"]] if step.code.get("repo_url") else None,
                "build_configSourceEntrypoint": [step.code["path"]] if step.code.get("path") else None,
                "build_configSourceDigest": _revision(step.code.get("revision")),
            }
        )
        g.relate(build, "hasInput", [dataset_ids[u] for u in step.inputs if u in dataset_ids])
        g.relate(build, "hasOutput", [dataset_ids[d.uri]])
        script = g.code(step.code)
        if script is not None:
            g.relate(script, "generates", [dataset_ids[d.uri]])


def _add_event(g: _Graph, event: LedgerEvent, subject: str) -> None:
    statement = event.action
    stage, alias = event.data.get("stage"), event.data.get("alias")
    if isinstance(stage, str):
        statement += f" (stage {stage})"
    if isinstance(alias, str):
        statement += f" (alias {alias})"
    if event.reason:
        statement += f": {event.reason}"
    creation = f"_:ledger-{event.seq}"
    # the annotation was made by the identity that acted, when it acted
    g.extra.append(
        {
            "type": "CreationInfo",
            "@id": creation,
            "specVersion": SPEC_VERSION,
            "created": iso_seconds(event.time),
            "createdBy": [g.agent(event.actor)],
        }
    )
    g.add(
        {
            "type": "Annotation",
            "spdxId": g.iri(f"ledger/{event.seq}"),
            "annotationType": "review" if event.action in _REVIEWS else "other",
            "subject": subject,
            "statement": statement,
            "creationInfo": creation,
        }
    )


def render(p: Provenance, *, sign: Callable[[bytes], bytes] | None = None) -> bytes:
    """The provenance as an SPDX 3.0.1 JSON-LD document (``sign`` is not used).

    >>> from modelledger import Registry
    >>> Registry.open().export("models:/credit-risk/3", format="spdx")  # doctest: +SKIP
    """
    g = _Graph(f"urn:modelledger:{subject_digest(p)[:32]}:")
    registry = g.add(
        {
            "type": "SoftwareAgent",
            "spdxId": g.iri("registry"),
            "name": f"modelledger registry identity {p.key_id}",
            "description": f"Ed25519 public key {p.public_key.hex()}",
        }
    )
    tool = g.add({"type": "Tool", "spdxId": g.iri("tools/modelledger"), "name": f"modelledger {__version__}"})
    dataset_ids = {d.uri: _add_dataset(g, d) for d in p.datasets}
    for dataset in p.datasets:
        _add_steps(g, dataset, dataset_ids)
    model_id = _add_model(g, p.model, dataset_ids) if p.model is not None else None
    root = model_id or dataset_ids.get(p.subject) or registry
    for event in p.events:
        _add_event(g, event, root)
    if p.kind == "prediction" and p.prediction is not None:
        record = p.prediction
        g.add(
            {
                "type": "Annotation",
                "spdxId": g.iri(f"predictions/{record.get('prediction_id')}"),
                "annotationType": "other",
                "subject": root,
                "statement": (
                    f"prediction {record.get('prediction_id')} at {record.get('time')}: "
                    f"output {text_value(record.get('output'))}, input digest {record.get('input_digest')}"
                ),
            }
        )
    document_id = g.iri("document")
    document = {
        "type": "SpdxDocument",
        "spdxId": document_id,
        "creationInfo": _CREATION,
        "name": f"modelledger provenance of {p.subject}",
        "profileConformance": ["core", "software", "ai", "dataset", "build"],
        "rootElement": [root],
        "element": [e["spdxId"] for e in g.elements],
    }
    creation = {
        "type": "CreationInfo",
        "@id": _CREATION,
        "specVersion": SPEC_VERSION,
        "created": iso_seconds(generated_at(p)),
        "createdBy": [registry],
        "createdUsing": [tool],
    }
    return dumps({"@context": CONTEXT, "@graph": [creation, *g.extra, document, *g.elements]})
