"""Serving a model version with a signed receipt per prediction, capturing the predictions.

A :class:`Predictor` wraps a loaded model. Each :meth:`Predictor.predict` returns the
model's predictions and a :class:`~modelledger._serving.receipts.ReceiptBatch`: one signed
receipt per row (see :mod:`modelledger._serving.receipts` for the id and receipt formats,
:mod:`modelledger._serving.encoding` for the canonical input). With an artefact store it
also *captures* the predictions (all, or ``sample_rate`` of them) as Parquet in the
version's folder, through a buffered background writer: see
:mod:`modelledger._serving.capture_writer` for the files, the buffering and the crash
bound, and :mod:`modelledger._serving.capture_reader` for reading them back.

>>> with registry.load("models:/credit-risk@production", capture=True) as predictor:  # doctest: +SKIP
...     predictions, receipts = predictor.predict(applications)
>>> receipts[0].to_dict()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .._domain import ModelVersion
from .._integrity import merkle_levels
from .._loaded import LoadedModel
from .._signature import enforce
from ..errors import InvalidInput
from .capture_writer import (
    CLOSE_TIMEOUT,
    DEFAULT_FLUSH_ROWS,
    DEFAULT_FLUSH_SECONDS,
    DEFAULT_MAX_PENDING,
    DEFAULT_ROW_GROUP_ROWS,
    CaptureFile,
    CaptureWriter,
)
from .encoding import encode_rows, leaf_hashes, leaf_parts, table_columns
from .receipts import ReceiptBatch, ReceiptSigner, check_version_key, id_block, rfc3339_ms

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ..stores.artifacts import ArtifactStore

__all__ = ["CaptureStats", "Predicted", "Predictor"]

_log = logging.getLogger(__name__)


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


class Predictor:
    """Serve a model version with a signed receipt per prediction, capturing predictions.

    ``model`` is what :meth:`Registry.load <modelledger.Registry.load>` returns (its
    input signature is enforced) or any object with ``predict`` (then give
    ``version``). ``key`` is the registry's Ed25519 private key (an object or the key
    file). With ``store`` (the registry's artefact store) predictions are captured in
    the version's folder; without it, predict only signs. ``sample_rate`` captures that
    fraction of rows (receipts are always made for every row); ``seed`` makes the
    sample reproducible. See :mod:`modelledger._serving.capture_writer` for
    ``flush_rows``, ``flush_seconds``, ``max_pending``, the crash bound and ``record``
    (what appends each written file to the ledger).

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
        record: Callable[[Sequence[CaptureFile]], None] | None = None,
    ) -> None:
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
        check_version_key(version.key)
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
            CaptureWriter(
                store,
                version.folder,
                flush_rows=flush_rows,
                flush_seconds=float(flush_seconds),
                max_pending=max_pending,
                row_group_rows=row_group_rows,
                record=record,
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
            data = enforce(self._input_signature, data)  # a DataFrame of exactly these columns
            known = self._input_names
        output = self._predict(data)
        names, columns, count = table_columns(data, known)
        texts, outputs, input_hex = encode_rows(names, columns, count, output)
        version = self.version
        ms, ids = id_block(version.key, count)
        when = rfc3339_ms(ms)
        kid = self._signer.key_id
        if count:
            parts = leaf_parts(version.model, version.version, version.digest, when, kid)
            leaves = leaf_hashes(parts, input_hex, outputs, ids)
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
            if self.sample_rate < 1.0:
                selected = self._sample(count)
                if not len(selected):
                    return
            writer.add(batch, texts, ms, selected)
        except Exception:  # capture never makes predict fail
            _log.exception("prediction capture failed; %d rows not captured", count)
            writer.count_dropped(count)

    def _sample(self, count: int) -> Any:
        import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast

        with self._rng_lock:
            if self._rng is None:
                self._rng = np.random.default_rng(self._seed)
            return np.flatnonzero(self._rng.random(count) < self.sample_rate)

    # ------------------------------------------------------------------ capture state

    def stats(self) -> CaptureStats:
        """``written``, ``pending`` and ``dropped`` counted at one instant (the properties may move apart)."""
        return CaptureStats(*self._writer.counts()) if self._writer else CaptureStats(0, 0, 0)

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
