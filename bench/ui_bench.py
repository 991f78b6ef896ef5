"""The web UI's pages at size: the server time of the API calls each page of a model with
10,000 versions makes.

Builds, in a temporary folder, the embedded default registry (SQLite + a folder) with one model
of ``--versions`` versions (each with parameters and metrics, registered through the Python
API), the last approved by a second member and deployed to @production, one more under
@champion. Then serves it with ``create_app`` (uvicorn on loopback, one process) and calls, as
the UI does with a member's token, the API routes of each page:

- model page: ``GET /models/{name}``, ``/models/{name}/aliases``, ``/models/{name}/versions?limit=25``
- versions, a later page: ``/models/{name}/versions?limit=25&cursor=...`` (page ``--page``)
- version page: ``/models/{name}/versions/{n}``, ``.../state``, ``.../history``
- lineage page: ``/models/{name}/versions/{n}``, ``.../lineage``, ``/models/{name}/aliases``

Each call is made ``--reps`` times after a warm-up; the server time is the ``duration_ms``
the server's own access log records for the request (from the first byte received to the
last byte sent); the client's wall time is shown beside it. A page passes when the sum of
its calls' p95 server times is under 300 ms (the UI makes them in parallel; the sum is the
worst case). Results go to ``bench/results/ui.json``.

Example:
    python bench/ui_bench.py                        # 10,000 versions: about 3 minutes on 2 cores
    python bench/ui_bench.py --versions 2000 --reps 10
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from _machine import cpu_model, dist_version, fs_type, git_state

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUT = HERE / "results" / "ui.json"
TARGET_MS = 300.0
MODEL = "credit-risk"
ADMIN = "alice@bank.example"
OFFICER = "officer@bank.example"


def build(home: Path, versions: int) -> tuple[Any, float]:
    """The registry at ``home`` with ``versions`` versions of one model; returns it and the
    seconds the build took."""
    os.environ["MODELLEDGER_HOME"] = str(home / ".modelledger")
    os.environ["MODELLEDGER_IDENTITIES"] = str(home / "identities")
    from modelledger import Registry, create_identity

    registry = Registry.open(actor=ADMIN)
    registry.init()
    _path, _kid, pem = create_identity(OFFICER)
    registry.enrol(OFFICER, pem, roles=["approver", "deployer"], models="*")
    registry.create_model(MODEL, description="Probability of default", tags={"team": "credit"})
    started = time.perf_counter()

    def stage(i: int) -> Any:
        # a callable is the cheapest artefact to pickle; the manifest is what the pages show
        return registry.upload(
            MODEL,
            _identity,
            params={"C": round(0.1 + i / versions, 4), "max_iter": 1000},
            metrics={
                "auc_holdout": round(0.7 + (i % 997) / 10_000, 4),
                "gini": round(0.4 + (i % 89) / 1000, 4),
            },
        )

    # uploads write and seal a folder each (I/O: threads overlap them); the registrations are
    # one metadata transaction each, in order
    with ThreadPoolExecutor(max_workers=4) as pool:
        for n, uploaded in enumerate(pool.map(stage, range(versions)), start=1):
            registry.create_version(uploaded)
            if n % 1000 == 0:
                print(f"   {n:>6,} versions, {time.perf_counter() - started:5.1f} s", flush=True)
    officer = Registry.open(actor=OFFICER)
    last = f"models:/{MODEL}/{versions}"
    officer.approve(last, reason="bench approval")
    officer.deploy(last, reason="bench release")
    registry.set_alias(MODEL, "champion", max(1, versions // 2))
    officer.close()
    return registry, time.perf_counter() - started


def _identity(rows: Any) -> Any:
    return rows


class AccessTimes(logging.Handler):
    """The server's own duration of each request, from its access log."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self.guard = threading.Lock()  # not self.lock: logging.Handler holds that one around emit

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "access", None)
        if fields is not None:
            with self.guard:
                self.times.append(float(fields["duration_ms"]))


