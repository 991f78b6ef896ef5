"""``verify`` and ``gc``: check everything the registry vouches for; collect what nothing references.

Both work on the ports alone (the metadata store and the artefact store), read the
ledger once, and report rather than repair.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ._audit import state_differences
from ._canonical import canonicalize
from ._domain import Erasure, GcItem, GcReport, ModelVersion, Problem, VerifyReport
from ._erasure import erasure_from_event
from ._identifiers import parse_dataset_uri
from ._integrity import version_digest
from ._keys import key_id, load_public_key
from ._ledger import GENESIS, ChainReport, Checkpoint, KeyRing, LedgerEvent, verify_chain, verify_checkpoint
from ._lifecycle import (
    ERASURE_ACTIONS,
    EventDraft,
    ReplayedState,
    record_captures,
    record_dataset,
    state_delta,
)
from ._members import Roster, authorize_event, receipt_key_problem
from ._serving import CaptureFile, check_receipt, parse_part_name, predictions_folder, receipts_from_table
from ._time import now
from .errors import InvalidInput, InvalidReceipt, NotFound, PermissionDenied, StorageError
from .stores.artifacts import ArtifactStore
from .stores.protocols import MetadataStore

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["collect_garbage", "unrecorded_records", "verify_registry"]


def verify_registry(
    meta: MetadataStore,
    art: ArtifactStore,
    *,
    progress: Callable[[ModelVersion], None] | None = None,
    grace: timedelta = timedelta(hours=1),
    public_key: bytes | None = None,
    trusted_checkpoint: Checkpoint | None = None,
    captures: bool = False,
) -> VerifyReport:
    """What :meth:`Registry.verify <modelledger.Registry.verify>` reports: the ledger chain and
    checkpoints (against ``public_key`` and ``trusted_checkpoint`` when pinned), the head row,
    state tables against a replay, version digests against their registration events, every
    artefact and data set file re-hashed, every file of a version folder accounted for, and
    orphans (those younger than ``grace`` apart, as in flight). With ``captures``, every
    captured prediction's receipt is rebuilt from its row and checked against the signed
    root of its call, and its input text against its input digest."""
    art.refresh()  # report what the store holds now, not what this process listed before
    problems: list[Problem] = []
    registered: dict[tuple[str, int], str] = {}
    rebuilt = ReplayedState()
    stored = meta.public_key()
    if public_key is not None and stored is not None and key_id(public_key) != stored[0]:
        problems.append(
            Problem(
                "untrusted_key",
                "registry key",
                f"the registry holds key {stored[0]}, not the pinned key {key_id(public_key)}: "
                "its ledger may have been rewritten and re-signed",
            )
        )
    datasets: dict[str, dict[str, Any]] = {}  # data set uri -> its dataset.registered record
    captured: dict[str, dict[str, Any]] = {}  # capture file path -> its predictions.written record
    trusted_pem = public_key or (stored[1] if stored else None)
    roster = Roster()
    legacy_kid = stored[0] if stored else None
    erasures: list[Erasure] = []
    delegated: dict[str, int] = {}
    chain, tip, refused = _verify_chain(
        meta, registered, rebuilt, trusted_pem, datasets, captured, roster, legacy_kid, erasures, delegated
    )
    # events name a model by the name it had then; the rows carry the name it has now
    registered = {(rebuilt.names.get(m, m), v): d for (m, v), d in registered.items()}
    erased = {p for e in erasures for p in e.paths}
    if chain is not None and chain.first_problem is not None:
        fp = chain.first_problem
        problems.append(Problem(fp.kind, f"ledger event {fp.seq}", fp.detail))
    problems.extend(refused)
    root = next((m for m in roster.members.values() if m.root), None)
    trusted_kid = key_id(public_key) if public_key is not None else legacy_kid
    if root is not None and trusted_kid is not None and root.keys[0].key_id != trusted_kid:
        problems.append(
            Problem(
                "untrusted_key",
                "root of trust",
                f"the ledger's root key is {root.keys[0].key_id}, not the registry's key {trusted_kid}",
            )
        )
    ring = _ring(roster, trusted_pem)
    problems.extend(_check_tip(meta, tip, trusted_checkpoint, ring if trusted_pem else None))
    for diff in state_differences(meta, rebuilt, replayed_to=tip[0]):
        problems.append(Problem("state", diff.what, f"does not match the ledger: {diff}"))
    folders: set[str] = set()
    unrecorded: list[Problem] = []
    n_versions = n_files = 0
    for mv in meta.iter_versions():
        n_versions += 1
        folders.add(mv.folder)
        recorded = registered.get((mv.model, mv.version))
        if recorded is not None and recorded != mv.digest:
            problems.append(
                Problem(
                    "mismatch",
                    mv.folder,
                    "version digest differs from its registration in the ledger",
                    mv.uri,
                )
            )
        problems.extend(_verify_version(art, mv, erased))
        problems.extend(_verify_capture_files(art, mv, captured, captures, unrecorded, erased))
        if captures and stored is not None:
            problems.extend(_verify_captures(art, mv, ring, roster, legacy_kid))
        n_files += len(mv.files)
        if progress:
            progress(mv)
    n_datasets, dataset_paths = _verify_datasets(meta, art, problems, datasets, erased)
    cutoff = now() - grace
    in_flight: list[Problem] = []
    for _kind, path, detail in _orphans(art, folders, dataset_paths):
        size, modified = art.usage(path)
        if modified is None and size == 0 and not art.exists(path):
            continue  # gone since the listing: a write that just finished (or a gc) moved it
        if modified is not None and modified > cutoff:
            in_flight.append(Problem("in_flight", path, f"{detail}; written in the last {grace}: in flight?"))
        else:
            problems.append(Problem("orphan", path, detail))
    return VerifyReport(
        versions_checked=n_versions,
        files_checked=n_files + n_datasets,
        problems=tuple(problems),
        events_checked=chain.events_checked if chain else 0,
        checkpoints_checked=chain.checkpoints_checked if chain else 0,
        datasets_checked=n_datasets,
        in_flight=tuple(in_flight),
        unrecorded=tuple(unrecorded),
        erased=tuple(erasures),
        delegated=dict(sorted(delegated.items())),
    )


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


def _verify_datasets(
    meta: MetadataStore,
    art: ArtifactStore,
    problems: list[Problem],
    recorded: dict[str, dict[str, Any]],
    erased: set[str],
) -> tuple[int, set[str]]:
    """Re-hash every data set version's file against its ledger record (where the ledger
    holds one; versions from before data sets were recorded fall back to their row), adding
    what is wrong to ``problems``; returns how many were checked and the paths of their files."""
    n, paths = 0, set()
    for uri, path, sha, size in meta.iter_dataset_files():
        n += 1
        paths.add(path)
        record = recorded.get(uri)
        if record is not None:
            if (record.get("path"), record.get("file_sha256"), record.get("size_bytes")) != (path, sha, size):
                problems.append(
                    Problem("mismatch", path, "data set row differs from its record in the ledger", uri)
                )
            path, sha, size = str(record["path"]), str(record["file_sha256"]), int(record["size_bytes"])
        if path in erased:
            gone = _erased_file(art, path, uri)
            if gone is not None:
                problems.append(gone)
            continue
        problem = _check_file(art, path, sha, size, uri)
        if (
            problem is not None
            and problem.kind == "missing"
            and uri not in recorded
            and not _still_there(meta, uri)
        ):
            continue  # undone meanwhile by the failed registration that made it (never recorded)
        if problem is not None:
            problems.append(problem)
    return n, paths


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
    folders, paths = _referenced(meta)
    for kind, path, _detail in _orphans(art, folders, paths):
        size, modified = art.usage(path)
        if modified is None or modified > cutoff:
            recent += 1  # no time known, or too young: leave it
            continue
        items.append(GcItem(path=path, kind=kind, size_bytes=size, modified=modified))
    if delete and items:
        # Looked up again just before removing: a registration may have committed meanwhile.
        folders, paths = _referenced(meta)
        still = [i for i in items if i.path not in folders and i.path not in paths]
        recent += len(items) - len(still)
        items = still
        for item in items:
            art.remove(item.path)
    return GcReport(items=tuple(items), deleted=delete, recent=recent)


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


def _verify_chain(
    meta: MetadataStore,
    registered: dict[tuple[str, int], str],
    rebuilt: ReplayedState,
    public_pem: bytes | None,
    datasets: dict[str, dict[str, Any]],
    captured: dict[str, dict[str, Any]],
    roster: Roster,
    legacy_kid: str | None,
    erasures: list[Erasure],
    delegated: dict[str, int],
) -> tuple[ChainReport | None, tuple[int, str], list[Problem]]:
    """Verify the ledger in one pass that also notes each version's registered digest,
    replays every event into ``rebuilt`` (for the state check) and the enrolment events into
    ``roster``, and checks that each event after the root of trust was signed (the
    checkpoint closing its write) by a key enrolled to its actor with the role its action
    needs. Events a server wrote for a member are counted in ``delegated`` by how the member
    proved who they were. Returns the chain report, the (seq, stored hash) of the last event,
    and every event that fails that check."""
    tip = (0, GENESIS.hex())
    checkpoints = sorted(meta.checkpoints(), key=lambda cp: cp.seq)
    cp_seqs = [cp.seq for cp in checkpoints]
    refused: list[Problem] = []

    def signer_of(seq: int) -> str | None:
        i = bisect.bisect_left(cp_seqs, seq)
        return checkpoints[i].key_id if i < len(checkpoints) else None

    keys = _ring(roster, public_pem)

    def events() -> Iterator[tuple[LedgerEvent, str]]:
        nonlocal tip
        for event, digest in meta.iter_events():
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
            if isinstance(via, Mapping):
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
                erasures.append(erasure_from_event(event))
            rebuilt.apply(
                state_delta(event.action, event.actor, event.time, event.seq, event.data), event.time
            )
            tip = (event.seq, digest)
            yield event, digest

    stream = events()
    report = verify_chain(stream, checkpoints, keys) if public_pem else None
    for _rest in stream:
        pass  # the replay needs every event, also after the chain check stopped at a problem
    return report, tip, refused


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
) -> list[Problem]:
    """A version's capture files against their ``predictions.written`` ledger records: a
    recorded file that is gone is named; with ``rehash`` every recorded file is hashed too.
    Files with no record go to ``unrecorded`` (a writer that crashed before recording, a
    release that did not record them, or a planted file: ``--captures`` checks their rows)."""
    out: list[Problem] = []
    folder = predictions_folder(mv.folder)
    present = {f"{folder}/{rel}" for rel in art.list_files(folder) if parse_part_name(rel.rsplit("/", 1)[-1])}
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


def _verify_version(art: ArtifactStore, mv: ModelVersion, erased: set[str]) -> list[Problem]:
    out: list[Problem] = []
    uri = mv.uri
    if version_digest(mv.files, mv.manifest) != mv.digest:
        out.append(
            Problem("mismatch", mv.folder, "manifest or file list does not match the version digest", uri)
        )
    try:
        record = json.loads(art.read_bytes(f"{mv.folder}/manifest.json"))
        if record.get("digest") != mv.digest or canonicalize(record.get("manifest")) != canonicalize(
            dict(mv.manifest)
        ):
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
    for extra in art.list_files(mv.folder):
        if extra == "manifest.json" or extra.startswith("predictions/"):
            continue
        if extra.removeprefix("artifacts/") not in known or not extra.startswith("artifacts/"):
            out.append(Problem("orphan", f"{mv.folder}/{extra}", "file is not part of the version", uri))
    return out
