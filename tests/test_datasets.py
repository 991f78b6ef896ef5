"""Data set versions: ingest, digest, statistics, dedup, sources, processing steps,
scikit-learn step capture, links to models, bad input and bounded memory.

Every test that takes ``registry`` runs on real SQLite and real PostgreSQL; one test runs
on a real S3 protocol server (moto).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from modelledger import InvalidInput, NotFound, Registry
from modelledger._data import sklearn_steps
from modelledger._domain import ColumnSpec, DatasetSource

# --------------------------------------------------------------------------- helpers


def _root(registry: Registry) -> Path:
    url = registry.artifact_root
    assert url.startswith("file://"), url
    return Path(unquote(urlparse(url).path))


def _entries(registry: Registry) -> set[str]:
    """Every file and folder under the artefact root's datasets/ (relative paths)."""
    base = _root(registry) / "datasets"
    return {p.relative_to(base).as_posix() for p in base.rglob("*")} if base.exists() else set()


def _files(registry: Registry) -> list[str]:
    base = _root(registry) / "datasets"
    return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())


def _codecs(source: Any) -> set[str]:
    meta = pq.ParquetFile(source).metadata
    return {
        meta.row_group(g).column(c).compression
        for g in range(meta.num_row_groups)
        for c in range(meta.num_columns)
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def applications() -> pd.DataFrame:
    """Credit applications: ints, floats with gaps, strings and dates (deterministic)."""
    rng = np.random.default_rng(3)
    n = 1_000
    frame = pd.DataFrame(
        {
            "application_id": np.arange(1, n + 1, dtype=np.int64),
            "age": rng.integers(18, 75, n),
            "income": rng.normal(52_000, 15_000, n).round(2),
            "employment": rng.choice(["salaried", "self-employed", "unemployed"], n),
            "applied_on": [dt.date(2024, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 365, n)],
        }
    )
    frame.loc[frame.index % 10 == 0, "income"] = np.nan
    return frame


@pytest.fixture
def memory_urls() -> Iterator[list[str]]:
    """memory:// URLs written by a test, removed afterwards (the filesystem is per process)."""
    urls: list[str] = []
    yield urls
    fs = fsspec.filesystem("memory")
    for url in urls:
        if fs.exists(url):
            fs.rm(url)


FORMS = ["dataframe", "table", "csv", "parquet", "file-url", "memory-url"]


def _as_form(form: str, frame: pd.DataFrame, tmp_path: Path, memory_urls: list[str]) -> Any:
    if form == "dataframe":
        return frame
    if form == "table":
        table = pa.Table.from_pandas(frame, preserve_index=False)
        # re-cut into uneven chunks: the stored copy and the digest must not care
        return pa.Table.from_batches(table.to_batches(max_chunksize=333))
    csv = tmp_path / "applications.csv"
    frame.to_csv(csv, index=False)
    if form == "csv":
        return str(csv)
    if form == "file-url":
        return csv.as_uri()
    if form == "memory-url":
        url = f"memory://ml-{uuid.uuid4().hex[:10]}/extracts/applications.csv"
        with fsspec.open(url, "wb") as fh:
            fh.write(csv.read_bytes())
        memory_urls.append(url)
        return url
    path = tmp_path / "applications.parquet"
    frame.to_parquet(path, index=False)
    return path  # a PathLike, not a str


# --------------------------------------------------------------------------- ingest


@pytest.mark.parametrize("form", FORMS)
def test_every_input_form_becomes_the_same_compressed_parquet_copy(
    registry: Registry, applications: pd.DataFrame, tmp_path: Path, form: str, memory_urls: list[str]
) -> None:
    dv = registry.datasets.register("applications", _as_form(form, applications, tmp_path, memory_urls))

    assert dv.uri == "datasets:/applications/1"
    assert dv.row_count == 1_000
    assert dv.path.startswith("datasets/applications/") and dv.path.endswith(".parquet")
    stored = _root(registry) / dv.path
    assert stored.is_file()
    assert stored.stat().st_size == dv.size_bytes
    assert _sha256(stored) == dv.file_sha256
    assert _codecs(stored) == {"ZSTD"}
    assert pq.ParquetFile(stored).metadata.num_rows == 1_000
    # reads back equal to the original, whatever form it came in
    pd.testing.assert_frame_equal(registry.datasets.to_pandas(dv), applications)
    assert registry.datasets.read(dv.uri).num_rows == 1_000
    # the digest is over the data: every form of the same rows gets the same one
    reference = registry.datasets.register("reference", applications)
    assert dv.digest == reference.digest
    if isinstance(dv.source.uri, str):
        assert dv.source.kind == "file"


def test_schema_row_count_and_column_statistics(registry: Registry) -> None:
    frame = pd.DataFrame(
        {
            "n": [3, 1, 7, 5],
            "x": [0.5, None, 2.25, -1.0],
            "s": ["a", "b", None, "a"],
            "when": pd.to_datetime(["2024-03-01", "2023-12-31", "2024-06-30", "2024-01-15"]),
            "flag": [True, False, True, True],
        }
    )
    dv = registry.datasets.register("stats", frame)
    expected_stats = {
        "n": {"nulls": 0, "min": 1, "max": 7},
        "x": {"nulls": 1, "min": -1.0, "max": 2.25},
        "s": {"nulls": 1, "distinct": 2},
        "when": {"nulls": 0, "min": "2023-12-31T00:00:00", "max": "2024-06-30T00:00:00"},
        "flag": {"nulls": 0, "distinct": 2},
    }
    expected_schema = (
        ColumnSpec("n", "integer", False),
        ColumnSpec("x", "float", True),
        ColumnSpec("s", "string", True),
        ColumnSpec("when", "datetime", False),
        ColumnSpec("flag", "boolean", False),
    )
    for got in (dv, registry.datasets.get("stats"), registry.datasets.get("datasets:/stats/1")):
        assert got.row_count == 4
        assert got.schema == expected_schema
        assert {k: dict(v) for k, v in got.stats.items()} == expected_stats


def test_statistics_stream_across_batches_and_cap_distinct_counts(registry: Registry) -> None:
    n = 150_000  # three digest slices
    frame = pd.DataFrame({"i": np.arange(n) - 70_000, "id": [f"A{i:06d}" for i in range(n)]})
    dv = registry.datasets.register("wide", frame)
    assert dv.stats["i"] == {"nulls": 0, "min": -70_000, "max": n - 70_001}
    assert dv.stats["id"] == {"nulls": 0, "distinct": ">10000"}
    meta = pq.ParquetFile(_root(registry) / dv.path).metadata
    # one row group per digest slice, whatever the input chunking
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [65_536, 65_536, 18_928]


def test_nested_columns_are_stored_with_null_counts_only(registry: Registry) -> None:
    frame = pd.DataFrame({"tags": [["a", "b"], [], None], "n": [1, 2, 3]})
    dv = registry.datasets.register("nested", frame)
    assert dv.schema[0] == ColumnSpec("tags", "object", True)
    assert dv.stats["tags"] == {"nulls": 1}
    assert registry.datasets.read(dv).column("tags").to_pylist() == [["a", "b"], [], None]


def _expected_digest(table: pa.Table) -> str:
    """The documented v1 content digest: a header, the schema, then Arrow IPC per 65,536 rows."""
    h = hashlib.sha256(
        b"modelledger.dataset.v1\x00"
        + json.dumps([[f.name, str(f.type)] for f in table.schema], separators=(",", ":")).encode()
    )
    for start in range(0, table.num_rows, 65_536):
        piece = table.slice(start, 65_536).combine_chunks().to_batches()[0]
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, piece.schema) as writer:
            writer.write_batch(piece)
        h.update(sink.getvalue())
    return "sha256:" + h.hexdigest()


