"""The demo's model, small and fast, for the export tests; and ``normalise`` for golden files.

``build_demo(root)`` walks the story of ``examples/demo.py`` through the public API on an
embedded-style SQLite registry under ``root``: an extract from a warehouse query versioned as a
data set, a de-duplication step, a train/holdout split, a scikit-learn pipeline registered with
both sets, approved by a second identity (four eyes), deployed to ``@production``, and one
captured prediction. Every value that can be fixed is (rows, parameters, code location, job),
so that what stays volatile is only what the registry itself stamps: times, ids, keys,
signatures, and digests over things that hold a time. ``normalise`` replaces those.

Use the module-scoped fixture ``demo`` by importing it into a test module::

    from tests.export_support import Demo, demo_fixture, normalise  # noqa: F401

Golden files live in ``tests/golden/export/``; ``check_golden(name, text)`` compares (or, with
``UPDATE_GOLDEN=1``, rewrites) one.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from modelledger import DatasetVersion, ModelVersion, Registry, identity_path

GOLDEN = Path(__file__).parent / "golden" / "export"
DATA_SCIENTIST = "data-scientist@bank.example"
RISK_OFFICER = "risk-officer@bank.example"
SCORER = "scoring-service"
REPO = "https://git.example.com/risk/credit.git"
REVISION = "9f1c2ab" + "0" * 33
QUERY = "SELECT * FROM loan_applications WHERE submitted >= '2026-01-01'"
FEATURES = ["age", "annual_income", "loan_amount", "employment"]
PARAMS = {"n_estimators": 5, "max_depth": 2, "learning_rate": 0.1, "random_state": 7}


@dataclass(frozen=True)
class Demo:
    """The registry of the story and what it made (``registry`` acts as the data scientist)."""

    registry: Registry
    officer: Registry
    root: Path
    raw: DatasetVersion
    clean: DatasetVersion
    train: DatasetVersion
    holdout: DatasetVersion
    version: ModelVersion
    prediction_id: str


def applications(n: int = 80) -> pd.DataFrame:
    """Rows computed from their index (every run stores the same bytes), with 4 duplicates."""
    frame = pd.DataFrame(
        {
            "application_id": [100_000 + i for i in range(n)],
            "age": [18 + (i * 7) % 57 for i in range(n)],
            "annual_income": [30_000.0 + (i * 7919) % 45_000 for i in range(n)],
            "loan_amount": [1_000.0 + (i * 3571) % 20_000 for i in range(n)],
            "employment": [("salaried", "self-employed", "contract", "unemployed")[i % 4] for i in range(n)],
            "defaulted": [int((i * 13) % 10 < 3) for i in range(n)],
        }
    )
    return pd.concat([frame, frame.iloc[:4]], ignore_index=True)


def public_key(name: str) -> bytes:
    """The public key (PEM) of identity ``name``, made on first use: the session's identities
    folder outlives one registry, and ``create_identity`` refuses to overwrite a key."""
    from modelledger._signing import Identity

    return Identity(identity_path(name), create=True).public_pem()


def build_demo(root: Path) -> Demo:
    """The story on a new SQLite registry under ``root`` (keys come from the session's identities)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    url, artifacts = f"sqlite:///{root / 'registry.db'}", str(root / "artifacts")
    registry = Registry.open(url, artifacts=artifacts, actor=DATA_SCIENTIST)
    registry.init()
    registry.enrol(RISK_OFFICER, public_key(RISK_OFFICER), roles=["approver", "deployer"])
    registry.enrol(SCORER, public_key(SCORER), roles="serving")
    officer = Registry.open(url, artifacts=artifacts, actor=RISK_OFFICER)

    extract = root / "applications_extract.csv"
    applications().to_csv(extract, index=False)
    raw = registry.datasets.register(
        "applications-raw",
        extract,
        source={
            "uri": "postgresql://dwh.bank.example/lending",
            "kind": "query",
            "query": QUERY,
            "code": {"repo_url": REPO, "path": "extract.py", "revision": REVISION},
        },
        capture=False,
    )
    frame = registry.datasets.to_pandas(raw)
    clean_frame = frame.drop_duplicates(subset="application_id").reset_index(drop=True)
    clean = registry.datasets.register(
        "applications-clean",
        clean_frame,
        steps=[
            {
                "name": "drop-duplicates",
                "kind": "deduplicate",
                "params": {"subset": ["application_id"]},
                "inputs": [raw.uri],
                "code": {"repo_url": REPO, "path": "prepare.py", "revision": REVISION},
            }
        ],
        capture=False,
    )
    split = {
        "name": "split",
        "kind": "train_test_split",
        "params": {"test_size": 0.25, "shuffle": False},
        "inputs": [clean.uri],
        "code": {"repo_url": REPO, "path": "prepare.py", "revision": REVISION},
    }
    cut = len(clean_frame) * 3 // 4
    train = registry.datasets.register(
        "applications-train", clean_frame.iloc[:cut], steps=[split], capture=False
    )
    holdout = registry.datasets.register(
        "applications-holdout", clean_frame.iloc[cut:], steps=[split], capture=False
    )

    pipeline = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["age", "annual_income", "loan_amount"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["employment"]),
                    ]
                ),
            ),
            ("model", GradientBoostingClassifier(**PARAMS)),
        ]
    )
    train_frame = clean_frame.iloc[:cut]
    pipeline.fit(train_frame[FEATURES], train_frame["defaulted"])
    registry.create_model(
        "credit-risk", description="Probability of default on new loans", tags={"team": "credit"}
    )
    version = registry.register(
        "credit-risk",
        pipeline,
        sample_input=train_frame[FEATURES].head(5),
        params=PARAMS,
        metrics={"auc_holdout": 0.81},
        datasets={"train": train, "holdout": holdout},
        manifest={
            "gates": ["auc_holdout >= 0.75"],
            "source": {"repo_url": REPO, "path": "train.py", "revision": REVISION, "dirty": False},
            "training_job": {
                "id": "demo-run-1",
                "started_at": "2026-11-01T10:00:00Z",
                "ended_at": "2026-11-01T10:05:00Z",
            },
        },
        capture=False,
    )
    officer.approve(version.uri, reason="Reviewed holdout AUC and bias report MRM-2026-114")
    officer.deploy(version.uri, reason="Q4 release")
    scorer = Registry.open(url, artifacts=artifacts, actor=SCORER)
    with scorer, scorer.load("models:/credit-risk@production", capture=True) as served:
        result = served.predict(clean_frame[FEATURES].iloc[cut : cut + 1])
    prediction_id = result.receipts[0].prediction_id
    return Demo(
        registry=registry,
        officer=officer,
        root=root,
        raw=raw,
        clean=clean,
        train=train,
        holdout=holdout,
        version=registry.get_version(version.uri),
        prediction_id=prediction_id,
    )


@pytest.fixture(scope="module", name="demo")
def demo_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The story as fixture ``demo``, built once per test module (a few seconds)."""
    built = build_demo(tmp_path_factory.mktemp("export-demo"))
    yield built
    built.registry.close()
    built.officer.close()


# ---------------------------------------------------------------------- golden files

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # ISO 8601 times, with or without fractions and offset
    (re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?"), "<time>"),
    # UUIDs (OpenLineage run ids, CycloneDX serial numbers, SPDX ids...)
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    # prediction ids (26 characters of Crockford base32)
    (re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b"), "<prediction-id>"),
)


def normalise(obj: Any, *, volatile: tuple[str, ...] = ()) -> Any:
    """``obj`` (parsed JSON) with volatile values replaced by placeholders, for golden files.

    Replaced everywhere: times, UUIDs and prediction ids inside any string. Also replaced:
    every value of a key named in ``volatile`` or in :data:`VOLATILE_KEYS` (key ids,
    signatures, public keys, digests over things that hold a time, the version folder, the
    environment the test runs in, file hashes and sizes), as ``<key name>``, and the value of a
    ``{"key": name, "value": ...}`` pair whose name is one of them. Give a format's own
    volatile keys in ``volatile``.
    """
    keys = set(VOLATILE_KEYS) | set(volatile)

    def walk(value: Any, key: str | None) -> Any:
        if key in keys and value is not None:
            return f"<{key}>"
        if isinstance(value, dict) and set(value) == {"key", "value"} and value["key"] in keys:
            return {"key": value["key"], "value": f"<{value['key']}>"}  # a name-value pair (parameters)
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, None) for v in value]
        if isinstance(value, str):
            for pattern, placeholder in _PATTERNS:
                value = pattern.sub(placeholder, value)
            return value
        return value

    return walk(obj, None)


VOLATILE_KEYS: tuple[str, ...] = (
    "key_id",
    "keyid",
    "sig",
    "signature",
    "public_key",
    "publicKey",
    # the version's digest covers its manifest, which records when and where it was captured
    "digest",
    "folder",
    "python",
    "platform",
    "dependencies",
    "framework_version",
    # bytes written by a library (a pickle, a Parquet file): they change with its version
    "sha256",
    "size",
)


def check_golden(name: str, text: str) -> None:
    """Compare ``text`` with ``tests/golden/export/<name>``; ``UPDATE_GOLDEN=1`` rewrites it."""
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden file {path}: run with UPDATE_GOLDEN=1 to create it"
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"{name} differs from its golden file (UPDATE_GOLDEN=1 rewrites it)"


def golden_json(obj: Any, **options: Any) -> str:
    """``normalise(obj)`` as the text kept in a golden file (sorted keys, indented)."""
    return json.dumps(normalise(obj, **options), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
