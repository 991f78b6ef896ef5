"""The read API: ``create_app(registry)`` builds the FastAPI application over one open
:class:`~modelledger.Registry`, and :func:`serve` runs it with uvicorn.

Every route under ``/api/v1`` (but the OpenAPI document) needs ``Authorization: Bearer
<token>``: the token is resolved to an enrolled member with ``Registry.authenticate_token``,
and nothing else in a request (no header, query parameter or body field) says who calls. The
member must hold a role on the model a route is about (``Member.can_view``), an unscoped
admin role for ``/verify`` and ``/members``. Routes call only the public Python API and return
the library's ``to_dict()`` outputs through the pydantic models of :mod:`.schemas`.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the routes' annotations at
# run time, and the aliases below (Caller, Limit...) live inside create_app.
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import ModuleType
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from modelledger import (
    InvalidInput,
    Member,
    ModelLedgerError,
    ModelVersion,
    PermissionDenied,
    Registry,
    __version__,
    parse_model_uri,
    parse_prediction_id,
)

from . import datasets, events, exports, ui, writes
from .deps import API_PREFIX, Deps, Principal, document_errors, need_admin, need_view, route
from .errors import install_error_handlers
from .oidc import OidcSettings
from .ops import ServerOptions, install_ops, serve_app
from .schemas import (
    AliasesOut,
    DiffOut,
    EventOut,
    EventPage,
    HealthOut,
    LineageOut,
    MemberOut,
    ModelOut,
    ModelPage,
    PublicKeyOut,
    ReadyOut,
    RegistrationProofOut,
    StateOut,
    TraceOut,
    TrustBundleOut,
    VerifyOut,
    VersionOut,
    VersionPage,
    WhoamiOut,
)

__all__ = ["API_PREFIX", "create_app", "serve"]

log = logging.getLogger("modelledger.server")

# The modules that add routes next to the reads below, each with add_routes(app, registry, deps).
ROUTE_MODULES: tuple[ModuleType, ...] = (writes, datasets, events, ui, exports)


def _tags(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"tag filter must be KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def create_app(
    registry: Registry, *, oidc: OidcSettings | None = None, options: ServerOptions | None = None
) -> FastAPI:
    """The application serving ``registry``; it keeps using that one registry. With ``oidc``,
    JWTs of that issuer authenticate members too (API tokens still do); ``options`` set its
    request limits and access log (see :mod:`.ops`).

    >>> import uvicorn; uvicorn.run(create_app(Registry.open(url)), port=8000)  # doctest: +SKIP
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One read of each store before the first request: it builds the database engine and the
        # artefact file system once, here, rather than in two request threads at the same time,
        # and says in the log what is not reachable yet (the server starts all the same).
        for store, problem in (await run_in_threadpool(registry.readiness)).items():
            if problem is not None:
                log.warning("%s not ready: %s", store, problem)
        await run_in_threadpool(_say_who_writes, registry)
        scheduler = (options or ServerOptions()).scheduler
        # webhook deliveries, the refresh scheduler when asked; event streams end on exit
        async with events.lifetime(app, registry, scheduler=scheduler):
            yield

    app = FastAPI(
        lifespan=lifespan,
        title="modelledger",
        version=__version__,
        summary="Read API of a modelledger registry",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # the interactive pages load scripts from a CDN; the document is enough
        redoc_url=None,
    )
    install_error_handlers(app)
    document_errors(app)
    install_ops(app, registry, options or ServerOptions())

    deps = Deps(registry, oidc=oidc)
    Caller = Annotated[Member, Depends(deps.caller)]
    Who = Annotated[Principal, Depends(deps.principal)]
    Limit = Annotated[int, Query(description="page size, 1-1000")]
    Cursor = Annotated[str | None, Query(description="next_cursor of the previous page")]

    def version(name: str, ref: str) -> ModelVersion:
        """Version ``ref`` of ``name``: a number, or an alias (``latest`` is the newest)."""
        if ref.isascii() and ref.isdigit():  # not "¹": int() refuses what isdigit() accepts
            return registry.get_version(name, int(ref))
        return registry.get_version(f"models:/{name}@{ref}")

    def viewed(member: Member, name: str, ref: str) -> ModelVersion:
        need_view(member, name)
        mv = version(name, ref)
        need_view(member, mv.model)  # a former name resolves to the model's current one
        return mv

    def version_response(mv: ModelVersion, stage: str | None) -> Response:
        return Response(mv.to_json(stage=stage), media_type="application/json")

    def page_response(items: list[tuple[ModelVersion, str | None]], next_cursor: str | None) -> Response:
        # A page is mostly manifests: ModelVersion.to_json copies them as stored, where a
        # pydantic model would decode, validate and encode each (VersionPage documents it).
        body = ",".join(mv.to_json(stage=stage) for mv, stage in items)
        return Response(
            f'{{"items":[{body}],"next_cursor":{json.dumps(next_cursor)}}}', media_type="application/json"
        )

    @app.get("/healthz", response_model=HealthOut, tags=["probes"])
    async def healthz() -> HealthOut:
        """The process is up (no registry access, no token)."""
        return HealthOut(status="ok")

    @app.get(
        "/readyz",
        response_model=ReadyOut,
        tags=["probes"],
        responses={503: {"model": ReadyOut, "description": "a store did not answer"}},
    )
    def readyz() -> JSONResponse:
        """The metadata database and the artefact store each answer one cheap read (no token)."""
        problems = registry.readiness()
        ready = all(problem is None for problem in problems.values())
        body = ReadyOut(status="ready" if ready else "unavailable", **problems)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    def get(path: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """A read route under the API prefix, documented with the error bodies it may return
        (added to the app itself, so ``app.routes`` lists every route)."""
        return route(app, "GET", path, **options)

    @get("/whoami", quick=True, response_model=WhoamiOut, tags=["members"])
    def whoami(who: Who) -> WhoamiOut:
        """The member the token stands for, and how it proved it (``token`` or ``oidc``)."""
        return WhoamiOut.model_validate({**who.member.to_dict(), "method": who.method})

    @get("/models", quick=True, response_model=ModelPage, tags=["models"])
    def list_models(
        member: Caller,
        prefix: str | None = None,
        tag: Annotated[list[str], Query(description="KEY=VALUE; repeat for several")] = [],  # noqa: B006
        stage: str | None = None,
        include_archived: bool = False,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> ModelPage:
        """Models by name, filtered by name prefix, tags and the stage of their latest version."""
        page = registry.list_models(
            prefix=prefix,
            tags=_tags(tag),
            stage=stage,
            limit=limit,
            cursor=cursor,
            include_archived=include_archived,
        )
        items = [ModelOut.model_validate(m.to_dict()) for m in page if member.can_view(m.name)]
        return ModelPage(items=items, next_cursor=page.next_cursor)

    @get("/models/{name}", quick=True, response_model=ModelOut, tags=["models"])
    def get_model(member: Caller, name: str) -> ModelOut:
        need_view(member, name)
        model = registry.get_model(name)
        need_view(member, model.name)
        return ModelOut.model_validate(model.to_dict())

    @get("/models/{name}/versions", quick=True, response_model=VersionPage, tags=["versions"])
    def list_versions(member: Caller, name: str, limit: Limit = 100, cursor: Cursor = None) -> Response:
        """A model's versions, newest first, each with its stage."""
        need_view(member, name)
        page = registry.list_versions(name, limit=limit, cursor=cursor)
        current = page.items[0].model if page.items else name
        need_view(member, current)
        states = registry.states(current, [v.version for v in page]) if page.items else {}
        items = [(v, states[v.version].stage if v.version in states else None) for v in page]
        return page_response(items, page.next_cursor)

    @get("/models/{name}/versions/{ref}", quick=True, response_model=VersionOut, tags=["versions"])
    def get_version(member: Caller, name: str, ref: str) -> Response:
        """One version, by number or alias (``latest`` is the newest)."""
        mv = viewed(member, name, ref)
        # the stage of the version in hand: one read, not a second lookup of the version
        state = registry.states(mv.model, [mv.version]).get(mv.version)
        return version_response(mv, state.stage if state is not None else None)

    @get("/models/{name}/versions/{ref}/state", quick=True, response_model=StateOut, tags=["versions"])
    def get_state(member: Caller, name: str, ref: str) -> StateOut:
        """Stage and approval of a version."""
        mv = viewed(member, name, ref)
        return StateOut.model_validate(registry.state(mv.uri).to_dict())

    @get("/models/{name}/versions/{ref}/registration", response_model=RegistrationProofOut, tags=["versions"])
    def get_registration(member: Caller, name: str, ref: str) -> dict[str, Any]:
        """The signed ledger record of the version's registration (checked by clients against
        the trust bundle before they trust its file list)."""
        mv = viewed(member, name, ref)
        return registry.registration_proof(mv.uri)

    @get("/models/{name}/versions/{ref}/history", response_model=list[EventOut], tags=["versions"])
    def get_history(member: Caller, name: str, ref: str) -> list[EventOut]:
        """Every ledger event about the version, oldest first."""
        mv = viewed(member, name, ref)
        return [EventOut.model_validate(e.to_dict()) for e in registry.history(mv.uri)]

    @get("/models/{name}/versions/{ref}/lineage", response_model=LineageOut, tags=["lineage"])
    def get_lineage(member: Caller, name: str, ref: str) -> LineageOut:
        """Everything upstream of the version (data sets, steps, sources) as a JSON graph."""
        mv = viewed(member, name, ref)
        return LineageOut.model_validate(registry.lineage(mv.uri).to_dict())

    @get("/models/{name}/aliases", quick=True, response_model=AliasesOut, tags=["models"])
    def get_aliases(member: Caller, name: str) -> AliasesOut:
        """The model's aliases, the version each holds, and who moved it last."""
        need_view(member, name)
        model = registry.get_model(name)  # an unknown model is a 404, not an empty list
        need_view(member, model.name)
        # the move that set each alias the model has now, by alias name
        current = registry.alias_history(model.name, latest=True)
        aliases = [
            {
                "alias": c.alias,
                "uri": f"models:/{model.name}@{c.alias}",
                "version": c.version,
                "version_uri": f"models:/{model.name}/{c.version}",
                "moved_at": c.time,
                "moved_by": c.actor,
            }
            for c in current
        ]
        return AliasesOut.model_validate({"model": model.name, "aliases": aliases})

    @get("/versions", quick=True, response_model=VersionPage, tags=["versions"])
    def search_versions(
        member: Caller,
        q: Annotated[str, Query(description="e.g. stage = 'approved' and metrics.auc > 0.8")] = "",
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> Response:
        """Versions of any model meeting a query, newest registered first (the query language of
        ``Registry.search_versions``); versions of models outside the caller's roles are left out."""
        page = registry.search_versions(q, limit=limit, cursor=cursor)
        return page_response([(v, None) for v in page if member.can_view(v.model)], page.next_cursor)

    @get("/diff", response_model=DiffOut, tags=["lineage"])
    def diff(
        member: Caller,
        a: Annotated[str, Query(description="models:/name/3")],
        b: Annotated[str, Query(description="models:/name/4")],
    ) -> DiffOut:
        """What differs between two versions: parameters, metrics, code, framework, dependencies, data."""
        for uri in (a, b):
            need_view(member, parse_model_uri(uri).name)
            need_view(member, registry.get_version(uri).model)
        return DiffOut.model_validate(registry.diff(a, b).to_dict())

    @get("/predictions/{prediction_id}/trace", response_model=TraceOut, tags=["lineage"])
    def trace(member: Caller, prediction_id: str) -> TraceOut:
        """Everything behind one prediction: receipt check, governance, manifest, data sets."""
        _when, key = parse_prediction_id(prediction_id)
        need_view(member, registry.get_version_by_key(key).model)
        return TraceOut.model_validate(registry.trace(prediction_id).to_dict())

    @get("/audit", response_model=EventPage, tags=["ledger"])
    def audit(
        member: Caller,
        model: str | None = None,
        version: int | None = None,
        actor: Annotated[
            str | None, Query(description="events by this actor (a filter, not who calls)")
        ] = None,
        action: Annotated[str | None, Query(description="e.g. version.approved or version.*")] = None,
        since: str | None = None,
        until: str | None = None,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> EventPage:
        """Ledger events, oldest first. Without ``model`` it spans every model, so it needs roles
        on every model."""
        if model is not None:
            need_view(member, model)
        elif not member.unscoped:
            raise PermissionDenied(f"{member.name} holds roles on some models only: give ?model=")
        page = registry.audit(
            model=model,
            version=version,
            actor=actor,
            action=action,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        )
        return EventPage(
            items=[EventOut.model_validate(e.to_dict()) for e in page], next_cursor=page.next_cursor
        )

    @get("/verify", response_model=VerifyOut, tags=["ledger"])
    def verify(member: Caller, captures: bool = False) -> VerifyOut:
        """Check everything the registry vouches for (admin; re-hashes every artefact, so slow)."""
        need_admin(member)
        return VerifyOut.model_validate(registry.verify(captures=captures, record=False).to_dict())

    @get("/public-key", quick=True, response_model=PublicKeyOut, tags=["trust"])
    def public_key(member: Caller) -> PublicKeyOut:
        """The registry's root public key (PEM): pin it to verify the ledger."""
        need_view(member, None)
        return PublicKeyOut(public_key=registry.public_key().decode("ascii"))

    @get("/model-signing-key", quick=True, response_model=PublicKeyOut, tags=["trust"])
    def model_signing_key(member: Caller) -> PublicKeyOut:
        """The server's model-signing key (ECDSA P-256, PEM): what `model_signing verify key`
        verifies this server's `model-signing` exports with."""
        need_view(member, None)
        return PublicKeyOut(public_key=registry.model_signing_key().decode("ascii"))

    @get("/trust-bundle", response_model=TrustBundleOut, tags=["trust"])
    def trust_bundle(member: Caller) -> dict[str, Any]:
        """The root key and every signed enrolment write, to check receipts offline."""
        need_view(member, None)
        return registry.trust_bundle()

    @get("/members", response_model=list[MemberOut], tags=["members"])
    def members(member: Caller) -> list[MemberOut]:
        """Every member, their roles, model scope and keys (admin)."""
        need_admin(member)
        return [MemberOut.model_validate(m.to_dict()) for m in registry.members()]

    for module in ROUTE_MODULES:
        module.add_routes(app, registry, deps)
    return app


def _say_who_writes(registry: Registry) -> None:
    """Log whether this server can write for members: its key must be a gateway's."""
    try:
        me = registry.whoami()
    except ModelLedgerError as exc:
        log.warning("cannot tell who this server is: %s", exc.message)
        return
    member = me.get("member") or {}
    if "gateway" in member.get("roles", ()):
        log.info("writes on members' behalf are signed by %s (key %s)", member["name"], me["key_id"])
    else:
        log.warning(
            "this server's key (%s, %s) is not enrolled with the gateway role: every write over "
            "HTTP will be refused; enrol it (modelledger members add <name> --key <pub> --role gateway) "
            "and start the server with MODELLEDGER_IDENTITY=<name or key file>",
            me["actor"],
            me["key_id"],
        )


def serve(
    registry: Registry,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    oidc: OidcSettings | None = None,
    options: ServerOptions | None = None,
) -> None:
    """Serve ``registry`` with uvicorn in this process until SIGINT or SIGTERM (requests in
    flight then finish; see :class:`ServerOptions`).

    >>> registry = Registry.open("postgresql://ml@db/registry", artifacts="s3://ml/reg")  # doctest: +SKIP
    >>> serve(registry, host="0.0.0.0", port=8000)  # doctest: +SKIP
    """
    options = options or ServerOptions()
    serve_app(create_app(registry, oidc=oidc, options=options), host=host, port=port, options=options)
