"""The one exception tree of modelledger.

::

    ModelLedgerError
    ├── NotFound              unknown model, version, alias or file
    │   └── Erased            bytes removed on purpose by a recorded erasure
    ├── AlreadyExists         a name or folder that is taken
    ├── Conflict              the registry is not in a state that allows the call
    │   ├── SchemaOutdated    the metadata schema needs ``modelledger migrate``
    │   └── ObjectRetained    S3 Object Lock refused to delete object versions (retention, legal hold)
    ├── InvalidInput          bad names, identifiers, manifests, objects, input rows
    │   ├── InvalidManifest   a manifest field is missing or of the wrong type
    │   ├── InvalidConfig     a config file or variable that cannot be read or has a bad key
    │   └── SchemaMismatch    predict input that does not match the signature
    ├── IntegrityError        a stored byte does not match its recorded digest
    │   └── InvalidReceipt    a prediction receipt that does not verify
    ├── MissingDependency     a model's framework is not installed (names the pip extra)
    ├── RunFailed             running a recorded training again failed (names the step)
    ├── PermissionDenied      the actor may not do this
    │   ├── KeyFileExposed    a private key file that others may read
    │   └── InvalidToken      an API token that is missing, malformed, unknown, expired or revoked
    └── StorageError          the metadata or artefact store failed
        └── ImportInterrupted the source of an import (MLflow) went away part-way

Context travels as keyword-only attributes, so callers and the CLI can report
precisely without parsing messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "AlreadyExists",
    "Conflict",
    "Erased",
    "ImportInterrupted",
    "IntegrityError",
    "InvalidConfig",
    "InvalidInput",
    "InvalidManifest",
    "InvalidReceipt",
    "InvalidToken",
    "KeyFileExposed",
    "MissingDependency",
    "ModelLedgerError",
    "ModelRenamed",
    "NotFound",
    "ObjectRetained",
    "PermissionDenied",
    "RunFailed",
    "SchemaMismatch",
    "SchemaOutdated",
    "StorageError",
]


class ModelLedgerError(Exception):
    """Root of every error modelledger raises on purpose."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ModelLedgerError):
    """``what`` named ``name`` does not exist; ``hint``, when given, says what to do about it."""

    def __init__(self, what: str, name: str, *, hint: str | None = None) -> None:
        super().__init__(f"{what} not found: {name}" + (f": {hint}" if hint else ""))
        self.what = what
        self.name = name
        self.hint = hint


class Erased(NotFound):
    """The bytes of ``target`` were erased on purpose: by ``actor`` at ``time``, because ``reason``
    (ledger event ``seq``)."""

    def __init__(self, target: str, *, actor: str, time: str, reason: str, seq: int) -> None:
        super().__init__(
            "artefacts",
            target,
            hint=f"erased at {time} by {actor} (ledger event {seq}): {reason}; "
            "its digests and history remain (`modelledger history` shows them)",
        )
        self.target = target
        self.actor = actor
        self.time = time
        self.reason = reason
        self.seq = seq


class AlreadyExists(ModelLedgerError):
    def __init__(self, what: str, name: str) -> None:
        super().__init__(f"{what} already exists: {name}")
        self.what = what
        self.name = name


class Conflict(ModelLedgerError):
    pass


class ObjectRetained(Conflict):
    """S3 Object Lock refused to delete ``objects`` (:class:`ObjectRetention` each: path, mode,
    retain-until, legal hold) while doing ``what``; each object is hidden behind a delete
    marker, but its bytes stay in the bucket until its retention ends (or its legal hold is
    lifted)."""

    def __init__(self, what: str, objects: Sequence[Any]) -> None:
        dates = [o.retain_until for o in objects if o.retain_until is not None]
        modes = sorted({str(o.mode) for o in objects if o.mode})
        held = sum(1 for o in objects if o.legal_hold)
        until = f" until {max(dates).isoformat()}" if dates else ""
        why = f"{'/'.join(modes)} retention{until}" if modes else "retention"
        if held:
            why += f", {held} under legal hold"
        super().__init__(
            f"{what}: S3 Object Lock keeps {len(objects)} object version(s) ({why}); they are hidden "
            "but their bytes stay in the bucket until then: run it again after that date"
            + (" (or once the legal hold is lifted)" if held else "")
        )
        self.what = what
        self.objects = tuple(objects)


class SchemaOutdated(Conflict):
    def __init__(self, *, current: str | None, head: str) -> None:
        found = current or "no schema"
        super().__init__(
            f"metadata schema is at {found}, this modelledger needs {head}: "
            "run `modelledger migrate` (or `modelledger init` for a new registry)"
        )
        self.current = current
        self.head = head


