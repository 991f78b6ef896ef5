"""``registry.datasets``: register, find and read immutable data set versions."""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import IO, Any

from .._domain import DatasetSource, DatasetVersion, Erasure, Page, ProcessingStep
from .._identifiers import check_number, parse_dataset_uri, validate_dataset_name
from .._manifest import (
    DEFAULT_LIMITS,
    ManifestLimits,
    SourceInfo,
    capture_source,
    check_limits,
    redact_code,
    redact_url,
)
from .._paging import check_limit, decode_cursor, make_page
from .._time import now
from ..errors import (
    AlreadyExists,
    Conflict,
    Erased,
    IntegrityError,
    InvalidInput,
    InvalidManifest,
    ModelLedgerError,
    NotFound,
)
from ..stores.artifacts import ArtifactStore
from ..stores.protocols import DatasetStore, Signer
from .ingest import ingest

__all__ = ["DatasetPlan", "Datasets", "code_facts", "coerce_source"]


def coerce_source(value: DatasetSource | Mapping[str, Any] | str | None, data: Any) -> DatasetSource:
    if isinstance(value, DatasetSource):
        src = value
    elif isinstance(value, str):
        src = DatasetSource(uri=value, kind="file")
    elif isinstance(value, Mapping):
        unknown = set(value) - {"uri", "kind", "query", "extracted_at", "code"}
        if unknown:
            raise InvalidInput(f"unknown data source field(s): {', '.join(sorted(unknown))}")
        src = DatasetSource.from_dict(value)
    elif value is None:
        if isinstance(data, (str, os.PathLike)):
            src = DatasetSource(uri=os.fspath(data), kind="file")
        else:
            src = DatasetSource(kind="dataframe")
    else:
        raise InvalidInput("source must be a DatasetSource, a mapping or a URI string")
    if src.kind not in DatasetSource.KINDS:
        raise InvalidInput(
            f"data source kind must be one of {', '.join(DatasetSource.KINDS)}, got {src.kind!r}"
        )
    if src.kind == "query" and not src.query:
        raise InvalidInput("a data source of kind 'query' needs the query text")
    return src


def _step(value: ProcessingStep | Mapping[str, Any], limits: ManifestLimits) -> ProcessingStep:
    if isinstance(value, ProcessingStep):
        _check_step_params(value.name, value.params, limits)
        return value
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str) or not value["name"]:
        raise InvalidInput("each processing step needs at least a non-empty 'name'")
    unknown = set(value) - {"name", "kind", "params", "columns", "inputs", "code"}
    if unknown:
        raise InvalidInput(f"unknown processing step field(s): {', '.join(sorted(unknown))}")
    _check_step_params(value["name"], value.get("params") or {}, limits)
    try:
        json.dumps(dict(value.get("params") or {}), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"step {value['name']!r}: params must hold JSON values only ({exc})") from exc
    return ProcessingStep.from_dict(value)


def _check_step_params(name: str, params: Any, limits: ManifestLimits) -> None:
    """A step's params are held to the same limits as a model's (depth, sizes), before any
    recursive walk (JSON encoding) could fail on them with a RecursionError."""
    try:
        check_limits(params, "params", limits)
    except InvalidManifest as exc:
        raise InvalidInput(f"step {name!r}: params {exc.problem}") from exc


@dataclass(frozen=True, slots=True)
class DatasetPlan:
    """A data set registration checked in full and not yet written (see :meth:`Datasets.plan`)."""

    name: str
    data: Any
    source: DatasetSource
    steps: tuple[ProcessingStep, ...]
    storage_options: Mapping[str, Any]


