"""Trace one prediction back to everything behind it.

``registry.trace(prediction_id)`` answers a customer's "why was my application
declined?" with one report: the prediction and its receipt check, the model version
and its artefact digests, who approved it and when it was deployed (from the ledger),
the manifest (code, hyperparameters, framework and dependencies, training job), and
the data sets with their sources and processing steps, recursively.

The prediction id carries the version's key, so the version is found without
scanning anything; the capture file is found by the id's date and name range.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._audit import subject_history
from ._domain import DatasetVersion, ModelVersion
from ._identifiers import parse_dataset_uri
from ._ledger import KeyRing
from ._lineage import version_links
from ._members import Roster, receipt_key_problem
from ._serving import check_receipt
from .errors import InvalidReceipt
from .stores.protocols import MetadataStore

__all__ = ["TraceReport", "trace_prediction"]


@dataclass(frozen=True, slots=True)
class TraceReport:
    """Everything behind one prediction, as plain data (``to_dict`` for JSON)."""

    prediction: dict[str, Any]
    receipt_valid: bool
    receipt_problem: str | None
    model: dict[str, Any]
    governance: dict[str, Any]
    manifest: dict[str, Any]
    datasets: list[dict[str, Any]] = field(default_factory=list)
    model_steps: list[dict[str, Any]] = field(default_factory=list)
    # the versions the model was refreshed or reproduced from, with verdicts (_lineage.version_links)
    links: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prediction": self.prediction,
            "receipt": {"valid": self.receipt_valid, "problem": self.receipt_problem},
            "model": self.model,
            "governance": self.governance,
            "manifest": self.manifest,
            "datasets": self.datasets,
            "model_steps": self.model_steps,
            "links": self.links,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TraceReport:
        receipt = data.get("receipt") or {}
        return cls(
            prediction=dict(data["prediction"]),
            receipt_valid=bool(receipt.get("valid", False)),
            receipt_problem=receipt.get("problem"),
            model=dict(data["model"]),
            governance=dict(data["governance"]),
            manifest=dict(data["manifest"]),
            datasets=[dict(d) for d in data.get("datasets", ())],
            model_steps=[dict(s) for s in data.get("model_steps", ())],
            links=[dict(link) for link in data.get("links", ())],
        )


def _dataset_entry(
    store: MetadataStore, dv: DatasetVersion, role: str | None, seen: set[str]
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "uri": dv.uri,
        "role": role,
        "digest": dv.digest,
        "rows": dv.row_count,
        "columns": [c.name for c in dv.schema],
        "source": dv.source.to_dict(),
        "steps": [],
    }
    if dv.uri in seen:
        entry["see_above"] = True
        return entry
    seen.add(dv.uri)
    for step in dv.steps:
        inputs = [store.get_dataset_version(*parse_dataset_uri(ref)) for ref in step.inputs]
        entry["steps"].append(
            {**step.to_dict(), "inputs": [_dataset_entry(store, parent, None, seen) for parent in inputs]}
        )
    return entry


def trace_prediction(
    store: MetadataStore, mv: ModelVersion, record: Mapping[str, Any], roster: Roster, keys: KeyRing
) -> TraceReport:
    """The full trace of one captured prediction ``record`` made by ``mv`` (see the module
    documentation); its receipt is checked with the key it names, which must be a serving key
    enrolled for the model and not revoked at the prediction's time (``roster``, ``keys``)."""
    receipt = record["receipt"]
    kid = str(receipt.get("key_id"))
    problem = receipt_key_problem(roster, kid, mv.model, str(receipt.get("time")), legacy_kid=_legacy(store))
    public = keys(kid)
    if problem is None and public is None:
        problem = f"signed by key {kid}, which this registry never enrolled"
    if problem is None and public is not None:
        try:
            check_receipt(receipt, public)
        except InvalidReceipt as exc:
            problem = exc.message
    if problem is None and record["receipt"].get("digest") != mv.digest:
        problem = "the receipt names another artefact digest than the registered version"
    state = store.version_state(mv.model, mv.version)
    # a renamed model's events were written under its former names too
    former = [old for old, new in store.renamed_models().items() if new == mv.model]
    events = subject_history(store, [f"models:/{n}/{mv.version}" for n in (mv.model, *former)], [])
    time = str(record["time"])
    approvals = [
        {"actor": e.actor, "time": e.time, "reason": e.reason, "automated": bool(e.data.get("automated"))}
        for e in events
        if e.action == "version.approved"
    ]
    deployments = [
        {"actor": e.actor, "time": e.time, "alias": e.data.get("alias"), "reason": e.reason}
        for e in events
        if e.action == "deployment.deployed"
    ]
    registered = next((e for e in events if e.action == "version.registered"), None)
    m = mv.manifest
    seen: set[str] = set()
    links = store.model_datasets(mv.key)
    return TraceReport(
        prediction={
            "id": record["prediction_id"],
            "time": time,
            "input": record["input"],
            "input_digest": record["input_digest"],
            "output": record["output"],
            "receipt": record["receipt"],
        },
        receipt_valid=problem is None,
        receipt_problem=problem,
        model={
            "uri": mv.uri,
            "digest": mv.digest,
            "folder": mv.folder,
            "flavor": mv.flavor,
            "files": [f.to_dict() for f in mv.files],
            "registered_by": mv.created_by,
            "registered_at": registered.time if registered else mv.created_at.isoformat(),
        },
        governance={
            "stage": state.stage,
            "approved_by": state.approved_by,
            "approvals": approvals,
            "deployments": deployments,
            "aliases_at_prediction": store.aliases_at(mv.model, mv.version, time),
            "events": [
                {"seq": e.seq, "time": e.time, "actor": e.actor, "action": e.action, "reason": e.reason}
                for e in events
            ],
        },
        manifest={
            "source": m.get("source"),
            "params": m.get("params"),
            "algorithm": m.get("algorithm"),
            "framework": m.get("framework"),
            "framework_version": m.get("framework_version"),
            "python": m.get("python"),
            "platform": m.get("platform"),
            "dependencies": m.get("dependencies"),
            "metrics": m.get("metrics"),
            "training_job": m.get("training_job"),
        },
        datasets=[_dataset_entry(store, dv, role, seen) for role, dv in links],
        model_steps=[dict(s) for s in m.get("steps") or ()],
        links=version_links(store, mv),
    )


def _legacy(store: MetadataStore) -> str | None:
    stored = store.public_key()
    return stored[0] if stored else None
