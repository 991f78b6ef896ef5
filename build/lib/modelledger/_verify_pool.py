"""Worker processes for ``verify``: checkpoint signatures and version folders off the main process.

A full verify is one pass over the ledger (the chain, the replay, the authorisation of every
event), which stays in the calling process, plus two kinds of work that do not depend on it:
one Ed25519 verification per checkpoint (``cryptography`` holds the GIL while it verifies,
so threads cannot spread them) and re-hashing every version's files (Python code around
``hashlib`` for a registry of small files). Those go to ``jobs`` child processes.

The children are plain ``python -c`` processes of the same interpreter, fed pickled tasks on
their standard input and answering on their standard output: no ``multiprocessing``, so no
fork of a threaded process (a server) and no re-import of the caller's ``__main__`` script.
Whatever goes wrong with a child (it cannot start, it dies, a task raises) leaves the work it
held to the calling process, which does it as a serial verify would: the report is the same.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import IO, TYPE_CHECKING, Any

from ._domain import LazyFiles, LazyJSON, ModelVersion, Problem
from ._ledger import Checkpoint, KeyRing, checkpoint_signature_problem
from ._serving import predictions_folder
from .stores.artifacts import ArtifactStore

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["POOL_MIN_WRITES", "PooledSignatures", "VerifyPool", "scan_payload"]

POOL_MIN_WRITES = 10_000
"""Below this many checkpoints (governed writes) a verify runs in one process by default:
starting the children (an interpreter and an import each, 0.2-0.4 s) costs more than they save."""

SIGNATURE_CHUNK = 1000  # checkpoints per task: ~0.1 s of work, a few KB to send
SCAN_CHUNK = 64  # versions per task

_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from modelledger._verify import scan_version; from modelledger._verify_pool import serve; "
    "serve(scan_version)"
)

_SignatureTask = tuple[int, bytes, int, str, str, str, str]
"""A checkpoint to check: its index in the chain, the raw key found for it, its fields."""

Scanned = tuple[list[Problem], list[str]]
"""A version's problems found without the ledger, and its folder's files under predictions/."""


class WorkerGone(Exception):
    """A child process stopped or failed a task: its work is done in this process instead."""


class _Child:
    """One child process, its pending tasks, a thread writing its tasks and one reading its
    answers: a task larger than the pipe waits for the child to read it, and that wait must
    not hold up the ledger pass that handed the task over."""

    def __init__(self, index: int) -> None:
        # subprocess is imported here, not at the top: `import modelledger` leaves it to the
        # verbs that start a process (tests/test_architecture.py holds that boundary)
        import subprocess

        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, package_parent],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # the library never prints; a failure shows as a note
            close_fds=True,
        )
        self.lock = threading.Lock()  # guards pending and alive
        self.pending: dict[int, Future[Any]] = {}
        self.alive = True
        self.tasks: queue.SimpleQueue[tuple[int, str, Any] | None] = queue.SimpleQueue()
        self.reader = threading.Thread(
            target=self._read, name=f"modelledger-verify-pool-{index}-read", daemon=True
        )
        self.writer = threading.Thread(
            target=self._write, name=f"modelledger-verify-pool-{index}-write", daemon=True
        )
        self.reader.start()
        self.writer.start()

    def _write(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            while (task := self.tasks.get()) is not None:
                pickle.dump(task, stdin, protocol=pickle.HIGHEST_PROTOCOL)
                stdin.flush()
        except (OSError, ValueError, pickle.PicklingError):
            self._fail()
        with contextlib.suppress(OSError, ValueError):
            stdin.close()  # the child's loop ends at the end of its input

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        try:
            while True:
                task_id, ok, result = pickle.load(out)
                with self.lock:
                    future = self.pending.pop(task_id)
                if ok:
                    future.set_result(result)
                else:
                    future.set_exception(WorkerGone(str(result)))
        except (EOFError, OSError, pickle.UnpicklingError, ValueError, KeyError):
            pass
        self._fail()

    def _fail(self) -> None:
        with self.lock:
            self.alive = False
            pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(WorkerGone("the worker process ended"))

    def send(self, task_id: int, kind: str, payload: Any, future: Future[Any]) -> bool:
        with self.lock:
            if not self.alive:
                return False
            self.pending[task_id] = future
        self.tasks.put((task_id, kind, payload))
        return True

    def close(self) -> None:
        self.tasks.put(None)
        self.writer.join(timeout=5)
        import subprocess  # lazily, as in __init__

        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._fail()


class VerifyPool:
    """``jobs`` child processes; :meth:`submit` hands a task to the least busy one."""

    def __init__(self, jobs: int, art: ArtifactStore) -> None:
        self._children: list[_Child] = []
        self._next_id = 0
        self._ids = threading.Lock()
        self.failures = 0
        self.jobs = jobs
        spec = art.reopen_spec()
        try:
            pickle.dumps(spec)
        except (pickle.PicklingError, TypeError, AttributeError):
            spec = None
        self.scans = spec is not None  # a memory:// store lives in this process only
        try:
            for i in range(jobs):
                self._children.append(_Child(i))
        except OSError:
            self.close()
            raise
        for child in self._children:
            child.send(self._id(), "store", spec, Future())

    def _id(self) -> int:
        with self._ids:
            self._next_id += 1
            return self._next_id

    def submit(self, kind: str, payload: Any) -> Future[Any]:
        future: Future[Any] = Future()
        task_id = self._id()
        for child in sorted(self._children, key=lambda c: len(c.pending)):
            if child.send(task_id, kind, payload, future):
                return future
        future.set_exception(WorkerGone("no worker process is running"))
        return future

    def close(self) -> None:
        for child in self._children:
            child.close()
        self._children = []

    def __enter__(self) -> VerifyPool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class PooledSignatures:
    """:class:`~modelledger._ledger.SignatureChecks` on a :class:`VerifyPool`, in chunks;
    a chunk whose worker failed is checked here, in this process."""

    def __init__(self, pool: VerifyPool) -> None:
        self._pool = pool
        self._chunk: list[_SignatureTask] = []
        self._sent: list[tuple[list[_SignatureTask], Future[list[str | None]]]] = []
        self._raw: dict[int, bytes] = {}
        self._keys: dict[bytes, Ed25519PublicKey] = {}

    def submit(self, index: int, public: Ed25519PublicKey, checkpoint: Checkpoint) -> None:
        raw = self._raw.get(id(public))
        if raw is None:
            raw = self._raw[id(public)] = public.public_bytes_raw()
            self._keys[raw] = public  # kept alive, so that its id() names it for the whole run
        cp = checkpoint  # sent as plain values: a dataclass pickles several times slower
        self._chunk.append((index, raw, cp.seq, cp.head_hash, cp.time, cp.key_id, cp.signature))
        if len(self._chunk) >= SIGNATURE_CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self._chunk:
            chunk, self._chunk = self._chunk, []
            self._sent.append((chunk, self._pool.submit("signatures", chunk)))

    def first_failure(self) -> tuple[int, str] | None:
        self._flush()
        first: tuple[int, str] | None = None
        for chunk, future in self._sent:
            try:
                kinds = future.result()
            except WorkerGone:
                self._pool.failures += 1
                kinds = _check_signatures(chunk, self._keys)
            for task, kind in zip(chunk, kinds, strict=True):
                index = task[0]
                if kind is not None and (first is None or index < first[0]):
                    first = (index, kind)
        self._sent = []
        return first


def _check_signatures(
    chunk: Iterable[_SignatureTask], keys: dict[bytes, Ed25519PublicKey] | None = None
) -> list[str | None]:
    """The problem kind of each checkpoint's signature (None: it holds), as the chain pass
    would find it with the key given (the key it names, already found)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # only checks need it

    loaded = keys if keys is not None else {}
    out: list[str | None] = []
    for _index, raw, seq, head_hash, time, kid, signature in chunk:
        cp = Checkpoint(seq=seq, head_hash=head_hash, time=time, key_id=kid, signature=signature)
        public = loaded.get(raw)
        if public is None:
            public = loaded[raw] = Ed25519PublicKey.from_public_bytes(raw)
        out.append(checkpoint_signature_problem(_ring_of(public), cp))
    return out


