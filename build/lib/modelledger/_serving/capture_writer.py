"""Capturing predictions: the buffered background writer and the Parquet layout of captured rows.

A :class:`~modelledger._serving.predictor.Predictor` with an artefact store *captures*
its predictions (all, or ``sample_rate`` of them): it hands the rows of each ``predict``
call to a :class:`CaptureWriter`, which writes them as Parquet in the version's folder::

    <version folder>/predictions/date=YYYY-MM-DD/part-<first id>-<last id>.parquet

Each file holds the rows of one date (UTC), sorted by prediction id, in row groups of
``row_group_rows`` rows with min/max statistics on ``prediction_id`` and ``time``; its
name gives its id range, so a lookup
(:meth:`~modelledger._serving.capture_reader.CaptureReader.find`) opens one file and
reads one row group. Columns (:data:`CAPTURE_COLUMNS`, :func:`capture_schema`):
``prediction_id``, ``time``, ``model``,
``version``, ``digest``, ``input_digest``, ``input`` (the canonical JSON text of the row),
``output`` (canonical JSON text), and what the receipt adds: ``key_id``, ``root`` and
``signature`` (shared by the rows of one ``predict`` call), ``leaf_index``, ``tree_size``,
and ``tree``: on the first captured row of each call whose tree has more than one leaf,
every node of the call's Merkle tree (level by level from the leaves, 32 bytes each, 64
bytes a row in all), null elsewhere. Receipts are rebuilt from these
(:func:`~modelledger._serving.capture_reader.receipt_from_row`,
:func:`~modelledger._serving.capture_reader.receipts_from_table`), audit path included,
rather than stored as JSON text: a per-row audit path would cost ~450 bytes a row and
most of the writer's time.


**Buffering and the crash bound.** ``predict`` only appends rows to an in-memory buffer;
a background thread writes them. The buffer is sealed for writing as soon as it holds
``flush_rows`` rows, or when its oldest row is ``flush_seconds`` old, and on
:meth:`Predictor.flush`, :meth:`Predictor.close`, leaving a ``with`` block, or at
interpreter exit (``atexit``). A clean shutdown therefore loses nothing. A crash (``kill
-9``, power loss) loses only rows not yet written: the open buffer (fewer than
``flush_rows`` + the rows of one ``predict`` call, none older than ``flush_seconds``) and
the sealed buffers still being written. While the store keeps up (one file written in
the time ``flush_rows`` rows are predicted) that is **at most 2 * (flush_rows + rows of
one predict call) rows, none older than flush_seconds plus one write**. Whatever happens,
unwritten rows never exceed ``max_pending``. Files are written to a temporary name and
renamed (local stores; object stores publish on close: :meth:`ArtifactStore.put_atomic
<modelledger.stores.artifacts.ArtifactStore.put_atomic>`), so a crash never leaves a partial
file behind, only an ignorable ``.tmp-*`` file.

**Recorded in the ledger.** Given a ``record`` callable (``Registry.load(capture=True)``
gives one), the writer hands it each written file's path, size, sha256, row count and id
range, which the registry appends to its ledger as a ``predictions.written`` event: so
``verify`` notices a capture file deleted, replaced or edited, not only a row that no
longer matches its signed receipt. A record that cannot be appended (the database is
down) is kept and retried with the next write and at close; a crash between a file's
write and its record leaves the file unrecorded, which ``verify`` lists apart
(its receipts still prove its rows).

**When the store is down.** Capture never makes ``predict`` fail or wait. A write that
raises keeps its rows queued; the thread retries every ``flush_seconds`` (at most every
5 s; and at once on :meth:`Predictor.flush`), oldest rows first, and
:attr:`Predictor.pending` counts the rows waiting (buffered, queued or being written).
When buffering another call would take the unwritten rows over ``max_pending``, that
call's rows are not captured; they are counted in :attr:`Predictor.dropped` and the
receipts are still returned. ``close`` keeps retrying
for ``timeout`` seconds, then counts what it could not write as dropped.

>>> with registry.load("models:/credit-risk@production", capture=True) as predictor:  # doctest: +SKIP
...     predictions, receipts = predictor.predict(applications)
>>> receipts[0].to_dict()  # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import threading
import time as _time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from ..errors import IntegrityError
from .receipts import ReceiptBatch

if TYPE_CHECKING:
    import pyarrow as pa

    from ..stores.artifacts import ArtifactStore

__all__ = [
    "CAPTURE_COLUMNS",
    "CLOSE_TIMEOUT",
    "DEFAULT_FLUSH_ROWS",
    "DEFAULT_FLUSH_SECONDS",
    "DEFAULT_MAX_PENDING",
    "DEFAULT_ROW_GROUP_ROWS",
    "CaptureFile",
    "CaptureWriter",
    "capture_schema",
    "date_folder",
    "parse_part_name",
    "path_from_tree",
    "predictions_folder",
]

DEFAULT_FLUSH_ROWS = 10_000
DEFAULT_FLUSH_SECONDS = 5.0
DEFAULT_MAX_PENDING = 1_000_000
DEFAULT_ROW_GROUP_ROWS = 2_000
CLOSE_TIMEOUT = 30.0
PREDICTIONS = "predictions"

CAPTURE_COLUMNS = (
    "prediction_id",
    "time",
    "model",
    "version",
    "digest",
    "input_digest",
    "input",
    "output",
    "key_id",
    "root",
    "signature",
    "leaf_index",
    "tree_size",
    "tree",
)
"""The columns of a capture file, in order."""

_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the layout


def capture_schema() -> pa.Schema:
    """The Arrow schema of captured predictions (imports pyarrow)."""
    import pyarrow as pa  # heavy: loaded on first use so `import modelledger` stays fast

    return pa.schema(
        [
            ("prediction_id", pa.string()),
            ("time", pa.timestamp("ms", tz="UTC")),
            ("model", pa.string()),
            ("version", pa.int32()),
            ("digest", pa.string()),
            ("input_digest", pa.string()),
            ("input", pa.string()),
            ("output", pa.string()),
            ("key_id", pa.string()),
            ("root", pa.string()),
            ("signature", pa.string()),
            ("leaf_index", pa.int32()),
            ("tree_size", pa.int32()),
            ("tree", pa.binary()),
        ]
    )


def predictions_folder(version_folder: str) -> str:
    """The folder holding a version's captured predictions (one ``date=`` folder a day)."""
    return f"{version_folder}/{PREDICTIONS}"


