"""Lineage queries and version diffs, on real SQLite and PostgreSQL registries.

The scenario is built through the public API: a raw extract (a SQL query's result saved
as CSV), a train/holdout split recorded as a processing step, a scikit-learn pipeline
(imputation, one-hot encoding, scaling) fitted on the train set, and model versions that
reference the data by role.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelledger import Registry
from modelledger._domain import DatasetVersion, ModelVersion
from modelledger._lineage import LineageGraph

REVISION_1 = "1" * 40
REVISION_2 = "2" * 40
REPO = "https://git.example.com/risk/credit.git"
QUERY = "SELECT * FROM applications WHERE applied_on >= '2024-01-01'"
FEATURES = ["age", "income", "employment"]


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
    frame.loc[rng.random(n) < 0.05, "employment"] = None
    return frame


def _pipeline(c: float) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    prep = ColumnTransformer(
        [
            (
                "num",
                Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
                ["age", "income"],
            ),
            (
                "cat",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore")),
                    ]
                ),
                ["employment"],
            ),
        ]
    )
    return Pipeline([("prep", prep), ("clf", LogisticRegression(C=c, max_iter=500))])


@dataclass
class Story:
    raw: DatasetVersion
    train: DatasetVersion
    holdout: DatasetVersion
    v1: ModelVersion


def _split(
    registry: Registry, raw: DatasetVersion, frame: pd.DataFrame, cut: int
) -> tuple[DatasetVersion, DatasetVersion]:
    step = {
        "name": "split",
        "kind": "train_test_split",
        "params": {"test_size": round(1 - cut / len(frame), 4), "shuffle": False},
        "inputs": [raw.uri],
        "code": {"repo_url": REPO, "path": "prepare.py", "revision": REVISION_1},
    }
    train = registry.datasets.register("applications-train", frame.iloc[:cut], steps=[step], capture=False)
    holdout = registry.datasets.register(
        "applications-holdout", frame.iloc[cut:], steps=[step], capture=False
    )
    return train, holdout


@pytest.fixture
def story(registry: Registry, tmp_path: Path) -> Story:
    frame = _frame(500, seed=4)
    extract = tmp_path / "applications-2024.csv"
    frame.to_csv(extract, index=False)
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
    train, holdout = _split(registry, raw, frame, 400)
    data = registry.datasets.to_pandas(train)
    pipe = _pipeline(0.5).fit(data[FEATURES], data.defaulted)
    v1 = registry.register(
        "credit-risk",
        pipe,
        datasets={"train": train.uri, "holdout": holdout.uri},
        metrics={"auc": 0.81},
        manifest={
            "source": {"repo_url": REPO, "path": "train.py", "revision": REVISION_1},
            "dependencies": {"scikit-learn": "1.4.2", "numpy": "1.26.4"},
        },
    )
    return Story(raw, train, holdout, v1)


def _ancestors(graph: LineageGraph, node: str) -> set[str]:
    seen: set[str] = set()
    todo = [node]
    while todo:
        for edge, parent in graph.upstream(todo.pop()):
            if parent.id not in seen:
                seen.add(parent.id)
                todo.append(edge.source)
    return seen


# --------------------------------------------------------------------------- from a model


def test_upstream_graph_of_a_model_version(registry: Registry, story: Story) -> None:
    graph = registry.lineage(story.v1.uri)
    assert graph.root == story.v1.uri
    model = graph.nodes[story.v1.uri]
    assert model.kind == "model" and model.data["metrics"] == {"auc": 0.81}

    kinds: dict[str, set[str]] = {}
    for node in graph.nodes.values():
        kinds.setdefault(node.kind, set()).add(node.label)
    assert kinds["source"] == {"query: postgresql://dwh.example.com/risk"}
    assert kinds["dataset"] == {
        f"{story.raw.uri} (500 rows)",
        f"{story.train.uri} (400 rows)",
        f"{story.holdout.uri} (100 rows)",
    }
    assert kinds["step"] == {
        "split (train_test_split)",
        "prep/num/impute (SimpleImputer)",
        "prep/num/scale (StandardScaler)",
        "prep/cat/impute (SimpleImputer)",
        "prep/cat/onehot (OneHotEncoder)",
    }
    # everything in the graph is upstream of the model, recursively
    assert _ancestors(graph, story.v1.uri) == set(graph.nodes) - {story.v1.uri}

    edges = {(e.source, e.target, e.label) for e in graph.edges}
    step = {n.label: n.id for n in graph.nodes.values() if n.kind == "step" and n.id.startswith("models:/")}
    source_id = next(n.id for n in graph.nodes.values() if n.kind == "source")
    # raw source -> raw data -> split -> train -> impute -> scale -> model
    assert (source_id, story.raw.uri, "extracted") in edges
    # the split made both the train and the holdout set: one step node, two outputs
    (split,) = [n.id for n in graph.nodes.values() if n.label == "split (train_test_split)"]
    assert (story.raw.uri, split, "input") in edges
    assert (split, story.train.uri, "produced") in edges
    assert (story.train.uri, step["prep/num/impute (SimpleImputer)"], "train") in edges
    assert (step["prep/num/impute (SimpleImputer)"], step["prep/num/scale (StandardScaler)"], "") in edges
    assert (step["prep/num/scale (StandardScaler)"], story.v1.uri, "fit") in edges
    assert (story.train.uri, step["prep/cat/impute (SimpleImputer)"], "train") in edges
    assert (step["prep/cat/impute (SimpleImputer)"], step["prep/cat/onehot (OneHotEncoder)"], "") in edges
    assert (step["prep/cat/onehot (OneHotEncoder)"], story.v1.uri, "fit") in edges
    # ... and the holdout set, beside the model, through the same split
    assert (story.holdout.uri, story.v1.uri, "holdout") in edges
    assert (split, story.holdout.uri, "produced") in edges

    # node data carries what a reader needs: digests, rows, the query, the steps' columns
    assert graph.nodes[story.raw.uri].data["digest"] == story.raw.digest
    assert graph.nodes[source_id].data["query"] == QUERY
    onehot = graph.nodes[step["prep/cat/onehot (OneHotEncoder)"]].data
    assert onehot["columns"] == ["employment"] and onehot["inputs"] == [story.train.uri]


def test_the_graph_is_plain_data(registry: Registry, story: Story) -> None:
    graph = registry.lineage(story.v1.uri)
    doc = json.loads(json.dumps(graph.to_dict(), allow_nan=False))
    assert doc["root"] == story.v1.uri
    assert {n["id"] for n in doc["nodes"]} == set(graph.nodes)
    assert len(doc["edges"]) == len(graph.edges)
    assert all(set(e) == {"from", "to", "label"} for e in doc["edges"])


# --------------------------------------------------------------------------- from a data set


def test_every_model_trained_or_evaluated_on_a_data_set(registry: Registry, story: Story) -> None:
    data = registry.datasets.to_pandas(story.train)
    v2 = registry.register(
        "credit-risk", _pipeline(1.0).fit(data[FEATURES], data.defaulted), datasets={"train": story.train.uri}
    )
    other = registry.register(
        "credit-limit",
        _pipeline(2.0).fit(data[FEATURES], data.defaulted),
        datasets={"test": story.holdout.uri},
    )

    assert registry.datasets.used_by(story.holdout) == [(other.uri, "test"), (story.v1.uri, "holdout")]
    holdout = registry.lineage(story.holdout.uri)
    assert holdout.root == story.holdout.uri
    models = {(e.target, e.label) for e in holdout.edges if holdout.nodes[e.target].kind == "model"}
    assert models == {(story.v1.uri, "holdout"), (other.uri, "test")}
    assert story.raw.uri in holdout.nodes  # and its own upstream

    train = registry.lineage(story.train.uri)
    assert {(e.target, e.label) for e in train.edges if train.nodes[e.target].kind == "model"} == {
        (story.v1.uri, "train"),
        (v2.uri, "train"),
    }

    # from the raw extract: the models trained or evaluated on data made from it
    raw = registry.lineage(story.raw.uri)
    assert {n.id for n in raw.nodes.values() if n.kind == "model"} == {story.v1.uri, v2.uri, other.uri}
    assert {story.train.uri, story.holdout.uri} <= set(raw.nodes)
    assert registry.datasets.used_by(story.raw) == []  # no model used the raw data directly


# --------------------------------------------------------------------------- pictures

DOT_NODE = re.compile(r'^  (n\d+) \[label="((?:[^"\\]|\\.)*)", shape=(box3d|cylinder|box|note|ellipse)\];$')
DOT_EDGE = re.compile(r'^  (n\d+) -> (n\d+)(?: \[label="((?:[^"\\]|\\.)*)"\])?;$')
MERMAID_NODE = re.compile(r'^  (n\d+)(\[\[|\[\(|\[|>)"([^"]*)"(\]\]|\)\]|\])$')
MERMAID_EDGE = re.compile(r"^  (n\d+) -->(?:\|([^|]*)\|)? (n\d+)$")


def _dot_unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def _parse_dot(text: str) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    lines = text.splitlines()
    assert lines[:2] == ["digraph lineage {", "  rankdir=TB;"] and lines[-1] == "}"
    nodes: dict[str, str] = {}
    edges = []
    for line in lines[2:-1]:
        if m := DOT_NODE.match(line):
            nodes[m.group(1)] = _dot_unescape(m.group(2))
        elif m := DOT_EDGE.match(line):
            assert m.group(1) in nodes and m.group(2) in nodes, line
            edges.append((m.group(1), m.group(2), _dot_unescape(m.group(3) or "")))
        else:
            raise AssertionError(f"not a DOT node or edge statement: {line!r}")
    return nodes, edges


def _parse_mermaid(text: str) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    pairs = {"[[": "]]", "[(": ")]", "[": "]", ">": "]"}
    nodes: dict[str, str] = {}
    edges = []
    for line in lines[1:]:
        if m := MERMAID_NODE.match(line):
            assert pairs[m.group(2)] == m.group(4), line
            nodes[m.group(1)] = m.group(3)
        elif m := MERMAID_EDGE.match(line):
            assert m.group(1) in nodes and m.group(3) in nodes, line
            edges.append((m.group(1), m.group(3), m.group(2) or ""))
        else:
            raise AssertionError(f"not a Mermaid node or edge: {line!r}")
    return nodes, edges


def test_dot_and_mermaid_are_well_formed_and_hold_every_node(registry: Registry, story: Story) -> None:
    # a label with a quote and a trailing backslash must not break either syntax
    odd = registry.datasets.register(
        "odd",
        pd.DataFrame({"v": [1]}),
        source={"uri": 'C:\\extracts\\"q1"\\', "kind": "file"},
        steps=[{"name": "copy", "inputs": [story.raw.uri]}],
        capture=False,
    )
    for uri in (story.v1.uri, odd.uri):
        graph = registry.lineage(uri)
        dot_nodes, dot_edges = _parse_dot(graph.to_dot())
        assert sorted(dot_nodes.values()) == sorted(n.label for n in graph.nodes.values())
        assert len(dot_edges) == len(graph.edges)
        ids = {v: k for k, v in zip(graph.nodes, dot_nodes, strict=True)}
        assert {(ids[a], ids[b], label) for a, b, label in dot_edges} == {
            (e.source, e.target, e.label) for e in graph.edges
        }

        m_nodes, m_edges = _parse_mermaid(graph.to_mermaid())
        assert sorted(m_nodes.values()) == sorted(n.label.replace('"', "'") for n in graph.nodes.values())
        assert len(m_edges) == len(graph.edges)
    # the label survives the escaping exactly
    assert 'file: C:\\extracts\\"q1"\\' in _parse_dot(registry.lineage(odd.uri).to_dot())[0].values()


# --------------------------------------------------------------------------- diff


def test_diff_between_two_versions(registry: Registry, story: Story) -> None:
    frame = _frame(700, seed=8).assign(term_months=36)
    train2, _holdout2 = _split(registry, story.raw, frame, 600)
    data = registry.datasets.to_pandas(train2)
    v2 = registry.register(
        "credit-risk",
        _pipeline(1.0).fit(data[FEATURES], data.defaulted),
        datasets={"train": train2.uri, "holdout": story.holdout.uri},
        metrics={"auc": 0.84, "brier": 0.12},
        manifest={
            "source": {"repo_url": REPO, "path": "train.py", "revision": REVISION_2},
            # v1 records this process's packages: v2 adds one that no environment has installed
            "dependencies": {"scikit-learn": "1.5.0", "numpy": "1.26.4", "acme-features": "4.3.0"},
        },
    )
    diff = registry.diff(story.v1.uri, v2.uri)
    assert (diff.a, diff.b) == (story.v1.uri, v2.uri)
    assert diff.params == {"C": (0.5, 1.0)}
    assert diff.metrics == {"auc": (0.81, 0.84), "brier": (None, 0.12)}
    assert diff.code == {"revision": (REVISION_1, REVISION_2)}
    assert diff.dependencies == {"scikit-learn": ("1.4.2", "1.5.0"), "acme-features": (None, "4.3.0")}
    assert diff.framework == {}
    (train,) = diff.datasets  # the holdout set is the same: not a difference
    assert train == {
        "role": "train",
        "old": story.train.uri,
        "new": train2.uri,
        "old_digest": story.train.digest,
        "new_digest": train2.digest,
        "rows": {"old": 400, "new": 600},
        "schema": {"added": ["term_months"], "removed": [], "retyped": {}},
    }
    assert not diff.empty
    doc = json.loads(json.dumps(diff.to_dict()))
    assert doc["params"] == {"C": {"old": 0.5, "new": 1.0}}
    assert doc["dependencies"]["acme-features"] == {"old": None, "new": "4.3.0"}

    back = registry.diff(v2.uri, story.v1.uri)
    assert back.params == {"C": (1.0, 0.5)}
    assert back.datasets[0]["schema"] == {"added": [], "removed": ["term_months"], "retyped": {}}


def test_diff_of_a_version_with_itself_is_empty(registry: Registry, story: Story) -> None:
    assert registry.diff(story.v1.uri, "models:/credit-risk/1").empty
