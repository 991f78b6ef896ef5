"""Webhooks: what an admin configures, what each delivery attempt records, and the rules of a
delivery (body, signature, headers, which actions, when to retry). Pure: no I/O here; the
delivery round that posts and records lives in :mod:`modelledger._delivery`.

A webhook receives every ledger event after its cursor (``last_seq``), in ledger order, one
``POST`` per event. The body is the event's ``to_dict()`` as RFC 8785 canonical JSON; the
``X-Modelledger-Signature`` header is ``sha256=`` and the hex HMAC-SHA256 of that body with the
webhook's secret, which is shown once, when the webhook is added. The cursor moves only past an
event the receiver answered with a 2xx (or that the webhook's action filter leaves out), so a
receiver that is down loses nothing: the event is retried after an exponential backoff.

>>> hook_secret = "mlw_example"
>>> body = event_body(LedgerEvent(1, "2026-01-01T00:00:00Z", "a", "x.y", "registry", {}))
>>> check_webhook_signature(hook_secret, body, webhook_signature(hook_secret, body))
True
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from ._canonical import canonicalize
from ._ledger import LedgerEvent
from .errors import InvalidInput

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SECRET_PREFIX",
    "SIGNATURE_HEADER",
    "Webhook",
    "WebhookClaim",
    "WebhookDelivery",
    "actions_from_text",
    "actions_text",
    "check_actions",
    "check_url",
    "check_webhook_id",
    "check_webhook_signature",
    "delivery_headers",
    "event_body",
    "new_claim",
    "new_webhook_id",
    "new_webhook_secret",
    "retry_delay",
    "webhook_signature",
]

SECRET_PREFIX = "mlw_"
SIGNATURE_HEADER = "X-Modelledger-Signature"
EVENT_HEADER = "X-Modelledger-Event"
DELIVERY_HEADER = "X-Modelledger-Delivery"

_WEBHOOK_ID = re.compile(r"[0-9a-f]{16}")
_ACTION_PATTERN = re.compile(r"[a-z0-9_.*]{1,64}")
MAX_URL = 2000


def new_webhook_id() -> str:
    return secrets.token_hex(8)


def new_webhook_secret() -> str:
    """The HMAC key of a new webhook: the prefix and 256 random bits."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def new_claim() -> str:
    """The token one delivery round holds its webhooks with."""
    return secrets.token_hex(8)


def check_webhook_id(value: object) -> str:
    if not isinstance(value, str) or _WEBHOOK_ID.fullmatch(value) is None:
        raise InvalidInput(
            f"invalid webhook id {value!r}: a webhook id is 16 hex digits (`webhooks list` shows them)"
        )
    return value


def check_url(url: object) -> str:
    """An ``http(s)://host...`` URL a webhook may post to (no fragment, no whitespace)."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL or any(c.isspace() for c in url):
        raise InvalidInput(f"a webhook URL must be an http(s) URL of at most {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError as exc:
        raise InvalidInput(f"invalid webhook URL {url!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or parts.fragment:
        raise InvalidInput(
            f"invalid webhook URL {url!r}: give http(s)://host[:port]/path, without a #fragment"
        )
    return url


def check_actions(actions: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """The action filter as given (``version.approved``, ``deployment.*``; None: every event)."""
    if actions is None:
        return None
    items = [actions] if isinstance(actions, str) else list(actions)
    if not items:
        raise InvalidInput("give at least one action pattern, or none at all for every event")
    for item in items:
        if not isinstance(item, str) or _ACTION_PATTERN.fullmatch(item) is None:
            raise InvalidInput(
                f"invalid action pattern {item!r}: an action such as version.approved, "
                "or with * for any characters, such as deployment.*"
            )
    return tuple(dict.fromkeys(items))


def _matches(pattern: str, action: str) -> bool:
    # the same wildcard as Registry.audit(action=...): only * is special
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, action) is not None


def retry_delay(attempt: int, *, base: float, cap: float) -> timedelta:
    """How long to wait after failed attempt number ``attempt`` (1, 2, ...): ``base`` doubled
    with each failure, at most ``cap`` seconds.

    >>> [retry_delay(n, base=1, cap=60).total_seconds() for n in (1, 2, 3, 7, 8)]
    [1.0, 2.0, 4.0, 60.0, 60.0]
    """
    exponent = min(max(attempt - 1, 0), 62)  # large enough to reach any cap, small enough to compute
    return timedelta(seconds=min(cap, base * 2**exponent))


def event_body(event: LedgerEvent) -> bytes:
    """What a webhook receives for ``event``: its ``to_dict()`` as canonical JSON (UTF-8)."""
    return canonicalize(event.to_dict())


def webhook_signature(secret: str, body: bytes) -> str:
    """The ``X-Modelledger-Signature`` value of ``body``: ``sha256=`` and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def check_webhook_signature(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the signature of ``body`` under ``secret`` (for receivers; the
    comparison takes the same time whatever differs).

    >>> check_webhook_signature("mlw_x", b"{}", "sha256=0")
    False
    """
    return header is not None and hmac.compare_digest(webhook_signature(secret, body), header)


def delivery_headers(webhook_id: str, secret: str, event: LedgerEvent, body: bytes) -> dict[str, str]:
    """The headers of one delivery. ``X-Modelledger-Delivery`` is the same on every attempt at
    one event (``<webhook id>-<seq>``), so a receiver can drop a repeat: delivery is at least
    once, since an answer lost on the way back makes the event be sent again."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "modelledger-webhook",
        EVENT_HEADER: event.action,
        DELIVERY_HEADER: f"{webhook_id}-{event.seq}",
        SIGNATURE_HEADER: webhook_signature(secret, body),
    }