class InvalidInput(ModelLedgerError):
    pass


class InvalidManifest(InvalidInput):
    def __init__(self, field: str, problem: str, *, source: str | None = None) -> None:
        where = f" in {source}" if source else ""
        super().__init__(f"invalid manifest{where}: field '{field}' {problem}")
        self.field = field
        self.problem = problem
        self.source = source


class InvalidConfig(InvalidInput):
    """Configuration that cannot be used: ``source`` is the file or environment variable,
    ``key`` the setting at fault (``None`` when the whole source is, e.g. bad TOML)."""

    def __init__(self, source: str, key: str | None, problem: str) -> None:
        what = f"{source}: key '{key}'" if key else source
        super().__init__(f"invalid configuration: {what} {problem}")
        self.source = source
        self.key = key
        self.problem = problem


class SchemaMismatch(InvalidInput):
    def __init__(self, column: str, problem: str) -> None:
        super().__init__(f"input does not match the model signature: column '{column}' {problem}")
        self.column = column
        self.problem = problem


class IntegrityError(ModelLedgerError):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"integrity check failed for {path}: {problem}")
        self.path = path
        self.problem = problem


class InvalidReceipt(IntegrityError):
    """A receipt that does not verify; ``reason`` says why in one line."""

    def __init__(self, prediction_id: str, reason: str) -> None:
        super().__init__(f"receipt {prediction_id}", reason)
        self.prediction_id = prediction_id
        self.reason = reason


class MissingDependency(ModelLedgerError):
    """``package`` must be installed for this: loading or saving a model of a framework that
    is not installed here. ``extra`` is modelledger's pip extra that installs it (``None`` when
    there is none: install ``package`` itself).

    >>> str(MissingDependency(package="xgboost", extra="xgboost"))
    "loading a xgboost model needs the xgboost package: pip install 'modelledger[xgboost]'"
    """

    # class-level defaults: a remote client rebuilds this error from its name and message only
    package: str | None = None
    extra: str | None = None

    def __init__(self, *, package: str, extra: str | None, purpose: str | None = None) -> None:
        how = f"pip install 'modelledger[{extra}]'" if extra else f"pip install {package}"
        what = purpose or f"loading a {extra or package} model"
        super().__init__(f"{what} needs the {package} package: {how}")
        self.package = package
        self.extra = extra


class RunFailed(ModelLedgerError):
    """Running a version's recorded training again (reproduce, refresh) failed at ``step``
    (``checkout``, ``environment``, ``data``, ``run``, ``verdict``); ``detail`` says why. The
    failed run leaves no candidate: nothing is registered before the run step, and a version
    the run registered before failing is rejected.

    >>> str(RunFailed("environment", "Python 3.9.7 is not installed on this machine"))
    "the run failed at step 'environment': Python 3.9.7 is not installed on this machine"
    """

    # class-level defaults: a remote client rebuilds this error from its name and message only
    step: str = ""
    detail: str = ""

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"the run failed at step {step!r}: {detail}")
        self.step = step
        self.detail = detail


class PermissionDenied(ModelLedgerError):
    pass


class KeyFileExposed(PermissionDenied):
    """A private key file that group or others may access; it is refused, not used."""

    def __init__(self, path: str, mode: int) -> None:
        super().__init__(
            f"private key file {path} has mode {mode:04o}: group/others may access it; run `chmod 600 {path}`"
        )
        self.path = path
        self.mode = mode


class InvalidToken(PermissionDenied):
    """An API token that does not prove who calls: ``reason`` says why (missing, malformed,
    unknown, expired, revoked, or its member holds no live key). The server answers 401."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"not authenticated: {reason}")
        self.reason = reason


class StorageError(ModelLedgerError):
    pass


class ImportInterrupted(StorageError):
    """An import's source stopped answering part-way. What was imported is complete (each
    version is registered whole or not at all); running the import again finishes it.
    ``summary`` is what was done before it stopped (an ``MlflowImport``; ``None`` when the
    error was rebuilt from a message)."""

    summary: object = None

    def __init__(self, message: str, *, summary: object = None) -> None:
        super().__init__(message)
        self.summary = summary


class ModelRenamed(UserWarning):
    """A warning (not an error): a model was named by a former name, which still resolves to it.

    ``old`` is the name used, ``new`` the model's name now."""

    def __init__(self, old: str, new: str) -> None:
        super().__init__(
            f"model {old!r} was renamed to {new!r}; {old!r} still resolves to it, but use {new!r}"
        )
        self.old = old
        self.new = new
