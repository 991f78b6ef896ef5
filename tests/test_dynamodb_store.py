"""The DynamoDB metadata store (the part built so far) against a DynamoDB-protocol server.

The server is moto's, on loopback, serving one request at a time: DynamoDB runs each
transaction atomically, and moto does so only when requests do not interleave (its
TransactWriteItems checks conditions and writes items in separate steps). Client threads
still race for the head exactly as they would against DynamoDB.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from modelledger._domain import ColumnSpec, DatasetSource, FileEntry, ProcessingStep
from modelledger._keys import key_id
from modelledger._ledger import check_segment, verify_chain
from modelledger._lifecycle import (
    EventDraft,
    GovContext,
    decide_alias,
    decide_archive,
    decide_registration,
    decide_rename,
    decide_version_tags,
    replay,
)
from modelledger._search import parse_query
from modelledger._signing import Identity, ensure_root, keyring
from modelledger._webhooks import Webhook, WebhookDelivery
from modelledger.errors import AlreadyExists, Conflict, InvalidInput, NotFound, PermissionDenied
from modelledger.stores.dynamodb import DynamoStore, parse_url
from modelledger.stores.dynamodb.base import LEDGER_DENIED, WRITER_ACTIONS
from modelledger.stores.sql import SqlMetadataStore

ROOT = "root@example.com"
ALICE = "alice@example.com"
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


class Actors:
    """The signing identities of a test: the root, and alice enrolled by the root as admin."""

    def __init__(self, folder: Path) -> None:
        self.root = Identity(folder / "root.key", create=True)
        self.alice = Identity(folder / "alice.key", create=True)

    def setup(self, store: Any) -> None:
        """Initialise ``store``'s ledger and enrol alice, as ``enrol_cast`` does for SQL."""
        ensure_root(store, self.root, ROOT)
        pem = self.alice.public_pem()
        data = {
            "member": ALICE,
            "key_id": key_id(pem),
            "public_key": pem.decode(),
            "roles": ["admin", "serving"],
            "models": ["*"],
        }
        drafts = [EventDraft("member.enrolled", f"members:/{ALICE}", data)]
        store.govern(
            "",
            None,
            lambda _ctx: drafts,
            actor=ROOT,
            signer=self.root.signer(),
            needs_state=False,
            needs_policy=False,
        )


@pytest.fixture
def actors(tmp_path: Path) -> Actors:
    return Actors(tmp_path / "keys")


