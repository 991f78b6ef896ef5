"""Following the ledger: ``GET /api/v1/events`` as Server-Sent Events over a live server, and
webhooks posted to a real loopback receiver that fails and recovers; the ``webhooks`` commands.

Every test runs on SQLite and on PostgreSQL (the ``db_url`` fixture)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from tests.helpers import LoopbackHTTP
from tests.test_server import _free_port, _serve_cli, _wait_up, running

from modelledger import (
    InvalidInput,
    LedgerEvent,
    NotFound,
    PermissionDenied,
    Registry,
    create_identity,
)
from modelledger.cli import main
from modelledger.server import API_PREFIX, events

# ---------------------------------------------------------------------------- helpers


def _messages(response: httpx.Response) -> Iterator[dict[str, str]]:
    """The Server-Sent Events of a streamed response, one dict of fields per message; a comment
    line comes as ``{"comment": text}``."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if fields:
                yield fields
                fields = {}
            continue
        if line.startswith(":"):
            yield {"comment": line[1:].strip()}
            continue
        name, _, value = line.partition(":")
        fields[name] = value[1:] if value.startswith(" ") else value


def _events_until(messages: Iterator[dict[str, str]], last_seq: int) -> list[dict[str, str]]:
    """The event messages of a stream (:func:`_messages`) up to the one whose id is ``last_seq``."""
    out = []
    for msg in messages:
        if "data" not in msg or msg.get("event") == "error":
            assert "retry" in msg or "comment" in msg, msg
            continue
        out.append(msg)
        if int(msg["id"]) >= last_seq:
            return out
    raise AssertionError(f"the stream ended before event {last_seq}: {out}")


def _models_of(event: LedgerEvent) -> set[str]:
    """The models an event is about, worked out here independently of the library's rule."""
    names = {event.data[k] for k in ("model", "new_name") if isinstance(event.data.get(k), str)}
    for prefix in ("models:/", "predictions:/"):
        if event.subject.startswith(prefix):
            names.add(event.subject[len(prefix) :].replace("@", "/").split("/")[0])
    return names


