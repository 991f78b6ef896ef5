"""What every route module of the server shares: the API prefix, the caller's identity as a
FastAPI dependency, the role checks and the documented error bodies.

Route modules (``app.py`` for reads, and the modules next to it) each expose
``add_routes(app, registry, deps)`` and use :class:`Deps` rather than building their own
authentication, so that there is one way a request proves who calls: an API token
(``mlt_...``, ``Registry.authenticate_token``) or, when the server is given
:class:`~.oidc.OidcSettings`, a JWT of that OIDC issuer (:mod:`.oidc`).
"""

# No ``from __future__ import annotations``: FastAPI reads annotations at run time.
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin

from fastapi import FastAPI, Request, Security
from fastapi.params import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from modelledger import InvalidToken, Member, PermissionDenied, Registry

from .cache import cacheable_routes, token_until
from .oidc import OidcSettings, OidcVerifier, looks_like_jwt
from .schemas import ErrorOut
from .scope import CACHE_UNTIL_SCOPE_KEY, MEMBER_SCOPE_KEY

__all__ = [
    "API_PREFIX",
    "ERRORS",
    "MEMBER_SCOPE_KEY",
    "Deps",
    "Principal",
    "document_errors",
    "need_admin",
    "need_view",
]

API_PREFIX = "/api/v1"


ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}
# A reference, not ``"model": ErrorOut``: FastAPI builds a pydantic adapter for every model of
# every route's responses, which made eight per route and a third of the server's start-up.
# ``document_errors`` puts the one schema they refer to into the document.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"schema": ERROR_REF}}}
    for code, text in (
        (400, "a bad argument (InvalidInput)"),
        (401, "no valid token (InvalidToken)"),
        (403, "the member lacks the role (PermissionDenied)"),
        (404, "no such model, version, alias or prediction (NotFound)"),
        (409, "the registry's state does not allow it now, or it exists already (Conflict, AlreadyExists)"),
        (422, "a parameter of the wrong type (InvalidInput)"),
        (413, "a request body over the route's size limit (RequestTooLarge)"),
        (503, "no response within the server's time limit (ResponseTimeout)"),
    )
}
"""The error bodies a route under the prefix may return, for the OpenAPI document."""


