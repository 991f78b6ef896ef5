"""Streaming ingestion: any tabular input becomes one compressed Parquet file.

Data flows batch by batch from the reader to the Parquet writer, through the
content digest and the column statistics, so memory stays bounded by the batch
size whatever the input size. Batches are re-cut into fixed slices of
``DIGEST_ROWS`` rows, and each slice is hashed, described and written as one
Parquet row group, so the stored file does not depend on how the input was chunked.

The content digest is over the *data*, not the file: the schema and the rows,
re-cut into fixed slices of ``DIGEST_ROWS`` and serialised with Arrow IPC (null slots
filled in, see ``_canonical``), so the same rows give the same digest however they were
chunked on the way in and whichever reader produced them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._domain import ColumnSpec
from ..errors import InvalidInput
from ..stores.artifacts import ArtifactStore

__all__ = ["DIGEST_ROWS", "Ingested", "ingest"]

DIGEST_ROWS = 65_536
# pyarrow's streaming CSV reader reads up to 32 blocks ahead of the parser (its background
# generator's queue), so the block size sets most of the memory an ingest needs: 8 MB
# blocks cost ~250 MB of read-ahead, 1 MB blocks ~32 MB (and parse as fast). A row must
# fit in one block; a longer one fails with pyarrow's "straddling" error.
CSV_BLOCK = 1024 * 1024
DISTINCT_CAP = 10_000
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Ingested:
    staging: str  # where the Parquet file was written, relative to the artifact root
    digest: str
    file_sha256: str
    size_bytes: int
    row_count: int
    schema: tuple[ColumnSpec, ...]
    stats: dict[str, dict[str, Any]]
    source_uri: str | None


class _HashingWriter(io.RawIOBase):
    """A write-only file that hashes what passes through it."""

    def __init__(self, raw: Any, sync: Callable[[Any], None]) -> None:
        self.raw = raw
        self._sync = sync
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.sha.update(data)
        self.size += len(data)
        self.raw.write(data)
        return len(data)

    def close(self) -> None:
        # pyarrow closes the sink when the Parquet writer closes: make it durable then.
        if not self.closed:
            try:
                self._sync(self.raw)
            finally:
                self.raw.close()
        super().close()


def _arrow_kind(t: Any) -> str:
    import pyarrow as pa  # heavy: loaded on first use so `import modelledger` stays fast

    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "datetime"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    return "object"


def _normalise_schema(schema: Any) -> Any:
    """One Arrow type per logical type, so equal data gets equal digests."""
    import pyarrow as pa  # heavy: loaded on first use so `import modelledger` stays fast

    fields = []
    for f in schema:
        t = f.type
        if pa.types.is_large_string(t) or pa.types.is_string_view(t):
            t = pa.string()
        elif pa.types.is_large_binary(t):
            t = pa.binary()
        elif pa.types.is_dictionary(t):
            t = pa.string() if _arrow_kind(t.value_type) == "string" else t.value_type
        elif pa.types.is_null(t):
            t = pa.string()
        fields.append(pa.field(str(f.name), t, nullable=True))
    return pa.schema(fields)


def _zero(t: Any) -> Any:
    """A filler value of type ``t`` for null slots, or None for types without one (nested)."""
    import pyarrow as pa  # heavy: loaded on first use so `import modelledger` stays fast

    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pa.scalar("", t)
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return pa.scalar(b"", t)
    if pa.types.is_boolean(t):
        return pa.scalar(False)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_temporal(t):
        try:
            return pa.scalar(0, t)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, TypeError):
            return None  # e.g. intervals: hashed as they are
    return None


def _canonical(batch: Any) -> Any:
    """The slice as it is hashed.

    Arrow leaves the bytes under a null slot undefined (pandas leaves NaN there, the CSV
    reader 0) and IPC writes them as they are. So a column with nulls is hashed as its
    values with the nulls filled in, plus a validity column: equal data, equal digest,
    whatever produced it. Columns without nulls are hashed as they are.
    """
    import pyarrow as pa  # heavy: loaded on first use so `import modelledger` stays fast
    import pyarrow.compute as pc  # heavy: loaded on first use so `import modelledger` stays fast

    if not any(col.null_count for col in batch.columns):
        return batch
    arrays, names = [], []
    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        zero = _zero(col.type) if col.null_count else None
        if zero is None:
            arrays.append(col)
            names.append(name)
        else:
            arrays += [pc.fill_null(col, zero), pc.is_valid(col)]
            names += [name, f"{name}\x00valid"]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _batches(
    data: Any, progress: Progress | None, storage_options: dict[str, Any]
) -> tuple[Iterator[Any], str | None]:
    import pyarrow as pa  # heavy: loaded on first use so `import modelledger` stays fast

    if isinstance(data, pa.Table):
        return iter(data.to_batches(max_chunksize=DIGEST_ROWS)), None
    # A DataFrame means pandas is imported already: do not pay ~40 MB to import it for a file.
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(data, pd.DataFrame):
        try:
            table = pa.Table.from_pandas(data, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise InvalidInput(f"this data frame cannot be stored as Parquet: {exc}") from exc
        return iter(table.to_batches(max_chunksize=DIGEST_ROWS)), None
    if isinstance(data, (str, os.PathLike)):
        return _file_batches(os.fspath(data), progress, storage_options)
    raise InvalidInput(
        f"cannot register a {type(data).__name__} as a data set: give a pandas DataFrame, a pyarrow "
        "Table, or the path or URL of a CSV or Parquet file"
    )


def _file_batches(
    location: str, progress: Progress | None, storage_options: dict[str, Any]
) -> tuple[Iterator[Any], str]:
    import fsspec  # imports its filesystem registry: only touching a store needs it

    lower = location.lower()
    kind = (
        "parquet"
        if lower.endswith((".parquet", ".pq"))
        else "csv"
        if lower.endswith((".csv", ".csv.gz", ".tsv"))
        else None
    )
    if kind is None:
        raise InvalidInput(f"cannot tell the format of {location}: use a .csv, .tsv or .parquet file")
    if "://" not in location:
        path = Path(location)
        if not path.is_file():
            raise InvalidInput(f"data file does not exist or is not a file: {location}")
        uri = path.absolute().as_uri()  # what the data set records as its source
        target = str(path.absolute())  # fsspec takes a file:// URI's path literally: give it the path
    else:
        uri = target = location
    try:
        fh = fsspec.open(target, "rb", compression="infer", **storage_options).open()
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot open {location}: {exc}") from exc
    try:
        total = (
            int(fh.size)
            if getattr(fh, "size", None)
            else os.path.getsize(target)
            if "://" not in target
            else 0
        )
    except (OSError, TypeError):
        total = 0

    def generate() -> Iterator[Any]:
        import pyarrow as pa  # heavy: loaded on first use so `import modelledger` stays fast

        try:
            if kind == "parquet":
                import pyarrow.parquet as pq  # heavy: loaded on first use so `import modelledger` stays fast

                try:
                    reader = pq.ParquetFile(fh)
                except (pa.ArrowInvalid, OSError) as exc:
                    raise InvalidInput(f"{location} is not a readable Parquet file: {exc}") from exc
                for batch in reader.iter_batches(batch_size=DIGEST_ROWS):
                    yield batch
                    if progress:
                        progress(fh.tell(), total)
            else:
                from pyarrow import csv  # heavy: loaded on first use so `import modelledger` stays fast

                delimiter = "\t" if lower.endswith(".tsv") else ","
                try:
                    reader = csv.open_csv(
                        fh,
                        read_options=csv.ReadOptions(block_size=CSV_BLOCK),
                        parse_options=csv.ParseOptions(delimiter=delimiter),
                    )
                    for batch in reader:
                        yield batch
                        if progress:
                            progress(fh.tell(), total)
                except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
                    raise InvalidInput(f"{location} is not a readable CSV file: {exc}") from exc
        finally:
            fh.close()

    return generate(), uri


class _Stats:
    def __init__(self, schema: Any) -> None:
        self.schema = schema
        self.nulls = {f.name: 0 for f in schema}
        self.mins: dict[str, Any] = {}
        self.maxs: dict[str, Any] = {}
        self.distinct: dict[str, set[Any] | None] = {}

    def add(self, batch: Any) -> None:
        import pyarrow.compute as pc  # heavy: loaded on first use so `import modelledger` stays fast

        for i, f in enumerate(self.schema):
            col = batch.column(i)
            self.nulls[f.name] += col.null_count
            kind = _arrow_kind(f.type)
            if kind == "object":
                continue  # nested values (lists, structs): no order, and pc.unique has no kernel
            if kind in ("integer", "float", "datetime"):
                mm = pc.min_max(col)
                lo, hi = mm["min"].as_py(), mm["max"].as_py()
                if lo is not None:
                    self.mins[f.name] = lo if f.name not in self.mins else min(self.mins[f.name], lo)
                    self.maxs[f.name] = hi if f.name not in self.maxs else max(self.maxs[f.name], hi)
            else:
                seen = self.distinct.setdefault(f.name, set())
                if seen is not None:
                    seen.update(v for v in pc.unique(col).to_pylist() if v is not None)
                    if len(seen) > DISTINCT_CAP:
                        self.distinct[f.name] = None

    def result(self) -> dict[str, dict[str, Any]]:
        def js(v: Any) -> Any:
            if isinstance(v, (int, float, str, bool)) or v is None:
                return v
            return v.isoformat() if hasattr(v, "isoformat") else str(v)

        out: dict[str, dict[str, Any]] = {}
        for f in self.schema:
            entry: dict[str, Any] = {"nulls": self.nulls[f.name]}
            if f.name in self.mins:
                entry.update(min=js(self.mins[f.name]), max=js(self.maxs[f.name]))
            elif f.name in self.distinct:
                seen = self.distinct[f.name]
                entry["distinct"] = len(seen) if seen is not None else f">{DISTINCT_CAP}"
            out[f.name] = entry
        return out


def ingest(
    data: Any,
    store: ArtifactStore,
    name: str,
    *,
    progress: Progress | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Ingested:
    """Stream ``data`` into a staging Parquet file under ``datasets/``; hash and describe it.

    Nothing is written before the input is opened and its first batch read; on
    failure the staging file is removed.
    """
    import pyarrow as pa  # heavy: loaded on first use so `import modelledger` stays fast
    import pyarrow.parquet as pq  # heavy: loaded on first use so `import modelledger` stays fast

    batches, source_uri = _batches(data, progress, dict(storage_options or {}))
    first = next(batches, None)
    if first is None:
        raise InvalidInput("the data set has no rows and no columns")
    schema = _normalise_schema(first.schema)
    names = [f.name for f in schema]
    if len(set(names)) != len(names) or any(not n for n in names):
        raise InvalidInput("every column needs a unique, non-empty name")
    # A file of its own right under datasets/, no folder: a failed ingest, once this file is
    # removed, leaves nothing behind, and no cleanup ever races another writer for a folder.
    staging = f"datasets/.staging-{secrets.token_hex(16)}.parquet"
    digest = hashlib.sha256(
        b"modelledger.dataset.v1\x00"
        + json.dumps([[f.name, str(f.type)] for f in schema], separators=(",", ":")).encode()
    )
    stats = _Stats(schema)
    rows = 0
    pending: list[Any] = []
    pending_rows = 0

    def hash_slice(batch: Any) -> None:
        batch = _canonical(batch)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        digest.update(sink.getvalue())  # a pyarrow Buffer: hashed in place, not copied

    def conform(batch: Any) -> Any:
        try:
            if batch.schema.equals(schema):
                return batch
            cols = []
            for f in schema:
                col = batch.column(batch.schema.get_field_index(f.name))
                if pa.types.is_dictionary(col.type):
                    col = col.dictionary_decode()
                cols.append(col.cast(f.type))
            return pa.RecordBatch.from_arrays(cols, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError) as exc:
            raise InvalidInput(
                f"a later part of the data does not fit the schema of the first: {exc}"
            ) from exc

    # no Object Lock retention on the staging file: it is moved to its final name, which gets it
    raw = store.open_new(staging, retain=False)
    out = _HashingWriter(raw, store.sync)
    try:
        try:
            writer = pq.ParquetWriter(out, schema, compression="zstd")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InvalidInput(f"this schema cannot be stored as Parquet: {exc}") from exc

        def flush(piece: Any) -> None:
            hash_slice(piece)
            stats.add(piece)
            writer.write_batch(piece)  # one row group per slice

        with writer:
            for batch in _chain(first, batches):
                batch = conform(batch)
                rows += batch.num_rows
                pending.append(batch)
                pending_rows += batch.num_rows
                while pending_rows >= DIGEST_ROWS:
                    table = pa.Table.from_batches(pending, schema=schema).combine_chunks()
                    flush(table.slice(0, DIGEST_ROWS).to_batches()[0])
                    rest = table.slice(DIGEST_ROWS)
                    pending = rest.to_batches()
                    pending_rows = rest.num_rows
            if pending_rows:
                table = pa.Table.from_batches(pending, schema=schema).combine_chunks()
                flush(table.to_batches()[0])
        out.close()
    except BaseException as exc:
        try:
            out.close()
        finally:
            store.remove_tree(staging)
        if isinstance(exc, OSError):
            raise store.error(exc, f"write data set {name} to", staging) from exc
        raise
    return Ingested(
        staging=staging,
        digest="sha256:" + digest.hexdigest(),
        file_sha256=out.sha.hexdigest(),
        size_bytes=out.size,
        row_count=rows,
        schema=tuple(ColumnSpec(f.name, _arrow_kind(f.type), stats.nulls[f.name] > 0) for f in schema),
        stats=stats.result(),
        source_uri=source_uri,
    )


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest
