"""Serving with receipts, and capturing predictions in the version's folder.

A :class:`Predictor` wraps a loaded model. Each :meth:`Predictor.predict` returns the
model's predictions and a :class:`~modelledger._receipts.ReceiptBatch`: one signed
receipt per row (see :mod:`modelledger._receipts` for the id and receipt formats). With
an artefact store it also *captures* the predictions (all, or ``sample_rate`` of them)
as Parquet in the version's folder::

    <version folder>/predictions/date=YYYY-MM-DD/part-<first id>-<last id>.parquet

Each file holds the rows of one date (UTC), sorted by prediction id, in row groups of
``row_group_rows`` rows with min/max statistics on ``prediction_id`` and ``time``; its
name gives its id range, so :func:`find_prediction` opens one file and reads one row
group. Columns (:data:`CAPTURE_COLUMNS`, :func:`capture_schema`): ``prediction_id``, ``time``, ``model``,
``version``, ``digest``, ``input_digest``, ``input`` (the canonical JSON text of the row),
``output`` (canonical JSON text), and what the receipt adds: ``key_id``, ``root`` and
``signature`` (shared by the rows of one ``predict`` call), ``leaf_index``, ``tree_size``,
and ``tree``: on the first captured row of each call whose tree has more than one leaf,
every node of the call's Merkle tree (level by level from the leaves, 32 bytes each, 64
bytes a row in all), null elsewhere. Receipts are rebuilt from these
(:func:`receipt_from_row`, :func:`receipts_from_table`), audit path included, rather
than stored as JSON text: a per-row audit path would cost ~450 bytes a row and most of
the writer's time.

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
renamed (local stores; object stores publish on close), so a crash never leaves a partial
file behind, only an ignorable ``.tmp-*`` file.

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
import json
import logging
import os
import posixpath
import threading
import time as _time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, NamedTuple

from ._domain import ModelVersion
from ._integrity import merkle_levels
from ._receipts import (
    ARROW_MIN_ROWS,
    InclusionProof,
    Receipt,
    ReceiptBatch,
    ReceiptSigner,
    _arrow_hex_digests,
    _arrow_leaf_hashes,
    _arrow_row_texts,
    _arrow_tokens,
    _column_tokens,
    _id_block,
    _id_ms,
    _jsonable,
    _leaf_parts,
    _rfc3339_ms,
    _row_texts,
    _sha256_text,
    _token,
    parse_prediction_id,
)
from .errors import IntegrityError, InvalidInput

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from .stores.artifacts import ArtifactStore

__all__ = [
    "CAPTURE_COLUMNS",
    "DEFAULT_FLUSH_ROWS",
    "DEFAULT_FLUSH_SECONDS",
    "DEFAULT_MAX_PENDING",
    "DEFAULT_ROW_GROUP_ROWS",
    "CaptureStats",
    "Predicted",
    "Predictor",
    "capture_schema",
    "find_prediction",
    "read_model_predictions",
    "read_predictions",
    "read_predictions_frame",
    "receipt_from_row",
    "receipts_from_table",
]

DEFAULT_FLUSH_ROWS = 10_000
DEFAULT_FLUSH_SECONDS = 5.0
DEFAULT_MAX_PENDING = 1_000_000
DEFAULT_ROW_GROUP_ROWS = 2_000
PREDICTIONS = "predictions"
CLOSE_TIMEOUT = 30.0

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

_log = logging.getLogger("modelledger.capture")


def capture_schema() -> pa.Schema:
    """The Arrow schema of captured predictions (imports pyarrow)."""
    import pyarrow as pa

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


# --------------------------------------------------------------------------- input and output shapes


def _labels(index: Any) -> list[str]:
    """An Index's labels as str; reading pandas' Arrow-backed labels directly is ~10x faster."""
    import numpy as np

    data = getattr(index, "_data", None)
    arrow = getattr(data, "_pa_array", None)
    if arrow is not None and hasattr(arrow, "to_pylist"):
        labels = arrow.to_pylist()
    elif isinstance(data, np.ndarray):
        labels = data.tolist()
    else:
        labels = list(index)
    return [label if type(label) is str else str(label) for label in labels]


def _table_columns(data: Any, known: list[str] | None = None) -> tuple[list[str], list[Any], int]:
    """(column names, column values, row count) of a predict input.

    ``known`` gives the names of a DataFrame's columns when they are known already (the
    signature's, after enforcement): reading them from the frame costs ~6 µs.
    """
    import numpy as np

    module = type(data).__module__
    if module.startswith("pandas"):
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            names = known if known is not None else _labels(data.columns)
            get = getattr(data, "_get_column_array", None)  # ~1 µs a column; iloc costs ~20 µs
            if get is not None:
                columns = [get(i) for i in range(len(names))]
            else:  # pragma: no cover - other pandas versions
                columns = [data.iloc[:, i].to_numpy() for i in range(len(names))]
            return names, columns, len(data)
        if isinstance(data, pd.Series):
            return ["0" if data.name is None else str(data.name)], [data.array], len(data)
    if isinstance(data, np.ndarray):
        if data.ndim == 1:
            return ["0"], [data], len(data)
        if data.ndim == 2:
            return (
                [str(i) for i in range(data.shape[1])],
                [data[:, i] for i in range(data.shape[1])],
                len(data),
            )
        raise InvalidInput(f"cannot build receipts for a {data.ndim}-D array input: give rows of columns")
    if isinstance(data, Mapping):
        names = [str(k) for k in data]
        values = list(data.values())
        if all(np.ndim(v) == 0 for v in values):
            return names, [[v] for v in values], 1
        lengths = {len(v) for v in values}
        if len(lengths) != 1:
            raise InvalidInput("the input's columns do not all have the same number of rows")
        return names, values, lengths.pop()
    if isinstance(data, (list, tuple)):
        if not data:
            return [], [], 0
        if all(isinstance(r, Mapping) for r in data):
            seen: dict[str, Any] = {}
            for record in data:
                for key in record:
                    seen.setdefault(key, None)
            return (
                [str(k) for k in seen],
                [[record.get(k) for record in data] for k in seen],
                len(data),
            )
        return _table_columns(np.asarray(data, dtype=object))
    raise InvalidInput(
        f"cannot build receipts for a {type(data).__name__} input: give a DataFrame, a dict of "
        "columns, a list of records or a 2-D array"
    )


def _output_tokens(output: Any, count: int) -> list[str]:
    """The canonical JSON text of each row's output."""
    import numpy as np

    module = type(output).__module__
    if module.startswith("pandas"):
        import pandas as pd

        if isinstance(output, pd.DataFrame):
            names, columns, n = _table_columns(output)
            return _checked(_row_texts(names, columns, n), count)
        if isinstance(output, (pd.Series, pd.Index)):
            return _checked(_column_tokens(output.array), count)
    if isinstance(output, np.ndarray):
        if output.ndim == 1:
            return _checked(_column_tokens(output), count)
        if output.ndim == 0 and count == 1:
            return [_token(output.item())]
        if output.ndim == 2 and output.shape[0] == count:
            width = output.shape[1]
            flat = _column_tokens(output.reshape(-1))
            return ["[" + ",".join(flat[i : i + width]) + "]" for i in range(0, len(flat), width)]
        return _checked([_token(_jsonable(row)) for row in output], count)
    if isinstance(output, (list, tuple)):
        return _checked([_token(v) for v in output], count)
    if count == 1:
        return [_token(output)]
    raise InvalidInput(
        f"the model returned a {type(output).__name__} for {count} rows: receipts need one output per row"
    )


def _checked(tokens: list[str], count: int, *, got: int | None = None) -> list[str]:
    if got is not None or len(tokens) != count:
        raise InvalidInput(
            f"the model returned {len(tokens) if got is None else got} outputs for {count} input rows: "
            "receipts need one output per row"
        )
    return tokens


def _arrow_output_tokens(output: Any, count: int) -> Any:
    import numpy as np
    import pyarrow as pa

    if type(output).__module__.startswith("pandas") and hasattr(output, "dtype") and output.ndim == 1:
        values = np.asarray(output) if output.dtype.kind in "fiub" else None
    else:
        values = output if isinstance(output, np.ndarray) and output.ndim == 1 else None
    if values is not None and values.dtype.kind in "fiub":
        if len(values) != count:
            _checked([], count, got=len(values))
        return _arrow_tokens(values)
    return pa.array(_output_tokens(output, count), pa.string())


def _encode_rows(names: list[str], columns: list[Any], count: int, output: Any) -> tuple[Any, Any, Any]:
    """(input texts, output texts, input digest hexes) of a call: lists, or Arrow arrays for long calls."""
    if count >= ARROW_MIN_ROWS:
        try:
            texts = _arrow_row_texts(names, columns, count)
            outputs = _arrow_output_tokens(output, count)
            return texts, outputs, _arrow_hex_digests(texts)
        except (ValueError, TypeError, UnicodeError):  # what Arrow cannot hold (lone surrogates...)
            pass
    texts = _row_texts(names, columns, count)
    return texts, _output_tokens(output, count), _hex_digests(texts)


def _hex_digests(texts: list[str]) -> list[str]:
    sha = hashlib.sha256
    try:
        return [sha(t.encode()).hexdigest() for t in texts]
    except UnicodeEncodeError:
        return [_sha256_text(t) for t in texts]


def _leaf_hashes(template: str, input_hex: list[str], outputs: list[str], ids: list[str]) -> list[bytes]:
    sha = hashlib.sha256
    try:
        return [sha((template % row).encode()).digest() for row in zip(input_hex, outputs, ids, strict=True)]
    except UnicodeEncodeError:
        return [
            sha((template % row).encode("utf-8", "surrogatepass")).digest()
            for row in zip(input_hex, outputs, ids, strict=True)
        ]


# --------------------------------------------------------------------------- the predictor


class Predicted(NamedTuple):
    """What :meth:`Predictor.predict` returns: unpack as ``predictions, receipts = ...``."""

    predictions: Any
    """The model's output, exactly as its ``predict`` returned it."""
    receipts: ReceiptBatch
    """One signed receipt per input row, in row order."""


class CaptureStats(NamedTuple):
    """Capture counters at one instant: rows written, waiting to be written, and given up."""

    written: int
    pending: int
    dropped: int


@dataclass(slots=True)
class _Chunk:
    """The captured rows of one predict call (``selected`` None means every row)."""

    batch: ReceiptBatch
    texts: list[str]
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


class Predictor:
    """Serve a model version with a signed receipt per prediction, capturing predictions.

    ``model`` is what :meth:`Registry.load <modelledger.Registry.load>` returns (its
    input signature is enforced) or any object with ``predict`` (then give
    ``version``). ``key`` is the registry's Ed25519 private key (an object or the key
    file). With ``store`` (the registry's artefact store) predictions are captured in
    the version's folder; without it, predict only signs. ``sample_rate`` captures that
    fraction of rows (receipts are always made for every row); ``seed`` makes the
    sample reproducible. See the module docstring for ``flush_rows``,
    ``flush_seconds``, ``max_pending`` and the crash bound.

    Usually made by ``registry.load(identifier, capture=True)``. Close it (or use it
    as a context manager) to write the last rows; an unclosed predictor is closed at
    interpreter exit.

    >>> store = ArtifactStore("file:///srv/store")  # doctest: +SKIP
    >>> predictor = Predictor(loaded, key="registry.key", store=store)  # doctest: +SKIP
    >>> predictions, receipts = predictor.predict(applications)  # doctest: +SKIP
    >>> predictor.close()  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any,
        *,
        key: Ed25519PrivateKey | str | os.PathLike[str],
        version: ModelVersion | None = None,
        store: ArtifactStore | None = None,
        sample_rate: float = 1.0,
        seed: int | None = None,
        flush_rows: int = DEFAULT_FLUSH_ROWS,
        flush_seconds: float = DEFAULT_FLUSH_SECONDS,
        max_pending: int = DEFAULT_MAX_PENDING,
        row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    ) -> None:
        from ._loaded import LoadedModel
        from ._receipts import _check_version_key

        if isinstance(model, LoadedModel):
            version = version or model.version
            self._predict: Callable[[Any], Any] = model.raw.predict
            self._input_signature = model.signature if model.signature and model.signature.inputs else None
            self._input_names = (
                [c.name for c in self._input_signature.inputs] if self._input_signature else None
            )
        else:
            predict = getattr(model, "predict", None)
            if not callable(predict):
                if not callable(model):
                    raise InvalidInput(f"{type(model).__name__} has no predict method")
                predict = model
            self._predict = predict
            self._input_signature = None
            self._input_names = None
        if version is None:
            raise InvalidInput("give the model's version (a ModelVersion) to sign its predictions")
        if not 0.0 <= sample_rate <= 1.0:
            raise InvalidInput(f"sample_rate must be between 0 and 1, got {sample_rate!r}")
        for name, value in (
            ("flush_rows", flush_rows),
            ("max_pending", max_pending),
            ("row_group_rows", row_group_rows),
        ):
            if type(value) is not int or value < 1:
                raise InvalidInput(f"{name} must be a positive integer, got {value!r}")
        if not flush_seconds > 0:
            raise InvalidInput(f"flush_seconds must be positive, got {flush_seconds!r}")
        _check_version_key(version.key)
        self.model = model
        self.version = version
        self.sample_rate = float(sample_rate)
        self._signer = (
            ReceiptSigner(key) if not isinstance(key, (str, os.PathLike)) else ReceiptSigner.from_file(key)
        )
        self._seed = seed
        self._rng: Any = None
        self._rng_lock = threading.Lock()
        self._writer = (
            _Writer(
                store,
                version.folder,
                flush_rows=flush_rows,
                flush_seconds=float(flush_seconds),
                max_pending=max_pending,
                row_group_rows=row_group_rows,
            )
            if store is not None
            else None
        )

    # ------------------------------------------------------------------ serving

    @property
    def key_id(self) -> str:
        """Id of the key that signs this predictor's receipts."""
        return self._signer.key_id

    def public_key(self) -> bytes:
        """The public key (PEM) that verifies this predictor's receipts."""
        return self._signer.public_key_pem()

    def predict(self, data: Any) -> Predicted:
        """Predict, sign a receipt for every row, and capture the rows (sampled).

        ``data`` is a DataFrame, a dict of columns (or of one row's values), a list of
        records or a 2-D array. Capture problems never raise here (see :attr:`pending`
        and :attr:`dropped`); bad input and model errors do, as in ``LoadedModel.predict``.

        >>> predictions, receipts = predictor.predict(applications)  # doctest: +SKIP
        >>> receipts[0].prediction_id  # doctest: +SKIP
        '01J2Y6J0S3000000AE4ZC2R1T7'
        """
        known = None
        if self._input_signature is not None:
            from ._signature import enforce

            data = enforce(self._input_signature, data)  # a DataFrame of exactly these columns
            known = self._input_names
        output = self._predict(data)
        names, columns, count = _table_columns(data, known)
        texts, outputs, input_hex = _encode_rows(names, columns, count, output)
        version = self.version
        ms, ids = _id_block(version.key, count)
        when = _rfc3339_ms(ms)
        kid = self._signer.key_id
        if count:
            parts = _leaf_parts(version.model, version.version, version.digest, when, kid)
            if isinstance(outputs, list):
                leaves = _leaf_hashes("%s".join(p.replace("%", "%%") for p in parts), input_hex, outputs, ids)
            else:
                leaves = _arrow_leaf_hashes(parts, input_hex, outputs, ids)
            levels = merkle_levels(leaves)
            signature = self._signer.sign_root(levels[-1][0], count)
        else:
            levels, signature = [[]], ""
        batch = ReceiptBatch(
            ids=ids,
            model=version.model,
            version=version.version,
            digest=version.digest,
            time=when,
            key_id=kid,
            input_hex=input_hex,
            outputs=outputs,
            levels=levels,
            signature=signature,
        )
        if self._writer is not None and count:
            self._capture(batch, texts, ms, count)
        return Predicted(output, batch)

    def _capture(self, batch: ReceiptBatch, texts: Any, ms: int, count: int) -> None:
        writer = self._writer
        assert writer is not None
        try:
            selected: Any = None
            rows = count
            if self.sample_rate < 1.0:
                selected = self._sample(count)
                rows = len(selected)
                if not rows:
                    return
            writer.add(_Chunk(batch=batch, texts=texts, ms=ms, selected=selected, rows=rows))
        except Exception:  # capture never makes predict fail
            _log.exception("prediction capture failed; %d rows not captured", count)
            writer.count_dropped(count)

    def _sample(self, count: int) -> Any:
        import numpy as np

        with self._rng_lock:
            if self._rng is None:
                self._rng = np.random.default_rng(self._seed)
            return np.flatnonzero(self._rng.random(count) < self.sample_rate)

    # ------------------------------------------------------------------ capture state

    def stats(self) -> CaptureStats:
        """``written``, ``pending`` and ``dropped`` counted at one instant (the properties may move apart)."""
        return self._writer.stats() if self._writer else CaptureStats(0, 0, 0)

    @property
    def pending(self) -> int:
        """Captured rows not yet written to the store (buffered, queued for retry, or being written)."""
        return self._writer.pending if self._writer else 0

    @property
    def dropped(self) -> int:
        """Captured rows given up: over ``max_pending``, or still unwritten when ``close`` timed out."""
        return self._writer.dropped if self._writer else 0

    @property
    def written(self) -> int:
        """Captured rows durably written to the store."""
        return self._writer.written if self._writer else 0

    @property
    def last_error(self) -> BaseException | None:
        """The last exception a write raised, while the store is failing (None once it recovers)."""
        return self._writer.last_error if self._writer else None

    def flush(self, timeout: float | None = None) -> bool:
        """Write every captured row now; True when nothing is pending afterwards.

        Returns False without waiting further once a write fails (the rows stay queued
        and are retried), or when ``timeout`` seconds pass.
        """
        return self._writer.flush(timeout) if self._writer else True

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Write what is left and stop the writer (retrying a failing store up to ``timeout`` seconds)."""
        if self._writer is not None:
            self._writer.close(timeout)

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        capture = f"capture {self.sample_rate:g}" if self._writer else "no capture"
        return f"<Predictor {self.version.uri} {capture}>"


# --------------------------------------------------------------------------- the writer


class _Writer:
    """Buffers chunks and writes them from one background thread (see the module docstring)."""

    def __init__(
        self,
        store: ArtifactStore,
        folder: str,
        *,
        flush_rows: int,
        flush_seconds: float,
        max_pending: int,
        row_group_rows: int,
    ) -> None:
        self._store = store
        self._base = f"{folder}/{PREDICTIONS}"
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
        self._pid = os.getpid()

    def _after_fork(self) -> None:
        """Start afresh in a forked child: the parent's thread did not survive the fork, and
        the rows it buffered are the parent's to write."""
        self._start_state()

    @property
    def pending(self) -> int:
        return self._open_rows + self._queued_rows + self._inflight_rows

    def stats(self) -> CaptureStats:
        with self._cond:
            return CaptureStats(written=self.written, pending=self.pending, dropped=self.dropped)

    def count_dropped(self, rows: int) -> None:
        with self._cond:
            self.dropped += rows

    def add(self, chunk: _Chunk) -> None:
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

    def flush(self, timeout: float | None) -> bool:
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
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        table = pa.concat_tables([_chunk_table(c) for c in chunks])
        in_order = all(chunks[i - 1].last_id() < chunks[i].first_id() for i in range(1, len(chunks)))
        if not in_order:  # calls from several threads can finish out of order
            table = table.take(pc.sort_indices(table, [("prediction_id", "ascending")]))
        ids = table.column("prediction_id")
        first, last = ids[0].as_py(), ids[-1].as_py()
        rel = f"{self._base}/date={day}/part-{first}-{last}.parquet"
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
        _put_atomic(self._store, rel, sink.getvalue())


