"""``model-signing``: a model version's signature as the OpenSSF ``model_signing`` tool writes
and verifies it (``model.sig``: a Sigstore bundle holding a DSSE envelope of an in-toto
statement that lists the version's files by sha256).

Signed with the exporting identity's ECDSA P-256 model-signing key (the tool verifies only
elliptic-curve keys; :mod:`modelledger._model_signing` says how that key is derived from the
identity's Ed25519 key) with deterministic ECDSA (RFC 6979): the same registry exported twice
gives the same bytes. A second signature in the envelope, by the identity's Ed25519 key over the
same statement (``keyid`` = its key id), ties the P-256 key to the enrolled identity for anyone
checking with the registry's keys; the tool reads only the first.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from .._canonical import canonicalize
from .._dsse import PAYLOAD_TYPE, STATEMENT_TYPE, pae
from .._model_signing import (
    BUNDLE_MEDIA_TYPE,
    IGNORED,
    PREDICATE_TYPE,
    fingerprint,
    is_ignored,
    pem_of,
    root_digest,
    signing_key,
)
from ..errors import InvalidInput
from ._collect import Provenance

__all__ = ["render"]


def render(p: Provenance, *, sign: Callable[[bytes], bytes] | None = None) -> bytes:
    """The ``model.sig`` of ``p``'s model version folder (a Sigstore bundle, JSON).

    >>> signature = registry.export("models:/credit-risk/3", format="model-signing")  # doctest: +SKIP
    >>> Path("credit-risk-3/model.sig").write_bytes(signature)  # doctest: +SKIP
    """
    if sign is None:
        raise InvalidInput("the model-signing export is a signature: it needs the exporting identity's key")
    if p.kind != "model" or p.model is None:
        raise InvalidInput(
            f"model-signing signs a model version's folder; {p.subject} is a {p.kind} "
            "(export it as in-toto instead)"
        )
    # cryptography loads only when a key is used, not with `import modelledger`
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec  # (lazy, as above)

    resources = [
        {"algorithm": "sha256", "digest": f.sha256, "name": f.path}
        for f in sorted(p.model.files, key=lambda f: f.path)
        if not is_ignored(f.path, IGNORED)
    ]
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": p.model.model, "digest": {"sha256": root_digest(r["digest"] for r in resources)}}
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {
                "method": "files",
                "hash_type": "sha256",
                "allow_symlinks": False,
                "ignore_paths": sorted(IGNORED),
            },
            "resources": resources,
        },
    }
    payload = canonicalize(statement)
    key = signing_key(sign)
    hint = fingerprint(pem_of(key.public_key()))
    encoded = pae(PAYLOAD_TYPE, payload)
    ecdsa = key.sign(encoded, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": hint}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": _b64(payload),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [
                {"keyid": hint, "sig": _b64(ecdsa)},
                {"keyid": p.key_id, "sig": _b64(sign(encoded))},
            ],
        },
    }
    return canonicalize(bundle)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
