"""The metadata store: a small Protocol and one SQLAlchemy Core implementation
that serves SQLite and PostgreSQL alike.

SQLite is run durable (WAL with ``synchronous=FULL``: a committed version
survives power loss) and write transactions start with ``BEGIN IMMEDIATE`` so
concurrent writers queue on the lock instead of failing on upgrade.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..domain import FileEntry, Model, ModelVersion
from ..errors import AlreadyExists, NotFound, SchemaOutdated, StorageError
from . import tables as t

__all__ = ["HEAD_REVISION", "MetadataStore", "SqlMetadataStore"]

HEAD_REVISION = "0002"


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
    ) -> ModelVersion: ...
    def get_version(
        self, model: str, version: int | None = None, *, alias: str | None = None
    ) -> ModelVersion: ...
    def list_versions(self, model: str, *, limit: int, before: int | None) -> list[ModelVersion]: ...
    def set_alias(self, model: str, alias: str, version: int, now: datetime) -> None: ...
    def delete_alias(self, model: str, alias: str) -> None: ...
    def iter_versions(self, batch: int = 500) -> Iterator[ModelVersion]: ...
    def close(self) -> None: ...


def normalise_url(url: str) -> str:
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


class SqlMetadataStore:
    """SQLAlchemy Core store for ``sqlite:///...`` and ``postgresql://...`` URLs."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self._engine: Engine | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._make_engine()
        return self._engine

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

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            if conn.get_execution_options().get("modelledger_write"):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql("BEGIN")

        return engine

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with self.engine.connect().execution_options(modelledger_write=True) as conn, conn.begin():
                yield conn
        except sa.exc.IntegrityError:
            raise
        except sa.exc.DBAPIError as exc:
            raise StorageError(f"metadata store failed: {exc.orig}") from exc

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
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
        row = conn.execute(sa.select(t.models).where(t.models.c.name == name)).first()
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
        if ignore:
            conn.execute(
                self._insert(t.models).values(values).on_conflict_do_nothing(index_elements=["name"])
            )
        else:
            conn.execute(t.models.insert().values(values))

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
            escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            q = q.where(t.models.c.name.like(escaped + "%", escape="\\"))
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
    ) -> ModelVersion:
        files_json = json.dumps([f.to_dict() for f in files], separators=(",", ":"))
        manifest_json = json.dumps(dict(manifest), separators=(",", ":"), sort_keys=True)
        try:
            with self._write() as conn:
                if create_model:
                    self._insert_model(conn, model, "", now, ignore=True)
                # The number is allocated inside this transaction: the row lock (PostgreSQL)
                # or the write lock (SQLite) serialises concurrent registrations.
                row = conn.execute(
                    t.models.update()
                    .where(t.models.c.name == model)
                    .values(last_version=t.models.c.last_version + 1)
                    .returning(t.models.c.id, t.models.c.last_version)
                ).first()
                if row is None:
                    raise NotFound("model", model)
                conn.execute(
                    t.versions.insert().values(
                        model_id=row.id,
                        version=row.last_version,
                        folder=folder,
                        digest=digest,
                        flavor=flavor,
                        files=files_json,
                        manifest=manifest_json,
                        created_at=now,
                        created_by=created_by,
                    )
                )
        except sa.exc.IntegrityError as exc:
            raise AlreadyExists("version folder", folder) from exc
        return ModelVersion(
            model=model,
            version=row.last_version,
            folder=folder,
            digest=digest,
            flavor=flavor,
            files=tuple(files),
            manifest=dict(manifest),
            created_at=now,
            created_by=created_by,
        )

    _VERSION_COLS = (
        t.models.c.name.label("model_name"),
        t.versions.c.version,
        t.versions.c.folder,
        t.versions.c.digest,
        t.versions.c.flavor,
        t.versions.c.files,
        t.versions.c.manifest,
        t.versions.c.created_at,
        t.versions.c.created_by,
    )

    @staticmethod
    def _to_version(row: Any, aliases: Sequence[str]) -> ModelVersion:
        return ModelVersion(
            model=row.model_name,
            version=row.version,
            folder=row.folder,
            digest=row.digest,
            flavor=row.flavor,
            files=tuple(FileEntry.from_dict(f) for f in json.loads(row.files)),
            manifest=json.loads(row.manifest),
            created_at=_utc(row.created_at),
            created_by=row.created_by,
            aliases=tuple(sorted(aliases)),
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
        base = sa.select(*self._VERSION_COLS).join(t.models, t.models.c.id == t.versions.c.model_id)
        if alias == "latest":
            q = base.where(t.models.c.name == model).order_by(t.versions.c.version.desc()).limit(1)
            label = f"models:/{model}@latest"
        elif alias is not None:
            q = base.join(
                t.aliases,
                sa.and_(
                    t.aliases.c.model_id == t.versions.c.model_id, t.aliases.c.version == t.versions.c.version
                ),
            ).where(t.models.c.name == model, t.aliases.c.alias == alias)
            label = f"models:/{model}@{alias}"
        else:
            q = base.where(t.models.c.name == model, t.versions.c.version == version)
            label = f"models:/{model}/{version}"
        with self._read() as conn:
            row = conn.execute(q).first()
            if row is None:
                self._model_row(conn, model)  # raises NotFound("model") when the model is unknown
                raise NotFound("alias" if alias and alias != "latest" else "model version", label)
            aliases = self._aliases(conn, model, [row.version])[row.version]
        return self._to_version(row, aliases)

    def list_versions(self, model: str, *, limit: int, before: int | None) -> list[ModelVersion]:
        q = (
            sa.select(*self._VERSION_COLS)
            .join(t.models, t.models.c.id == t.versions.c.model_id)
            .where(t.models.c.name == model)
            .order_by(t.versions.c.version.desc())
            .limit(limit)
        )
        if before is not None:
            q = q.where(t.versions.c.version < before)
        with self._read() as conn:
            self._model_row(conn, model)
            rows = conn.execute(q).all()
            alias_map = self._aliases(conn, model, [r.version for r in rows])
        return [self._to_version(r, alias_map[r.version]) for r in rows]

    def set_alias(self, model: str, alias: str, version: int, now: datetime) -> None:
        with self._write() as conn:
            m = self._model_row(conn, model)
            exists = conn.execute(
                sa.select(t.versions.c.id).where(
                    t.versions.c.model_id == m.id, t.versions.c.version == version
                )
            ).first()
            if exists is None:
                raise NotFound("model version", f"models:/{model}/{version}")
            stmt = self._insert(t.aliases).values(model_id=m.id, alias=alias, version=version, updated_at=now)
            stmt = stmt.on_conflict_do_update(
                index_elements=["model_id", "alias"], set_={"version": version, "updated_at": now}
            )
            conn.execute(stmt)

    def delete_alias(self, model: str, alias: str) -> None:
        with self._write() as conn:
            m = self._model_row(conn, model)
            res = conn.execute(
                t.aliases.delete().where(t.aliases.c.model_id == m.id, t.aliases.c.alias == alias)
            )
            if res.rowcount == 0:
                raise NotFound("alias", f"models:/{model}@{alias}")

    def iter_versions(self, batch: int = 500) -> Iterator[ModelVersion]:
        """Every version of every model, fetched in pages (for verify)."""
        last = 0
        while True:
            q = (
                sa.select(t.versions.c.id, *self._VERSION_COLS)
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
            last = rows[-1].id
