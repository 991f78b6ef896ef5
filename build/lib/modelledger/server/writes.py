"""The write API: registration (a streamed upload), artefact download, governance, aliases,
tags, policy and members.

The server writes on the caller's behalf with its own key, enrolled with the ``gateway`` role
(``modelledger server --identity``). Each write goes through ``Registry.on_behalf_of``, so the
ledger records the caller as the actor and how they proved it: a CLI or Python client signs
the request with the member's own key (``X-Modelledger-Signature``, checked here and again by
the store and by ``verify``); a browser user is attested by their API or OIDC token. Roles are
checked here per route (so a refusal comes before any upload) and again by the store, which
is the rule that cannot be bypassed: no header, body field or query parameter names the actor.
"""

# No ``from __future__ import annotations``: FastAPI reads annotations at run time.
import contextlib
import hashlib
import io
import json
import tarfile
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from modelledger import (
    DatasetVersion,
    InvalidInput,
    InvalidReceipt,
    Member,
    ModelVersion,
    NotFound,
    PermissionDenied,
    Registry,
    check_receipt_with_bundle,
    parse_prediction_id,
)
from modelledger._delegation import SIGNATURE_HEADER, parse_signature_header
from modelledger._members import REQUEST_WINDOW
from modelledger._upload import MANIFEST_MEMBER, UPLOAD_CHUNK

from .deps import API_PREFIX, Deps, Principal, need_view, route
from .ops import set_route_limits
from .schemas import DatasetVersionOut, EventOut, MemberOut, ModelOut, StateOut, VersionOut

__all__ = ["MANIFEST_MEMBER", "PARQUET", "UPLOAD_CHUNK", "add_routes"]

PARQUET = "application/vnd.apache.parquet"
"""The media type of a Parquet file (a predictions query answers one)."""


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReasonIn(_In):
    reason: str = Field(min_length=1, max_length=10_000, examples=["reviewed the holdout report"])


class DeployIn(_In):
    alias: str | None = Field(default=None, examples=["production"])
    reason: str | None = Field(default=None, max_length=10_000, examples=["release 7"])


class TransitionIn(_In):
    stage: str = Field(examples=["trained"])
    reason: str | None = Field(default=None, max_length=10_000)
    details: dict[str, Any] = Field(default_factory=dict)


class ValidateIn(_In):
    metrics: dict[str, float] = Field(default_factory=dict, examples=[{"auc": 0.84}])
    dataset: str | None = Field(default=None, examples=["holdout"])
    reason: str | None = Field(default=None, max_length=10_000)


class OptionalReasonIn(_In):
    reason: str | None = Field(default=None, max_length=10_000)


class RenameIn(_In):
    new: str = Field(examples=["credit-pd"])
    reason: str = Field(min_length=1, max_length=10_000)


class EraseIn(_In):
    reason: str = Field(min_length=1, max_length=10_000, examples=["GDPR art. 17 request #812"])
    predictions: bool = Field(
        default=False, description="erase the version's captured predictions, not its files"
    )


class RollbackIn(_In):
    alias: str = Field(default="production")
    reason: str | None = Field(default=None, max_length=10_000)


class RollbackOut(BaseModel):
    model: str
    alias: str
    version: int


class AliasChangeOut(BaseModel):
    seq: int
    model: str
    alias: str
    version: int | None = Field(description="null: the alias was removed")
    time: str
    actor: str
    action: str


class AliasAtOut(BaseModel):
    model: str
    alias: str
    time: str
    version: int | None = Field(description="the version the alias held then; null: none")


class ReceiptCheckOut(BaseModel):
    valid: bool
    problem: str | None = Field(description="why the receipt is not valid; null when it is")
    prediction_id: str | None
    model: str | None
    version: int | None
    output: Any = None
    time: str | None
    key_id: str | None
    signed_by: str | None = Field(description="the member whose enrolled key signed it")
    captured: bool = Field(description="the registry holds this prediction, whose trace can be read")


class AliasIn(_In):
    version: int = Field(ge=1, examples=[3])
    reason: str | None = Field(default=None, max_length=10_000)


class ModelIn(_In):
    name: str = Field(examples=["credit-risk"])
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)


