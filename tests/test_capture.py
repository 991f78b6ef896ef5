"""Prediction capture: sampling, flushing, the crash bound, a failing store, reading back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import modelledger._serving.receipts as receipts_module
from modelledger import (
    ModelVersion,
    NotFound,
    PermissionDenied,
    Predictor,
    Registry,
    canonical_row,
    input_digest,
    new_prediction_id,
    parse_prediction_id,
    receipts_from_table,
    verify_receipt,
)
from modelledger._keys import generate_key
from modelledger._serving.capture_reader import CaptureReader
from modelledger.stores.artifacts import ArtifactStore


class Scorer:
    """A tiny model: a score from two columns."""

    def predict(self, frame: Any) -> Any:
        return np.asarray(frame["income"], dtype=float) / 1000 + np.asarray(frame["age"])


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 75, n),
            "income": rng.normal(52_000, 15_000, n).round(2),
            "employment": rng.choice(["salaried", "self-employed", "unemployed"], n),
        }
    )


def _version(key: int = 11, folder: str = "models/credit-risk/run-1") -> ModelVersion:
    return ModelVersion(
        model="credit-risk",
        version=1,
        folder=folder,
        digest="sha256:" + "ab" * 32,
        flavor="python",
        files=(),
        manifest={},
        key=key,
    )


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    path = tmp_path / "registry.key"
    generate_key(path)
    return path


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore((tmp_path / "store").as_uri())


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the capture writer")
        time.sleep(0.01)


def _check_table(table: Any, public_pem: bytes) -> None:
    ids = table.column("prediction_id").to_pylist()
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(verify_receipt(r, public_pem) for r in receipts_from_table(table))


# --------------------------------------------------------------------------- through the registry


def test_flush_on_close_writes_everything_readable_and_findable(registry: Registry) -> None:
    registry.init()
    frame = _frame(40)
    v1 = registry.register("credit-risk", Scorer(), sample_input=frame[:5], capture=False)
    v2 = registry.register("credit-risk", Scorer(), sample_input=frame[:5], capture=False)
    made: list[str] = []
    with registry.load("models:/credit-risk/1", capture=True, flush_rows=50) as predictor:
        assert isinstance(predictor, Predictor)
        for seed in range(3):
            predictions, receipts = predictor.predict(_frame(40, seed))
            assert len(predictions) == len(receipts) == 40
            made.extend(receipts.ids)
        for i in range(30):
            made.extend(predictor.predict(frame.iloc[i : i + 1]).receipts.ids)
    assert predictor.pending == 0 and predictor.dropped == 0 and predictor.written == 150
    public = registry.public_key(predictor.key_id)

    table = registry.predictions(v1.uri)
    assert table.num_rows == 150
    assert table.column("prediction_id").to_pylist() == sorted(made)
    _check_table(table, public)
    files = registry._art.list_files(f"{v1.folder}/predictions")
    day = datetime.now(timezone.utc).date().isoformat()
    assert files and all(f.startswith(f"date={day}/part-") and f.endswith(".parquet") for f in files)

    # one id in the middle of a batch, one from a one-row call
    for pid, source in ((made[45], _frame(40, 1).iloc[5]), (made[130], frame.iloc[10])):
        found = registry.prediction(pid)
        assert found["prediction_id"] == pid and found["version"] == 1 and found["model"] == "credit-risk"
        assert found["input"] == json.loads(canonical_row(source.to_dict()))
        assert found["input_digest"] == input_digest(source.to_dict())
        assert found["output"] == pytest.approx(source["income"] / 1000 + source["age"])
        assert verify_receipt(found["receipt"], public)
    with pytest.raises(NotFound, match="not in its captures"):
        registry.prediction(new_prediction_id(v1.key))
    assert CaptureReader(registry._art).find(v2, made[0]) is None  # another version's id

    assert registry.predictions("credit-risk").num_rows == 150
    assert registry.predictions("models:/credit-risk/2").num_rows == 0
    frame_out = registry.predictions(v1.uri, as_pandas=True)
    assert len(frame_out) == 150 and str(frame_out["time"].dt.tz) == "UTC"


def test_load_without_capture_is_unchanged(tmp_path: Path) -> None:
    registry = Registry.open(f"sqlite:///{tmp_path / 'r.db'}", artifacts=str(tmp_path / "art"))
    registry.init()
    frame = _frame(5)
    v = registry.register("m", Scorer(), sample_input=frame, capture=False)
    plain = registry.load(v.uri)
    with pytest.raises(PermissionDenied, match="receipts are signed by a serving identity"):
        registry.load(v.uri, capture=True)  # an admin's key never signs receipts
    server = Registry.open(f"sqlite:///{tmp_path / 'r.db'}", artifacts=str(tmp_path / "art"), actor="svc")
    registry.enrol("svc", server._identity().public_pem(), roles="serving", models="m")
    with server.load(v.uri, capture=True) as served:
        assert np.allclose(plain.predict(frame), served.predict(frame).predictions)
    assert registry._art.list_files(f"{v.folder}/predictions")
    registry.close()


# --------------------------------------------------------------------------- sampling and flushing


def test_sampling_stores_about_the_rate_and_is_deterministic_with_a_seed(
    keyfile: Path, tmp_path: Path
) -> None:
    captured = []
    for run in range(2):
        store = ArtifactStore((tmp_path / f"store{run}").as_uri())
        with Predictor(
            Scorer(), version=_version(), key=keyfile, store=store, sample_rate=0.25, seed=42
        ) as p:
            for seed in range(40):
                p.predict(_frame(100, seed))
        table = CaptureReader(store).read(_version())
        captured.append(table.column("input_digest").to_pylist())
        assert p.written == table.num_rows
    assert 900 <= len(captured[0]) <= 1100
    assert captured[0] == captured[1]
    nothing = ArtifactStore((tmp_path / "none").as_uri())
    with Predictor(Scorer(), version=_version(), key=keyfile, store=nothing, sample_rate=0.0) as p:
        assert len(p.predict(_frame(100)).receipts) == 100  # receipts for every row all the same
    assert p.written == 0 and CaptureReader(nothing).read(_version()).num_rows == 0


def test_buffer_flushes_by_size_without_close(keyfile: Path, store: ArtifactStore) -> None:
    p = Predictor(Scorer(), version=_version(), key=keyfile, store=store, flush_rows=25, flush_seconds=3600)
    frame = _frame(60)
    for i in range(60):
        p.predict(frame.iloc[i : i + 1])
    _wait_for(lambda: p.written == 50)
    assert p.pending == 10  # the open buffer: fewer than flush_rows rows
    assert CaptureReader(store).read(_version()).num_rows == 50
    p.close()
    assert p.written == 60 and CaptureReader(store).read(_version()).num_rows == 60


def test_buffer_flushes_by_age_without_close(keyfile: Path, store: ArtifactStore) -> None:
    p = Predictor(Scorer(), version=_version(), key=keyfile, store=store, flush_rows=10**6, flush_seconds=0.2)
    start = time.monotonic()
    p.predict(_frame(5))
    _wait_for(lambda: p.written == 5, timeout=5)
    assert time.monotonic() - start >= 0.2
    assert p.pending == 0 and CaptureReader(store).read(_version()).num_rows == 5
    p.close()


def test_concurrent_callers_get_sorted_files(keyfile: Path, store: ArtifactStore) -> None:
    p = Predictor(Scorer(), version=_version(), key=keyfile, store=store, flush_rows=100)
    frame = _frame(3)

    def serve() -> None:
        for _ in range(50):
            p.predict(frame)

    threads = [threading.Thread(target=serve) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    p.close()
    table = CaptureReader(store).read(_version())
    assert table.num_rows == 600
    for name in store.list_files(f"{_version().folder}/predictions"):
        ids = pq.read_table(store.full(f"{_version().folder}/predictions/{name}")).column("prediction_id")
        assert ids.to_pylist() == sorted(ids.to_pylist())
        first, last = Path(name).stem.split("-")[1:3]
        assert (first, last) == (ids[0].as_py(), ids[-1].as_py())


def test_date_partitions_and_time_ranges(
    keyfile: Path, store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [0]
    monkeypatch.setattr(receipts_module, "_CLOCK", receipts_module._IdClock())
    monkeypatch.setattr(receipts_module, "_time", SimpleNamespace(time_ns=lambda: clock[0] * 1_000_000))

    def at(text: str) -> int:
        return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp() * 1000)

    ids: dict[str, list[str]] = {}
    with Predictor(Scorer(), version=_version(), key=keyfile, store=store) as p:
        for when, n in (
            ("2030-01-01T23:59:59.990", 3),
            ("2030-01-02T00:00:00.010", 2),
            ("2030-01-05T12:00:00", 1),
        ):
            clock[0] = at(when)
            ids[when] = p.predict(_frame(n)).receipts.ids
            assert parse_prediction_id(ids[when][0])[0] == datetime.fromisoformat(when).replace(
                tzinfo=timezone.utc
            )
    folders = store.list_dirs(f"{_version().folder}/predictions")
    assert folders == ["date=2030-01-01", "date=2030-01-02", "date=2030-01-05"]
    version = _version()
    assert CaptureReader(store).read(version).num_rows == 6
    assert CaptureReader(store).read(version, since="2030-01-02", until="2030-01-03").num_rows == 2
    assert CaptureReader(store).read(version, since="2030-01-01T23:59:59.995").num_rows == 3
    assert CaptureReader(store).read(version, until=datetime(2030, 1, 2)).num_rows == 3
    for group in ids.values():
        for pid in group:
            found = CaptureReader(store).find(version, pid)
            assert found is not None and found["prediction_id"] == pid


def test_s3_store(keyfile: Path, s3_artifacts: tuple[str, dict[str, object]]) -> None:
    url, options = s3_artifacts
    store = ArtifactStore(url, **options)
    version = _version()
    with Predictor(Scorer(), version=version, key=keyfile, store=store, flush_rows=30) as p:
        made = [pid for seed in range(3) for pid in p.predict(_frame(20, seed)).receipts.ids]
    assert p.written == 60
    table = CaptureReader(store).read(version)
    assert table.column("prediction_id").to_pylist() == made
    found = CaptureReader(store).find(version, made[27])
    assert found is not None and verify_receipt(found["receipt"], p.public_key())


# --------------------------------------------------------------------------- a failing store


def _block(store: ArtifactStore, version: ModelVersion) -> Path:
    """Make the predictions folder impossible to create: a file sits in its place."""
    blocker = Path(store.full(f"{version.folder}/predictions"))
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("in the way")
    return blocker


def test_serving_continues_while_the_store_is_down_then_drains(keyfile: Path, store: ArtifactStore) -> None:
    version = _version()
    blocker = _block(store, version)
    p = Predictor(Scorer(), version=version, key=keyfile, store=store, flush_rows=20, flush_seconds=0.05)
    frame = _frame(100)
    made = []
    for i in range(100):
        _predictions, receipts = p.predict(frame.iloc[i : i + 1])  # never raises
        made.extend(receipts.ids)
    _wait_for(lambda: p.last_error is not None)
    assert p.written == 0 and p.pending == 100 and p.dropped == 0
    assert p.flush(timeout=5) is False
    blocker.unlink()
    _wait_for(lambda: p.pending == 0)
    assert p.written == 100 and p.dropped == 0 and p.last_error is None
    p.close()
    table = CaptureReader(store).read(version)
    assert table.column("prediction_id").to_pylist() == made
    _check_table(table, p.public_key())


def test_the_pending_bound_drops_new_rows_and_never_blocks(keyfile: Path, store: ArtifactStore) -> None:
    version = _version()
    _block(store, version)
    p = Predictor(
        Scorer(), version=version, key=keyfile, store=store, flush_rows=10, flush_seconds=0.05, max_pending=30
    )
    frame = _frame(50)
    for i in range(50):
        assert len(p.predict(frame.iloc[i : i + 1]).receipts) == 1
    assert p.pending == 30 and p.dropped == 20
    started = time.monotonic()
    p.close(timeout=0.3)  # the store never recovers: close gives up after the timeout
    assert time.monotonic() - started < 5
    assert p.pending == 0 and p.dropped == 50 and p.written == 0
    assert len(p.predict(frame.iloc[:2]).receipts) == 2  # still serves after close
    assert p.dropped == 52


# --------------------------------------------------------------------------- crashes and exits

CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from modelledger import ModelVersion, Predictor
    from modelledger.stores.artifacts import ArtifactStore

    version = ModelVersion.from_dict(json.loads(sys.argv[1]))
    store, key, mode = ArtifactStore(sys.argv[2]), sys.argv[3], sys.argv[4]
    flush_rows, flush_seconds, batch = int(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
    p = Predictor(lambda x: x[:, 0] * 2, version=version, key=key, store=store,
                  flush_rows=flush_rows, flush_seconds=flush_seconds)
    rows = np.arange(batch * 2, dtype=float).reshape(batch, 2)
    predicted = 0
    while mode == "crash" or predicted < 350:
        p.predict(rows)
        predicted += batch
        stats = p.stats()
        print(predicted, stats.written, stats.pending, flush=True)
        time.sleep(0.002)
    """
)


