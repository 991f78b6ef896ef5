"""Operating the server, for real: uvicorn on loopback, httpx as the client. Metrics count what
was answered, by route template; the access log is one JSON document per request and never
holds a secret; body and time limits answer 413 and 503 with the error body; `modelledger
server` lets requests in flight finish on SIGTERM and shares metrics between its workers."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from fastapi import Body, FastAPI, Request
from prometheus_client.parser import text_string_to_metric_families
from tests.helpers import serve_app
from tests.test_server import _free_port

from modelledger import Registry
from modelledger.cli import main
from modelledger.server import API_PREFIX, ServerOptions, create_app, set_route_limits
from modelledger.server.ops import ACCESS_LOGGER

KiB = 1024


running = serve_app


def _with_test_routes(app: FastAPI) -> FastAPI:
    """Routes that exist only here, to drive the middleware: a body reader, a JSON body, a
    route that sleeps and one that fails in a way no handler maps."""

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return {"size": size}

    @app.post("/document")
    def document(payload: dict[str, Any] = Body(...)) -> dict[str, int]:  # noqa: B008
        return {"keys": len(payload)}

    @app.get("/slow")
    def slow(seconds: float) -> dict[str, float]:
        time.sleep(seconds)
        return {"slept": seconds}

    @app.get("/slow-allowed")
    def slow_allowed(seconds: float) -> dict[str, float]:
        time.sleep(seconds)
        return {"slept": seconds}

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug, not a library error")

    return app


@pytest.fixture
def reg(registry: Registry) -> Registry:
    registry.register("credit-risk", lambda rows: rows, capture=False)
    return registry


def _families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample ``name`` with ``labels`` (0 when there is none)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_metrics_count_requests_by_route_template_and_read_the_ledger_head(reg: Registry) -> None:
    token, _ = reg.create_token("alice@example.com")
    auth = {"Authorization": f"Bearer {token}"}
    app = _with_test_routes(create_app(reg))
    with running(app) as url:
        for _ in range(3):
            assert httpx.get(f"{url}{API_PREFIX}/models", headers=auth).status_code == 200
        for name in ("credit-risk", "no-such-model", "another-one"):
            httpx.get(f"{url}{API_PREFIX}/models/{name}", headers=auth)
        assert httpx.get(f"{url}{API_PREFIX}/models").status_code == 401
        assert httpx.get(f"{url}/no/such/route/{time.time()}").status_code == 404
        assert httpx.get(f"{url}/boom").status_code == 500
        assert httpx.delete(f"{url}/healthz").status_code == 405
        scrape = httpx.get(f"{url}/metrics")
        assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
        text = scrape.text
        head_before = reg.ledger_head()[0]
        reg.create_token("alice@example.com")  # one more ledger event
        after = httpx.get(f"{url}/metrics").text

    requests = "modelledger_http_requests_total"
    models = f"{API_PREFIX}/models"
    assert _sample(text, requests, method="GET", route=models, status="200") == 3
    assert _sample(text, requests, method="GET", route=models, status="401") == 1
    one = f"{API_PREFIX}/models/{{name}}"
    assert _sample(text, requests, method="GET", route=one, status="200") == 1
    assert _sample(text, requests, method="GET", route=one, status="404") == 2
    assert _sample(text, requests, method="GET", route="unmatched", status="404") == 1
    assert _sample(text, requests, method="DELETE", route="/healthz", status="405") == 1
    assert _sample(text, requests, method="GET", route="/boom", status="500") == 1
    # only 5xx are errors
    errors = "modelledger_http_server_errors_total"
    assert _sample(text, errors, route="/boom", status="500") == 1
    assert (
        sum(s.value for s in _families(text)["modelledger_http_server_errors"].samples if s.name == errors)
        == 1
    )
    # the histogram counts every request of the route (the 401 too), its buckets cumulative
    duration = "modelledger_http_request_duration_seconds"
    assert _sample(text, f"{duration}_count", method="GET", route=models) == 4
    assert _sample(text, f"{duration}_bucket", method="GET", route=models, le="+Inf") == 4
    assert 0 < _sample(text, f"{duration}_sum", method="GET", route=models) < 30
    # no raw path becomes a label: the names asked for appear nowhere
    for raw in ("no-such-model", "another-one", "/no/such/route"):
        assert raw not in text
    # the ledger head, read at each scrape
    assert _sample(text, "modelledger_ledger_head_seq") == head_before
    assert _sample(after, "modelledger_ledger_head_seq") == head_before + 1
    # the scrape before counts in the next one
    assert _sample(after, requests, method="GET", route="/metrics", status="200") == 1


def test_every_request_has_an_id_and_one_access_log_line_without_secrets(
    reg: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    token, _ = reg.create_token("alice@example.com")
    auth = {"Authorization": f"Bearer {token}"}
    app = create_app(reg)
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER), running(app) as url:
        given = httpx.get(
            f"{url}{API_PREFIX}/models/credit-risk",
            params={"token": token, "secret": "hunter2"},
            headers={**auth, "X-Request-ID": "trace-42.a:b"},
        )
        made = httpx.get(f"{url}{API_PREFIX}/whoami", headers={**auth, "X-Request-ID": "no spaces allowed"})
        too_long = httpx.get(f"{url}/healthz", headers={"X-Request-ID": "x" * 200})
        refused = httpx.get(f"{url}{API_PREFIX}/models", headers={"Authorization": f"Bearer {token}x"})
        missing = httpx.get(f"{url}{API_PREFIX}/models/nope", headers=auth)
    assert given.headers["x-request-id"] == "trace-42.a:b"
    made_ids = [r.headers["x-request-id"] for r in (made, too_long, refused, missing)]
    assert len(set(made_ids)) == 4, made_ids  # a fresh id for each: the process's prefix, a counter
    assert all(re.fullmatch(r"[0-9a-f]{24}", i) for i in made_ids), made_ids
    assert len({i[:16] for i in made_ids}) == 1
    lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER]
    assert len(lines) == 5
    entries = [json.loads(line) for line in lines]
    for line in lines:
        assert token not in line and token[:12] not in line  # neither the token nor its prefix
        assert "hunter2" not in line and "Bearer" not in line and "?" not in line
    first, second, third, fourth, fifth = entries
    assert set(first) == {
        "time",
        "method",
        "route",
        "path",
        "status",
        "duration_ms",
        "client",
        "member",
        "request_id",
    }
    assert first["time"].endswith("+00:00") and "T" in first["time"]
    assert first["method"] == "GET"
    assert first["route"] == f"{API_PREFIX}/models/{{name}}"
    assert first["path"] == f"{API_PREFIX}/models/credit-risk"
    assert first["status"] == 200 and first["member"] == "alice@example.com"
    assert first["client"] == "127.0.0.1" and first["request_id"] == "trace-42.a:b"
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] > 0
    assert second["request_id"] == made.headers["x-request-id"] and second["member"] == "alice@example.com"
    assert third["route"] == "/healthz" and third["member"] is None
    assert fourth["status"] == 401 and fourth["member"] is None  # who calls is not proven
    assert fifth["status"] == 404 and fifth["member"] == "alice@example.com"


def test_the_access_log_can_be_turned_off(reg: Registry, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(reg, options=ServerOptions(access_log=False))
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER), running(app) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert "x-request-id" in httpx.get(f"{url}/healthz").headers
    assert [r for r in caplog.records if r.name == ACCESS_LOGGER] == []


def test_a_body_over_the_limit_is_413_with_the_error_body(reg: Registry) -> None:
    app = _with_test_routes(create_app(reg, options=ServerOptions(max_body=1 * KiB)))
    set_route_limits(app, "POST", "/upload", max_body=16 * KiB)

    def chunks(size: int) -> Iterator[bytes]:  # sent chunked: no Content-Length to check first
        for _ in range(size // 256):
            yield b"x" * 256

    with running(app) as url:
        assert httpx.post(f"{url}/echo", content=b"x" * KiB).json() == {"size": KiB}
        cases = {
            "declared": httpx.post(f"{url}/echo", content=b"x" * (KiB + 1)),
            "chunked": httpx.post(f"{url}/echo", content=chunks(4 * KiB)),
            "json chunked": httpx.post(
                f"{url}/document", content=chunks(4 * KiB), headers={"Content-Type": "application/json"}
            ),
            "a read route": httpx.request("GET", f"{url}{API_PREFIX}/models", content=b"x" * 2 * KiB),
            "the upload's own limit": httpx.post(f"{url}/upload", content=chunks(32 * KiB)),
        }
        # the route whose limit was raised takes more, streamed or declared
        assert httpx.post(f"{url}/upload", content=chunks(12 * KiB)).json() == {"size": 12 * KiB}
        assert httpx.post(f"{url}/upload", content=b"y" * 12 * KiB).json() == {"size": 12 * KiB}
        assert httpx.post(f"{url}/document", json={"a": 1}).json() == {"keys": 1}
        metrics = httpx.get(f"{url}/metrics").text
    for case, response in cases.items():
        assert response.status_code == 413, (case, response.text)
        assert response.json()["error"] == "RequestTooLarge", case
        assert set(response.json()) == {"error", "message"}
        assert "x-request-id" in response.headers
    assert "1 KiB" not in cases["declared"].json()["message"]
    assert "1024 bytes" in cases["declared"].json()["message"]
    assert "16384 bytes" in cases["the upload's own limit"].json()["message"]
    assert _sample(metrics, "modelledger_http_requests_total", route="/echo", status="413") == 2


def test_a_response_that_does_not_start_in_time_is_503(reg: Registry) -> None:
    app = _with_test_routes(create_app(reg, options=ServerOptions(timeout=0.5)))
    set_route_limits(app, "GET", "/slow-allowed", timeout=None)
    with running(app) as url:
        began = time.monotonic()
        late = httpx.get(f"{url}/slow", params={"seconds": 3})
        waited = time.monotonic() - began
        assert httpx.get(f"{url}/slow", params={"seconds": 0.05}).json() == {"slept": 0.05}
        assert httpx.get(f"{url}/slow-allowed", params={"seconds": 1}).json() == {"slept": 1}
        assert httpx.get(f"{url}/healthz").status_code == 200
        metrics = httpx.get(f"{url}/metrics").text
    assert late.status_code == 503, late.text
    assert late.json()["error"] == "ResponseTimeout" and "0.5 s" in late.json()["message"]
    assert "x-request-id" in late.headers
    assert waited < 2.5  # answered at the limit, not when the route finished
    assert _sample(metrics, "modelledger_http_server_errors_total", route="/slow", status="503") == 1


def test_an_unmapped_error_is_a_500_with_the_error_body_and_an_id(
    reg: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    app = _with_test_routes(create_app(reg))
    with caplog.at_level(logging.INFO), running(app) as url:
        response = httpx.get(f"{url}/boom")
    assert response.status_code == 500
    assert response.json() == {
        "error": "InternalError",
        "message": "unexpected error in the server; its log has the details",
    }
    assert "a bug" not in response.text
    logged = [r for r in caplog.records if r.name == "modelledger.server" and r.exc_info]
    assert logged and "a bug" in str(logged[0].exc_info[1])  # type: ignore[index]
    (access,) = [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]
    assert access["status"] == 500 and access["request_id"] == response.headers["x-request-id"]


def test_server_options_are_checked() -> None:
    for bad in ({"max_body": -1}, {"timeout": 0}, {"graceful_timeout": -1}):
        with pytest.raises(ValueError):
            ServerOptions(**bad)


def test_the_command_refuses_a_size_it_cannot_read() -> None:
    result = CliRunner().invoke(main, ["server", "--max-body", "12XB"])
    assert result.exit_code == 2 and "12XB" in result.output
    result = CliRunner().invoke(main, ["server", "--workers", "0"])
    assert result.exit_code == 2


# ----------------------------------------------------------------------- `modelledger server`


def _start(*args: str, env: dict[str, str] | None = None) -> tuple[str, subprocess.Popen[str]]:
    port = _free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "modelledger"), "server", *args, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.communicate()
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return url, proc
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "modelledger server did not start"
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    return proc.returncode, err


@contextmanager
def _ledger_head_locked(db_url: str) -> Iterator[sa.Connection]:
    """A transaction holding the ledger head row's table so that no one reads it: a server
    request that reads it (a metrics scrape) waits until the transaction ends."""
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("BEGIN")
            conn.exec_driver_sql("LOCK TABLE ledger_head IN ACCESS EXCLUSIVE MODE")
            try:
                yield conn
            finally:
                conn.exec_driver_sql("ROLLBACK")
    finally:
        engine.dispose()


def _waiting_on_lock(db_url: str) -> bool:
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            query = "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'ledger_head'::regclass"
            return bool(conn.exec_driver_sql(query).scalar())
    finally:
        engine.dispose()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(reg: Registry, db_url: str) -> None:
    url, proc = _start("--registry", db_url, "--artifacts", reg.artifact_root, "--graceful-timeout", "30")
    answers: list[httpx.Response] = []
    try:
        with _ledger_head_locked(db_url):
            scrape = threading.Thread(target=lambda: answers.append(httpx.get(url + "/metrics", timeout=60)))
            scrape.start()
            deadline = time.monotonic() + 20
            while not _waiting_on_lock(db_url):  # the scrape is in flight, blocked on the database
                assert time.monotonic() < deadline, "the scrape never reached the database"
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            assert proc.poll() is None, "the server stopped with a request in flight"
            with pytest.raises(httpx.TransportError):  # and takes no new request meanwhile
                httpx.get(url + "/healthz", timeout=5)
        scrape.join(timeout=30)
        code, err = _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert [a.status_code for a in answers] == [200], err
    assert _sample(answers[0].text, "modelledger_ledger_head_seq") == reg.ledger_head()[0]
    assert code == 0, err
    # our access log replaces uvicorn's: JSON lines only
    access = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert {(a["route"], a["status"]) for a in access} >= {("/healthz", 200), ("/metrics", 200)}
    assert '"GET /metrics HTTP/1.1"' not in err


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_command_applies_its_limits(reg: Registry, db_url: str) -> None:
    url, proc = _start(
        "--registry",
        db_url,
        "--artifacts",
        reg.artifact_root,
        "--max-body",
        "1KiB",
        "--timeout",
        "0.5",
        "--no-access-log",
    )
    try:
        big = httpx.request("GET", f"{url}/healthz", content=b"x" * 2 * KiB)
        small = httpx.request("GET", f"{url}/healthz", content=b"x" * KiB)
        with _ledger_head_locked(db_url):
            began = time.monotonic()
            late = httpx.get(url + "/metrics", timeout=30)
            waited = time.monotonic() - began
    finally:
        code, err = _stop(proc)
    assert (big.status_code, big.json()["error"]) == (413, "RequestTooLarge")
    assert small.status_code == 200
    assert (late.status_code, late.json()["error"]) == (503, "ResponseTimeout") and waited < 5
    assert code == 0, err
    assert not [line for line in err.splitlines() if line.startswith("{")]  # --no-access-log
    assert '"GET /healthz HTTP/1.1"' not in err  # nor uvicorn's


def test_workers_share_their_metrics(reg: Registry, db_url: str, tmp_path: Path) -> None:
    token, _ = reg.create_token("alice@example.com")
    folder = tmp_path / "metrics"
    folder.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(folder)}
    url, proc = _start("--registry", db_url, "--artifacts", reg.artifact_root, "--workers", "2", env=env)
    auth = {"Authorization": f"Bearer {token}"}
    sent = 0
    try:
        deadline = time.monotonic() + 60
        # until both workers have answered some (the kernel picks which accepts a connection)
        while len({p.name.split("_")[-1] for p in folder.glob("counter_*.db")}) < 2:
            assert time.monotonic() < deadline, "one worker answered every request"
            threads = [
                threading.Thread(target=lambda: httpx.get(f"{url}{API_PREFIX}/models", headers=auth))
                for _ in range(8)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            sent += len(threads)
        scrapes = [httpx.get(url + "/metrics").text for _ in range(6)]
    finally:
        code, err = _stop(proc)
    assert err.count("Started server process") == 2, err
    for text in scrapes:  # whichever worker answers, the sum over both
        assert (
            _sample(text, "modelledger_http_requests_total", route=f"{API_PREFIX}/models", status="200")
            == sent
        )
    assert _sample(scrapes[-1], "modelledger_ledger_head_seq") == reg.ledger_head()[0]
    assert code == 0, err
