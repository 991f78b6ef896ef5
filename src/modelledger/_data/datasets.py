"""``registry.datasets``: register, find and read immutable data set versions."""

from __future__ import annotations

import base64
import builtins
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .._domain import DatasetSource, DatasetVersion, Page, ProcessingStep, utcnow
from .._identifiers import parse_dataset_uri, validate_name
from ..errors import AlreadyExists, IntegrityError, InvalidInput, NotFound

if TYPE_CHECKING:
    from .._registry import Registry

__all__ = ["Datasets"]


def _source(value: DatasetSource | Mapping[str, Any] | str | None, data: Any) -> DatasetSource:
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


def _step(value: ProcessingStep | Mapping[str, Any]) -> ProcessingStep:
    if isinstance(value, ProcessingStep):
        return value
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str) or not value["name"]:
        raise InvalidInput("each processing step needs at least a non-empty 'name'")
    unknown = set(value) - {"name", "kind", "params", "columns", "inputs", "code"}
    if unknown:
        raise InvalidInput(f"unknown processing step field(s): {', '.join(sorted(unknown))}")
    try:
        json.dumps(dict(value.get("params") or {}), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"step {value['name']!r}: params must hold JSON values only ({exc})") from exc
    return ProcessingStep.from_dict(value)


class Datasets:
    """Data set versions of a registry. Reach it as ``registry.datasets``."""

    def __init__(self, registry: Registry) -> None:
        self._reg = registry

    @property
    def _meta(self) -> Any:
        return self._reg._meta

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
        from .._manifest import capture_source
        from .ingest import ingest

        validate_name(name, what="data set name")
        src = _source(source, data)
        step_list = [_step(s) for s in steps]
        self._reg._ready()
        # Unknown inputs fail before anything is written. A name or name@latest is pinned to
        # the version it means now: the store records exact datasets:/name/N identifiers.
        step_list = [replace(s, inputs=tuple(self._input(s, ref) for ref in s.inputs)) for s in step_list]
        code: dict[str, Any] = {}
        if capture and (not src.code or any(not s.code for s in step_list)):
            code = {k: v for k, v in capture_source().to_dict().items() if v is not None}
        if capture and not src.code and code:
            src = DatasetSource(src.uri, src.kind, src.query, src.extracted_at, code)
        if src.extracted_at is None:
            src = DatasetSource(
                src.uri,
                src.kind,
                src.query,
                datetime.now(timezone.utc).isoformat(timespec="seconds"),
                src.code,
            )
        step_list = [
            s if s.code or not code else ProcessingStep(s.name, s.kind, s.params, s.columns, s.inputs, code)
            for s in step_list
        ]
        store = self._reg._art
        got = ingest(data, store, name, progress=progress, storage_options=dict(storage_options or {}))
        existing = self._meta.find_dataset_version(name, got.digest)
        if existing is not None:
            store.remove_tree(got.staging)
            return existing  # type: ignore[no-any-return]
        final = f"datasets/{name}/{got.digest.split(':', 1)[1][:16]}/data.parquet"
        moved = False
        try:
            try:
                store.move(got.staging, final)
                moved = True
            except AlreadyExists:
                # same content left by an earlier, interrupted registration: reuse it if intact
                if store.hash_file(final)[1] != got.file_sha256:
                    raise IntegrityError(final, "holds other bytes than this data set") from None
                store.remove_tree(got.staging)
            version, _created = self._meta.create_dataset_version(
                name,
                digest=got.digest,
                path=final,
                file_sha256=got.file_sha256,
                size_bytes=got.size_bytes,
                row_count=got.row_count,
                schema=got.schema,
                stats=got.stats,
                source=src,
                steps=step_list,
                created_by=self._reg.actor,
                now=utcnow(),
            )
        except BaseException:
            store.remove_tree(got.staging)
            if moved:
                store.remove_tree(final)
            raise
        return version  # type: ignore[no-any-return]

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
            name, number = validate_name(uri_or_name, what="data set name"), version
        self._reg._ready()
        return self._meta.get_dataset_version(name, number)  # type: ignore[no-any-return]

    def list(
        self, *, prefix: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[dict[str, Any]]:
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be between 1 and 1000")
        after = _decode(cursor) if cursor else None
        self._reg._ready()
        rows = self._meta.list_datasets(prefix=prefix, limit=limit + 1, after=after)
        nxt = _encode(rows[limit - 1]["name"]) if len(rows) > limit else None
        return Page(items=rows[:limit], next_cursor=nxt)

    def versions(self, name: str, *, limit: int = 100, cursor: str | None = None) -> Page[DatasetVersion]:
        validate_name(name, what="data set name")
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be between 1 and 1000")
        before = _decode(cursor) if cursor else None
        self._reg._ready()
        rows = self._meta.list_dataset_versions(name, limit=limit + 1, before=before)
        nxt = _encode(rows[limit - 1].version) if len(rows) > limit else None
        return Page(items=rows[:limit], next_cursor=nxt)

    def read(self, uri: str | DatasetVersion) -> Any:
        """The data as a pyarrow Table, after checking the stored file against its sha256."""
        import io

        import pyarrow.parquet as pq

        dv = uri if isinstance(uri, DatasetVersion) else self.get(uri)
        store = self._reg._art
        try:
            data = store.read_bytes(dv.path)
        except NotFound as exc:
            raise IntegrityError(dv.path, "is missing") from exc
        import hashlib

        if hashlib.sha256(data).hexdigest() != dv.file_sha256:
            raise IntegrityError(dv.path, "does not match its recorded sha256")
        return pq.read_table(io.BytesIO(data))

    def to_pandas(self, uri: str | DatasetVersion) -> Any:
        return self.read(uri).to_pandas()

    def used_by(self, uri: str | DatasetVersion) -> builtins.list[tuple[str, str]]:
        """(model version identifier, role) of every model version trained or evaluated on it."""
        dv = uri if isinstance(uri, DatasetVersion) else self.get(uri)
        return [(f"models:/{m}/{v}", role) for m, v, role in self._meta.dataset_users(dv.key)]


def _encode(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _decode(cursor: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"invalid cursor {cursor!r}") from exc
