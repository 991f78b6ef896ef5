"""The SQL store's webhooks: their rows (settings, not ledger events), the claims delivery
rounds hold them by, and the log of delivery attempts.

A round claims one webhook at a time: on PostgreSQL the due row is read with ``SELECT ... FOR
UPDATE SKIP LOCKED``, so a second server process claiming at the same moment passes over it
instead of waiting, and the claim (``claimed_by``, ``claimed_until``) is written in the same
short transaction. On SQLite the write lock serialises claims. No transaction stays open while
a round posts: each outcome is a short write that holds only while the claim does.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..._webhooks import Webhook, WebhookClaim, WebhookDelivery, actions_from_text, actions_text
from ...errors import AlreadyExists, Conflict, NotFound
from . import tables as t
from .base import SqlBase

__all__ = ["SqlWebhooks"]

_W = t.webhooks.c
_D = t.webhook_deliveries.c


_HEAD = sa.select(t.ledger_head.c.seq).where(t.ledger_head.c.id == 1).scalar_subquery()


def _due(now: str, after: str) -> Any:
    """Active webhooks above id ``after`` that are behind the ledger's head, whose next attempt
    is due and that no round holds (a webhook that is caught up is not even claimed)."""
    return sa.and_(
        _W.active.is_(True),
        _W.id > after,
        _W.last_seq < _HEAD,
        sa.or_(_W.next_attempt_at.is_(None), _W.next_attempt_at <= now),
        sa.or_(_W.claimed_until.is_(None), _W.claimed_until <= now),
    )


class SqlWebhooks(SqlBase):
    """Webhooks and their delivery log."""

    def add_webhook(self, webhook: Webhook, secret: str) -> Webhook:
        values = {
            "id": webhook.id,
            "url": webhook.url,
            "secret": secret,
            "actions": actions_text(webhook.actions),
            "created_at": webhook.created_at,
            "created_by": webhook.created_by,
            "active": webhook.active,
            "last_seq": webhook.last_seq,
            "failures": webhook.failures,
            "next_attempt_at": webhook.next_attempt_at,
        }
        try:
            with self._write() as conn:
                conn.execute(t.webhooks.insert().values(**values))
        except sa.exc.IntegrityError as exc:  # a repeated random id: practically never
            raise AlreadyExists("webhook", webhook.id) from exc
        return webhook

    def remove_webhook(self, webhook_id: str) -> Webhook:
        with self._write() as conn:
            row = conn.execute(sa.select(t.webhooks).where(_W.id == webhook_id)).first()
            if row is None:
                raise NotFound("webhook", webhook_id, hint="`modelledger webhooks list` shows the ids")
            if not row.active:
                raise Conflict(f"webhook {webhook_id} was removed already")
            conn.execute(
                t.webhooks.update()
                .where(_W.id == webhook_id)
                .values(active=False, secret="", claimed_by=None, claimed_until=None)
            )
        return _webhook(row, active=False)

    def list_webhooks(self, *, include_removed: bool) -> list[Webhook]:
        q = sa.select(t.webhooks).order_by(_W.created_at, _W.id)
        if not include_removed:
            q = q.where(_W.active.is_(True))
        with self._read() as conn:
            rows = conn.execute(q).all()
        return [_webhook(r) for r in rows]

    def webhook_deliveries(self, webhook_id: str, *, limit: int) -> list[WebhookDelivery]:
        with self._read() as conn:
            if conn.execute(sa.select(_W.id).where(_W.id == webhook_id)).first() is None:
                raise NotFound("webhook", webhook_id, hint="`modelledger webhooks list --all` shows the ids")
            rows = conn.execute(
                sa.select(t.webhook_deliveries)
                .where(_D.webhook_id == webhook_id)
                .order_by(_D.id.desc())
                .limit(limit)
            ).all()
        return [
            WebhookDelivery(
                webhook=r.webhook_id,
                seq=int(r.seq),
                action=r.action,
                attempt=int(r.attempt),
                time=r.time,
                status_code=r.status_code,
                error=r.error,
                next_retry=r.next_retry,
            )
            for r in rows
        ]

    def claim_webhook(self, *, after: str, now: str, until: str, claim: str) -> WebhookClaim | None:
        due = _due(now, after)
        # A plain read first: a round with nothing due (the usual case, every second) writes
        # nothing, so a read-only or busy SQLite file is not locked for it.
        with self._read() as conn:
            if conn.execute(sa.select(_W.id).where(due).limit(1)).first() is None:
                return None
        with self._write() as conn:
            row = conn.execute(
                sa.select(t.webhooks).where(due).order_by(_W.id).limit(1).with_for_update(skip_locked=True)
            ).first()
            if row is None:
                return None
            conn.execute(
                t.webhooks.update().where(_W.id == row.id).values(claimed_by=claim, claimed_until=until)
            )
        return WebhookClaim(webhook=_webhook(row), secret=row.secret, claim=claim)

    def webhook_progress(
        self,
        webhook_id: str,
        claim: str,
        *,
        last_seq: int,
        failures: int,
        next_attempt_at: str | None,
        delivery: WebhookDelivery | None,
        held_until: str | None,
    ) -> bool:
        with self._write() as conn:
            done = conn.execute(
                t.webhooks.update()
                .where(_W.id == webhook_id, _W.claimed_by == claim, _W.active.is_(True))
                .values(
                    last_seq=last_seq,
                    failures=failures,
                    next_attempt_at=next_attempt_at,
                    claimed_by=claim if held_until is not None else None,
                    claimed_until=held_until,
                )
            )
            if done.rowcount != 1:
                return False
            if delivery is not None:
                conn.execute(
                    t.webhook_deliveries.insert().values(
                        webhook_id=delivery.webhook,
                        seq=delivery.seq,
                        action=delivery.action,
                        attempt=delivery.attempt,
                        status_code=delivery.status_code,
                        error=delivery.error,
                        time=delivery.time,
                        next_retry=delivery.next_retry,
                    )
                )
        return True


def _webhook(row: Any, *, active: bool | None = None) -> Webhook:
    return Webhook(
        id=row.id,
        url=row.url,
        actions=actions_from_text(row.actions),
        created_at=row.created_at,
        created_by=row.created_by,
        active=bool(row.active) if active is None else active,
        last_seq=int(row.last_seq),
        failures=int(row.failures),
        next_attempt_at=row.next_attempt_at,
    )