def test_the_digest_is_pinned_and_independent_of_chunking(registry: Registry) -> None:
    n = 70_000
    table = pa.table(
        {"id": pa.array(np.arange(n), pa.int64()), "band": pa.array([f"b{i % 7}" for i in range(n)])}
    )
    dv = registry.datasets.register("pinned", table)
    assert dv.digest == _expected_digest(table)
    # the same rows in other chunks, or from pandas, are the same content
    rechunked = pa.Table.from_batches(table.to_batches(max_chunksize=1_001))
    assert registry.datasets.register("pinned", rechunked).uri == dv.uri
    assert registry.datasets.register("pinned", table.to_pandas()).uri == dv.uri
    # one changed value is other content
    changed = table.set_column(0, "id", pa.array(np.r_[np.arange(n - 1), [n + 5]], pa.int64()))
    assert registry.datasets.register("pinned", changed).digest != dv.digest


def test_null_slots_do_not_change_the_digest(registry: Registry, tmp_path: Path) -> None:
    # pandas leaves NaN under a null, pyarrow's CSV reader leaves 0: same data all the same
    frame = pd.DataFrame(
        {
            "x": [1.5, np.nan, 3.0],
            "s": ["a", None, "c"],
            "d": pd.to_datetime(["2024-01-01", None, "2024-01-03"]),
        }
    )
    from_pandas = registry.datasets.register("gaps", frame)
    frame.to_csv(tmp_path / "gaps.csv", index=False)
    table = pacsv.read_csv(
        tmp_path / "gaps.csv", convert_options=pacsv.ConvertOptions(strings_can_be_null=True)
    )
    table = table.set_column(2, "d", table.column("d").cast(pa.timestamp("us")))
    assert from_pandas.schema == registry.datasets.register("gaps-csv", table).schema
    assert registry.datasets.register("gaps", table).uri == from_pandas.uri


# --------------------------------------------------------------------------- dedup


def test_identical_content_returns_the_existing_version_and_stores_nothing(
    registry: Registry, applications: pd.DataFrame, tmp_path: Path
) -> None:
    first = registry.datasets.register("applications", applications)
    files = _files(registry)
    assert len(files) == 1

    again = registry.datasets.register("applications", applications.copy())
    table = registry.datasets.register(
        "applications", pa.Table.from_pandas(applications, preserve_index=False)
    )
    applications.to_csv(tmp_path / "a.csv", index=False)
    from_csv = registry.datasets.register("applications", tmp_path / "a.csv")
    for dv in (again, table, from_csv):
        assert (dv.uri, dv.key, dv.digest, dv.path) == (first.uri, first.key, first.digest, first.path)
    assert _files(registry) == files
    assert [v.version for v in registry.datasets.versions("applications")] == [1]

    changed = applications.assign(age=applications.age + 1)
    second = registry.datasets.register("applications", changed)
    assert second.uri == "datasets:/applications/2"
    assert len(_files(registry)) == 2
    assert [v.version for v in registry.datasets.versions("applications")] == [2, 1]
    listed = registry.datasets.list().items
    assert [(d["name"], d["latest_version"]) for d in listed] == [("applications", 2)]


