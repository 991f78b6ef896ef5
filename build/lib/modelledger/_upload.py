"""The shape of a registration upload, shared by the remote client that sends it and the server
that reads it (a module of its own so that the server does not import the client, and with it
httpx, to learn two constants)."""

from __future__ import annotations

__all__ = ["MANIFEST_MEMBER", "UPLOAD_CHUNK"]

MANIFEST_MEMBER = ".modelledger-upload.json"
"""The first member of a registration upload (a tar stream): the manifest, the expected sha256
of every file, and the registration's options."""

UPLOAD_CHUNK = 1 << 20
"""The largest block read from or written to an upload at a time (bounded memory)."""