def _child(tmp_path: Path, store: ArtifactStore, keyfile: Path, *args: object) -> subprocess.Popen[str]:
    script = tmp_path / "serve.py"
    script.write_text(CHILD)
    argv = [sys.executable, str(script), json.dumps(_version().to_dict()), store.url, str(keyfile)]
    return subprocess.Popen([*argv, *map(str, args)], stdout=subprocess.PIPE, text=True)


def test_a_crash_loses_at_most_the_documented_bound(
    tmp_path: Path, keyfile: Path, store: ArtifactStore
) -> None:
    flush_rows, batch = 200, 10
    bound = 2 * (flush_rows + batch)  # the module docstring's bound while the store keeps up
    proc = _child(tmp_path, store, keyfile, "crash", flush_rows, 3600, batch)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        predicted, written, _ = map(int, line.split())
        if predicted >= 3000 and written >= 1000:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    lines += proc.stdout.read().splitlines()  # lines printed before the kill landed
    counts = [tuple(map(int, line.split())) for line in lines if len(line.split()) == 3]
    predicted, written, pending = counts[-1]
    assert predicted == written + pending  # nothing dropped: every captured row is accounted for

    table = CaptureReader(store).read(_version())  # ignores the temporary file of an interrupted write
    survived = table.num_rows
    assert survived >= written  # what the writer reported written is on disk
    lost_at_most = predicted + batch - survived  # at most one more call ran after the last line
    assert 0 <= lost_at_most <= bound, (predicted, written, survived)
    assert lost_at_most <= max(p for _, _, p in counts) + batch
    _check_table(table, Predictor(lambda x: x, version=_version(), key=keyfile).public_key())


