"""Prediction capture benchmark: signing overhead, batched throughput, trace lookup at 10 million.

Three measurements, each checked against its target:

1. **Per-call overhead** of capture + signing on a one-row predict: the median latency of
   ``registry.load(uri, capture=True).predict(row)`` minus that of
   ``registry.load(uri).predict(row)``, on the same tiny model (a two-column score over a
   four-column credit application), calls interleaved, over many calls. Target: < 100 µs.
   Measured twice: for a model registered with an input signature (both sides enforce it)
   and for one without.
2. **Batched throughput** on one core: the process is pinned to one CPU (writer thread
   included) and predicts batches of 10,000 rows with capture of every row; the time counts
   every predict call and the final close (all rows written). Target: >= 200,000 predictions/s.
3. **Trace lookup** with 10 million captured predictions of one version: 10M rows are made
   through the real ``Predictor`` (batches of 10,000, default writer settings), then
   ``CaptureReader.find`` looks up random ids (one listing, one file, one row group).
   Target: < 50 ms.

Example:
    python bench/capture_bench.py              # full run: 10M rows, a few minutes on 2 cores
    python bench/capture_bench.py --quick      # 1M rows and fewer calls, about a minute
    python bench/capture_bench.py --rows 2000000 --out /tmp/capture.json

Results go to ``bench/results/capture.json`` (``overhead_us_per_call``,
``batched_predictions_per_s``, ``trace_ms_at_10m`` and the details).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "capture.json"

TARGET_OVERHEAD_US = 100.0
TARGET_THROUGHPUT = 200_000.0
TARGET_TRACE_MS = 50.0
BATCH = 10_000


class Score:
    """The tiny model: a score from two of the four columns."""

    def predict(self, frame: Any) -> Any:
        import numpy as np

        return np.asarray(frame["income"], dtype=float) / 10_000 - np.asarray(frame["loan_amount"]) / 4_000


def applications(n: int, seed: int = 7) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 75, n),
            "income": rng.normal(52_000, 15_000, n).round(2),
            "loan_amount": rng.normal(12_000, 6_000, n).clip(500).round(2),
            "employment": rng.choice(["salaried", "self-employed", "unemployed"], n),
        }
    )


def open_registry(folder: Path) -> Any:
    from modelledger import Registry, create_identity

    os.environ["MODELLEDGER_IDENTITIES"] = str(folder / "identities")  # never the user's own keys
    url, artifacts = f"sqlite:///{folder / 'registry.db'}", str(folder / "artifacts")
    admin = Registry.open(url, artifacts=artifacts, actor="bench-admin")
    admin.init()
    # receipts are signed by a serving identity of its own, as on a real serving host
    admin.enrol("bench-serving", create_identity("bench-serving")[2], roles=["serving", "contributor"])
    return Registry.open(url, artifacts=artifacts, actor="bench-serving")


def _stats_us(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median": round(statistics.median(ordered) * 1e6, 1),
        "p95": round(ordered[int(0.95 * (len(ordered) - 1))] * 1e6, 1),
        "min": round(ordered[0] * 1e6, 1),
    }


# --------------------------------------------------------------------------- 1. overhead


def measure_overhead(folder: Path, calls: int, rounds: int) -> dict[str, Any]:
    registry = open_registry(folder)
    rows = applications(calls + 1)
    out: dict[str, Any] = {"calls": calls, "rounds": rounds}
    for label, sample in (("with_signature", rows[:5]), ("without_signature", None)):
        version = registry.register(f"tiny-{label}", Score(), sample_input=sample, capture=False)
        plain = registry.load(version.uri)
        served = registry.load(version.uri, capture=True)
        singles = [rows.iloc[i : i + 1] for i in range(calls)]
        for one in singles[:200]:  # warm-up: imports, caches, the writer thread
            plain.predict(one)
            served.predict(one)
        best: dict[str, Any] | None = None
        for _ in range(rounds):
            gc.collect()
            base, capt = [], []
            for one in singles:  # interleaved, so both sides see the same machine state
                t0 = time.perf_counter()
                plain.predict(one)
                t1 = time.perf_counter()
                served.predict(one)
                t2 = time.perf_counter()
                base.append(t1 - t0)
                capt.append(t2 - t1)
            result = {
                "plain_us": _stats_us(base),
                "capture_us": _stats_us(capt),
                "overhead_us": round((statistics.median(capt) - statistics.median(base)) * 1e6, 1),
            }
            if best is None or result["overhead_us"] < best["overhead_us"]:
                best = result
        served.close()
        assert best is not None
        best["written"] = served.written
        out[label] = best
    registry.close()
    return out


# --------------------------------------------------------------------------- 2. throughput (child)


def throughput_child(folder: Path, batches: int) -> dict[str, Any]:
    cpu = min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # one core for everything: predict and the writer thread
    registry = open_registry(folder)
    frame = applications(BATCH)
    version = registry.register("batched", Score(), sample_input=frame[:5], capture=False)
    served = registry.load(version.uri, capture=True)
    served.predict(frame[:100])  # warm-up (imports, the writer thread)
    served.flush()
    written0 = served.written
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    predict_s = 0.0
    for _ in range(batches):
        t = time.perf_counter()
        served.predict(frame)
        predict_s += time.perf_counter() - t
    served.close()
    wall, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    rows = batches * BATCH
    assert served.written - written0 == rows, (served.written, rows)
    assert served.dropped == 0
    registry.close()
    return {
        "cpu_pinned": cpu,
        "batch_rows": BATCH,
        "batches": batches,
        "rows": rows,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu_s, 3),
        "predictions_per_s": round(rows / wall),
        "predict_calls_only_per_s": round(rows / predict_s),
        "us_per_row": round(wall / rows * 1e6, 2),
    }


def measure_throughput(folder: Path, batches: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child-throughput", str(folder), "--batches", str(batches)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- 3. trace at 10M


def measure_trace(folder: Path, rows: int, lookups: int) -> dict[str, Any]:
    from modelledger import verify_receipt
    from modelledger._serving import CaptureReader

    registry = open_registry(folder)
    frame = applications(BATCH)
    version = registry.register("traced", Score(), sample_input=frame[:5], capture=False)
    served = registry.load(version.uri, capture=True)
    rng = random.Random(1)
    sample: list[str] = []
    batches = rows // BATCH
    t0 = time.perf_counter()
    for _ in range(batches):
        receipts = served.predict(frame).receipts
        sample.extend(rng.sample(receipts.ids, 3))
    served.close()
    generate_s = time.perf_counter() - t0
    assert served.written == batches * BATCH and served.dropped == 0

    base = f"{version.folder}/predictions"
    files = [f for f in registry._art.list_files(base) if f.endswith(".parquet")]
    size = sum(os.path.getsize(registry._art.full(f"{base}/{f}")) for f in files)
    public = registry.public_key()
    ids = rng.sample(sample, min(lookups, len(sample)))
    reader = CaptureReader(registry._art)
    times = []
    for pid in ids:
        t = time.perf_counter()
        found = reader.find(version, pid)
        times.append(time.perf_counter() - t)
        assert found is not None and found["prediction_id"] == pid
    # the same lookups once more with the receipt check a trace does
    checked = []
    for pid in ids[:50]:
        t = time.perf_counter()
        found = reader.find(version, pid)
        assert found is not None and verify_receipt(found["receipt"], public)
        checked.append(time.perf_counter() - t)
    # the whole report a person gets: registry.trace (receipt, ledger, manifest, data lineage)
    traced = []
    for pid in ids[:50]:
        t = time.perf_counter()
        report = registry.trace(pid)
        traced.append(time.perf_counter() - t)
        assert report.receipt_valid and report.prediction["id"] == pid
    registry.close()
    ordered = sorted(times)
    return {
        "captured_rows": batches * BATCH,
        "generate_s": round(generate_s, 1),
        "generate_rows_per_s": round(batches * BATCH / generate_s),
        "files": len(files),
        "date_partitions": len({f.split("/")[0] for f in files}),
        "bytes_on_disk": size,
        "bytes_per_row": round(size / (batches * BATCH), 1),
        "lookups": len(ids),
        "find_ms": {
            "median": round(statistics.median(ordered) * 1e3, 2),
            "p95": round(ordered[int(0.95 * (len(ordered) - 1))] * 1e3, 2),
            "max": round(ordered[-1] * 1e3, 2),
        },
        "find_and_verify_ms_median": round(statistics.median(checked) * 1e3, 2),
        "full_trace_ms": {
            "median": round(statistics.median(traced) * 1e3, 2),
            "max": round(max(traced) * 1e3, 2),
        },
    }


# --------------------------------------------------------------------------- driver


def run(cfg: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="capture-bench-", dir=cfg.dir))
    try:
        print(f"overhead: {cfg.calls} one-row calls x {cfg.rounds} rounds ...", flush=True)
        (base / "overhead").mkdir()
        overhead = measure_overhead(base / "overhead", cfg.calls, cfg.rounds)
        print(f"throughput: {cfg.batches} batches of {BATCH:,} rows on one core ...", flush=True)
        (base / "throughput").mkdir()
        throughput = measure_throughput(base / "throughput", cfg.batches)
        print(f"trace: capturing {cfg.rows:,} predictions, then {cfg.lookups} lookups ...", flush=True)
        (base / "trace").mkdir()
        trace = measure_trace(base / "trace", cfg.rows, cfg.lookups)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    headline_overhead = overhead["with_signature"]["overhead_us"]
    trace_ms = trace["full_trace_ms"]["median"]  # the whole registry.trace report
    return {
        "overhead_us_per_call": headline_overhead,
        "batched_predictions_per_s": throughput["predictions_per_s"],
        "trace_ms_at_10m": trace_ms if trace["captured_rows"] >= 10_000_000 else None,
        "trace_ms": trace_ms,
        "targets": {
            "overhead_us_per_call": TARGET_OVERHEAD_US,
            "batched_predictions_per_s": TARGET_THROUGHPUT,
            "trace_ms_at_10m": TARGET_TRACE_MS,
        },
        "pass": {
            "overhead": headline_overhead < TARGET_OVERHEAD_US,
            "throughput": throughput["predictions_per_s"] >= TARGET_THROUGHPUT,
            "trace": trace_ms < TARGET_TRACE_MS and trace["captured_rows"] >= 10_000_000,
        },
        "overhead": overhead,
        "throughput": throughput,
        "trace": trace,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quick": cfg.quick,
    }


def print_table(r: dict[str, Any]) -> None:
    o, t, tr = r["overhead"], r["throughput"], r["trace"]

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    rows = [
        (
            "capture+signing overhead, one-row predict",
            f"{r['overhead_us_per_call']:.1f} µs",
            f"< {TARGET_OVERHEAD_US:.0f} µs",
            verdict(r["pass"]["overhead"]),
            f"median {o['with_signature']['capture_us']['median']} vs {o['with_signature']['plain_us']['median']} µs; "
            f"no-signature model: +{o['without_signature']['overhead_us']} µs",
        ),
        (
            f"batched capture, {BATCH:,}-row batches, 1 core",
            f"{r['batched_predictions_per_s']:,} /s",
            f">= {TARGET_THROUGHPUT:,.0f} /s",
            verdict(r["pass"]["throughput"]),
            f"{t['rows']:,} rows in {t['wall_s']} s incl. close; predict calls alone "
            f"{t['predict_calls_only_per_s']:,} /s",
        ),
        (
            f"registry.trace, {tr['captured_rows']:,} captured",
            f"{r['trace_ms']:.2f} ms",
            f"< {TARGET_TRACE_MS:.0f} ms",
            verdict(r["pass"]["trace"]),
            f"max {tr['full_trace_ms']['max']} ms; the lookup alone: median {tr['find_ms']['median']}, "
            f"p95 {tr['find_ms']['p95']} ms, max {tr['find_ms']['max']} ms; {tr['files']} files, "
            f"{tr['bytes_per_row']} B/row; made in {tr['generate_s']} s",
        ),
    ]
    widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
    for row in rows:
        cells = [str(row[i]).ljust(widths[i]) for i in range(4)]
        print("  ".join(cells) + "  " + row[4])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1M rows, fewer calls")
    parser.add_argument("--rows", type=int, default=None, help="captured predictions for the trace (10M)")
    parser.add_argument("--calls", type=int, default=None, help="one-row calls per overhead round")
    parser.add_argument("--rounds", type=int, default=3, help="overhead rounds (the best is kept)")
    parser.add_argument("--batches", type=int, default=None, help="batches for the throughput run")
    parser.add_argument("--lookups", type=int, default=200, help="capture lookups (CaptureReader.find)")
    parser.add_argument("--dir", default=None, help="where the temporary folders go")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--child-throughput", default=None, help=argparse.SUPPRESS)
    cfg = parser.parse_args()
    if cfg.child_throughput:
        print(json.dumps(throughput_child(Path(cfg.child_throughput), cfg.batches)))
        return
    cfg.rows = cfg.rows or (1_000_000 if cfg.quick else 10_000_000)
    cfg.calls = cfg.calls or (1_000 if cfg.quick else 5_000)
    cfg.batches = cfg.batches or (10 if cfg.quick else 50)
    results = run(cfg)
    print()
    print_table(results)
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {cfg.out}")


if __name__ == "__main__":
    main()
