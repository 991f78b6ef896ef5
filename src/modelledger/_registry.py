"""The Registry: the public verbs of modelledger.

>>> from modelledger import Registry
>>> registry = Registry.open()                      # ./.modelledger, SQLite + folder
>>> v = registry.register("credit-risk", fitted_pipeline, sample_input=X_train[:5])  # doctest: +SKIP
>>> registry.set_alias("credit-risk", "production", v.version)                   # doctest: +SKIP
>>> registry.load("models:/credit-risk@production").predict(X_new)              # doctest: +SKIP
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from ._domain import (
    FileEntry,
    GcItem,
    GcReport,
    LazyJSON,
    Model,
    ModelVersion,
    Page,
    Problem,
    StagedVersion,
    VerifyReport,
    utcnow,
)
from ._governance import GovernanceVerbs
from ._identifiers import ModelRef, parse_model_uri, validate_alias, validate_name
from ._integrity import canonical_json, version_digest
from ._lifecycle import (
    EventDraft,
    GovContext,
    ReplayedState,
    apply_effects,
    decide_alias,
    decide_registration,
    effects,
)
from ._loaded import LoadedModel
from ._manifest import Manifest, load_manifest_file
from .errors import (
    Conflict,
    IntegrityError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    SchemaOutdated,
    StorageError,
)
from .stores.artifacts import ArtifactStore, iter_file

if TYPE_CHECKING:
    from ._data import Datasets
    from ._ledger import ChainReport, LedgerEvent
    from ._lineage import LineageGraph, VersionDiff
    from ._serving import Predictor
    from ._trace import TraceReport
    from .stores.metadata import Signer

__all__ = ["FolderNaming", "Registry"]

FolderNaming = Literal["auto", "git", "execution", "date"]
ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(bytes_done, bytes_total)`` while artefacts move."""

DEFAULT_HOME = ".modelledger"
DATASET_ROLES = ("train", "validation", "holdout", "test")
MAX_PAGE = 1000


def _encode_cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> Any:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"invalid cursor {cursor!r}") from exc


def _check_limit(limit: int) -> int:
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
    return limit


