from __future__ import annotations

import json
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.helpers import Doubler

from modelledger import InvalidInput, InvalidManifest, NotFound, PermissionDenied, Registry, SchemaMismatch


def _git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return out.stdout.strip()


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "training").mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "ds@example.com")
    _git(repo, "config", "user.name", "DS")
    _git(repo, "remote", "add", "origin", "https://git.example.com/risk/credit.git")
    (repo / "training" / "train.py").write_text("print('train')\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "init")
    return repo


def test_versions_are_numbered_and_each_has_its_own_folder(registry: Registry, fitted_pipeline, credit_data):
    X, _ = credit_data
    versions = [registry.register("credit-risk", fitted_pipeline, sample_input=X.head()) for _ in range(3)]
    assert [v.version for v in versions] == [1, 2, 3]
    assert len({v.folder for v in versions}) == 3
    assert registry.get_model("credit-risk").latest_version == 3
    page = registry.list_versions("credit-risk", limit=2)
    assert [v.version for v in page] == [3, 2]
    rest = registry.list_versions("credit-risk", limit=2, cursor=page.next_cursor)
    assert [v.version for v in rest] == [1]
    assert rest.next_cursor is None


def test_sklearn_manifest_is_captured(registry: Registry, fitted_pipeline, credit_data):
    import sklearn

    X, _ = credit_data
    v = registry.register("credit-risk", fitted_pipeline, sample_input=X.head(), metrics={"auc": 0.87})
    m = v.manifest
    assert m["framework"] == "scikit-learn"
    assert m["framework_version"] == sklearn.__version__
    assert m["algorithm"].startswith("sklearn.pipeline.Pipeline[")
    assert "LogisticRegression" in m["algorithm"]
    assert m["dependencies"]["scikit-learn"] == sklearn.__version__
    assert m["dependencies"]["numpy"] == np.__version__
    assert m["python"] == ".".join(map(str, sys.version_info[:3]))
    assert m["platform"]
    assert m["metrics"] == {"auc": 0.87}
    assert m["training_job"]["host"]
    assert [c["name"] for c in m["signature"]["inputs"]] == ["age", "income", "loan_amount", "employment"]
    assert [c["type"] for c in m["signature"]["inputs"]] == ["integer", "float", "float", "string"]
    assert v.created_by == "alice@example.com"


def test_git_source_is_captured_and_names_the_folder(db_url, tmp_path, git_repo, fitted_pipeline):
    reg = Registry.open(db_url, artifacts=str(tmp_path / "art"), folder_naming="git")
    script = git_repo / "training" / "train.py"
    from modelledger._manifest import Manifest

    doc = Manifest().with_captured(script=str(script))
    rev = _git(git_repo, "rev-parse", "HEAD")
    assert doc.source.revision == rev
    assert doc.source.repo_url == "https://git.example.com/risk/credit.git"
    assert doc.source.path == "training/train.py"
    assert doc.source.dirty is False
    assert doc.source.branch == "main"
    v1 = reg.register("credit-risk", fitted_pipeline, manifest=doc)
    v2 = reg.register("credit-risk", fitted_pipeline, manifest=doc)
    assert v1.folder == f"models/credit-risk/git-{rev[:12]}"
    assert v2.folder == f"models/credit-risk/git-{rev[:12]}.2"  # never reused
    (git_repo / "training" / "train.py").write_text("print('changed')\n")
    dirty = Manifest().with_captured(script=str(script))
    assert dirty.source.dirty is True
    v3 = reg.register("credit-risk", fitted_pipeline, manifest=dirty)
    assert v3.folder == f"models/credit-risk/git-{rev[:12]}-dirty"


def test_explicit_source_overrides_git(registry: Registry, fitted_pipeline):
    v = registry.register(
        "m",
        fitted_pipeline,
        manifest={"source": {"repo_url": "https://x/y.git", "revision": "abc123", "path": "t.py"}},
    )
    assert v.manifest["source"]["revision"] == "abc123"
    assert v.manifest["source"]["repo_url"] == "https://x/y.git"


def test_folder_naming_by_execution_id_and_date(db_url, tmp_path, fitted_pipeline):
    reg = Registry.open(db_url, artifacts=str(tmp_path / "art"), folder_naming="execution")
    v = reg.register("m", fitted_pipeline, execution_id="pipeline-42")
    assert v.folder == "models/m/run-pipeline-42"
    assert v.manifest["training_job"]["id"] == "pipeline-42"
    with pytest.raises(InvalidInput, match="execution_id"):
        reg.register("m", fitted_pipeline)
    reg_date = Registry.open(db_url, artifacts=str(tmp_path / "art"), folder_naming="date")
    d = reg_date.register("m", fitted_pipeline, capture=False)
    assert Path(d.folder).name[:8].isdigit() and d.folder.endswith("Z")


def test_python_object_and_callable(registry: Registry):
    data = np.array([[1.0, 0.0], [2.5, 1.0]])
    v = registry.register("doubler", Doubler(), sample_input=data)
    assert v.flavor == "python"
    assert list(registry.load(v.uri).predict(data)) == [2.0, 5.0]

    def halve(x):
        return np.asarray(x)[:, 0] / 2

    c = registry.register("halver", halve)
    assert list(registry.load("models:/halver@latest").predict(data)) == [0.5, 1.25]
    assert c.manifest["framework"] == "python"


def test_folder_of_files_with_manifest_file(registry: Registry, tmp_path, fitted_pipeline, credit_data):
    X, _ = credit_data
    src = tmp_path / "export"
    (src / "extra").mkdir(parents=True)
    (src / "model.pkl").write_bytes(pickle.dumps(fitted_pipeline))
    (src / "extra" / "notes.txt").write_text("trained on q3 data")
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(
        "flavor: sklearn\nentry: model.pkl\nparams: {C: 0.5}\nmetrics: {auc: 0.81}\n"
        "source: {repo_url: 'https://git.example.com/risk.git', path: train.py, revision: deadbeef}\n"
        "training_job: {id: job-7, started_at: '2026-11-01T10:00:00Z', ended_at: '2026-11-01T10:05:00Z'}\n"
    )
    v = registry.register("credit-risk", src, manifest=manifest)
    assert sorted(f.path for f in v.files) == ["extra/notes.txt", "model.pkl"]
    assert v.manifest["params"] == {"C": 0.5}
    assert v.manifest["training_job"]["id"] == "job-7"
    assert v.manifest["source"]["revision"] == "deadbeef"
    loaded = registry.load("models:/credit-risk/1")
    assert (loaded.predict(X) == fitted_pipeline.predict(X)).all()


def test_plain_folder_has_no_predict(registry: Registry, tmp_path):
    src = tmp_path / "weights"
    src.mkdir()
    (src / "w.bin").write_bytes(b"\x00" * 10)
    v = registry.register("blob", src)
    assert v.flavor == "files"
    with pytest.raises(InvalidInput, match="no flavor"):
        registry.load(v.uri).predict([[1]])


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("params: [1, 2]\n", "params"),
        ("metrics: {auc: high}\n", "metrics.auc"),
        ("source: {dirty: maybe}\n", "source.dirty"),
        ("source: {revision: 12, bogus: 1}\n", "source.revision"),
        ("hyperparams: {}\n", "hyperparams"),
        ("flavor: tensorflow\n", "flavor"),
        ("training_job: {host: [1]}\n", "training_job.host"),
        ("- just\n- a list\n", "(document)"),
        ("params: {a: [1, 2}\n", "(document)"),
    ],
)
def test_bad_manifest_is_rejected_naming_the_field(registry: Registry, tmp_path, text, field):
    src = tmp_path / "f"
    src.mkdir()
    (src / "a.bin").write_bytes(b"1")
    path = tmp_path / "manifest.yaml"
    path.write_text(text)
    with pytest.raises(InvalidManifest) as err:
        registry.register("m", src, manifest=path)
    assert err.value.field == field
    assert f"'{field}'" in str(err.value)
    with pytest.raises(NotFound):
        registry.get_model("m")


