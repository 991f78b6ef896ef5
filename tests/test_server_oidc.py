"""OIDC bearer tokens, served for real: uvicorn on loopback, an issuer made of keys generated
here, its key set (JWKS) in a file or served by a small HTTP server on loopback. A token is
believed only when its signature, issuer, audience and times check out and its claim names an
enrolled member with a live key; every refusal is a 401 ``InvalidToken`` saying why."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from tests.conftest import enrol_cast
from tests.helpers import LoopbackHTTP, free_port, serve_app
from tests.test_server import _wait_up

from modelledger import InvalidConfig, InvalidInput, Registry, create_identity, resolve_config, resolve_oidc
from modelledger.cli import main
from modelledger.server import API_PREFIX, OidcSettings, create_app

ISSUER = "https://login.example.test"
AUDIENCE = "modelledger-test"
ALICE = "alice@example.com"  # an admin (tests/conftest.py enrols her)
DANA = "dana@example.com"  # a viewer of credit-* only
GONE = "gone@example.com"  # enrolled, then her only key revoked
STRANGER = "stranger@example.com"  # never enrolled


# --------------------------------------------------------------------------- the issuer


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _segment(document: dict[str, Any]) -> str:
    return _b64(json.dumps(document, separators=(",", ":")).encode())


@dataclass
class Issuer:
    """An OIDC issuer of our own: private keys by key id, and which of them it publishes."""

    iss: str
    keys: dict[str, Any]
    published: list[str]
    algorithms: dict[str, str] = field(default_factory=dict)  # kid -> the algorithm it signs with

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid in self.published:
            out.append({**_public_jwk(self.keys[kid].public_key()), "kid": kid, "use": "sig"})
        return {"keys": out}

    def mint(
        self, kid: str | None = "rsa-1", *, alg: str | None = None, signer: str | None = None, **claims: Any
    ) -> str:
        """A token signed with key ``signer`` (default: ``kid``), naming ``kid`` in its header;
        a claim given as None is left out."""
        now = int(time.time())
        body = {"iss": self.iss, "aud": AUDIENCE, "iat": now, "exp": now + 300, "email": ALICE, **claims}
        body = {k: v for k, v in body.items() if v is not None}
        key_id = signer or kid
        assert key_id is not None
        headers = {"kid": kid} if kid is not None else {}
        return jwt.encode(body, self.keys[key_id], algorithm=alg or self.algorithms[key_id], headers=headers)


def _public_jwk(public: Any) -> dict[str, Any]:
    if isinstance(public, rsa.RSAPublicKey):
        return json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
    if isinstance(public, ec.EllipticCurvePublicKey):
        return json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
    return json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(public))


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    keys = {
        "rsa-1": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "rsa-2": rsa.generate_private_key(public_exponent=65537, key_size=2048),  # rotated in later
        "ec-1": ec.generate_private_key(ec.SECP256R1()),
        "ed-1": ed25519.Ed25519PrivateKey.generate(),
    }
    algorithms = {"rsa-1": "RS256", "rsa-2": "RS256", "ec-1": "ES256", "ed-1": "EdDSA"}
    return Issuer(ISSUER, keys, ["rsa-1", "ec-1", "ed-1"], algorithms)


@pytest.fixture(scope="module")
def foreign() -> Issuer:
    """Another issuer, with keys of its own (and, to confuse, the same key id as ours)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return Issuer("https://evil.example.test", {"rsa-1": key}, ["rsa-1"], {"rsa-1": "RS256"})


# --------------------------------------------------------------------------- servers on loopback


_free_port = free_port
serving = serve_app


