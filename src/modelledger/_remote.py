"""The remote client: ``Registry.open("http://host:port")``, the same verbs over a registry server."""

from __future__ import annotations

__all__ = ["MANIFEST_MEMBER", "UPLOAD_CHUNK"]

MANIFEST_MEMBER = ".modelledger-upload.json"
"""The first member of a registration upload (a tar stream): the manifest, the expected sha256
of every file, and the registration's options."""

UPLOAD_CHUNK = 1 << 20
