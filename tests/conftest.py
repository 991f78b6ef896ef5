"""Shared fixtures: real SQLite, real PostgreSQL, real S3 and DynamoDB protocol servers.

Every test that takes ``registry`` runs three times: on SQLite, on the PostgreSQL server at
127.0.0.1:5432 and on DynamoDB (moto's server on loopback, fresh tables per test). Under
``CI=true`` a missing PostgreSQL is a failure, not a skip.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelledger import Registry

PG_ADMIN_URL = os.environ.get("MODELLEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"


START_FIRST = (
    "tests/test_concurrency.py",
    "tests/test_reproduce.py",
    "tests/test_mlflow_import.py",
    "tests/test_flavor_torch.py",
    "tests/test_flavor_frameworks.py",
    "tests/test_large_artifacts.py",
    "tests/test_server_roles.py",
    "tests/test_folder_allocation.py",
    "tests/test_server_schema.py",
    "tests/torture/test_crash.py",
    "tests/test_flavor_onnx.py",
    "tests/test_refresh.py",
)
"""The modules with the longest tests (``--durations`` of a whole run), in that order, run
first: ``make test`` runs two workers that steal work from each other (``--dist worksteal``),
and a long test started last would leave one worker alone at the end. A module missing here
only runs in its usual place."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        module = item.nodeid.split("::", 1)[0]
        return START_FIRST.index(module) if module in START_FIRST else len(START_FIRST)

    items.sort(key=rank)  # stable: each module's tests keep their order, modules stay whole


def _pg_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    if not _pg_reachable():
        msg = "PostgreSQL is not reachable on 127.0.0.1:5432"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    import sqlalchemy as sa

    name = f"modelledger_test_{uuid.uuid4().hex[:12]}"
    admin_url = PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _pg_reset(url: str) -> None:
    """Empty every table so each test starts from a clean registry."""
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        tables = [
            r[0]
            for r in conn.exec_driver_sql(
                "SELECT tablename FROM pg_tables WHERE schemaname='public' "
                "AND tablename NOT IN ('alembic_version')"
            )
        ]
        # The ledger refuses TRUNCATE through a trigger; replica mode skips triggers (superuser only).
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        if tables:
            conn.exec_driver_sql(
                "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"
            )
        conn.exec_driver_sql("INSERT INTO ledger_head (id, seq, hash) VALUES (1, 0, '" + "0" * 64 + "')")
    engine.dispose()


ROOT = "root@example.com"
CAST = (
    "alice@example.com",
    "alice@bank.example",
    "bob@example.com",
    "bob@bank.example",
    "carol@example.com",
    "carol@bank.example",
    "cli@example.com",
    "etl@example.com",
    "ops@example.com",
    "a@example.com",
    "worker@example.com",
    "worker",
    "officer@example.com",
    "svc-training@bank.example",
)
"""The people the tests act as: enrolled by ``ROOT`` in every ``db_url`` registry, as admins
who may also serve, so that tests of governance logic need no enrolment of their own (tests of
identity itself make their own registries and members)."""