def serve(registry: Any) -> tuple[str, Any, threading.Thread]:
    import uvicorn

    from modelledger.server import create_app

    config = uvicorn.Config(
        create_app(registry), host="127.0.0.1", port=0, log_level="warning", log_config=None
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sys.exit("the server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}/api/v1", server, thread


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(client: httpx.Client, log: AccessTimes, path: str, reps: int) -> dict[str, Any]:
    for _ in range(3):  # warm-up: the first call of a route builds its caches
        client.get(path).raise_for_status()
    server_ms, wall_ms = [], []
    for _ in range(reps):
        with log.guard:
            log.times.clear()
        started = time.perf_counter()
        response = client.get(path)
        wall = (time.perf_counter() - started) * 1000
        response.raise_for_status()
        deadline = time.monotonic() + 5
        while not log.times and time.monotonic() < deadline:  # logged once the response is sent
            time.sleep(0.001)
        server_ms.append(log.times[0])
        wall_ms.append(wall)
    return {
        "path": path,
        "bytes": len(response.content),
        "server_ms": {
            "p50": round(statistics.median(server_ms), 2),
            "p95": round(percentile(server_ms, 0.95), 2),
            "max": round(max(server_ms), 2),
        },
        "wall_ms": {"p50": round(statistics.median(wall_ms), 2), "p95": round(percentile(wall_ms, 0.95), 2)},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=30, help="timed calls per route (default 30)")
    parser.add_argument("--page", type=int, default=200, help="the later page of versions (default 200)")
    parser.add_argument("--dir", default=None, help="where the temporary registry goes")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="ui-bench-") as tmp:
        home = Path(tmp)
        print(f"Building {args.versions:,} versions of {MODEL} in {home}", flush=True)
        registry, build_s = build(home, args.versions)
        print(f"   built in {build_s:.1f} s", flush=True)
        token = registry.create_token(OFFICER)[0]
        # a read-only bench: the server's warning that it cannot write for members is expected
        logging.getLogger("modelledger.server").setLevel(logging.ERROR)
        log = AccessTimes()
        access = logging.getLogger("modelledger.server.access")
        access.addHandler(log)
        access.setLevel(logging.INFO)
        access.propagate = False
        base, server, thread = serve(registry)
        try:
            client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)
            listing = f"/models/{MODEL}/versions?limit=25"
            cursor = ""
            for _ in range(args.page - 1):  # to the later page, as Next page does (untimed)
                answer = client.get(listing + (f"&cursor={cursor}" if cursor else ""))
                cursor = answer.raise_for_status().json()["next_cursor"]
            later = client.get(f"{listing}&cursor={cursor}").raise_for_status().json()
            middle = later["items"][0]["version"]
            version = f"/models/{MODEL}/versions/{middle}"
            pages = {
                "model page (versions page 1)": [
                    f"/models/{MODEL}",
                    f"/models/{MODEL}/aliases",
                    f"/models/{MODEL}/versions?limit=25",
                ],
                f"versions page {args.page}": [f"/models/{MODEL}/versions?limit=25&cursor={cursor}"],
                f"version page (v{middle})": [version, f"{version}/state", f"{version}/history"],
                f"version page (v{args.versions}, deployed)": [
                    f"/models/{MODEL}/versions/{args.versions}",
                    f"/models/{MODEL}/versions/{args.versions}/state",
                    f"/models/{MODEL}/versions/{args.versions}/history",
                ],
                f"lineage page (v{middle})": [version, f"{version}/lineage", f"/models/{MODEL}/aliases"],
                "sign-in (every page's first call)": ["/whoami"],
            }
            results: dict[str, Any] = {}
            for page, paths in pages.items():
                calls = [measure(client, log, path, args.reps) for path in paths]
                total = round(sum(c["server_ms"]["p95"] for c in calls), 2)
                results[page] = {"calls": calls, "server_p95_sum_ms": total, "pass": total < TARGET_MS}
            client.close()
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            registry.close()
        machine = {
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "filesystem": fs_type(home),
            "modelledger_git": git_state(REPO),
            "fastapi": dist_version("fastapi"),
            "uvicorn": dist_version("uvicorn"),
        }

    print(f"\n{args.versions:,} versions, {args.reps} calls per route; server time (ms) from the access log")
    print(f"{'page / call':<62} {'p50':>8} {'p95':>8} {'max':>8} {'wall p50':>9}")
    for page, result in results.items():
        print(
            f"{page}  [{'PASS' if result['pass'] else 'FAIL'}: sum of p95 {result['server_p95_sum_ms']} ms]"
        )
        for c in result["calls"]:
            s = c["server_ms"]
            path = c["path"] if len(c["path"]) <= 58 else c["path"][:55] + "..."
            print(f"   {path:<59} {s['p50']:>8} {s['p95']:>8} {s['max']:>8} {c['wall_ms']['p50']:>9}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "versions": args.versions,
        "reps": args.reps,
        "build_seconds": round(build_s, 1),
        "target_ms": TARGET_MS,
        "machine": machine,
        "pages": results,
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(
        f"\nmachine: {machine['cpu']}, {machine['cpus']} CPUs, Python {machine['python']}; written to {out}"
    )
    return 0 if all(r["pass"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
