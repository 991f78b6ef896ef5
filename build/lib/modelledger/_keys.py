"""The registry's Ed25519 signing key: create, load, sign, verify.

The private key lives in one PKCS#8 PEM file that only its owner may read. It
signs ledger checkpoints and prediction receipts; anyone holding the public PEM
can verify them offline.

``cryptography`` is imported inside the functions, so ``import modelledger``
stays fast for callers that never sign anything.

>>> pub = generate_key("registry.key")  # doctest: +SKIP
>>> key = load_private_key("registry.key")  # doctest: +SKIP
>>> verify_signature(pub, b"hello", sign(key, b"hello"))  # doctest: +SKIP
True
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from typing import TYPE_CHECKING

from .errors import (
    AlreadyExists,
    InvalidInput,
    KeyFileExposed,
    ModelLedgerError,
    NotFound,
    PermissionDenied,
    StorageError,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    PublicKeyLike = Ed25519PublicKey | Ed25519PrivateKey | bytes

__all__ = [
    "generate_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "public_key_pem",
    "read_public_pem",
    "sign",
    "verify_signature",
    "verify_with_key",
]


def generate_key(path: str | os.PathLike[str]) -> bytes:
    """Create a new Ed25519 key at ``path`` (mode 0600) and return its public PEM.

    The key is written to a temporary file created with ``O_EXCL`` and mode 0600 in one
    call, so it is never readable by anyone else, not even for an instant, and then
    hard-linked into place: ``path`` appears complete or not at all, and an existing file
    is never overwritten (:class:`~modelledger.errors.AlreadyExists`). So when several
    processes create the same key at once exactly one wins, and the others can load the
    winner's key at once (:meth:`modelledger._signing.RegistryKey.ensure` does).

    >>> public_pem = generate_key("/etc/modelledger/registry.key")  # doctest: +SKIP
    """
    # slow to import: only signing and verifying need it
    from cryptography.hazmat.primitives import serialization

    # slow to import: only signing and verifying need it
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    if os.path.lexists(target):
        raise AlreadyExists("key file", target)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    tmp = os.path.join(folder, f".{os.path.basename(target)}.{secrets.token_hex(8)}.tmp")
    _write_new(tmp, pem, target)
    try:
        try:
            os.link(tmp, target)
        except FileExistsError as exc:
            raise AlreadyExists("key file", target) from exc
        except OSError as exc:
            if exc.errno not in _NO_LINKS:
                raise _key_file_error(exc, target) from exc
            _write_new(target, pem, target)  # no hard links here: O_EXCL on the file itself
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return public_key_pem(key)


_NO_LINKS = {
    errno.EPERM,
    errno.EXDEV,
    errno.EMLINK,
    errno.ENOTSUP,
    getattr(errno, "EOPNOTSUPP", errno.ENOTSUP),
}


def _write_new(path: str, data: bytes, target: str) -> None:
    """Write ``data`` to the new owner-only file ``path`` (never an existing one), durably."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as exc:
        raise AlreadyExists("key file", target) from exc
    except FileNotFoundError as exc:
        raise NotFound("folder", os.path.dirname(os.path.abspath(path))) from exc
    except OSError as exc:
        raise _key_file_error(exc, target) from exc
    try:
        try:
            if hasattr(os, "fchmod"):
                # The umask can only remove bits; this also restores u+rw if it removed those.
                os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException as exc:
        # Never leave a half-written key behind: a later run would refuse to overwrite it.
        with contextlib.suppress(OSError):
            os.unlink(path)
        if isinstance(exc, OSError):
            raise _key_file_error(exc, target) from exc
        raise


