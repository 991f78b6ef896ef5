"""W3C PROV-JSON: a model version's lineage as entities, activities and agents.

What each record stands for:

- **entities**: the model version (``models:credit-risk/3``, a ``prov:Collection`` of its
  files), each artefact file by its sha256 (``sha256:<hex>``, a member of the version), each
  data set version upstream (``datasets:applications-train/2``), the source a data set was
  extracted from, the training code (the ``prov:Plan`` of the training), and for a prediction
  the prediction and its input (by digest: the row itself stays in the registry);
- **activities**: the training, each processing step of each data set version, each ledger
  event about the subject (registration, stage moves, approvals, deployments: ``ledger:<seq>``),
  and the serving of a prediction;
- **agents**: every identity that acted (``identity:<name>``) and the registry identity that
  exported the document (``registry:<key id>``, with its Ed25519 public key).

Relations: ``used`` (the training used each data set in its role; a step used its inputs; a
ledger event used the version it is about), ``wasGeneratedBy``, ``wasDerivedFrom`` (the model
from the data sets it was fitted on, not from holdout or test sets; a data set from its inputs
and from its source, as ``prov:PrimarySource``), ``wasAttributedTo`` (who registered),
``wasAssociatedWith`` (who ran each activity, with the training code as plan and the approver,
deployer, ... as role), ``wasInformedBy`` (one step after another) and ``hadMember``.

Hyperparameters and metrics become attributes in their own namespaces (``param:max_depth``,
``metric:auc``); a nested value is its canonical JSON text. Output: sorted keys,
relation ids numbered in the order the registry lists things, so the same registry gives the
same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ._std import dumps, is_trained_on, iso, scalar, text_value

if TYPE_CHECKING:
    from .._domain import DatasetVersion, ModelVersion
    from .._ledger import LedgerEvent
    from ._collect import Provenance

__all__ = ["NAMESPACES", "render"]

NAMESPACES: dict[str, str] = {
    "ml": "urn:modelledger:terms:",
    "models": "models:/",
    "datasets": "datasets:/",
    "sha256": "sha256:",
    "identity": "urn:modelledger:identity:",
    "registry": "urn:modelledger:registry:",
    "ledger": "urn:modelledger:ledger:",
    "prediction": "urn:modelledger:prediction:",
    "param": "urn:modelledger:param:",
    "metric": "urn:modelledger:metric:",
}
"""Prefixes declared by every document. ``models:credit-risk/3`` expands to the registry's own
identifier ``models:/credit-risk/3``, as ``datasets:`` does for data set versions."""

# Which role an actor plays in the activity a ledger event records.
_ROLES = {
    "version.registered": "registrant",
    "version.approved": "approver",
    "version.rejected": "reviewer",
    "validation.evaluated": "validator",
    "deployment.deployed": "deployer",
    "deployment.rolled_back": "deployer",
    "stage.changed": "operator",
    "dataset.registered": "registrant",
}

_RELATION_KEYS = {
    "used": "u",
    "wasGeneratedBy": "g",
    "wasDerivedFrom": "d",
    "wasAttributedTo": "at",
    "wasAssociatedWith": "as",
    "wasInformedBy": "i",
    "hadMember": "m",
}


def _qn(name: str) -> dict[str, str]:
    """A qualified-name value (``prov:type`` and roles), typed as PROV-JSON asks."""
    return {"$": name, "type": "prov:QUALIFIED_NAME"}


def _local(text: str) -> str:
    """Text as the local part of a qualified name: anything beyond letters, digits, ``-._~@/``
    percent-encoded (PROV-N's escape), so a ``:`` in a name cannot read as a prefix."""
    return quote(text, safe="-._~@/")


_VERSION_URI = re.compile(r"^(models|datasets):/([^/@]+/\d+)$")


def _entity_id(uri: str) -> str | None:
    """``models:/x/3`` -> ``models:x/3``; ``datasets:/d/2`` -> ``datasets:d/2``; None for
    anything else (an alias, ``models:/x@production``, names no one version)."""
    match = _VERSION_URI.match(uri)
    return f"{match.group(1)}:{_local(match.group(2))}" if match else None


def _identity(actor: str) -> str:
    return f"identity:{_local(actor)}"


class _Document:
    """The PROV-JSON document under construction: records keyed by id, relations numbered."""

    def __init__(self) -> None:
        self.entity: dict[str, dict[str, Any]] = {}
        self.activity: dict[str, dict[str, Any]] = {}
        self.agent: dict[str, dict[str, Any]] = {}
        self.relations: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in _RELATION_KEYS}
        self._seen: set[tuple[str, str]] = set()

    def relate(self, kind: str, **attributes: Any) -> None:
        """Add one relation (``prov_activity=`` for ``prov:activity``); a repeat is dropped."""
        record = {f"prov:{k[5:]}" if k.startswith("prov_") else k: v for k, v in attributes.items()}
        record = {k: v for k, v in record.items() if v is not None}
        key = (kind, repr(sorted(record.items())))
        if key in self._seen:
            return
        self._seen.add(key)
        table = self.relations[kind]
        table[f"_:{_RELATION_KEYS[kind]}{len(table) + 1}"] = record

    def add_agent(self, actor: str) -> str:
        agent_id = _identity(actor)
        self.agent.setdefault(agent_id, {"prov:type": _qn("ml:Identity"), "prov:label": actor})
        return agent_id

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"prefix": dict(NAMESPACES)}
        for name in ("entity", "activity", "agent"):
            records = getattr(self, name)
            if records:
                out[name] = records
        for kind, table in self.relations.items():
            if table:
                out[kind] = table
        return out


