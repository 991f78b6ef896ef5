from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from modelledger import InvalidInput, NotFound, Registry
from modelledger.cli import main


@pytest.fixture
def served(db_url: str, tmp_path: Path, credit_data, fitted_pipeline):
    """Two versions of a model with data lineage, each approved, deployed and serving."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    art = str(tmp_path / "artifacts")
    alice = Registry.open(db_url, artifacts=art, actor="alice@bank.example")
    bob = Registry.open(db_url, artifacts=art, actor="bob@bank.example")
    X, y = credit_data
    frame = X.assign(defaulted=y)
    raw = alice.datasets.register(
        "applications-raw",
        frame,
        source={"uri": "postgresql://dwh/lending", "kind": "query", "query": "SELECT * FROM applications"},
    )
    split = {"name": "split", "kind": "train_test_split", "params": {"test_size": 0.25}, "inputs": [raw.uri]}
    train = alice.datasets.register("applications-train", frame.iloc[:300], steps=[split])
    holdout = alice.datasets.register("applications-holdout", frame.iloc[300:], steps=[split])
    second = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["age", "income", "loan_amount"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["employment"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression(C=2.0, max_iter=500)),
        ]
    ).fit(X.iloc[:300], y.iloc[:300])
    out = {"alice": alice, "bob": bob, "X": X, "raw": raw, "train": train, "holdout": holdout, "ids": {}}
    for model in (fitted_pipeline, second):
        v = alice.register(
            "credit-risk",
            model,
            sample_input=X.head(),
            metrics={"auc": 0.9},
            datasets={"train": train, "holdout": holdout},
        )
        bob.approve(v.uri, reason=f"reviewed {v.uri}")
        bob.deploy(v.uri, reason="release")
        with alice.load("models:/credit-risk@production", capture=True, flush_rows=50) as predictor:
            result = predictor.predict(X.head(20))
        out["ids"][v.version] = [r.prediction_id for r in result.receipts]
        time.sleep(0.01)
    yield out
    alice.close()
    bob.close()


def test_trace_walks_back_to_approval_code_and_data(served) -> None:
    reg: Registry = served["alice"]
    pid = served["ids"][1][7]
    report = reg.trace(pid)
    assert report.receipt_valid, report.receipt_problem
    assert report.prediction["id"] == pid
    assert report.model["uri"] == "models:/credit-risk/1"
    assert report.model["digest"] == reg.get_version("credit-risk", 1).digest
    assert report.governance["approved_by"] == "bob@bank.example"
    assert [a["reason"] for a in report.governance["approvals"]] == ["reviewed models:/credit-risk/1"]
    # version 1 held @production when this prediction was made, though version 2 holds it now
    assert report.governance["aliases_at_prediction"] == ["production"]
    assert report.governance["stage"] == "deployed"
    assert report.manifest["params"]["C"] == 0.5
    assert report.manifest["dependencies"]["scikit-learn"]
    assert {s["kind"] for s in report.model_steps} == {"StandardScaler", "OneHotEncoder"}
    roles = {d["role"]: d for d in report.datasets}
    assert set(roles) == {"train", "holdout"}
    train = roles["train"]
    assert train["uri"] == served["train"].uri
    (step,) = train["steps"]
    assert step["kind"] == "train_test_split"
    (raw,) = step["inputs"]
    assert raw["uri"] == served["raw"].uri
    assert raw["source"]["query"] == "SELECT * FROM applications"
    # the input row is the one that was sent
    assert report.prediction["input"]["age"] == int(served["X"].iloc[7]["age"])


def test_trace_of_the_second_version(served) -> None:
    report = served["alice"].trace(served["ids"][2][0])
    assert report.model["uri"] == "models:/credit-risk/2"
    assert report.manifest["params"]["C"] == 2.0
    assert report.governance["aliases_at_prediction"] == ["production"]


def test_trace_unknown_and_malformed_ids(served) -> None:
    reg: Registry = served["alice"]
    from modelledger import new_prediction_id

    with pytest.raises(NotFound, match="not in its captures"):
        reg.trace(new_prediction_id(reg.get_version("credit-risk", 1).key))
    with pytest.raises(NotFound):
        reg.trace(new_prediction_id(999_999))
    with pytest.raises(InvalidInput):
        reg.trace("not-an-id")


def test_query_captured_predictions(served) -> None:
    reg: Registry = served["alice"]
    everything = reg.predictions("credit-risk", as_pandas=True)
    assert len(everything) == 40
    assert sorted(everything["version"].unique()) == [1, 2]
    one = reg.predictions("models:/credit-risk/2")
    assert one.num_rows == 20
    assert one.column("prediction_id").to_pylist() == sorted(served["ids"][2])
    future = reg.predictions("credit-risk", since=datetime(2999, 1, 1, tzinfo=timezone.utc))
    assert future.num_rows == 0
    assert isinstance(everything, pd.DataFrame)


def test_trace_cli(served, db_url: str, tmp_path: Path) -> None:
    pid = served["ids"][1][3]
    args = ["--registry", db_url, "--artifacts", str(tmp_path / "artifacts")]
    result = CliRunner().invoke(main, ["trace", pid, *args])
    assert result.exit_code == 0, result.output
    text = result.output
    for expected in (
        pid,
        "receipt",
        "valid",
        "models:/credit-risk/1",
        "bob@bank.example",
        "@production",
        "datasets:/applications-train/1",
        "train_test_split",
        "datasets:/applications-raw/1",
        "postgresql://dwh/lending",
    ):
        assert expected in text, expected
    as_json = CliRunner().invoke(main, ["trace", pid, "--json", *args])
    assert as_json.exit_code == 0
    doc = json.loads(as_json.output)
    assert doc["receipt"]["valid"] is True
    assert doc["model"]["uri"] == "models:/credit-risk/1"
    out = tmp_path / "preds.parquet"
    listed = CliRunner().invoke(main, ["predictions", "credit-risk", "-o", str(out), *args])
    assert listed.exit_code == 0, listed.output
    assert pd.read_parquet(out).shape[0] == 40


def test_predictions_cli_refuses_an_unknown_output_format(served, db_url: str, tmp_path: Path) -> None:
    args = ["--registry", db_url, "--artifacts", str(tmp_path / "artifacts")]
    target = tmp_path / "preds.txt"
    result = CliRunner().invoke(main, ["predictions", "credit-risk", "-o", str(target), *args])
    assert result.exit_code == 1
    assert "use a .csv or .parquet file" in result.output
    assert not target.exists()
