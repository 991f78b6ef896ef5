"""The Registry: the public verbs of modelledger.

>>> from modelledger import Registry
>>> registry = Registry.open()                      # ./.modelledger, SQLite + folder
>>> v = registry.register("credit-risk", fitted_pipeline, sample_input=X_train[:5])  # doctest: +SKIP
>>> registry.set_alias("credit-risk", "production", v.version)                   # doctest: +SKIP
>>> registry.load("models:/credit-risk@production").predict(X_new)              # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import json
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, Literal, cast, overload

from ._audit import subject_history
from ._config import resolve_config
from ._data import Datasets
from ._delegation import DelegatedSigner
from ._domain import (
    DownloadedVersion,
    Erasure,
    FileEntry,
    GcReport,
    Model,
    ModelVersion,
    Page,
    UploadedVersion,
    VerifyReport,
)
from ._download import download_planned, plan_download
from ._entrypoint import RunProgress, report_registered
from ._erasure import (
    erasure_from_event,
    find_erasure,
    plan_dataset_erasure,
    plan_predictions_erasure,
    plan_version_erasure,
    remove_erased,
)
from ._events import EventVerbs
from ._export import export as export_provenance
from ._export._emit import EmittingStore, Outbox, spool_folder, transport_from
from ._governance import GovernanceVerbs
from ._identifiers import (
    check_number,
    fold_name,
    model_ref,
    validate_alias,
    validate_name,
    validate_version_folder,
)
from ._keys import read_public_pem
from ._ledger import Checkpoint
from ._lifecycle import (
    EventDraft,
    GovContext,
    check_unprotected,
    decide_alias,
    decide_registration,
    decide_version_tags,
    record_captures,
)
from ._lineage import LineageGraph, VersionDiff, dataset_lineage, diff_versions, version_lineage
from ._loaded import LoadedModel
from ._loading import check_registration, load_verified
from ._manifest import DEFAULT_LIMITS, Manifest, ManifestLimits
from ._members import METHODS
from ._model_signing import public_key_pem as model_signing_public_key
from ._object_lock import ObjectLock, ObjectRetention, object_lock_from
from ._paging import MAX_PAGE, check_limit, decode_cursor, make_page
from ._refresh import RefreshVerbs
from ._registration import (
    FolderNaming,
    ProgressCallback,
    check_folder_naming,
    plan_registration,
    scratch,
    write_registration,
)
from ._reproduce import DEFAULT_TOLERANCE, Reproduction
from ._reproduce import reproduce as reproduce_version
from ._search import VersionQuery, condition, parse_query, query_from_filters
from ._serving import (
    DEFAULT_FLUSH_ROWS,
    DEFAULT_FLUSH_SECONDS,
    DEFAULT_MAX_PENDING,
    CaptureFile,
    CaptureReader,
    Predictor,
    parse_prediction_id,
)
from ._signing import Identity, current_actor, ensure_root, identity_path, keyring, validate_member
from ._time import now, parse_duration
from ._trace import TraceReport, trace_prediction
from ._trust import segment_to_dict, trust_bundle
from ._verify import collect_garbage, unrecorded_records, verify_registry
from ._witness import CheckpointWitness, witnessed_checkpoint
from .errors import (
    Conflict,
    Erased,
    IntegrityError,
    InvalidInput,
    ModelLedgerError,
    NotFound,
    PermissionDenied,
    SchemaOutdated,
)
from .stores import artifact_storage_options, open_metadata_store
from .stores.artifacts import CHUNK, ArtifactStore
from .stores.protocols import MetadataStore, Signer

__all__ = ["FolderNaming", "Registry"]


class Registry(GovernanceVerbs, EventVerbs, RefreshVerbs):
    """A model registry: metadata in a SQL database, artefacts under an fsspec root.

    Construct with :meth:`open`; the constructor does no I/O.
    """

    def __init__(
        self,
        metadata: MetadataStore,
        artifacts: ArtifactStore,
        *,
        auto_migrate: bool = False,
        folder_naming: FolderNaming = "auto",
        actor: str | None = None,
        key_path: Path | None = None,
        manifest_limits: ManifestLimits | None = None,
    ) -> None:
        self._meta = metadata
        self._art = artifacts
        self._key_path = key_path  # an explicit key file; None: the actor's own identity
        self._datasets: Datasets | None = None
        self._captures = CaptureReader(artifacts)
        self._proven: dict[int, str] = {}  # version key -> digest proven against the ledger
        self._auto_migrate = auto_migrate
        self._home: Path | None = None  # the embedded registry's folder, for saying it is not there yet
        self._checked = False
        self.folder_naming = folder_naming
        self._actor = actor
        self._legacy_key: Path | None = None  # the key file older releases kept per registry
        self._id: Identity | None = None
        self._limits = manifest_limits or DEFAULT_LIMITS
        self._via: Mapping[str, Any] | None = None  # set on a view made by on_behalf_of
        self._witness: CheckpointWitness | None = None  # set by witness_checkpoints
        self._outbox: Outbox | None = None  # OpenLineage events waiting to be sent (open(openlineage=))

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        artifacts: str | None = None,
        folder_naming: FolderNaming = "auto",
        actor: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        key: str | os.PathLike[str] | None = None,
        identity: str | os.PathLike[str] | None = None,
        manifest_limits: ManifestLimits | None = None,
        token: str | None = None,
        object_lock: ObjectLock | Mapping[str, Any] | str | None = None,
        openlineage: str | None = None,
    ) -> Registry:
        """Open a registry.

        ``url``, ``artifacts`` and ``storage_options`` not given here are resolved like the
        CLI's: environment (``MODELLEDGER_URL``, ``MODELLEDGER_ARTIFACTS``,
        ``MODELLEDGER_STORAGE_OPTIONS``), then ``modelledger.toml``, then the user config file
        (see :func:`resolve_config`). With no URL from any of them: the embedded default,
        ``./.modelledger`` (or ``$MODELLEDGER_HOME`` or ``home`` in a config file, any folder
        name) holding ``registry.db`` and ``artifacts/``; the first write (create a
        model, register, upload, set the policy, register a data set) creates it, while a read
        of one that does not exist yet raises :class:`NotFound` and creates nothing.
        With a database URL (``sqlite:///x.db``, ``postgresql://...``) the schema must
        have been created with ``modelledger init``; opening and reading never create a
        database file. ``storage_options`` go to fsspec
        (for example ``{"endpoint_url": ...}`` for an S3-compatible server).

        Who acts is proven by a private key of your own, never stored in the registry:
        ``key`` (or ``$MODELLEDGER_KEY``) is a key file, ``identity`` (or
        ``$MODELLEDGER_IDENTITY``, or ``identity`` in a config file) an identity's name or key
        file; by default the key of
        ``actor`` (``$MODELLEDGER_USER``, git's user.email or the OS user) in
        :func:`identities_dir`, created on first use. The first user of a new registry
        becomes its root admin; others act once an admin has enrolled their public key
        (:meth:`enrol`). ``actor`` only selects which of your own keys to use.
        ``manifest_limits`` bounds manifests, ``params``, ``metrics`` and model tags
        (default: :class:`ManifestLimits` ``()``: 1 MiB files, 64 KiB strings, 32 levels).
        ``object_lock`` (an :class:`ObjectLock`, ``"governance:30d"``,
        ``"compliance:52w:legal-hold"``, a mapping, or ``"off"``; else
        ``MODELLEDGER_OBJECT_LOCK`` or ``object_lock`` in a config file) writes every artefact,
        manifest, data set file and capture file with S3 Object Lock retention: an ``s3://``
        root in a bucket with Object Lock enabled only (see ``docs/object-lock.md``).

        ``openlineage`` (else ``MODELLEDGER_OPENLINEAGE`` or ``openlineage`` in a config file)
        sends OpenLineage events as data set versions, model versions, approvals and
        deployments are written: ``http(s)://...`` (Marquez: ``.../api/v1/lineage``), a file
        (``file://`` or a path: JSON lines) or ``kafka://broker:9092/topic`` (with
        ``confluent-kafka`` installed); ``"off"`` sends nothing. A receiver that is down never
        fails or slows a write: events wait in a spool beside the registry and are sent later
        (:meth:`openlineage_status`, :meth:`flush_openlineage`; see ``docs/export.md``).

        An ``http://`` or ``https://`` URL is a registry server (``modelledger server``): the
        result is a :class:`RemoteRegistry` with the same verbs, authenticated by ``token``
        (or ``$MODELLEDGER_TOKEN``), signing writes with your key when this machine holds it.

        >>> Registry.open("sqlite:///reg.db", artifacts="file:///data/store")  # doctest: +SKIP
        >>> Registry.open("https://models.example.com", token=token)  # doctest: +SKIP
        """
        check_folder_naming(folder_naming)
        if url is not None and url.startswith(("http://", "https://")):
            return _remote_registry(url, token=token, key=key)
        config = resolve_config(
            registry=url,
            artifacts=artifacts,
            storage_options=storage_options,
            identity=None if identity is None else os.fspath(identity),
            object_lock=object_lock,
            openlineage=openlineage,
        )
        url, artifacts, storage_options = (
            config.registry.value,
            config.artifacts.value,
            config.storage_options.value,
        )
        if url is not None and url.startswith(("http://", "https://")):
            return _remote_registry(url, token=token, key=key)
        home = None
        if url is None:
            home = config.home.value
            url = _sqlite_url(home / "registry.db")
            artifacts = artifacts or (home / "artifacts").as_uri()
        metadata = open_metadata_store(url, storage_options=storage_options)
        outbox = None
        lineage = config.openlineage.value
        if lineage and lineage != "off":
            outbox = Outbox(
                spool_folder(home, url), transport_from(lineage, source=config.openlineage.source)
            )
            # every write the registry makes goes through the store: one place turns them into events
            metadata = cast(MetadataStore, EmittingStore(metadata, outbox))
        if artifacts is None:
            db = _sqlite_file(url)
            if db is None:
                raise InvalidInput(
                    "give artifacts= (a folder, file://, s3:// or memory:// URL) for this registry"
                )
            artifacts = (db.parent / "artifacts").as_uri()
        if "://" not in artifacts:
            artifacts = Path(artifacts).absolute().as_uri()
        chosen = key or os.environ.get("MODELLEDGER_KEY") or None
        named = config.identity.value
        if chosen is None and named is not None:
            text = os.fspath(named)
            is_path = "/" in text or os.sep in text or text.startswith("~") or text.endswith((".key", ".pem"))
            chosen = text if is_path else str(identity_path(text))
        key_path = Path(chosen).expanduser().absolute() if chosen is not None else None
        registry = cls(
            metadata,
            ArtifactStore(
                artifacts,
                object_lock=object_lock_from(config.object_lock.value),
                **artifact_storage_options(storage_options or {}),
            ),
            auto_migrate=home is not None,
            folder_naming=folder_naming,
            actor=actor,
            key_path=key_path,
            manifest_limits=manifest_limits,
        )
        registry._home = home
        registry._legacy_key = _default_key_path(url)
        registry._outbox = outbox
        return registry

    def init(self) -> str:
        """Create or upgrade the metadata schema and make sure the registry has its signing key.

        The Ed25519 key is created on first init (owner-only file at :attr:`key_path`); its
        public half is stored in the registry so anyone can verify the ledger. Data set
        versions and capture files the ledger has no record of (written by an older release,
        or by a serving process stopped before it recorded a file) are recorded as they are
        now, so that ``verify`` holds them to a record from then on. Returns the schema
        revision.
        """
        rev: str = self._meta.migrate()
        self._checked = True
        ensure_root(self._meta, self._identity(), self.actor)
        drafts = unrecorded_records(self._meta, self._art)
        if drafts:
            self._meta.govern(
                "",
                None,
                lambda _ctx: drafts,
                actor=self.actor,
                signer=self._signer(),
                needs_state=False,
                needs_policy=False,
            )
        return rev

    migrate = init

    def create_bucket(self) -> bool:
        """Create the S3 bucket of an ``s3://`` artefact root (False when it exists already).

        >>> Registry.open(url, artifacts="s3://ml-models/registry").create_bucket()  # doctest: +SKIP
        True
        """
        created: bool = self._art.create_bucket()
        return created

    def _ready(self, *, write: bool = False) -> None:
        """Check the schema once. The embedded default upgrades an older schema itself, and a
        ``write`` creates it when it does not exist yet; a read never creates anything."""
        if self._checked:
            return
        try:
            self._meta.check_schema()
        except (NotFound, SchemaOutdated) as exc:
            if not self._auto_migrate:
                raise
            missing = isinstance(exc, NotFound) or exc.current is None
            if missing and not write:
                raise NotFound(
                    "registry",
                    str(self._home or "the embedded default"),
                    hint="nothing has been registered there yet (`modelledger init` or a first "
                    "registration creates it)",
                ) from exc
            self.init()
        self._checked = True

    def readiness(self) -> dict[str, str | None]:
        """Whether the registry can serve now: one cheap read of the metadata database (its
        schema revision) and one of the artefact store (a listing of its root). Returns
        ``{"metadata": problem, "artifacts": problem}``, each None when that store answered.

        >>> registry.readiness()  # doctest: +SKIP
        {'metadata': None, 'artifacts': None}
        """
        out: dict[str, str | None] = {}
        for name, check in (("metadata", self._meta.check_schema), ("artifacts", self._art.ping)):
            try:
                check()
                out[name] = None
            except ModelLedgerError as exc:
                out[name] = exc.message
        return out

    # ------------------------------------------------------------------ identity

    def _identity(self) -> Identity:
        """This process's key: the one chosen, else the actor's own identity, else (a registry
        from an older release) the registry key kept beside it, else a new identity."""
        if self._id is None:
            if self._key_path is not None:
                self._id = Identity(self._key_path)
            else:
                own = identity_path(self.actor)
                legacy = self._legacy_key
                if not own.exists() and legacy is not None and legacy.exists():
                    self._id = Identity(legacy)
                else:
                    self._id = Identity(own, create=True)
        return self._id

    @property
    def key_path(self) -> Path:
        """Where this process finds its private signing key."""
        return self._identity().path

    def trust_bundle(self) -> dict[str, Any]:
        """The trust bundle (JSON-ready): the root key and every signed enrolment write, with
        which :func:`check_receipt_with_bundle` checks a receipt offline, revocations included
        (those made before the export).

        >>> json.dump(registry.trust_bundle(), open("bundle.json", "w"))  # doctest: +SKIP
        """
        self._ready()
        return trust_bundle(self._meta)

    def whoami(self) -> dict[str, Any]:
        """Who this process acts as: ``actor``, ``key_path``, ``key_id``, ``public_key`` (PEM
        text) and ``member`` (their enrolment in this registry, or None). Creates the default
        identity's key when there is none yet, as a first write would.

        >>> registry.whoami()["member"]["roles"]  # doctest: +SKIP
        ['approver', 'deployer']
        """
        identity = self._identity()
        member = None
        try:
            self._ready()
            owner = self._meta.roster().owner(identity.key_id)
            member = owner.to_dict() if owner is not None else None
        except NotFound:
            pass  # no registry there yet: who you are does not depend on it
        return {
            "actor": self.actor,
            "key_path": str(identity.path),
            "key_id": identity.key_id,
            "public_key": identity.public_pem().decode(),
            "member": member,
        }

    def _signer(self) -> Signer:
        if self._witness is not None:
            # a governed write starts: the policy may copy the newest committed checkpoint
            self._witness.offer(self._meta)
        signer = self._identity().signer()
        return signer if self._via is None else DelegatedSigner(signer, self._via)

    def on_behalf_of(
        self,
        member: str,
        *,
        method: str,
        request: Mapping[str, Any] | None = None,
        key_id: str | None = None,
        signature: str | None = None,
    ) -> Registry:
        """This registry as a server uses it for one caller: writes act as ``member`` and are
        signed with this process's key, which must be enrolled with the ``gateway`` role; every
        event records for whom and how they proved it (``method``: ``"key"`` with the
        ``request`` they signed, its ``key_id`` and ``signature``; ``"token"``; ``"oidc"``).
        The store refuses the write unless that member holds the role it needs. The view
        shares this registry's connections: close this registry, not the view.

        >>> bob = registry.on_behalf_of("bob@example.com", method="token")  # doctest: +SKIP
        >>> bob.approve(uri, reason="ok")  # doctest: +SKIP
        """
        if method not in METHODS:
            raise InvalidInput(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        via: dict[str, Any] = {"server": self.actor, "method": method, "principal": validate_member(member)}
        if method == "key":
            if request is None or key_id is None or signature is None:
                raise InvalidInput("a key-signed call needs the signed request, its key_id and signature")
            via.update(request=dict(request), key_id=key_id, signature=signature)
        server = self._identity()
        view = copy.copy(self)
        view._actor = member
        view._id = server
        view._datasets = None  # rebuilt for the view, so that data set writes act as the member
        view._via = via
        return view

    def public_key(self, key_id: str | None = None) -> bytes:
        """The registry's root public key (PEM): pin it outside the registry to verify its
        ledger (``verify(public_key=...)``). With ``key_id``, the key of that id as its member
        enrolment recorded it (a receipt names the key that signed it).

        >>> registry.public_key(receipt.key_id)  # doctest: +SKIP
        """
        self._ready()
        if key_id is not None:
            pem = self._meta.roster().public_pem(key_id)
            stored = self._meta.public_key()
            if pem is None and stored is not None and stored[0] == key_id:
                pem = bytes(stored[1])
            if pem is None:
                raise NotFound("key", f"{key_id} (never enrolled in this registry)")
            return pem
        stored = self._meta.public_key()
        if stored is None:
            raise NotFound("registry key", "run `modelledger init`")
        return bytes(stored[1])

    @property
    def actor(self) -> str:
        """Who acts: the ``actor`` given, else the member this process's chosen key is enrolled
        to, else :func:`current_actor`. The store refuses a write unless the key proves it."""
        if self._actor is None:
            name = None
            if self._key_path is not None and self._key_path.exists():
                owner = (
                    self._meta.roster().owner(Identity(self._key_path).key_id)
                    if self._checked_quietly()
                    else None
                )
                name = owner.name if owner is not None else None
            self._actor = name or current_actor()
        return self._actor

    def _checked_quietly(self) -> bool:
        """Whether the schema can be read now (for a lookup that may do without it)."""
        try:
            self._ready()
        except ModelLedgerError:
            return False
        return True

    @property
    def artifact_root(self) -> str:
        return self._art.url

    def witness_checkpoints(
        self,
        folder: str | os.PathLike[str],
        *,
        every_events: int | None = 1000,
        every_seconds: float | None = 300.0,
        storage_options: Mapping[str, Any] | None = None,
    ) -> CheckpointWitness:
        """Keep copies of the newest checkpoint in ``folder`` (a path or an fsspec URL,
        outside the database), on a density policy: when a governed write of this registry
        starts and ``every_events`` events or more came after the last copy, or
        ``every_seconds`` seconds or more passed since it; and when this registry closes
        (the end of the session), whatever the policy. ``verify(trusted_checkpoint=folder)``
        (``verify --trusted-checkpoint FOLDER``) then holds the ledger to the newest copy: a
        ledger cut back past it is reported ``truncated``. The events after the newest copy
        are the gap a cut at the tail can hide in (``docs/verify.md``).

        >>> registry.witness_checkpoints("/mnt/worm/ledger", every_events=1000)  # doctest: +SKIP
        """
        witness = CheckpointWitness(
            os.fspath(folder),
            every_events=every_events,
            every_seconds=every_seconds,
            storage_options=dict(storage_options or {}),
        )
        self._witness = witness
        return witness

    def close(self) -> None:
        if self._witness is not None:
            witness, self._witness = self._witness, None
            witness.offer(self._meta, closing=True)  # the end of the session is always kept
        self._meta.close()

    @property
    def reads_are_local(self) -> bool:
        """True when reading metadata is work in this process with no network round trip to
        wait on (SQLite); False for a database server."""
        return self._meta.reads_are_local

    def read_stamp(self) -> str | None:
        """A mark of the metadata's committed state, in one small read: two equal marks mean
        that nothing was committed between them, so whatever was read between them is still
        what a read would return now (PostgreSQL: its snapshot; SQLite: ``data_version``). None
        where the backend cannot tell (an in-memory SQLite database).

        A server uses it to answer a repeated read from memory, checking one mark instead of
        running the read again.

        >>> before = registry.read_stamp()  # doctest: +SKIP
        >>> mv = registry.get_version("models:/credit-risk@production")  # doctest: +SKIP
        >>> still_current = before is not None and registry.read_stamp() == before  # doctest: +SKIP
        """
        return self._meta.read_stamp()

    def shared_reads(self) -> AbstractContextManager[None]:
        """A block in which this thread's reads share one database connection.

        For a caller that makes several small reads in a row, such as a server answering one
        request: on PostgreSQL each read otherwise takes a connection from the pool, with its
        own round trips. What the reads return is the same either way; writes in the block
        keep their own transaction.

        >>> with registry.shared_reads():  # doctest: +SKIP
        ...     mv = registry.get_version("models:/credit-risk@production")
        ...     state = registry.state(mv.uri)
        """
        return self._meta.shared_reads()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ models

    def create_model(
        self, name: str, *, description: str = "", tags: Mapping[str, str] | None = None
    ) -> Model:
        """Create a registered model.

        >>> registry.create_model("credit-risk", description="PD", tags={"team": "risk"})  # doctest: +SKIP
        """
        validate_name(name)
        checked = {k: v for k, v in _check_tags(tags, self._limits).items() if v is not None}
        if len(checked) > self._limits.max_tags:
            raise InvalidInput(f"a model may have at most {self._limits.max_tags} tags, got {len(checked)}")
        self._ready(write=True)
        model: Model = self._meta.create_model(name, description, checked, now())
        return model

    def get_model(self, name: str) -> Model:
        """A model by name (a former name resolves, with a :class:`ModelRenamed` warning)."""
        validate_name(name)
        self._ready()
        try:
            model: Model = self._meta.get_model(name)
        except NotFound:
            new = self._renamed(name)
            if new is None:
                raise
            model = self._meta.get_model(new)
        return model

    def update_model(
        self, name: str, *, description: str | None = None, tags: Mapping[str, str | None] | None = None
    ) -> Model:
        """Change a model's description or tags (a tag set to ``None`` is removed).

        Tags are held to the registry's :class:`ManifestLimits`: the model's tags after the
        change may number at most ``max_tags``. That count is read before the write, so two
        concurrent updates can together pass it by what each adds.
        """
        validate_name(name)
        changes = _check_tags(tags, self._limits, removals=True)
        self._ready(write=True)
        if changes:
            current = self._meta.get_model(name).tags
            kept = {k for k in current if changes.get(k, "") is not None}
            after = kept | {k for k, v in changes.items() if v is not None}
            if len(after) > self._limits.max_tags:
                raise InvalidInput(
                    f"a model may have at most {self._limits.max_tags} tags; {name!r} would have {len(after)}"
                )
        model: Model = self._meta.update_model(
            name, description=description, tags=tags, actor=self.actor, signer=self._signer()
        )
        return model

    def list_models(
        self,
        *,
        prefix: str | None = None,
        tags: Mapping[str, str] | None = None,
        stage: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        include_archived: bool = False,
    ) -> Page[Model]:
        """One page of models, by name (without regard to case, as names compare); search by name
        prefix (in any case), by tags (all must match) and by the stage of their latest version.
        Archived models are left out unless ``include_archived``.

        >>> page = registry.list_models(prefix="credit", tags={"team": "risk"})  # doctest: +SKIP
        >>> registry.list_models(stage="approved")  # doctest: +SKIP
        >>> more = registry.list_models(prefix="credit", cursor=page.next_cursor)  # doctest: +SKIP
        """
        check_limit(limit)
        if stage is not None:
            condition("stage", "=", stage)  # an unknown stage is refused, not silently empty
        after = decode_cursor(cursor, str)
        self._ready()
        rows = self._meta.list_models(
            prefix=prefix,
            tags=dict(tags or {}),
            limit=limit + 1,
            after=after,
            stage=stage,
            include_archived=include_archived,
        )
        return make_page(rows, limit, key=lambda m: m.name)

    def search_versions(
        self,
        query: str | VersionQuery | None = None,
        *,
        model: str | None = None,
        stage: str | None = None,
        alias: str | None = None,
        registered_by: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        tags: Mapping[str, str] | None = None,
        metrics: Mapping[str, str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[ModelVersion]:
        """Versions of any model that meet a query and the keyword filters (all of them), newest
        registered first, one page at a time. The query language: conditions joined by ``and``
        on ``model``, ``version``, ``stage``, ``alias``, ``registered_by``, ``created``,
        ``metrics.<name>`` and ``tags.<key>`` (see :mod:`modelledger._search`).

        >>> registry.search_versions("stage = 'approved' and metrics.auc > 0.8")  # doctest: +SKIP
        >>> registry.search_versions(model="x", metrics={"auc": ">= 0.8"}, since="30d")  # doctest: +SKIP
        """
        check_limit(limit)
        parsed = query if isinstance(query, VersionQuery) else parse_query(query or "")
        parsed = parsed & query_from_filters(
            model=model,
            stage=stage,
            alias=alias,
            registered_by=registered_by,
            since=since,
            until=until,
            tags=tags,
            metrics=metrics,
        )
        before = decode_cursor(cursor, int)
        self._ready()
        rows = self._meta.search_versions(parsed, limit=limit + 1, before=before)
        return make_page(rows, limit, key=lambda v: v.key)

    def iter_models(self, **filters: Any) -> Iterator[Model]:
        cursor = None
        while True:
            page = self.list_models(cursor=cursor, **filters)
            yield from page
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # ------------------------------------------------------------------ versions

    def register(
        self,
        name: str,
        source: Any,
        *,
        manifest: Manifest | Mapping[str, Any] | str | os.PathLike[str] | None = None,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        sample_input: Any = None,
        execution_id: str | None = None,
        capture: bool = True,
        code_path: str | os.PathLike[str] | None = None,
        datasets: Mapping[str, Any] | None = None,
        progress: ProgressCallback | None = None,
        load_check: bool = True,
    ) -> ModelVersion:
        """Register a new version: write and seal its artefacts, then commit its row.

        ``source`` is a fitted scikit-learn estimator or pipeline, any object with
        ``predict`` (or a plain callable), or the path of a folder of files.
        Everything is checked before anything is written (plan, then write); a failure
        after that removes what was written, so no half version and no stray data set is
        ever left. ``datasets`` maps roles (train, validation, holdout, test) to data set
        versions (``datasets:/x/3``) or to data (a DataFrame, Table, CSV or Parquet path)
        that is registered for you as ``<name>-<role>``; a scikit-learn pipeline's
        processing steps are recorded against the train set. The manifest records the
        git source of ``code_path`` (a script or folder; default: the running script)
        unless the manifest gives its own ``source``; data sets registered here share it.
        ``capture=False`` records no git or environment facts at all.
        ``load_check=False`` does not load a folder's files back through its declared flavor
        before registering them: for a server taking uploads, which would otherwise need every
        framework installed and would unpickle what a caller sent (the client that saved the
        files loaded them back before uploading). An object is always loaded back.

        >>> v = registry.register("credit-risk", pipe, sample_input=X[:5],
        ...                       params={"max_depth": 3}, metrics={"auc": 0.91})  # doctest: +SKIP
        >>> v.uri  # doctest: +SKIP
        'models:/credit-risk/1'
        """
        version: ModelVersion = self._plan_and_write(
            name,
            source,
            commit=self.create_version,
            progress=progress,
            manifest=manifest,
            params=params,
            metrics=metrics,
            sample_input=sample_input,
            execution_id=execution_id,
            capture=capture,
            code_path=code_path,
            datasets=datasets,
            load_check=load_check,
        )
        report_registered(version)  # to the process that started this run, if one did (_run)
        return version

    def upload(
        self,
        name: str,
        source: Any,
        *,
        manifest: Manifest | Mapping[str, Any] | str | os.PathLike[str] | None = None,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        sample_input: Any = None,
        execution_id: str | None = None,
        capture: bool = True,
        code_path: str | os.PathLike[str] | None = None,
        datasets: Mapping[str, Any] | None = None,
        progress: ProgressCallback | None = None,
        load_check: bool = True,
    ) -> UploadedVersion:
        """Write and seal a version's artefacts in a new folder, without registering it.

        The first half of :meth:`register`, for pipelines that upload artefacts in one
        step and register them in another (:meth:`create_version`). Until then the folder
        is an orphan that ``verify`` reports and ``gc`` may collect. Data sets given as data
        are registered here, as :meth:`register` does.

        >>> uploaded = registry.upload("credit-risk", pipe)  # doctest: +SKIP
        >>> registry.create_version(uploaded).uri  # doctest: +SKIP
        'models:/credit-risk/4'
        """
        uploaded: UploadedVersion = self._plan_and_write(
            name,
            source,
            commit=lambda done: done,  # registering is the caller's later step
            progress=progress,
            manifest=manifest,
            params=params,
            metrics=metrics,
            sample_input=sample_input,
            execution_id=execution_id,
            capture=capture,
            code_path=code_path,
            datasets=datasets,
            load_check=load_check,
        )
        return uploaded

    def _plan_and_write(
        self,
        name: str,
        source: Any,
        *,
        commit: Callable[[UploadedVersion], Any],
        progress: ProgressCallback | None,
        **options: Any,
    ) -> Any:
        """Plan (every check, in a scratch folder), then write through ``commit``."""
        self._ready(write=True)
        # the stored spelling names the folder: models/Credit-Risk/... whatever case the caller used
        name = self._check_open_for_versions(name)
        with scratch() as tmp:
            plan = plan_registration(
                name,
                source,
                tmp,
                datasets_service=self.datasets,
                folder_naming=self.folder_naming,
                limits=self._limits,
                **options,
            )
            return write_registration(
                plan,
                artifacts=self._art,
                datasets_service=self.datasets,
                commit=commit,
                progress=progress,
                taken=self._meta.highest_folder_suffix,
            )

    def _check_open_for_versions(self, name: str) -> str:
        """The model's name as stored (or ``name`` for a new model), after refusing up front,
        before any byte is written, a new version of an archived model or under a former name
        (the store checks both again under its write lock)."""
        validate_name(name)
        try:
            model = self._meta.get_model(name)
        except NotFound:
            renames = {fold_name(old): new for old, new in self._meta.renamed_models().items()}
            new = renames.get(fold_name(name))
            if new is not None:
                raise Conflict(
                    f"{name} was renamed to {new}: register new versions as {new} "
                    "(a former name is never reused)"
                ) from None
            return name
        if model.archived:
            raise Conflict(
                f"models:/{model.name} is archived: it cannot take new versions (unarchive it first)"
            )
        return model.name

    def stage(self, name: str, source: Any, **options: Any) -> UploadedVersion:
        """Deprecated: the old name of :meth:`upload` ("stage" now means only a lifecycle stage)."""
        warnings.warn(
            "Registry.stage() is deprecated: use Registry.upload(); it will be removed in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.upload(name, source, **options)

    @property
    def datasets(self) -> Datasets:
        """Data set versions: ``registry.datasets.register(name, data, source=..., steps=...)``."""
        if self._datasets is None:
            self._datasets = Datasets(
                self._meta,
                self._art,
                ready=self._ready,
                actor=lambda: self.actor,
                signer=self._signer,
                limits=self._limits,
                erased=lambda uri: find_erasure(self._meta, [uri], "dataset.erased"),
            )
        return self._datasets

    def trace(self, prediction_id: str) -> TraceReport:
        """Everything behind one captured prediction: receipt check, model version, approval and
        deployment, code, hyperparameters, dependencies, training job, data sets and their steps.

        >>> report = registry.trace("01JD3M4Q8Z0000001K7WQ2X9RB")  # doctest: +SKIP
        >>> report.governance["approved_by"], report.datasets[0]["source"]  # doctest: +SKIP
        """
        mv, record = self._find_prediction(prediction_id)
        self._ready()
        return trace_prediction(self._meta, mv, record, self._meta.roster(), keyring(self._meta))

    def _find_prediction(self, prediction_id: str) -> tuple[ModelVersion, dict[str, Any]]:
        when, key = parse_prediction_id(prediction_id)
        mv = self.get_version_by_key(key)
        record = self._captures.find(mv, prediction_id)
        if record is None:
            raise NotFound(
                "prediction", f"{prediction_id} (made by {mv.uri} on {when.date()}, but not in its captures)"
            )
        return mv, record

    def predictions(
        self,
        identifier_or_model: str,
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        as_pandas: bool = False,
    ) -> Any:
        """Captured predictions of one version (``models:/x/3``) or of every version of a model,
        for ``since <= time < until`` (a time, a date, ``yesterday`` or an age such as ``7d``),
        as a pyarrow Table (or a pandas DataFrame).

        >>> registry.predictions("credit-risk", since="2026-11-01", as_pandas=True)  # doctest: +SKIP
        """
        self._ready()
        if identifier_or_model.startswith("models:/"):
            versions = [self.get_version(identifier_or_model)]
        else:
            versions = list(self.iter_versions(identifier_or_model))
        table = self._captures.read_versions(versions, since, until)
        return table.to_pandas() if as_pandas else table

    def prediction(self, prediction_id: str) -> dict[str, Any]:
        """The captured record of one prediction: ``prediction_id``, ``time``, ``model``, ``version``,
        ``digest``, ``input_digest``, ``input`` (the row), ``output`` and ``receipt`` (a dict).

        Raises :class:`NotFound` when the id's version is unknown or did not capture it.

        >>> registry.prediction("01JD3M4Q8Z0000001K7WQ2X9RB")["receipt"]  # doctest: +SKIP
        """
        return self._find_prediction(prediction_id)[1]

    def lineage(self, uri: str) -> LineageGraph:
        """Everything upstream of a model or data set version: data sets, steps, sources.

        For a data set version, also what was made from it and which model versions used it.

        >>> graph = registry.lineage("models:/credit-risk/3")  # doctest: +SKIP
        >>> print(graph.to_mermaid())  # doctest: +SKIP
        """
        if uri.startswith("datasets:/"):
            return dataset_lineage(self._meta, self.datasets.get(uri))
        return version_lineage(self._meta, self.get_version(uri))

    def diff(self, a: str, b: str) -> VersionDiff:
        """What changed between two model versions (params, code, dependencies, data, metrics).

        >>> registry.diff("models:/credit-risk/2", "models:/credit-risk/3").params  # doctest: +SKIP
        """
        return diff_versions(self._meta, self.get_version(a), self.get_version(b))

    def create_version(self, uploaded: UploadedVersion) -> ModelVersion:
        """Register uploaded artefacts as the model's next version (one metadata transaction).

        The model is created if it does not exist yet.
        """
        # An UploadedVersion may be built by hand: its name and folder become paths too.
        validate_name(uploaded.model)
        validate_version_folder(uploaded.folder, uploaded.model)
        self._ready(write=True)
        version: ModelVersion = self._meta.create_version(
            uploaded.model,
            folder=uploaded.folder,
            digest=uploaded.digest,
            flavor=uploaded.flavor,
            files=uploaded.files,
            manifest=uploaded.manifest,
            created_by=self.actor,
            now=now(),
            create_model=True,
            links=[(d["uri"], d["role"]) for d in uploaded.manifest.get("datasets") or ()],
            # the walk reads the policy and aliases only to approve or deploy automatically
            needs_context=any(
                (uploaded.manifest.get("stages") or {}).get(s) == "auto" for s in ("approved", "deployed")
            ),
            walk=lambda ctx: decide_registration(
                ctx,
                uploaded.manifest,
                {
                    "folder": uploaded.folder,
                    "digest": uploaded.digest,
                    "flavor": uploaded.flavor,
                    "files": len(uploaded.files),
                },
            ),
            signer=self._signer(),
        )
        return version

    def get_version(self, name_or_uri: str, version: int | None = None) -> ModelVersion:
        """A version by identifier or by name and number.

        >>> registry.get_version("models:/credit-risk@production")  # doctest: +SKIP
        >>> registry.get_version("credit-risk", 3)  # doctest: +SKIP
        """
        ref = model_ref(name_or_uri, version)
        self._ready()
        try:
            mv: ModelVersion = self._meta.get_version(ref.name, ref.version, alias=ref.alias)
        except NotFound as exc:
            new = self._renamed(ref.name) if exc.what == "model" else None
            if new is None:
                raise
            mv = self._meta.get_version(new, ref.version, alias=ref.alias)
        return mv

    def open_file(self, identifier: str, path: str) -> tuple[FileEntry, IO[bytes]]:
        """One artefact file of a version, opened for reading (seekable), with its recorded
        size and sha256: what a server streams to a remote client, which checks the bytes
        against that record. Only the version's own files can be opened.

        >>> entry, f = registry.open_file("models:/credit-risk/3", "model.pkl")  # doctest: +SKIP
        """
        mv = self.get_version(identifier)
        entry = next((f for f in mv.files if f.path == path), None)
        if entry is None:
            raise NotFound("file", f"{path} in {mv.uri}")
        return entry, self._art.open(f"{mv.folder}/artifacts/{entry.path}")

    def get_version_by_key(self, key: int) -> ModelVersion:
        """A version by its numeric key (what prediction ids carry)."""
        check_number(key, "version key")
        self._ready()
        mv: ModelVersion = self._meta.get_version_by_key(key)
        return mv

    def list_versions(self, name: str, *, limit: int = 100, cursor: str | None = None) -> Page[ModelVersion]:
        """One page of a model's versions, newest first.

        >>> page = registry.list_versions("credit-risk", limit=20)  # doctest: +SKIP
        """
        validate_name(name)
        check_limit(limit)
        before = decode_cursor(cursor, int)
        self._ready()
        try:
            rows = self._meta.list_versions(name, limit=limit + 1, before=before)
        except NotFound:
            new = self._renamed(name)
            if new is None:
                raise
            rows = self._meta.list_versions(new, limit=limit + 1, before=before)
        return make_page(rows, limit, key=lambda v: v.version)

    def iter_versions(self, name: str) -> Iterator[ModelVersion]:
        """Every version of a model, newest first, fetched a page at a time."""
        cursor = None
        while True:
            page = self.list_versions(name, limit=MAX_PAGE, cursor=cursor)
            yield from page
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # ------------------------------------------------------------------ aliases

    def set_alias(self, name: str, alias: str, version: int, *, reason: str | None = None) -> None:
        """Point ``models:/<name>@<alias>`` at a version (moving it if it was set); recorded in the ledger."""
        validate_alias(alias)
        check_number(version)
        name = self._current_name(name)
        self._meta.govern(
            name,
            version,
            lambda ctx: decide_alias(ctx, alias, version, reason=reason),
            actor=self.actor,
            signer=self._signer(),
            needs_state=True,  # no alias may point at a retired version
            needs_policy=True,
        )

    def delete_alias(self, name: str, alias: str, *, reason: str | None = None) -> None:
        """Remove an alias; recorded in the ledger."""
        validate_alias(alias)
        name = self._current_name(name)

        def decide(ctx: GovContext) -> list[EventDraft]:
            check_unprotected(ctx, alias)
            if alias not in ctx.aliases:
                raise NotFound("alias", f"models:/{name}@{alias}")
            return decide_alias(ctx, alias, None, reason=reason)

        self._meta.govern(
            name, None, decide, actor=self.actor, signer=self._signer(), needs_state=False, needs_policy=True
        )

    # ------------------------------------------------------------------ loading

    @overload
    def load(self, identifier: str, *, capture: Literal[False] = False) -> LoadedModel: ...
    @overload
    def load(
        self,
        identifier: str,
        *,
        capture: Literal[True],
        sample_rate: float = ...,
        seed: int | None = ...,
        flush_rows: int = ...,
        flush_seconds: float = ...,
        max_pending: int = ...,
    ) -> Predictor: ...
    @overload
    def load(
        self,
        identifier: str,
        *,
        capture: bool,
        sample_rate: float = ...,
        seed: int | None = ...,
        flush_rows: int = ...,
        flush_seconds: float = ...,
        max_pending: int = ...,
    ) -> LoadedModel | Predictor: ...
    def load(
        self,
        identifier: str,
        *,
        capture: bool = False,
        sample_rate: float = 1.0,
        seed: int | None = None,
        flush_rows: int | None = None,
        flush_seconds: float | None = None,
        max_pending: int | None = None,
    ) -> LoadedModel | Predictor:
        """Load a version by identifier, verifying every artefact byte before deserialising.

        With ``capture=True`` it returns a :class:`~modelledger.Predictor` for
        serving: each ``predict`` also returns a signed receipt per row (this process
        needs the registry's private key), and the predictions (``sample_rate`` of them;
        ``seed`` makes the sample reproducible) are captured in the version's folder
        through a buffered writer (``flush_rows``, ``flush_seconds``, ``max_pending``:
        see :mod:`modelledger._serving.capture_writer`). Close the predictor, or use it in a ``with``
        block, so the last rows are written.

        >>> model = registry.load("models:/credit-risk@production")  # doctest: +SKIP
        >>> model.predict(applications)  # doctest: +SKIP
        >>> with registry.load("models:/credit-risk@production", capture=True) as served:  # doctest: +SKIP
        ...     predictions, receipts = served.predict(applications)
        """
        mv = self._proven_version(identifier, "load")
        try:
            loaded = load_verified(self._art, mv)
        except NotFound:
            # erased since this process proved it: say so rather than "file missing"
            self._raise_if_erased(mv, self._version_subjects(mv))
            raise
        if not capture:
            return loaded
        identity = self._identity()
        owner = self._meta.roster().owner(identity.key_id)
        if owner is None or not owner.has_role("serving", mv.model):
            who = owner.name if owner is not None else f"key {identity.key_id}"
            raise PermissionDenied(
                f"{who} may not sign receipts for {mv.model}: receipts are signed by a serving "
                "identity (an admin enrols one with the serving role: `modelledger members add "
                "<name> --role serving --key <public key>`; open the registry with its identity)"
            )
        return Predictor(
            loaded,
            key=identity.private(),
            store=self._art,
            sample_rate=sample_rate,
            seed=seed,
            flush_rows=DEFAULT_FLUSH_ROWS if flush_rows is None else flush_rows,
            flush_seconds=DEFAULT_FLUSH_SECONDS if flush_seconds is None else flush_seconds,
            max_pending=DEFAULT_MAX_PENDING if max_pending is None else max_pending,
            record=self._capture_recorder(mv),
        )

    def _proven_version(self, identifier: str, verb: str) -> ModelVersion:
        """The version ``identifier`` names, its digest proven against its signed
        ``version.registered`` ledger record (once per process and version)."""
        ref = model_ref(identifier)
        mv = self.get_version(identifier)
        # Named aliases never point at a retired version (retiring removes them, and moving one
        # onto it is refused); only @latest, the newest number, can resolve to one.
        if ref.alias == "latest" and self._meta.version_state(mv.model, mv.version).stage == "retired":
            raise Conflict(
                f"models:/{ref.name}@{ref.alias} resolves to {mv.uri}, which is retired: a retired version "
                f"is not {verb}ed by alias ({verb} {mv.uri} by number to audit it)"
            )
        if self._proven.get(mv.key) != mv.digest:  # proven once per process and version
            subjects = self._version_subjects(mv)
            self._raise_if_erased(mv, subjects)
            check_registration(self._meta, mv, keyring(self._meta), subjects=subjects)
            self._proven[mv.key] = mv.digest
        return mv

    def registration_proof(self, identifier: str) -> dict[str, Any]:
        """The signed ledger record of a version's registration: the chain segment from its
        ``version.registered`` event to the checkpoint that signs it (JSON values). A client
        of a server checks it with :meth:`trust_bundle`'s keys before trusting the version's
        file list (``RemoteRegistry.download`` does).

        >>> proof = registry.registration_proof("models:/credit-risk/3")  # doctest: +SKIP
        """
        mv = self.get_version(identifier)
        for subject in self._version_subjects(mv):
            segment = self._meta.segment_for(subject, "version.registered")
            if segment is not None:
                return segment_to_dict(segment)
        raise IntegrityError(mv.uri, "has no registration event in the ledger")

    def download(
        self,
        identifier: str,
        dest: str | os.PathLike[str],
        *,
        files: Sequence[str] | None = None,
        overwrite: bool = False,
        manifest: bool = False,
        progress: ProgressCallback | None = None,
    ) -> DownloadedVersion:
        """Fetch a version's files (any flavor; the only way back for a ``files`` version)
        into the folder ``dest`` (created if missing), laid out by their paths in the version.

        The version's digest is first proven against its signed registration in the ledger,
        then every file is streamed (never held whole in memory) into a staging folder inside
        ``dest`` while its sha256 and size are checked; files take their names only once all
        of them have matched, so a mismatch raises :class:`IntegrityError` and leaves no
        partial file. A file already in ``dest`` with the same bytes is kept (a second
        download writes nothing); one with other bytes is refused with :class:`AlreadyExists`
        unless ``overwrite``. ``files`` picks some of the version's files by path.
        ``manifest=True`` also writes ``modelledger-version.json``: the version record (every
        file's sha256 and size, the manifest), to check the folder again later.
        ``progress(bytes_done, bytes_total)`` is called as bytes arrive.

        >>> got = registry.download("models:/bert-onnx/latest", "./bert")  # doctest: +SKIP
        >>> got.files  # doctest: +SKIP
        ('model.onnx', 'tokenizer.json')
        """
        mv = self._proven_version(identifier, "download")
        plan = plan_download(mv, dest, files=files, overwrite=overwrite, manifest=manifest)

        def chunks(entry: FileEntry) -> Iterator[bytes]:
            with self._art.open(f"{mv.folder}/artifacts/{entry.path}") as fh:
                while block := fh.read(CHUNK):
                    yield block

        try:
            return download_planned(plan, chunks, progress=progress)
        except IntegrityError:
            # erased since this process proved it: say so rather than "file missing"
            self._raise_if_erased(mv, self._version_subjects(mv))
            raise

    def _raise_if_erased(self, mv: ModelVersion, subjects: list[str]) -> None:
        erased = find_erasure(self._meta, subjects, "version.erased")
        if erased is not None:
            raise Erased(mv.uri, actor=erased.actor, time=erased.time, reason=erased.reason, seq=erased.seq)

    def _version_subjects(self, mv: ModelVersion) -> list[str]:
        """The ledger subjects of a version under every name its model has had."""
        renames = self._meta.renamed_models()
        names = [mv.model, *(old for old, new in renames.items() if new == mv.model)]
        return [f"models:/{n}/{mv.version}" for n in names]

    # ------------------------------------------------------------------ version tags

    def set_version_tags(
        self, uri: str, tags: Mapping[str, str | None], *, reason: str | None = None
    ) -> ModelVersion:
        """Set (a string) or remove (``None``) tags of a version: a ``version.tagged`` ledger
        event (role: contributor); the tags show in :attr:`ModelVersion.tags`.

        >>> registry.set_version_tags("models:/x/3", {"team": "risk", "old": None})  # doctest: +SKIP
        """
        changes = _check_tags(tags, self._limits, removals=True)
        mv = self.get_version(uri)
        after = {k for k in mv.tags if changes.get(k, "") is not None} | {
            k for k, v in changes.items() if v is not None
        }
        if len(after) > self._limits.max_tags:
            raise InvalidInput(
                f"a version may have at most {self._limits.max_tags} tags; {mv.uri} would have {len(after)}"
            )
        self._meta.govern(
            mv.model,
            mv.version,
            lambda ctx: decide_version_tags(ctx, changes, reason=reason),
            actor=self.actor,
            signer=self._signer(),
            needs_state=False,
            needs_policy=False,
        )
        return self.get_version(mv.uri)

    # ------------------------------------------------------------------ reproduce

    def process_environment(self) -> dict[str, str]:
        """The environment variables under which another process opens this registry as this
        actor (``Registry.open()`` there): the metadata URL, the artefact root and the key file.
        Used for the runs that :meth:`reproduce` starts. A database URL is passed as it was
        given, password included: the run is this user's own process, and a run records only
        its data, declared variables and ``PYTHONHASHSEED``, never these."""
        out = {"MODELLEDGER_ARTIFACTS": self._art.url, "MODELLEDGER_KEY": str(self.key_path)}
        url = getattr(self._meta, "url", None)
        if isinstance(url, str) and url:
            out["MODELLEDGER_URL"] = url
        if self._home is not None:
            out["MODELLEDGER_HOME"] = str(self._home)
        if self._actor:
            out["MODELLEDGER_USER"] = self._actor
        return out

    def reproduce(
        self,
        identifier: str,
        *,
        allow_dirty: bool = False,
        tolerance: float = DEFAULT_TOLERANCE,
        repository: str | None = None,
        pins: Mapping[str, str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
        progress: RunProgress | None = None,
    ) -> Reproduction:
        """Run a version's recorded training again and say whether the same model came out.

        A clean checkout of the recorded revision (a version trained from uncommitted changes is
        refused unless ``allow_dirty``; ``repository`` when the recorded one is not reachable,
        default: the recorded URL, else the checkout this process runs in), an isolated
        environment with the recorded Python and exact dependency versions (cached under
        ``cache_dir`` by its digest; ``pins`` replaces versions, to see whether the version holds
        under an upgrade), the same data set versions by digest, the recorded command: its
        registration is a candidate linked ``reproduction_of`` the original. The verdict
        (``identical``, ``equivalent`` within ``tolerance``, or ``different`` with the reasons)
        is recorded in the ledger as ``version.reproduced`` about the original and returned.
        ``progress`` is called with a :class:`StepEvent` per step. A failure at any step raises
        :class:`RunFailed` naming the step and leaves no candidate (a candidate registered by a
        run that then failed is rejected). See docs/reproduce.md.

        >>> found = registry.reproduce("models:/credit-risk/3")  # doctest: +SKIP
        >>> found.verdict, found.reproduction  # doctest: +SKIP
        ('identical', 'models:/credit-risk/4')
        """

        def record(original: ModelVersion, found: Reproduction) -> int:
            data = {"model": original.model, "version": original.version, **found.event_data()}
            events = self._meta.govern(
                original.model,
                original.version,
                lambda ctx: [
                    EventDraft("version.reproduced", original.uri, data, f"verdict: {found.verdict}")
                ],
                actor=self.actor,
                signer=self._signer(),
                needs_state=False,
                needs_policy=False,
            )
            return int(events[0].seq)

        self._ready(write=True)
        return reproduce_version(
            self,
            identifier,
            record=record,
            allow_dirty=allow_dirty,
            tolerance=tolerance,
            repository=repository,
            pins=pins,
            cache_dir=cache_dir,
            timeout=timeout,
            progress=progress,
        )

    # ------------------------------------------------------------------ erasure

    def erase(self, target: str, *, reason: str) -> Erasure:
        """Erase bytes that must go (for example data that must be erased by law), as a
        recorded act (role: admin): ``models:/x/3`` erases the version's artefact files,
        ``datasets:/d/2`` a data set version's file, ``predictions:/x/3`` a version's captured
        predictions. The ledger event (``version.erased``, ``dataset.erased``,
        ``predictions.erased``) names every file with its sha256 and size, who, when and why;
        it is written before any byte is removed. Rows, digests and events stay: ``verify``
        lists the erasure (``VerifyReport.erased``) instead of missing files, and ``load`` or
        ``datasets.read`` of what was erased raises :class:`Erased`. Erasing again finishes a
        removal that failed half-way and records nothing new. Under S3 Object Lock, what S3
        refuses to delete yet (retention, legal hold) is hidden and :class:`ObjectRetained` says
        until when its bytes stay (see ``docs/object-lock.md``).

        >>> registry.erase("datasets:/applications/3", reason="GDPR art. 17 request #812")  # doctest: +SKIP
        """
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidInput("an erasure needs a reason (the legal ground, a ticket)")
        self._ready()
        if target.startswith("datasets:/"):
            dv = self.datasets.get(target)
            plan = plan_dataset_erasure(
                dv, find_erasure(self._meta, [dv.uri], "dataset.erased"), reason=reason
            )
        elif target.startswith("predictions:/"):
            mv = self.get_version("models:/" + target[len("predictions:/") :])
            recorded = self._capture_records(mv)
            plan = plan_predictions_erasure(self._art, mv, recorded, reason=reason)
        elif target.startswith("models:/"):
            mv = self.get_version(target)
            existing = find_erasure(self._meta, self._version_subjects(mv), "version.erased")
            plan = plan_version_erasure(mv, existing, reason=reason)
        else:
            raise InvalidInput(
                f"cannot erase {target!r}: give models:/<name>/<n>, datasets:/<name>/<n> "
                "or predictions:/<name>/<n>"
            )
        erasure = plan.existing
        draft = plan.draft
        if draft is not None:
            events = self._meta.govern(
                "",
                None,
                lambda _ctx: [draft],
                actor=self.actor,
                signer=self._signer(),
                needs_state=False,
                needs_policy=False,
            )
            erasure = erasure_from_event(events[0])
        remove_erased(self._art, plan.files, target=plan.target)
        assert erasure is not None
        return erasure

    def _capture_records(self, mv: ModelVersion) -> dict[str, Mapping[str, Any]]:
        """Capture file path -> its ``predictions.written`` record, for one version."""
        names = [s[len("models:/") :].rsplit("/", 1)[0] for s in self._version_subjects(mv)]
        subjects = [f"predictions:/{n}/{mv.version}" for n in names]
        out: dict[str, Mapping[str, Any]] = {}
        for event in subject_history(self._meta, subjects, []):
            if event.action == "predictions.written":
                for record in event.data.get("files") or ():
                    out[str(record.get("path"))] = record
        return out

    def _capture_recorder(self, mv: ModelVersion) -> Callable[[Sequence[CaptureFile]], None]:
        """What appends a version's written capture files to the ledger (from the writer's thread)."""
        signer = self._signer()

        def record(files: Sequence[CaptureFile]) -> None:
            draft = record_captures(mv.model, mv.version, [f.to_dict() for f in files])
            self._meta.govern(
                "",
                None,
                lambda _ctx: [draft],
                actor=self.actor,
                signer=signer,
                needs_state=False,
                needs_policy=False,
            )

        return record

    # ------------------------------------------------------------------ integrity

    def verify(
        self,
        *,
        progress: Callable[[ModelVersion], None] | None = None,
        grace: timedelta | str = timedelta(hours=1),
        public_key: bytes | str | os.PathLike[str] | None = None,
        trusted_checkpoint: Checkpoint | Mapping[str, Any] | str | os.PathLike[str] | None = None,
        captures: bool = False,
        since_last: bool = False,
        record: bool = True,
        workers: int | None = None,
        retention: bool = False,
        jobs: int | None = None,
    ) -> VerifyReport:
        """Check everything the registry vouches for, and name what does not match.

        Recomputes the ledger's hash chain and checkpoint signatures (reporting the first
        event that does not match) and checks the head row against the chain's end;
        compares the state tables with a replay of the ledger; checks each version's digest
        against its registration event; re-hashes every artefact and every stored data set;
        and accounts for every file of every version folder. Unreferenced files younger than
        ``grace`` are listed apart as ``in_flight`` (a write may be under way) and do not fail.

        The database holds its own public key, so someone who can rewrite the database can
        rewrite and re-sign the whole history, or cut its end off. Pin what you keep outside:
        ``public_key`` (PEM bytes or a file, from ``modelledger keys export``) and
        ``trusted_checkpoint`` (a :class:`Checkpoint`, its dict, or a JSON file from
        :meth:`latest_checkpoint` / ``modelledger checkpoint export``) make both detectable.
        ``captures=True`` also re-checks every captured prediction against the signed root of
        its call (one receipt check per row: it takes a while on a busy model).

        A clean run records what it proved (``report.recorded``: the last checkpoint, the
        highest version and data set keys, the time), signed with this process's own key
        and kept in the metadata store; ``record=False`` skips that, and nothing is recorded
        without a key file. ``since_last=True`` checks that record (signature, and the event
        and checkpoint at its seq still there unchanged, no event missing up to it), then only
        what came after: new events, new versions and data sets and their files (see
        ``docs/verify.md`` for what it does not re-check). Without a usable record it is a full
        verify, and ``report.notes`` says so. Files are hashed by ``workers`` threads.

        ``retention=True`` also reads what S3 Object Lock holds on every object under an
        ``s3://`` artefact root (one HEAD request each) into ``report.retention`` (mode,
        retain-until, legal hold per object); ``report.notes`` counts objects with none.

        ``jobs`` worker processes check the checkpoint signatures and the version folders
        while this process makes the one pass over the ledger: by default one per core once
        the ledger holds 10,000 checkpoints or more (fewer: all in this process, where starting
        them costs more than they save); ``jobs=1`` starts none, ``jobs=N`` starts N. The
        report is the same whatever ``jobs`` is.

        >>> report = registry.verify(public_key="pub.pem", trusted_checkpoint="cp.json")  # doctest: +SKIP
        >>> report.ok, [str(p) for p in report.problems]  # doctest: +SKIP
        >>> registry.verify(since_last=True).covered  # doctest: +SKIP
        """
        window = parse_duration(grace, what="grace")
        pinned = read_public_pem(public_key) if public_key is not None else None
        trusted = _read_checkpoint(trusted_checkpoint) if trusted_checkpoint is not None else None
        self._ready()
        identity = self._identity()
        verifier = None
        # a verify never creates a key: without one (or with one it may not use) it checks,
        # but records nothing and has no record to start from
        if identity.exists and (record or since_last):
            with contextlib.suppress(PermissionDenied):
                verifier = identity.private()
        report = verify_registry(
            self._meta,
            self._art,
            progress=progress,
            grace=window,
            public_key=pinned,
            trusted_checkpoint=trusted,
            captures=captures,
            since_last=since_last,
            verifier=verifier,
            record=record,
            workers=workers,
            jobs=jobs,
        )
        if not retention:
            return report
        held, note = _retention_report(self._art)
        return dataclasses.replace(report, retention=held, notes=(*report.notes, note))

    def latest_checkpoint(self) -> Checkpoint:
        """The newest signed checkpoint: keep it outside the registry (``to_dict()`` as JSON) and
        give it to :meth:`verify` later, so that a ledger cut short is detected.

        >>> json.dump(registry.latest_checkpoint().to_dict(), open("cp.json", "w"))  # doctest: +SKIP
        """
        self._ready()
        checkpoints = self._meta.checkpoints()
        if not checkpoints:
            raise NotFound("checkpoint", "the ledger has none yet: run `modelledger init`")
        return max(checkpoints, key=lambda cp: cp.seq)

    def gc(self, *, older_than: timedelta | str = timedelta(hours=24), delete: bool = False) -> GcReport:
        """Find (and with ``delete=True`` remove) what the artefact root holds that nothing references.

        That is version folders never registered (a registration that failed or was
        abandoned after :meth:`upload`), data set files of interrupted ingests, and files under
        datasets/ no data set version points to: what :meth:`verify` reports as orphans.
        Registered versions, data sets and their files are never touched. Only things whose
        newest file is older than ``older_than`` (a timedelta or an age such as ``7d``) are
        collected: a registration may still be writing a younger one, so an
        :class:`UploadedVersion` must be registered within that time. Without ``delete``
        nothing changes (a dry run).

        >>> registry.gc(older_than="7d", delete=True).size_bytes  # doctest: +SKIP
        """
        age = parse_duration(older_than, what="older_than")
        self._ready()
        return collect_garbage(self._meta, self._art, older_than=age, delete=delete)

    # ------------------------------------------------------------------ export

    def export(self, identifier: str, *, format: str) -> bytes:
        """The provenance of a model version (``models:/x/3``, ``models:/x@production``), a data
        set version (``datasets:/d/2``) or a prediction id in a standard format, as bytes:
        ``openlineage`` (:data:`EXPORT_FORMATS` lists them all; ``docs/export.md`` says which
        tool reads each). The same registry always gives the same bytes: nothing in an export
        depends on when it is made. Formats that are signed are signed with this process's key.

        >>> data = registry.export("models:/credit-risk/3", format="openlineage")  # doctest: +SKIP
        """
        # export_provenance imports a format's renderer (and its libraries) only when asked for
        return export_provenance(
            self, identifier, format, sign=lambda data: self._identity().private().sign(data)
        )

    def openlineage_status(self) -> dict[str, Any]:
        """Where OpenLineage events go and how many wait: ``transport``, ``spool`` (the folder),
        ``pending``, ``rejected`` (refused by the receiver for good), ``oldest_pending``,
        ``sent``, ``last_sent_at``, ``last_error``, ``last_error_at``. Raises
        :class:`InvalidInput` when no transport is configured.

        >>> registry.openlineage_status()["pending"]  # doctest: +SKIP
        0
        """
        return self._need_outbox().status()

    def flush_openlineage(self, *, timeout: float = 10.0) -> dict[str, Any]:
        """Try now to send every pending OpenLineage event (waiting at most about ``timeout``
        seconds for a delivery under way); returns :meth:`openlineage_status` after it.

        >>> registry.flush_openlineage()["pending"]  # doctest: +SKIP
        0
        """
        return self._need_outbox().flush(timeout=timeout)

    def _need_outbox(self) -> Outbox:
        if self._outbox is None:
            raise InvalidInput(
                "no OpenLineage transport is configured: open the registry with openlineage=... "
                "(or set MODELLEDGER_OPENLINEAGE, or openlineage in modelledger.toml)"
            )
        return self._outbox

    def model_signing_key(self) -> bytes:
        """The public key (PEM) with which the OpenSSF ``model_signing`` tool verifies what this
        process exports as ``model-signing``: an ECDSA P-256 key derived from this identity's
        Ed25519 key, since that tool verifies only elliptic-curve keys (docs/export.md).

        >>> Path("model-signing.pub.pem").write_bytes(registry.model_signing_key())  # doctest: +SKIP
        """
        return model_signing_public_key(self._identity().private().sign)


# ---------------------------------------------------------------------- helpers


def _retention_report(art: ArtifactStore) -> tuple[tuple[ObjectRetention, ...], str]:
    """What S3 Object Lock holds on each object under the artefact root, and a note saying how
    many objects have no retention. Folder-claim markers and ingest staging files are left
    out: they are written without retention on purpose."""
    if not art.is_s3:
        return (), f"retention: the artefact root {art.url} is not on S3, so it has no Object Lock"
    art.refresh()
    paths = [
        p
        for p in art.list_files("")
        if p.rsplit("/", 1)[-1] != ".claimed" and not p.rsplit("/", 1)[-1].startswith((".staging-", ".tmp-"))
    ]
    held = tuple(sorted(art.retention(paths), key=lambda r: r.path))
    bare = sum(1 for r in held if r.mode is None and not r.legal_hold)
    return held, f"retention: {len(held)} objects read, {bare} without Object Lock retention or legal hold"


def _sqlite_url(path: Path) -> str:
    """The SQLite URL of the file ``path``, escaped so any folder name survives (``?``, ``#``, ``%``...)."""
    import sqlalchemy.engine  # only opening a SQL registry needs it

    return sqlalchemy.engine.URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)


