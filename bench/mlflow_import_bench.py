"""MLflow import benchmark: how fast ``modelledger import mlflow`` copies a large MLflow registry.

Builds an MLflow registry of ``--versions`` model versions (default 1,000) over ``--models``
registered models in a SQLite file, quickly: ``--distinct`` small scikit-learn models are
logged once each with ``mlflow.sklearn.log_model`` (cloudpickle, explicit pip requirements),
and every version is a run of its own (params, metrics, a git commit tag) plus
``create_model_version`` pointing at one of those logged models. Then it imports the whole
registry into a fresh modelledger registry (embedded SQLite) with ``import_mlflow`` and
reports versions per second overall, for the first ``--window`` versions and for the last
``--window`` (steady state), the size of both registries, and the time of a second import,
which finds everything imported and adds nothing. ``--serve`` then also puts a real ``mlflow
server`` in front of the same database and imports through it into a second new registry
(the metadata over HTTP; the artefacts stay where the in-process logging put them, a local
folder, which the importer reads directly, as MLflow's own client does). Results go to
``bench/results/mlflow_import.json``.

Example:
    .venv-bench/bin/python bench/mlflow_import_bench.py                   # 1,000 versions from the database
    .venv-bench/bin/python bench/mlflow_import_bench.py --serve           # and again through mlflow server
    .venv-bench/bin/python bench/mlflow_import_bench.py --versions 200    # a quick run
"""

from __future__ import annotations

import argparse
import datetime as _dt
import itertools
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Any

from _machine import cpu_model, dist_version, fs_type, git_state

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "mlflow_import.json"


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build_mlflow(folder: Path, *, models: int, versions: int, distinct: int) -> tuple[str, float]:
    """An MLflow registry in ``folder``: its tracking URI and the seconds it took to build."""
    import mlflow
    import numpy as np
    from mlflow.entities import Metric, Param, RunTag
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("bench", artifact_location=(folder / "mlartifacts").as_uri())
    mlflow.set_experiment(experiment_id=experiment)
    rng = np.random.RandomState(0)
    X = rng.rand(200, 4)
    y = (X[:, 0] + X[:, 1] > 1).astype(int)
    sources = []
    for i in range(distinct):
        with mlflow.start_run(run_name=f"fit-{i}"):
            info = mlflow.sklearn.log_model(
                LogisticRegression(C=0.1 * (i + 1)).fit(X, y),
                name="model",
                serialization_format="cloudpickle",
                pip_requirements=["scikit-learn", "cloudpickle"],
            )
            sources.append(info)
    names = [f"bench-model-{m}" for m in range(models)]
    for name in names:
        client.create_registered_model(
            name, description=f"{name}, built by the benchmark", tags={"team": "bench"}
        )
    now = int(time.time() * 1000)
    for n in range(versions):
        name = names[n % models]
        run = client.create_run(experiment, run_name=f"{name}-{n}")
        run_id = run.info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric("auc", 0.7 + (n % 100) / 1000, now, 0)],
            params=[Param("C", str(0.1 * (n % distinct + 1))), Param("n", str(n))],
            tags=[RunTag("mlflow.source.git.commit", f"{n:040x}"), RunTag("mlflow.source.name", "train.py")],
        )
        client.set_terminated(run_id)
        logged = sources[n % distinct]
        client.create_model_version(name, source=logged.model_uri, run_id=run_id, model_id=logged.model_id)
    for name in names:
        client.set_registered_model_alias(name, "champion", "1")
    return uri, time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(folder: Path) -> tuple[subprocess.Popen[bytes], str, float]:
    start = time.perf_counter()
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{folder / 'mlflow.db'}",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = (folder / "server.log").open("ab")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    while True:
        if proc.poll() is not None:
            raise SystemExit((folder / "server.log").read_text()[-2000:])
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return proc, url, time.perf_counter() - start
        except OSError:
            time.sleep(0.2)


def run_import(folder: Path, uri: str, window: int) -> dict[str, Any]:
    """Import everything at ``uri`` into a new registry in ``folder``, then once more."""
    from modelledger import Registry, import_mlflow

    folder.mkdir()
    reg = Registry.open(f"sqlite:///{folder / 'registry.db'}", artifacts=str(folder / "artifacts"))
    reg.init()
    stamps: list[float] = []
    start = time.perf_counter()
    summary = import_mlflow(reg, uri, progress=lambda done, total, what: stamps.append(time.perf_counter()))
    total_s = time.perf_counter() - start
    versions = summary.count("version", "imported")
    # stamps[i] is taken just before version i starts (and one at the end)
    per = [b - a for a, b in itertools.pairwise(stamps)]
    first = per[:window]
    last = per[-window:]
    again_start = time.perf_counter()
    again = import_mlflow(reg, uri)
    again_s = time.perf_counter() - again_start
    reg.close()
    return {
        "counts": summary.counts(),
        "ok": summary.ok,
        "seconds": round(total_s, 2),
        "versions_per_second": round(versions / total_s, 2),
        "first_window_versions_per_second": round(len(first) / sum(first), 2),
        "steady_versions_per_second": round(len(last) / sum(last), 2),
        "window": window,
        "second_import_seconds": round(again_s, 2),
        "second_import_counts": again.counts(),
        "registry_db_bytes": (folder / "registry.db").stat().st_size,
        "registry_artifact_bytes": folder_bytes(folder / "artifacts"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--distinct", type=int, default=20, help="distinct sklearn models logged")
    parser.add_argument("--window", type=int, default=50, help="versions in the first / steady window")
    parser.add_argument(
        "--serve", action="store_true", help="also import through a real mlflow server over the same database"
    )
    parser.add_argument("--dir", default=None, help="where the temporary folders go")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="mlflow-import-bench-") as tmp:
        folder = Path(tmp)
        (folder / "mlflow").mkdir()
        uri, build_s = build_mlflow(
            folder / "mlflow", models=args.models, versions=args.versions, distinct=args.distinct
        )
        print(f"built an MLflow registry of {args.versions} versions in {build_s:.1f} s", flush=True)
        results = {"database": run_import(folder / "from-database", uri, args.window)}
        print(f"from the database: {json.dumps(results['database'])}", flush=True)
        server_s = None
        if args.serve:
            server, url, server_s = start_server(folder / "mlflow")
            print(f"mlflow server ready in {server_s:.1f} s at {url}", flush=True)
            try:
                results["server"] = run_import(folder / "from-server", url, args.window)
            finally:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=60)
        mlflow_bytes = folder_bytes(folder / "mlflow")
    report = {
        "when": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "fs": fs_type(Path(args.dir or tempfile.gettempdir())),
            "load_average_at_end": os.getloadavg(),
        },
        "packages": {p: dist_version(p) for p in ("modelledger", "mlflow", "scikit-learn", "sqlalchemy")},
        "git": git_state(HERE.parent),
        "versions": args.versions,
        "models": args.models,
        "distinct_sklearn_models": args.distinct,
        "build_seconds": round(build_s, 1),
        "server_start_seconds": round(server_s, 1) if server_s is not None else None,
        "mlflow_store_bytes": mlflow_bytes,
        "imports": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in ("machine", "packages", "git")}, indent=2))


if __name__ == "__main__":
    main()
