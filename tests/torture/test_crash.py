"""kill -9 at random points of registration, governance, data set ingest and capture.

After every kill the registry must hold no half-visible version, no broken chain, no state
that disagrees with the ledger and no file that does not match its digest: at most
unreferenced leftovers, which ``verify`` names as orphans and ``gc`` removes. Every capture
file that was written is readable and its receipts verify.

CI runs a few kills per case; ``MODELLEDGER_TORTURE=long`` runs many more.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelledger import Registry, receipts_from_table, verify_receipt

WORKER = Path(__file__).with_name("worker.py")
TRIALS = 25 if os.environ.get("MODELLEDGER_TORTURE") == "long" else 3


def _kill_while_writing(
    mode: str, url: str, artifacts: str, rng: random.Random, *, after_a_write: bool = False
) -> None:
    """Start a worker and kill -9 it at a random moment while it writes (with
    ``after_a_write``, only once it has finished at least one write: a slow machine may
    otherwise never let it finish one)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), mode, url, artifacts],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.wait(timeout=30)
            raise AssertionError(f"worker failed to start: {line}{proc.stderr.read() if proc.stderr else ''}")
        while after_a_write and proc.stdout.readline().strip() != "wrote":
            if proc.poll() is not None:
                raise AssertionError(f"worker died on its own: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(rng.uniform(0.05, 0.8))
        if proc.poll() is not None:
            raise AssertionError(f"worker died on its own: {proc.stderr.read() if proc.stderr else ''}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("mode", ["register", "govern", "ingest", "capture"])
def test_kill_9_leaves_nothing_half_done(db_url: str, tmp_path: Path, mode: str) -> None:
    artifacts = str(tmp_path / "artifacts")
    rng = random.Random(f"{mode}-{db_url.split(':')[0]}")
    for trial in range(TRIALS):
        _kill_while_writing(mode, db_url, artifacts, rng, after_a_write=trial == TRIALS - 1)
    reg = Registry.open(db_url, artifacts=artifacts)
    report = reg.verify(grace="0")
    # crash leftovers are allowed, and only those: never a mismatch, a gap, or a state difference
    assert {p.kind for p in report.problems} <= {"orphan"}, [str(p) for p in report.problems]
    assert all(p.version is None for p in report.problems), [str(p) for p in report.problems]
    if mode != "ingest":
        assert report.events_checked > 0
        versions = list(reg.iter_versions("crash"))
        assert [v.version for v in versions] == list(range(len(versions), 0, -1))  # no gap
        reg.load(versions[0].uri)  # the newest visible version is whole
    else:
        page = reg.datasets.versions("crash-data", limit=1000)
        assert [d.version for d in page] == list(range(len(page), 0, -1))
        reg.datasets.read(page.items[0])
    if mode == "capture":
        table = reg.predictions("crash")
        receipts = receipts_from_table(table)
        public = reg.public_key(receipts[0].key_id)
        assert receipts and all(verify_receipt(r, public) for r in receipts[:: max(1, len(receipts) // 50)])
    reg.gc(older_than="0", delete=True)
    assert reg.verify(grace="0").ok


def test_verify_while_others_register_reports_no_problem(db_url: str, tmp_path: Path) -> None:
    artifacts = str(tmp_path / "artifacts")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), *sys.path])}
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "register", db_url, artifacts],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        for proc in workers:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        reg = Registry.open(db_url, artifacts=artifacts)
        seen_in_flight = 0
        deadline = time.monotonic() + (60 if TRIALS > 3 else 8)
        rounds = 0
        while time.monotonic() < deadline or rounds < 3:
            report = reg.verify()
            assert report.ok, [str(p) for p in report.problems]
            seen_in_flight += len(report.in_flight)
            rounds += 1
        assert reg.list_versions("crash").items  # the writers did write meanwhile
    finally:
        for proc in workers:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


class _Sum:
    def predict(self, data: object) -> object:
        import numpy as np

        return np.asarray(data, dtype=float).sum(axis=1)


def test_concurrent_registrations_of_the_same_data_keep_its_file(db_url: str, tmp_path: Path) -> None:
    """Writers that bring the same new data at once: one version, its file in place, no error."""
    import threading

    import numpy as np
    import pandas as pd

    artifacts = str(tmp_path / "artifacts")
    frame = pd.DataFrame({"a": np.arange(50, dtype=float)})
    errors: list[BaseException] = []
    rounds = 12

    def write() -> None:
        reg = Registry.open(db_url, artifacts=artifacts, actor="alice@example.com")
        try:
            for i in range(rounds):
                reg.register(
                    "race", _Sum(), sample_input=frame.head(3), capture=False, datasets={"train": frame + i}
                )
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            reg.close()

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    reg = Registry.open(db_url, artifacts=artifacts)
    assert len(reg.datasets.versions("race-train", limit=100)) == rounds
    assert len(reg.list_versions("race", limit=100)) == 4 * rounds
    report = reg.verify(grace="0")
    assert report.ok, [str(p) for p in report.problems]
