"""The data set, lineage and diff commands, run in-process with CliRunner against real SQLite
and PostgreSQL registries."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner, Result

from modelledger import Registry
from modelledger.cli import main

Run = Callable[..., Result]
QUERY = "SELECT * FROM applications WHERE applied_on >= '2024-01-01'"
FEATURES = ["age", "income", "employment"]


@pytest.fixture
def cli(db_url: str, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> Run:
    """Run ``modelledger ARGS`` on the same registry as the ``registry`` fixture."""
    monkeypatch.setenv("MODELLEDGER_USER", "cli@example.com")
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Result:
        result = runner.invoke(main, [*args, "--registry", db_url, "--artifacts", registry.artifact_root])
        assert result.exit_code == code, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        return result

    return run


def _one_line_error(result: Result, fragment: str) -> None:
    err = result.stderr.strip()
    assert err.startswith("Error: ") and "\n" not in err, err
    assert "Traceback" not in result.output
    assert fragment in err, err


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 75, n).astype(float),
            "income": rng.normal(52_000, 15_000, n).round(2),
            "employment": rng.choice(["salaried", "self-employed", "unemployed"], n).astype(object),
        }
    )
    frame["defaulted"] = ((frame.income < 45_000) ^ (rng.random(n) < 0.1)).astype(int)
    frame.loc[rng.random(n) < 0.1, "age"] = np.nan
    return frame


def _pipeline(c: float) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    prep = ColumnTransformer(
        [("num", numeric, ["age", "income"]), ("cat", OneHotEncoder(handle_unknown="ignore"), ["employment"])]
    )
    return Pipeline([("prep", prep), ("clf", LogisticRegression(C=c, max_iter=500))])


def _steps_file(path: Path, steps: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(steps) if path.suffix == ".json" else yaml.safe_dump(steps), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- register, list, show


def test_register_list_and_show(cli: Run, tmp_path: Path) -> None:
    _frame(300, seed=1).to_csv(tmp_path / "extract.csv", index=False)
    args = ["datasets", "register", "applications-raw", str(tmp_path / "extract.csv")]
    source = ["--source-uri", "postgresql://dwh/risk", "--query", QUERY]
    assert cli(*args, *source).stdout == "datasets:/applications-raw/1\n"
    # the same content again: the same version, nothing new
    assert cli(*args, *source).stdout == "datasets:/applications-raw/1\n"
    registered = json.loads(cli(*args, "--json").stdout)
    assert (registered["uri"], registered["row_count"]) == ("datasets:/applications-raw/1", 300)
    assert registered["source"]["kind"] == "query" and registered["source"]["query"] == QUERY

    cli("datasets", "register", "other", str(tmp_path / "extract.csv"), "--source-kind", "table")
    listed = json.loads(cli("datasets", "list", "--json").stdout)
    assert [(d["name"], d["latest_version"]) for d in listed["items"]] == [
        ("applications-raw", 1),
        ("other", 1),
    ]
    assert listed["next_cursor"] is None
    table = cli("datasets", "list", "--prefix", "app").stdout
    assert "applications-raw" in table and "other" not in table
    first = json.loads(cli("datasets", "list", "--limit", "1", "--json").stdout)
    rest = json.loads(cli("datasets", "list", "--cursor", first["next_cursor"], "--json").stdout)
    assert [d["name"] for d in first["items"] + rest["items"]] == ["applications-raw", "other"]

    shown = json.loads(cli("datasets", "show", "datasets:/applications-raw/1", "--json").stdout)
    assert [c["name"] for c in shown["schema"]] == ["age", "income", "employment", "defaulted"]
    assert shown["stats"]["employment"] == {"nulls": 0, "distinct": 3}
    assert shown["stats"]["defaulted"]["min"] == 0 and shown["stats"]["defaulted"]["max"] == 1
    assert (shown["source"]["uri"], shown["source"]["kind"]) == ("postgresql://dwh/risk", "query")
    assert shown["used_by"] == [] and shown["steps"] == []
    assert json.loads(cli("datasets", "show", "other", "1", "--json").stdout)["source"]["kind"] == "table"

    text = cli("datasets", "show", "applications-raw").stdout
    for fragment in (
        "datasets:/applications-raw/1",
        shown["digest"],
        "Rows     300",
        QUERY,
        "postgresql://dwh/risk",
    ):
        assert fragment in text
    assert re.search(r"employment\s+│\s+string\s+│\s+no\s+│\s+0\s+│\s+-\s+│\s+-\s+│\s+3", text), text
    assert re.search(r"age\s+│\s+float\s+│\s+yes", text), text


def test_register_with_a_steps_file(cli: Run, tmp_path: Path) -> None:
    frame = _frame(200, seed=2)
    frame.to_csv(tmp_path / "raw.csv", index=False)
    frame.iloc[:150].to_parquet(tmp_path / "train.parquet", index=False)
    cli("datasets", "register", "raw", str(tmp_path / "raw.csv"))
    step = {
        "name": "split",
        "kind": "train_test_split",
        "params": {"test_size": 0.25, "shuffle": False},
        "inputs": ["datasets:/raw/1"],
        "code": {
            "repo_url": "https://git.example.com/risk/prep.git",
            "path": "split.py",
            "revision": "c" * 40,
        },
    }
    for steps_path, name in (
        (_steps_file(tmp_path / "steps.yaml", [step]), "train"),
        (tmp_path / "s.json", "t2"),
    ):
        if steps_path.suffix == ".json":
            steps_path.write_text(json.dumps({"steps": [step]}))
        cli("datasets", "register", name, str(tmp_path / "train.parquet"), "--steps", str(steps_path))
        shown = json.loads(cli("datasets", "show", name, "--json").stdout)
        assert shown["steps"] == [{**step, "columns": []}]
    text = cli("datasets", "show", "train").stdout
    assert "split" in text and "train_test_split" in text and "datasets:/raw/1" in text


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["missing.csv"], "does not exist"),
        (["raw.csv", "--steps", "missing.yaml"], "field '(file)' does not exist"),
        (["raw.csv", "--steps", "bad.yaml"], "field 'steps' must be a list of steps"),
        (["raw.csv", "--steps", "broken.json"], "is not valid json"),
        (["raw.csv", "--steps", "bomb.yaml"], "uses a YAML anchor or alias"),
        (["raw.csv", "--steps", "ghost.yaml"], "input data set of step 'split' not found: datasets:/ghost/1"),
        (["raw.csv", "--source-kind", "api"], ""),  # fine: the control case
    ],
    ids=[
        "missing file",
        "missing steps file",
        "steps not a list",
        "steps not JSON",
        "steps a YAML bomb",
        "unknown input",
        "ok",
    ],
)
def test_bad_register_input_is_one_red_line_and_writes_nothing(
    cli: Run,
    registry: Registry,
    tmp_path: Path,
    args: list[str],
    fragment: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"v": [1, 2]}).to_csv("raw.csv", index=False)
    Path("bad.yaml").write_text("name: split\n")
    Path("broken.json").write_text("[{")
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    bomb += [f"{c}: &{c} [{', '.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    Path("bomb.yaml").write_text("\n".join(["steps:", *("  " + line for line in bomb)]) + "\n")
    _steps_file(Path("ghost.yaml"), [{"name": "split", "inputs": ["datasets:/ghost/1"]}])
    if not fragment:
        assert cli("datasets", "register", "d", *args).stdout == "datasets:/d/1\n"
        return
    _one_line_error(cli("datasets", "register", "d", *args, code=1), fragment)
    assert json.loads(cli("datasets", "list", "--json").stdout)["items"] == []
    stored = Path(unquote(urlparse(registry.artifact_root).path)) / "datasets"
    assert not stored.exists() or not [p for p in stored.rglob("*") if p.is_file()]


def test_usage_errors(cli: Run, tmp_path: Path) -> None:
    result = cli("datasets", "register", "d", "x.csv", "--source-kind", "ftp", code=2)
    assert "ftp" in result.stderr
    result = cli("datasets", "show", "datasets:/d/1", "2", code=2)
    assert "VERSION only with a data set name" in result.stderr
    _one_line_error(cli("datasets", "show", "nope", code=1), "data set not found: nope")
    _one_line_error(cli("lineage", "models:/nope/1", code=1), "not found")
    _one_line_error(cli("diff", "models:/nope/1", "models:/nope/2", code=1), "not found")


def test_a_large_file_gets_a_progress_bar(cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # let rich draw as on a terminal
    pd.DataFrame({"v": [1]}).to_csv(tmp_path / "small.csv", index=False)
    n = 400_000
    pd.DataFrame({"id": np.arange(n), "score": np.linspace(0, 1, n).round(6)}).to_csv(
        tmp_path / "big.csv", index=False
    )
    assert (tmp_path / "big.csv").stat().st_size > 5 * 1024 * 1024

    quiet = cli("datasets", "register", "small", str(tmp_path / "small.csv"))
    assert "Ingesting" not in quiet.stderr
    loud = cli("datasets", "register", "big", str(tmp_path / "big.csv"))
    assert loud.stdout.strip().splitlines()[-1] == "datasets:/big/1"
    assert "Ingesting big" in loud.stderr and "Traceback" not in loud.output


# --------------------------------------------------------------------------- lineage and diff


@pytest.fixture
def story(cli: Run, registry: Registry, tmp_path: Path) -> dict[str, Any]:
    """Raw extract -> split (recorded by hand) -> train/holdout -> sklearn pipeline -> two versions."""
    frame = _frame(400, seed=3)
    frame.to_csv(tmp_path / "extract.csv", index=False)
    frame.iloc[:300].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[300:].to_csv(tmp_path / "holdout.csv", index=False)
    raw = cli(
        "datasets", "register", "applications-raw", str(tmp_path / "extract.csv"),
        "--source-uri", "postgresql://dwh/risk", "--query", QUERY,
    ).stdout.strip()  # fmt: skip
    steps = _steps_file(
        tmp_path / "split.yaml",
        [{"name": "split", "kind": "train_test_split", "params": {"test_size": 0.25}, "inputs": [raw]}],
    )
    train = cli(
        "datasets", "register", "applications-train", str(tmp_path / "train.csv"), "--steps", str(steps)
    )
    holdout = cli(
        "datasets", "register", "applications-holdout", str(tmp_path / "holdout.csv"), "--steps", str(steps)
    )
    data = frame.iloc[:300]
    datasets = {"train": train.stdout.strip(), "holdout": holdout.stdout.strip()}
    source = {"repo_url": "https://git.example.com/risk/credit.git", "path": "train.py"}
    v1 = registry.register(
        "credit-risk",
        _pipeline(0.5).fit(data[FEATURES], data.defaulted),
        datasets=datasets,
        metrics={"auc": 0.8},
        manifest={"source": {**source, "revision": "1" * 40}, "dependencies": {"numpy": "1.26.4"}},
    )
    wider = data.assign(term_months=36)
    v2 = registry.register(
        "credit-risk",
        _pipeline(2.0).fit(wider[FEATURES], wider.defaulted),
        datasets={"train": wider, "holdout": datasets["holdout"]},
        metrics={"auc": 0.83},
        manifest={"source": {**source, "revision": "2" * 40}, "dependencies": {"numpy": "2.0.0"}},
    )
    return {"raw": raw, **datasets, "v1": v1.uri, "v2": v2.uri}


def test_lineage_tree_names_sources_steps_and_data(
    cli: Run, registry: Registry, story: dict[str, Any]
) -> None:
    text = cli("lineage", story["v1"]).stdout
    raw, train = registry.datasets.get(story["raw"]), registry.datasets.get(story["train"])
    lines = text.splitlines()
    assert lines[0].startswith("models:/credit-risk/1 (sklearn.pipeline.Pipeline[")
    for fragment in (
        "source query: postgresql://dwh/risk",  # the raw source, with its query
        QUERY,
        f"input: {raw.uri}  400 rows  {raw.digest[:19]}",  # data sets with rows and digest prefix
        f"train: {train.uri}  300 rows  {train.digest[:19]}",
        "holdout: datasets:/applications-holdout/1  100 rows",
        "produced: split (train_test_split)",  # the split step
        "fit: prep/num/scale (StandardScaler)  columns: age, income",  # the pipeline's steps
        "prep/num/impute (SimpleImputer)  columns: age, income",
        "fit: prep/cat (OneHotEncoder)  columns: employment",
    ):
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    # the tree nests upstream: the raw data set's source one level below it
    (raw_line,) = [i for i, line in enumerate(lines) if f"input: {raw.uri}" in line][:1]
    assert "extracted: source query" in lines[raw_line + 1]
    indent = lines[raw_line].index("input:")
    assert lines[raw_line + 1].index("extracted:") == indent + 4
    assert "(shown above)" in text  # the raw data feeds two branches; printed once


@pytest.mark.parametrize("fmt", ["json", "dot", "mermaid"])
def test_lineage_machine_formats(cli: Run, registry: Registry, story: dict[str, Any], fmt: str) -> None:
    graph = registry.lineage(story["v1"])
    out = cli("lineage", story["v1"], "--format", fmt).stdout
    if fmt == "json":
        assert (
            json.loads(out)
            == json.loads(json.dumps(graph.to_dict()))
            == json.loads(cli("lineage", story["v1"], "--json").stdout)
        )
    elif fmt == "dot":
        assert out == graph.to_dot() and out.startswith("digraph lineage {")
    else:
        assert out == graph.to_mermaid() and out.startswith("flowchart TD")
    for node in graph.nodes.values():
        assert node.label.replace('"', "'") in out.replace('\\"', "'") or node.id in out


def test_datasets_lineage_shows_the_models_using_a_data_set(cli: Run, story: dict[str, Any]) -> None:
    text = cli("datasets", "lineage", story["raw"]).stdout
    assert text.splitlines()[0].startswith(f"{story['raw']}  400 rows  sha256:")
    for fragment in (
        "input: split (train_test_split)",
        f"produced: {story['train']}  300 rows",
        f"produced: {story['holdout']}  100 rows",
        "train: models:/credit-risk/1 (",
        "holdout: models:/credit-risk/1 (",
        "holdout: models:/credit-risk/2 (",
    ):
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    doc = json.loads(cli("datasets", "lineage", "applications-holdout", "--json").stdout)
    assert doc["dataset"] == story["holdout"]
    assert sorted((u["model"], u["role"]) for u in doc["used_by"]) == [
        ("models:/credit-risk/1", "holdout"),
        ("models:/credit-risk/2", "holdout"),
    ]
    assert doc["graph"]["root"] == story["holdout"]


def test_diff_in_text_and_json(cli: Run, story: dict[str, Any]) -> None:
    text = cli("diff", story["v1"], story["v2"]).stdout
    for fragment in (
        "models:/credit-risk/1 -> models:/credit-risk/2",
        "C  0.5 -> 2",
        "auc  0.8000 -> 0.8300",  # metrics to 4 decimals
        f"revision  {'1' * 40} -> {'2' * 40}",
        "numpy  1.26.4 -> 2.0.0",
        "Data set: train",
        f"Version        {story['train']} -> datasets:/credit-risk-train/1",
        "Rows           300 -> 300",
        "Columns added  term_months",
    ):
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    assert "Data set: holdout" not in text  # unchanged

    doc = json.loads(cli("diff", story["v1"], story["v2"], "--json").stdout)
    assert doc["params"] == {"C": {"old": 0.5, "new": 2.0}}
    assert doc["code"] == {"revision": {"old": "1" * 40, "new": "2" * 40}}
    assert doc["dependencies"] == {"numpy": {"old": "1.26.4", "new": "2.0.0"}}
    assert [d["role"] for d in doc["datasets"]] == ["train"]
    assert doc["datasets"][0]["schema"]["added"] == ["term_months"]

    same = cli("diff", story["v1"], "models:/credit-risk/1").stdout
    assert same.strip() == "No differences between models:/credit-risk/1 and models:/credit-risk/1"