def test_list_and_versions_page_through_cursors(registry: Registry) -> None:
    for name in ("loans-a", "loans-b", "loans-c", "other"):
        registry.datasets.register(name, pd.DataFrame({"v": [len(name)]}))
    page = registry.datasets.list(prefix="loans-", limit=2)
    assert [d["name"] for d in page] == ["loans-a", "loans-b"]
    rest = registry.datasets.list(prefix="loans-", limit=2, cursor=page.next_cursor)
    assert [d["name"] for d in rest] == ["loans-c"] and rest.next_cursor is None
    for i in range(3):
        registry.datasets.register("grows", pd.DataFrame({"v": range(i + 1)}))
    first = registry.datasets.versions("grows", limit=2)
    assert [v.version for v in first] == [3, 2]
    assert [v.version for v in registry.datasets.versions("grows", cursor=first.next_cursor)] == [1]
    with pytest.raises(NotFound, match="no-such"):
        registry.datasets.versions("no-such")
    with pytest.raises(NotFound, match="datasets:/grows/9"):
        registry.datasets.get("grows", 9)


# --------------------------------------------------------------------------- sources


@pytest.mark.parametrize(
    "source",
    [
        {"uri": "s3://landing/loans/2024-06.csv", "kind": "file"},
        {"uri": "postgresql://dwh/risk", "kind": "table", "query": None},
        {
            "uri": "postgresql://dwh/risk",
            "kind": "query",
            "query": "SELECT * FROM applications WHERE applied_on >= '2024-01-01'",
            "extracted_at": "2024-06-30T22:15:00+00:00",
        },
        {
            "uri": "https://api.bureau.example/v2/scores",
            "kind": "api",
            "extracted_at": "2024-07-01T08:00:00+00:00",
        },
    ],
    ids=["file", "table", "query", "api"],
)
def test_sources_are_recorded(registry: Registry, source: dict[str, Any]) -> None:
    code = {"repo_url": "https://git.example.com/risk/etl.git", "path": "extract.py", "revision": "a" * 40}
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    dv = registry.datasets.register("raw", pd.DataFrame({"v": [1, 2]}), source={**source, "code": code})
    got = registry.datasets.get("datasets:/raw/1").source
    assert got == dv.source
    assert (got.uri, got.kind, got.query, dict(got.code)) == (
        source["uri"],
        source["kind"],
        source.get("query"),
        code,
    )
    if "extracted_at" in source:
        assert got.extracted_at == source["extracted_at"]
    else:  # defaults to now
        assert got.extracted_at is not None
        assert before <= dt.datetime.fromisoformat(got.extracted_at) <= dt.datetime.now(dt.timezone.utc)


def test_default_sources(registry: Registry, tmp_path: Path) -> None:
    pd.DataFrame({"v": [1]}).to_csv(tmp_path / "x.csv", index=False)
    assert registry.datasets.register("from-file", tmp_path / "x.csv").source.uri == str(tmp_path / "x.csv")
    assert registry.datasets.register("from-file", tmp_path / "x.csv").source.kind == "file"
    frame_source = registry.datasets.register("from-frame", pd.DataFrame({"v": [2]})).source
    assert (frame_source.uri, frame_source.kind) == (None, "dataframe")
    explicit = DatasetSource(uri="postgresql://dwh/t", kind="table", extracted_at="2024-01-01T00:00:00+00:00")
    assert (
        registry.datasets.register("typed", pd.DataFrame({"v": [3]}), source=explicit, capture=False).source
        == explicit
    )


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-c", "user.email=etl@example.com", "-c", "user.name=ETL", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


EXTRACT_SCRIPT = """
import json, sys
import pandas as pd
from modelledger import Registry

registry = Registry.open(sys.argv[1], artifacts=sys.argv[2])
frame = pd.DataFrame({"id": [1, 2, 3, 4], "amount": [10.5, 20.0, 7.25, 8.0]})
raw = registry.datasets.register(
    "loans-raw", frame, source={"uri": "https://api.bureau.example/loans", "kind": "api"}
)
clean = registry.datasets.register(
    "loans-clean",
    frame[frame.amount > 7.5],
    steps=[{"name": "drop-small", "kind": "filter", "params": {"min_amount": 7.5}, "inputs": [raw.uri]}],
)
print(json.dumps({"raw": raw.uri, "clean": clean.uri}))
"""


def test_extracting_code_is_captured_from_git(registry: Registry, db_url: str, tmp_path: Path) -> None:
    repo = tmp_path / "etl"
    (repo / "jobs").mkdir(parents=True)
    script = repo / "jobs" / "extract.py"
    script.write_text(textwrap.dedent(EXTRACT_SCRIPT), encoding="utf-8")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "remote", "add", "origin", "https://git.example.com/risk/etl.git")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "extract job")
    revision = _git(repo, "rev-parse", "HEAD")

    run = subprocess.run(
        [sys.executable, str(script), db_url, registry.artifact_root],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, "MODELLEDGER_USER": "etl@example.com"},
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    uris = json.loads(run.stdout.strip().splitlines()[-1])
    code = {
        "repo_url": "https://git.example.com/risk/etl.git",
        "path": "jobs/extract.py",
        "revision": revision,
        "dirty": False,
        "branch": "main",
    }
    raw = registry.datasets.get(uris["raw"])
    assert dict(raw.source.code) == code
    assert raw.created_by == "etl@example.com"
    clean = registry.datasets.get(uris["clean"])
    (step,) = clean.steps
    assert (step.name, step.kind, dict(step.params), step.inputs) == (
        "drop-small",
        "filter",
        {"min_amount": 7.5},
        (raw.uri,),
    )
    assert dict(step.code) == code


