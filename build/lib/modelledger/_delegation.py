"""Writes a server makes on a member's behalf, and the requests members sign for them.

A registry server holds a key of its own, enrolled to a member with the ``gateway`` role. It
signs the checkpoint of each write it makes for an authenticated caller, and every event of
that write records, under ``data["via"]``, who the server acted for and how that caller proved
who they are:

* ``method: "key"``: the caller (the CLI or the Python client) signed the HTTP request with
  their own enrolled key. ``request`` is what they signed (member, method, path, body digest,
  time, nonce) and ``signature`` their Ed25519 signature, so anyone can check, now and later,
  that the member asked for this write (:func:`request_problem`);
* ``method: "token"`` or ``"oidc"``: a browser user, who cannot hold a key, authenticated with an
  API token or an OIDC bearer token; the server attests it.

:func:`modelledger._members.delegation_problem` is the rule the store applies before
appending such an event and ``verify`` applies after: the signing key is a gateway's, the
event's actor is an enrolled member holding the role the action needs, and a key-signed request
is valid, recent and about the event's model. ``verify`` counts the two kinds apart
(``VerifyReport.delegated``).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._keys import key_id as key_id_of
from ._keys import sign
from ._members import request_bytes
from ._time import now_text
from .errors import InvalidInput

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ._ledger import Checkpoint
    from .stores.protocols import Signer

__all__ = ["SIGNATURE_HEADER", "DelegatedSigner", "parse_signature_header", "sign_request"]

SIGNATURE_HEADER = "X-Modelledger-Signature"


def sign_request(key: Ed25519PrivateKey, *, member: str, method: str, path: str, body_sha256: str) -> str:
    """The :data:`SIGNATURE_HEADER` value with which ``member`` asks for ``method path`` (the
    path as sent, with its query) with a body of that sha256: ``keyid=..., time=..., nonce=...,
    sig=...`` (the signed fields that are not in the HTTP request itself)."""
    request = {
        "member": member,
        "method": method.upper(),
        "path": path,
        "body_sha256": body_sha256,
        "time": now_text(),
        "nonce": secrets.token_hex(12),
    }
    signature = base64.b64encode(sign(key, request_bytes(request))).decode("ascii")
    kid = key_id_of(key)
    return f"keyid={kid}, time={request['time']}, nonce={request['nonce']}, sig={signature}"


def parse_signature_header(
    header: str, *, member: str, method: str, path: str, body_sha256: str
) -> tuple[dict[str, Any], str, str]:
    """(signed request, key id, base64 signature) of a :data:`SIGNATURE_HEADER` sent for this
    HTTP request; the request is rebuilt from what arrived, so a changed body, path or method
    no longer matches the signature."""
    fields: dict[str, str] = {}
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise InvalidInput(f"{SIGNATURE_HEADER} must be 'keyid=..., time=..., nonce=..., sig=...'")
        fields[name.strip()] = value.strip()
    missing = {"keyid", "time", "nonce", "sig"} - set(fields)
    if missing:
        raise InvalidInput(f"{SIGNATURE_HEADER} lacks {', '.join(sorted(missing))}")
    request = {
        "member": member,
        "method": method.upper(),
        "path": path,
        "body_sha256": body_sha256,
        "time": fields["time"],
        "nonce": fields["nonce"],
    }
    return request, fields["keyid"], fields["sig"]


@dataclass(frozen=True)
class DelegatedSigner:
    """The server's signer, for one write on behalf of a member: it signs checkpoints with the
    server's key and hands the store ``via``, which every event of the write records."""

    signer: Signer
    via: Mapping[str, Any]

    @property
    def key_id(self) -> str:
        return self.signer.key_id

    def __call__(self, seq: int, head: bytes, time: str, /) -> Checkpoint:
        return self.signer(seq, head, time)
