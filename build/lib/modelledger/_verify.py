"""``verify`` and ``gc``: check everything the registry vouches for; collect what nothing references.

Both work on the ports alone (the metadata store and the artefact store), read the
ledger once, and report rather than repair.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import hashlib
import io
import json
import os
import queue
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._audit import state_differences
from ._canonical import canonicalize
from ._domain import Erasure, GcItem, GcReport, ModelVersion, Problem, VerifyRange, VerifyRecord, VerifyReport
from ._erasure import erasure_from_event
from ._identifiers import parse_dataset_uri
from ._integrity import version_digest
from ._keys import key_id, load_public_key, sign, verify_with_key
from ._ledger import GENESIS, ChainReport, Checkpoint, KeyRing, LedgerEvent, verify_chain, verify_checkpoint
from ._lifecycle import (
    ERASURE_ACTIONS,
    EventDraft,
    ReplayedState,
    record_captures,
    record_dataset,
    state_delta,
)
from ._members import MEMBER_ACTIONS, Roster, authorize_event, receipt_key_problem
from ._object_lock import ObjectRetention
from ._serving import CaptureFile, check_receipt, parse_part_name, predictions_folder, receipts_from_table
from ._time import now, now_text
from ._verify_pool import POOL_MIN_WRITES, SCAN_CHUNK, PooledSignatures, VerifyPool, WorkerGone, scan_payload
from .errors import IntegrityError, InvalidInput, InvalidReceipt, NotFound, PermissionDenied, StorageError
from .stores.artifacts import ArtifactStore
from .stores.protocols import MetadataStore

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = ["RECORD_DOMAIN", "collect_garbage", "record_payload", "unrecorded_records", "verify_registry"]


def verify_registry(
    meta: MetadataStore,
    art: ArtifactStore,
    *,
    progress: Callable[[ModelVersion], None] | None = None,
    grace: timedelta = timedelta(hours=1),
    public_key: bytes | None = None,
    trusted_checkpoint: Checkpoint | None = None,
    captures: bool = False,
    since_last: bool = False,
    verifier: Ed25519PrivateKey | None = None,
    record: bool = True,
    workers: int | None = None,
    jobs: int | None = None,
) -> VerifyReport:
    """What :meth:`Registry.verify <modelledger.Registry.verify>` reports: the ledger chain and
    checkpoints (against ``public_key`` and ``trusted_checkpoint`` when pinned), the head row,
    state tables against a replay, version digests against their registration events, every
    artefact and data set file re-hashed, every file of a version folder accounted for, and
    orphans (those younger than ``grace`` apart, as in flight). With ``captures``, every
    captured prediction's receipt is rebuilt from its row and checked against the signed
    root of its call, and its input text against its input digest.

    ``verifier`` is the verifying process's own key: a clean run stores a
    :class:`VerifyRecord` of what it proved, signed with it (unless ``record`` is False).
    ``since_last`` starts from the record this key stored last, checked first (its
    signature, the event and checkpoint at its seq, no event missing up to it), and checks
    only what came after it; without a usable record it is a full verify. Files are hashed
    by ``workers`` threads (default: twice the cores, at most 16).

    ``jobs`` worker processes take the checkpoint signature checks and the version folders
    off the ledger pass (see :mod:`modelledger._verify_pool`): None (the default) starts one
    per core when the ledger holds at least ``POOL_MIN_WRITES`` checkpoints, 1 never starts
    any, N starts N whatever the size. The report is the same either way."""
    art.refresh()  # report what the store holds now, not what this process listed before
    run = _Run(meta, art, public_key=public_key, captures=captures, workers=_workers(workers))
    run.jobs = _jobs(jobs)
    kid = key_id(verifier) if verifier is not None else None
    prev: VerifyRecord | None = None
    if since_last:
        if verifier is None or kid is None:
            run.notes.append(
                "no usable signing key to check an earlier verify record with: ran a full verify"
            )
        else:
            prev = _earlier_record(meta, verifier, kid, run.problems)
            if prev is None:
                run.notes.append(f"no usable verify record of key {kid}: ran a full verify")
            else:
                broken = _continuity(meta, prev)
                if broken:
                    run.problems.extend(broken)
                    run.notes.append(
                        f"what the verify of {prev.time} proved no longer holds: ran a full verify"
                    )
                    prev = None
    if prev is None:
        _full(run, progress, grace, trusted_checkpoint)
    else:
        _since(run, prev, progress, trusted_checkpoint)
    recorded = None
    if record and verifier is not None and kid is not None and not run.problems:
        recorded = _record(run, prev, verifier, kid)
    elif record and verifier is None:
        run.notes.append("nothing recorded: no usable signing key (a verify never creates one)")
    elif record and run.problems:
        run.notes.append("nothing recorded: a run with problems proves nothing to start from")
    chain = run.chain
    return VerifyReport(
        versions_checked=run.n_versions,
        files_checked=run.n_files + run.n_datasets,
        problems=tuple(run.problems),
        events_checked=chain.events_checked if chain else 0,
        checkpoints_checked=chain.checkpoints_checked if chain else 0,
        datasets_checked=run.n_datasets,
        in_flight=tuple(run.in_flight),
        unrecorded=tuple(run.unrecorded),
        erased=tuple(run.erasures),
        delegated=dict(sorted(run.delegated.items())),
        mode="full" if prev is None else "since_last",
        covered=VerifyRange(
            after_seq=run.after_seq,
            to_seq=run.tip[0],
            after_version_key=run.after_version_key,
            to_version_key=run.to_version_key,
            after_dataset_key=run.after_dataset_key,
            to_dataset_key=run.to_dataset_key,
        ),
        since=prev,
        recorded=recorded,
        notes=tuple(run.notes),
    )


RECORD_DOMAIN = "modelledger.verify.record.v1"
"""Inside every signed verify record, so no other signature of the key can pass as one."""


def record_payload(rec: VerifyRecord) -> bytes:
    """The exact bytes a :class:`VerifyRecord`'s signature covers."""
    return canonicalize({"type": RECORD_DOMAIN, **rec.payload_dict()})


