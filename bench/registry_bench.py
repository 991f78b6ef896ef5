"""Registry workload benchmark: modelledger (embedded SQLite) against MLflow's model registry.

Runs the same seven operations on both registries, each side in its own fresh
subprocess and fresh temporary folder, and prints per-operation latency (median and
p95 over N repetitions, warm-ups excluded) and the ratio mlflow_ms / modelledger_ms.
Both sides run twice, alternately; per operation the round with the lower median is
kept, which keeps bursts from other jobs on a shared machine out of the comparison.
It also measures the durability floor (one 4 KB write + fsync in the registry's
folder), ``import`` time of both packages in fresh interpreters, and checks the
targets. Results go to ``bench/results/registry.json``.

Example:
    pip install -e '.[bench]'
    python bench/registry_bench.py            # full run, about 3 minutes on 2 cores
    python bench/registry_bench.py --quick    # one round, fewer repetitions, under a minute
    python bench/registry_bench.py --profile search_versions   # cProfile one modelledger operation

MLflow is a benchmark-only dependency (the ``bench`` extra); it is never imported by
the orchestrating process, only by its own child process.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _machine import compile_bytecode, cpu_model, dist_version, fs_type, git_state

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUT = HERE / "results" / "registry.json"

# Operation key -> label, in the order they are printed.
OPERATIONS: dict[str, str] = {
    "create_model": "1. create model",
    "create_version": "2. create version (artefact exists)",
    "log_register": "3. log + register sklearn model",
    "set_alias": "4. set alias",
    "get_version_by_alias": "5. get version by alias",
    "search_versions": "6. search versions (50)",
    "load_by_alias": "7. load by alias",
    "load_predict": "7b. load by alias + predict",
}
# Supplementary row: MLflow's log+register with pip_requirements given, which skips
# its requirement-inference subprocess. Compared against the same modelledger figure.
EXTRA_MLFLOW_OP = "log_register_explicit_pip_requirements"
EXTRA_LABEL = "3b. log + register, MLflow pip_requirements given"

WRITE_OPS = ("create_model", "create_version", "set_alias")
READ_OPS = ("get_version_by_alias", "search_versions", "load_by_alias")

# Environment for the MLflow child: no telemetry, no network, no Databricks SDK warm-up.
MLFLOW_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "_MLFLOW_TELEMETRY_PRE_WARM_DATABRICKS_SDK": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "GIT_PYTHON_REFRESH": "quiet",
    "NO_PROXY": "*",
}


# --------------------------------------------------------------------------- timing helpers


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    return {"median": statistics.median(ordered), "p95": p95, "min": ordered[0], "n": len(ordered)}


def measure(fn: Callable[[int], Any], reps: int, warmup: int) -> list[float]:
    """Call ``fn(i)`` for i in 0..warmup+reps-1; return the last ``reps`` latencies in ms."""
    gc.collect()
    out: list[float] = []
    for i in range(warmup + reps):
        t0 = time.perf_counter()
        fn(i)
        dt = (time.perf_counter() - t0) * 1000.0
        if i >= warmup:
            out.append(dt)
    return out


def fsync_floor(folder: Path, reps: int) -> list[float]:
    """Latency (ms) of appending 4 KB to a file in ``folder`` and fsync-ing it.

    A durable SQLite commit in WAL mode with synchronous=FULL costs at least one such
    write + fsync of the WAL file, so this is the floor under any durable metadata write.
    """
    path = folder / "fsync-probe.bin"
    block = os.urandom(4096)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, block)
        os.fsync(fd)  # allocate the file first: the first fsync also makes the entry durable
        out = []
        for _ in range(reps):
            t0 = time.perf_counter()
            os.write(fd, block)
            os.fsync(fd)
            out.append((time.perf_counter() - t0) * 1000.0)
    finally:
        os.close(fd)
        path.unlink()
    return out


# --------------------------------------------------------------------------- the workload


def _training_data() -> tuple[Any, Any, Any, dict[str, Any], dict[str, float]]:
    """A small fitted scikit-learn pipeline on iris, with float feature columns."""
    import warnings

    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    X, y = load_iris(return_X_y=True, as_frame=True)
    X.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    params = {"C": 1.0, "max_iter": 1000}
    model = make_pipeline(StandardScaler(), LogisticRegression(**params)).fit(X, y)
    metrics = {"accuracy": float(model.score(X, y))}
    return model, X, y, params, metrics


class Side:
    """One registry under test. Subclasses implement the same operations with the same semantics."""

    name = ""

    def __init__(self, workdir: Path, n_versions: int) -> None:
        self.workdir = workdir
        self.n_versions = n_versions
        self.model, self.X, self.y, self.params, self.metrics = _training_data()
        self.sample = self.X[:5]

    # setup (untimed)
    def setup(self) -> None: ...
    def prepare_create_version(self, count: int) -> None: ...
    def prepare_main(self) -> None: ...
    def durability(self) -> dict[str, Any]: ...
    def versions_info(self) -> dict[str, Any]: ...

    # timed operations
    def create_model(self, i: int) -> None: ...
    def create_version(self, i: int) -> None: ...
    def log_register(self, i: int) -> None: ...
    def set_alias(self, version: int) -> None: ...
    def get_version_by_alias(self) -> int: ...
    def search_versions(self) -> int: ...
    def load_by_alias(self) -> Any: ...
    def load_predict(self) -> Any: ...
    def predict_only(self) -> Any: ...


class LedgerSide(Side):
    name = "modelledger"

    def setup(self) -> None:
        self.home = self.workdir / "home"
        os.environ["MODELLEDGER_HOME"] = str(self.home)
        os.environ["MODELLEDGER_IDENTITIES"] = str(self.workdir / "identities")  # never the user's keys
        from modelledger import Registry

        self.registry = Registry.open()  # the embedded default: $MODELLEDGER_HOME/registry.db + artifacts/
        self.registry.create_model("warmup")  # first use creates the schema (untimed)
        self.fsync_dir = self.home

    def durability(self) -> dict[str, Any]:
        with self.registry._meta.engine.connect() as conn:
            journal = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
            sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
        return {"journal_mode": journal, "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[sync]}

    def _stage(self, name: str) -> Any:
        return self.registry.upload(
            name, self.model, sample_input=self.sample, params=self.params, metrics=self.metrics
        )

    def create_model(self, i: int) -> None:
        self.registry.create_model(f"cm-{i}")

    def prepare_create_version(self, count: int) -> None:
        # Each staged folder backs exactly one version: stage one per repetition, untimed.
        self.registry.create_model("cv")
        self.staged = [self._stage("cv") for _ in range(count)]

    def create_version(self, i: int) -> None:
        self.registry.create_version(self.staged[i])

    def log_register(self, i: int) -> None:
        self.registry.register(
            "lr", self.model, sample_input=self.sample, params=self.params, metrics=self.metrics
        )

    def prepare_main(self) -> None:
        self.registry.create_model("m")
        for _ in range(self.n_versions):
            self.registry.create_version(self._stage("m"))

    def set_alias(self, version: int) -> None:
        self.registry.set_alias("m", "champion", version)

    def get_version_by_alias(self) -> int:
        return self.registry.get_version("models:/m@champion").version

    def search_versions(self) -> int:
        return len(self.registry.list_versions("m", limit=100).items)

    def load_by_alias(self) -> Any:
        return self.registry.load("models:/m@champion")

    def load_predict(self) -> Any:
        return self.registry.load("models:/m@champion").predict(self.X)

    def predict_only(self) -> Any:
        # scikit-learn's own predict on the same input, no registry involved: the part of
        # "load + predict" that is the same on both sides
        return self.model.predict(self.X)

    def versions_info(self) -> dict[str, Any]:
        mv = self.registry.get_version("m", 1)
        return {"manifest_json_bytes": len(json.dumps(dict(mv.manifest))), "files": len(mv.files)}


class MlflowSide(Side):
    name = "mlflow"

    def setup(self) -> None:
        os.environ.update(MLFLOW_ENV)
        uri = f"sqlite:///{self.workdir / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        os.environ["MLFLOW_REGISTRY_URI"] = uri
        import logging

        import mlflow
        import mlflow.sklearn
        from mlflow import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        self.mlflow = mlflow
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        # Artefacts in the temp folder too (the default would be ./mlruns).
        exp = self.client.create_experiment(
            "bench", artifact_location=(self.workdir / "mlartifacts").as_uri()
        )
        mlflow.set_experiment(experiment_id=exp)
        self.client.create_registered_model("warmup")
        self.fsync_dir = self.workdir
        import sklearn

        self.pinned_reqs = [f"scikit-learn=={sklearn.__version__}", "cloudpickle"]

    def durability(self) -> dict[str, Any]:
        store = self.client._get_registry_client().store
        with store.engine.connect() as conn:
            journal = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
            sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
        return {
            "journal_mode": journal,
            "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[sync],
            "poolclass": type(store.engine.pool).__name__,
        }

    def _log_source(self) -> None:
        """Log the model once; its artefact URI is the source of every created version."""
        with self.mlflow.start_run() as run:
            info = self.mlflow.sklearn.log_model(self.model, name="model", input_example=self.sample)
        self.run_id = run.info.run_id
        self.source = self.mlflow.get_logged_model(info.model_id).artifact_location

    def create_model(self, i: int) -> None:
        self.client.create_registered_model(f"cm-{i}")

    def prepare_create_version(self, count: int) -> None:
        self._log_source()
        self.client.create_registered_model("cv")

    def create_version(self, i: int) -> None:
        self.client.create_model_version("cv", source=self.source, run_id=self.run_id)

    def _log_register(self, name: str, **kwargs: Any) -> None:
        mlflow = self.mlflow
        with mlflow.start_run():
            mlflow.log_params(self.params)
            mlflow.log_metrics(self.metrics)
            mlflow.sklearn.log_model(
                self.model, name="model", registered_model_name=name, input_example=self.sample, **kwargs
            )

    def log_register(self, i: int) -> None:
        self._log_register("lr")

    def log_register_explicit_reqs(self, i: int) -> None:
        self._log_register("lr2", pip_requirements=self.pinned_reqs)

    def prepare_main(self) -> None:
        self.client.create_registered_model("m")
        for _ in range(self.n_versions):
            self.client.create_model_version("m", source=self.source, run_id=self.run_id)

    def set_alias(self, version: int) -> None:
        self.client.set_registered_model_alias("m", "champion", str(version))

    def get_version_by_alias(self) -> int:
        return int(self.client.get_model_version_by_alias("m", "champion").version)

    def search_versions(self) -> int:
        return len(self.client.search_model_versions("name='m'"))

    def load_by_alias(self) -> Any:
        return self.mlflow.sklearn.load_model("models:/m@champion")

    def load_predict(self) -> Any:
        return self.mlflow.sklearn.load_model("models:/m@champion").predict(self.X)

    def predict_only(self) -> Any:
        return self.model.predict(self.X)

    def versions_info(self) -> dict[str, Any]:
        return {"source": self.source}


def run_side(side_name: str, cfg: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    side: Side = (LedgerSide if side_name == "modelledger" else MlflowSide)(workdir, cfg.versions)
    side.setup()
    reps, warm = cfg.reps, cfg.warmup
    out: dict[str, Any] = {"side": side_name, "ops": {}, "workdir_fs": fs_type(workdir)}
    out["durability"] = side.durability()
    floor_before = fsync_floor(side.fsync_dir, cfg.fsync_reps)
    ops = out["ops"]
    n = cfg.versions

    ops["create_model"] = measure(side.create_model, reps, warm)

    side.prepare_create_version(reps + warm)
    ops["create_version"] = measure(side.create_version, reps, warm)

    ops["log_register"] = measure(side.log_register, cfg.lr_reps, cfg.lr_warmup)
    if isinstance(side, MlflowSide):
        ops[EXTRA_MLFLOW_OP] = measure(side.log_register_explicit_reqs, cfg.lr_reps, cfg.lr_warmup)

    side.prepare_main()
    ops["set_alias"] = measure(lambda i: side.set_alias(1 + i % n), reps, warm)

    side.set_alias(n)  # champion -> the newest version for every read below
    assert side.get_version_by_alias() == n
    ops["get_version_by_alias"] = measure(lambda i: side.get_version_by_alias(), reps, warm)

    assert side.search_versions() == n, "search must return every version"
    ops["search_versions"] = measure(lambda i: side.search_versions(), reps, warm)

    assert hasattr(side.load_by_alias(), "predict")
    ops["load_by_alias"] = measure(lambda i: side.load_by_alias(), cfg.load_reps, warm)
    preds = side.load_predict()
    assert len(preds) == len(side.X)
    ops["load_predict"] = measure(lambda i: side.load_predict(), cfg.load_reps, warm)
    ops["predict_only"] = measure(lambda i: side.predict_only(), cfg.load_reps, warm)

    if isinstance(side, LedgerSide) and cfg.phase_reps:
        out["phases"] = registration_phases(side, cfg.phase_reps)

    floor_after = fsync_floor(side.fsync_dir, cfg.fsync_reps)
    out["fsync_ms"] = floor_before + floor_after
    out["fsync_before_median"] = statistics.median(floor_before)
    out["fsync_after_median"] = statistics.median(floor_after)
    out["info"] = side.versions_info()
    return out


# --------------------------------------------------------------------------- phases of a registration

# (phase, where its time is spent): functions wrapped with timers, in the bench process only,
# after every other measurement. Names are looked up where the registration calls them.
PHASES = (
    ("git capture", "capture_source"),
    ("model save (flavor)", "flavor.save"),
    ("load-back check", "_load_back"),
    ("signature inference", "infer_signature"),
    ("trial predict, describe, params", "_prepare_source minus the three above"),
    ("manifest encoding", "canonicalize_str, _folder_record"),
    ("artefact write", "claim_folder, put_stream, put_bytes, sync_folder"),
    ("metadata commit", "Registry.create_version"),
)


def registration_phases(side: LedgerSide, reps: int) -> dict[str, Any]:
    """Where a steady-state registration's time goes: ms per phase (median over ``reps``).

    Each phase's functions are wrapped with ``perf_counter`` timers (the library has none);
    "other" is the rest of ``Registry.register`` (planning checks, the scratch folder, data
    set handling, argument checks).
    """
    import modelledger._manifest as manifest_mod
    import modelledger._registration as registration_mod
    from modelledger import Registry
    from modelledger.flavors import flavor_for_object
    from modelledger.stores.artifacts import ArtifactStore

    spent: dict[str, float] = {}

    def timed(owner: Any, name: str, phase: str) -> None:
        real = getattr(owner, name)

        def run(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                spent[phase] = spent.get(phase, 0.0) + time.perf_counter() - t

        setattr(owner, name, run)

    timed(manifest_mod, "capture_source", "git capture")
    timed(type(flavor_for_object(side.model)), "save", "model save (flavor)")
    timed(registration_mod, "_load_back", "load-back check")
    timed(registration_mod, "infer_signature", "signature inference")
    timed(registration_mod, "_prepare_source", "_prepare_source")
    timed(registration_mod, "canonicalize_str", "manifest encoding")
    timed(registration_mod, "_folder_record", "manifest encoding")
    for name in ("claim_folder", "put_stream", "put_bytes", "sync_folder"):
        timed(ArtifactStore, name, "artefact write")
    timed(Registry, "create_version", "metadata commit")
    timed(Registry, "register", "total")

    rows: list[dict[str, float]] = []
    for i in range(reps + 1):
        spent.clear()
        side.log_register(i)
        if i:  # the first call also pays for the wrappers' first use
            rows.append({k: v * 1000 for k, v in spent.items()})
    per: dict[str, list[float]] = {}
    for row in rows:
        row["trial predict, describe, params"] = row.pop("_prepare_source") - sum(
            row.get(k, 0.0) for k in ("model save (flavor)", "load-back check", "signature inference")
        )
        row["other"] = row["total"] - sum(row.get(k, 0.0) for k, _ in PHASES)
        for k, v in row.items():
            per.setdefault(k, []).append(v)
    return {k: round(statistics.median(v), 4) for k, v in per.items()}


# --------------------------------------------------------------------------- first registration in a fresh process

# A script that registers once: it has trained its model (scikit-learn imported, model in
# memory: unpickled here, untimed as registry work), then imports the registry, opens it and
# registers. Times are seconds since the epoch, so the parent's spawn time is comparable.
FIRST_LEDGER = """
import json, os, pickle, sys, time
marks = {"start": float(os.environ["BENCH_SPAWNED"]), "python": time.time()}
import sklearn.pipeline
with open(os.environ["BENCH_MODEL"], "rb") as fh:
    model, sample, params, metrics = pickle.load(fh)
