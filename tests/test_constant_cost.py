"""The per-object reads cost the same whatever the registry's size: each is answered by a range
of one index, never by a walk of the ledger, the alias moves, the versions or the models.

The answers are checked on data made to trip a prefix or an ordering (names that share a prefix,
LIKE's ``%`` and ``_``, mixed case, an alias moved away and back, an alias removed), and the
proof of the cost is each verb's query plan: the SQL the verb runs, captured at the driver, is
explained by the database (``EXPLAIN`` on PostgreSQL, ``EXPLAIN QUERY PLAN`` on SQLite), and
no plan may read one of those tables whole. On PostgreSQL the plans are asked for with
sequential scans disabled: a table of a few rows is cheaper to read whole, and what matters is
that an index can answer, and which one.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from tests.conftest import Api
from tests.helpers import Doubler

from modelledger import Registry
from modelledger.errors import NotFound
from modelledger.stores.sql.statements import prefix_range

SQL_PLAN = pytest.mark.sql_only(
    "the proof is the SQL query plan (EXPLAIN); tests/test_dynamodb_store.py checks DynamoDB never Scans"
)

# The tables whose size grows with the registry: a plan may search them, never scan them.
LARGE = ("ledger_events", "alias_history", "model_versions", "models", "model_tags")


@dataclass
class Statement:
    sql: str
    params: Any


@contextmanager
def captured(reg: Registry) -> Iterator[list[Statement]]:
    """Every statement ``reg``'s store sends to its database meanwhile, as the driver got it
    (the store runs some statements straight on the DB-API cursor, past SQLAlchemy's events)."""
    engine: sa.Engine = reg._meta.engine  # type: ignore[attr-defined]
    out: list[Statement] = []
    if engine.dialect.name == "sqlite":

        def on_checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
            # the statement with its values in place, as SQLite ran it
            dbapi_conn.set_trace_callback(lambda sql: out.append(Statement(sql, None)))

        def on_checkin(dbapi_conn: Any, _record: Any) -> None:
            if dbapi_conn is not None:
                dbapi_conn.set_trace_callback(None)

    else:
        import psycopg  # the PostgreSQL driver the store uses

        class Recording(psycopg.Cursor[Any]):
            def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:
                out.append(Statement(str(query), params))
                return super().execute(query, params, **kw)

        def on_checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
            dbapi_conn.cursor_factory = Recording

        def on_checkin(dbapi_conn: Any, _record: Any) -> None:
            if dbapi_conn is not None:
                dbapi_conn.cursor_factory = psycopg.Cursor

    sa.event.listen(engine, "checkout", on_checkout)
    sa.event.listen(engine, "checkin", on_checkin)
    try:
        yield out
    finally:
        sa.event.remove(engine, "checkout", on_checkout)
        sa.event.remove(engine, "checkin", on_checkin)


def _reads(statements: list[Statement], table: str) -> list[Statement]:
    return [
        s
        for s in statements
        if s.sql.lstrip().upper().startswith(("SELECT", "WITH"))
        and f"{table}" in s.sql
        and "FOR UPDATE" not in s.sql
    ]


def _sqlite_plan(db_url: str, s: Statement) -> list[str]:
    conn = sqlite3.connect(sa.engine.make_url(db_url).database or "")
    try:
        return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + s.sql)]
    finally:
        conn.close()


def _pg_plan(db_url: str, s: Statement) -> list[dict[str, Any]]:
    import psycopg  # the PostgreSQL driver the store uses

    url = sa.engine.make_url(db_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False)) as conn:
        conn.execute("SET enable_seqscan = off")
        (doc,) = conn.execute("EXPLAIN (FORMAT JSON) " + s.sql, s.params).fetchone()  # type: ignore[misc]
    nodes: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        nodes.append(node)
        for child in node.get("Plans", ()):
            walk(child)

    walk((json.loads(doc) if isinstance(doc, str) else doc)[0]["Plan"])
    return nodes