@dataclass(frozen=True, slots=True)
class Webhook:
    """A webhook as the registry keeps it, without its secret.

    ``last_seq`` is its cursor: every ledger event up to it was delivered (or left out by
    ``actions``). ``failures`` counts the failed attempts at the event after it, and
    ``next_attempt_at`` is when the next one is due (RFC 3339 UTC text; None: now).
    """

    id: str
    url: str
    actions: tuple[str, ...] | None
    created_at: str
    created_by: str
    active: bool = True
    last_seq: int = 0
    failures: int = 0
    next_attempt_at: str | None = None

    def accepts(self, action: str) -> bool:
        """Whether events of ``action`` are sent (the others are passed over)."""
        return self.actions is None or any(_matches(p, action) for p in self.actions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "actions": None if self.actions is None else list(self.actions),
            "created_at": self.created_at,
            "created_by": self.created_by,
            "active": self.active,
            "last_seq": self.last_seq,
            "failures": self.failures,
            "next_attempt_at": self.next_attempt_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Webhook:
        actions = data.get("actions")
        return cls(
            id=str(data["id"]),
            url=str(data["url"]),
            actions=None if actions is None else tuple(str(a) for a in actions),
            created_at=str(data["created_at"]),
            created_by=str(data["created_by"]),
            active=bool(data.get("active", True)),
            last_seq=int(data.get("last_seq", 0)),
            failures=int(data.get("failures", 0)),
            next_attempt_at=data.get("next_attempt_at"),
        )


def actions_text(actions: tuple[str, ...] | None) -> str | None:
    """The stored form of an action filter (JSON text; None: every action)."""
    return None if actions is None else json.dumps(list(actions))


def actions_from_text(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(json.loads(text))


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One attempt at delivering ledger event ``seq`` to webhook ``webhook``: the HTTP status
    (None when no answer came) or the error, when, and, after a failure, when the next attempt
    is due."""

    webhook: str
    seq: int
    action: str
    attempt: int
    time: str
    status_code: int | None = None
    error: str | None = None
    next_retry: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def to_dict(self) -> dict[str, Any]:
        return {
            "webhook": self.webhook,
            "seq": self.seq,
            "action": self.action,
            "attempt": self.attempt,
            "time": self.time,
            "status_code": self.status_code,
            "error": self.error,
            "next_retry": self.next_retry,
            "ok": self.ok,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WebhookDelivery:
        return cls(
            webhook=str(data["webhook"]),
            seq=int(data["seq"]),
            action=str(data["action"]),
            attempt=int(data["attempt"]),
            time=str(data["time"]),
            status_code=data.get("status_code"),
            error=data.get("error"),
            next_retry=data.get("next_retry"),
        )


@dataclass(frozen=True, slots=True)
class WebhookClaim:
    """A webhook one delivery round holds (``claim`` is the round's token), with its secret."""

    webhook: Webhook
    secret: str
    claim: str
