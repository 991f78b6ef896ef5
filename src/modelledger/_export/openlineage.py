"""OpenLineage: the provenance as run events, one job per data step and per training.

``render`` returns a JSON array of OpenLineage ``RunEvent`` objects (spec 2-0-2), sorted by
event time, each a ``COMPLETE`` event of one run:

- ``<data set>.extract``: a data set version read from its source (a table, a query, a file)
  with no processing step: the source as input (``sql`` facet for a query);
- ``<first output>.<step>``: one processing step (``drop-duplicates``, ``split``...) with the
  step's input data set versions and every version it made (a split recorded on its train and
  holdout sets is one run with both outputs);
- ``<model>.train``: the training of a model version, its data sets in, the version out;
- ``<model>.<action>``: each approval, rejection, deployment, rollback or alias move of it;
- ``<model>.predict``: for a prediction, the one call that made it.

Facets: ``sourceCodeLocation`` (git repository, path, revision), ``jobType`` and, for a query,
``sql`` on jobs; ``executionParameters`` (the standard run-parameters facet: parameters and
step settings as strings) on runs; ``version`` (the registry's version number), ``schema``
and ``storage`` on data sets; two custom facets, ``modelledger_artifact`` (identifier and
digests of a data set or model version) and ``modelledger_ledgerEvent`` (the ledger event a
governance run records), described by :data:`CUSTOM_FACETS_SCHEMA`.

Run ids are UUIDs (version 7 layout: the run's time, then bits of a SHA-256) derived from
what the registry recorded (digests, times, ledger sequence numbers), so exporting the same
registry twice gives the same bytes, and a receiver sees the same run id for a training or
governance run whether it came from an export or was emitted as it happened (:mod:`._emit`);
a split emitted as each of its sets is registered is one run per set there.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .._domain import DatasetVersion, ModelVersion, ProcessingStep
from .._ledger import LedgerEvent
from .._time import from_stored, to_ms, to_text
from ._collect import Provenance

__all__ = [
    "CUSTOM_FACETS_SCHEMA",
    "NAMESPACE",
    "PRODUCER",
    "dataset_events",
    "dataset_registered_events",
    "governance_event",
    "model_events",
    "render",
    "run_events",
    "training_event",
]

SPEC = "https://openlineage.io/spec"
EVENT_SCHEMA = f"{SPEC}/2-0-2/OpenLineage.json#/$defs/RunEvent"
PRODUCER = "https://pypi.org/project/modelledger/"
NAMESPACE = "modelledger"
"""The namespace of the registry's jobs and data sets (``namespace=`` names another)."""

# facet name -> (its schema's $id, its definition): the versions the events are valid against
FACETS: dict[str, tuple[str, str]] = {
    "sourceCodeLocation": (
        f"{SPEC}/facets/1-1-0/SourceCodeLocationJobFacet.json",
        "SourceCodeLocationJobFacet",
    ),
    "jobType": (f"{SPEC}/facets/2-0-4/JobTypeJobFacet.json", "JobTypeJobFacet"),
    "sql": (f"{SPEC}/facets/1-1-0/SQLJobFacet.json", "SQLJobFacet"),
    "documentation": (f"{SPEC}/facets/1-1-0/DocumentationJobFacet.json", "DocumentationJobFacet"),
    "executionParameters": (
        f"{SPEC}/facets/1-0-0/ExecutionParametersRunFacet.json",
        "ExecutionParametersRunFacet",
    ),
    "version": (f"{SPEC}/facets/1-0-1/DatasetVersionDatasetFacet.json", "DatasetVersionDatasetFacet"),
    "schema": (f"{SPEC}/facets/1-2-0/SchemaDatasetFacet.json", "SchemaDatasetFacet"),
    "storage": (f"{SPEC}/facets/1-0-1/StorageDatasetFacet.json", "StorageDatasetFacet"),
    "modelledger_artifact": ("urn:modelledger:openlineage:facets:1-0-0", "ArtifactDatasetFacet"),
    "modelledger_ledgerEvent": ("urn:modelledger:openlineage:facets:1-0-0", "LedgerEventRunFacet"),
}

CUSTOM_FACETS_SCHEMA = Path(__file__).with_name("openlineage_facets.json")
"""The JSON schema of the two custom facets (``$id`` ``urn:modelledger:openlineage:facets:1-0-0``)."""

# ledger actions that become a governance run of their own
GOVERNANCE = {
    "version.approved": "approve",
    "version.rejected": "reject",
    "deployment.deployed": "deploy",
    "deployment.rolled_back": "rollback",
    "version.retired": "retire",
    "alias.set": "alias",
    "alias.deleted": "alias",
}

Event = dict[str, Any]