def _jobs(jobs: int | None) -> int | None:
    if jobs is not None and jobs < 1:
        raise InvalidInput(f"jobs must be at least 1, got {jobs}")
    return jobs


def _workers(workers: int | None) -> int:
    if workers is None:
        return min(16, 2 * (os.cpu_count() or 1))
    if workers < 1:
        raise InvalidInput(f"workers must be at least 1, got {workers}")
    return workers


class _Run:
    """What one verify run has read and found so far."""

    def __init__(
        self,
        meta: MetadataStore,
        art: ArtifactStore,
        *,
        public_key: bytes | None,
        captures: bool,
        workers: int,
    ) -> None:
        self.meta, self.art, self.captures, self.workers = meta, art, captures, workers
        self.jobs: int | None = None  # worker processes asked for (None: one per core on a large ledger)
        self.pool: VerifyPool | None = None
        self.problems: list[Problem] = []
        self.notes: list[str] = []
        self.registered: dict[tuple[str, int], str] = {}
        self.rebuilt = ReplayedState()
        self.datasets: dict[str, dict[str, Any]] = {}  # data set uri -> its dataset.registered record
        self.captured: dict[str, dict[str, Any]] = {}  # capture file path -> its predictions.written record
        self.roster = Roster()
        self.erasures: list[Erasure] = []
        self.delegated: dict[str, int] = {}
        self.in_flight: list[Problem] = []
        self.unrecorded: list[Problem] = []
        self.chain: ChainReport | None = None
        self.checkpoints: list[Checkpoint] = []
        self.tip: tuple[int, str] = (0, GENESIS.hex())
        self.after_seq = self.after_version_key = self.after_dataset_key = 0
        self.to_version_key = self.to_dataset_key = 0
        self.n_versions = self.n_files = self.n_datasets = 0
        self.stored = meta.public_key()
        stored = self.stored
        if public_key is not None and stored is not None and key_id(public_key) != stored[0]:
            self.problems.append(
                Problem(
                    "untrusted_key",
                    "registry key",
                    f"the registry holds key {stored[0]}, not the pinned key {key_id(public_key)}: "
                    "its ledger may have been rewritten and re-signed",
                )
            )
        self.public_key = public_key
        self.trusted_pem = public_key or (stored[1] if stored else None)
        self.legacy_kid = stored[0] if stored else None

    @property
    def erased(self) -> set[str]:
        return {p for e in self.erasures for p in e.paths}

    def chain_problems(self) -> None:
        """The first chain problem, refused events, the root of trust, the head row."""
        chain = self.chain
        if chain is not None and chain.first_problem is not None:
            fp = chain.first_problem
            self.problems.append(Problem(fp.kind, f"ledger event {fp.seq}", fp.detail))

    def unsigned_tail(self) -> None:
        """Events after the last signed checkpoint: every governed write signs its own
        checkpoint in the transaction that appends its events, so a clean chain has no such
        tail; one there was appended without a key (or its checkpoint deleted), and nothing
        says who wrote it. Events a write committed during this run, whose checkpoint the run
        read too early, are left to the next run."""
        chain = self.chain
        if chain is None or chain.first_problem is not None:
            return
        signed = chain.last_checkpoint_seq or 0
        last = self.tip[0]
        if last <= signed:
            return
        if any(cp.seq >= last for cp in self.meta.checkpoints(after=signed)):
            self.notes.append(
                f"events {signed + 1}..{last} were written during this run: the next verify checks them"
            )
            return
        span = f"event {last}" if last == signed + 1 else f"events {signed + 1}..{last}"
        self.problems.append(
            Problem(
                "unsigned_tail",
                f"ledger {span}",
                f"{last - signed} event(s) after the last signed checkpoint (seq {signed}): every write "
                "signs its own, so these were added without a key or their checkpoint was deleted",
            )
        )

    def root_problem(self) -> None:
        root = next((m for m in self.roster.members.values() if m.root), None)
        trusted_kid = key_id(self.public_key) if self.public_key is not None else self.legacy_kid
        if root is not None and trusted_kid is not None and root.keys[0].key_id != trusted_kid:
            self.problems.append(
                Problem(
                    "untrusted_key",
                    "root of trust",
                    f"the ledger's root key is {root.keys[0].key_id}, not the registry's key {trusted_kid}",
                )
            )

    def versions(
        self,
        scanned: Iterable[tuple[ModelVersion, _Scan]],
        names: Mapping[str, str],
        progress: Callable[[ModelVersion], None] | None,
    ) -> set[str]:
        """Finish each scanned version once the ledger pass is done (erasures, capture files,
        the digest against its registration), in order; returns their folders."""
        meta, art, erased, captures = self.meta, self.art, self.erased, self.captures
        registered = {(names.get(m, m), v): d for (m, v), d in self.registered.items()}
        by_folder: dict[str, dict[str, dict[str, Any]]] = {}
        for path, rec in self.captured.items():
            by_folder.setdefault(path.rsplit("/predictions/", 1)[0], {})[path] = rec
        ring = _ring(self.roster, self.trusted_pem)
        stored = self.stored

        def check(pair: tuple[ModelVersion, _Scan]) -> tuple[list[Problem], list[Problem]]:
            mv, (out, listing) = pair
            unrecorded: list[Problem] = []
            if erased and any(f"{mv.folder}/artifacts/{f.path}" in erased for f in mv.files):
                out, listing = _verify_version(art, mv, erased)  # scanned before the erasures were known
            out = list(out)
            out.extend(
                _verify_capture_files(
                    art, mv, by_folder.get(mv.folder, {}), captures, unrecorded, erased, listing
                )
            )
            if captures and stored is not None:
                out.extend(_verify_captures(art, mv, ring, self.roster, self.legacy_kid))
            return out, unrecorded

        folders: set[str] = set()
        # with worker processes the scans are done: what is left here is light
        threads = 1 if self.pool is not None else self.workers
        for (mv, _scan), (found, unrecorded) in _in_order(check, scanned, threads):
            self.n_versions += 1
            self.to_version_key = max(self.to_version_key, mv.key)
            folders.add(mv.folder)
            recorded = registered.get((mv.model, mv.version))
            if recorded is None:
                recorded = _registration_digest(meta, mv, names)
            if recorded is not None and recorded != mv.digest:
                self.problems.append(
                    Problem(
                        "mismatch",
                        mv.folder,
                        "version digest differs from its registration in the ledger",
                        mv.uri,
                    )
                )
            self.problems.extend(found)
            self.unrecorded.extend(unrecorded)
            self.n_files += len(mv.files)
            if progress:
                progress(mv)
        return folders

    def data_sets(self, after: int) -> set[str]:
        """Re-hash every data set version's file with a key above ``after`` against its ledger
        record (where the ledger holds one; versions from before data sets were recorded fall
        back to their row); returns the paths of their files."""
        meta, art, erased, recorded = self.meta, self.art, self.erased, self.datasets
        paths: set[str] = set()

        def check(item: tuple[int, str, str, str, int]) -> tuple[Problem | None, Problem | None, bool]:
            _key, uri, path, sha, size = item
            mismatch = None
            record = recorded.get(uri)
            if record is None:
                record = _dataset_record(meta, uri)
            if record is not None:
                if (record.get("path"), record.get("file_sha256"), record.get("size_bytes")) != (
                    path,
                    sha,
                    size,
                ):
                    mismatch = Problem(
                        "mismatch", path, "data set row differs from its record in the ledger", uri
                    )
                path, sha, size = str(record["path"]), str(record["file_sha256"]), int(record["size_bytes"])
            if path in erased:
                return mismatch, _erased_file(art, path, uri), True
            return mismatch, _check_file(art, path, sha, size, uri), record is not None

        for (key, uri, path, _sha, _size), (mismatch, problem, has_record) in _in_order(
            check, meta.dataset_files_after(after), self.workers
        ):
            self.n_datasets += 1
            self.to_dataset_key = max(self.to_dataset_key, key)
            paths.add(path)
            if mismatch is not None:
                self.problems.append(mismatch)
            if (
                problem is not None
                and problem.kind == "missing"
                and not has_record
                and not _still_there(meta, uri)
            ):
                continue  # undone meanwhile by the failed registration that made it (never recorded)
            if problem is not None:
                self.problems.append(problem)
        return paths


