"""The hot path's statement runner gives the same rows, values and errors as SQLAlchemy's own."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from modelledger.stores.sql import SqlMetadataStore
from modelledger.stores.sql import tables as t
from modelledger.stores.sql.statements import Q_HEAD, Q_MODEL_AND_VERSION

pytestmark = pytest.mark.sql_only("the SQL store's own statement runner, compared with SQLAlchemy's")


@pytest.fixture
def store(db_url: str) -> Iterator[SqlMetadataStore]:
    s = SqlMetadataStore(db_url)
    yield s
    s.close()


def test_rows_match_what_sqlalchemy_reads(store: SqlMetadataStore) -> None:
    with store._write() as conn:
        # Q_HEAD carries a literal bind (id = 1) the caller never passes
        assert store.driver.first(conn, Q_HEAD) == tuple(conn.execute(Q_HEAD).one())
        assert store.driver.first(conn, Q_MODEL_AND_VERSION, {"name": "absent", "version": 1}) is None


def test_values_are_stored_exactly_as_sqlalchemy_stores_them(store: SqlMetadataStore) -> None:
    created = datetime(2026, 11, 29, 10, 30, 15, 123456, tzinfo=timezone.utc)
    row = {"description": "d", "created_at": created, "last_version": 0}
    with store._write() as conn:
        conn.execute(t.models.insert(), {"name": "by-sqlalchemy", **row})
        store.driver.execute(conn, t.models.insert(), {"name": "by-driver", **row})
    as_text = sa.type_coerce(t.models.c.created_at, sa.String)
    with store._read() as conn:
        stored = dict(conn.execute(sa.select(t.models.c.name, as_text)).all())
        typed = conn.execute(sa.select(t.models.c.created_at).where(t.models.c.name == "by-driver")).scalar()
    # same text in the column (so ordering and comparisons agree), same value read back
    assert stored["by-driver"] == stored["by-sqlalchemy"]
    assert (typed if typed.tzinfo else typed.replace(tzinfo=timezone.utc)) == created


def test_constraint_violations_raise_sqlalchemys_exception_classes(store: SqlMetadataStore) -> None:
    values = {"name": "m", "description": "", "created_at": datetime.now(timezone.utc), "last_version": 0}
    with store._write() as conn:
        store.driver.execute(conn, t.models.insert(), values)
    with pytest.raises(sa.exc.IntegrityError), store._write() as conn:
        store.driver.executemany(conn, t.models.insert(), [values])
    # the failed transaction was rolled back, the first row is still the only one
    with store._read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.models)).scalar() == 1


def test_statements_it_cannot_run_faithfully_are_refused(store: SqlMetadataStore) -> None:
    in_list = sa.select(t.models.c.id).where(t.models.c.name.in_(sa.bindparam("names", expanding=True)))
    with store._read() as conn:
        with pytest.raises(ValueError, match="expanding"):
            store.driver.all(conn, in_list, {"names": ["a"]})
        with pytest.raises(KeyError, match="'version'"):
            store.driver.first(conn, Q_MODEL_AND_VERSION, {"name": "m"})
