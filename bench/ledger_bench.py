"""Ledger benchmark: append governance events in batches, then verify them.

Runs on the embedded default registry (SQLite, WAL, ``synchronous=FULL``): a fresh
temporary folder becomes ``$MODELLEDGER_HOME``, then ``Registry.open()`` and
``registry.init()``. Two small versions of model ``bench`` are registered, then:

* append:    N real ``alias.set`` events (the shape ``decide_alias`` builds) go through
             the store's govern path, ``--batch`` events per call, so each batch is one
             ``BEGIN IMMEDIATE`` transaction, one durable commit and one signed checkpoint.
             Reported: events/s, wall clock over all batches.
* set_alias: for reference, ``registry.set_alias`` in a loop (one event, one durable
             commit and one checkpoint per call).
* verify:    ``registry.verify_ledger()`` (recompute the hash chain, check every
             checkpoint signature) over every event in the ledger; events/s.
* full:      ``registry.verify()`` (the chain, plus a replay of the ledger compared with
             the state tables, plus re-hashing every artefact); seconds.

Targets: append >= 5,000 events/s (batched), verify >= 50,000 events/s.
Results go to ``bench/results/ledger.json``.

Example:
    .venv/bin/python bench/ledger_bench.py                      # 100,000 events, batches of 1,000
    .venv/bin/python bench/ledger_bench.py --events 20000 --batch 500
    .venv/bin/python bench/ledger_bench.py --profile            # also cProfile append and verify
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as _dt
import io
import json
import math
import os
import platform
import pstats
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _machine import cpu_model, dist_version, fs_type, git_state

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUT = HERE / "results" / "ledger.json"

APPEND_TARGET = 5_000.0  # events/s, batched
VERIFY_TARGET = 50_000.0  # events/s, verify_ledger
SIGNER_TARGET = 15_000.0  # events/s, the per-event signer and role check of verify, one core
MODEL = "bench"
N_ALIASES = 50


# --------------------------------------------------------------------------- environment facts


def _fsync_floor_ms(folder: Path, n: int = 50) -> float:
    """Median time of one 4 KB write + fsync in ``folder``: the price of a durable commit."""
    path = folder / "fsync-probe"
    samples = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for _ in range(n):
            start = time.perf_counter()
            os.pwrite(fd, b"x" * 4096, 0)
            os.fsync(fd)
            samples.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(samples) * 1000


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _dir_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- the workload


def _drafts(start: int, stop: int) -> Callable[[Any], list[Any]]:
    """The decide callback for events start..stop-1: alias moves shaped exactly like decide_alias's."""
    from modelledger._lifecycle import EventDraft

    def decide(ctx: Any) -> list[Any]:
        out = []
        for i in range(start, stop):
            alias = f"a{i % N_ALIASES}"
            version = 1 + i % 2
            out.append(
                EventDraft(
                    "alias.set",
                    f"models:/{MODEL}@{alias}",
                    {
                        "model": MODEL,
                        "alias": alias,
                        "version": version,
                        "previous": None,
                        "aliases": {alias: version},
                    },
                )
            )
        return out

    return decide


def _append_batches(registry: Any, first: int, events: int, batch: int, actor: str) -> list[float]:
    """Append ``events`` alias moves, ``batch`` per govern call; returns each batch's seconds."""
    signer = registry._signer()  # the facade's checkpoint signer, as governed writes use it
    meta = registry._meta
    times: list[float] = []
    for lo in range(first, first + events, batch):
        hi = min(lo + batch, first + events)
        start = time.perf_counter()
        appended = meta.govern(MODEL, None, _drafts(lo, hi), actor=actor, signer=signer)
        times.append(time.perf_counter() - start)
        if len(appended) != hi - lo:
            raise RuntimeError(f"batch {lo}..{hi} appended {len(appended)} events")
    return times


def _profile(label: str, fn: Callable[[], Any], top: int) -> tuple[Any, str]:
    prof = cProfile.Profile()
    result = prof.runcall(fn)
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).strip_dirs()
    out.write(f"--- cProfile: {label}, by cumulative time ---\n")
    stats.sort_stats("cumulative").print_stats(top)
    out.write(f"--- cProfile: {label}, by own (tottime) ---\n")
    stats.sort_stats("tottime").print_stats(top)
    return result, out.getvalue()