def _attributes(namespace: str, values: Mapping[str, Any]) -> dict[str, Any]:
    return {f"{namespace}:{quote(str(k), safe='-._~')}": scalar(v) for k, v in values.items()}


def _drop_none(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if v is not None and v != ""}


def _add_model(doc: _Document, m: ModelVersion) -> str:
    manifest = m.manifest
    model_id = f"models:{_local(f'{m.model}/{m.version}')}"
    doc.entity[model_id] = _drop_none(
        {
            "prov:type": [_qn("ml:ModelVersion"), _qn("prov:Collection")],
            "prov:label": f"{m.model} version {m.version}",
            "ml:uri": m.uri,
            "ml:digest": m.digest,
            "ml:flavor": m.flavor,
            "ml:folder": m.folder,
            "ml:registered_at": iso(m.created_at),
            "ml:algorithm": manifest.get("algorithm"),
            "ml:framework": manifest.get("framework"),
            "ml:framework_version": manifest.get("framework_version"),
            "ml:python": manifest.get("python"),
            "ml:description": manifest.get("description"),
            **_attributes("param", manifest.get("params") or {}),
            **_attributes("metric", manifest.get("metrics") or {}),
        }
    )
    # a file is its content: two paths with the same bytes are one entity with both paths
    by_digest: dict[str, list[Any]] = {}
    for entry in m.files:
        by_digest.setdefault(entry.sha256, []).append(entry)
    for digest, entries in by_digest.items():
        paths = sorted(e.path for e in entries)
        file_id = f"sha256:{digest}"
        doc.entity[file_id] = {
            "prov:type": _qn("ml:File"),
            "ml:path": paths[0] if len(paths) == 1 else paths,
            "ml:size": entries[0].size,
        }
        doc.relate("hadMember", prov_collection=model_id, prov_entity=file_id)

    # the training: what it used, who ran it, with which code
    training = f"{model_id}/training"
    job = manifest.get("training_job") or {}
    doc.activity[training] = _drop_none(
        {
            "prov:type": _qn("ml:Training"),
            "prov:label": f"training of {m.model} version {m.version}",
            "prov:startTime": iso(job["started_at"]) if job.get("started_at") else None,
            "prov:endTime": iso(job["ended_at"]) if job.get("ended_at") else None,
            "ml:job_id": job.get("id"),
        }
    )
    source = manifest.get("source") or {}
    plan = None
    if source.get("repo_url") or source.get("revision") or source.get("path"):
        plan = f"{model_id}/source"
        doc.entity[plan] = _drop_none(
            {
                "prov:type": [_qn("prov:Plan"), _qn("ml:SourceCode")],
                "prov:location": source.get("repo_url"),
                "ml:path": source.get("path"),
                "ml:revision": source.get("revision"),
                "ml:branch": source.get("branch"),
                "ml:dirty": source.get("dirty"),
            }
        )
    elif source.get("unknown"):
        doc.activity[training]["ml:source_unknown"] = source["unknown"]
    for entry in manifest.get("datasets") or ():
        dataset_id = _entity_id(str(entry.get("uri", "")))
        if dataset_id is None:
            continue
        role = str(entry.get("role") or "")
        doc.relate("used", prov_activity=training, prov_entity=dataset_id, prov_role=role or None)
        if is_trained_on(role):
            doc.relate(
                "wasDerivedFrom",
                prov_generatedEntity=model_id,
                prov_usedEntity=dataset_id,
                prov_activity=training,
            )
    doc.relate(
        "wasGeneratedBy",
        prov_entity=model_id,
        prov_activity=training,
        prov_time=iso(job["ended_at"]) if job.get("ended_at") else None,
    )
    if m.created_by:
        agent = doc.add_agent(m.created_by)
        doc.relate("wasAssociatedWith", prov_activity=training, prov_agent=agent, prov_plan=plan)
        doc.relate("wasAttributedTo", prov_entity=model_id, prov_agent=agent)
    return model_id


