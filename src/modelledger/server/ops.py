"""Operating the server: what every request passes through, and how uvicorn runs the app.

:class:`OpsMiddleware` gives each request, in one pass:

- a NUL character (``%00``) in the path or the query string: 400, for every route;
- a request id: a sane incoming ``X-Request-ID`` is kept, otherwise one is made; the response
  carries it back;
- a body size limit (:attr:`ServerOptions.max_body`, raised or lifted per route with
  :func:`set_route_limits`): a declared ``Content-Length`` over it is refused before the route
  runs, a body that turns out longer while the route reads it stops there; both are 413;
- a time limit until the response starts (:attr:`ServerOptions.timeout`, per route too): past
  it the caller gets 503 at once. Python cannot stop a thread, so a route that is still working
  finishes in the background and its late response is dropped;
- Prometheus metrics (served at ``/metrics``, no token), labelled with the route's template
  and never the raw path, so that their number stays bounded;
- one JSON access log line on the ``modelledger.server.access`` logger. It names the member
  the token proved, never the token, the ``Authorization`` header or the query string.

Errors keep the body of :mod:`.errors` (``{"error": ..., "message": ...}``), and an error no
handler maps becomes its 500 here, inside the middleware, so that it too is counted, logged and
carries its request id.

With several uvicorn workers (:func:`serve_workers`), each worker is a process of its own:
they share their metrics through prometheus_client's multiprocess mode (a folder of
memory-mapped files, ``PROMETHEUS_MULTIPROC_DIR``), so whichever worker answers a scrape
reports the sum over every worker.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import uvicorn
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelledger import InvalidInput, ModelLedgerError, Registry

from .cache import ReadCache, cacheable_routes
from .errors import (
    RequestTooLarge,
    ResponseTimeout,
    library_error_response,
    refusal_response,
    unexpected_response,
)
from .scope import MEMBER_SCOPE_KEY, ROUTE_SCOPE_KEY

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = [
    "ACCESS_LOGGER",
    "OPTIONS_ENV",
    "ServerOptions",
    "install_ops",
    "log_config",
    "serve_app",
    "serve_workers",
    "set_route_limits",
]

MiB = 1 << 20
ACCESS_LOGGER = "modelledger.server.access"
METRICS_PATH = "/metrics"
OPTIONS_ENV = "MODELLEDGER_SERVER_OPTIONS"
"""How :func:`serve_workers` hands its options to the worker processes it starts."""
WORKER_FACTORY = "modelledger.server.worker:worker_app"
"""What each worker process calls for its app (named, not imported: that module imports this one)."""

log = logging.getLogger("modelledger.server")
access_log = logging.getLogger(ACCESS_LOGGER)

# A request id is this process's random prefix and a counter: unique across processes and
# restarts like a uuid4, without a call to the kernel's random source for every request.
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count()


def _new_id_prefix() -> None:  # a forked worker must not repeat its parent's ids
    global _ID_PREFIX
    _ID_PREFIX = os.urandom(8).hex()


os.register_at_fork(after_in_child=_new_id_prefix)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:=+/-]{1,128}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_UNMATCHED = "unmatched"  # the route label of a request no route matches: any path, one series
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class ServerOptions:
    """How the server treats every request, and how uvicorn stops.

    ``max_body``: bytes a request body may have (``None``: no limit); ``timeout``: seconds
    until the response must start (``None``: no limit); ``access_log``: one JSON line per
    request on :data:`ACCESS_LOGGER`; ``graceful_timeout``: seconds a stopping server waits
    for requests in flight before it closes them; ``read_cache``: how many answers of quick
    reads to keep for repeated requests while the database shows no commit (0: none; see
    :mod:`modelledger.server.cache`); ``scheduler``: seconds between ticks of the refresh
    scheduler run in the server (``None``: none; see ``docs/refresh.md``).

    >>> create_app(registry, options=ServerOptions(max_body=8 * MiB, timeout=30))  # doctest: +SKIP
    """

    max_body: int | None = 64 * MiB
    timeout: float | None = 60.0
    access_log: bool = True
    graceful_timeout: int = 30
    read_cache: int = 4096
    scheduler: float | None = None  # seconds between refresh scheduler ticks; None: none here

    def __post_init__(self) -> None:
        if self.max_body is not None and self.max_body < 0:
            raise ValueError(f"max_body must be at least 0 bytes, got {self.max_body}")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"timeout must be more than 0 seconds, got {self.timeout}")
        if self.read_cache < 0:
            raise ValueError(f"read_cache must be at least 0 answers, got {self.read_cache}")
        if self.graceful_timeout < 0:
            raise ValueError(f"graceful_timeout must be at least 0 seconds, got {self.graceful_timeout}")
        if self.scheduler is not None and self.scheduler <= 0:
            raise ValueError(f"scheduler must be more than 0 seconds, got {self.scheduler}")


_UNSET: Any = object()


@dataclass(frozen=True)
class _Limits:
    max_body: int | None
    timeout: float | None


@dataclass
class _Ops:
    """One app's operational state: its options, per-route limits and metrics."""

    options: ServerOptions
    metrics: _Metrics
    routes: dict[tuple[str, str], _Limits] = field(default_factory=dict)

    def limits(self, method: str, template: str | None) -> _Limits:
        default = _Limits(self.options.max_body, self.options.timeout)
        if template is None:
            return default
        return self.routes.get((method, template), default)


