"""Model names keep the case they were given and are unique without regard to it (as on macOS
and Windows file systems): ``Credit-Risk`` and ``credit-risk`` are one model, found by any
spelling, with one artefact folder and one set of ledger subjects, on SQLite, PostgreSQL and
through a server. Identifiers: ``models:/x/latest``, ``models:/x/<n>`` and ``models:/x@alias``
everywhere an identifier is taken."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from tests.conftest import Api
from tests.helpers import Doubler

from modelledger import AlreadyExists, InvalidInput, Registry, SchemaOutdated
from modelledger._identifiers import model_ref, parse_dataset_uri, parse_model_uri
from modelledger.cli import main
from modelledger.stores.sql import HEAD_REVISION


def test_identifier_forms() -> None:
    assert parse_model_uri("models:/Credit-Risk/latest") == parse_model_uri("models:/Credit-Risk@latest")
    assert parse_model_uri("models:/Credit-Risk/latest").alias == "latest"
    assert parse_model_uri("models:/credit-risk/3").version == 3
    assert model_ref("Credit-Risk").alias == "latest"
    for bad in ("models:/x/latest/2", "models:/x/Latest", "models:/x/", "models:/x/0"):
        with pytest.raises(InvalidInput):
            parse_model_uri(bad)
    with pytest.raises(InvalidInput, match="lower-case"):
        parse_dataset_uri("datasets:/Applications/1")  # data set names stay lower-case


def test_latest_number_and_alias_resolve_everywhere(api: Api, tmp_path: Path) -> None:
    reg = api.open("alice@example.com")
    v1 = reg.register("doubler", Doubler(), capture=False)
    v2 = reg.register("doubler", Doubler(), capture=False)
    reg.set_alias("doubler", "champion", 1)
    for identifier, expected in (
        ("models:/doubler/latest", v2),
        ("models:/doubler@latest", v2),
        ("models:/doubler/1", v1),
        ("models:/doubler@champion", v1),
    ):
        assert reg.get_version(identifier).uri == expected.uri
        assert reg.load(identifier).version.uri == expected.uri
        assert reg.download(identifier, tmp_path / identifier.replace("/", "_")).version.uri == expected.uri
    assert reg.state("models:/doubler/latest").model == "doubler"
    assert reg.lineage("models:/doubler/latest").root == v2.uri
    assert reg.diff("models:/doubler/1", "models:/doubler/latest").b == v2.uri


def test_latest_on_the_command_line(registry: Registry, db_url: str, tmp_path: Path) -> None:
    registry.register("doubler", Doubler(), capture=False)
    registry.register("doubler", Doubler(), capture=False)
    where = ["--registry", db_url, "--artifacts", str(tmp_path / "artifacts")]
    shown = CliRunner().invoke(main, ["versions", "show", "models:/doubler/latest", "--json", *where])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["version"] == 2


def test_a_name_is_one_model_in_any_case(registry: Registry, db_url: str, tmp_path: Path) -> None:
    created = registry.create_model("Credit-Risk", description="PD")
    assert created.name == "Credit-Risk"
    assert registry.get_model("credit-risk").name == "Credit-Risk"
    assert registry.get_model("CREDIT-RISK").description == "PD"
    with pytest.raises(AlreadyExists):
        registry.create_model("credit-risk")
    assert [m.name for m in registry.list_models()] == ["Credit-Risk"]
    assert [m.name for m in registry.list_models(prefix="cred")] == ["Credit-Risk"]

    v1 = registry.register("credit-risk", Doubler(), capture=False)
    v2 = registry.register("CREDIT-RISK", Doubler(), capture=False)
    assert (v1.uri, v2.uri) == ("models:/Credit-Risk/1", "models:/Credit-Risk/2")
    # one folder, named by the stored spelling, whatever the caller typed
    assert v1.folder.split("/")[:2] == v2.folder.split("/")[:2] == ["models", "Credit-Risk"]
    assert [p.name for p in (tmp_path / "artifacts" / "models").iterdir()] == ["Credit-Risk"]

    assert registry.load("models:/credit-risk/1").version.uri == "models:/Credit-Risk/1"
    assert [v.version for v in registry.list_versions("credit-risk")] == [2, 1]
    registry.set_alias("credit-risk", "champion", 1)
    assert registry.get_version("models:/CREDIT-RISK@champion").version == 1
    bob = Registry.open(db_url, artifacts=str(tmp_path / "artifacts"), actor="bob@example.com")
    bob.approve("models:/credit-risk/2", reason="holdout ok")  # four eyes: not the registrant
    assert registry.state("models:/Credit-Risk/2").stage == "approved"
    assert registry.states("credit-risk", [1, 2])[2].model == "Credit-Risk"
    registry.update_model("credit-risk", description="probability of default")

    # the ledger speaks of the stored spelling only, and any spelling finds its events
    subjects = {e.subject for e in registry.audit(model="credit-risk", limit=1000)}
    assert subjects and all(s.startswith("models:/Credit-Risk") for s in subjects)
    assert [e.action for e in registry.history("models:/credit-risk/2")][:1] == ["version.registered"]
    assert "version.approved" in {e.action for e in registry.history("CREDIT-RISK")}
    assert registry.alias_history("credit-risk")[0].model == "Credit-Risk"
    assert registry.search_versions("model = credit-risk").items[0].model == "Credit-Risk"
    assert registry.verify().ok


def test_a_change_of_case_is_a_rename(registry: Registry) -> None:
    registry.register("credit-risk", Doubler(), capture=False)
    renamed = registry.rename_model("credit-risk", "Credit-Risk", reason="house style")
    assert renamed.name == "Credit-Risk"
    assert registry.get_version("models:/credit-risk/1").uri == "models:/Credit-Risk/1"
    assert registry.register("credit-risk", Doubler(), capture=False).uri == "models:/Credit-Risk/2"
    assert {e.subject for e in registry.history("Credit-Risk")} >= {
        "models:/credit-risk/1",
        "models:/Credit-Risk/2",
    }


def test_mixed_case_through_a_server(api: Api) -> None:
    reg = api.open("alice@example.com")
    v = reg.register("Fraud-Score", Doubler(), capture=False)
    assert v.uri == "models:/Fraud-Score/1"
    assert reg.get_model("fraud-score").name == "Fraud-Score"
    assert reg.register("fraud-score", Doubler(), capture=False).uri == "models:/Fraud-Score/2"
    assert reg.load("models:/FRAUD-SCORE/latest").version.uri == "models:/Fraud-Score/2"
    with pytest.raises(AlreadyExists):
        reg.create_model("FRAUD-score")


@pytest.mark.sql_only("downgrades the SQL schema with Alembic; the DynamoDB layout has had one revision")
def test_an_existing_registry_upgrades_through_migrate(db_url: str, tmp_path: Path) -> None:
    """A registry at the previous revision (names compared exactly) is refused until
    ``migrate``, which adds the case-blind unique index; its models then resolve in any case."""
    from alembic import command
    from alembic.config import Config

    import modelledger.stores.sql as sql_pkg

    reg = Registry.open(db_url, artifacts=str(tmp_path / "art"), actor="alice@example.com")
    reg.register("credit-risk", Doubler(), capture=False)
    reg.close()
    cfg = Config()
    cfg.set_main_option("script_location", str(sql_pkg.__path__[0] + "/migrations"))
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0008")
        old = Registry.open(db_url, artifacts=str(tmp_path / "art"), actor="alice@example.com")
        with pytest.raises(SchemaOutdated, match="modelledger migrate"):
            old.get_model("credit-risk")
        assert old.migrate() == HEAD_REVISION
    finally:
        with engine.begin() as conn:  # never leave a shared database behind its head
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        engine.dispose()
    fresh = Registry.open(db_url, artifacts=str(tmp_path / "art"), actor="alice@example.com")
    assert fresh.get_version("models:/Credit-Risk/1").uri == "models:/credit-risk/1"
    with pytest.raises(AlreadyExists):
        fresh.create_model("Credit-Risk")
