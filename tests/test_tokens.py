"""API tokens: made and revoked by an admin as ledger events, kept only as a SHA-256, resolved to
the member they stand for; the ``tokens`` commands."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelledger import (
    Conflict,
    InvalidInput,
    InvalidToken,
    NotFound,
    PermissionDenied,
    Registry,
    create_identity,
)
from modelledger.cli import main


def _viewer(registry: Registry, tmp_path: Path, name: str = "dana@example.com") -> Path:
    key = tmp_path / f"{name}.key"
    _path, _kid, pem = create_identity(name, key)
    registry.enrol(name, pem, roles=["viewer"])
    return key


def test_a_token_stands_for_its_member_until_revoked(registry: Registry, tmp_path: Path) -> None:
    _viewer(registry, tmp_path)
    token, record = registry.create_token("dana@example.com", expires="30d", reason="dashboards")
    assert token.startswith("mlt_") and len(token) == 47
    assert record.member == "dana@example.com" and record.created_by == "alice@example.com"
    assert record.expires_at is not None and record.expires_at > record.created_at
    assert registry.authenticate_token(token).name == "dana@example.com"
    assert registry.authenticate_token(token).roles == ("viewer",)
    assert registry.list_tokens(member="dana@example.com") == [record]
    revoked = registry.revoke_token(record.id, reason="rotation")
    assert revoked.revoked_at is not None
    with pytest.raises(InvalidToken, match="revoked"):
        registry.authenticate_token(token)
    with pytest.raises(Conflict, match="revoked already"):
        registry.revoke_token(record.id)
    with pytest.raises(NotFound):
        registry.revoke_token("0123456789abcdef")
    with pytest.raises(InvalidInput, match="token id"):
        registry.revoke_token("nope")


def test_the_ledger_records_tokens_but_never_their_secret_or_hash(registry: Registry, db_url: str) -> None:
    token, record = registry.create_token("bob@example.com")
    registry.revoke_token(record.id)
    digest = hashlib.sha256(token.encode()).hexdigest()
    events = [e for e in registry.audit(action="token.*", limit=1000)]
    assert [(e.action, e.actor, e.subject, e.data) for e in events] == [
        (
            "token.created",
            "alice@example.com",
            "members:/bob@example.com",
            {"member": "bob@example.com", "token_id": record.id, "expires_at": None},
        ),
        (
            "token.revoked",
            "alice@example.com",
            "members:/bob@example.com",
            {"member": "bob@example.com", "token_id": record.id},
        ),
    ]
    everything = json.dumps([e.to_dict() for e in registry.audit(limit=1000)])
    assert token not in everything and digest not in everything
    assert registry.verify().ok
    # the table holds the digest alone
    if db_url.startswith("dynamodb:"):
        from tests.helpers import DynamoAttacker

        items = DynamoAttacker(db_url).everything()
        assert token not in repr(items)
        assert [i["pk"] for i in items if i["pk"].startswith("TOK#")] == [f"TOK#{digest}"]
        return
    import sqlalchemy as sa

    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT token_hash FROM api_tokens")).all()
    engine.dispose()
    assert rows == [(digest,)]


def test_only_an_admin_makes_tokens_and_a_refusal_stores_nothing(
    registry: Registry, db_url: str, tmp_path: Path
) -> None:
    key = _viewer(registry, tmp_path)
    dana = Registry.open(db_url, artifacts=registry.artifact_root, key=key)
    with pytest.raises(PermissionDenied, match="admin"):
        dana.create_token("dana@example.com")
    _token, record = registry.create_token("dana@example.com")
    with pytest.raises(PermissionDenied, match="admin"):
        dana.revoke_token(record.id)
    assert registry.list_tokens() == [record]
    dana.close()


def test_tokens_that_authenticate_no_one(registry: Registry, tmp_path: Path) -> None:
    for bad in ("", "mlt_short", "Bearer mlt_" + "a" * 43, "x" * 47):
        with pytest.raises(InvalidToken, match="malformed"):
            registry.authenticate_token(bad)
    with pytest.raises(InvalidToken, match="unknown"):
        registry.authenticate_token("mlt_" + "a" * 43)
    with pytest.raises(InvalidInput, match="positive"):
        registry.create_token("bob@example.com", expires="0")
    with pytest.raises(InvalidInput, match="expires"):
        registry.create_token("bob@example.com", expires="soon")
    with pytest.raises(NotFound, match="member"):
        registry.create_token("nobody@example.com")
    _viewer(registry, tmp_path)
    token, _ = registry.create_token("dana@example.com")
    (key,) = next(m for m in registry.members() if m.name == "dana@example.com").keys
    registry.revoke_key("dana@example.com", key.key_id, reason="left")
    with pytest.raises(InvalidToken, match="no key that is not revoked"):
        registry.authenticate_token(token)
    with pytest.raises(Conflict, match="every key"):
        registry.create_token("dana@example.com")


def test_the_tokens_commands(registry: Registry, db_url: str, tmp_path: Path) -> None:
    where = ["--registry", db_url, "--artifacts", registry.artifact_root]
    runner = CliRunner()
    made = runner.invoke(
        main, ["tokens", "create", "--member", "bob@example.com", "--expires", "7d", "--json", *where]
    )
    assert made.exit_code == 0, made.output
    doc = json.loads(made.stdout)
    assert registry.authenticate_token(doc["token"]).name == "bob@example.com"
    plain = runner.invoke(main, ["tokens", "create", "--member", "bob@example.com", *where])
    assert plain.exit_code == 0, plain.output
    assert plain.stdout.strip().startswith("mlt_") and "shown only this once" in plain.stderr
    listed = runner.invoke(main, ["tokens", "list", "--json", *where])
    assert [t["id"] for t in json.loads(listed.stdout)] == [t.id for t in registry.list_tokens()]
    assert "token" not in json.loads(listed.stdout)[0]
    table = runner.invoke(main, ["tokens", "list", *where])
    assert doc["id"] in table.stdout and doc["token"] not in table.stdout
    revoked = runner.invoke(main, ["tokens", "revoke", doc["id"], "--reason", "done", "--json", *where])
    assert revoked.exit_code == 0, revoked.output
    assert json.loads(revoked.stdout)["revoked_at"]
    # a member who is not an admin is refused before anything is written
    key = _viewer(registry, tmp_path)
    before = registry.list_tokens()
    refused = runner.invoke(
        main, ["tokens", "create", "--member", "dana@example.com", *where], env={"MODELLEDGER_KEY": str(key)}
    )
    assert refused.exit_code == 1 and "only an admin manages tokens" in refused.stderr
    assert registry.list_tokens() == before


def test_the_command_line_does_not_load_the_server() -> None:
    code = (
        "import sys, modelledger.cli; "
        "print(','.join(m for m in ('fastapi', 'uvicorn', 'starlette', 'httpx', 'jwt', 'prometheus_client', "
        "'modelledger._remote') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_server_loads_no_client_and_no_jwt_library_unless_it_needs_them() -> None:
    # a server with API tokens only (no OIDC) starts without the HTTP client or PyJWT: start-up
    # time is imports, and these are a tenth of it
    code = (
        "import sys, modelledger.server; "
        "print(','.join(m for m in ('httpx', 'jwt', 'modelledger._remote') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