def date_folder(version_folder: str, day: str) -> str:
    """The folder of the predictions made on ``day`` (``YYYY-MM-DD``, UTC)."""
    return f"{version_folder}/{PREDICTIONS}/date={day}"


def _part_name(first: str, last: str) -> str:
    return f"part-{first}-{last}.parquet"


def parse_part_name(name: str) -> tuple[str, str] | None:
    """``(first id, last id)`` of a capture file's name; None for any other name (``.tmp-*``...)."""
    if name.startswith("part-") and name.endswith(".parquet") and len(name) >= 66 and name[31] == "-":
        return name[5:31], name[32:58]
    return None


def _tree_blob(levels: Sequence[Sequence[bytes]]) -> bytes:
    """Every node of a Merkle tree, level by level from the leaves: the ``tree`` column's value."""
    return b"".join([b"".join(level) for level in levels])


def path_from_tree(tree: bytes, index: int, size: int) -> tuple[str, ...]:
    """The audit path of leaf ``index`` from a stored tree (every node, level by level)."""
    path = []
    offset, width = 0, size
    while width > 1:
        sibling = index ^ 1
        if sibling < width:
            start = (offset + sibling) * 32
            path.append(tree[start : start + 32].hex())
        offset += width
        index >>= 1
        width = (width + 1) >> 1
    if len(tree) != (offset + 1) * 32:
        raise IntegrityError(
            "captured tree", f"holds {len(tree)} bytes, a tree of {size} leaves needs {(offset + 1) * 32}"
        )
    return tuple(path)


@dataclass(frozen=True, slots=True)
class CaptureFile:
    """A capture file as written: what its ledger record holds."""

    path: str  # relative to the artefact root
    size: int
    sha256: str
    rows: int
    first_id: str
    last_id: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "rows": self.rows,
            "first_id": self.first_id,
            "last_id": self.last_id,
        }


