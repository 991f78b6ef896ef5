"""The SQL store's API tokens: digests in ``api_tokens``, each change a governed write."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..._lifecycle import EventDraft
from ..._members import Roster
from ..._tokens import ApiToken
from ...errors import AlreadyExists, Conflict, NotFound
from ..protocols import Signer
from . import tables as t
from .ledger import SqlLedger
from .statements import Q_MEMBER_LAST

__all__ = ["SqlTokens"]


class SqlTokens(SqlLedger):
    """API tokens. The row and its ledger event commit together or not at all: a token whose
    creation the roster refuses (the actor is no admin) is never stored."""

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
        try:
            with self._write() as conn:
                head = self._lock_head(conn)
                (event,) = self._append(conn, head, [draft], actor=actor, signer=signer)
                made = ApiToken(
                    id=token_id,
                    member=member,
                    created_at=event.time,
                    created_by=event.actor,
                    expires_at=expires_at,
                )
                conn.execute(t.api_tokens.insert().values(token_hash=digest, **made.to_dict()))
        except sa.exc.IntegrityError as exc:  # a repeated random id or digest: practically never
            raise AlreadyExists("token", token_id) from exc
        return made

    def revoke_token(self, token_id: str, *, actor: str, signer: Signer, reason: str | None) -> ApiToken:
        c = t.api_tokens.c
        with self._write() as conn:
            head = self._lock_head(conn)
            found = self._token(conn, token_id)
            if found.revoked_at is not None:
                raise Conflict(f"token {token_id} was revoked already, at {found.revoked_at}")
            data = {"member": found.member, "token_id": token_id}
            draft = EventDraft("token.revoked", f"members:/{found.member}", data, reason)
            (event,) = self._append(conn, head, [draft], actor=actor, signer=signer)
            conn.execute(t.api_tokens.update().where(c.id == token_id).values(revoked_at=event.time))
        return replace(found, revoked_at=event.time)

    def _token(self, conn: Connection, token_id: str) -> ApiToken:
        row = conn.execute(sa.select(t.api_tokens).where(t.api_tokens.c.id == token_id)).first()
        if row is None:
            raise NotFound("token", token_id, hint="`modelledger tokens list` shows the ids")
        return _token(row)

    def token_holder(self, digest: str) -> tuple[ApiToken, Roster] | None:
        # every authenticated request runs this: one prebuilt statement on the driver's fast
        # path reads the token and whether the cached roster is still current
        with self._read() as conn:
            row = self.driver.first(conn, _Q_TOKEN_BY_HASH, {"digest": digest})
            if row is None:
                return None
            token_id, member, created_at, created_by, expires_at, revoked_at, member_last = row
            roster = self._roster(conn, member_last=member_last or 0).copy()
        return ApiToken(token_id, member, created_at, created_by, expires_at, revoked_at), roster

    def list_tokens(self, *, member: str | None) -> list[ApiToken]:
        c = t.api_tokens.c
        q = sa.select(t.api_tokens).order_by(c.created_at, c.id)
        if member is not None:
            q = q.where(c.member == member)
        with self._read() as conn:
            rows = conn.execute(q).all()
        return [_token(r) for r in rows]


_TOKEN_COLUMNS = ("id", "member", "created_at", "created_by", "expires_at", "revoked_at")
_Q_TOKEN_BY_HASH = sa.select(
    *(t.api_tokens.c[name] for name in _TOKEN_COLUMNS), Q_MEMBER_LAST.scalar_subquery()
).where(t.api_tokens.c.token_hash == sa.bindparam("digest"))


def _token(row: Any) -> ApiToken:
    return ApiToken(
        id=row.id,
        member=row.member,
        created_at=row.created_at,
        created_by=row.created_by,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )
