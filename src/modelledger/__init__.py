"""modelledger: a model registry built around lineage.

>>> import modelledger
>>> registry = modelledger.Registry.open()  # doctest: +SKIP
"""

from __future__ import annotations

from .domain import (
    ColumnSpec,
    FileEntry,
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
from .registry import Registry

__version__ = "0.1.0"

__all__ = [
    "AliasChange",
    "AlreadyExists",
    "Checkpoint",
    "ColumnSpec",
    "Conflict",
    "FileEntry",
    "IntegrityError",
    "InvalidInput",
    "InvalidManifest",
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
    "Problem",
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
    "load_manifest_file",
    "parse_model_uri",
]