def _put_atomic(store: ArtifactStore, rel: str, data: Any) -> None:
    """Publish ``data`` at ``rel`` whole or not at all; an existing file is kept (a retried write)."""
    path = store.full(rel)
    if store.is_local:
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        if os.path.exists(path):
            return
        tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as fh:
                fh.write(memoryview(data))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return
    fs = store.fs
    if fs.exists(path):
        return
    fs.pipe_file(path, data.to_pybytes())


def _chunk_table(chunk: _Chunk) -> pa.Table:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    batch = chunk.batch
    hexes: Any = batch._input_hex
    outputs: Any = batch._outputs
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
        blob = b"".join([b"".join(level) for level in batch._levels])
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


# --------------------------------------------------------------------------- reading


def _path_from_tree(tree: bytes, index: int, size: int) -> tuple[str, ...]:
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


def receipt_from_row(row: Mapping[str, Any], tree: bytes | None = None) -> Receipt:
    """Rebuild the receipt of one captured row (a dict with the :data:`CAPTURE_COLUMNS`).

    A row of a call with several rows needs its call's ``tree``: the row's own ``tree``
    value when it has one, else the value on the call's first captured row (same
    ``root``). :func:`find_prediction` and :func:`receipts_from_table` find it for you.

    >>> row = read_predictions(store, version).slice(0, 1).to_pylist()[0]  # doctest: +SKIP
    >>> receipt_from_row(row).prediction_id  # doctest: +SKIP
    """
    pid = row["prediction_id"]
    size, index = int(row["tree_size"]), int(row["leaf_index"])
    if size > 1:
        tree = row.get("tree") or tree
        if tree is None:
            raise InvalidInput(f"the receipt of {pid} needs the Merkle tree of its call (root {row['root']})")
        path = _path_from_tree(bytes(tree), index, size)
    else:
        path = ()
    return Receipt(
        prediction_id=pid,
        model=row["model"],
        version=int(row["version"]),
        digest=row["digest"],
        input_digest=row["input_digest"],
        output=json.loads(row["output"]),
        time=_rfc3339_ms(_id_ms(pid)),
        key_id=row["key_id"],
        proof=InclusionProof(leaf_index=index, tree_size=size, audit_path=path, root=row["root"]),
        signature=row["signature"],
    )