class ModelUpdateIn(_In):
    description: str | None = None
    tags: dict[str, str | None] | None = None


class TagsIn(_In):
    tags: dict[str, str | None] = Field(examples=[{"team": "risk", "old": None}])
    reason: str | None = None


class PolicyIn(_In):
    policy: dict[str, Any] = Field(examples=[{"four_eyes": True}])
    reason: str = Field(min_length=1)


class EnrolIn(_In):
    name: str = Field(examples=["bob@example.com"])
    public_key: str = Field(description="the member's Ed25519 public key, PEM or OpenSSH")
    roles: list[str] = Field(examples=[["approver"]])
    models: list[str] = Field(default_factory=lambda: ["*"])
    reason: str | None = None


class RolesIn(_In):
    roles: list[str]
    models: list[str] = Field(default_factory=lambda: ["*"])
    reason: str | None = None


class _Nonces:
    """Signed requests seen recently: a request replayed within the time window is refused
    (beyond it the time check refuses it). Per process: a replay to another server process
    within the window is caught only by the write it repeats being a conflict."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_use(self, nonce: str) -> bool:
        now = time.monotonic()
        horizon = now - 2 * REQUEST_WINDOW.total_seconds()
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen = {n: t for n, t in self._seen.items() if t > horizon}
            if nonce in self._seen:
                return False
            self._seen[nonce] = now
            return True


def _need_role(member: Member, role: str, model: str | None) -> None:
    if not member.has_role(role, model):
        where = f" on {model}" if model else ""
        raise PermissionDenied(f"{member.name} may not do this: it needs the {role} role{where}")


def _safe_member_name(name: str) -> str:
    """A tar member's path as a relative POSIX path inside the version folder, or InvalidInput."""
    path = PurePosixPath(name)
    if path.is_absolute() or not path.parts or any(p in ("..", "", ".") for p in path.parts) or "\\" in name:
        raise InvalidInput(f"upload: {name!r} is not a relative path inside the version folder")
    return path.as_posix()


def _signature_header(
    signature: Annotated[
        str | None,
        Header(
            alias=SIGNATURE_HEADER,
            description="the member's own signature of this request: "
            "keyid=<key id>, time=<RFC 3339>, nonce=<hex>, sig=<base64 Ed25519>",
        ),
    ] = None,
) -> str | None:
    return signature