@dataclass
class Setup:
    url: str
    alice: Registry  # an admin, as the Python API sees the registry
    admin_token: str
    viewer_token: str  # dana: viewer of credit-* only
    viewer_token_id: str

    def stream(self, token: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        return httpx.stream("GET", f"{self.url}{API_PREFIX}/events", headers=headers, timeout=20, **kwargs)


@pytest.fixture
def setup(db_url: str, tmp_path: Path) -> Iterator[Setup]:
    art = str(tmp_path / "artifacts")
    alice = Registry.open(db_url, artifacts=art, actor="alice@example.com")
    first = alice.register("credit-risk", lambda rows: rows, capture=False)
    alice.register("fraud", lambda rows: rows, capture=False)
    alice.set_alias("credit-risk", "champion", first.version)
    alice.set_alias("fraud", "champion", 1)
    _path, _kid, pem = create_identity("dana@example.com", tmp_path / "dana.key")
    alice.enrol("dana@example.com", pem, roles=["viewer"], models=["credit-*"])
    admin_token, _ = alice.create_token("alice@example.com")
    viewer_token, viewer_record = alice.create_token("dana@example.com")
    server_registry = Registry.open(db_url, artifacts=art)
    with running(server_registry) as url:
        yield Setup(url, alice, admin_token, viewer_token, viewer_record.id)
    server_registry.close()
    alice.close()


# ---------------------------------------------------------------------------- the event stream


def test_the_stream_sends_the_past_then_each_new_event(setup: Setup) -> None:
    reg = setup.alice
    past = reg.events_after(0, limit=1000)
    assert len(past) > 10 and [e.seq for e in past] == list(range(1, len(past) + 1))
    with setup.stream(setup.admin_token, params={"after": 0}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = _messages(response)
        got = _events_until(stream, past[-1].seq)
        assert [(int(m["id"]), m["event"]) for m in got] == [(e.seq, e.action) for e in past]
        assert [json.loads(m["data"]) for m in got] == [e.to_dict() for e in past]
        # appended while the stream is open: it arrives on the same stream
        reg.set_alias("fraud", "candidate", 1, reason="shadow run")
        (new,) = _events_until(stream, past[-1].seq + 1)
    (appended,) = reg.events_after(past[-1].seq)
    assert (int(new["id"]), new["event"]) == (appended.seq, "alias.set")
    assert json.loads(new["data"]) == appended.to_dict()
    assert appended.data["alias"] == "candidate"


def test_after_and_last_event_id_resume_the_stream(setup: Setup) -> None:
    reg = setup.alice
    head = reg.last_event_seq()
    with setup.stream(setup.admin_token, params={"after": head - 3}) as response:
        got = _events_until(_messages(response), head)
    assert [int(m["id"]) for m in got] == [head - 2, head - 1, head]
    # a reconnecting EventSource sends Last-Event-ID: it wins over ?after=
    with setup.stream(
        setup.admin_token, params={"after": 0}, headers={"Last-Event-ID": str(head - 1)}
    ) as response:
        got = _events_until(_messages(response), head)
    assert [int(m["id"]) for m in got] == [head]
    # with neither, only what happens from now on
    with setup.stream(setup.admin_token) as response:
        stream = _messages(response)
        assert next(stream) == {"retry": str(events.RETRY_MILLISECONDS)}
        reg.set_alias("credit-risk", "candidate", 1)
        (first,) = _events_until(stream, head + 1)
    assert int(first["id"]) == head + 1 and first["event"] == "alias.set"

    def status(**kwargs: Any) -> tuple[int, dict[str, str]]:
        with setup.stream(setup.admin_token, **kwargs) as response:
            response.read()
            return response.status_code, response.json()

    code, body = status(headers={"Last-Event-ID": "seven"})
    assert code == 400 and body["error"] == "InvalidInput" and "Last-Event-ID" in body["message"]
    code, body = status(params={"after": -1})
    assert code == 422 and body["error"] == "InvalidInput"
    with httpx.stream("GET", f"{setup.url}{API_PREFIX}/events", timeout=20) as response:
        assert response.status_code == 401


def test_a_member_scoped_to_some_models_sees_only_their_events(setup: Setup) -> None:
    reg = setup.alice
    reg.set_alias("fraud", "candidate", 1)
    reg.set_alias("credit-risk", "candidate", 1)  # the last event: credit-risk's
    every = reg.events_after(0, limit=1000)
    head = every[-1].seq
    expected = [e for e in every if any(name.startswith("credit-") for name in _models_of(e))]
    hidden = [e for e in every if e not in expected]
    assert {"fraud"} <= set().union(*(_models_of(e) for e in hidden))  # other models' events
    assert {"member.enrolled", "token.created"} <= {e.action for e in hidden}  # and no model's
    with setup.stream(setup.viewer_token, params={"after": 0}) as response:
        got = _events_until(_messages(response), head)
    assert [int(m["id"]) for m in got] == [e.seq for e in expected]
    assert all("credit-risk" in _models_of(LedgerEvent.from_dict(json.loads(m["data"]))) for m in got)
    # an admin of every model gets them all
    with setup.stream(setup.admin_token, params={"after": 0}) as response:
        assert [int(m["id"]) for m in _events_until(_messages(response), head)] == [e.seq for e in every]


def test_heartbeats_keep_an_idle_stream_open(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "HEARTBEAT_SECONDS", 0.3)
    seen: list[dict[str, str]] = []
    with setup.stream(setup.admin_token) as response:
        for msg in _messages(response):
            seen.append(msg)
            if len(seen) == 3:
                break
    assert seen == [{"retry": str(events.RETRY_MILLISECONDS)}] + [{"comment": "keep-alive"}] * 2


def test_a_disconnect_ends_the_stream_and_a_revoked_token_is_refused(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="modelledger.server")
    with setup.stream(setup.viewer_token) as response:
        assert next(_messages(response))["retry"]
    deadline = time.monotonic() + 10
    while not any("event stream of dana@example.com closed" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, "the server kept streaming to a client that left"
        time.sleep(0.05)

    monkeypatch.setattr(events, "RECHECK_SECONDS", 0.2)
    with setup.stream(setup.viewer_token) as response:
        stream = _messages(response)
        assert next(stream)["retry"]
        setup.alice.revoke_token(setup.viewer_token_id, reason="left")
        rest = list(stream)  # the server ends the stream
    assert [m.get("event") for m in rest if "comment" not in m] == ["error"]
    error = json.loads(next(m for m in rest if m.get("event") == "error")["data"])
    assert error["error"] == "InvalidToken" and "revoked" in error["message"]


def test_a_server_told_to_stop_ends_its_open_streams(registry: Registry, db_url: str) -> None:
    token, _ = registry.create_token("alice@example.com")
    port = _free_port()
    proc = _serve_cli("--registry", db_url, "--artifacts", registry.artifact_root, "--port", str(port))
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_up(url, proc)
        headers = {"Authorization": f"Bearer {token}"}
        # a read timeout shorter than the heartbeat: a stream left open fails the test, not hangs it
        timeout = events.HEARTBEAT_SECONDS / 2
        with httpx.stream("GET", f"{url}{API_PREFIX}/events", headers=headers, timeout=timeout) as response:
            stream = _messages(response)
            assert next(stream)["retry"]
            proc.send_signal(signal.SIGTERM)
            assert list(stream) == []  # the server ends the stream rather than wait for the client
        # a clean stop, then uvicorn lets the signal end the process as it would have
        assert proc.wait(timeout=15) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
        _out, err = proc.communicate(timeout=30)
    assert "Finished server process" in err


def test_events_after_pages_through_the_ledger(registry: Registry) -> None:
    registry.register("m", lambda rows: rows, capture=False)
    every = registry.events_after(0, limit=1000)
    assert registry.last_event_seq() == every[-1].seq
    assert registry.events_after(2, limit=2) == every[2:4]
    assert registry.events_after(every[-1].seq) == []
    for bad in (-1, "3", True):
        with pytest.raises(InvalidInput):
            registry.events_after(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="limit"):
        registry.events_after(0, limit=0)


# ---------------------------------------------------------------------------- webhooks


class Receiver:
    """A real HTTP server on a loopback port that records each POST (headers, body) and
    answers ``status`` (after ``delay`` seconds)."""

    def __init__(self, port: int = 0, *, status: int = 200, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.requests: list[tuple[dict[str, str], bytes]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                time.sleep(owner.delay)
                self.send_response(owner.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = LoopbackHTTP(Handler, port)
        self.port = self._server.port
        self.url = f"{self._server.base}/hooks/ml"

    def close(self) -> None:
        self._server.close()

    def seqs(self) -> list[int]:
        return [json.loads(body)["seq"] for _headers, body in self.requests]


@contextmanager
def receiver(port: int = 0, **options: Any) -> Iterator[Receiver]:
    r = Receiver(port, **options)
    try:
        yield r
    finally:
        r.close()


def _signed(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _deliver_until(registry: Registry, done: Any, *, seconds: float = 20, **options: Any) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "webhook delivery did not finish"
        registry.deliver_webhooks(**options)
        time.sleep(0.05)


def test_a_receiver_that_fails_then_recovers_gets_every_event_in_order(registry: Registry) -> None:
    first = Receiver(status=500)
    hook, secret = registry.add_webhook(first.url)
    assert hook.last_seq == registry.last_event_seq() and secret.startswith("mlw_")
    v = registry.register("credit-risk", lambda rows: rows, capture=False)
    registry.set_alias("credit-risk", "champion", v.version, reason="first")
    registry.set_version_tags(v.uri, {"team": "risk"})
    expected = registry.events_after(hook.last_seq, limit=1000)
    assert len(expected) >= 3
    fast = {"retry_base": 0.5, "timeout": 5}

    # 1. the receiver answers 500: the attempt is recorded, the cursor stays
    (failed,) = registry.deliver_webhooks(**fast)
    assert (failed.seq, failed.attempt, failed.status_code, failed.ok) == (expected[0].seq, 1, 500, False)
    assert registry.deliver_webhooks(**fast) == []  # its backoff is not over: nothing is sent
    first.close()
    assert failed.next_retry is not None
    time.sleep(max(0.0, (_at(failed.next_retry) - datetime.now(timezone.utc)).total_seconds()) + 0.05)
    # 2. the receiver is down: connection refused
    (refused,) = registry.deliver_webhooks(**fast)
    assert (refused.seq, refused.attempt, refused.status_code) == (expected[0].seq, 2, None)
    assert refused.error and "refused" in refused.error.lower()
    (state,) = registry.list_webhooks()
    assert (state.last_seq, state.failures, state.next_attempt_at) == (hook.last_seq, 2, refused.next_retry)

    # 3. back up on the same port, it gets everything, once, in order
    with receiver(first.port) as second:
        _deliver_until(registry, lambda: second.seqs() == [e.seq for e in expected], **fast)
        registry.set_alias("credit-risk", "candidate", v.version)  # and what comes next
        (late,) = registry.events_after(expected[-1].seq)
        _deliver_until(registry, lambda: len(second.seqs()) > len(expected), **fast)
        registry.deliver_webhooks(**fast)
        assert second.seqs() == [e.seq for e in [*expected, late]]
        received = first.requests + second.requests
    assert [json.loads(body) for _h, body in second.requests] == [e.to_dict() for e in [*expected, late]]
    for headers, body in received:
        assert headers["x-modelledger-signature"] == _signed(secret, body)
        sent = json.loads(body)
        assert headers["x-modelledger-event"] == sent["action"]
        assert headers["x-modelledger-delivery"] == f"{hook.id}-{sent['seq']}"
        assert headers["content-type"] == "application/json"
    (state,) = registry.list_webhooks()
    assert (state.last_seq, state.failures, state.next_attempt_at) == (late.seq, 0, None)

    # the log, oldest first: 500, refused, then one 2xx per event; backoff doubled
    log = list(reversed(registry.webhook_deliveries(hook.id, limit=1000)))
    assert [(d.seq, d.attempt, d.status_code) for d in log] == [
        (expected[0].seq, 1, 500),
        (expected[0].seq, 2, None),
        (expected[0].seq, 3, 200),
        *((e.seq, 1, 200) for e in [*expected[1:], late]),
    ]
    assert log[0].to_dict() == failed.to_dict() and log[1].to_dict() == refused.to_dict()
    assert log[0].next_retry is not None and log[1].next_retry is not None
    assert (_at(log[0].next_retry) - _at(log[0].time)).total_seconds() == pytest.approx(0.5)
    assert (_at(log[1].next_retry) - _at(log[1].time)).total_seconds() == pytest.approx(1.0)
    assert _at(log[2].time) >= _at(log[1].next_retry)
    assert all(d.next_retry is None and d.ok for d in log[2:])
    assert registry.webhook_deliveries(hook.id, limit=2) == log[:-3:-1]


def test_an_action_filter_passes_other_events_over(registry: Registry) -> None:
    with receiver() as r:
        registry.add_webhook(r.url, actions=["alias.*", "version.tagged"])
        v = registry.register("credit-risk", lambda rows: rows, capture=False)
        registry.set_alias("credit-risk", "champion", v.version)
        registry.set_version_tags(v.uri, {"team": "risk"})
        registry.delete_alias("credit-risk", "champion")
        registry.deliver_webhooks()
    assert [json.loads(b)["action"] for _h, b in r.requests] == [
        "alias.set",
        "version.tagged",
        "alias.deleted",
    ]
    (state,) = registry.list_webhooks()
    assert state.last_seq == registry.last_event_seq()  # past the registration too


def test_a_webhook_may_start_anywhere_in_the_ledger(registry: Registry) -> None:
    head = registry.last_event_seq()
    with pytest.raises(InvalidInput, match="past the ledger"):
        registry.add_webhook("https://ci.example/h", after=head + 1)
    with receiver() as r:
        hook, _secret = registry.add_webhook(r.url, actions=["registry.initialized"], after=0)
        assert hook.last_seq == 0
        registry.deliver_webhooks()
    ((_headers, body),) = r.requests
    assert json.loads(body) == registry.events_after(0, limit=1)[0].to_dict()
    for bad in ({"timeout": 0}, {"retry_base": -1}, {"batch": 0}, {"batch": 1001}):
        with pytest.raises(InvalidInput):
            registry.deliver_webhooks(**bad)


def test_two_rounds_at_once_never_deliver_one_webhook_twice(registry: Registry, db_url: str) -> None:
    other = Registry.open(db_url, artifacts=registry.artifact_root)  # as a second server would
    with receiver(delay=0.05) as r:
        registry.add_webhook(r.url)
        registry.add_webhook(r.url.replace("/ml", "/other"))
        for n in range(6):
            registry.create_model(f"m{n}")
            registry.set_policy({"four_eyes": n % 2 == 1}, reason=f"round {n}")
        expected = registry.events_after(registry.list_webhooks()[0].last_seq)
        rounds = [threading.Thread(target=reg.deliver_webhooks) for reg in (registry, other, registry, other)]
        for t in rounds:
            t.start()
        for t in rounds:
            t.join(timeout=60)
        _deliver_until(registry, lambda: len(r.requests) >= 2 * len(expected))
    per_hook: dict[str, list[int]] = {}
    for headers, body in r.requests:
        per_hook.setdefault(headers["x-modelledger-delivery"].split("-")[0], []).append(
            json.loads(body)["seq"]
        )
    assert sorted(per_hook.values()) == [[e.seq for e in expected]] * 2
    other.close()


def test_only_an_admin_of_every_model_manages_webhooks(
    registry: Registry, db_url: str, tmp_path: Path
) -> None:
    hook, _secret = registry.add_webhook("https://ci.example/hooks/ml")
    for name, roles, models in (
        ("dana@example.com", ["viewer"], ["*"]),
        ("erin@example.com", ["admin"], ["credit-*"]),
    ):
        _path, _kid, pem = create_identity(name, tmp_path / f"{name}.key")
        registry.enrol(name, pem, roles=roles, models=models)
        member = Registry.open(db_url, artifacts=registry.artifact_root, key=tmp_path / f"{name}.key")
        with pytest.raises(PermissionDenied, match="admin role on every model"):
            member.add_webhook("https://ci.example/hooks/other")
        with pytest.raises(PermissionDenied, match="admin role on every model"):
            member.remove_webhook(hook.id)
        member.close()
    _path, _kid, _pem = create_identity("mallory@example.com", tmp_path / "mallory.key")
    stranger = Registry.open(db_url, artifacts=registry.artifact_root, key=tmp_path / "mallory.key")
    with pytest.raises(PermissionDenied, match="not enrolled"):
        stranger.add_webhook("https://ci.example/hooks/other")
    stranger.close()
    assert [h.id for h in registry.list_webhooks()] == [hook.id]
    removed = registry.remove_webhook(hook.id)
    assert removed.active is False and registry.list_webhooks() == []
    assert registry.list_webhooks(include_removed=True) == [removed]
    with pytest.raises(NotFound):
        registry.remove_webhook("0123456789abcdef")
    with pytest.raises(InvalidInput, match="webhook id"):
        registry.webhook_deliveries("nope")
    for url in ("ftp://x/y", "http:///nohost", "https://x/y#frag", "not a url", ""):
        with pytest.raises(InvalidInput, match="URL"):
            registry.add_webhook(url)
    with pytest.raises(InvalidInput, match="action pattern"):
        registry.add_webhook("https://ci.example/h", actions=["DROP TABLE"])


def test_the_server_delivers_webhooks_in_the_background(registry: Registry, db_url: str) -> None:
    server_registry = Registry.open(db_url, artifacts=registry.artifact_root)
    with receiver() as r, running(server_registry):
        _hook, secret = registry.add_webhook(r.url, actions=["alias.set"])
        v = registry.register("credit-risk", lambda rows: rows, capture=False)
        registry.set_alias("credit-risk", "champion", v.version)
        deadline = time.monotonic() + 20
        while not r.requests:
            assert time.monotonic() < deadline, "the server delivered nothing"
            time.sleep(0.05)
    server_registry.close()
    ((headers, body),) = r.requests
    assert json.loads(body)["data"]["alias"] == "champion"
    assert headers["x-modelledger-signature"] == _signed(secret, body)


def test_the_webhooks_commands(registry: Registry, db_url: str) -> None:
    where = ["--registry", db_url, "--artifacts", registry.artifact_root]
    runner = CliRunner()

    def run(*args: str) -> Any:
        result = runner.invoke(main, [*args, "--json", *where])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    with receiver() as r:
        made = run("webhooks", "add", r.url, "--action", "alias.*")
        assert made["secret"].startswith("mlw_") and made["actions"] == ["alias.*"]
        assert made["created_by"] == "alice@example.com"
        assert run("webhooks", "list") == [{k: v for k, v in made.items() if k != "secret"}]
        assert "secret" not in runner.invoke(main, ["webhooks", "list", *where]).output
        v = registry.register("credit-risk", lambda rows: rows, capture=False)
        registry.set_alias("credit-risk", "champion", v.version)
        (attempt,) = run("webhooks", "deliver")
        assert (attempt["action"], attempt["status_code"], attempt["ok"]) == ("alias.set", 200, True)
        assert run("webhooks", "deliveries", made["id"]) == [attempt]
        text = runner.invoke(main, ["webhooks", "deliveries", made["id"], *where])
        assert text.exit_code == 0 and "alias.set" in text.output and "200" in text.output
    ((headers, body),) = r.requests
    assert headers["x-modelledger-signature"] == _signed(made["secret"], body)
    plain = runner.invoke(main, ["webhooks", "add", "https://ci.example/h", *where])
    assert plain.exit_code == 0 and plain.stdout.strip().startswith("mlw_")
    removed = run("webhooks", "rm", made["id"])
    assert removed["active"] is False
    assert [h["id"] for h in run("webhooks", "list", "--all")] == [
        made["id"],
        run("webhooks", "list")[0]["id"],
    ]
    refused = runner.invoke(main, ["webhooks", "rm", made["id"], *where])
    assert refused.exit_code == 1 and "removed already" in refused.output
