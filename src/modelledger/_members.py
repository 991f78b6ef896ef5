"""Members of a registry: who holds which key and which roles, as the ledger records it.

Identity is proven, not claimed: every governed write is signed (its checkpoint) by the
actor's own Ed25519 key, and the actor of an event is the member that key is enrolled to.
The :class:`Roster` is rebuilt from the ledger's enrolment events alone, in order:

* ``registry.initialized`` with ``root`` (a new registry), or ``member.enrolled`` with
  ``root: true`` (an older registry upgraded: its registry key becomes the root's): the first
  admin, the root of trust;
* ``member.enrolled`` (``member``, ``key_id``, ``public_key``, ``roles``, ``models``): a new
  member, signed by an admin;
* ``member.key_added`` / ``member.key_revoked`` (``member``, ``key_id``): key rotation;
* ``member.roles_set`` (``member``, ``roles``, ``models``): a change of roles or scope.

:func:`authorize` is the one rule a store applies before appending an event and ``verify``
applies to every event after the root: the signing key is enrolled and not revoked, it
belongs to the event's actor, and that member holds the role the action needs for the model
(``models`` scopes roles to name patterns such as ``credit-*``).
"""

from __future__ import annotations

import base64
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from ._canonical import canonicalize
from ._keys import verify_signature
from ._ledger import LedgerEvent
from .errors import InvalidInput

__all__ = [
    "ACTION_ROLE",
    "AUTOMATED_PREFIX",
    "GATEWAY_ROLE",
    "MEMBER_ACTIONS",
    "METHODS",
    "REQUEST_WINDOW",
    "ROLES",
    "Member",
    "MemberKey",
    "Roster",
    "authorize",
    "authorize_event",
    "check_roles",
    "delegation_problem",
    "receipt_key_problem",
    "request_bytes",
    "request_problem",
]

ROLES = ("viewer", "contributor", "approver", "deployer", "serving", "admin", "gateway")
"""Roles a member may hold. ``admin`` may do everything but serve (receipts are signed by
serving keys) and act as a gateway; ``viewer`` may only read; ``gateway`` is a registry
server's, which writes on behalf of the members who call it (:mod:`modelledger._delegation`)."""

MEMBER_ACTIONS = (
    "registry.initialized",
    "member.enrolled",
    "member.key_added",
    "member.key_revoked",
    "member.roles_set",
)
"""The ledger actions the roster is rebuilt from."""

ACTION_ROLE: Mapping[str, str] = {
    "version.registered": "contributor",
    "stage.changed": "contributor",
    "validation.evaluated": "contributor",
    "dataset.registered": "contributor",
    "model.updated": "contributor",
    "alias.set": "contributor",
    "alias.deleted": "contributor",
    "version.tagged": "contributor",
    "version.approved": "approver",
    "version.rejected": "approver",
    "deployment.deployed": "deployer",
    "deployment.rolled_back": "deployer",
    "predictions.written": "serving",
    "policy.changed": "admin",
    "model.archived": "admin",
    "model.unarchived": "admin",
    "model.renamed": "admin",
    "version.erased": "admin",
    "dataset.erased": "admin",
    "predictions.erased": "admin",
    "member.enrolled": "admin",
    "member.key_added": "admin",
    "member.key_revoked": "admin",
    "member.roles_set": "admin",
    "token.created": "admin",
    "token.revoked": "admin",
    "version.reproduced": "contributor",
    "refresh.triggered": "contributor",
    "refresh.failed": "contributor",
}
"""The role each governed action needs."""

AUTOMATED_PREFIX = "policy:"  # events the policy itself decides, inside a member's write