def _add_dataset(doc: _Document, d: DatasetVersion) -> None:
    dataset_id = f"datasets:{_local(f'{d.name}/{d.version}')}"
    doc.entity[dataset_id] = _drop_none(
        {
            "prov:type": _qn("ml:DatasetVersion"),
            "prov:label": f"{d.name} version {d.version}",
            "ml:uri": d.uri,
            "ml:digest": d.digest,
            "ml:file_sha256": d.file_sha256,
            "ml:path": d.path,
            "ml:rows": d.row_count,
            "ml:size_bytes": d.size_bytes,
            "ml:columns": ", ".join(f"{c.name} ({c.type})" for c in d.schema),
            "ml:registered_at": iso(d.created_at),
        }
    )
    agent = doc.add_agent(d.created_by) if d.created_by else None
    if agent:
        doc.relate("wasAttributedTo", prov_entity=dataset_id, prov_agent=agent)
    src = d.source
    if src.uri or src.query:
        source_id = f"{dataset_id}/source"
        doc.entity[source_id] = _drop_none(
            {
                "prov:type": _qn("ml:Source"),
                "prov:location": src.uri,
                "ml:kind": src.kind,
                "ml:query": src.query,
                "ml:extracted_at": src.extracted_at,
                **{f"ml:code_{k}": scalar(v) for k, v in src.code.items() if v is not None},
            }
        )
        doc.relate(
            "wasDerivedFrom",
            prov_generatedEntity=dataset_id,
            prov_usedEntity=source_id,
            prov_type=_qn("prov:PrimarySource"),
        )
    previous = None
    for number, step in enumerate(d.steps, start=1):
        step_id = f"{dataset_id}/step/{number}"
        doc.activity[step_id] = _drop_none(
            {
                "prov:type": _qn("ml:ProcessingStep"),
                "prov:label": step.name,
                "ml:kind": step.kind,
                "ml:columns": text_value(list(step.columns)) if step.columns else None,
                **_attributes("param", step.params),
                **{f"ml:code_{k}": scalar(v) for k, v in step.code.items() if v is not None},
            }
        )
        for uri in step.inputs:
            input_id = _entity_id(uri)
            if input_id is None:
                continue
            doc.relate("used", prov_activity=step_id, prov_entity=input_id)
            doc.relate(
                "wasDerivedFrom",
                prov_generatedEntity=dataset_id,
                prov_usedEntity=input_id,
                prov_activity=step_id,
            )
        if previous is not None:
            doc.relate("wasInformedBy", prov_informed=step_id, prov_informant=previous)
        if agent:
            doc.relate("wasAssociatedWith", prov_activity=step_id, prov_agent=agent)
        previous = step_id
    if previous is not None:
        doc.relate(
            "wasGeneratedBy", prov_entity=dataset_id, prov_activity=previous, prov_time=iso(d.created_at)
        )


