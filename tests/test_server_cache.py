"""The server's read cache, served for real over SQLite, PostgreSQL and DynamoDB: a repeated read is
answered from memory only while the database shows no commit, so an alias moved, a token
revoked or a role withdrawn (by anyone, through any connection) is seen by the very next
request, and a token that expires stops at its expiry."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.helpers import serve_app

from modelledger import Registry, create_identity
from modelledger.server import API_PREFIX, ServerOptions, create_app
from modelledger.server.cache import CACHE_HEADER

NO_STAMP = pytest.mark.dynamodb_xfail(
    "the cache keeps an answer only under a read stamp, and the DynamoDB store's read_stamp is "
    "None (not every write moves one item yet): every read goes to the tables, none is a hit"
)

ALIAS = f"{API_PREFIX}/models/credit-risk/versions/champion"


def _get(url: str, token: str, path: str = ALIAS) -> httpx.Response:
    return httpx.get(url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _hit(registry: Registry, url: str, token: str, path: str = ALIAS) -> httpx.Response:
    """Repeat ``path`` until an answer comes from the cache. The stamp is the cluster's: a test
    in another process committing at that moment turns a would-be hit into a miss, never into
    a stale answer, so a few tries may be needed."""
    if registry.read_stamp() is None:  # the store cannot tell: nothing is ever kept, no use waiting
        pytest.fail("the registry's store gives no read stamp, so the server keeps no answer")
    deadline = time.monotonic() + 20
    while True:
        response = _get(url, token, path)
        assert response.status_code == 200, response.text
        if response.headers.get(CACHE_HEADER) == "hit":
            return response
        assert time.monotonic() < deadline, "no answer came from the cache"


@pytest.fixture
def served(
    db_url: str, tmp_path: Path, fitted_pipeline: Any, credit_data: Any
) -> Iterator[tuple[str, Registry]]:
    X, _y = credit_data
    art = str(tmp_path / "artifacts")
    alice = Registry.open(db_url, artifacts=art, actor="alice@example.com")
    for _ in range(2):
        alice.register("credit-risk", fitted_pipeline, sample_input=X.head(), capture=False)
    alice.set_alias("credit-risk", "champion", 1)
    gateway_key = tmp_path / "gateway.key"
    _path, _kid, pem = create_identity(f"gw-{tmp_path.name}@example.com", gateway_key)
    alice.enrol(f"gw-{tmp_path.name}@example.com", pem, roles=["gateway"])
    server_registry = Registry.open(db_url, artifacts=art, identity=gateway_key)
    with serve_app(create_app(server_registry)) as url:
        yield url, alice
    server_registry.close()
    alice.close()


@NO_STAMP
def test_a_repeated_read_comes_from_memory_until_an_alias_moves(served: tuple[str, Registry]) -> None:
    url, alice = served
    token, _ = alice.create_token("alice@example.com")
    first = _get(url, token)
    assert first.json()["version"] == 1
    kept = _hit(alice, url, token)
    assert kept.json() == first.json()
    assert kept.headers["content-type"] == first.headers["content-type"]

    alice.set_alias("credit-risk", "champion", 2)  # another connection: not through this server
    after = _get(url, token)
    assert after.headers[CACHE_HEADER] == "miss"
    assert after.json()["version"] == 2
    assert _hit(alice, url, token).json()["version"] == 2


@NO_STAMP
def test_a_revoked_token_is_refused_at_once(served: tuple[str, Registry]) -> None:
    url, alice = served
    token, record = alice.create_token("alice@example.com")
    _hit(alice, url, token)
    alice.revoke_token(record.id, reason="left the team")
    refused = _get(url, token)
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"] == "InvalidToken"


@NO_STAMP
def test_an_expiring_token_stops_at_its_expiry(served: tuple[str, Registry]) -> None:
    url, alice = served
    token, record = alice.create_token("alice@example.com", expires=timedelta(seconds=3))
    _hit(alice, url, token)
    assert record.expires_at is not None
    time.sleep(3.2)
    refused = _get(url, token)
    assert refused.status_code == 401, refused.text
    assert "expired" in refused.json()["message"]


@NO_STAMP
def test_a_withdrawn_role_is_seen_by_the_next_request(served: tuple[str, Registry], tmp_path: Path) -> None:
    url, alice = served
    _path, _kid, pem = create_identity("erin@example.com", tmp_path / "erin.key")
    alice.enrol("erin@example.com", pem, roles=["viewer"], models=["credit-*"])
    token, _ = alice.create_token("erin@example.com")
    _hit(alice, url, token)
    alice.set_roles("erin@example.com", ["viewer"], models=["fraud-*"])
    refused = _get(url, token)
    assert refused.status_code == 403, refused.text


@NO_STAMP
def test_each_token_has_its_own_answers(served: tuple[str, Registry], tmp_path: Path) -> None:
    url, alice = served
    admin, _ = alice.create_token("alice@example.com")
    _path, _kid, pem = create_identity("finn@example.com", tmp_path / "finn.key")
    alice.enrol("finn@example.com", pem, roles=["viewer"], models=["fraud-*"])
    outsider, _ = alice.create_token("finn@example.com")
    _hit(alice, url, admin)
    assert _get(url, outsider).status_code == 403


@NO_STAMP
def test_errors_and_other_methods_are_never_kept(served: tuple[str, Registry]) -> None:
    url, alice = served
    token, _ = alice.create_token("alice@example.com")
    missing = f"{API_PREFIX}/models/credit-risk/versions/99"
    for _ in range(3):
        response = _get(url, token, missing)
        assert response.status_code == 404
        assert response.headers[CACHE_HEADER] == "miss"
    _hit(alice, url, token)
    head = httpx.head(url + ALIAS, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert CACHE_HEADER not in head.headers


def test_a_server_told_to_keep_nothing_keeps_nothing(served: tuple[str, Registry], db_url: str) -> None:
    _url, alice = served
    token, _ = alice.create_token("alice@example.com")
    with serve_app(create_app(alice, options=ServerOptions(read_cache=0))) as url:
        for _ in range(3):
            response = _get(url, token)
            assert response.status_code == 200, response.text
            assert CACHE_HEADER not in response.headers
