"""The JSON the read API returns, as pydantic models: the one place pydantic is used.

Each model mirrors a library type's ``to_dict()`` (the routes build them with
``model_validate(obj.to_dict())``), so the HTTP shape and the Python shape cannot drift apart
unnoticed: a field the library renames fails validation in the tests.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AliasOut",
    "AliasesOut",
    "DatasetOut",
    "DatasetPage",
    "DatasetRowsOut",
    "DatasetUsageOut",
    "DatasetVersionOut",
    "DatasetVersionPage",
    "DiffOut",
    "ErrorOut",
    "EventOut",
    "EventPage",
    "HealthOut",
    "KeyOut",
    "LineageOut",
    "MemberOut",
    "ModelOut",
    "ModelPage",
    "PublicKeyOut",
    "ReadyOut",
    "RegistrationProofOut",
    "StateOut",
    "TraceOut",
    "TrustBundleOut",
    "VerifyOut",
    "VersionOut",
    "VersionPage",
    "WhoamiOut",
]


class _Out(BaseModel):
    # A field the library adds later is refused rather than silently dropped: the tests catch it.
    model_config = ConfigDict(extra="forbid")


class ErrorOut(_Out):
    """Every error: the library's exception class name and its one-line message."""

    error: str = Field(examples=["NotFound"])
    message: str = Field(examples=["model not found: credit-risk"])


class HealthOut(_Out):
    status: str


class ReadyOut(_Out):
    status: str = Field(description="ready or unavailable")
    metadata: str | None = Field(description="why the metadata database did not answer (null: it did)")
    artifacts: str | None = Field(description="why the artefact store did not answer (null: it did)")


class ModelOut(_Out):
    name: str
    description: str
    tags: dict[str, str]
    created_at: str
    latest_version: int
    archived: bool


class ModelPage(_Out):
    items: list[ModelOut]
    next_cursor: str | None = Field(
        description="pass back as ?cursor= for the next page; a page may hold fewer items than "
        "the limit when some models are outside the caller's roles"
    )


class FileOut(_Out):
    path: str
    size: int
    sha256: str


class VersionOut(_Out):
    model: str
    version: int
    uri: str
    folder: str
    digest: str
    flavor: str
    files: list[FileOut]
    manifest: dict[str, Any]
    created_at: str
    created_by: str
    aliases: list[str]
    key: int
    tags: dict[str, str]
    stage: str | None = Field(default=None, description="set in a model's listing and a single version")


class VersionPage(_Out):
    items: list[VersionOut]
    next_cursor: str | None


class StateOut(_Out):
    model: str
    version: int
    stage: str
    registered_by: str
    approved_by: str | None
    decided_at: str | None
    last_seq: int


class EventOut(_Out):
    seq: int
    time: str
    actor: str
    action: str
    subject: str
    data: dict[str, Any]
    reason: str | None


class EventPage(_Out):
    items: list[EventOut]
    next_cursor: str | None


class AliasOut(_Out):
    alias: str
    uri: str
    version: int
    version_uri: str
    moved_at: str
    moved_by: str


class AliasesOut(_Out):
    model: str
    aliases: list[AliasOut]


class LineageNodeOut(_Out):
    id: str
    kind: str
    label: str
    data: dict[str, Any]


class LineageEdgeOut(_Out):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: str = Field(alias="from")
    target: str = Field(alias="to")
    label: str


class LineageOut(_Out):
    root: str
    nodes: list[LineageNodeOut]
    edges: list[LineageEdgeOut]


class ChangeOut(_Out):
    old: Any
    new: Any


class DiffOut(_Out):
    a: str
    b: str
    params: dict[str, ChangeOut]
    metrics: dict[str, ChangeOut]
    code: dict[str, ChangeOut]
    framework: dict[str, ChangeOut]
    dependencies: dict[str, ChangeOut]
    datasets: list[dict[str, Any]]
    links: list[dict[str, Any]] = []


class ReceiptCheckOut(_Out):
    valid: bool
    problem: str | None


class TraceOut(_Out):
    prediction: dict[str, Any]
    receipt: ReceiptCheckOut
    model: dict[str, Any]
    governance: dict[str, Any]
    manifest: dict[str, Any]
    datasets: list[dict[str, Any]]
    model_steps: list[dict[str, Any]]
    links: list[dict[str, Any]] = []


class ProblemOut(_Out):
    kind: str
    path: str
    detail: str
    version: str | None


class VerifyOut(_Out):
    ok: bool
    versions_checked: int
    datasets_checked: int
    files_checked: int
    events_checked: int
    checkpoints_checked: int
    problems: list[ProblemOut]
    in_flight: list[ProblemOut]
    unrecorded: list[ProblemOut]
    erased: list[dict[str, Any]]
    delegated: dict[str, int] = Field(
        description="events a server wrote for a member, by how the member proved who they were: "
        "key (the member signed the request), token or oidc (the server attests it)"
    )
    mode: str = Field(description="full, or since_last (only what came after an earlier record)")
    covered: dict[str, int] = Field(description="the ledger seq and version / data set key ranges checked")
    since: dict[str, Any] | None = Field(
        description="the earlier verify record a since_last run started from"
    )
    recorded: dict[str, Any] | None = Field(description="the signed record of what this run proved")
    notes: list[str]
    retention: list[dict[str, Any]] = Field(
        default_factory=list, description="S3 Object Lock retention per object (verify with retention only)"
    )


