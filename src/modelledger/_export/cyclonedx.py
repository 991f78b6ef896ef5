"""CycloneDX 1.6 ML-BOM (JSON): the model, its data and its software, as one bill of materials.

- The model version is a ``machine-learning-model`` component (``bom-ref`` = its identifier,
  ``models:/credit-risk/3``; hash = the version's digest; its artefact files as nested ``file``
  components) with a **model card**: ``modelParameters`` (learning approach, task,
  architecture family and the algorithm, read off the recorded estimator class; the data sets
  by reference; inputs and outputs from the signature), ``quantitativeAnalysis`` (the
  manifest's metrics; ``auc_holdout`` is metric ``auc`` on slice ``holdout`` when ``holdout``
  is a data set role), ``considerations`` (when the manifest's ``settings`` carry a
  ``considerations`` mapping in CycloneDX's own shape: ``users``, ``useCases``,
  ``technicalLimitations``, ``performanceTradeoffs``, ``ethicalConsiderations``) and the
  hyperparameters as properties.
- Each data set version upstream is a ``data`` component (hash = its Parquet file's sha256,
  its content digest, rows, columns, source and steps), depending on the data sets its steps
  read.
- The ML framework is a ``framework`` component and every recorded dependency a ``library``,
  each with its PyPI package URL; the model depends on them and on its data sets.
- How it was made is its ``formulation``: a workflow for the training (data sets in, the model
  out, the code repository and revision, the hyperparameters, start and end) and one for each
  processing step of each data set version.
- Every ledger event about the subject (registration, approvals, deployments...) is an
  annotation by the identity that did it, at its time.
- ``metadata.timestamp`` is the newest event's time and ``serialNumber`` a UUID derived from
  the subject's digest, so the same registry gives the same bytes; ``version`` counts the
  events, so a BOM exported again after an approval has the same serial number and a higher
  version, as the specification asks of a modified BOM.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .. import __version__
from ._std import (
    dumps,
    generated_at,
    iso,
    metric_slice,
    model_kind,
    packages,
    pypi_purl,
    subject_digest,
    text_value,
)

if TYPE_CHECKING:
    from .._domain import DatasetVersion, ModelVersion
    from .._ledger import LedgerEvent
    from ._collect import Provenance

__all__ = ["SPEC_VERSION", "render", "serial_number"]

SPEC_VERSION = "1.6"

_SERIAL_NAMESPACE = uuid.UUID("5d3c8f0e-6a57-4c1b-9d3e-2f8a7b6c4e10")
"""Fixed namespace of the name-based (version 5) UUIDs that serial numbers are."""


def serial_number(p: Provenance) -> str:
    """``urn:uuid:<uuid5 of the subject's digest>``: one serial number per subject."""
    return f"urn:uuid:{uuid.uuid5(_SERIAL_NAMESPACE, subject_digest(p))}"


def _hex(digest: str) -> str:
    return digest.split(":", 1)[-1]


def _prop(name: str, value: Any) -> dict[str, str]:
    return {"name": f"modelledger:{name}", "value": text_value(value)}


def _url(uri: str) -> str:
    """A source location as an IRI reference: spaces and other unsafe characters escaped."""
    return quote(uri, safe=":/?#[]@!$&'()*+,;=%-._~")


_TEXT_CONSIDERATIONS = ("users", "useCases", "technicalLimitations", "performanceTradeoffs")


def _considerations(given: Any) -> dict[str, Any]:
    """The model card's ``considerations`` from the manifest's ``settings.considerations``:
    the lists of text CycloneDX defines (``users``, ``useCases``, ``technicalLimitations``,
    ``performanceTradeoffs``) and ``ethicalConsiderations`` (``{name, mitigationStrategy}``
    each). Anything else there is left out, so that what a manifest says cannot make the BOM
    invalid."""
    if not isinstance(given, Mapping):
        return {}
    out: dict[str, Any] = {}
    for key in _TEXT_CONSIDERATIONS:
        value = given.get(key)
        items = [value] if isinstance(value, str) else value
        if isinstance(items, list | tuple) and items:
            out[key] = [text_value(v) for v in items]
    risks = given.get("ethicalConsiderations")
    if isinstance(risks, list | tuple):
        kept = [
            {k: text_value(r[k]) for k in ("name", "mitigationStrategy") if r.get(k) is not None}
            for r in risks
            if isinstance(r, Mapping)
        ]
        if any(kept):
            out["ethicalConsiderations"] = [r for r in kept if r]
    return out