# --------------------------------------------------------------------------- processing steps


def test_hand_recorded_steps_form_a_graph(registry: Registry, applications: pd.DataFrame) -> None:
    raw = registry.datasets.register(
        "applications-raw",
        applications,
        source={"uri": "postgresql://dwh/risk", "kind": "query", "query": "SELECT 1"},
    )
    regions = registry.datasets.register("regions", pd.DataFrame({"region": ["N", "S"], "risk": [0.1, 0.2]}))
    clean = registry.datasets.register(
        "applications-clean",
        applications.dropna(),
        steps=[{"name": "drop-gaps", "kind": "dropna", "params": {"how": "any"}, "inputs": [raw.uri]}],
        capture=False,
    )
    features = registry.datasets.register(
        "features",
        applications.dropna().assign(region="N"),
        steps=[
            # by name (pinned to the latest version now) and by name@latest
            {
                "name": "join-regions",
                "kind": "join",
                "params": {"on": "region"},
                "inputs": ["applications-clean", "datasets:/regions@latest"],
                "columns": ["region"],
            },
            {
                "name": "derive-ratio",
                "params": {"formula": "loan / income"},
                "inputs": [clean.uri],
                "code": {"path": "features.py"},
            },
        ],
        capture=False,
    )
    got = registry.datasets.get(features.uri)
    assert [s.name for s in got.steps] == ["join-regions", "derive-ratio"]
    join, derive = got.steps
    assert join.inputs == (clean.uri, regions.uri)
    assert (join.kind, dict(join.params), join.columns) == ("join", {"on": "region"}, ("region",))
    assert (derive.kind, derive.inputs, dict(derive.code)) == (
        "manual",
        (clean.uri,),
        {"path": "features.py"},
    )
    assert registry.datasets.get(clean.uri).steps[0].inputs == (raw.uri,)

    graph = registry.lineage(features.uri)
    datasets = {n.id for n in graph.nodes.values() if n.kind == "dataset"}
    assert datasets == {raw.uri, regions.uri, clean.uri, features.uri}
    assert {n.label for n in graph.nodes.values() if n.kind == "source"} == {"query: postgresql://dwh/risk"}
    edges = {(e.source, e.target, e.label) for e in graph.edges}
    assert (raw.uri, f"{clean.uri}#step1", "input") in edges
    assert (f"{clean.uri}#step1", clean.uri, "produced") in edges
    assert (clean.uri, f"{features.uri}#step1", "input") in edges
    assert (regions.uri, f"{features.uri}#step1", "input") in edges


@pytest.mark.parametrize(
    ("step", "fragment"),
    [
        ({"kind": "filter"}, "non-empty 'name'"),
        ({"name": ""}, "non-empty 'name'"),
        ({"name": "x", "params": {"fn": object()}}, "JSON values only"),
        ({"name": "x", "outputs": []}, "unknown processing step field"),
    ],
)
def test_malformed_steps_are_refused(registry: Registry, step: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        registry.datasets.register("d", pd.DataFrame({"v": [1]}), steps=[step])
    assert registry.datasets.list().items == []
    assert _entries(registry) == set()


# --------------------------------------------------------------------------- scikit-learn steps


def _credit_frame(n: int = 600, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 75, n).astype(float),
            "income": rng.normal(52_000, 15_000, n).round(2),
            "employment": rng.choice(["salaried", "self-employed", "unemployed"], n).astype(object),
            "term_months": rng.choice([12, 24, 36], n),
        }
    )
    frame["defaulted"] = ((frame.income < 45_000) ^ (rng.random(n) < 0.1)).astype(int)
    frame.loc[rng.random(n) < 0.1, "age"] = np.nan
    frame.loc[rng.random(n) < 0.1, "income"] = np.nan
    frame.loc[rng.random(n) < 0.05, "employment"] = None
    return frame


def _pipeline() -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="most_frequent")),
            ("onehot", OneHotEncoder(handle_unknown="ignore")),
        ]
    )
    prep = ColumnTransformer(
        [("num", numeric, ["age", "income"]), ("cat", categorical, ["employment"])], remainder="passthrough"
    )
    return Pipeline([("prep", prep), ("clf", LogisticRegression(C=0.5, max_iter=500))])


FEATURES = ["age", "income", "employment", "term_months"]