def indexes_used(db_url: str, s: Statement) -> set[str]:
    """The indexes the plan of ``s`` reads; fails when it reads one of the LARGE tables whole
    (a scan of the table, or of an index from end to end)."""
    if db_url.startswith("sqlite"):
        used = set()
        for detail in _sqlite_plan(db_url, s):
            words = detail.split()
            # the scans of a CTE, a subquery or a page already cut to its LIMIT are not of a table
            if words[0] == "SCAN" and words[1] not in ("names", "member_lasts", "page", "CONSTANT"):
                raise AssertionError(f"{detail!r} in the plan of {s.sql}")
            if "INDEX" in words:
                used.add(words[words.index("INDEX") + 1])
            if "PRIMARY" in words:
                used.add("pk")
        return used
    used = set()
    for node in _pg_plan(db_url, s):
        kind, relation = node["Node Type"], node.get("Relation Name")
        if kind == "Seq Scan" and relation in LARGE:
            raise AssertionError(f"sequential scan of {relation} in the plan of {s.sql}")
        if kind in ("Index Scan", "Index Only Scan", "Bitmap Index Scan"):
            if "Index Cond" not in node:
                raise AssertionError(f"a walk of all of {node['Index Name']} in the plan of {s.sql}")
            used.add(node["Index Name"])
    return used