marks["model_ready"] = time.time()
from modelledger import Registry
registry = Registry.open()
marks["opened"] = time.time()
registry.register("first", model, sample_input=sample, params=params, metrics=metrics)
marks["registered"] = time.time()
with open(os.environ["BENCH_OUT"], "w") as fh:
    json.dump(marks, fh)
"""

FIRST_MLFLOW = """
import json, os, pickle, sys, time
marks = {"start": float(os.environ["BENCH_SPAWNED"]), "python": time.time()}
import sklearn.pipeline
with open(os.environ["BENCH_MODEL"], "rb") as fh:
    model, sample, params, metrics = pickle.load(fh)
marks["model_ready"] = time.time()
import logging
import mlflow
import mlflow.sklearn
logging.getLogger("mlflow").setLevel(logging.WARNING)
mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
mlflow.set_registry_uri(os.environ["MLFLOW_TRACKING_URI"])
mlflow.set_experiment("bench")
marks["opened"] = time.time()
with mlflow.start_run():
    mlflow.log_params(params)
    mlflow.log_metrics(metrics)
    mlflow.sklearn.log_model(model, name="model", registered_model_name="first", input_example=sample)
marks["registered"] = time.time()
with open(os.environ["BENCH_OUT"], "w") as fh:
    json.dump(marks, fh)