def _model_component(m: ModelVersion, datasets: tuple[str, ...]) -> dict[str, Any]:
    manifest = m.manifest
    approach, task, family = model_kind(m)
    algorithm = manifest.get("algorithm")
    parameters: dict[str, Any] = {}
    if approach:
        parameters["approach"] = {"type": approach}
    if task:
        parameters["task"] = task
    if family:
        parameters["architectureFamily"] = family
    if algorithm:
        parameters["modelArchitecture"] = algorithm
    if datasets:
        parameters["datasets"] = [{"ref": uri} for uri in datasets]
    signature = manifest.get("signature") or {}
    for side in ("inputs", "outputs"):
        columns = signature.get(side) or ()
        if columns:
            parameters[side] = [{"format": f"{c['name']}: {c['type']}"} for c in columns]

    roles = [str(d.get("role")) for d in manifest.get("datasets") or () if d.get("role")]
    metrics = []
    for name, value in (manifest.get("metrics") or {}).items():
        kind, slice_ = metric_slice(str(name), roles)
        metric = {"type": kind, "value": text_value(value)}
        if slice_:
            metric["slice"] = slice_
        metrics.append(metric)

    card: dict[str, Any] = {"bom-ref": f"{m.uri}#model-card"}
    if parameters:
        card["modelParameters"] = parameters
    if metrics:
        card["quantitativeAnalysis"] = {"performanceMetrics": metrics}
    considerations = _considerations((manifest.get("settings") or {}).get("considerations"))
    if considerations:
        card["considerations"] = considerations
    hyper = [_prop(f"hyperparameter:{k}", v) for k, v in (manifest.get("params") or {}).items()]
    if hyper:
        card["properties"] = hyper

    component: dict[str, Any] = {
        "type": "machine-learning-model",
        "bom-ref": m.uri,
        "name": m.model,
        "version": str(m.version),
        "hashes": [{"alg": "SHA-256", "content": _hex(m.digest)}],
        "modelCard": card,
    }
    if manifest.get("description"):
        component["description"] = manifest["description"]
    files = [
        {
            "type": "file",
            "bom-ref": f"{m.uri}#{f.path}",
            "name": f.path,
            "hashes": [{"alg": "SHA-256", "content": f.sha256}],
            "properties": [_prop("size", f.size)],
        }
        for f in m.files
    ]
    if files:
        component["components"] = files
    source = manifest.get("source") or {}
    if source.get("repo_url"):
        ref: dict[str, Any] = {"type": "vcs", "url": _url(source["repo_url"])}
        if source.get("path"):
            ref["comment"] = f"training code: {source['path']}"
        component["externalReferences"] = [ref]
    if source.get("revision"):
        commit: dict[str, Any] = {"uid": source["revision"]}
        if source.get("repo_url"):
            commit["url"] = _url(source["repo_url"])
        component["pedigree"] = {"commits": [commit]}
    job = manifest.get("training_job") or {}
    props = [
        _prop("uri", m.uri),
        _prop("digest", m.digest),
        _prop("flavor", m.flavor),
        _prop("folder", m.folder),
        _prop("registered_at", iso(m.created_at)),
        _prop("registered_by", m.created_by),
    ]
    for key in ("framework", "framework_version", "python", "platform", "runs_pickle"):
        if manifest.get(key) is not None:
            props.append(_prop(key, manifest[key]))
    for key in ("id", "started_at", "ended_at"):
        if job.get(key):
            props.append(_prop(f"training_job:{key}", job[key]))
    for key in ("path", "branch", "dirty"):
        if source.get(key) is not None:
            props.append(_prop(f"source:{key}", source[key]))
    for entry in manifest.get("datasets") or ():
        props.append(_prop(f"dataset:{entry.get('role')}", entry.get("uri")))
    for number, step in enumerate(manifest.get("steps") or (), start=1):
        props.append(_prop(f"pipeline_step:{number}", f"{step.get('name')}: {step.get('kind')}"))
    for gate in manifest.get("gates") or ():
        props.append(_prop("gate", gate))
    component["properties"] = [p for p in props if p["value"] not in ("", "null")]
    return component


def _data_component(d: DatasetVersion, role: str | None) -> dict[str, Any]:
    properties = [
        _prop("uri", d.uri),
        _prop("digest", d.digest),
        _prop("rows", d.row_count),
        _prop("size_bytes", d.size_bytes),
        _prop("path", d.path),
        _prop("registered_at", iso(d.created_at)),
    ]
    properties += [_prop(f"column:{c.name}", c.type) for c in d.schema]
    if d.source.kind:
        properties.append(_prop("source:kind", d.source.kind))
    if d.source.query:
        properties.append(_prop("source:query", d.source.query))
    for number, step in enumerate(d.steps, start=1):
        properties.append(_prop(f"step:{number}", step.to_dict()))
    contents: dict[str, Any] = {"properties": properties}
    if d.source.uri:
        contents["url"] = _url(d.source.uri)
    data: dict[str, Any] = {
        "type": "dataset",
        "name": d.name,
        "contents": contents,
        "description": f"{d.row_count} rows, {len(d.schema)} columns"
        + (f"; {' -> '.join(s.name for s in d.steps)}" if d.steps else ""),
    }
    if d.created_by:
        data["governance"] = {"custodians": [{"contact": {"name": d.created_by}}]}
    component: dict[str, Any] = {
        "type": "data",
        "bom-ref": d.uri,
        "name": d.name,
        "version": str(d.version),
        "hashes": [{"alg": "SHA-256", "content": d.file_sha256}],
        "data": [data],
    }
    if role:
        component["properties"] = [_prop("role", role)]
    return component


def _software(m: ModelVersion) -> list[dict[str, Any]]:
    """The framework (``framework``) and every recorded dependency (``library``)."""
    out = []
    for name, version, is_framework in packages(m):
        purl = pypi_purl(name, version)
        component: dict[str, Any] = {
            "type": "framework" if is_framework else "library",
            "bom-ref": purl,
            "name": name,
            "purl": purl,
        }
        if version:
            component["version"] = version
        out.append(component)
    return out


def _annotation(event: LedgerEvent, subjects: list[str]) -> dict[str, Any]:
    text = event.action
    stage = event.data.get("stage")
    if isinstance(stage, str):
        text += f" (stage {stage})"
    alias = event.data.get("alias")
    if isinstance(alias, str):
        text += f" (alias {alias})"
    if event.reason:
        text += f": {event.reason}"
    return {
        "bom-ref": f"ledger:{event.seq}",
        "subjects": subjects,
        "annotator": {"individual": {"name": event.actor}},
        "timestamp": iso(event.time),
        "text": text,
    }


