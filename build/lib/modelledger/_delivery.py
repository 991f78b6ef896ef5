"""One webhook delivery round: claim each due webhook, post the ledger events after its cursor
in order, and record every attempt; through the store ports only.

The rules that keep a receiver from losing anything:

* Events go out in ledger order, one at a time, and the cursor moves past an event only once
  the receiver answered it with a 2xx (or the webhook's action filter leaves it out).
* A failed attempt (any other status, no answer, a timeout) is recorded with the time of the
  next attempt (:func:`~modelledger._webhooks.retry_delay`: doubled each failure, capped) and
  ends the round for that webhook; the same event is retried first next time.
* A round holds a webhook by a claim that lapses (``lease``) if the process stops, and writes
  its progress only while it holds it, so two rounds (two server processes) never deliver one
  webhook at once. Delivery is at least once: a 2xx that is lost on its way back, or a process
  stopped after a post and before its write, makes the event be sent again (with the same
  ``X-Modelledger-Delivery``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Protocol

from ._ledger import LedgerEvent
from ._time import now as clock
from ._time import to_text
from ._webhooks import WebhookClaim, WebhookDelivery, delivery_headers, event_body, new_claim, retry_delay
from .stores.protocols import LedgerStore, WebhookStore

__all__ = ["Send", "deliver_claimed", "deliver_round", "post"]

Send = Callable[[str, bytes, Mapping[str, str], float], tuple[int | None, str | None]]
"""Posts ``body`` with ``headers`` to a URL within a timeout: (HTTP status, None), or (None, the
error) when no answer came. :func:`post` is the real one."""


class _Store(LedgerStore, WebhookStore, Protocol):
    """What a round needs of the metadata store: the ledger to read, the webhooks to hold."""


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> tuple[int | None, str | None]:
    """POST ``body`` to ``url``; a redirect is an answer (3xx), not followed: it would turn the
    POST into a GET and drop the signed body."""
    import urllib.error  # only a delivery needs it
    import urllib.request  # only a delivery needs it

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with opener.open(request, timeout=timeout) as response:
            response.read(65536)  # let the receiver finish its answer; its content is not kept
            return int(response.status), None
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code), None
    except urllib.error.URLError as exc:
        return None, _describe(exc.reason)
    except (OSError, ValueError) as exc:  # a timeout while reading, a reset, a bad header
        return None, _describe(exc)


def _describe(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    text = str(reason) or type(reason).__name__
    return text[:500]


def deliver_round(
    store: _Store,
    *,
    send: Send = post,
    timeout: float,
    batch: int,
    retry_base: float,
    retry_max: float,
    stop: threading.Event | None = None,
    now: Callable[[], datetime] = clock,
) -> list[WebhookDelivery]:
    """Claim every due webhook in turn and deliver its pending events (at most ``batch`` each);
    returns the attempts made, in order. ``stop`` ends the round after the current post."""
    lease = _lease(timeout)
    claim = new_claim()
    done: list[WebhookDelivery] = []
    after = ""
    while stop is None or not stop.is_set():
        start = now()
        held = store.claim_webhook(after=after, now=to_text(start), until=to_text(start + lease), claim=claim)
        if held is None:
            return done
        after = held.webhook.id
        done.extend(
            deliver_claimed(
                store,
                held,
                send=send,
                timeout=timeout,
                batch=batch,
                retry_base=retry_base,
                retry_max=retry_max,
                stop=stop,
                now=now,
            )
        )
    return done


def _lease(timeout: float) -> timedelta:
    """How long a claim holds without news: several posts' worth, so only a stopped process
    loses it (each recorded outcome renews it)."""
    return timedelta(seconds=max(60.0, 6 * timeout))


def deliver_claimed(
    store: _Store,
    held: WebhookClaim,
    *,
    send: Send,
    timeout: float,
    batch: int,
    retry_base: float,
    retry_max: float,
    stop: threading.Event | None = None,
    now: Callable[[], datetime] = clock,
) -> list[WebhookDelivery]:
    """Deliver one held webhook's pending events in order until one fails, ``batch`` are done or
    ``stop`` is set; then let the webhook go."""
    hook = held.webhook
    lease = _lease(timeout)
    cursor, failures = hook.last_seq, hook.failures
    done: list[WebhookDelivery] = []
    pending = _pending(store, cursor, batch)
    try:
        for event in pending:
            if stop is not None and stop.is_set():
                break
            if not hook.accepts(event.action):
                cursor = event.seq  # passed over; written with the next outcome or at the end
                continue
            body = event_body(event)
            status, error = send(hook.url, body, delivery_headers(hook.id, held.secret, event, body), timeout)
            at = now()
            attempt = failures + 1
            if status is not None and 200 <= status < 300:
                delivery = WebhookDelivery(hook.id, event.seq, event.action, attempt, to_text(at), status)
                kept = store.webhook_progress(
                    hook.id,
                    held.claim,
                    last_seq=event.seq,
                    failures=0,
                    next_attempt_at=None,
                    delivery=delivery,
                    held_until=to_text(at + lease),
                )
                if not kept:  # removed meanwhile, or the claim lapsed and another round took it
                    return done
                done.append(delivery)
                cursor, failures = event.seq, 0
                continue
            retry_at = to_text(at + retry_delay(attempt, base=retry_base, cap=retry_max))
            delivery = WebhookDelivery(
                hook.id, event.seq, event.action, attempt, to_text(at), status, error, retry_at
            )
            if store.webhook_progress(
                hook.id,
                held.claim,
                last_seq=cursor,
                failures=attempt,
                next_attempt_at=retry_at,
                delivery=delivery,
                held_until=None,
            ):
                done.append(delivery)
            return done
    except BaseException:
        # the original error says more than a failure to let go would; the claim lapses anyway
        with contextlib.suppress(Exception):
            _let_go(store, held, cursor, failures)
        raise
    _let_go(store, held, cursor, failures)
    return done


def _pending(store: _Store, cursor: int, batch: int) -> list[LedgerEvent]:
    rows = store.audit(
        subjects=[],
        subject_prefixes=[],
        actor=None,
        action=None,
        since=None,
        until=None,
        after=cursor,
        limit=batch,
    )
    return [event for event, _hash in rows]


def _let_go(store: _Store, held: WebhookClaim, cursor: int, failures: int) -> None:
    store.webhook_progress(
        held.webhook.id,
        held.claim,
        last_seq=cursor,
        failures=failures,
        next_attempt_at=None,
        delivery=None,
        held_until=None,
    )