class Datasets:
    """Data set versions of a registry. Reach it as ``registry.datasets``.

    It is given what it needs: the data set store, the artefact store, a callable that
    makes sure the schema is current, and who is acting.
    """

    def __init__(
        self,
        store: DatasetStore,
        artifacts: ArtifactStore,
        *,
        ready: Callable[..., None],
        actor: Callable[[], str],
        signer: Callable[[], Signer] | None = None,
        limits: ManifestLimits = DEFAULT_LIMITS,
        erased: Callable[[str], Erasure | None] | None = None,
    ) -> None:
        self._meta = store
        self._art = artifacts
        self._ready = ready
        self._actor = actor
        self._signer = signer
        self._limits = limits
        self._erased = erased  # the recorded erasure of a data set version, if any

    def register(
        self,
        name: str,
        data: Any,
        *,
        source: DatasetSource | Mapping[str, Any] | str | None = None,
        steps: Iterable[ProcessingStep | Mapping[str, Any]] = (),
        capture: bool = True,
        storage_options: Mapping[str, Any] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> DatasetVersion:
        """Store an immutable, compressed Parquet copy of ``data`` as the next version of ``name``.

        ``data`` is a pandas DataFrame, a pyarrow Table, or the path or fsspec URL of a CSV or
        Parquet file (streamed: memory stays bounded). Registering identical content again
        returns the existing version and stores nothing. ``steps`` are the processing steps
        that made this data, each naming its input data set versions.

        >>> raw = registry.datasets.register("applications-raw", "extract.csv", source={
        ...     "uri": "postgresql://dwh/loans", "kind": "query", "query": "SELECT ..."})  # doctest: +SKIP
        >>> clean = registry.datasets.register("applications", df, steps=[{
        ...     "name": "dedupe", "inputs": [raw.uri], "params": {"subset": ["id"]}}])  # doctest: +SKIP
        """
        plan = self.plan(
            name, data, source=source, steps=steps, capture=capture, storage_options=storage_options
        )
        version, _created = self.write(plan, progress=progress)
        return version

    def plan(
        self,
        name: str,
        data: Any,
        *,
        source: DatasetSource | Mapping[str, Any] | str | None = None,
        steps: Iterable[ProcessingStep | Mapping[str, Any]] = (),
        code: Mapping[str, Any] | None = None,
        capture: bool = False,
        storage_options: Mapping[str, Any] | None = None,
    ) -> DatasetPlan:
        """Check a registration in full, writing nothing.

        ``code`` (the git source that made the data; with ``capture``, read from the running
        script's checkout when needed) is recorded on the source and on every step that
        names none. Unknown step inputs fail here; a name or ``name@latest`` is
        pinned to the version it means now.
        """
        validate_dataset_name(name)
        src = coerce_source(source, data)
        step_list = [_step(s, self._limits) for s in steps]
        self._ready(write=True)  # planning is the first half of a write: the embedded default may be created
        step_list = [replace(s, inputs=tuple(self._input(s, ref) for ref in s.inputs)) for s in step_list]
        if code is None and capture and (not src.code or any(not s.code for s in step_list)):
            code = code_facts(capture_source())
        code = dict(code or {})
        if code and not src.code:
            src = replace(src, code=code)
        if src.extracted_at is None:
            src = replace(src, extracted_at=now().isoformat(timespec="seconds"))
        step_list = [s if s.code or not code else replace(s, code=code) for s in step_list]
        # What is stored never holds credentials; the data itself is still read from `data`.
        src = replace(src, uri=redact_url(src.uri) if src.uri else src.uri, code=redact_code(src.code))
        step_list = [replace(s, code=redact_code(s.code)) for s in step_list]
        return DatasetPlan(name, data, src, tuple(step_list), dict(storage_options or {}))

    def write(
        self,
        plan: DatasetPlan,
        *,
        progress: Callable[[int, int], None] | None = None,
        record: bool = True,
    ) -> tuple[DatasetVersion, bool]:
        """Carry out a plan: ingest, then one metadata write. True when a new version was made.

        A failure removes what this call wrote; identical content already registered is
        returned as it is. With ``record`` (and a signer) a new version is also recorded in
        the ledger in the same write; a model registration passes ``record=False`` and records
        its new data sets with the model version, so that a failed registration leaves no
        ledger event behind.
        """
        store = self._art
        got = ingest(
            plan.data, store, plan.name, progress=progress, storage_options=dict(plan.storage_options)
        )
        existing = self._meta.find_dataset_version(plan.name, got.digest)
        if existing is not None:
            store.remove_tree(got.staging)
            erasure = self._erased(existing.uri) if self._erased is not None else None
            if erasure is not None:
                # the same content is a version whose file was erased: never bring it back
                raise Conflict(
                    f"this data is {existing.uri}, whose file was erased at {erasure.time} by "
                    f"{erasure.actor} ({erasure.reason}): it cannot be registered again"
                )
            return existing, False
        final = f"datasets/{plan.name}/{got.digest.split(':', 1)[1][:16]}/data.parquet"
        moved = False
        try:
            try:
                store.move(got.staging, final)
                moved = True
            except AlreadyExists:
                # same content, left by an interrupted registration or written just now by a
                # concurrent one: reuse it if intact (our own copy stays until the row is in)
                if store.hash_file(final)[1] != got.file_sha256:
                    raise IntegrityError(final, "holds other bytes than this data set") from None
            made = self._meta.create_dataset_version(
                plan.name,
                digest=got.digest,
                path=final,
                file_sha256=got.file_sha256,
                size_bytes=got.size_bytes,
                row_count=got.row_count,
                schema=got.schema,
                stats=got.stats,
                source=plan.source,
                steps=plan.steps,
                created_by=self._actor(),
                now=now(),
                signer=self._signer() if record and self._signer is not None else None,
            )
            if not moved:
                # the registration that wrote the file may have been undone meanwhile, and its
                # discard removed the file before our row was in: put our copy in its place
                try:
                    if not store.exists(final):
                        store.move(got.staging, final)
                except AlreadyExists:
                    pass  # restored by another registration of the same content
                store.remove_tree(got.staging)
            return made
        except BaseException:
            store.remove_tree(got.staging)
            if moved and not self._kept_by_a_row(plan.name, got.digest):
                store.remove_tree(final)
            raise

    def _kept_by_a_row(self, name: str, digest: str) -> bool:
        """Whether a committed version (a concurrent writer's) uses the file of this content."""
        try:
            return self._meta.find_dataset_version(name, digest) is not None
        except ModelLedgerError:
            return True  # unknown: an orphan for gc is better than a version without its file

    def discard(self, version: DatasetVersion) -> None:
        """Undo :meth:`write` of a new version after the registration that needed it failed.

        The version and its file go only while nothing refers to them.
        """
        self._meta.discard_dataset_version(version.key, remove_file=self._art.remove_tree)

    def _input(self, step: ProcessingStep, ref: str) -> str:
        try:
            return self.get(ref).uri
        except NotFound as exc:
            raise NotFound(f"input data set of step {step.name!r}", ref) from exc

    def get(self, uri_or_name: str, version: int | None = None) -> DatasetVersion:
        """A data set version by identifier (``datasets:/name/3``) or name (latest, or ``version``)."""
        if uri_or_name.startswith("datasets:/"):
            name, number = parse_dataset_uri(uri_or_name)
        else:
            name = validate_dataset_name(uri_or_name)
            number = None if version is None else check_number(version)
        self._ready()
        return self._meta.get_dataset_version(name, number)

    def list(
        self, *, prefix: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[dict[str, Any]]:
        """One page of data sets, by name."""
        check_limit(limit)
        after = decode_cursor(cursor, str)
        self._ready()
        rows = self._meta.list_datasets(prefix=prefix, limit=limit + 1, after=after)
        return make_page(rows, limit, key=lambda r: str(r["name"]))

    def versions(self, name: str, *, limit: int = 100, cursor: str | None = None) -> Page[DatasetVersion]:
        """One page of a data set's versions, newest first."""
        validate_dataset_name(name)
        check_limit(limit)
        before = decode_cursor(cursor, int)
        self._ready()
        rows = self._meta.list_dataset_versions(name, limit=limit + 1, before=before)
        return make_page(rows, limit, key=lambda r: r.version)

    def read(self, uri: str | DatasetVersion) -> Any:
        """The data as a pyarrow Table, after checking the stored file against its sha256."""
        import pyarrow.parquet as pq  # heavy: only reading data needs it

        dv = self._readable(uri)
        try:
            data = self._art.read_bytes(dv.path)
        except NotFound as exc:
            raise IntegrityError(dv.path, "is missing") from exc
        if hashlib.sha256(data).hexdigest() != dv.file_sha256:
            raise IntegrityError(dv.path, "does not match its recorded sha256")
        return pq.read_table(io.BytesIO(data))

    def to_pandas(self, uri: str | DatasetVersion) -> Any:
        """The data as a pandas DataFrame (see :meth:`read`)."""
        return self.read(uri).to_pandas()

    def preview(self, uri: str | DatasetVersion, *, offset: int = 0, limit: int = 100) -> Any:
        """Rows ``offset`` to ``offset + limit`` of the data as a pyarrow Table (``limit`` from 1 to
        1000), reading only the Parquet row groups that hold them, so a peek at a large data set
        stays cheap. Past the last row the table is empty.

        Unlike :meth:`read` it does not re-hash the whole file (that would read all of it): it
        checks that the file's footer holds the recorded number of rows.

        >>> rows = registry.datasets.preview("datasets:/loans/3", offset=100, limit=20)  # doctest: +SKIP
        >>> rows.to_pylist()  # doctest: +SKIP
        """
        import pyarrow as pa  # heavy: only reading data needs it
        import pyarrow.parquet as pq  # heavy: only reading data needs it

        check_limit(limit)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidInput(f"offset must be a whole number from 0, got {offset!r}")
        dv = self._readable(uri)
        try:
            source = self._art.open_input(dv.path)
        except NotFound as exc:
            raise IntegrityError(dv.path, "is missing") from exc
        with source:
            try:
                parquet = pq.ParquetFile(source)
            except (pa.ArrowException, OSError) as exc:
                raise IntegrityError(dv.path, f"is not a readable Parquet file ({exc})") from exc
            meta = parquet.metadata
            if meta.num_rows != dv.row_count:
                raise IntegrityError(dv.path, f"holds {meta.num_rows} rows, its record says {dv.row_count}")
            groups: builtins.list[int] = []
            first = start = 0
            for group in range(meta.num_row_groups):
                rows = meta.row_group(group).num_rows
                if start + rows > offset and start < offset + limit:
                    if not groups:
                        first = start
                    groups.append(group)
                start += rows
            if not groups:
                return parquet.schema_arrow.empty_table()
            try:
                table = parquet.read_row_groups(groups)
            except (pa.ArrowException, OSError) as exc:
                raise IntegrityError(dv.path, f"cannot be read ({exc})") from exc
            return table.slice(offset - first, limit)

    def open(self, uri: str | DatasetVersion) -> IO[bytes]:
        """The stored Parquet file of a data set version, opened for reading (seekable), to copy
        or serve its exact bytes. Close it, or use it as a context manager.

        Its size is checked against the record; its sha256 is not (that reads every byte): whoever
        reads it all compares with ``file_sha256``.

        >>> dv = registry.datasets.get("datasets:/applications/3")  # doctest: +SKIP
        >>> with registry.datasets.open(dv) as fh:  # doctest: +SKIP
        ...     shutil.copyfileobj(fh, open("applications-3.parquet", "wb"))
        """
        dv = self._readable(uri)
        try:
            fh = self._art.open(dv.path)
        except NotFound as exc:
            raise IntegrityError(dv.path, "is missing") from exc
        try:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(0)
        except BaseException:
            fh.close()
            raise
        if size != dv.size_bytes:
            fh.close()
            raise IntegrityError(dv.path, f"holds {size} bytes, its record says {dv.size_bytes}")
        return fh

    def _readable(self, uri: str | DatasetVersion) -> DatasetVersion:
        """The version, unless its file was erased (:class:`Erased`)."""
        dv = uri if isinstance(uri, DatasetVersion) else self.get(uri)
        erasure = self._erased(dv.uri) if self._erased is not None else None
        if erasure is not None:
            raise Erased(
                dv.uri, actor=erasure.actor, time=erasure.time, reason=erasure.reason, seq=erasure.seq
            )
        return dv

    def used_by(self, uri: str | DatasetVersion) -> builtins.list[tuple[str, str]]:
        """(model version identifier, role) of every model version trained or evaluated on it."""
        dv = uri if isinstance(uri, DatasetVersion) else self.get(uri)
        return [(f"models:/{m}/{v}", role) for m, v, role in self._meta.dataset_users(dv.key)]


def code_facts(info: SourceInfo) -> dict[str, Any]:
    """The git source as recorded on data sets and steps: only the fields that are known."""
    return {k: v for k, v in info.to_dict().items() if v is not None}