def set_route_limits(
    app: FastAPI, method: str, path: str, *, max_body: int | None = _UNSET, timeout: float | None = _UNSET
) -> None:
    """Give the route ``method path`` (its template, with the API prefix) limits of its own,
    for example an upload that streams large files: ``None`` lifts a limit, a keyword not
    given keeps the server's.

    >>> upload = API_PREFIX + "/uploads/{id}"
    >>> set_route_limits(app, "PUT", upload, max_body=None, timeout=None)  # doctest: +SKIP
    """
    ops: _Ops = app.state.ops
    options = ops.options
    ops.routes[(method.upper(), path)] = _Limits(
        options.max_body if max_body is _UNSET else max_body,
        options.timeout if timeout is _UNSET else timeout,
    )


# ---------------------------------------------------------------------------------- metrics


def _multiprocess() -> bool:
    # prometheus_client picks its value storage from this variable when it is first imported
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ


class _LedgerHead(Collector):
    """The ledger's head seq, read when Prometheus scrapes (one row), never cached."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            seq, _hash = self._registry.ledger_head()
        except ModelLedgerError as exc:  # an unreachable database: the series is absent from this scrape
            log.warning("metrics: the ledger head could not be read: %s", exc)
            return
        yield GaugeMetricFamily(
            "modelledger_ledger_head_seq", "Sequence number of the ledger's last event.", value=seq
        )


class _Metrics:
    def __init__(self, registry: Registry) -> None:
        self._head = _LedgerHead(registry)
        # in multiprocess mode the values live in files and a scrape reads them all; otherwise
        # each app has a registry of its own (a process may hold several apps, as tests do)
        own = None if _multiprocess() else CollectorRegistry(auto_describe=True)
        self._own = own
        labels = ("method", "route", "status")
        self.requests = Counter("modelledger_http_requests", "HTTP requests answered.", labels, registry=own)
        self.errors = Counter(
            "modelledger_http_server_errors",
            "HTTP requests answered with a 5xx status.",
            labels,
            registry=own,
        )
        self.duration = Histogram(
            "modelledger_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response.",
            ("method", "route"),
            buckets=_BUCKETS,
            registry=own,
        )

    def observe(self, method: str, route: str, status: int | None, seconds: float) -> None:
        code = str(status) if status is not None else "none"
        self.requests.labels(method, route, code).inc()
        if status is not None and status >= 500:
            self.errors.labels(method, route, code).inc()
        self.duration.labels(method, route).observe(seconds)

    def exposition(self) -> bytes:
        if self._own is None:
            scrape = CollectorRegistry()
            MultiProcessCollector(scrape)  # type: ignore[no-untyped-call]
        else:
            scrape = self._own
        head = CollectorRegistry()
        head.register(self._head)
        return generate_latest(scrape) + generate_latest(head)


def _metrics_endpoint(ops: _Ops) -> Any:
    def metrics(_request: Request) -> Response:
        # the classic text format: every Prometheus version reads it
        return Response(ops.metrics.exposition(), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return metrics


# ---------------------------------------------------------------------------------- requests


@dataclass
class _Exchange:
    """What the middleware learns about one request while it is answered."""

    status: int | None = None
    started: bool = False
    closed: bool = False  # the middleware answered itself: late messages of the app are dropped
    finished_at: float | None = None
    recorded: bool = False  # counted and logged


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


class OpsMiddleware:
    """Request id, limits, metrics and the access log (see the module's documentation)."""

    def __init__(self, app: ASGIApp, *, ops: _Ops, routes: list[BaseRoute]) -> None:
        self.app = app
        self.ops = ops
        self.routes = routes

    def _route(self, scope: Scope) -> str | None:
        """The template of the route that will answer (a 405 counts under the path's route)."""
        partial = None
        for route in self.routes:
            match, _child = route.matches(scope)
            if match is Match.FULL:
                return str(getattr(route, "path", _UNMATCHED))
            if match is Match.PARTIAL and partial is None:
                partial = str(getattr(route, "path", _UNMATCHED))
        return partial

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrived = time.perf_counter()
        incoming = _header(scope, b"x-request-id")
        if incoming and _REQUEST_ID.fullmatch(incoming):
            request_id = incoming
        else:
            request_id = f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        template = scope[ROUTE_SCOPE_KEY] = self._route(scope)
        limits = self.ops.limits(scope["method"], template)
        exchange = _Exchange()

        async def tracked_send(message: Message) -> None:
            if exchange.closed:
                return
            if message["type"] == "http.response.start":
                exchange.status = int(message["status"])
                exchange.started = True
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                exchange.finished_at = time.perf_counter()
            await send(message)

        async def answer(response: Response) -> None:
            await response(scope, receive, tracked_send)
            exchange.closed = True

        def record() -> None:
            if exchange.recorded:
                return
            exchange.recorded = True
            ended = exchange.finished_at or time.perf_counter()
            self.ops.metrics.observe(method, template or _UNMATCHED, exchange.status, ended - arrived)
            if self.ops.options.access_log:
                _log_access(scope, method, template, exchange.status, ended - arrived, request_id)

        async def too_late() -> None:
            message = f"no response within {limits.timeout:g} s; try again"
            await answer(refusal_response(ResponseTimeout(message)))
            record()  # now, not when the route gives up

        try:
            if b"%00" in scope.get("query_string", b"") or "\x00" in scope["path"]:
                # no name, filter or id here holds one, and PostgreSQL can neither store nor
                # compare text that does: refused for every route, present and future
                await answer(
                    library_error_response(InvalidInput("a request may not hold a NUL character (%00)"))
                )
                return
            declared = _header(scope, b"content-length")
            limit = limits.max_body
            if limit is not None and declared is not None and declared.isdigit() and int(declared) > limit:
                await answer(refusal_response(_too_large(limit)))
                return
            inner_receive = receive if limits.max_body is None else _limited(receive, limits.max_body)
            failure = await self._run(scope, inner_receive, tracked_send, exchange, limits.timeout, too_late)
            if failure is not None:
                if exchange.started:  # nothing left to say over HTTP: uvicorn closes the connection
                    raise failure
                await answer(unexpected_response(failure))
        finally:
            record()

    async def _run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        exchange: _Exchange,
        timeout: float | None,
        too_late: Callable[[], Coroutine[Any, Any, None]],
    ) -> Exception | None:
        """Run the app; return what it raised. With a timeout that passes before a response
        starts, ``too_late`` runs at once in a task of its own; the app goes on (Python cannot
        stop the thread a route may be blocked in) and returns later, its output dropped.
        A timer rather than a task group per request: most requests never reach it, and a
        group costs a task and a cancel scope each."""
        timer: asyncio.TimerHandle | None = None
        if timeout is not None:
            loop = asyncio.get_running_loop()

            def fire() -> None:
                if not exchange.started:
                    late: asyncio.Task[None] = loop.create_task(too_late())
                    _LATE.add(late)  # held until done: the loop keeps only a weak reference
                    late.add_done_callback(_LATE.discard)

            timer = loop.call_later(timeout, fire)
        try:
            await self.app(scope, receive, send)
        except Exception as exc:  # a cancellation is a BaseException and passes
            return exc
        finally:
            if timer is not None:
                timer.cancel()
        return None


