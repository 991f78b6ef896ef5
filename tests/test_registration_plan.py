"""Registration plans first, then writes: a failure at any point leaves nothing behind.

"Nothing" is checked as a user would: no model, no data set, no ledger event and no file
under the artefact root that was not there before.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import modelledger._manifest as manifest_module
from modelledger import InvalidInput, InvalidManifest, NotFound, Registry, StorageError
from modelledger.stores.artifacts import ArtifactStore


def footprint(reg: Registry, root: Path) -> tuple[Any, ...]:
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []
    return (
        [m.name for m in reg.iter_models()],
        [d["name"] for d in reg.datasets.list()],
        [(e.seq, e.action) for e in reg.audit(limit=1000)],
        files,
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


@pytest.fixture
def reg(db_url: str, root: Path) -> Registry:
    return Registry.open(db_url, artifacts=str(root), actor="alice@example.com")


@pytest.fixture
def frame(credit_data: tuple[pd.DataFrame, pd.Series]) -> pd.DataFrame:
    X, y = credit_data
    return X.assign(target=y)


def test_git_folder_naming_outside_git_leaves_no_data_set(
    db_url: str, root: Path, tmp_path: Path, fitted_pipeline: object, frame: pd.DataFrame
) -> None:
    reg = Registry.open(db_url, artifacts=str(root), actor="alice@example.com", folder_naming="git")
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    before = footprint(reg, root)
    with pytest.raises(InvalidInput, match="no git revision is known"):
        reg.register("m", fitted_pipeline, code_path=outside, datasets={"train": frame})
    assert footprint(reg, root) == before


@pytest.mark.parametrize(
    "case",
    ["unknown role", "unknown data set", "bad manifest", "sample input the model cannot predict"],
)
def test_a_bad_request_is_refused_before_anything_is_written(
    reg: Registry, root: Path, fitted_pipeline: object, frame: pd.DataFrame, case: str
) -> None:
    kwargs: dict[str, Any] = {"datasets": {"train": frame}}
    expected: tuple[type[Exception], str]
    if case == "unknown role":
        kwargs["datasets"] = {"train": frame, "calibration": frame}
        expected = (InvalidInput, "unknown data set role 'calibration'")
    elif case == "unknown data set":
        kwargs["datasets"] = {"train": frame, "holdout": "datasets:/nowhere/1"}
        expected = (NotFound, "nowhere")
    elif case == "bad manifest":
        kwargs["manifest"] = {"gates": ["auc is great"]}
        expected = (InvalidManifest, "gates")
    else:
        kwargs["sample_input"] = frame[["age"]]
        expected = (InvalidInput, "failed to predict on sample_input")
    before = footprint(reg, root)
    with pytest.raises(expected[0], match=expected[1]):
        reg.register("m", fitted_pipeline, **kwargs)
    assert footprint(reg, root) == before


def test_a_data_set_that_fails_to_ingest_takes_the_ones_before_it_along(
    reg: Registry, root: Path, fitted_pipeline: object, frame: pd.DataFrame
) -> None:
    before = footprint(reg, root)
    with pytest.raises(InvalidInput):
        reg.register("m", fitted_pipeline, datasets={"train": frame, "holdout": {"not": "a table"}})
    assert footprint(reg, root) == before
    with pytest.raises(NotFound):
        reg.datasets.get("m-train")


def _fail_on(monkeypatch: pytest.MonkeyPatch, cls: type, name: str, exc: Exception) -> list[int]:
    """Make ``cls.name`` raise ``exc`` (a storage fault at the outer edge); counts the calls."""
    calls: list[int] = []

    def boom(*_args: object, **_kwargs: object) -> None:
        calls.append(1)
        raise exc

    monkeypatch.setattr(cls, name, boom)
    return calls


def test_an_artefact_upload_failure_removes_the_folder_and_the_new_data_sets(
    reg: Registry, root: Path, fitted_pipeline: object, frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = footprint(reg, root)
    calls = _fail_on(monkeypatch, ArtifactStore, "put_stream", OSError("disk full"))
    with pytest.raises(StorageError, match="disk full"):
        reg.register("m", fitted_pipeline, datasets={"train": frame, "holdout": frame.head(50)})
    assert calls
    monkeypatch.undo()
    assert footprint(reg, root) == before


def test_a_metadata_commit_failure_removes_the_folder_and_the_new_data_sets(
    reg: Registry, root: Path, fitted_pipeline: object, frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = footprint(reg, root)
    calls = _fail_on(monkeypatch, type(reg._meta), "create_version", StorageError("connection lost"))
    with pytest.raises(StorageError, match="connection lost"):
        reg.register("m", fitted_pipeline, datasets={"train": frame})
    assert calls
    monkeypatch.undo()
    assert footprint(reg, root) == before
    assert reg.register("m", fitted_pipeline, datasets={"train": frame}).version == 1


def test_a_failure_keeps_data_sets_that_existed_before(
    reg: Registry, root: Path, fitted_pipeline: object, frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    existing = reg.datasets.register("m-train", frame, capture=False)
    before = footprint(reg, root)
    _fail_on(monkeypatch, type(reg._meta), "create_version", StorageError("connection lost"))
    with pytest.raises(StorageError):
        reg.register("m", fitted_pipeline, datasets={"train": frame})  # same content: reused
    monkeypatch.undo()
    assert footprint(reg, root) == before
    assert reg.datasets.get("m-train").digest == existing.digest
    assert reg.verify().ok


def _git(repo: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
    }
    return subprocess.run(
        ["git", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
        env={**env, "PATH": "/usr/bin:/bin"},
    ).stdout.strip()


def test_inline_data_sets_share_the_models_provenance_read_once(
    reg: Registry,
    tmp_path: Path,
    fitted_pipeline: object,
    frame: pd.DataFrame,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = tmp_path / "training-code"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "train.py").write_text("print('train')\n")
    _git(repo, "add", "train.py")
    _git(repo, "commit", "-q", "-m", "train")
    head = _git(repo, "rev-parse", "HEAD")
    statuses: list[list[str]] = []
    real: Callable[[list[str], str], str | None] = manifest_module._git

    def counting(args: list[str], cwd: str) -> str | None:
        if args[0] == "status":
            statuses.append(args)
        return real(args, cwd)

    monkeypatch.setattr(manifest_module, "_git", counting)
    mv = reg.register(
        "m",
        fitted_pipeline,
        code_path=repo / "train.py",
        datasets={"train": frame, "holdout": frame.head(80), "test": frame.tail(80)},
    )
    assert len(statuses) == 1  # one look at the checkout for the model and its three data sets
    assert mv.manifest["source"]["revision"] == head
    assert mv.manifest["source"]["path"] == "train.py"
    for role in ("train", "holdout", "test"):
        dv = reg.datasets.get(f"m-{role}")
        assert dv.source.code["revision"] == head and dv.source.code["path"] == "train.py"
    steps = mv.manifest["steps"]
    assert steps and all(s["code"]["revision"] == head for s in steps)
    assert all(s["inputs"] == ["datasets:/m-train/1"] for s in steps)
    assert [d["role"] for d in mv.manifest["datasets"]] == ["train", "holdout", "test"]


def test_upload_then_create_version_and_the_deprecated_stage(
    reg: Registry, fitted_pipeline: object, frame: pd.DataFrame
) -> None:
    uploaded = reg.upload("m", fitted_pipeline, capture=False, datasets={"train": frame})
    assert [d["uri"] for d in uploaded.manifest["datasets"]] == ["datasets:/m-train/1"]
    v1 = reg.create_version(uploaded)
    assert v1.version == 1 and reg.datasets.used_by("datasets:/m-train/1") == [(v1.uri, "train")]
    with pytest.warns(DeprecationWarning, match="use Registry.upload"):
        staged = reg.stage("m", fitted_pipeline, capture=False)
    assert reg.create_version(staged).version == 2
    assert reg.verify().ok