def document_errors(app: FastAPI) -> None:
    """Add the ``ErrorOut`` schema, which :data:`ERRORS` refers to, to ``app``'s OpenAPI document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas.setdefault(
                "ErrorOut", ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
            )
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


_BEARER = HTTPBearer(
    auto_error=False,
    description="An API token from `modelledger tokens create`, or a JWT of the OIDC issuer "
    "the server is configured with.",
)


@dataclass(frozen=True)
class Principal:
    """Who calls, as the server established it: the enrolled member and how they proved it
    (``method`` is ``"token"`` for an API token, ``"oidc"`` for a JWT of the OIDC issuer)."""

    member: Member
    method: str

    @property
    def name(self) -> str:
        return self.member.name


def need_view(member: Member, model: str | None) -> None:
    if not member.can_view(model):
        raise PermissionDenied(f"{member.name} holds no role on {model or 'this registry'}")


def need_admin(member: Member) -> None:
    if not member.has_role("admin", None):
        raise PermissionDenied(f"{member.name} is not an admin of every model: this needs the admin role")


def bearer_token(request: Request) -> str:
    """The token of ``Authorization: Bearer <token>``; a missing and a malformed header are told apart."""
    header = request.headers.get("authorization")
    if not header:
        raise InvalidToken("send Authorization: Bearer <token> (`modelledger tokens create` makes one)")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("the Authorization header must be 'Bearer <token>'")
    return token.strip()


class Deps:
    """The dependencies route modules declare, as aliases in their own scope (so that type
    checkers read them as types)::

        Caller = Annotated[Member, Depends(deps.caller)]        # the member
        Who = Annotated[Principal, Depends(deps.principal)]     # and how they authenticated
    """

    def __init__(self, registry: Registry, *, oidc: OidcSettings | None = None) -> None:
        self.registry = registry
        self.oidc = OidcVerifier(oidc) if oidc is not None else None

    def principal(
        self,
        request: Request,
        _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
    ) -> Principal:
        token = bearer_token(request)
        if looks_like_jwt(token):
            principal = self.authenticate(token)
        else:
            member, record = self.registry.authenticated_token(token)
            principal = Principal(member, "token")
            request.scope[CACHE_UNTIL_SCOPE_KEY] = token_until(record.expires_at)
        request.scope[MEMBER_SCOPE_KEY] = principal.name
        return principal

    def caller(
        self,
        request: Request,
        _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
    ) -> Member:
        return self.principal(request, _credentials).member

    def authenticate(self, token: str) -> Principal:
        """The principal a bearer token stands for: a JWT goes to the OIDC issuer's check,
        anything else is an API token (``Registry.authenticate_token``)."""
        if looks_like_jwt(token):
            if self.oidc is None:
                raise InvalidToken(
                    "this server takes API tokens (mlt_...) only: it is not configured for OIDC "
                    "tokens (modelledger server --oidc-issuer ...)"
                )
            return Principal(self.oidc.authenticate(token, self.registry), "oidc")
        return Principal(self.registry.authenticate_token(token), "token")


def route(
    app: FastAPI, method: str, path: str, *, quick: bool = False, **options: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A route under the API prefix, documented with the error bodies it may return. A plain
    (``def``) endpoint runs in one worker-thread hop, with its caller's authentication; a
    ``quick`` one (a read of a bounded size) runs on the event loop itself when the registry's
    reads wait on no network (see :func:`one_hop`)."""
    responses = {**ERRORS, **options.pop("responses", {})}
    if quick and method == "GET":
        cacheable_routes(app).add(API_PREFIX + path)
    add = app.api_route(API_PREFIX + path, methods=[method], responses=responses, **options)

    def decorate(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        add(endpoint if inspect.iscoroutinefunction(endpoint) else one_hop(endpoint, quick=quick))
        return endpoint

    return decorate


def _identity_dependency(annotation: Any) -> Callable[..., Any] | None:
    """``deps.caller`` or ``deps.principal`` when ``annotation`` is ``Annotated[..., Depends(it)]``."""
    if get_origin(annotation) is not Annotated:
        return None
    for extra in get_args(annotation)[1:]:
        dependency = getattr(extra, "dependency", None) if isinstance(extra, Depends) else None
        owner = getattr(dependency, "__self__", None)
        if isinstance(owner, Deps) and getattr(dependency, "__name__", "") in ("caller", "principal"):
            return dependency
    return None


def one_hop(endpoint: Callable[..., Any], *, quick: bool = False) -> Callable[..., Any]:
    """``endpoint`` as a coroutine that does all its blocking work in ONE worker thread.

    FastAPI runs a plain endpoint in the thread pool, each plain dependency in another hop, and
    validates a plain endpoint's return value in a third: each hop wakes a thread, hands the GIL
    over and wakes the event loop again, which cost more server CPU than a small read itself.
    Here the caller's authentication (a parameter typed ``Caller`` or ``Who``, see :class:`Deps`)
    and the endpoint run together in one hop, their reads on one database connection
    (``Registry.shared_reads``), and the result is validated and serialised on the event loop.
    Every other parameter keeps its FastAPI meaning.

    A ``quick`` endpoint over a registry whose reads are local (``Registry.reads_are_local``:
    SQLite, a file read in this process) makes no hop at all: its work is a fraction of a
    millisecond of CPU with nothing to wait on, which a thread could only add to. Over
    PostgreSQL every read waits on a network round trip, and the thread lets other requests
    run meanwhile.
    """
    signature = inspect.signature(endpoint)
    identities: dict[str, Callable[..., Any]] = {}
    kept: list[inspect.Parameter] = []
    for param in signature.parameters.values():
        dependency = _identity_dependency(param.annotation)
        if dependency is None:
            kept.append(param)
        else:
            identities[param.name] = dependency
    if not identities:
        return endpoint  # nothing to fold in: FastAPI's own thread hop is the one hop
    # FastAPI hands the request to one parameter only: the endpoint's own, when it has one
    own_request = next((p.name for p in kept if p.annotation is Request), None)
    request_name, bearer_name = own_request or "_one_hop_request", "_one_hop_bearer"
    if own_request is None:
        kept.append(inspect.Parameter(request_name, inspect.Parameter.KEYWORD_ONLY, annotation=Request))
    kept.append(
        inspect.Parameter(
            bearer_name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
        )
    )

    registry: Registry = next(iter(identities.values())).__self__.registry  # type: ignore[attr-defined]
    inline = quick and registry.reads_are_local

    def work(request: Request, kwargs: dict[str, Any]) -> Any:
        with registry.shared_reads():
            for name, dependency in identities.items():
                kwargs[name] = dependency(request, None)
            return endpoint(**kwargs)

    @functools.wraps(endpoint)
    async def hop(**kwargs: Any) -> Any:
        request = kwargs[request_name] if own_request else kwargs.pop(request_name)
        kwargs.pop(bearer_name)
        if inline:
            return work(request, kwargs)
        return await run_in_threadpool(work, request, kwargs)

    hop.__signature__ = signature.replace(parameters=kept)  # type: ignore[attr-defined]
    return hop