def _when(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")[:-6] + "Z"


def _tick() -> str:
    time.sleep(0.002)
    moment = _when(datetime.now(timezone.utc))
    time.sleep(0.002)
    return moment


def _model(reg: Registry, name: str, versions: int) -> None:
    for _ in range(versions):
        reg.register(name, Doubler(), capture=False)


@pytest.fixture
def crowded(registry: Registry) -> Registry:
    """Models whose names share a prefix, in mixed case, with alias moves and events of their own."""
    _model(registry, "credit", 3)
    for name in ("credit-risk", "credit_x", "Credit.Scores", "creditx", "debit"):
        _model(registry, name, 1)
        registry.set_alias(name, "champion", 1)
    registry.create_model("credits", tags={"team": "risk"})
    registry.create_model("Cred", tags={"team": "ops"})
    return registry


# ------------------------------------------------------------------ answers


WORDS = ["", "a", "credit", "credit/", "credit/1", "credit0", "credit-risk", "credit_x", "creditx", "Credit/"]
WORDS += ["\ud7ff", "\ud7ffz", "\ue000", "z\U0010ffff", "z\U0010ffffa", "{", "z"]


@pytest.mark.parametrize(
    "prefix", ["credit/", "credit", "c", "credit_", "%", "\ud7ff", "z\U0010ffff", "\U0010ffff"]
)
def test_a_prefix_range_holds_exactly_the_strings_with_the_prefix(prefix: str) -> None:
    words = sa.table("words", sa.column("w", sa.Text))
    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE words (w TEXT)")
        conn.execute(words.insert(), [{"w": w} for w in WORDS])
        found = conn.execute(sa.select(words.c.w).where(prefix_range(words.c.w, prefix))).scalars()
        assert sorted(found) == sorted(w for w in WORDS if w.startswith(prefix))
    engine.dispose()


def test_alias_at_and_aliases_at_follow_every_move(crowded: Registry) -> None:
    reg, store = crowded, crowded._meta  # type: ignore[attr-defined]
    moments = {"before": _tick()}
    reg.set_alias("credit", "champion", 1)
    reg.set_alias("credit", "shadow", 1)
    moments["both on 1"] = _tick()
    reg.set_alias("credit", "champion", 2)  # moved away ...
    moments["moved"] = _tick()
    reg.set_alias("credit", "champion", 1)  # ... and back
    reg.delete_alias("credit", "shadow")
    moments["back, shadow gone"] = _tick()
    reg.set_alias("credit", "shadow", 3)
    reg.set_alias("credit", "a-first", 3)
    moments["end"] = _tick()

    expected = {
        "before": {1: [], 2: [], 3: []},
        "both on 1": {1: ["champion", "shadow"], 2: [], 3: []},
        "moved": {1: ["shadow"], 2: ["champion"], 3: []},
        "back, shadow gone": {1: ["champion"], 2: [], 3: []},
        "end": {1: ["champion"], 2: [], 3: ["a-first", "shadow"]},
    }
    for label, moment in moments.items():
        for version, aliases in expected[label].items():
            assert store.aliases_at("credit", version, moment) == aliases, (label, version)
            assert store.aliases_at("CREDIT", version, moment) == aliases  # any spelling
        held = {a: v for v, names in expected[label].items() for a in names}
        for alias in ("champion", "shadow", "a-first"):
            assert reg.alias_at("credit", alias, moment) == held.get(alias), (label, alias)
    # the model that shares the prefix keeps its own aliases
    assert store.aliases_at("credit-risk", 1, moments["end"]) == ["champion"]
    assert store.aliases_at("credit-risk", 2, moments["end"]) == []


def test_aliases_at_agrees_with_the_alias_history(crowded: Registry) -> None:
    """At every move's time, what the index answers is what replaying the history says."""
    reg, store = crowded, crowded._meta  # type: ignore[attr-defined]
    for version in (1, 2, 3, 2, 1, 3):
        reg.set_alias("credit", "champion", version)
        reg.set_alias("credit", "canary", 4 - version)
    reg.delete_alias("credit", "canary")
    held: dict[str, int | None] = {}
    for change in reg.alias_history("credit"):
        held[change.alias] = change.version
        for version in (1, 2, 3):
            wanted = sorted(a for a, v in held.items() if v == version)
            assert store.aliases_at("credit", version, change.time) == wanted


def test_the_latest_move_of_each_alias_is_the_folded_history(api: Api) -> None:
    """What ``alias list`` and the server's aliases route show, on SQLite, PostgreSQL and
    through a server: the move that set each alias now held, as replaying every move says."""
    reg = api.open("alice@example.com")
    for name in ("credit", "credit-risk"):
        _model(reg, name, 3)
    reg.set_alias("credit-risk", "champion", 3)
    for version in (1, 2, 1):  # away and back
        reg.set_alias("credit", "champion", version)
    reg.set_alias("credit", "shadow", 2)
    reg.set_alias("credit", "gone", 3)
    reg.delete_alias("credit", "gone")
    reg.set_alias("credit", "canary", 3, reason="try it")
    folded = {c.alias: c for c in reg.alias_history("credit")}
    latest = reg.alias_history("credit", latest=True)
    assert [c.alias for c in latest] == ["canary", "champion", "shadow"]
    assert latest == [folded[c.alias] for c in latest]
    assert [(c.alias, c.version) for c in latest] == [("canary", 3), ("champion", 1), ("shadow", 2)]
    assert reg.alias_history("CREDIT", "shadow", latest=True) == [folded["shadow"]]
    assert reg.alias_history("credit", "gone", latest=True) == []
    assert [(c.model, c.version) for c in reg.alias_history("credit-risk", latest=True)] == [
        ("credit-risk", 3)
    ]


def test_trace_names_the_aliases_held_when_the_prediction_was_made(crowded: Registry) -> None:
    reg = crowded
    reg.set_alias("credit", "champion", 2)
    reg.set_alias("credit", "champion", 1)  # away and back
    reg.set_alias("credit", "shadow", 1)
    with reg.load("models:/credit@champion", capture=True, flush_rows=1) as predictor:
        result = predictor.predict(pd.DataFrame({"x": [1.0, 2.0]}))
    reg.set_alias("credit", "champion", 3)  # moved on since
    reg.delete_alias("credit", "shadow")
    report = reg.trace(result.receipts[0].prediction_id)
    assert report.governance["aliases_at_prediction"] == ["champion", "shadow"]


def test_history_and_audit_of_a_model_stop_at_its_name(crowded: Registry) -> None:
    reg = crowded
    events = reg.history("credit")
    assert {e.subject for e in events} >= {"models:/credit/1", "models:/credit/3"}
    assert all(e.subject.startswith(("models:/credit/", "models:/credit@")) for e in events), [
        e.subject for e in events
    ]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    # every page of the audit, in order, is the history again (and the cursor carries on)
    seen, cursor = [], None
    while True:
        page = reg.audit(model="Credit", limit=2, cursor=cursor)
        seen.extend(page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert [e.seq for e in seen] == [e.seq for e in events]
    assert {e.subject for e in reg.history("credit_x")} == {"models:/credit_x/1", "models:/credit_x@champion"}
    mixed = reg.history("credit.scores")  # stored as Credit.Scores
    assert {e.subject for e in mixed} == {"models:/Credit.Scores/1", "models:/Credit.Scores@champion"}
    assert [e.subject for e in reg.audit(model="credit", version=2).items] == ["models:/credit/2"] * len(
        reg.history("models:/credit/2")
    )


def test_a_renamed_model_keeps_its_history_and_no_neighbour_joins_it(crowded: Registry) -> None:
    reg = crowded
    before = [e.seq for e in reg.history("credit_x")]
    reg.rename_model("credit_x", "credit_y", reason="naming rules")
    after = reg.history("credit_y")
    assert [e.seq for e in after][: len(before)] == before
    assert after[-1].action == "model.renamed"
    assert not any(e.subject.startswith("models:/credit-risk") for e in after)


def test_model_prefix_search_is_exact_about_its_prefix(crowded: Registry) -> None:
    reg = crowded

    def names(**filters: Any) -> list[str]:
        return [m.name for m in reg.list_models(limit=100, **filters)]

    assert names(prefix="credit_") == ["credit_x"]  # "_" is not a wildcard
    assert names(prefix="credit%") == []  # nor is "%"
    assert names(prefix="%") == []
    assert names(prefix="CREDIT.") == ["Credit.Scores"]  # any case
    assert names(prefix="credit") == [
        "credit",
        "credit-risk",
        "Credit.Scores",
        "credit_x",
        "credits",
        "creditx",
    ]
    assert names(prefix="cred") == ["Cred", *names(prefix="credit")]
    assert names(prefix="d") == ["debit"]
    assert names(prefix="creditz") == []
    assert names(tags={"team": "risk"}) == ["credits"]
    assert names(prefix="c", tags={"team": "ops"}) == ["Cred"]
    # pages by folded name: the cursor carries on where the page ended
    first = reg.list_models(prefix="credit", limit=4)
    rest = reg.list_models(prefix="credit", limit=4, cursor=first.next_cursor)
    assert [m.name for m in (*first.items, *rest.items)] == names(prefix="credit")


# ------------------------------------------------------------------ plans


def _only_index(db_url: str, statements: list[Statement], table: str) -> set[str]:
    reads = _reads(statements, table)
    assert reads, f"no read of {table} captured"
    used: set[str] = set()
    for s in reads:
        used |= indexes_used(db_url, s)
    return used


@SQL_PLAN
def test_alias_reads_are_one_probe_of_the_alias_index(crowded: Registry, db_url: str) -> None:
    reg, store = crowded, crowded._meta  # type: ignore[attr-defined]
    for version in (1, 2, 3, 1):
        reg.set_alias("credit", "champion", version)
    now = _tick()
    with captured(reg) as statements:
        assert reg.alias_at("credit", "champion", now) == 1
    assert "ix_alias_history_at" in _only_index(db_url, statements, "alias_history")
    with captured(reg) as statements:
        assert store.aliases_at("credit", 1, now) == ["champion"]
    assert "ix_alias_history_at" in _only_index(db_url, statements, "alias_history")
    with captured(reg) as statements:
        assert [c.version for c in reg.alias_history("credit", latest=True)] == [1]
    assert "ix_alias_history_at" in _only_index(db_url, statements, "alias_history")


@SQL_PLAN
def test_history_and_audit_read_one_subject_range(crowded: Registry, db_url: str) -> None:
    reg = crowded
    wanted = "ix_ledger_events_subject_" + ("action" if db_url.startswith("sqlite") else "c")
    with captured(reg) as statements:
        assert reg.history("credit")
    assert wanted in _only_index(db_url, statements, "ledger_events")
    with captured(reg) as statements:
        assert reg.audit(model="credit", limit=2).items
    used = _only_index(db_url, statements, "ledger_events")
    assert wanted in used
    assert not {"ledger_events_pkey", "pk"} & used  # not a walk in seq order, filtering subjects


@SQL_PLAN
def test_a_page_of_versions_is_one_range_of_the_version_index(crowded: Registry, db_url: str) -> None:
    reg = crowded
    # SQLite names the index of a unique constraint itself
    unique = (
        "sqlite_autoindex_model_versions_1"
        if db_url.startswith("sqlite")
        else "uq_model_versions_model_version"
    )
    with captured(reg) as statements:
        page = reg.list_versions("credit", limit=2)
    assert [v.version for v in page.items] == [3, 2]
    assert unique in _only_index(db_url, statements, "model_versions")
    with captured(reg) as statements:
        more = reg.list_versions("credit", limit=2, cursor=page.next_cursor)
    assert [v.version for v in more.items] == [1]
    assert unique in _only_index(db_url, statements, "model_versions")


@SQL_PLAN
def test_model_search_starts_from_an_index(crowded: Registry, db_url: str) -> None:
    reg = crowded
    folded = "uq_models_name_folded" if db_url.startswith("sqlite") else "ix_models_name_folded_c"
    with captured(reg) as statements:
        assert reg.list_models(prefix="credit_", limit=10).items
    assert folded in _only_index(db_url, statements, "models")
    with captured(reg) as statements:
        assert reg.list_models(tags={"team": "risk"}, limit=10).items
    assert "ix_model_tags_key_value" in _only_index(db_url, statements, "model_tags")


@SQL_PLAN
def test_a_load_finds_the_registration_event_by_one_probe(crowded: Registry, db_url: str) -> None:
    """Every load checks the version against its ``version.registered`` event: found by subject
    and action together, not by walking every registration in the registry."""
    reg = crowded
    with captured(reg) as statements:
        reg.load("models:/credit/2")
    first = [s for s in _reads(statements, "ledger_events") if "version.registered" in str(s.params or s.sql)]
    assert first, "the registration event was not read"
    for s in first:
        assert "ix_ledger_events_subject_action" in indexes_used(db_url, s)
    _only_index(db_url, statements, "ledger_events")  # and no other read of the ledger scans it


@SQL_PLAN
def test_a_governed_write_finds_the_latest_membership_event_by_probes(crowded: Registry, db_url: str) -> None:
    """Every governed write asks whether its cached roster is current (the seq of the latest
    membership event): one backward probe of the action index per membership action, never a
    walk back from the ledger's head past every registration to the enrolments near its start."""
    reg = crowded
    with captured(reg) as statements:
        reg.set_alias("credit", "champion", 2)
    member = [s for s in _reads(statements, "ledger_events") if "member.enrolled" in str(s.params or s.sql)]
    assert member, "the roster's currency was not read"
    for s in member:
        used = indexes_used(db_url, s)
        assert "ix_ledger_events_action" in used
        assert not {"ledger_events_pkey", "pk"} & used


def _pg_analyzed(db_url: str, s: Statement) -> list[dict[str, Any]]:
    """The plan nodes of ``s`` as PostgreSQL ran it (``EXPLAIN ANALYZE``: actual rows per loop)."""
    import psycopg  # the PostgreSQL driver the store uses

    url = sa.engine.make_url(db_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False)) as conn:
        conn.execute("SET enable_seqscan = off")  # a few rows are cheaper read whole: ask for the index
        (doc,) = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + s.sql, s.params).fetchone()  # type: ignore[misc]
        conn.rollback()
    nodes: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        nodes.append(node)
        for child in node.get("Plans", ()):
            walk(child)

    walk((json.loads(doc) if isinstance(doc, str) else doc)[0]["Plan"])
    return nodes


