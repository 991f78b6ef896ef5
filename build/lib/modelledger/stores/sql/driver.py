"""Prebuilt Core statements run straight on the DB-API cursor, for the governed-write hot path.

A governed write (registering a version, moving an alias) runs about ten statements inside
one durable commit. SQLAlchemy's execution layer (execution context, result set-up, events)
costs 15-25 us a statement on top of the driver's 1-8 us: together as much as the fsync the
commit itself needs. The statements stay SQLAlchemy Core statements, compiled once per
dialect by SQLAlchemy's compiler, with the dialect's own bind processors applied to the
values; only the execution layer is skipped. Rows come back as plain tuples exactly as the
driver returns them, so this runner is kept to statements whose result columns need no type
processing (integers and text), inside a transaction opened through SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.base import Executable

Params = Mapping[str, Any]


class _Plan:
    """One statement compiled for one dialect and one set of parameter names."""

    __slots__ = ("fixed", "positional", "slots", "sql", "stmt")

    def __init__(self, stmt: Any, dialect: Dialect, keys: Sequence[str]) -> None:
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
        if compiled.escaped_bind_names:
            # names the driver cannot take as they are; none of the hot statements has one
            raise ValueError(f"statement needs escaped bind names: {compiled.string!r}")
        given = set(keys)
        # (rendered name, key in the caller's params or None for a literal, processor)
        by_name: dict[str, tuple[str | None, Any, Callable[[Any], Any] | None]] = {}
        for bind, name in compiled.bind_names.items():
            if bind.expanding:
                raise ValueError("expanding (IN) parameters are not supported here")
            proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.key in given:
                by_name[name] = (bind.key, None, proc)
            else:
                if bind.required:
                    raise KeyError(f"missing parameter {bind.key!r} for {compiled.string!r}")
                value = bind.effective_value
                by_name[name] = (None, proc(value) if proc else value, None)
        self.stmt = stmt  # keeps the statement alive, so its id() in the cache stays its own
        self.sql: str = compiled.string
        self.positional = bool(dialect.positional)
        order = list(compiled.positiontup or ()) if self.positional else list(by_name)
        self.slots = [(name, *by_name[name]) for name in order]
        self.fixed = {name: value for name, (key, value, _p) in by_name.items() if key is None}

    def values(self, params: Params) -> tuple[Any, ...] | dict[str, Any]:
        if self.positional:
            return tuple(
                fixed if key is None else (proc(params[key]) if proc else params[key])
                for _name, key, fixed, proc in self.slots
            )
        out = dict(self.fixed)
        for name, key, _fixed, proc in self.slots:
            if key is not None:
                value = params[key]
                out[name] = proc(value) if proc else value
        return out


class Driver:
    """Runs prebuilt statements of one engine's dialect on a SQLAlchemy connection's cursor."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._plans: dict[tuple[int, tuple[str, ...]], _Plan] = {}
        dbapi = dialect.loaded_dbapi
        self._error: type[Exception] = dbapi.Error

    def _plan(self, stmt: Executable, keys: tuple[str, ...]) -> _Plan:
        plan = self._plans.get((id(stmt), keys))
        if plan is None:
            plan = self._plans[(id(stmt), keys)] = _Plan(stmt, self.dialect, keys)
        return plan

    def _run(self, conn: Connection, stmt: Executable, params: Params | None, fetch: str | None) -> Any:
        params = params or {}
        plan = self._plan(stmt, tuple(params))
        values = plan.values(params)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(plan.sql, values)
            return getattr(cursor, fetch)() if fetch else None
        except self._error as exc:
            raise self._wrap(plan.sql, values, exc) from exc
        finally:
            cursor.close()

    def execute(self, conn: Connection, stmt: Executable, params: Params | None = None) -> None:
        """Run ``stmt`` once, for its effect."""
        self._run(conn, stmt, params, None)

    def first(
        self, conn: Connection, stmt: Executable, params: Params | None = None
    ) -> tuple[Any, ...] | None:
        """The first row ``stmt`` returns (a plain tuple), or None."""
        row: tuple[Any, ...] | None = self._run(conn, stmt, params, "fetchone")
        return row

    def all(self, conn: Connection, stmt: Executable, params: Params | None = None) -> list[tuple[Any, ...]]:
        """Every row ``stmt`` returns, as plain tuples."""
        rows: list[tuple[Any, ...]] = self._run(conn, stmt, params, "fetchall")
        return rows

    def executemany(self, conn: Connection, stmt: Executable, rows: Sequence[Params]) -> None:
        """Run ``stmt`` for every row (all rows have the same keys)."""
        if not rows:
            return
        plan = self._plan(stmt, tuple(rows[0]))
        values: list[Any] = [plan.values(r) for r in rows]
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(plan.sql, values)
        except self._error as exc:
            raise self._wrap(plan.sql, values, exc) from exc
        finally:
            cursor.close()

    def execute_sql(self, conn: Connection, sql: str) -> None:
        """Run a parameterless SQL string (``BEGIN IMMEDIATE``)."""
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql)
        except self._error as exc:
            raise self._wrap(sql, (), exc) from exc
        finally:
            cursor.close()

    def _wrap(self, sql: str, values: Any, exc: Exception) -> sa.exc.StatementError:
        # The same exception classes SQLAlchemy raises (IntegrityError, OperationalError...),
        # so callers handle a driver error one way whichever path ran the statement.
        return sa.exc.DBAPIError.instance(sql, values, exc, self._error, dialect=self.dialect)