def _full(
    run: _Run,
    progress: Callable[[ModelVersion], None] | None,
    grace: timedelta,
    trusted_checkpoint: Checkpoint | None,
) -> None:
    """Everything: the whole chain, state, every version and data set file, orphans."""
    meta, art = run.meta, run.art
    run.checkpoints = meta.checkpoints()
    with contextlib.ExitStack() as stack:
        run.pool = _open_pool(run, len(run.checkpoints))
        if run.pool is not None:
            stack.callback(_close_pool, run)
        # the versions' files are read and hashed while the ledger pass runs: nothing in
        # that part depends on it (a version with an erased file is checked again after),
        # by the worker processes, else by threads; one worker thread and no process keeps
        # everything on this thread, in sequence
        scan = partial(scan_version, art)
        ahead: Iterable[tuple[ModelVersion, _Scan]] | None = None
        if run.pool is not None and run.pool.scans:
            ahead = stack.enter_context(_PoolScan(run.pool, meta, art))
        elif run.workers > 1:
            ahead = stack.enter_context(_Ahead(scan, meta.iter_versions(), run.workers))
        _verify_chain(run, start=None)
        run.chain_problems()
        run.unsigned_tail()
        run.root_problem()
        ring = _ring(run.roster, run.trusted_pem)
        run.problems.extend(_check_tip(meta, run.tip, trusted_checkpoint, ring if run.trusted_pem else None))
        for diff in state_differences(meta, run.rebuilt, replayed_to=run.tip[0]):
            run.problems.append(Problem("state", diff.what, f"does not match the ledger: {diff}"))
        scanned = ahead if ahead is not None else _in_order(scan, meta.iter_versions(), 1)
        folders = run.versions(scanned, run.rebuilt.names, progress)
    dataset_paths = run.data_sets(0)
    cutoff = now() - grace
    for _kind, path, detail in _orphans(art, folders, dataset_paths):
        size, modified = art.usage(path)
        if modified is None and size == 0 and not art.exists(path):
            continue  # gone since the listing: a write that just finished (or a gc) moved it
        if modified is not None and modified > cutoff:
            run.in_flight.append(
                Problem("in_flight", path, f"{detail}; written in the last {grace}: in flight?")
            )
        else:
            run.problems.append(Problem("orphan", path, detail))


def _since(
    run: _Run,
    prev: VerifyRecord,
    progress: Callable[[ModelVersion], None] | None,
    trusted_checkpoint: Checkpoint | None,
) -> None:
    """Only what came after ``prev`` (whose continuity is already checked): the events after
    its checkpoint (chain, signatures, authorisation), the versions and data sets after its
    keys (digests, files), and what new events say about older files (captures written,
    erasures). Not the state tables, orphans, nor the older files' bytes."""
    meta, art = run.meta, run.art
    run.after_seq, run.after_version_key, run.after_dataset_key = prev.seq, prev.version_key, prev.dataset_key
    run.to_version_key, run.to_dataset_key = prev.version_key, prev.dataset_key
    checkpoints = meta.checkpoints(after=prev.seq - 1) if prev.seq > 0 else meta.checkpoints()
    start = checkpoints[0] if prev.seq > 0 else None
    run.checkpoints = checkpoints[1:] if start is not None else checkpoints
    _seed(run, prev.seq)
    _verify_chain(run, start=start)
    run.chain_problems()
    run.unsigned_tail()
    run.root_problem()
    ring = _ring(run.roster, run.trusted_pem)
    run.problems.extend(_check_tip(meta, run.tip, trusted_checkpoint, ring if run.trusted_pem else None))
    names = meta.renamed_models()
    scanned = _in_order(partial(scan_version, art), meta.iter_versions(after=prev.version_key), run.workers)
    folders = run.versions(scanned, names, progress)
    paths = run.data_sets(prev.dataset_key)
    erased = run.erased

    def elsewhere(path: str) -> bool:
        return "/".join(path.split("/")[:3]) not in folders and path not in paths

    for path in sorted(p for p in erased if elsewhere(p)):
        gone = _erased_file(art, path, None)
        if gone is not None:
            run.problems.append(gone)
    for path, rec in sorted(run.captured.items()):
        if path in erased or not elsewhere(path):
            continue
        if run.captures:
            problem = _check_file(art, path, str(rec.get("sha256")), int(rec.get("size") or 0), path)
        elif not art.exists(path):
            problem = Problem("missing", path, "captured predictions recorded in the ledger are gone")
        else:
            problem = None
        if problem is not None:
            run.problems.append(problem)


