from __future__ import annotations

import sqlite3
import warnings
from pathlib import Path

import pytest
import sqlalchemy as sa

from modelledger import NotFound, Registry, SchemaOutdated, StorageError
from modelledger.stores.sql import HEAD_REVISION


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def test_explicit_url_needs_init(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    reg = Registry.open(url, artifacts=str(tmp_path / "a"))
    with pytest.raises(NotFound, match="modelledger init"):
        reg.list_models()
    assert not (tmp_path / "x.db").exists()
    sqlite3.connect(tmp_path / "x.db").close()  # an empty file: no schema yet
    with pytest.raises(SchemaOutdated, match="modelledger migrate"):
        reg.list_models()
    assert reg.init() == HEAD_REVISION
    assert list(reg.list_models()) == []
    assert reg.migrate() == HEAD_REVISION  # idempotent


def test_embedded_default_migrates_on_first_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MODELLEDGER_HOME", raising=False)
    reg = Registry.open()
    with pytest.raises(NotFound, match="nothing has been registered there yet"):
        reg.list_models()  # a read creates nothing
    assert not (tmp_path / ".modelledger").exists()
    reg.create_model("first")
    assert (tmp_path / ".modelledger" / "registry.db").is_file()
    assert Registry.open().get_model("first").name == "first"


def test_constructor_does_no_io(tmp_path: Path) -> None:
    Registry.open(f"sqlite:///{tmp_path / 'sub' / 'x.db'}", artifacts=str(tmp_path / "a"))
    assert not (tmp_path / "sub").exists()
    assert not (tmp_path / "a").exists()


@pytest.mark.sql_only("compares the SQL tables with the Alembic migrations")
def test_tables_agree_with_migrations(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from modelledger.stores.sql.tables import metadata

    engine = _engine(db_url)
    with engine.connect() as conn, warnings.catch_warnings():
        # SQLAlchemy cannot reflect SQLite's index on lower(name); the test below checks it
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index")
        warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expression-based index")
        # an index declared for one backend only (info["dialect"]) is compared on that one
        context = MigrationContext.configure(
            conn,
            opts={
                "include_object": lambda obj, _name, _kind, _reflected, _other: (
                    obj.info.get("dialect", conn.dialect.name) == conn.dialect.name
                )
            },
        )
        diff = compare_metadata(context, metadata)
    engine.dispose()
    assert diff == []


def test_store_failure_after_staging_leaves_no_folder(db_url: str, tmp_path: Path, fitted_pipeline) -> None:
    reg = Registry.open(db_url, artifacts=str(tmp_path / "art"))
    reg.list_models()  # schema checked while it is intact
    if db_url.startswith("dynamodb:"):
        # the ledger table gone (the test's own prefix: nothing to put back); the model item,
        # in the state table, would be created by the same transaction
        from tests.helpers import DynamoAttacker

        editor = DynamoAttacker(db_url)
        editor.client.delete_table(TableName=editor.ledger)
        with pytest.raises(StorageError):
            reg.register("m", fitted_pipeline)
        models_dir = tmp_path / "art" / "models" / "m"
        assert not models_dir.exists() or list(models_dir.iterdir()) == []
        assert not any(m.name == "m" for m in reg.list_models())
        return
    engine = _engine(db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE model_versions RENAME TO model_versions_gone")
    try:
        with pytest.raises(StorageError):
            reg.register("m", fitted_pipeline)
        models_dir = tmp_path / "art" / "models" / "m"
        assert not models_dir.exists() or list(models_dir.iterdir()) == []
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE model_versions_gone RENAME TO model_versions")
        engine.dispose()
    with pytest.raises(Exception):  # noqa: B017 - the model row must not exist either
        reg.get_model("m")
