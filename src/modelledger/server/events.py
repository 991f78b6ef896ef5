"""The ledger as it happens: ``GET /api/v1/events`` streams ledger events as Server-Sent Events,
and :func:`lifetime` runs the webhook delivery loop for the app's lifetime.

The stream first sends every event after ``?after=<seq>`` (or after the ``Last-Event-ID``
header, which a reconnecting ``EventSource`` sends and which wins over ``after``; with neither,
only events from now on), then follows new ones by reading the ledger after the last position
every :data:`POLL_SECONDS`. Each event is one message::

    id: <seq>
    event: <action>
    data: <the event's to_dict() as JSON, on one line>

A comment line (``: keep-alive``) goes out after :data:`HEARTBEAT_SECONDS` without a message,
so proxies keep the connection open. The caller sees what ``Registry`` would show them
(``modelledger.can_view_event``): every event with roles on every model, else only events about
the models they may view. The token is checked again every :data:`RECHECK_SECONDS`: a token
revoked, expired or whose member lost their roles ends the stream with an ``error`` message
(``{"error", "message"}`` as every error body). A client that disconnects ends it too, and so
does the server stopping (SIGINT or SIGTERM): uvicorn waits for open responses before it
exits, and a stream would otherwise never end; an ``EventSource`` reconnects, to another
server if there is one, and resumes from its ``Last-Event-ID``.
"""

# No ``from __future__ import annotations``: FastAPI reads annotations at run time.
import asyncio
import json
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial
from types import FrameType
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from modelledger import (
    InvalidInput,
    LedgerEvent,
    Member,
    ModelLedgerError,
    Registry,
    Scheduler,
    can_view_event,
)

from .deps import Deps, Principal, bearer_token, route

__all__ = ["HEARTBEAT_SECONDS", "POLL_SECONDS", "add_routes", "lifetime"]

log = logging.getLogger("modelledger.server")

POLL_SECONDS = 0.5
"""How often a stream reads the ledger for new events while it is idle."""
HEARTBEAT_SECONDS = 15.0
"""Idle time after which a stream sends a ``: keep-alive`` comment."""
RECHECK_SECONDS = 30.0
"""How often a stream checks its token (and the member's roles) again."""
RETRY_MILLISECONDS = 3000
"""What the stream tells an ``EventSource`` to wait before reconnecting."""
PAGE = 500
"""Events read at a time."""
DELIVERY_SECONDS = 1.0
"""Pause between two webhook delivery rounds."""


def message(event: LedgerEvent) -> str:
    """One Server-Sent Events message (JSON never holds a raw line break, so ``data`` is one line)."""
    data = json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False)
    return f"id: {event.seq}\nevent: {event.action}\ndata: {data}\n\n"


def error_message(exc: ModelLedgerError) -> str:
    data = json.dumps({"error": type(exc).__name__, "message": " ".join(exc.message.split())})
    return f"event: error\ndata: {data}\n\n"


def resume_point(after: int | None, last_event_id: str | None) -> int | None:
    """Where the stream starts: after ``Last-Event-ID`` when given, else after ``after``."""
    if last_event_id is None or not last_event_id.strip():
        return after
    text = last_event_id.strip()
    if not text.isascii() or not text.isdigit():
        raise InvalidInput(f"Last-Event-ID must be the seq of a ledger event, got {last_event_id!r}")
    return int(text)