def _seed(run: _Run, upto: int) -> None:
    """The roster and the policy as they were after event ``upto``: what authorising the
    events after it starts from (through the action index, not a walk of the ledger)."""
    meta = run.meta
    try:
        segments = meta.member_segments()
    except IntegrityError as exc:  # an enrolment write no checkpoint covers
        run.problems.append(Problem("unauthorized", exc.path, exc.problem))
        segments = []
    for segment in segments:
        for event, _hash in segment.events:
            if event.seq <= upto and event.action in MEMBER_ACTIONS:
                run.roster.apply(event.action, event.seq, event.time, event.data)
    after = 0
    while True:
        page = meta.audit(
            subjects=(),
            subject_prefixes=(),
            actor=None,
            action="policy.changed",
            since=None,
            until=None,
            after=after,
            limit=500,
        )
        for event, _hash in page:
            if event.seq > upto:
                return
            run.rebuilt.apply(
                state_delta(event.action, event.actor, event.time, event.seq, event.data), event.time
            )
        if len(page) < 500:
            return
        after = page[-1][0].seq


def _earlier_record(
    meta: MetadataStore, verifier: Ed25519PrivateKey, kid: str, problems: list[Problem]
) -> VerifyRecord | None:
    """The record this verifier key stored last, if its signature holds (else a problem)."""
    text = meta.verify_record(kid)
    if text is None:
        return None
    try:
        rec = VerifyRecord.from_dict(json.loads(text))
        signature = base64.b64decode(rec.signature, validate=True)
        good = rec.key_id == kid and verify_with_key(verifier.public_key(), record_payload(rec), signature)
    except (ValueError, KeyError, TypeError, InvalidInput) as exc:
        problems.append(Problem("verify_record", f"verify record of key {kid}", f"unreadable: {exc}"))
        return None
    if not good:
        problems.append(
            Problem(
                "verify_record",
                f"verify record of key {kid}",
                "its signature does not verify with this verifier's key: the record was edited",
            )
        )
        return None
    return rec


def _continuity(meta: MetadataStore, prev: VerifyRecord) -> list[Problem]:
    """What breaks the line from ``prev`` to now: the event and the checkpoint at its seq no
    longer carry its hash, or an event up to it is gone."""
    if prev.seq == 0:
        return []
    where = f"ledger event {prev.seq}"
    when = f"the verify of {prev.time} proved"
    found = meta.audit(
        subjects=(),
        subject_prefixes=(),
        actor=None,
        action=None,
        since=None,
        until=None,
        after=prev.seq - 1,
        limit=1,
    )
    if not found or found[0][0].seq != prev.seq:
        return [
            Problem("continuity", where, f"{when} this event; it is gone: the ledger was cut or rewritten")
        ]
    if found[0][1] != prev.head_hash:
        return [
            Problem(
                "continuity",
                where,
                f"{when} its hash was {prev.head_hash[:16]}..., it is now {found[0][1][:16]}...: "
                "the ledger up to it was rewritten",
            )
        ]
    cps = meta.checkpoints(after=prev.seq - 1)
    if not cps or cps[0].seq != prev.seq or cps[0].head_hash != prev.head_hash:
        return [
            Problem(
                "continuity",
                f"ledger checkpoint {prev.seq}",
                f"{when} this checkpoint; it is gone or changed",
            )
        ]
    count = meta.count_events(upto=prev.seq)
    if count != prev.seq:
        return [
            Problem(
                "continuity",
                f"ledger events 1..{prev.seq}",
                f"{when} {prev.seq} events up to here; {count} are left: events were deleted",
            )
        ]
    return []


def _record(
    run: _Run, prev: VerifyRecord | None, verifier: Ed25519PrivateKey, kid: str
) -> VerifyRecord | None:
    """Sign and store what this clean run proved; None (and a note) when it cannot."""
    chain = run.chain
    if chain is None:
        run.notes.append("nothing recorded: the registry has no key, so its chain was not checked")
        return None
    seq, head = (prev.seq, prev.head_hash) if prev is not None else (0, GENESIS.hex())
    if chain.last_checkpoint_seq is not None and chain.last_checkpoint_seq > seq:
        seq = chain.last_checkpoint_seq
        head = next(cp.head_hash for cp in reversed(run.checkpoints) if cp.seq == seq)
    at = now_text()
    rec = VerifyRecord(
        seq=seq,
        head_hash=head.lower(),
        version_key=run.to_version_key,
        dataset_key=run.to_dataset_key,
        time=at,
        full_time=at if prev is None else prev.full_time,
        full=prev is None,
        key_id=kid,
    )
    rec = replace(rec, signature=base64.b64encode(sign(verifier, record_payload(rec))).decode("ascii"))
    try:
        run.meta.save_verify_record(kid, json.dumps(rec.to_dict(), sort_keys=True))
    except (StorageError, PermissionDenied) as exc:
        run.notes.append(f"nothing recorded: {exc}")
        return None
    return rec


T = TypeVar("T")
R = TypeVar("R")


