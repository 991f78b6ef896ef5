from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

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
    # the model object is in this process: its environment is the training one
    assert m["environment"] == {"origin": "training", "from": "process"}
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
        ("environment: {origin: laptop}\n", "environment.origin"),
        ("environment: {from: requirements.txt}\n", "environment.origin"),
        ("environment: {origin: training, when: now}\n", "environment.when"),
        ("source: {dirty_paths: [1]}\n", "source.dirty_paths"),
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


# --------------------------------------------------------------------------- provenance of the code


def _repo(path: Path, remote: str | None = None) -> Path:
    """A git repository at ``path`` with ``train.py`` and ``features.py`` committed."""
    path.mkdir(parents=True)
    _git(path, "init", "-q", "-b", "main")
    _git(path, "config", "user.email", "ds@example.com")
    _git(path, "config", "user.name", "DS")
    if remote is not None:
        _git(path, "remote", "add", "origin", remote)
    (path / "train.py").write_text("print('train')\n")
    (path / "features.py").write_text("FEATURES = ['age']\n")
    _git(path, "add", ".")
    _git(path, "commit", "-q", "-m", "init")
    return path


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("https://alice:ghp_SECRET@git.example.com/org/repo.git", "https://git.example.com/org/repo.git"),
        ("https://ghp_SECRET@github.com/org/repo.git", "https://github.com/org/repo.git"),
        ("http://oauth2:glpat-SECRET@gitlab.local:8080/org/repo", "http://gitlab.local:8080/org/repo"),
        ("https://h.example/r.git?token=SECRET", "https://h.example/r.git"),
        ("https://h.example/r.git?ref=main&Access_Token=SECRET", "https://h.example/r.git?ref=main"),
        ("https://h.example/api/r?private_token=SECRET&per_page=5", "https://h.example/api/r?per_page=5"),
        ("https://h.example/r?key=SECRET&api_key=SECRET&auth=SECRET&password=SECRET", "https://h.example/r"),
        (
            "https://b.s3.amazonaws.com/m.tar?X-Amz-Credential=SECRET&X-Amz-Signature=SECRET"
            "&x-amz-security-token=SECRET&X-Amz-Expires=60",
            "https://b.s3.amazonaws.com/m.tar?X-Amz-Expires=60",
        ),
        (
            "https://acct.blob.core.windows.net/c/m?sv=2022&sig=SECRET",
            "https://acct.blob.core.windows.net/c/m?sv=2022",
        ),
        ("https://h.example/cb#access_token=SECRET&state=1", "https://h.example/cb#state=1"),
        # ssh authenticates with a key: a bare user name is an account, not a secret
        ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
        ("ssh://git@git.example.com:2222/org/repo.git", "ssh://git@git.example.com:2222/org/repo.git"),
        ("ssh://git:SECRET@git.example.com/org/repo.git", "ssh://git@git.example.com/org/repo.git"),
        ("deploy:SECRET@git.example.com:org/repo.git", "deploy@git.example.com:org/repo.git"),
        # nothing to remove: stored byte for byte
        ("https://github.com/@scope/pkg?tab=readme#L10", "https://github.com/@scope/pkg?tab=readme#L10"),
        ("file:///home/ds/credit", "file:///home/ds/credit"),
        ("datasets:/credit-train/3", "datasets:/credit-train/3"),
    ],
)
def test_credentials_are_removed_from_urls(url: str, stored: str) -> None:
    from modelledger._manifest import redact_url

    assert redact_url(url) == stored
    assert "SECRET" not in redact_url(url)


def test_no_credential_reaches_the_manifest_or_the_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fitted_pipeline
) -> None:
    secrets = ["ghp_CAPTURED1", "TOKEN2QUERY", "ACCESS3TOKEN", "AMZ4SIG", "DWH5PASS"]
    repo = _repo(tmp_path / "code", remote=f"https://alice:{secrets[0]}@git.example.com/risk/credit.git")
    home = tmp_path / "home"
    monkeypatch.setenv("MODELLEDGER_HOME", str(home))
    reg = Registry.open()
    captured = reg.register("captured", fitted_pipeline, code_path=repo / "train.py")
    assert captured.manifest["source"]["repo_url"] == "https://git.example.com/risk/credit.git"
    assert captured.manifest["source"]["path"] == "train.py"

    given = reg.register(
        "given",
        fitted_pipeline,
        manifest={
            "source": {
                "repo_url": f"https://git.example.com/risk/credit.git?token={secrets[1]}",
                "revision": "abc123",
            },
            "steps": [
                {
                    "name": "extract",
                    "code": {"repo_url": f"https://h.example/etl.git?access_token={secrets[2]}"},
                }
            ],
        },
    )
    assert given.manifest["source"]["repo_url"] == "https://git.example.com/risk/credit.git"
    assert given.manifest["steps"][0]["code"]["repo_url"] == "https://h.example/etl.git"
    raw = reg.datasets.register(
        "raw",
        pd.DataFrame({"x": [1, 2]}),
        source={
            "uri": f"https://dwh:{secrets[4]}@dwh.example/extract.csv?X-Amz-Signature={secrets[3]}",
            "kind": "api",
        },
    )
    assert raw.source.uri == "https://dwh.example/extract.csv"
    events = json.dumps([e.to_dict() for e in reg.history("captured") + reg.history("given")], default=str)
    reg.close()
    stored = b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())
    assert b"sqlite" in stored.lower()  # the database file itself was read, not only the artefacts
    for secret in secrets:
        assert secret not in events
        assert secret.encode() not in stored, secret