def test_json_manifest_and_missing_manifest(registry: Registry, tmp_path):
    src = tmp_path / "f"
    src.mkdir()
    (src / "a.bin").write_bytes(b"1")
    good = tmp_path / "m.json"
    good.write_text(json.dumps({"params": {"depth": 3}}))
    assert registry.register("m", src, manifest=good).manifest["params"] == {"depth": 3}
    with pytest.raises(InvalidManifest, match="does not exist"):
        registry.register("m", src, manifest=tmp_path / "missing.yaml")


def test_load_by_number_alias_and_latest(registry: Registry, credit_data):
    from sklearn.tree import DecisionTreeClassifier

    X, y = credit_data
    Xn = X[["age", "income", "loan_amount"]]
    shallow = DecisionTreeClassifier(max_depth=1, random_state=0).fit(Xn, y)
    deep = DecisionTreeClassifier(max_depth=8, random_state=0).fit(Xn, y)
    registry.register("credit-risk", shallow, sample_input=Xn.head())
    registry.register("credit-risk", deep, sample_input=Xn.head())
    registry.set_alias("credit-risk", "champion", 1)
    assert (registry.load("models:/credit-risk/2").predict(Xn) == deep.predict(Xn)).all()
    assert (registry.load("models:/credit-risk@champion").predict(Xn) == shallow.predict(Xn)).all()
    assert (registry.load("models:/credit-risk@latest").predict(Xn) == deep.predict(Xn)).all()
    assert registry.get_version("models:/credit-risk@champion").aliases == ("champion",)
    registry.set_alias("credit-risk", "champion", 2)  # moving an alias
    assert registry.get_version("credit-risk", 2).aliases == ("champion",)
    assert registry.get_version("credit-risk", 1).aliases == ()
    registry.delete_alias("credit-risk", "champion")
    with pytest.raises(NotFound, match="models:/credit-risk@champion"):
        registry.load("models:/credit-risk@champion")
    with pytest.raises(NotFound):
        registry.delete_alias("credit-risk", "champion")


