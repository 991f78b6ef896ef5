"""Server benchmark: ``modelledger server`` against ``mlflow server``, over HTTP, in one run.

For each metadata backend (SQLite, then PostgreSQL), both servers run on loopback over the
same kind of database with their artefacts in a local folder, hold the same content
(N models x M versions of a small scikit-learn pipeline, two aliases per model), and are
measured with the same HTTP client (httpx, one connection per client thread):

- get a version by alias, and list (search) the versions of one model: p50/p99 latency,
  throughput (req/s) at concurrency 1 and 16, and server CPU per request;
- time from process start to a healthy probe (``/healthz``; MLflow ``/health``), then the
  first call after start (cold) against the steady-state median;
- resident memory of the serving process and of the whole process tree, after warm-up;
- registering a version and downloading + loading the model over HTTP. modelledger's side
  of these runs only when the server's OpenAPI document lists the routes they need;
  otherwise it says "not measured: route not present".

Results go to ``bench/results/server.json``; a table with ratios is printed.

Example:
    make setup-bench
    .venv-bench/bin/python bench/server_bench.py            # full run, about 4 minutes on 2 cores
    .venv-bench/bin/python bench/server_bench.py --quick    # smaller registry, shorter runs
    .venv-bench/bin/python bench/server_bench.py --backends sqlite
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import itertools
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _machine import compile_bytecode, cpu_model, dist_version, fs_type, git_state

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUT = HERE / "results" / "server.json"
DEFAULT_STARTUP_OUT = HERE / "results" / "server_startup.json"
BIN = Path(sys.executable).parent  # the venv's console scripts: modelledger, mlflow

PG_ADMIN = os.environ.get("MODELLEDGER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ACTOR = "bench@example.com"
API = "/api/v1"

# MLflow without telemetry and without its job runner (a GenAI feature that starts a runner
# and seven huey consumers next to the server; none of them serves the model registry).
MLFLOW_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "_MLFLOW_TELEMETRY_PRE_WARM_DATABRICKS_SDK": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "GIT_PYTHON_REFRESH": "quiet",
    "NO_PROXY": "*",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}

# The routes the two write-side measurements of modelledger need (OpenAPI path templates).
REGISTER_ROUTE = ("post", f"{API}/models/{{name}}/versions")
FILES_ROUTE_PREFIX = f"{API}/models/{{name}}/versions/{{ref}}/files/"

READ_OPS = ("get_by_alias", "search_versions")
# The health probe does no registry work: it shows what the HTTP stack and this client cost alone.
LOAD_OPS = (*READ_OPS, "health")
OP_LABELS = {
    "get_by_alias": "get version by alias",
    "search_versions": "search versions of a model",
    "health": "health probe (reference)",
}


# --------------------------------------------------------------------------- small helpers


def pct(samples: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``samples``, nearest rank."""
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def training_data() -> tuple[Any, Any]:
    """The model of registry_bench.py: StandardScaler + LogisticRegression on iris (4 float columns)."""
    import warnings

    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    X, y = load_iris(return_X_y=True, as_frame=True)
    X.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)).fit(X, y), X


# --------------------------------------------------------------------------- processes and memory


