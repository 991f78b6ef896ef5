"""Every endpoint of the API, called by every kind of caller: the server lets through exactly
those whose role allows the call and refuses the others with 403 (401 for a token that proves
no one), before anything is written.

The table names the rule of each route; the test fails when a route of the OpenAPI document is
missing from it, so a new route cannot ship without its rule.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.test_server import running

from modelledger import Member, Registry, create_identity
from modelledger.server import API_PREFIX

Rule = Callable[[Member], bool]


def view(member: Member) -> bool:
    return member.can_view("credit-risk")


def unscoped(member: Member) -> bool:
    return member.unscoped


def role(name: str, model: str | None = "credit-risk") -> Rule:
    return lambda member: member.has_role(name, model)


# (method, path template) -> (rule, path parameters' values, JSON body or None)
ROUTES: dict[tuple[str, str], tuple[Rule, dict[str, str], Any]] = {
    ("GET", "/whoami"): (lambda m: True, {}, None),
    ("GET", "/models"): (lambda m: True, {}, None),  # lists only what the caller may see
    ("GET", "/models/{name}"): (view, {}, None),
    ("GET", "/models/{name}/versions"): (view, {}, None),
    ("GET", "/models/{name}/versions/{ref}"): (view, {}, None),
    ("GET", "/models/{name}/versions/{ref}/state"): (view, {}, None),
    ("GET", "/models/{name}/versions/{ref}/history"): (view, {}, None),
    ("GET", "/models/{name}/versions/{ref}/registration"): (view, {}, None),
    ("GET", "/models/{name}/versions/{ref}/lineage"): (view, {}, None),
    ("GET", "/models/{name}/versions/{ref}/files/{path}"): (view, {}, None),
    ("GET", "/models/{name}/aliases"): (view, {}, None),
    ("GET", "/models/{name}/alias-history"): (view, {}, None),
    ("GET", "/models/{name}/aliases/{alias}/at"): (view, {"?": "time=2026-01-01T00:00:00Z"}, None),
    ("GET", "/history"): (view, {"?": "subject=models:/credit-risk/1"}, None),
    ("GET", "/versions"): (lambda m: True, {}, None),  # leaves out what the caller may not see
    ("GET", "/diff"): (view, {"?": "a=models:/credit-risk/1&b=models:/credit-risk/2"}, None),
    ("GET", "/predictions/{prediction_id}/trace"): (view, {}, None),
    ("GET", "/audit"): (unscoped, {}, None),
    ("GET", "/verify"): (role("admin", None), {}, None),
    ("GET", "/public-key"): (lambda m: True, {}, None),
    ("GET", "/model-signing-key"): (lambda m: True, {}, None),
    ("GET", "/trust-bundle"): (lambda m: True, {}, None),
    ("GET", "/members"): (role("admin", None), {}, None),
    ("GET", "/policy"): (lambda m: True, {}, None),
    ("GET", "/events"): (lambda m: True, {"?": "after=0"}, None),  # streams only what they may see
    ("GET", "/datasets"): (unscoped, {}, None),
    ("GET", "/datasets/{name}/versions"): (unscoped, {"name": "applications-train"}, None),
    ("GET", "/datasets/{name}/versions/{ref}"): (unscoped, {"name": "applications-train"}, None),
    ("GET", "/datasets/{name}/versions/{ref}/rows"): (unscoped, {"name": "applications-train"}, None),
    ("GET", "/datasets/{name}/versions/{ref}/file"): (unscoped, {"name": "applications-train"}, None),
    ("HEAD", "/datasets/{name}/versions/{ref}/file"): (unscoped, {"name": "applications-train"}, None),
    ("GET", "/datasets/{name}/versions/{ref}/usage"): (unscoped, {"name": "applications-train"}, None),
    ("GET", "/datasets/{name}/versions/{ref}/lineage"): (unscoped, {"name": "applications-train"}, None),
    ("GET", "/export"): (view, {"?": "identifier=models:/credit-risk/1&format=openlineage"}, None),
    ("POST", "/models"): (role("contributor", "credit-scorecard"), {}, {"name": "credit-scorecard"}),
    ("PATCH", "/models/{name}"): (role("contributor"), {}, {"description": "PD model"}),
    ("POST", "/models/{name}/versions"): (role("contributor"), {}, None),  # refused before the body
    ("POST", "/datasets/{name}/versions"): (role("contributor", None), {"name": "applications-train"}, None),
    ("POST", "/models/{name}/versions/{ref}/approve"): (role("approver"), {}, {"reason": "ok"}),
    ("POST", "/models/{name}/versions/{ref}/reject"): (role("approver"), {}, {"reason": "no"}),
    ("POST", "/models/{name}/versions/{ref}/deploy"): (role("deployer"), {}, {"reason": "go"}),
    ("POST", "/models/{name}/versions/{ref}/validate"): (role("contributor"), {}, {}),
    ("POST", "/models/{name}/versions/{ref}/transition"): (role("contributor"), {}, {"stage": "trained"}),
    ("POST", "/models/{name}/versions/{ref}/retire"): (role("contributor"), {}, {"reason": "old"}),
    ("POST", "/models/{name}/versions/{ref}/tags"): (role("contributor"), {}, {"tags": {"team": "risk"}}),
    ("POST", "/models/{name}/rollback"): (role("deployer"), {}, {}),
    ("PUT", "/models/{name}/aliases/{alias}"): (role("contributor"), {}, {"version": 1}),
    ("DELETE", "/models/{name}/aliases/{alias}"): (role("contributor"), {}, None),
    ("GET", "/models/{name}/predictions"): (view, {}, None),
    ("GET", "/predictions/{prediction_id}"): (view, {}, None),
    ("POST", "/receipts/verify"): (view, {}, "receipt"),  # a credit-risk receipt: its model's viewers
    ("POST", "/models/{name}/archive"): (role("admin"), {"name": "fraud"}, {}),
    ("POST", "/models/{name}/unarchive"): (role("admin"), {"name": "fraud"}, {}),
    ("POST", "/models/{name}/rename"): (
        role("admin"),
        {"name": "fraud-old"},
        {"new": "credit-old", "reason": "x"},
    ),
    ("POST", "/models/{name}/versions/{ref}/erase"): (
        role("admin"),
        {"ref": "2"},
        {"reason": "retention", "predictions": True},
    ),
    ("POST", "/datasets/{name}/versions/{ref}/erase"): (
        role("admin", None),
        {"name": "no-such-data", "ref": "1"},
        {"reason": "retention"},
    ),
    ("PUT", "/policy"): (role("admin", None), {}, {"policy": {"four_eyes": True}, "reason": "same"}),
    ("POST", "/members"): (role("admin", None), {}, "enrol"),
    ("PUT", "/members/{name}/roles"): (
        role("admin", None),
        {"name": "dana@example.com"},
        {"roles": ["viewer"]},
    ),
    ("POST", "/members/{name}/keys/{key_id}/revoke"): (
        role("admin", None),
        {"name": "dana@example.com"},
        {"reason": "left"},
    ),
}

CALLERS = {
    "viewer": (["viewer"], ["*"]),
    "contributor": (["contributor"], ["*"]),
    "approver": (["approver"], ["*"]),
    "deployer": (["deployer"], ["*"]),
    "serving": (["serving"], ["*"]),
    "admin": (["admin"], ["*"]),
    "admin of fraud-*": (["admin"], ["fraud-*"]),
    "viewer of fraud-*": (["viewer"], ["fraud-*"]),
}


@dataclass
class Setup:
    url: str
    tokens: dict[str, str]  # caller -> token (and the ones that prove no one)
    members: dict[str, Member]
    values: dict[str, str]
    registry: Registry


@pytest.fixture
def setup(tmp_path: Path, credit_data: Any, fitted_pipeline: Any) -> Iterator[Setup]:
    from tests.conftest import enrol_cast

    url = f"sqlite:///{tmp_path / 'registry.db'}"
    art = str(tmp_path / "artifacts")
    enrol_cast(url, art)
    alice = Registry.open(url, artifacts=art, actor="alice@example.com")
    bob = Registry.open(url, artifacts=art, actor="bob@example.com")
    X, y = credit_data
    train = alice.datasets.register("applications-train", X.assign(defaulted=y).iloc[:200])
    first = alice.register("credit-risk", fitted_pipeline, sample_input=X.head(), datasets={"train": train})
    alice.register("credit-risk", fitted_pipeline, sample_input=X.head())
    bob.approve(first.uri, reason="ok")
    bob.deploy(first.uri, reason="release 1")
    alice.set_alias("credit-risk", "champion", 1)
    with alice.load("models:/credit-risk@production", capture=True, flush_rows=1) as served:
        prediction_id = served.predict(X.head(1)).receipts[0].prediction_id
    dana_key = tmp_path / "dana.key"
    _p, dana_kid, dana_pem = create_identity("dana@example.com", dana_key)
    alice.enrol("dana@example.com", dana_pem, roles=["viewer"])
    tokens, members = {}, {}
    for i, (caller, (roles, models)) in enumerate(CALLERS.items()):
        name = f"caller{i}@example.com"
        _p, _k, pem = create_identity(name, tmp_path / f"{i}.key")
        members[caller] = alice.enrol(name, pem, roles=roles, models=models)
        tokens[caller] = alice.create_token(name)[0]
    revoked, record = alice.create_token("bob@example.com")
    alice.revoke_token(record.id, reason="lost")
    tokens["revoked token"] = revoked
    tokens["expired token"] = alice.create_token("bob@example.com", expires="1s")[0]
    tokens["malformed token"] = "mlt_not-a-token"
    header = base64.urlsafe_b64encode(json.dumps({"alg": "RS256", "kid": "x"}).encode()).rstrip(b"=")
    claims = base64.urlsafe_b64encode(
        json.dumps({"iss": "https://foreign.example", "email": "bob@example.com"}).encode()
    )
    tokens["foreign issuer's JWT"] = f"{header.decode()}.{claims.rstrip(b'=').decode()}.c2ln"
    gateway_key = tmp_path / "gateway.key"
    _p, _k, gateway_pem = create_identity("gateway@example.com", gateway_key)
    alice.enrol("gateway@example.com", gateway_pem, roles=["gateway"])
    entry = alice.get_version(first.uri).manifest["entry"]
    values = {
        "name": "credit-risk",
        "ref": "1",
        "path": entry,
        "alias": "champion",
        "prediction_id": prediction_id,
        "key_id": dana_kid,
        "enrol_pem": dana_pem.decode(),
    }
    time.sleep(1.1)  # the expired token's second has passed
    server = Registry.open(url, artifacts=art, identity=gateway_key)
    with running(server) as base:
        yield Setup(base, tokens, members, values, alice)
    server.close()
    alice.close()
    bob.close()


def _call(setup: Setup, method: str, template: str, token: str) -> httpx.Response:
    _rule, given, body = ROUTES[(method, template)]
    values = {**setup.values, **given}
    path = template
    for key, value in values.items():
        path = path.replace("{" + key + "}", value)
    if "?" in given:
        path += "?" + given["?"]
    if body == "receipt":
        body = setup.registry.prediction(values["prediction_id"])["receipt"]
    if body == "enrol":
        body = {
            "name": f"new{time.monotonic_ns()}@example.com",
            "public_key": _new_pem(),
            "roles": ["viewer"],
        }
    headers = {"Authorization": f"Bearer {token}"}
    if template == "/events":  # a stream that does not end: its status is all this test needs
        with httpx.stream(method, setup.url + API_PREFIX + path, headers=headers, timeout=60) as response:
            return response
    return httpx.request(method, setup.url + API_PREFIX + path, json=body, headers=headers, timeout=60)


def _new_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def test_the_table_names_every_route_of_the_document(setup: Setup) -> None:
    doc = httpx.get(setup.url + API_PREFIX + "/openapi.json", timeout=60).json()
    listed = {
        (method.upper(), path[len(API_PREFIX) :])
        for path, operations in doc["paths"].items()
        if path.startswith(API_PREFIX)
        for method in operations
    }
    assert listed == set(ROUTES)


def test_every_route_by_every_caller(setup: Setup) -> None:
    """Refusals first (they must come before any write), then the calls that are allowed."""
    wrong: list[str] = []
    for (method, template), (rule, _given, _body) in ROUTES.items():
        for caller in ("revoked token", "expired token", "malformed token", "foreign issuer's JWT"):
            status = _call(setup, method, template, setup.tokens[caller]).status_code
            if status != 401:
                wrong.append(f"{method} {template} by a {caller}: {status}, expected 401")
        allowed = [c for c in CALLERS if rule(setup.members[c])]
        for caller in CALLERS:
            if caller in allowed:
                continue
            response = _call(setup, method, template, setup.tokens[caller])
            if response.status_code != 403:
                wrong.append(f"{method} {template} by {caller}: {response.status_code}, expected 403")
        for caller in allowed:
            response = _call(setup, method, template, setup.tokens[caller])
            if response.status_code in (401, 403, 500):
                wrong.append(f"{method} {template} by {caller}: {response.status_code} {response.text[:200]}")
    assert wrong == []
    assert setup.registry.verify().ok