def test_untracked_modified_and_clean_scripts(tmp_path: Path) -> None:
    from modelledger._manifest import capture_source

    repo = _repo(tmp_path / "code")
    clean = capture_source(script=str(repo / "train.py"))
    assert clean.dirty is False and clean.path == "train.py"
    assert "dirty_paths" not in clean.to_dict()
    (repo / "model.pkl").write_bytes(b"output")  # other untracked files are outputs, not code
    assert capture_source(script=str(repo / "train.py")).dirty is False

    (repo / "train_v2.py").write_text("print('never committed')\n")
    untracked = capture_source(script=str(repo / "train_v2.py"))
    assert untracked.dirty is True
    assert untracked.to_dict()["dirty_paths"] == ["train_v2.py"]
    assert untracked.to_dict()["dirty_count"] == 1

    (repo / "scratch").mkdir()
    (repo / ".gitignore").write_text("scratch/\n")
    (repo / "scratch" / "try.py").write_text("print('ignored')\n")
    ignored = capture_source(script=str(repo / "scratch" / "try.py"))
    assert ignored.dirty is True and ignored.dirty_paths == ("scratch/try.py",)

    (repo / "features.py").write_text("FEATURES = ['age', 'income']\n")
    modified = capture_source(script=str(repo / "train.py"))
    assert modified.dirty is True
    assert modified.dirty_paths == ("features.py",)  # the untracked .gitignore is not code either
    (repo / "train.py").write_text("print('changed')\n")
    assert capture_source(script=str(repo / "train.py")).dirty_paths == ("train.py", "features.py")


def _age(repo: Path) -> None:
    """Make the tracked files an hour old, as in a checkout not edited lately."""
    hour_ago = time.time() - 3600
    for path in _git(repo, "ls-files").splitlines():
        os.utime(repo / path, (hour_ago, hour_ago))