@dataclass(frozen=True, slots=True)
class MemberKey:
    """One public key of a member, with the ledger positions that enrolled and revoked it."""

    key_id: str
    public_pem: str
    enrolled_seq: int
    enrolled_time: str = ""
    revoked_seq: int | None = None
    revoked_time: str | None = None

    def valid_at(self, seq: int) -> bool:
        return self.enrolled_seq <= seq and (self.revoked_seq is None or seq < self.revoked_seq)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "public_pem": self.public_pem,
            "enrolled_seq": self.enrolled_seq,
            "enrolled_time": self.enrolled_time,
            "revoked_seq": self.revoked_seq,
            "revoked_time": self.revoked_time,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MemberKey:
        revoked = data.get("revoked_seq")
        return cls(
            key_id=str(data["key_id"]),
            public_pem=str(data["public_pem"]),
            enrolled_seq=int(data["enrolled_seq"]),
            enrolled_time=str(data.get("enrolled_time", "")),
            revoked_seq=None if revoked is None else int(revoked),
            revoked_time=data.get("revoked_time"),
        )


@dataclass(frozen=True, slots=True)
class Member:
    """A person or service: name, roles (scoped to model-name patterns) and keys."""

    name: str
    roles: tuple[str, ...]
    models: tuple[str, ...] = ("*",)
    keys: tuple[MemberKey, ...] = ()
    root: bool = False

    def has_role(self, role: str, model: str | None) -> bool:
        """Whether the member may act as ``role`` on ``model`` (None: an action on no model)."""
        held = role in self.roles or (role not in ("serving", "gateway") and "admin" in self.roles)
        if not held:
            return False
        if model is None:
            # registry-wide actions (policy, enrolment) need an unscoped role
            return role not in ("admin",) or "*" in self.models
        if "*" in self.models:
            return True  # the usual unscoped member: no pattern to match
        # model names are unique without regard to case, so a scope matches in any case too
        return any(fnmatch.fnmatchcase(model.lower(), pattern.lower()) for pattern in self.models)

    def can_view(self, model: str | None) -> bool:
        """Whether the member may read ``model``: any role on it counts, since every role reads
        what it acts on (None: a registry-wide read, which any role allows)."""
        return any(self.has_role(role, model) for role in ROLES)

    @property
    def unscoped(self) -> bool:
        """Whether the member's roles cover every model (reads that span models need it)."""
        return "*" in self.models

    @property
    def has_live_key(self) -> bool:
        """Whether any of the member's keys is not revoked; a member whose keys are all
        revoked has left, and no token stands for them any more."""
        return any(k.revoked_seq is None for k in self.keys)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "roles": list(self.roles),
            "models": list(self.models),
            "root": self.root,
            "keys": [k.to_dict() for k in self.keys],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Member:
        return cls(
            name=str(data["name"]),
            roles=tuple(data["roles"]),
            models=tuple(data.get("models", ("*",))),
            keys=tuple(MemberKey.from_dict(k) for k in data.get("keys", ())),
            root=bool(data.get("root", False)),
        )