def _version_rows_read(db_url: str, statements: list[Statement]) -> int:
    """How many rows of ``model_versions`` the captured reads of it took from its indexes
    (PostgreSQL). SQLite gives no row counts: there each read must be a search of the
    (model_id, version) index from the model's id, and a sort only of a page already cut to
    its size (a materialised subquery with its LIMIT), never of the model's versions; -1 is
    returned."""
    reads = _reads(statements, "model_versions")
    assert reads, "no read of model_versions captured"
    if db_url.startswith("sqlite"):
        for s in reads:
            plan = _sqlite_plan(db_url, s)
            searches = [d for d in plan if "model_versions" in d.split()[:2]]
            assert searches, plan
            for detail in searches:
                index = "USING INDEX sqlite_autoindex_model_versions_1 "
                assert f"{index}(model_id=?" in detail or f"{index}((model_id,version)<" in detail, plan
            if any("TEMP B-TREE" in d for d in plan):
                assert any(d.startswith("MATERIALIZE") for d in plan) and " LIMIT " in s.sql, plan
        return -1
    total = 0
    for s in reads:
        for node in _pg_analyzed(db_url, s):
            if node.get("Relation Name") == "model_versions":
                assert node["Node Type"] in ("Index Scan", "Index Scan Backward", "Index Only Scan"), node
                assert node["Index Name"] == "uq_model_versions_model_version", node
                total += int(node["Actual Rows"]) * int(node["Actual Loops"])
    return total


@pytest.fixture
def long_model(registry: Registry) -> Registry:
    """A model of 40 versions beside a few others: a read that walked the model's versions
    would read 40 rows where a probe reads one."""
    _model(registry, "long", 40)
    registry.set_alias("long", "champion", 7)
    _model(registry, "short", 2)
    registry.set_alias("short", "champion", 1)
    return registry


@SQL_PLAN
def test_a_version_by_number_or_alias_and_a_page_read_only_what_they_return(
    long_model: Registry, db_url: str
) -> None:
    """By number and by alias, the version is one probe of the (model_id, version) index: one
    row, whatever the model holds (joined by name, PostgreSQL read every version of the model
    to find the alias's one). A first page of 5 reads 5 rows from the end of the model's range,
    (and one more, to know whether a next page exists), never all 40 sorted."""
    reg = long_model
    with captured(reg) as statements:
        assert reg.get_version("models:/long@champion").version == 7
    assert _version_rows_read(db_url, statements) in (-1, 1)
    with captured(reg) as statements:
        assert reg.get_version("long", 33).version == 33
    assert _version_rows_read(db_url, statements) in (-1, 1)
    with captured(reg) as statements:
        assert reg.get_version("models:/LONG@latest").version == 40
    assert _version_rows_read(db_url, statements) in (-1, 1)
    with captured(reg) as statements:
        page = reg.list_versions("long", limit=5)
    assert [v.version for v in page.items] == [40, 39, 38, 37, 36]
    assert _version_rows_read(db_url, statements) in (-1, 6)  # one more: is there a next page?
    with captured(reg) as statements:
        more = reg.list_versions("long", limit=5, cursor=page.next_cursor)
    assert [v.version for v in more.items] == [35, 34, 33, 32, 31]
    assert _version_rows_read(db_url, statements) in (-1, 6)
    # an alias that does not exist, and one of another model, are still told apart
    with pytest.raises(NotFound, match="alias"):
        reg.get_version("models:/long@nowhere")
    assert reg.get_version("models:/short@champion").version == 1


