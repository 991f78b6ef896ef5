"""A small, deterministic registry story for tests that compare rendered text: a raw
extract, a train/holdout split recorded as one shared step, and model versions with and
without data sets. Built through the public API only; every value is fixed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from modelledger import DatasetVersion, ModelVersion, Registry

REPO = "https://git.example.com/risk/credit.git"
REVISION_1 = "1" * 40
REVISION_2 = "2" * 40
QUERY = "SELECT * FROM applications WHERE applied_on >= '2024-01-01'"


@dataclass
class Story:
    raw: DatasetVersion
    train: DatasetVersion
    holdout: DatasetVersion
    v1: ModelVersion
    v2: ModelVersion
    bare: ModelVersion


def frame(n: int) -> pd.DataFrame:
    """Rows computed from their index, so every run stores the same bytes."""
    return pd.DataFrame(
        {
            "age": [18.0 + (i * 7) % 57 for i in range(n)],
            "income": [30_000.0 + (i * 7919) % 45_000 for i in range(n)],
            "employment": [("salaried", "self-employed", "unemployed")[i % 3] for i in range(n)],
            "defaulted": [int((i * 13) % 10 < 2) for i in range(n)],
        }
    )


def model_folder(root: Path, name: str, payload: bytes) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.bin").write_bytes(payload)
    return folder


def build(registry: Registry, root: Path) -> Story:
    """Two versions trained on the split with different settings, and one with no data at all."""
    data = frame(50)
    extract = root / "applications-2024.csv"
    data.to_csv(extract, index=False)
    raw = registry.datasets.register(
        "applications-raw",
        extract,
        source={
            "uri": "postgresql://dwh.example.com/risk",
            "kind": "query",
            "query": QUERY,
            "extracted_at": "2024-07-01T06:00:00+00:00",
            "code": {"repo_url": REPO, "path": "extract.py", "revision": REVISION_1},
        },
        capture=False,
    )
    step = {
        "name": "split",
        "kind": "train_test_split",
        "params": {"test_size": 0.2, "shuffle": False},
        "inputs": [raw.uri],
        "code": {"repo_url": REPO, "path": "prepare.py", "revision": REVISION_1},
    }
    train = registry.datasets.register("applications-train", data.iloc[:40], steps=[step], capture=False)
    holdout = registry.datasets.register("applications-holdout", data.iloc[40:], steps=[step], capture=False)
    common = {
        "algorithm": "Pipeline[simpleimputer, logisticregression]",
        "framework": "scikit-learn",
        "framework_version": "1.4.2",
        "dependencies": {"scikit-learn": "1.4.2", "numpy": "1.26.4"},
    }
    v1 = registry.register(
        "credit-risk",
        model_folder(root, "m1", b"version one"),
        datasets={"train": train.uri, "holdout": holdout.uri},
        manifest={
            **common,
            "params": {"C": 0.5, "tol": 0.0001},
            "metrics": {"auc": 0.8123456789, "accuracy": 0.75},
            "source": {"repo_url": REPO, "path": "train.py", "revision": REVISION_1, "dirty": False},
        },
        capture=False,
    )
    v2 = registry.register(
        "credit-risk",
        model_folder(root, "m2", b"version two"),
        datasets={"train": train.uri, "holdout": holdout.uri},
        manifest={
            **common,
            "params": {"C": 1 / 3, "tol": 0.0001},
            "metrics": {"auc": 0.8345678912, "accuracy": 0.7777777777},
            "dependencies": {"scikit-learn": "1.5.0", "numpy": "1.26.4"},
            "source": {"repo_url": REPO, "path": "train.py", "revision": REVISION_2, "dirty": False},
        },
        capture=False,
    )
    bare = registry.register(
        "credit-risk", model_folder(root, "m3", b"version three"), metrics={"auc": 0.5}, capture=False
    )
    return Story(raw, train, holdout, v1, v2, bare)
