"""Data set ingest benchmark: a 2 GB CSV into the registry, in bounded memory.

Generates a realistic credit-application CSV (ints, floats, strings, dates, some empty
cells) chunk by chunk in a temporary folder, never holding more than one chunk in
memory. Then a *child process* opens a fresh registry (SQLite file + local artefact
folder), imports everything, and runs ``registry.datasets.register(name, csv_path)``: the
streaming ingest into one zstd-compressed Parquet file with content digest and column
statistics. The child reports its wall-clock time and its peak RSS (``ru_maxrss``), so the
figures cover the ingest alone, not the generator.

Linux carries ``ru_maxrss`` across ``fork``/``vfork`` + ``exec``: a child starts with its
parent's resident set (its peak, with vfork) as its own maximum. So this script's main
process stays lean (standard library only) and generates the CSV in another child; the
ingest child also reports ``VmHWM`` (the high-water mark of its own address space) as a
cross-check.

Reported:

* ``ingest_mb_per_s``: CSV size in MiB over the wall-clock seconds of ``register``.
* ``peak_rss_mb``: the child's peak resident set in MiB (``ru_maxrss``), which includes
  the interpreter and the imported libraries (``baseline_rss_mb`` is the peak before the
  ingest started).
* ``arrow_peak_allocated_mb``: the highest Arrow memory-pool figure seen by a sampler
  thread every 50 ms (a lower bound: Arrow buffers only, sampled).

Target: peak RSS under 500 MiB for the 2 GiB CSV. Results go to
``bench/results/datasets.json``; PASS/FAIL is printed.

Example:
    .venv/bin/python bench/dataset_bench.py                    # 2 GiB CSV (a few minutes)
    .venv/bin/python bench/dataset_bench.py --size-mb 200      # a quick run
    .venv/bin/python bench/dataset_bench.py --keep --workdir /var/tmp/dsbench
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _machine import cpu_model, dist_version

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUT = HERE / "results" / "datasets.json"
RSS_TARGET_MB = 500.0
CHUNK_ROWS = 200_000
MIB = 1024 * 1024


# --------------------------------------------------------------------------- environment facts


def _mem_total_mb() -> float | None:
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024, 0)
    return None


def _git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def _machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "mem_total_mb": _mem_total_mb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pyarrow": dist_version("pyarrow"),
        "pandas": dist_version("pandas"),
        "git": _git_revision(),
    }


# --------------------------------------------------------------------------- the CSV


def _chunk(rng: Any, start: int, n: int) -> Any:
    """``n`` credit applications with ids from ``start``, as a pyarrow Table."""
    import numpy as np
    import pyarrow as pa

    def with_nulls(values: Any, share: float) -> Any:
        return pa.array(values, mask=rng.random(n) < share)

    applied = np.datetime64("2019-01-01") + rng.integers(0, 6 * 365, n).astype("timedelta64[D]")
    first_credit = applied - rng.integers(180, 30 * 365, n).astype("timedelta64[D]")
    income = rng.lognormal(10.8, 0.5, n).round(2)
    amount = (rng.gamma(2.0, 6_000, n) + 500).round(2)
    score = rng.normal(680, 60, n).clip(300, 850).astype(np.int64)
    return pa.table(
        {
            "application_id": pa.array(np.arange(start, start + n, dtype=np.int64)),
            "applied_on": pa.array(applied),
            "customer_age": pa.array(rng.integers(18, 80, n)),
            "employment": pa.array(
                rng.choice(["salaried", "self-employed", "unemployed", "retired", "student"], n)
            ),
            "employer_years": with_nulls(rng.integers(0, 40, n), 0.07),
            "annual_income": pa.array(income),
            "home_ownership": pa.array(rng.choice(["rent", "mortgage", "own", "other"], n)),
            "region": pa.array(rng.choice([f"R{i:02d}" for i in range(48)], n)),
            "purpose": pa.array(
                rng.choice(["car", "debt consolidation", "home improvement", "medical", "education"], n)
            ),
            "loan_amount": pa.array(amount),
            "term_months": pa.array(rng.choice([12, 24, 36, 48, 60], n)),
            "interest_rate": pa.array((rng.normal(0.09, 0.03, n).clip(0.02, 0.3)).round(4)),
            "credit_score": pa.array(score),
            "debt_to_income": with_nulls((amount / income).round(4), 0.03),
            "open_accounts": pa.array(rng.poisson(6, n)),
            "delinquencies_2y": pa.array(rng.poisson(0.3, n)),
            "first_credit_on": pa.array(first_credit),
            "defaulted": pa.array(rng.random(n) < 0.08),
        }
    )


def generate_csv(path: Path, size_bytes: int, *, seed: int = 11) -> int:
    """Write a CSV of about ``size_bytes`` chunk by chunk; returns the number of rows."""
    import numpy as np
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    rows = 0
    with path.open("wb") as fh:
        writer = None
        while fh.tell() < size_bytes:
            table = _chunk(rng, rows, CHUNK_ROWS)
            if writer is None:
                writer = pacsv.CSVWriter(fh, table.schema)
            writer.write_table(table)
            rows += table.num_rows
        if writer is not None:
            writer.close()
    return rows


# --------------------------------------------------------------------------- the child


def _vm_hwm_mb() -> float | None:
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def _child(csv_path: str, workdir: str) -> None:
    """Run in a fresh process: ingest the CSV and print one JSON line of figures."""
    import resource
    import threading

    import pyarrow as pa

    from modelledger import Registry

    work = Path(workdir)
    os.environ["MODELLEDGER_IDENTITIES"] = str(work / "identities")  # never the user's own keys
    registry = Registry.open(f"sqlite:///{work / 'registry.db'}", artifacts=str(work / "artifacts"))
    registry.init()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    arrow_peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal arrow_peak
        while not done.wait(0.05):
            arrow_peak = max(arrow_peak, pa.total_allocated_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    dv = registry.datasets.register("credit-applications", csv_path, source={"uri": csv_path, "kind": "file"})
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    registry.close()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rows": dv.row_count,
                "columns": len(dv.schema),
                "parquet_bytes": dv.size_bytes,
                "digest": dv.digest,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "vm_hwm_mb": _vm_hwm_mb(),
                "baseline_rss_mb": baseline,
                "arrow_peak_allocated_mb": arrow_peak / MIB,
                "arrow_pool": pa.default_memory_pool().backend_name,
            }
        )
    )


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=float, default=2048.0, help="CSV size in MiB (default 2048)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the CSV and the registry afterwards")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write the results")
    parser.add_argument("--child", nargs=2, metavar=("CSV", "WORKDIR"), help=argparse.SUPPRESS)
    parser.add_argument("--generate", nargs=2, metavar=("CSV", "BYTES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    if args.generate:
        print(generate_csv(Path(args.generate[0]), int(args.generate[1])))
        return 0

    work = args.workdir or Path(tempfile.mkdtemp(prefix="modelledger-dsbench-"))
    work.mkdir(parents=True, exist_ok=True)
    csv_path = work / "applications.csv"
    try:
        t0 = time.perf_counter()
        gen = subprocess.run(
            [sys.executable, __file__, "--generate", str(csv_path), str(int(args.size_mb * MIB))],
            capture_output=True,
            text=True,
            check=True,
        )
        rows_written = int(gen.stdout.strip().splitlines()[-1])
        gen_seconds = time.perf_counter() - t0
        csv_bytes = csv_path.stat().st_size
        print(
            f"generated {csv_bytes / MIB:,.0f} MiB CSV, {rows_written:,} rows in {gen_seconds:.1f} s",
            flush=True,
        )
        reg_dir = work / "registry"
        if reg_dir.exists():
            shutil.rmtree(reg_dir)
        reg_dir.mkdir()
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(csv_path), str(reg_dir)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "MODELLEDGER_USER": "bench@example.com"},
        )
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, sep="\n", file=sys.stderr)
            return 2
        child = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    mb_per_s = csv_bytes / MIB / child["seconds"]
    ok = child["peak_rss_mb"] < RSS_TARGET_MB and child["rows"] == rows_written
    results = {
        "ingest_mb_per_s": round(mb_per_s, 1),
        "peak_rss_mb": round(child["peak_rss_mb"], 1),
        "vm_hwm_mb": round(child["vm_hwm_mb"], 1) if child["vm_hwm_mb"] else None,
        "baseline_rss_mb": round(child["baseline_rss_mb"], 1),
        "arrow_peak_allocated_mb": round(child["arrow_peak_allocated_mb"], 1),
        "arrow_pool": child["arrow_pool"],
        "csv_mb": round(csv_bytes / MIB, 1),
        "csv_bytes": csv_bytes,
        "rows": child["rows"],
        "columns": child["columns"],
        "parquet_mb": round(child["parquet_bytes"] / MIB, 1),
        "compression_ratio": round(csv_bytes / child["parquet_bytes"], 2),
        "seconds": round(child["seconds"], 2),
        "generate_seconds": round(gen_seconds, 1),
        "target": {"peak_rss_mb_below": RSS_TARGET_MB, "passed": ok},
        "units": "MB = MiB (2**20 bytes)",
        "run": {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="minutes")},
        "machine": _machine(),
    }
    print(
        f"ingest: {results['csv_mb']:,.0f} MiB CSV, {results['rows']:,} rows x {results['columns']} columns "
        f"-> {results['parquet_mb']:,.0f} MiB Parquet (zstd, {results['compression_ratio']}x) "
        f"in {results['seconds']:.1f} s"
    )
    print(f"  throughput:  {results['ingest_mb_per_s']:,.1f} MiB/s")
    print(
        f"  peak RSS:    {results['peak_rss_mb']:,.0f} MiB "
        f"(VmHWM {results['vm_hwm_mb'] or 0:,.0f} MiB; after imports {results['baseline_rss_mb']:,.0f} MiB; "
        f"Arrow pool peak {results['arrow_peak_allocated_mb']:,.0f} MiB, {results['arrow_pool']})"
    )
    print(
        f"  [{'PASS' if ok else 'FAIL'}] peak RSS < {RSS_TARGET_MB:,.0f} MiB   "
        f"{results['peak_rss_mb']:,.0f} MiB"
    )
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