def receipts_from_table(table: pa.Table) -> list[Receipt]:
    """The receipt of every row of a table from :func:`read_predictions`, in row order.

    >>> receipts = receipts_from_table(read_predictions(store, version))  # doctest: +SKIP
    >>> all(verify_receipt(r, public_pem) for r in receipts)  # doctest: +SKIP
    True
    """
    trees: dict[str, bytes] = {}
    for root, tree in zip(table.column("root").to_pylist(), table.column("tree").to_pylist(), strict=True):
        if tree is not None:
            trees[root] = tree
    return [receipt_from_row(row, trees.get(row["root"])) for row in table.to_pylist()]


def _prediction_record(row: Mapping[str, Any], tree: bytes | None) -> dict[str, Any]:
    receipt = receipt_from_row(row, tree)
    return {
        "prediction_id": receipt.prediction_id,
        "time": receipt.time,
        "model": receipt.model,
        "version": receipt.version,
        "digest": receipt.digest,
        "input_digest": receipt.input_digest,
        "input": json.loads(row["input"]),
        "output": receipt.output,
        "receipt": receipt.to_dict(),
    }


def _listing(store: ArtifactStore, rel: str) -> list[str]:
    """Names in folder ``rel`` (fresh: object-store listings are cached by fsspec)."""
    fs = store.fs
    full = store.full(rel)
    if store.is_local:
        try:
            return os.listdir(full)
        except (FileNotFoundError, NotADirectoryError):
            return []
    fs.invalidate_cache(full)
    try:
        return [posixpath.basename(p.rstrip("/")) for p in fs.ls(full, detail=False)]
    except FileNotFoundError:
        return []


def _parts(store: ArtifactStore, rel: str) -> list[tuple[str, str, str]]:
    """(first id, last id, file name) of each capture file in a date folder."""
    out = []
    for name in _listing(store, rel):
        if name.startswith("part-") and name.endswith(".parquet") and len(name) >= 66 and name[31] == "-":
            out.append((name[5:31], name[32:58], name))
    out.sort()
    return out


def _open_parquet(store: ArtifactStore, rel: str) -> Any:
    import pyarrow.parquet as pq

    if store.is_local:
        return pq.ParquetFile(store.full(rel), memory_map=True)
    return pq.ParquetFile(store.fs.open(store.full(rel), "rb"))


def find_prediction(store: ArtifactStore, version: ModelVersion, prediction_id: str) -> dict[str, Any] | None:
    """The captured prediction ``prediction_id`` of ``version``, or None if it was not captured.

    Reads one folder listing (the id's date), opens only the file whose name range holds
    the id and reads only the row group whose statistics do. Returns ``prediction_id``,
    ``time``, ``model``, ``version``, ``digest``, ``input_digest``, ``input`` (the row, as
    JSON data), ``output`` and ``receipt`` (the receipt as a dict; check it with
    :func:`~modelledger._receipts.verify_receipt`). An id made by another version gives None.

    >>> find_prediction(registry._art, version, "01J2Y6J0S3000000AE4ZC2R1T7")  # doctest: +SKIP
    """
    import pyarrow.compute as pc

    pid = prediction_id.upper() if isinstance(prediction_id, str) else prediction_id
    when, key = parse_prediction_id(pid)
    if version.key and key != version.key:
        return None
    folder = f"{version.folder}/{PREDICTIONS}/date={when.date().isoformat()}"
    for first, last, name in _parts(store, folder):
        if not first <= pid <= last:
            continue
        parquet = _open_parquet(store, f"{folder}/{name}")
        meta = parquet.metadata
        column = parquet.schema_arrow.get_field_index("prediction_id")
        for group in range(meta.num_row_groups):
            stats = meta.row_group(group).column(column).statistics
            if stats is not None and stats.has_min_max and not stats.min <= pid <= stats.max:
                continue
            table = parquet.read_row_group(group)
            hits = table.filter(pc.equal(table.column("prediction_id"), pid))
            if hits.num_rows:
                row = hits.slice(0, 1).to_pylist()[0]
                tree = row["tree"]
                if tree is None and row["tree_size"] > 1:
                    tree = _find_tree(parquet, group, table, row["root"], f"{folder}/{name}")
                return _prediction_record(row, tree)
    return None


