"""The DynamoDB store's API tokens: each change a governed write, its items in the same
transaction as its ledger event.

``TOK#<digest>`` holds the token (an authenticated request is one GetItem), ``TID#<id>``
finds it by id, and ``TM#<member>`` pointers list a member's tokens in creation order.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..._lifecycle import EventDraft
from ..._members import Roster
from ..._tokens import ApiToken
from ...errors import AlreadyExists, Conflict, NotFound
from ..protocols import Signer
from .base import TxItems
from .ledger import DynamoLedger

__all__ = ["DynamoTokens"]


class DynamoTokens(DynamoLedger):
    """API tokens. The items and the ledger event commit together or not at all."""

    def create_token(
        self,
        token_id: str,
        member: str,
        digest: str,
        expires_at: str | None,
        *,
        actor: str,
        signer: Signer,
        reason: str | None,
    ) -> ApiToken:
        data: dict[str, Any] = {"member": member, "token_id": token_id, "expires_at": expires_at}
        draft = EventDraft("token.created", f"members:/{member}", data, reason)
        st = self.state_table

        def attempt(head: tuple[int, str]) -> tuple[TxItems, ApiToken]:
            tx = TxItems()
            (event,) = self._append(tx, head, [draft], actor=actor, signer=signer)
            made = ApiToken(
                id=token_id,
                member=member,
                created_at=event.time,
                created_by=event.actor,
                expires_at=expires_at,
            )
            order = f"{made.created_at}#{token_id}"
            taken = AlreadyExists("token", token_id)  # a repeated random id or digest: practically never
            row = {"pk": f"TOK#{digest}", "sk": "TOK", **made.to_dict(), "gk": "T", "nf": order}
            self._put(tx, st, row, fail=taken)
            self._put(tx, st, {"pk": f"TID#{token_id}", "sk": "TID", "digest": digest}, fail=taken)
            self._put(tx, st, {"pk": f"TM#{member}", "sk": order, "digest": digest})
            return tx, made

        made: ApiToken = self._governed(attempt)
        return made

    def revoke_token(self, token_id: str, *, actor: str, signer: Signer, reason: str | None) -> ApiToken:
        st = self.state_table

        def attempt(head: tuple[int, str]) -> tuple[TxItems, ApiToken]:
            pointer = self.get(st, f"TID#{token_id}", "TID")
            item = None if pointer is None else self.get(st, f"TOK#{pointer['digest']}", "TOK")
            if pointer is None or item is None:
                raise NotFound("token", token_id, hint="`modelledger tokens list` shows the ids")
            found = _token(item)
            if found.revoked_at is not None:
                raise Conflict(f"token {token_id} was revoked already, at {found.revoked_at}")
            tx = TxItems()
            data = {"member": found.member, "token_id": token_id}
            draft = EventDraft("token.revoked", f"members:/{found.member}", data, reason)
            (event,) = self._append(tx, head, [draft], actor=actor, signer=signer)
            key = f"TOK#{pointer['digest']}"
            tx.add(
                "Update",
                {
                    "TableName": st,
                    "Key": self.item({"pk": key, "sk": "TOK"}),
                    "UpdateExpression": "SET revoked_at = :t",
                    # a concurrent revocation moved the head too: this write is retried and then
                    # finds the token revoked
                    "ConditionExpression": "attribute_not_exists(revoked_at)",
                    "ExpressionAttributeValues": {":t": self.value(event.time)},
                },
                key=(st, key, "TOK"),
            )
            return tx, replace(found, revoked_at=event.time)

        revoked: ApiToken = self._governed(attempt)
        return revoked

    def token_holder(self, digest: str) -> tuple[ApiToken, Roster] | None:
        item = self.get(self.state_table, f"TOK#{digest}", "TOK")
        if item is None:
            return None
        return _token(item), self._roster().copy()

    def list_tokens(self, *, member: str | None) -> list[ApiToken]:
        """Every token (of ``member``: its pointers, strongly consistent), oldest first."""
        if member is None:
            rows = self.query(self.state_table, "T", index="listing", key_name="gk", sort_name="nf")
            return [_token(r) for r in rows]
        digests = [str(p["digest"]) for p in self.query(self.state_table, f"TM#{member}")]
        found = self.batch_get(self.state_table, [(f"TOK#{d}", "TOK") for d in digests])
        return [_token(found[(f"TOK#{d}", "TOK")]) for d in digests if (f"TOK#{d}", "TOK") in found]


def _token(item: dict[str, Any]) -> ApiToken:
    return ApiToken(
        id=str(item["id"]),
        member=str(item["member"]),
        created_at=str(item["created_at"]),
        created_by=str(item["created_by"]),
        expires_at=item.get("expires_at"),
        revoked_at=item.get("revoked_at"),
    )
