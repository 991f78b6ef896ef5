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
    "StateOut",
    "TraceOut",
    "TrustBundleOut",
    "VerifyOut",
    "VersionOut",
    "VersionPage",
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


class PublicKeyOut(_Out):
    public_key: str = Field(description="the registry's root Ed25519 public key, PEM")


class TrustBundleOut(BaseModel):
    """The trust bundle exactly as ``Registry.trust_bundle()`` makes it (its segments are
    signed chain data, so nothing in it is reshaped)."""

    model_config = ConfigDict(extra="allow")

    type: str
    root: dict[str, str]
    segments: list[dict[str, Any]]


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