@dataclass(slots=True)
class _Chunk:
    """The captured rows of one predict call (``selected`` None means every row)."""

    batch: ReceiptBatch
    texts: Any  # canonical input texts of every row of the call: a list or an Arrow array
    ms: int
    selected: Any
    rows: int

    @property
    def day(self) -> str:
        return (date(1970, 1, 1) + timedelta(days=self.ms // 86_400_000)).isoformat()

    def first_id(self) -> str:
        return self.batch.ids[0 if self.selected is None else int(self.selected[0])]

    def last_id(self) -> str:
        return self.batch.ids[-1 if self.selected is None else int(self.selected[-1])]


# --------------------------------------------------------------------------- the writer


class CaptureWriter:
    """Buffers the captured rows of predict calls and writes them from one background thread.

    ``folder`` is the version's folder in ``store``; see the module docstring for
    ``flush_rows``, ``flush_seconds``, ``max_pending``, ``row_group_rows`` and the crash
    bound. :meth:`add` never blocks on the store and never raises because of it.
    """

    def __init__(
        self,
        store: ArtifactStore,
        folder: str,
        *,
        flush_rows: int,
        flush_seconds: float,
        max_pending: int,
        row_group_rows: int,
        record: Callable[[Sequence[CaptureFile]], None] | None = None,
    ) -> None:
        self._store = store
        self._folder = folder
        self._record = record
        self._flush_rows = flush_rows
        self._flush_seconds = flush_seconds
        self._retry_seconds = min(max(flush_seconds, 0.05), 5.0)
        self._max_pending = max_pending
        self._row_group_rows = row_group_rows
        self._start_state()

    def _start_state(self) -> None:
        self._cond = threading.Condition()
        self._open: list[_Chunk] = []
        self._open_rows = 0
        self._open_since = 0.0
        self._queue: deque[list[_Chunk]] = deque()
        self._queued_rows = 0
        self._inflight_rows = 0
        self._urgent = False  # a flush or close asked for an immediate attempt
        self._failures = 0
        self._retry_at = 0.0
        self._stopping = False
        self._deadline = 0.0
        self._closed = False
        self._thread: threading.Thread | None = None
        self.written = 0
        self.dropped = 0
        self.last_error: BaseException | None = None
        self._unrecorded: list[CaptureFile] = []  # written, their ledger record not yet appended
        self._pid = os.getpid()

    def _after_fork(self) -> None:
        """Start afresh in a forked child: the parent's thread did not survive the fork, and
        the rows it buffered are the parent's to write."""
        self._start_state()

    @property
    def pending(self) -> int:
        return self._open_rows + self._queued_rows + self._inflight_rows

    def counts(self) -> tuple[int, int, int]:
        """``(written, pending, dropped)`` at one instant."""
        with self._cond:
            return self.written, self.pending, self.dropped

    def count_dropped(self, rows: int) -> None:
        """Count ``rows`` that could not even be handed over as dropped."""
        with self._cond:
            self.dropped += rows

    def add(self, batch: ReceiptBatch, texts: Any, ms: int, selected: Any = None) -> None:
        """Buffer the rows of one predict call made at Unix time ``ms``: the receipts' ``batch``,
        the canonical input ``texts`` (a list or an Arrow array, in row order) and ``selected``,
        the indexes of the captured rows (in order; None for every row)."""
        rows = len(batch.ids) if selected is None else len(selected)
        chunk = _Chunk(batch=batch, texts=texts, ms=ms, selected=selected, rows=rows)
        if self._pid != os.getpid():
            self._after_fork()
        if self._thread is None:
            # Import the writing stack before the first write (outside the lock: ~0.1 s
            # once). At interpreter exit, when atexit may have to write the last rows, a
            # first import can fail: concurrent.futures cannot register its exit hook then.
            import pyarrow.compute
            import pyarrow.parquet  # noqa: F401

            self._store.fs  # noqa: B018 - creates the filesystem (and its backend) now
        with self._cond:
            if self._closed or self._stopping or self.pending + chunk.rows > self._max_pending:
                self.dropped += chunk.rows
                return
            if not self._open:
                self._open_since = _time.monotonic()
            self._open.append(chunk)
            self._open_rows += chunk.rows
            if self._open_rows >= self._flush_rows:
                self._seal()
                self._cond.notify_all()
            elif len(self._open) == 1:
                self._cond.notify_all()  # the thread starts the buffer's clock
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="modelledger-capture", daemon=True)
                self._thread.start()
                atexit.register(self.close)

    def _seal(self) -> None:
        if self._open:
            self._queue.append(self._open)
            self._queued_rows += self._open_rows
            self._open, self._open_rows = [], 0

    def _next(self) -> list[_Chunk] | None:
        """Wait for the next sealed buffer to write (None: stop). Called with the lock held."""
        while True:
            now = _time.monotonic()
            if self._open and (
                self._stopping or self._urgent or now - self._open_since >= self._flush_seconds
            ):
                self._seal()
            if self._queue:
                if not self._failures or self._urgent or now >= self._retry_at:
                    self._urgent = False
                    return self._queue.popleft()
                if self._stopping and now >= self._deadline:
                    lost = self._queued_rows
                    self._queue.clear()
                    self._queued_rows = 0
                    self.dropped += lost
                    _log.error("prediction capture: store still failing at close; %d rows dropped", lost)
                    return None
            elif self._stopping:
                return None
            waits = []
            if self._open:
                waits.append(self._open_since + self._flush_seconds - now)
            if self._queue:
                waits.append(self._retry_at - now)
                if self._stopping:
                    waits.append(self._deadline - now)
            self._cond.wait(max(min(waits), 0.001) if waits else None)

    def _run(self) -> None:
        while True:
            with self._cond:
                chunks = self._next()
                if chunks is None:
                    self._cond.notify_all()
                    return
                rows = sum(c.rows for c in chunks)
                self._queued_rows -= rows
                self._inflight_rows = rows
            done: list[_Chunk] = []
            error: BaseException | None = None
            try:
                self._write(chunks, done)
            except Exception as exc:  # any failure of the store: keep the rows, retry later
                error = exc
            self._append_records()
            with self._cond:
                self._inflight_rows = 0
                written = sum(c.rows for c in done)
                self.written += written
                if error is None:
                    if self._failures:
                        _log.warning("prediction capture: the store is writable again")
                    self._failures = 0
                    self.last_error = None
                else:
                    rest = [c for c in chunks if not any(c is d for d in done)]
                    self._queue.appendleft(rest)
                    self._queued_rows += rows - written
                    if not self._failures:
                        _log.warning("prediction capture: cannot write to the store (%s); retrying", error)
                    self._failures += 1
                    self.last_error = error
                    self._retry_at = _time.monotonic() + (
                        min(self._retry_seconds, 0.5) if self._stopping else self._retry_seconds
                    )
                self._cond.notify_all()

    def _append_records(self) -> None:
        """Hand the written files' records to ``record``; kept for the next try when it fails."""
        if self._record is None or not self._unrecorded:
            return
        files = list(self._unrecorded)
        try:
            self._record(files)
        except Exception as exc:  # the metadata store is down: the files are safe, retry later
            _log.warning("prediction capture: cannot record %d written files (%s); retrying", len(files), exc)
            return
        del self._unrecorded[: len(files)]

    @property
    def unrecorded(self) -> int:
        """How many written files still wait for their ledger record."""
        return len(self._unrecorded)

    def flush(self, timeout: float | None) -> bool:
        """Write every buffered row now; True when nothing is pending afterwards (see ``Predictor.flush``)."""
        deadline = None if timeout is None else _time.monotonic() + timeout
        with self._cond:
            if self._thread is None:
                return self.pending == 0
            failures = self._failures
            self._urgent = True
            self._cond.notify_all()
            while self.pending:
                self._urgent = True
                self._cond.notify_all()
                if self._failures > failures:
                    return False
                remaining = None if deadline is None else deadline - _time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Write what is left and stop the thread, retrying a failing store up to ``timeout`` seconds."""
        with self._cond:
            if self._closed:
                return
            self._stopping = True
            self._deadline = _time.monotonic() + timeout
            self._urgent = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        if self._unrecorded:
            self._append_records()  # the last try: what still fails stays unrecorded (verify lists it)
        with self._cond:
            self._closed = True
        atexit.unregister(self.close)

    # ------------------------------------------------------------------ writing files

    def _write(self, chunks: list[_Chunk], done: list[_Chunk]) -> None:
        by_day: dict[str, list[_Chunk]] = {}
        for chunk in chunks:
            by_day.setdefault(chunk.day, []).append(chunk)
        for day, group in sorted(by_day.items()):
            self._write_file(day, group)
            done.extend(group)

    def _write_file(self, day: str, chunks: list[_Chunk]) -> None:
        import pyarrow as pa  # heavy: loaded on first use so `import modelledger` stays fast
        import pyarrow.compute as pc  # heavy: loaded on first use so `import modelledger` stays fast
        import pyarrow.parquet as pq  # heavy: loaded on first use so `import modelledger` stays fast

        table = pa.concat_tables([_chunk_table(c) for c in chunks])
        in_order = all(chunks[i - 1].last_id() < chunks[i].first_id() for i in range(1, len(chunks)))
        if not in_order:  # calls from several threads can finish out of order
            table = table.take(pc.sort_indices(table, [("prediction_id", "ascending")]))
        ids = table.column("prediction_id")
        first, last = ids[0].as_py(), ids[-1].as_py()
        rel = f"{date_folder(self._folder, day)}/{_part_name(first, last)}"
        sink = pa.BufferOutputStream()
        pq.write_table(
            table,
            sink,
            row_group_size=self._row_group_rows,
            compression="zstd",
            compression_level=1,
            write_statistics=["prediction_id", "time"],
            use_dictionary=["model", "version", "digest", "key_id", "root", "signature", "tree_size"],
        )
        data = sink.getvalue()
        self._store.put_atomic(rel, data)
        self._unrecorded.append(
            CaptureFile(rel, data.size, hashlib.sha256(data).hexdigest(), table.num_rows, first, last)
        )


def _chunk_table(chunk: _Chunk) -> pa.Table:
    """The captured rows of one predict call, in the columns of :func:`capture_schema`."""
    import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast
    import pyarrow as pa  # heavy: loaded on first use so `import modelledger` stays fast
    import pyarrow.compute as pc  # heavy: loaded on first use so `import modelledger` stays fast

    batch = chunk.batch
    hexes: Any = batch.input_hexes
    outputs: Any = batch.output_texts
    texts: Any = chunk.texts
    ids = batch.ids
    arrow_rows = not isinstance(texts, list)
    n = len(ids)
    sel = chunk.selected
    if sel is None:
        index: Any = np.arange(n, dtype=np.int32)
    else:
        index = np.asarray(sel, dtype=np.int32)
        picked = index.tolist()
        ids = [ids[i] for i in picked]
        if arrow_rows:
            hexes, outputs, texts = hexes.take(index), outputs.take(index), texts.take(index)
        else:
            hexes = [hexes[i] for i in picked]
            outputs = [outputs[i] for i in picked]
            texts = [texts[i] for i in picked]
    k = len(ids)

    def same(value: Any, kind: pa.DataType) -> pa.Array:
        return pa.repeat(pa.scalar(value, kind), k)

    if n > 1:
        blob = _tree_blob(batch.levels)
        tree = pa.concat_arrays([pa.array([blob], pa.binary()), pa.nulls(k - 1, pa.binary())])
    else:
        tree = pa.nulls(k, pa.binary())
    return pa.table(
        [
            pa.array(ids, pa.string()),
            pa.array(np.full(k, chunk.ms, dtype="datetime64[ms]"), pa.timestamp("ms")).cast(
                pa.timestamp("ms", tz="UTC")
            ),
            same(batch.model, pa.string()),
            same(batch.version, pa.int32()),
            same(batch.digest, pa.string()),
            pc.binary_join_element_wise("sha256:", hexes, "")
            if arrow_rows
            else pa.array(["sha256:" + h for h in hexes], pa.string()),
            texts if arrow_rows else pa.array(texts, pa.string()),
            outputs if arrow_rows else pa.array(outputs, pa.string()),
            same(batch.key_id, pa.string()),
            same(batch.root, pa.string()),
            same(batch.signature, pa.string()),
            pa.array(index, pa.int32()),
            same(n, pa.int32()),
            tree,
        ],
        schema=capture_schema(),
    )