def render(p: Provenance, *, sign: Callable[[bytes], bytes] | None = None) -> bytes:
    """The run events of ``p`` as a JSON array (UTF-8, sorted keys, two-space indent).

    OpenLineage events are not signed: ``sign`` is never called.
    """
    del sign
    return (json.dumps(run_events(p), sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def run_events(p: Provenance, *, namespace: str = NAMESPACE) -> list[Event]:
    """Every run event of ``p``: the data steps upstream, the training, its governance and (for a
    prediction) the call, sorted by event time, then job name."""
    out: list[Event] = []
    out.extend(dataset_events(p.datasets, namespace=namespace))
    if p.model is not None:
        out.extend(model_events(p.model, p.datasets, p.roles, p.events, namespace=namespace))
        if p.prediction is not None:
            out.append(_prediction_event(p.model, p.prediction, namespace))
    return sorted(out, key=lambda e: (e["eventTime"], e["job"]["name"], e["run"]["runId"]))


# ---------------------------------------------------------------------- data sets


def dataset_events(datasets: Sequence[DatasetVersion], *, namespace: str = NAMESPACE) -> list[Event]:
    """One run per extract (a version with a source and no steps) and per distinct step (a step
    recorded alike on several versions, such as a split, is one run making all of them)."""
    by_uri = {dv.uri: dv for dv in datasets}
    out: list[Event] = []
    steps: dict[str, tuple[ProcessingStep, list[DatasetVersion]]] = {}
    for dv in datasets:
        if not dv.steps:
            if dv.source.kind != "dataframe" or dv.source.uri:
                out.append(_extract_event(dv, namespace))
            continue
        for step in dv.steps:
            key = json.dumps(step.to_dict(), sort_keys=True, default=str)
            steps.setdefault(key, (step, []))[1].append(dv)
    for step, outputs in steps.values():
        out.append(_step_event(step, outputs, by_uri, namespace))
    return out


def dataset_registered_events(
    dv: DatasetVersion, inputs: Sequence[DatasetVersion], *, namespace: str = NAMESPACE
) -> list[Event]:
    """The runs that made one new data set version, as emitted when it is registered: its
    extract, or one run per step with ``inputs`` (the versions its steps read) in. A step
    recorded alike on several versions (a split) is one run per version here, since each is
    registered on its own; an export, which sees them together, makes it one run."""
    if not dv.steps:
        return [_extract_event(dv, namespace)] if dv.source.kind != "dataframe" or dv.source.uri else []
    known = {i.uri: i for i in inputs}
    return [_step_event(step, [dv], known, namespace) for step in dv.steps]


def _extract_event(dv: DatasetVersion, namespace: str) -> Event:
    source = dv.source
    job_facets: dict[str, Any] = {"jobType": _job_type("EXTRACT")}
    code = _code_facet(source.code)
    if code is not None:
        job_facets["sourceCodeLocation"] = code
    if source.query:
        job_facets["sql"] = _facet("sql", query=source.query)
    inputs = [_source_dataset(source.uri, source.kind)] if source.uri else []
    when = _time(source.extracted_at, dv.created_at) if source.extracted_at else dv.created_at
    params = {"source.kind": source.kind}
    if source.extracted_at:
        params["source.extracted_at"] = source.extracted_at
    return _event(
        when=when,
        run_seed=("extract", dv.digest, to_text(dv.created_at), dv.uri),
        job=_job(namespace, f"{dv.name}.extract", job_facets),
        run_facets={"executionParameters": _parameters(params)},
        inputs=inputs,
        outputs=[_dataset(dv, namespace)],
    )


def _step_event(
    step: ProcessingStep, outputs: list[DatasetVersion], known: Mapping[str, DatasetVersion], namespace: str
) -> Event:
    first = outputs[0]
    job_facets: dict[str, Any] = {"jobType": _job_type(f"STEP:{step.kind}")}
    code = _code_facet(step.code)
    if code is not None:
        job_facets["sourceCodeLocation"] = code
    params: dict[str, Any] = {"step.kind": step.kind, **{f"params.{k}": v for k, v in step.params.items()}}
    if step.columns:
        params["step.columns"] = list(step.columns)
    inputs = [
        _dataset(known[uri], namespace) if uri in known else _named_input(uri, namespace)
        for uri in step.inputs
    ]
    return _event(
        when=min(dv.created_at for dv in outputs),
        run_seed=(
            "step",
            json.dumps(step.to_dict(), sort_keys=True, default=str),
            *(o.digest + o.uri for o in outputs),
        ),
        job=_job(namespace, f"{first.name}.{step.name}", job_facets),
        run_facets={"executionParameters": _parameters(params)},
        inputs=inputs,
        outputs=[_dataset(dv, namespace) for dv in outputs],
    )


# ---------------------------------------------------------------------- models


def model_events(
    mv: ModelVersion,
    datasets: Sequence[DatasetVersion],
    roles: Mapping[str, str],
    events: Iterable[LedgerEvent],
    *,
    namespace: str = NAMESPACE,
) -> list[Event]:
    """The training run of ``mv`` and one run per governance event about it."""
    out = [training_event(mv, datasets, roles, namespace=namespace)]
    for event in events:
        if event.action in GOVERNANCE:
            out.append(governance_event(mv, event, namespace=namespace))
    return out


def training_event(
    mv: ModelVersion,
    datasets: Sequence[DatasetVersion],
    roles: Mapping[str, str],
    *,
    namespace: str = NAMESPACE,
) -> Event:
    """The run that trained ``mv``: its data sets in (with their roles), the version out."""
    m = mv.manifest
    job_facets: dict[str, Any] = {"jobType": _job_type("TRAINING")}
    code = _code_facet(m.get("source") or {})
    if code is not None:
        job_facets["sourceCodeLocation"] = code
    known = {dv.uri: dv for dv in datasets}
    inputs = []
    for uri, role in roles.items():
        entry = _dataset(known[uri], namespace) if uri in known else _named_input(uri, namespace)
        entry["facets"]["modelledger_artifact"]["role"] = role
        inputs.append(entry)
    params: dict[str, Any] = {f"params.{k}": v for k, v in sorted((m.get("params") or {}).items())}
    for name in ("algorithm", "framework", "framework_version", "flavor"):
        if m.get(name):
            params[name] = m[name]
    job = m.get("training_job") or {}
    if job.get("id"):
        params["training_job.id"] = job["id"]
    if job.get("started_at"):
        params["training_job.started_at"] = job["started_at"]
    ended = job.get("ended_at")
    return _event(
        when=_time(ended, mv.created_at) if ended else mv.created_at,
        run_seed=("train", mv.uri, mv.digest),
        job=_job(namespace, f"{mv.model}.train", job_facets),
        run_facets={"executionParameters": _parameters(params)},
        inputs=inputs,
        outputs=[_model_dataset(mv, namespace)],
    )


def governance_event(mv: ModelVersion, event: LedgerEvent, *, namespace: str = NAMESPACE) -> Event:
    """The run an approval, deployment or alias move of ``mv`` stands for: the version in, and
    the ledger event as the ``modelledger_ledgerEvent`` run facet."""
    verb = GOVERNANCE.get(event.action, event.action.replace(".", "-"))
    record: dict[str, Any] = {
        "seq": event.seq,
        "action": event.action,
        "actor": event.actor,
        "subject": event.subject,
        "time": event.time,
    }
    if event.reason:
        record["reason"] = event.reason
    for name in ("alias", "stage", "previous"):
        value = event.data.get(name)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            record[name] = value
    return _event(
        when=from_stored(event.time),
        run_seed=("ledger", str(event.seq), event.time, event.action, event.subject),
        job=_job(
            namespace,
            f"{mv.model}.{verb}",
            {"jobType": _job_type("GOVERNANCE")},
        ),
        run_facets={"modelledger_ledgerEvent": _facet("modelledger_ledgerEvent", **record)},
        inputs=[_model_dataset(mv, namespace)],
        outputs=[],
    )


def _prediction_event(mv: ModelVersion, record: Mapping[str, Any], namespace: str) -> Event:
    params = {
        "prediction_id": str(record["prediction_id"]),
        "input_digest": str(record.get("input_digest") or ""),
        "output": record.get("output"),
    }
    return _event(
        when=from_stored(str(record["time"])),
        run_seed=("predict", str(record["prediction_id"])),
        job=_job(
            namespace,
            f"{mv.model}.predict",
            {"jobType": _job_type("PREDICTION", processing="SERVICE")},
        ),
        run_facets={"executionParameters": _parameters(params)},
        inputs=[_model_dataset(mv, namespace)],
        outputs=[],
    )


# ---------------------------------------------------------------------- pieces


def _event(
    *,
    when: datetime,
    run_seed: Sequence[str],
    job: Event,
    run_facets: Mapping[str, Any],
    inputs: list[Event],
    outputs: list[Event],
) -> Event:
    return {
        "eventType": "COMPLETE",
        "eventTime": to_text(when),
        "producer": PRODUCER,
        "schemaURL": EVENT_SCHEMA,
        "run": {"runId": run_id(when, *run_seed), "facets": dict(run_facets)},
        "job": job,
        "inputs": inputs,
        "outputs": outputs,
    }


def run_id(when: datetime, *parts: str) -> str:
    """A UUID laid out as version 7 (its first 48 bits the run's time in ms, so ids sort by time)
    whose other bits come from SHA-256 of ``parts``: the same run always gets the same id."""
    digest = int.from_bytes(hashlib.sha256("\x00".join(parts).encode("utf-8")).digest()[:10], "big")
    ms = to_ms(when) & ((1 << 48) - 1)
    rand_a = digest >> 68  # 12 bits
    rand_b = digest & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))


