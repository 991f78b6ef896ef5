"""Time to reproduce the demo's model: the isolated environment built (uncached) and cached.

In a temporary folder: the demo's data (``examples/demo.py``'s synthetic applications,
deduplicated, split 75/25 and registered as data sets), a training environment built with
the same machinery (modelledger's own dependencies and scikit-learn at this venv's versions,
uv), and ``examples/train.py`` run in it from this repository's checkout, as the demo runs it.
Then ``Registry.reproduce`` of that version, ``--reps`` times per case:

- ``uncached``: an empty environment cache folder, so the environment is built (uv's own
  package cache is left as it is: warm after the first run on a machine, which is the usual
  case; ``--cold-uv`` points uv at an empty cache too, so every wheel is downloaded);
- ``cached``: the same cache folder again, the environment found by its digest.

Each reproduction's step times (checkout, environment, data, run, verdict) and its verdict
are printed and written to ``bench/results/reproduce.json``. The training runs from the
revision checked out now: with uncommitted changes the reproduction runs the revision without
them (``allow_dirty``), as the demo does.

Example:
    python bench/reproduce_bench.py               # about 2 minutes on 2 cores
    python bench/reproduce_bench.py --reps 3 --cold-uv
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

from sklearn.model_selection import train_test_split

from modelledger import Registry
from modelledger._environment import build_environment, modelledger_source

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "examples"))

from demo import make_credit_applications  # noqa: E402  (the demo's data, one definition)

TRAINING_PACKAGES = (
    "sqlalchemy",
    "alembic",
    "fsspec",
    "click",
    "rich",
    "pyyaml",
    "cloudpickle",
    "numpy",
    "pandas",
    "pyarrow",
    "cryptography",
    "scikit-learn",
)


def setup(root: Path) -> tuple[Registry, str, float]:
    """The demo's data and model in a registry under ``root``: (registry, version, build seconds)."""
    os.environ["MODELLEDGER_HOME"] = str(root / "registry")
    os.environ["MODELLEDGER_IDENTITIES"] = str(root / "identities")
    os.environ["MODELLEDGER_USER"] = "bench@example.com"
    registry = Registry.open()
    frame = make_credit_applications().drop_duplicates(subset="application_id").reset_index(drop=True)
    train, holdout = train_test_split(frame, test_size=0.25, random_state=7, stratify=frame["defaulted"])
    data = {
        "MODELLEDGER_DATA_TRAIN": registry.datasets.register("applications-train", train).uri,
        "MODELLEDGER_DATA_HOLDOUT": registry.datasets.register("applications-holdout", holdout).uri,
    }
    started = time.monotonic()
    training = build_environment(
        python_version=platform.python_version(),
        pins={name: installed_version(name) for name in TRAINING_PACKAGES},
        source=modelledger_source(None, None),
        cache_dir=root / "training-environment",
    )
    built = time.monotonic() - started
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE")
    }
    done = subprocess.run(
        [str(training.python), "examples/train.py"],
        cwd=REPO,
        env={**env, **data},
        capture_output=True,
        text=True,
        check=True,
    )
    uri = done.stdout.strip().splitlines()[-1].split()[-1]
    return registry, uri, built


def reproduce_once(registry: Registry, uri: str, cache: Path) -> dict[str, Any]:
    dirty = bool(registry.get_version(uri).manifest["source"].get("dirty"))
    started = time.monotonic()
    found = registry.reproduce(uri, allow_dirty=dirty, cache_dir=cache, repository=str(REPO))
    total = time.monotonic() - started
    return {
        "seconds": round(total, 2),
        "steps": {k: round(v, 2) for k, v in found.seconds.items()},
        "verdict": found.verdict,
        "reasons": list(found.reasons),
        "environment_cached": bool(found.environment.get("cached")),
        "packages": found.environment.get("packages"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=2, help="reproductions per case (default 2)")
    parser.add_argument("--cold-uv", action="store_true", help="uv's package cache empty too (downloads)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="modelledger-reproduce-bench-"))
    results: dict[str, Any] = {"python": platform.python_version(), "cases": {}}
    try:
        os.chdir(root)
        registry, uri, built = setup(root)
        results["training_environment_seconds"] = round(built, 2)
        print(f"{uri} trained; its training environment took {built:.1f} s to build")
        for case in ("uncached", "cached"):
            runs = []
            for rep in range(args.reps):
                cache = root / "environments" / (f"rep{rep}" if case == "uncached" else "shared")
                if case == "cached" and not cache.exists():
                    reproduce_once(registry, uri, cache)  # fill it first
                if args.cold_uv and case == "uncached":
                    os.environ["UV_CACHE_DIR"] = str(root / f"uv-cache-{rep}")
                run = reproduce_once(registry, uri, cache)
                os.environ.pop("UV_CACHE_DIR", None)
                print(f"{case:<9} {run['seconds']:>7.1f} s  {run['steps']}  {run['verdict']}")
                runs.append(run)
            results["cases"][case] = {
                "median_seconds": statistics.median(r["seconds"] for r in runs),
                "runs": runs,
            }
        registry.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out = HERE / "results" / "reproduce.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