def add_routes(app: FastAPI, registry: Registry, deps: Deps) -> None:
    nonces = _Nonces()
    Caller = Annotated[Member, Depends(deps.caller)]
    Who = Annotated[Principal, Depends(deps.principal)]
    Signed = Annotated[str | None, Depends(_signature_header)]

    def acting(who: Principal, request: Request, signed: str | None, body_sha256: str) -> Registry:
        """The registry acting for ``who``: with a signed request, as proven by their key."""
        if signed is None:
            return registry.on_behalf_of(who.name, method=who.method)
        target = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
        query = request.scope.get("query_string", b"").decode("latin-1")
        signed_request, kid, signature = parse_signature_header(
            signed,
            member=who.name,
            method=request.method,
            path=target + (f"?{query}" if query else ""),
            body_sha256=body_sha256,
        )
        if not nonces.first_use(str(signed_request["nonce"])):
            raise PermissionDenied("this signed request was already used: sign each request afresh")
        return registry.on_behalf_of(
            who.name, method="key", request=signed_request, key_id=kid, signature=signature
        )

    async def body_digest(request: Request) -> str:
        return hashlib.sha256(await request.body()).hexdigest()

    Digest = Annotated[str, Depends(body_digest)]

    def version_out(reg: Registry, mv: ModelVersion) -> VersionOut:
        return VersionOut.model_validate({**mv.to_dict(), "stage": reg.state(mv.uri).stage})

    def ref_uri(name: str, ref: str) -> str:
        return f"models:/{name}/{ref}" if ref.isdigit() else f"models:/{name}@{ref}"

    # ------------------------------------------------------------ models

    @route(app, "POST", "/models", response_model=ModelOut, tags=["models"], status_code=201)
    def create_model(who: Who, body: ModelIn, request: Request, signed: Signed, digest: Digest) -> ModelOut:
        """Create a model (contributor)."""
        _need_role(who.member, "contributor", body.name)
        reg = acting(who, request, signed, digest)
        return ModelOut.model_validate(
            reg.create_model(body.name, description=body.description, tags=body.tags).to_dict()
        )

    @route(app, "PATCH", "/models/{name}", response_model=ModelOut, tags=["models"])
    def update_model(
        who: Who, name: str, body: ModelUpdateIn, request: Request, signed: Signed, digest: Digest
    ) -> ModelOut:
        """Change a model's description or tags (a null tag value removes it; contributor)."""
        _need_role(who.member, "contributor", name)
        reg = acting(who, request, signed, digest)
        return ModelOut.model_validate(
            reg.update_model(name, description=body.description, tags=body.tags).to_dict()
        )

    # ------------------------------------------------------------ registration

    def upload_route(
        path: str, response_model: Any, tags: list[str], contents: str
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """A POST route whose body is a tar stream (:data:`MANIFEST_MEMBER` first, then
        ``contents``): it streams files as large as they are, so no body limit and no timeout."""
        set_route_limits(app, "POST", API_PREFIX + path, max_body=None, timeout=None)
        body = {
            "required": True,
            "description": f"a tar stream: {MANIFEST_MEMBER} first, then {contents}",
            "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}},
        }
        return route(
            app,
            "POST",
            path,
            response_model=response_model,
            tags=tags,
            status_code=201,
            openapi_extra={"requestBody": body},
        )

    @upload_route(
        "/models/{name}/versions",
        VersionOut,
        ["versions"],
        "the version's files (the header holds the manifest, files: {path: sha256}, datasets, execution_id)",
    )
    async def register(who: Who, name: str, request: Request, signed: Signed) -> VersionOut:
        """Register a version from a streamed tar upload (contributor). Every file is checked
        against the sha256 the upload declares; a wrong digest, a truncated stream, a path
        leaving the folder or a link is refused and leaves nothing behind."""
        _need_role(who.member, "contributor", name)
        async with _spooled(request) as (spool, digest):
            reg = acting(who, request, signed, digest)
            mv = await run_in_threadpool(_register_upload, reg, name, spool)
            return await run_in_threadpool(version_out, reg, mv)

    @upload_route(
        "/datasets/{name}/versions",
        DatasetVersionOut,
        ["datasets"],
        "one file, data.parquet or data.csv (the header holds source, steps, files: {name: sha256})",
    )
    async def register_dataset(who: Who, name: str, request: Request, signed: Signed) -> DatasetVersionOut:
        """Register a data set version from a streamed Parquet or CSV file (contributor): stored
        as an immutable Parquet copy; the same content again returns the version it already is."""
        _need_role(who.member, "contributor", None)
        async with _spooled(request) as (spool, digest):
            reg = acting(who, request, signed, digest)
            dv = await run_in_threadpool(_register_dataset_upload, reg, name, spool)
            return DatasetVersionOut.model_validate(dv.to_dict())

    # ------------------------------------------------------------ artefacts

    @route(
        app,
        "GET",
        "/models/{name}/versions/{ref}/files/{path:path}",
        tags=["versions"],
        response_class=StreamingResponse,
        responses={
            200: {"content": {"application/octet-stream": {}}, "description": "the file"},
            206: {"content": {"application/octet-stream": {}}, "description": "the requested range"},
            416: {"description": "the range lies outside the file"},
        },
    )
    def download(
        member: Caller,
        name: str,
        ref: str,
        path: str,
        range_header: Annotated[str | None, Header(alias="range")] = None,
    ) -> Response:
        """One artefact file of a version, streamed; ``ETag`` is its sha256, and a ``Range``
        request resumes a broken download."""
        need_view(member, name)
        entry, handle = registry.open_file(ref_uri(name, ref), path)
        need_view(member, registry.get_version(ref_uri(name, ref)).model)
        start, end = 0, entry.size - 1
        status = 200
        headers = {"ETag": f'"{entry.sha256}"', "Accept-Ranges": "bytes", "Digest": f"sha-256={entry.sha256}"}
        if range_header:
            parsed = _parse_range(range_header, entry.size)
            if parsed is None:
                handle.close()
                return Response(status_code=416, headers={"Content-Range": f"bytes */{entry.size}"})
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        headers["Content-Length"] = str(max(0, end - start + 1))

        def chunks() -> Iterator[bytes]:
            with handle:
                handle.seek(start)
                left = end - start + 1
                while left > 0:
                    block = handle.read(min(UPLOAD_CHUNK, left))
                    if not block:
                        break
                    left -= len(block)
                    yield block

        return StreamingResponse(
            chunks(), status_code=status, headers=headers, media_type="application/octet-stream"
        )

    # ------------------------------------------------------------ governance

    def governed(path: str, role: str, summary: str, body_model: type[BaseModel], call: Any) -> None:
        """A POST /models/{name}/versions/{ref}/<verb> route that returns the version's state."""

        def handler(
            who: Who, name: str, ref: str, body: Any, request: Request, signed: Signed, digest: Digest
        ) -> StateOut:
            _need_role(who.member, role, name)
            mv = registry.get_version(ref_uri(name, ref))
            _need_role(who.member, role, mv.model)
            reg = acting(who, request, signed, digest)
            return StateOut.model_validate(call(reg, mv.uri, body).to_dict())

        handler.__annotations__["body"] = body_model
        handler.__doc__ = summary
        handler.__name__ = path.replace("-", "_")
        route(
            app, "POST", "/models/{name}/versions/{ref}/" + path, response_model=StateOut, tags=["governance"]
        )(handler)

    governed(
        "approve",
        "approver",
        "Approve a version (approver; four-eyes applies).",
        ReasonIn,
        lambda reg, uri, b: reg.approve(uri, reason=b.reason),
    )
    governed(
        "reject",
        "approver",
        "Reject a version (approver).",
        ReasonIn,
        lambda reg, uri, b: reg.reject(uri, reason=b.reason),
    )
    governed(
        "deploy",
        "deployer",
        "Deploy an approved version to an alias (deployer; default @production).",
        DeployIn,
        lambda reg, uri, b: reg.deploy(uri, alias=b.alias, reason=b.reason),
    )
    governed(
        "transition",
        "contributor",
        "Complete a manual stage (data_prepared, trained) or retire a version (contributor).",
        TransitionIn,
        lambda reg, uri, b: reg.transition(uri, b.stage, reason=b.reason, details=b.details),
    )
    governed(
        "validate",
        "contributor",
        "Evaluate the manifest's gates on its metrics or on metrics measured now (contributor).",
        ValidateIn,
        lambda reg, uri, b: reg.validate(uri, metrics=b.metrics, dataset=b.dataset, reason=b.reason),
    )
    governed(
        "retire",
        "contributor",
        "Retire a version (it stays, never served as @latest).",
        ReasonIn,
        lambda reg, uri, b: reg.retire(uri, reason=b.reason),
    )

    @route(app, "POST", "/models/{name}/rollback", response_model=RollbackOut, tags=["governance"])
    def rollback(
        who: Who, name: str, body: RollbackIn, request: Request, signed: Signed, digest: Digest
    ) -> RollbackOut:
        """Move an alias back to the version it held before the last deploy (deployer)."""
        _need_role(who.member, "deployer", name)
        reg = acting(who, request, signed, digest)
        version = reg.rollback(name, alias=body.alias, reason=body.reason)
        return RollbackOut(model=name, alias=body.alias, version=version)

    @route(app, "POST", "/models/{name}/versions/{ref}/tags", response_model=VersionOut, tags=["versions"])
    def set_tags(
        who: Who, name: str, ref: str, body: TagsIn, request: Request, signed: Signed, digest: Digest
    ) -> VersionOut:
        """Set or remove (null) tags of a version (contributor)."""
        _need_role(who.member, "contributor", name)
        reg = acting(who, request, signed, digest)
        mv = reg.set_version_tags(ref_uri(name, ref), body.tags, reason=body.reason)
        return version_out(reg, mv)

    # ------------------------------------------------------------ names, erasure, predictions

    @route(app, "POST", "/models/{name}/archive", response_model=ModelOut, tags=["models"])
    def archive(
        who: Who, name: str, body: OptionalReasonIn, request: Request, signed: Signed, digest: Digest
    ) -> ModelOut:
        """Archive a model: hidden from listings, no new versions or deployments (admin)."""
        _need_role(who.member, "admin", name)
        model = acting(who, request, signed, digest).archive_model(name, reason=body.reason)
        return ModelOut.model_validate(model.to_dict())

    @route(app, "POST", "/models/{name}/unarchive", response_model=ModelOut, tags=["models"])
    def unarchive(
        who: Who, name: str, body: OptionalReasonIn, request: Request, signed: Signed, digest: Digest
    ) -> ModelOut:
        """Bring an archived model back (admin)."""
        _need_role(who.member, "admin", name)
        model = acting(who, request, signed, digest).unarchive_model(name, reason=body.reason)
        return ModelOut.model_validate(model.to_dict())

    @route(app, "POST", "/models/{name}/rename", response_model=ModelOut, tags=["models"])
    def rename(
        who: Who, name: str, body: RenameIn, request: Request, signed: Signed, digest: Digest
    ) -> ModelOut:
        """Rename a model; the old name keeps resolving (admin, for both names)."""
        _need_role(who.member, "admin", name)
        _need_role(who.member, "admin", body.new)
        model = acting(who, request, signed, digest).rename_model(name, body.new, reason=body.reason)
        return ModelOut.model_validate(model.to_dict())

    @route(app, "POST", "/models/{name}/versions/{ref}/erase", tags=["governance"])
    def erase_version(
        who: Who, name: str, ref: str, body: EraseIn, request: Request, signed: Signed, digest: Digest
    ) -> dict[str, Any]:
        """Erase a version's artefact files, or with ``predictions: true`` its captured
        predictions, as a recorded act (admin); rows, digests and events stay."""
        _need_role(who.member, "admin", name)
        mv = registry.get_version(ref_uri(name, ref))
        target = f"{'predictions' if body.predictions else 'models'}:/{mv.model}/{mv.version}"
        return acting(who, request, signed, digest).erase(target, reason=body.reason).to_dict()

    @route(app, "POST", "/datasets/{name}/versions/{ref}/erase", tags=["datasets"])
    def erase_dataset(
        who: Who, name: str, ref: str, body: ReasonIn, request: Request, signed: Signed, digest: Digest
    ) -> dict[str, Any]:
        """Erase a data set version's file, as a recorded act (admin)."""
        _need_role(who.member, "admin", None)
        target = f"datasets:/{name}/{ref}" if ref.isdigit() else registry.datasets.get(name).uri
        return acting(who, request, signed, digest).erase(target, reason=body.reason).to_dict()

    @route(
        app,
        "GET",
        "/models/{name}/predictions",
        tags=["lineage"],
        response_class=Response,
        responses={
            200: {"content": {PARQUET: {}}, "description": "the captured predictions, a Parquet file"}
        },
    )
    def predictions(
        member: Caller,
        name: str,
        version: int | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> Response:
        """Captured predictions of a model (or of one ``version``), ``since <= time < until``,
        as a Parquet file (what ``Registry.predictions`` returns as a table)."""
        import pyarrow.parquet as pq  # heavy: only this route needs it

        need_view(member, name)
        target = f"models:/{name}/{version}" if version is not None else name
        table = registry.predictions(target, since=since, until=until)
        sink = io.BytesIO()
        pq.write_table(table, sink)
        return Response(sink.getvalue(), media_type=PARQUET)

    @route(app, "GET", "/predictions/{prediction_id}", tags=["lineage"])
    def prediction(member: Caller, prediction_id: str) -> dict[str, Any]:
        """One captured prediction: its input, output, receipt and version."""
        _when, key = parse_prediction_id(prediction_id)
        need_view(member, registry.get_version_by_key(key).model)
        return registry.prediction(prediction_id)

    @route(app, "POST", "/receipts/verify", response_model=ReceiptCheckOut, tags=["trust"])
    def verify_receipt(
        member: Caller,
        receipt: Annotated[dict[str, Any], Body(description="a receipt, as a serving process wrote it")],
    ) -> ReceiptCheckOut:
        """Whether a receipt is genuine: as ``check_receipt_with_bundle`` checks it against this
        registry's trust bundle (a serving key enrolled for its model, not revoked at its time,
        its fields hashing to the signed root) and, when the registry holds the version it
        names, that version's digest. A receipt that is not valid is answered 200 with
        ``valid: false`` and the reason. Needs a role on the receipt's model."""
        model = receipt.get("model")
        if isinstance(model, str):
            need_view(member, model)
        else:
            need_view(member, None)
        fields = {
            "prediction_id": receipt.get("prediction_id"),
            "model": model,
            "version": receipt.get("version"),
            "output": receipt.get("output"),
            "time": receipt.get("time"),
            "key_id": receipt.get("key_id"),
        }
        fields = {k: v if k == "output" or isinstance(v, str | int) else None for k, v in fields.items()}
        problem = None
        try:
            parsed = check_receipt_with_bundle(
                receipt, registry.trust_bundle(), root_public_key=registry.public_key()
            )
        except InvalidReceipt as exc:
            problem = exc.reason
        except InvalidInput as exc:  # not a receipt's shape at all
            problem = f"malformed: {exc.message}"
        else:
            with contextlib.suppress(NotFound):  # an erased or renamed model: the signature stands
                registered = registry.get_version(f"models:/{parsed.model}/{parsed.version}")
                if registered.digest != parsed.digest:
                    problem = "the receipt names another artefact digest than the registered version"
        kid = fields["key_id"]
        signer = next((m.name for m in registry.members() for k in m.keys if k.key_id == kid), None)
        captured = False
        with contextlib.suppress(NotFound, InvalidInput):  # a forged receipt's trace shows the real one
            captured = member.can_view(registry.prediction(str(fields["prediction_id"]))["model"])
        return ReceiptCheckOut(
            valid=problem is None, problem=problem, signed_by=signer, captured=captured, **fields
        )

    # ------------------------------------------------------------ aliases

    @route(app, "PUT", "/models/{name}/aliases/{alias}", status_code=204, tags=["models"])
    def set_alias(
        who: Who, name: str, alias: str, body: AliasIn, request: Request, signed: Signed, digest: Digest
    ) -> Response:
        """Point an alias at a version (contributor; @production and @rollback move only by
        deploy and rollback)."""
        _need_role(who.member, "contributor", name)
        acting(who, request, signed, digest).set_alias(name, alias, body.version, reason=body.reason)
        return Response(status_code=204)

    @route(app, "GET", "/history", response_model=list[EventOut], tags=["ledger"])
    def history(
        member: Caller,
        subject: Annotated[str, Query(description="a model name, models:/x, models:/x/3 or models:/x@alias")],
    ) -> list[EventOut]:
        """Every ledger event about a model, a version or an alias, oldest first (``history``)."""
        name = subject[len("models:/") :] if subject.startswith("models:/") else subject
        need_view(member, name.split("/")[0].split("@")[0])
        return [EventOut.model_validate(e.to_dict()) for e in registry.history(subject)]

    @route(app, "GET", "/models/{name}/alias-history", response_model=list[AliasChangeOut], tags=["models"])
    def alias_history(
        member: Caller, name: str, alias: str | None = None, latest: bool = False
    ) -> list[AliasChangeOut]:
        """Every move of the model's aliases (or of one), oldest first, from the ledger; with
        ``latest``, only the move that set each alias the model has now."""
        need_view(member, name)
        changes = registry.alias_history(name, alias, latest=latest)
        return [AliasChangeOut.model_validate(c.to_dict()) for c in changes]

    @route(app, "GET", "/models/{name}/aliases/{alias}/at", response_model=AliasAtOut, tags=["models"])
    def alias_at(member: Caller, name: str, alias: str, time: str) -> AliasAtOut:
        """Which version held the alias at ``time`` (RFC 3339): "what was in production then"."""
        need_view(member, name)
        return AliasAtOut(model=name, alias=alias, time=time, version=registry.alias_at(name, alias, time))

    @route(app, "DELETE", "/models/{name}/aliases/{alias}", status_code=204, tags=["models"])
    def delete_alias(
        who: Who,
        name: str,
        alias: str,
        request: Request,
        signed: Signed,
        digest: Digest,
        reason: str | None = None,
    ) -> Response:
        """Remove an alias (contributor)."""
        _need_role(who.member, "contributor", name)
        acting(who, request, signed, digest).delete_alias(name, alias, reason=reason)
        return Response(status_code=204)

    # ------------------------------------------------------------ policy and members

    @route(app, "GET", "/policy", tags=["governance"])
    def get_policy(member: Caller) -> dict[str, Any]:
        """The governance policy (four-eyes, gates, automatic approval...)."""
        need_view(member, None)
        return registry.policy().to_dict()

    @route(app, "PUT", "/policy", tags=["governance"])
    def set_policy(
        who: Who, body: PolicyIn, request: Request, signed: Signed, digest: Digest
    ) -> dict[str, Any]:
        """Change the policy (admin)."""
        _need_role(who.member, "admin", None)
        return acting(who, request, signed, digest).set_policy(body.policy, reason=body.reason).to_dict()

    @route(app, "POST", "/members", response_model=MemberOut, status_code=201, tags=["members"])
    def enrol(who: Who, body: EnrolIn, request: Request, signed: Signed, digest: Digest) -> MemberOut:
        """Enrol a member with their public key, roles and model scope (admin)."""
        _need_role(who.member, "admin", None)
        member = acting(who, request, signed, digest).enrol(
            body.name, body.public_key, roles=body.roles, models=body.models, reason=body.reason
        )
        return MemberOut.model_validate(member.to_dict())

    @route(app, "PUT", "/members/{name}/roles", response_model=MemberOut, tags=["members"])
    def set_roles(
        who: Who, name: str, body: RolesIn, request: Request, signed: Signed, digest: Digest
    ) -> MemberOut:
        """Change a member's roles and scope (admin)."""
        _need_role(who.member, "admin", None)
        member = acting(who, request, signed, digest).set_roles(
            name, body.roles, models=body.models, reason=body.reason
        )
        return MemberOut.model_validate(member.to_dict())

    @route(app, "POST", "/members/{name}/keys/{key_id}/revoke", response_model=MemberOut, tags=["members"])
    def revoke_key(
        who: Who, name: str, key_id: str, body: ReasonIn, request: Request, signed: Signed, digest: Digest
    ) -> MemberOut:
        """Revoke one of a member's keys (admin)."""
        _need_role(who.member, "admin", None)
        member = acting(who, request, signed, digest).revoke_key(name, key_id, reason=body.reason)
        return MemberOut.model_validate(member.to_dict())


@contextlib.asynccontextmanager
async def _spooled(request: Request) -> AsyncIterator[tuple[Any, str]]:
    """The request body, streamed to a temporary file (1 MiB in memory at most) and rewound,
    with its sha256 (what a member's signature covers)."""
    spool = tempfile.SpooledTemporaryFile(max_size=UPLOAD_CHUNK)  # noqa: SIM115 - closed below
    sha = hashlib.sha256()
    try:
        async for chunk in request.stream():
            sha.update(chunk)
            await run_in_threadpool(spool.write, chunk)
        spool.seek(0)
        yield spool, sha.hexdigest()
    finally:
        spool.close()


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single ``bytes=`` range, or None when it cannot be served."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, sep, last = spec.strip().partition("-")
    if not sep:
        return None
    try:
        if first == "":
            n = int(last)
            return (max(0, size - n), size - 1) if n > 0 and size > 0 else None
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


def _register_upload(reg: Registry, name: str, spool: Any) -> ModelVersion:
    """Unpack a registration upload into a private folder (checking every path and digest), then
    register it; the folder goes whatever happens."""
    with tempfile.TemporaryDirectory(prefix="modelledger-upload-") as tmp:
        folder = Path(tmp) / "artifacts"
        folder.mkdir()
        header = _unpack(spool, folder)
        manifest = header.get("manifest")
        if not isinstance(manifest, Mapping):
            raise InvalidInput(f"upload: {MANIFEST_MEMBER} must hold a manifest object")
        datasets = header.get("datasets") or None
        if datasets is not None and (
            not isinstance(datasets, Mapping) or not all(isinstance(v, str) for v in datasets.values())
        ):
            raise InvalidInput("upload: datasets must map roles to data set identifiers (datasets:/x/3)")
        return reg.register(
            name,
            folder,
            manifest=dict(manifest),
            execution_id=header.get("execution_id"),
            capture=False,  # the client captured its own provenance into the manifest
            datasets=datasets,
            # never unpickle what a caller sent, nor need every framework: the client loaded it back
            load_check=False,
        )


def _register_dataset_upload(reg: Registry, name: str, spool: Any) -> DatasetVersion:
    """Unpack a data set upload (one ``data.parquet`` or ``data.csv``) and register it."""
    with tempfile.TemporaryDirectory(prefix="modelledger-upload-") as tmp:
        folder = Path(tmp)
        header = _unpack(spool, folder)
        files = list(header["files"])
        if len(files) != 1 or files[0] not in ("data.parquet", "data.csv"):
            raise InvalidInput("upload: a data set upload holds one file, data.parquet or data.csv")
        source = header.get("source")
        steps = header.get("steps") or []
        if not isinstance(source, Mapping) or not isinstance(steps, list):
            raise InvalidInput("upload: source must be an object and steps a list")
        # the client captured its own provenance into source and steps
        return reg.datasets.register(
            name, str(folder / files[0]), source=dict(source), steps=steps, capture=False
        )


def _unpack(spool: Any, folder: Path) -> dict[str, Any]:
    """Extract the tar stream ``spool`` into ``folder``: the header member first, then exactly
    the files it declares, each matching its sha256. Returns the header."""
    try:
        archive = tarfile.open(fileobj=spool, mode="r|")  # noqa: SIM115 - closed below
    except tarfile.TarError as exc:
        raise InvalidInput(f"upload: not a tar stream ({exc})") from exc
    header: dict[str, Any] | None = None
    expected: dict[str, str] = {}
    seen: set[str] = set()
    try:
        with archive:
            for member in archive:
                if header is None:
                    if member.name != MANIFEST_MEMBER or not member.isfile():
                        raise InvalidInput(f"upload: the first member must be {MANIFEST_MEMBER}")
                    raw = archive.extractfile(member)
                    if raw is None or member.size > 16 << 20:
                        raise InvalidInput(f"upload: {MANIFEST_MEMBER} is missing or too large")
                    try:
                        header = json.loads(raw.read())
                    except ValueError as exc:
                        raise InvalidInput(f"upload: {MANIFEST_MEMBER} is not JSON ({exc})") from exc
                    files = header.get("files") if isinstance(header, dict) else None
                    if not isinstance(files, dict) or not files:
                        raise InvalidInput(f"upload: {MANIFEST_MEMBER} must list files: {{path: sha256}}")
                    expected = {_safe_member_name(str(p)): str(d) for p, d in files.items()}
                    continue
                if member.isdir():
                    _safe_member_name(member.name)
                    continue
                if not member.isfile():
                    raise InvalidInput(f"upload: {member.name!r} is a link or device, not a file")
                rel = _safe_member_name(member.name)
                if rel not in expected or rel in seen:
                    raise InvalidInput(f"upload: {rel!r} is not a file the upload declares (or comes twice)")
                target = folder / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                if source is None:
                    raise InvalidInput(f"upload: {rel!r} has no content")
                sha = hashlib.sha256()
                written = 0
                with target.open("wb") as out:
                    while block := source.read(UPLOAD_CHUNK):
                        sha.update(block)
                        out.write(block)
                        written += len(block)
                if written != member.size:
                    raise InvalidInput(f"upload: {rel!r} is truncated ({written} of {member.size} bytes)")
                if sha.hexdigest() != expected[rel]:
                    # the caller's bytes, not the registry's: a bad request, not corruption
                    raise InvalidInput(
                        f"upload: {rel!r} has sha256 {sha.hexdigest()}, "
                        f"but the upload declares {expected[rel]}"
                    )
                seen.add(rel)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidInput(f"upload: the tar stream is broken or truncated ({exc})") from exc
    if header is None:
        raise InvalidInput("upload: the stream is empty")
    missing = sorted(set(expected) - seen)
    if missing:
        raise InvalidInput(f"upload: declared files never arrived: {', '.join(missing)}")
    return header
