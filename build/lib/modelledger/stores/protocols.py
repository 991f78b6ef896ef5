"""The ports: everything the registry asks of a metadata backend, as typed Protocols.

The facade and its services reach metadata only through these. A backend implements
:class:`MetadataStore` (the five concerns below plus opening and closing) and passes the
same parametrised tests; nothing above this line changes. The one SQLAlchemy Core
implementation, :class:`modelledger.stores.sql.SqlMetadataStore`, serves SQLite and
PostgreSQL.

Rules every backend keeps (the tests check them):

* A governed write (:meth:`LedgerStore.govern`, :meth:`ModelStore.create_version`) reads the
  state it hands to ``decide`` and appends the events ``decide`` returns in ONE atomic step,
  serialised with every other governed write: the ledger is a single chain.
* The state it keeps (:class:`~modelledger._lifecycle.VersionState`, aliases, policy) is an
  index of the ledger, changed only by applying each appended event's
  :func:`~modelledger._lifecycle.state_delta`.
* Version and data set numbers are allocated inside that step: concurrent writers get
  distinct, consecutive numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from .._domain import (
    ColumnSpec,
    DatasetSource,
    DatasetVersion,
    FileEntry,
    Model,
    ModelVersion,
    ProcessingStep,
)
from .._ledger import ChainSegment, Checkpoint, LedgerEvent
from .._lifecycle import EventDraft, GovContext, ReplayedState, VersionState
from .._members import Roster
from .._policy import Policy
from .._search import VersionQuery
from .._tokens import ApiToken
from .._webhooks import Webhook, WebhookClaim, WebhookDelivery

__all__ = [
    "DatasetStore",
    "Decide",
    "LedgerStore",
    "MetadataStore",
    "ModelStore",
    "Signer",
    "TokenStore",
    "WebhookStore",
]

Decide = Callable[[GovContext], list[EventDraft]]
"""Given the state read under the write lock, the ledger events to append (or raise)."""


class Signer(Protocol):
    """Signs the chain head with the acting member's key: (seq, head hash, time) -> checkpoint.

    ``key_id`` names the key, so a store can check, before it appends anything, that the key
    is enrolled to the events' actor with the roles their actions need."""

    @property
    def key_id(self) -> str: ...

    def __call__(self, seq: int, head: bytes, time: str, /) -> Checkpoint: ...


class ModelStore(Protocol):
    """Models and their versions."""

    def create_model(self, name: str, description: str, tags: Mapping[str, str], now: datetime) -> Model: ...
    def get_model(self, name: str) -> Model: ...
    def list_models(
        self,
        *,
        prefix: str | None,
        tags: Mapping[str, str],
        limit: int,
        after: str | None,
        stage: str | None = None,
        include_archived: bool = False,
    ) -> list[Model]:
        """Models by name; ``stage`` keeps those whose latest version is at that stage; archived
        ones only with ``include_archived``."""
        ...

    def update_model(
        self,
        name: str,
        *,
        description: str | None,
        tags: Mapping[str, str | None] | None,
        actor: str,
        signer: Signer,
    ) -> Model:
        """Change a model's description or tags and record it in the ledger, in one write."""
        ...

    def create_version(
        self,
        model: str,
        *,
        folder: str,
        digest: str,
        flavor: str,
        files: Sequence[FileEntry],
        manifest: Mapping[str, Any],
        created_by: str,
        now: datetime,
        create_model: bool,
        walk: Decide,
        signer: Signer,
        links: Sequence[tuple[str, str]] = (),
        needs_context: bool = True,
    ) -> ModelVersion:
        """Allocate the next number, insert the version and its data set links, and append the
        events ``walk`` drafts for it, all in one governed write."""
        ...

    def get_version(
        self, model: str, version: int | None = None, *, alias: str | None = None
    ) -> ModelVersion: ...
    def get_version_by_key(self, key: int) -> ModelVersion: ...
    def search_versions(self, query: VersionQuery, *, limit: int, before: int | None) -> list[ModelVersion]:
        """Versions meeting every condition, newest registered first, keys below ``before``."""
        ...

    def list_versions(self, model: str, *, limit: int, before: int | None) -> list[ModelVersion]: ...
    def iter_versions(self, batch: int = 500, *, after: int = 0) -> Iterator[ModelVersion]:
        """Every version whose key is above ``after``, in key order, fetched in pages."""
        ...

    def highest_folder_suffix(self, folder: str) -> int:
        """How far the registered folders ``folder``, ``folder.2``, ``folder.3``... go: an ``n``
        whose folder is registered while ``n + 1``'s is not (``folder`` itself is 1; 0 when it is
        not registered), found in O(log n) index lookups; the highest when there is no gap.
        Folders from ``n + 1`` on are then claimed on the store (``ArtifactStore.claim_folder``)."""
        ...