def _in_order(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[tuple[T, R]]:
    """``(item, fn(item))`` in the order of ``items``, ``fn`` running on ``workers`` threads
    (hashlib and file reads release the GIL) with a bounded number of items in flight."""
    if workers <= 1:
        for item in items:
            yield item, fn(item)
        return
    window: deque[tuple[T, Future[R]]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="modelledger-verify") as pool:
        for item in items:
            window.append((item, pool.submit(fn, item)))
            if len(window) >= 4 * workers:
                first, future = window.popleft()
                yield first, future.result()
        while window:
            first, future = window.popleft()
            yield first, future.result()


_Scan = tuple[list[Problem], list[str]]
"""A version's problems found without the ledger (no erasure known), and its folder's files."""


def scan_version(art: ArtifactStore, mv: ModelVersion) -> _Scan:
    return _verify_version(art, mv, set())


class _Ahead(Generic[T, R]):
    """``(item, fn(item))`` in the order of ``items``, computed ahead on ``workers`` threads
    from the moment it is made (a feeder thread reads ``items``), at most ``ahead`` items
    before the reader; iterate it inside its ``with`` block, which stops the threads."""

    def __init__(self, fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int = 0) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="modelledger-verify")
        self._queue: queue.Queue[tuple[T, Future[R]] | BaseException | None] = queue.Queue()
        self._room = threading.Semaphore(ahead or 64 * workers)
        self._stop = threading.Event()
        self._feeder = threading.Thread(target=self._feed, args=(fn, items), daemon=True)
        self._feeder.start()

    def _feed(self, fn: Callable[[T], R], items: Iterable[T]) -> None:
        try:
            for item in items:
                while not self._room.acquire(timeout=0.05):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                self._queue.put((item, self._pool.submit(fn, item)))
        except BaseException as exc:  # handed to the reader, which raises it
            self._queue.put(exc)
            return
        self._queue.put(None)

    def __enter__(self) -> _Ahead[T, R]:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._feeder.join()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __iter__(self) -> Iterator[tuple[T, R]]:
        while True:
            got = self._queue.get()
            if got is None:
                return
            if isinstance(got, BaseException):
                raise got
            item, future = got
            self._room.release()
            yield item, future.result()


def _open_pool(run: _Run, writes: int) -> VerifyPool | None:
    """The worker processes this run asked for, or None: one process (``jobs=1``), the
    default on a ledger too small to gain from them or on one core, or when none start."""
    jobs = run.jobs
    if jobs is None:
        cores = os.cpu_count() or 1
        jobs = cores if writes >= POOL_MIN_WRITES else 1
    if jobs <= 1:
        return None
    try:
        return VerifyPool(jobs, run.art)
    except OSError as exc:
        run.notes.append(f"no worker process could start ({exc}): verified in this process")
        return None


def _close_pool(run: _Run) -> None:
    pool, run.pool = run.pool, None
    if pool is None:
        return
    pool.close()
    if pool.failures:
        run.notes.append(
            f"{pool.failures} task(s) of the worker processes failed: this process checked them instead"
        )


