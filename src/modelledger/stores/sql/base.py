"""The SQL store's foundation: engine, transactions, schema, and the row readers every concern shares."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..._domain import ColumnSpec, DatasetSource, DatasetVersion, Model, ProcessingStep
from ..._policy import Policy
from ..._time import from_stored
from ...errors import NotFound, SchemaOutdated, StorageError
from . import tables as t
from .driver import Driver
from .statements import Q_ALIAS_MAP, Q_HEAD, Q_MODEL, Q_MODEL_INSERT, Q_POLICY, normalise_url

__all__ = ["HEAD_REVISION", "SqlBase"]

HEAD_REVISION = "0003"


class SqlBase:
    """Engine, transactions and schema of the SQL store; shared by its concerns."""

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
        from alembic import command  # only init and migrate need it
        from alembic.config import Config  # only init and migrate need it

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
            created_at=from_stored(row.created_at),
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
            from sqlalchemy.dialects import sqlite  # only opening a SQL registry needs it

            return sqlite.insert(table)
        from sqlalchemy.dialects import postgresql  # only opening a SQL registry needs it

        return postgresql.insert(table)

    def _insert_model(
        self, conn: Connection, name: str, description: str, now: datetime, *, ignore: bool
    ) -> None:
        values = {"name": name, "description": description, "created_at": now, "last_version": 0}
        conn.execute(self._upsert("model_if_missing") if ignore else Q_MODEL_INSERT, values)

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
            created_at=from_stored(row.created_at),
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