def _key_file_error(exc: OSError, target: str) -> ModelLedgerError:
    folder = os.path.dirname(os.path.abspath(target))
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        return PermissionDenied(
            f"cannot create the key file {target}: {exc.strerror}; use a folder this user may write "
            "(or set MODELLEDGER_KEY to a key file path there)"
        )
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return StorageError(
            f"cannot create the key file {target}: no space left in {folder}; free some space"
        )
    return StorageError(f"cannot create the key file {target}: {exc.strerror or exc}")


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Read the Ed25519 private key at ``path``, refusing a file group/others may access.

    Raises :class:`KeyFileExposed` (a :class:`~modelledger.errors.PermissionDenied`)
    for such a file, :class:`~modelledger.errors.NotFound` when it does not exist and
    :class:`~modelledger.errors.InvalidInput` when it is not an unencrypted Ed25519 key.

    >>> key = load_private_key("/etc/modelledger/registry.key")  # doctest: +SKIP
    """
    # slow to import: only signing and verifying need it
    from cryptography.hazmat.primitives import serialization

    # slow to import: only signing and verifying need it
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    target = os.fspath(path)
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError as exc:
        raise NotFound("key file", target) from exc
    except PermissionError as exc:
        raise PermissionDenied(f"cannot read private key file {target}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        # fstat the open file, not the path, so a swapped file cannot slip past the check.
        mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
        if os.name == "posix" and mode & 0o077:
            raise KeyFileExposed(target, mode)
        data = handle.read()
    try:
        if data.lstrip().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):
            # an ssh-keygen -t ed25519 key, as many already use to sign git commits
            key: object = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(
            f"{target} is not an unencrypted PEM or OpenSSH private key: {exc} "
            "(a passphrase-protected key cannot be used unattended)"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput(f"{target} holds a {type(key).__name__}, not an Ed25519 private key")
    return key


def public_key_pem(private: Ed25519PrivateKey) -> bytes:
    """The SubjectPublicKeyInfo PEM of ``private``'s public key: safe to publish.

    >>> public_key_pem(load_private_key("registry.key"))  # doctest: +SKIP
    b'-----BEGIN PUBLIC KEY-----\\n...'
    """
    # slow to import: only signing and verifying need it
    from cryptography.hazmat.primitives import serialization

    return private.public_key().public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )


def load_public_key(public_pem: bytes) -> Ed25519PublicKey:
    """Parse an Ed25519 public key PEM (:class:`~modelledger.errors.InvalidInput` if it is not one).

    >>> load_public_key(public_pem)  # doctest: +SKIP
    """
    # slow to import: only signing and verifying need it
    from cryptography.hazmat.primitives import serialization

    # slow to import: only signing and verifying need it
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(public_pem)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInput(f"expected an Ed25519 public key, got {type(key).__name__}")
    return key


def sign(private: Ed25519PrivateKey, data: bytes) -> bytes:
    """The 64-byte Ed25519 signature of ``data``.

    >>> signature = sign(key, b"payload")  # doctest: +SKIP
    """
    return private.sign(data)


def verify_signature(public_pem: bytes, data: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``data`` by ``public_pem``'s key.

    A wrong or malformed signature returns False; a malformed *key* raises
    :class:`~modelledger.errors.InvalidInput`, since that is a setup error, not tampering.

    >>> verify_signature(public_pem, b"payload", signature)  # doctest: +SKIP
    True
    """
    return verify_with_key(load_public_key(public_pem), data, signature)


def verify_with_key(public: Ed25519PublicKey, data: bytes, signature: bytes) -> bool:
    """:func:`verify_signature` for an already loaded key (verifying many signatures).

    >>> verify_with_key(load_public_key(public_pem), b"payload", signature)  # doctest: +SKIP
    True
    """
    from cryptography.exceptions import InvalidSignature  # slow to import: only signing and verifying need it

    if len(signature) != 64:
        return False
    try:
        public.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def key_id(public: PublicKeyLike) -> str:
    """Short fingerprint of a key: the first 16 hex digits of sha256(raw 32-byte public key).

    Accepts a public key, a private key (its public half is used) or a public PEM.

    >>> key_id(public_pem)  # doctest: +SKIP
    '3f9a0c55e1d2b7a4'
    """
    # slow to import: only signing and verifying need it
    from cryptography.hazmat.primitives import serialization

    # slow to import: only signing and verifying need it
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if isinstance(public, (bytes, bytearray, memoryview)):
        key = load_public_key(bytes(public))
    elif isinstance(public, Ed25519PrivateKey):
        key = public.public_key()
    else:
        key = public
    raw = key.public_bytes(encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def read_public_pem(value: bytes | str | os.PathLike[str]) -> bytes:
    """An Ed25519 public key as PEM, from PEM bytes or text, an OpenSSH ``ssh-ed25519 ...`` line,
    or a file holding either (``modelledger identity show -o``, ``~/.ssh/id_ed25519.pub``).

    >>> read_public_pem("~/.ssh/id_ed25519.pub")  # doctest: +SKIP
    b'-----BEGIN PUBLIC KEY-----\\n...'
    """
    # slow to import: only signing and verifying need it
    from cryptography.hazmat.primitives import serialization

    if isinstance(value, bytes):
        data = value
    elif isinstance(value, str) and value.lstrip().startswith(("-----BEGIN", "ssh-ed25519 ")):
        data = value.encode()
    else:
        target = os.path.expanduser(os.fspath(value))
        try:
            with open(target, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise InvalidInput(f"cannot read the public key file {target}: {exc.strerror}") from exc
    if data.lstrip().startswith(b"ssh-ed25519 "):
        try:
            key = serialization.load_ssh_public_key(data.strip())
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"not a valid ssh-ed25519 public key: {exc}") from exc
        return public_key_pem_of(key)
    load_public_key(data)  # refuses anything but an Ed25519 public key
    return data


def public_key_pem_of(public: object) -> bytes:
    """The SubjectPublicKeyInfo PEM of a public key object."""
    # slow to import: only signing and verifying need it
    from cryptography.hazmat.primitives import serialization

    # slow to import: only signing and verifying need it
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not isinstance(public, Ed25519PublicKey):
        raise InvalidInput(f"{type(public).__name__} is not an Ed25519 public key")
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