class _PoolScan:
    """``(version, scan)`` of every version, the scans made by the worker processes from the
    moment it is made (a feeder thread reads the versions and hands them over in chunks).
    Iterating reads the versions again, in order, and takes each one's scan; a version the
    feeder did not see (registered meanwhile) or whose worker failed is scanned here."""

    def __init__(self, pool: VerifyPool, meta: MetadataStore, art: ArtifactStore) -> None:
        self._pool, self._meta, self._art = pool, meta, art
        self._scans: dict[int, tuple[str, Future[list[_Scan]], int]] = {}
        self._stop = threading.Event()
        # chunks handed over and not yet scanned, at most: what waits in the pipes stays small
        self._room = threading.Semaphore(8 * pool.jobs)
        self._feeder = threading.Thread(target=self._feed, name="modelledger-verify-feed", daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        chunk: list[ModelVersion] = []
        try:
            for mv in self._meta.iter_versions():
                if self._stop.is_set():
                    return
                chunk.append(mv)
                if len(chunk) >= SCAN_CHUNK:
                    self._send(chunk)
                    chunk = []
            self._send(chunk)
        except Exception:  # the second read, in order, meets it again and raises it
            return

    def _send(self, chunk: list[ModelVersion]) -> None:
        if not chunk:
            return
        while not self._room.acquire(timeout=0.05):
            if self._stop.is_set():
                return
        future = self._pool.submit("scan", [scan_payload(mv) for mv in chunk])
        future.add_done_callback(lambda _f: self._room.release())
        for i, mv in enumerate(chunk):
            self._scans[mv.key] = (mv.folder, future, i)

    def __enter__(self) -> _PoolScan:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._feeder.join()

    def __iter__(self) -> Iterator[tuple[ModelVersion, _Scan]]:
        self._feeder.join()
        for mv in self._meta.iter_versions():
            got = self._scans.pop(mv.key, None)
            if got is not None and got[0] == mv.folder:
                try:
                    yield mv, got[1].result()[got[2]]
                    continue
                except WorkerGone:
                    self._pool.failures += 1
            yield mv, scan_version(self._art, mv)


def _registration_digest(meta: MetadataStore, mv: ModelVersion, names: Mapping[str, str]) -> str | None:
    """The digest of ``mv``'s ``version.registered`` event, looked up by its subject (under every
    name the model has had): for a version whose event the pass did not read."""
    former = [old for old, new in names.items() if new == mv.model]
    subjects = [f"models:/{name}/{mv.version}" for name in (mv.model, *former)]
    found = meta.audit(
        subjects=subjects,
        subject_prefixes=(),
        actor=None,
        action="version.registered",
        since=None,
        until=None,
        after=0,
        limit=1,
    )
    return str(found[0][0].data.get("digest")) if found else None


def _dataset_record(meta: MetadataStore, uri: str) -> dict[str, Any] | None:
    found = meta.audit(
        subjects=(uri,),
        subject_prefixes=(),
        actor=None,
        action="dataset.registered",
        since=None,
        until=None,
        after=0,
        limit=1,
    )
    return dict(found[0][0].data) if found else None


def _ring(roster: Roster, trusted_pem: bytes | None) -> KeyRing:
    """Every key enrolled in ``roster``, and the trusted registry key."""

    trusted_kid = key_id(trusted_pem) if trusted_pem is not None else None
    parsed: dict[str, Ed25519PublicKey] = {}  # only keys found: the roster grows as events stream

    def keys(kid: str) -> Ed25519PublicKey | None:
        if kid in parsed:
            return parsed[kid]
        pem = roster.public_pem(kid)
        if pem is None and kid == trusted_kid:
            pem = trusted_pem
        if pem is None:
            return None
        parsed[kid] = load_public_key(pem)
        return parsed[kid]

    return keys


def _check_tip(
    meta: MetadataStore, tip: tuple[int, str], trusted: Checkpoint | None, public_pem: KeyRing | None
) -> list[Problem]:
    """The end of the chain against the head row and a checkpoint trusted from outside: a
    ledger cut short (its last events and their checkpoints deleted) fails here."""
    out = []
    last_seq, last_hash = tip
    head_seq, head_hash = meta.ledger_head()
    if head_seq > last_seq:  # writes landed after the pass: look at the ledger as it is now
        for event, stored in meta.iter_events(after=last_seq):
            if event.seq > head_seq:
                break
            last_seq, last_hash = event.seq, stored
    if (head_seq, head_hash) != (last_seq, last_hash):
        out.append(
            Problem(
                "truncated" if head_seq > last_seq else "head_mismatch",
                "ledger head",
                f"the head row says seq {head_seq}, the ledger ends at seq {last_seq}",
            )
        )
    if trusted is not None:
        if public_pem is None or not verify_checkpoint(public_pem, trusted):
            out.append(Problem("untrusted_checkpoint", "trusted checkpoint", "its signature does not verify"))
        elif trusted.seq > last_seq:
            out.append(
                Problem(
                    "truncated",
                    f"ledger event {last_seq + 1}",
                    f"the ledger ends at seq {last_seq}, but the trusted checkpoint vouches for seq "
                    f"{trusted.seq}: events were removed",
                )
            )
    return out


def _erased_file(art: ArtifactStore, path: str, uri: str | None) -> Problem | None:
    """A file a recorded erasure removed: fine while it is gone, a problem if it is there."""
    if art.exists(path):
        return Problem("not_erased", path, "a recorded erasure removed this file, but it is there", uri)
    return None


def _still_there(meta: MetadataStore, uri: str) -> bool:
    try:
        meta.get_dataset_version(*parse_dataset_uri(uri))
    except NotFound:
        return False
    return True


def _referenced(meta: MetadataStore) -> tuple[set[str], set[str]]:
    """Version folders and data set files that anything refers to: the tables, and the ledger
    too, so that a row deleted behind the library's back cannot get its files collected."""
    folders, paths = meta.referenced_paths()
    for event, _hash in meta.iter_events():
        if event.action == "version.registered" and isinstance(event.data.get("folder"), str):
            folders.add(event.data["folder"])
        elif event.action == "dataset.registered" and isinstance(event.data.get("path"), str):
            paths.add(event.data["path"])
    return folders, paths


def _orphans(art: ArtifactStore, folders: set[str], dataset_paths: set[str]) -> list[tuple[str, str, str]]:
    """(kind, path, detail) of what the artefact root holds that nothing references.

    Version folders under models/ and files under datasets/; files inside a registered
    version's folder are the version check's business.
    """
    out: list[tuple[str, str, str]] = []
    for model_dir in art.list_dirs("models"):
        for sub in art.list_dirs(f"models/{model_dir}"):
            folder = f"models/{model_dir}/{sub}"
            if folder not in folders:
                out.append(("model folder", folder, "folder is not referenced by any version"))
    for rel in art.list_files("datasets"):
        path = f"datasets/{rel}"
        if path in dataset_paths:
            continue
        if "/" not in rel and rel.startswith(".staging-"):
            out.append(("ingest staging", path, "unfinished data set ingest (not registered)"))
        else:
            out.append(("data set file", path, "file is not referenced by any data set version"))
    return out


def collect_garbage(
    meta: MetadataStore, art: ArtifactStore, *, older_than: timedelta, delete: bool = False
) -> GcReport:
    """Find (and with ``delete=True`` remove) what the artefact root holds that nothing references.

    That is version folders never registered (a registration that failed or was
    abandoned after ``Registry.upload``), data set files of interrupted ingests, and files under
    datasets/ no data set version points to: what :meth:`verify` reports as orphans.
    Registered versions, data sets and their files are never touched. Only things whose
    newest file is older than ``older_than`` are collected: a registration may still be
    writing a younger one, so an uploaded version must be registered within that time.
    Without ``delete`` nothing changes (a dry run).

    >>> registry.gc(older_than=timedelta(days=7), delete=True).size_bytes  # doctest: +SKIP
    """
    art.refresh()
    cutoff = now() - older_than
    items: list[GcItem] = []
    recent = 0
    retained: list[ObjectRetention] = []
    folders, paths = _referenced(meta)
    for kind, path, _detail in _orphans(art, folders, paths):
        size, modified = art.usage(path)
        if modified is None or modified > cutoff:
            recent += 1  # no time known, or too young: leave it
            continue
        held = art.retained(path)  # S3 Object Lock would refuse: left whole for a later gc
        if held:
            retained.extend(held)
            continue
        items.append(GcItem(path=path, kind=kind, size_bytes=size, modified=modified))
    if delete and items:
        # Looked up again just before removing: a registration may have committed meanwhile.
        folders, paths = _referenced(meta)
        still = [i for i in items if i.path not in folders and i.path not in paths]
        recent += len(items) - len(still)
        items = still
        for item in items:
            retained.extend(art.remove(item.path))
    return GcReport(items=tuple(items), deleted=delete, recent=recent, retained=tuple(retained))


def _check_file(art: ArtifactStore, rel: str, sha256: str, size: int, uri: str) -> Problem | None:
    """The problem with one stored file, if any: missing, unreadable or changed."""
    try:
        got_size, got_sha = art.hash_file(rel)
    except NotFound:
        return Problem("missing", rel, "file is missing", uri)
    except (StorageError, PermissionDenied) as exc:  # a file this user may not read is reported too
        return Problem("unreadable", rel, str(exc), uri)
    if got_sha != sha256 or got_size != size:
        return Problem("mismatch", rel, f"sha256 is {got_sha}, expected {sha256}", uri)
    return None


def _verify_chain(run: _Run, *, start: Checkpoint | None) -> None:
    """Verify the ledger after ``start`` (all of it without) in one pass that also notes each
    version's registered digest, replays every event into ``run.rebuilt`` (for the state
    check) and the enrolment events into ``run.roster``, and checks that each event after the
    root of trust was signed (the checkpoint closing its write) by a key enrolled to its actor
    with the role its action needs. Events a server wrote for a member are counted in
    ``run.delegated`` by how the member proved who they were. Sets ``run.chain`` and
    ``run.tip`` (the (seq, stored hash) of the last event) and adds every event that fails
    that check to the problems."""
    after = start.seq if start is not None else 0
    run.tip = (after, start.head_hash if start is not None else GENESIS.hex())
    checkpoints = run.checkpoints
    cp_seqs = [cp.seq for cp in checkpoints]
    roster, rebuilt, legacy_kid = run.roster, run.rebuilt, run.legacy_kid
    registered, datasets, captured, delegated = run.registered, run.datasets, run.captured, run.delegated
    refused = run.problems

    n_cps = len(cp_seqs)
    at = 0  # the checkpoint found last: events come in order, so it is mostly the next one's

    def signer_of(seq: int) -> str | None:
        """The key id of the first checkpoint at or after ``seq`` (the one closing its write)."""
        nonlocal at
        i = at
        if not (i < n_cps and cp_seqs[i] >= seq and (i == 0 or cp_seqs[i - 1] < seq)):
            i = at = bisect.bisect_left(cp_seqs, seq)
        return checkpoints[i].key_id if i < n_cps else None

    keys = _ring(roster, run.trusted_pem)

    # the stored data text of each event handed to the chain check and not yet hashed (one
    # at a time, a few more when it looks ahead to name a problem)
    texts: dict[int, str] = {}

    def events() -> Iterator[tuple[LedgerEvent, str]]:
        for event, digest, text in run.meta.iter_event_texts(after=after):
            texts[event.seq] = text
            founding = event.action in ("registry.initialized", "member.enrolled")
            kid = signer_of(event.seq)
            if kid is not None and (not roster.empty or founding):
                problem = authorize_event(
                    roster, event, kid=kid, legacy_kid=legacy_kid, auto_approve=rebuilt.policy.auto_approve
                )
                legacy_start = (
                    roster.empty and event.action == "registry.initialized" and "root" not in event.data
                )
                if problem is not None and not legacy_start:
                    refused.append(Problem("unauthorized", f"ledger event {event.seq}", problem))
            roster.apply(event.action, event.seq, event.time, event.data)
            via = event.data.get("via")
            if via is not None and isinstance(via, Mapping):
                method = str(via.get("method"))
                delegated[method] = delegated.get(method, 0) + 1
            if event.action == "version.registered":
                data = event.data
                registered[(data["model"], int(data["version"]))] = data["digest"]
            elif event.action == "dataset.registered":
                datasets[str(event.data.get("uri"))] = dict(event.data)
            elif event.action == "predictions.written":
                for record in event.data.get("files") or ():
                    captured[str(record.get("path"))] = record
            elif event.action in ERASURE_ACTIONS:
                run.erasures.append(erasure_from_event(event))
            rebuilt.apply(
                state_delta(event.action, event.actor, event.time, event.seq, event.data), event.time
            )
            run.tip = (event.seq, digest)
            yield event, digest

    stream = events()
    signatures = PooledSignatures(run.pool) if run.pool is not None else None
    run.chain = (
        verify_chain(
            stream,
            checkpoints,
            keys,
            start=start,
            data_text=lambda e: texts.pop(e.seq, None),
            signatures=signatures,
        )
        if run.trusted_pem
        else None
    )
    for _rest in stream:
        pass  # the replay needs every event, also after the chain check stopped at a problem


def unrecorded_records(meta: MetadataStore, art: ArtifactStore) -> list[EventDraft]:
    """Ledger records for what the ledger does not hold yet: data set versions registered by a
    release that did not record them, and capture files written by such a release or by a
    writer stopped between writing a file and recording it. ``Registry.init`` appends them, so
    that from then on ``verify`` holds those files to a record (trust on first use: what they
    are at that moment)."""
    datasets: set[str] = set()
    captured: set[str] = set()
    for event, _hash in meta.iter_events():
        if event.action == "dataset.registered":
            datasets.add(str(event.data.get("uri")))
        elif event.action == "predictions.written":
            captured.update(str(r.get("path")) for r in event.data.get("files") or ())
    drafts: list[EventDraft] = []
    for uri, path, sha, size in meta.iter_dataset_files():
        if uri not in datasets:
            dv = meta.get_dataset_version(*parse_dataset_uri(uri))
            drafts.append(record_dataset(uri, dv.digest, sha, size, path))
    art.refresh()
    for mv in meta.iter_versions():
        folder = predictions_folder(mv.folder)
        files = []
        for rel in art.list_files(folder):
            path, ids = f"{folder}/{rel}", parse_part_name(rel.rsplit("/", 1)[-1])
            if ids is None or path in captured:
                continue
            size, sha = art.hash_file(path)
            rows = _capture_rows(art, path)
            files.append(CaptureFile(path, size, sha, rows, ids[0], ids[1]).to_dict())
        if files:
            drafts.append(record_captures(mv.model, mv.version, files))
    return drafts


def _capture_rows(art: ArtifactStore, path: str) -> int:
    import pyarrow.parquet as pq  # heavy: only recording older capture files needs it

    try:
        return int(pq.ParquetFile(io.BytesIO(art.read_bytes(path))).metadata.num_rows)
    except (OSError, ValueError):
        return -1  # not a readable Parquet file: recorded as it is, verify --captures names it


def _verify_capture_files(
    art: ArtifactStore,
    mv: ModelVersion,
    captured: dict[str, dict[str, Any]],
    rehash: bool,
    unrecorded: list[Problem],
    erased: set[str],
    listing: list[str] | None = None,
) -> list[Problem]:
    """A version's capture files against their ``predictions.written`` ledger records: a
    recorded file that is gone is named; with ``rehash`` every recorded file is hashed too.
    Files with no record go to ``unrecorded`` (a writer that crashed before recording, a
    release that did not record them, or a planted file: ``--captures`` checks their rows).
    ``listing``, the version folder's files as ``_verify_version`` listed them, saves listing
    its predictions folder again."""
    out: list[Problem] = []
    folder = predictions_folder(mv.folder)
    if listing is None:
        names = art.list_files(folder)
    else:
        cut = len(folder) - len(mv.folder)  # "/predictions/"
        names = [rel[cut:] for rel in listing if rel.startswith(folder[len(mv.folder) + 1 :] + "/")]
    present = {f"{folder}/{rel}" for rel in names if parse_part_name(rel.rsplit("/", 1)[-1])}
    prefix = folder + "/"
    for path, record in captured.items():
        if not path.startswith(prefix):
            continue
        if path in erased:
            if path in present:
                out.append(
                    Problem(
                        "not_erased", path, "a recorded erasure removed this file, but it is there", mv.uri
                    )
                )
            continue
        if path not in present:
            out.append(
                Problem("missing", path, "captured predictions recorded in the ledger are gone", mv.uri)
            )
        elif rehash:
            problem = _check_file(art, path, str(record.get("sha256")), int(record.get("size") or 0), mv.uri)
            if problem is not None:
                out.append(problem)
    for path in sorted(present - captured.keys()):
        unrecorded.append(
            Problem(
                "unrecorded",
                path,
                "capture file with no ledger record (`modelledger init` records it)",
                mv.uri,
            )
        )
    return out


def _verify_captures(
    art: ArtifactStore, mv: ModelVersion, keys: KeyRing, roster: Roster, legacy_kid: str | None
) -> list[Problem]:
    """The first problem of each capture file of ``mv``: a row whose receipt does not verify
    (output, ids, digest or time edited; signature or tree forged), whose input text does not
    hash to its input digest, or that names another version."""
    import pyarrow.parquet as pq  # heavy: only checking captures needs it

    out: list[Problem] = []
    for rel in art.list_files(f"{mv.folder}/predictions"):
        if not rel.endswith(".parquet"):
            continue
        path = f"{mv.folder}/predictions/{rel}"
        try:
            table = pq.read_table(io.BytesIO(art.read_bytes(path)))
            rows = table.select(["prediction_id", "input", "input_digest"]).to_pylist()
            for receipt, row in zip(receipts_from_table(table), rows, strict=True):
                if receipt.version_key != mv.key or receipt.digest != mv.digest:
                    raise InvalidReceipt(receipt.prediction_id, f"names another version than {mv.uri}")
                if (
                    "sha256:" + hashlib.sha256(row["input"].encode("utf-8")).hexdigest()
                    != row["input_digest"]
                ):
                    raise InvalidReceipt(row["prediction_id"], "its input does not match its input digest")
                problem = receipt_key_problem(
                    roster, receipt.key_id, mv.model, receipt.time, legacy_kid=legacy_kid
                )
                public = keys(receipt.key_id)
                if problem is not None or public is None:
                    raise InvalidReceipt(
                        receipt.prediction_id, problem or f"signed by unknown key {receipt.key_id}"
                    )
                check_receipt(receipt, public)
        except InvalidReceipt as exc:
            out.append(
                Problem("mismatch", path, f"captured prediction {exc.prediction_id}: {exc.reason}", mv.uri)
            )
        except (ValueError, KeyError, TypeError, OSError, InvalidInput, StorageError) as exc:
            out.append(Problem("unreadable", path, f"not a readable capture file: {exc}", mv.uri))
    return out


_LONG_NUMBER = re.compile(r"\d{16}")


def _same_text(value: Any, held: Any) -> bool:
    """True when the standard JSON encoder writes ``value`` as exactly the stored canonical
    ``held``: then ``value`` is the very value ``held`` encodes. Only for ASCII text with no
    NaN or Infinity and no integer too long for the canonical form, where the two encoders
    agree on what they accept, on key order and on escapes; anything else takes the full
    canonical encoding (the C encoder is several times faster)."""
    if (
        not isinstance(held, str)
        or not held.isascii()
        or "NaN" in held
        or "Infinity" in held
        or _LONG_NUMBER.search(held)
    ):
        return False
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":")) == held
    except (TypeError, ValueError):
        return False


