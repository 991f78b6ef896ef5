"""The remote client: ``Registry.open("http://host:port")`` gives a :class:`RemoteRegistry`, the
same verbs, return types and exceptions as a local registry, over a registry server.

It authenticates with an API token (``token=`` or ``$MODELLEDGER_TOKEN``) and, when this
machine holds the member's own signing key (their identity, as for a local registry), signs
every write with it, so that the ledger records the member's own signature beside the server's.
A server error comes back as the same :class:`ModelLedgerError` subclass it was raised as.

``load`` downloads a version's files into a local content-addressed cache (``$MODELLEDGER_CACHE``
or ``~/.cache/modelledger``), checks every byte against the version's recorded digests before
anything is deserialised, and reuses what is there: a second load downloads nothing.
"""

from __future__ import annotations

import builtins
import hashlib
import inspect
import io
import json
import os
import secrets
import shutil
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx

from . import errors as _errors
from ._audit import AliasChange
from ._data.datasets import code_facts, coerce_source
from ._delegation import SIGNATURE_HEADER, sign_request
from ._domain import (
    DatasetSource,
    DatasetVersion,
    DownloadedVersion,
    Erasure,
    FileEntry,
    Model,
    ModelVersion,
    Page,
    ProcessingStep,
    VerifyReport,
)
from ._download import download_planned, plan_download
from ._identifiers import model_ref, parse_dataset_uri
from ._keys import load_private_key
from ._ledger import LedgerEvent
from ._lifecycle import VersionState
from ._lineage import LineageGraph, VersionDiff
from ._loaded import LoadedModel
from ._loading import load_verified
from ._manifest import DEFAULT_LIMITS, capture_source
from ._members import Member
from ._policy import Policy
from ._registration import DATASET_ROLES, plan_registration, scratch
from ._registry import Registry
from ._signing import identity_path
from ._trace import TraceReport
from ._trust import check_registration_with_bundle
from ._upload import MANIFEST_MEMBER, UPLOAD_CHUNK
from .errors import InvalidInput, ModelLedgerError, StorageError
from .stores.artifacts import ArtifactStore

__all__ = ["MANIFEST_MEMBER", "UPLOAD_CHUNK", "RemoteRegistry", "cache_dir", "is_remote_url", "tar_stream"]

API = "/api/v1"


def is_remote_url(url: str | None) -> bool:
    return url is not None and url.startswith(("http://", "https://"))


def cache_dir() -> Path:
    """Where downloaded artefacts are kept: ``$MODELLEDGER_CACHE``, else the XDG cache folder."""
    explicit = os.environ.get("MODELLEDGER_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modelledger"


def _q(part: str) -> str:
    return quote(part, safe="")


def _error(status: int, body: Any) -> ModelLedgerError:
    """The library error a server response stands for (the same class, the same message)."""
    name = body.get("error") if isinstance(body, Mapping) else None
    message = body.get("message") if isinstance(body, Mapping) else None
    cls = getattr(_errors, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, ModelLedgerError)):
        cls = StorageError if status >= 500 else ModelLedgerError
    text = str(message or f"the server answered {status}")
    exc = cls.__new__(cls)
    Exception.__init__(exc, text)
    exc.message = text
    return exc


def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def tar_stream(folder: Path, header: bytes) -> Iterator[bytes]:
    """A registration upload as a tar stream, in chunks of at most :data:`UPLOAD_CHUNK` (large
    files are read as they are sent): ``header`` as :data:`MANIFEST_MEMBER`, then every file of
    ``folder`` in name order. The same folder always gives the same bytes."""
    yield _tar_header(MANIFEST_MEMBER, len(header)) + header + _padding(len(header))
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        size = path.stat().st_size
        yield _tar_header(path.relative_to(folder).as_posix(), size)
        with path.open("rb") as f:
            while block := f.read(UPLOAD_CHUNK):
                yield block
        yield _padding(size)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