def _children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry))
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _status_kb(pid: int, key: str) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _pss_kb(pid: int) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def _cmd(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            parts = fh.read().split(b"\0")
    except OSError:
        return "?"
    words = [Path(p.decode()).name if i < 2 else p.decode() for i, p in enumerate(parts[:4]) if p]
    return " ".join(words)[:80]


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """User + system CPU time of each of ``pids``, in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` (the server tree), in seconds."""
    return sum(cpu_by_pid(pids).values())


def busy_cpu_seconds() -> float:
    """CPU time the whole machine spent busy (all cores, /proc/stat), in seconds."""
    with open("/proc/stat") as fh:
        cols = [int(x) for x in fh.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = cols[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def listening_pid(pids: list[int], port: int) -> int | None:
    """The process among ``pids`` holding the listening socket on ``port`` (the serving worker)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in list(fh)[1:]:
                cols = line.split()
                if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "0A":
                    inodes.add(cols[9])
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        return pid
    return None


def memory(root: int, port: int) -> dict[str, Any]:
    """RSS (and PSS) of the serving process and of the whole tree under ``root``, in MiB."""
    pids = process_tree(root)
    procs = [
        {
            "pid": p,
            "cmd": _cmd(p),
            "rss_mb": round(_status_kb(p, "VmRSS") / 1024, 1),
            "pss_mb": round(_pss_kb(p) / 1024, 1),
        }
        for p in pids
    ]
    serving = listening_pid(pids, port)
    serving_proc = next((p for p in procs if p["pid"] == serving), None)
    return {
        "serving_rss_mb": serving_proc["rss_mb"] if serving_proc else None,
        "serving_pss_mb": serving_proc["pss_mb"] if serving_proc else None,
        "tree_rss_mb": round(sum(p["rss_mb"] for p in procs), 1),
        "tree_pss_mb": round(sum(p["pss_mb"] for p in procs), 1),
        "processes": procs,
    }


@dataclass
class Server:
    """A server process started in its own session, so that stopping it stops all it started."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    port: int
    health: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    healthy_s: float | None = None
    healthy_cpu_s: float | None = None
    extra_cleanup: list[Path] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> float:
        """Start the process; return the seconds from ``Popen`` to the first 200 of the health probe
        (and keep the CPU time the server's process tree had spent by then in ``healthy_cpu_s``).

        The probe goes through one client made before the clock starts: ``httpx.get`` makes a
        client, and with it a TLS context, per call (about 19 ms of CPU), so polling every 5 ms
        with it kept most of a core busy in this process while the server, on the same 2 cores,
        was trying to start."""
        logfile = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed in stop()
        probe = httpx.Client(timeout=1.0)
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        logfile.close()
        url = self.base + self.health
        with probe:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.argv[0]} exited with {self.proc.returncode}; see {self.log_path}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if probe.get(url).status_code == 200:
                        break
                if time.perf_counter() - self.started_at > timeout:
                    raise RuntimeError(f"{url} not healthy after {timeout} s; see {self.log_path}")
                time.sleep(0.005)
            self.healthy_s = time.perf_counter() - self.started_at
            self.healthy_cpu_s = cpu_seconds(self.pids())
        return self.healthy_s

    def pids(self) -> list[int]:
        assert self.proc is not None
        return process_tree(self.proc.pid)

    def stop(self) -> None:
        if self.proc is None:
            return
        pids = self.pids()
        # MLflow's job runner keeps a temporary folder in /dev/shm: note it before the processes go
        for pid in pids:
            with contextlib.suppress(OSError), open(f"/proc/{pid}/environ", "rb") as fh:
                for item in fh.read().split(b"\0"):
                    if item.startswith(b"_MLFLOW_HUEY_STORAGE_PATH="):
                        self.extra_cleanup.append(Path(item.split(b"=", 1)[1].decode()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)
        deadline = time.monotonic() + 10
        for pid in pids:  # a child that left the session: stop it by its own id
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                time.sleep(0.05)
        for folder in set(self.extra_cleanup):
            shutil.rmtree(folder, ignore_errors=True)
        self.proc = None


# --------------------------------------------------------------------------- the load generator


@dataclass
class Request:
    method: str
    url: str
    params: dict[str, str] | None = None
    check: Callable[[Any], bool] | None = None  # applied to the JSON body of untimed checks


def run_load(
    make: Callable[[int], Request],
    headers: dict[str, str],
    *,
    concurrency: int,
    count: int,
    open_url: str,
    max_seconds: float,
    server_pids: list[int],
    db_pids: Callable[[], list[int]] | None = None,
) -> dict[str, Any]:
    """``count`` requests (or as many as fit in ``max_seconds``) from ``concurrency`` threads, each
    with its own keep-alive connection (opened on ``open_url`` before the clock starts). Latency is per request; throughput is completed requests
    over the wall time of the run."""
    counter = itertools.count()
    lat: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[str] = []
    deadline = [0.0]
    before: list[Any] = []
    db_before = db_pids() if db_pids else []

    def go() -> None:  # the clock starts once every thread holds its connection
        before.extend(
            [
                cpu_seconds(server_pids),
                resource.getrusage(resource.RUSAGE_SELF),
                busy_cpu_seconds(),
                cpu_by_pid(db_before),
            ]
        )
        deadline[0] = time.perf_counter() + max_seconds

    start = threading.Barrier(concurrency + 1, action=go)

    def worker(slot: int) -> None:
        with httpx.Client(headers=headers, timeout=60.0) as client:
            mine = lat[slot]
            client.get(open_url)  # connect before the clock starts
            start.wait()
            while True:
                i = next(counter)
                if i >= count or time.perf_counter() > deadline[0]:
                    return
                req = make(i)
                t0 = time.perf_counter()
                resp = client.request(req.method, req.url, params=req.params)
                resp.read()
                mine.append((time.perf_counter() - t0) * 1000.0)
                if resp.status_code != 200:
                    errors.append(f"{resp.status_code} {req.url}: {resp.text[:200]}")
                    return

    threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    cpu1, ru1, busy1 = cpu_seconds(server_pids), resource.getrusage(resource.RUSAGE_SELF), busy_cpu_seconds()
    cpu0, ru0, busy0, db0 = before
    db1 = cpu_by_pid(db_pids()) if db_pids else {}
    # A backend that started during the run spent all its CPU in it; one that ended took its CPU
    # time along (a pool that closes overflow connections): then the figure is left out.
    db_cpu = sum(t - db0.get(pid, 0.0) for pid, t in db1.items())
    db_churned = bool(set(db0) - set(db1))
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, first: {errors[0]}")
    samples = [x for per in lat for x in per]
    n = len(samples)
    client_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {
        "concurrency": concurrency,
        "n": n,
        "wall_s": round(wall, 3),
        "p50_ms": round(pct(samples, 0.50), 3),
        "p99_ms": round(pct(samples, 0.99), 3),
        "max_ms": round(max(samples), 3),
        "req_per_s": round(n / wall, 1),
        "server_cpu_ms_per_req": round((cpu1 - cpu0) * 1000 / n, 3),
        "client_cpu_ms_per_req": round(client_cpu * 1000 / n, 3),
        # PostgreSQL's backends serving this server's connections (None on SQLite: in-process)
        "db_cpu_ms_per_req": round(db_cpu * 1000 / n, 3) if db_pids and not db_churned else None,
        "db_connections_closed_during_run": len(set(db0) - set(db1)) if db_pids else None,
        # what the rest of the machine (other jobs) used meanwhile, in cores (2 = the whole machine)
        "other_cores_busy": round(max(0.0, (busy1 - busy0) - (cpu1 - cpu0) - client_cpu - db_cpu) / wall, 2),
    }


def timed_request(client: httpx.Client, req: Request) -> tuple[float, Any]:
    t0 = time.perf_counter()
    resp = client.request(req.method, req.url, params=req.params)
    resp.read()
    ms = (time.perf_counter() - t0) * 1000.0
    if resp.status_code != 200:
        raise RuntimeError(f"{resp.status_code} {req.url}: {resp.text[:300]}")
    return ms, resp.json()


def attempt(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()``, or what went wrong: a route that exists but fails is reported, never filled in."""
    try:
        return fn()
    except Exception as exc:
        return {"measured": False, "why": f"failed: {type(exc).__name__}: {exc}"[:500]}


def timed(fn: Callable[[int], Any], reps: int, warmup: int) -> dict[str, Any]:
    """Sequential calls of ``fn(i)``; p50/p99 of the last ``reps`` (ms)."""
    out = []
    for i in range(warmup + reps):
        t0 = time.perf_counter()
        fn(i)
        if i >= warmup:
            out.append((time.perf_counter() - t0) * 1000.0)
    return {"n": reps, "p50_ms": round(pct(out, 0.5), 3), "p99_ms": round(pct(out, 0.99), 3)}


# --------------------------------------------------------------------------- the two sides


class Side:
    """One server under test, on one backend."""

    name = ""

    def __init__(self, cfg: argparse.Namespace, backend: str, workdir: Path, db_url: str) -> None:
        self.cfg, self.backend, self.workdir, self.db_url = cfg, backend, workdir, db_url
        self.models = [f"model-{i:03d}" for i in range(cfg.models)]
        self.champion = max(1, cfg.versions - 1)  # not the newest, so an alias is not "latest"
        self.headers: dict[str, str] = {}
        self.server: Server | None = None

    def model_name(self, i: int) -> str:
        return self.models[i % len(self.models)]

    # provided by each side
    def make_server(self, port: int) -> Server: ...
    def populate(self) -> None: ...
    def request(self, op: str, i: int) -> Request: ...
    def check(self, op: str, body: Any) -> None: ...
    def register(self) -> dict[str, Any]: ...
    def download_load(self) -> dict[str, Any]: ...

    def db_backend_pids(self) -> list[int]:
        """The PostgreSQL backends connected to this side's database (the bench's own look-up excluded)."""
        import psycopg

        dbname = self.db_url.rsplit("/", 1)[1]
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,)
            ).fetchall()
        return [int(r[0]) for r in rows]

    def start(self) -> float:
        self.server = self.make_server(free_port())
        return self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


GATEWAY = "gateway@bench.example"


class LedgerSide(Side):
    name = "modelledger"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.art = self.workdir / "artifacts"
        self.env = {
            **os.environ,
            "MODELLEDGER_IDENTITIES": str(self.workdir / "identities"),  # never the user's keys
            "MODELLEDGER_USER": ACTOR,
        }

    def make_server(self, port: int) -> Server:
        argv = [str(BIN / "modelledger"), "server", "--registry", self.db_url, "--artifacts", str(self.art)]
        return Server(
            [*argv, "--port", str(port)],
            self.env,
            self.workdir,
            port,
            "/healthz",
            self.workdir / "server.log",
        )

    def _open(self) -> Any:
        from modelledger import Registry

        os.environ.update({k: self.env[k] for k in ("MODELLEDGER_IDENTITIES", "MODELLEDGER_USER")})
        return Registry.open(self.db_url, artifacts=str(self.art), actor=ACTOR)

    def populate(self) -> None:
        """Through the Python API, before the server starts (the server reads the same database)."""
        model, X = training_data()
        reg = self._open()
        reg.init()  # the schema, and ACTOR as the root admin
        # the server writes on callers' behalf with a key of its own, enrolled as a gateway
        from modelledger import create_identity

        _path, _kid, pem = create_identity(GATEWAY, self.workdir / "identities" / f"{GATEWAY}.key")
        reg.enrol(GATEWAY, pem, roles=["gateway"])
        self.env["MODELLEDGER_IDENTITY"] = GATEWAY
        for name in self.models:
            for v in range(self.cfg.versions):
                reg.register(
                    name, model, sample_input=X[:5], params={"C": 1.0, "v": v}, metrics={"accuracy": 0.97}
                )
            reg.set_alias(name, "champion", self.champion)
            reg.set_alias(name, "challenger", self.cfg.versions)
        token, _record = reg.create_token(ACTOR)
        reg.close()
        self.headers = {"Authorization": f"Bearer {token}"}

    def request(self, op: str, i: int) -> Request:
        name = self.model_name(i)
        if op == "health":
            return Request("GET", f"{self.server.base}/healthz")
        if op == "get_by_alias":
            return Request("GET", f"{self.server.base}{API}/models/{name}/versions/champion")
        return Request("GET", f"{self.server.base}{API}/models/{name}/versions", {"limit": "1000"})

    def check(self, op: str, body: Any) -> None:
        if op == "get_by_alias":
            assert body["version"] == self.champion, body
        else:
            assert len(body["items"]) == self.cfg.versions, len(body["items"])

    # ----- the write side: run only when the server documents the routes

    def routes(self) -> set[tuple[str, str]]:
        doc = httpx.get(f"{self.server.base}{API}/openapi.json", timeout=30).json()
        return {(method, path) for path, item in doc.get("paths", {}).items() for method in item}

    def _remote(self) -> Any:
        """The remote client: ``Registry.open("http://...")`` with the bench's token."""
        import inspect

        from modelledger import Registry

        token = self.headers["Authorization"].split(" ", 1)[1]
        if "token" in inspect.signature(Registry.open).parameters:
            return Registry.open(self.server.base, token=token)
        os.environ["MODELLEDGER_TOKEN"] = token
        return Registry.open(self.server.base)

    def register(self) -> dict[str, Any]:
        """Through the remote client, as a user would: ``create_version`` of an uploaded folder
        (metadata only; the upload is untimed) and ``register`` (upload and version, end to end)."""
        if REGISTER_ROUTE not in self.routes():
            why = {
                "measured": False,
                "why": "not measured: route not present (POST /api/v1/models/{name}/versions)",
            }
            return {"metadata": why, "end_to_end": why}
        model, X = training_data()
        reps = self.cfg.write_reps

        def meta() -> dict[str, Any]:
            return {
                "measured": False,
                "why": "not measured: a registration over HTTP always carries the model's files "
                "(there is no metadata-only path); compare the end-to-end figures",
            }

        def end_to_end() -> dict[str, Any]:
            remote = self._remote()
            stats = timed(
                lambda i: remote.register(
                    "registered-e2e", model, sample_input=X[:5], params={"i": i}, metrics={"accuracy": 0.97}
                ),
                max(5, reps // 5),
                1,
            )
            return {"measured": True, "what": "remote client Registry.register(...) over HTTP", **stats}

        return {"metadata": attempt(meta), "end_to_end": attempt(end_to_end)}

    def download_load(self) -> dict[str, Any]:
        if not any(path.startswith(FILES_ROUTE_PREFIX) and method == "get" for method, path in self.routes()):
            return {
                "measured": False,
                "why": "not measured: route not present (GET /api/v1/models/{name}/versions/{ref}/files/{path})",
            }
        _model, X = training_data()
        name = self.models[0]

        def run() -> dict[str, Any]:
            remote = self._remote()
            uri = f"models:/{name}@champion"
            assert len(remote.load(uri).predict(X)) == len(X)

            def fresh(_i: int) -> Any:
                # an empty cache each time: the download is part of what is timed, as for MLflow
                os.environ["MODELLEDGER_CACHE"] = tempfile.mkdtemp(dir=self.workdir)
                return remote.load(uri)

            first = timed(fresh, self.cfg.load_reps, 2)
            os.environ["MODELLEDGER_CACHE"] = str(self.workdir / "cache")
            remote.load(uri)
            cached = timed(lambda _i: remote.load(uri), self.cfg.load_reps, 2)
            return {
                "measured": True,
                "what": "remote client Registry.load('models:/<name>@champion') over HTTP, each "
                "into an empty cache (download, digest check, unpickle)",
                **first,
                "cached": {
                    "what": "the same load again: the files come from the local cache, checked again",
                    **cached,
                },
            }

        return attempt(run)


class MlflowSide(Side):
    name = "mlflow"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.env = {**os.environ, **MLFLOW_ENV}
        self.defaults = False  # True: MLflow's own defaults (4 workers, job runner on)

    def make_server(self, port: int) -> Server:
        argv = [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            self.db_url,
            "--artifacts-destination",  # artefacts in a local folder, served through the server
            str(self.workdir / "mlartifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        env = dict(self.env)
        if self.defaults:
            env.pop("MLFLOW_SERVER_ENABLE_JOB_EXECUTION")
        else:
            argv += ["--workers", str(self.cfg.mlflow_workers)]
        return Server(argv, env, self.workdir, port, "/health", self.workdir / "server.log")

    def _client(self) -> Any:
        os.environ.update(MLFLOW_ENV)
        import logging

        import mlflow

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        from mlflow import MlflowClient

        mlflow.set_tracking_uri(self.server.base)
        mlflow.set_registry_uri(self.server.base)
        return mlflow, MlflowClient(self.server.base, self.server.base)

    def _log_model(self, mlflow: Any, model: Any, X: Any, **kw: Any) -> Any:
        from sklearn import __version__ as skl

        return mlflow.sklearn.log_model(
            model,
            name="model",
            input_example=X[:5],
            # skips MLflow's requirement-inference subprocess (see registry_bench.py, row 3b)
            pip_requirements=[f"scikit-learn=={skl}", "cloudpickle"],
            **kw,
        )

    def populate(self) -> None:
        """Over HTTP through the running server: one logged model per registered model (uploaded
        through the artefact proxy), then M versions of it, then the aliases."""
        import mlflow.sklearn  # registers the flavour on the mlflow module

        model, X = training_data()
        mlflow, client = self._client()
        self.experiment = client.create_experiment("bench")  # artifact location mlflow-artifacts:/
        mlflow.set_experiment(experiment_id=self.experiment)
        url = f"{self.server.base}/api/2.0/mlflow/model-versions/create"
        with httpx.Client(timeout=60) as http:
            for name in self.models:
                with mlflow.start_run() as run:
                    mlflow.log_params({"C": 1.0})
                    mlflow.log_metrics({"accuracy": 0.97})
                    info = self._log_model(mlflow, model, X)
                source = mlflow.get_logged_model(info.model_id).artifact_location
                client.create_registered_model(name)
                # the REST call MlflowClient.create_model_version makes, without its wait for the
                # version to be READY (a SQL store creates it READY)
                body = {"name": name, "source": source, "run_id": run.info.run_id, "model_id": info.model_id}
                for _ in range(self.cfg.versions):
                    r = http.post(url, json=body)
                    assert r.status_code == 200, r.text
                client.set_registered_model_alias(name, "champion", str(self.champion))
                client.set_registered_model_alias(name, "challenger", str(self.cfg.versions))
        self.source, self.run_id, self.model_id = source, run.info.run_id, info.model_id

    def request(self, op: str, i: int) -> Request:
        name = self.model_name(i)
        base = f"{self.server.base}/api/2.0/mlflow"
        if op == "health":
            return Request("GET", f"{self.server.base}/health")
        if op == "get_by_alias":
            return Request("GET", f"{base}/registered-models/alias", {"name": name, "alias": "champion"})
        return Request("GET", f"{base}/model-versions/search", {"filter": f"name='{name}'"})

    def check(self, op: str, body: Any) -> None:
        if op == "get_by_alias":
            assert int(body["model_version"]["version"]) == self.champion, body
        else:
            assert len(body["model_versions"]) == self.cfg.versions, len(body["model_versions"])

    def register(self) -> dict[str, Any]:
        """Metadata only: a new version of an existing logged model (``model-versions/create``), and
        end to end: log a model through the artefact proxy and register it."""
        import mlflow.sklearn

        url = f"{self.server.base}/api/2.0/mlflow/model-versions/create"
        body = {"name": "registered", "source": self.source, "run_id": self.run_id, "model_id": self.model_id}
        model, X = training_data()
        mlflow, client = self._client()
        client.create_registered_model("registered")
        with httpx.Client(timeout=60) as http:

            def create(_i: int) -> None:
                r = http.post(url, json=body)
                assert r.status_code == 200, r.text

            meta = timed(create, self.cfg.write_reps, 3)

        def log_register(_i: int) -> None:
            with mlflow.start_run():
                self._log_model(mlflow, model, X, registered_model_name="logged")

        mlflow.set_experiment(experiment_id=self.experiment)
        end_to_end = timed(log_register, max(5, self.cfg.write_reps // 5), 1)
        return {
            "metadata": {"measured": True, "what": "POST model-versions/create (existing source)", **meta},
            "end_to_end": {
                "measured": True,
                "what": "mlflow.sklearn.log_model(registered_model_name=...) over HTTP, pip_requirements given",
                **end_to_end,
            },
        }

    def download_load(self) -> dict[str, Any]:
        import mlflow.sklearn

        _model, X = training_data()
        self._client()
        name = self.models[0]
        assert len(mlflow.sklearn.load_model(f"models:/{name}@champion").predict(X)) == len(X)
        stats = timed(lambda _i: mlflow.sklearn.load_model(f"models:/{name}@champion"), self.cfg.load_reps, 2)
        return {
            "measured": True,
            "what": "mlflow.sklearn.load_model('models:/<name>@champion'), artefacts through the server",
            **stats,
        }


# --------------------------------------------------------------------------- one side, one backend


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def measure_starts(sides: tuple[Side, ...], out: dict[str, dict[str, Any]]) -> None:
    """Start each side ``cfg.starts`` times, alternating: time to healthy (wall, and the server
    tree's CPU by then), then the first calls (cold). The last start of each side stays up."""
    cfg = sides[0].cfg
    starts: dict[str, list[dict[str, Any]]] = {side.name: [] for side in sides}
    for k in range(cfg.starts):
        for side in sides:
            healthy = side.start()
            assert side.server is not None and side.server.healthy_cpu_s is not None
            cold = {}
            with httpx.Client(headers=side.headers, timeout=60) as client:
                for op in READ_OPS:
                    cold[op], body = timed_request(client, side.request(op, k))
                    side.check(op, body)
            starts[side.name].append(
                {
                    "healthy_s": round(healthy, 3),
                    "healthy_cpu_s": round(side.server.healthy_cpu_s, 3),
                    **{f"first_{op}_ms": round(ms, 2) for op, ms in cold.items()},
                }
            )
            if k < cfg.starts - 1:
                side.stop()
    for side in sides:
        res = out[side.name]
        res["starts"] = starts[side.name]
        res["healthy_s_median"] = _median([s["healthy_s"] for s in res["starts"]])
        res["healthy_cpu_s_median"] = _median([s["healthy_cpu_s"] for s in res["starts"]])
        for op in READ_OPS:
            res[f"first_{op}_ms_median"] = _median([s[f"first_{op}_ms"] for s in res["starts"]])
        log(
            f"  {side.name}: healthy after {[s['healthy_s'] for s in res['starts']]} s "
            f"(server CPU by then {[s['healthy_cpu_s'] for s in res['starts']]} s)"
        )


def measure_startup_only(sides: tuple[Side, ...]) -> dict[str, dict[str, Any]]:
    """``--startup-only``: fill each side, then only the starts of :func:`measure_starts`."""
    out: dict[str, dict[str, Any]] = {side.name: {"loadavg_before": loadavg()} for side in sides}
    for side in sides:
        if isinstance(side, MlflowSide):
            side.start()
            side.populate()
            side.stop()
        else:
            side.populate()
    try:
        measure_starts(sides, out)
    finally:
        for side in sides:
            side.stop()
    for side in sides:
        out[side.name]["loadavg_after"] = loadavg()
    return out


def print_startup_report(results: dict[str, Any]) -> None:
    print(
        f"\n{'backend':12} {'server':12} {'healthy s (median)':>19} {'CPU s (median)':>15}  each start: wall / CPU s"
    )
    for backend, res in results["backends"].items():
        for who, r in res.items():
            each = ", ".join(f"{s['healthy_s']:.3f}/{s['healthy_cpu_s']:.3f}" for s in r["starts"])
            print(
                f"{backend:12} {who:12} {r['healthy_s_median']:>19.3f} {r['healthy_cpu_s_median']:>15.3f}  {each}"
            )
            print(f"{'':25} load average before {r['loadavg_before']}, after {r['loadavg_after']}")


def measure_backend(sides: tuple[Side, ...]) -> dict[str, dict[str, Any]]:
    """Both sides on one backend. Everything after population alternates between the sides
    (start, start, ...; then each load run on one side right after the same run on the other),
    so that both meet the same machine when other jobs come and go. A server waiting for its
    turn is idle and costs nothing."""
    cfg = sides[0].cfg
    out: dict[str, dict[str, Any]] = {side.name: {"loadavg_before": loadavg()} for side in sides}
    for side in sides:
        t0 = time.perf_counter()
        if isinstance(side, MlflowSide):
            side.start()  # populated over HTTP, then restarted: every timed start sees the full registry
            side.populate()
            side.stop()
        else:
            side.populate()
        out[side.name]["populate_s"] = round(time.perf_counter() - t0, 1)
        log(f"  {side.name}: populated in {out[side.name]['populate_s']} s")

    measure_starts(sides, out)  # the last servers stay up for the rest

    def load(side: Side, op: str, concurrency: int, count: int, seconds: float) -> dict[str, Any]:
        assert side.server is not None
        return run_load(
            lambda i: side.request(op, i),
            side.headers,
            concurrency=concurrency,
            count=count,
            open_url=side.server.base + side.server.health,
            max_seconds=seconds,
            server_pids=side.server.pids(),
            db_pids=side.db_backend_pids if side.backend == "postgresql" else None,
        )

    for side in sides:
        assert side.server is not None and side.server.proc is not None
        # every model's answers checked once, untimed; then a warm-up
        with httpx.Client(headers=side.headers, timeout=60) as client:
            for op in READ_OPS:
                for i in range(len(side.models)):
                    side.check(op, timed_request(client, side.request(op, i))[1])
        for op in LOAD_OPS:
            load(side, op, 4, cfg.warmup, 30.0)
        out[side.name]["memory_after_warmup"] = memory(side.server.proc.pid, side.server.port)
        out[side.name]["reads"] = {op: {} for op in LOAD_OPS}

    for op in LOAD_OPS:
        for conc, count, secs in (
            (1, cfg.c1_requests, cfg.c1_seconds),
            (16, cfg.c16_requests, cfg.c16_seconds),
        ):
            for side in sides:
                r = out[side.name]["reads"][op][f"c{conc}"] = load(side, op, conc, count, secs)
                log(
                    f"  {side.name}: {op} c{conc}: p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                    f"{r['req_per_s']} req/s (n={r['n']}), other jobs {r['other_cores_busy']} cores"
                )

    for side in sides:
        assert side.server is not None and side.server.proc is not None
        out[side.name]["memory_after_reads"] = memory(side.server.proc.pid, side.server.port)
    for side in sides:
        out[side.name]["register"] = side.register()
        out[side.name]["download_load"] = side.download_load()
        out[side.name]["loadavg_after"] = loadavg()
        side.stop()
    return out


def measure_mlflow_defaults(side: MlflowSide) -> dict[str, Any]:
    """MLflow as ``mlflow server`` starts without --workers: 4 uvicorn workers and the job runner.
    Start-up, memory, and get-by-alias at concurrency 16 (where extra workers can help)."""
    side.defaults = True
    out: dict[str, Any] = {"loadavg_before": loadavg()}
    out["healthy_s"] = round(side.start(), 3)
    assert side.server is not None
    time.sleep(2.0)  # the job runner starts its consumers after the server is healthy
    run_load(
        lambda i: side.request("get_by_alias", i),
        {},
        concurrency=16,
        count=side.cfg.warmup * 2,
        open_url=side.server.base + "/health",
        max_seconds=30,
        server_pids=side.server.pids(),
    )
    out["get_by_alias_c16"] = run_load(
        lambda i: side.request("get_by_alias", i),
        {},
        concurrency=16,
        count=side.cfg.c16_requests,
        open_url=side.server.base + "/health",
        max_seconds=side.cfg.c16_seconds,
        server_pids=side.server.pids(),
    )
    out["memory_after_warmup"] = memory(side.server.proc.pid, side.server.port)
    out["loadavg_after"] = loadavg()
    side.stop()
    side.defaults = False
    return out


# --------------------------------------------------------------------------- databases


@contextlib.contextmanager
def databases(backend: str, workdir: Path) -> Iterator[dict[str, str]]:
    """A fresh, empty database for each side; PostgreSQL databases are dropped at the end."""
    if backend == "sqlite":
        yield {
            "modelledger": f"sqlite:///{workdir / 'modelledger' / 'registry.db'}",
            "mlflow": f"sqlite:///{workdir / 'mlflow' / 'mlflow.db'}",
        }
        return
    import psycopg

    tag = uuid.uuid4().hex[:10]
    names = {"modelledger": f"srvbench_{tag}_ml", "mlflow": f"srvbench_{tag}_mlflow"}
    base = PG_ADMIN.rsplit("/", 1)[0]
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        for db in names.values():
            conn.execute(f'CREATE DATABASE "{db}"')
    try:
        yield {
            "modelledger": f"{base}/{names['modelledger']}",
            "mlflow": f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{names['mlflow']}",
        }
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            for db in names.values():
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def pg_version() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else None
    except Exception:
        return None


# --------------------------------------------------------------------------- report


def _ratio(mdl: float | None, mlf: float | None, higher_better: bool) -> float | None:
    if not mdl or not mlf:
        return None
    return round(mdl / mlf if higher_better else mlf / mdl, 2)


def rows(res: dict[str, Any]) -> list[tuple[str, Any, Any, float | None, bool]]:
    """(label, modelledger, mlflow, advantage, higher_is_better) for one backend; advantage is how
    many times better modelledger does (>1: modelledger better)."""
    led, mlf = res["modelledger"], res["mlflow"]
    out: list[tuple[str, Any, Any, float | None, bool]] = []
    for op in LOAD_OPS:
        for c in ("c1", "c16"):
            a, b = led["reads"][op][c], mlf["reads"][op][c]
            for key, unit, hb in (
                ("p50_ms", "p50 ms", False),
                ("p99_ms", "p99 ms", False),
                ("req_per_s", "req/s", True),
                ("server_cpu_ms_per_req", "server CPU ms/req", False),
                ("db_cpu_ms_per_req", "PostgreSQL CPU ms/req", False),
            ):
                if key == "db_cpu_ms_per_req" and not a[key] and not b[key]:
                    continue  # SQLite (in-process), a probe that reads nothing, or a pool that churned
                out.append(
                    (
                        f"{OP_LABELS[op]}, conc. {c[1:]}: {unit}",
                        a[key],
                        b[key],
                        _ratio(a[key], b[key], hb),
                        hb,
                    )
                )
    out.append(
        (
            "start to healthy, s (median)",
            led["healthy_s_median"],
            mlf["healthy_s_median"],
            _ratio(led["healthy_s_median"], mlf["healthy_s_median"], False),
            False,
        )
    )
    a, b = led.get("healthy_cpu_s_median"), mlf.get("healthy_cpu_s_median")
    out.append(("server CPU spent by healthy, s (median)", a, b, _ratio(a, b, False), False))
    for op in READ_OPS:
        a, b = led[f"first_{op}_ms_median"], mlf[f"first_{op}_ms_median"]
        out.append((f"first call after start: {OP_LABELS[op]}, ms", a, b, _ratio(a, b, False), False))
    for key, label in (
        ("serving_rss_mb", "RSS of the serving process, MiB"),
        ("tree_rss_mb", "RSS of the process tree, MiB"),
    ):
        a, b = led["memory_after_reads"][key], mlf["memory_after_reads"][key]
        out.append((label, a, b, _ratio(a, b, False), False))
    for label, a, b in (
        (
            "register a version, metadata only, p50 ms",
            led["register"]["metadata"],
            mlf["register"]["metadata"],
        ),
        (
            "register a model end to end (upload + version), p50 ms",
            led["register"]["end_to_end"],
            mlf["register"]["end_to_end"],
        ),
        ("download + load by alias, p50 ms", led["download_load"], mlf["download_load"]),
    ):
        a_v = a["p50_ms"] if a.get("measured") else a.get("why", "not measured")
        b_v = b["p50_ms"] if b.get("measured") else b.get("why", "not measured")
        out.append((label, a_v, b_v, _ratio(a.get("p50_ms"), b.get("p50_ms"), False), False))
    return out


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    led, mlf = res["modelledger"], res["mlflow"]
    out = []
    for op in READ_OPS:
        tp = _ratio(led["reads"][op]["c16"]["req_per_s"], mlf["reads"][op]["c16"]["req_per_s"], True)
        out.append(
            {
                "target": f"{OP_LABELS[op]}: throughput at concurrency 16 >= 5x MLflow",
                "value": tp,
                "pass": tp is not None and tp >= 5,
            }
        )
        for c in ("c1", "c16"):
            r = _ratio(led["reads"][op][c]["p99_ms"], mlf["reads"][op][c]["p99_ms"], False)
            out.append(
                {
                    "target": f"{OP_LABELS[op]}: p99 at concurrency {c[1:]} >= 5x better than MLflow",
                    "value": r,
                    "pass": r is not None and r >= 5,
                }
            )
    rss = led["memory_after_reads"]["serving_rss_mb"]
    out.append(
        {
            "target": "RSS < 150 MiB per worker (modelledger runs one process)",
            "value": rss,
            "pass": rss is not None and rss < 150,
        }
    )
    h = led["healthy_s_median"]
    out.append(
        {"target": "healthy < 1 s after process start (median of starts)", "value": h, "pass": h < 1.0}
    )
    return out


def fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
    return str(v)


def print_report(results: dict[str, Any]) -> None:
    for backend, res in results["backends"].items():
        size = results["registry"]
        print(
            f"\n== {backend}: {size['models']} models x {size['versions']} versions = {size['total_versions']} versions, 2 aliases per model; MLflow --workers {results['run']['mlflow_workers']}"
        )
        print(f"{'measure':58} {'modelledger':>14} {'mlflow':>14} {'advantage':>10}")
        print("-" * 100)
        for label, a, b, ratio, _hb in rows(res):
            if isinstance(a, str) or isinstance(b, str):
                print(
                    f"{label:58} {fmt(a) if not isinstance(a, str) else '':>14} {fmt(b) if not isinstance(b, str) else '':>14}"
                )
                for who, v in (("modelledger", a), ("mlflow", b)):
                    if isinstance(v, str):
                        print(f"    {who}: {v}")
                continue
            print(f"{label:58} {fmt(a):>14} {fmt(b):>14} {f'{ratio:.1f}x' if ratio else '-':>10}")
        if "mlflow_defaults" in res:
            d = res["mlflow_defaults"]
            print(
                f"MLflow with its defaults (4 workers, job runner): healthy {d['healthy_s']} s, get by alias conc. 16 "
                f"{d['get_by_alias_c16']['req_per_s']} req/s (p99 {d['get_by_alias_c16']['p99_ms']} ms), "
                f"tree RSS {d['memory_after_warmup']['tree_rss_mb']} MiB in {len(d['memory_after_warmup']['processes'])} processes"
            )
        others = {
            who: [r["other_cores_busy"] for per in res[who]["reads"].values() for r in per.values()]
            for who in ("modelledger", "mlflow")
        }
        print(
            "other jobs' CPU during the load runs, in cores of 2 (mean, max): "
            + ", ".join(f"{who} {sum(v) / len(v):.2f}, {max(v):.2f}" for who, v in others.items())
        )
        print("targets:")
        for t in res["targets"]:
            print(f"  [{'PASS' if t['pass'] else 'FAIL'}] {t['target']}: {t['value']}")
        print(f"load average (1, 5, 15 min) before {res['loadavg_before']}, after {res['loadavg_after']}")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smaller registry and shorter runs")
    p.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    p.add_argument("--models", type=int, help="registered models (full 20, quick 5)")
    p.add_argument("--versions", type=int, help="versions per model (full 50, quick 10)")
    p.add_argument("--starts", type=int, help="server starts timed per side (full 3, quick 1)")
    p.add_argument(
        "--mlflow-workers",
        type=int,
        default=1,
        help="uvicorn workers of mlflow server (default 1, as modelledger)",
    )
    p.add_argument(
        "--no-mlflow-defaults",
        action="store_true",
        help="skip the extra start of MLflow with its own defaults",
    )
    p.add_argument(
        "--startup-only",
        action="store_true",
        help="only start to healthy (wall and server CPU) and the first calls: a small registry "
        "(2 x 3 versions unless given), 5 starts per side unless given; results in "
        f"{DEFAULT_STARTUP_OUT.relative_to(REPO)} unless --out",
    )
    p.add_argument("--sides", default="modelledger,mlflow", help="comma-separated: modelledger, mlflow")
    p.add_argument("--dir", default=None, help="where the temporary folders go")
    p.add_argument("--out", default=None, help=f"results file (default {DEFAULT_OUT.relative_to(REPO)})")
    cfg = p.parse_args(argv)
    full = not cfg.quick
    if cfg.startup_only:
        cfg.models = cfg.models or 2
        cfg.versions = cfg.versions or 3
        cfg.starts = cfg.starts or 5
    cfg.models = cfg.models or (20 if full else 5)
    cfg.versions = cfg.versions or (50 if full else 10)
    cfg.starts = cfg.starts or (3 if full else 1)
    cfg.sides = [x.strip() for x in cfg.sides.split(",") if x.strip()]
    if not set(cfg.sides) <= {"modelledger", "mlflow"} or not cfg.sides:
        p.error("--sides takes modelledger, mlflow or both")
    if not cfg.startup_only and cfg.sides != ["modelledger", "mlflow"]:
        p.error("a full run compares both sides; --sides goes with --startup-only")
    cfg.out = cfg.out or str(DEFAULT_STARTUP_OUT if cfg.startup_only else DEFAULT_OUT)
    cfg.warmup = 200 if full else 50
    cfg.c1_requests, cfg.c1_seconds = (500, 4.0) if full else (150, 2.0)
    cfg.c16_requests, cfg.c16_seconds = (3000, 5.0) if full else (800, 2.5)
    cfg.write_reps = 50 if full else 10
    cfg.load_reps = 20 if full else 5
    return cfg


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    started = _dt.datetime.now(_dt.timezone.utc)
    bytecode = compile_bytecode()
    backends = [b.strip() for b in cfg.backends.split(",") if b.strip()]
    results: dict[str, Any] = {
        "registry": {
            "models": cfg.models,
            "versions": cfg.versions,
            "total_versions": cfg.models * cfg.versions,
            "aliases_per_model": 2,
            "model": "StandardScaler + LogisticRegression on iris, 4 float columns",
        },
        "backends": {},
    }
    log(
        f"registry: {cfg.models} models x {cfg.versions} versions = {cfg.models * cfg.versions} versions per side"
    )
    root = Path(tempfile.mkdtemp(prefix="server-bench-", dir=cfg.dir))
    try:
        for backend in backends:
            log(f"== {backend}")
            work = root / backend
            for side_name in ("modelledger", "mlflow"):
                (work / side_name).mkdir(parents=True)
            with databases(backend, work) as urls:
                led = LedgerSide(cfg, backend, work / "modelledger", urls["modelledger"])
                mlf = MlflowSide(cfg, backend, work / "mlflow", urls["mlflow"])
                if cfg.startup_only:
                    chosen = tuple(side for side in (led, mlf) if side.name in cfg.sides)
                    with contextlib.redirect_stdout(sys.stderr):
                        results["backends"][backend] = measure_startup_only(chosen)
                    continue
                res: dict[str, Any] = {"loadavg_before": loadavg()}
                # MLflow prints links to its UI on stdout: keep stdout for the table
                try:
                    with contextlib.redirect_stdout(sys.stderr):
                        res.update(measure_backend((led, mlf)))
                        if not cfg.no_mlflow_defaults and backend == backends[0]:
                            res["mlflow_defaults"] = measure_mlflow_defaults(mlf)
                finally:
                    led.stop()
                    mlf.stop()
                res["loadavg_after"] = loadavg()
                res["targets"] = targets(res)
                res["table"] = [
                    {"measure": label, "modelledger": a, "mlflow": b, "advantage": r}
                    for label, a, b, r, _ in rows(res)
                ]
                results["backends"][backend] = res
        fs = fs_type(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    results["machine"] = {
        "bytecode": bytecode,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": pg_version() if "postgresql" in backends else None,
        "filesystem": fs,
        "mlflow": dist_version("mlflow"),
        "modelledger": dist_version("modelledger"),
        "modelledger_git": git_state(REPO),
        "fastapi": dist_version("fastapi"),
        "uvicorn": dist_version("uvicorn"),
        # uvicorn's C event loop and HTTP parser: both servers use them when installed
        "uvloop": dist_version("uvloop"),
        "httptools": dist_version("httptools"),
        "httpx": dist_version("httpx"),
        "scikit-learn": dist_version("scikit-learn"),
        "sqlalchemy": dist_version("sqlalchemy"),
        "psycopg": dist_version("psycopg"),
    }
    results["run"] = {
        "date": started.isoformat(timespec="seconds"),
        "wall_s": round((_dt.datetime.now(_dt.timezone.utc) - started).total_seconds(), 1),
        "mode": "startup-only" if cfg.startup_only else "quick" if cfg.quick else "full",
        "sides": cfg.sides,
        "backends": backends,
        "mlflow_workers": cfg.mlflow_workers,
        "starts": cfg.starts,
        "warmup_requests": cfg.warmup,
        "c1": {"requests": cfg.c1_requests, "max_seconds": cfg.c1_seconds},
        "c16": {"requests": cfg.c16_requests, "max_seconds": cfg.c16_seconds},
        "write_reps": cfg.write_reps,
        "load_reps": cfg.load_reps,
        "client": "httpx, one keep-alive connection per thread, in the benchmark process on the same 2 cores",
    }
    if cfg.startup_only:
        print_startup_report(results)
    else:
        print_report(results)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out} ({results['run']['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
