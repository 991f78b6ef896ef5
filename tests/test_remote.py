"""The remote registry: ``Registry.open("http://...")`` against a live server writing on members'
behalf, over SQLite and over PostgreSQL with artefacts on the S3 protocol server.

The server holds a gateway key of its own; each client holds a token and, for key-signed
calls, the member's own key. Every write must be recorded as the member's, refused when the
member lacks the role, and nothing a client sends may change who acts.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.test_server import running

from modelledger import (
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Registry,
    create_identity,
)
from modelledger._delegation import SIGNATURE_HEADER, sign_request
from modelledger._keys import load_private_key
from modelledger._remote import MANIFEST_MEMBER, RemoteRegistry
from modelledger._signing import Identity, identity_path

GATEWAY = "gateway@example.com"


@dataclass
class Team:
    url: str
    local: Registry  # alice, on the stores themselves
    alice: RemoteRegistry  # contributor: key-signed calls (her key is on this machine)
    bob: RemoteRegistry  # approver and deployer, key-signed
    carol: RemoteRegistry  # viewer: token only
    tokens: dict[str, str]
    artifacts: str
    storage: dict[str, Any]
    db_url: str


@pytest.fixture(params=["sqlite", "postgresql+s3"])
def team(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Team]:
    storage: dict[str, Any] = {}
    if request.param == "sqlite":
        from tests.conftest import enrol_cast

        db_url = f"sqlite:///{tmp_path / 'registry.db'}"
        enrol_cast(db_url, str(tmp_path / "art"))
        artifacts = str(tmp_path / "artifacts")
    else:
        from tests.conftest import _pg_reset, enrol_cast

        db_url = str(request.getfixturevalue("pg_url"))
        _pg_reset(db_url)
        artifacts, storage = request.getfixturevalue("s3_artifacts")
        enrol_cast(db_url, artifacts)
    root = Registry.open(db_url, artifacts=artifacts, storage_options=storage, actor="root@example.com")
    gateway_key = tmp_path / "gateway.key"
    _path, _kid, gateway_pem = create_identity(GATEWAY, gateway_key)
    root.enrol(GATEWAY, gateway_pem, roles=["gateway"])
    for name, roles in (
        ("ann@example.com", ["contributor"]),
        ("ben@example.com", ["approver", "deployer"]),
        ("cat@example.com", ["viewer"]),
    ):
        pem = Identity(identity_path(name), create=True).public_pem()  # the session keeps one key per name
        root.enrol(name, pem, roles=roles)
    tokens = {
        name: root.create_token(name)[0] for name in ("ann@example.com", "ben@example.com", "cat@example.com")
    }
    server = Registry.open(db_url, artifacts=artifacts, storage_options=storage, identity=gateway_key)
    local = Registry.open(db_url, artifacts=artifacts, storage_options=storage, actor="ann@example.com")
    monkeypatch.setenv("MODELLEDGER_CACHE", str(tmp_path / "cache"))
    with running(server) as base:
        clients = [
            RemoteRegistry(base, token=tokens["ann@example.com"]),
            RemoteRegistry(base, token=tokens["ben@example.com"]),
            RemoteRegistry(base, token=tokens["cat@example.com"], key=tmp_path / "no-key"),
        ]
        yield Team(base, local, *clients, tokens=tokens, artifacts=artifacts, storage=storage, db_url=db_url)
        for client in clients:
            client.close()
    server.close()
    local.close()
    root.close()


def _register(team: Team, pipeline: Any, X: Any) -> str:
    return team.alice.register("credit-risk", pipeline, sample_input=X.head(), metrics={"auc": 0.84}).uri


def test_open_with_an_http_url_gives_the_remote_registry(team: Team, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELLEDGER_TOKEN", team.tokens["cat@example.com"])
    with Registry.open(team.url) as reg:
        assert isinstance(reg, RemoteRegistry)
        assert reg.actor == "cat@example.com"
    monkeypatch.delenv("MODELLEDGER_TOKEN")
    with pytest.raises(InvalidInput, match="MODELLEDGER_TOKEN"):
        Registry.open(team.url)


def test_the_whole_story_over_http_is_recorded_as_the_members(
    team: Team, credit_data: Any, fitted_pipeline: Any
) -> None:
    X, _y = credit_data
    uri = _register(team, fitted_pipeline, X)
    mv = team.alice.get_version(uri)
    assert mv == team.local.get_version(uri)  # the same type and the same value as local
    assert team.bob.state(uri).stage == team.local.state(uri).stage
    team.bob.approve(uri, reason="holdout AUC 0.84")
    state = team.bob.deploy(uri, reason="release 1")
    assert state.stage == "deployed"
    assert team.local.get_version("models:/credit-risk@production").version == mv.version

    events = team.local.history(uri)
    by_action = {e.action: e for e in events}
    assert by_action["version.registered"].actor == "ann@example.com"
    assert by_action["version.approved"].actor == "ben@example.com"
    assert by_action["deployment.deployed"].actor == "ben@example.com"
    for e in (by_action["version.registered"], by_action["version.approved"]):
        assert e.data["via"]["server"] == GATEWAY
        assert e.data["via"]["method"] == "key"  # signed by the member's own key, re-checked by verify
    report = team.local.verify()
    assert report.ok, [str(p) for p in report.problems]
    assert report.delegated.get("key", 0) >= 4

    loaded = team.carol.load("models:/credit-risk@production")
    local = team.local.load("models:/credit-risk@production")
    assert np.allclose(loaded.predict(X.head(20)), local.predict(X.head(20)))
    fetched = team.carol.bytes_downloaded
    assert fetched == sum(f.size for f in mv.files)
    again = team.carol.load(uri)
    assert team.carol.bytes_downloaded == fetched  # the cache answered
    assert np.allclose(again.predict(X.head(5)), local.predict(X.head(5)))


def test_server_errors_come_back_as_the_same_library_errors(
    team: Team, credit_data: Any, fitted_pipeline: Any
) -> None:
    X, _y = credit_data
    uri = _register(team, fitted_pipeline, X)
    with pytest.raises(NotFound):
        team.carol.get_version("models:/credit-risk/99")
    with pytest.raises(PermissionDenied):
        team.carol.approve(uri, reason="a viewer may not")  # refused before anything is written
    with pytest.raises(PermissionDenied):
        team.alice.approve(uri, reason="a contributor may not approve")
    with pytest.raises(Conflict):
        team.bob.deploy(uri, reason="not approved yet")
    with pytest.raises(PermissionDenied, match="protected"):
        team.alice.set_alias("credit-risk", "production", 1)  # refused by the store, as locally
    assert team.local.verify().ok


def test_a_token_without_the_members_key_is_attested_by_the_server(
    team: Team, credit_data: Any, fitted_pipeline: Any, tmp_path: Path
) -> None:
    X, _y = credit_data
    uri = _register(team, fitted_pipeline, X)
    browser = RemoteRegistry(team.url, token=team.tokens["ben@example.com"], key=tmp_path / "no-key")
    browser.approve(uri, reason="approved from the web page")
    approved = next(e for e in team.local.history(uri) if e.action == "version.approved")
    assert approved.actor == "ben@example.com"
    assert approved.data["via"] == {"server": GATEWAY, "method": "token", "principal": "ben@example.com"}
    report = team.local.verify()
    assert report.ok and report.delegated["token"] == 1
    browser.close()


def _post(
    team: Team, path: str, token: str, body: bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.post(
        team.url + "/api/v1" + path,
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json", **(headers or {})},
        timeout=60,
    )


def test_nothing_a_client_sends_changes_who_acts(team: Team, credit_data: Any, fitted_pipeline: Any) -> None:
    X, _y = credit_data
    uri = _register(team, fitted_pipeline, X)
    path = "/models/credit-risk/versions/1/approve"
    ben = team.tokens["ben@example.com"]
    body = b'{"reason": "ok"}'
    # a body field naming the actor is refused, a header naming another user is ignored
    assert _post(team, path, ben, b'{"reason": "ok", "actor": "root@example.com"}').status_code == 422
    # signed by someone else's key (ann's) for ben's token: refused, nothing written
    ann_key = load_private_key(identity_path("ann@example.com"))
    forged = sign_request(
        ann_key,
        member="ben@example.com",
        method="POST",
        path="/api/v1" + path,
        body_sha256=hashlib.sha256(body).hexdigest(),
    )
    response = _post(team, path, ben, body, {SIGNATURE_HEADER: forged})
    assert response.status_code == 403, response.text
    # ben's own signature over another body: refused
    ben_key = load_private_key(identity_path("ben@example.com"))
    other = sign_request(
        ben_key,
        member="ben@example.com",
        method="POST",
        path="/api/v1" + path,
        body_sha256=hashlib.sha256(b'{"reason": "other"}').hexdigest(),
    )
    assert _post(team, path, ben, body, {SIGNATURE_HEADER: other}).status_code == 403
    assert team.local.state(uri).stage != "approved"
    # a valid signature works once; replayed, it is refused
    good = sign_request(
        ben_key,
        member="ben@example.com",
        method="POST",
        path="/api/v1" + path,
        body_sha256=hashlib.sha256(body).hexdigest(),
    )
    first = _post(team, path, ben, body, {SIGNATURE_HEADER: good, "X-Modelledger-User": "root@example.com"})
    assert first.status_code == 200, first.text
    assert _post(team, path, ben, body, {SIGNATURE_HEADER: good}).status_code == 403
    approved = next(e for e in team.local.history(uri) if e.action == "version.approved")
    assert approved.actor == "ben@example.com" and approved.data["via"]["method"] == "key"
    assert team.local.verify().ok


def _tar(members: list[tuple[str, bytes]], *, kind: bytes = tarfile.REGTYPE) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if name != MANIFEST_MEMBER:
                info.type = kind
                if kind == tarfile.SYMTYPE:
                    info.linkname = "/etc/passwd"
                    info.size = 0
                    archive.addfile(info)
                    continue
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _header(files: dict[str, str]) -> bytes:
    manifest = {"flavor": "files"}
    return json.dumps({"manifest": manifest, "files": files}).encode()


@pytest.mark.parametrize(
    "case",
    [
        "wrong digest",
        "truncated",
        "path leaves the folder",
        "absolute path",
        "link",
        "undeclared file",
        "no header",
    ],
)
def test_bad_uploads_are_refused_and_leave_nothing(team: Team, case: str) -> None:
    data = b"weights" * 1000
    good = hashlib.sha256(data).hexdigest()
    name = "model.bin"
    files = {name: good}
    members = [(MANIFEST_MEMBER, _header(files)), (name, data)]
    kind = tarfile.REGTYPE
    if case == "wrong digest":
        members[0] = (MANIFEST_MEMBER, _header({name: "0" * 64}))
    elif case == "path leaves the folder":
        members = [(MANIFEST_MEMBER, _header({"../escape.bin": good})), ("../escape.bin", data)]
    elif case == "absolute path":
        members = [(MANIFEST_MEMBER, _header({"/tmp/escape.bin": good})), ("/tmp/escape.bin", data)]
    elif case == "link":
        kind = tarfile.SYMTYPE
    elif case == "undeclared file":
        members.append(("extra.bin", data))
    elif case == "no header":
        members = [(name, data)]
    body = _tar(members, kind=kind)
    if case == "truncated":
        body = body[: len(body) // 2]
    response = httpx.post(
        team.url + "/api/v1/models/uploaded/versions",
        content=body,
        headers={
            "Authorization": f"Bearer {team.tokens['ann@example.com']}",
            "Content-Type": "application/x-tar",
        },
        timeout=60,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] in ("InvalidInput", "IntegrityError")
    with pytest.raises(NotFound):
        team.local.get_model("uploaded")
    report = team.local.verify(grace="0")
    assert report.ok and not report.in_flight, [str(p) for p in (*report.problems, *report.in_flight)]


def test_a_broken_download_resumes_with_a_range(team: Team, credit_data: Any, fitted_pipeline: Any) -> None:
    X, _y = credit_data
    uri = _register(team, fitted_pipeline, X)
    mv = team.local.get_version(uri)
    entry = max(mv.files, key=lambda f: f.size)
    url = f"{team.url}/api/v1/models/credit-risk/versions/{mv.version}/files/{entry.path}"
    auth = {"Authorization": f"Bearer {team.tokens['cat@example.com']}"}
    head = httpx.get(url, headers={**auth, "Range": "bytes=0-99"}, timeout=60)
    assert head.status_code == 206 and len(head.content) == 100
    assert head.headers["content-range"] == f"bytes 0-99/{entry.size}"
    rest = httpx.get(url, headers={**auth, "Range": "bytes=100-"}, timeout=60)
    assert rest.status_code == 206
    assert hashlib.sha256(head.content + rest.content).hexdigest() == entry.sha256
    assert (
        httpx.get(url, headers={**auth, "Range": f"bytes={entry.size + 5}-"}, timeout=60).status_code == 416
    )
    whole = httpx.get(url, headers=auth, timeout=60)
    assert whole.headers["etag"] == f'"{entry.sha256}"'
    assert hashlib.sha256(whole.content).hexdigest() == entry.sha256


def test_two_servers_over_one_postgresql_register_concurrently(
    pg_url: str, s3_artifacts: tuple[str, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stateless servers: two processes over one database and bucket, four writers, one registry."""
    import subprocess
    import sys
    import threading

    from tests.conftest import _pg_reset, enrol_cast
    from tests.test_server import _free_port, _wait_up

    _pg_reset(pg_url)
    artifacts, storage = s3_artifacts
    enrol_cast(pg_url, artifacts)
    root = Registry.open(pg_url, artifacts=artifacts, storage_options=storage, actor="root@example.com")
    gateway_key = tmp_path / "gateway.key"
    _p, _k, pem = create_identity(GATEWAY, gateway_key)
    root.enrol(GATEWAY, pem, roles=["gateway"])
    token, _ = root.create_token("alice@example.com")
    monkeypatch.setenv("MODELLEDGER_CACHE", str(tmp_path / "cache"))
    env = {**os.environ, "MODELLEDGER_IDENTITY": str(gateway_key)}
    servers = []
    urls = []
    for _ in range(2):
        port = _free_port()
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "modelledger"),
                "server",
                "--registry",
                pg_url,
                "--artifacts",
                artifacts,
                "--storage-option",
                f"endpoint_url={storage['endpoint_url']}",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        servers.append(proc)
        urls.append(f"http://127.0.0.1:{port}")
    errors: list[BaseException] = []
    try:
        for url, proc in zip(urls, servers, strict=True):
            _wait_up(url, proc)

        def write(url: str) -> None:
            client = RemoteRegistry(url, token=token)
            try:
                for _ in range(25):
                    client.register("shared", lambda rows: rows, capture=False)
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)
            finally:
                client.close()

        threads = [threading.Thread(target=write, args=(urls[i % 2],)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(timeout=30)
            assert proc.stderr is not None
            proc.stderr.close()
    assert errors == []
    numbers = [v.version for v in root.iter_versions("shared")]
    assert sorted(numbers) == list(range(1, 101))
    report = root.verify()
    assert report.ok, [str(p) for p in report.problems]
    assert report.delegated == {
        "key": 100 * len([e for e in root.history("models:/shared/1") if "via" in e.data])
    }
    root.close()


def test_the_command_line_works_against_a_server(
    team: Team, credit_data: Any, fitted_pipeline: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from modelledger.cli import main

    X, _y = credit_data
    uri = _register(team, fitted_pipeline, X)
    runner = CliRunner()

    def run(token: str, *args: str, code: int = 0) -> Any:
        monkeypatch.setenv("MODELLEDGER_TOKEN", token)
        result = runner.invoke(main, [*args, "--registry", team.url])
        assert result.exit_code == code, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        return result

    listed = json.loads(
        run(team.tokens["cat@example.com"], "versions", "list", "credit-risk", "--json").stdout
    )
    assert [v["uri"] for v in listed["items"]] == [uri]
    run(team.tokens["ben@example.com"], "approve", uri, "--reason", "reviewed")
    assert team.local.state(uri).stage == "approved"
    denied = run(team.tokens["cat@example.com"], "deploy", uri, "--reason", "a viewer", code=1)
    assert "deployer" in denied.stderr
    run(team.tokens["ben@example.com"], "deploy", uri, "--reason", "release 1")
    shown = json.loads(run(team.tokens["cat@example.com"], "versions", "show", uri, "--json").stdout)
    assert shown["stage"] == "deployed"


def test_data_sets_over_http(team: Team, credit_data: Any, fitted_pipeline: Any, tmp_path: Path) -> None:
    X, y = credit_data
    frame = X.assign(defaulted=y).iloc[:150]
    dv = team.alice.datasets.register(
        "applications", frame, source={"uri": "postgresql://dwh/loans", "kind": "query", "query": "SELECT 1"}
    )
    assert dv == team.local.datasets.get(dv.uri)  # the same type and value as locally
    assert dv.source.code  # provenance captured on the client
    again = team.alice.datasets.register("applications", frame)
    assert again.uri == dv.uri  # the same content is the version it already is
    frame.to_csv(tmp_path / "extract.csv", index=False)
    from_csv = team.alice.datasets.register("applications-csv", str(tmp_path / "extract.csv"))
    assert from_csv.row_count == 150
    # the table read back is the one stored, checked against its sha256, and cached
    table = team.carol.datasets.read(dv.uri)
    assert table.equals(team.local.datasets.read(dv.uri))
    fetched = team.carol.bytes_downloaded
    assert team.carol.datasets.preview(dv.uri, limit=5).num_rows == 5
    assert team.carol.bytes_downloaded == fetched
    assert [v.uri for v in team.carol.datasets.versions("applications")] == [dv.uri]
    uri = team.alice.register(
        "credit-risk", fitted_pipeline, sample_input=X.head(), datasets={"train": dv.uri}
    ).uri
    assert team.carol.datasets.used_by(dv.uri) == [(uri, "train")]
    # data given as a frame is registered first, as <model>-<role>, then used
    inline = team.alice.register(
        "credit-risk", fitted_pipeline, sample_input=X.head(), datasets={"holdout": frame.tail(40)}
    )
    holdout = team.local.datasets.get("credit-risk-holdout")
    assert holdout.row_count == 40 and team.local.datasets.used_by(holdout.uri) == [(inline.uri, "holdout")]
    assert set(team.carol.lineage(uri).nodes) >= {dv.uri, uri}
    with pytest.raises(PermissionDenied):
        team.carol.datasets.register("applications", frame)  # a viewer may not
    registered = next(e for e in team.local.audit(action="dataset.registered") if e.data["uri"] == dv.uri)
    assert registered.actor == "ann@example.com" and registered.data["via"]["method"] == "key"
    assert team.local.verify().ok


def test_names_erasure_and_predictions_over_http(team: Team, credit_data: Any, fitted_pipeline: Any) -> None:
    X, _y = credit_data
    uri = _register(team, fitted_pipeline, X)
    team.bob.approve(uri, reason="ok")
    team.bob.deploy(uri, reason="release 1")
    # an admin (who may also serve) of the cast enrolled in every registry of the tests
    admin = Registry.open(
        team.db_url, artifacts=team.artifacts, storage_options=team.storage, actor="alice@example.com"
    )
    alice = RemoteRegistry(team.url, token=admin.create_token("alice@example.com")[0])
    with admin.load("models:/credit-risk@production", capture=True, flush_rows=1) as served:
        receipt = served.predict(X.head(3)).receipts[0]
    table = team.carol.predictions("credit-risk")
    assert table.equals(team.local.predictions("credit-risk"))
    assert team.carol.predictions(uri).num_rows == 3
    assert team.carol.prediction(receipt.prediction_id) == team.local.prediction(receipt.prediction_id)
    with pytest.raises(PermissionDenied):
        team.alice.archive_model("credit-risk")  # a contributor may not
    assert alice.archive_model("credit-risk", reason="superseded").archived
    assert not alice.unarchive_model("credit-risk").archived
    renamed = alice.rename_model("credit-risk", "credit-pd", reason="naming scheme")
    assert renamed.name == "credit-pd" and team.local.get_model("credit-pd").name == "credit-pd"
    erasure = alice.erase("predictions:/credit-pd/1", reason="retention ended")
    assert erasure == team.local.verify().erased[0]
    events = team.local.audit(action="predictions.erased")
    assert [e.actor for e in events] == ["alice@example.com"] and events.items[0].data["via"][
        "method"
    ] == "key"
    assert team.local.verify().ok
    alice.close()
    admin.close()
    admin.close()