def _job(namespace: str, name: str, facets: Mapping[str, Any]) -> Event:
    return {"namespace": namespace, "name": name, "facets": dict(facets)}


def _job_type(kind: str, *, processing: str = "BATCH") -> dict[str, Any]:
    """``jobType``: what kind of job this is (EXTRACT, STEP:<kind>, TRAINING, GOVERNANCE...)."""
    return _facet("jobType", processingType=processing, integration="MODELLEDGER", jobType=kind)


def _facet(name: str, **fields: Any) -> dict[str, Any]:
    schema_id, definition = FACETS[name]
    return {"_producer": PRODUCER, "_schemaURL": f"{schema_id}#/$defs/{definition}", **fields}


def _dataset(dv: DatasetVersion, namespace: str) -> Event:
    facets: dict[str, Any] = {
        "version": _facet("version", datasetVersion=str(dv.version)),
        "schema": _facet("schema", fields=[{"name": c.name, "type": c.type} for c in dv.schema]),
        "storage": _facet("storage", storageLayer="modelledger", fileFormat="parquet"),
        "modelledger_artifact": _facet(
            "modelledger_artifact", uri=dv.uri, digest=dv.digest, sha256=dv.file_sha256, rows=dv.row_count
        ),
    }
    return {"namespace": namespace, "name": f"datasets/{dv.name}", "facets": facets}