def _add_event(doc: _Document, event: LedgerEvent, fallback: str | None) -> None:
    activity = f"ledger:{event.seq}"
    data = event.data
    doc.activity[activity] = _drop_none(
        {
            "prov:type": _qn(f"ml:{_local(event.action)}"),
            "prov:label": event.action,
            "prov:startTime": iso(event.time),
            "prov:endTime": iso(event.time),
            "ml:subject": event.subject,
            "ml:sequence": event.seq,
            "ml:reason": event.reason,
            "ml:stage": data.get("stage") if isinstance(data.get("stage"), str) else None,
            "ml:alias": data.get("alias") if isinstance(data.get("alias"), str) else None,
        }
    )
    subject = _entity_id(event.subject) or fallback
    if subject is not None:
        doc.relate("used", prov_activity=activity, prov_entity=subject)
    role = _ROLES.get(event.action)
    doc.relate(
        "wasAssociatedWith",
        prov_activity=activity,
        prov_agent=doc.add_agent(event.actor),
        prov_role=_qn(f"ml:{role}") if role else None,
    )


def _add_prediction(doc: _Document, record: Mapping[str, Any], model_id: str | None) -> None:
    pid = str(record.get("prediction_id"))
    prediction = f"prediction:{_local(pid)}"
    inputs = f"{prediction}/input"
    serving = f"{prediction}/serving"
    time = iso(record["time"]) if record.get("time") else None
    doc.entity[prediction] = _drop_none(
        {
            "prov:type": _qn("ml:Prediction"),
            "prov:label": f"prediction {pid}",
            "ml:output": text_value(record.get("output")),
            "ml:receipt": text_value(record["receipt"]) if record.get("receipt") else None,
        }
    )
    # the input row can be personal data: the export names it by digest only
    doc.entity[inputs] = _drop_none(
        {"prov:type": _qn("ml:PredictionInput"), "ml:digest": record.get("input_digest")}
    )
    doc.activity[serving] = _drop_none(
        {"prov:type": _qn("ml:Serving"), "prov:startTime": time, "prov:endTime": time}
    )
    if model_id is not None:
        doc.relate("used", prov_activity=serving, prov_entity=model_id, prov_role=_qn("ml:model"))
    doc.relate("used", prov_activity=serving, prov_entity=inputs, prov_role=_qn("ml:input"))
    doc.relate("wasGeneratedBy", prov_entity=prediction, prov_activity=serving, prov_time=time)
    doc.relate(
        "wasDerivedFrom", prov_generatedEntity=prediction, prov_usedEntity=inputs, prov_activity=serving
    )


def render(p: Provenance, *, sign: Callable[[bytes], bytes] | None = None) -> bytes:
    """The provenance as a PROV-JSON document (``sign`` is not used: PROV has no signature).

    >>> from modelledger import Registry
    >>> Registry.open().export("models:/credit-risk/3", format="prov")  # doctest: +SKIP
    """
    doc = _Document()
    # the key that exported: what the signed formats of the same registry are checked with
    doc.agent[f"registry:{_local(p.key_id)}"] = {
        "prov:type": _qn("prov:SoftwareAgent"),
        "prov:label": "modelledger registry identity that exported this document",
        "ml:key_id": p.key_id,
        "ml:public_key_ed25519": p.public_key.hex(),
    }
    model_id = _add_model(doc, p.model) if p.model is not None else None
    for dataset in p.datasets:
        _add_dataset(doc, dataset)
    fallback = model_id or _entity_id(p.subject)
    for event in p.events:
        _add_event(doc, event, fallback)
    if p.kind == "prediction" and p.prediction is not None:
        _add_prediction(doc, p.prediction, model_id)
    return dumps(doc.to_dict())
