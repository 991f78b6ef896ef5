"""Digests: sha256 of files and a Merkle root over a version's files and manifest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from .domain import FileEntry

__all__ = ["canonical_json", "merkle_root", "version_digest"]


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def merkle_root(leaves: Iterable[bytes]) -> bytes:
    """Root of a binary Merkle tree over leaf hashes (RFC 6962 style domain separation)."""
    level = [_h(b"\x00" + leaf) for leaf in leaves]
    if not level:
        return _h(b"")
    while len(level) > 1:
        nxt = [_h(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def version_digest(files: Iterable[FileEntry], manifest: Mapping[str, Any]) -> str:
    """The digest of a version: changes if any file byte, file name or manifest field changes."""
    leaves = [b"manifest\x00" + canonical_json(dict(manifest))]
    for f in sorted(files, key=lambda e: e.path):
        leaves.append(f"file\x00{f.path}\x00{f.size}\x00{f.sha256}".encode())
    return "sha256:" + merkle_root(leaves).hex()