def _git_runs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every `git status` run from now on."""
    runs: list[list[str]] = []
    real = subprocess.run

    def run(args: Any, *rest: Any, **kwargs: Any) -> Any:
        if isinstance(args, list) and args[:2] == ["git", "status"]:
            runs.append(args)
        return real(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "run", run)
    return runs


def test_a_capture_is_reused_until_a_tracked_file_or_head_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = _repo(tmp_path / "code")
    _age(repo)
    reg = Registry.open(f"sqlite:///{tmp_path / 'r.db'}", artifacts=str(tmp_path / "art"))
    reg.init()
    script = repo / "train.py"
    runs = _git_runs(monkeypatch)
    first = [reg.register("m", lambda d: d, code_path=script).manifest["source"] for _ in range(3)]
    assert [s["dirty"] for s in first] == [False, False, False]
    assert len({s["revision"] for s in first}) == 1
    calls = len(runs)
    assert reg.register("m", lambda d: d, code_path=script).manifest["source"] == first[0]
    assert len(runs) == calls  # nothing changed: git did not run again

    (repo / "features.py").write_text("FEATURES = ['AGE']\n")  # same size, new content
    edited = reg.register("m", lambda d: d, code_path=script).manifest["source"]
    assert edited["dirty"] is True and edited["dirty_paths"] == ["features.py"]

    _git(repo, "commit", "-q", "-am", "upper case")
    _age(repo)
    committed = reg.register("m", lambda d: d, code_path=script).manifest["source"]
    assert committed["dirty"] is False
    assert committed["revision"] == _git(repo, "rev-parse", "HEAD") != first[0]["revision"]
    for _ in range(2):
        reg.register("m", lambda d: d, code_path=script)
    calls = len(runs)
    reg.register("m", lambda d: d, code_path=script)
    assert len(runs) == calls  # reused again
    _git(repo, "commit", "-q", "--allow-empty", "-m", "no file changed")  # only the ref moves
    moved = reg.register("m", lambda d: d, code_path=script).manifest["source"]
    assert len(runs) == calls + 1
    assert moved["revision"] == _git(repo, "rev-parse", "HEAD") != committed["revision"]
    _git(repo, "checkout", "-q", "-b", "feature")
    assert reg.register("m", lambda d: d, code_path=script).manifest["source"]["branch"] == "feature"
    reg.close()


def test_an_untracked_script_is_dirty_at_every_capture_until_it_is_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelledger._manifest import capture_source

    repo = _repo(tmp_path / "code")
    script = repo / "train_v2.py"
    script.write_text("print('new')\n")
    _age(repo)
    listed: list[Any] = []
    real = subprocess.run

    def run(args: Any, *rest: Any, **kwargs: Any) -> Any:
        if isinstance(args, list) and args[:2] == ["git", "ls-files"]:
            listed.append(args)
        return real(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "run", run)
    for _ in range(4):
        assert capture_source(script=str(script)).dirty_paths == ("train_v2.py",)
    assert len(listed) == 1  # found unwatchable once, not listed again while nothing changed
    monkeypatch.undo()
    _git(repo, "add", "train_v2.py")
    _git(repo, "commit", "-q", "-m", "v2")
    _age(repo)
    assert [capture_source(script=str(script)).dirty for _ in range(4)] == [False] * 4


def test_dirty_paths_are_bounded_and_counted(tmp_path: Path, registry: Registry) -> None:
    repo = _repo(tmp_path / "code")
    for i in range(70):
        (repo / f"m{i:02d}.py").write_text("x = 1\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "modules")
    for i in range(70):
        (repo / f"m{i:02d}.py").write_text("x = 2\n")
    (repo / "train.py").write_text("print('changed')\n")
    v = registry.register("m", lambda d: d, code_path=repo / "train.py")
    source = v.manifest["source"]
    assert source["dirty"] is True
    assert source["dirty_count"] == 71
    assert len(source["dirty_paths"]) == 50
    assert source["dirty_paths"][:2] == ["train.py", "m00.py"]


def _run_script(args: list[str], cwd: Path, home: Path) -> dict:
    """Run ``python ARGS`` in ``cwd``; the script writes the recorded source to $OUT."""
    import modelledger

    out = home.parent / "source.json"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home.parent),
        "PYTHONPATH": str(Path(modelledger.__file__).parents[1]),
        "MODELLEDGER_HOME": str(home),
        "OUT": str(out),
    }
    extra = cwd.parent / "runner-site" / "site-packages"
    if extra.exists():
        env["PYTHONPATH"] += f":{extra}"
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    source: dict = json.loads(out.read_text())
    return source


REGISTERING_SCRIPT = """
import json, os, pathlib, tempfile
from modelledger import Registry

folder = pathlib.Path(tempfile.mkdtemp())
(folder / "weights.bin").write_bytes(b"1")
mv = Registry.open().register("m", folder)
pathlib.Path(os.environ["OUT"]).write_text(json.dumps(mv.manifest["source"]))
"""


def test_under_cprofile_the_profiled_script_is_recorded(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "code", remote="https://git.example.com/risk/credit.git")
    (repo / "train.py").write_text(REGISTERING_SCRIPT)
    _git(repo, "commit", "-q", "-am", "register")
    source = _run_script(
        ["-m", "cProfile", "-o", str(tmp_path / "prof.out"), "train.py"], repo, tmp_path / "home"
    )
    assert source["path"] == "train.py"
    assert source["revision"] == _git(repo, "rev-parse", "HEAD")
    assert source["repo_url"] == "https://git.example.com/risk/credit.git"
    assert source["dirty"] is False
    assert "unknown" not in source


def test_a_runner_in_site_packages_is_never_recorded_as_the_code(tmp_path: Path) -> None:
    # A test runner installed as a package, in a checkout of its own (as an editable or
    # vendored runner would be): neither its file nor its repository is the training code.
    runner_repo = _repo(tmp_path / "runner-site", remote="https://git.example.com/tools/runner.git")
    package = runner_repo / "site-packages" / "fakerunner"
    package.mkdir(parents=True)
    (package / "__main__.py").write_text(  # imports the test file, as pytest does
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('test_model', sys.argv[1])\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
    )
    _git(runner_repo, "add", ".")
    _git(runner_repo, "commit", "-q", "-m", "runner")
    code = _repo(tmp_path / "code", remote="https://git.example.com/risk/credit.git")
    (code / "test_model.py").write_text(REGISTERING_SCRIPT)
    source = _run_script(["-m", "fakerunner", "test_model.py"], code, tmp_path / "home")
    assert source["unknown"] == "run under fakerunner"
    assert source["repo_url"] is None and source["path"] is None and source["revision"] is None
    assert "runner" not in json.dumps({k: v for k, v in source.items() if k != "unknown"})


def test_under_pytest_the_source_is_unknown(tmp_path: Path) -> None:
    code = _repo(tmp_path / "code", remote="https://git.example.com/risk/credit.git")
    (code / "test_model.py").write_text(
        "def test_register():\n"
        + "".join(f"    {line}\n" for line in REGISTERING_SCRIPT.strip().splitlines())
    )
    source = _run_script(
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_model.py"], code, tmp_path / "home"
    )
    assert source["unknown"] == "run under pytest"
    assert source["repo_url"] is None and source["revision"] is None and source["path"] is None


def test_an_explicit_script_wins_over_the_runner(tmp_path: Path) -> None:
    from modelledger._manifest import capture_source

    repo = _repo(tmp_path / "code")
    source = capture_source(script=str(repo / "train.py"))  # here, under pytest
    assert source.unknown is None and source.path == "train.py"


# --------------------------------------------------------------------------- a folder's environment

UV_LOCK = """version = 1
requires-python = ">=3.11"

