"""Erasure: removing bytes that must go (data that must be erased by law) as a recorded act.

An erasure is planned first (what to remove, with the sha256 and size of every file), then
recorded in the ledger (``version.erased``, ``dataset.erased`` or ``predictions.erased``: what,
by whom, when, why), and only then are the bytes removed. The version or data set row, its
digests and every event about it stay, so ``verify`` still proves the chain and says what was
erased rather than reporting missing files. Erasing again finishes a removal that failed
half-way; it records nothing new.

What each target removes:

* ``models:/x/3``: every artefact file of the version (``<folder>/artifacts/...``); its
  ``manifest.json`` (metadata and digests) stays, and so do its captured predictions
  (erase ``predictions:/x/3`` for those);
* ``datasets:/d/2``: the data set version's Parquet file;
* ``predictions:/x/3``: every capture file of the version written so far.

Under S3 Object Lock (``object_lock``), removing means deleting every version of each object
(a plain delete only adds a delete marker). S3 refuses to delete a version before its
retain-until date (compliance mode: nobody can; governance mode: only a request that
bypasses governance retention, which modelledger does not send) or while it is under a
legal hold. Those objects are hidden behind a delete marker, so reads and ``verify`` treat
them as erased, and :class:`~modelledger.errors.ObjectRetained` says until when their bytes
stay: erasing again after that date removes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._domain import DatasetVersion, Erasure, ModelVersion
from ._lifecycle import ERASURE_ACTIONS, EventDraft, record_erasure
from ._object_lock import ObjectRetention
from ._serving import parse_part_name, predictions_folder
from .errors import Conflict, ObjectRetained
from .stores.artifacts import ArtifactStore
from .stores.protocols import LedgerStore

__all__ = [
    "ErasurePlan",
    "erasure_from_event",
    "find_erasure",
    "plan_dataset_erasure",
    "plan_predictions_erasure",
    "plan_version_erasure",
    "remove_erased",
]


@dataclass(frozen=True, slots=True)
class ErasurePlan:
    """What an erasure will remove: its ledger record (None: recorded already, by ``existing``)
    and the files (path, sha256, size) to remove."""

    target: str
    draft: EventDraft | None
    files: tuple[Mapping[str, Any], ...]
    existing: Erasure | None = None


def erasure_from_event(event: Any) -> Erasure:
    """The :class:`Erasure` an ``*.erased`` ledger event records."""
    return Erasure(
        target=event.subject,
        action=event.action,
        actor=event.actor,
        time=event.time,
        reason=event.reason or "",
        seq=event.seq,
        files=tuple(dict(f) for f in event.data.get("files") or ()),
    )


def find_erasure(store: LedgerStore, subjects: Sequence[str], action: str) -> Erasure | None:
    """The first ``action`` erasure recorded about any of ``subjects`` (a version's subjects
    under each name its model had), or None."""
    if action not in ERASURE_ACTIONS:
        raise ValueError(action)
    rows = store.audit(
        subjects=list(subjects),
        subject_prefixes=[],
        actor=None,
        action=action,
        since=None,
        until=None,
        after=0,
        limit=1,
    )
    return erasure_from_event(rows[0][0]) if rows else None


def _plan(
    target: str,
    action: str,
    existing: Erasure | None,
    data: Mapping[str, Any],
    files: Sequence[Mapping[str, Any]],
    reason: str,
) -> ErasurePlan:
    if existing is not None:
        # recorded before: this call only finishes removing what the record names
        return ErasurePlan(target, None, existing.files, existing)
    draft = record_erasure(action, target, data, files, reason=reason)
    return ErasurePlan(target, draft, tuple(dict(f) for f in files))


def plan_version_erasure(mv: ModelVersion, existing: Erasure | None, *, reason: str) -> ErasurePlan:
    """Erase a model version's artefact files (the manifest and digests stay)."""
    files = [
        {"path": f"{mv.folder}/artifacts/{f.path}", "sha256": f.sha256, "size": f.size} for f in mv.files
    ]
    data = {"model": mv.model, "version": mv.version, "folder": mv.folder, "digest": mv.digest}
    return _plan(mv.uri, "version.erased", existing, data, files, reason)


def plan_dataset_erasure(dv: DatasetVersion, existing: Erasure | None, *, reason: str) -> ErasurePlan:
    """Erase a data set version's file (its row, digest and lineage stay)."""
    files = [{"path": dv.path, "sha256": dv.file_sha256, "size": dv.size_bytes}]
    data = {"uri": dv.uri, "digest": dv.digest}
    return _plan(dv.uri, "dataset.erased", existing, data, files, reason)


def plan_predictions_erasure(
    art: ArtifactStore, mv: ModelVersion, recorded: Mapping[str, Mapping[str, Any]], *, reason: str
) -> ErasurePlan:
    """Erase every capture file of a version written so far. ``recorded`` maps capture paths
    to their ``predictions.written`` records (whose sha256 is named); a file with no record
    is hashed now."""
    art.refresh()
    folder = predictions_folder(mv.folder)
    files = []
    for rel in sorted(art.list_files(folder)):
        if parse_part_name(rel.rsplit("/", 1)[-1]) is None:
            continue
        path = f"{folder}/{rel}"
        record = recorded.get(path)
        if record is not None:
            files.append({"path": path, "sha256": record.get("sha256"), "size": record.get("size")})
        else:
            size, sha = art.hash_file(path)
            files.append({"path": path, "sha256": sha, "size": size})
    target = f"predictions:/{mv.model}/{mv.version}"
    if not files:
        raise Conflict(f"{target} has no captured predictions to erase")
    data = {"model": mv.model, "version": mv.version}
    return _plan(target, "predictions.erased", None, data, files, reason)


def remove_erased(art: ArtifactStore, files: Sequence[Mapping[str, Any]], *, target: str = "erasure") -> None:
    """Remove the files an erasure names (already gone: nothing to do). Raises
    :class:`ObjectRetained` after trying every file when S3 Object Lock kept some of them."""
    kept: list[ObjectRetention] = []
    for f in files:
        kept.extend(art.remove(str(f["path"])))
    art.refresh()
    if kept:
        raise ObjectRetained(f"the erasure of {target} is recorded, but not complete", kept)
