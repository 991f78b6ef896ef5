"""Who acts, proven by the key they hold.

Each person and each service has an Ed25519 key pair of their own. The private key stays in
its owner's file (``~/.config/modelledger/identities/<name>.key``, mode 0600, or an OpenSSH
ed25519 key); the registry only ever sees public keys, recorded by enrolment events in its
ledger (:mod:`modelledger._members`). Every governed write is signed by the acting key (its
checkpoint), and the store refuses it unless that key is enrolled to the actor with the role
the action needs.

:class:`Identity` is this process's key. :func:`ensure_root` makes the first user of a new
registry its root admin (and, on a registry made before members existed, enrols the holder of
its old registry key as root). :func:`keyring` gives every key the registry ever enrolled, for
checking signatures.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ._keys import generate_key, key_id, load_private_key, load_public_key, public_key_pem
from ._ledger import Checkpoint, KeyRing, sign_checkpoint
from ._lifecycle import EventDraft, GovContext
from .errors import AlreadyExists, InvalidInput, NotFound, PermissionDenied
from .stores.protocols import LedgerStore

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "Identity",
    "KeySigner",
    "create_identity",
    "current_actor",
    "ensure_root",
    "identities_dir",
    "identity_path",
    "keyring",
    "validate_member",
]

_MEMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9@._+-]{0,199}$")


def validate_member(name: object) -> str:
    """A member name (an e-mail address or a service name such as ``ci-training``)."""
    if not isinstance(name, str) or not _MEMBER.match(name):
        raise InvalidInput(
            f"invalid member name {name!r}: use letters, digits, @ . _ + - "
            "(at most 200, not starting with a symbol)"
        )
    return name


def current_actor() -> str:
    """Who this process says it is by default: ``MODELLEDGER_USER``, else git's user.email,
    else the OS user. It selects which of the user's own keys to use; the key proves it."""
    env = os.environ.get("MODELLEDGER_USER")
    if env:
        return env
    # subprocess (with locale, selectors, signal): only asking git needs it, not `import modelledger`
    import subprocess

    try:
        out = subprocess.run(
            ["git", "config", "--get", "user.email"], capture_output=True, text=True, timeout=5, check=False
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def identities_dir() -> Path:
    """Where this user's private keys live: ``$MODELLEDGER_IDENTITIES``, else
    ``$XDG_CONFIG_HOME/modelledger/identities`` (default ``~/.config/modelledger/identities``)."""
    explicit = os.environ.get("MODELLEDGER_IDENTITIES")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "modelledger" / "identities"


def identity_path(name: str) -> Path:
    """The key file of this user's identity called ``name``."""
    return identities_dir() / f"{validate_member(name)}.key"


class KeySigner:
    """Signs checkpoints with one private key; ``key_id`` names it for the store's checks."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.key_id = key_id(key)

    def __call__(self, seq: int, head: bytes, time: str, /) -> Checkpoint:
        return sign_checkpoint(self._key, seq, head, time, kid=self.key_id)


class Identity:
    """This process's signing key: the file at ``path``, created there on first use when
    ``create`` (the zero-setup default identity) and refused otherwise when missing."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        self._create = create
        self._private: Ed25519PrivateKey | None = None
        self._signer: KeySigner | None = None

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def private(self) -> Ed25519PrivateKey:
        """The private key, loaded once (and created first when allowed and missing)."""
        if self._private is None:
            if self._create and not self.path.exists():
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                except OSError as exc:
                    raise PermissionDenied(
                        f"cannot create the folder {self.path.parent} for your signing key: {exc.strerror}; "
                        "set MODELLEDGER_IDENTITIES to a folder this user may write"
                    ) from exc
                # another process may make it just now: then use theirs, which is complete
                with contextlib.suppress(AlreadyExists):
                    generate_key(self.path)
            try:
                self._private = load_private_key(self.path)
            except NotFound as exc:
                raise PermissionDenied(
                    f"no signing key at {self.path}: you hold no key for this identity "
                    "(create one with `modelledger identity create --name <you>`; an admin enrols it)"
                ) from exc
        return self._private

    @property
    def key_id(self) -> str:
        return key_id(self.private())

    def public_pem(self) -> bytes:
        return public_key_pem(self.private())

    def signer(self) -> KeySigner:
        if self._signer is None:
            self._signer = KeySigner(self.private())
        return self._signer


def create_identity(name: str, path: str | os.PathLike[str] | None = None) -> tuple[Path, str, bytes]:
    """Create a new signing identity: a private key file of your own (mode 0600, default
    ``identities_dir()/<name>.key``), never to leave this machine. Returns its path, key id
    and public key (PEM), which an admin enrols. An existing file is never overwritten.

    >>> path, kid, public_pem = create_identity("bob@bank.example")  # doctest: +SKIP
    """
    target = Path(path).expanduser() if path is not None else identity_path(name)
    validate_member(name)
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise PermissionDenied(f"cannot create the folder {target.parent}: {exc.strerror}") from exc
    pem = generate_key(target)
    return target, key_id(pem), pem


def ensure_root(store: LedgerStore, identity: Identity, actor: str) -> None:
    """Give the registry its root of trust, once.

    A new registry records ``identity``'s public key and a ``registry.initialized`` event
    naming ``actor`` as root admin. A registry made before members existed (a registry key,
    no members) enrols ``actor`` as root with that key, when this process holds it; its
    history keeps verifying against the same key. Safe when several processes do it at once.
    """
    stored = store.public_key()
    if stored is None:
        pem = identity.public_pem()
        kid = key_id(pem)
        validate_member(actor)

        def initialized(ctx: GovContext) -> list[EventDraft]:
            root = {"member": actor, "key_id": kid, "public_key": pem.decode()}
            return [
                EventDraft(
                    "registry.initialized",
                    "registry",
                    {"key_id": kid, "policy": ctx.policy.to_dict(), "root": root},
                )
            ]

        store.add_public_key(kid, pem, initialized, actor=actor, signer=identity.signer())
        return
    if not store.roster().empty or not identity.exists:
        return
    kid = identity.key_id
    if kid != stored[0]:
        return  # an older registry whose key someone else holds: they run init to enrol the root
    validate_member(actor)
    data = {
        "member": actor,
        "key_id": kid,
        "public_key": identity.public_pem().decode(),
        "roles": ["admin"],
        "models": ["*"],
        "root": True,
    }
    try:
        store.govern(
            "",
            None,
            lambda _ctx: [
                EventDraft(
                    "member.enrolled", f"members:/{actor}", data, "root of trust: the registry key's holder"
                )
            ],
            actor=actor,
            signer=identity.signer(),
            needs_state=False,
            needs_policy=False,
        )
    except PermissionDenied:
        if store.roster().empty:
            raise  # not a concurrent upgrade that won: a real refusal


def keyring(store: LedgerStore) -> KeyRing:
    """Every key the registry trusts for signatures: each key its members ever had enrolled
    (revocation is about when a key may sign, which ``verify`` checks per event) and the
    registry key of an older registry."""
    roster = store.roster()
    stored = store.public_key()
    cache: dict[str, Ed25519PublicKey | None] = {}

    def lookup(kid: str) -> Ed25519PublicKey | None:
        if kid not in cache:
            pem = roster.public_pem(kid)
            if pem is None and stored is not None and stored[0] == kid:
                pem = bytes(stored[1])
            cache[kid] = load_public_key(pem) if pem is not None else None
        return cache[kid]

    return lookup