"""

FIRST_MEASURES = {
    "from_start": ("start", "registered"),
    "registry_part": ("model_ready", "registered"),
    "register_call": ("opened", "registered"),
}
FIRST_LABELS = {
    "from_start": "8. first registration, fresh process: from spawn",
    "registry_part": "8b. ... import + open + register",
    "register_call": "8c. ... the register call alone",
}


def first_registrations(cfg: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    """ms of the first registration in fresh processes, both sides alternately, ``cfg.first_runs``
    each (after one untimed run per side that creates the registry and warms the page cache).

    Each script lives in a git checkout of its own, committed, as training code does: both
    registries record the commit.
    """
    import pickle

    out: dict[str, dict[str, list[float]]] = {
        s: {m: [] for m in FIRST_MEASURES} for s in ("modelledger", "mlflow")
    }
    with tempfile.TemporaryDirectory(prefix="registry-bench-first-", dir=cfg.dir) as tmp:
        root = Path(tmp)
        model, X, _y, params, metrics = _training_data()
        model_file = root / "model.pkl"
        model_file.write_bytes(pickle.dumps((model, X[:5], params, metrics)))
        code = root / "code"
        code.mkdir()
        (code / "register_ledger.py").write_text(FIRST_LEDGER)
        (code / "register_mlflow.py").write_text(FIRST_MLFLOW)
        git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com"]
        for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "training code"]):
            subprocess.run([*git, *args], cwd=code, check=True, capture_output=True)
        env = {k: v for k, v in os.environ.items() if k != "MODELLEDGER_HOME"}
        env.update(MLFLOW_ENV)
        env.update(
            {
                "BENCH_MODEL": str(model_file),
                "MODELLEDGER_HOME": str(root / "home"),
                "MODELLEDGER_IDENTITIES": str(root / "identities"),
                "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
            }
        )
        for i in range(cfg.first_runs + 1):
            for side, script in (("modelledger", "register_ledger.py"), ("mlflow", "register_mlflow.py")):
                marks_file = root / "marks.json"
                spawned = time.time()
                env["BENCH_SPAWNED"] = repr(spawned)
                env["BENCH_OUT"] = str(marks_file)
                res = subprocess.run(
                    [sys.executable, script], cwd=code, env=env, capture_output=True, text=True
                )
                if res.returncode != 0:
                    sys.stderr.write(res.stdout[-5000:] + res.stderr[-5000:])
                    raise SystemExit(f"the first {side} registration failed (exit {res.returncode})")
                marks = json.loads(marks_file.read_text())
                if i:  # the first run creates the registry (schema, experiment): not counted
                    for measure, (a, b) in FIRST_MEASURES.items():
                        out[side][measure].append((marks[b] - marks[a]) * 1000)
    return out


def profile_op(op: str, cfg: argparse.Namespace, workdir: Path) -> None:
    """cProfile one modelledger operation (after the same setup as the benchmark)."""
    import cProfile
    import pstats

    side = LedgerSide(workdir, cfg.versions)
    side.setup()
    n = cfg.versions
    reps = cfg.reps
    if op == "create_version":
        side.prepare_create_version(reps + 5)
        fn: Callable[[int], Any] = side.create_version
    elif op == "create_model":
        fn = side.create_model
    elif op == "log_register":
        fn = side.log_register
    else:
        side.prepare_main()
        side.set_alias(n)
        fn = {
            "set_alias": lambda i: side.set_alias(1 + i % n),
            "get_version_by_alias": lambda i: side.get_version_by_alias(),
            "search_versions": lambda i: side.search_versions(),
            "load_by_alias": lambda i: side.load_by_alias(),
            "load_predict": lambda i: side.load_predict(),
        }[op]
    for i in range(5):
        fn(i)
    prof = cProfile.Profile()
    prof.enable()
    for i in range(5, 5 + reps):
        fn(i)
    prof.disable()
    stats = pstats.Stats(prof).strip_dirs().sort_stats("cumulative")
    print(f"cProfile of modelledger {op}, {reps} calls, sorted by cumulative time:")
    stats.print_stats(35)
    stats.sort_stats("tottime").print_stats(20)


# --------------------------------------------------------------------------- orchestration


def import_time(module: str, runs: int) -> list[float]:
    """ms to ``import module`` in a fresh interpreter (interpreter start-up excluded)."""
    code = f"import time; t=time.perf_counter(); import {module}; print((time.perf_counter()-t)*1000)"
    env = {**os.environ, **MLFLOW_ENV}
    out = []
    for i in range(runs + 1):  # the first run warms the OS page cache and bytecode; not counted
        res = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env=env,
            cwd=tempfile.gettempdir(),
        )
        if i:
            out.append(float(res.stdout.strip().splitlines()[-1]))
    return out


def run_child(side: str, cfg: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"registry-bench-{side}-", dir=cfg.dir) as tmp:
        result = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            side,
            "--child-out",
            str(result),
            "--reps",
            str(cfg.reps),
            "--warmup",
            str(cfg.warmup),
            "--lr-reps",
            str(cfg.lr_reps),
            "--lr-warmup",
            str(cfg.lr_warmup),
            "--load-reps",
            str(cfg.load_reps),
            "--fsync-reps",
            str(cfg.fsync_reps),
            "--versions",
            str(cfg.versions),
            "--phase-reps",
            str(cfg.phase_reps),
        ]
        env = {**os.environ}
        env.pop("MODELLEDGER_HOME", None)
        work = Path(tmp) / "work"
        work.mkdir()
        t0 = time.perf_counter()
        # The child runs in its temp folder, so nothing either registry writes lands elsewhere.
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=work)
        if res.returncode != 0:
            sys.stderr.write(res.stdout[-5000:] + res.stderr[-5000:])
            raise SystemExit(f"the {side} benchmark failed (exit {res.returncode})")
        data: dict[str, Any] = json.loads(result.read_text())
        data["wall_s"] = time.perf_counter() - t0
        return data


def _merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's results over several rounds: per operation, the round with the lowest median.

    Other jobs on a shared machine slow a whole stretch of a run; taking the least
    disturbed round per operation (as ``timeit`` takes the best repeat) keeps their
    noise out of the comparison. The fsync probes of every round are pooled.
    """
    merged = dict(rounds[0])
    merged["ops"] = {
        op: min((r["ops"][op] for r in rounds), key=statistics.median) for op in rounds[0]["ops"]
    }
    merged["fsync_ms"] = [x for r in rounds for x in r["fsync_ms"]]
    merged["wall_s"] = sum(r["wall_s"] for r in rounds)
    merged["round_medians"] = {
        op: [round(statistics.median(r["ops"][op]), 4) for r in rounds] for op in rounds[0]["ops"]
    }
    return merged


