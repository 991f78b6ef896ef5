"""OpenLineage events sent as things happen: registrations, data set versions and their steps,
approvals, deployments, rollbacks and alias moves, to a configured transport.

``Registry.open(openlineage=...)`` (or ``MODELLEDGER_OPENLINEAGE``, or ``openlineage`` in a
config file) names the transport:

- ``http://...`` / ``https://...``: each event POSTed as JSON (Marquez: ``.../api/v1/lineage``);
- ``file:///path/events.jsonl`` (or a plain path): each event appended as one JSON line;
- ``kafka://broker:9092/topic``: each event produced to the topic, keyed by its run id (needs
  ``confluent-kafka``, which modelledger does not install: without it, opening fails and says so).

A write never fails and never waits because of the receiver. The events of a write are first
put in a local spool (:class:`Outbox`: one file each under ``pending/``, written atomically),
then delivered in order by a background thread; a receiver that is down or refuses leaves them
there, and every later write, :meth:`Outbox.flush` and closing the registry try again. What was
delivered is recorded in ``sent.jsonl`` (run id, job, event time, when it was sent); the last
failure in ``state.json``. ``Registry.openlineage_status()`` and ``modelledger openlineage
status|flush`` show and drain it. Delivery is at least once: a process that dies between the
send and its record sends that event again, which OpenLineage receivers take as the same run.

The spool lives beside the registry (``<home>/openlineage/`` for the embedded registry, beside a
SQLite file), or under ``$XDG_STATE_HOME/modelledger/openlineage/`` for a database server.

The hook is :class:`EmittingStore`, which wraps the metadata store and turns what a write
returns (the ledger events of a governed write, a new model or data set version) into
OpenLineage events: one place, whatever verb made the write.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from .._domain import DatasetVersion, ModelVersion
from .._ledger import LedgerEvent
from .._time import now_text, to_text
from ..errors import InvalidConfig, MissingDependency, ModelLedgerError, NotFound
from .openlineage import (
    GOVERNANCE,
    NAMESPACE,
    dataset_registered_events,
    governance_event,
    training_event,
)

__all__ = [
    "EmittingStore",
    "FileTransport",
    "HttpTransport",
    "KafkaTransport",
    "Outbox",
    "Refused",
    "Transport",
    "spool_folder",
    "transport_from",
]

log = logging.getLogger("modelledger.openlineage")

API_KEY_VARIABLE = "MODELLEDGER_OPENLINEAGE_API_KEY"
"""The HTTP transport's bearer token (Marquez, or an OpenLineage proxy, with authentication)."""

STALE_SECONDS = 600.0
"""An event claimed for delivery this long ago by a process that never finished is pending again."""


class Refused(Exception):
    """The receiver will never take this event (it answered that the request itself is wrong):
    sending it again cannot help, and it must not hold back the events behind it."""


# answers that say "this request is wrong" for good; 401/403 (credentials), 404 (a receiver not
# deployed yet), 408 and 429 (try later) are worth retrying
_PERMANENT = frozenset({400, 405, 413, 415, 422})


class Transport(Protocol):
    """Where events go: ``send`` delivers one event's JSON bytes or raises."""

    @property
    def target(self) -> str: ...

    def send(self, event: bytes, run_id: str) -> None: ...

    def close(self) -> None: ...


