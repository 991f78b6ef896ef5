"""Throughput of the pure ledger primitives, in memory (no database).

    .venv/bin/python bench/ledger_primitives.py [N]

Prints events/s for: building N events with ChainBuilder.record (event creation,
RFC 8785 canonicalisation, sha256), hashing N pre-built events with
ChainBuilder.extend, and verify_chain over them with a signed checkpoint every
1,000 events. Targets: build >= 5,000 events/s, verify >= 50,000 events/s.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from modelledger._keys import generate_key, load_private_key
from modelledger._ledger import ChainBuilder, Checkpoint, sign_checkpoint, verify_chain

CHECKPOINT_EVERY = 1000
ACTIONS = ("version.approve", "alias.move", "deployment.create", "version.deprecate")


def _time(i: int) -> str:
    return f"2024-05-01T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1_000_000:06d}Z"


def _data(i: int) -> dict[str, object]:
    return {
        "model": f"fraud-detector-{i % 20}",
        "version": i % 500,
        "stage": "production",
        "previous": "staging",
        "digest": f"sha256:{i:064x}",
        "tags": ["nightly", "eu-west"],
        "approved": True,
        "ticket": None,
    }


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        public_pem = generate_key(Path(folder) / "registry.key")
        private = load_private_key(Path(folder) / "registry.key")

    # 1. record(): builds each event, canonicalises, hashes.
    builder = ChainBuilder()
    start = time.perf_counter()
    rows = [
        builder.record(
            actor=f"user{i % 13}@example.com",
            action=ACTIONS[i % 4],
            subject=f"fraud-detector-{i % 20}/{i % 500}",
            data=_data(i),
            reason=None if i % 3 else "passed offline evaluation",
            time=_time(i),
        )
        for i in range(n)
    ]
    build_s = time.perf_counter() - start

    # 2. extend(): hashing a batch of ready-made events.
    events = [event for event, _ in rows]
    start = time.perf_counter()
    hashes = ChainBuilder().extend(events)
    extend_s = time.perf_counter() - start
    assert hashes == [h for _, h in rows]

    checkpoints: list[Checkpoint] = [
        sign_checkpoint(private, seq, rows[seq - 1][1], _time(seq))
        for seq in range(CHECKPOINT_EVERY, n + 1, CHECKPOINT_EVERY)
    ]

    # 3. verify_chain(): recompute every hash, check every checkpoint signature.
    start = time.perf_counter()
    report = verify_chain(rows, checkpoints, public_pem)
    verify_s = time.perf_counter() - start
    assert report.ok and report.events_checked == n, report

    print(f"events: {n:,}  checkpoints: {len(checkpoints):,}  python {sys.version.split()[0]}")
    for label, seconds in (
        ("build  (record: event + canonicalise + sha256)", build_s),
        ("hash   (extend: canonicalise + sha256)", extend_s),
        ("verify (verify_chain incl. checkpoint sigs)", verify_s),
    ):
        print(f"{label:<48} {n / seconds:>10,.0f} events/s  ({seconds:.2f} s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
