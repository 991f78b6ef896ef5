"""The DynamoDB store's webhooks (settings, not ledger events), their claims and delivery log.

Webhooks are few, so they share one partition (``W``, sorted by id): a delivery round reads
it with one Query and takes the first due webhook with a conditional update, which a second
round claiming at the same moment fails and passes over. An outcome is recorded with the
claim as the condition, in one transaction with its log item (``WD#<id>``).
"""

from __future__ import annotations

import uuid
from typing import Any

from ..._webhooks import Webhook, WebhookClaim, WebhookDelivery, actions_from_text, actions_text
from ...errors import AlreadyExists, Conflict, NotFound
from .base import DynamoBase, Retry, TxItems, seq_key

__all__ = ["DynamoWebhooks"]

_NEW = "attribute_not_exists(pk)"
_UNHELD = "active = :yes AND (attribute_not_exists(claimed_until) OR claimed_until <= :now)"
_ATTEMPTS = 5  # a progress write retried when it met another transaction on the item


class _Lost(Exception):
    """The claim no longer holds the webhook, or it was removed."""


class DynamoWebhooks(DynamoBase):
    """Webhooks and their delivery log."""

    def add_webhook(self, webhook: Webhook, secret: str) -> Webhook:
        row = {
            "pk": "W",
            "sk": webhook.id,
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
        client = self.client
        try:
            client.put_item(
                TableName=self.state_table,
                Item=self.item(row),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except client.exceptions.ConditionalCheckFailedException as exc:  # a repeated random id
            raise AlreadyExists("webhook", webhook.id) from exc
        return webhook

    def remove_webhook(self, webhook_id: str) -> Webhook:
        found = self.get(self.state_table, "W", webhook_id)
        if found is None:
            raise NotFound("webhook", webhook_id, hint="`modelledger webhooks list` shows the ids")
        client = self.client
        try:
            client.update_item(
                TableName=self.state_table,
                Key=self.item({"pk": "W", "sk": webhook_id}),
                UpdateExpression="SET active = :no, secret = :empty REMOVE claimed_by, claimed_until",
                ConditionExpression="active = :yes",
                ExpressionAttributeValues={
                    ":no": self.value(False),
                    ":yes": self.value(True),
                    ":empty": self.value(""),
                },
            )
        except client.exceptions.ConditionalCheckFailedException as exc:
            raise Conflict(f"webhook {webhook_id} was removed already") from exc
        return _webhook({**found, "active": False})

    def list_webhooks(self, *, include_removed: bool) -> list[Webhook]:
        rows = [r for r in self.query(self.state_table, "W") if include_removed or r["active"]]
        return [_webhook(r) for r in sorted(rows, key=lambda r: (r["created_at"], r["sk"]))]

    def webhook_deliveries(self, webhook_id: str, *, limit: int) -> list[WebhookDelivery]:
        if self.get(self.state_table, "W", webhook_id) is None:
            raise NotFound("webhook", webhook_id, hint="`modelledger webhooks list --all` shows the ids")
        rows = self.query(self.state_table, f"WD#{webhook_id}", newest_first=True, limit=limit)
        return [
            WebhookDelivery(
                webhook=webhook_id,
                seq=int(r["seq"]),
                action=r["action"],
                attempt=int(r["attempt"]),
                time=r["time"],
                status_code=r.get("status_code"),
                error=r.get("error"),
                next_retry=r.get("next_retry"),
            )
            for r in rows
        ]

    def claim_webhook(self, *, after: str, now: str, until: str, claim: str) -> WebhookClaim | None:
        head = self.get(self.state_table, "HEAD", "HEAD")
        top = 0 if head is None else int(head["seq"])
        client = self.client
        for r in self.query(self.state_table, "W"):
            due = (
                r["sk"] > after
                and r["active"]
                and int(r["last_seq"]) < top  # caught up: not even claimed
                and (r.get("next_attempt_at") is None or r["next_attempt_at"] <= now)
                and (r.get("claimed_until") is None or r["claimed_until"] <= now)
            )
            if not due:
                continue
            try:
                client.update_item(
                    TableName=self.state_table,
                    Key=self.item({"pk": "W", "sk": r["sk"]}),
                    UpdateExpression="SET claimed_by = :c, claimed_until = :u",
                    ConditionExpression=_UNHELD,
                    ExpressionAttributeValues={
                        ":c": self.value(claim),
                        ":u": self.value(until),
                        ":yes": self.value(True),
                        ":now": self.value(now),
                    },
                )
            except client.exceptions.ConditionalCheckFailedException:
                continue  # another round took it a moment ago: the next one
            return WebhookClaim(webhook=_webhook(r), secret=str(r["secret"]), claim=claim)
        return None

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
        st = self.state_table
        sets = ["last_seq = :s", "failures = :f"]
        removes = []
        values: dict[str, Any] = {
            ":s": self.value(last_seq),
            ":f": self.value(failures),
            ":claim": self.value(claim),
            ":yes": self.value(True),
        }
        if next_attempt_at is None:
            removes.append("next_attempt_at")
        else:
            sets.append("next_attempt_at = :n")
            values[":n"] = self.value(next_attempt_at)
        if held_until is None:
            removes += ["claimed_by", "claimed_until"]
        else:
            sets.append("claimed_until = :u")
            values[":u"] = self.value(held_until)
        expr = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        for _ in range(_ATTEMPTS):
            tx = TxItems()
            tx.add(
                "Update",
                {
                    "TableName": st,
                    "Key": self.item({"pk": "W", "sk": webhook_id}),
                    "UpdateExpression": expr,
                    "ConditionExpression": "claimed_by = :claim AND active = :yes",
                    "ExpressionAttributeValues": values,
                },
                key=(st, "W", webhook_id),
                fail=_Lost(),
            )
            if delivery is not None:
                row = {
                    "pk": f"WD#{webhook_id}",
                    # attempts at one webhook come in seq order, then attempt order
                    "sk": f"{seq_key(delivery.seq)}#{delivery.attempt:06d}#{uuid.uuid4().hex[:8]}",
                    **delivery.to_dict(),
                }
                row.pop("webhook", None)
                tx.add("Put", {"TableName": st, "Item": self.item(row)}, key=(st, row["pk"], row["sk"]))
            try:
                self._send(tx)
            except _Lost:
                return False
            except Retry:
                continue  # met another transaction on the item: try again
            return True
        return False


def _webhook(r: dict[str, Any]) -> Webhook:
    return Webhook(
        id=str(r["sk"]),
        url=str(r["url"]),
        actions=actions_from_text(r.get("actions")),
        created_at=str(r["created_at"]),
        created_by=str(r["created_by"]),
        active=bool(r["active"]),
        last_seq=int(r["last_seq"]),
        failures=int(r["failures"]),
        next_attempt_at=r.get("next_attempt_at"),
    )