class HttpTransport:
    """POST each event (``Content-Type: application/json``); any answer but 2xx is a failure.
    ``api_key`` (by default ``$MODELLEDGER_OPENLINEAGE_API_KEY``: a secret, so never a config
    file's) is sent as ``Authorization: Bearer <key>``, as OpenLineage's own clients do."""

    def __init__(self, url: str, *, timeout: float = 5.0, api_key: str | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_VARIABLE) or None

    @property
    def target(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"  # no credentials, no query

    def send(self, event: bytes, run_id: str) -> None:
        # loaded when an event is sent: urllib.request imports tempfile, shutil and the
        # compression modules, which `import modelledger` leaves to the verbs that need them
        import urllib.error

        # loaded when an event is sent, as urllib.error is
        import urllib.request

        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=event, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            if exc.code in _PERMANENT:
                raise Refused(f"{self.target} answered {exc.code}: {exc.reason}") from exc
            raise
        if not 200 <= status < 300:
            raise OSError(f"{self.target} answered {status}")

    def close(self) -> None:
        pass


class FileTransport:
    """Append each event as one JSON line to a file (created with its folder when missing)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def target(self) -> str:
        return str(self.path)

    def send(self, event: bytes, run_id: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = event + b"\n"
        # one write on an O_APPEND descriptor: lines of processes appending at once never interleave
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"{self.path}: only {written} of {len(line)} bytes written")
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        pass


class KafkaTransport:
    """Produce each event to a topic, keyed by its run id (the ``confluent-kafka`` client)."""

    def __init__(self, servers: str, topic: str, *, timeout: float = 5.0) -> None:
        try:
            kafka = importlib.import_module("confluent_kafka")  # optional: only this transport needs it
        except ImportError:
            raise MissingDependency(
                package="confluent-kafka",
                extra=None,
                purpose="sending OpenLineage events to Kafka (or use an http:// or file transport)",
            ) from None
        self.servers, self.topic, self.timeout = servers, topic, timeout
        self._producer = kafka.Producer(
            {"bootstrap.servers": servers, "message.timeout.ms": int(timeout * 1000)}
        )

    @property
    def target(self) -> str:
        return f"kafka://{self.servers}/{self.topic}"

    def send(self, event: bytes, run_id: str) -> None:
        errors: list[Any] = []
        self._producer.produce(
            self.topic, value=event, key=run_id.encode(), on_delivery=lambda err, _msg: errors.append(err)
        )
        left = self._producer.flush(self.timeout)
        if left or any(e is not None for e in errors):
            raise OSError(f"{self.target}: not delivered ({errors[0] if errors else 'timed out'})")

    def close(self) -> None:
        self._producer.flush(self.timeout)


def transport_from(value: str, *, source: str = "openlineage") -> Transport:
    """The transport a setting names (see the module documentation); :class:`InvalidConfig` for
    one it does not, :class:`MissingDependency` for Kafka without its client."""
    text = value.strip()
    parts = urlsplit(text)
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise InvalidConfig(source, None, f"{text!r} names no host")
        return HttpTransport(text)
    if parts.scheme == "kafka":
        topic = parts.path.strip("/")
        if not parts.netloc or not topic:
            raise InvalidConfig(source, None, f"{text!r}: give kafka://<broker:port>[,<broker:port>]/<topic>")
        return KafkaTransport(parts.netloc, topic)
    if parts.scheme == "file":
        return FileTransport(Path(unquote(parts.path)))
    if "://" in text:
        raise InvalidConfig(
            source, None, f"{text!r}: the transport must be http(s)://, file://, kafka:// or a file path"
        )
    return FileTransport(Path(text).expanduser().absolute())


def spool_folder(home: Path | None, database_url: str) -> Path:
    """Where the spool of a registry lives: ``<home>/openlineage`` for the embedded registry,
    ``<file>.openlineage`` beside another SQLite file, else a folder per database under
    ``$XDG_STATE_HOME/modelledger/openlineage/`` (default ``~/.local/state/...``)."""
    if home is not None:
        return home / "openlineage"
    if database_url.lower().startswith("sqlite") and ":///" in database_url:
        path = database_url.split(":///", 1)[1].split("?", 1)[0]
        if path and path != ":memory:":
            return Path(unquote(path)).absolute().with_name(Path(path).name + ".openlineage")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    digest = hashlib.sha256(database_url.encode("utf-8")).hexdigest()[:16]
    return Path(state) / "modelledger" / "openlineage" / digest


class Outbox:
    """A folder of events waiting for their transport, delivered in order, at least once.

    ``put`` is what a write calls: it only writes files and wakes the delivering thread.
    """

    def __init__(self, folder: Path, transport: Transport) -> None:
        self.folder = folder
        self.transport = transport
        self._pending = folder / "pending"
        self._inflight = folder / "inflight"
        self._lock = threading.Lock()  # one delivering thread per Outbox
        self._thread: threading.Thread | None = None
        self._running = False  # a delivering thread is at work (under _lock)
        self._wake = False  # something was put since it last listed the folder (under _lock)
        self._counter = itertools.count(1)  # next() is atomic: server threads put at once

    # ---------------------------------------------------------------- putting

    def put(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Spool ``events`` (each its own file, named so that names sort in putting order), then
        start delivering them in the background."""
        if not events:
            return
        self._pending.mkdir(parents=True, exist_ok=True)
        for event in events:
            name = (
                f"{time.time_ns():020d}-{os.getpid()}-{next(self._counter):06d}-{event['run']['runId']}.json"
            )
            tmp = self._pending / f".{name}.tmp"
            tmp.write_bytes(json.dumps(event, sort_keys=True, separators=(",", ":")).encode("utf-8"))
            os.replace(tmp, self._pending / name)
        self.kick()

    def kick(self) -> None:
        """Deliver what is pending in a background thread: start one, or tell the running one to
        make another pass (it may have listed the folder before the newest files came)."""
        with self._lock:
            self._wake = True
            if self._running:
                return
            self._running = True
            self._thread = threading.Thread(target=self._run, name="openlineage-delivery", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._wake:
                    self._running = False
                    return
                self._wake = False
            try:
                self.deliver()
            except Exception:  # a background thread must not die loudly; state.json says why
                log.exception("OpenLineage delivery failed")

    def deliver(self) -> int:
        """Send pending events in order until one fails; returns how many were sent."""
        self._reclaim_stale()
        sent = 0
        for path in self._pending_files():
            claimed = self._claim(path)
            if claimed is None:
                continue  # another process took it
            body = claimed.read_bytes()
            run_id = str(json.loads(body)["run"]["runId"])
            try:
                self.transport.send(body, run_id)
            except Refused as exc:  # set aside, so that it does not hold back the rest
                rejected = self.folder / "rejected"
                rejected.mkdir(exist_ok=True)
                os.replace(claimed, rejected / path.name)
                self._record_state(error=f"rejected {path.name}: {exc}", pending=None)
                continue
            except (OSError, ModelLedgerError) as exc:  # URLError and timeouts are OSErrors
                os.replace(claimed, path)  # pending again, in its place
                self._record_state(error=f"{type(exc).__name__}: {exc}", pending=path.name)
                return sent
            self._record_sent(body)
            claimed.unlink()
            sent += 1
        if sent:
            self._record_state(error=None, pending=None)
        return sent

    def flush(self, *, timeout: float = 10.0) -> dict[str, Any]:
        """Wait (at most ``timeout`` seconds) for the background thread, try once more to send
        what is pending, and return :meth:`status`."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        if thread is None or not thread.is_alive():
            with contextlib.suppress(OSError):
                self.deliver()
        return self.status()

    def close(self, *, timeout: float = 5.0) -> None:
        """Let a delivery under way finish (waiting at most ``timeout`` seconds: a receiver that
        hangs must not hold the process); when none ran in this process, give what earlier
        processes left pending one attempt. What stays is kept for the next process."""
        try:
            thread = self._thread
            if thread is not None:
                thread.join(timeout)
            elif self._pending_files():
                with contextlib.suppress(OSError):
                    self.deliver()
        finally:
            self.transport.close()

    # ---------------------------------------------------------------- records

    def status(self) -> dict[str, Any]:
        """``transport``, ``spool``, ``pending`` (how many), ``rejected`` (events the receiver
        refused for good, kept in ``rejected/``), ``oldest_pending`` (when it was put),
        ``sent`` (how many were delivered), ``last_sent_at``, ``last_error`` and ``last_error_at``."""
        inflight = sorted(self._inflight.glob("*.json")) if self._inflight.exists() else []
        pending = sorted([*self._pending_files(), *inflight], key=lambda p: p.name)
        state = self._read_state()
        sent_log = self.folder / "sent.jsonl"
        sent = 0
        last_sent = None
        if sent_log.exists():
            with sent_log.open("rb") as f:
                for line in f:
                    if line.strip():
                        sent += 1
                        last_sent = line
        oldest = None
        if pending:
            ns = int(pending[0].name.split("-", 1)[0])
            oldest = _iso_from_ns(ns)
        rejected = self.folder / "rejected"
        return {
            "transport": self.transport.target,
            "spool": str(self.folder),
            "pending": len(pending),
            "rejected": len(list(rejected.glob("*.json"))) if rejected.exists() else 0,
            "oldest_pending": oldest,
            "sent": sent,
            "last_sent_at": json.loads(last_sent)["sent_at"] if last_sent else None,
            "last_error": state.get("error"),
            "last_error_at": state.get("error_at"),
        }

    def pending_events(self) -> list[dict[str, Any]]:
        """The events waiting, oldest first."""
        return [json.loads(p.read_bytes()) for p in self._pending_files()]

    def _pending_files(self) -> list[Path]:
        if not self._pending.exists():
            return []
        return sorted(
            p for p in self._pending.iterdir() if p.name.endswith(".json") and not p.name.startswith(".")
        )

    def _claim(self, path: Path) -> Path | None:
        """Move a pending event to ``inflight/`` (an atomic rename: one process wins it)."""
        self._inflight.mkdir(parents=True, exist_ok=True)
        target = self._inflight / path.name
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return None
        return target

    def _reclaim_stale(self) -> None:
        if not self._inflight.exists():
            return
        limit = time.time() - STALE_SECONDS
        for path in self._inflight.glob("*.json"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < limit:
                    os.replace(path, self._pending / path.name)

    def _record_sent(self, body: bytes) -> None:
        event = json.loads(body)
        line = {
            "runId": event["run"]["runId"],
            "eventType": event.get("eventType"),
            "job": f"{event['job']['namespace']}/{event['job']['name']}",
            "eventTime": event.get("eventTime"),
            "sent_at": now_text(),
            "transport": self.transport.target,
        }
        with (self.folder / "sent.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(line, sort_keys=True) + "\n")

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.folder / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _record_state(self, *, error: str | None, pending: str | None) -> None:
        state = {"error": error, "error_at": now_text() if error else None, "blocked_on": pending}
        tmp = self.folder / ".state.json.tmp"
        tmp.write_text(json.dumps(state, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.folder / "state.json")


def _iso_from_ns(ns: int) -> str:
    return to_text(datetime.fromtimestamp(ns / 1e9, tz=timezone.utc))


class EmittingStore:
    """A metadata store that also puts the OpenLineage events of each write in an
    :class:`Outbox`: a new data set version (its extract or steps), a new model version (its
    training), and the governance events of a governed write. Every other call goes straight to
    the store it wraps. Building and spooling the events never fails the write: a problem is
    logged (``modelledger.openlineage``) and the write returns as it would have."""

    def __init__(self, inner: Any, outbox: Outbox, *, namespace: str = NAMESPACE) -> None:
        self._inner = inner
        self.outbox = outbox
        self.namespace = namespace

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def govern(self, *args: Any, **kwargs: Any) -> list[LedgerEvent]:
        events: list[LedgerEvent] = self._inner.govern(*args, **kwargs)
        self._emit(lambda: self._governance(events))
        return events

    def create_version(self, *args: Any, **kwargs: Any) -> ModelVersion:
        mv: ModelVersion = self._inner.create_version(*args, **kwargs)
        self._emit(lambda: [self._training(mv), *self._walked(mv)])
        return mv

    def create_dataset_version(self, *args: Any, **kwargs: Any) -> tuple[DatasetVersion, bool]:
        dv, new = self._inner.create_dataset_version(*args, **kwargs)
        if new:  # the same content again is the version that exists: nothing happened
            self._emit(lambda: dataset_registered_events(dv, self._inputs(dv), namespace=self.namespace))
        return dv, new

    def close(self) -> None:
        try:
            self.outbox.close()
        finally:
            self._inner.close()

    # ---------------------------------------------------------------- building

    def _emit(self, build: Callable[[], list[dict[str, Any]]]) -> None:
        try:
            self.outbox.put(build())
        except Exception:  # the write is done and must stand; the log says what was not sent
            log.exception("could not spool the OpenLineage events of a registry write")

    def _inputs(self, dv: DatasetVersion) -> list[DatasetVersion]:
        found = []
        for uri in dict.fromkeys(i for step in dv.steps for i in step.inputs):
            name, _, number = uri[len("datasets:/") :].rpartition("/")
            with contextlib.suppress(NotFound, ValueError):
                found.append(self._inner.get_dataset_version(name, int(number)))
        return found

    def _training(self, mv: ModelVersion) -> dict[str, Any]:
        roles = {str(d["uri"]): str(d.get("role") or "") for d in mv.manifest.get("datasets") or ()}
        known = []
        for uri in roles:
            name, _, number = uri[len("datasets:/") :].rpartition("/")
            with contextlib.suppress(NotFound, ValueError):
                known.append(self._inner.get_dataset_version(name, int(number)))
        return training_event(mv, known, roles, namespace=self.namespace)

    def _walked(self, mv: ModelVersion) -> list[dict[str, Any]]:
        """The governance events a registration made by itself (a manifest's ``stages: {approved:
        auto}`` approves or deploys in the same transaction): read back from the ledger, only
        for a manifest that asks for it."""
        stages = mv.manifest.get("stages") or {}
        if not any(stages.get(s) == "auto" for s in ("approved", "deployed")):
            return []
        rows = self._inner.audit(
            subjects=[mv.uri],
            subject_prefixes=[f"models:/{mv.model}@"],
            actor=None,
            action=None,
            since=None,
            until=None,
            after=0,
            limit=1000,
        )
        return self._governance([e for e, _ in rows if _version_of(e) == mv.version])

    def _governance(self, events: Sequence[LedgerEvent]) -> list[dict[str, Any]]:
        out = []
        for event in events:
            if event.action not in GOVERNANCE or not event.subject.startswith("models:/"):
                continue
            number = _version_of(event)
            if number is None:
                continue
            model = str(
                event.data.get("model") or event.subject[len("models:/") :].split("/")[0].split("@")[0]
            )
            mv = self._inner.get_version(model, number)
            out.append(governance_event(mv, event, namespace=self.namespace))
        return out


def _version_of(event: LedgerEvent) -> int | None:
    """The version a governance event is about: the subject's number, else the alias's target."""
    rest = event.subject[len("models:/") :]
    if "@" not in rest and "/" in rest:
        tail = rest.rsplit("/", 1)[1]
        return int(tail) if tail.isdigit() else None
    for key in ("version", "to"):
        value = event.data.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