def run(cfg: argparse.Namespace) -> dict[str, Any]:
    started = _dt.datetime.now(_dt.timezone.utc)
    load_before = os.getloadavg()[0]
    base = Path(tempfile.mkdtemp(prefix="modelledger-ledger-bench-", dir=cfg.dir))
    home = base / "home"
    os.environ["MODELLEDGER_HOME"] = str(home)
    os.environ.pop("MODELLEDGER_KEY", None)
    os.environ["MODELLEDGER_IDENTITIES"] = str(base / "identities")  # never the user's own keys
    try:
        from modelledger import Registry

        registry = Registry.open()
        registry.init()
        registry.register(MODEL, lambda x: x, capture=False)
        registry.register(MODEL, lambda x: x, capture=False)
        actor = registry.actor  # the root admin, whose key signs every batch
        seq0 = registry.verify_ledger().head_seq
        fsync_ms = _fsync_floor_ms(home)

        # ---- append, batched
        batch_times = _append_batches(registry, 0, cfg.events, cfg.batch, actor)
        append_s = sum(batch_times)
        append_rate = cfg.events / append_s
        print(
            f"append: {cfg.events:,} events in {len(batch_times)} batches of {cfg.batch:,}: "
            f"{append_s:.2f} s, {append_rate:,.0f} events/s",
            flush=True,
        )

        # ---- set_alias, one event per call
        alias_times: list[float] = []
        for i in range(cfg.set_alias_calls):
            start = time.perf_counter()
            registry.set_alias(MODEL, f"s{i % N_ALIASES}", 1 + i % 2)
            alias_times.append(time.perf_counter() - start)
        set_alias_s = sum(alias_times)
        set_alias_rate = cfg.set_alias_calls / set_alias_s if cfg.set_alias_calls else 0.0
        if cfg.set_alias_calls:
            print(
                f"set_alias: {cfg.set_alias_calls} calls: {set_alias_s:.2f} s, "
                f"{set_alias_rate:,.0f} events/s "
                f"(median {statistics.median(alias_times) * 1000:.2f} ms)",
                flush=True,
            )

        # ---- verify_ledger
        verify_runs: list[float] = []
        report = None
        for _ in range(cfg.verify_reps):
            start = time.perf_counter()
            report = registry.verify_ledger()
            verify_runs.append(time.perf_counter() - start)
        assert report is not None
        if not report.ok:
            raise RuntimeError(f"verify_ledger found a problem: {report.first_problem}")
        total_events = report.events_checked
        expected = seq0 + cfg.events + cfg.set_alias_calls
        if total_events != expected:
            raise RuntimeError(f"verify_ledger checked {total_events} events, expected {expected}")
        verify_s = statistics.median(verify_runs)
        verify_rate = total_events / verify_s
        print(
            f"verify_ledger: {total_events:,} events, {report.checkpoints_checked:,} checkpoints: "
            f"{verify_s:.2f} s (median of {len(verify_runs)}), {verify_rate:,.0f} events/s",
            flush=True,
        )

        # ---- components of verify_ledger, to see where its time goes
        start = time.perf_counter()
        n_read = sum(1 for _ in registry._meta.iter_events())
        read_s = time.perf_counter() - start
        start = time.perf_counter()
        cps = registry._meta.checkpoints()
        cp_read_s = time.perf_counter() - start

        # ---- who signed each event: the per-event check verify() makes, on events already read
        events = [e for e, _ in registry._meta.iter_events()]
        root = registry._meta.public_key()
        signer_runs = []
        for _ in range(cfg.verify_reps):
            start = time.perf_counter()
            refused = _check_signers(events, cps, root[0] if root else None)
            signer_runs.append(time.perf_counter() - start)
        if refused:
            raise RuntimeError(f"{refused} events failed the signer check")
        signer_rate = len(events) / statistics.median(signer_runs)
        print(f"signer check: {len(events):,} events: {signer_rate:,.0f} events/s", flush=True)

        # ---- check_state (the replay part of verify) and the full verify
        start = time.perf_counter()
        differences = registry.check_state()
        check_state_s = time.perf_counter() - start
        if differences:
            raise RuntimeError(f"state differs from the ledger: {differences[:3]}")
        start = time.perf_counter()
        full = registry.verify()
        full_verify_s = time.perf_counter() - start
        if not full.ok:
            raise RuntimeError(f"verify found problems: {[str(p) for p in full.problems[:5]]}")
        print(
            f"verify (full): {full.events_checked:,} events, {full.versions_checked} versions, "
            f"{full.files_checked} files: {full_verify_s:.2f} s",
            flush=True,
        )

        profiles: dict[str, str] = {}
        if cfg.profile:
            n_prof = min(cfg.events, cfg.profile_events)
            first = cfg.events  # continue the alias pattern; the ledger keeps growing
            _, profiles["append"] = _profile(
                f"append {n_prof:,} events in batches of {cfg.batch:,}",
                lambda: _append_batches(registry, first, n_prof, cfg.batch, actor),
                cfg.profile_top,
            )
            _, profiles["verify_ledger"] = _profile("verify_ledger", registry.verify_ledger, cfg.profile_top)
            _, profiles["set_alias"] = _profile(
                "200 x set_alias",
                lambda: [registry.set_alias(MODEL, f"p{i % 10}", 1) for i in range(200)],
                cfg.profile_top,
            )

        db = home / "registry.db"
        wal = home / "registry.db-wal"
        sizes = {
            "registry_db_bytes": db.stat().st_size if db.exists() else None,
            "registry_db_wal_bytes": wal.stat().st_size if wal.exists() else 0,
            "home_bytes": _dir_bytes(home),
        }
        registry.close()
    finally:
        if cfg.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)

    results: dict[str, Any] = {
        "append_events_per_s": round(append_rate, 1),
        "verify_events_per_s": round(verify_rate, 1),
        "events": cfg.events,
        "batch_size": cfg.batch,
        "batches": len(batch_times),
        "append_s": round(append_s, 3),
        "batch_ms": {
            "median": round(statistics.median(batch_times) * 1000, 2),
            "p95": round(_pct(batch_times, 0.95) * 1000, 2),
            "max": round(max(batch_times) * 1000, 2),
            "first": round(batch_times[0] * 1000, 2),
            "last": round(batch_times[-1] * 1000, 2),
        },
        "set_alias_events_per_s": round(set_alias_rate, 1),
        "set_alias_calls": cfg.set_alias_calls,
        "set_alias_ms": {
            "median": round(statistics.median(alias_times) * 1000, 3) if alias_times else None,
            "p95": round(_pct(alias_times, 0.95) * 1000, 3) if alias_times else None,
        },
        "verify_s": round(verify_s, 3),
        "verify_runs_s": [round(x, 3) for x in verify_runs],
        "verify_events_checked": total_events,
        "verify_checkpoints_checked": report.checkpoints_checked,
        "verify_parts_s": {
            "iter_events_only": round(read_s, 3),
            "checkpoints_read": round(cp_read_s, 3),
            "events_read": n_read,
            "checkpoints": len(cps),
        },
        "signer_check_events_per_s": round(signer_rate, 1),
        "check_state_s": round(check_state_s, 3),
        "full_verify_s": round(full_verify_s, 3),
        "full_verify": {
            "events_checked": full.events_checked,
            "checkpoints_checked": full.checkpoints_checked,
            "versions_checked": full.versions_checked,
            "files_checked": full.files_checked,
        },
        "fsync_floor_ms": round(fsync_ms, 3),
        "storage": sizes,
        "targets": [
            {
                "target": f"append >= {APPEND_TARGET:,.0f} events/s (batches of {cfg.batch:,})",
                "value": round(append_rate, 1),
                "pass": append_rate >= APPEND_TARGET,
            },
            {
                "target": f"verify_ledger >= {VERIFY_TARGET:,.0f} events/s",
                "value": round(verify_rate, 1),
                "pass": verify_rate >= VERIFY_TARGET,
            },
            {
                "target": f"signer check >= {SIGNER_TARGET:,.0f} events/s",
                "value": round(signer_rate, 1),
                "pass": signer_rate >= SIGNER_TARGET,
            },
        ],
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "filesystem": fs_type(base.parent),
            "sqlalchemy": dist_version("sqlalchemy"),
            "cryptography": dist_version("cryptography"),
            "modelledger": dist_version("modelledger"),
            "modelledger_git": git_state(REPO),
            "loadavg_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        },
        "run": {
            "date": started.isoformat(timespec="seconds"),
            "wall_s": round((_dt.datetime.now(_dt.timezone.utc) - started).total_seconds(), 1),
            "verify_reps": cfg.verify_reps,
            "sqlite_settings": "WAL, synchronous=FULL (Registry.open() default)",
        },
    }
    if profiles:
        results["profiles"] = profiles
    return results


