"""What the PROV, CycloneDX and SPDX renderers share: reading a :class:`Provenance` the same way.

Each rule here (which data set roles a model was trained on, how a metric name names its
slice, a package's purl, the key a document's identifiers derive from, the JSON bytes) is
written once, so the three documents describe one registry the same way. No I/O.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .._canonical import canonicalize_str

if TYPE_CHECKING:
    from .._domain import DatasetVersion, ModelVersion
    from ._collect import Provenance

__all__ = [
    "TESTED_ROLES",
    "TRAINED_ROLES",
    "dumps",
    "generated_at",
    "is_trained_on",
    "iso",
    "iso_seconds",
    "metric_slice",
    "model_kind",
    "packages",
    "pypi_name",
    "pypi_purl",
    "scalar",
    "subject_dataset",
    "subject_digest",
    "text_value",
]

TRAINED_ROLES = frozenset({"train", "training", "validation", "valid", "val", "dev", "fit"})
"""Roles of a data set a model was fitted on (early stopping reads a validation set too)."""

TESTED_ROLES = frozenset({"holdout", "test", "testing", "eval", "evaluation", "calibration"})
"""Roles of a data set a model was only evaluated on: it was not derived from them."""


def dumps(document: Mapping[str, Any]) -> bytes:
    """The document as UTF-8 JSON: sorted keys, two-space indent, a final newline.

    The same document gives the same bytes; a non-finite float is refused (it has no JSON
    form), and :func:`scalar` turns those into text before they get here.
    """
    text = json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def iso(value: datetime | str) -> str:
    """A UTC time as ISO 8601 with ``Z`` (microseconds kept when there are any)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def iso_seconds(value: datetime | str) -> str:
    """A UTC time to the second, ``2026-11-01T10:05:00Z``: what SPDX 3 accepts."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def scalar(value: Any) -> str | int | float | bool:
    """A JSON scalar for one recorded value: numbers, booleans and text stay as they are,
    anything nested becomes its canonical JSON text (RFC 8785), so one value stays one value."""
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if value is None:
        return "null"
    return canonicalize_str(value)


def text_value(value: Any) -> str:
    """One recorded value as text: strings as they are, anything else as canonical JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return canonicalize_str(value)


def is_trained_on(role: str) -> bool:
    """Whether a model was fitted on a data set given in this role (else only evaluated on it)."""
    return role.lower() not in TESTED_ROLES


def metric_slice(name: str, roles: Iterable[str]) -> tuple[str, str | None]:
    """``auc_holdout`` -> ``("auc", "holdout")`` when ``holdout`` is one of the model's data set
    roles (or a usual evaluation role); otherwise the name and no slice."""
    known = sorted({*roles, *TESTED_ROLES, *TRAINED_ROLES}, key=len, reverse=True)
    for role in known:
        for sep in ("_", "-", "."):
            if name.endswith(sep + role) and len(name) > len(role) + 1:
                return name[: -len(role) - 1], role
    return name, None


_PYPI_SEP = re.compile(r"[-_.]+")


def pypi_name(name: str) -> str:
    """A distribution's normalised name (PEP 503): ``Scikit_Learn`` -> ``scikit-learn``."""
    return _PYPI_SEP.sub("-", name).lower()


def pypi_purl(name: str, version: str | None) -> str:
    """The package URL of a PyPI distribution: ``pkg:pypi/scikit-learn@1.5.2``.

    The version is percent-encoded as the purl specification asks (``2.3.0+cpu`` ->
    ``2.3.0%2Bcpu``)."""
    purl = f"pkg:pypi/{quote(pypi_name(name), safe='')}"
    return f"{purl}@{quote(str(version), safe='.-_~')}" if version else purl


def packages(model: ModelVersion) -> list[tuple[str, str | None, bool]]:
    """``(name, version, is the framework)`` for every recorded dependency, by normalised
    name; the manifest's ``framework`` is among them even when ``dependencies`` does not list
    it (a folder registered with its own manifest)."""
    manifest = model.manifest
    found: dict[str, tuple[str, str | None]] = {}
    for name, version in (manifest.get("dependencies") or {}).items():
        found.setdefault(pypi_name(str(name)), (str(name), str(version) if version else None))
    framework, version = manifest.get("framework"), manifest.get("framework_version")
    key = pypi_name(framework) if isinstance(framework, str) and framework else None
    if key is not None and key not in found:
        found[key] = (str(framework), str(version) if version else None)
    return [(name, ver, k == key) for k, (name, ver) in sorted(found.items())]


