"""How the SQL store uses its database connections: one per block of shared reads, reads that
see every commit, and pooled PostgreSQL connections that die while idle replaced unseen."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from modelledger import Registry, StorageError
from modelledger.stores.sql import SqlMetadataStore
from modelledger.stores.sql import base as sql_base


def _checkouts(registry: Registry, token: str, shared: bool) -> int:
    engine: sa.Engine = registry._meta.engine  # type: ignore[attr-defined]
    count = [0]

    def counted(*_args: object) -> None:
        count[0] += 1

    sa.event.listen(engine, "checkout", counted)
    block: AbstractContextManager[None] = registry.shared_reads() if shared else nullcontext()
    try:
        with block:
            registry.authenticate_token(token)
            mv = registry.get_version("models:/m@champion")
            registry.states(mv.model, [mv.version])
    finally:
        sa.event.remove(engine, "checkout", counted)
    return count[0]


@pytest.fixture
def served(registry: Registry, fitted_pipeline: object) -> Iterator[tuple[Registry, str]]:
    registry.register("m", fitted_pipeline)
    registry.register("m", fitted_pipeline)
    registry.set_alias("m", "champion", 1)
    token, _ = registry.create_token("alice@example.com")
    yield registry, token


@pytest.mark.sql_only("counts SQLAlchemy connection checkouts; DynamoDB has no connections to share")
def test_shared_reads_take_one_connection_and_see_every_commit(
    served: tuple[Registry, str], db_url: str, tmp_path: Path
) -> None:
    registry, token = served
    assert _checkouts(registry, token, shared=False) >= 3  # each of the three reads takes its own
    assert _checkouts(registry, token, shared=True) == 1
    other = Registry.open(db_url, artifacts=str(tmp_path / "artifacts"), actor="alice@example.com")
    try:
        with registry.shared_reads():
            assert registry.get_version("models:/m@champion").version == 1
            other.set_alias("m", "champion", 2)  # committed by another connection meanwhile
            assert registry.get_version("models:/m@champion").version == 2
            assert registry.states("m", [2])[2] == other.state("models:/m/2")
    finally:
        other.close()


def test_reads_answer_as_they_did_once_the_block_ends(served: tuple[Registry, str]) -> None:
    registry, _token = served
    with registry.shared_reads(), registry.shared_reads():  # nested blocks share the outer one
        inside = registry.list_versions("m").items
    assert [v.version for v in inside] == [v.version for v in registry.list_versions("m").items] == [2, 1]


def test_a_pooled_connection_lost_while_idle_is_replaced_unseen(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqlMetadataStore(pg_url)
    try:

        def pooled_backend() -> int:
            with store._read() as conn:
                pid: int = conn.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
            return pid

        def kill(pid: int) -> None:
            with psycopg.connect(pg_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

        # used a moment ago: not pinged, so a connection killed meanwhile fails the next read
        # (the price of skipping the round trip; the pool then replaces it)
        kill(pooled_backend())
        with pytest.raises(StorageError):
            store.schema_revision()
        # idle past the threshold: pinged first, replaced, and the read just works
        monkeypatch.setattr(sql_base, "IDLE_PING_SECONDS", 0.0)
        lost = pooled_backend()
        kill(lost)
        assert store.schema_revision() == sql_base.HEAD_REVISION
        assert pooled_backend() != lost
    finally:
        store.close()


@pytest.mark.dynamodb_xfail("read_stamp is None (cannot tell): not every write moves one item yet")
def test_the_read_stamp_moves_with_every_commit_and_only_then(registry: Registry, db_url: str) -> None:
    other = Registry.open(db_url, artifacts="memory://stamp", actor="bob@example.com")
    with registry.shared_reads():  # the server's reads: one pinned connection, autocommit
        # the stamp is the cluster's, and another session of the test run may commit at any
        # moment: retry until reads alone are seen leaving it where it was
        for _ in range(50):
            before = registry.read_stamp()
            registry.list_models()
            if registry.read_stamp() == before:
                break
        else:
            pytest.fail("the stamp moved on every try although only reads ran here")
        other.create_model("moved-the-stamp")  # a commit through another connection
        assert registry.read_stamp() != before
    other.close()


def test_an_in_memory_registry_has_no_read_stamp() -> None:
    memory = Registry.open("sqlite://", artifacts="memory://no-stamp", actor="alice@example.com")
    memory.init()
    assert memory.read_stamp() is None
    memory.close()