class JwksServer:
    """The issuer's key set at ``url``, served over HTTP on loopback; ``hits`` counts the reads."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                body = json.dumps(outer.document).encode()
                self.send_response(200 if self.path == "/jwks.json" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:  # quiet test output
                pass

        self._server = LoopbackHTTP(Handler)
        self.url = f"{self._server.base}/jwks.json"

    def close(self) -> None:
        self._server.close()


@contextmanager
def jwks_server(document: dict[str, Any]) -> Iterator[JwksServer]:
    server = JwksServer(document)
    try:
        yield server
    finally:
        server.close()


def call(url: str, token: str, path: str = "/whoami") -> httpx.Response:
    return httpx.get(f"{url}{API_PREFIX}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def refused(response: httpx.Response, fragment: str) -> str:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"] == "InvalidToken", body
    assert fragment in body["message"], body["message"]
    assert response.headers["www-authenticate"].startswith("Bearer")
    return str(body["message"])


# --------------------------------------------------------------------------- the registry


@dataclass
class Team:
    url: str  # the metadata database
    artifacts: str
    admin_token: str  # an API token of ALICE


def _enrol(admin: Registry, folder: Path, name: str, roles: list[str], models: list[str]) -> str:
    _path, kid, pem = create_identity(name, folder / f"{name}.key")
    admin.enrol(name, pem, roles=roles, models=models)
    return str(kid)


def _team(url: str, folder: Path) -> Team:
    """CAST (tests/conftest.py) plus DANA, a viewer of credit-*, and GONE, whose key is revoked."""
    artifacts = str(folder / "art")
    enrol_cast(url, artifacts)
    with Registry.open(url, artifacts=artifacts, actor=ALICE) as admin:
        _enrol(admin, folder, DANA, ["viewer"], ["credit-*"])
        kid = _enrol(admin, folder, GONE, ["viewer"], ["*"])
        admin.revoke_key(GONE, kid, reason="left the team")
        token, _ = admin.create_token(ALICE)
    return Team(url, artifacts, token)


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Team:
    folder = tmp_path_factory.mktemp("oidc-team")
    return _team(f"sqlite:///{folder / 'registry.db'}", folder)


@contextmanager
def oidc_server(team: Team, settings: OidcSettings | None) -> Iterator[str]:
    registry = Registry.open(team.url, artifacts=team.artifacts)
    try:
        with serving(create_app(registry, oidc=settings)) as url:
            yield url
    finally:
        registry.close()


@pytest.fixture(scope="module", params=["jwks-file", "jwks-url"])
def served(
    request: pytest.FixtureRequest, team: Team, issuer: Issuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The server, with the issuer's keys from a file or from a URL."""
    if request.param == "jwks-file":
        path = tmp_path_factory.mktemp("jwks") / "jwks.json"
        path.write_text(json.dumps(issuer.jwks()), encoding="utf-8")
        with oidc_server(team, OidcSettings(ISSUER, AUDIENCE, str(path))) as url:
            yield url
    else:
        with (
            jwks_server(issuer.jwks()) as keys,
            oidc_server(team, OidcSettings(ISSUER, AUDIENCE, keys.url)) as url,
        ):
            yield url


# --------------------------------------------------------------------------- tokens that work


@pytest.mark.parametrize(
    ("kid", "alg"), [("rsa-1", "RS256"), ("rsa-1", "PS256"), ("ec-1", "ES256"), ("ed-1", "EdDSA")]
)
def test_a_token_of_the_issuer_stands_for_the_member(served: str, issuer: Issuer, kid: str, alg: str) -> None:
    response = call(served, issuer.mint(kid, alg=alg))
    assert response.status_code == 200, response.text
    who = response.json()
    assert (who["name"], who["method"]) == (ALICE, "oidc")
    assert who["roles"] == ["admin", "serving"]


def test_the_member_keeps_their_roles_and_an_api_token_still_works(
    served: str, issuer: Issuer, team: Team
) -> None:
    dana = issuer.mint(email=DANA)
    assert call(served, dana).json()["roles"] == ["viewer"]
    forbidden = call(served, dana, "/members")  # admin only
    assert forbidden.status_code == 403 and forbidden.json()["error"] == "PermissionDenied"
    assert call(served, issuer.mint(), "/members").status_code == 200

    by_token = call(served, team.admin_token)
    assert by_token.status_code == 200 and by_token.json()["method"] == "token"
    assert by_token.json()["name"] == ALICE


def test_small_clock_skew_is_allowed(served: str, issuer: Issuer) -> None:
    now = int(time.time())
    # expired 5 s ago, issued 5 s in the future: within the 30 s leeway
    assert call(served, issuer.mint(exp=now - 5, iat=now + 5, nbf=now + 5)).status_code == 200


def test_the_claim_that_names_the_member_is_configurable(team: Team, issuer: Issuer, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(issuer.jwks()), encoding="utf-8")
    with oidc_server(team, OidcSettings(ISSUER, AUDIENCE, str(path), claim="preferred_username")) as url:
        response = call(url, issuer.mint(email=STRANGER, preferred_username=DANA))
        assert response.json()["name"] == DANA
        refused(call(url, issuer.mint(email=ALICE)), "no preferred_username claim")