@pytest.fixture
def store(dynamodb_server: str, monkeypatch: pytest.MonkeyPatch, actors: Actors) -> Iterator[DynamoStore]:
    """A DynamoDB registry of its own (fresh tables under a unique prefix), root and alice set up."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    s = DynamoStore(f"dynamodb://{prefix}?region=us-east-1&endpoint_url={dynamodb_server}")
    s.migrate()
    actors.setup(s)
    yield s
    s.close()


@pytest.fixture
def sql_store(tmp_path: Path, actors: Actors) -> Iterator[SqlMetadataStore]:
    s = SqlMetadataStore(f"sqlite:///{tmp_path / 'registry.db'}")
    s.migrate()
    actors.setup(s)
    yield s
    s.close()


def _files(n: int = 2) -> list[FileEntry]:
    return [FileEntry(f"artifacts/part-{i}.bin", 100 + i, f"{i:064x}") for i in range(n)]


def register(
    store: Any,
    signer: Any,
    model: str,
    *,
    folder: str | None = None,
    manifest: dict[str, Any] | None = None,
    files: list[FileEntry] | None = None,
) -> Any:
    """Register a version the way the registry does: ``decide_registration`` walks it."""
    files = _files() if files is None else files
    manifest = {"flavor": "sklearn", "metrics": {"auc": 0.91}} if manifest is None else manifest
    folder = folder or f"models/{model}/{uuid.uuid4().hex}"
    record = {
        "digest": "sha256:" + "ab" * 32,
        "folder": folder,
        "flavor": "sklearn",
        "files": [f.to_dict() for f in files],
    }

    def walk(ctx: GovContext) -> list[EventDraft]:
        return decide_registration(ctx, manifest, record)

    return store.create_version(
        model,
        folder=folder,
        digest=record["digest"],
        flavor="sklearn",
        files=files,
        manifest=manifest,
        created_by=ALICE,
        now=NOW,
        create_model=True,
        walk=walk,
        signer=signer,
    )


def set_alias(store: Any, signer: Any, model: str, alias: str, version: int) -> Any:
    return store.govern(
        model,
        version,
        lambda ctx: decide_alias(ctx, alias, version, reason="test"),
        actor=ALICE,
        signer=signer,
    )


def chain_ok(store: Any, actors: Actors) -> Any:
    kid, _pem = store.public_key()
    assert kid == actors.root.key_id
    # every member's key, from the roster the store rebuilt from its ledger, as verify does
    return verify_chain(store.iter_events(batch=7), store.checkpoints(), keyring(store))


# ---------------------------------------------------------------- URL and tables


def test_url_names_prefix_region_and_endpoint() -> None:
    assert parse_url("dynamodb://acme-?region=eu-west-1") == ("acme-", "eu-west-1", None)
    assert parse_url("dynamodb://acme?endpoint_url=http://127.0.0.1:9") == (
        "acme",
        None,
        "http://127.0.0.1:9",
    )
    for bad in ("dynamodb://", "dynamodb://a b", "sqlite:///x.db", "dynamodb://acme?colour=red"):
        with pytest.raises(InvalidInput):
            parse_url(bad)


def test_the_writer_policy_keeps_the_ledger_append_only() -> None:
    policy = DynamoStore("dynamodb://acme-?region=eu-west-1").writer_policy(region="eu-west-1", account="1")
    allow, deny = policy["Statement"]
    assert allow["Effect"] == "Allow" and deny["Effect"] == "Deny"
    assert deny["Resource"] == ["arn:aws:dynamodb:eu-west-1:1:table/acme-ledger"]
    assert {"dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"} <= set(deny["Action"])
    assert "dynamodb:PutItem" not in deny["Action"]  # appending is how the ledger grows
    assert "arn:aws:dynamodb:eu-west-1:1:table/acme-state" in allow["Resource"]


def test_the_store_calls_only_what_the_writer_policy_allows(store: DynamoStore, actors: Actors) -> None:
    calls: list[tuple[str, set[str]]] = []

    def seen(model: Any, params: dict[str, Any], **_: Any) -> None:
        tables = {params.get("TableName", "")} | set(params.get("RequestItems", {}))
        for entry in params.get("TransactItems", []):
            ((op, body),) = entry.items()
            action = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem"}[op]
            calls.append((action, {body["TableName"]}))
        calls.append((model.name, tables))

    store.client.meta.events.register("provide-client-params.dynamodb.*", seen)
    signer = actors.alice.signer()
    register(store, signer, "fraud")
    set_alias(store, signer, "fraud", "champion", 1)
    set_alias(store, signer, "fraud", "champion", None)  # removes the alias item
    store.create_token("t1", ALICE, "d" * 64, None, actor=ALICE, signer=signer, reason=None)
    store.revoke_token("t1", actor=ALICE, signer=signer, reason=None)
    store.rewrite_state(replay(e for e, _h in store.iter_events()))
    allowed = {"TransactWriteItems"} | {a for a in WRITER_ACTIONS}
    assert {name for name, _t in calls} <= allowed
    on_ledger = {name for name, tables in calls if store.ledger_table in tables}
    assert "PutItem" in on_ledger  # the hook sees the transaction's parts
    assert not on_ledger & set(LEDGER_DENIED)


def test_init_is_idempotent_and_keeps_the_ledger(store: DynamoStore, actors: Actors) -> None:
    head = store.ledger_head()
    assert head[0] == 2  # registry.initialized, then alice's enrolment
    assert store.migrate() == "d1"
    assert store.ledger_head() == head
    assert store.schema_revision() == "d1"


def test_reading_before_init_says_to_run_init(dynamodb_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    s = DynamoStore(f"dynamodb://none{uuid.uuid4().hex[:8]}-?region=us-east-1&endpoint_url={dynamodb_server}")
    assert s.schema_revision() is None
    with pytest.raises(Exception, match="modelledger init"):
        s.ledger_head()


# ---------------------------------------------------------------- the ledger


def test_appends_chain_and_verify(store: DynamoStore, actors: Actors) -> None:
    signer = actors.alice.signer()
    register(store, signer, "fraud")
    set_alias(store, signer, "fraud", "champion", 1)
    report = chain_ok(store, actors)
    assert report.ok, report.first_problem
    seqs = [e.seq for e, _h in store.iter_events()]
    assert seqs == list(range(1, len(seqs) + 1))
    assert store.ledger_head()[0] == seqs[-1]
    assert [cp.seq for cp in store.checkpoints()][-1] == seqs[-1]
    assert store.count_events(upto=seqs[-1]) == len(seqs)
    assert store.count_events(upto=2) == 2
    assert [cp.seq for cp in store.checkpoints(after=2)] == [
        cp.seq for cp in store.checkpoints() if cp.seq > 2
    ]


def test_an_edited_event_fails_verification(store: DynamoStore, actors: Actors) -> None:
    register(store, actors.alice.signer(), "fraud")
    # someone with table access rewrites an event's data: verify finds it
    store.client.update_item(
        TableName=store.ledger_table,
        Key=store.item({"pk": "E#0", "sk": "00000000000000000003"}),
        UpdateExpression="SET #d = :d",
        ExpressionAttributeNames={"#d": "data"},
        ExpressionAttributeValues={":d": store.value('{"model":"fraud","version":2}')},
    )
    report = chain_ok(store, actors)
    assert not report.ok
    assert report.first_problem is not None and report.first_problem.seq == 3


def test_a_refused_write_leaves_nothing(store: DynamoStore, actors: Actors, tmp_path: Path) -> None:
    register(store, actors.alice.signer(), "fraud")
    head = store.ledger_head()
    stranger = Identity(tmp_path / "stranger.key", create=True)
    with pytest.raises(PermissionDenied):
        set_alias(store, stranger.signer(), "fraud", "champion", 1)
    with pytest.raises(AlreadyExists):
        register(store, actors.alice.signer(), "fraud", folder=store.get_version("fraud", 1).folder)
    assert store.ledger_head() == head
    # the number the failed registration read was not used up
    assert register(store, actors.alice.signer(), "fraud").version == 2


def test_concurrent_appends_make_one_unforked_chain(store: DynamoStore, actors: Actors) -> None:
    register(store, actors.alice.signer(), "fraud")
    start = store.ledger_head()[0]
    threads, each = 6, 4
    errors: list[BaseException] = []

    def work(t: int) -> None:
        signer = actors.alice.signer()
        try:
            for i in range(each):
                set_alias(store, signer, "fraud", f"a{t}-{i}", 1)
        except BaseException as exc:  # collected: a thread's failure must fail the test
            errors.append(exc)

    _run(threads, work)
    assert not errors, errors
    events = list(store.iter_events())
    assert [e.seq for e, _ in events] == list(range(1, start + threads * each + 1))
    assert store.ledger_head()[0] == start + threads * each
    report = chain_ok(store, actors)
    assert report.ok, report.first_problem
    assert len({e.subject for e, _ in events[start:]}) == threads * each  # every write landed once
    assert len(store.checkpoints()) == len(store.checkpoints(after=0))


def test_concurrent_registrations_get_distinct_consecutive_numbers(
    store: DynamoStore, actors: Actors
) -> None:
    threads, each = 5, 3
    numbers: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(_t: int) -> None:
        signer = actors.alice.signer()
        try:
            for _ in range(each):
                v = register(store, signer, "fraud")
                with lock:
                    numbers.append(v.version)
        except BaseException as exc:
            errors.append(exc)

    _run(threads, work)
    assert not errors, errors
    assert sorted(numbers) == list(range(1, threads * each + 1))
    assert store.get_model("fraud").latest_version == threads * each
    listed = store.list_versions("fraud", limit=100, before=None)
    assert [v.version for v in listed] == list(range(threads * each, 0, -1))
    assert len({v.key for v in listed}) == threads * each
    assert chain_ok(store, actors).ok


def _run(n: int, work: Callable[[int], None]) -> None:
    pool = [threading.Thread(target=work, args=(t,)) for t in range(n)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(timeout=300)
    assert not any(th.is_alive() for th in pool)


# ---------------------------------------------------------------- models and versions


def test_models_and_versions_round_trip(store: DynamoStore, actors: Actors) -> None:
    model = store.create_model("Fraud", "card fraud", {"team": "risk"}, NOW)
    assert store.get_model("fraud") == model  # names in any case
    with pytest.raises(AlreadyExists):
        store.create_model("FRAUD", "", {}, NOW)
    with pytest.raises(NotFound):
        store.get_model("nope")
    signer = actors.alice.signer()
    with pytest.raises(Exception, match="stored as Fraud"):
        register(store, signer, "fraud")
    v1 = register(store, signer, "Fraud")
    v2 = register(store, signer, "Fraud", manifest={"flavor": "sklearn", "note": "second"})
    set_alias(store, signer, "Fraud", "champion", 1)
    got = store.get_version("fraud", 1)
    assert (got.model, got.version, got.folder, got.key) == ("Fraud", 1, v1.folder, v1.key)
    assert list(got.files) == list(v1.files) and dict(got.manifest) == dict(v1.manifest)
    assert got.aliases == ("champion",)
    assert store.get_version("Fraud", alias="champion").version == 1
    assert store.get_version("Fraud", alias="latest").version == 2
    assert store.get_version_by_key(v2.key).manifest["note"] == "second"
    with pytest.raises(NotFound):
        store.get_version("Fraud", 3)
    with pytest.raises(NotFound):
        store.get_version("Fraud", alias="nobody")
    assert [v.version for v in store.list_versions("Fraud", limit=1, before=None)] == [2]
    assert [v.version for v in store.list_versions("Fraud", limit=5, before=2)] == [1]
    assert [v.key for v in store.iter_versions(batch=1)] == [v1.key, v2.key]
    assert [v.key for v in store.iter_versions(after=v1.key)] == [v2.key]
    state = store.version_state("fraud", 1)
    # the default stage modes walk a registration up to validated
    assert (state.stage, state.registered_by) == ("validated", ALICE)
    assert set(store.version_states("Fraud", [1, 2, 9])) == {1, 2}


def test_a_body_over_the_item_limit_is_chunked(store: DynamoStore, actors: Actors) -> None:
    files = [FileEntry(f"artifacts/shard-{i:06d}.bin", i, f"{i:064x}") for i in range(5000)]  # ~560 KB
    v = register(store, actors.alice.signer(), "big", files=files)
    got = store.get_version("big", v.version)
    assert list(got.files) == files
    assert dict(got.manifest) == dict(v.manifest)


def test_a_write_over_the_transaction_limit_is_refused_whole(store: DynamoStore, actors: Actors) -> None:
    files = [FileEntry(f"artifacts/shard-{i:06d}.bin", i, f"{i:064x}") for i in range(20000)]  # ~2.2 MB
    head = store.ledger_head()
    with pytest.raises(InvalidInput, match="at most 4000000"):
        register(store, actors.alice.signer(), "huge", files=files)
    assert store.ledger_head() == head
    with pytest.raises(NotFound):
        store.get_model("huge")


def test_results_equal_the_sql_stores(
    store: DynamoStore, sql_store: SqlMetadataStore, actors: Actors
) -> None:
    """The same writes on both backends give the same versions, state and ledger (up to times)."""
    for s in (store, sql_store):
        s.create_model("churn", "who leaves", {"team": "growth"}, NOW)
        signer = actors.alice.signer()
        register(s, signer, "churn", folder="models/churn/1")
        auto = {"flavor": "sklearn", "stages": {"data_prepared": "auto", "trained": "auto"}}
        register(s, signer, "churn", folder="models/churn/2", manifest=auto)
        register(s, signer, "fresh", folder="models/fresh/1")
        set_alias(s, signer, "churn", "champion", 2)
        set_alias(s, signer, "churn", "champion", 1)
        s.create_model("chai", "", {"team": "tea"}, NOW)
        s.create_model("zeta", "", {"team": "growth"}, NOW)
        s.update_model(
            "zeta", description="last", tags={"team": None, "tier": "1"}, actor=ALICE, signer=signer
        )
        s.save_verify_record("k1", "proved 12")

    def shape(s: Any) -> Any:
        versions = [
            (v.model, v.version, v.folder, v.digest, list(v.files), dict(v.manifest), v.created_by, v.aliases)
            for m in ("churn", "fresh")
            for v in reversed(s.list_versions(m, limit=10, before=None))
        ]
        events = [(e.seq, e.actor, e.action, e.subject, dict(e.data), e.reason) for e, _h in s.iter_events()]
        states = s.version_states("churn", [1, 2])
        return {
            "model": s.get_model("churn").to_dict(),
            "versions": versions,
            "events": events,
            "states": {k: v.to_dict() for k, v in states.items()},
            "by_alias": s.get_version("churn", alias="champion").version,
            "policy": s.policy().to_dict(),
            "members": sorted(s.roster().members),
            "head": s.ledger_head()[0],
            "checkpoints": [cp.seq for cp in s.checkpoints()],
            "models": [
                [m.name for m in s.list_models(prefix=p, tags=t, limit=n, after=a, stage=st)]
                for p, t, n, a, st in [
                    (None, {}, 10, None, None),
                    ("ch", {}, 10, None, None),
                    (None, {"team": "growth"}, 10, None, None),
                    (None, {}, 1, "chai", None),
                    (None, {}, 10, None, "validated"),
                    ("zz", {}, 10, None, None),
                ]
            ],
            "zeta": {k: v for k, v in s.get_model("zeta").to_dict().items() if k != "created_at"},
            "history": [{k: v for k, v in h.items() if k != "time"} for h in s.alias_history("churn", None)],
            "alias_at": [s.alias_at("churn", "champion", t) for t in ("2000-01-01T00:00:00Z", "9999")],
            "aliases_at": [
                s.aliases_at("churn", v, t) for v in (1, 2) for t in ("2000-01-01T00:00:00Z", "9999")
            ],
            "current moves": [
                {k: v for k, v in h.items() if k != "time"} for h in s.current_alias_moves("churn")
            ],
            "folder suffix": [s.highest_folder_suffix(f) for f in ("models/churn/1", "models/nope/1")],
            "event texts": [(e.seq, json.loads(text)) for e, _h, text in s.iter_event_texts(after=2)],
            "audit": [
                [(e.seq, e.action) for e, _h in s.audit(after=a, limit=n, **{**_FILTERS, **f})]
                for a, n, f in [
                    (0, 100, {"subjects": ["models:/churn/2"]}),
                    (0, 100, {"subject_prefixes": ["models:/churn/", "models:/churn@"]}),
                    (3, 2, {"subject_prefixes": ["models:/churn/"]}),
                    (0, 100, {"actor": ROOT}),
                    (0, 100, {"action": "alias.set"}),
                    (0, 100, {"action": "stage.*"}),
                    (0, 100, {"subject_prefixes": ["members:/"]}),
                    (0, 100, {"since": "9999"}),
                ]
            ],
            "segment": _segment(s.segment_for("models:/churn/2", "version.registered")),
            "no segment": s.segment_for("models:/churn/9", "version.registered"),
            "member segments": [_segment(g) for g in s.member_segments()],
            "verify record": (s.verify_record("k1"), s.verify_record("k2")),
        }

    assert shape(store) == shape(sql_store)
    # the verify pass's reading of the ledger is the ledger (hashes differ between backends by time)
    assert [(e, h) for e, h, _text in store.iter_event_texts()] == list(store.iter_events())
    assert chain_ok(store, actors).ok and chain_ok(sql_store, actors).ok
    for segment in (store.segment_for("models:/churn/2", "version.registered"), *store.member_segments()):
        assert segment is not None
        check_segment(segment, keyring(store))  # each proves its events with the keys alone


def _segment(segment: Any) -> Any:
    if segment is None:
        return None
    return [e.seq for e, _h in segment.events], segment.checkpoint.seq


_FILTERS = {
    "subjects": (),
    "subject_prefixes": (),
    "actor": None,
    "action": None,
    "since": None,
    "until": None,
}


# ---------------------------------------------------------------- no Scan on the hot path


def test_no_scan_is_issued(store: DynamoStore, actors: Actors) -> None:
    calls: list[str] = []
    store.client.meta.events.register("before-call.dynamodb.*", lambda model, **_: calls.append(model.name))
    signer = actors.alice.signer()
    store.create_model("fraud", "", {}, NOW)
    v = register(store, signer, "fraud")
    set_alias(store, signer, "fraud", "champion", 1)
    store.get_model("fraud")
    store.get_version("fraud", 1)
    store.get_version("fraud", alias="champion")
    store.get_version("fraud", alias="latest")
    store.get_version_by_key(v.key)
    store.list_versions("fraud", limit=10, before=None)
    list(store.iter_versions())
    list(store.iter_events())
    store.checkpoints()
    store.count_events(upto=3)
    store.version_states("fraud", [1])
    store.roster()
    store.policy()
    store.update_model("fraud", description="d", tags={"a": "b"}, actor=ALICE, signer=signer)
    store.list_models(prefix="fr", tags={"a": "b"}, limit=5, after=None, stage="validated")
    store.alias_history("fraud", "champion")
    store.alias_at("fraud", "champion", "9999")
    store.segment_for("models:/fraud/1", "version.registered")
    store.member_segments()
    for filters in (
        {"subjects": ["models:/fraud/1"]},
        {"subject_prefixes": ["models:/fraud/"]},
        {"actor": ALICE},
    ):
        store.audit(after=0, limit=10, **{**_FILTERS, **filters})
    store.audit(after=0, limit=10, **{**_FILTERS, "action": "stage.*"})
    for text in ("model = fraud and stage = validated", "metrics.auc > 0.5", "alias = champion"):
        store.search_versions(parse_query(text), limit=5, before=None)
    store.current_state()  # whole-registry reads too: by key and per model, never a Scan
    store.referenced_paths()
    assert {"TransactWriteItems", "Query", "GetItem", "BatchGetItem"} <= set(calls)  # the hook sees
    assert "Scan" not in calls


# ---------------------------------------------------------------- tokens


def test_tokens_equal_the_sql_stores(
    store: DynamoStore, sql_store: SqlMetadataStore, actors: Actors, tmp_path: Path
) -> None:
    stranger = Identity(tmp_path / "stranger.key", create=True)

    def shape(s: Any) -> Any:
        signer = actors.alice.signer()
        s.create_token("t1", ALICE, "d1" * 32, None, actor=ALICE, signer=signer, reason=None)
        s.create_token("t2", ROOT, "d2" * 32, "2999-01-01T00:00:00Z", actor=ALICE, signer=signer, reason="ci")
        s.create_token("t3", ALICE, "d3" * 32, None, actor=ALICE, signer=signer, reason=None)
        revoked = s.revoke_token("t3", actor=ALICE, signer=signer, reason="leaked")
        with pytest.raises(Conflict):
            s.revoke_token("t3", actor=ALICE, signer=signer, reason=None)
        with pytest.raises(NotFound):
            s.revoke_token("nope", actor=ALICE, signer=signer, reason=None)
        head = s.ledger_head()
        with pytest.raises(PermissionDenied):
            s.create_token("t4", ALICE, "d4" * 32, None, actor=ALICE, signer=stranger.signer(), reason=None)
        assert s.ledger_head() == head  # refused: nothing written
        holder = s.token_holder("d1" * 32)
        assert holder is not None and holder[1].members[ALICE].name == ALICE
        assert s.token_holder("d4" * 32) is None

        def plain(t: Any) -> Any:
            return (t.id, t.member, t.created_by, t.expires_at, t.revoked_at is not None)

        return {
            "all": [plain(t) for t in s.list_tokens(member=None)],
            "alice": [plain(t) for t in s.list_tokens(member=ALICE)],
            "holder": plain(holder[0]),
            "revoked": plain(revoked),
            "events": [(e.action, e.subject, dict(e.data), e.reason) for e, _h in s.iter_events(after=2)],
        }

    assert shape(store) == shape(sql_store)
    assert chain_ok(store, actors).ok


# ---------------------------------------------------------------- webhooks


def test_webhooks_equal_the_sql_stores(store: DynamoStore, sql_store: SqlMetadataStore) -> None:
    def shape(s: Any) -> Any:
        out: dict[str, Any] = {}
        for i, actions in enumerate([None, ("version.*",)]):
            hook = Webhook(f"w{i}", f"https://hooks.example/{i}", actions, f"2026-11-01T00:00:0{i}Z", ALICE)
            s.add_webhook(hook, f"secret-{i}")
        with pytest.raises(AlreadyExists):
            s.add_webhook(Webhook("w0", "https://x.example", None, "2026-11-01T00:00:00Z", ALICE), "s")
        now, until = "2026-11-01T01:00:00Z", "2026-11-01T01:05:00Z"
        first = s.claim_webhook(after="", now=now, until=until, claim="round-a")
        second = s.claim_webhook(after="", now=now, until=until, claim="round-b")  # w0 is held
        nothing = s.claim_webhook(after="w1", now=now, until=until, claim="round-c")
        delivery = WebhookDelivery("w0", 1, "registry.initialized", 1, now, status_code=500, error="boom")
        lost = s.webhook_progress(
            "w0", "round-b", last_seq=1, failures=0, next_attempt_at=None, delivery=None, held_until=None
        )
        kept = s.webhook_progress(
            "w0",
            "round-a",
            last_seq=0,
            failures=1,
            next_attempt_at="2026-11-01T01:01:00Z",
            delivery=delivery,
            held_until=None,
        )
        ok = WebhookDelivery("w0", 1, "registry.initialized", 2, "2026-11-01T01:02:00Z", status_code=200)
        later = s.claim_webhook(after="", now="2026-11-01T01:02:00Z", until=until, claim="round-d")
        s.webhook_progress(
            "w0", "round-d", last_seq=1, failures=0, next_attempt_at=None, delivery=ok, held_until=until
        )
        removed = s.remove_webhook("w1")
        with pytest.raises(Conflict):
            s.remove_webhook("w1")
        with pytest.raises(NotFound):
            s.remove_webhook("w9")
        with pytest.raises(NotFound):
            s.webhook_deliveries("w9", limit=5)
        out["claims"] = [
            None if c is None else (c.webhook.id, c.secret, c.claim) for c in (first, second, nothing, later)
        ]
        out["progress"] = (lost, kept)
        out["removed"] = removed.to_dict()
        out["listed"] = [w.to_dict() for w in s.list_webhooks(include_removed=False)]
        out["all"] = [w.to_dict() for w in s.list_webhooks(include_removed=True)]
        out["log"] = [d.to_dict() for d in s.webhook_deliveries("w0", limit=5)]
        out["last"] = [d.to_dict() for d in s.webhook_deliveries("w0", limit=1)]
        return out

    got = shape(store)
    assert got == shape(sql_store)
    assert got["claims"][0] == ("w0", "secret-0", "round-a") and got["progress"] == (False, True)


# ---------------------------------------------------------------- renames, archives, tags, state


def test_renames_archives_tags_and_state_equal_the_sql_stores(
    store: DynamoStore, sql_store: SqlMetadataStore, actors: Actors
) -> None:
    def gov(s: Any, model: str, version: int | None, decide: Callable[[GovContext], Any]) -> None:
        s.govern(model, version, decide, actor=ALICE, signer=actors.alice.signer())

    def shape(s: Any) -> Any:
        signer = actors.alice.signer()
        for folder in ("models/churn/1", "models/churn/2"):
            register(s, signer, "churn", folder=folder)
        register(s, signer, "other", folder="models/other/1")
        set_alias(s, signer, "churn", "champion", 2)
        gov(s, "churn", 1, lambda c: decide_version_tags(c, {"owner": "ana", "tier": "gold"}, reason=None))
        gov(s, "churn", 1, lambda c: decide_version_tags(c, {"tier": None}, reason="demoted"))
        gov(s, "other", None, lambda c: decide_archive(c, archive=True, reason="old"))
        with pytest.raises(AlreadyExists):
            gov(s, "churn", None, lambda c: decide_rename(c, "OTHER", reason="clash"))
        gov(s, "churn", None, lambda c: decide_rename(c, "attrition", reason="clearer"))
        gov(s, "attrition", None, lambda c: decide_rename(c, "Attrition", reason="case"))
        with pytest.raises(NotFound):
            s.get_model("churn")
        with pytest.raises(Conflict):
            register(s, signer, "churn", folder="models/churn/3")
        with pytest.raises(Conflict):
            s.create_model("CHURN", "", {}, NOW)
        register(s, signer, "Attrition", folder="models/attrition/3")
        state = s.current_state()
        replayed = replay(e for e, _h in s.iter_events())
        for part in ("versions", "aliases", "policy", "tags"):
            assert getattr(state, part) == getattr(replayed, part), part
        assert set(state.archived) == set(replayed.archived) == {"other"}
        v1 = s.get_version("attrition", 1)
        return {
            "model": {k: v for k, v in s.get_model("ATTRITION").to_dict().items() if k != "created_at"},
            "v1": (v1.model, v1.version, dict(v1.tags), v1.aliases),
            "champion": s.get_version("Attrition", alias="champion").version,
            "renamed": s.renamed_models(),
            "states": sorted((m, v, st.stage) for (m, v), st in state.versions.items()),
            "aliases": state.aliases,
            "tags": state.tags,
            "listed": [m.name for m in s.list_models(prefix=None, tags={}, limit=9, after=None)],
            "all": [
                m.name
                for m in s.list_models(prefix=None, tags={}, limit=9, after=None, include_archived=True)
            ],
            "paths": s.referenced_paths()[0],
        }

    got = shape(store)
    assert got == shape(sql_store)
    assert got["v1"] == ("Attrition", 1, {"owner": "ana"}, ())
    assert chain_ok(store, actors).ok


def test_rewrite_state_repairs_edited_state_items(store: DynamoStore, actors: Actors) -> None:
    signer = actors.alice.signer()
    register(store, signer, "fraud")
    register(store, signer, "fraud")
    set_alias(store, signer, "fraud", "champion", 2)
    replayed = replay(e for e, _h in store.iter_events())
    mid = store.get(store.state_table, "N#fraud", "MODEL")["id"]  # type: ignore[index]
    # someone with table access promotes version 1 and drops the alias
    store.client.update_item(
        TableName=store.state_table,
        Key=store.item({"pk": f"M#{mid}", "sk": "T#0000000001"}),
        UpdateExpression="SET stage = :s, approved_by = :a",
        ExpressionAttributeValues={":s": store.value("deployed"), ":a": store.value("mallory")},
    )
    store.client.delete_item(
        TableName=store.state_table, Key=store.item({"pk": f"M#{mid}", "sk": "A#champion"})
    )
    broken = store.current_state()
    assert broken.versions[("fraud", 1)].stage == "deployed" and ("fraud", "champion") not in broken.aliases
    store.rewrite_state(replayed)
    repaired = store.current_state()
    assert repaired.versions == replayed.versions and repaired.aliases == replayed.aliases
    assert store.version_state("fraud", 1).approved_by is None


# ---------------------------------------------------------------- data sets


def test_datasets_equal_the_sql_stores(
    store: DynamoStore, sql_store: SqlMetadataStore, actors: Actors
) -> None:
    def add(
        s: Any, name: str, digest: str, path: str, steps: tuple[ProcessingStep, ...] = (), signed: bool = True
    ) -> Any:
        return s.create_dataset_version(
            name,
            digest=digest,
            path=path,
            file_sha256=digest[-64:],
            size_bytes=1234,
            row_count=10,
            schema=(ColumnSpec("age", "integer"), ColumnSpec("name", "string", nullable=True)),
            stats={"age": {"min": 1, "max": 9}},
            source=DatasetSource(uri="s3://raw/x.csv", kind="file"),
            steps=steps,
            created_by=ALICE,
            now=NOW,
            signer=actors.alice.signer() if signed else None,
        )

    def shape(s: Any) -> Any:
        raw, new1 = add(s, "raw", "sha256:" + "1" * 64, "data/1.parquet")
        again, new2 = add(s, "raw", "sha256:" + "1" * 64, "data/1.parquet")
        raw2, _ = add(s, "raw", "sha256:" + "2" * 64, "data/2.parquet", signed=False)
        step = ProcessingStep(
            "clean", "filter", {"min_age": 18}, ("age",), ("datasets:/raw/1", "datasets:/raw/2")
        )
        clean, _ = add(s, "clean", "sha256:" + "3" * 64, "data/3.parquet", steps=(step,))
        spare, _ = add(s, "spare", "sha256:" + "4" * 64, "data/1.parquet")
        with pytest.raises(NotFound):
            add(
                s,
                "bad",
                "sha256:" + "5" * 64,
                "data/5.parquet",
                steps=(ProcessingStep("x", inputs=("datasets:/nope/1",)),),
            )
        v = s.create_version(
            "churn",
            folder="models/churn/1",
            digest="sha256:" + "ab" * 32,
            flavor="sklearn",
            files=_files(),
            manifest={"flavor": "sklearn"},
            created_by=ALICE,
            now=NOW,
            create_model=True,
            walk=lambda ctx: decide_registration(
                ctx,
                {"flavor": "sklearn"},
                {
                    "digest": "sha256:" + "ab" * 32,
                    "folder": "models/churn/1",
                    "flavor": "sklearn",
                    "files": [],
                },
            ),
            signer=actors.alice.signer(),
            links=[("datasets:/clean/1", "train"), ("datasets:/raw/2", "test")],
        )
        removed: list[str] = []
        kept = s.discard_dataset_version(clean.key, removed.append)  # used by a model version
        gone = s.discard_dataset_version(spare.key, removed.append)  # its file is raw/1's too
        folders, paths = s.referenced_paths()

        def dv(d: Any) -> Any:
            return {k: x for k, x in d.to_dict().items() if k not in ("created_at", "key")}

        return {
            "new": (new1, new2, again.version == raw.version),
            "clean": dv(s.get_dataset_version("clean", None)),
            "raw": [dv(d) for d in s.list_dataset_versions("raw", limit=5, before=None)],
            "raw before 2": [d.version for d in s.list_dataset_versions("raw", limit=5, before=2)],
            "found": dv(s.find_dataset_version("raw", "sha256:" + "2" * 64)),
            "missing": s.find_dataset_version("raw", "sha256:" + "9" * 64),
            "by key": dv(s.get_dataset_version_by_key(raw2.key)),
            "listed": s.list_datasets(prefix=None, limit=10, after=None),
            "prefix": [d["name"] for d in s.list_datasets(prefix="r", limit=10, after=None)],
            "after": [d["name"] for d in s.list_datasets(prefix=None, limit=1, after="clean")],
            "files": [(u, p, n) for u, p, _h, n in s.iter_dataset_files(batch=1)],
            "model": [(r, d.uri) for r, d in s.model_datasets(v.key)],
            "users": s.dataset_users(clean.key),
            "children": [s.get_dataset_version_by_key(k).uri for k in s.dataset_children(raw.key)],
            "discard": (kept, gone, removed),
            "paths": (folders, paths),
            "events": [(e.action, e.subject) for e, _h in s.iter_events(after=2)],
        }

    got = shape(store)
    assert got == shape(sql_store)
    assert got["model"] == [("test", "datasets:/raw/2"), ("train", "datasets:/clean/1")]
    assert chain_ok(store, actors).ok
    with pytest.raises(NotFound):
        store.list_dataset_versions("spare", limit=5, before=None)  # its only version was discarded


# ---------------------------------------------------------------- search


def test_search_equals_the_sql_stores(
    store: DynamoStore, sql_store: SqlMetadataStore, actors: Actors
) -> None:
    queries = [
        "",
        "model = churn",
        "model = CHURN and version >= 2",
        "metrics.auc > 0.8",
        "metrics.auc <= 0.8 and model != churn",
        "stage = validated",
        "registered_by = alice@example.com and version = 1",
        "alias = champion",
        "tags.owner = ana",
        "model != FRAUD",
        "created >= 2026-01-01",
        "metrics.missing > 0",
    ]

    def shape(s: Any) -> Any:
        signer = actors.alice.signer()
        for i, (model, auc) in enumerate([("churn", 0.9), ("fraud", 0.7), ("churn", 0.75), ("fraud", 0.95)]):
            register(
                s,
                signer,
                model,
                folder=f"models/{model}/{i}",
                manifest={"flavor": "sklearn", "metrics": {"auc": auc}},
            )
        set_alias(s, signer, "fraud", "champion", 2)
        s.govern(
            "churn",
            1,
            lambda c: decide_version_tags(c, {"owner": "ana"}, reason=None),
            actor=ALICE,
            signer=signer,
        )
        out = {}
        for text in queries:
            found = s.search_versions(parse_query(text), limit=10, before=None)
            out[text] = [(v.model, v.version, v.aliases) for v in found]
        newest = s.search_versions(parse_query(""), limit=2, before=None)
        out["page 2"] = [
            (v.model, v.version) for v in s.search_versions(parse_query(""), limit=2, before=newest[-1].key)
        ]
        return out

    got = shape(store)
    assert got == shape(sql_store)
    assert got["metrics.auc > 0.8"] == [("fraud", 2, ("champion",)), ("churn", 1, ())]
    assert got["alias = champion"] == [("fraud", 2, ("champion",))]
