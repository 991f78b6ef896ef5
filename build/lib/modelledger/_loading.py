"""Loading a version: its digest is proven against the ledger's signed registration record,
every artefact byte is checked against that digest before anything is deserialised, then the
version's flavor turns the bytes back into a model."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._domain import ModelVersion
from ._integrity import version_digest
from ._ledger import KeyRing, check_segment
from ._loaded import LoadedModel
from .errors import IntegrityError, InvalidInput, NotFound
from .flavors import get_flavor
from .stores.artifacts import ArtifactStore
from .stores.protocols import LedgerStore

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["check_registration", "load_verified"]


class _FolderOnly:
    """A version registered as plain files, with no loader: it has no predict."""

    def __init__(self, version: ModelVersion) -> None:
        self.files = [f.path for f in version.files]

    def predict(self, data: Any) -> Any:
        raise InvalidInput(
            "this version is a folder of files with no flavor to load it; "
            "register it with a manifest that sets 'flavor' and 'entry'"
        )


def check_registration(
    store: LedgerStore,
    mv: ModelVersion,
    public: Ed25519PublicKey | KeyRing,
    *,
    subjects: Sequence[str] | None = None,
) -> None:
    """Raise :class:`IntegrityError` unless ``mv``'s digest is the one its ``version.registered``
    ledger event records, and that event is proven by the chain up to a checkpoint signed with
    an enrolled key. The version row is an index; this record is the authority. ``subjects``
    are the version's subjects under every name its model has had (a renamed model's version
    was registered under an older name)."""
    segment = None
    for subject in subjects or [mv.uri]:
        segment = store.segment_for(subject, "version.registered")
        if segment is not None:
            break
    if segment is None:
        raise IntegrityError(mv.uri, "has no registration event in the ledger")
    check_segment(segment, public)
    recorded = segment.events[0][0].data.get("digest")
    if recorded != mv.digest:
        raise IntegrityError(
            mv.uri, f"digest {mv.digest} is not the one registered in the ledger ({recorded})"
        )


def load_verified(artifacts: ArtifactStore, mv: ModelVersion) -> LoadedModel:
    """``mv`` loaded from ``artifacts``, or :class:`IntegrityError` naming the first byte that
    does not match.

    Every file is hashed against the version's file list first; then the flavor loads,
    reading files through ``read(relpath)``, which hashes each file again as it is read, so
    the bytes a flavor deserialises are the bytes that were verified (the entry file is read
    once: hashed, kept and handed over).
    """
    if version_digest(mv.files, mv.manifest) != mv.digest:
        raise IntegrityError(f"{mv.uri} (manifest or file list)", "does not match the recorded digest")
    entry = mv.manifest.get("entry")
    recorded = {f.path: f for f in mv.files}
    kept: dict[str, bytes] = {}
    for f in mv.files:
        rel = f"{mv.folder}/artifacts/{f.path}"
        try:
            if f.path == entry:
                data = artifacts.read_bytes(rel)
                size, sha = len(data), hashlib.sha256(data).hexdigest()
                kept[f.path] = data
            else:
                size, sha = artifacts.hash_file(rel)
        except NotFound as exc:
            raise IntegrityError(rel, "is missing") from exc
        if sha != f.sha256 or size != f.size:
            raise IntegrityError(rel, f"sha256 is {sha}, expected {f.sha256}")
    if mv.flavor == "files":
        return LoadedModel(_FolderOnly(mv), mv)

    def read(path: str) -> bytes:
        if path in kept:
            return kept.pop(path)  # a flavor reads a file once; a second read hashes again
        f = recorded.get(path)
        if f is None:
            raise NotFound(
                "file", f"{path} in {mv.uri}", hint="the flavor asked for a file the version lacks"
            )
        rel = f"{mv.folder}/artifacts/{path}"
        try:
            data = artifacts.read_bytes(rel)
        except NotFound as exc:
            raise IntegrityError(rel, "is missing") from exc
        sha = hashlib.sha256(data).hexdigest()
        if sha != f.sha256 or len(data) != f.size:
            raise IntegrityError(rel, f"sha256 is {sha}, expected {f.sha256}")
        return data

    flavor = get_flavor(mv.flavor)
    return LoadedModel(flavor.load(read, entry or flavor.entry), mv)