# --------------------------------------------------------------------------- tokens that do not


def _tampered_signature(issuer: Issuer, _foreign: Issuer) -> str:
    head, body, signature = issuer.mint().split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[10] ^= 0xFF
    return f"{head}.{body}.{_b64(bytes(raw))}"


def _swapped_payload(issuer: Issuer, _foreign: Issuer) -> str:
    """A viewer's token whose claims were edited to name an admin, signature kept."""
    head, _body, signature = issuer.mint(email=DANA).split(".")
    _head, body, _sig = issuer.mint(email=ALICE).split(".")
    return f"{head}.{body}.{signature}"


def _unsigned(issuer: Issuer, _foreign: Issuer) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, "email": ALICE}
    return f"{_segment({'alg': 'none', 'typ': 'JWT', 'kid': 'rsa-1'})}.{_segment(claims)}."


def _hmac_with_public_key(issuer: Issuer, _foreign: Issuer) -> str:
    """The classic confusion: HS256 keyed with the issuer's public key, which anyone has."""
    pem = (
        issuer.keys["rsa-1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, "email": ALICE}
    signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT', 'kid': 'rsa-1'})}.{_segment(claims)}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


NOW = int(time.time())
Mint = Callable[[Issuer, Issuer], str]
REFUSALS: list[tuple[str, Mint, str]] = [
    ("expired", lambda i, _f: i.mint(exp=NOW - 3600, iat=NOW - 7200), "the token expired at"),
    ("not yet valid", lambda i, _f: i.mint(nbf=NOW + 3600), "not valid before"),
    ("issued in the future", lambda i, _f: i.mint(iat=NOW + 3600), "issued in the future"),
    ("no expiry", lambda i, _f: i.mint(exp=None), "no exp claim"),
    ("foreign issuer", lambda _i, f: f.mint(), "wrong issuer: the token was issued by 'https://evil"),
    ("foreign key, our issuer", lambda _i, f: f.mint(iss=ISSUER), "bad signature"),
    ("wrong audience", lambda i, _f: i.mint(aud="another-app"), "wrong audience"),
    ("no audience", lambda i, _f: i.mint(aud=None), "no aud claim"),
    ("tampered signature", _tampered_signature, "bad signature"),
    ("swapped claims", _swapped_payload, "bad signature"),
    ("alg none", _unsigned, "alg none"),
    ("HS256 keyed with the public key", _hmac_with_public_key, "shared secret (HS256)"),
    ("unknown kid", lambda i, _f: i.mint("rsa-2"), "unknown key"),
    ("no kid, several keys", lambda i, _f: i.mint(None, signer="rsa-1"), "names no key"),
    ("kid of a key of another type", lambda i, _f: i.mint("ec-1", signer="rsa-1"), "does not allow"),
    ("malformed", lambda _i, _f: "abc.def.ghi", "malformed token"),
    ("payload not JSON", lambda _i, _f: f"{_segment({'alg': 'RS256'})}.{_b64(b'hello')}.c2ln", "malformed"),
    (
        "not enrolled",
        lambda i, _f: i.mint(email=STRANGER),
        f"{STRANGER} (the token's email) is not an enrolled",
    ),
    ("every key revoked", lambda i, _f: i.mint(email=GONE), f"{GONE} holds no key that is not revoked"),
    ("email not verified", lambda i, _f: i.mint(email_verified=False), "has not verified the email"),
    ("no email", lambda i, _f: i.mint(email=None), "no email claim"),
    ("not a name", lambda i, _f: i.mint(email=["a", "b"]), "is not a member name"),
]


@pytest.mark.parametrize(("mint", "fragment"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_a_bad_token_is_a_401_that_says_why(
    served: str, issuer: Issuer, foreign: Issuer, mint: Mint, fragment: str
) -> None:
    token = mint(issuer, foreign)
    message = refused(call(served, token), fragment)
    assert token not in message


def test_without_oidc_a_jwt_is_refused_plainly(team: Team, issuer: Issuer) -> None:
    with oidc_server(team, None) as url:
        refused(call(url, issuer.mint()), "not configured for OIDC")
        assert call(url, team.admin_token).json()["method"] == "token"


# --------------------------------------------------------------------------- the key set over HTTP


def _url_settings(url: str, **options: Any) -> OidcSettings:
    return OidcSettings(ISSUER, AUDIENCE, url, **options)


def test_the_key_set_is_cached_and_read_again_for_a_new_key(team: Team, issuer: Issuer) -> None:
    rotated = Issuer(ISSUER, issuer.keys, ["rsa-1"], issuer.algorithms)
    with (
        jwks_server(rotated.jwks()) as keys,
        oidc_server(team, _url_settings(keys.url, refetch_interval=0)) as url,
    ):
        for _ in range(3):
            assert call(url, issuer.mint("rsa-1")).status_code == 200
        assert keys.hits == 1
        # the issuer publishes a new key and signs with it: one read more, and it works
        rotated.published.append("rsa-2")
        keys.document = rotated.jwks()
        assert call(url, issuer.mint("rsa-2")).status_code == 200
        assert keys.hits == 2
        # a key it does not publish: read once more, then refused
        refused(call(url, issuer.mint("ec-1")), "unknown key")
        assert keys.hits == 3


def test_made_up_key_ids_do_not_hammer_the_issuer(team: Team, issuer: Issuer) -> None:
    with (
        jwks_server(issuer.jwks()) as keys,
        oidc_server(team, _url_settings(keys.url, refetch_interval=60)) as url,
    ):
        assert call(url, issuer.mint()).status_code == 200
        for n in range(5):
            refused(call(url, issuer.mint(f"made-up-{n}", signer="rsa-1")), "unknown key")
        assert keys.hits == 1


def test_the_key_set_expires_and_outlives_an_unreachable_issuer(team: Team, issuer: Issuer) -> None:
    keys = JwksServer(issuer.jwks())
    try:
        with oidc_server(team, _url_settings(keys.url, jwks_ttl=0.3, refetch_interval=0)) as url:
            assert call(url, issuer.mint()).status_code == 200
            time.sleep(0.4)
            assert call(url, issuer.mint()).status_code == 200
            assert keys.hits == 2
            keys.close()
            time.sleep(0.4)
            # the issuer is gone: the keys last read still check tokens
            assert call(url, issuer.mint()).status_code == 200
    finally:
        keys.close()


def test_an_unreachable_key_set_is_a_clear_401(team: Team, issuer: Issuer) -> None:
    nowhere = f"http://127.0.0.1:{_free_port()}/jwks.json"  # nothing listens there
    with oidc_server(team, _url_settings(nowhere)) as url:
        message = refused(call(url, issuer.mint()), "the issuer's keys could not be read")
        assert "127.0.0.1" not in message


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"jwks": "http://login.example.test/jwks.json"}, "https:// URL"),
        ({"jwks": "ftp://login.example.test/jwks.json"}, "https:// URL"),
        ({"issuer": " "}, "issuer must be a non-empty string"),
        ({"leeway": 3600}, "at most 300 seconds"),
        ({"jwks_ttl": -1}, "must not be negative"),
    ],
)
def test_settings_are_checked(options: dict[str, Any], problem: str) -> None:
    arguments = {"issuer": ISSUER, "audience": AUDIENCE, "jwks": "https://login.example.test/jwks", **options}
    with pytest.raises(InvalidInput, match=problem):
        OidcSettings(**arguments)


