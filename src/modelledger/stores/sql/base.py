"""The SQL store's foundation: engine, transactions, schema, and the row readers every concern shares.

A SQLite database is opened from its path (never from re-parsed URL text, so any folder name
works) and only :meth:`SqlBase.migrate` creates one: reading a file that does not exist raises
:class:`NotFound`, and a file this process may not write is opened read-only, so reads still
work and writes say why they cannot. Every driver failure leaves ``_read``/``_write`` as a
:class:`~modelledger.errors.ModelLedgerError` that says what to do.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..._domain import ColumnSpec, DatasetSource, DatasetVersion, Model, ProcessingStep
from ..._members import Roster
from ..._policy import Policy
from ..._time import from_stored
from ...errors import InvalidInput, ModelLedgerError, NotFound, PermissionDenied, SchemaOutdated, StorageError
from . import tables as t
from .driver import Driver
from .statements import Q_ALIAS_MAP, Q_HEAD, Q_MODEL, Q_MODEL_INSERT, Q_POLICY, normalise_url

# PostgreSQL's snapshot as text: equal texts mean equal committed data (see read_stamp)
_STAMP_SQL = "SELECT pg_current_snapshot()::text"

__all__ = ["HEAD_REVISION", "SqlBase"]

HEAD_REVISION = "0011"
MAX_INTEGER = 2**63 - 1
"""The largest number a version, key or counter can be (a signed 64-bit column)."""
MIGRATION_LOCK = 0x6D6F64656C6C6467
"""PostgreSQL advisory lock key that serialises concurrent migrations ("modelldg")."""


IDLE_PING_SECONDS = 5.0
"""A pooled PostgreSQL connection idle this long is checked with a ping before it is used."""


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use only when it has been idle for a while.

    A connection can die while it sits in the pool (the server restarted, a firewall dropped
    it); SQLAlchemy's ``pool_pre_ping`` finds out with a round trip at every check-out, which
    costs as much as a small read. A connection in steady use is proven by its last use; one
    idle for :data:`IDLE_PING_SECONDS` is pinged, and a dead one is replaced before anyone sees it.
    """

    @sa.event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return  # new, or used a moment ago
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            # the pool closes this connection and checks out another (or opens a new one)
            raise sa.exc.DisconnectionError(f"pooled connection lost while idle: {exc}") from exc