@SQL_PLAN
def test_pages_of_versions_skip_missing_numbers(registry: Registry, db_url: str) -> None:
    """A page is read as the window of numbers below the cursor (versions are numbered without
    gaps). Were numbers ever missing, a short window is completed from below: every version is
    listed once, in order, whatever is missing."""
    reg = registry
    _model(reg, "gappy", 9)
    engine: sa.Engine = reg._meta.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:  # what no verb does: take versions 4, 5 and 9 away
        conn.execute(
            sa.text(
                "DELETE FROM model_versions WHERE version IN (4, 5, 9) AND model_id = "
                "(SELECT id FROM models WHERE name = 'gappy')"
            )
        )
    pages, cursor = [], None
    while True:
        page = reg.list_versions("gappy", limit=2, cursor=cursor)
        pages.append([v.version for v in page.items])
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == [[8, 7], [6, 3], [2, 1]]
    assert [v.version for v in reg.list_versions("gappy", limit=10).items] == [8, 7, 6, 3, 2, 1]
    assert reg.get_version("models:/gappy@latest").version == 8


@SQL_PLAN
def test_the_ledger_reads_of_every_governed_write_are_planned_for_their_values(
    crowded: Registry, db_url: str
) -> None:
    """The reads every governed write makes (the latest membership event, the policy, the
    renames) name their actions in the SQL text, not as parameters. psycopg prepares a statement
    on its fifth run, and PostgreSQL may then plan it once for any value: for ``max(seq) WHERE
    action = $1`` it walked the ledger back from its head (2.3-2.9 s a write at 1,000,000
    events). On PostgreSQL the plan PostgreSQL would cache (``force_generic_plan``) must still
    probe the action index."""
    reg = crowded
    with captured(reg) as statements:
        reg.set_alias("credit", "champion", 2)
    constant = [
        s
        for s in _reads(statements, "ledger_events")
        if any(a in s.sql for a in ("'member.enrolled'", "'policy.changed'", "'model.renamed'"))
    ]
    assert len(constant) >= 3, [s.sql for s in _reads(statements, "ledger_events")]
    for s in constant:
        assert not s.params, (s.sql, s.params)  # nothing left for a generic plan to guess
    if db_url.startswith("sqlite"):
        return
    import psycopg  # the PostgreSQL driver the store uses

    url = sa.engine.make_url(db_url).set(drivername="postgresql")
    member = next(s for s in constant if "'member.enrolled'" in s.sql)
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute("SET enable_seqscan = off")
        conn.execute(f"PREPARE member_last AS {member.sql}")
        (doc,) = conn.execute("EXPLAIN (FORMAT JSON) EXECUTE member_last").fetchone()  # type: ignore[misc]
        conn.execute("DEALLOCATE member_last")
    plan = json.dumps(doc)
    assert '"ix_ledger_events_action"' in plan
    assert '"ledger_events_pkey"' not in plan