# --------------------------------------------------------------------------- over each backend


def test_over_each_backend_a_revoked_member_is_refused_at_once(
    db_url: str, tmp_path: Path, issuer: Issuer
) -> None:
    artifacts = str(tmp_path / "art")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(issuer.jwks()), encoding="utf-8")
    with Registry.open(db_url, artifacts=artifacts, actor=ALICE) as admin:
        kid = _enrol(admin, tmp_path, DANA, ["viewer"], ["credit-*"])
        token, _ = admin.create_token(ALICE)
        team = Team(db_url, artifacts, token)
        with oidc_server(team, OidcSettings(ISSUER, AUDIENCE, str(path))) as url:
            dana = issuer.mint(email=DANA)
            assert call(url, dana).json()["method"] == "oidc"
            refused(call(url, issuer.mint(email=STRANGER)), "is not an enrolled member")
            admin.revoke_key(DANA, kid, reason="left the team")
            refused(call(url, dana), f"{DANA} holds no key that is not revoked")
            assert call(url, team.admin_token).json()["method"] == "token"


# --------------------------------------------------------------------------- configuration and command


def test_settings_come_from_arguments_environment_and_config_files(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()  # the project file search stops here
    project = tmp_path / "modelledger.toml"
    project.write_text(
        '[oidc]\nissuer = "https://project.example.test"\n'
        'audience = "project-aud"\njwks = "keys/jwks.json"\n',
        encoding="utf-8",
    )
    user = tmp_path / "xdg" / "modelledger" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text('[oidc]\nclaim = "sub"\naudience = "user-aud"\n', encoding="utf-8")
    environ = {
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "MODELLEDGER_OIDC_ISSUER": "https://env.example.test",
    }

    got = resolve_oidc(audience="cli-aud", cwd=tmp_path, environ=environ)
    assert {name: (s.value, s.source) for name, s in got.items()} == {
        "issuer": ("https://env.example.test", "MODELLEDGER_OIDC_ISSUER"),
        "audience": ("cli-aud", "argument"),
        "jwks": (str(tmp_path / "keys" / "jwks.json"), str(project)),  # relative to the file
        "claim": ("sub", str(user)),
    }
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / ".git").mkdir(parents=True)  # a repository of its own, without the file
    assert resolve_oidc(cwd=elsewhere, environ={"XDG_CONFIG_HOME": str(tmp_path / "none")}) == {}
    # the registry's own settings still read the same files
    assert resolve_config(cwd=tmp_path, environ=environ).registry.kind == "default"