def _parameters(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Parameters as one workflow input (an input is a resource or parameters, not both)."""
    if not values:
        return []
    return [{"parameters": [{"name": str(k), "value": text_value(v)} for k, v in values.items()]}]


def _formulation(p: Provenance, known: set[str]) -> list[dict[str, Any]]:
    """How the subject was made, as CycloneDX formulation workflows: the training (its data
    sets in, the model out, the code repository, hyperparameters and times) and each data set
    version's processing steps (inputs in, the version out, the step's parameters)."""
    workflows: list[dict[str, Any]] = []
    model = p.model
    if model is not None:
        manifest = model.manifest
        job = manifest.get("training_job") or {}
        source = manifest.get("source") or {}
        training: dict[str, Any] = {
            "bom-ref": f"{model.uri}#training",
            "uid": str(job.get("id") or f"{model.uri}#training"),
            "name": f"training of {model.model} version {model.version}",
            "taskTypes": ["build"],
            "inputs": [
                {"resource": {"ref": str(d.get("uri"))}}
                for d in manifest.get("datasets") or ()
                if d.get("uri") in known
            ]
            + _parameters(manifest.get("params") or {}),
            "outputs": [{"type": "artifact", "resource": {"ref": model.uri}}],
        }
        if source.get("repo_url"):
            reference = {"type": "vcs", "url": _url(source["repo_url"])}
            if source.get("revision"):
                reference["comment"] = f"revision {source['revision']}"
            training["resourceReferences"] = [{"externalReference": reference}]
        if job.get("started_at"):
            training["timeStart"] = iso(job["started_at"])
        if job.get("ended_at"):
            training["timeEnd"] = iso(job["ended_at"])
        if not training["inputs"]:
            del training["inputs"]
        workflows.append(training)
    for dataset in p.datasets:
        for number, step in enumerate(dataset.steps, start=1):
            workflow: dict[str, Any] = {
                "bom-ref": f"{dataset.uri}#step-{number}",
                "uid": f"{dataset.uri}#step-{number}",
                "name": step.name,
                "description": step.kind,
                "taskTypes": ["other"],
                "inputs": [{"resource": {"ref": u}} for u in step.inputs if u in known]
                + _parameters(step.params),
                "outputs": [{"type": "artifact", "resource": {"ref": dataset.uri}}],
            }
            if not workflow["inputs"]:
                del workflow["inputs"]
            workflows.append(workflow)
    if not workflows:
        return []
    return [{"bom-ref": f"{p.subject}#formulation", "workflows": workflows}]


def render(p: Provenance, *, sign: Callable[[bytes], bytes] | None = None) -> bytes:
    """The provenance as a CycloneDX 1.6 JSON BOM (``sign`` is not used).

    >>> from modelledger import Registry
    >>> Registry.open().export("models:/credit-risk/3", format="cyclonedx")  # doctest: +SKIP
    """
    components: list[dict[str, Any]] = []
    dependencies: list[dict[str, Any]] = []
    model = p.model
    direct = tuple(str(d.get("uri")) for d in (model.manifest.get("datasets") or ())) if model else ()
    known = {d.uri for d in p.datasets}
    software = _software(model) if model is not None else []
    if model is not None:
        components.append(_model_component(model, tuple(u for u in direct if u in known)))
        depends = [u for u in direct if u in known] + [c["bom-ref"] for c in software]
        dependencies.append({"ref": model.uri, "dependsOn": depends})
    for dataset in p.datasets:
        components.append(_data_component(dataset, p.roles.get(dataset.uri)))
        inputs = sorted({u for s in dataset.steps for u in s.inputs if u in known})
        dependencies.append({"ref": dataset.uri, "dependsOn": inputs})
    components.extend(software)

    # what the events are about: the model version (for a prediction too) or the data set version
    subject = model.uri if model is not None else p.subject
    annotations = [_annotation(e, [subject]) for e in p.events]
    metadata_props = [_prop("subject", p.subject), _prop("kind", p.kind), _prop("key_id", p.key_id)]
    if p.kind == "prediction" and p.prediction is not None:
        metadata_props.append(_prop("prediction_id", p.prediction.get("prediction_id")))
        metadata_props.append(_prop("prediction:input_digest", p.prediction.get("input_digest")))
        metadata_props.append(_prop("prediction:output", p.prediction.get("output")))
    metadata: dict[str, Any] = {
        "timestamp": iso(generated_at(p)),
        "tools": {
            "components": [
                {
                    "type": "application",
                    "bom-ref": "modelledger",
                    "name": "modelledger",
                    "version": __version__,
                    "purl": pypi_purl("modelledger", __version__),
                }
            ]
        },
        "properties": metadata_props,
    }
    if model is not None and model.created_by:
        metadata["authors"] = [{"name": model.created_by}]
    bom: dict[str, Any] = {
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": serial_number(p),
        "version": max(1, len(p.events)),
        "metadata": metadata,
        "components": components,
        "dependencies": dependencies,
    }
    formulation = _formulation(p, known | ({model.uri} if model is not None else set()))
    if formulation:
        bom["formulation"] = formulation
    if annotations:
        bom["annotations"] = annotations
    return dumps(bom)
