"""Loading a version: every artefact byte is checked against its digest before anything is
deserialised, then the version's flavor turns the bytes back into a model."""

from __future__ import annotations

import hashlib
from typing import Any

from ._domain import ModelVersion
from ._integrity import version_digest
from ._loaded import LoadedModel
from .errors import IntegrityError, InvalidInput, NotFound
from .flavors import get_flavor
from .stores.artifacts import ArtifactStore

__all__ = ["load_verified"]


class _FolderOnly:
    """A version registered as plain files, with no loader: it has no predict."""

    def __init__(self, version: ModelVersion) -> None:
        self.files = [f.path for f in version.files]

    def predict(self, data: Any) -> Any:
        raise InvalidInput(
            "this version is a folder of files with no flavor to load it; "
            "register it with a manifest that sets 'flavor' and 'entry'"
        )


def load_verified(artifacts: ArtifactStore, mv: ModelVersion) -> LoadedModel:
    """``mv`` loaded from ``artifacts``, or :class:`IntegrityError` naming the first byte that
    does not match (the entry file is read once: hashed and then handed to the flavor)."""
    if version_digest(mv.files, mv.manifest) != mv.digest:
        raise IntegrityError(f"{mv.uri} (manifest or file list)", "does not match the recorded digest")
    entry = mv.manifest.get("entry")
    verified: dict[str, bytes] = {}
    for f in mv.files:
        rel = f"{mv.folder}/artifacts/{f.path}"
        try:
            if f.path == entry:
                data = artifacts.read_bytes(rel)
                size, sha = len(data), hashlib.sha256(data).hexdigest()
                verified[f.path] = data
            else:
                size, sha = artifacts.hash_file(rel)
        except NotFound as exc:
            raise IntegrityError(rel, "is missing") from exc
        if sha != f.sha256 or size != f.size:
            raise IntegrityError(rel, f"sha256 is {sha}, expected {f.sha256}")
    if mv.flavor == "files":
        return LoadedModel(_FolderOnly(mv), mv)
    flavor = get_flavor(mv.flavor)
    return LoadedModel(flavor.load(verified.__getitem__, entry or flavor.entry), mv)