class LedgerStore(Protocol):
    """The hash-chained ledger, its checkpoints and the governance state indexed from it."""

    def govern(
        self,
        model: str,
        version: int | None,
        decide: Decide,
        *,
        actor: str,
        signer: Signer,
        needs_state: bool = True,
        needs_policy: bool = True,
    ) -> list[LedgerEvent]: ...
    def iter_events(self, *, after: int = 0, batch: int = 5000) -> Iterator[tuple[LedgerEvent, str]]: ...
    def audit(
        self,
        *,
        subjects: Sequence[str],
        subject_prefixes: Sequence[str],
        actor: str | None,
        action: str | None,
        since: str | None,
        until: str | None,
        after: int,
        limit: int,
    ) -> list[tuple[LedgerEvent, str]]: ...
    def checkpoints(self, *, after: int | None = None) -> list[Checkpoint]:
        """Every checkpoint in seq order (with ``after``: only those with a greater seq)."""
        ...

    def count_events(self, *, upto: int) -> int:
        """How many events have a seq of at most ``upto`` (``upto`` itself when none is missing)."""
        ...

    def verify_record(self, key_id: str) -> str | None:
        """The text ``save_verify_record`` last stored for verifier key ``key_id`` (None: none)."""
        ...

    def save_verify_record(self, key_id: str, text: str) -> None:
        """Store (replace) the signed record of what verifier key ``key_id`` last proved."""
        ...

    def ledger_head(self) -> tuple[int, str]:
        """(seq, hash hex) of the chain's last event as the head row records it."""
        ...

    def segment_for(self, subject: str, action: str) -> ChainSegment | None:
        """The first event about ``subject`` with ``action``, the events after it up to the
        checkpoint that signs them, and the hash before it (None: no such event)."""
        ...

    def member_segments(self) -> list[ChainSegment]:
        """A chain segment for each write holding enrolment events, in ledger order (the
        proof a trust bundle carries)."""
        ...

    def public_key(self) -> tuple[str, bytes] | None: ...
    def roster(self) -> Roster:
        """Every member and key as the ledger's enrolment events say now."""
        ...

    def add_public_key(
        self, kid: str, public_pem: bytes, decide: Decide, *, actor: str, signer: Signer
    ) -> bool:
        """Record the public key and ``decide``'s events in one governed write, unless a key is
        recorded already (then False, nothing written)."""
        ...

    def renamed_models(self) -> dict[str, str]:
        """Every former model name -> the name that model has now (from ``model.renamed``)."""
        ...

    def version_state(self, model: str, version: int) -> VersionState: ...
    def version_states(self, model: str, versions: Sequence[int]) -> dict[int, VersionState]:
        """The state of several versions of one model, by number (missing ones left out)."""
        ...

    def policy(self) -> Policy: ...
    def alias_at(self, model: str, alias: str, time: str) -> int | None:
        """The version ``alias`` named at ``time``: its move with the latest time at or before
        ``time``, the later one in the ledger among moves of the same time (None: none yet, or
        removed)."""
        ...

    def alias_history(self, model: str, alias: str | None) -> list[dict[str, Any]]: ...
    def current_state(self) -> ReplayedState: ...
    def rewrite_state(self, state: ReplayedState) -> None: ...
    def aliases_at(self, model: str, version: int, time: str) -> list[str]:
        """The aliases of ``model`` that named ``version`` at ``time``, sorted (each alias's
        latest move at or before ``time``, as ``alias_at`` reads it)."""
        ...

    def current_alias_moves(self, model: str) -> list[dict[str, Any]]:
        """The move that set each alias ``model`` has now, by alias name (rows shaped as
        ``alias_history``'s; an alias whose latest move removed it is left out)."""
        ...

    def iter_event_texts(
        self, *, after: int = 0, batch: int = 20000
    ) -> Iterator[tuple[LedgerEvent, str, str]]:
        """Every event after seq ``after`` with its stored hash and the stored text of its
        data, in seq order, in large pages (a pass over the whole ledger)."""
        ...


class DatasetStore(Protocol):
    """Data set versions, their processing steps and which model versions used them."""

    def find_dataset_version(self, name: str, digest: str) -> DatasetVersion | None: ...
    def get_dataset_version(self, name: str, version: int | None) -> DatasetVersion: ...
    def get_dataset_version_by_key(self, key: int) -> DatasetVersion: ...
    def create_dataset_version(
        self,
        name: str,
        *,
        digest: str,
        path: str,
        file_sha256: str,
        size_bytes: int,
        row_count: int,
        schema: Sequence[ColumnSpec],
        stats: Mapping[str, Any],
        source: DatasetSource,
        steps: Sequence[ProcessingStep],
        created_by: str,
        now: datetime,
        signer: Signer | None = None,
    ) -> tuple[DatasetVersion, bool]:
        """Insert a data set version, or find the one with the same digest (True when new).
        With ``signer``, a governed write that records a new version in the ledger."""
        ...

    def discard_dataset_version(self, key: int, remove_file: Callable[[str], None] | None = None) -> bool:
        """Remove a data set version whose registration was undone, if nothing refers to it
        (no model version, no processing step); True when it was removed. ``remove_file`` is
        called with its file's path, inside the same transaction, when no other version holds
        that file (identical content is one file)."""
        ...

    def list_datasets(self, *, prefix: str | None, limit: int, after: str | None) -> list[dict[str, Any]]: ...
    def list_dataset_versions(self, name: str, *, limit: int, before: int | None) -> list[DatasetVersion]: ...
    def iter_dataset_files(self, batch: int = 500) -> Iterator[tuple[str, str, str, int]]: ...
    def dataset_files_after(self, after: int, batch: int = 500) -> Iterator[tuple[int, str, str, str, int]]:
        """(key, uri, path, sha256, size) of every data set version whose key is above ``after``."""
        ...

    def model_datasets(self, version_key: int) -> list[tuple[str, DatasetVersion]]: ...
    def dataset_users(self, dataset_key: int) -> list[tuple[str, int, str]]: ...
    def dataset_children(self, dataset_key: int) -> list[int]: ...


