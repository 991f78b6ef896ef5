"""``in-toto``: an in-toto Statement v1 with a SLSA Provenance v1 predicate, in a signed DSSE envelope.

The statement says what was built (``subject``: a model version's files, a data set version's
Parquet file, or one prediction's receipt, each by sha256) and how (``predicate``): the
``buildDefinition`` holds the parameters and the code location a user chose
(``externalParameters``), what the registry recorded about the machine (``internalParameters``)
and every input by digest (``resolvedDependencies``: data set versions, the framework and
dependency versions as ``pkg:pypi`` package URLs, the source repository at its revision); the
``runDetails`` name the builder and the training job (id, start, end).

The statement is written as RFC 8785 canonical JSON and wrapped in a DSSE envelope
(``payloadType`` ``application/vnd.in-toto+json``) whose one signature is the exporting
identity's Ed25519 signature over the DSSE pre-authentication encoding (PAE), with ``keyid``
the identity's key id. Ed25519 signatures are deterministic, so the same registry exported twice
gives the same bytes. securesystemslib's ``dsse.Envelope`` verifies it with the public key
(``Registry.public_key(key_id)``); docs/export.md shows how.

Build types (what ``buildDefinition.buildType`` names, one per kind of subject):

- ``.../training/v1``: a model version; ``externalParameters`` = ``params``, ``settings``,
  ``source`` (repository, path, revision) and ``datasets`` (role -> data set version);
- ``.../dataset/v1``: a data set version; ``externalParameters`` = its ``source`` and ``steps``;
- ``.../prediction/v1``: one served prediction; ``externalParameters`` = the ``model`` version and
  the ``input_digest``; the model version's files are its resolved dependencies.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from .. import __version__
from .._canonical import canonicalize
from .._domain import DatasetVersion, ModelVersion
from .._dsse import PAYLOAD_TYPE, STATEMENT_TYPE, envelope
from ..errors import InvalidInput
from ._collect import Provenance

__all__ = [
    "BUILDER_ID",
    "BUILD_TYPES",
    "PREDICATE_TYPE",
    "render",
    "statement",
]

PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
_URI = "https://modelledger.dev/provenance"
BUILD_TYPES = {
    "model": f"{_URI}/training/v1",
    "dataset": f"{_URI}/dataset/v1",
    "prediction": f"{_URI}/prediction/v1",
}
BUILDER_ID = f"{_URI}/registry/v1"
# the fields of a receipt its signature covers (modelledger._serving.receipts): the subject's bytes
_RECEIPT_BODY = ("digest", "input_digest", "key_id", "model", "output", "prediction_id", "time", "version")
_HEX = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


def render(p: Provenance, *, sign: Callable[[bytes], bytes] | None = None) -> bytes:
    """The DSSE envelope (JSON, sorted keys) of :func:`statement` for ``p``, signed with ``sign``.

    >>> envelope_json = render(collect(registry, "models:/credit-risk/3"), sign=key.sign)  # doctest: +SKIP
    """
    if sign is None:
        raise InvalidInput("the in-toto export is signed: it needs the exporting identity's key")
    return envelope(canonicalize(statement(p)), PAYLOAD_TYPE, sign, p.key_id)


def statement(p: Provenance) -> dict[str, Any]:
    """The in-toto Statement v1 (a JSON-ready dict) with its SLSA Provenance v1 predicate."""
    if p.kind == "model":
        assert p.model is not None
        subjects = _files(p.model)
        build = _training(p, p.model)
    elif p.kind == "dataset":
        own = p.dataset_by_uri(p.subject)
        if own is None:
            raise InvalidInput(f"{p.subject} is not among the collected data set versions")
        subjects = [_parquet(own)]
        build = _dataset_build(p, own)
    elif p.kind == "prediction":
        assert p.model is not None and p.prediction is not None
        subjects = [_receipt(p.prediction)]
        build = _prediction(p, p.model, p.prediction)
    else:
        raise InvalidInput(f"cannot state the provenance of a {p.kind!r}")
    definition, metadata = build
    run: dict[str, Any] = {"builder": {"id": BUILDER_ID, "version": {"modelledger": __version__}}}
    if metadata:
        run["metadata"] = metadata
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": {"buildDefinition": definition, "runDetails": run},
    }


# ---------------------------------------------------------------------- the three build types

Build = tuple[dict[str, Any], dict[str, Any]]  # (buildDefinition, runDetails.metadata)


def _training(p: Provenance, mv: ModelVersion) -> Build:
    m = mv.manifest
    source = _source(m.get("source") or {})
    external: dict[str, Any] = {
        "model": mv.uri,
        "params": dict(m.get("params") or {}),
        "settings": dict(m.get("settings") or {}),
        "datasets": {str(d.get("role") or ""): str(d["uri"]) for d in m.get("datasets") or ()},
    }
    if source:
        external["source"] = source
    internal = _drop_none(
        {
            "flavor": m.get("flavor"),
            "algorithm": m.get("algorithm"),
            "framework": m.get("framework"),
            "framework_version": m.get("framework_version"),
            "python": m.get("python"),
            "platform": m.get("platform"),
            "environment": m.get("environment"),
        }
    )
    deps: list[dict[str, Any]] = []
    repo = _repository(m.get("source") or {})
    if repo is not None:
        deps.append(repo)
    deps.extend(_dataset_dependency(dv, p.roles.get(dv.uri)) for dv in p.datasets)
    deps.extend(_packages(m))
    job = m.get("training_job") or {}
    metadata = _drop_none(
        {
            "invocationId": None if job.get("id") is None else str(job["id"]),
            "startedOn": job.get("started_at"),
            "finishedOn": job.get("ended_at"),
        }
    )
    return _definition(p.kind, external, internal, deps), metadata


def _dataset_build(p: Provenance, own: DatasetVersion) -> Build:
    source = _drop_none(own.source.to_dict())
    external: dict[str, Any] = {
        "dataset": own.uri,
        "source": source,
        "steps": [_drop_none(s.to_dict()) for s in own.steps],
    }
    internal = {"rows": own.row_count, "schema": [c.to_dict() for c in own.schema]}
    deps: list[dict[str, Any]] = []
    seen: set[str] = set()
    for code in [own.source.code, *(s.code for s in own.steps)]:
        repo = _repository(code)
        if repo is not None and repo["uri"] not in seen:
            seen.add(repo["uri"])
            deps.append(repo)
    deps.extend(_dataset_dependency(dv, None) for dv in p.datasets if dv.uri != own.uri)
    metadata = _drop_none({"finishedOn": own.source.extracted_at})
    return _definition(p.kind, external, internal, deps), metadata


def _prediction(p: Provenance, mv: ModelVersion, record: Mapping[str, Any]) -> Build:
    external = {"model": mv.uri, "input_digest": str(record.get("input_digest") or "")}
    internal = _drop_none({"flavor": mv.manifest.get("flavor"), "model_digest": mv.digest})
    deps = [
        {
            "name": f.path,
            "uri": f"{mv.uri}#{quote(f.path)}",
            "digest": {"sha256": f.sha256},
        }
        for f in sorted(mv.files, key=lambda f: f.path)
    ]
    time = record.get("time")
    metadata = _drop_none(
        {
            "invocationId": str(record["prediction_id"]),
            "startedOn": None if time is None else str(time),
            "finishedOn": None if time is None else str(time),
        }
    )
    return _definition(p.kind, external, internal, deps), metadata


def _definition(
    kind: str, external: Mapping[str, Any], internal: Mapping[str, Any], deps: list[dict[str, Any]]
) -> dict[str, Any]:
    out: dict[str, Any] = {"buildType": BUILD_TYPES[kind], "externalParameters": dict(external)}
    if internal:
        out["internalParameters"] = dict(internal)
    if deps:
        out["resolvedDependencies"] = deps
    return out


# ---------------------------------------------------------------------- resource descriptors


def _files(mv: ModelVersion) -> list[dict[str, Any]]:
    return [{"name": f.path, "digest": {"sha256": f.sha256}} for f in sorted(mv.files, key=lambda f: f.path)]


def _parquet(dv: DatasetVersion) -> dict[str, Any]:
    return {
        "name": dv.path,
        "uri": dv.uri,
        "digest": {"sha256": dv.file_sha256},
        "mediaType": "application/vnd.apache.parquet",
    }


def _receipt(record: Mapping[str, Any]) -> dict[str, Any]:
    """The prediction as the receipt's signed body: sha256 over its RFC 8785 JSON, which anyone
    holding the receipt (``Registry.prediction(id)["receipt"]``) can recompute."""
    receipt = record.get("receipt") or {}
    body = {k: receipt[k] for k in _RECEIPT_BODY if k in receipt}
    if len(body) != len(_RECEIPT_BODY):
        raise InvalidInput(f"the prediction {record.get('prediction_id')} has no complete receipt to state")
    return {
        "name": str(record["prediction_id"]),
        "digest": {"sha256": hashlib.sha256(canonicalize(body)).hexdigest()},
        "annotations": {"model": f"models:/{body['model']}/{body['version']}"},
    }


def _dataset_dependency(dv: DatasetVersion, role: str | None) -> dict[str, Any]:
    annotations: dict[str, Any] = {"content_digest": dv.digest, "rows": dv.row_count}
    if role:
        annotations["role"] = role
    if dv.source.uri:
        annotations["source"] = dv.source.uri
    return {
        "name": dv.path,
        "uri": dv.uri,
        "digest": {"sha256": dv.file_sha256},
        "mediaType": "application/vnd.apache.parquet",
        "annotations": annotations,
    }


def _source(src: Mapping[str, Any]) -> dict[str, Any]:
    """The code a user chose: ``repository``, ``path``, ``revision`` (and ``dirty`` when known)."""
    return _drop_none(
        {
            "repository": src.get("repo_url"),
            "path": src.get("path"),
            "revision": src.get("revision"),
            "dirty": src.get("dirty"),
        }
    )


def _repository(code: Mapping[str, Any]) -> dict[str, Any] | None:
    """The source repository at its revision, as SLSA writes it: a ``git+`` URI ``@revision``
    with a ``gitCommit`` digest (only for a full commit hash, which is what that digest means)."""
    url, rev = code.get("repo_url"), code.get("revision")
    if not url:
        return None
    uri = str(url) if str(url).startswith("git+") or "://" not in str(url) else f"git+{url}"
    out: dict[str, Any] = {"uri": f"{uri}@{rev}" if rev else uri}
    if isinstance(rev, str) and _HEX.match(rev):
        out["digest"] = {"gitCommit": rev}
    if code.get("dirty"):
        out["annotations"] = {"dirty": True}
    return out


def _packages(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The framework and every recorded dependency as ``pkg:pypi/<name>@<version>`` (PEP 503
    names, as the package URL spec asks for PyPI), one each, sorted."""
    found: dict[str, str] = {}
    framework, version = manifest.get("framework"), manifest.get("framework_version")
    if framework and version:
        found[_pypi_name(str(framework))] = str(version)
    for name, ver in (manifest.get("dependencies") or {}).items():
        found.setdefault(_pypi_name(str(name)), str(ver))
    return [{"name": name, "uri": _purl(name, ver)} for name, ver in sorted(found.items())]


def _pypi_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _purl(name: str, version: str) -> str:
    return f"pkg:pypi/{quote(name, safe='-')}@{quote(version, safe='.-_~!')}"


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None and v != {} and v != []}
