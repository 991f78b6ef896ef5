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

:func:`delegation_problem` is the rule the store applies before appending such an event and
``verify`` applies after: the signing key is a gateway's, the event's actor is an enrolled
member holding the role the action needs, and a key-signed request is valid, recent and about
the event's model. ``verify`` counts the two kinds apart (``VerifyReport.delegated``).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ._canonical import canonicalize
from ._keys import key_id as key_id_of
from ._keys import sign, verify_signature
from ._time import now_text
from .errors import InvalidInput

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ._ledger import Checkpoint
    from ._members import Member, Roster
    from .stores.protocols import Signer

__all__ = [
    "GATEWAY_ROLE",
    "METHODS",
    "REQUEST_WINDOW",
    "SIGNATURE_HEADER",
    "DelegatedSigner",
    "body_digest",
    "delegation_problem",
    "parse_signature_header",
    "request_problem",
    "sign_request",
]

GATEWAY_ROLE = "gateway"
METHODS = ("key", "token", "oidc")
"""How a caller proved who they are: their own key (a signed request), an API token, OIDC."""

REQUEST_WINDOW = timedelta(minutes=5)
"""How far a signed request's time may lie from the write it asked for (clock skew included)."""

SIGNATURE_HEADER = "X-Modelledger-Signature"


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _request_bytes(request: Mapping[str, Any]) -> bytes:
    return canonicalize(dict(request))


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
    signature = base64.b64encode(sign(key, _request_bytes(request))).decode("ascii")
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


def request_problem(
    roster: Roster,
    member: Member,
    request: Mapping[str, Any],
    kid: str,
    signature: str,
    *,
    seq: int,
    time: str,
) -> str | None:
    """Why ``signature`` does not prove that ``member`` asked for ``request`` at ledger position
    ``seq`` and time ``time``, or None when it does."""
    key = roster.key(kid)
    if key is None or roster.owners.get(kid) != member.name:
        return f"the request is signed by key {kid}, which is not enrolled to {member.name}"
    if not key.valid_at(seq):
        return (
            f"the request is signed by key {kid} of {member.name}, revoked at ledger event {key.revoked_seq}"
        )
    if request.get("member") != member.name:
        return f"the signed request names {request.get('member')!r}, not {member.name}"
    try:
        raw = base64.b64decode(signature, validate=True)
    except ValueError:
        return "the request signature is not base64"
    if not verify_signature(key.public_pem.encode(), _request_bytes(request), raw):
        return f"the request signature does not verify with key {kid} of {member.name}"
    try:
        asked = datetime.fromisoformat(str(request.get("time")).replace("Z", "+00:00"))
        done = datetime.fromisoformat(time.replace("Z", "+00:00"))
        late = abs(done - asked) > REQUEST_WINDOW
    except (TypeError, ValueError):
        return f"the signed request's time {request.get('time')!r} is not an RFC 3339 time"
    if late:
        return f"the signed request was made at {request.get('time')}, too far from {time}"
    return None


def delegation_problem(
    roster: Roster,
    gateway: Member,
    via: Any,
    *,
    actor: str,
    seq: int,
    time: str | None,
    model: str | None,
) -> tuple[str | None, Member | None]:
    """(why the gateway ``gateway`` may not write this event for ``actor``, the member it acts
    for); the role the action needs is then checked against that member."""
    if not isinstance(via, Mapping):
        return "data.via must be an object", None
    if not gateway.has_role(GATEWAY_ROLE, None):
        return f"{gateway.name} wrote for another member but holds no gateway role", None
    if via.get("server") != gateway.name:
        return f"data.via names the server {via.get('server')!r} but {gateway.name} signed the write", None
    principal = via.get("principal")
    member = roster.members.get(principal) if isinstance(principal, str) else None
    if member is None:
        return f"{gateway.name} wrote for {principal!r}, who is not enrolled", None
    if not actor.startswith("policy:") and actor != member.name:
        return f"{gateway.name} wrote as {actor} for {member.name}", None
    method = via.get("method")
    if method not in METHODS:
        return f"data.via.method must be one of {', '.join(METHODS)}, got {method!r}", None
    if not member.has_live_key:
        return f"{gateway.name} wrote for {member.name}, whose keys are all revoked", None
    if method == "key":
        request = via.get("request")
        if not isinstance(request, Mapping):
            return "data.via.request must be the signed request", None
        problem = request_problem(
            roster,
            member,
            request,
            str(via.get("key_id")),
            str(via.get("signature")),
            seq=seq,
            time=time or str(request.get("time")),
        )
        if problem is not None:
            return problem, None
        path = str(request.get("path", "")).partition("?")[0]
        if model is not None and quote(model, safe="") not in path.split("/"):
            return f"the signed request ({request.get('path')}) is not about {model}", None
    return None, member


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
