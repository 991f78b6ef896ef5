"""Digests: sha256 of files and a Merkle root over a version's files and manifest."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._canonical import canonicalize
from ._domain import FileEntry
from .errors import InvalidInput

__all__ = [
    "audit_path",
    "leaf_hash",
    "merkle_levels",
    "merkle_root",
    "node_hash",
    "root_from_audit_path",
    "version_digest",
]


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


def leaf_hash(data: bytes) -> bytes:
    """``sha256(0x00 || data)``: the hash of one Merkle leaf (RFC 6962 section 2.1)."""
    return _h(b"\x00" + data)


def node_hash(left: bytes, right: bytes) -> bytes:
    """``sha256(0x01 || left || right)``: the hash of an interior Merkle node."""
    return _h(b"\x01" + left + right)


def merkle_levels(leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the tree over ``leaf_hashes`` (already :func:`leaf_hash`-ed), leaves first.

    The shape is the one :func:`merkle_root` builds: pairs are hashed left to right and
    an odd last node moves up unchanged, which gives the same root as RFC 6962's
    "split at the largest power of two" definition. ``levels[-1][0]`` is the root.

    >>> levels = merkle_levels([leaf_hash(b"a"), leaf_hash(b"b"), leaf_hash(b"c")])
    >>> levels[-1][0] == merkle_root([b"a", b"b", b"c"])
    True
    """
    if not leaf_hashes:
        raise InvalidInput("a Merkle tree needs at least one leaf")
    sha = hashlib.sha256
    level = list(leaf_hashes)
    levels = [level]
    while len(level) > 1:
        nxt = [sha(b"\x01" + a + b).digest() for a, b in zip(level[::2], level[1::2], strict=False)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        levels.append(level)
    return levels


def audit_path(levels: Sequence[Sequence[bytes]], index: int) -> list[bytes]:
    """The inclusion proof of leaf ``index``: its sibling hashes from the leaves up.

    Levels where the node has no sibling (an odd last node that moves up) contribute
    nothing, so the path is as long as RFC 6962's for the same tree.

    >>> levels = merkle_levels([leaf_hash(b"a"), leaf_hash(b"b"), leaf_hash(b"c")])
    >>> [h == levels[0][1] for h in audit_path(levels, 0)][:1]
    [True]
    """
    size = len(levels[0])
    if not 0 <= index < size:
        raise InvalidInput(f"leaf index {index} is outside a tree of {size} leaves")
    path = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        index >>= 1
    return path


def root_from_audit_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes:
    """The root that leaf hash ``leaf`` at ``index`` in a tree of ``size`` leaves proves with ``path``.

    Compare the result with a trusted (signed) root. Raises
    :class:`~modelledger.errors.InvalidInput` when ``index``/``size`` are impossible or
    ``path`` has the wrong number of hashes for them.

    >>> levels = merkle_levels([leaf_hash(b"a"), leaf_hash(b"b"), leaf_hash(b"c")])
    >>> root_from_audit_path(levels[0][2], 2, 3, audit_path(levels, 2)) == levels[-1][0]
    True
    """
    if type(index) is not int or type(size) is not int or not 0 <= index < size:
        raise InvalidInput(f"leaf index {index!r} is outside a tree of {size!r} leaves")
    node = leaf
    used = 0
    while size > 1:
        if index % 2 == 0 and index == size - 1:
            pass  # an odd last node: it moves up unchanged
        else:
            if used >= len(path):
                raise InvalidInput("the audit path is too short for this leaf index and tree size")
            sibling = path[used]
            used += 1
            if len(sibling) != 32:
                raise InvalidInput("an audit path hash is not 32 bytes")
            node = node_hash(sibling, node) if index % 2 else node_hash(node, sibling)
        index >>= 1
        size = (size + 1) >> 1
    if used != len(path):
        raise InvalidInput("the audit path is too long for this leaf index and tree size")
    return node


def version_digest(files: Iterable[FileEntry], manifest: Mapping[str, Any]) -> str:
    """The digest of a version: changes if any file byte, file name or manifest field changes."""
    text = getattr(manifest, "canonical_text", None)  # stored manifests are kept canonical
    encoded = text.encode("utf-8") if isinstance(text, str) else canonicalize(dict(manifest))
    leaves = [b"manifest\x00" + encoded]
    for f in sorted(files, key=lambda e: e.path):
        leaves.append(f"file\x00{f.path}\x00{f.size}\x00{f.sha256}".encode())
    return "sha256:" + merkle_root(leaves).hex()