@pytest.mark.parametrize(
    "uri",
    ["models:/credit-risk/9", "models:/nope/1", "models:/nope@latest", "models:/credit-risk@staging"],
)
def test_unknown_versions_and_aliases(registry: Registry, fitted_pipeline, uri):
    registry.register("credit-risk", fitted_pipeline)
    with pytest.raises(NotFound):
        registry.load(uri)


@pytest.mark.parametrize(
    "uri",
    ["credit-risk/1", "models:/credit-risk/0", "models:/credit-risk/x", "models:/a/b/1", "models:/m@Bad!"],
)
def test_malformed_identifiers(registry: Registry, uri):
    with pytest.raises(InvalidInput):
        registry.load(uri)


def test_alias_rules(registry: Registry, fitted_pipeline):
    registry.register("m", fitted_pipeline)
    with pytest.raises(InvalidInput, match="reserved"):
        registry.set_alias("m", "latest", 1)
    with pytest.raises(NotFound):
        registry.set_alias("m", "champion", 5)
    with pytest.raises(InvalidInput):
        registry.set_alias("m", "Prod uction", 1)


def test_signature_is_enforced(registry: Registry, fitted_pipeline, credit_data):
    X, _ = credit_data
    registry.register("credit-risk", fitted_pipeline, sample_input=X.head())
    model = registry.load("models:/credit-risk@latest")
    with pytest.raises(SchemaMismatch, match="column 'income' is missing"):
        model.predict(X.drop(columns=["income"]))
    wrong = X.copy()
    wrong["age"] = "forty"
    with pytest.raises(SchemaMismatch, match="column 'age' must be integer"):
        model.predict(wrong)
    # extra columns are dropped and order does not matter
    shuffled = X[list(reversed(X.columns))].assign(extra=1)
    assert (model.predict(shuffled) == fitted_pipeline.predict(X)).all()
    # a list of records works too
    records = X.head(3).to_dict(orient="records")
    assert (model.predict(records) == fitted_pipeline.predict(X.head(3))).all()


def test_unserialisable_object_writes_nothing(registry: Registry, tmp_path):
    class Holder:
        def __init__(self) -> None:
            self.lock = threading.Lock()

        def predict(self, x):
            return x

    with pytest.raises(InvalidInput, match="cannot serialise"):
        registry.register("m", Holder())
    with pytest.raises(NotFound):
        registry.get_model("m")
    assert not (tmp_path / "artifacts" / "models").exists() or not any(
        (tmp_path / "artifacts" / "models").rglob("*")
    )


def test_unfitted_estimator_is_refused(registry: Registry):
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(InvalidInput, match="not fitted"):
        registry.register("m", LogisticRegression())


def test_staged_then_created(registry: Registry, fitted_pipeline, credit_data):
    X, _ = credit_data
    staged = registry.upload("m", fitted_pipeline, sample_input=X.head())
    assert registry.verify(grace="0").problems[0].kind == "orphan"  # uploaded, not yet registered
    assert registry.verify().ok and registry.verify().in_flight[0].path == staged.folder  # young
    v = registry.create_version(staged)
    assert v.folder == staged.folder and v.digest == staged.digest
    assert registry.verify().ok


def test_records_as_frame_sample(registry: Registry):
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    v = registry.register("m", lambda d: np.asarray(d)[:, 0], sample_input=frame)
    assert v.signature is not None
    assert v.signature.outputs[0].name == "prediction"


@pytest.mark.parametrize("alias", ["production", "rollback", "shadow-prod"])
def test_protected_aliases_move_only_through_deploy_and_rollback(
    registry: Registry, fitted_pipeline, alias: str
) -> None:
    v = registry.register("m", fitted_pipeline, capture=False)
    registry.set_policy({"four_eyes": False, "protected_aliases": ["shadow-prod"]}, reason="test")
    with pytest.raises(PermissionDenied, match=f"@{alias} is protected: it moves only through"):
        registry.set_alias("m", alias, v.version)
    with pytest.raises(PermissionDenied, match="protected"):
        registry.delete_alias("m", alias)
    assert registry.get_version(v.uri).aliases == ()
    # the way that is allowed: deploy an approved version
    registry.validate(v.uri, metrics={})
    registry.approve(v.uri, reason="reviewed")
    registry.deploy(v.uri, alias=None if alias == "rollback" else alias)
    assert registry.get_version(v.uri).aliases == ("production",) if alias == "rollback" else (alias,)