class TokenStore(Protocol):
    """API tokens: their SHA-256 digests, members, expiry and revocation. Creating and revoking
    one are governed writes (``token.created``, ``token.revoked``: role admin); the digest is
    never in the ledger."""

    def create_token(
        self,
        token_id: str,
        member: str,
        digest: str,
        expires_at: str | None,
        *,
        actor: str,
        signer: Signer,
        reason: str | None,
    ) -> ApiToken:
        """Store a token's digest and append its ``token.created`` event, in one governed write."""
        ...

    def revoke_token(self, token_id: str, *, actor: str, signer: Signer, reason: str | None) -> ApiToken:
        """Mark a token revoked and append ``token.revoked``, in one governed write
        (:class:`~modelledger.errors.NotFound`, or :class:`~modelledger.errors.Conflict` when it
        was revoked already)."""
        ...

    def token_holder(self, digest: str) -> tuple[ApiToken, Roster] | None:
        """The token whose SHA-256 is ``digest`` and the roster (whose member holds it), read
        together (None: no such token)."""
        ...

    def list_tokens(self, *, member: str | None) -> list[ApiToken]:
        """Every token (of ``member``), oldest first."""
        ...


class WebhookStore(Protocol):
    """Webhooks (registry settings, not ledger events) and the log of their delivery attempts.

    A delivery round holds a webhook through a *claim*: :meth:`claim_webhook` takes the next
    due webhook that no other round holds (a process that stops mid-round loses its hold when
    ``until`` passes), and :meth:`webhook_progress` records what the round did, only while it
    still holds the claim, so two rounds never deliver the same webhook at once."""

    def add_webhook(self, webhook: Webhook, secret: str) -> Webhook:
        """Store a new webhook with its HMAC secret."""
        ...

    def remove_webhook(self, webhook_id: str) -> Webhook:
        """Deactivate a webhook and forget its secret; its delivery log stays
        (:class:`~modelledger.errors.NotFound`, or :class:`~modelledger.errors.Conflict` when it
        was removed already)."""
        ...

    def list_webhooks(self, *, include_removed: bool) -> list[Webhook]:
        """Every webhook, oldest first (removed ones only with ``include_removed``)."""
        ...

    def webhook_deliveries(self, webhook_id: str, *, limit: int) -> list[WebhookDelivery]:
        """The webhook's last ``limit`` delivery attempts, newest first."""
        ...

    def claim_webhook(self, *, after: str, now: str, until: str, claim: str) -> WebhookClaim | None:
        """Hold, until ``until``, the first active webhook (by id, ids above ``after``) whose
        next attempt is due at ``now`` and that no round holds; None when there is none."""
        ...

    def webhook_progress(
        self,
        webhook_id: str,
        claim: str,
        *,
        last_seq: int,
        failures: int,
        next_attempt_at: str | None,
        delivery: WebhookDelivery | None,
        held_until: str | None,
    ) -> bool:
        """Record, in one write, a held webhook's new cursor, failure count and next attempt,
        and the attempt just made (if any); keep holding it until ``held_until`` (None: let it
        go). False, writing nothing, when ``claim`` no longer holds it or it was removed."""
        ...


class MetadataStore(ModelStore, LedgerStore, DatasetStore, TokenStore, WebhookStore, Protocol):
    """A whole metadata backend: the five concerns, its schema, and closing it."""

    def schema_revision(self) -> str | None: ...
    def migrate(self) -> str: ...
    def check_schema(self) -> None:
        """Raise :class:`~modelledger.errors.SchemaOutdated` unless the schema is current."""
        ...

    def referenced_paths(self) -> tuple[set[str], set[str]]:
        """Every version folder and every data set file the metadata refers to, read at one
        instant (what ``gc`` must never remove)."""
        ...

    @property
    def reads_are_local(self) -> bool:
        """True when a read is work in this process with no network round trip (SQLite)."""
        ...

    def read_stamp(self) -> str | None:
        """A mark of the committed state the store's reads see: two equal marks mean no
        change was committed between them. None when the store cannot tell."""
        ...

    def shared_reads(self) -> AbstractContextManager[None]:
        """A block in which the calling thread's reads share one connection (or, for a store
        without connections, nothing changes)."""
        ...

    def close(self) -> None: ...
