"""The ledger hash chain and signed checkpoints: a clean chain verifies, each kind of
tampering is reported as the first problem, with the right kind and seq."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import pytest

from modelledger._canonical import canonicalize
from modelledger._keys import generate_key, key_id, load_private_key
from modelledger._ledger import (
    ALTERED_HASH,
    BAD_CHECKPOINT_SIGNATURE,
    CHECKPOINT_DOMAIN,
    CHECKPOINT_MISMATCH,
    CHECKPOINT_WRONG_KEY,
    DELETED_EVENT,
    DUPLICATE_EVENT,
    EDITED_EVENT,
    GENESIS,
    REORDERED_EVENTS,
    TRUNCATED,
    ChainBuilder,
    ChainReport,
    Checkpoint,
    LedgerEvent,
    chain_hash,
    check_time,
    event_bytes,
    sign_checkpoint,
    verify_chain,
    verify_checkpoint,
)
from modelledger.errors import IntegrityError, InvalidInput

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

N = 1000
EVERY = 100  # a checkpoint after every 100 events
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
Rows = list[tuple[LedgerEvent, str]]


@dataclass(frozen=True)
class Keys:
    private: Ed25519PrivateKey
    public_pem: bytes
    other: Ed25519PrivateKey
    other_pem: bytes


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("keys")
    public_pem = generate_key(folder / "registry.key")
    other_pem = generate_key(folder / "intruder.key")
    return Keys(
        load_private_key(folder / "registry.key"),
        public_pem,
        load_private_key(folder / "intruder.key"),
        other_pem,
    )


def _time(i: int) -> str:
    return (T0 + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build(keys: Keys, n: int = N, every: int = EVERY) -> tuple[Rows, list[Checkpoint]]:
    builder = ChainBuilder()
    rows: Rows = []
    checkpoints: list[Checkpoint] = []
    for i in range(1, n + 1):
        rows.append(
            builder.record(
                actor=f"user{i % 7}@example.com",
                action=("version.approve", "alias.move", "deployment.create")[i % 3],
                subject=f"fraud-detector/{i % 50}",
                data={"version": i % 50, "stage": "production", "tags": ["a", "b"], "score": i / 8},
                reason=None if i % 4 else f"ticket-{i}",
                time=_time(i),
            )
        )
        if i % every == 0:
            checkpoints.append(sign_checkpoint(keys.private, i, builder.head, _time(i)))
    return rows, checkpoints


@pytest.fixture(scope="module")
def chain(keys: Keys) -> tuple[Rows, list[Checkpoint]]:
    return build(keys)


def problem_of(report: ChainReport) -> tuple[str, int, int | None]:
    assert not report.ok
    assert report.first_problem is not None
    return report.first_problem.kind, report.first_problem.seq, report.first_problem.other_seq


def rehash(rows: Rows, start: int) -> Rows:
    """What an attacker with database access does: rewrite every stored hash from ``start``."""
    builder = ChainBuilder(head=GENESIS if start == 1 else rows[start - 2][1], next_seq=start)
    return rows[: start - 1] + [(event, builder.append(event)) for event, _ in rows[start - 1 :]]


# --- the chain itself ----------------------------------------------------------------------


def test_clean_chain_of_1000_events_verifies(keys: Keys, chain: tuple[Rows, list[Checkpoint]]) -> None:
    rows, checkpoints = chain
    report = verify_chain(rows, checkpoints, keys.public_pem)
    assert report.ok and report.first_problem is None
    assert report.events_checked == N
    assert report.checkpoints_checked == N // EVERY
    assert report.last_checkpoint_seq == N
    assert report.head_seq == N and report.head_hash == rows[-1][1]
    report.raise_for_problem()  # does not raise


def test_hash_is_sha256_of_previous_hash_and_rfc8785_event(chain: tuple[Rows, list[Checkpoint]]) -> None:
    rows, _ = chain
    prev = GENESIS
    for event, stored in rows[:50]:
        expected = hashlib.sha256(prev + canonicalize(event.to_dict())).digest()
        assert chain_hash(prev, event) == expected
        assert stored == expected.hex()
        prev = expected


@pytest.mark.parametrize(
    "event",
    [
        LedgerEvent(1, "2024-05-01T12:00:00Z", "alice", "model.create", "fraud", {}, None),
        LedgerEvent(
            2, "2024-05-01T12:00:00Z", "zo\u00eb", "alias.move", "fra\u00fcd@prod", {"\u20ac": 1.5}, "why"
        ),
        LedgerEvent(
            3, "2024-05-01T12:00:00Z", "a", "b", "c", {"\U0001f600": 1, "\ufb33": [None, True]}, "\x00\n"
        ),
        LedgerEvent(4, "2024-05-01T12:00:00Z", "a", "b", "c", MappingProxyType({"k": {"z": 1, "a": 2}})),
    ],
)
def test_fast_event_encoding_equals_canonicalize(event: LedgerEvent) -> None:
    assert event_bytes(event) == canonicalize(event.to_dict())


def test_event_dict_roundtrip_and_validation() -> None:
    event = LedgerEvent(7, "2024-05-01T12:00:00Z", "alice", "version.approve", "fraud/3", {"a": [1]}, "ok")
    assert LedgerEvent.from_dict(event.to_dict()) == event
    assert set(event.to_dict()) == {"seq", "time", "actor", "action", "subject", "data", "reason"}
    with pytest.raises(InvalidInput, match="missing"):
        LedgerEvent.from_dict({"seq": 1})
    with pytest.raises(InvalidInput, match="seq"):
        LedgerEvent(True, "2024-05-01T12:00:00Z", "a", "b", "c", {})
    with pytest.raises(InvalidInput, match="data"):
        LedgerEvent(1, "2024-05-01T12:00:00Z", "a", "b", "c", [])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="actor"):
        LedgerEvent(1, "2024-05-01T12:00:00Z", None, "b", "c", {})  # type: ignore[arg-type]


def test_builder_assigns_seqs_and_resumes_from_a_stored_head(keys: Keys) -> None:
    one = ChainBuilder()
    hashes = [one.record(actor="a", action="x", subject="s", data={"i": i})[1] for i in range(10)]
    assert one.last_seq == 10 and one.head_hex == hashes[-1]

    events = [LedgerEvent(i, "2024-05-01T12:00:00Z", "a", "x", "s", {"i": i}) for i in range(1, 9)]
    first = ChainBuilder().extend(events[:5])
    resumed = ChainBuilder(head=first[-1], next_seq=6)  # as a store would, from its last row
    more = resumed.extend(events[5:])
    assert resumed.last_seq == 8
    assert more[-1] == ChainBuilder().extend(events)[-1]
    assert verify_chain(list(zip(events, first + more, strict=True)), [], keys.public_pem).ok


def test_builder_refuses_bad_events_atomically() -> None:
    builder = ChainBuilder()
    good = LedgerEvent(1, "2024-05-01T12:00:00Z", "a", "x", "s", {})
    gap = LedgerEvent(3, "2024-05-01T12:00:00Z", "a", "x", "s", {})
    with pytest.raises(InvalidInput, match="next seq is 2"):
        builder.extend([good, gap])
    assert builder.next_seq == 1 and builder.head == GENESIS  # nothing half-applied
    with pytest.raises(InvalidInput, match="RFC 3339"):
        builder.append(replace(good, time="2024-05-01 12:00:00"))
    with pytest.raises(InvalidInput, match="empty"):
        builder.append(replace(good, actor=""))
    with pytest.raises(InvalidInput, match="safe range"):
        builder.append(replace(good, data={"n": 2**64}))
    with pytest.raises(InvalidInput):
        builder.append(replace(good, data={"x": float("nan")}))
    assert builder.next_seq == 1


@pytest.mark.parametrize("value", ["2024-05-01T12:00:00Z", "2024-02-29T23:59:60.123456789Z"])
def test_check_time_accepts_rfc3339_utc(value: str) -> None:
    assert check_time(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "2024-05-01T12:00:00",
        "2024-05-01T12:00:00+00:00",
        "2023-02-29T00:00:00Z",
        "2024-13-01T00:00:00Z",
        "2024-05-01T24:00:00Z",
        "2024-05-01T12:00:61Z",
        "2024-05-01 12:00:00Z",
        "",
    ],
)
def test_check_time_refuses_other_forms(value: str) -> None:
    with pytest.raises(InvalidInput):
        check_time(value)


# --- checkpoints ---------------------------------------------------------------------------


def test_checkpoint_sign_verify_and_dict_roundtrip(keys: Keys, chain: tuple[Rows, list[Checkpoint]]) -> None:
    _, checkpoints = chain
    cp = checkpoints[0]
    assert cp.seq == EVERY and cp.key_id == key_id(keys.public_pem)
    assert verify_checkpoint(keys.public_pem, cp)
    assert not verify_checkpoint(keys.other_pem, cp)
    assert Checkpoint.from_dict(cp.to_dict()) == cp
    assert CHECKPOINT_DOMAIN.encode() in cp.payload()  # domain-separated from other signatures
    assert not verify_checkpoint(keys.public_pem, replace(cp, seq=cp.seq + 1))
    assert not verify_checkpoint(keys.public_pem, replace(cp, time=_time(0)))


def test_empty_ledger_with_a_genesis_checkpoint(keys: Keys) -> None:
    cp = sign_checkpoint(keys.private, 0, GENESIS, _time(0))
    report = verify_chain([], [cp], keys.public_pem)
    assert report.ok and report.events_checked == 0 and report.checkpoints_checked == 1


def test_verification_can_start_from_a_trusted_checkpoint(
    keys: Keys, chain: tuple[Rows, list[Checkpoint]]
) -> None:
    rows, checkpoints = chain
    start = checkpoints[4]  # seq 500
    report = verify_chain(rows[500:], checkpoints, keys.public_pem, start=start)
    assert report.ok and report.events_checked == 500 and report.checkpoints_checked == 6
    forged = replace(start, signature=base64.b64encode(bytes(64)).decode())
    assert problem_of(verify_chain(rows[500:], checkpoints, keys.public_pem, start=forged))[:2] == (
        BAD_CHECKPOINT_SIGNATURE,
        500,
    )


# --- tampering: each kind is the first problem, with the right seq ---------------------------


def test_edited_field_is_detected_at_its_seq(keys: Keys, chain: tuple[Rows, list[Checkpoint]]) -> None:
    rows, checkpoints = list(chain[0]), chain[1]
    event, stored = rows[449]
    rows[449] = (replace(event, data={**event.data, "stage": "staging"}), stored)
    report = verify_chain(rows, checkpoints, keys.public_pem)
    assert problem_of(report) == (EDITED_EVENT, 450, None)
    assert report.events_checked == 449 and report.head_seq == 449
    assert report.last_checkpoint_seq == 400
    with pytest.raises(IntegrityError, match="ledger event 450"):
        report.raise_for_problem()


@pytest.mark.parametrize("field", ["actor", "action", "subject", "time", "reason"])
def test_every_field_is_covered_by_the_hash(
    keys: Keys, chain: tuple[Rows, list[Checkpoint]], field: str
) -> None:
    rows, checkpoints = list(chain[0]), chain[1]
    event, stored = rows[9]
    changes: dict[str, Any] = {field: "2024-05-01T12:00:00Z" if field == "time" else "mallory"}
    rows[9] = (replace(event, **changes), stored)
    assert problem_of(verify_chain(rows, checkpoints, keys.public_pem)) == (EDITED_EVENT, 10, None)


def test_altered_stored_hash_is_told_apart_from_an_edit(
    keys: Keys, chain: tuple[Rows, list[Checkpoint]]
) -> None:
    rows, checkpoints = list(chain[0]), chain[1]
    event = rows[449][0]
    rows[449] = (event, "0" * 64)
    assert problem_of(verify_chain(rows, checkpoints, keys.public_pem)) == (ALTERED_HASH, 450, None)


def test_deleted_event_is_detected_at_its_seq(keys: Keys, chain: tuple[Rows, list[Checkpoint]]) -> None:
    rows, checkpoints = list(chain[0]), chain[1]
    del rows[449]
    report = verify_chain(rows, checkpoints, keys.public_pem)
    assert problem_of(report) == (DELETED_EVENT, 450, 450)
    assert report.events_checked == 449
    assert report.first_problem is not None and "event 450 is missing" in report.first_problem.detail


def test_deleted_run_of_events_names_the_range(keys: Keys, chain: tuple[Rows, list[Checkpoint]]) -> None:
    rows, checkpoints = list(chain[0]), chain[1]
    del rows[449:452]
    report = verify_chain(rows, checkpoints, keys.public_pem)
    assert problem_of(report) == (DELETED_EVENT, 450, 452)
    assert report.first_problem is not None and "events 450..452 are missing" in report.first_problem.detail


def test_deleted_first_event(keys: Keys, chain: tuple[Rows, list[Checkpoint]]) -> None:
    rows, checkpoints = chain
    assert problem_of(verify_chain(rows[1:], checkpoints, keys.public_pem)) == (DELETED_EVENT, 1, 1)


def test_two_swapped_rows_name_both_seqs(keys: Keys, chain: tuple[Rows, list[Checkpoint]]) -> None:
    rows, checkpoints = list(chain[0]), chain[1]
    rows[449], rows[450] = rows[450], rows[449]  # the events come back as 1..449, 451, 450, 452..
    report = verify_chain(rows, checkpoints, keys.public_pem)
    assert problem_of(report) == (REORDERED_EVENTS, 450, 451)
    assert report.first_problem is not None and "450 and 451 are swapped" in report.first_problem.detail


def test_distant_swapped_rows_name_both_seqs(keys: Keys, chain: tuple[Rows, list[Checkpoint]]) -> None:
    rows, checkpoints = list(chain[0]), chain[1]
    rows[449], rows[699] = rows[699], rows[449]
    assert problem_of(verify_chain(rows, checkpoints, keys.public_pem)) == (REORDERED_EVENTS, 450, 700)


@pytest.mark.parametrize("hashes_moved", [False, True])
def test_swapped_contents_under_fixed_seqs_name_both_seqs(
    keys: Keys, chain: tuple[Rows, list[Checkpoint]], hashes_moved: bool
) -> None:
    # A store whose seq is the row key: the payloads of rows 450 and 452 are exchanged,
    # with or without their stored hashes.
    rows, checkpoints = list(chain[0]), chain[1]
    (a, ha), (b, hb) = rows[449], rows[451]
    rows[449] = (replace(b, seq=450), hb if hashes_moved else ha)
    rows[451] = (replace(a, seq=452), ha if hashes_moved else hb)
    assert problem_of(verify_chain(rows, checkpoints, keys.public_pem)) == (REORDERED_EVENTS, 450, 452)


def test_duplicated_event(keys: Keys, chain: tuple[Rows, list[Checkpoint]]) -> None:
    rows, checkpoints = list(chain[0]), chain[1]
    rows.insert(450, rows[449])
    assert problem_of(verify_chain(rows, checkpoints, keys.public_pem)) == (DUPLICATE_EVENT, 450, 451)


def test_forged_checkpoint_signature(keys: Keys, chain: tuple[Rows, list[Checkpoint]]) -> None:
    rows, checkpoints = chain[0], list(chain[1])
    cp = checkpoints[2]  # seq 300
    checkpoints[2] = replace(cp, signature=base64.b64encode(bytes(64)).decode())
    report = verify_chain(rows, checkpoints, keys.public_pem)
    assert problem_of(report) == (BAD_CHECKPOINT_SIGNATURE, 300, None)
    assert report.events_checked == 300 and report.last_checkpoint_seq == 200


def test_checkpoint_with_an_altered_head_and_the_old_signature(
    keys: Keys, chain: tuple[Rows, list[Checkpoint]]
) -> None:
    rows, checkpoints = chain[0], list(chain[1])
    checkpoints[2] = replace(checkpoints[2], head_hash="ab" * 32)
    assert problem_of(verify_chain(rows, checkpoints, keys.public_pem)) == (
        BAD_CHECKPOINT_SIGNATURE,
        300,
        None,
    )


def test_checkpoint_signature_that_is_not_base64(keys: Keys, chain: tuple[Rows, list[Checkpoint]]) -> None:
    rows, checkpoints = chain[0], list(chain[1])
    checkpoints[2] = replace(checkpoints[2], signature="not base64!")
    assert problem_of(verify_chain(rows, checkpoints, keys.public_pem)) == (
        BAD_CHECKPOINT_SIGNATURE,
        300,
        None,
    )


def test_checkpoint_signed_by_another_key(keys: Keys, chain: tuple[Rows, list[Checkpoint]]) -> None:
    rows, checkpoints = chain[0], list(chain[1])
    # A genuine head, but signed by someone else's key.
    checkpoints[2] = sign_checkpoint(keys.other, 300, rows[299][1], _time(300))
    report = verify_chain(rows, checkpoints, keys.public_pem)
    assert problem_of(report) == (CHECKPOINT_WRONG_KEY, 300, None)
    assert report.first_problem is not None and key_id(keys.other_pem) in report.first_problem.detail


def test_checkpoint_signed_by_another_key_posing_as_the_registry(
    keys: Keys, chain: tuple[Rows, list[Checkpoint]]
) -> None:
    rows, checkpoints = chain[0], list(chain[1])
    forged = sign_checkpoint(keys.other, 300, rows[299][1], _time(300))
    checkpoints[2] = replace(forged, key_id=key_id(keys.public_pem))
    assert problem_of(verify_chain(rows, checkpoints, keys.public_pem)) == (
        BAD_CHECKPOINT_SIGNATURE,
        300,
        None,
    )


def test_rewritten_chain_is_caught_by_the_next_checkpoint(
    keys: Keys, chain: tuple[Rows, list[Checkpoint]]
) -> None:
    rows, checkpoints = list(chain[0]), chain[1]
    event, stored = rows[449]
    rows[449] = (replace(event, actor="mallory"), stored)
    rows = rehash(rows, 450)  # every stored hash consistent again: only the signature knows
    report = verify_chain(rows, checkpoints, keys.public_pem)
    assert problem_of(report) == (CHECKPOINT_MISMATCH, 500, None)
    assert report.first_problem is not None and "seq 401..500" in report.first_problem.detail
    assert report.events_checked == 500


def test_truncated_tail(keys: Keys, chain: tuple[Rows, list[Checkpoint]]) -> None:
    rows, checkpoints = chain
    report = verify_chain(rows[:950], checkpoints, keys.public_pem)
    assert problem_of(report) == (TRUNCATED, 951, 1000)
    assert report.events_checked == 950 and report.last_checkpoint_seq == 900


def test_truncation_claimed_by_a_forged_checkpoint_is_a_forgery(
    keys: Keys, chain: tuple[Rows, list[Checkpoint]]
) -> None:
    rows, checkpoints = chain
    bogus = sign_checkpoint(keys.other, 2000, "cd" * 32, _time(2000))
    report = verify_chain(
        rows, [*checkpoints, replace(bogus, key_id=key_id(keys.public_pem))], keys.public_pem
    )
    assert problem_of(report) == (BAD_CHECKPOINT_SIGNATURE, 2000, None)


def test_unsigned_tail_is_not_a_problem_but_is_reported(
    keys: Keys, chain: tuple[Rows, list[Checkpoint]]
) -> None:
    rows, checkpoints = chain
    report = verify_chain(rows[:950], checkpoints[:9], keys.public_pem)
    assert report.ok and report.last_checkpoint_seq == 900 and report.head_seq == 950


def test_the_first_problem_in_chain_order_wins(keys: Keys, chain: tuple[Rows, list[Checkpoint]]) -> None:
    rows, checkpoints = list(chain[0]), list(chain[1])
    event, stored = rows[649]
    rows[649] = (replace(event, reason="edited"), stored)
    checkpoints[6] = replace(checkpoints[6], signature=base64.b64encode(bytes(64)).decode())  # seq 700
    assert problem_of(verify_chain(rows, checkpoints, keys.public_pem))[:2] == (EDITED_EVENT, 650)
    checkpoints[1] = replace(checkpoints[1], signature=base64.b64encode(bytes(64)).decode())  # seq 200
    assert problem_of(verify_chain(rows, checkpoints, keys.public_pem))[:2] == (BAD_CHECKPOINT_SIGNATURE, 200)


def test_report_to_dict(keys: Keys, chain: tuple[Rows, list[Checkpoint]]) -> None:
    rows, checkpoints = chain
    data: dict[str, Any] = verify_chain(rows[:950], checkpoints, keys.public_pem).to_dict()
    assert data["ok"] is False
    assert data["first_problem"]["kind"] == TRUNCATED and data["first_problem"]["seq"] == 951


def test_unhashable_event_content_is_reported_not_raised(
    keys: Keys, chain: tuple[Rows, list[Checkpoint]]
) -> None:
    rows, checkpoints = list(chain[0]), chain[1]
    event, stored = rows[99]
    rows[99] = (replace(event, data={"score": float("nan")}), stored)
    report = verify_chain(rows, checkpoints, keys.public_pem)
    assert problem_of(report) == (EDITED_EVENT, 100, None)
    assert report.first_problem is not None and "canonicalised" in report.first_problem.detail
    with pytest.raises(InvalidInput, match="surrogate"):
        event_bytes(replace(event, actor="\ud800"))


def test_lookahead_must_be_positive(keys: Keys) -> None:
    with pytest.raises(InvalidInput, match="lookahead"):
        verify_chain([], [], keys.public_pem, lookahead=0)