def _check_captured_steps(steps: list[dict[str, Any]], train: pd.DataFrame, inputs: list[str]) -> None:
    assert [(s["name"], s["kind"]) for s in steps] == [
        ("prep/num/impute", "SimpleImputer"),
        ("prep/num/scale", "StandardScaler"),
        ("prep/cat/impute", "SimpleImputer"),
        ("prep/cat/onehot", "OneHotEncoder"),
        ("prep/remainder", "passthrough"),
    ]
    by_name = {s["name"]: s for s in steps}
    for s in steps:
        assert s["inputs"] == inputs
    num_impute, scale = by_name["prep/num/impute"], by_name["prep/num/scale"]
    assert num_impute["columns"] == ["age", "income"] and scale["columns"] == ["age", "income"]
    assert num_impute["params"]["strategy"] == "median"
    medians = [float(np.nanmedian(train.age)), float(np.nanmedian(train.income))]
    assert num_impute["params"]["fitted"]["statistics"] == pytest.approx(medians)
    imputed = train[["age", "income"]].fillna(dict(zip(["age", "income"], medians, strict=True)))
    assert scale["params"]["with_mean"] is True
    assert scale["params"]["fitted"]["mean"] == pytest.approx(imputed.mean().tolist())
    assert scale["params"]["fitted"]["scale"] == pytest.approx(imputed.std(ddof=0).tolist())
    cat_impute, onehot = by_name["prep/cat/impute"], by_name["prep/cat/onehot"]
    assert cat_impute["columns"] == ["employment"] and onehot["columns"] == ["employment"]
    assert cat_impute["params"]["strategy"] == "most_frequent"
    assert cat_impute["params"]["fitted"]["statistics"] == [train.employment.mode()[0]]
    assert onehot["params"]["handle_unknown"] == "ignore"
    assert onehot["params"]["fitted"]["categories"] == [sorted(train.employment.dropna().unique())]
    assert by_name["prep/remainder"]["columns"] == ["term_months"]
    json.dumps(steps, allow_nan=False)  # plain JSON all the way down


def test_steps_are_captured_from_a_fitted_sklearn_pipeline(registry: Registry) -> None:
    frame = _credit_frame()
    train, holdout = frame.iloc[:480], frame.iloc[480:]
    pipe = _pipeline().fit(train[FEATURES], train.defaulted)

    direct = [s.to_dict() for s in sklearn_steps(pipe, inputs=["datasets:/t/1"], code={"path": "train.py"})]
    _check_captured_steps(direct, train, ["datasets:/t/1"])
    assert all(s["code"] == {"path": "train.py"} for s in direct)

    mv = registry.register(
        "credit-risk", pipe, datasets={"train": train, "holdout": holdout}, sample_input=train[FEATURES][:5]
    )
    train_dv = registry.datasets.get("credit-risk-train")
    assert train_dv.row_count == 480
    _check_captured_steps(list(mv.manifest["steps"]), train, [train_dv.uri])
    # the algorithm is no processing step; its hyperparameters are the version's params
    assert "clf" not in {s["name"] for s in mv.manifest["steps"]}
    assert mv.manifest["params"]["C"] == 0.5 and mv.manifest["params"]["max_iter"] == 500


# --------------------------------------------------------------------------- links to models


def test_model_versions_link_data_sets_by_role(registry: Registry) -> None:
    frame = _credit_frame()
    train, validation, holdout, test = (
        frame.iloc[:300],
        frame.iloc[300:400],
        frame.iloc[400:500],
        frame.iloc[500:],
    )
    pipe = _pipeline().fit(train[FEATURES], train.defaulted)
    val_dv = registry.datasets.register("applications-validation", validation)
    test_dv = registry.datasets.register("applications-test", test)

    mv = registry.register(
        "credit-risk",
        pipe,
        datasets={"train": train, "validation": val_dv.uri, "holdout": holdout, "test": test_dv},
    )
    refs = {d["role"]: d for d in mv.manifest["datasets"]}
    assert set(refs) == {"train", "validation", "holdout", "test"}
    assert refs["train"]["uri"] == "datasets:/credit-risk-train/1"  # registered for us
    assert refs["holdout"]["uri"] == "datasets:/credit-risk-holdout/1"
    assert refs["validation"]["uri"] == val_dv.uri and refs["test"]["uri"] == test_dv.uri
    for role, ref in refs.items():
        dv = registry.datasets.get(ref["uri"])
        assert (ref["digest"], ref["rows"]) == (dv.digest, dv.row_count)
        assert registry.datasets.used_by(dv) == [(mv.uri, role)]
    # the same training data again is the same data set version
    mv2 = registry.register("credit-risk", pipe, datasets={"train": train.copy()})
    assert mv2.manifest["datasets"][0]["uri"] == "datasets:/credit-risk-train/1"
    assert registry.datasets.used_by("datasets:/credit-risk-train/1") == [
        (mv.uri, "train"),
        (mv2.uri, "train"),
    ]


def test_an_unknown_role_writes_nothing(registry: Registry) -> None:
    frame = _credit_frame()
    pipe = _pipeline().fit(frame[FEATURES], frame.defaulted)
    with pytest.raises(InvalidInput, match="unknown data set role 'calibration'"):
        registry.register("credit-risk", pipe, datasets={"calibration": frame})
    with pytest.raises(NotFound, match="nope"):
        registry.register("credit-risk", pipe, datasets={"train": "datasets:/nope/1"})
    # a bad role or reference listed after data to register: the data is not registered either
    with pytest.raises(InvalidInput, match="unknown data set role 'calibration'"):
        registry.register("credit-risk", pipe, datasets={"train": frame, "calibration": frame})
    with pytest.raises(NotFound, match="nope"):
        registry.register("credit-risk", pipe, datasets={"train": frame, "holdout": "datasets:/nope/1"})
    assert registry.datasets.list().items == []
    assert _entries(registry) == set()
    assert list(registry.list_models()) == []


