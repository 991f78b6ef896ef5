"""Who acts, and the registry key that signs what they do.

:class:`RegistryKey` is the registry's Ed25519 signing key as this process holds it: made
on first ``init`` (an owner-only file), its public half recorded in the registry, loaded
once for governed writes (which sign a ledger checkpoint) and for serving (which signs
receipts). A process without the file can still read and verify everything.
"""

from __future__ import annotations

import getpass
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from ._keys import generate_key, key_id, load_private_key, load_public_key, public_key_pem
from ._ledger import Checkpoint, sign_checkpoint
from ._lifecycle import EventDraft, GovContext
from .errors import AlreadyExists, Conflict, NotFound, PermissionDenied
from .stores.protocols import LedgerStore, Signer

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = ["RegistryKey", "current_actor"]


def current_actor() -> str:
    """Who is acting: ``MODELLEDGER_USER``, else git's user.email, else the OS user."""
    env = os.environ.get("MODELLEDGER_USER")
    if env:
        return env
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


class RegistryKey:
    """The private signing key at ``path`` for the registry whose ledger is ``store``."""

    def __init__(self, path: Path, store: LedgerStore) -> None:
        self.path = path
        self._store = store
        self._private: Ed25519PrivateKey | None = None
        self._public: Ed25519PublicKey | None = None
        self._sign: Signer | None = None

    def ensure(self, actor: str) -> None:
        """Make sure the registry has its key: create it (and record its public half and the
        ``registry.initialized`` event) on a new registry, or check the file matches.

        Safe when several processes open a new registry at once: one creates the key file and
        the others load it, and the public key and the event are recorded once, in one governed
        write, by whichever process gets there first.
        """
        stored = self._store.public_key()
        if stored is not None and not self.path.exists():
            return  # another machine holds the key; this one can read and verify
        public = self._load_or_create()
        kid = key_id(public)
        if stored is None:

            def initialized(ctx: GovContext) -> list[EventDraft]:
                return [
                    EventDraft(
                        "registry.initialized", "registry", {"key_id": kid, "policy": ctx.policy.to_dict()}
                    )
                ]

            self._store.add_public_key(kid, public, initialized, actor=actor, signer=self.signer())
            stored = self._store.public_key()
        if stored is not None and stored[0] != kid:
            raise Conflict(
                f"the key at {self.path} (id {kid}) is not this registry's signing key (id {stored[0]})"
            )

    def _load_or_create(self) -> bytes:
        """The public PEM of the key file, creating the file first if there is none."""
        if not self.path.exists():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise PermissionDenied(
                    f"cannot create the folder {self.path.parent} for the registry key: {exc.strerror}; "
                    "use a folder this user may write (or set MODELLEDGER_KEY to a key file path there)"
                ) from exc
            try:
                return generate_key(self.path)
            except AlreadyExists:
                pass  # another process created it just now: use theirs, which is complete
        return public_key_pem(load_private_key(self.path))

    def signer(self) -> Signer:
        """Signs ledger checkpoints; loads the key once and checks it is this registry's."""
        if self._sign is None:
            key = self.private()
            kid = key_id(key)

            def sign(seq: int, head: bytes, time: str) -> Checkpoint:
                return sign_checkpoint(key, seq, head, time, kid=kid)

            self._sign = sign
        return self._sign

    def private(self) -> Ed25519PrivateKey:
        """The private key (for receipts), loaded once and checked against the registry's."""
        if self._private is None:
            try:
                key = load_private_key(self.path)
            except NotFound as exc:
                raise PermissionDenied(
                    f"no registry signing key at {self.path}: governed writes need it "
                    "(run `modelledger init` here, or set MODELLEDGER_KEY to the key file)"
                ) from exc
            stored = self._store.public_key()
            if stored is not None and stored[0] != key_id(key):
                raise Conflict(f"the key at {self.path} is not this registry's signing key")
            self._private = key
        return self._private

    def public(self) -> Ed25519PublicKey:
        """The registry's public key as recorded in the registry, parsed once."""
        if self._public is None:
            self._public = load_public_key(self.public_pem())
        return self._public

    def public_pem(self) -> bytes:
        """The registry's public key (PEM) as recorded in the registry."""
        stored = self._store.public_key()
        if stored is None:
            raise NotFound("registry key", "run `modelledger init`")
        return bytes(stored[1])
