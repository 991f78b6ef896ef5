"""DSSE (Dead Simple Signing Envelope, v1): the envelope in-toto statements are signed in.

A DSSE signature covers the *pre-authentication encoding* (PAE) of the payload and its type,
never the JSON around it, so the envelope can be re-serialised freely. Both signed exports (the
``in-toto`` statement, the ``model-signing`` bundle) and the check of a ``model_signing``
signature at registration use these two functions.

>>> pae("application/vnd.in-toto+json", b"{}")
b'DSSEv1 28 application/vnd.in-toto+json 2 {}'
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from ._canonical import canonicalize

__all__ = ["PAYLOAD_TYPE", "STATEMENT_TYPE", "envelope", "pae"]

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"


def pae(payload_type: str, payload: bytes) -> bytes:
    """``DSSEv1 <len(type)> <type> <len(payload)> <payload>``: what a DSSE signature signs."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def envelope(payload: bytes, payload_type: str, sign: Callable[[bytes], bytes], keyid: str) -> bytes:
    """A DSSE envelope of ``payload`` with one signature (``sign`` over the PAE), as RFC 8785 JSON."""
    signature = sign(pae(payload_type, payload))
    doc = {
        "payload": base64.b64encode(payload).decode("ascii"),
        "payloadType": payload_type,
        "signatures": [{"keyid": keyid, "sig": base64.b64encode(signature).decode("ascii")}],
    }
    return canonicalize(doc)