def test_the_holdout_set_re_evaluates_the_model_later(registry: Registry, db_url: str) -> None:
    frame = _credit_frame(n=800, seed=9)
    train, holdout = frame.iloc[:600], frame.iloc[600:]
    pipe = _pipeline().fit(train[FEATURES], train.defaulted)
    accuracy = float((pipe.predict(holdout[FEATURES]) == holdout.defaulted).mean())
    mv = registry.register(
        "credit-risk", pipe, datasets={"train": train, "holdout": holdout}, metrics={"accuracy": accuracy}
    )

    # later, in another session: only the registry
    with Registry.open(db_url, artifacts=registry.artifact_root) as later:
        version = later.get_version("models:/credit-risk/1")
        (ref,) = [d for d in version.manifest["datasets"] if d["role"] == "holdout"]
        data = later.datasets.to_pandas(ref["uri"])
        model = later.load(version.uri)
        again = float((np.asarray(model.predict(data[FEATURES])) == data.defaulted.to_numpy()).mean())
    assert len(data) == 200
    assert again == pytest.approx(accuracy) == pytest.approx(mv.manifest["metrics"]["accuracy"])


# --------------------------------------------------------------------------- bad input


def _late_csv(path: Path) -> Path:
    # more than one 1 MB read block of integers, then text: fails mid-stream, after writing began
    path.write_text("id,score\n" + "".join(f"{i},{i % 97}\n" for i in range(150_000)) + "150000,oops\n")
    return path


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _interval_table() -> pa.Table:
    return pa.table({"i": pa.array([(1, 2, 3)], pa.month_day_nano_interval())})


