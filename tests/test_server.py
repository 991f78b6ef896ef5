"""The read API, served for real: uvicorn on a loopback port over the ``db_url`` registry, httpx as
the client. Every endpoint answers what the Python API answers; tokens decide who calls, roles
what they see; errors keep their library class and message."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from tests.helpers import free_port, serve_app

from modelledger import Registry, create_identity
from modelledger.cli import main
from modelledger.server import API_PREFIX, create_app

_free_port = free_port


@contextmanager
def running(registry: Registry) -> Iterator[str]:
    """The app over ``registry``, served by uvicorn in a thread on a free loopback port."""
    with serve_app(create_app(registry)) as url:
        yield url


@dataclass
class Served:
    url: str
    alice: Registry  # the registry as the Python API sees it (an admin)
    db_url: str
    artifacts: str
    admin_token: str
    viewer_token: str  # dana: viewer of credit-* only
    prediction_id: str
    tmp: Path

    def get(self, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.get(self.url + path, headers=headers, timeout=60, **kwargs)

    def api(self, path: str, token: str | None = None, **kwargs: Any) -> Any:
        response = self.get(API_PREFIX + path, token or self.admin_token, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()


def _enrol(registry: Registry, tmp: Path, name: str, roles: list[str], models: list[str]) -> Path:
    key = tmp / f"{name}.key"
    _path, _kid, pem = create_identity(name, key)
    registry.enrol(name, pem, roles=roles, models=models)
    return key


@pytest.fixture
def served(db_url: str, tmp_path: Path, credit_data: Any, fitted_pipeline: Any) -> Iterator[Served]:
    art = str(tmp_path / "artifacts")
    alice = Registry.open(db_url, artifacts=art, actor="alice@example.com")
    bob = Registry.open(db_url, artifacts=art, actor="bob@example.com")
    X, y = credit_data
    train = alice.datasets.register("applications-train", X.assign(defaulted=y).iloc[:300])
    first = alice.register(
        "credit-risk",
        fitted_pipeline,
        sample_input=X.head(),
        metrics={"auc": 0.81},
        datasets={"train": train},
    )
    second = alice.register(
        "credit-risk", fitted_pipeline, sample_input=X.head(), metrics={"auc": 0.86}, params={"C": 2.0}
    )
    bob.approve(first.uri, reason="reviewed the holdout report")
    bob.deploy(first.uri, reason="release 1")
    alice.set_alias("credit-risk", "champion", second.version)
    alice.register("fraud", lambda rows: rows, capture=False)
    with alice.load("models:/credit-risk@production", capture=True, flush_rows=5) as predictor:
        prediction_id = predictor.predict(X.head(5)).receipts[2].prediction_id
    _enrol(alice, tmp_path, "dana@example.com", ["viewer"], ["credit-*"])
    admin_token, _ = alice.create_token("alice@example.com")
    viewer_token, _ = alice.create_token("dana@example.com")
    # the server holds a registry of its own, as `modelledger server` does, with a gateway key
    gateway_key = tmp_path / "gateway.key"
    _path, _kid, gateway_pem = create_identity("gateway@example.com", gateway_key)
    alice.enrol("gateway@example.com", gateway_pem, roles=["gateway"])
    server_registry = Registry.open(db_url, artifacts=art, identity=gateway_key)
    with running(server_registry) as url:
        yield Served(url, alice, db_url, art, admin_token, viewer_token, prediction_id, tmp_path)
    server_registry.close()
    alice.close()
    bob.close()


def test_every_endpoint_answers_what_the_python_api_answers(served: Served) -> None:
    reg = served.alice
    assert served.get("/healthz").json() == {"status": "ok"}
    assert served.get("/readyz").json() == {"status": "ready", "metadata": None, "artifacts": None}

    models = served.api("/models")
    assert models == {"items": [m.to_dict() for m in reg.list_models()], "next_cursor": None}
    assert [m["name"] for m in served.api("/models", params={"prefix": "cred"})["items"]] == ["credit-risk"]
    for stage in ("validated", "deployed"):
        got = [m["name"] for m in served.api("/models", params={"stage": stage})["items"]]
        assert got == [m.name for m in reg.list_models(stage=stage)], stage
    assert [m["name"] for m in served.api("/models", params={"stage": "validated"})["items"]] == [
        "credit-risk",
        "fraud",
    ]
    one = served.api("/models", params={"limit": 1})
    assert [m["name"] for m in one["items"]] == ["credit-risk"]
    assert [m["name"] for m in served.api("/models", params={"cursor": one["next_cursor"]})["items"]] == [
        "fraud"
    ]
    reg.update_model("fraud", tags={"team": "risk"})
    assert [m["name"] for m in served.api("/models", params={"tag": "team=risk"})["items"]] == ["fraud"]
    assert served.api("/models/credit-risk") == reg.get_model("credit-risk").to_dict()

    versions = served.api("/models/credit-risk/versions")
    states = reg.states("credit-risk", [1, 2])
    assert versions["items"] == [
        {**v.to_dict(), "stage": states[v.version].stage} for v in reg.list_versions("credit-risk")
    ]
    assert [v["stage"] for v in versions["items"]] == ["validated", "deployed"]
    paged = served.api("/models/credit-risk/versions", params={"limit": 1})
    assert [v["version"] for v in paged["items"]] == [2] and paged["next_cursor"]
    by_number = served.api("/models/credit-risk/versions/1")
    assert by_number == {**reg.get_version("credit-risk", 1).to_dict(), "stage": "deployed"}
    assert served.api("/models/credit-risk/versions/production")["version"] == 1
    assert served.api("/models/credit-risk/versions/champion")["version"] == 2
    assert served.api("/models/credit-risk/versions/latest")["version"] == 2

    found = served.api("/versions", params={"q": "model = 'credit-risk' and metrics.auc > 0.85"})
    assert [v["uri"] for v in found["items"]] == ["models:/credit-risk/2"]
    expected = reg.search_versions("metrics.auc > 0.8")
    assert [v["uri"] for v in served.api("/versions", params={"q": "metrics.auc > 0.8"})["items"]] == [
        v.uri for v in expected
    ]

    aliases = served.api("/models/credit-risk/aliases")
    assert aliases["model"] == "credit-risk"
    assert {a["alias"]: a["version"] for a in aliases["aliases"]} == {"champion": 2, "production": 1}
    assert {a["moved_by"] for a in aliases["aliases"]} == {"alice@example.com", "bob@example.com"}

    assert served.api("/models/credit-risk/versions/1/state") == reg.state("models:/credit-risk/1").to_dict()
    history = served.api("/models/credit-risk/versions/production/history")
    assert history == [e.to_dict() for e in reg.history("models:/credit-risk/1")]
    assert "version.approved" in {e["action"] for e in history}
    lineage = served.api("/models/credit-risk/versions/1/lineage")
    assert lineage == reg.lineage("models:/credit-risk/1").to_dict()
    assert {n["kind"] for n in lineage["nodes"]} >= {"model", "dataset"}
    diff = served.api("/diff", params={"a": "models:/credit-risk/1", "b": "models:/credit-risk/2"})
    assert diff == reg.diff("models:/credit-risk/1", "models:/credit-risk/2").to_dict()
    assert diff["metrics"]["auc"] == {"old": 0.81, "new": 0.86}

    trace = served.api(f"/predictions/{served.prediction_id}/trace")
    assert trace == json.loads(json.dumps(reg.trace(served.prediction_id).to_dict(), default=str))
    assert trace["receipt"]["valid"] is True and trace["model"]["uri"] == "models:/credit-risk/1"

    audit = served.api("/audit", params={"limit": 3})
    assert audit["items"] == [e.to_dict() for e in reg.audit(limit=3)]
    rest = served.api("/audit", params={"cursor": audit["next_cursor"], "limit": 1000})
    assert [e["seq"] for e in rest["items"]] == [e.seq for e in reg.audit(limit=1000)][3:]
    approvals = served.api("/audit", params={"model": "credit-risk", "action": "version.approved"})
    assert [(e["actor"], e["subject"]) for e in approvals["items"]] == [
        ("bob@example.com", "models:/credit-risk/1")
    ]
    by_actor = served.api("/audit", params={"actor": "bob@example.com", "action": "deployment.*"})
    assert [e["action"] for e in by_actor["items"]] == ["deployment.deployed"]
    tokens_made = served.api("/audit", params={"action": "token.created"})["items"]
    assert [e["data"]["member"] for e in tokens_made] == ["alice@example.com", "dana@example.com"]

    verify = served.api("/verify")
    assert verify["ok"] is True and verify == reg.verify(record=False).to_dict()  # the server records nothing
    assert served.api("/public-key") == {"public_key": reg.public_key().decode()}
    assert served.api("/trust-bundle") == reg.trust_bundle()
    assert served.api("/members") == [m.to_dict() for m in reg.members()]
    assert served.api("/whoami")["name"] == "alice@example.com"


def test_tokens_that_do_not_prove_who_calls_are_401(served: Served) -> None:
    reg = served.alice
    short, short_record = reg.create_token("dana@example.com", expires="1s")
    revoked, revoked_record = reg.create_token("dana@example.com")
    assert served.get(f"{API_PREFIX}/models", short).status_code == 200  # valid until it expires
    reg.revoke_token(revoked_record.id, reason="laptop lost")
    time.sleep(1.2)
    cases = {
        "missing": {},
        "not bearer": {"Authorization": f"Basic {served.admin_token}"},
        "empty": {"Authorization": "Bearer"},
        "malformed": {"Authorization": "Bearer not-a-token"},
        "unknown": {"Authorization": "Bearer mlt_" + "A" * 43},
        "expired": {"Authorization": f"Bearer {short}"},
        "revoked": {"Authorization": f"Bearer {revoked}"},
    }
    for case, headers in cases.items():
        for path in ("/models", "/models/credit-risk", "/members", "/whoami"):
            response = served.get(API_PREFIX + path, headers=headers)
            assert response.status_code == 401, (case, path, response.text)
            body = response.json()
            assert body["error"] == "InvalidToken", case
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert short_record.id in served.get(f"{API_PREFIX}/models", headers=cases["expired"]).json()["message"]
    assert "revoked" in served.get(f"{API_PREFIX}/models", headers=cases["revoked"]).json()["message"]
    # the probes and the API's description need no token
    assert served.get("/healthz").status_code == 200
    assert served.get(f"{API_PREFIX}/openapi.json").status_code == 200


def test_a_member_whose_keys_are_all_revoked_is_401(served: Served) -> None:
    reg = served.alice
    (key,) = next(m for m in reg.members() if m.name == "dana@example.com").keys
    assert served.get(f"{API_PREFIX}/whoami", served.viewer_token).status_code == 200
    reg.revoke_key("dana@example.com", key.key_id, reason="left the team")
    response = served.get(f"{API_PREFIX}/whoami", served.viewer_token)
    assert response.status_code == 401 and "no key that is not revoked" in response.json()["message"]


def test_a_member_without_the_role_is_403(served: Served) -> None:
    dana = served.viewer_token
    for path in ("/members", "/verify"):
        response = served.get(API_PREFIX + path, dana)
        assert response.status_code == 403, path
        assert response.json()["error"] == "PermissionDenied"
    # a viewer reads what the role covers
    assert served.api("/models/credit-risk", dana)["name"] == "credit-risk"
    assert served.api("/whoami", dana)["roles"] == ["viewer"]
    assert served.api("/public-key", dana)["public_key"].startswith("-----BEGIN PUBLIC KEY")


def test_a_role_scoped_to_credit_models_sees_no_other_model(served: Served) -> None:
    dana = served.viewer_token
    assert [m["name"] for m in served.api("/models", dana)["items"]] == ["credit-risk"]
    assert [m["name"] for m in served.api("/models", served.admin_token)["items"]] == ["credit-risk", "fraud"]
    assert {v["model"] for v in served.api("/versions", dana)["items"]} == {"credit-risk"}
    assert {v["model"] for v in served.api("/versions")["items"]} == {"credit-risk", "fraud"}
    refused = [
        "/models/fraud",
        "/models/fraud/versions",
        "/models/fraud/versions/1",
        "/models/fraud/versions/1/state",
        "/models/fraud/versions/1/history",
        "/models/fraud/versions/1/lineage",
        "/models/fraud/aliases",
        "/models/no-such-model",  # refused before it is looked up: existence is not revealed
        "/audit?model=fraud",
        "/audit",  # every model's events: needs roles on every model
        "/diff?a=models:/credit-risk/1&b=models:/fraud/1",
    ]
    for path in refused:
        response = served.get(API_PREFIX + path, dana)
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"] == "PermissionDenied"
    assert served.api("/audit?model=credit-risk", dana)["items"]
    assert (
        served.api(f"/predictions/{served.prediction_id}/trace", dana)["model"]["uri"]
        == "models:/credit-risk/1"
    )


def test_claiming_another_identity_has_no_effect(served: Served) -> None:
    dana = served.viewer_token
    claims: list[dict[str, Any]] = [
        {"headers": {"X-Modelledger-Actor": "alice@example.com"}},
        {"headers": {"X-Forwarded-User": "alice@example.com", "X-Remote-User": "alice@example.com"}},
        {"params": {"actor": "alice@example.com"}},
        {"params": {"member": "alice@example.com", "as": "alice@example.com"}},
    ]
    for claim in claims:
        assert served.api("/whoami", dana, **claim)["name"] == "dana@example.com", claim
        assert served.get(f"{API_PREFIX}/members", dana, **claim).status_code == 403, claim
        assert served.get(f"{API_PREFIX}/models/fraud", dana, **claim).status_code == 403, claim
        # and without a token, a claim is not a login
        assert served.get(f"{API_PREFIX}/models", **claim).status_code == 401, claim


def test_errors_carry_the_library_class_and_message(served: Served) -> None:
    cases = [
        ("/models/no-such-model", 404, "NotFound", "model not found: no-such-model"),
        ("/models/credit-risk/versions/9", 404, "NotFound", "models:/credit-risk/9"),
        ("/models/credit-risk/versions/staging", 404, "NotFound", "staging"),
        ("/models/Bad Name", 400, "InvalidInput", "invalid"),
        ("/versions?q=stage%20%3D%3D%3D%20x", 400, "InvalidInput", "stage"),
        ("/versions?q=nonsense", 400, "InvalidInput", "nonsense"),
        ("/models?stage=nowhere", 400, "InvalidInput", "nowhere"),
        ("/models?limit=0", 400, "InvalidInput", "limit must be between 1 and 1000"),
        ("/models?cursor=%25%25", 400, "InvalidInput", "invalid cursor"),
        ("/models?tag=team", 400, "InvalidInput", "KEY=VALUE"),
        ("/predictions/nope/trace", 400, "InvalidInput", "prediction id"),
        ("/diff?a=models:/credit-risk/1&b=credit", 400, "InvalidInput", "invalid model identifier"),
        ("/models?limit=many", 422, "InvalidInput", "limit"),
        ("/diff?a=models:/credit-risk/1", 422, "InvalidInput", "b"),
        ("/no/such/route", 404, "NotFound", "no such endpoint"),
    ]
    for path, status, error, text in cases:
        response = served.get(API_PREFIX + path, served.admin_token)
        assert response.status_code == status, (path, response.text)
        body = response.json()
        assert set(body) == {"error", "message"}, path
        assert body["error"] == error and text in body["message"], (path, body)


def test_the_openapi_document_lists_every_route(served: Served) -> None:
    from fastapi.routing import APIRoute

    doc = served.get(f"{API_PREFIX}/openapi.json").json()
    app = create_app(served.alice)
    # a path parameter that spans slashes is {path:path} to the router, {path} in the document
    routes = {r.path.replace(":path}", "}") for r in app.routes if isinstance(r, APIRoute)}
    assert set(doc["paths"]) == routes
    assert routes == {
        "/healthz",
        "/readyz",
        *(
            API_PREFIX + p
            for p in (
                "/whoami",
                "/models",
                "/models/{name}",
                "/models/{name}/versions",
                "/models/{name}/versions/{ref}",
                "/models/{name}/versions/{ref}/state",
                "/models/{name}/versions/{ref}/history",
                "/models/{name}/versions/{ref}/registration",
                "/models/{name}/versions/{ref}/lineage",
                "/models/{name}/aliases",
                "/versions",
                "/diff",
                "/predictions/{prediction_id}/trace",
                "/audit",
                "/events",
                "/verify",
                "/public-key",
                "/model-signing-key",
                "/trust-bundle",
                "/members",
                "/datasets",
                "/datasets/{name}/versions",
                "/datasets/{name}/versions/{ref}",
                "/datasets/{name}/versions/{ref}/rows",
                "/datasets/{name}/versions/{ref}/file",
                "/datasets/{name}/versions/{ref}/usage",
                "/datasets/{name}/versions/{ref}/lineage",
                # writes, and a version's files
                "/models/{name}/versions/{ref}/files/{path}",
                "/models/{name}/versions/{ref}/approve",
                "/models/{name}/versions/{ref}/reject",
                "/models/{name}/versions/{ref}/deploy",
                "/models/{name}/versions/{ref}/transition",
                "/models/{name}/versions/{ref}/validate",
                "/models/{name}/versions/{ref}/retire",
                "/models/{name}/versions/{ref}/tags",
                "/models/{name}/rollback",
                "/models/{name}/aliases/{alias}",
                "/models/{name}/aliases/{alias}/at",
                "/models/{name}/alias-history",
                "/models/{name}/predictions",
                "/predictions/{prediction_id}",
                "/receipts/verify",
                "/models/{name}/archive",
                "/models/{name}/unarchive",
                "/models/{name}/rename",
                "/models/{name}/versions/{ref}/erase",
                "/datasets/{name}/versions/{ref}/erase",
                "/history",
                "/policy",
                "/members/{name}/roles",
                "/members/{name}/keys/{key_id}/revoke",
                "/export",
            )
        ),
    }
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    assert doc["paths"][f"{API_PREFIX}/models"]["get"]["security"] == [{"HTTPBearer": []}]


def _serve_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "modelledger"), "server", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


def _wait_up(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.communicate()
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "modelledger server did not start"
        time.sleep(0.1)


@contextmanager
def _cli_server(*args: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = _free_port()
    proc = _serve_cli(*args, "--host", "127.0.0.1", "--port", str(port))
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_up(url, proc)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


def test_the_command_serves_a_registry(registry: Registry, db_url: str) -> None:
    registry.register("credit-risk", lambda rows: rows, capture=False)
    token, _ = registry.create_token("alice@example.com")
    with _cli_server("--registry", db_url, "--artifacts", registry.artifact_root, "--json") as (url, proc):
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["url"] == url + API_PREFIX
        response = httpx.get(f"{url}{API_PREFIX}/models", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        assert [m["name"] for m in response.json()["items"]] == ["credit-risk"]
        assert httpx.get(url + "/readyz").status_code == 200


# What `modelledger server` imports before it can answer, as a module prefix each: the rest
# of the command line and its renderer, the HTTP client, PyJWT (OIDC only), the data stack
# (pandas, numpy, pyarrow: loading and capture), Alembic (migrations), SQLAlchemy's ORM
# (the stores are Core) and the pickler of models. None is needed to serve the API.
NOT_FOR_SERVING = (
    "modelledger.cli.admin",
    "modelledger.cli.versions",
    "modelledger._remote",
    "rich",
    "httpx",
    "jwt",
    "pandas",
    "numpy",
    "pyarrow",
    "alembic",
    "sqlalchemy.orm",
    "cloudpickle",
)


def test_the_server_command_imports_only_what_serving_needs(registry: Registry, db_url: str) -> None:
    # the steps of `modelledger server` up to its first answer: its command looked up, the
    # registry opened, the app built, each store read once (the app's start-up)
    code = (
        "import sys, click\n"
        "from modelledger import Registry\n"
        "from modelledger.cli import main\n"
        "main.get_command(click.Context(main), 'server')\n"
        "from modelledger.server import create_app\n"
        "registry = Registry.open(sys.argv[1], artifacts=sys.argv[2])\n"
        "create_app(registry)\n"
        "assert registry.readiness() == {'metadata': None, 'artifacts': None}, registry.readiness()\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, db_url, registry.artifact_root],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = out.stdout.split()
    assert {"fastapi", "uvicorn", "modelledger.cli.server", "modelledger.server.app"} <= set(loaded)
    assert [m for m in loaded if m.startswith(NOT_FOR_SERVING)] == []
    assert [m for m in loaded if m.startswith("modelledger.cli.")] == [
        "modelledger.cli._common",
        "modelledger.cli.server",
    ]


def test_a_server_command_that_fails_leaves_garbage_collection_on() -> None:
    # `server` pauses the collector while it starts; an error before serving must not leave it off
    assert gc.isenabled()
    result = CliRunner().invoke(main, ["server", "--oidc-issuer", "https://id.example.com"])
    gc.unfreeze()  # what start-up froze: here, the test process's objects
    assert result.exit_code == 1 and "OIDC needs an issuer, an audience and a JWKS" in result.stderr
    assert gc.isenabled()


def test_readyz_is_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    nowhere = f"postgresql://nobody@127.0.0.1:{_free_port()}/registry"  # nothing listens there
    with _cli_server("--registry", nowhere, "--artifacts", str(tmp_path / "art")) as (url, _proc):
        assert httpx.get(url + "/healthz").json() == {"status": "ok"}
        response = httpx.get(url + "/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "unavailable" and body["artifacts"] is None
        assert "metadata store failed" in body["metadata"] or "connect" in body["metadata"]


def test_readyz_is_503_when_the_artefact_bucket_is_missing(
    db_url: str, s3_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    reg = Registry.open(
        db_url, artifacts="s3://no-such-bucket-here/registry", storage_options={"endpoint_url": s3_server}
    )
    with running(reg) as url:
        response = httpx.get(url + "/readyz")
    reg.close()
    assert response.status_code == 503
    assert response.json()["metadata"] is None and "no-such-bucket-here" in response.json()["artifacts"]