def _sqlite_file(url: str) -> Path | None:
    """The database file a ``sqlite:///`` URL names (absolute), else None."""
    if not url.lower().startswith("sqlite"):
        return None  # a server's URL (a dynamodb:// one is not even SQLAlchemy's to parse)
    import sqlalchemy.engine  # only opening a SQL registry needs it

    parsed = sqlalchemy.engine.make_url(url)
    if not parsed.drivername.startswith("sqlite") or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database).absolute()


def _default_key_path(url: str) -> Path | None:
    """Where an older release kept a SQL registry's key (None: a backend that never did)."""
    if url.lower().startswith("dynamodb:"):
        return None
    import sqlalchemy.engine  # only opening a SQL registry needs it

    parsed = sqlalchemy.engine.make_url(url)
    if parsed.drivername.startswith("sqlite") and parsed.database and parsed.database != ":memory:":
        return Path(parsed.database + ".key")
    name = f"{parsed.host or 'local'}-{parsed.port or 5432}-{parsed.database or 'default'}.key"
    return Path.home() / ".config" / "modelledger" / "keys" / name


def _check_tags(
    tags: Mapping[str, str | None] | None, limits: ManifestLimits, *, removals: bool = False
) -> dict[str, str | None]:
    """Tags as given, each key and value checked against ``limits``; ``None`` (remove) only
    with ``removals``. The count is the caller's: on update it depends on the stored tags."""
    if tags is not None and not isinstance(tags, Mapping):
        raise InvalidInput(f"tags must be a mapping of strings to strings, got {type(tags).__name__}")
    out: dict[str, str | None] = {}
    for key, value in (tags or {}).items():
        ok_value = isinstance(value, str) or (removals and value is None)
        if not isinstance(key, str) or not key or not ok_value:
            shown_key = key[:64] if isinstance(key, str) else key
            raise InvalidInput(f"tags must map non-empty strings to strings, got {shown_key!r}: {value!r}")
        if len(key) > limits.max_tag_key_length:
            raise InvalidInput(
                f"tag key {key[:64]!r}... is {len(key)} characters long, "
                f"more than the limit of {limits.max_tag_key_length}"
            )
        if value is not None and len(value) > limits.max_tag_value_length:
            raise InvalidInput(
                f"tag {key!r}: the value is {len(value)} characters long, "
                f"more than the limit of {limits.max_tag_value_length}"
            )
        out[key] = value
    return out