@pytest.mark.parametrize(
    ("table", "key", "problem"),
    [
        ("[oidc]\nissuer = 5\n", "oidc.issuer", "must be a string"),
        ('[oidc]\nisuer = "https://x"\n', "oidc.isuer", "is not a setting"),
        ('oidc = "https://x"\n', "oidc", "must be a table"),
    ],
)
def test_a_bad_oidc_table_names_the_file_and_key(tmp_path: Path, table: str, key: str, problem: str) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "modelledger.toml").write_text(table, encoding="utf-8")
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    for resolve in (resolve_oidc, resolve_config):
        with pytest.raises(InvalidConfig, match=problem) as caught:
            resolve(cwd=tmp_path, environ=environ)
        assert caught.value.key == key


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["server", *args])
    return result.exit_code, result.stderr


def test_the_command_refuses_half_an_oidc_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ISSUER", "AUDIENCE", "JWKS", "CLAIM"):
        monkeypatch.delenv(f"MODELLEDGER_OIDC_{name}", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # no user file
    (tmp_path / ".git").mkdir()  # nor project file
    monkeypatch.chdir(tmp_path)
    registry = ("--registry", f"sqlite:///{tmp_path / 'r.db'}", "--artifacts", str(tmp_path / "art"))
    code, err = _cli(*registry, "--oidc-issuer", ISSUER, "--oidc-jwks", "https://login.example.test/jwks")
    assert code == 1 and "OIDC needs an issuer, an audience and a JWKS; audience not set" in err
    monkeypatch.setenv("MODELLEDGER_OIDC_AUDIENCE", AUDIENCE)
    code, err = _cli(*registry, "--oidc-issuer", ISSUER, "--oidc-jwks", str(tmp_path / "missing.json"))
    assert code == 1 and "missing.json is not a usable OIDC key set" in err, err
    (tmp_path / "empty.json").write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', encoding="utf-8")
    code, err = _cli(*registry, "--oidc-issuer", ISSUER, "--oidc-jwks", str(tmp_path / "empty.json"))
    assert code == 1 and "holds no public signing key" in err, err


def test_the_command_serves_oidc_tokens(team: Team, issuer: Issuer, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(issuer.jwks()), encoding="utf-8")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELLEDGER_OIDC_")}
    env["MODELLEDGER_OIDC_AUDIENCE"] = AUDIENCE  # the environment and the options mix
    command = [
        str(Path(sys.executable).parent / "modelledger"),
        "server",
        *("--registry", team.url, "--artifacts", team.artifacts, "--port", str(port), "--json"),
        *("--oidc-issuer", ISSUER, "--oidc-jwks", str(path), "--oidc-claim", "email"),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["oidc_issuer"] == ISSUER
        url = f"http://127.0.0.1:{port}"
        _wait_up(url, proc)
        who = call(url, issuer.mint(email=DANA)).json()
        assert (who["name"], who["method"]) == (DANA, "oidc")
        refused(call(url, issuer.mint(aud="another-app")), "wrong audience")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
