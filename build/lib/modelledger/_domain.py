"""Domain value types: frozen, slotted, no I/O.

Each type converts to and from plain dicts (``to_dict``/``from_dict``) so the CLI,
the stores and a future REST layer share one representation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from ._object_lock import ObjectRetention
from ._time import from_stored, now, to_iso

__all__ = [
    "ColumnSpec",
    "DatasetSource",
    "DatasetVersion",
    "DownloadedVersion",
    "Erasure",
    "FileEntry",
    "GcItem",
    "GcReport",
    "Model",
    "ModelVersion",
    "Page",
    "Problem",
    "ProcessingStep",
    "Signature",
    "StagedVersion",
    "UploadedVersion",
    "VerifyRange",
    "VerifyRecord",
    "VerifyReport",
]

T = TypeVar("T")
_COMPACT = json.JSONEncoder(separators=(",", ":"))


class LazyJSON(Mapping[str, Any]):
    """A read-only mapping over a JSON object text, decoded on first access.

    Listing pages of versions need their numbers and aliases far more often than their
    manifests; decoding every manifest up front would dominate the cost of a listing.
    """

    __slots__ = ("_data", "_text")

    def __init__(self, text: str, data: dict[str, Any] | None = None) -> None:
        self._text = text
        self._data = data  # the decoded value, when the caller already has it

    def _load(self) -> dict[str, Any]:
        if self._data is None:
            self._data = json.loads(self._text)
        return self._data

    @property
    def canonical_text(self) -> str:
        """The JSON text as stored (canonical: sorted keys, no spaces)."""
        return self._text

    def __getitem__(self, key: str) -> Any:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def __eq__(self, other: object) -> bool:
        return self._load() == (dict(other) if isinstance(other, Mapping) else other)

    def __hash__(self) -> int:
        raise TypeError("unhashable type: 'LazyJSON'")

    def __repr__(self) -> str:
        return repr(self._load())


class LazyFiles(Sequence["FileEntry"]):
    """A version's file list, decoded from its JSON text on first access."""

    __slots__ = ("_items", "_text")

    def __init__(self, text: str) -> None:
        self._text = text
        self._items: tuple[FileEntry, ...] | None = None

    @property
    def stored_text(self) -> str | None:
        """The JSON text as stored, while it has not been decoded (None once it has: the
        decoded entries are then the truth)."""
        return self._text if self._items is None else None

    def _load(self) -> tuple[FileEntry, ...]:
        if self._items is None:
            self._items = tuple(FileEntry.from_dict(f) for f in json.loads(self._text))
        return self._items

    def __getitem__(self, index: Any) -> Any:
        return self._load()[index]

    def __len__(self) -> int:
        return len(self._load())

    def __iter__(self) -> Iterator[FileEntry]:
        return iter(self._load())

    def __eq__(self, other: object) -> bool:
        return self._load() == (tuple(other) if isinstance(other, Sequence) else other)

    def __hash__(self) -> int:
        return hash(self._load())

    def __repr__(self) -> str:
        return repr(self._load())


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime = field(default_factory=now)
    latest_version: int = 0
    archived: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "tags": dict(self.tags),
            "created_at": to_iso(self.created_at),
            "latest_version": self.latest_version,
            "archived": self.archived,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Model:
        return cls(
            name=data["name"],
            description=data.get("description", ""),
            tags=dict(data.get("tags", {})),
            created_at=from_stored(data["created_at"]),
            latest_version=int(data.get("latest_version", 0)),
            archived=bool(data.get("archived", False)),
        )


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One artefact file of a version: its path inside ``artifacts/``, size and sha256."""

    path: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileEntry:
        return cls(path=data["path"], size=int(data["size"]), sha256=data["sha256"])


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    name: str
    type: str  # one of: integer, float, boolean, string, datetime, binary, object
    nullable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "nullable": self.nullable}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnSpec:
        return cls(name=str(data["name"]), type=str(data["type"]), nullable=bool(data.get("nullable", False)))


@dataclass(frozen=True, slots=True)
class Signature:
    """Input and output columns of a model, inferred from a sample at registration."""

    inputs: tuple[ColumnSpec, ...]
    outputs: tuple[ColumnSpec, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [c.to_dict() for c in self.inputs],
            "outputs": [c.to_dict() for c in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        return cls(
            inputs=tuple(ColumnSpec.from_dict(c) for c in data.get("inputs", [])),
            outputs=tuple(ColumnSpec.from_dict(c) for c in data.get("outputs", [])),
        )


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One immutable, registered version of a model."""

    model: str
    version: int
    folder: str  # path of the version folder relative to the artifact root
    digest: str  # "sha256:<hex>" Merkle root over files and manifest
    flavor: str
    files: Sequence[FileEntry]
    manifest: Mapping[str, Any]
    created_at: datetime = field(default_factory=now)
    created_by: str = ""
    aliases: tuple[str, ...] = ()
    key: int = 0  # the version's numeric key in this registry (prediction ids carry it)
    tags: Mapping[str, str] = field(default_factory=dict)  # set with Registry.set_version_tags

    @property
    def uri(self) -> str:
        return f"models:/{self.model}/{self.version}"

    @property
    def signature(self) -> Signature | None:
        raw = self.manifest.get("signature")
        return Signature.from_dict(raw) if raw else None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self._head(),
            "files": [f.to_dict() for f in self.files],
            "manifest": dict(self.manifest),
        }

    def to_json(self, **extra: Any) -> str:
        """``json.dumps(self.to_dict() | extra)``, compact, without decoding what came as JSON.

        A version read from the registry holds its manifest and file list as the JSON text the
        database stores, and a page of versions is mostly that text: here it is copied into the
        output as it is, where ``to_dict()`` would decode it for an encoder to encode again.
        """
        text = _COMPACT.encode(self._head() | extra)
        files = self.files.stored_text if isinstance(self.files, LazyFiles) else None
        if files is None:
            files = _COMPACT.encode([f.to_dict() for f in self.files])
        manifest = self.manifest.canonical_text if isinstance(self.manifest, LazyJSON) else None
        if manifest is None:
            manifest = _COMPACT.encode(dict(self.manifest))
        return f'{text[:-1]},"files":{files},"manifest":{manifest}}}'

    def _head(self) -> dict[str, Any]:
        """``to_dict()`` but its two large values, ``files`` and ``manifest``."""
        return {
            "model": self.model,
            "version": self.version,
            "uri": self.uri,
            "folder": self.folder,
            "digest": self.digest,
            "flavor": self.flavor,
            "created_at": to_iso(self.created_at),
            "created_by": self.created_by,
            "aliases": list(self.aliases),
            "key": self.key,
            "tags": dict(self.tags),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelVersion:
        return cls(
            model=data["model"],
            version=int(data["version"]),
            folder=data["folder"],
            digest=data["digest"],
            flavor=data["flavor"],
            files=tuple(FileEntry.from_dict(f) for f in data["files"]),
            manifest=dict(data["manifest"]),
            created_at=from_stored(data["created_at"]),
            created_by=data.get("created_by", ""),
            aliases=tuple(data.get("aliases", ())),
            key=int(data.get("key", 0)),
            tags=dict(data.get("tags") or {}),
        )


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; pass ``next_cursor`` back to get the next one."""

    items: Sequence[T]
    next_cursor: str | None = None

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding of ``verify``: kind is mismatch, missing, orphan or unreadable."""

    kind: str
    path: str
    detail: str
    version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "detail": self.detail, "version": self.version}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Problem:
        return cls(
            kind=str(data["kind"]),
            path=str(data["path"]),
            detail=str(data["detail"]),
            version=data.get("version"),
        )

    def __str__(self) -> str:
        who = f"{self.version}: " if self.version else ""
        return f"{self.kind}: {who}{self.path}: {self.detail}"