def _same_value(value: Any, held: Any, mv: ModelVersion) -> bool:
    theirs = canonicalize(value)
    return (isinstance(held, str) and theirs == held.encode("utf-8")) or theirs == canonicalize(
        dict(mv.manifest)
    )


def _verify_version(
    art: ArtifactStore, mv: ModelVersion, erased: set[str]
) -> tuple[list[Problem], list[str]]:
    """The version's problems, and its folder's files (relative to it) as listed."""
    out: list[Problem] = []
    uri = mv.uri
    if version_digest(mv.files, mv.manifest) != mv.digest:
        out.append(
            Problem("mismatch", mv.folder, "manifest or file list does not match the version digest", uri)
        )
    try:
        record = json.loads(art.read_bytes(f"{mv.folder}/manifest.json"))
        # a stored manifest keeps its text, canonical except in a 0.1.0 registry (which spelled
        # some floats `1.0`, `1e21`): compared with that text first, encoded again only when
        # it differs
        held = getattr(mv.manifest, "canonical_text", None)
        same = _same_text(record.get("manifest"), held) or _same_value(record.get("manifest"), held, mv)
        if record.get("digest") != mv.digest or not same:
            out.append(
                Problem("mismatch", f"{mv.folder}/manifest.json", "differs from the registered manifest", uri)
            )
    except NotFound:
        out.append(Problem("missing", f"{mv.folder}/manifest.json", "file is missing", uri))
    except (ValueError, StorageError, PermissionDenied, InvalidInput) as exc:
        out.append(Problem("unreadable", f"{mv.folder}/manifest.json", str(exc), uri))
    known = set()
    for f in mv.files:
        known.add(f.path)
        rel = f"{mv.folder}/artifacts/{f.path}"
        if rel in erased:
            problem = _erased_file(art, rel, uri)
            if problem is not None:
                out.append(problem)
            continue
        problem = _check_file(art, rel, f.sha256, f.size, uri)
        if problem is not None:
            out.append(problem)
    listing = art.list_files(mv.folder)
    for extra in listing:
        if extra == "manifest.json" or extra.startswith("predictions/"):
            continue
        if extra.removeprefix("artifacts/") not in known or not extra.startswith("artifacts/"):
            out.append(Problem("orphan", f"{mv.folder}/{extra}", "file is not part of the version", uri))
    return out, listing
