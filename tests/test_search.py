"""Searching versions and models: the query language, keyword filters, paging, the indexes
each condition reads, and the CLI."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from modelledger import InvalidInput, Registry, parse_query
from modelledger.cli import main


@pytest.fixture
def populated(db_url: str, tmp_path) -> Registry:
    """Three models; credit-risk v1 rejected-looking (auc 0.7), v2 approved (0.85), v3 deployed
    (0.9) by bob; fraud v1 approved (0.95); churn v1 candidate with no metrics."""
    art = str(tmp_path / "artifacts")
    alice = Registry.open(db_url, artifacts=art, actor="alice@example.com")
    bob = Registry.open(db_url, artifacts=art, actor="bob@example.com")
    for auc in (0.7, 0.85):
        v = alice.register("credit-risk", lambda rows: rows, metrics={"auc": auc}, capture=False)
        alice.validate(v.uri, metrics={})
    bob.approve("models:/credit-risk/2", reason="reviewed")
    v3 = bob.register("credit-risk", lambda rows: rows, metrics={"auc": 0.9, "ks": 0.41}, capture=False)
    bob.validate(v3.uri, metrics={})
    alice.approve(v3.uri, reason="reviewed")
    alice.deploy(v3.uri, reason="release")
    f = alice.register("fraud", lambda rows: rows, metrics={"auc": 0.95}, capture=False)
    alice.validate(f.uri, metrics={})
    bob.approve(f.uri, reason="reviewed")
    alice.register("churn", lambda rows: rows, capture=False)
    return alice


def _uris(page: object) -> list[str]:
    return [v.uri for v in page]  # type: ignore[attr-defined]


def test_the_query_language(populated: Registry) -> None:
    r = populated
    assert _uris(r.search_versions("stage = 'approved' and metrics.auc > 0.8")) == [
        "models:/fraud/1",
        "models:/credit-risk/2",
    ]
    assert _uris(r.search_versions("metrics.auc >= 0.85 and model = credit-risk")) == [
        "models:/credit-risk/3",
        "models:/credit-risk/2",
    ]
    assert _uris(r.search_versions("alias = production")) == ["models:/credit-risk/3"]
    assert _uris(r.search_versions("registered_by = 'bob@example.com'")) == ["models:/credit-risk/3"]
    assert _uris(r.search_versions("stage != deployed and metrics.ks > 0")) == []
    assert _uris(r.search_versions("version > 2")) == ["models:/credit-risk/3"]
    assert _uris(r.search_versions("")) == [  # no condition: every version, newest first
        "models:/churn/1",
        "models:/fraud/1",
        "models:/credit-risk/3",
        "models:/credit-risk/2",
        "models:/credit-risk/1",
    ]


def test_keyword_filters_and_time(populated: Registry) -> None:
    r = populated
    assert _uris(r.search_versions(model="credit-risk", metrics={"auc": "< 0.8"})) == [
        "models:/credit-risk/1"
    ]
    churn = r.state("models:/churn/1").stage  # never validated: it stops where its stages say
    assert "models:/churn/1" in _uris(r.search_versions(stage=churn))
    assert "models:/fraud/1" not in _uris(r.search_versions(stage=churn))
    assert len(_uris(r.search_versions(since="1h"))) == 5
    tomorrow = datetime.now(timezone.utc) + timedelta(days=1)
    assert _uris(r.search_versions(since=tomorrow)) == []
    assert _uris(r.search_versions("created < '2000-01-01'")) == []
    # the query and the filters combine
    assert _uris(r.search_versions("metrics.auc > 0.8", stage="approved", model="fraud")) == [
        "models:/fraud/1"
    ]


def test_paging(populated: Registry) -> None:
    r = populated
    first = r.search_versions("metrics.auc > 0", limit=3)
    assert len(first.items) == 3 and first.next_cursor
    second = r.search_versions("metrics.auc > 0", limit=3, cursor=first.next_cursor)
    assert _uris(second) == ["models:/credit-risk/1"] and second.next_cursor is None
    assert len(set(_uris(first) + _uris(second))) == 4  # the four versions with an auc, once each


def test_models_by_the_stage_of_their_latest_version(populated: Registry) -> None:
    r = populated
    assert [m.name for m in r.list_models(stage="approved")] == ["fraud"]
    assert [m.name for m in r.list_models(stage="deployed")] == ["credit-risk"]
    churn = r.state("models:/churn/1").stage
    assert [m.name for m in r.list_models(stage=churn, prefix="ch")] == ["churn"]
    with pytest.raises(InvalidInput, match="unknown stage"):
        r.list_models(stage="shipped")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("colour = red", "unknown field"),
        ("stage > approved", "takes = or != only"),
        ("stage = shipped", "unknown stage"),
        ("metrics.auc > high", "compares with a number"),
        ("metrics > 1", "name the metric"),
        ("alias != production", "takes = only"),
        ("stage = approved or stage = deployed", "cannot read"),
        ("created > 'last tuesday'", "created"),
    ],
)
def test_bad_queries_say_what_is_wrong(populated: Registry, query: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        populated.search_versions(query)


def test_parse_query_types_the_values() -> None:
    q = parse_query('metrics.auc >= 0.8 and model = "credit-risk" and version < 10')
    assert [(c.field, c.op, c.value) for c in q.conditions] == [
        ("metrics.auc", ">=", 0.8),
        ("model", "=", "credit-risk"),
        ("version", "<", 10.0),
    ]


def test_every_condition_reads_an_index(populated: Registry, db_url: str) -> None:
    """SQLite's plan for a search by metric, stage and alias: each condition searches an index,
    and model_versions is looked up by key, never scanned."""
    if not db_url.startswith("sqlite"):
        pytest.skip("EXPLAIN QUERY PLAN is SQLite's")
    from modelledger._search import parse_query as parse
    from modelledger.stores.sql import tables as t
    from modelledger.stores.sql.models import _condition

    query = parse("metrics.auc > 0.8 and stage = approved and alias = production")
    q = sa.select(t.versions.c.id).join(t.models, t.models.c.id == t.versions.c.model_id)
    for c in query.conditions:
        q = q.where(_condition(c))
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        compiled = q.compile(engine, compile_kwargs={"literal_binds": True})
        plan = [row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")]
    engine.dispose()
    assert any("ix_version_metrics_key_value" in p for p in plan), plan
    assert any("ix_version_state_stage" in p for p in plan), plan
    assert not any(p.startswith("SCAN model_versions") for p in plan), plan


def test_cli_search(populated: Registry, db_url: str) -> None:
    where = ["--registry", db_url, "--artifacts", populated.artifact_root]
    runner = CliRunner()
    result = runner.invoke(
        main, ["search", "versions", "stage = approved and metrics.auc > 0.8", "--json", *where]
    )
    assert result.exit_code == 0, result.output
    assert [(d["model"], d["version"]) for d in json.loads(result.stdout)["items"]] == [
        ("fraud", 1),
        ("credit-risk", 2),
    ]
    table = runner.invoke(main, ["search", "versions", "alias = production", *where])
    assert table.exit_code == 0 and "models:/credit-risk/3" in table.stdout and "auc=0.9" in table.stdout
    models = runner.invoke(main, ["search", "models", "--stage", "approved", "--json", *where])
    assert [m["name"] for m in json.loads(models.stdout)["items"]] == ["fraud"]
    bad = runner.invoke(main, ["search", "versions", "colour = red", *where])
    assert bad.exit_code == 1 and "unknown field" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_metrics_of_versions_registered_before_the_index_are_found(db_url: str, tmp_path) -> None:
    """The migration that adds the metrics index fills it from existing manifests."""
    if not db_url.startswith("sqlite"):
        pytest.skip("the downgrade/upgrade round trip is run on SQLite")
    from alembic import command
    from alembic.config import Config

    reg = Registry.open(db_url, artifacts=str(tmp_path / "art"), actor="alice@example.com")
    reg.register("credit-risk", lambda rows: rows, metrics={"auc": 0.88}, capture=False)
    import modelledger.stores.sql as sql_pkg

    cfg = Config()
    cfg.set_main_option("script_location", str(sql_pkg.__path__[0] + "/migrations"))
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0004")
        command.upgrade(cfg, "head")
    engine.dispose()
    fresh = Registry.open(db_url, artifacts=str(tmp_path / "art"), actor="alice@example.com")
    assert _uris(fresh.search_versions("metrics.auc > 0.8")) == ["models:/credit-risk/1"]


def test_search_by_version_tags(populated: Registry) -> None:
    r = populated
    r.set_version_tags("models:/credit-risk/2", {"team": "risk", "champion": "yes"})
    r.set_version_tags("models:/fraud/1", {"team": "fraud-ops"})
    assert _uris(r.search_versions("tags.team = risk")) == ["models:/credit-risk/2"]
    assert _uris(r.search_versions(tags={"team": "fraud-ops"}, stage="approved")) == ["models:/fraud/1"]
    assert _uris(r.search_versions("tags.champion = yes and metrics.auc > 0.9")) == []
    with pytest.raises(InvalidInput, match="takes = only"):
        r.search_versions("tags.team != risk")