def _fmt(x: float) -> str:
    return f"{x:9.2f}" if x < 1000 else f"{x:9.0f}"


def report(cfg: argparse.Namespace, bytecode: dict[str, object]) -> int:
    started = _dt.datetime.now(_dt.timezone.utc).astimezone()
    print(
        f"registry benchmark: {'quick' if cfg.quick else 'full'} run, "
        f"{cfg.reps} reps (+{cfg.warmup} warm-up) per op; log+register {cfg.lr_reps}; "
        f"load {cfg.load_reps}; {cfg.versions} versions for search; {cfg.rounds} round(s)",
        flush=True,
    )
    load_before = os.getloadavg()
    if load_before[0] > 0.7 * (os.cpu_count() or 1) / 2:
        print(f"  note: load average is {load_before[0]:.2f}; other jobs will add noise", flush=True)
    print("  import times ...", flush=True)
    imp_ml = import_time("modelledger", cfg.import_runs)
    imp_mf = import_time("mlflow", cfg.import_runs)
    runs: dict[str, list[dict[str, Any]]] = {"modelledger": [], "mlflow": []}
    for r in range(cfg.rounds):
        for side in ("modelledger", "mlflow"):
            tag = f" (round {r + 1}/{cfg.rounds})" if cfg.rounds > 1 else ""
            print(f"  {side} workload{tag} ...", flush=True)
            runs[side].append(run_child(side, cfg))
            print(f"    done in {runs[side][-1]['wall_s']:.0f} s", flush=True)
    led, mlf = _merge_rounds(runs["modelledger"]), _merge_rounds(runs["mlflow"])
    first: dict[str, dict[str, list[float]]] = {}
    if cfg.first_runs:
        print(f"  first registration in {cfg.first_runs} fresh processes per side ...", flush=True)
        first = first_registrations(cfg)

    load_after = os.getloadavg()
    floor_stats = _stats(led["fsync_ms"])
    floor = floor_stats["median"]
    results: dict[str, Any] = {}
    rows = []
    for op, label in [*OPERATIONS.items(), (EXTRA_MLFLOW_OP, EXTRA_LABEL)]:
        a = _stats(led["ops"]["log_register" if op == EXTRA_MLFLOW_OP else op])
        b = _stats(mlf["ops"][op])
        ratio = b["median"] / a["median"]
        results[op] = {
            "modelledger_ms": round(a["median"], 4),
            "mlflow_ms": round(b["median"], 4),
            "ratio": round(ratio, 3),
            "modelledger_p95_ms": round(a["p95"], 4),
            "mlflow_p95_ms": round(b["p95"], 4),
            "reps": a["n"],
        }
        if op in WRITE_OPS:
            results[op]["modelledger_excess_over_fsync_ms"] = round(a["median"] - floor, 4)
            results[op]["mlflow_excess_over_fsync_ms"] = round(b["median"] - floor, 4)
        rows.append((label, a, b, ratio))
    for measure, label in FIRST_LABELS.items() if first else ():
        a, b = _stats(first["modelledger"][measure]), _stats(first["mlflow"][measure])
        ratio = b["median"] / a["median"]
        results[f"first_{measure}"] = {
            "modelledger_ms": round(a["median"], 4),
            "mlflow_ms": round(b["median"], 4),
            "ratio": round(ratio, 3),
            "modelledger_p95_ms": round(a["p95"], 4),
            "mlflow_p95_ms": round(b["p95"], 4),
            "reps": a["n"],
        }
        rows.append((label, a, b, ratio))
    # scikit-learn's predict alone (no registry), timed in each child: what "load + predict"
    # spends identically on both sides, which bounds that row's ratio whatever a load costs.
    p_led, p_mlf = _stats(led["ops"]["predict_only"]), _stats(mlf["ops"]["predict_only"])
    lp = results["load_predict"]
    bound = lp["mlflow_ms"] / p_led["median"]
    results["predict_only"] = {
        "modelledger_ms": round(p_led["median"], 4),
        "mlflow_ms": round(p_mlf["median"], 4),
        "note": "scikit-learn's predict on the same 150 rows, no registry involved (measured in each child)",
    }
    lp["ratio_bound_with_free_load"] = round(bound, 3)
    results[EXTRA_MLFLOW_OP]["note"] = (
        "supplementary: MLflow given pip_requirements (skips its requirement-inference subprocess); "
        "modelledger figures are the same as log_register"
    )

    # Targets
    targets = []
    for op in READ_OPS:
        r = results[op]["ratio"]
        targets.append((f"{OPERATIONS[op]}: >= 10x faster than MLflow", f"{r:.1f}x", r >= 10))
    for op in WRITE_OPS:
        ex = results[op]["modelledger_excess_over_fsync_ms"]
        targets.append((f"{OPERATIONS[op]}: <= 0.5 ms above fsync floor", f"+{ex:.2f} ms", ex <= 0.5))
    r = results["log_register"]["ratio"]
    targets.append((f"{OPERATIONS['log_register']}: >= 5x faster", f"{r:.1f}x", r >= 5))
    imp = statistics.median(imp_ml)
    targets.append(("import modelledger < 150 ms", f"{imp:.0f} ms", imp < 150))
    # Reported, not a target: the 10x read target is on the load (row 7).
    info = [
        (
            f"{OPERATIONS['load_predict']}: {lp['ratio']:.1f}x",
            f"scikit-learn's predict alone takes {p_led['median']:.2f} ms (MLflow child "
            f"{p_mlf['median']:.2f} ms), so even a load costing nothing would give at most {bound:.1f}x",
        )
    ]

    # Print
    w = 52
    print()
    print(f"{'operation':<{w}} {'modelledger ms':>20} {'mlflow ms':>20} {'ratio':>8}")
    print(f"{'':<{w}} {'median':>9} {'p95':>10} {'median':>9} {'p95':>10} {'mlf/mdl':>8}")
    print("-" * (w + 60))
    for label, a, b, ratio in rows:
        print(
            f"{label:<{w}} {_fmt(a['median'])} {_fmt(a['p95'])}  "
            f"{_fmt(b['median'])} {_fmt(b['p95'])} {ratio:7.1f}x"
        )
    print("-" * (w + 60))
    print(
        f"fsync floor (4 KB append + fsync, {floor_stats['n']} reps, registry folder): "
        f"median {floor:.3f} ms, p95 {floor_stats['p95']:.3f} ms  [{led['workdir_fs']}]"
    )
    mf_floor = statistics.median(mlf["fsync_ms"])
    print(f"  (same probe in the MLflow folder: median {mf_floor:.3f} ms)")
    print("metadata writes, median minus fsync floor:")
    for op in WRITE_OPS:
        print(
            f"  {OPERATIONS[op]:<40} modelledger +{results[op]['modelledger_excess_over_fsync_ms']:.3f} ms"
            f"   mlflow +{results[op]['mlflow_excess_over_fsync_ms']:.3f} ms"
        )
    print(
        f"import (fresh interpreter, median of {cfg.import_runs}): modelledger {imp:.0f} ms, "
        f"mlflow {statistics.median(imp_mf):.0f} ms"
    )
    if first:
        print(
            "first registration: a script in a committed git checkout, its model in memory, "
            "imports the registry, opens it (MLflow: tracking URI and experiment) and registers "
            "once (MLflow: start_run, log_params, log_metrics, log_model with registered_model_name)"
        )
    phases = led.get("phases")
    if phases:
        total = phases["total"]
        print(f"modelledger log + register, by phase (median of {cfg.phase_reps}, timers in the bench):")
        for name, where in [*PHASES, ("other", "the rest of Registry.register")]:
            ms = phases.get(name, 0.0)
            print(f"  {name:<34} {ms:8.3f} ms {100 * ms / total:5.1f}%   {where}")
        print(f"  {'total':<34} {total:8.3f} ms")
        results["log_register_phases_ms"] = phases
    print(f"durability: modelledger {led['durability']}; mlflow {mlf['durability']}")
    print(
        f"load average (1 min) before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
        f"on {os.cpu_count()} CPUs"
    )
    print()
    print("targets:")
    failed = 0
    for name, value, ok in targets:
        failed += not ok
        print(f"  [{'PASS' if ok else 'FAIL'}] {name:<60} {value}")
    for name, text in info:
        print(f"  [info] {name}; {text}")

    results["fsync_floor_ms"] = round(floor, 4)
    results["fsync_floor_p95_ms"] = round(floor_stats["p95"], 4)
    results["import_ms"] = {"modelledger": round(imp, 2), "mlflow": round(statistics.median(imp_mf), 2)}
    results["targets"] = [{"target": n_, "value": v, "pass": ok} for n_, v, ok in targets]
    results["durability"] = {"modelledger": led["durability"], "mlflow": mlf["durability"]}
    results["machine"] = {
        "bytecode": bytecode,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "filesystem": led["workdir_fs"],
        "mlflow": dist_version("mlflow"),
        "modelledger": dist_version("modelledger"),
        "modelledger_git": git_state(REPO),
        "scikit-learn": dist_version("scikit-learn"),
        "sqlalchemy": dist_version("sqlalchemy"),
    }
    results["run"] = {
        "date": started.isoformat(timespec="seconds"),
        "mode": "quick" if cfg.quick else "full",
        "reps": cfg.reps,
        "warmup": cfg.warmup,
        "log_register_reps": cfg.lr_reps,
        "load_reps": cfg.load_reps,
        "versions": cfg.versions,
        "rounds": cfg.rounds,
        "first_runs": cfg.first_runs,
        "phase_reps": cfg.phase_reps,
        "round_medians_ms": {"modelledger": led["round_medians"], "mlflow": mlf["round_medians"]},
        "modelledger_manifest_json_bytes": led["info"].get("manifest_json_bytes"),
        "wall_s": {"modelledger": round(led["wall_s"], 1), "mlflow": round(mlf["wall_s"], 1)},
        "loadavg_1min": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)},
    }
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 1 if failed and cfg.strict else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    p.add_argument(
        "--reps", type=int, help="timed repetitions for the fast operations (default 100, quick 20)"
    )
    p.add_argument("--warmup", type=int, help="untimed warm-up calls per operation (default 5, quick 2)")
    p.add_argument("--lr-reps", type=int, help="timed log+register repetitions (default 10, quick 3)")
    p.add_argument("--lr-warmup", type=int, help="untimed log+register warm-ups (default 2, quick 1)")
    p.add_argument("--load-reps", type=int, help="timed load+predict repetitions (default 50, quick 10)")
    p.add_argument("--fsync-reps", type=int, default=200, help="fsync probes, before and after (default 200)")
    p.add_argument("--versions", type=int, default=50, help="versions of the searched model (default 50)")
    p.add_argument(
        "--rounds",
        type=int,
        help="run both sides this many times, alternately; per operation keep the round "
        "with the lowest median (default 2, quick 1)",
    )
    p.add_argument("--import-runs", type=int, help="fresh interpreters per import timing (default 5)")
    p.add_argument(
        "--first-runs",
        type=int,
        help="fresh processes per side that register once (default 5, quick 2; 0 skips them)",
    )
    p.add_argument(
        "--phase-reps",
        type=int,
        help="registrations timed phase by phase in the modelledger child (default 10, quick 3; 0 skips)",
    )
    p.add_argument("--dir", help="parent of the temporary folders (default: the system temp dir)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"JSON results (default {DEFAULT_OUT})")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    p.add_argument(
        "--profile", metavar="OP", choices=list(OPERATIONS), help="cProfile one modelledger operation"
    )
    p.add_argument("--child", choices=["modelledger", "mlflow"], help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    cfg = p.parse_args(argv)
    defaults = {
        "reps": (100, 20),
        "warmup": (5, 2),
        "lr_reps": (10, 3),
        "lr_warmup": (2, 1),
        "load_reps": (50, 10),
        "import_runs": (5, 3),
        "rounds": (2, 1),
        "first_runs": (5, 2),
        "phase_reps": (10, 3),
    }
    for key, (full, quick) in defaults.items():
        if getattr(cfg, key) is None:
            setattr(cfg, key, quick if cfg.quick else full)
    return cfg


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    if cfg.child:
        data = run_side(cfg.child, cfg, Path.cwd())
        Path(cfg.child_out).write_text(json.dumps(data))
        return 0
    if cfg.profile:
        with tempfile.TemporaryDirectory(prefix="registry-bench-profile-", dir=cfg.dir) as tmp:
            profile_op(cfg.profile, cfg, Path(tmp))
        return 0
    bytecode = compile_bytecode()  # as an installed package has it: time imports, not the compiler
    return report(cfg, bytecode)


if __name__ == "__main__":
    sys.exit(main())