def check_roles(roles: Any, models: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Roles and model patterns as given by a user, checked."""
    if isinstance(roles, str):
        roles = [roles]
    if isinstance(models, str):
        models = [models]
    if not isinstance(roles, (list, tuple)) or not roles or not all(isinstance(r, str) for r in roles):
        raise InvalidInput(f"give at least one role ({', '.join(ROLES)})")
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise InvalidInput(f"unknown role(s) {', '.join(unknown)}: roles are {', '.join(ROLES)}")
    models = list(models or ["*"])
    if not all(isinstance(m, str) and m and len(m) <= 200 for m in models):
        raise InvalidInput("model patterns must be non-empty strings such as credit-*")
    return tuple(dict.fromkeys(roles)), tuple(dict.fromkeys(models))


@dataclass
class Roster:
    """Every member and key, as the enrolment events up to some point of the ledger say."""

    members: dict[str, Member] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)  # key id -> member name
    last_seq: int = 0  # the last enrolment event applied

    @property
    def empty(self) -> bool:
        return not self.members

    def copy(self) -> Roster:
        return Roster(dict(self.members), dict(self.owners), self.last_seq)

    def key(self, kid: str) -> MemberKey | None:
        owner = self.owners.get(kid)
        if owner is None:
            return None
        return next((k for k in self.members[owner].keys if k.key_id == kid), None)

    def public_pem(self, kid: str) -> bytes | None:
        """The public key ``kid`` (enrolled at any time, revoked or not), PEM."""
        k = self.key(kid)
        return None if k is None else k.public_pem.encode()

    def owner(self, kid: str) -> Member | None:
        name = self.owners.get(kid)
        return None if name is None else self.members[name]

    def member_keys(self, name: str) -> tuple[MemberKey, ...]:
        m = self.members.get(name)
        return () if m is None else m.keys

    def apply(self, action: str, seq: int, time: str, data: Mapping[str, Any]) -> None:
        """Apply one ledger event (anything but an enrolment event changes nothing)."""
        if action not in MEMBER_ACTIONS:
            return
        if action == "registry.initialized":
            root = data.get("root")
            if isinstance(root, Mapping) and self.empty:
                self._add(str(root["member"]), ("admin",), ("*",), root, seq, time, root=True)
        elif action == "member.enrolled":
            roles, models = tuple(data.get("roles") or ()), tuple(data.get("models") or ("*",))
            self._add(str(data["member"]), roles, models, data, seq, time, root=bool(data.get("root")))
        elif action == "member.key_added":
            name = str(data["member"])
            m = self.members[name]
            self.members[name] = replace(m, keys=(*m.keys, _key(data, seq, time)))
            self.owners[str(data["key_id"])] = name
        elif action == "member.key_revoked":
            name, kid = str(data["member"]), str(data["key_id"])
            m = self.members[name]
            keys = tuple(
                replace(k, revoked_seq=seq, revoked_time=time) if k.key_id == kid else k for k in m.keys
            )
            self.members[name] = replace(m, keys=keys)
        elif action == "member.roles_set":
            name = str(data["member"])
            self.members[name] = replace(
                self.members[name],
                roles=tuple(data.get("roles") or ()),
                models=tuple(data.get("models") or ("*",)),
            )
        self.last_seq = seq

    def _add(
        self,
        name: str,
        roles: tuple[str, ...],
        models: tuple[str, ...],
        data: Mapping[str, Any],
        seq: int,
        time: str,
        *,
        root: bool,
    ) -> None:
        old = self.members.get(name)
        keys = (*(old.keys if old else ()), _key(data, seq, time))
        self.members[name] = Member(
            name=name, roles=roles, models=models, keys=keys, root=root or bool(old and old.root)
        )
        self.owners[str(data["key_id"])] = name


def _key(data: Mapping[str, Any], seq: int, time: str) -> MemberKey:
    return MemberKey(
        key_id=str(data["key_id"]), public_pem=str(data["public_key"]), enrolled_seq=seq, enrolled_time=time
    )


def receipt_key_problem(
    roster: Roster, kid: str, model: str, time: str, *, legacy_kid: str | None
) -> str | None:
    """Why a receipt for ``model`` made at ``time`` may not be signed by key ``kid``, or None:
    the key must be a serving key enrolled for the model and not revoked by then. Receipts
    signed by an older registry's key before its members were enrolled stay valid."""
    key = roster.key(kid)
    if key is None:
        if kid == legacy_kid:
            return None  # an older registry whose members are not enrolled yet
        return f"signed by key {kid}, which is not enrolled in this registry"
    owner = roster.members[roster.owners[kid]]
    if key.revoked_time is not None and _instant(time) >= _instant(key.revoked_time):
        return f"signed by key {kid} of {owner.name} at {time}, after it was revoked at {key.revoked_time}"
    if kid == legacy_kid and owner.root and _instant(time) < _instant(key.enrolled_time):
        return None  # the registry key signed receipts itself before members existed
    if not owner.has_role("serving", model):
        return f"signed by key {kid} of {owner.name}, who is not enrolled to serve {model}"
    return None


def authorize(
    roster: Roster,
    *,
    kid: str,
    actor: str,
    action: str,
    seq: int,
    data: Mapping[str, Any],
    legacy_kid: str | None,
    auto_approve: bool,
    time: str | None = None,
) -> str | None:
    """Why the event (``action`` by ``actor``, number ``seq``) may not be signed by the key
    ``kid`` given the ``roster`` before it, or None when it may.

    ``legacy_kid`` is the registry key of a registry made before members existed: it may
    enrol the root once. ``auto_approve`` is the policy's switch, which lets the policy
    itself approve inside a member's registration.
    """
    if roster.empty:
        root = data.get("root")
        if action == "registry.initialized" and isinstance(root, Mapping) and root.get("key_id") == kid:
            return None
        if (
            action == "member.enrolled"
            and data.get("root")
            and kid == legacy_kid
            and data.get("key_id") == kid
        ):
            return None
        return f"{action} by {actor}: the registry has no members yet (run `modelledger init`)"
    key = roster.key(kid)
    if key is None:
        if actor in roster.members:
            return (
                f"{action} by {actor}: you hold no key enrolled for {actor} (key {kid} is not one of theirs)"
            )
        return f"{action} by {actor} is signed by key {kid}, which is not enrolled in this registry"
    owner = roster.members[roster.owners[kid]]
    if not key.valid_at(seq):
        return (
            f"{action} by {actor} is signed by key {kid} of {owner.name}, "
            f"revoked at ledger event {key.revoked_seq}"
        )
    model = data.get("model") if isinstance(data.get("model"), str) and data.get("model") else None
    if "via" in data:
        # a server's write for a member: the member's roles decide, not the server's
        problem, member = delegation_problem(
            roster, owner, data["via"], actor=actor, seq=seq, time=time, model=model
        )
        if problem is not None or member is None:
            return f"{action} by {actor}: {problem}"
        owner = member
    if actor.startswith(AUTOMATED_PREFIX):
        if not auto_approve:
            return f"{action} by {actor}: the policy does not approve automatically"
        if not owner.has_role("contributor", model):
            return f"{action} by {actor} inside a write by {owner.name}, who may not register {model}"
        return None
    if owner.name != actor:
        return f"{action} names {actor} as its actor but is signed by key {kid} of {owner.name}"
    if action in ("alias.set", "alias.deleted") and data.get("alias") in ("production", "rollback"):
        alias = data.get("alias")
        return f"{action} by {actor} moves the protected @{alias}, which only deploy and rollback move"
    role = ACTION_ROLE.get(action)
    if action == "predictions.written" and owner.has_role("admin", model):
        return None  # an admin records capture files a serving process left unrecorded (init)
    if role is not None and not owner.has_role(role, model):
        where = f" for {model}" if model else ""
        held = ", ".join(owner.roles)
        return f"{owner.name} may not {action}: it needs the {role} role{where} (roles: {held})"
    new_name = data.get("new_name")
    if action == "model.renamed" and role is not None and not owner.has_role(role, str(new_name)):
        return f"{owner.name} may not {action} to {new_name}: it needs the {role} role for that name"
    return None


def _instant(text: str) -> datetime:
    """An RFC 3339 time (receipts keep milliseconds, the ledger microseconds) as a datetime."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(f"not an RFC 3339 time: {text!r}") from exc


def authorize_event(
    roster: Roster, event: LedgerEvent, *, kid: str, legacy_kid: str | None, auto_approve: bool
) -> str | None:
    """:func:`authorize` for a ledger event (the store, ``verify`` and trust bundles use it)."""
    return authorize(
        roster,
        kid=kid,
        actor=event.actor,
        action=event.action,
        seq=event.seq,
        data=event.data,
        legacy_kid=legacy_kid,
        auto_approve=auto_approve,
        time=event.time,
    )


# ------------------------------------------------------------- writes a server makes for a member

GATEWAY_ROLE = "gateway"
METHODS = ("key", "token", "oidc")
"""How a caller proved who they are: their own key (a signed request), an API token, OIDC."""

REQUEST_WINDOW = timedelta(minutes=5)
"""How far a signed request's time may lie from the write it asked for (clock skew included)."""


def request_bytes(request: Mapping[str, Any]) -> bytes:
    """The bytes a member signs to ask a server for a write (canonical JSON of the request)."""
    return canonicalize(dict(request))


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
    if not verify_signature(key.public_pem.encode(), request_bytes(request), raw):
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
        # a model name is the same in any case, so the request may spell it in another
        if model is not None and quote(model, safe="").lower() not in path.lower().split("/"):
            return f"the signed request ({request.get('path')}) is not about {model}", None
    return None, member