class RemoteRegistry(Registry):
    """A registry served by ``modelledger server``, used through its HTTP API.

    >>> registry = Registry.open("https://models.example.com", token=os.environ["TOKEN"])  # doctest: +SKIP
    >>> registry.approve("models:/credit-risk/4", reason="holdout AUC 0.86")  # doctest: +SKIP
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        key: str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
        transport: Any = None,
    ) -> None:
        self.url = url.rstrip("/")
        token = token or os.environ.get("MODELLEDGER_TOKEN") or None
        if not token:
            raise InvalidInput(
                f"{self.url} is a registry server: give token= or set MODELLEDGER_TOKEN "
                "(an admin makes one with `modelledger tokens create`)"
            )
        self._client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )
        self._key_path = Path(key) if key is not None else None
        self._whoami: dict[str, Any] | None = None
        self.bytes_downloaded = 0  # what load() and open_file() fetched: a cache hit adds nothing

    # ------------------------------------------------------------ plumbing

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        content: Any = None,
        body_sha256: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        request = self._client.build_request(method, API + path, json=json, params=params, content=content)
        for name, value in (headers or {}).items():
            request.headers[name] = value
        if method != "GET":
            signature = self._sign(request, body_sha256)
            if signature is not None:
                request.headers[SIGNATURE_HEADER] = signature
        try:
            # a file is streamed to disk, never held whole in memory
            streamed = method == "GET" and ("/files/" in path or path.endswith("/file"))
            response = self._client.send(request, stream=streamed)
        except httpx.HTTPError as exc:
            raise StorageError(f"cannot reach the registry server {self.url}: {exc}") from exc
        if response.status_code >= 400 and response.status_code != 416:
            response.read()
            try:
                body = response.json()
            except ValueError:
                body = None
            raise _error(response.status_code, body)
        return response

    def _call(self, method: str, path: str, **options: Any) -> Any:
        response = self._request(method, path, **options)
        return None if response.status_code == 204 else response.json()

    def _sign(self, request: httpx.Request, body_sha256: str | None) -> str | None:
        """The member's own signature of this write, when their key is on this machine."""
        member = self.actor
        path = self._key_path or identity_path(member)
        if not path.exists():
            return None
        if body_sha256 is None:
            body_sha256 = hashlib.sha256(request.read()).hexdigest()
        target = request.url.raw_path.decode("ascii")
        return sign_request(
            load_private_key(path), member=member, method=request.method, path=target, body_sha256=body_sha256
        )

    def _me(self) -> dict[str, Any]:
        """The enrolled member the token stands for, as the server reports it (read once)."""
        if self._whoami is None:
            self._whoami = dict(self._call("GET", "/whoami"))
        return self._whoami

    def member(self) -> Member:
        """The enrolled member the token stands for."""
        return Member.from_dict({k: v for k, v in self._me().items() if k != "method"})

    @property
    def actor(self) -> str:
        return str(self._me()["name"])

    @property
    def artifact_root(self) -> str:
        return self.url

    def whoami(self) -> dict[str, Any]:
        path = self._key_path or identity_path(self.actor)
        return {
            "actor": self.actor,
            "key_path": str(path) if path.exists() else None,
            "member": self._me(),
            "server": self.url,
        }

    def close(self) -> None:
        self._client.close()

    @property
    def reads_are_local(self) -> bool:
        return False

    def read_stamp(self) -> str | None:
        """None: the server checks its own database's state; a client cannot."""
        return None

    def shared_reads(self) -> AbstractContextManager[None]:
        """Nothing to share here: the server keeps its own connections."""
        return nullcontext()

    def __enter__(self) -> RemoteRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _version_path(identifier: str, version: int | None = None) -> str:
        ref = model_ref(identifier, version)
        where = str(ref.version) if ref.version is not None else (ref.alias or "latest")
        return f"/models/{_q(ref.name)}/versions/{_q(where)}"

    @staticmethod
    def _version(body: Mapping[str, Any]) -> ModelVersion:
        return ModelVersion.from_dict({k: v for k, v in body.items() if k != "stage"})

    # ------------------------------------------------------------ models and versions

    def get_model(self, name: str) -> Model:
        return Model.from_dict(self._call("GET", f"/models/{_q(name)}"))

    def list_models(
        self,
        *,
        prefix: str | None = None,
        tags: Mapping[str, str] | None = None,
        stage: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        include_archived: bool = False,
    ) -> Page[Model]:
        params: dict[str, Any] = {"limit": limit, "include_archived": include_archived}
        params.update({k: v for k, v in (("prefix", prefix), ("stage", stage), ("cursor", cursor)) if v})
        if tags:
            params["tag"] = [f"{k}={v}" for k, v in tags.items()]
        body = self._call("GET", "/models", params=params)
        return Page([Model.from_dict(m) for m in body["items"]], body["next_cursor"])

    def iter_models(self, **filters: Any) -> Iterator[Model]:
        cursor = None
        while True:
            page = self.list_models(cursor=cursor, **filters)
            yield from page
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def create_model(
        self, name: str, *, description: str = "", tags: Mapping[str, str] | None = None
    ) -> Model:
        body = {"name": name, "description": description, "tags": dict(tags or {})}
        return Model.from_dict(self._call("POST", "/models", json=body))

    def update_model(
        self, name: str, *, description: str | None = None, tags: Mapping[str, str | None] | None = None
    ) -> Model:
        body = {"description": description, "tags": None if tags is None else dict(tags)}
        return Model.from_dict(self._call("PATCH", f"/models/{_q(name)}", json=body))

    def get_version(self, name_or_uri: str, version: int | None = None) -> ModelVersion:
        return self._version(self._call("GET", self._version_path(name_or_uri, version)))

    def list_versions(self, name: str, *, limit: int = 100, cursor: str | None = None) -> Page[ModelVersion]:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        body = self._call("GET", f"/models/{_q(name)}/versions", params=params)
        return Page([self._version(v) for v in body["items"]], body["next_cursor"])

    def iter_versions(self, name: str) -> Iterator[ModelVersion]:
        cursor = None
        while True:
            page = self.list_versions(name, cursor=cursor)
            yield from page
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # a remote registry takes the query text only (the keyword filters are a local convenience)
    def search_versions(  # type: ignore[override]
        self, query: str = "", *, limit: int = 100, cursor: str | None = None
    ) -> Page[ModelVersion]:
        params: dict[str, Any] = {"q": query, "limit": limit}
        if cursor:
            params["cursor"] = cursor
        body = self._call("GET", "/versions", params=params)
        return Page([self._version(v) for v in body["items"]], body["next_cursor"])

    def state(self, uri: str) -> VersionState:
        return VersionState.from_dict(self._call("GET", self._version_path(uri) + "/state"))

    def states(self, name: str, versions: Sequence[int]) -> dict[int, VersionState]:
        out = {}
        for v in versions:
            try:
                out[v] = self.state(f"models:/{name}/{v}")
            except _errors.NotFound:
                continue  # as locally: a version that is not there has no state to report
        return out

    def alias_at(self, name: str, alias: str, when: datetime | str) -> int | None:
        time = when.isoformat() if isinstance(when, datetime) else when
        body = self._call("GET", f"/models/{_q(name)}/aliases/{_q(alias)}/at", params={"time": time})
        return None if body["version"] is None else int(body["version"])

    def history(self, uri_or_name: str) -> list[LedgerEvent]:
        return [
            LedgerEvent.from_dict(e) for e in self._call("GET", "/history", params={"subject": uri_or_name})
        ]

    def alias_history(
        self, name: str, alias: str | None = None, *, latest: bool = False
    ) -> list[AliasChange]:
        params: dict[str, str] = {"alias": alias} if alias else {}
        if latest:
            params["latest"] = "true"
        return [
            AliasChange.from_dict(c)
            for c in self._call("GET", f"/models/{_q(name)}/alias-history", params=params)
        ]

    def lineage(self, uri: str) -> LineageGraph:
        return LineageGraph.from_dict(self._call("GET", self._version_path(uri) + "/lineage"))

    def diff(self, a: str, b: str) -> VersionDiff:
        return VersionDiff.from_dict(self._call("GET", "/diff", params={"a": a, "b": b}))

    def trace(self, prediction_id: str) -> TraceReport:
        return TraceReport.from_dict(self._call("GET", f"/predictions/{_q(prediction_id)}/trace"))

    def audit(
        self,
        *,
        model: str | None = None,
        version: int | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[LedgerEvent]:
        filters = {
            "model": model,
            "version": version,
            "actor": actor,
            "action": action,
            "since": since.isoformat() if isinstance(since, datetime) else since,
            "until": until.isoformat() if isinstance(until, datetime) else until,
            "limit": limit,
            "cursor": cursor,
        }
        body = self._call("GET", "/audit", params={k: v for k, v in filters.items() if v is not None})
        return Page([LedgerEvent.from_dict(e) for e in body["items"]], body["next_cursor"])

    # the server verifies with what it trusts; pin keys by checking a trust bundle locally
    def verify(  # type: ignore[override]
        self,
        *,
        captures: bool = False,
        since_last: bool = False,
        record: bool = False,
        workers: int | None = None,
        retention: bool = False,
        jobs: int | None = None,
    ) -> VerifyReport:
        if since_last:
            raise _errors.InvalidInput(
                "verify --since-last needs the stores: run it where the database and artefacts are"
            )
        if retention:
            raise _errors.InvalidInput(
                "verify --retention needs the artefact store: run it where the S3 bucket is reachable"
            )
        return VerifyReport.from_dict(self._call("GET", "/verify", params={"captures": captures}))

    def export(self, identifier: str, *, format: str) -> bytes:
        """The export as the server makes it (formats that are signed: with the server's key)."""
        return self._request("GET", "/export", params={"identifier": identifier, "format": format}).content

    def model_signing_key(self) -> bytes:
        """The server's model-signing key (PEM): its ``model-signing`` exports verify with it."""
        return str(self._call("GET", "/model-signing-key")["public_key"]).encode()

    def public_key(self, key_id: str | None = None) -> bytes:
        if key_id is not None:
            for member in self.members():
                for key in member.keys:
                    if key.key_id == key_id and key.public_pem:
                        return key.public_pem.encode()
            raise _errors.NotFound("key", f"{key_id} (never enrolled in this registry)")
        return str(self._call("GET", "/public-key")["public_key"]).encode()

    def trust_bundle(self) -> dict[str, Any]:
        return dict(self._call("GET", "/trust-bundle"))

    def members(self) -> list[Member]:
        return [Member.from_dict(m) for m in self._call("GET", "/members")]

    # ------------------------------------------------------------ governance

    def _decide(self, uri: str, verb: str, body: Mapping[str, Any]) -> VersionState:
        return VersionState.from_dict(
            self._call("POST", self._version_path(uri) + f"/{verb}", json=dict(body))
        )

    def approve(self, uri: str, *, reason: str) -> VersionState:
        return self._decide(uri, "approve", {"reason": reason})

    def reject(self, uri: str, *, reason: str) -> VersionState:
        return self._decide(uri, "reject", {"reason": reason})

    def deploy(self, uri: str, *, alias: str | None = None, reason: str | None = None) -> VersionState:
        return self._decide(uri, "deploy", {"alias": alias, "reason": reason})

    def transition(
        self, uri: str, stage: str, *, reason: str | None = None, details: Mapping[str, Any] | None = None
    ) -> VersionState:
        return self._decide(
            uri, "transition", {"stage": stage, "reason": reason, "details": dict(details or {})}
        )

    def validate(
        self,
        uri: str,
        *,
        metrics: Mapping[str, float] | None = None,
        dataset: str | None = None,
        reason: str | None = None,
    ) -> VersionState:
        body = {"metrics": dict(metrics or {}), "dataset": dataset, "reason": reason}
        return self._decide(uri, "validate", body)

    def retire(self, uri: str, *, reason: str) -> VersionState:
        return self._decide(uri, "retire", {"reason": reason})

    def rollback(self, name: str, *, alias: str = "production", reason: str | None = None) -> int:
        body = self._call("POST", f"/models/{_q(name)}/rollback", json={"alias": alias, "reason": reason})
        return int(body["version"])

    def set_alias(self, name: str, alias: str, version: int, *, reason: str | None = None) -> None:
        self._call(
            "PUT", f"/models/{_q(name)}/aliases/{_q(alias)}", json={"version": version, "reason": reason}
        )

    def delete_alias(self, name: str, alias: str, *, reason: str | None = None) -> None:
        params = {"reason": reason} if reason else None
        self._call("DELETE", f"/models/{_q(name)}/aliases/{_q(alias)}", params=params)

    def archive_model(self, name: str, *, reason: str | None = None) -> Model:
        return Model.from_dict(self._call("POST", f"/models/{_q(name)}/archive", json={"reason": reason}))

    def unarchive_model(self, name: str, *, reason: str | None = None) -> Model:
        return Model.from_dict(self._call("POST", f"/models/{_q(name)}/unarchive", json={"reason": reason}))

    def rename_model(self, old: str, new: str, *, reason: str) -> Model:
        body = {"new": new, "reason": reason}
        return Model.from_dict(self._call("POST", f"/models/{_q(old)}/rename", json=body))

    def erase(self, target: str, *, reason: str) -> Erasure:
        if target.startswith("datasets:/"):
            name, number = parse_dataset_uri(target)
            path = f"/datasets/{_q(name)}/versions/{number if number is not None else 'latest'}/erase"
            return Erasure.from_dict(self._call("POST", path, json={"reason": reason}))
        predictions = target.startswith("predictions:/")
        uri = "models:/" + target[len("predictions:/") :] if predictions else target
        body = {"reason": reason, "predictions": predictions}
        return Erasure.from_dict(self._call("POST", self._version_path(uri) + "/erase", json=body))

    def predictions(
        self,
        identifier_or_model: str,
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        as_pandas: bool = False,
    ) -> Any:
        """Captured predictions, as the server reads them: a pyarrow Table (or a DataFrame)."""
        import pyarrow.parquet as pq  # heavy: only a predictions query needs it

        params: dict[str, Any] = {}
        if identifier_or_model.startswith("models:/"):
            mv = self.get_version(identifier_or_model)
            name, params["version"] = mv.model, mv.version
        else:
            name = identifier_or_model
        for key, value in (("since", since), ("until", until)):
            if value is not None:
                params[key] = value.isoformat() if isinstance(value, datetime) else value
        response = self._request("GET", f"/models/{_q(name)}/predictions", params=params)
        table = pq.read_table(io.BytesIO(response.content))
        return table.to_pandas() if as_pandas else table

    def prediction(self, prediction_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/predictions/{_q(prediction_id)}"))

    def set_version_tags(
        self, uri: str, tags: Mapping[str, str | None], *, reason: str | None = None
    ) -> ModelVersion:
        body = {"tags": dict(tags), "reason": reason}
        return self._version(self._call("POST", self._version_path(uri) + "/tags", json=body))

    def policy(self) -> Policy:
        return Policy.from_dict(self._call("GET", "/policy"))

    def set_policy(self, policy: Policy | Mapping[str, Any], *, reason: str) -> Policy:
        raw = policy.to_dict() if isinstance(policy, Policy) else dict(policy)
        return Policy.from_dict(self._call("PUT", "/policy", json={"policy": raw, "reason": reason}))

    def enrol(
        self,
        name: str,
        public_key: bytes | str | os.PathLike[str],
        *,
        roles: Sequence[str] | str,
        models: Sequence[str] | str = ("*",),
        reason: str | None = None,
    ) -> Member:
        if isinstance(public_key, bytes):
            pem = public_key.decode()
        elif isinstance(public_key, str) and public_key.lstrip().startswith(("-----BEGIN", "ssh-ed25519")):
            pem = public_key
        else:
            pem = Path(public_key).read_text()
        body = {
            "name": name,
            "public_key": pem,
            "roles": [roles] if isinstance(roles, str) else list(roles),
            "models": [models] if isinstance(models, str) else list(models),
            "reason": reason,
        }
        return Member.from_dict(self._call("POST", "/members", json=body))

    def set_roles(
        self,
        name: str,
        roles: Sequence[str] | str,
        *,
        models: Sequence[str] | str = ("*",),
        reason: str | None = None,
    ) -> Member:
        body = {
            "roles": [roles] if isinstance(roles, str) else list(roles),
            "models": [models] if isinstance(models, str) else list(models),
            "reason": reason,
        }
        return Member.from_dict(self._call("PUT", f"/members/{_q(name)}/roles", json=body))

    def revoke_key(self, name: str, key: str, *, reason: str) -> Member:
        path = f"/members/{_q(name)}/keys/{_q(key)}/revoke"
        return Member.from_dict(self._call("POST", path, json={"reason": reason}))

    @property
    def datasets(self) -> RemoteDatasets:  # type: ignore[override]
        """Data set versions on the server: register (streamed), get, list, versions, read."""
        return RemoteDatasets(self._call, self._upload, self._download)

    # ------------------------------------------------------------ registration

    def register(
        self,
        name: str,
        source: Any,
        *,
        manifest: Any = None,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        sample_input: Any = None,
        execution_id: str | None = None,
        capture: bool = True,
        code_path: str | os.PathLike[str] | None = None,
        datasets: Mapping[str, Any] | None = None,
        progress: Any = None,
        load_check: bool = True,
    ) -> ModelVersion:
        """Save the model here (its flavor, its manifest and this machine's provenance), then
        stream the files to the server, which checks every digest and registers the version.
        ``datasets`` maps roles to data set versions (``datasets:/x/3``) or to data, which is
        registered first as ``<name>-<role>`` (over a server that is its own write: a failed model
        registration keeps the data set version). ``load_check`` as for ``Registry.register``:
        the loading back, when done, is done here."""
        unknown = sorted(set(datasets or {}) - set(DATASET_ROLES))
        if unknown:
            raise InvalidInput(f"unknown data set role {unknown[0]!r}: use one of {', '.join(DATASET_ROLES)}")
        roles: dict[str, str] = {}
        for role, value in (datasets or {}).items():
            if isinstance(value, DatasetVersion):
                roles[role] = value.uri
            elif isinstance(value, str) and value.startswith("datasets:/"):
                roles[role] = value
            else:
                roles[role] = self.datasets.register(f"{name}-{role}", value, capture=capture).uri
        with scratch() as tmp:
            plan = plan_registration(
                name,
                source,
                tmp,
                datasets_service=None,  # type: ignore[arg-type]  # no inline data sets: see above
                folder_naming="auto",
                manifest=manifest,
                params=params,
                metrics=metrics,
                sample_input=sample_input,
                execution_id=execution_id,
                capture=capture,
                code_path=code_path,
                limits=DEFAULT_LIMITS,
                load_check=load_check,
            )
            header = _upload_header(
                plan.source_dir,
                {"manifest": plan.manifest.to_dict(), "datasets": roles, "execution_id": execution_id},
            )
            body = self._upload(f"/models/{_q(name)}/versions", plan.source_dir, header)
        return self._version(body)

    def _upload(self, path: str, folder: Path, header: bytes) -> Any:
        """POST ``folder`` as a tar stream (the header first), hashed once to sign it and then
        sent in chunks: large files are read from disk as they go."""
        digest = hashlib.sha256()
        for chunk in tar_stream(folder, header):
            digest.update(chunk)
        return self._call(
            "POST",
            path,
            content=tar_stream(folder, header),
            body_sha256=digest.hexdigest(),
            headers={"Content-Type": "application/x-tar"},
        )

    # ------------------------------------------------------------ artefacts

    def _blob(self, mv: ModelVersion, entry: FileEntry) -> Path:
        path = self._version_path(mv.uri) + "/files/" + "/".join(_q(p) for p in entry.path.split("/"))
        return self._download(path, entry.sha256, entry.size, f"{mv.uri} {entry.path}")

    def _materialise(self, mv: ModelVersion) -> Path:
        """A folder laid out as the registry's (``<folder>/artifacts/<path>``) holding ``mv``'s
        files, linked from the cache."""
        root = cache_dir() / "versions" / mv.digest.replace(":", "-")
        for entry in mv.files:
            blob = self._blob(mv, entry)
            target = root / mv.folder / "artifacts" / entry.path
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f"{target.name}.{secrets.token_hex(6)}.tmp")
            try:
                os.link(blob, tmp)
            except OSError:
                shutil.copyfile(blob, tmp)
            os.replace(tmp, target)
        return root

    # no capture through a server: a serving host signs receipts with its own serving key
    def load(self, identifier: str, *, capture: bool = False) -> LoadedModel:  # type: ignore[override]
        """The version's model, from the local cache after checking every byte against the
        version's digests (a second load downloads nothing). Capture is a serving host's job:
        serve from a registry opened on the database and bucket."""
        if capture:
            raise InvalidInput("load(capture=True) needs the registry itself, not its server")
        mv = self.get_version(identifier)
        root = self._materialise(mv)
        return load_verified(ArtifactStore(root.as_uri()), mv)

    def download(
        self,
        identifier: str,
        dest: str | os.PathLike[str],
        *,
        files: Sequence[str] | None = None,
        overwrite: bool = False,
        manifest: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> DownloadedVersion:
        """The version's files in ``dest``, as :meth:`Registry.download` leaves them: each file
        streamed from the server into a staging folder while its sha256 and size are checked
        against the version record, moved into place only when every one matched."""
        mv = self.get_version(identifier)
        if model_ref(identifier).alias == "latest" and self.state(mv.uri).stage == "retired":
            raise _errors.Conflict(
                f"{identifier} resolves to {mv.uri}, which is retired: a retired version is not "
                f"downloaded by alias (download {mv.uri} by number to audit it)"
            )
        # the version row the server read is an index: its signed registration is the authority
        check_registration_with_bundle(
            self.registration_proof(mv.uri), mv.uri, mv.digest, self.trust_bundle()
        )
        plan = plan_download(mv, dest, files=files, overwrite=overwrite, manifest=manifest)

        def chunks(entry: FileEntry) -> Iterator[bytes]:
            path = self._version_path(mv.uri) + "/files/" + "/".join(_q(p) for p in entry.path.split("/"))
            response = self._request("GET", path)
            try:
                for block in response.iter_bytes(UPLOAD_CHUNK):
                    self.bytes_downloaded += len(block)
                    yield block
            finally:
                response.close()

        return download_planned(plan, chunks, progress=progress)

    def registration_proof(self, identifier: str) -> dict[str, Any]:
        return dict(self._call("GET", self._version_path(identifier) + "/registration"))

    def _download(self, path: str, sha256: str, size: int, what: str) -> Path:
        """The file at API ``path`` in the local cache, downloaded (resuming a partial download)
        only when the cache does not hold those bytes already; checked against ``sha256``."""
        blobs = cache_dir() / "blobs" / "sha256"
        blob = blobs / sha256
        if blob.exists() and blob.stat().st_size == size:
            return blob
        blobs.mkdir(parents=True, exist_ok=True)
        part = blob.with_suffix(".part")
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if 0 < have < size else {}
        response = self._request("GET", path, headers=headers)
        try:
            mode = "ab" if response.status_code == 206 else "wb"
            with part.open(mode) as out:
                for block in response.iter_bytes(UPLOAD_CHUNK):
                    out.write(block)
                    self.bytes_downloaded += len(block)
        finally:
            response.close()
        got = hashlib.sha256()
        with part.open("rb") as f:
            while block := f.read(UPLOAD_CHUNK):
                got.update(block)
        if got.hexdigest() != sha256:
            part.unlink(missing_ok=True)
            raise _errors.IntegrityError(what, f"downloaded sha256 is {got.hexdigest()}, expected {sha256}")
        os.replace(part, blob)
        return blob

    def open_file(self, identifier: str, path: str) -> tuple[FileEntry, IO[bytes]]:
        mv = self.get_version(identifier)
        entry = next((f for f in mv.files if f.path == path), None)
        if entry is None:
            raise _errors.NotFound("file", f"{path} in {mv.uri}")
        return entry, self._blob(mv, entry).open("rb")


class RemoteDatasets:
    """``registry.datasets`` of a :class:`RemoteRegistry`: the same verbs over the server."""

    def __init__(
        self,
        call: Callable[..., Any],
        upload: Callable[[str, Path, bytes], Any],
        download: Callable[[str, str, int, str], Path],
    ) -> None:
        # the remote registry's own plumbing, handed over: one connection, one cache
        self._call, self._upload, self._download = call, upload, download

    @staticmethod
    def _path(uri_or_name: str, version: int | None = None) -> str:
        if uri_or_name.startswith("datasets:/"):
            name, number = parse_dataset_uri(uri_or_name)
        else:
            name, number = uri_or_name, version
        return f"/datasets/{_q(name)}/versions/{number if number is not None else 'latest'}"

    def register(
        self,
        name: str,
        data: Any,
        *,
        source: DatasetSource | Mapping[str, Any] | str | None = None,
        steps: Iterable[ProcessingStep | Mapping[str, Any]] = (),
        capture: bool = True,
        storage_options: Mapping[str, Any] | None = None,
        progress: Any = None,
    ) -> DatasetVersion:
        """Stream ``data`` (a DataFrame, a pyarrow Table, or a local CSV or Parquet file) to the
        server, which stores it as a data set version; provenance is captured here."""
        if storage_options:
            raise InvalidInput("over a registry server, give local data (a frame, a table or a local file)")
        src = coerce_source(source, data).to_dict()
        if capture and not src.get("code"):
            src["code"] = code_facts(capture_source())
        step_list = [s.to_dict() if isinstance(s, ProcessingStep) else dict(s) for s in steps]
        with scratch() as tmp:
            if isinstance(data, (str, os.PathLike)) and str(data).endswith((".csv", ".parquet")):
                suffix = ".csv" if str(data).endswith(".csv") else ".parquet"
                shutil.copyfile(data, tmp / f"data{suffix}")
            else:
                import pyarrow as pa  # heavy: only a frame or table to send needs it
                import pyarrow.parquet as pq  # heavy: as above

                table = (
                    data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
                )
                pq.write_table(table, tmp / "data.parquet")
            header = _upload_header(tmp, {"source": src, "steps": step_list})
            body = self._upload(f"/datasets/{_q(name)}/versions", tmp, header)
        return DatasetVersion.from_dict(body)

    def get(self, uri_or_name: str, version: int | None = None) -> DatasetVersion:
        return DatasetVersion.from_dict(self._call("GET", self._path(uri_or_name, version)))

    def list(
        self, *, prefix: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        params.update({k: v for k, v in (("prefix", prefix), ("cursor", cursor)) if v})
        body = self._call("GET", "/datasets", params=params)
        return Page(list(body["items"]), body["next_cursor"])

    def versions(self, name: str, *, limit: int = 100, cursor: str | None = None) -> Page[DatasetVersion]:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        body = self._call("GET", f"/datasets/{_q(name)}/versions", params=params)
        return Page([DatasetVersion.from_dict(d) for d in body["items"]], body["next_cursor"])

    def read(self, uri: str | DatasetVersion) -> Any:
        """The data as a pyarrow Table, from the local cache after checking its sha256."""
        import pyarrow.parquet as pq  # heavy: only reading data needs it

        dv = uri if isinstance(uri, DatasetVersion) else self.get(uri)
        blob = self._download(
            self._path(dv.uri) + "/file", dv.file_sha256, dv.size_bytes, f"{dv.uri} {dv.path}"
        )
        return pq.read_table(blob)

    def to_pandas(self, uri: str | DatasetVersion) -> Any:
        return self.read(uri).to_pandas()

    def preview(self, uri: str | DatasetVersion, *, offset: int = 0, limit: int = 100) -> Any:
        return self.read(uri).slice(offset, limit)

    def used_by(self, uri: str | DatasetVersion) -> builtins.list[tuple[str, str]]:
        dv = uri if isinstance(uri, DatasetVersion) else self.get(uri)
        body = self._call("GET", self._path(dv.uri) + "/usage")
        return [(str(u["uri"]), str(u["role"])) for u in body["used_by"]]


def _upload_header(folder: Path, fields: Mapping[str, Any]) -> bytes:
    """The :data:`MANIFEST_MEMBER` of an upload of ``folder``: ``fields`` and each file's sha256."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        sha = hashlib.sha256()
        with path.open("rb") as f:
            while block := f.read(UPLOAD_CHUNK):
                sha.update(block)
        files[path.relative_to(folder).as_posix()] = sha.hexdigest()
    return json.dumps({**fields, "files": files}, sort_keys=True).encode()


def _unavailable(name: str) -> Any:
    def method(self: RemoteRegistry, *args: Any, **kwargs: Any) -> Any:
        raise InvalidInput(
            f"{name} is not available through a registry server: open the registry on its "
            "database and bucket to use it"
        )

    method.__name__ = name
    method.__doc__ = f"Not available through a registry server (``{name}`` needs the stores themselves)."
    return method


# What the local registry offers and the server does not (yet): a clear refusal, not an
# AttributeError from the stores a remote registry does not have.
for _name in dir(Registry):
    if _name.startswith("_") or _name == "open" or _name in RemoteRegistry.__dict__:
        continue
    _attribute = inspect.getattr_static(Registry, _name)
    if isinstance(_attribute, property):
        setattr(RemoteRegistry, _name, property(_unavailable(_name)))
    elif callable(_attribute):
        setattr(RemoteRegistry, _name, _unavailable(_name))