def current_actor() -> str:
    """Who is acting: ``MODELLEDGER_USER``, else git's user.email, else the OS user."""
    env = os.environ.get("MODELLEDGER_USER")
    if env:
        return env
    try:
        out = subprocess.run(
            ["git", "config", "--get", "user.email"], capture_output=True, text=True, timeout=5, check=False
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class _FolderOnly:
    """A version registered as plain files, with no loader: it has no predict."""

    def __init__(self, version: ModelVersion) -> None:
        self.files = [f.path for f in version.files]

    def predict(self, data: Any) -> Any:
        raise InvalidInput(
            "this version is a folder of files with no flavor to load it; "
            "register it with a manifest that sets 'flavor' and 'entry'"
        )


class Registry(GovernanceVerbs):
    """A model registry: metadata in a SQL database, artefacts under an fsspec root.

    Construct with :meth:`open`; the constructor does no I/O.
    """

    def __init__(
        self,
        metadata: Any,
        artifacts: ArtifactStore,
        *,
        auto_migrate: bool = False,
        folder_naming: FolderNaming = "auto",
        actor: str | None = None,
        key_path: Path | None = None,
    ) -> None:
        self._meta = metadata
        self._art = artifacts
        self._key_path = key_path or Path(DEFAULT_HOME) / "registry.key"
        self._datasets: Datasets | None = None
        self._private_key: Any = None
        self._sign: Signer | None = None
        self._auto_migrate = auto_migrate
        self._checked = False
        self.folder_naming = folder_naming
        self._actor = actor

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
    ) -> Registry:
        """Open a registry.

        With no URL: the embedded default, ``./.modelledger`` (or ``$MODELLEDGER_HOME``)
        holding ``registry.db`` and ``artifacts/``; its schema is created on first use.
        With a database URL (``sqlite:///x.db``, ``postgresql://...``) the schema must
        have been created with ``modelledger init``. ``storage_options`` go to fsspec
        (for example ``{"endpoint_url": ...}`` for an S3-compatible server). ``key`` is the
        private signing key file (default ``$MODELLEDGER_KEY``, else ``<database>.key`` beside
        a SQLite file, else ``~/.config/modelledger/keys/<host>-<port>-<db>.key``).

        >>> Registry.open("sqlite:///reg.db", artifacts="file:///data/store")  # doctest: +SKIP
        """
        from .stores.metadata import SqlMetadataStore

        if folder_naming not in ("auto", "git", "execution", "date"):
            raise InvalidInput("folder_naming must be one of auto, git, execution, date")
        auto = False
        if url is None:
            home = Path(os.environ.get("MODELLEDGER_HOME", DEFAULT_HOME)).absolute()
            url = f"sqlite:///{home / 'registry.db'}"
            artifacts = artifacts or (home / "artifacts").as_uri()
            auto = True
        if not url.startswith(("sqlite:", "postgresql:", "postgres:", "postgresql+psycopg:")):
            raise InvalidInput(f"unsupported registry URL {url!r}: use sqlite:///... or postgresql://...")
        if artifacts is None:
            if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
                db = Path(url[len("sqlite:///") :]).absolute()
                artifacts = (db.parent / "artifacts").as_uri()
            else:
                raise InvalidInput(
                    "give artifacts= (a folder, file://, s3:// or memory:// URL) for this registry"
                )
        if "://" not in artifacts:
            artifacts = Path(artifacts).absolute().as_uri()
        key_path = Path(key or os.environ.get("MODELLEDGER_KEY") or _default_key_path(url)).absolute()
        return cls(
            SqlMetadataStore(url),
            ArtifactStore(artifacts, **dict(storage_options or {})),
            auto_migrate=auto,
            folder_naming=folder_naming,
            actor=actor,
            key_path=key_path,
        )

    def init(self) -> str:
        """Create or upgrade the metadata schema and make sure the registry has its signing key.

        The Ed25519 key is created on first init (owner-only file at :attr:`key_path`); its
        public half is stored in the registry so anyone can verify the ledger. Returns the
        schema revision.
        """
        rev: str = self._meta.migrate()
        self._checked = True
        self._ensure_key()
        return rev

    migrate = init

    def _ready(self) -> None:
        if self._checked:
            return
        try:
            self._meta.check_schema()
        except SchemaOutdated:
            if not self._auto_migrate:
                raise
            self.init()
        self._checked = True

    # ------------------------------------------------------------------ the registry key

    @property
    def key_path(self) -> Path:
        """Where this process finds the registry's private signing key."""
        return self._key_path

    def _ensure_key(self) -> None:
        from ._keys import generate_key, key_id, load_private_key, public_key_pem

        stored = self._meta.public_key()
        path = self._key_path
        if path.exists():
            public = public_key_pem(load_private_key(path))
        elif stored is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            public = generate_key(path)
        else:
            return  # another machine holds the key; this one can read and verify
        kid = key_id(public)
        if stored is None:
            self._meta.add_public_key(kid, public)
            self._meta.govern(
                "",
                None,
                lambda ctx: [
                    EventDraft(
                        "registry.initialized", "registry", {"key_id": kid, "policy": ctx.policy.to_dict()}
                    )
                ],
                actor=self.actor,
                signer=self._signer(),
            )
        elif stored[0] != kid:
            raise Conflict(
                f"the key at {path} (id {kid}) is not this registry's signing key (id {stored[0]})"
            )

    def _signer(self) -> Signer:
        if self._sign is None:
            # imported here, once: keys pulls in cryptography, which `import modelledger` avoids
            from ._keys import key_id, load_private_key
            from ._ledger import sign_checkpoint

            try:
                key = load_private_key(self._key_path)
            except NotFound as exc:
                raise PermissionDenied(
                    f"no registry signing key at {self._key_path}: governed writes need it "
                    "(run `modelledger init` here, or set MODELLEDGER_KEY to the key file)"
                ) from exc
            kid = key_id(key)
            stored = self._meta.public_key()
            if stored is not None and stored[0] != kid:
                raise Conflict(f"the key at {self._key_path} is not this registry's signing key")
            self._private_key = key
            self._sign = lambda seq, head, time: sign_checkpoint(key, seq, head, time, kid=kid)
        return self._sign

    def public_key(self) -> bytes:
        """The registry's public key (PEM), to verify the ledger and receipts anywhere."""
        self._ready()
        stored = self._meta.public_key()
        if stored is None:
            raise NotFound("registry key", "run `modelledger init`")
        return bytes(stored[1])

    @property
    def actor(self) -> str:
        if self._actor is None:
            self._actor = current_actor()
        return self._actor

    @property
    def artifact_root(self) -> str:
        return self._art.url

    def close(self) -> None:
        self._meta.close()

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
        tags = _check_tags(tags)
        self._ready()
        model: Model = self._meta.create_model(name, description, tags, utcnow())
        return model

    def get_model(self, name: str) -> Model:
        validate_name(name)
        self._ready()
        model: Model = self._meta.get_model(name)
        return model

    def update_model(
        self, name: str, *, description: str | None = None, tags: Mapping[str, str | None] | None = None
    ) -> Model:
        """Change a model's description or tags (a tag set to ``None`` is removed)."""
        validate_name(name)
        self._ready()
        model: Model = self._meta.update_model(name, description=description, tags=tags)
        return model

    def list_models(
        self,
        *,
        prefix: str | None = None,
        tags: Mapping[str, str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[Model]:
        """One page of models, by name; search by name prefix and by tags (all must match).

        >>> page = registry.list_models(prefix="credit", tags={"team": "risk"})  # doctest: +SKIP
        >>> more = registry.list_models(prefix="credit", cursor=page.next_cursor)  # doctest: +SKIP
        """
        _check_limit(limit)
        after = _decode_cursor(cursor) if cursor else None
        self._ready()
        rows: list[Model] = self._meta.list_models(
            prefix=prefix, tags=dict(tags or {}), limit=limit + 1, after=after
        )
        nxt = _encode_cursor(rows[limit - 1].name) if len(rows) > limit else None
        return Page(items=rows[:limit], next_cursor=nxt)

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
    ) -> ModelVersion:
        """Register a new version: write and seal its artefacts, then commit its row.

        ``source`` is a fitted scikit-learn estimator or pipeline, any object with
        ``predict`` (or a plain callable), or the path of a folder of files.
        Bad input raises before anything is written; a failure after that removes
        the folder again, so no half version is ever left. ``datasets`` maps roles
        (train, validation, holdout, test) to data set versions (``datasets:/x/3``) or to data
        (a DataFrame, Table, CSV or Parquet path) that is registered for you as
        ``<name>-<role>``; a scikit-learn pipeline's processing steps are recorded against
        the train set. The manifest records the
        git source of ``code_path`` (a script or folder; default: the running script)
        unless the manifest gives its own ``source``; ``capture=False`` records no
        git or environment facts at all.

        >>> v = registry.register("credit-risk", pipe, sample_input=X[:5],
        ...                       params={"max_depth": 3}, metrics={"auc": 0.91})  # doctest: +SKIP
        >>> v.uri  # doctest: +SKIP
        'models:/credit-risk/1'
        """
        staged = self.stage(
            name,
            source,
            manifest=manifest,
            params=params,
            metrics=metrics,
            sample_input=sample_input,
            execution_id=execution_id,
            capture=capture,
            code_path=code_path,
            datasets=datasets,
            progress=progress,
        )
        try:
            return self.create_version(staged)
        except BaseException:
            self._art.remove_tree(staged.folder)
            raise

    def stage(
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
    ) -> StagedVersion:
        """Write and seal a version's artefacts in a new folder, without registering it.

        The first half of :meth:`register`, for pipelines that upload artefacts in one
        step and register them in another (:meth:`create_version`).
        """
        validate_name(name)
        if execution_id is not None:
            _check_execution_id(execution_id)
        doc = _coerce_manifest(manifest)
        if params:
            doc = replace(doc, params={**doc.params, **_json_check(params, "params")})
        if metrics:
            doc = replace(doc, metrics={**doc.metrics, **_check_metrics(metrics)})
        if doc.training_job.id is None and execution_id is not None:
            doc = replace(doc, training_job=replace(doc.training_job, id=execution_id))
        self._ready()
        with tempfile.TemporaryDirectory(prefix="modelledger-") as tmp:
            folder, flavor, entry, doc = self._prepare_source(source, Path(tmp), doc, sample_input)
            if capture:
                doc = doc.with_captured(script=os.fspath(code_path) if code_path is not None else None)
            doc = replace(doc, flavor=flavor, entry=entry)
            if datasets:
                doc = self._attach_datasets(name, doc, datasets, source, capture=capture)
            key = self._folder_key(doc, execution_id)
            return self._write_version_folder(name, key, folder, flavor, doc, progress)

    @property
    def datasets(self) -> Datasets:
        """Data set versions: ``registry.datasets.register(name, data, source=..., steps=...)``."""
        from ._data import Datasets

        if self._datasets is None:
            self._datasets = Datasets(self)
        return self._datasets

    def trace(self, prediction_id: str) -> TraceReport:
        """Everything behind one captured prediction: receipt check, model version, approval and
        deployment, code, hyperparameters, dependencies, training job, data sets and their steps.

        >>> report = registry.trace("01JD3M4Q8Z0000001K7WQ2X9RB")  # doctest: +SKIP
        >>> report.governance["approved_by"], report.datasets[0]["source"]  # doctest: +SKIP
        """
        from ._trace import trace_prediction

        self._ready()
        return trace_prediction(self, prediction_id)

    def predictions(
        self,
        identifier_or_model: str,
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        as_pandas: bool = False,
    ) -> Any:
        """Captured predictions of one version (``models:/x/3``) or of every version of a model,
        for ``since <= time < until``, as a pyarrow Table (or a pandas DataFrame).

        >>> registry.predictions("credit-risk", since="2026-11-01", as_pandas=True)  # doctest: +SKIP
        """
        from ._serving import CaptureReader

        self._ready()
        versions: list[ModelVersion] = []
        if identifier_or_model.startswith("models:/"):
            versions.append(self.get_version(identifier_or_model))
        else:
            cursor: str | None = None
            while True:
                page = self.list_versions(identifier_or_model, limit=1000, cursor=cursor)
                versions.extend(page)
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
        table = CaptureReader(self._art).read_versions(versions, since, until)
        return table.to_pandas() if as_pandas else table

    def prediction(self, prediction_id: str) -> dict[str, Any]:
        """The captured record of one prediction: ``prediction_id``, ``time``, ``model``, ``version``,
        ``digest``, ``input_digest``, ``input`` (the row), ``output`` and ``receipt`` (a dict).

        Raises :class:`NotFound` when the id's version is unknown or did not capture it.

        >>> registry.prediction("01JD3M4Q8Z0000001K7WQ2X9RB")["receipt"]  # doctest: +SKIP
        """
        from ._serving import CaptureReader, parse_prediction_id

        when, key = parse_prediction_id(prediction_id)
        mv = self.get_version_by_key(key)
        record = CaptureReader(self._art).find(mv, prediction_id)
        if record is None:
            raise NotFound(
                "prediction", f"{prediction_id} (made by {mv.uri} on {when.date()}, but not in its captures)"
            )
        return record

    def lineage(self, uri: str) -> LineageGraph:
        """Everything upstream of a model or data set version: data sets, steps, sources.

        >>> graph = registry.lineage("models:/credit-risk/3")  # doctest: +SKIP
        >>> print(graph.to_mermaid())  # doctest: +SKIP
        """
        from ._lineage import lineage_of

        return lineage_of(self, uri)

    def diff(self, a: str, b: str) -> VersionDiff:
        """What changed between two model versions (params, code, dependencies, data, metrics)."""
        from ._lineage import diff_versions

        return diff_versions(self, a, b)

    def _attach_datasets(
        self, name: str, doc: Manifest, datasets: Mapping[str, Any], source: Any, *, capture: bool
    ) -> Manifest:
        from ._data.steps import sklearn_steps
        from ._domain import DatasetVersion

        # Roles and references are checked before any data is registered, so a bad one
        # leaves no data set version behind.
        known: dict[str, DatasetVersion] = {}
        for role, value in datasets.items():
            if role not in DATASET_ROLES:
                raise InvalidInput(f"unknown data set role {role!r}: use {', '.join(DATASET_ROLES)}")
            if isinstance(value, DatasetVersion):
                known[role] = value
            elif isinstance(value, str) and value.startswith("datasets:/"):
                known[role] = self.datasets.get(value)
        refs = []
        for role, value in datasets.items():
            dv = known.get(role) or self.datasets.register(f"{name}-{role}", value, capture=capture)
            refs.append({"role": role, "uri": dv.uri, "digest": dv.digest, "rows": dv.row_count})
        steps = list(doc.steps)
        train = [str(r["uri"]) for r in refs if r["role"] == "train"]
        if not steps and not isinstance(source, (str, os.PathLike)):
            code = {k: v for k, v in doc.source.to_dict().items() if v is not None}
            steps = (
                [s.to_dict() for s in sklearn_steps(source, inputs=train, code=code)]
                if _is_sklearn(source)
                else []
            )
        return replace(doc, datasets=tuple(refs), steps=tuple(steps))

    def _prepare_source(
        self, source: Any, tmp: Path, doc: Manifest, sample_input: Any
    ) -> tuple[Path, str, str | None, Manifest]:
        from .flavors import flavor_for_object, get_flavor

        if isinstance(source, (str, os.PathLike)):
            folder = Path(source)
            if not folder.is_dir():
                raise InvalidInput(f"artefact folder does not exist or is not a folder: {folder}")
            files = _folder_files(folder)
            if not files:
                raise InvalidInput(f"artefact folder is empty: {folder}")
            flavor_name = doc.flavor or "files"
            entry = doc.entry
            if flavor_name != "files":
                get_flavor(flavor_name)
                entry = entry or "model.pkl"
                if entry not in {p.as_posix() for p in files}:
                    raise InvalidInput(f"the manifest's entry file {entry!r} is not in {folder}")
            if sample_input is not None:
                from ._signature import infer_signature

                doc = replace(doc, signature=infer_signature(sample_input).to_dict())
            return folder, flavor_name, entry, doc
        flavor = flavor_for_object(source)
        if source is None:
            raise InvalidInput("nothing to register: source is None")
        out = tmp / "artifacts"
        out.mkdir()
        flavor.save(source, out)
        described = flavor.describe(source)
        doc = replace(
            doc,
            algorithm=doc.algorithm or described["algorithm"],
            framework=doc.framework or described["framework"],
            framework_version=doc.framework_version or described["framework_version"],
        )
        # The algorithm's hyperparameters, as fitted; anything given explicitly wins.
        algorithm = source.steps[-1][1] if isinstance(getattr(source, "steps", None), list) else source
        get_params = getattr(algorithm, "get_params", None)
        if callable(get_params):
            doc = replace(doc, params={**_jsonable_params(get_params(deep=False)), **doc.params})
        if sample_input is not None:
            from ._signature import infer_signature

            predict = getattr(source, "predict", None) or source
            try:
                sample_output = predict(sample_input)
            except Exception as exc:  # the user's model may raise anything
                raise InvalidInput(f"the model failed to predict on sample_input: {exc}") from exc
            doc = replace(doc, signature=infer_signature(sample_input, sample_output).to_dict())
        return out, flavor.name, flavor.entry, doc

    def _folder_key(self, doc: Manifest, execution_id: str | None) -> str:
        naming = self.folder_naming
        rev = doc.source.revision
        if naming == "auto":
            naming = "execution" if execution_id else ("git" if rev else "date")
        if naming == "git":
            if not rev:
                raise InvalidInput(
                    "folder naming is 'git' but no git revision is known: run inside a git "
                    "repository or set source.revision in the manifest"
                )
            return f"git-{rev[:12]}" + ("-dirty" if doc.source.dirty else "")
        if naming == "execution":
            if not execution_id:
                raise InvalidInput("folder naming is 'execution' but no execution_id was given")
            return f"run-{execution_id}"
        return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")

    def _write_version_folder(
        self,
        name: str,
        key: str,
        source_dir: Path,
        flavor: str,
        doc: Manifest,
        progress: ProgressCallback | None,
    ) -> StagedVersion:
        files = _folder_files(source_dir)
        sizes = {}
        for rel in files:
            try:
                sizes[rel] = (source_dir / rel).stat().st_size
                with (source_dir / rel).open("rb"):
                    pass
            except OSError as exc:
                raise InvalidInput(f"cannot read artefact file {source_dir / rel}: {exc}") from exc
        total = sum(sizes.values())
        manifest = doc.to_dict()
        try:
            canonical_json(manifest)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"the manifest holds a value that is not JSON: {exc}") from exc
        folder = self._art.claim_folder(f"models/{name}", key)
        try:
            done = 0
            entries = []

            def tick(n: int) -> None:
                nonlocal done
                done += n
                if progress:
                    progress(done, total)

            for rel in files:
                size, sha = self._art.put_stream(
                    f"{folder}/artifacts/{rel.as_posix()}", iter_file(source_dir / rel), tick
                )
                entries.append(FileEntry(path=rel.as_posix(), size=size, sha256=sha))
            # encoded once: the digest, the metadata row and the ledger all use this text
            sealed = LazyJSON(canonical_json(manifest).decode("utf-8"), manifest)
            digest = version_digest(entries, sealed)
            record = {
                "model": name,
                "digest": digest,
                "files": [e.to_dict() for e in entries],
                "manifest": manifest,
            }
            self._art.put_bytes(
                f"{folder}/manifest.json", json.dumps(record, indent=2, sort_keys=True).encode()
            )
            self._art.sync_folder(folder)
        except BaseException as exc:
            self._art.remove_tree(folder)
            if isinstance(exc, OSError):
                raise StorageError(f"cannot write artefacts to {self._art.uri(folder)}: {exc}") from exc
            raise
        return StagedVersion(
            model=name, folder=folder, digest=digest, flavor=flavor, files=tuple(entries), manifest=sealed
        )

    def create_version(self, staged: StagedVersion) -> ModelVersion:
        """Register staged artefacts as the model's next version (one metadata transaction).

        The model is created if it does not exist yet.
        """
        self._ready()
        version: ModelVersion = self._meta.create_version(
            staged.model,
            folder=staged.folder,
            digest=staged.digest,
            flavor=staged.flavor,
            files=staged.files,
            manifest=staged.manifest,
            created_by=self.actor,
            now=utcnow(),
            create_model=True,
            links=[(d["uri"], d["role"]) for d in staged.manifest.get("datasets") or ()],
            # the walk reads the policy and aliases only to approve or deploy automatically
            needs_context=any(
                (staged.manifest.get("stages") or {}).get(s) == "auto" for s in ("approved", "deployed")
            ),
            walk=lambda ctx: decide_registration(
                ctx,
                staged.manifest,
                {
                    "folder": staged.folder,
                    "digest": staged.digest,
                    "flavor": staged.flavor,
                    "files": len(staged.files),
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
        ref = self._ref(name_or_uri, version)
        self._ready()
        mv: ModelVersion = self._meta.get_version(ref.name, ref.version, alias=ref.alias)
        return mv

    def get_version_by_key(self, key: int) -> ModelVersion:
        """A version by its numeric key (what prediction ids carry)."""
        if not isinstance(key, int) or key < 1:
            raise InvalidInput(f"version key must be a positive integer, got {key!r}")
        self._ready()
        mv: ModelVersion = self._meta.get_version_by_key(key)
        return mv

    def _ref(self, name_or_uri: str, version: int | None) -> ModelRef:
        if isinstance(name_or_uri, str) and name_or_uri.startswith("models:/"):
            return parse_model_uri(name_or_uri)
        validate_name(name_or_uri)
        if version is None:
            return ModelRef(name=name_or_uri, alias="latest")
        if not isinstance(version, int) or version < 1:
            raise InvalidInput(f"version must be a positive integer, got {version!r}")
        return ModelRef(name=name_or_uri, version=version)

    def list_versions(self, name: str, *, limit: int = 100, cursor: str | None = None) -> Page[ModelVersion]:
        """One page of a model's versions, newest first."""
        validate_name(name)
        _check_limit(limit)
        before = _decode_cursor(cursor) if cursor else None
        if before is not None and not isinstance(before, int):
            raise InvalidInput(f"invalid cursor {cursor!r}")
        self._ready()
        rows: list[ModelVersion] = self._meta.list_versions(name, limit=limit + 1, before=before)
        nxt = _encode_cursor(rows[limit - 1].version) if len(rows) > limit else None
        return Page(items=rows[:limit], next_cursor=nxt)

    # ------------------------------------------------------------------ aliases

    def set_alias(self, name: str, alias: str, version: int, *, reason: str | None = None) -> None:
        """Point ``models:/<name>@<alias>`` at a version (moving it if it was set); recorded in the ledger."""
        validate_name(name)
        validate_alias(alias)
        if not isinstance(version, int) or version < 1:
            raise InvalidInput(f"version must be a positive integer, got {version!r}")
        self._ready()
        self._meta.govern(
            name,
            version,
            lambda ctx: decide_alias(ctx, alias, version, reason=reason),
            actor=self.actor,
            signer=self._signer(),
            needs_state=False,
            needs_policy=False,
        )

    def delete_alias(self, name: str, alias: str, *, reason: str | None = None) -> None:
        """Remove an alias; recorded in the ledger."""
        validate_name(name)
        validate_alias(alias)
        self._ready()

        def decide(ctx: GovContext) -> list[EventDraft]:
            if alias not in ctx.aliases:
                raise NotFound("alias", f"models:/{name}@{alias}")
            return decide_alias(ctx, alias, None, reason=reason)

        self._meta.govern(
            name, None, decide, actor=self.actor, signer=self._signer(), needs_state=False, needs_policy=False
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
        from .flavors import get_flavor

        mv = self.get_version(identifier)
        if version_digest(mv.files, mv.manifest) != mv.digest:
            raise IntegrityError(f"{mv.uri} (manifest or file list)", "does not match the recorded digest")
        entry = mv.manifest.get("entry")
        verified: dict[str, bytes] = {}
        for f in mv.files:
            rel = f"{mv.folder}/artifacts/{f.path}"
            try:
                if f.path == entry:
                    data = self._art.read_bytes(rel)
                    size, sha = len(data), hashlib.sha256(data).hexdigest()
                    verified[f.path] = data
                else:
                    size, sha = self._art.hash_file(rel)
            except NotFound as exc:
                raise IntegrityError(rel, "is missing") from exc
            if sha != f.sha256 or size != f.size:
                raise IntegrityError(rel, f"sha256 is {sha}, expected {f.sha256}")
        if mv.flavor == "files":
            return LoadedModel(_FolderOnly(mv), mv)
        flavor = get_flavor(mv.flavor)
        model = flavor.load(verified.__getitem__, entry or flavor.entry)
        loaded = LoadedModel(model, mv)
        if not capture:
            return loaded
        from . import _serving as cap

        self._signer()  # loads the private key and checks it is this registry's
        return cap.Predictor(
            loaded,
            key=self._private_key,
            store=self._art,
            sample_rate=sample_rate,
            seed=seed,
            flush_rows=cap.DEFAULT_FLUSH_ROWS if flush_rows is None else flush_rows,
            flush_seconds=cap.DEFAULT_FLUSH_SECONDS if flush_seconds is None else flush_seconds,
            max_pending=cap.DEFAULT_MAX_PENDING if max_pending is None else max_pending,
        )

    # ------------------------------------------------------------------ integrity

    def verify(self, *, progress: Callable[[ModelVersion], None] | None = None) -> VerifyReport:
        """Check everything the registry vouches for, and name what does not match.

        Recomputes the ledger's hash chain and checkpoint signatures (reporting the first
        event that does not match), compares the state tables with a replay of the ledger,
        checks each version's digest against its registration event, and re-hashes every
        artefact and every stored data set: mismatched, missing and orphan files are all
        reported.

        >>> report = registry.verify()  # doctest: +SKIP
        >>> report.ok, [str(p) for p in report.problems]  # doctest: +SKIP
        """
        self._ready()
        self._art.refresh()  # report what the store holds now, not what this process listed before
        problems: list[Problem] = []
        registered: dict[tuple[str, int], str] = {}
        rebuilt = ReplayedState()
        chain = self._verify_chain(registered, rebuilt)
        if chain is not None and chain.first_problem is not None:
            fp = chain.first_problem
            problems.append(Problem(fp.kind, f"ledger event {fp.seq}", fp.detail))
        for diff in self._state_differences(rebuilt):
            problems.append(Problem("state", diff.what, f"does not match the ledger: {diff}"))
        folders: set[str] = set()
        n_versions = n_files = 0
        for mv in self._meta.iter_versions():
            n_versions += 1
            folders.add(mv.folder)
            recorded = registered.get((mv.model, mv.version))
            if recorded is not None and recorded != mv.digest:
                problems.append(
                    Problem(
                        "mismatch",
                        mv.folder,
                        "version digest differs from its registration in the ledger",
                        mv.uri,
                    )
                )
            problems.extend(self._verify_version(mv))
            n_files += len(mv.files)
            if progress:
                progress(mv)
        n_datasets, dataset_paths = self._verify_datasets(problems)
        problems.extend(
            Problem("orphan", path, detail) for _kind, path, detail in self._orphans(folders, dataset_paths)
        )
        return VerifyReport(
            versions_checked=n_versions,
            files_checked=n_files + n_datasets,
            problems=tuple(problems),
            events_checked=chain.events_checked if chain else 0,
            checkpoints_checked=chain.checkpoints_checked if chain else 0,
            datasets_checked=n_datasets,
        )

    def _verify_datasets(self, problems: list[Problem]) -> tuple[int, set[str]]:
        """Re-hash every data set version's file, adding what is wrong to ``problems``;
        returns how many versions were checked and the paths of their files."""
        n, paths = 0, set()
        for uri, path, sha, size in self._meta.iter_dataset_files():
            n += 1
            paths.add(path)
            problem = self._check_file(path, sha, size, uri)
            if problem is not None:
                problems.append(problem)
        return n, paths

    def _orphans(self, folders: set[str], dataset_paths: set[str]) -> list[tuple[str, str, str]]:
        """(kind, path, detail) of what the artefact root holds that nothing references.

        Version folders under models/ and files under datasets/; files inside a registered
        version's folder are the version check's business.
        """
        out: list[tuple[str, str, str]] = []
        for model_dir in self._art.list_dirs("models"):
            for sub in self._art.list_dirs(f"models/{model_dir}"):
                folder = f"models/{model_dir}/{sub}"
                if folder not in folders:
                    out.append(("model folder", folder, "folder is not referenced by any version"))
        for rel in self._art.list_files("datasets"):
            path = f"datasets/{rel}"
            if path in dataset_paths:
                continue
            if "/" not in rel and rel.startswith(".staging-"):
                out.append(("ingest staging", path, "unfinished data set ingest (not registered)"))
            else:
                out.append(("data set file", path, "file is not referenced by any data set version"))
        return out

    def gc(self, *, older_than: timedelta = timedelta(hours=24), delete: bool = False) -> GcReport:
        """Find (and with ``delete=True`` remove) what the artefact root holds that nothing references.

        That is version folders never registered (a registration that failed or was
        abandoned after :meth:`stage`), data set files of interrupted ingests, and files under
        datasets/ no data set version points to: what :meth:`verify` reports as orphans.
        Registered versions, data sets and their files are never touched. Only things whose
        newest file is older than ``older_than`` are collected: a registration may still be
        writing a younger one, so a :class:`StagedVersion` must be registered within that time.
        Without ``delete`` nothing changes (a dry run).

        >>> registry.gc(older_than=timedelta(days=7), delete=True).size_bytes  # doctest: +SKIP
        """
        if not isinstance(older_than, timedelta) or older_than < timedelta(0):
            raise InvalidInput(f"older_than must be a non-negative timedelta, got {older_than!r}")
        self._ready()
        self._art.refresh()
        cutoff = utcnow() - older_than
        items: list[GcItem] = []
        recent = 0
        for kind, path, _detail in self._orphans(*self._meta.referenced_paths()):
            size, modified = self._art.usage(path)
            if modified is None or modified > cutoff:
                recent += 1  # no time known, or too young: leave it
                continue
            items.append(GcItem(path=path, kind=kind, size_bytes=size, modified=modified))
        if delete and items:
            # Looked up again just before removing: a registration may have committed meanwhile.
            folders, paths = self._meta.referenced_paths()
            still = [i for i in items if i.path not in folders and i.path not in paths]
            recent += len(items) - len(still)
            items = still
            for item in items:
                self._art.remove(item.path)
        return GcReport(items=tuple(items), deleted=delete, recent=recent)

    def _check_file(self, rel: str, sha256: str, size: int, uri: str) -> Problem | None:
        """The problem with one stored file, if any: missing, unreadable or changed."""
        try:
            got_size, got_sha = self._art.hash_file(rel)
        except NotFound:
            return Problem("missing", rel, "file is missing", uri)
        except StorageError as exc:
            return Problem("unreadable", rel, str(exc), uri)
        if got_sha != sha256 or got_size != size:
            return Problem("mismatch", rel, f"sha256 is {got_sha}, expected {sha256}", uri)
        return None

    def _verify_chain(
        self, registered: dict[tuple[str, int], str], rebuilt: ReplayedState
    ) -> ChainReport | None:
        """Verify the ledger in one pass that also notes each version's registered digest and
        replays every event into ``rebuilt`` (for the state check)."""
        from ._ledger import verify_chain

        def events() -> Iterator[tuple[LedgerEvent, str]]:
            for event, digest in self._meta.iter_events():
                if event.action == "version.registered":
                    data = event.data
                    registered[(data["model"], int(data["version"]))] = data["digest"]
                eff = effects(event.action, event.actor, event.time, event.data)
                apply_effects(
                    rebuilt, eff, actor=event.actor, time=event.time, seq=event.seq, action=event.action
                )
                yield event, digest

        stream = events()
        stored = self._meta.public_key()
        report = verify_chain(stream, self._meta.checkpoints(), stored[1]) if stored else None
        for _rest in stream:
            pass  # the replay needs every event, also after the chain check stopped at a problem
        return report

    def _verify_version(self, mv: ModelVersion) -> list[Problem]:
        out: list[Problem] = []
        uri = mv.uri
        if version_digest(mv.files, mv.manifest) != mv.digest:
            out.append(
                Problem("mismatch", mv.folder, "manifest or file list does not match the version digest", uri)
            )
        try:
            record = json.loads(self._art.read_bytes(f"{mv.folder}/manifest.json"))
            if record.get("digest") != mv.digest or canonical_json(record.get("manifest")) != canonical_json(
                dict(mv.manifest)
            ):
                out.append(
                    Problem(
                        "mismatch", f"{mv.folder}/manifest.json", "differs from the registered manifest", uri
                    )
                )
        except NotFound:
            out.append(Problem("missing", f"{mv.folder}/manifest.json", "file is missing", uri))
        except (ValueError, StorageError) as exc:
            out.append(Problem("unreadable", f"{mv.folder}/manifest.json", str(exc), uri))
        known = set()
        for f in mv.files:
            known.add(f.path)
            problem = self._check_file(f"{mv.folder}/artifacts/{f.path}", f.sha256, f.size, uri)
            if problem is not None:
                out.append(problem)
        for extra in self._art.list_files(f"{mv.folder}/artifacts"):
            if extra not in known:
                out.append(
                    Problem(
                        "orphan", f"{mv.folder}/artifacts/{extra}", "file is not part of the version", uri
                    )
                )
        return out


# ---------------------------------------------------------------------- helpers


def _is_sklearn(obj: Any) -> bool:
    return type(obj).__module__.startswith("sklearn.")


def _default_key_path(url: str) -> Path:
    import sqlalchemy.engine

    parsed = sqlalchemy.engine.make_url(url)
    if parsed.drivername.startswith("sqlite") and parsed.database and parsed.database != ":memory:":
        return Path(parsed.database + ".key")
    name = f"{parsed.host or 'local'}-{parsed.port or 5432}-{parsed.database or 'default'}.key"
    return Path.home() / ".config" / "modelledger" / "keys" / name


def _folder_files(folder: Path) -> list[Path]:
    out = []
    try:
        for dirpath, dirnames, filenames in os.walk(folder, onerror=_raise):
            dirnames.sort()
            for fn in sorted(filenames):
                full = Path(dirpath) / fn
                if full.is_symlink():
                    raise InvalidInput(f"symbolic links are not stored as artefacts: {full}")
                if not full.is_file():
                    raise InvalidInput(f"not a regular file, cannot be stored as an artefact: {full}")
                out.append(full.relative_to(folder))
    except PermissionError as exc:
        raise InvalidInput(f"cannot read artefact folder {folder}: {exc}") from exc
    return out


def _raise(exc: OSError) -> None:
    raise exc


def _coerce_manifest(manifest: Manifest | Mapping[str, Any] | str | os.PathLike[str] | None) -> Manifest:
    if manifest is None:
        return Manifest()
    if isinstance(manifest, Manifest):
        return manifest
    if isinstance(manifest, (str, os.PathLike)):
        return load_manifest_file(manifest)
    return Manifest.from_dict(manifest)


def _json_check(values: Mapping[str, Any], what: str) -> dict[str, Any]:
    try:
        canonical_json(dict(values))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} must hold JSON values only: {exc}") from exc
    return dict(values)


def _check_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"metric {key!r} must be a number, got {type(value).__name__}")
        out[str(key)] = float(value)
    return out


def _check_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    out = {}
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise InvalidInput(f"tags must map non-empty strings to strings, got {key!r}: {value!r}")
        out[key] = value
    return out


def _check_execution_id(value: str) -> None:
    import re

    if (
        not isinstance(value, str)
        or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", value)
        or ".." in value
    ):
        raise InvalidInput(f"invalid execution id {value!r}: use letters, digits, '.', '_' or '-'")


def _jsonable_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Estimator parameters as JSON values; nested estimators become their class name."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if value is None or isinstance(value, (bool, int, str)):
            out[key] = value
        elif isinstance(value, float):
            out[key] = value if value == value and value not in (float("inf"), float("-inf")) else str(value)
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float, str)) for v in value):
            out[key] = list(value)
        else:
            out[key] = repr(value) if not hasattr(value, "get_params") else type(value).__name__
    return out
