"""Interoperability with the OpenSSF ``model_signing`` tool (v1): its format, the registry's
model-signing key, and the check of a folder the tool signed.

That tool signs a model *folder*: it hashes every file (sha256 by default), lists them in an
in-toto Statement v1 whose predicate (``https://model_signing/signature/v1.0``) holds the
serialization settings and one ``{name, algorithm, digest}`` resource per file, and whose one
subject is the model's name with the sha256 over the files' digests in order. The statement is
signed as a DSSE envelope inside a Sigstore bundle (media type
``application/vnd.dev.sigstore.bundle.v0.3+json``), written by default to ``model.sig``.

**Keys.** Its key-based verifier (``model_signing verify key``, or
``model_signing.verifying.Config().use_elliptic_key_verifier``) accepts only elliptic-curve keys
(NIST P-256, P-384, P-521), not Ed25519, the registry's own key type. So every identity also has
a **model-signing key**: an ECDSA P-256 key derived from its Ed25519 key, deterministically and
one-way (HKDF-SHA256 over the identity's Ed25519 signature of a fixed, domain-separated text that
nothing else signs), so it needs no second key file, no backup and no enrolment of its own: whoever
holds the identity key holds it, and nobody else can compute it. Its public half is
:func:`public_key_pem` (``Registry.model_signing_key()``, ``modelledger keys export
--model-signing``). Signing uses deterministic ECDSA (RFC 6979), so the same registry exported
twice gives the same bytes. The bundle's envelope carries a second signature by the identity's
Ed25519 key over the same statement (``keyid`` = its key id), which ties the P-256 key to the
enrolled identity for anyone checking with the registry's keys; ``model_signing`` reads only the
first signature.

**Exporting** (``modelledger._export.model_signing``, format ``model-signing``): the signature
of a model version's files, as ``model_signing`` writes it; put it at ``model.sig`` in the
folder ``Registry.download`` wrote and ``model_signing verify key <folder> --signature
<folder>/model.sig --public_key key.pem`` passes (``model.sig`` and git files are listed as
ignored, as the tool does).

**Registering** (:func:`check_signed_folder`): a folder holding ``model.sig`` is registered only
when that signature verifies with the public key the manifest gives
(``model_signing: {public_key: <PEM>}``) and covers exactly the folder's files; the manifest then
records who signed (the key's fingerprint, as the tool computes it: sha256 of its PEM) and what
(the signed digest), and ``model.sig`` stays in the version.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._dsse import PAYLOAD_TYPE, STATEMENT_TYPE, pae
from .errors import IntegrityError, InvalidInput

if TYPE_CHECKING:
    # cryptography loads only when a key is used, not with `import modelledger`
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey, EllipticCurvePublicKey

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "IGNORED",
    "PREDICATE_TYPE",
    "SIGNATURE_FILE",
    "check_signed_folder",
    "fingerprint",
    "is_ignored",
    "pem_of",
    "public_key_pem",
    "root_digest",
    "signing_key",
]

SIGNATURE_FILE = "model.sig"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
# what the tool leaves out of a folder's hash by default (git files), and its signature
IGNORED = (".git", ".gitattributes", ".github", ".gitignore", SIGNATURE_FILE)
_DERIVE = b"modelledger/model-signing-key/v1\x00derive the ECDSA P-256 key of this Ed25519 identity"
_MAX_SIGNATURE_BYTES = 64 * 1024 * 1024  # a signature lists one digest per file: generous


# ---------------------------------------------------------------------- the identity's P-256 key


def signing_key(sign: Callable[[bytes], bytes]) -> EllipticCurvePrivateKey:
    """The identity's ECDSA P-256 model-signing key, derived from its Ed25519 key through ``sign``.

    Ed25519 signatures are deterministic (RFC 8032), so the same identity always derives the
    same key; the signed text is domain-separated (no ledger checkpoint, request or DSSE
    envelope starts with it) and the signature is used only here, never written anywhere.
    """
    # cryptography loads only when a key is used, not with `import modelledger`
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec  # (lazy, as above)
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # (lazy, as above)

    seed = HKDF(
        algorithm=hashes.SHA256(), length=48, salt=None, info=b"modelledger model-signing P-256 v1"
    ).derive(sign(_DERIVE))
    # 384 bits reduced modulo the group order: a bias below 2**-128 (FIPS 186-5 A.2.1)
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    scalar = int.from_bytes(seed, "big") % (order - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def public_key_pem(sign: Callable[[bytes], bytes]) -> bytes:
    """The public half of :func:`signing_key` (SubjectPublicKeyInfo PEM), for
    ``model_signing verify key --public_key``."""
    return pem_of(signing_key(sign).public_key())


def fingerprint(pem: bytes) -> str:
    """What the tool names a key by (its bundles' ``publicKey.hint``): sha256 of its PEM."""
    return hashlib.sha256(pem).hexdigest()


def pem_of(public: EllipticCurvePublicKey) -> bytes:
    """``public`` as SubjectPublicKeyInfo PEM, the form the tool reads and fingerprints."""
    # cryptography loads only when a key is used, not with `import modelledger`
    from cryptography.hazmat.primitives import serialization

    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def root_digest(hex_digests: Iterable[str]) -> str:
    """The tool's subject digest: sha256 over the raw file digests, in the resources' order."""
    h = hashlib.sha256()
    for value in hex_digests:
        h.update(bytes.fromhex(value))
    return h.hexdigest()


def is_ignored(path: str, ignored: Iterable[str]) -> bool:
    return any(path == i or path.startswith(f"{i.rstrip('/')}/") for i in ignored)


# ---------------------------------------------------------------------- registration


def check_signed_folder(
    folder: Path, files: Iterable[str], given: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Check the ``model.sig`` of ``folder`` (whose files, relative POSIX paths, are ``files``)
    against the public key ``given["public_key"]`` (PEM); return what the manifest records.

    Raises :class:`InvalidInput` when no key is given, the file is not a key-signed
    ``model_signing`` bundle or uses a serialization this check does not read, and
    :class:`IntegrityError` when the signature does not verify with the key or the folder's
    files are not exactly the signed ones with the signed bytes.
    """
    where = folder / SIGNATURE_FILE
    names = sorted(files)
    if SIGNATURE_FILE not in names:
        raise InvalidInput(
            f"the manifest's model_signing names a signer's key, but {folder} holds no {SIGNATURE_FILE} "
            "(sign the folder with `model_signing sign key` first)"
        )
    pem = (given or {}).get("public_key")
    if not isinstance(pem, str) or not pem.strip():
        raise InvalidInput(
            f"{where} is a model_signing signature: give the signer's public key (PEM) as the "
            "manifest's model_signing.public_key to have it checked (a folder's signature is never "
            "kept unchecked)"
        )
    public, pem_bytes = _ec_public_key(pem)
    bundle = _read_bundle(where)
    envelope = bundle.get("dsseEnvelope")
    material = bundle.get("verificationMaterial")
    if not isinstance(envelope, Mapping) or not isinstance(material, Mapping):
        raise InvalidInput(
            f"{where} is not a model_signing signature (no DSSE envelope in a Sigstore bundle)"
        )
    if not isinstance(material.get("publicKey"), Mapping):
        raise InvalidInput(
            f"{where} is signed with a certificate or through Sigstore; modelledger checks signatures "
            "made with a key (`model_signing sign key`)"
        )
    hint = material["publicKey"].get("hint")
    key_print = fingerprint(pem_bytes)
    if hint and hint != key_print:
        raise IntegrityError(
            str(where),
            f"signed by the key with fingerprint {hint}, not by the key given (fingerprint {key_print})",
        )
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        raise InvalidInput(
            f"{where}: its envelope holds {envelope.get('payloadType')!r}, not an in-toto statement"
        )
    signatures = envelope.get("signatures")
    try:
        payload = base64.b64decode(str(envelope.get("payload")), validate=True)
        first = signatures[0] if isinstance(signatures, list) and signatures else {}
        signature = base64.b64decode(str(first.get("sig")), validate=True)
    except (binascii.Error, ValueError, AttributeError) as exc:
        raise InvalidInput(f"{where}: its envelope's payload or signature is not base64") from exc
    _verify_ecdsa(public, signature, pae(PAYLOAD_TYPE, payload), where)
    statement = _statement(payload, where)
    signed = _signed_files(statement, where)
    serialization = statement["predicate"]["serialization"]
    ignored = sorted({*IGNORED, *(str(p) for p in serialization.get("ignore_paths") or ())})
    present = [n for n in names if not is_ignored(n, ignored)]
    missing = sorted(set(signed) - set(present))
    extra = sorted(set(present) - set(signed))
    if missing or extra:
        parts = ([f"signed but missing: {', '.join(missing)}"] if missing else []) + (
            [f"not signed: {', '.join(extra)}"] if extra else []
        )
        raise IntegrityError(str(where), f"it does not cover the folder's files ({'; '.join(parts)})")
    for name in present:
        if _sha256_file(folder / name) != signed[name]:
            raise IntegrityError(str(folder / name), f"not the file {where} signed (its sha256 differs)")
    return {
        "signature": SIGNATURE_FILE,
        "method": "key",
        "key_fingerprint": key_print,
        "public_key": pem_bytes.decode("ascii"),
        "digest": f"sha256:{statement['subject'][0]['digest']['sha256']}",
        "files": len(present),
        "ignored": ignored,
    }


def _ec_public_key(pem: str) -> tuple[EllipticCurvePublicKey, bytes]:
    # cryptography loads only when a key is used, not with `import modelledger`
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec  # (lazy, as above)

    try:
        key = serialization.load_pem_public_key(pem.encode("utf-8"))
    except (ValueError, TypeError, UnicodeError) as exc:
        raise InvalidInput(f"model_signing.public_key is not a PEM public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in (
        "secp256r1",
        "secp384r1",
        "secp521r1",
    ):
        raise InvalidInput(
            "model_signing.public_key must be an elliptic-curve key on P-256, P-384 or P-521 "
            f"(what model_signing signs with), not {type(key).__name__}"
        )
    return key, pem_of(key)


def _read_bundle(where: Path) -> Mapping[str, Any]:
    try:
        with where.open("rb") as handle:
            raw = handle.read(_MAX_SIGNATURE_BYTES + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read {where}: {exc.strerror or exc}") from exc
    if len(raw) > _MAX_SIGNATURE_BYTES:
        raise InvalidInput(f"{where} is larger than a model_signing signature can be")
    try:
        bundle = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(f"{where} is not a model_signing signature (not JSON: {exc})") from exc
    if not isinstance(bundle, Mapping) or not str(bundle.get("mediaType", "")).startswith(
        "application/vnd.dev.sigstore.bundle"
    ):
        raise InvalidInput(f"{where} is not a model_signing signature (not a Sigstore bundle)")
    return bundle


def _verify_ecdsa(public: EllipticCurvePublicKey, signature: bytes, data: bytes, where: Path) -> None:
    # cryptography loads only when a key is used, not with `import modelledger`
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes  # (lazy, as above)
    from cryptography.hazmat.primitives.asymmetric import ec  # (lazy, as above)

    # the tool pairs each curve with its hash (P-256: SHA-256, P-384: SHA-384, P-521: SHA-512)
    digest = {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}[public.curve.key_size]
    try:
        public.verify(signature, data, ec.ECDSA(digest))
    except InvalidSignature:
        raise IntegrityError(str(where), "the signature does not verify with the given public key") from None


def _statement(payload: bytes, where: Path) -> Mapping[str, Any]:
    try:
        statement = json.loads(payload)
    except ValueError as exc:
        raise InvalidInput(f"{where}: the signed payload is not JSON ({exc})") from exc
    if not isinstance(statement, Mapping) or statement.get("_type") != STATEMENT_TYPE:
        raise InvalidInput(f"{where}: the signed payload is not an in-toto Statement v1")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise InvalidInput(
            f"{where}: predicate {statement.get('predicateType')!r} is not {PREDICATE_TYPE} "
            "(re-sign with model_signing 1.0 or later)"
        )
    predicate = statement.get("predicate")
    serialization = predicate.get("serialization") if isinstance(predicate, Mapping) else None
    if not isinstance(serialization, Mapping):
        raise InvalidInput(f"{where}: the signed statement has no serialization settings")
    if serialization.get("method") != "files" or serialization.get("hash_type") != "sha256":
        raise InvalidInput(
            f"{where} hashes by {serialization.get('method')!r} with {serialization.get('hash_type')!r}; "
            "modelledger checks the tool's default (whole files, sha256)"
        )
    return statement


def _signed_files(statement: Mapping[str, Any], where: Path) -> dict[str, str]:
    """name -> sha256 hex of every signed file, after checking the subject's digest over them."""
    resources = statement["predicate"].get("resources")
    subjects = statement.get("subject")
    if not isinstance(resources, list) or not isinstance(subjects, list) or len(subjects) != 1:
        raise InvalidInput(f"{where}: the signed statement needs one subject and a list of resources")
    signed: dict[str, str] = {}
    for item in resources:
        if not isinstance(item, Mapping) or item.get("algorithm") != "sha256":
            raise InvalidInput(f"{where}: a signed resource is not a sha256 file digest")
        name, digest = str(item.get("name")), str(item.get("digest")).lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise InvalidInput(f"{where}: the digest of {name} is not a sha256")
        signed[name] = digest
    expected = (subjects[0].get("digest") or {}).get("sha256") if isinstance(subjects[0], Mapping) else None
    if root_digest(signed[str(r["name"])] for r in resources) != expected:
        raise IntegrityError(str(where), "the signed file digests do not add up to the signed model digest")
    return signed


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from exc
    return h.hexdigest()