@dataclass(frozen=True, slots=True)
class GcItem:
    """Something under the artefact root that no version or data set references.

    ``kind`` is ``model folder`` (a version folder never registered: a failed or abandoned
    registration), ``data set file`` or ``ingest staging`` (an interrupted data set ingest).
    ``modified`` is the newest modification time found in it (None if the store gives none).
    """

    path: str
    kind: str
    size_bytes: int
    modified: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "size_bytes": self.size_bytes,
            "modified": to_iso(self.modified) if self.modified else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GcItem:
        modified = data.get("modified")
        return cls(
            path=str(data["path"]),
            kind=str(data["kind"]),
            size_bytes=int(data["size_bytes"]),
            modified=None if modified is None else from_stored(modified),
        )


@dataclass(frozen=True, slots=True)
class GcReport:
    """What ``Registry.gc`` found (and removed, when ``deleted``).

    ``items`` are the unreferenced folders and files older than the grace period;
    ``recent`` counts those left alone because they are younger (a registration may still
    be writing them). ``retained`` are objects of unreferenced folders and files that S3
    Object Lock would refuse to delete yet (retention not over, or a legal hold): their
    folder or file is left whole, not in ``items``, for a later ``gc`` to collect.
    """

    items: tuple[GcItem, ...]
    deleted: bool
    recent: int = 0
    retained: tuple[ObjectRetention, ...] = ()

    @property
    def size_bytes(self) -> int:
        return sum(i.size_bytes for i in self.items)

    def to_dict(self) -> dict[str, Any]:
        return {
            "deleted": self.deleted,
            "size_bytes": self.size_bytes,
            "recent": self.recent,
            "items": [i.to_dict() for i in self.items],
            "retained": [r.to_dict() for r in self.retained],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GcReport:
        """The report from :meth:`to_dict` output (``size_bytes`` is derived from the items)."""
        return cls(
            items=tuple(GcItem.from_dict(i) for i in data.get("items", ())),
            deleted=bool(data["deleted"]),
            recent=int(data.get("recent", 0)),
            retained=tuple(ObjectRetention.from_dict(r) for r in data.get("retained", ())),
        )


@dataclass(frozen=True, slots=True)
class Erasure:
    """A recorded erasure, from its ledger event: ``target`` (``models:/x/3``, ``datasets:/d/2``
    or ``predictions:/x/3``), what it removed (``files``: path, sha256, size each), who, when
    and why. The bytes are gone; their digests and every event about them stay."""

    target: str
    action: str
    actor: str
    time: str
    reason: str
    seq: int
    files: tuple[Mapping[str, Any], ...] = ()

    @property
    def paths(self) -> frozenset[str]:
        return frozenset(str(f.get("path")) for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "action": self.action,
            "actor": self.actor,
            "time": self.time,
            "reason": self.reason,
            "seq": self.seq,
            "files": [dict(f) for f in self.files],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Erasure:
        return cls(
            target=str(data["target"]),
            action=str(data["action"]),
            actor=str(data["actor"]),
            time=str(data["time"]),
            reason=str(data["reason"]),
            seq=int(data["seq"]),
            files=tuple(dict(f) for f in data.get("files", ())),
        )

    def __str__(self) -> str:
        return (
            f"{self.target} erased at {self.time} by {self.actor} ({self.reason}): {len(self.files)} file(s)"
        )


@dataclass(frozen=True, slots=True)
class VerifyRecord:
    """What a clean ``verify`` proved, signed by the verifier's own key, so that
    ``verify(since_last=True)`` can start from it.

    ``seq`` and ``head_hash`` are the last signed checkpoint the run proved (the chain up to
    it is intact and every write up to it authorised); ``version_key`` and ``dataset_key``
    the highest version and data set version keys whose files it re-hashed (keys only
    grow, so what came after is a range). ``full_time`` is when the last full verify in the
    line of records ran (carried forward by ``since_last`` runs), ``time`` when this one
    did. ``signature`` is base64 Ed25519 by ``key_id`` over :meth:`payload_dict`.
    """

    seq: int
    head_hash: str
    version_key: int
    dataset_key: int
    time: str
    full_time: str
    full: bool
    key_id: str
    signature: str = ""

    def payload_dict(self) -> dict[str, Any]:
        """Everything but the signature: what is signed (canonical JSON, with a type tag)."""
        return {
            "seq": self.seq,
            "head_hash": self.head_hash,
            "version_key": self.version_key,
            "dataset_key": self.dataset_key,
            "time": self.time,
            "full_time": self.full_time,
            "full": self.full,
            "key_id": self.key_id,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.payload_dict(), "signature": self.signature}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VerifyRecord:
        return cls(
            seq=int(data["seq"]),
            head_hash=str(data["head_hash"]),
            version_key=int(data["version_key"]),
            dataset_key=int(data["dataset_key"]),
            time=str(data["time"]),
            full_time=str(data["full_time"]),
            full=bool(data["full"]),
            key_id=str(data["key_id"]),
            signature=str(data.get("signature", "")),
        )


@dataclass(frozen=True, slots=True)
class VerifyRange:
    """What one ``verify`` run covered: ledger events ``after_seq + 1 .. to_seq``, version
    keys ``after_version_key + 1 .. to_version_key`` and data set version keys
    ``after_dataset_key + 1 .. to_dataset_key`` (a full run starts every range at 0)."""

    after_seq: int = 0
    to_seq: int = 0
    after_version_key: int = 0
    to_version_key: int = 0
    after_dataset_key: int = 0
    to_dataset_key: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "after_seq": self.after_seq,
            "to_seq": self.to_seq,
            "after_version_key": self.after_version_key,
            "to_version_key": self.to_version_key,
            "after_dataset_key": self.after_dataset_key,
            "to_dataset_key": self.to_dataset_key,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VerifyRange:
        return cls(**{k: int(data.get(k, 0)) for k in cls.__slots__})

    def __str__(self) -> str:
        return (
            f"events {self.after_seq + 1}..{self.to_seq}, version keys "
            f"{self.after_version_key + 1}..{self.to_version_key}, data set keys "
            f"{self.after_dataset_key + 1}..{self.to_dataset_key}"
        )


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What ``Registry.verify`` found: artefacts, data sets, manifests, the ledger and the state tables.

    ``problems`` lists every artefact or state finding and the *first* ledger event that
    does not match (a broken chain makes every later event suspect).
    """

    versions_checked: int
    files_checked: int
    problems: tuple[Problem, ...]
    events_checked: int = 0
    checkpoints_checked: int = 0
    datasets_checked: int = 0
    in_flight: tuple[Problem, ...] = ()  # unreferenced but young: probably a write under way
    unrecorded: tuple[Problem, ...] = ()  # capture files the ledger has no record of yet
    erased: tuple[Erasure, ...] = ()  # what was erased on purpose: recorded, not a problem
    # events a registry server wrote for a member, by how the member proved who they were:
    # "key" (the member signed the request) or "token" / "oidc" (the server attests it)
    delegated: Mapping[str, int] = field(default_factory=dict)
    # "full", or "since_last" (only what came after ``since``, plus continuity with it)
    mode: str = "full"
    covered: VerifyRange = field(default_factory=VerifyRange)
    since: VerifyRecord | None = None  # the earlier record a since_last run continued from
    recorded: VerifyRecord | None = None  # what this run recorded (None: nothing, see notes)
    notes: tuple[str, ...] = ()  # e.g. why a since_last run was full, why nothing was recorded
    # verify(retention=True): S3 Object Lock retention of each object under the artefact root
    retention: tuple[ObjectRetention, ...] = ()

    @property
    def ok(self) -> bool:
        """True when nothing is wrong; what is in flight does not count against it."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "versions_checked": self.versions_checked,
            "datasets_checked": self.datasets_checked,
            "files_checked": self.files_checked,
            "events_checked": self.events_checked,
            "checkpoints_checked": self.checkpoints_checked,
            "problems": [p.to_dict() for p in self.problems],
            "in_flight": [p.to_dict() for p in self.in_flight],
            "unrecorded": [p.to_dict() for p in self.unrecorded],
            "erased": [e.to_dict() for e in self.erased],
            "delegated": dict(self.delegated),
            "mode": self.mode,
            "covered": self.covered.to_dict(),
            "since": None if self.since is None else self.since.to_dict(),
            "recorded": None if self.recorded is None else self.recorded.to_dict(),
            "notes": list(self.notes),
            "retention": [r.to_dict() for r in self.retention],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VerifyReport:
        """The report from :meth:`to_dict` output (``ok`` is derived from the problems, so ignored)."""

        def problems(key: str) -> tuple[Problem, ...]:
            return tuple(Problem.from_dict(p) for p in data.get(key, ()))

        return cls(
            versions_checked=int(data["versions_checked"]),
            files_checked=int(data["files_checked"]),
            problems=problems("problems"),
            events_checked=int(data.get("events_checked", 0)),
            checkpoints_checked=int(data.get("checkpoints_checked", 0)),
            datasets_checked=int(data.get("datasets_checked", 0)),
            in_flight=problems("in_flight"),
            unrecorded=problems("unrecorded"),
            erased=tuple(Erasure.from_dict(e) for e in data.get("erased", ())),
            delegated={str(k): int(v) for k, v in (data.get("delegated") or {}).items()},
            mode=str(data.get("mode", "full")),
            covered=VerifyRange.from_dict(data.get("covered") or {}),
            since=None if data.get("since") is None else VerifyRecord.from_dict(data["since"]),
            recorded=None if data.get("recorded") is None else VerifyRecord.from_dict(data["recorded"]),
            notes=tuple(str(n) for n in data.get("notes", ())),
            retention=tuple(ObjectRetention.from_dict(r) for r in data.get("retention", ())),
        )


@dataclass(frozen=True, slots=True)
class UploadedVersion:
    """Artefacts written and sealed in their version folder, not yet registered.

    Made by ``Registry.upload``; ``Registry.create_version`` turns it into a :class:`ModelVersion` in one
    metadata transaction; until then the folder is an orphan that ``verify``
    reports.
    """

    model: str
    folder: str
    digest: str
    flavor: str
    files: tuple[FileEntry, ...]
    manifest: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "folder": self.folder,
            "digest": self.digest,
            "flavor": self.flavor,
            "files": [f.to_dict() for f in self.files],
            "manifest": dict(self.manifest),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UploadedVersion:
        return cls(
            model=str(data["model"]),
            folder=str(data["folder"]),
            digest=str(data["digest"]),
            flavor=str(data["flavor"]),
            files=tuple(FileEntry.from_dict(f) for f in data["files"]),
            manifest=dict(data["manifest"]),
        )


StagedVersion = UploadedVersion
"""Deprecated name of :class:`UploadedVersion` (kept for one release)."""


@dataclass(frozen=True, slots=True)
class DownloadedVersion:
    """What ``Registry.download`` left in ``dest``: the version, and every file asked for,
    each checked against its recorded sha256 and size (``files``: their paths in ``dest``;
    ``downloaded``: those this call wrote, the others were there already, byte for byte).
    ``manifest_file`` is the version record written beside them, when one was asked for."""

    version: ModelVersion
    dest: str
    files: tuple[str, ...]
    downloaded: tuple[str, ...]
    manifest_file: str | None = None

    @property
    def paths(self) -> list[str]:
        """The files' full paths, in the order of ``files``."""
        return [f"{self.dest.rstrip('/')}/{f}" for f in self.files]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version.to_dict(),
            "dest": self.dest,
            "files": list(self.files),
            "downloaded": list(self.downloaded),
            "manifest_file": self.manifest_file,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DownloadedVersion:
        return cls(
            version=ModelVersion.from_dict(data["version"]),
            dest=str(data["dest"]),
            files=tuple(str(f) for f in data["files"]),
            downloaded=tuple(str(f) for f in data["downloaded"]),
            manifest_file=data.get("manifest_file"),
        )


@dataclass(frozen=True, slots=True)
class DatasetSource:
    """Where a data set came from: a file, a table, a query or an API."""

    uri: str | None = None
    kind: str = "file"  # file | table | query | api | dataframe
    query: str | None = None
    extracted_at: str | None = None
    code: Mapping[str, Any] = field(default_factory=dict)  # repo_url, path, revision, dirty

    KINDS = ("file", "table", "query", "api", "dataframe")

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "kind": self.kind,
            "query": self.query,
            "extracted_at": self.extracted_at,
            "code": dict(self.code),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetSource:
        return cls(
            uri=data.get("uri"),
            kind=data.get("kind", "file"),
            query=data.get("query"),
            extracted_at=data.get("extracted_at"),
            code=dict(data.get("code") or {}),
        )


@dataclass(frozen=True, slots=True)
class ProcessingStep:
    """One processing step (imputation, one-hot encoding, a split...) and the code that ran it."""

    name: str
    kind: str = "manual"
    params: Mapping[str, Any] = field(default_factory=dict)
    columns: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()  # dataset version identifiers: datasets:/name/3
    code: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "params": dict(self.params),
            "columns": list(self.columns),
            "inputs": list(self.inputs),
            "code": dict(self.code),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcessingStep:
        return cls(
            name=str(data["name"]),
            kind=str(data.get("kind", "manual")),
            params=dict(data.get("params") or {}),
            columns=tuple(data.get("columns") or ()),
            inputs=tuple(data.get("inputs") or ()),
            code=dict(data.get("code") or {}),
        )


@dataclass(frozen=True, slots=True)
class DatasetVersion:
    """An immutable, versioned copy of a data set (Parquet), with its source and steps."""

    name: str
    version: int
    digest: str  # sha256 over the normalised content: same rows, same digest
    path: str  # Parquet file, relative to the artifact root
    file_sha256: str
    size_bytes: int
    row_count: int
    schema: tuple[ColumnSpec, ...]
    stats: Mapping[str, Mapping[str, Any]]
    source: DatasetSource
    steps: tuple[ProcessingStep, ...] = ()
    created_at: datetime = field(default_factory=now)
    created_by: str = ""
    key: int = 0

    @property
    def uri(self) -> str:
        return f"datasets:/{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "uri": self.uri,
            "digest": self.digest,
            "path": self.path,
            "file_sha256": self.file_sha256,
            "size_bytes": self.size_bytes,
            "row_count": self.row_count,
            "schema": [c.to_dict() for c in self.schema],
            "stats": {k: dict(v) for k, v in self.stats.items()},
            "source": self.source.to_dict(),
            "steps": [s.to_dict() for s in self.steps],
            "created_at": to_iso(self.created_at),
            "created_by": self.created_by,
            "key": self.key,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetVersion:
        """The version from :meth:`to_dict` output (``uri`` is derived from name and version)."""
        return cls(
            name=str(data["name"]),
            version=int(data["version"]),
            digest=str(data["digest"]),
            path=str(data["path"]),
            file_sha256=str(data["file_sha256"]),
            size_bytes=int(data["size_bytes"]),
            row_count=int(data["row_count"]),
            schema=tuple(ColumnSpec.from_dict(c) for c in data["schema"]),
            stats={str(k): dict(v) for k, v in (data.get("stats") or {}).items()},
            source=DatasetSource.from_dict(data.get("source") or {}),
            steps=tuple(ProcessingStep.from_dict(st) for st in data.get("steps", ())),
            created_at=from_stored(data["created_at"]),
            created_by=str(data.get("created_by", "")),
            key=int(data.get("key", 0)),
        )