def _check_signers(events: list[Any], checkpoints: list[Any], root_kid: str | None) -> int:
    """The per-event check ``verify()`` makes: the checkpoint closing each event's write names
    the key, which must be enrolled to the event's actor, not revoked, with the action's role.
    Returns how many events fail it."""
    import bisect

    from modelledger._members import Roster, authorize_event

    cps = sorted(checkpoints, key=lambda cp: cp.seq)
    seqs = [cp.seq for cp in cps]
    roster = Roster()
    refused = 0
    for event in events:
        i = bisect.bisect_left(seqs, event.seq)
        checked = i < len(cps) and (not roster.empty or event.action == "registry.initialized")
        if checked and authorize_event(
            roster, event, kid=cps[i].key_id, legacy_kid=root_kid, auto_approve=False
        ):
            refused += 1
        roster.apply(event.action, event.seq, event.time, event.data)
    return refused


def print_table(results: dict[str, Any]) -> None:
    b = results["batch_ms"]
    rows = [
        (
            f"append, batches of {results['batch_size']:,}",
            f"{results['append_events_per_s']:>12,.0f} events/s",
            f"{results['events']:,} events in {results['append_s']:.2f} s; "
            f"batch median {b['median']:.1f} ms, "
            f"p95 {b['p95']:.1f} ms, first {b['first']:.1f}, last {b['last']:.1f}",
        ),
        (
            "set_alias, one per commit",
            f"{results['set_alias_events_per_s']:>12,.0f} events/s",
            f"{results['set_alias_calls']} calls; median {results['set_alias_ms']['median']} ms "
            f"(fsync floor {results['fsync_floor_ms']:.2f} ms)",
        ),
        (
            "verify_ledger",
            f"{results['verify_events_per_s']:>12,.0f} events/s",
            f"{results['verify_events_checked']:,} events, {results['verify_checkpoints_checked']:,} "
            f"checkpoints in {results['verify_s']:.2f} s (reading rows alone: "
            f"{results['verify_parts_s']['iter_events_only']:.2f} s)",
        ),
        (
            "signer check, per event",
            f"{results['signer_check_events_per_s']:>12,.0f} events/s",
            "each event's writer key enrolled to its actor, not revoked, with the role (in memory)",
        ),
        (
            "check_state (replay)",
            f"{results['check_state_s']:>12.2f} s",
            "replay the ledger, compare with the state tables",
        ),
        (
            "verify (full)",
            f"{results['full_verify_s']:>12.2f} s",
            f"{results['full_verify']['events_checked'] / results['full_verify_s']:,.0f} events/s; chain + "
            f"replay + {results['full_verify']['files_checked']} artefact files",
        ),
    ]
    m = results["machine"]
    print()
    print(
        f"ledger benchmark, {results['run']['date']}: {m['cpu_count']} x {m['cpu_model']}, "
        f"python {m['python']}, sqlite {m['sqlite']}, {m['filesystem']}"
    )
    print(f"{'measure':<28} {'figure':>22}  notes")
    for name, figure, note in rows:
        print(f"{name:<28} {figure:>22}  {note}")
    print()
    print("targets:")
    for t in results["targets"]:
        print(f"  [{'PASS' if t['pass'] else 'FAIL'}] {t['target']:<45} {t['value']:,.0f} events/s")
    load = m["loadavg_1min"]
    print(
        f"load average (1 min) before/after: {load['before']:.2f} / {load['after']:.2f} "
        f"on {m['cpu_count']} CPUs"
    )
    storage = results["storage"]
    if storage["registry_db_bytes"]:
        size = storage["registry_db_bytes"] + storage.get("registry_db_wal_bytes", 0)
        print(
            f"registry.db + -wal: {size / 1e6:.1f} MB "
            f"({size / results['verify_events_checked']:.0f} bytes/event, all tables)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000, help="events to append (default 100,000)")
    parser.add_argument(
        "--batch", type=int, default=1_000, help="events per govern transaction (default 1,000)"
    )
    parser.add_argument("--set-alias-calls", type=int, default=500, help="set_alias calls (default 500)")
    parser.add_argument("--verify-reps", type=int, default=3, help="verify_ledger runs; median reported")
    parser.add_argument("--dir", default=None, help="parent of the temporary registry folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON (default %(default)s)")
    parser.add_argument("--no-write", action="store_true", help="do not write the results JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary registry folder")
    parser.add_argument(
        "--profile", action="store_true", help="after timing, cProfile append, verify_ledger and set_alias"
    )
    parser.add_argument("--profile-events", type=int, default=20_000, help="events appended under cProfile")
    parser.add_argument("--profile-top", type=int, default=25, help="rows per cProfile listing")
    cfg = parser.parse_args(argv)
    if cfg.events < 1 or cfg.batch < 1 or cfg.set_alias_calls < 0 or cfg.verify_reps < 1:
        parser.error("--events, --batch and --verify-reps must be >= 1, --set-alias-calls >= 0")

    results = run(cfg)
    print_table(results)
    for text in results.get("profiles", {}).values():
        print()
        print(text)
    if not cfg.no_write:
        cfg.out.parent.mkdir(parents=True, exist_ok=True)
        cfg.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {cfg.out}")
    return 0 if all(t["pass"] for t in results["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