def add_routes(app: FastAPI, registry: Registry, deps: Deps) -> None:
    Who = Annotated[Principal, Depends(deps.principal)]
    closing = app.state.event_streams_closing = threading.Event()  # set by lifetime() on shutdown

    async def stream(request: Request, token: str, member: Member, cursor: int) -> AsyncIterator[str]:
        yield f"retry: {RETRY_MILLISECONDS}\n\n"
        quiet_since = checked_at = time.monotonic()
        try:
            while True:
                batch = await run_in_threadpool(partial(registry.events_after, cursor, limit=PAGE))
                for event in batch:
                    cursor = event.seq  # past what the caller may not see too
                    if can_view_event(member, event):
                        yield message(event)
                        quiet_since = time.monotonic()
                if len(batch) == PAGE:
                    continue  # more is waiting
                if closing.is_set() or await request.is_disconnected():
                    return
                clock = time.monotonic()
                if clock - checked_at >= RECHECK_SECONDS:
                    member = (await run_in_threadpool(deps.authenticate, token)).member
                    checked_at = clock
                if clock - quiet_since >= HEARTBEAT_SECONDS:
                    yield ": keep-alive\n\n"
                    quiet_since = clock
                await asyncio.sleep(POLL_SECONDS)
        except ModelLedgerError as exc:
            log.info("event stream of %s ended: %s", member.name, exc.message)
            yield error_message(exc)
        finally:
            log.debug("event stream of %s closed after seq %d", member.name, cursor)

    @route(
        app,
        "GET",
        "/events",
        response_class=StreamingResponse,
        tags=["ledger"],
        responses={
            200: {
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
                "description": "ledger events as Server-Sent Events (id: seq, event: action, "
                "data: the event as JSON), oldest first, then each new one as it is appended",
            }
        },
    )
    async def events(
        request: Request,
        who: Who,
        after: Annotated[
            int | None, Query(ge=0, description="start after this seq (0: the whole ledger; default: now)")
        ] = None,
        last_event_id: Annotated[
            str | None, Header(description="resume after this seq (sent by a reconnecting EventSource)")
        ] = None,
    ) -> StreamingResponse:
        """Ledger events as Server-Sent Events: those after ``after`` (or ``Last-Event-ID``), then
        every new one. Members scoped to some models get only the events about those models."""
        start = resume_point(after, last_event_id)
        if start is None:
            start = await run_in_threadpool(registry.last_event_seq)
        return StreamingResponse(
            stream(request, bearer_token(request), who.member, start),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


@asynccontextmanager
async def lifetime(
    app: FastAPI, registry: Registry, *, scheduler: float | None = None
) -> AsyncIterator[None]:
    """What runs while the app serves (its lifespan): webhook delivery rounds
    (``Registry.deliver_webhooks``, in a worker thread) every :data:`DELIVERY_SECONDS`, the
    refresh scheduler every ``scheduler`` seconds when asked (a :class:`~modelledger.Scheduler`
    tick, in a worker thread), and the end of every event stream as soon as the process is told
    to stop. When the block ends, the round under way stops after its current post."""
    closing: threading.Event = app.state.event_streams_closing
    closing.clear()
    stop = threading.Event()
    restore = _on_exit_signals(closing.set)
    tasks = [asyncio.create_task(_deliver_forever(registry, stop))]
    if scheduler is not None:
        tasks.append(asyncio.create_task(_schedule_forever(registry, stop, scheduler)))
    try:
        yield
    finally:
        closing.set()
        stop.set()
        restore()
        for task in tasks:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task


def _on_exit_signals(action: Callable[[], None]) -> Callable[[], None]:
    """Run ``action``, then the handler in place (uvicorn's), on SIGINT and SIGTERM; returns what
    puts the handlers back. uvicorn lets open responses finish before it stops, and tells the
    app only afterwards: without this, one open event stream keeps it from ever stopping.
    Signals reach only the main thread, so elsewhere (a server run in a thread) nothing is done."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    Handler = Callable[[int, FrameType | None], Any]
    installed: dict[int, tuple[Handler, Handler]] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue  # no server handler to chain to: the default stops the process anyway

        def handler(signum: int, frame: FrameType | None, previous: Handler = previous) -> None:
            action()
            previous(signum, frame)

        signal.signal(sig, handler)
        installed[sig] = (handler, previous)

    def restore() -> None:
        for sig, (handler, previous) in installed.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, previous)

    return restore


async def _schedule_forever(registry: Registry, stop: threading.Event, interval: float) -> None:
    """Tick a refresh scheduler every ``interval`` seconds; firings and failures go to the log.
    Firings are recorded once in the ledger, so several servers (or workers) may all run one."""
    scheduler = Scheduler(registry)
    problem: str | None = None  # said once, not every tick
    while not stop.is_set():
        try:
            firings = await run_in_threadpool(scheduler.tick)
        except ModelLedgerError as exc:
            if exc.message != problem:
                log.warning("refresh scheduler paused: %s", exc.message)
                problem = exc.message
        except Exception:  # the loop outlives any one tick; the log has the details
            log.exception("refresh scheduler tick failed")
        else:
            problem = None
            for firing in firings:
                if firing.error is not None:
                    log.warning("refresh of %s (%s) failed: %s", firing.source, firing.key, firing.error)
                else:
                    log.info(
                        "refresh of %s (%s): %s %s", firing.source, firing.key, firing.candidate, firing.stage
                    )
        await asyncio.sleep(interval)


async def _deliver_forever(registry: Registry, stop: threading.Event) -> None:
    problem: str | None = None  # said once, not every second
    while not stop.is_set():
        try:
            attempts = await run_in_threadpool(partial(registry.deliver_webhooks, stop=stop))
        except ModelLedgerError as exc:
            if exc.message != problem:
                log.warning("webhook delivery paused: %s", exc.message)
                problem = exc.message
        except Exception:  # the loop outlives any one round; the log has the details
            log.exception("webhook delivery round failed")
        else:
            if problem is not None:
                log.info("webhook delivery resumed")
                problem = None
            for attempt in attempts:
                if not attempt.ok:
                    log.warning(
                        "webhook %s: event %d not delivered (%s), attempt %d; next at %s",
                        attempt.webhook,
                        attempt.seq,
                        attempt.error or f"HTTP {attempt.status_code}",
                        attempt.attempt,
                        attempt.next_retry,
                    )
        await asyncio.sleep(DELIVERY_SECONDS)