def subject_dataset(p: Provenance) -> DatasetVersion | None:
    """The data set version a ``datasets:/`` export is about."""
    for dataset in p.datasets:
        if dataset.uri == p.subject:
            return dataset
    return None


def generated_at(p: Provenance) -> datetime | str:
    """When the document describes the subject as of: the newest event's time, or, when the
    registry recorded no event about it, the time the subject itself was registered."""
    if p.generated_at:
        return p.generated_at
    dataset = subject_dataset(p)
    if p.model is not None:
        return p.model.created_at
    return dataset.created_at if dataset is not None else datetime(1970, 1, 1, tzinfo=timezone.utc)


def subject_digest(p: Provenance) -> str:
    """The hex digest a document's identity derives from: the model version's digest (for a
    prediction too: the version that made it, with the prediction id mixed in), or the data
    set version's. The same subject always gets the same identifiers."""
    if p.kind == "prediction" and p.prediction is not None:
        seed = f"{p.model.digest if p.model else ''}|{p.prediction.get('prediction_id', p.subject)}"
        return hashlib.sha256(seed.encode("utf-8")).hexdigest()
    if p.model is not None:
        return p.model.digest.split(":", 1)[-1]
    dataset = subject_dataset(p)
    if dataset is not None:
        return dataset.digest.split(":", 1)[-1]
    return hashlib.sha256(p.subject.encode("utf-8")).hexdigest()


def model_kind(model: ModelVersion) -> tuple[str | None, str | None, str | None]:
    """``(learning approach, task, architecture family)`` read off the recorded algorithm,
    each ``None`` when the class name does not say (a callable, a folder of files).

    ``sklearn.pipeline.Pipeline[sklearn.ensemble._gb.GradientBoostingClassifier]`` ->
    ``("supervised", "classification", "gradient-boosted trees")``.
    """
    algorithm = str(model.manifest.get("algorithm") or "")
    final = algorithm.rsplit("[", 1)[-1].rstrip("]").rsplit(".", 1)[-1]
    lower = final.lower()
    task: str | None = None
    if "classif" in lower or lower.startswith("logistic") or lower.endswith("svc"):
        task = "classification"
    elif "regress" in lower or lower in {"ridge", "lasso", "elasticnet", "svr"}:
        task = "regression"
    elif "cluster" in algorithm.lower() or lower in {"kmeans", "dbscan", "minibatchkmeans"}:
        task = "clustering"
    elif "ranker" in lower:
        task = "ranking"
    approach = {"classification": "supervised", "regression": "supervised", "ranking": "supervised"}.get(
        task or "", "unsupervised" if task == "clustering" else None
    )
    family: str | None = None
    for needle, name in (
        ("gradientboosting", "gradient-boosted trees"),
        ("histgradient", "gradient-boosted trees"),
        ("xgb", "gradient-boosted trees"),
        ("lgbm", "gradient-boosted trees"),
        ("catboost", "gradient-boosted trees"),
        ("randomforest", "random forest"),
        ("extratrees", "random forest"),
        ("decisiontree", "decision tree"),
        ("logistic", "linear model"),
        ("linear", "linear model"),
        ("ridge", "linear model"),
        ("lasso", "linear model"),
        ("elasticnet", "linear model"),
        ("sgd", "linear model"),
        ("svc", "support vector machine"),
        ("svr", "support vector machine"),
        ("mlp", "neural network"),
        ("kneighbors", "nearest neighbours"),
        ("naivebayes", "naive Bayes"),
        ("kmeans", "k-means"),
    ):
        if needle in lower:
            family = name
            break
    if family is None and lower.endswith("nb"):  # GaussianNB, MultinomialNB, ...
        family = "naive Bayes"
    if family is None and model.flavor in {"pytorch", "onnx"}:
        family = "neural network"
    return approach, task, family