class SqlBase:
    """Engine, transactions and schema of the SQL store; shared by its concerns."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self._engine: Engine | None = None
        self._upserts: dict[str, Any] = {}
        self._driver: Driver | None = None
        self._state_updates: dict[tuple[str, ...], Any] = {}
        self._create = False  # only migrate() may create a SQLite file
        self._sqlite_path: Path | Literal[False] | None = False  # False: not worked out yet
        self._roster_cache: Roster | None = None  # rebuilt when an enrolment event is appended
        self._first_kid: str | None = None  # the registry's first key id, once recorded
        self._pinned = threading.local()  # .conn: this thread's shared read connection, if any
        # SQLite: a connection that only reads data_version, with the process that opened it
        self._stamp_conn: tuple[int, Any] = (0, None)  # (pid, DB-API connection)
        self._stamp_lock = threading.Lock()

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def reads_are_local(self) -> bool:
        return self.is_sqlite

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

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite database file, absolute (None for PostgreSQL, memory or ``file:`` URI forms)."""
        if self._sqlite_path is False:
            path = None
            if self.is_sqlite:
                parsed = sa.engine.make_url(self.url)
                if parsed.database and parsed.database != ":memory:" and not parsed.query:
                    path = Path(parsed.database).absolute()
            self._sqlite_path = path
        return self._sqlite_path

    def _make_engine(self) -> Engine:
        if not self.is_sqlite:
            # Enough pooled connections for a server's worker threads: a connection opened past
            # the pool is closed again on return, and a new PostgreSQL connection is a process.
            # Last in, first out: the connections in use stay few and warm, the others idle
            # (and are pinged before they serve again).
            engine = sa.create_engine(self.url, pool_size=20, max_overflow=20, pool_use_lifo=True)
            _ping_when_idle(engine)
            return engine
        path = self.sqlite_path
        if path is None:  # memory, or a URL with its own driver options: SQLAlchemy opens it as given
            engine = sa.create_engine(self.url, connect_args={"timeout": 120})
        else:
            # The file is opened from its path, as a URI naming the mode: "rw" never creates it.
            engine = sa.create_engine(sa.engine.make_url(self.url), creator=lambda: self._connect(path))

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event decide how a transaction starts.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            if not cur.execute("PRAGMA query_only").fetchone()[0]:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=120000")
            cur.close()

        return engine

    def _connect(self, path: Path) -> sqlite3.Connection:
        """A connection to the SQLite file ``path``: created only by migrate, read-only if not writable.

        A read-only connection to a WAL database needs its ``-shm`` file, or a folder it can
        create one in. When it has neither, the file is read as immutable: right for read-only
        media and snapshots, but a process that may still write it elsewhere would not be seen.
        """
        extra = ""
        if not path.exists():
            if not self._create:
                raise NotFound(
                    "registry database",
                    str(path),
                    hint="create it with `modelledger init` (reads create nothing)",
                )
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise self._file_error(path.parent, exc) from exc
            if not os.access(path.parent, os.W_OK):
                raise self._read_only(path.parent)
            mode = "rwc"
        elif not os.access(path, os.R_OK):
            raise PermissionDenied(
                f"cannot read the registry database {path}: give this user read access to it"
            )
        elif _writable(path):
            mode = "rw"
        else:
            mode = "ro"
            if not os.access(path.parent, os.W_OK) and not Path(f"{path}-shm").exists():
                extra = "&immutable=1"
        conn = sqlite3.connect(
            f"{path.as_uri()}?mode={mode}{extra}", uri=True, timeout=120, check_same_thread=False
        )
        if mode == "ro":
            conn.execute("PRAGMA query_only=ON")
        return conn

    def _read_only(self, path: Path) -> ModelLedgerError:
        """The error for a write to ``path`` (the database or its folder), which this process cannot write."""
        what = "registry database" if path.is_file() else "folder of the registry database"
        if _on_read_only_filesystem(path):
            return StorageError(
                f"the {what} {path} is on a read-only file system: reads work, writes need it "
                "mounted writable (or copy the registry somewhere writable)"
            )
        return PermissionDenied(
            f"the {what} {path} is read-only for this user: reads work, writes need write access "
            "to the database file and its folder"
        )

    def _file_error(self, path: Path, exc: OSError) -> ModelLedgerError:
        if isinstance(exc, PermissionError):
            return PermissionDenied(
                f"cannot create {path}: permission denied; create it or choose another path"
            )
        if exc.errno == errno.EROFS:
            return self._read_only(path)
        return StorageError(f"cannot create {path}: {exc.strerror or exc}")

    def _failure(self, exc: sa.exc.DBAPIError) -> ModelLedgerError:
        """A driver error as the library error that says what to do."""
        orig = exc.orig
        detail = " ".join(str(orig).split())
        name = str(getattr(orig, "sqlite_errorname", "") or "")
        state = str(getattr(orig, "sqlstate", "") or "")
        path = self.sqlite_path
        where = f"the registry database {path}" if path is not None else "the metadata database"
        if name.startswith("SQLITE_FULL") or state == "53100":
            return StorageError(f"{where} cannot grow: the disk is full; free some space and try again")
        if name.startswith("SQLITE_READONLY") and path is not None:
            return self._read_only(path)
        if name.startswith(("SQLITE_PERM", "SQLITE_AUTH")) or state == "42501":
            return PermissionDenied(f"{where} refused this: {detail}; ask for the needed rights")
        if name.startswith("SQLITE_CANTOPEN") and path is not None:
            return StorageError(
                f"cannot open {where}: check that it and its folder exist and this user may use them"
            )
        if state == "25006":
            return StorageError(f"{where} is read-only (a standby?): write to the primary server")
        return StorageError(f"metadata store failed: {detail}")

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        # SQLite runs in driver autocommit mode (set on connect), so the transaction is ours to
        # open: BEGIN IMMEDIATE takes the write lock up front, and concurrent writers queue on
        # busy_timeout instead of failing when a read transaction tries to upgrade. (An engine
        # "begin" event would do the same, but any engine event slows every statement.)
        path = self.sqlite_path
        if path is not None and path.exists() and not _writable(path):
            raise self._read_only(path)
        try:
            with self.engine.connect() as conn, conn.begin():
                if self.is_sqlite:
                    self.driver.execute_sql(conn, "BEGIN IMMEDIATE")
                yield conn
        except sa.exc.IntegrityError:
            raise
        except sa.exc.DBAPIError as exc:
            raise self._failure(exc) from exc
        except OverflowError as exc:
            raise _too_large(exc) from exc

    @contextmanager
    def _read(self, *, snapshot: bool = False) -> Iterator[Connection]:
        """A connection for reading; ``snapshot`` makes several statements see one state."""
        pinned: Connection | None = getattr(self._pinned, "conn", None)
        try:
            if pinned is not None:
                yield from self._on_pinned(pinned, snapshot)
                return
            with self.engine.connect() as conn:
                if snapshot and self.is_sqlite:
                    self.driver.execute_sql(conn, "BEGIN")
                yield conn
        except sa.exc.IntegrityError:
            raise
        except sa.exc.DBAPIError as exc:
            raise self._failure(exc) from exc
        except OverflowError as exc:
            raise _too_large(exc) from exc

    def _on_pinned(self, conn: Connection, snapshot: bool) -> Iterator[Connection]:
        if not (snapshot and self.is_sqlite):
            yield conn
            return
        self.driver.execute_sql(conn, "BEGIN")
        try:
            yield conn
        finally:
            conn.connection.dbapi_connection.rollback()  # type: ignore[union-attr]

    def read_stamp(self) -> str | None:
        """A text that changes with every commit to the database, and only then.

        PostgreSQL: the current snapshot (``xmin:xmax:in-progress ids``). What a statement
        sees is decided by its snapshot alone, and every commit anywhere in the cluster moves
        it; a read-only statement moves nothing. SQLite: ``PRAGMA data_version`` of a
        connection kept for this alone, which never writes: it changes whenever any other
        connection (this process's included) commits. None for an in-memory SQLite database.
        """
        if self.is_sqlite:
            return self._sqlite_stamp()
        with self._stamp_lock:
            # a connection of its own, in autocommit: one round trip, where a pooled check-out
            # would add its BEGIN and the ROLLBACK on return
            for attempt in (1, 2):
                pid, conn = self._stamp_conn
                if conn is None or pid != os.getpid():  # a connection never crosses a fork
                    try:
                        raw = self.engine.raw_connection()
                    except sa.exc.DBAPIError as exc:
                        raise self._failure(exc) from exc
                    raw.detach()  # out of the pool for good: the pool keeps its size
                    conn = raw.dbapi_connection
                    conn.autocommit = True  # type: ignore[union-attr]
                    self._stamp_conn = (os.getpid(), conn)
                try:
                    cursor = conn.cursor()
                    cursor.execute(_STAMP_SQL)
                    return str(cursor.fetchone()[0])
                except self.engine.dialect.loaded_dbapi.Error as exc:
                    self._stamp_conn = (0, None)
                    with contextlib.suppress(Exception):
                        conn.close()
                    if attempt == 2:  # a second new connection failing too is the server's answer
                        raise StorageError(f"cannot read the metadata database: {exc}") from exc
        raise AssertionError("unreachable")

    def _sqlite_stamp(self) -> str | None:
        path = self.sqlite_path
        if path is None:
            return None
        with self._stamp_lock:
            pid, conn = self._stamp_conn
            if conn is None or pid != os.getpid():  # a connection never crosses a fork
                try:
                    conn = sqlite3.connect(
                        f"{path.as_uri()}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
                    )
                except sqlite3.Error as exc:
                    raise StorageError(f"cannot open the registry database {path}: {exc}") from exc
                self._stamp_conn = (os.getpid(), conn)
            try:
                return str(conn.execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error as exc:
                raise StorageError(f"cannot read the registry database {path}: {exc}") from exc

    @contextmanager
    def shared_reads(self) -> Iterator[None]:
        """Within the block, this thread's reads share one pooled connection.

        Each read otherwise checks a connection out of the pool on its own, and on PostgreSQL
        each check-out costs round trips of its own (the transaction's BEGIN, the ROLLBACK on
        return), which cost more than a small read. The shared connection reads
        in autocommit mode on PostgreSQL: at READ COMMITTED every statement sees the latest
        committed state either way. Writes keep their own connection and transaction.
        """
        if getattr(self._pinned, "conn", None) is not None:
            yield  # nested: the outer block's connection serves
            return
        try:
            conn = self.engine.connect()
            if not self.is_sqlite:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        except sa.exc.DBAPIError as exc:
            raise self._failure(exc) from exc
        self._pinned.conn = conn
        try:
            yield
        finally:
            self._pinned.conn = None
            conn.close()

    def close(self) -> None:
        with self._stamp_lock:
            pid, conn = self._stamp_conn
            if conn is not None and pid == os.getpid():
                conn.close()
            self._stamp_conn = (0, None)
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
        """Create (the only call that may create a SQLite file) or upgrade the schema to the head
        revision (Alembic). Concurrent callers are serialised, and all but the first find the
        schema at head and change nothing: SQLite's write lock, PostgreSQL's advisory lock."""
        from alembic import command  # only init and migrate need it
        from alembic.config import Config  # only init and migrate need it

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        self._create = True
        with self._write() as conn:
            if not self.is_sqlite:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
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
            archived=row.archived_at is not None,
        )

    def _upsert(self, name: str) -> Any:
        """A dialect-specific INSERT ... ON CONFLICT statement, built once per store."""
        stmt = self._upserts.get(name)
        if stmt is None:
            if name == "model_if_missing":
                # no conflict target: the name's unique index is on lower(name)
                stmt = self._insert(t.models).on_conflict_do_nothing()
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


def _writable(path: Path) -> bool:
    """Whether this process may write the SQLite file ``path`` (and the journal files beside it)."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def _on_read_only_filesystem(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):  # no statvfs (Windows), or the path vanished
        return False


def _too_large(exc: OverflowError) -> InvalidInput:
    return InvalidInput(f"a number in this request is too large: numbers are at most {MAX_INTEGER} ({exc})")