def test_a_clean_exit_without_close_writes_everything(
    tmp_path: Path, keyfile: Path, store: ArtifactStore
) -> None:
    proc = _child(tmp_path, store, keyfile, "exit", 10**6, 3600, 7)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    predicted, written, _ = map(int, out.splitlines()[-1].split())
    assert predicted == 350 and written == 0  # nothing was flushed before exit...
    assert CaptureReader(store).read(_version()).num_rows == 350  # ...and atexit wrote it all


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_worker_captures_its_own_rows(keyfile: Path, store: ArtifactStore) -> None:
    import warnings

    p = Predictor(Scorer(), version=_version(), key=keyfile, store=store, flush_seconds=3600)
    p.predict(_frame(5))  # the parent's writer thread is running
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads (Python 3.12+)
        pid = os.fork()
    if pid == 0:  # the child: a gunicorn-style worker forked after the predictor was made
        code = 1
        try:
            p.predict(_frame(7))
            p.close()
            code = 0 if p.written == 7 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    p.predict(_frame(3))
    p.close()
    assert p.written == 8
    assert CaptureReader(store).read(_version()).num_rows == 15


def test_a_record_that_fails_is_kept_and_retried(keyfile: Path, store: ArtifactStore) -> None:
    calls: list[list[str]] = []

    def record(files: Any) -> None:
        calls.append([f.path for f in files])
        if len(calls) == 1:
            raise OSError("database is down")

    p = Predictor(Scorer(), version=_version(), key=keyfile, store=store, record=record)
    p.predict(_frame(4))
    assert p.flush(timeout=10)
    p.predict(_frame(3, seed=1))
    p.close()
    written = sorted(
        f"models/credit-risk/run-1/predictions/{rel}"
        for rel in store.list_files("models/credit-risk/run-1/predictions")
    )
    assert len(written) == 2
    # the first file's record failed, so it was handed over again with the second one
    assert calls[0] == written[:1] and sorted(calls[1]) == written