class PublicKeyOut(_Out):
    public_key: str = Field(
        description="the registry's root Ed25519 public key, PEM (/model-signing-key: the server's "
        "ECDSA P-256 model-signing key)"
    )


class TrustBundleOut(BaseModel):
    """The trust bundle exactly as ``Registry.trust_bundle()`` makes it (its segments are
    signed chain data, so nothing in it is reshaped)."""

    model_config = ConfigDict(extra="allow")

    type: str
    root: dict[str, str]
    segments: list[dict[str, Any]]


class RegistrationProofOut(BaseModel):
    """The chain segment from a version's ``version.registered`` event to the checkpoint that
    signs it, exactly as ``Registry.registration_proof()`` makes it (signed chain data, so
    nothing in it is reshaped)."""

    model_config = ConfigDict(extra="allow")

    previous_hash: str
    events: list[dict[str, Any]]
    checkpoint: dict[str, Any]


class KeyOut(_Out):
    key_id: str
    public_pem: str = Field(description="the member's Ed25519 public key, PEM")
    enrolled_seq: int
    enrolled_time: str = Field(description="when the ledger enrolled the key (RFC 3339 UTC)")
    revoked_seq: int | None
    revoked_time: str | None


class MemberOut(_Out):
    name: str
    roles: list[str]
    models: list[str]
    root: bool
    keys: list[KeyOut]


class WhoamiOut(MemberOut):
    """The caller, and how they proved who they are."""

    method: str = Field(description="token (an API token) or oidc (a JWT of the OIDC issuer)")


class DatasetOut(_Out):
    """One data set of ``registry.datasets.list()``."""

    name: str
    description: str
    latest_version: int
    created_at: str


class DatasetPage(_Out):
    items: list[DatasetOut]
    next_cursor: str | None


class ColumnOut(_Out):
    name: str
    type: str = Field(description="integer, float, boolean, string, datetime, binary or object")
    nullable: bool


class DatasetSourceOut(_Out):
    uri: str | None
    kind: str = Field(description="file, table, query, api or dataframe")
    query: str | None
    extracted_at: str | None
    code: dict[str, Any] = Field(
        description="the git source that extracted it: repo_url, path, revision, dirty"
    )


class StepOut(_Out):
    name: str
    kind: str
    params: dict[str, Any]
    columns: list[str]
    inputs: list[str] = Field(description="the data set versions it read, datasets:/name/3")
    code: dict[str, Any]


class DatasetVersionOut(_Out):
    """A data set version as ``DatasetVersion.to_dict()`` has it."""

    # "schema" would shadow a BaseModel attribute: the field has another name in Python only
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    key: int = Field(description="the version's numeric key in this registry")
    name: str
    version: int
    uri: str
    digest: str = Field(description="sha256 over the normalised content: same rows, same digest")
    path: str = Field(description="the Parquet file, relative to the artefact root")
    file_sha256: str = Field(description="sha256 of the Parquet file's bytes (the /file route's ETag)")
    size_bytes: int
    row_count: int
    columns: list[ColumnOut] = Field(alias="schema")
    stats: dict[str, dict[str, Any]] = Field(
        description="per column: nulls, and min and max or the number of distinct values "
        "(an infinite min or max is the string Infinity or -Infinity: JSON has no number for it)"
    )
    source: DatasetSourceOut
    steps: list[StepOut] = Field(description="the processing steps that made it")
    created_at: str
    created_by: str


class DatasetVersionPage(_Out):
    items: list[DatasetVersionOut]
    next_cursor: str | None


class RowsColumnOut(ColumnOut):
    arrow_type: str = Field(description="the exact Arrow type, e.g. timestamp[us] or decimal128(10, 2)")


class DatasetRowsOut(_Out):
    """A slice of a data set version's rows, as JSON records."""

    dataset: str
    offset: int
    limit: int
    total_rows: int
    columns: list[RowsColumnOut]
    rows: list[dict[str, Any]] = Field(
        description="one object per row, column name -> value. Times and dates are ISO 8601, "
        "durations seconds, decimals strings, binary base64, and non-finite floats the strings "
        "NaN, Infinity and -Infinity (null stays null)"
    )


class DatasetUserOut(_Out):
    uri: str
    model: str
    version: int
    role: str = Field(description="train, validation, holdout, test...")


class DatasetUsageOut(_Out):
    """Which model versions used a data set version."""

    dataset: str
    used_by: list[DatasetUserOut] = Field(description="model versions trained or evaluated on it")
    through_derived: list[str] = Field(
        description="the other model versions downstream: those that used data sets made from it "
        "by processing steps (directly or further down), but not this version itself"
    )