[[package]]
name = "NumPy"
version = "1.26.4"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "credit"
source = { editable = "." }
"""
ENVIRONMENT_YML = """name: credit
channels: [conda-forge]
dependencies:
  - python=3.11.7
  - conda-forge::numpy=1.26.4=py311h64a7726_0
  - scipy>=1.10
  - pip:
      - scikit-learn==1.4.2
"""
PIPFILE_LOCK = json.dumps(
    {
        "default": {"numpy": {"version": "==1.26.4"}, "dev": {"git": "x"}},
        "develop": {"pytest": {"version": "==8.0"}},
    }
)


@pytest.mark.parametrize(
    ("files", "read_from", "dependencies"),
    [
        ({"uv.lock": UV_LOCK}, "uv.lock", {"numpy": "1.26.4"}),
        ({"poetry.lock": UV_LOCK}, "poetry.lock", {"numpy": "1.26.4"}),
        (
            {"pylock.toml": 'lock-version = "1.0"\n[[packages]]\nname = "numpy"\nversion = "1.26.4"\n'},
            "pylock.toml",
            {"numpy": "1.26.4"},
        ),
        ({"Pipfile.lock": PIPFILE_LOCK}, "Pipfile.lock", {"numpy": "1.26.4"}),
        (
            {"environment.yml": ENVIRONMENT_YML},
            "environment.yml",
            {"python": "3.11.7", "numpy": "1.26.4", "scikit-learn": "1.4.2"},
        ),
        ({"requirements-gpu.txt": "torch==2.3.0\n"}, "requirements-gpu.txt", {"torch": "2.3.0"}),
        # a lock file pins everything, so it is preferred to a requirements file
        ({"requirements.txt": "numpy==1.0\n", "uv.lock": UV_LOCK}, "uv.lock", {"numpy": "1.26.4"}),
    ],
)
def test_a_folder_declares_its_training_environment(
    registry: Registry, tmp_path: Path, files: dict[str, str], read_from: str, dependencies: dict[str, str]
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"1")
    for name, text in files.items():
        (folder / name).write_text(text)
    m = registry.register("m", folder).manifest
    assert m["environment"] == {"origin": "training", "from": read_from}
    assert m["dependencies"] == dependencies
    assert m["python"] is None


def test_an_unreadable_lock_file_is_refused_not_replaced(registry: Registry, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"1")
    (folder / "uv.lock").write_text("[[package]\nname = ")
    with pytest.raises(InvalidManifest) as err:
        registry.register("m", folder)
    assert err.value.field == "environment" and "uv.lock" in str(err.value)
    with pytest.raises(NotFound):
        registry.get_model("m")


def test_a_manifest_may_say_the_registering_process_is_the_training_one(
    registry: Registry, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"1")
    m = registry.register("m", folder, manifest={"environment": {"origin": "training"}}).manifest
    assert m["environment"] == {"origin": "training", "from": "process"}
    assert m["dependencies"]["numpy"] == np.__version__ and m["python"]
    off = registry.register("m", folder, capture=False).manifest
    assert off["environment"] is None and off["dependencies"] == {}
