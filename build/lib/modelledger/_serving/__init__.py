"""Serving: signed prediction receipts, and capturing predictions in the version's folder.

* :mod:`.receipts`: prediction ids, :class:`Receipt`, :class:`ReceiptBatch`, signing and
  offline verification;
* :mod:`.encoding`: the canonical encoding of input rows and outputs, and the digests and
  receipt leaves built from it;
* :mod:`.predictor`: :class:`Predictor`, which serves a model with a receipt per row;
* :mod:`.capture_writer`: the buffered background writer, the Parquet layout of captured
  rows and the crash bound;
* :mod:`.capture_reader`: :class:`CaptureReader`, reading captures back.
"""

from __future__ import annotations

from .capture_reader import CaptureReader, receipts_from_table
from .capture_writer import (
    DEFAULT_FLUSH_ROWS,
    DEFAULT_FLUSH_SECONDS,
    DEFAULT_MAX_PENDING,
    CaptureFile,
    parse_part_name,
    predictions_folder,
)
from .encoding import canonical_row, input_digest
from .predictor import CaptureStats, Predicted, Predictor
from .receipts import (
    InclusionProof,
    Receipt,
    ReceiptBatch,
    check_receipt,
    new_prediction_id,
    parse_prediction_id,
    verify_receipt,
)

__all__ = [
    "DEFAULT_FLUSH_ROWS",
    "DEFAULT_FLUSH_SECONDS",
    "DEFAULT_MAX_PENDING",
    "CaptureFile",
    "CaptureReader",
    "CaptureStats",
    "InclusionProof",
    "Predicted",
    "Predictor",
    "Receipt",
    "ReceiptBatch",
    "canonical_row",
    "check_receipt",
    "input_digest",
    "new_prediction_id",
    "parse_part_name",
    "parse_prediction_id",
    "predictions_folder",
    "receipts_from_table",
    "verify_receipt",
]
