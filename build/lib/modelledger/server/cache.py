"""Repeated reads answered from memory, for exactly as long as the database has not changed.

A ``quick`` GET route (a bounded read of metadata: a version, a page of versions, a model)
answers from what the database holds and who calls; nothing else. When the registry can
tell whether anything was committed since a moment (``Registry.read_stamp``: PostgreSQL's
snapshot, or SQLite's ``data_version``, which every commit moves), the answer to a request
authenticated by an API token is kept, keyed by route path, query and token, with:

- the stamp read before the route ran, kept only when the stamp read after it is the same
  (so nothing committed while it ran, and the answer is the one the data gives at that stamp);
- the token's expiry, since time is the one thing besides the data that ends a token.

A later identical request reads the stamp once and, when it has not moved and the token has
not expired, gets the kept bytes: one small query instead of the route's queries, and none
of the routing, validation or encoding. Any commit (an alias moved, a token revoked, a
member's roles changed, by this server or another one over the same database) moves the
stamp, so the next request runs the route again. Revocation therefore takes effect at once,
as without the cache. JWTs (OIDC) are never kept: their validity depends on the issuer's
keys, which the stamp does not cover. Answers carry ``X-Modelledger-Cache: hit`` or ``miss``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelledger import Registry

from .scope import CACHE_UNTIL_SCOPE_KEY, MEMBER_SCOPE_KEY, ROUTE_SCOPE_KEY

__all__ = ["CACHE_HEADER", "ReadCache", "cacheable_routes", "token_until"]

CACHE_HEADER = "X-Modelledger-Cache"
_HIT = (CACHE_HEADER.lower().encode(), b"hit")
_MISS = (CACHE_HEADER.lower().encode(), b"miss")
_MAX_BODY = 1024 * 1024  # a page of 1,000 versions fits; a larger answer is not kept
_BEARER = b"bearer mlt_"


def token_until(expires_at: str | None) -> float:
    """The epoch second at which a token that ``expires_at`` stops (infinity: never)."""
    if expires_at is None:
        return float("inf")
    return datetime.fromisoformat(expires_at).timestamp()


@dataclass(frozen=True, slots=True)
class _Kept:
    stamp: str
    until: float
    member: str | None
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def cacheable_routes(app: ASGIApp) -> set[str]:
    """The route templates whose answers may be kept (``deps.route`` adds the quick GETs)."""
    state = app.state  # type: ignore[attr-defined]
    try:
        routes: set[str] = state.cacheable_routes
    except AttributeError:
        routes = state.cacheable_routes = set()
    return routes


class ReadCache:
    """Pure ASGI middleware between the operations middleware (which names the route) and
    the application. ``size`` answers at most are kept, least recently used dropped first."""

    def __init__(self, app: ASGIApp, *, registry: Registry, routes: set[str], size: int) -> None:
        self.app = app
        self.registry = registry
        self.routes = routes
        self.size = size
        self.local = registry.reads_are_local
        self.kept: OrderedDict[tuple[str, bytes, bytes], _Kept] = OrderedDict()

    def _key(self, scope: Scope) -> tuple[str, bytes, bytes] | None:
        if scope["type"] != "http" or scope["method"] != "GET":
            return None
        if scope.get(ROUTE_SCOPE_KEY) not in self.routes:
            return None
        auth = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if auth is not None:
                    return None  # two Authorization headers: let the route refuse it
                auth = value
        if auth is None or auth[: len(_BEARER)].lower() != _BEARER:
            return None
        return scope["path"], scope.get("query_string", b""), auth

    async def _stamp(self) -> str | None:
        if self.local:
            return self.registry.read_stamp()  # microseconds, nothing to wait on: no thread hop
        return await run_in_threadpool(self.registry.read_stamp)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = self._key(scope) if self.size > 0 else None
        if key is None:
            await self.app(scope, receive, send)
            return
        stamp = await self._stamp()
        if stamp is None:
            await self.app(scope, receive, send)
            return
        kept = self.kept.get(key)
        if kept is not None and kept.stamp == stamp and time.time() < kept.until:
            self.kept.move_to_end(key)
            scope[MEMBER_SCOPE_KEY] = kept.member
            headers = [*kept.headers, _HIT]
            await send({"type": "http.response.start", "status": kept.status, "headers": headers})
            await send({"type": "http.response.body", "body": kept.body})
            return
        await self._run_and_keep(scope, receive, send, key, stamp)

    async def _run_and_keep(
        self, scope: Scope, receive: Receive, send: Send, key: tuple[str, bytes, bytes], stamp: str
    ) -> None:
        start: Message | None = None
        chunks: list[bytes] = []
        size = 0
        complete = False

        async def keeping_send(message: Message) -> None:
            nonlocal start, size, complete
            if message["type"] == "http.response.start":
                start = message
                message = {**message, "headers": [*message.get("headers", []), _MISS]}
            elif message["type"] == "http.response.body" and start is not None and size <= _MAX_BODY:
                body = message.get("body", b"")
                chunks.append(body)
                size += len(body)
                complete = not message.get("more_body", False)
            await send(message)

        await self.app(scope, receive, keeping_send)
        until = scope.get(CACHE_UNTIL_SCOPE_KEY)
        if start is None or start["status"] != 200 or not complete or size > _MAX_BODY or until is None:
            return
        if await self._stamp() != stamp:
            return  # something was committed while the route read: its answer may mix both
        self.kept[key] = _Kept(
            stamp, until, scope.get(MEMBER_SCOPE_KEY), 200, list(start.get("headers", [])), b"".join(chunks)
        )
        self.kept.move_to_end(key)
        while len(self.kept) > self.size:
            self.kept.popitem(last=False)
