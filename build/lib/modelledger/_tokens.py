"""API tokens: bearer secrets that stand for an enrolled member over HTTP.

A token is ``mlt_`` followed by 43 URL-safe characters (32 random bytes). It is shown once,
when it is made; the registry keeps only its SHA-256 (:func:`token_digest`), so a copy of the
database cannot be replayed as a token. Each token has a public id (16 hex digits) by which
it is listed and revoked; ``token.created`` and ``token.revoked`` ledger events name that id
and the member, never the digest.

>>> secret = new_token()
>>> secret.startswith(TOKEN_PREFIX) and is_token(secret)
True
>>> len(token_digest(secret))
64
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidInput

__all__ = [
    "TOKEN_PREFIX",
    "ApiToken",
    "check_token_id",
    "is_token",
    "new_token",
    "new_token_id",
    "token_digest",
]

TOKEN_PREFIX = "mlt_"
_TOKEN = re.compile(r"mlt_[A-Za-z0-9_-]{43}")
_TOKEN_ID = re.compile(r"[0-9a-f]{16}")


def new_token() -> str:
    """A new token secret: the prefix (so scanners and people recognise it) and 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_token_id() -> str:
    return secrets.token_hex(8)


def is_token(text: object) -> bool:
    """Whether ``text`` has the form of a token (it may still be unknown, expired or revoked)."""
    return isinstance(text, str) and _TOKEN.fullmatch(text) is not None


def token_digest(text: str) -> str:
    """The SHA-256 hex of a token: what the registry stores and looks tokens up by. The secret
    holds 256 random bits, so a plain hash is enough: there is nothing to guess."""
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def check_token_id(value: object) -> str:
    if not isinstance(value, str) or _TOKEN_ID.fullmatch(value) is None:
        raise InvalidInput(
            f"invalid token id {value!r}: a token id is 16 hex digits (`tokens list` shows them)"
        )
    return value


@dataclass(frozen=True, slots=True)
class ApiToken:
    """What the registry knows of a token: never the secret, only its id, member and times
    (RFC 3339 UTC text, comparable with the ledger's)."""

    id: str
    member: str
    created_at: str
    created_by: str
    expires_at: str | None = None
    revoked_at: str | None = None

    def problem(self, at: str) -> str | None:
        """Why the token does not authenticate at time ``at``, or None when it does."""
        if self.revoked_at is not None:
            return f"token {self.id} was revoked at {self.revoked_at}"
        if self.expires_at is not None and at >= self.expires_at:
            return f"token {self.id} expired at {self.expires_at}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "member": self.member,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ApiToken:
        return cls(
            id=str(data["id"]),
            member=str(data["member"]),
            created_at=str(data["created_at"]),
            created_by=str(data.get("created_by", "")),
            expires_at=data.get("expires_at"),
            revoked_at=data.get("revoked_at"),
        )