@pytest.fixture(scope="session", autouse=True)
def _identities(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test signs with keys made for this session, never with the user's own."""
    folder = tmp_path_factory.mktemp("identities")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODELLEDGER_IDENTITIES", str(folder))
        mp.delenv("MODELLEDGER_KEY", raising=False)
        mp.delenv("MODELLEDGER_IDENTITY", raising=False)
        mp.setenv("MODELLEDGER_USER", "alice@example.com")  # not the machine's git user
        yield folder


def enrol_cast(url: str, artifacts: str, names: tuple[str, ...] = CAST) -> None:
    """Make ``ROOT`` the registry's root (initialising it) and enrol ``names`` in one write."""
    from modelledger._lifecycle import EventDraft
    from modelledger._signing import Identity, identity_path

    root = Registry.open(url, artifacts=artifacts, actor=ROOT)
    root.init()
    drafts = []
    for name in names:
        pem = Identity(identity_path(name), create=True).public_pem()
        from modelledger._keys import key_id

        data = {
            "member": name,
            "key_id": key_id(pem),
            "public_key": pem.decode(),
            "roles": ["admin", "serving"],
            "models": ["*"],
        }
        drafts.append(EventDraft("member.enrolled", f"members:/{name}", data))
    root._meta.govern(
        "",
        None,
        lambda _ctx: drafts,
        actor=ROOT,
        signer=root._signer(),
        needs_state=False,
        needs_policy=False,
    )
    root.close()


@pytest.fixture(scope="session")
def pg_url(pg_database: str) -> str:
    """The session database with the schema migrated once."""
    Registry.open(pg_database, artifacts="memory://init", actor=ROOT).init()
    return pg_database


DYNAMODB = "dynamodb"
"""The DynamoDB param of ``db_url`` and ``api``. A test whose subject is SQL itself (migrations,
query plans, connection handling) is marked ``@pytest.mark.sql_only("why")``: its DynamoDB leg
is skipped with that reason, which ``-ra`` prints, never silently. A test of a feature the
DynamoDB store does not have yet is marked ``@pytest.mark.dynamodb_xfail("why")``. A test that
tampers with the database edits DynamoDB items too (tests/helpers.py ``ledger_editor``,
``DynamoAttacker``)."""


def _dynamodb_marks(request: pytest.FixtureRequest) -> None:
    """The ``sql_only`` test's DynamoDB leg is skipped; a ``dynamodb_xfail`` test's leg is
    expected to fail (strictly: the day it passes, the mark must go)."""
    marker = request.node.get_closest_marker("sql_only")
    if marker is not None:
        if not marker.args:
            raise TypeError(f"{request.node.nodeid}: sql_only needs its reason")
        pytest.skip(f"SQL only: {marker.args[0]}")
    marker = request.node.get_closest_marker("dynamodb_xfail")
    if marker is not None:
        if not marker.args:
            raise TypeError(f"{request.node.nodeid}: dynamodb_xfail needs its reason")
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"DynamoDB: {marker.args[0]}"))


def dynamodb_url(server: str) -> str:
    """A new DynamoDB registry's URL: its own table prefix on the session's server."""
    return f"dynamodb://t{uuid.uuid4().hex[:12]}-?region=us-east-1&endpoint_url={server}"


def _aws_test_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(params=["sqlite", "postgresql", DYNAMODB])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated metadata database (SQLite file, PostgreSQL, or DynamoDB tables under a fresh
    prefix) whose root is ``ROOT`` and whose members are ``CAST``."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    elif request.param == DYNAMODB:
        _dynamodb_marks(request)
        _aws_test_credentials(request.getfixturevalue("monkeypatch"))
        url = dynamodb_url(request.getfixturevalue("dynamodb_server"))
    else:
        url = str(request.getfixturevalue("pg_url"))
        _pg_reset(url)
    enrol_cast(url, str(tmp_path / "art"))
    return url


@pytest.fixture
def registry(db_url: str, tmp_path: Path) -> Iterator[Registry]:
    reg = Registry.open(db_url, artifacts=str(tmp_path / "artifacts"), actor="alice@example.com")
    yield reg
    reg.close()


@pytest.fixture
def credit_data() -> tuple[pd.DataFrame, pd.Series]:
    """A small, realistic credit-application data set (deterministic)."""
    rng = np.random.default_rng(7)
    n = 400
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 75, n),
            "income": rng.normal(52_000, 15_000, n).round(2),
            "loan_amount": rng.normal(12_000, 6_000, n).clip(500).round(2),
            "employment": rng.choice(["salaried", "self-employed", "unemployed"], n),
        }
    )
    score = frame.income / 10_000 - frame.loan_amount / 4_000 + (frame.employment == "salaried") * 1.5
    target = (score + rng.normal(0, 1, n) > 3).astype(int)
    return frame, target


