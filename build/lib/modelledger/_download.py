"""Downloading a version's files into a folder, for any flavor (a ``files`` version has no
loader: this is how its bytes come back).

Plan, then write. :func:`plan_download` does every check first, reading nothing but the
version record and the destination: the file list must digest to the version's recorded
digest (which the caller has proven against the ledger), every path asked for must be one of
the version's files and stay inside ``dest``, and a file already in ``dest`` is either the
same bytes (kept: downloading twice is a no-op) or refused unless ``overwrite``.
:func:`download_planned` then streams each file into a private staging folder inside
``dest``, hashing and counting as the bytes arrive (memory stays at one chunk, whatever the
file's size), and moves the files into place only when every one of them has matched its
recorded sha256 and size. Any failure removes the staging folder: no partial or unverified
file is ever left under its own name.

The local registry streams from its artefact store, the remote client from the server's file
route; both hand :func:`download_planned` a ``chunks(entry)`` callable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ._domain import DownloadedVersion, FileEntry, ModelVersion
from ._integrity import version_digest
from .errors import AlreadyExists, Erased, IntegrityError, InvalidInput, NotFound

__all__ = ["MANIFEST_FILE", "DownloadPlan", "download_planned", "plan_download"]

MANIFEST_FILE = "modelledger-version.json"
"""The version record written beside the files with ``manifest=True``: the version's
``to_dict()`` (identifier, digest, every file's sha256 and size, the manifest), enough to check
the folder again later without the registry."""

_CHUNK = 1 << 20

Chunks = Callable[[FileEntry], Iterator[bytes]]
"""The bytes of one of the version's files, in chunks."""


@dataclass(frozen=True, slots=True)
class DownloadPlan:
    """What a download will do: fetch ``fetch``, keep ``present`` (already in ``dest``, same
    bytes), and write the version record when ``manifest`` is set."""

    version: ModelVersion
    dest: Path
    fetch: tuple[FileEntry, ...]
    present: tuple[FileEntry, ...]
    manifest: bool
    created_dest: bool

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.fetch)


def _target(dest: Path, rel: str, uri: str) -> Path:
    """``dest/rel``, refused unless ``rel`` is a plain relative path that stays inside ``dest``
    (registration checks paths too: this guards against a tampered file list)."""
    parts = PurePosixPath(rel).parts
    if not rel or rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts):
        raise IntegrityError(f"{uri} {rel}", "is not a safe relative file path")
    return dest.joinpath(*parts)


def _same_file(path: Path, entry: FileEntry) -> bool:
    """Whether ``path`` holds exactly ``entry``'s bytes (size first: hashing only on a match)."""
    if not path.is_file() or path.stat().st_size != entry.size:
        return False
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest() == entry.sha256


def plan_download(
    mv: ModelVersion,
    dest: str | os.PathLike[str],
    *,
    files: Sequence[str] | None = None,
    overwrite: bool = False,
    manifest: bool = False,
) -> DownloadPlan:
    """Every check of a download, before any byte is fetched or written (see the module text)."""
    if version_digest(mv.files, mv.manifest) != mv.digest:
        raise IntegrityError(f"{mv.uri} (manifest or file list)", "does not match the recorded digest")
    folder = Path(dest)
    if folder.exists() and not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder: give a folder to download {mv.uri} into")
    by_path = {f.path: f for f in mv.files}
    if files is None:
        chosen = list(mv.files)
    else:
        if isinstance(files, str):
            files = [files]
        unknown = [p for p in files if p not in by_path]
        if unknown:
            listed = ", ".join(sorted(by_path)[:10])
            raise NotFound("file", f"{unknown[0]} in {mv.uri} (its files: {listed})")
        chosen = [by_path[p] for p in dict.fromkeys(files)]
        if not chosen:
            raise InvalidInput("files= names no file: leave it out to download every file")
    if manifest and MANIFEST_FILE in by_path:
        raise InvalidInput(f"{mv.uri} has a file named {MANIFEST_FILE}: download without the version record")
    fetch: list[FileEntry] = []
    present: list[FileEntry] = []
    taken: list[str] = []
    for entry in chosen:
        target = _target(folder, entry.path, mv.uri)
        if target.is_dir():
            raise AlreadyExists("folder", f"{target} (the version has a file there)")
        if _same_file(target, entry):
            present.append(entry)
            continue
        if target.exists() and not overwrite:
            taken.append(str(target))
        fetch.append(entry)
    if manifest:
        record = folder / MANIFEST_FILE
        if record.exists() and not overwrite and record.read_bytes() != _record(mv):
            taken.append(str(record))
    if taken:
        more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
        raise AlreadyExists(
            "file",
            f"{taken[0]}{more} (different bytes from {mv.uri}): pass overwrite=True "
            "(--overwrite) to replace, or choose another folder",
        )
    return DownloadPlan(mv, folder, tuple(fetch), tuple(present), manifest, not folder.exists())


def _record(mv: ModelVersion) -> bytes:
    return (json.dumps(mv.to_dict(), indent=2, sort_keys=True) + "\n").encode()


def download_planned(
    plan: DownloadPlan,
    chunks: Chunks,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> DownloadedVersion:
    """Carry out ``plan``: stream, check, then move into place (see the module text).
    ``progress(bytes_done, bytes_total)`` is called as bytes arrive."""
    import shutil  # with bz2 and lzma: loaded by a download, not by `import modelledger`
    import tempfile  # the same: only a download makes a staging folder

    mv, dest = plan.version, plan.dest
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".modelledger-download-", dir=dest))
    done, total = 0, plan.total_bytes
    try:
        staged: list[tuple[Path, FileEntry]] = []
        for i, entry in enumerate(plan.fetch):
            tmp = staging / str(i)
            digest, size = hashlib.sha256(), 0
            stream = chunks(entry)
            try:
                with tmp.open("wb") as out:
                    for block in stream:
                        size += len(block)
                        if size > entry.size:
                            break  # longer than recorded: refused below, without reading on
                        digest.update(block)
                        out.write(block)
                        done += len(block)
                        if progress is not None:
                            progress(done, total)
            except Erased:
                raise
            except NotFound as exc:
                raise IntegrityError(f"{mv.uri} {entry.path}", "is missing from the artefact store") from exc
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()  # a generator's close() ends its HTTP response or open file
            if size != entry.size or digest.hexdigest() != entry.sha256:
                problem = (
                    f"size is {'more than ' if size > entry.size else ''}{size}, expected {entry.size}"
                    if size != entry.size
                    else f"sha256 is {digest.hexdigest()}, expected {entry.sha256}"
                )
                raise IntegrityError(f"{mv.uri} {entry.path}", problem)
            staged.append((tmp, entry))
        # every byte checked: only now does any file take its name
        for tmp, entry in staged:
            target = _target(dest, entry.path, mv.uri)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        record_path = None
        if plan.manifest:
            tmp = staging / "record"
            tmp.write_bytes(_record(mv))
            record_path = dest / MANIFEST_FILE
            os.replace(tmp, record_path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if plan.created_dest:
            _remove_if_empty(dest)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    wanted = {e.path for e in (*plan.fetch, *plan.present)}
    return DownloadedVersion(
        version=mv,
        dest=str(dest),
        files=tuple(f.path for f in mv.files if f.path in wanted),
        downloaded=tuple(e.path for e in plan.fetch),
        manifest_file=MANIFEST_FILE if record_path is not None else None,
    )


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # something else is in it: it was not only ours
        folder.rmdir()
