"""Following the ledger: events after a position, who may see which event, and webhooks that
receive every new event (the ``EventVerbs`` mixin of :class:`~modelledger.Registry`).

**Who sees an event.** A member whose roles cover every model (``Member.unscoped``) sees every
event. A member scoped to some models (``credit-*``) sees only the events about a model they
may view: the models an event is about are its ``data.model`` (and ``data.new_name`` for a
rename) and the model its subject names (``models:/x/3``, ``models:/x@prod``, ``models:/x``,
``predictions:/x/3``). Events about no model (members, tokens, the policy, data sets, the
registry) are for unscoped members only. This is the rule of ``/audit``, which needs roles on
every model unless it is asked about one model.

**Webhooks** are registry settings, not ledger events: adding and removing one changes no
governed state, so it is not signed into the chain. Only an admin of every model may do it,
checked as a governed write checks its signer (:meth:`EventVerbs.add_webhook`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._delivery import deliver_round
from ._ledger import LedgerEvent
from ._members import Member
from ._paging import MAX_PAGE, check_limit
from ._time import now_text
from ._webhooks import (
    Webhook,
    WebhookDelivery,
    check_actions,
    check_url,
    check_webhook_id,
    new_webhook_id,
    new_webhook_secret,
)
from .errors import InvalidInput, PermissionDenied
from .stores.protocols import MetadataStore

if TYPE_CHECKING:
    from ._signing import Identity

__all__ = ["EventVerbs", "can_view_event", "event_models"]

_SUBJECT_MODEL = re.compile(r"(?:models|predictions):/([^/@]+)")


def event_models(event: LedgerEvent) -> tuple[str, ...]:
    """The models ``event`` is about (none for members, tokens, the policy, data sets).

    >>> moved = LedgerEvent(7, "2026-01-01T00:00:00Z", "bob", "alias.set", "models:/credit@champion", {})
    >>> event_models(moved)
    ('credit',)
    """
    names: list[str] = []
    for key in ("model", "new_name"):
        value = event.data.get(key)
        if isinstance(value, str) and value:
            names.append(value)
    found = _SUBJECT_MODEL.match(event.subject)
    if found is not None:
        names.append(found.group(1))
    return tuple(dict.fromkeys(names))


def can_view_event(member: Member, event: LedgerEvent) -> bool:
    """Whether ``member`` may see ``event``: every event when their roles cover every model,
    else only events about a model they may view (see the module's documentation).

    >>> can_view_event(scoped_to_credit, approval_of_fraud_model)  # doctest: +SKIP
    False
    """
    if member.unscoped:
        return member.can_view(None)
    return any(member.can_view(name) for name in event_models(event))


class EventVerbs:
    """Mixed into :class:`~modelledger.Registry`; see its documentation."""

    _meta: MetadataStore

    if TYPE_CHECKING:  # provided by Registry

        def _ready(self, *, write: bool = False) -> None: ...
        def _identity(self) -> Identity: ...
        @property
        def actor(self) -> str: ...

    # ------------------------------------------------------------------ following the ledger

    def events_after(self, seq: int, *, limit: int = 100) -> list[LedgerEvent]:
        """The ledger events after ``seq``, oldest first, at most ``limit`` (1-1000): what
        follows the ledger, as the server's event stream and webhooks do. Pass the last
        event's ``seq`` to get the next ones; ``seq=0`` starts at the first event.

        >>> events = registry.events_after(0, limit=500)  # doctest: +SKIP
        >>> more = registry.events_after(events[-1].seq)  # doctest: +SKIP
        """
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise InvalidInput(f"seq must be a whole number, 0 or more, got {seq!r}")
        check_limit(limit)
        self._ready()
        rows = self._meta.audit(
            subjects=[],
            subject_prefixes=[],
            actor=None,
            action=None,
            since=None,
            until=None,
            after=seq,
            limit=limit,
        )
        return [event for event, _hash in rows]

    def last_event_seq(self) -> int:
        """The ``seq`` of the newest ledger event (0 when there is none): where to start
        following only what happens from now on.

        >>> registry.events_after(registry.last_event_seq())  # doctest: +SKIP
        []
        """
        self._ready()
        return self._meta.ledger_head()[0]

    # ------------------------------------------------------------------ webhooks

    def add_webhook(
        self, url: str, *, actions: str | Sequence[str] | None = None, after: int | None = None
    ) -> tuple[Webhook, str]:
        """Post every new ledger event to ``url`` (admin of every model). Returns the webhook and
        its secret, which is shown this once: the receiver checks each body's
        ``X-Modelledger-Signature`` (``sha256=`` and the hex HMAC-SHA256 of the body under it;
        :func:`~modelledger.check_webhook_signature`). ``actions`` keeps only some events
        (``version.approved``, ``deployment.*``); ``after`` is the ledger position to start
        after (default: the newest event now, so only what happens from now on is sent; 0: the
        whole ledger).

        The server delivers (``modelledger server`` runs a delivery round every second), or
        :meth:`deliver_webhooks` / ``modelledger webhooks deliver`` does one round.

        >>> url = "https://ci.example/hooks/ml"
        >>> hook, secret = registry.add_webhook(url, actions=["deployment.*"])  # doctest: +SKIP
        """
        checked_url = check_url(url)
        checked_actions = check_actions(actions)
        if after is not None and (isinstance(after, bool) or not isinstance(after, int) or after < 0):
            raise InvalidInput(f"after must be a ledger seq, 0 or more, got {after!r}")
        admin = self._admin_of_registry("add a webhook")
        head = self._meta.ledger_head()[0]
        if after is not None and after > head:
            raise InvalidInput(f"after={after} is past the ledger's newest event ({head})")
        start = head if after is None else after
        secret = new_webhook_secret()
        hook = Webhook(
            id=new_webhook_id(),
            url=checked_url,
            actions=checked_actions,
            created_at=now_text(),
            created_by=admin.name,
            last_seq=start,
        )
        return self._meta.add_webhook(hook, secret), secret

    def list_webhooks(self, *, include_removed: bool = False) -> list[Webhook]:
        """Every webhook, oldest first, with its cursor and retry state (never its secret).

        >>> [(h.id, h.url, h.last_seq) for h in registry.list_webhooks()]  # doctest: +SKIP
        """
        self._ready()
        return self._meta.list_webhooks(include_removed=include_removed)

    def remove_webhook(self, webhook_id: str) -> Webhook:
        """Stop a webhook (admin of every model): nothing more is sent to it and its secret is
        forgotten; its delivery log stays.

        >>> registry.remove_webhook("3f2a9c0d4e5b6a71")  # doctest: +SKIP
        """
        check_webhook_id(webhook_id)
        self._admin_of_registry("remove a webhook")
        return self._meta.remove_webhook(webhook_id)

    def webhook_deliveries(self, webhook_id: str, *, limit: int = 100) -> list[WebhookDelivery]:
        """The webhook's last ``limit`` delivery attempts, newest first: each with the event,
        the attempt number, the HTTP status or the error, and after a failure when the next
        attempt is due.

        >>> [d.ok for d in registry.webhook_deliveries("3f2a9c0d4e5b6a71", limit=10)]  # doctest: +SKIP
        """
        check_webhook_id(webhook_id)
        check_limit(limit)
        self._ready()
        return self._meta.webhook_deliveries(webhook_id, limit=limit)

    def deliver_webhooks(
        self,
        *,
        timeout: float = 10.0,
        batch: int = 100,
        retry_base: float = 1.0,
        retry_max: float = 900.0,
        stop: threading.Event | None = None,
    ) -> list[WebhookDelivery]:
        """One delivery round: for each active webhook whose next attempt is due, POST the
        events after its cursor in ledger order (at most ``batch``), each within ``timeout``
        seconds. A 2xx moves the cursor; anything else is recorded and ends that webhook's round
        until its next attempt, ``retry_base`` seconds doubled with each failure, at most
        ``retry_max``. So a receiver that is down loses nothing. Returns the attempts made;
        ``stop``, once set, ends the round after the current post.

        Processes may run rounds at the same time (several servers over one PostgreSQL): a
        webhook is delivered by one of them at a time.

        >>> [(d.seq, d.status_code) for d in registry.deliver_webhooks()]  # doctest: +SKIP
        """
        for name, value in (("timeout", timeout), ("retry_base", retry_base), ("retry_max", retry_max)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InvalidInput(f"{name} must be a positive number of seconds, got {value!r}")
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_PAGE:
            raise InvalidInput(f"batch must be a whole number from 1 to {MAX_PAGE}, got {batch!r}")
        self._ready()
        return deliver_round(
            self._meta,
            timeout=float(timeout),
            batch=batch,
            retry_base=float(retry_base),
            retry_max=float(retry_max),
            stop=stop,
        )

    def _admin_of_registry(self, what: str) -> Member:
        """The member this process proves to be (by holding its key), when an admin of every
        model: the check a governed write's signer passes (``create_token``), for settings
        that are not ledger events."""
        self._ready()
        kid = self._identity().key_id  # loading the private key is the proof of holding it
        roster = self._meta.roster()
        key, owner = roster.key(kid), roster.owner(kid)
        if key is None or owner is None:
            raise PermissionDenied(f"{self.actor} may not {what}: key {kid} is not enrolled in this registry")
        if key.revoked_seq is not None:
            raise PermissionDenied(
                f"{self.actor} may not {what}: key {kid} of {owner.name} was revoked "
                f"at ledger event {key.revoked_seq}"
            )
        if owner.name != self.actor:
            raise PermissionDenied(
                f"{self.actor} may not {what}: you hold no key enrolled for {self.actor} "
                f"(key {kid} is {owner.name}'s)"
            )
        if not owner.has_role("admin", None):
            raise PermissionDenied(
                f"{owner.name} may not {what}: it needs the admin role on every model "
                f"(roles: {', '.join(owner.roles)} on {', '.join(owner.models)})"
            )
        return owner