@pytest.fixture
def fitted_pipeline(credit_data: tuple[pd.DataFrame, pd.Series]) -> object:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y = credit_data
    pre = ColumnTransformer(
        [
            ("num", StandardScaler(), ["age", "income", "loan_amount"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["employment"]),
        ]
    )
    return Pipeline([("prep", pre), ("clf", LogisticRegression(C=0.5, max_iter=500))]).fit(X, y)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3-protocol server (moto in server mode) on loopback."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dynamodb_server() -> Iterator[str]:
    """A DynamoDB-protocol server (moto's, on loopback; it serves S3 too) in a process of its
    own, handling one request at a time (tests/dynamodb_server.py says why, and what it changes
    in moto). Client threads and processes still race for the ledger head exactly as they would
    against DynamoDB."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("dynamodb_server.py"))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("port "):
            proc.wait(timeout=30)
            pytest.fail(f"the DynamoDB test server did not start (exit {proc.returncode}): {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        if proc.stdin is not None:
            proc.stdin.close()  # the server exits when its stdin closes
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
def s3_artifacts(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict[str, object]]:
    """A fresh bucket; returns (artifact URL, fsspec storage options)."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"ml-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    options: dict[str, object] = {"endpoint_url": s3_server, "key": "testing", "secret": "testing"}
    return f"s3://{bucket}/registry", options


@pytest.fixture(params=["file", "memory", "s3"])
def artifact_backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, object]]:
    """Artifact root URL and storage options, over a local folder, memory and S3."""
    if request.param == "file":
        return (tmp_path / "store").as_uri(), {}
    if request.param == "memory":
        return f"memory://ml-{uuid.uuid4().hex[:10]}", {}
    return request.getfixturevalue("s3_artifacts")  # type: ignore[no-any-return]


GATEWAY = "gateway@example.com"


@dataclass
class Api:
    """One registry as a test reaches it: ``open(actor)`` gives that member's registry, on the
    stores themselves (``sqlite``, ``postgresql``, ``dynamodb``) or through a live server
    (``remote``: a server over PostgreSQL and the S3 protocol server, the member holding a token
    and their key)."""

    kind: str
    open: Callable[[str], Registry]
    local: Callable[[str], Registry]  # the same registry on its stores, to check what was written
    url: str  # its database, for tests that tamper with it


@pytest.fixture(params=["sqlite", "postgresql", DYNAMODB, "remote"])
def api(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    opened: list[Registry] = []
    if request.param == "sqlite":
        url, artifacts, storage = f"sqlite:///{tmp_path / 'registry.db'}", str(tmp_path / "artifacts"), {}
    elif request.param == DYNAMODB:
        _dynamodb_marks(request)
        _aws_test_credentials(monkeypatch)
        url = dynamodb_url(request.getfixturevalue("dynamodb_server"))
        artifacts, storage = str(tmp_path / "artifacts"), {}
    else:
        url = str(request.getfixturevalue("pg_url"))
        _pg_reset(url)
        if request.param == "remote":
            artifacts, storage = request.getfixturevalue("s3_artifacts")
        else:
            artifacts, storage = str(tmp_path / "artifacts"), {}
    enrol_cast(url, artifacts)

    def local(actor: str) -> Registry:
        reg = Registry.open(url, artifacts=artifacts, storage_options=storage, actor=actor)
        opened.append(reg)
        return reg

    if request.param != "remote":
        yield Api(request.param, local, local, url)
    else:
        from tests.test_server import running

        from modelledger._remote import RemoteRegistry
        from modelledger._signing import create_identity

        root = local(ROOT)
        gateway_key = tmp_path / "gateway.key"
        _path, _kid, pem = create_identity(GATEWAY, gateway_key)
        root.enrol(GATEWAY, pem, roles=["gateway"])
        monkeypatch.setenv("MODELLEDGER_CACHE", str(tmp_path / "cache"))
        server = Registry.open(url, artifacts=artifacts, storage_options=storage, identity=gateway_key)
        with running(server) as base:

            def remote(actor: str) -> Registry:
                reg = RemoteRegistry(base, token=root.create_token(actor)[0])
                opened.append(reg)
                return reg

            yield Api("remote", remote, local, url)
            for reg in opened:
                reg.close()
            opened.clear()
        server.close()
    for reg in opened:
        reg.close()