_LATE: set[asyncio.Task[None]] = set()
"""The 503 answers sent for requests past their time limit, until each is sent."""


def _too_large(limit: int) -> RequestTooLarge:
    size = f"{limit // MiB} MiB" if limit and limit % MiB == 0 else f"{limit} bytes"
    return RequestTooLarge(f"the request body is larger than this route accepts ({size})")


def _limited(receive: Receive, limit: int) -> Receive:
    received = 0

    async def limited_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _too_large(limit)  # an HTTPException: FastAPI lets it through to .errors
        return message

    return limited_receive


def _log_access(
    scope: Scope, method: str, template: str | None, status: int | None, seconds: float, request_id: str
) -> None:
    client = scope.get("client")
    fields: dict[str, Any] = {
        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "method": method,
        "route": template,
        "path": scope.get("path"),  # without the query string, which could hold secrets
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "client": client[0] if client else None,
        "member": scope.get(MEMBER_SCOPE_KEY),
        "request_id": request_id,
    }
    access_log.info(json.dumps(fields, separators=(",", ":")), extra={"access": fields})


def install_ops(app: FastAPI, registry: Registry, options: ServerOptions) -> None:
    """Add the middleware and ``GET /metrics`` to ``app`` (``create_app`` does)."""
    ops = _Ops(options, _Metrics(registry))
    app.state.ops = ops
    # a plain Starlette route: the text format is not JSON and not part of the API's document
    app.router.add_route(METRICS_PATH, _metrics_endpoint(ops), methods=["GET"], include_in_schema=False)
    # added first, so it runs inside the operations middleware, which names the route
    app.add_middleware(ReadCache, registry=registry, routes=cacheable_routes(app), size=options.read_cache)
    app.add_middleware(OpsMiddleware, ops=ops, routes=app.router.routes)