def _find_tree(parquet: Any, group: int, table: pa.Table, root: str, where: str) -> bytes:
    """The tree stored on the first captured row of the call with this root: here or in an earlier group."""
    import pyarrow.compute as pc

    for g in range(group, -1, -1):
        if g != group:
            table = parquet.read_row_group(g, columns=["root", "tree"])
        roots = table.column("root")
        found = table.filter(pc.and_(pc.equal(roots, root), pc.is_valid(table.column("tree"))))
        if found.num_rows:
            return bytes(found.column("tree")[0].as_py())
        if roots[0].as_py() != root:
            break  # the call's rows start in this group, and its first row has no tree
    raise IntegrityError(where, f"the Merkle tree of the call with root {root} is missing")


def _utc(value: datetime | str | None, what: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(f"{what} must be an ISO 8601 time, got {value!r}") from None
    if not isinstance(value, datetime):
        raise InvalidInput(f"{what} must be a datetime or ISO 8601 text, got {value!r}")
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _ms(value: datetime) -> int:
    return (value - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)


def read_predictions(
    store: ArtifactStore,
    version: ModelVersion,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
) -> pa.Table:
    """The captured predictions of ``version`` with ``since <= time < until``, sorted by id.

    Times without a zone are UTC. Only the date folders in range are listed, and only
    the files whose id range (hence time range) overlaps are read.

    >>> table = read_predictions(registry._art, version, since="2026-01-01")  # doctest: +SKIP
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    start, end = _utc(since, "since"), _utc(until, "until")
    start_ms = _ms(start) if start else None
    end_ms = _ms(end) if end else None
    base = f"{version.folder}/{PREDICTIONS}"
    tables = []
    for entry in sorted(_listing(store, base)):
        if not entry.startswith("date="):
            continue
        day = entry[5:]
        if (start and day < start.date().isoformat()) or (end and day > end.date().isoformat()):
            continue
        for first, last, name in _parts(store, f"{base}/{entry}"):
            lo, hi = _id_ms(first), _id_ms(last)
            if (start_ms is not None and hi < start_ms) or (end_ms is not None and lo >= end_ms):
                continue
            table = _open_parquet(store, f"{base}/{entry}/{name}").read()
            if (start_ms is not None and lo < start_ms) or (end_ms is not None and hi >= end_ms):
                times = table.column("time")
                keep = None
                if start is not None:
                    keep = pc.greater_equal(times, pa.scalar(start, pa.timestamp("ms", tz="UTC")))
                if end is not None:
                    before = pc.less(times, pa.scalar(end, pa.timestamp("ms", tz="UTC")))
                    keep = before if keep is None else pc.and_(keep, before)
                table = table.filter(keep)
            tables.append(table)
    if not tables:
        return capture_schema().empty_table()
    table = pa.concat_tables(tables)
    return table.take(pc.sort_indices(table, [("prediction_id", "ascending")]))


def read_predictions_frame(
    store: ArtifactStore,
    version: ModelVersion,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
) -> pd.DataFrame:
    """:func:`read_predictions` as a pandas DataFrame (``time`` is tz-aware UTC).

    >>> frame = read_predictions_frame(registry._art, version, since="2026-11-01")  # doctest: +SKIP
    >>> frame.groupby(frame["time"].dt.date)["output"].count()  # doctest: +SKIP
    """
    return read_predictions(store, version, since, until).to_pandas()


def read_model_predictions(
    store: ArtifactStore,
    versions: list[ModelVersion],
    *,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
) -> pa.Table:
    """Captured predictions of the given versions, in prediction id order."""
    import pyarrow as pa
    import pyarrow.compute as pc

    tables = [read_predictions(store, v, since, until) for v in versions]
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return capture_schema().empty_table()
    table = pa.concat_tables(tables)
    return table.take(pc.sort_indices(table, [("prediction_id", "ascending")]))
