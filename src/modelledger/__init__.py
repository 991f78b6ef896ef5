"""modelledger: a model registry built around lineage.

>>> import modelledger
>>> registry = modelledger.Registry.open()  # doctest: +SKIP
"""

from __future__ import annotations

from ._audit import AliasChange, StateDifference
from ._config import ResolvedConfig, Setting, resolve_config, resolve_oidc
from ._domain import (
    ColumnSpec,
    DatasetSource,
    DatasetVersion,
    DownloadedVersion,
    Erasure,
    FileEntry,
    GcItem,
    GcReport,
    Model,
    ModelVersion,
    Page,
    Problem,
    ProcessingStep,
    Signature,
    StagedVersion,
    UploadedVersion,
    VerifyRange,
    VerifyRecord,
    VerifyReport,
)
from ._entrypoint import StepEvent, seed
from ._events import can_view_event, event_models
from ._export import FORMATS as EXPORT_FORMATS
from ._identifiers import ModelRef, parse_model_uri
from ._inputs import inputs
from ._ledger import ChainReport, Checkpoint, LedgerEvent
from ._lifecycle import STAGES, VersionState
from ._lineage import LineageEdge, LineageGraph, LineageNode, VersionDiff
from ._loaded import LoadedModel
from ._manifest import Manifest, ManifestLimits, SourceInfo, TrainingJob, load_manifest_file, load_steps_file
from ._members import ROLES, Member, MemberKey
from ._mlflow_import import ImportOutcome, MlflowImport, import_mlflow
from ._object_lock import ObjectLock, ObjectRetention
from ._policy import Policy
from ._refresh import RefreshReport
from ._registry import Registry
from ._reproduce import Reproduction
from ._schedule import CronSchedule, RefreshDeclaration, parse_cron
from ._scheduler import Firing, Scheduler
from ._search import Condition, VersionQuery, parse_query
from ._serving import (
    CaptureStats,
    InclusionProof,
    Predicted,
    Predictor,
    Receipt,
    ReceiptBatch,
    canonical_row,
    check_receipt,
    input_digest,
    new_prediction_id,
    parse_prediction_id,
    receipts_from_table,
    verify_receipt,
)
from ._signing import create_identity, identities_dir, identity_path
from ._tokens import ApiToken
from ._trace import TraceReport
from ._trust import check_receipt_with_bundle
from ._webhooks import Webhook, WebhookDelivery, check_webhook_signature, webhook_signature
from .errors import (
    AlreadyExists,
    Conflict,
    Erased,
    ImportInterrupted,
    IntegrityError,
    InvalidConfig,
    InvalidInput,
    InvalidManifest,
    InvalidReceipt,
    InvalidToken,
    KeyFileExposed,
    MissingDependency,
    ModelLedgerError,
    ModelRenamed,
    NotFound,
    ObjectRetained,
    PermissionDenied,
    RunFailed,
    SchemaMismatch,
    SchemaOutdated,
    StorageError,
)

__version__ = "0.1.0"

__all__ = [
    "EXPORT_FORMATS",
    "ROLES",
    "STAGES",
    "AliasChange",
    "AlreadyExists",
    "ApiToken",
    "CaptureStats",
    "ChainReport",
    "Checkpoint",
    "ColumnSpec",
    "Condition",
    "Conflict",
    "CronSchedule",
    "DatasetSource",
    "DatasetVersion",
    "DownloadedVersion",
    "Erased",
    "Erasure",
    "FileEntry",
    "Firing",
    "GcItem",
    "GcReport",
    "ImportInterrupted",
    "ImportOutcome",
    "InclusionProof",
    "IntegrityError",
    "InvalidConfig",
    "InvalidInput",
    "InvalidManifest",
    "InvalidReceipt",
    "InvalidToken",
    "KeyFileExposed",
    "LedgerEvent",
    "LineageEdge",
    "LineageGraph",
    "LineageNode",
    "LoadedModel",
    "Manifest",
    "ManifestLimits",
    "Member",
    "MemberKey",
    "MissingDependency",
    "MlflowImport",
    "Model",
    "ModelLedgerError",
    "ModelRef",
    "ModelRenamed",
    "ModelVersion",
    "NotFound",
    "ObjectLock",
    "ObjectRetained",
    "ObjectRetention",
    "Page",
    "PermissionDenied",
    "Policy",
    "Predicted",
    "Predictor",
    "Problem",
    "ProcessingStep",
    "Receipt",
    "ReceiptBatch",
    "RefreshDeclaration",
    "RefreshReport",
    "Registry",
    "Reproduction",
    "ResolvedConfig",
    "RunFailed",
    "Scheduler",
    "SchemaMismatch",
    "SchemaOutdated",
    "Setting",
    "Signature",
    "SourceInfo",
    "StagedVersion",
    "StateDifference",
    "StepEvent",
    "StorageError",
    "TraceReport",
    "TrainingJob",
    "UploadedVersion",
    "VerifyRange",
    "VerifyRecord",
    "VerifyReport",
    "VersionDiff",
    "VersionQuery",
    "VersionState",
    "Webhook",
    "WebhookDelivery",
    "__version__",
    "can_view_event",
    "canonical_row",
    "check_receipt",
    "check_receipt_with_bundle",
    "check_webhook_signature",
    "create_identity",
    "event_models",
    "identities_dir",
    "identity_path",
    "import_mlflow",
    "input_digest",
    "inputs",
    "load_manifest_file",
    "load_steps_file",
    "new_prediction_id",
    "parse_cron",
    "parse_model_uri",
    "parse_prediction_id",
    "parse_query",
    "receipts_from_table",
    "resolve_config",
    "resolve_oidc",
    "seed",
    "verify_receipt",
    "webhook_signature",
]