# ---------------------------------------------------------------------------------- running


def log_config(options: ServerOptions) -> dict[str, Any]:
    """uvicorn's logging, plus the server's own loggers on stderr; the access log's lines are
    the bare JSON documents."""
    config: dict[str, Any] = json.loads(json.dumps(uvicorn.config.LOGGING_CONFIG))
    config["formatters"]["json-lines"] = {"format": "%(message)s"}
    config["handlers"]["json-lines"] = {
        "formatter": "json-lines",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["modelledger.server"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    config["loggers"][ACCESS_LOGGER] = {
        "handlers": ["json-lines"],
        "level": "INFO" if options.access_log else "WARNING",
        "propagate": False,
    }
    return config


def _uvicorn_options(options: ServerOptions) -> dict[str, Any]:
    return {
        "log_config": log_config(options),
        "log_level": "info",
        "access_log": not options.access_log,  # ours replaces uvicorn's
        "timeout_graceful_shutdown": options.graceful_timeout,
        # no route is a WebSocket: uvicorn need not import a WebSocket library when one is installed
        "ws": "none",
    }


@contextmanager
def _sigterm_stops_cleanly() -> Iterator[None]:
    """After a graceful shutdown uvicorn raises the signal that started it again, for the
    handler that was there before; with SIGTERM's default one the process would then die of
    it. A stop that an orchestrator asked for and that went as planned is a success (exit 0)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda _sig, _frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve_app(app: Any, *, host: str, port: int, options: ServerOptions) -> None:
    """Run ``app`` in this process until SIGINT or SIGTERM; requests in flight then get
    ``options.graceful_timeout`` seconds to finish."""
    with _sigterm_stops_cleanly():
        uvicorn.run(app, host=host, port=port, **_uvicorn_options(options))


def serve_workers(
    *, host: str, port: int, workers: int, options: ServerOptions, environment: Mapping[str, str] = {}
) -> None:
    """Run ``workers`` processes, each opening the registry that its environment names
    (``MODELLEDGER_URL``... as :meth:`Registry.open` reads them; ``environment`` adds to this
    process's) and serving it on one shared socket. Their metrics are shared through a fresh
    ``PROMETHEUS_MULTIPROC_DIR`` unless one is set already (then it should be emptied before).

    >>> serve_workers(host="0.0.0.0", port=8000, workers=4, options=ServerOptions())  # doctest: +SKIP
    """
    made = None
    saved = dict(os.environ)
    try:
        os.environ.update(environment)
        if not _multiprocess():
            made = tempfile.mkdtemp(prefix="modelledger-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
        os.environ[OPTIONS_ENV] = json.dumps(asdict(options))
        with _sigterm_stops_cleanly():
            uvicorn.run(
                WORKER_FACTORY,
                factory=True,
                host=host,
                port=port,
                workers=workers,
                **_uvicorn_options(options),
            )
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