def _read_checkpoint(value: Checkpoint | Mapping[str, Any] | str | os.PathLike[str]) -> Checkpoint:
    if isinstance(value, Checkpoint):
        return value
    if isinstance(value, Mapping):
        return Checkpoint.from_dict(value)
    if Path(value).is_dir():  # a witness's folder: the newest checkpoint kept there
        kept = witnessed_checkpoint(Path(value))
        if kept is None:
            raise InvalidInput(f"the folder {value} holds no checkpoint a witness kept")
        return kept
    try:
        raw = json.loads(Path(value).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInput(f"cannot read the checkpoint file {value}: {exc.strerror}") from exc
    except ValueError as exc:
        raise InvalidInput(f"the checkpoint file {value} is not JSON: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"the checkpoint file {value} must hold a JSON object")
    return Checkpoint.from_dict(raw)


REMOTE_MODULE = "modelledger._remote"
"""Imported by name on the first ``http(s)://`` URL, as ``stores.BACKENDS`` are: the remote
client needs httpx (the ``server`` extra), which ``import modelledger`` must not load."""


def _remote_registry(url: str, *, token: str | None, key: str | os.PathLike[str] | None) -> Registry:
    remote: Callable[..., Registry] = importlib.import_module(REMOTE_MODULE).RemoteRegistry
    return remote(url, token=token, key=key)