def _ring_of(public: Ed25519PublicKey) -> KeyRing:
    """The key the chain pass found for a checkpoint, whatever id the checkpoint names."""
    return lambda _kid: public


def scan_payload(mv: ModelVersion) -> tuple[Any, ...]:
    """What a worker needs of a version to scan its folder: its stored texts where it has
    them (cheaper to send than the decoded objects)."""
    files: Any = mv.files.stored_text if isinstance(mv.files, LazyFiles) else None
    if files is None:
        files = tuple(mv.files)
    manifest: Any = mv.manifest.canonical_text if isinstance(mv.manifest, LazyJSON) else dict(mv.manifest)
    return (mv.model, mv.version, mv.folder, mv.digest, mv.key, files, manifest)


def _version_of(payload: tuple[Any, ...]) -> ModelVersion:
    model, version, folder, digest, key, files, manifest = payload
    return ModelVersion(
        model=model,
        version=version,
        folder=folder,
        digest=digest,
        flavor="",
        files=LazyFiles(files) if isinstance(files, str) else files,
        manifest=LazyJSON(manifest) if isinstance(manifest, str) else manifest,
        key=key,
    )


Scan = Callable[[ArtifactStore, ModelVersion], tuple[list[Problem], list[str]]]
"""What scans one version folder (``_verify.scan_version``, which imports this module)."""


def scan_versions(
    art: ArtifactStore, payloads: Iterable[tuple[Any, ...]], scan_version: Scan
) -> list[Scanned]:
    """Each version's folder scanned, as the serial verify scans it."""
    out: list[Scanned] = []
    for payload in payloads:
        mv = _version_of(payload)
        problems, listing = scan_version(art, mv)
        # only the capture files' part of the listing is used after the scan
        prefix = predictions_folder(mv.folder)[len(mv.folder) + 1 :] + "/"
        out.append((problems, [rel for rel in listing if rel.startswith(prefix)]))
    return out


def serve(scan_version: Scan, stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None) -> None:
    """A child's loop: tasks from standard input, answers to standard output, until the end
    of its input."""
    source = stdin or sys.stdin.buffer
    sink = stdout or sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but answers may reach the parent's pipe
    art: ArtifactStore | None = None
    keys: dict[bytes, Ed25519PublicKey] = {}
    for task_id, kind, payload in _tasks(source):
        try:
            result: Any
            if kind == "store":
                art = ArtifactStore(payload[0], **payload[1]) if payload is not None else None
                result = None
            elif kind == "signatures":
                result = _check_signatures(payload, keys)
            elif kind == "scan" and art is not None:
                result = scan_versions(art, payload, scan_version)
            else:
                raise ValueError(f"unknown task {kind!r}")
            answer = (task_id, True, result)
        except Exception as exc:  # handed back: the parent does this task itself
            answer = (task_id, False, f"{type(exc).__name__}: {exc}")
        pickle.dump(answer, sink, protocol=pickle.HIGHEST_PROTOCOL)
        sink.flush()


def _tasks(source: IO[bytes]) -> Iterator[tuple[int, str, Any]]:
    while True:
        try:
            yield pickle.load(source)
        except EOFError:
            return
