"""The metadata store: a small Protocol and one SQLAlchemy Core implementation
that serves SQLite and PostgreSQL alike.

SQLite is run durable (WAL with ``synchronous=FULL``: a committed version
survives power loss) and write transactions start with ``BEGIN IMMEDIATE`` so
concurrent writers queue on the lock instead of failing on upgrade.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .._canonical import canonicalize_str
from .._domain import (
    ColumnSpec,
    DatasetSource,
    DatasetVersion,
    FileEntry,
    LazyFiles,
    LazyJSON,
    Model,
    ModelVersion,
    ProcessingStep,
)
from .._integrity import canonical_json
from .._ledger import ChainBuilder, Checkpoint, LedgerEvent, utc_now
from .._lifecycle import EventDraft, GovContext, ReplayedState, VersionState, effects
from .._policy import Policy
from ..errors import AlreadyExists, NotFound, SchemaOutdated, StorageError
from . import tables as t
from .driver import Driver

__all__ = ["HEAD_REVISION", "Decide", "MetadataStore", "Signer", "SqlMetadataStore"]

Decide = Callable[[GovContext], list[EventDraft]]
"""Given the state read under the write lock, the ledger events to append (or raise)."""
Signer = Callable[[int, bytes, str], Checkpoint]
"""Signs the chain head: (seq, head hash, time) -> checkpoint."""

HEAD_REVISION = "0003"
ALIAS_SLOTS = 100  # alias_history.seq = ledger seq * ALIAS_SLOTS + position in the event


class MetadataStore(Protocol):
    """What the registry needs from a metadata backend."""

    def schema_revision(self) -> str | None: ...
    def migrate(self) -> str: ...
    def create_model(self, name: str, description: str, tags: Mapping[str, str], now: datetime) -> Model: ...
    def get_model(self, name: str) -> Model: ...
    def list_models(
        self, *, prefix: str | None, tags: Mapping[str, str], limit: int, after: str | None
    ) -> list[Model]: ...
    def update_model(
        self, name: str, *, description: str | None, tags: Mapping[str, str | None] | None
    ) -> Model: ...
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
    ) -> ModelVersion: ...
    def get_version(
        self, model: str, version: int | None = None, *, alias: str | None = None
    ) -> ModelVersion: ...
    def get_version_by_key(self, key: int) -> ModelVersion: ...
    def list_versions(self, model: str, *, limit: int, before: int | None) -> list[ModelVersion]: ...
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
    def iter_versions(self, batch: int = 500) -> Iterator[ModelVersion]: ...
    def iter_dataset_files(self, batch: int = 500) -> Iterator[tuple[str, str, str, int]]: ...
    def referenced_paths(self) -> tuple[set[str], set[str]]: ...
    def iter_events(self, *, after: int = 0, batch: int = 5000) -> Iterator[tuple[LedgerEvent, str]]: ...
    def close(self) -> None: ...


def normalise_url(url: str) -> str:
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


ESC = "\\"


def _parse_dataset_ref(ref: str) -> tuple[str, int | None]:
    from .._identifiers import parse_dataset_uri

    return parse_dataset_uri(ref)


def _like_escape(text: str) -> str:
    """Make ``text`` match itself in a LIKE pattern (escape character: ESC)."""
    return text.replace(ESC, ESC + ESC).replace("%", ESC + "%").replace("_", ESC + "_")


def _utc(value: datetime | str) -> datetime:
    if isinstance(value, str):
        # SQLite holds naive UTC text; parsing it with the offset appended costs a sixth of
        # parsing it and then calling .replace(tzinfo=...), which a listing does per row.
        naive = value[-6:-5] not in ("+", "-") and not value.endswith("Z")
        value = datetime.fromisoformat(value + "+00:00" if naive else value)
    if value.tzinfo is timezone.utc:
        return value
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


# json.dumps with non-default options builds a new encoder on every call; this one is built once.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def _bp(name: str) -> Any:
    return sa.bindparam(name)


# Hot-path statements are built once: constructing a statement costs more than running it.
_VERSION_COLS = (
    t.versions.c.id.label("key"),
    t.models.c.name.label("model_name"),
    t.versions.c.version,
    t.versions.c.folder,
    t.versions.c.digest,
    t.versions.c.flavor,
    t.versions.c.files,
    t.versions.c.manifest,
    # read as text and parsed with fromisoformat: SQLAlchemy's SQLite DATETIME parser is a regex
    sa.type_coerce(t.versions.c.created_at, sa.String).label("created_at"),
    t.versions.c.created_by,
)
_VERSIONS = sa.select(*_VERSION_COLS).join(t.models, t.models.c.id == t.versions.c.model_id)
Q_MODEL = sa.select(t.models).where(t.models.c.name == _bp("name"))
Q_VERSION = _VERSIONS.where(t.models.c.name == _bp("model"), t.versions.c.version == _bp("version"))
Q_VERSION_LATEST = (
    _VERSIONS.where(t.models.c.name == _bp("model")).order_by(t.versions.c.version.desc()).limit(1)
)
Q_VERSION_BY_ALIAS = _VERSIONS.join(
    t.aliases,
    sa.and_(t.aliases.c.model_id == t.versions.c.model_id, t.aliases.c.version == t.versions.c.version),
).where(t.models.c.name == _bp("model"), t.aliases.c.alias == _bp("alias"))
Q_VERSION_BY_KEY = _VERSIONS.where(t.versions.c.id == _bp("key"))
Q_LIST_VERSIONS = (
    _VERSIONS.where(t.models.c.name == _bp("model"), t.versions.c.version < _bp("before"))
    .order_by(t.versions.c.version.desc())
    .limit(_bp("lim"))
)
Q_MODEL_ALIASES = (
    sa.select(t.aliases.c.alias, t.aliases.c.version)
    .join(t.models, t.models.c.id == t.aliases.c.model_id)
    .where(t.models.c.name == _bp("model"))
)
Q_ALIASES_OF = (
    sa.select(t.aliases.c.alias)
    .join(t.models, t.models.c.id == t.aliases.c.model_id)
    .where(t.models.c.name == _bp("model"), t.aliases.c.version == _bp("version"))
)
Q_HEAD = sa.select(t.ledger_head.c.seq, t.ledger_head.c.hash).where(t.ledger_head.c.id == 1).with_for_update()
Q_HEAD_UPDATE = (
    t.ledger_head.update().where(t.ledger_head.c.id == 1).values(seq=_bp("new_seq"), hash=_bp("new_hash"))
)
Q_POLICY = sa.select(t.settings.c.value).where(t.settings.c.key == "policy")
Q_ALIAS_MAP = sa.select(t.aliases.c.alias, t.aliases.c.version).where(t.aliases.c.model_id == _bp("mid"))
Q_MODEL_AND_VERSION = (
    sa.select(t.models.c.id, t.versions.c.id.label("version_id"))
    .select_from(t.models)
    .outerjoin(
        t.versions,
        sa.and_(t.versions.c.model_id == t.models.c.id, t.versions.c.version == _bp("version")),
    )
    .where(t.models.c.name == _bp("name"))
)
Q_STATE = sa.select(
    t.version_state.c.stage,
    t.version_state.c.registered_by,
    t.version_state.c.approved_by,
    t.version_state.c.decided_at,
    t.version_state.c.last_seq,
).where(t.version_state.c.model_id == _bp("mid"), t.version_state.c.version == _bp("version"))
Q_STATE_INSERT = t.version_state.insert()
Q_STATE_UPDATE = t.version_state.update().where(
    t.version_state.c.model_id == _bp("mid_"), t.version_state.c.version == _bp("version_")
)
Q_EVENTS_INSERT = t.ledger_events.insert()
Q_CHECKPOINT_INSERT = t.ledger_checkpoints.insert()
Q_NEXT_VERSION = (
    t.models.update()
    .where(t.models.c.name == _bp("model_name"))
    .values(last_version=t.models.c.last_version + 1)
    .returning(t.models.c.id, t.models.c.last_version)
)
Q_VERSION_INSERT = t.versions.insert().returning(t.versions.c.id)
Q_MODEL_INSERT = t.models.insert()
Q_ALIAS_HISTORY_INSERT = t.alias_history.insert()
Q_ALIAS_DELETE = t.aliases.delete().where(t.aliases.c.model_id == _bp("m"), t.aliases.c.alias == _bp("a"))


@dataclass
class _AliasMoves:
    """Alias changes of one append: final value per (model id, alias), and every move in order."""

    aliases: dict[tuple[int, str], int | None] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    # version state: (model id, version) -> (values, new row?), written once per append
    states: dict[tuple[int, int], tuple[dict[str, Any], bool]] = field(default_factory=dict)


class SqlMetadataStore:
    """SQLAlchemy Core store for ``sqlite:///...`` and ``postgresql://...`` URLs."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self._engine: Engine | None = None
        self._upserts: dict[str, Any] = {}
        self._driver: Driver | None = None
        self._state_updates: dict[tuple[str, ...], Any] = {}

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._make_engine()
        return self._engine

    @property
    def driver(self) -> Driver:
        """The hot path's statement runner (see stores/driver.py)."""
        if self._driver is None:
            self._driver = Driver(self.engine.dialect)
        return self._driver

    def _make_engine(self) -> Engine:
        if not self.is_sqlite:
            return sa.create_engine(self.url, pool_pre_ping=True)
        db = sa.engine.make_url(self.url).database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(self.url, connect_args={"timeout": 120})

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event decide how a transaction starts.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=120000")
            cur.close()

        return engine

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        # SQLite runs in driver autocommit mode (set on connect), so the transaction is ours to
        # open: BEGIN IMMEDIATE takes the write lock up front, and concurrent writers queue on
        # busy_timeout instead of failing when a read transaction tries to upgrade. (An engine
        # "begin" event would do the same, but any engine event slows every statement.)
        try:
            with self.engine.connect() as conn, conn.begin():
                if self.is_sqlite:
                    self.driver.execute_sql(conn, "BEGIN IMMEDIATE")
                yield conn
        except sa.exc.IntegrityError:
            raise
        except sa.exc.DBAPIError as exc:
            raise StorageError(f"metadata store failed: {exc.orig}") from exc

    @contextmanager
    def _read(self, *, snapshot: bool = False) -> Iterator[Connection]:
        """A connection for reading; ``snapshot`` makes several statements see one state."""
        try:
            with self.engine.connect() as conn:
                if snapshot and self.is_sqlite:
                    self.driver.execute_sql(conn, "BEGIN")
                yield conn
        except sa.exc.IntegrityError:
            raise
        except sa.exc.DBAPIError as exc:
            raise StorageError(f"metadata store failed: {exc.orig}") from exc

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # ------------------------------------------------------------ schema

    def schema_revision(self) -> str | None:
        with self._read() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()

    def migrate(self) -> str:
        """Create or upgrade the schema to the head revision (Alembic)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self._write() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        rev = self.schema_revision()
        assert rev is not None
        return rev

    def check_schema(self) -> None:
        rev = self.schema_revision()
        if rev != HEAD_REVISION:
            raise SchemaOutdated(current=rev, head=HEAD_REVISION)

    # ------------------------------------------------------------ models

    def _model_row(self, conn: Connection, name: str) -> Any:
        row = conn.execute(Q_MODEL, {"name": name}).first()
        if row is None:
            raise NotFound("model", name)
        return row

    def _tags(self, conn: Connection, model_ids: Sequence[int]) -> dict[int, dict[str, str]]:
        out: dict[int, dict[str, str]] = {i: {} for i in model_ids}
        if model_ids:
            q = sa.select(t.model_tags).where(t.model_tags.c.model_id.in_(model_ids))
            for r in conn.execute(q):
                out[r.model_id][r.key] = r.value
        return out

    @staticmethod
    def _to_model(row: Any, tags: Mapping[str, str]) -> Model:
        return Model(
            name=row.name,
            description=row.description,
            tags=dict(tags),
            created_at=_utc(row.created_at),
            latest_version=row.last_version,
        )

    def _upsert(self, name: str) -> Any:
        """A dialect-specific INSERT ... ON CONFLICT statement, built once per store."""
        stmt = self._upserts.get(name)
        if stmt is None:
            if name == "model_if_missing":
                stmt = self._insert(t.models).on_conflict_do_nothing(index_elements=["name"])
            elif name == "setting":
                ins = self._insert(t.settings)
                stmt = ins.on_conflict_do_update(index_elements=["key"], set_={"value": ins.excluded.value})
            elif name == "alias":
                ins = self._insert(t.aliases)
                stmt = ins.on_conflict_do_update(
                    index_elements=["model_id", "alias"],
                    set_={"version": ins.excluded.version, "updated_at": ins.excluded.updated_at},
                )
            else:  # pragma: no cover - a programming error
                raise KeyError(name)
            self._upserts[name] = stmt
        return stmt

    def _insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT, which knows ON CONFLICT."""
        if self.is_sqlite:
            from sqlalchemy.dialects import sqlite

            return sqlite.insert(table)
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)

    def _insert_model(
        self, conn: Connection, name: str, description: str, now: datetime, *, ignore: bool
    ) -> None:
        values = {"name": name, "description": description, "created_at": now, "last_version": 0}
        conn.execute(self._upsert("model_if_missing") if ignore else Q_MODEL_INSERT, values)

    def create_model(self, name: str, description: str, tags: Mapping[str, str], now: datetime) -> Model:
        try:
            with self._write() as conn:
                self._insert_model(conn, name, description, now, ignore=False)
                row = self._model_row(conn, name)
                if tags:
                    conn.execute(
                        t.model_tags.insert(),
                        [{"model_id": row.id, "key": k, "value": v} for k, v in tags.items()],
                    )
        except sa.exc.IntegrityError as exc:
            raise AlreadyExists("model", name) from exc
        return self._to_model(row, tags)

    def get_model(self, name: str) -> Model:
        with self._read() as conn:
            row = self._model_row(conn, name)
            return self._to_model(row, self._tags(conn, [row.id])[row.id])

    def list_models(
        self, *, prefix: str | None, tags: Mapping[str, str], limit: int, after: str | None
    ) -> list[Model]:
        q = sa.select(t.models).order_by(t.models.c.name).limit(limit)
        if prefix:
            q = q.where(t.models.c.name.like(_like_escape(prefix) + "%", escape=ESC))
        if after is not None:
            q = q.where(t.models.c.name > after)
        for key, value in tags.items():
            q = q.where(
                sa.exists().where(
                    t.model_tags.c.model_id == t.models.c.id,
                    t.model_tags.c.key == key,
                    t.model_tags.c.value == value,
                )
            )
        with self._read() as conn:
            rows = conn.execute(q).all()
            tag_map = self._tags(conn, [r.id for r in rows])
        return [self._to_model(r, tag_map[r.id]) for r in rows]

    def update_model(
        self, name: str, *, description: str | None, tags: Mapping[str, str | None] | None
    ) -> Model:
        with self._write() as conn:
            row = self._model_row(conn, name)
            if description is not None:
                conn.execute(t.models.update().where(t.models.c.id == row.id).values(description=description))
            for key, value in (tags or {}).items():
                conn.execute(
                    t.model_tags.delete().where(t.model_tags.c.model_id == row.id, t.model_tags.c.key == key)
                )
                if value is not None:
                    conn.execute(t.model_tags.insert().values(model_id=row.id, key=key, value=value))
            row = self._model_row(conn, name)
            return self._to_model(row, self._tags(conn, [row.id])[row.id])

    # ------------------------------------------------------------ versions

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
        files_json = _COMPACT.encode([f.to_dict() for f in files])
        # Stored in canonical form, so a load can digest the text as it is, without re-encoding.
        text = getattr(manifest, "canonical_text", None)
        manifest_json = text if isinstance(text, str) else canonical_json(dict(manifest)).decode("utf-8")
        try:
            with self._write() as conn:
                # Every governed write takes the ledger head first: one lock order, no deadlocks.
                head = self._lock_head(conn)
                # The number is allocated inside this transaction: the row lock (PostgreSQL)
                # or the write lock (SQLite) serialises concurrent registrations.
                run = self.driver
                row = run.first(conn, Q_NEXT_VERSION, {"model_name": model})
                if row is None and create_model:
                    self._insert_model(conn, model, "", now, ignore=True)
                    row = run.first(conn, Q_NEXT_VERSION, {"model_name": model})
                if row is None:
                    raise NotFound("model", model)
                model_id, number = int(row[0]), int(row[1])
                inserted = run.first(
                    conn,
                    Q_VERSION_INSERT,
                    {
                        "model_id": model_id,
                        "version": number,
                        "folder": folder,
                        "digest": digest,
                        "flavor": flavor,
                        "files": files_json,
                        "manifest": manifest_json,
                        "created_at": now,
                        "created_by": created_by,
                    },
                )
                assert inserted is not None
                key = int(inserted[0])
                for uri, role in links:
                    dname, dver = _parse_dataset_ref(uri)
                    dv = self._dataset_version_row(conn, dname, dver)
                    conn.execute(
                        t.model_datasets.insert().values(version_id=key, dataset_version_id=dv.id, role=role)
                    )
                ctx = GovContext(
                    model=model,
                    version=number,
                    state=None,
                    aliases=self._alias_map(conn, model_id) if needs_context else {},
                    policy=self._policy(conn) if needs_context else Policy(),
                    actor=created_by,
                )
                self._append(
                    conn, head, walk(ctx), actor=created_by, signer=signer, model_ids={model: model_id}
                )
        except sa.exc.IntegrityError as exc:
            raise AlreadyExists("version folder", folder) from exc
        return ModelVersion(
            model=model,
            version=number,
            folder=folder,
            digest=digest,
            flavor=flavor,
            files=tuple(files),
            manifest=dict(manifest),
            created_at=now,
            created_by=created_by,
            key=key,
        )

    _VERSION_COLS = _VERSION_COLS

    @staticmethod
    def _to_version(row: Any, aliases: Sequence[str]) -> ModelVersion:
        key, model, version, folder, digest, flavor, files, manifest, created_at, created_by = row
        return ModelVersion(
            model,
            version,
            folder,
            digest,
            flavor,
            LazyFiles(files),
            LazyJSON(manifest),
            _utc(created_at),
            created_by,
            tuple(sorted(aliases)) if aliases else (),
            key,
        )

    def _aliases(self, conn: Connection, model: str, versions: Sequence[int]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {v: [] for v in versions}
        if not versions:
            return out
        q = (
            sa.select(t.aliases.c.alias, t.aliases.c.version)
            .join(t.models, t.models.c.id == t.aliases.c.model_id)
            .where(t.models.c.name == model, t.aliases.c.version.in_(versions))
        )
        for r in conn.execute(q):
            out[r.version].append(r.alias)
        return out

    def get_version(
        self, model: str, version: int | None = None, *, alias: str | None = None
    ) -> ModelVersion:
        q: Any
        params: dict[str, Any]
        if alias == "latest":
            q, params = Q_VERSION_LATEST, {"model": model}
            label = f"models:/{model}@latest"
        elif alias is not None:
            q, params = Q_VERSION_BY_ALIAS, {"model": model, "alias": alias}
            label = f"models:/{model}@{alias}"
        else:
            q, params = Q_VERSION, {"model": model, "version": version}
            label = f"models:/{model}/{version}"
        run = self.driver
        with self._read(snapshot=True) as conn:
            row = run.first(conn, q, params)
            if row is None:
                self._model_row(conn, model)  # raises NotFound("model") when the model is unknown
                raise NotFound("alias" if alias and alias != "latest" else "model version", label)
            aliases = [a for (a,) in run.all(conn, Q_ALIASES_OF, {"model": model, "version": row[2]})]
        return self._to_version(row, aliases)

    def get_version_by_key(self, key: int) -> ModelVersion:
        with self._read() as conn:
            row = conn.execute(Q_VERSION_BY_KEY, {"key": key}).first()
            if row is None:
                raise NotFound("model version", f"key {key}")
            aliases = self._aliases(conn, row.model_name, [row.version])[row.version]
        return self._to_version(row, aliases)

    def list_versions(self, model: str, *, limit: int, before: int | None) -> list[ModelVersion]:
        params = {"model": model, "before": before if before is not None else 2**31 - 1, "lim": limit}
        run = self.driver
        with self._read(snapshot=True) as conn:
            rows = run.all(conn, Q_LIST_VERSIONS, params)
            if not rows:
                self._model_row(conn, model)  # NotFound for an unknown model
                return []
            alias_map: dict[int, list[str]] = {}
            for alias, version in run.all(conn, Q_MODEL_ALIASES, {"model": model}):
                alias_map.setdefault(version, []).append(alias)
        return [self._to_version(r, alias_map.get(r[2], ())) for r in rows]

    def iter_versions(self, batch: int = 500) -> Iterator[ModelVersion]:
        """Every version of every model, fetched in pages (for verify)."""
        last = 0
        while True:
            q = (
                sa.select(*self._VERSION_COLS)
                .join(t.models, t.models.c.id == t.versions.c.model_id)
                .where(t.versions.c.id > last)
                .order_by(t.versions.c.id)
                .limit(batch)
            )
            with self._read() as conn:
                rows = conn.execute(q).all()
            if not rows:
                return
            for r in rows:
                yield self._to_version(r, ())
            last = rows[-1].key

    # ------------------------------------------------------------ governance: the ledger

    def _lock_head(self, conn: Connection) -> tuple[int, str]:
        row = self.driver.first(conn, Q_HEAD)
        if row is None:
            raise StorageError("the ledger head row is missing: the metadata store was tampered with")
        return int(row[0]), str(row[1])

    def _policy(self, conn: Connection) -> Policy:
        row = self.driver.first(conn, Q_POLICY)
        raw = row[0] if row else None
        return Policy.from_dict(json.loads(raw)) if raw else Policy()

    def _alias_map(self, conn: Connection, model_id: int) -> dict[str, int]:
        return {alias: int(v) for alias, v in self.driver.all(conn, Q_ALIAS_MAP, {"mid": model_id})}

    def _state(self, conn: Connection, model_id: int, model: str, version: int) -> VersionState | None:
        row = self.driver.first(conn, Q_STATE, {"mid": model_id, "version": version})
        if row is None:
            return None
        stage, registered_by, approved_by, decided_at, last_seq = row
        return VersionState(
            model=model,
            version=version,
            stage=stage,
            registered_by=registered_by,
            approved_by=approved_by,
            decided_at=decided_at,
            last_seq=int(last_seq),
        )

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
    ) -> list[LedgerEvent]:
        """Read state under the write lock, let ``decide`` choose the events, append and apply them.

        A decision that needs neither the version's stage nor the policy (an alias move)
        skips reading them.
        """
        with self._write() as conn:
            head = self._lock_head(conn)
            state = None
            aliases: dict[str, int] = {}
            model_ids: dict[str, int] = {}
            if model:
                # one statement for the model and, when asked, whether the version exists
                m = self.driver.first(conn, Q_MODEL_AND_VERSION, {"name": model, "version": version or 0})
                if m is None:
                    raise NotFound("model", model)
                model_id, version_id = int(m[0]), m[1]
                model_ids[model] = model_id
                aliases = self._alias_map(conn, model_id)
                if version is not None:
                    if version_id is None:
                        raise NotFound("model version", f"models:/{model}/{version}")
                    if needs_state:
                        state = self._state(conn, model_id, model, version)
            ctx = GovContext(
                model=model,
                version=version,
                state=state,
                aliases=aliases,
                policy=self._policy(conn) if needs_policy else Policy(),
                actor=actor,
            )
            return self._append(conn, head, decide(ctx), actor=actor, signer=signer, model_ids=model_ids)

    def _append(
        self,
        conn: Connection,
        head: tuple[int, str],
        drafts: Sequence[EventDraft],
        *,
        actor: str,
        signer: Signer,
        model_ids: dict[str, int] | None = None,
    ) -> list[LedgerEvent]:
        """Chain, store and apply the drafted events, move the head and sign a checkpoint.

        ``model_ids`` holds model ids the caller already read (name -> id), saving a lookup.
        """
        if not drafts:
            return []
        builder = ChainBuilder(head=head[1], next_seq=head[0] + 1)
        time = utc_now()
        first = builder.next_seq
        events = [
            LedgerEvent(
                seq=first + i,
                time=time,
                actor=d.actor or actor,
                action=d.action,
                subject=d.subject,
                data=d.data,
                reason=d.reason,
            )
            for i, d in enumerate(drafts)
        ]
        # The canonical text is both what the chain hashes and what the data column keeps
        # (any JSON reader reads it back to the same value), so it is encoded once.
        texts = [canonicalize_str(e.data) for e in events]
        hashes = builder.extend(events, data_texts=texts)
        rows = [
            {
                "seq": e.seq,
                "time": e.time,
                "actor": e.actor,
                "action": e.action,
                "subject": e.subject,
                "data": text,
                "reason": e.reason,
                "hash": digest,
            }
            for e, text, digest in zip(events, texts, hashes, strict=True)
        ]
        run = self.driver
        run.executemany(conn, Q_EVENTS_INSERT, rows)
        ids = dict(model_ids or {})
        moves = _AliasMoves()
        for event in events:
            self._apply(conn, event, ids, moves)
        self._write_states(conn, moves)
        self._write_alias_moves(conn, moves)
        run.execute(conn, Q_HEAD_UPDATE, {"new_seq": builder.last_seq, "new_hash": builder.head_hex})
        cp = signer(builder.last_seq, builder.head, time)
        run.execute(conn, Q_CHECKPOINT_INSERT, cp.to_dict())
        return events

    def _model_id(self, conn: Connection, name: str, cache: dict[str, int]) -> int:
        if name not in cache:
            cache[name] = int(self._model_row(conn, name).id)
        return cache[name]

    def _apply(
        self, conn: Connection, event: LedgerEvent, model_ids: dict[str, int], moves: _AliasMoves
    ) -> None:
        """Update the state tables from one event, by the same rule a rebuild uses.

        Alias moves are collected in ``moves`` and written for the whole batch at once.
        """
        eff = effects(event.action, event.actor, event.time, event.data)
        if eff.model is not None and eff.version is not None and (eff.stage or eff.registered_by):
            mid = self._model_id(conn, eff.model, model_ids)
            key = (mid, int(eff.version))
            values, new = moves.states.get(key, ({}, False))
            if eff.registered_by:
                values = {"stage": eff.stage or "candidate", "registered_by": eff.registered_by}
                new = True
            elif eff.stage:
                values["stage"] = eff.stage
            if event.action == "version.approved":
                values.update(approved_by=event.actor, decided_at=event.time)
            elif event.action == "version.rejected":
                values["decided_at"] = event.time
            values["last_seq"] = event.seq
            moves.states[key] = (values, new)
        if eff.model is not None and eff.aliases:
            mid = self._model_id(conn, eff.model, model_ids)
            for i, (alias, version) in enumerate(sorted(eff.aliases.items())):
                moves.aliases[(mid, alias)] = version
                moves.history.append(
                    {
                        # several alias moves in one event keep their own row, in order
                        "seq": event.seq * ALIAS_SLOTS + i,
                        "model_id": mid,
                        "alias": alias,
                        "version": version,
                        "time": event.time,
                        "actor": event.actor,
                        "action": event.action,
                    }
                )
        if eff.policy is not None:
            value = json.dumps(eff.policy, sort_keys=True)
            self.driver.execute(conn, self._upsert("setting"), {"key": "policy", "value": value})

    def _write_states(self, conn: Connection, moves: _AliasMoves) -> None:
        for (mid, version), (values, new) in moves.states.items():
            if new:
                self.driver.execute(conn, Q_STATE_INSERT, {"model_id": mid, "version": version, **values})
            else:
                stmt = self._state_update(tuple(sorted(values)))
                self.driver.execute(conn, stmt, {"mid_": mid, "version_": version, **values})

    def _state_update(self, columns: tuple[str, ...]) -> Any:
        """UPDATE version_state SET <columns> for one version, built once per column set."""
        stmt = self._state_updates.get(columns)
        if stmt is None:
            stmt = self._state_updates[columns] = Q_STATE_UPDATE.values({c: _bp(c) for c in columns})
        return stmt

    def _write_alias_moves(self, conn: Connection, moves: _AliasMoves) -> None:
        if not moves.history:
            return
        now = datetime.now(timezone.utc)
        gone = [{"m": mid, "a": alias} for (mid, alias), v in moves.aliases.items() if v is None]
        if gone:
            self.driver.executemany(conn, Q_ALIAS_DELETE, gone)
        kept = [
            {"model_id": mid, "alias": alias, "version": v, "updated_at": now}
            for (mid, alias), v in moves.aliases.items()
            if v is not None
        ]
        if kept:
            self.driver.executemany(conn, self._upsert("alias"), kept)
        self.driver.executemany(conn, Q_ALIAS_HISTORY_INSERT, moves.history)

    @staticmethod
    def _event(r: Any) -> LedgerEvent:
        return LedgerEvent(
            seq=int(r.seq),
            time=r.time,
            actor=r.actor,
            action=r.action,
            subject=r.subject,
            data=json.loads(r.data),
            reason=r.reason,
        )

    def iter_events(self, *, after: int = 0, batch: int = 5000) -> Iterator[tuple[LedgerEvent, str]]:
        """Every ledger event with its stored hash, in seq order, fetched in pages."""
        last = after
        c = t.ledger_events.c
        while True:
            q = sa.select(t.ledger_events).where(c.seq > last).order_by(c.seq).limit(batch)
            with self._read() as conn:
                rows = conn.execute(q).all()
            if not rows:
                return
            for r in rows:
                yield self._event(r), r.hash
            last = int(rows[-1].seq)

    @staticmethod
    def _checkpoint(r: Any) -> Checkpoint:
        return Checkpoint(
            seq=int(r.seq), head_hash=r.head_hash, time=r.time, key_id=r.key_id, signature=r.signature
        )

    def checkpoints(self) -> list[Checkpoint]:
        with self._read() as conn:
            rows = conn.execute(sa.select(t.ledger_checkpoints).order_by(t.ledger_checkpoints.c.seq)).all()
        return [self._checkpoint(r) for r in rows]

    def public_key(self) -> tuple[str, bytes] | None:
        with self._read() as conn:
            row = conn.execute(
                sa.select(t.registry_keys).order_by(t.registry_keys.c.created_at).limit(1)
            ).first()
        return (row.key_id, row.public_pem.encode()) if row else None

    def add_public_key(self, kid: str, public_pem: bytes) -> None:
        with self._write() as conn:
            if conn.execute(sa.select(t.registry_keys.c.key_id)).first() is None:
                conn.execute(
                    t.registry_keys.insert().values(
                        key_id=kid, public_pem=public_pem.decode(), created_at=utc_now()
                    )
                )

    def version_state(self, model: str, version: int) -> VersionState:
        with self._read() as conn:
            m = self._model_row(conn, model)
            state = self._state(conn, m.id, model, version)
        if state is None:
            raise NotFound("model version", f"models:/{model}/{version}")
        return state

    def policy(self) -> Policy:
        with self._read() as conn:
            return self._policy(conn)

    def alias_at(self, model: str, alias: str, time: str) -> int | None:
        h = t.alias_history.c
        with self._read() as conn:
            m = self._model_row(conn, model)
            row = conn.execute(
                sa.select(h.version)
                .where(h.model_id == m.id, h.alias == alias, h.time <= time)
                .order_by(h.seq.desc())
                .limit(1)
            ).first()
        return None if row is None else row.version

    def alias_history(self, model: str, alias: str | None) -> list[dict[str, Any]]:
        h = t.alias_history.c
        with self._read() as conn:
            m = self._model_row(conn, model)
            q = sa.select(t.alias_history).where(h.model_id == m.id)
            if alias is not None:
                q = q.where(h.alias == alias)
            rows = conn.execute(q.order_by(h.seq)).all()
        return [
            {
                "seq": r.seq // ALIAS_SLOTS,
                "model": model,
                "alias": r.alias,
                "version": r.version,
                "time": r.time,
                "actor": r.actor,
                "action": r.action,
            }
            for r in rows
        ]

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
    ) -> list[tuple[LedgerEvent, str]]:
        c = t.ledger_events.c
        q = sa.select(t.ledger_events).where(c.seq > after).order_by(c.seq).limit(limit)
        conds = [c.subject == x for x in subjects]
        conds.extend(c.subject.like(_like_escape(p) + "%", escape=ESC) for p in subject_prefixes)
        if conds:
            q = q.where(sa.or_(*conds))
        if actor:
            q = q.where(c.actor == actor)
        if action:
            if "*" in action:
                pattern = "%".join(_like_escape(part) for part in action.split("*"))
                q = q.where(c.action.like(pattern, escape=ESC))
            else:
                q = q.where(c.action == action)
        if since:
            q = q.where(c.time >= since)
        if until:
            q = q.where(c.time <= until)
        with self._read() as conn:
            rows = conn.execute(q).all()
        return [(self._event(r), r.hash) for r in rows]

    def current_state(self) -> ReplayedState:
        """The state tables as they are (to compare with a replay of the ledger)."""
        out = ReplayedState()
        with self._read() as conn:
            names = {r.id: r.name for r in conn.execute(sa.select(t.models.c.id, t.models.c.name))}
            for r in conn.execute(sa.select(t.version_state)):
                out.versions[(names[r.model_id], r.version)] = VersionState(
                    model=names[r.model_id],
                    version=r.version,
                    stage=r.stage,
                    registered_by=r.registered_by,
                    approved_by=r.approved_by,
                    decided_at=r.decided_at,
                    last_seq=r.last_seq,
                )
            for r in conn.execute(sa.select(t.aliases)):
                out.aliases[(names[r.model_id], r.alias)] = r.version
            out.policy = self._policy(conn)
        return out

    def rewrite_state(self, state: ReplayedState) -> None:
        """Replace the state tables with ``state`` (rebuilt from the ledger)."""
        with self._write() as conn:
            self._lock_head(conn)
            ids = {r.name: r.id for r in conn.execute(sa.select(t.models.c.id, t.models.c.name))}
            conn.execute(t.version_state.delete())
            conn.execute(t.aliases.delete())
            rows = [
                {
                    "model_id": ids[s.model],
                    "version": s.version,
                    "stage": s.stage,
                    "registered_by": s.registered_by,
                    "approved_by": s.approved_by,
                    "decided_at": s.decided_at,
                    "last_seq": s.last_seq,
                }
                for s in state.versions.values()
                if s.model in ids
            ]
            if rows:
                conn.execute(t.version_state.insert(), rows)
            now = datetime.now(timezone.utc)
            alias_rows = [
                {"model_id": ids[m], "alias": a, "version": v, "updated_at": now}
                for (m, a), v in state.aliases.items()
                if m in ids
            ]
            if alias_rows:
                conn.execute(t.aliases.insert(), alias_rows)
            value = json.dumps(state.policy.to_dict(), sort_keys=True)
            conn.execute(t.settings.delete().where(t.settings.c.key == "policy"))
            conn.execute(t.settings.insert().values(key="policy", value=value))

    # ------------------------------------------------------------ data lineage

    def _dataset_row(self, conn: Connection, name: str) -> Any:
        row = conn.execute(sa.select(t.datasets).where(t.datasets.c.name == name)).first()
        if row is None:
            raise NotFound("data set", name)
        return row

    _DV_COLS = (
        t.dataset_versions,
        t.datasets.c.name.label("dataset_name"),
    )

    def _to_dataset_version(self, conn: Connection, row: Any) -> DatasetVersion:
        steps = []
        q = sa.select(t.processing_steps).where(t.processing_steps.c.output_id == row.id)
        for s in conn.execute(q.order_by(t.processing_steps.c.position)):
            inputs = conn.execute(
                sa.select(t.datasets.c.name, t.dataset_versions.c.version)
                .join(t.dataset_versions, t.dataset_versions.c.dataset_id == t.datasets.c.id)
                .join(t.step_inputs, t.step_inputs.c.input_id == t.dataset_versions.c.id)
                .where(t.step_inputs.c.step_id == s.id)
                .order_by(t.datasets.c.name, t.dataset_versions.c.version)
            ).all()
            steps.append(
                ProcessingStep(
                    name=s.name,
                    kind=s.kind,
                    params=json.loads(s.params),
                    columns=tuple(json.loads(s.columns)),
                    inputs=tuple(f"datasets:/{i.name}/{i.version}" for i in inputs),
                    code=json.loads(s.code),
                )
            )
        return DatasetVersion(
            name=row.dataset_name,
            version=row.version,
            digest=row.digest,
            path=row.path,
            file_sha256=row.file_sha256,
            size_bytes=int(row.size_bytes),
            row_count=int(row.row_count),
            schema=tuple(ColumnSpec.from_dict(c) for c in json.loads(row.schema)),
            stats=json.loads(row.stats),
            source=DatasetSource.from_dict(json.loads(row.source)),
            steps=tuple(steps),
            created_at=_utc(row.created_at),
            created_by=row.created_by,
            key=int(row.id),
        )

    def _dataset_version_row(self, conn: Connection, name: str, version: int | None) -> Any:
        q = sa.select(*self._DV_COLS).join(t.datasets, t.datasets.c.id == t.dataset_versions.c.dataset_id)
        q = q.where(t.datasets.c.name == name)
        if version is None:
            q = q.order_by(t.dataset_versions.c.version.desc()).limit(1)
        else:
            q = q.where(t.dataset_versions.c.version == version)
        row = conn.execute(q).first()
        if row is None:
            self._dataset_row(conn, name)
            raise NotFound("data set version", f"datasets:/{name}/{version if version else 'latest'}")
        return row

    def find_dataset_version(self, name: str, digest: str) -> DatasetVersion | None:
        q = (
            sa.select(*self._DV_COLS)
            .join(t.datasets, t.datasets.c.id == t.dataset_versions.c.dataset_id)
            .where(t.datasets.c.name == name, t.dataset_versions.c.digest == digest)
        )
        with self._read() as conn:
            row = conn.execute(q).first()
            return self._to_dataset_version(conn, row) if row else None

    def get_dataset_version(self, name: str, version: int | None) -> DatasetVersion:
        with self._read() as conn:
            return self._to_dataset_version(conn, self._dataset_version_row(conn, name, version))

    def get_dataset_version_by_key(self, key: int) -> DatasetVersion:
        q = (
            sa.select(*self._DV_COLS)
            .join(t.datasets, t.datasets.c.id == t.dataset_versions.c.dataset_id)
            .where(t.dataset_versions.c.id == key)
        )
        with self._read() as conn:
            row = conn.execute(q).first()
            if row is None:
                raise NotFound("data set version", f"key {key}")
            return self._to_dataset_version(conn, row)

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
    ) -> tuple[DatasetVersion, bool]:
        """Insert a data set version (or find the one with the same digest); True when new."""
        with self._write() as conn:
            ds = conn.execute(sa.select(t.datasets).where(t.datasets.c.name == name)).first()
            if ds is None:
                conn.execute(t.datasets.insert().values(name=name, created_at=now, last_version=0))
                ds = self._dataset_row(conn, name)
            existing = conn.execute(
                sa.select(*self._DV_COLS)
                .join(t.datasets, t.datasets.c.id == t.dataset_versions.c.dataset_id)
                .where(t.dataset_versions.c.dataset_id == ds.id, t.dataset_versions.c.digest == digest)
            ).first()
            if existing is not None:
                return self._to_dataset_version(conn, existing), False
            # resolve step inputs first: an unknown input writes nothing
            resolved: list[list[int]] = []
            for step in steps:
                ids = []
                for ref in step.inputs:
                    dname, dver = _parse_dataset_ref(ref)
                    ids.append(int(self._dataset_version_row(conn, dname, dver).id))
                resolved.append(ids)
            num = conn.execute(
                t.datasets.update()
                .where(t.datasets.c.id == ds.id)
                .values(last_version=t.datasets.c.last_version + 1)
                .returning(t.datasets.c.last_version)
            ).scalar_one()
            inserted = conn.execute(
                t.dataset_versions.insert().values(
                    dataset_id=ds.id,
                    version=num,
                    digest=digest,
                    path=path,
                    file_sha256=file_sha256,
                    size_bytes=size_bytes,
                    row_count=row_count,
                    schema=json.dumps([c.to_dict() for c in schema]),
                    stats=json.dumps(dict(stats), sort_keys=True),
                    source=json.dumps(source.to_dict(), sort_keys=True),
                    created_at=now,
                    created_by=created_by,
                )
            )
            dv_id = int(inserted.inserted_primary_key[0])  # type: ignore[index]
            for position, (step, ids) in enumerate(zip(steps, resolved, strict=True)):
                sid = conn.execute(
                    t.processing_steps.insert().values(
                        output_id=dv_id,
                        position=position,
                        name=step.name,
                        kind=step.kind,
                        params=json.dumps(dict(step.params), sort_keys=True),
                        columns=json.dumps(list(step.columns)),
                        code=json.dumps(dict(step.code), sort_keys=True),
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
                for input_id in sorted(set(ids)):
                    conn.execute(t.step_inputs.insert().values(step_id=sid, input_id=input_id))
            row = conn.execute(
                sa.select(*self._DV_COLS)
                .join(t.datasets, t.datasets.c.id == t.dataset_versions.c.dataset_id)
                .where(t.dataset_versions.c.id == dv_id)
            ).one()
            return self._to_dataset_version(conn, row), True

    def list_datasets(self, *, prefix: str | None, limit: int, after: str | None) -> list[dict[str, Any]]:
        q = sa.select(t.datasets).order_by(t.datasets.c.name).limit(limit)
        if prefix:
            q = q.where(t.datasets.c.name.like(_like_escape(prefix) + "%", escape=ESC))
        if after is not None:
            q = q.where(t.datasets.c.name > after)
        with self._read() as conn:
            return [
                {
                    "name": r.name,
                    "description": r.description,
                    "latest_version": r.last_version,
                    "created_at": _utc(r.created_at).isoformat(),
                }
                for r in conn.execute(q)
            ]

    def list_dataset_versions(self, name: str, *, limit: int, before: int | None) -> list[DatasetVersion]:
        q = (
            sa.select(*self._DV_COLS)
            .join(t.datasets, t.datasets.c.id == t.dataset_versions.c.dataset_id)
            .where(t.datasets.c.name == name)
            .order_by(t.dataset_versions.c.version.desc())
            .limit(limit)
        )
        if before is not None:
            q = q.where(t.dataset_versions.c.version < before)
        with self._read() as conn:
            self._dataset_row(conn, name)
            return [self._to_dataset_version(conn, r) for r in conn.execute(q).all()]

    def referenced_paths(self) -> tuple[set[str], set[str]]:
        """Every version folder and every data set file path the metadata refers to (for gc)."""
        with self._read(snapshot=True) as conn:
            folders = set(conn.execute(sa.select(t.versions.c.folder)).scalars())
            paths = set(conn.execute(sa.select(t.dataset_versions.c.path)).scalars())
        return folders, paths

    def iter_dataset_files(self, batch: int = 500) -> Iterator[tuple[str, str, str, int]]:
        """(uri, path, sha256, size) of every data set version's stored file, in pages (for verify)."""
        dv, ds = t.dataset_versions.c, t.datasets.c
        last = 0
        while True:
            q = (
                sa.select(dv.id, ds.name, dv.version, dv.path, dv.file_sha256, dv.size_bytes)
                .join(t.datasets, ds.id == dv.dataset_id)
                .where(dv.id > last)
                .order_by(dv.id)
                .limit(batch)
            )
            with self._read() as conn:
                rows = conn.execute(q).all()
            if not rows:
                return
            for _key, name, version, path, sha, size in rows:
                yield f"datasets:/{name}/{version}", path, sha, int(size)
            last = int(rows[-1][0])

    def model_datasets(self, version_key: int) -> list[tuple[str, DatasetVersion]]:
        q = (
            sa.select(t.model_datasets.c.role, *self._DV_COLS)
            .join(t.dataset_versions, t.dataset_versions.c.id == t.model_datasets.c.dataset_version_id)
            .join(t.datasets, t.datasets.c.id == t.dataset_versions.c.dataset_id)
            .where(t.model_datasets.c.version_id == version_key)
            .order_by(t.model_datasets.c.role, t.datasets.c.name)
        )
        with self._read() as conn:
            return [(r.role, self._to_dataset_version(conn, r)) for r in conn.execute(q).all()]

    def dataset_users(self, dataset_key: int) -> list[tuple[str, int, str]]:
        """(model, version, role) of every model version trained or evaluated on a data set version."""
        q = (
            sa.select(t.models.c.name, t.versions.c.version, t.model_datasets.c.role)
            .join(t.versions, t.versions.c.id == t.model_datasets.c.version_id)
            .join(t.models, t.models.c.id == t.versions.c.model_id)
            .where(t.model_datasets.c.dataset_version_id == dataset_key)
            .order_by(t.models.c.name, t.versions.c.version, t.model_datasets.c.role)
        )
        with self._read() as conn:
            return [(r.name, r.version, r.role) for r in conn.execute(q)]

    def dataset_children(self, dataset_key: int) -> list[int]:
        """Keys of data set versions made from this one by a processing step."""
        q = (
            sa.select(t.processing_steps.c.output_id)
            .join(t.step_inputs, t.step_inputs.c.step_id == t.processing_steps.c.id)
            .where(t.step_inputs.c.input_id == dataset_key)
            .distinct()
        )
        with self._read() as conn:
            return [int(r[0]) for r in conn.execute(q)]