ONE = {"v": [1]}
# case -> (make the data from tmp_path, register() keywords, error, message fragment)
BAD: dict[str, tuple[Callable[[Path], Any], dict[str, Any], type[Exception], str]] = {
    "missing path": (lambda t: str(t / "missing.csv"), {}, InvalidInput, "does not exist"),
    "missing file URL": (lambda t: (t / "missing.csv").as_uri(), {}, InvalidInput, "cannot open"),
    "missing memory URL": (lambda t: "memory://nowhere/x.parquet", {}, InvalidInput, "cannot open"),
    "a directory": (lambda t: _folder(t / "folder.csv"), {}, InvalidInput, "not a file"),
    "unknown format": (lambda t: str(t / "book.xlsx"), {}, InvalidInput, "cannot tell the format"),
    "corrupt parquet": (
        lambda t: _written(t / "corrupt.parquet", b"PAR1" + bytes(range(256)) * 8),
        {},
        InvalidInput,
        "not a readable Parquet file",
    ),
    "binary blob named .csv": (
        lambda t: _written(t / "blob.csv", np.random.default_rng(0).bytes(64_000)),
        {},
        InvalidInput,
        "not a readable CSV file",
    ),
    "type change after the first block": (
        lambda t: _late_csv(t / "late.csv"),
        {},
        InvalidInput,
        "not a readable CSV file",
    ),
    "objects of mixed types": (
        lambda t: pd.DataFrame({"m": [1, "a", 2.5]}),
        {},
        InvalidInput,
        "cannot be stored as Parquet",
    ),
    "a type Parquet cannot hold": (
        lambda t: _interval_table(),
        {},
        InvalidInput,
        "cannot be stored as Parquet",
    ),
    "no columns": (lambda t: pa.table({}), {}, InvalidInput, "no rows and no columns"),
    "not data": (lambda t: 42, {}, InvalidInput, "cannot register a int"),
    "a bad source kind": (
        lambda t: pd.DataFrame(ONE),
        {"source": {"kind": "ftp"}},
        InvalidInput,
        "kind must be",
    ),
    "a query without text": (
        lambda t: pd.DataFrame(ONE),
        {"source": {"kind": "query"}},
        InvalidInput,
        "query text",
    ),
    "a step on an unknown data set": (
        lambda t: pd.DataFrame(ONE),
        {"steps": [{"name": "split", "inputs": ["datasets:/ghost/1"]}]},
        NotFound,
        "input data set of step 'split' not found: datasets:/ghost/1",
    ),
    "a step on an unknown version": (
        lambda t: pd.DataFrame(ONE),
        {"steps": [{"name": "split", "inputs": ["datasets:/raw/7"]}]},
        NotFound,
        "not found: datasets:/raw/7",
    ),
    "a step on a bad identifier": (
        lambda t: pd.DataFrame(ONE),
        {"steps": [{"name": "split", "inputs": ["datasets:/raw/x"]}]},
        InvalidInput,
        "invalid data set identifier",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
@pytest.mark.parametrize("name", ["raw", "fresh"], ids=["existing name", "new name"])
def test_bad_input_gets_a_clear_error_and_writes_nothing(
    registry: Registry, tmp_path: Path, case: str, name: str
) -> None:
    registry.datasets.register("raw", pd.DataFrame({"v": [1, 2, 3]}))
    make, kwargs, error, fragment = BAD[case]
    data = make(tmp_path)
    entries, listed = _entries(registry), registry.datasets.list().items
    with pytest.raises(error) as caught:
        registry.datasets.register(name, data, **kwargs)
    assert fragment in str(caught.value)
    assert registry.datasets.list().items == listed
    assert [v.uri for v in registry.datasets.versions("raw")] == ["datasets:/raw/1"]
    assert _entries(registry) == entries  # no file, no folder, no .staging leftover


# --------------------------------------------------------------------------- S3


def test_register_and_read_on_s3(
    db_url: str, s3_artifacts: tuple[str, dict[str, Any]], applications: pd.DataFrame, tmp_path: Path
) -> None:
    url, options = s3_artifacts
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **options)
    with Registry.open(db_url, artifacts=url, storage_options=options) as registry:
        dv = registry.datasets.register("applications", applications)
        applications.to_csv(tmp_path / "a.csv", index=False)
        assert registry.datasets.register("applications", tmp_path / "a.csv").uri == dv.uri
        stored = f"{url.removeprefix('s3://')}/{dv.path}"
        with fs.open(stored, "rb") as fh:
            assert _codecs(fh) == {"ZSTD"}
        assert fs.size(stored) == dv.size_bytes
        pd.testing.assert_frame_equal(registry.datasets.to_pandas(dv.uri), applications)

        corrupt = tmp_path / "corrupt.parquet"
        corrupt.write_bytes(b"PAR1" + b"\0" * 100)
        with pytest.raises(InvalidInput):
            registry.datasets.register("applications", corrupt)
        with pytest.raises(InvalidInput):
            registry.datasets.register(
                "applications", pa.table({"i": pa.array([(1, 2, 3)], pa.month_day_nano_interval())})
            )
        fs.invalidate_cache()
        objects = [p for p in fs.find(f"{url.removeprefix('s3://')}/datasets") if not p.endswith("/.claimed")]
        assert objects == [stored]
        assert [v.version for v in registry.datasets.versions("applications")] == [1]


# --------------------------------------------------------------------------- bounded memory


INGEST_CHILD = """
import json, resource, sys, time
from modelledger import Registry

registry = Registry.open(sys.argv[1], artifacts=sys.argv[2])
started = time.perf_counter()
dv = registry.datasets.register("big", sys.argv[3])
print(json.dumps({
    "seconds": time.perf_counter() - started,
    "rows": dv.row_count,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""

# Linux carries ru_maxrss over fork/vfork + exec: a child starts with its parent's resident set
# (pytest's, hundreds of MB here) as its own maximum. A small launcher process in between
# keeps the figure the ingest's own.
LAUNCHER = """
import subprocess, sys
sys.exit(subprocess.run(sys.argv[1:]).returncode)
"""


def _write_big_csv(path: Path, size: int) -> int:
    rng = np.random.default_rng(1)
    n = 100_000
    rows = 0
    with path.open("wb") as fh:
        writer = None
        while fh.tell() < size:
            table = pa.table(
                {
                    "application_id": np.arange(rows, rows + n),
                    "applied_on": np.datetime64("2020-01-01")
                    + rng.integers(0, 2000, n).astype("timedelta64[D]"),
                    "income": rng.lognormal(10.8, 0.5, n).round(2),
                    "employment": rng.choice(["salaried", "self-employed", "unemployed", "retired"], n),
                    "region": rng.choice([f"R{i:02d}" for i in range(48)], n),
                    "loan_amount": rng.gamma(2.0, 6_000, n).round(2),
                    "credit_score": rng.integers(300, 850, n),
                }
            )
            writer = writer or pacsv.CSVWriter(fh, table.schema)
            writer.write_table(table)
            rows += n
        assert writer is not None
        writer.close()
    return rows


def test_a_large_csv_ingests_in_bounded_memory(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'big.db'}"
    registry = Registry.open(url, artifacts=str(tmp_path / "store"))
    registry.init()
    csv = tmp_path / "big.csv"
    rows = _write_big_csv(csv, 150 * 1024 * 1024)
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            LAUNCHER,
            sys.executable,
            "-c",
            INGEST_CHILD,
            url,
            registry.artifact_root,
            str(csv),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["rows"] == rows
    assert got["peak_rss_mb"] < 300, got
    dv = registry.datasets.get("big")
    assert dv.row_count == rows and dv.size_bytes < csv.stat().st_size / 2
    assert dv.stats["employment"] == {"nulls": 0, "distinct": 4}
    registry.close()


# --------------------------------------------------------------------------- preview and open


def _three_row_groups(registry: Registry) -> Any:
    """A data set stored as three row groups (65,536 + 65,536 + 8,928 rows)."""
    rng = np.random.default_rng(11)
    n = 140_000
    frame = pd.DataFrame({"id": np.arange(n, dtype=np.int64), "score": rng.normal(0, 1, n)})
    dv = registry.datasets.register("events", frame)
    assert pq.ParquetFile(_root(registry) / dv.path).metadata.num_row_groups == 3
    return dv


def test_preview_is_a_slice_of_the_rows_across_row_groups(registry: Registry) -> None:
    dv = _three_row_groups(registry)
    full = registry.datasets.read(dv)
    for offset, limit in [(0, 5), (65_530, 12), (65_536, 1000), (131_000, 1000), (139_990, 100)]:
        got = registry.datasets.preview(dv.uri, offset=offset, limit=limit)
        assert got.schema == full.schema
        assert got.to_pylist() == full.slice(offset, limit).to_pylist(), (offset, limit)
    assert registry.datasets.preview("events").num_rows == 100  # by name: the latest, 100 rows
    past = registry.datasets.preview(dv, offset=140_000, limit=10)
    assert past.num_rows == 0 and past.schema == full.schema
    for bad in [{"limit": 0}, {"limit": 1001}, {"limit": True}, {"offset": -1}, {"offset": 1.5}]:
        with pytest.raises(InvalidInput):
            registry.datasets.preview(dv, **bad)


def test_preview_reads_only_the_row_groups_it_shows(registry: Registry) -> None:
    from modelledger import IntegrityError

    dv = _three_row_groups(registry)
    before = registry.datasets.preview(dv, limit=10).to_pylist()
    stored = _root(registry) / dv.path
    chunk = pq.ParquetFile(stored).metadata.row_group(2).column(1)
    stored.chmod(0o644)
    data = bytearray(stored.read_bytes())
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    data[start : start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    stored.write_bytes(bytes(data))  # the last row group is garbage, the size is the same

    with pytest.raises(IntegrityError, match="sha256"):
        registry.datasets.read(dv)  # reads (and hashes) it all
    assert registry.datasets.preview(dv, limit=10).to_pylist() == before
    assert registry.datasets.preview(dv, offset=131_000, limit=72).num_rows == 72  # still group 1
    with pytest.raises(IntegrityError, match="cannot be read"):
        registry.datasets.preview(dv, offset=131_000, limit=73)


def test_open_gives_the_stored_bytes_and_refuses_a_changed_or_erased_file(registry: Registry) -> None:
    from modelledger import Erased, IntegrityError

    dv = registry.datasets.register(
        "applications", pd.DataFrame({"term": [36, 60, 12], "rate": [0.1, 0.2, 0.3]})
    )
    with registry.datasets.open(dv.uri) as fh:
        data = fh.read()
        fh.seek(10)
        assert fh.read(5) == data[10:15]
    assert len(data) == dv.size_bytes and hashlib.sha256(data).hexdigest() == dv.file_sha256

    stored = _root(registry) / dv.path
    stored.chmod(0o644)
    stored.write_bytes(data + b"tail")
    with pytest.raises(IntegrityError, match=f"holds {dv.size_bytes + 4} bytes"):
        registry.datasets.open(dv)
    stored.unlink()
    for call in (registry.datasets.open, registry.datasets.preview):
        with pytest.raises(IntegrityError, match="is missing"):
            call(dv)

    other = registry.datasets.register("other", pd.DataFrame({"term": [1, 2]}))
    registry.erase(other.uri, reason="retention ended")
    for call in (registry.datasets.open, registry.datasets.preview):
        with pytest.raises(Erased, match="retention ended"):
            call(other.uri)


# --------------------------------------------------------------------------- verify


def test_verify_rehashes_every_stored_data_set_and_names_a_changed_one(registry: Registry) -> None:
    frame = pd.DataFrame({"income": [52_000.0, 61_500.0, 38_250.0], "term": [36, 60, 36]})
    first = registry.datasets.register("applications", frame)
    second = registry.datasets.register("applications", frame.assign(term=[12, 24, 36]))
    report = registry.verify()
    assert report.ok and report.datasets_checked == 2

    stored = _root(registry) / second.path
    stored.chmod(0o644)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    (_root(registry) / first.path).unlink()

    problems = {(p.kind, p.path, p.version) for p in registry.verify().problems}
    assert problems == {
        ("mismatch", second.path, "datasets:/applications/2"),
        ("missing", first.path, "datasets:/applications/1"),
    }


def test_verify_reports_data_set_files_nothing_references(registry: Registry) -> None:
    registry.datasets.register("applications", pd.DataFrame({"term": [36, 60]}))
    root = _root(registry)
    (root / "datasets" / ".staging-0123abcd.parquet").write_bytes(b"PAR1 interrupted")
    stray = root / "datasets" / "applications" / "00ff00ff00ff00ff" / "data.parquet"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"PAR1 never registered")

    problems = {(p.kind, p.path) for p in registry.verify(grace="0").problems}
    assert problems == {
        ("orphan", "datasets/.staging-0123abcd.parquet"),
        ("orphan", "datasets/applications/00ff00ff00ff00ff/data.parquet"),
    }


def test_a_file_adopted_from_a_registration_undone_meanwhile_is_put_back(registry: Registry) -> None:
    """Two registrations of the same content at once: the second finds the first one's file and
    adopts it; if the first is undone (its discard removes the file) before the second's row is
    in, the second puts its own copy back, so its version never points at a missing file."""
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    first = registry.datasets.register("shared", frame, capture=False)
    path = first.path
    meta = registry.datasets._meta
    real_create = meta.create_dataset_version

    def undone_meanwhile(name: str, **kwargs: object) -> object:
        # the first registration is undone between our adoption of its file and our row
        assert meta.discard_dataset_version(first.key, remove_file=registry._art.remove_tree)
        assert not registry._art.exists(path)
        return real_create(name, **kwargs)  # type: ignore[arg-type]

    meta.create_dataset_version = undone_meanwhile  # type: ignore[method-assign]
    try:
        second = registry.datasets.register("shared", frame, capture=False)
    finally:
        meta.create_dataset_version = real_create  # type: ignore[method-assign]
    assert second.path == path and registry._art.exists(path)
    assert registry.datasets.to_pandas(second)["x"].tolist() == [1.0, 2.0, 3.0]
    assert not [p for p in registry._art.list_files("datasets") if ".staging" in p]
    assert registry.verify(grace="0s").ok


def test_discard_leaves_a_file_another_version_still_holds(registry: Registry) -> None:
    frame = pd.DataFrame({"x": [4.0, 5.0]})
    dv = registry.datasets.register("kept", frame, capture=False)
    registry.register("m", lambda rows: rows, capture=False, datasets={"train": dv.uri})
    removed: list[str] = []
    assert not registry.datasets._meta.discard_dataset_version(dv.key, remove_file=removed.append)
    assert removed == [] and registry._art.exists(dv.path)  # a model version uses it