def _named_input(uri: str, namespace: str) -> Event:
    """A data set version the export did not collect (an erased one): named, nothing more."""
    name = uri[len("datasets:/") :].rsplit("/", 1)[0] if uri.startswith("datasets:/") else uri
    return {
        "namespace": namespace,
        "name": f"datasets/{name}",
        "facets": {"modelledger_artifact": _facet("modelledger_artifact", uri=uri)},
    }


def _model_dataset(mv: ModelVersion, namespace: str) -> Event:
    facets = {
        "version": _facet("version", datasetVersion=str(mv.version)),
        "modelledger_artifact": _facet(
            "modelledger_artifact",
            uri=mv.uri,
            digest=mv.digest,
            flavor=mv.flavor,
            files=[{"path": f.path, "sha256": f.sha256, "size": f.size} for f in mv.files],
        ),
    }
    signature = mv.signature
    if signature is not None:
        facets["schema"] = _facet(
            "schema", fields=[{"name": c.name, "type": c.type} for c in signature.inputs]
        )
    return {"namespace": namespace, "name": f"models/{mv.model}", "facets": facets}


def _source_dataset(uri: str, kind: str) -> Event:
    """A data set's source as an OpenLineage data set: the scheme and authority of its URI as
    the namespace, its path as the name (OpenLineage's naming of tables and files)."""
    parts = urlsplit(uri)
    if parts.scheme and parts.netloc:
        namespace = f"{parts.scheme}://{parts.netloc}"
        name = parts.path.lstrip("/") or uri
    elif parts.scheme and parts.scheme != "file":
        namespace, name = parts.scheme, parts.path or uri
    else:
        namespace, name = "file", parts.path or uri
    return {"namespace": namespace, "name": name, "facets": {}}


def _code_facet(code: Mapping[str, Any]) -> dict[str, Any] | None:
    """``sourceCodeLocation`` for a recorded git location; None without a repository URL (the
    facet requires a URL, and a location with none says nothing)."""
    repo = code.get("repo_url")
    if not isinstance(repo, str) or "://" not in repo:
        return None
    fields: dict[str, Any] = {"type": "git", "url": repo, "repoUrl": repo}
    if code.get("path"):
        fields["path"] = str(code["path"])
    if code.get("revision"):
        fields["version"] = str(code["revision"])
    if code.get("branch"):
        fields["branch"] = str(code["branch"])
    return _facet("sourceCodeLocation", **fields)


def _parameters(values: Mapping[str, Any]) -> dict[str, Any]:
    """``executionParameters``: every value as a string (the facet's type), JSON where not one."""
    items = []
    for key, value in values.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        items.append({"key": key, "value": text})
    return _facet("executionParameters", parameters=items)


def _time(text: Any, fallback: datetime) -> datetime:
    """A time the manifest or source recorded as text (ISO 8601), else ``fallback``: what a
    user wrote there is not checked at registration, and an export must not fail on it."""
    try:
        return from_stored(str(text))
    except ValueError:
        return fallback
