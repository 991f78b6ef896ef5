"""The governance ledger's pure core: events, the hash chain, signed checkpoints, verification.

No I/O happens here; a store persists events with their hashes and checkpoints,
then hands them back to :func:`verify_chain`.

The chain::

    hash_0 = GENESIS (32 zero bytes)
    hash_n = sha256(hash_{n-1} || canonicalize(event_n.to_dict()))     # RFC 8785 JSON

Sequence numbers start at 1 and have no gaps. A :class:`Checkpoint` is the
registry key's Ed25519 signature over ``(seq, hash_seq, time, key_id)``, so
anyone with the public key can tell an intact ledger from an edited, reordered
or truncated one.

>>> builder = ChainBuilder()
>>> event, stored_hash = builder.record(
...     actor="alice", action="version.approve", subject="fraud/3", data={"stage": "prod"},
...     time="2024-05-01T12:00:00Z")
>>> verify_chain([(event, stored_hash)], [], public_pem).ok  # doctest: +SKIP
True
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import islice
from json.encoder import encode_basestring as _json_string
from typing import TYPE_CHECKING, Any, Final, Protocol

from ._canonical import MAX_SAFE_INTEGER, canonicalize, canonicalize_str
from ._keys import key_id, load_public_key, sign, verify_with_key
from ._time import now_text
from .errors import IntegrityError, InvalidInput

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "ALTERED_HASH",
    "BAD_CHECKPOINT_SIGNATURE",
    "CHECKPOINT_DOMAIN",
    "CHECKPOINT_MISMATCH",
    "CHECKPOINT_WRONG_KEY",
    "DELETED_EVENT",
    "DUPLICATE_EVENT",
    "EDITED_EVENT",
    "FIRST_SEQ",
    "GENESIS",
    "PROBLEM_KINDS",
    "REORDERED_EVENTS",
    "TRUNCATED",
    "ChainBuilder",
    "ChainProblem",
    "ChainReport",
    "ChainSegment",
    "Checkpoint",
    "KeyRing",
    "LedgerEvent",
    "SignatureChecks",
    "chain_hash",
    "check_segment",
    "check_time",
    "checkpoint_signature_problem",
    "event_bytes",
    "sign_checkpoint",
    "single_key",
    "verify_chain",
    "verify_checkpoint",
]

GENESIS: Final[bytes] = bytes(32)
"""The hash "before" the first event."""

FIRST_SEQ: Final[int] = 1
"""Sequence number of the first event; a checkpoint at seq 0 signs the empty ledger."""

CHECKPOINT_DOMAIN: Final[str] = "modelledger.ledger.checkpoint.v1"
"""Inside every signed checkpoint payload, so the key's other signatures (prediction
receipts) can never be replayed as checkpoints, nor checkpoints as receipts."""

# ChainProblem.kind values
EDITED_EVENT: Final = "edited_event"
"""The event at ``seq`` no longer hashes to its stored hash (its content was changed)."""
ALTERED_HASH: Final = "altered_hash"
"""The stored hash at ``seq`` was changed; the event itself still links to the next one."""
DELETED_EVENT: Final = "deleted_event"
"""Sequence numbers jump: the event at ``seq`` (up to ``other_seq``) is missing."""
REORDERED_EVENTS: Final = "reordered_events"
"""The event at ``seq`` was found at the place of ``other_seq``: swapped or moved."""
DUPLICATE_EVENT: Final = "duplicate_event"
"""Sequence number ``seq`` appears a second time (where ``other_seq`` was expected)."""
BAD_CHECKPOINT_SIGNATURE: Final = "bad_checkpoint_signature"
"""The checkpoint at ``seq`` names the registry key but its signature is not valid."""
CHECKPOINT_WRONG_KEY: Final = "checkpoint_wrong_key"
"""The checkpoint at ``seq`` was signed by a key other than the registry key."""
CHECKPOINT_MISMATCH: Final = "checkpoint_mismatch"
"""A validly signed checkpoint at ``seq`` disagrees with the chain: it was rewritten."""
TRUNCATED: Final = "truncated"
"""The chain ends before ``other_seq``, the seq of a validly signed checkpoint."""

PROBLEM_KINDS: Final = frozenset(
    {
        EDITED_EVENT,
        ALTERED_HASH,
        DELETED_EVENT,
        REORDERED_EVENTS,
        DUPLICATE_EVENT,
        BAD_CHECKPOINT_SIGNATURE,
        CHECKPOINT_WRONG_KEY,
        CHECKPOINT_MISMATCH,
        TRUNCATED,
    }
)

_RFC3339_UTC = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_int_repr = int.__repr__


def check_time(value: str) -> str:
    """Return ``value`` if it is an RFC 3339 UTC timestamp ending in ``Z``, else raise InvalidInput.

    >>> check_time("2024-05-01T12:00:00.5Z")
    '2024-05-01T12:00:00.5Z'
    """
    match = _RFC3339_UTC.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidInput(f"time must be RFC 3339 UTC like 2024-05-01T12:00:00Z, got {value!r}")
    try:
        # The shape is right; this checks the date and time are real (seconds 0-59) in one C call.
        datetime.fromisoformat(value[:19])
        return value
    except ValueError:
        pass  # not a real date, or a leap second: the slower checks below tell which
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        # second 60 is a legal RFC 3339 leap second that datetime cannot hold
        datetime(year, month, day, hour, minute, min(second, 59))
    except ValueError as exc:
        raise InvalidInput(f"time {value!r} is not a real date and time: {exc}") from exc
    if second > 60:
        raise InvalidInput(f"time {value!r} is not a real date and time")
    return value


def _hash_bytes(value: bytes | str, what: str) -> bytes:
    if isinstance(value, str):
        if not _HEX64.fullmatch(value.lower()):
            raise InvalidInput(f"{what} must be 64 hex digits, got {value!r}")
        return bytes.fromhex(value)
    if len(value) != 32:
        raise InvalidInput(f"{what} must be 32 bytes, got {len(value)}")
    return bytes(value)


@dataclass(frozen=True, slots=True)
class LedgerEvent:
    """One governance event: who (``actor``) did what (``action``) to what (``subject``).

    ``data`` holds the action's details (JSON values only: see
    :mod:`modelledger._canonical`); treat it as immutable once the event is built,
    since the event's hash covers it.

    >>> LedgerEvent(seq=1, time="2024-05-01T12:00:00Z", actor="alice", action="alias.move",
    ...             subject="fraud@champion", data={"from": 2, "to": 3}, reason="ok")  # doctest: +ELLIPSIS
    LedgerEvent(seq=1, time='2024-05-01T12:00:00Z', actor='alice', action='alias.move', ...)
    """

    seq: int
    time: str
    actor: str
    action: str
    subject: str
    data: Mapping[str, Any]
    reason: str | None = None

    def __post_init__(self) -> None:
        # Cheap type checks only: this runs for every row a store loads.
        if type(self.seq) is not int or self.seq < 0:
            raise InvalidInput(f"event seq must be a non-negative int, got {self.seq!r}")
        # plain str and dict first: the loop and the abstract Mapping check cost more than
        # the rest of building an event (a full verify builds one per event)
        if not (
            type(self.time) is str
            and type(self.actor) is str
            and type(self.action) is str
            and type(self.subject) is str
        ):
            for name in ("time", "actor", "action", "subject"):
                if not isinstance(getattr(self, name), str):
                    raise InvalidInput(f"event {name} must be a string, got {getattr(self, name)!r}")
        if type(self.data) is not dict and not isinstance(self.data, Mapping):
            raise InvalidInput(f"event data must be a mapping, got {type(self.data).__name__}")
        if self.reason is not None and not isinstance(self.reason, str):
            raise InvalidInput(f"event reason must be a string or None, got {self.reason!r}")

    def to_dict(self) -> dict[str, Any]:
        """The event as the plain dict that is canonicalised and hashed (``data`` is a shallow copy)."""
        return {
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "data": dict(self.data),
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> LedgerEvent:
        """Rebuild an event from :meth:`to_dict` output; unknown or missing keys raise InvalidInput."""
        expected = {"seq", "time", "actor", "action", "subject", "data", "reason"}
        keys = set(raw)
        if keys != expected:
            missing, extra = sorted(expected - keys), sorted(keys - expected)
            raise InvalidInput(f"ledger event keys: missing {missing}, unexpected {extra}")
        return cls(
            seq=raw["seq"],
            time=raw["time"],
            actor=raw["actor"],
            action=raw["action"],
            subject=raw["subject"],
            data=raw["data"],
            reason=raw["reason"],
        )


def event_bytes(event: LedgerEvent, data_text: str | None = None) -> bytes:
    """``canonicalize(event.to_dict())``, without building the intermediate dict.

    The member order is fixed: action, actor, data, reason, seq, subject, time.
    ``data_text``, when given, must be ``canonicalize_str(event.data)``, from a caller that
    needs that text anyway (a store keeping it as the event's data column).
    """
    seq = event.seq
    reason = event.reason
    data = event.data
    if (
        type(data) is dict
        and seq <= MAX_SAFE_INTEGER
        and type(event.action) is str
        and type(event.actor) is str
        and type(event.subject) is str
        and type(event.time) is str
        and (reason is None or type(reason) is str)
    ):
        text = "".join(
            (
                '{"action":',
                _json_string(event.action),
                ',"actor":',
                _json_string(event.actor),
                ',"data":',
                canonicalize_str(data) if data_text is None else data_text,
                ',"reason":',
                "null" if reason is None else _json_string(reason),
                ',"seq":',
                _int_repr(seq),
                ',"subject":',
                _json_string(event.subject),
                ',"time":',
                _json_string(event.time),
                "}",
            )
        )
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: let canonicalize() raise its precise error
    # str subclasses, other mappings, out-of-range seq: the general path.
    return canonicalize(event.to_dict())


def chain_hash(prev: bytes, event: LedgerEvent) -> bytes:
    """``sha256(prev || canonicalize(event.to_dict()))``: the hash of ``event`` in the chain.

    >>> chain_hash(GENESIS, event).hex()  # doctest: +SKIP
    '9c1185a5c5e9fc54612808977ee8f548b2258d31...'
    """
    if len(prev) != 32:
        raise InvalidInput(f"previous hash must be 32 bytes, got {len(prev)}")
    return hashlib.sha256(prev + event_bytes(event)).digest()


class ChainBuilder:
    """Assigns sequence numbers and computes hashes for new events, one writer at a time.

    Start it from the store's current head (``head``/``next_seq``), append, then
    persist the events with the returned hex hashes. :meth:`extend` is atomic:
    if any event is refused, the builder is left as it was.

    >>> builder = ChainBuilder()  # or ChainBuilder(head=stored_head_hex, next_seq=last_seq + 1)
    >>> event, hash_hex = builder.record(actor="alice", action="model.create", subject="fraud",
    ...                                  data={}, time="2024-05-01T12:00:00Z")
    >>> event.seq, builder.next_seq
    (1, 2)
    """

    __slots__ = ("_head", "_next_seq")

    def __init__(self, *, head: bytes | str = GENESIS, next_seq: int = FIRST_SEQ) -> None:
        if type(next_seq) is not int or next_seq < FIRST_SEQ:
            raise InvalidInput(f"next_seq must be an int >= {FIRST_SEQ}, got {next_seq!r}")
        self._head = _hash_bytes(head, "head hash")
        self._next_seq = next_seq

    @property
    def head(self) -> bytes:
        """Hash of the last event appended (``GENESIS`` for an empty ledger)."""
        return self._head

    @property
    def head_hex(self) -> str:
        return self._head.hex()

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def last_seq(self) -> int:
        """Seq of the last event appended; 0 for an empty ledger."""
        return self._next_seq - 1

    def record(
        self,
        *,
        actor: str,
        action: str,
        subject: str,
        data: Mapping[str, Any],
        reason: str | None = None,
        time: str | None = None,
    ) -> tuple[LedgerEvent, str]:
        """Build the next event (next seq; ``time`` defaults to now), append it; return it and its hash."""
        event = LedgerEvent(
            seq=self._next_seq,
            time=now_text() if time is None else time,
            actor=actor,
            action=action,
            subject=subject,
            data=data,
            reason=reason,
        )
        return event, self.append(event)

    def append(self, event: LedgerEvent) -> str:
        """Append one event whose seq must be :attr:`next_seq`; returns its hash as hex."""
        return self.extend((event,))[0]

    def extend(self, events: Iterable[LedgerEvent], *, data_texts: Sequence[str] | None = None) -> list[str]:
        """Append a batch of consecutive events; returns their hashes (hex) in order.

        ``data_texts``, when given, holds ``canonicalize_str(event.data)`` for each event
        (see :func:`event_bytes`).
        """
        prev = self._head
        seq = self._next_seq
        sha256 = hashlib.sha256
        encode = event_bytes
        hashes: list[str] = []
        checked: str | None = None  # events of one batch usually share one time string
        for i, event in enumerate(events):
            if event.seq != seq:
                raise InvalidInput(f"ledger event has seq {event.seq}, the next seq is {seq}")
            if event.time is not checked:
                checked = check_time(event.time)
            for name in ("actor", "action", "subject"):
                if not getattr(event, name):
                    raise InvalidInput(f"ledger event {name} must not be empty (seq {seq})")
            prev = sha256(prev + encode(event, None if data_texts is None else data_texts[i])).digest()
            hashes.append(prev.hex())
            seq += 1
        self._head = prev
        self._next_seq = seq
        return hashes


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed tree head: the registry key vouches that the chain's hash at ``seq`` is ``head_hash``.

    ``signature`` is base64 (standard alphabet, padded) of the Ed25519 signature over
    :meth:`payload`.
    """

    seq: int
    head_hash: str
    time: str
    key_id: str
    signature: str

    def payload(self) -> bytes:
        """The exact bytes that are signed."""
        return _checkpoint_payload(self.seq, self.head_hash, self.time, self.key_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "head_hash": self.head_hash,
            "time": self.time,
            "key_id": self.key_id,
            "signature": self.signature,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Checkpoint:
        expected = {"seq", "head_hash", "time", "key_id", "signature"}
        if set(raw) != expected:
            raise InvalidInput(f"checkpoint keys must be {sorted(expected)}, got {sorted(raw)}")
        if type(raw["seq"]) is not int or raw["seq"] < 0:
            raise InvalidInput(f"checkpoint seq must be a non-negative int, got {raw['seq']!r}")
        for name in ("head_hash", "time", "key_id", "signature"):
            if not isinstance(raw[name], str):
                raise InvalidInput(f"checkpoint {name} must be a string, got {raw[name]!r}")
        return cls(
            seq=raw["seq"],
            head_hash=raw["head_hash"],
            time=raw["time"],
            key_id=raw["key_id"],
            signature=raw["signature"],
        )


@dataclass(frozen=True, slots=True)
class ChainSegment:
    """Consecutive ledger events with their stored hashes, the stored hash just before the
    first, and the signed checkpoint at the last: enough to prove one event with the
    registry's public key alone, without reading the whole ledger."""

    previous_hash: str
    events: tuple[tuple[LedgerEvent, str], ...]
    checkpoint: Checkpoint


def check_segment(segment: ChainSegment, public: Ed25519PublicKey | KeyRing) -> None:
    """Raise :class:`IntegrityError` unless the segment's events hash, one after the other,
    from ``previous_hash`` to their stored hashes and to a checkpoint the key signed.

    A row edited in place, a recomputed hash or a forged checkpoint all fail here.
    """
    head = _hash_bytes(segment.previous_hash, "previous hash")
    seq = None
    for event, stored in segment.events:
        head = chain_hash(head, event)
        seq = event.seq
        if head.hex() != stored:
            raise IntegrityError(f"ledger event {seq}", "does not hash to its stored hash (edited)")
    cp = segment.checkpoint
    if seq is None or cp.seq != seq or cp.head_hash != head.hex():
        raise IntegrityError(f"ledger event {seq}", "is not covered by the checkpoint that should sign it")
    problem = checkpoint_signature_problem(_keyring(public), cp)
    if problem is not None:
        raise IntegrityError(f"ledger checkpoint {cp.seq}", f"{problem}: not signed by an enrolled key")


_CHECKPOINT_TAIL: Final = ',"type":' + _json_string(CHECKPOINT_DOMAIN) + "}"


def _checkpoint_payload(seq: int, head_hash: str, time: str, kid: str) -> bytes:
    # verify builds one per checkpoint: plain values take the direct RFC 8785 text (members
    # in code-unit order: head_hash, key_id, seq, time, type), anything else the general path
    if (
        type(seq) is int
        and 0 <= seq <= MAX_SAFE_INTEGER
        and type(head_hash) is str
        and type(time) is str
        and type(kid) is str
    ):
        text = "".join(
            (
                '{"head_hash":',
                _json_string(head_hash),
                ',"key_id":',
                _json_string(kid),
                ',"seq":',
                _int_repr(seq),
                ',"time":',
                _json_string(time),
                _CHECKPOINT_TAIL,
            )
        )
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: let canonicalize() raise its precise error
    return canonicalize(
        {"type": CHECKPOINT_DOMAIN, "seq": seq, "head_hash": head_hash, "time": time, "key_id": kid}
    )


def sign_checkpoint(
    private: Ed25519PrivateKey, seq: int, head_hash: bytes | str, time: str, *, kid: str | None = None
) -> Checkpoint:
    """Sign the chain head ``head_hash`` (the hash of event ``seq``) with the registry key.

    ``kid`` is the key's id when the caller already knows it (it is derived from the key
    otherwise); a wrong one makes the checkpoint fail verification.

    >>> builder.extend(events)  # doctest: +SKIP
    >>> checkpoint = sign_checkpoint(key, builder.last_seq, builder.head, now_text())  # doctest: +SKIP
    """
    if type(seq) is not int or seq < 0:
        raise InvalidInput(f"checkpoint seq must be a non-negative int, got {seq!r}")
    head_hex = _hash_bytes(head_hash, "head hash").hex()
    check_time(time)
    if kid is None:
        kid = key_id(private)
    signature = sign(private, _checkpoint_payload(seq, head_hex, time, kid))
    return Checkpoint(
        seq=seq,
        head_hash=head_hex,
        time=time,
        key_id=kid,
        signature=base64.b64encode(signature).decode("ascii"),
    )


KeyRing = Callable[[str], "Ed25519PublicKey | None"]
"""The public key of a key id (None: no such key): the registry's one key, or every key its
members ever had enrolled."""


def single_key(public: Ed25519PublicKey | bytes) -> KeyRing:
    """A key ring holding one key."""
    key = load_public_key(public) if isinstance(public, bytes) else public
    kid = key_id(key)
    return lambda k: key if k == kid else None


def _keyring(keys: Ed25519PublicKey | bytes | KeyRing) -> KeyRing:
    if isinstance(keys, bytes) or not callable(keys):
        return single_key(keys)
    return keys


def checkpoint_signature_problem(keys: KeyRing, cp: Checkpoint) -> str | None:
    """None if ``cp`` is validly signed by the key it names (one the ring holds), else the problem kind."""
    public = keys(cp.key_id)
    if public is None:
        return CHECKPOINT_WRONG_KEY
    try:
        signature = base64.b64decode(cp.signature, validate=True)
        payload = cp.payload()
    except (binascii.Error, ValueError, InvalidInput):
        return BAD_CHECKPOINT_SIGNATURE
    return None if verify_with_key(public, payload, signature) else BAD_CHECKPOINT_SIGNATURE


def verify_checkpoint(public_pem: bytes | KeyRing, checkpoint: Checkpoint) -> bool:
    """True when ``checkpoint`` carries a valid signature by the key ``public_pem`` (or by the
    key it names, found in a key ring).

    This checks the signature only; :func:`verify_chain` also checks the head
    against the events.

    >>> verify_checkpoint(public_pem, checkpoint)  # doctest: +SKIP
    True
    """
    return checkpoint_signature_problem(_keyring(public_pem), checkpoint) is None


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """The first thing :func:`verify_chain` found wrong; ``kind`` is one of :data:`PROBLEM_KINDS`."""

    kind: str
    seq: int
    detail: str
    other_seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "seq": self.seq, "detail": self.detail, "other_seq": self.other_seq}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChainProblem:
        other = data.get("other_seq")
        return cls(
            kind=str(data["kind"]),
            seq=int(data["seq"]),
            detail=str(data["detail"]),
            other_seq=None if other is None else int(other),
        )

    def __str__(self) -> str:
        return f"{self.kind} at seq {self.seq}: {self.detail}"


@dataclass(frozen=True, slots=True)
class ChainReport:
    """Outcome of :func:`verify_chain`.

    ``events_checked`` counts events verified before the first problem; ``head_seq``
    and ``head_hash`` describe the last of them. Events after
    ``last_checkpoint_seq`` are hash-chained but not yet signed, so truncating
    them cannot be detected until a later checkpoint covers them.
    """

    ok: bool
    events_checked: int
    first_problem: ChainProblem | None
    head_seq: int = 0
    head_hash: str = GENESIS.hex()
    checkpoints_checked: int = 0
    last_checkpoint_seq: int | None = None

    def raise_for_problem(self) -> None:
        """Raise :class:`~modelledger.errors.IntegrityError` if the chain is not intact."""
        if self.first_problem is not None:
            problem = self.first_problem
            raise IntegrityError(f"ledger event {problem.seq}", f"{problem.kind}: {problem.detail}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events_checked": self.events_checked,
            "first_problem": None if self.first_problem is None else self.first_problem.to_dict(),
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "checkpoints_checked": self.checkpoints_checked,
            "last_checkpoint_seq": self.last_checkpoint_seq,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChainReport:
        problem = data.get("first_problem")
        last_cp = data.get("last_checkpoint_seq")
        return cls(
            ok=bool(data["ok"]),
            events_checked=int(data["events_checked"]),
            first_problem=None if problem is None else ChainProblem.from_dict(problem),
            head_seq=int(data.get("head_seq", 0)),
            head_hash=str(data.get("head_hash", GENESIS.hex())),
            checkpoints_checked=int(data.get("checkpoints_checked", 0)),
            last_checkpoint_seq=None if last_cp is None else int(last_cp),
        )


class _Walk:
    """Mutable state of one verify_chain run, so the failure paths can build reports."""

    __slots__ = ("checked", "checkpoints_checked", "head", "head_seq", "last_cp_seq")

    def __init__(self, head: bytes, head_seq: int, last_cp_seq: int | None) -> None:
        self.checked = 0
        self.checkpoints_checked = 0
        self.head = head
        self.head_seq = head_seq
        self.last_cp_seq = last_cp_seq

    def at(self, head: bytes, head_seq: int) -> None:
        self.head = head
        self.head_seq = head_seq

    def report(self, problem: ChainProblem | None) -> ChainReport:
        return ChainReport(
            ok=problem is None,
            events_checked=self.checked,
            first_problem=problem,
            head_seq=self.head_seq,
            head_hash=self.head.hex(),
            checkpoints_checked=self.checkpoints_checked,
            last_checkpoint_seq=self.last_cp_seq,
        )


class SignatureChecks(Protocol):
    """Where :func:`verify_chain` hands checkpoint signature checks off (to other processes),
    carrying on as if each holds, instead of making each in turn."""

    def submit(self, index: int, public: Ed25519PublicKey, checkpoint: Checkpoint) -> None:
        """Check ``checkpoint``'s signature with ``public`` (the key it names, as the chain
        knows it at this point); ``index`` orders the checks in the chain."""

    def first_failure(self) -> tuple[int, str] | None:
        """Once every check submitted is done: the ``(index, problem kind)`` of the first
        that failed, None when all hold."""


def verify_chain(
    events: Iterable[tuple[LedgerEvent, str]],
    checkpoints: Iterable[Checkpoint],
    public_pem: bytes | KeyRing,
    *,
    start: Checkpoint | None = None,
    lookahead: int = 1000,
    data_text: Callable[[LedgerEvent], str | None] | None = None,
    signatures: SignatureChecks | None = None,
) -> ChainReport:
    """Recompute the chain from ``events`` (``(event, stored_hash_hex)`` in seq order) and
    check every checkpoint; report the first problem in chain order.

    Each event costs one canonicalisation and one sha256; the iterable is consumed
    lazily (a database cursor is fine). Problems are precise: an edited event or
    altered hash names its seq; a gap names the first missing seq; swapped events
    name both seqs (looking up to ``lookahead`` events ahead); a checkpoint that is
    forged, signed by another key, or disagrees with the chain names its seq; a chain
    shorter than its last checkpoint is ``truncated``.

    ``start``, a checkpoint already trusted, verifies only the events after it
    (``events`` must then begin at ``start.seq + 1``); its signature is re-checked.

    ``data_text``, the stored text of an event's data where a store keeps it (canonical when
    written), lets an event be hashed over that text instead of its data encoded again: when
    the hash matches, those are the bytes hashed when it was written. When it does not (a
    text stored otherwise, or an edit), the event is encoded again, as without it.

    ``signatures`` takes the checkpoints' signature checks (the Ed25519 verifications) off
    this pass: the walk goes on as if each holds, and at the end the first that failed, in
    chain order, is the problem reported, with the counts and head it would have stopped at.
    The report is the same as without it.

    >>> report = verify_chain(store.iter_events(), store.checkpoints(), public_pem)  # doctest: +SKIP
    >>> report.ok, report.first_problem  # doctest: +SKIP
    (False, ChainProblem(kind='edited_event', seq=512, detail='...', other_seq=None))
    """
    if lookahead < 1:
        raise InvalidInput(f"lookahead must be at least 1, got {lookahead}")
    keys = _keyring(public_pem)

    if start is None:
        walk = _Walk(GENESIS, FIRST_SEQ - 1, None)
    else:
        kind = checkpoint_signature_problem(keys, start)
        if kind is not None:
            problem = ChainProblem(kind, start.seq, f"start checkpoint: {_cp_detail(kind, start)}")
            return _Walk(GENESIS, FIRST_SEQ - 1, None).report(problem)
        walk = _Walk(_hash_bytes(start.head_hash, "start head hash"), start.seq, start.seq)
        walk.checkpoints_checked = 1

    pending = sorted((cp for cp in checkpoints if start is None or cp.seq > start.seq), key=_cp_seq)
    cp_index = 0
    no_more = -1
    heads: dict[int, bytes] = {}  # the head at each checkpoint whose check was handed off
    base_seq = walk.head_seq
    base_checked = walk.checkpoints_checked
    base_cp_seq = walk.last_cp_seq

    def signature_problem(cp: Checkpoint) -> str | None:
        if signatures is None:
            return checkpoint_signature_problem(keys, cp)
        public = keys(cp.key_id)  # which key it names is known only at this point of the chain
        if public is None:
            return CHECKPOINT_WRONG_KEY
        signatures.submit(cp_index, public, cp)
        heads[cp_index] = walk.head
        return None

    def finish(problem: ChainProblem | None) -> ChainReport:
        """The report, once the checks handed off are in: a failed one comes before any
        problem the walk found after it (and before its own head mismatch)."""
        failed = signatures.first_failure() if signatures is not None else None
        if failed is None:
            return walk.report(problem)
        index, kind = failed
        cp = pending[index]
        walk.at(heads[index], cp.seq)
        walk.checked = cp.seq - base_seq
        walk.checkpoints_checked = base_checked + index
        walk.last_cp_seq = pending[index - 1].seq if index > 0 else base_cp_seq
        return walk.report(ChainProblem(kind, cp.seq, _cp_detail(kind, cp)))

    def check_checkpoints_at(seq: int) -> ChainProblem | None:
        """Verify every checkpoint at ``seq`` against the current head; advance the cursor."""
        nonlocal cp_index
        head_hex = walk.head.hex()
        while cp_index < len(pending) and pending[cp_index].seq == seq:
            cp = pending[cp_index]
            kind = signature_problem(cp)
            if kind is not None:
                return ChainProblem(kind, seq, _cp_detail(kind, cp))
            if cp.head_hash.lower() != head_hex:
                since = walk.last_cp_seq if walk.last_cp_seq is not None else FIRST_SEQ - 1
                return ChainProblem(
                    CHECKPOINT_MISMATCH,
                    seq,
                    f"the checkpoint signed at {cp.time} says the hash at seq {seq} is "
                    f"{cp.head_hash[:16]}..., the events give {head_hex[:16]}...: the chain was "
                    f"rewritten somewhere in seq {since + 1}..{seq}",
                )
            walk.checkpoints_checked += 1
            walk.last_cp_seq = seq
            cp_index += 1
        return None

    # A checkpoint at seq 0 signs the empty ledger.
    if start is None and pending and pending[0].seq == 0:
        genesis_problem = check_checkpoints_at(0)
        if genesis_problem is not None:
            return finish(genesis_problem)

    next_cp = pending[cp_index].seq if cp_index < len(pending) else no_more
    expected = walk.head_seq + 1
    prev = walk.head
    sha256 = hashlib.sha256
    encode = event_bytes
    it = iter(events)
    for event, stored in it:
        seq = event.seq
        if seq != expected:
            walk.at(prev, expected - 1)
            return finish(_diagnose_sequence(event, stored, expected, it, lookahead))
        text = data_text(event) if data_text is not None else None
        try:
            if text is not None:
                digest = sha256(prev + encode(event, text)).digest()
                if digest.hex() != stored and (type(stored) is not str or digest.hex() != stored.lower()):
                    digest = sha256(prev + encode(event)).digest()
            else:
                digest = sha256(prev + encode(event)).digest()
        except InvalidInput as exc:
            walk.at(prev, expected - 1)
            return finish(ChainProblem(EDITED_EVENT, seq, f"event cannot be canonicalised: {exc}"))
        hex_digest = digest.hex()
        if hex_digest != stored and (type(stored) is not str or hex_digest != stored.lower()):
            walk.at(prev, expected - 1)
            return finish(_diagnose_mismatch(prev, event, stored, digest, it, lookahead))
        prev = digest
        walk.checked += 1
        expected += 1
        if seq == next_cp:
            walk.at(prev, seq)
            cp_problem = check_checkpoints_at(seq)
            if cp_problem is not None:
                return finish(cp_problem)
            next_cp = pending[cp_index].seq if cp_index < len(pending) else no_more
    walk.at(prev, expected - 1)

    # Checkpoints beyond the last event: the tail was cut off (if the checkpoint is genuine).
    if cp_index < len(pending):
        cp = pending[cp_index]
        kind = checkpoint_signature_problem(keys, cp)
        if kind is not None:
            return finish(ChainProblem(kind, cp.seq, _cp_detail(kind, cp)))
        missing_from = walk.head_seq + 1
        return finish(
            ChainProblem(
                TRUNCATED,
                missing_from,
                f"the chain ends at seq {walk.head_seq} but a checkpoint signed at {cp.time} covers "
                f"seq {cp.seq}: events {missing_from}..{cp.seq} are missing",
                other_seq=cp.seq,
            )
        )
    return finish(None)


def _cp_seq(cp: Checkpoint) -> int:
    return cp.seq


def _cp_detail(kind: str, cp: Checkpoint) -> str:
    if kind == CHECKPOINT_WRONG_KEY:
        return f"checkpoint signed by key {cp.key_id!r}, which is not a key this registry trusts"
    return f"checkpoint (signed at {cp.time!r}) has an invalid signature: forged or altered"


def _diagnose_sequence(
    event: LedgerEvent,
    stored: str,
    expected: int,
    rest: Iterator[tuple[LedgerEvent, str]],
    lookahead: int,
) -> ChainProblem:
    """``event.seq`` is not ``expected``: a gap, a repeat, or events out of order."""
    found = event.seq
    if found < expected:
        # every seq below ``expected`` was already seen exactly once, in order
        return ChainProblem(
            DUPLICATE_EVENT,
            found,
            f"seq {found} appears again where seq {expected} was expected",
            other_seq=expected,
        )
    window = [(event, stored), *islice(rest, lookahead)]
    for position, (candidate, _) in enumerate(window):
        if candidate.seq == expected:
            if position == found - expected:
                detail = f"events {expected} and {found} are swapped"
            else:
                detail = f"event {expected} is out of order: found after event {window[position - 1][0].seq}"
            return ChainProblem(REORDERED_EVENTS, expected, detail, other_seq=found)
    last_missing = found - 1
    span = f"event {expected} is" if last_missing == expected else f"events {expected}..{last_missing} are"
    return ChainProblem(
        DELETED_EVENT,
        expected,
        f"{span} missing: seq {expected - 1} is followed by seq {found}"
        + (f" (nor found in the next {lookahead} events)" if len(window) > lookahead else ""),
        other_seq=last_missing,
    )


def _diagnose_mismatch(
    prev: bytes,
    event: LedgerEvent,
    stored: str,
    recomputed: bytes,
    rest: Iterator[tuple[LedgerEvent, str]],
    lookahead: int,
) -> ChainProblem:
    """The event at ``event.seq`` does not hash to ``stored``: edited, swapped, or hash altered."""
    seq = event.seq
    window = list(islice(rest, lookahead))
    stored_norm = stored.lower() if isinstance(stored, str) else ""
    # Contents swapped between two rows that kept their seq numbers: some later event,
    # renumbered to ``seq``, hashes to the stored hash here or to its own stored hash.
    for candidate, candidate_stored in window:
        try:
            moved = chain_hash(prev, replace(candidate, seq=seq)).hex()
        except InvalidInput:
            continue
        if moved in (stored_norm, str(candidate_stored).lower()):
            return ChainProblem(
                REORDERED_EVENTS,
                seq,
                f"the content of events {seq} and {candidate.seq} was swapped",
                other_seq=candidate.seq,
            )
    # Only the stored hash changed: the event still links to its successor.
    if window:
        nxt, nxt_stored = window[0]
        try:
            relinks = nxt.seq == seq + 1 and chain_hash(recomputed, nxt).hex() == str(nxt_stored).lower()
        except InvalidInput:
            relinks = False
        if relinks:
            return ChainProblem(
                ALTERED_HASH,
                seq,
                f"the stored hash {str(stored)[:16]}... was changed; the event itself "
                f"hashes to {recomputed.hex()[:16]}... and still links to seq {seq + 1}",
            )
    return ChainProblem(
        EDITED_EVENT,
        seq,
        f"event {seq} ({event.action} on {event.subject!r} by {event.actor!r}) hashes to "
        f"{recomputed.hex()[:16]}..., the stored hash is {str(stored)[:16]}...: it was edited",
    )
