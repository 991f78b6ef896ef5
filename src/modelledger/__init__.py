"""modelledger: a model registry built around lineage.

>>> import modelledger
>>> registry = modelledger.Registry.open()  # doctest: +SKIP
"""

from __future__ import annotations

from .capture import (
    CaptureStats,
    Predicted,
    Predictor,
    find_prediction,
    read_model_predictions,
    read_predictions,
    read_predictions_frame,
    receipt_from_row,
    receipts_from_table,
)
from .domain import (
    ColumnSpec,
    FileEntry,
    GcItem,
    GcReport,
    Model,
    ModelVersion,
    Page,
    Problem,
    Signature,
    StagedVersion,
    VerifyReport,
)
from .errors import (
    AlreadyExists,
    Conflict,
    IntegrityError,
    InvalidInput,
    InvalidManifest,
    ModelLedgerError,
    NotFound,
    PermissionDenied,
    SchemaMismatch,
    SchemaOutdated,
    StorageError,
)
from .governance import AliasChange, StateDifference
from .identifiers import ModelRef, parse_model_uri
from .ledger import Checkpoint, LedgerEvent
from .lifecycle import VersionState
from .loaded import LoadedModel
from .manifest import Manifest, SourceInfo, TrainingJob, load_manifest_file
from .policy import Policy
from .receipts import (
    InclusionProof,
    InvalidReceipt,
    Receipt,
    ReceiptBatch,
    canonical_row,
    check_receipt,
    input_digest,
    new_prediction_id,
    parse_prediction_id,
    verify_receipt,
)
from .registry import Registry

__version__ = "0.1.0"

__all__ = [
    "AliasChange",
    "AlreadyExists",
    "CaptureStats",
    "Checkpoint",
    "ColumnSpec",
    "Conflict",
    "FileEntry",
    "GcItem",
    "GcReport",
    "InclusionProof",
    "IntegrityError",
    "InvalidInput",
    "InvalidManifest",
    "InvalidReceipt",
    "LedgerEvent",
    "LoadedModel",
    "Manifest",
    "Model",
    "ModelLedgerError",
    "ModelRef",
    "ModelVersion",
    "NotFound",
    "Page",
    "PermissionDenied",
    "Policy",
    "Predicted",
    "Predictor",
    "Problem",
    "Receipt",
    "ReceiptBatch",
    "Registry",
    "SchemaMismatch",
    "SchemaOutdated",
    "Signature",
    "SourceInfo",
    "StagedVersion",
    "StateDifference",
    "StorageError",
    "TrainingJob",
    "VerifyReport",
    "VersionState",
    "__version__",
    "canonical_row",
    "check_receipt",
    "find_prediction",
    "input_digest",
    "load_manifest_file",
    "new_prediction_id",
    "parse_model_uri",
    "parse_prediction_id",
    "read_model_predictions",
    "read_predictions",
    "read_predictions_frame",
    "receipt_from_row",
    "receipts_from_table",
    "verify_receipt",
]
