"""Importing a real MLflow registry: from its database and from a live ``mlflow server``.

The MLflow side is built with the mlflow library (runs with params, metrics and a git
commit, registered models with versions, aliases, tags, a legacy stage), once per module;
the server is a real ``mlflow server`` on loopback, which the interrupted-import test kills
between two versions.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from tests.helpers import free_port

from modelledger import ImportInterrupted, MlflowImport, Registry, StorageError, import_mlflow
from modelledger.cli import main

mlflow = pytest.importorskip("mlflow")

pytestmark = [
    # MLflow warns about its own deprecations (stages), pip and serialisation choices
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
]


@pytest.fixture(scope="module", autouse=True)
def _no_telemetry() -> Iterator[None]:
    """MLflow (client and server) sends usage telemetry unless told not to: never from tests."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("DO_NOT_TRACK", "true")
        yield


X = np.random.RandomState(0).rand(40, 3)
Y = (X[:, 0] + X[:, 1] > 1).astype(int)
COMMITS = ["a1" * 20, "b2" * 20, "c3" * 20]


def _fit(c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c).fit(X, Y)


def _log_sklearn(name: str, c: float, commit: str | None, *, cloudpickle: bool = True) -> str:
    """One run that logs a fitted model and registers it as a new version of ``name``."""
    with mlflow.start_run(run_name=f"{name}-{c}") as run:
        mlflow.log_params({"C": c, "solver": "lbfgs"})
        mlflow.log_metric("auc", 0.8 + c / 100)
        tags = {"mlflow.source.name": "train.py", "mlflow.project.entryPoint": "main", "team": "risk"}
        if commit:
            tags["mlflow.source.git.commit"] = commit
        mlflow.set_tags(tags)
        mlflow.sklearn.log_model(
            _fit(c),
            name="model",
            registered_model_name=name,
            serialization_format="cloudpickle" if cloudpickle else "skops",
            pip_requirements=["scikit-learn"],
        )
        return str(run.info.run_id)


def _log_pyfunc(name: str) -> None:
    class Summer(mlflow.pyfunc.PythonModel):  # local: cloudpickled by value
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]  # MLflow reads hints
            return np.asarray(model_input).sum(axis=1)

    with mlflow.start_run(run_name="summer"):
        mlflow.log_param("kind", "sum")
        mlflow.pyfunc.log_model(
            name="model", python_model=Summer(), registered_model_name=name, pip_requirements=["numpy"]
        )


@contextmanager
def _logging_to(db: Path, experiment_name: str) -> Iterator[tuple[str, Any]]:
    """MLflow logging into the SQLite registry ``db`` (artefacts beside it), in an experiment of
    its own; yields the tracking URI and a client. The previous tracking URI comes back after."""
    uri = f"sqlite:///{db}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        client = mlflow.MlflowClient(uri)
        experiment = client.create_experiment(experiment_name, artifact_location=(db.parent / "art").as_uri())
        mlflow.set_experiment(experiment_id=experiment)
        yield uri, client
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An MLflow registry in a SQLite file: churn (3 sklearn versions, aliases, a stage),
    summer (python_function only), churn-skops (sklearn saved as skops), Fraud-Score (mixed
    case) and broken (a corrupt pickle)."""
    folder = tmp_path_factory.mktemp("mlflow")
    with _logging_to(folder / "mlflow.db", "churn-training") as (uri, client):
        for c, commit in zip((0.1, 1.0, 10.0), COMMITS, strict=True):
            _log_sklearn("churn", c, commit)
        client.update_registered_model("churn", description="Who leaves next month")
        client.set_registered_model_tag("churn", "owner", "retention-team")
        client.update_model_version("churn", "2", description="the tuned one")
        client.set_model_version_tag("churn", "2", "reviewed", "yes")
        client.transition_model_version_stage("churn", "2", "Production")
        client.transition_model_version_stage("churn", "1", "Archived")
        client.set_registered_model_alias("churn", "Champion", "2")
        client.set_registered_model_alias("churn", "challenger", "3")
        client.set_registered_model_alias("churn", "production", "2")  # protected in modelledger
        client.set_registered_model_alias("churn", "9lives", "1")  # no modelledger alias starts with a digit
        _log_pyfunc("summer")
        _log_sklearn("churn-skops", 1.0, COMMITS[2], cloudpickle=False)  # MLflow 3's default format
        _log_sklearn("Fraud-Score", 1.0, COMMITS[0])
        _log_sklearn("broken", 1.0, None)
        where = client.get_model_version_download_uri("broken", "1")
        pickled = Path(where.removeprefix("file://")) / "model.pkl"
        pickled.write_bytes(b"\x00" * pickled.stat().st_size)  # same size, not a pickle
        yield uri


def _by_source(summary: MlflowImport) -> dict[str, Any]:
    return {o.source: o for o in summary.outcomes}


def test_import_from_the_database_copies_models_runs_and_aliases(registry: Registry, mlflow_db: str) -> None:
    summary = import_mlflow(registry, mlflow_db)
    got = _by_source(summary)
    assert summary.counts() == {
        "model": {"imported": 5, "skipped": 0, "failed": 0},
        "version": {"imported": 6, "skipped": 0, "failed": 1},
        "alias": {"imported": 2, "skipped": 2, "failed": 0},
    }
    assert not summary.ok
    # a mixed-case name keeps its spelling and is found by any
    assert got["Fraud-Score"].status == "imported" and got["models:/Fraud-Score/1"].status == "imported"
    assert registry.get_version("models:/fraud-score/1").model == "Fraud-Score"
    # a model that does not load back is reported and not registered
    assert got["models:/broken/1"].status == "failed"
    assert "does not load as a sklearn model" in got["models:/broken/1"].reason
    assert [v.version for v in registry.iter_versions("broken")] == []

    v2 = registry.get_version("models:/churn/2")
    origin = v2.manifest["settings"]["mlflow"]
    run = mlflow.MlflowClient(mlflow_db).get_run(origin["run_id"])
    assert origin["model_uri"] == "models:/churn/2"
    assert origin["experiment_id"] == run.info.experiment_id
    assert origin["source"] == f"models:/{origin['model_id']}" and origin["model_id"].startswith("m-")
    assert origin["stage"] == "Production" and origin["entry_point"] == "main"
    assert v2.manifest["params"] == {"C": "1.0", "solver": "lbfgs"}
    assert v2.manifest["metrics"] == {"auc": pytest.approx(0.81)}
    assert v2.manifest["source"]["revision"] == COMMITS[1]
    assert v2.manifest["source"]["path"] == "train.py"
    assert v2.manifest["training_job"]["id"] == origin["run_id"]
    assert v2.manifest["description"] == "the tuned one"
    assert v2.manifest["framework"] == "scikit-learn"
    assert v2.manifest["dependencies"]["mlflow"] == mlflow.__version__  # MLflow's requirements.txt
    assert v2.flavor == "sklearn" and v2.manifest["entry"] == "model.pkl"
    assert {"MLmodel", "model.pkl", "requirements.txt"} <= {f.path for f in v2.files}
    assert v2.tags["reviewed"] == "yes" and v2.tags["mlflow.stage"] == "Production"
    assert v2.tags["mlflow.aliases"] == "Champion,production"
    assert registry.get_version("models:/churn/1").tags["mlflow.stage"] == "Archived"

    # governance is the registry's: a Production version is recorded, not approved or deployed
    assert registry.state("models:/churn/2").stage == "validated"
    assert got["churn@production"].status == "skipped" and "protected" in got["churn@production"].reason
    assert got["churn@9lives"].status == "skipped" and "invalid alias" in got["churn@9lives"].reason
    assert got["churn@Champion"].target == "churn@champion"
    assert registry.get_version("models:/churn@champion").version == 2
    assert registry.get_version("models:/churn@challenger").version == 3

    model = registry.get_model("churn")
    assert model.description == "Who leaves next month" and model.tags["owner"] == "retention-team"

    # the model loads back from the registry and predicts as MLflow's does
    np.testing.assert_array_equal(registry.load("models:/churn/2").predict(X), _fit(1.0).predict(X))

    # a model with only python_function becomes flavor mlflow, loaded through mlflow.pyfunc
    summer = registry.get_version("models:/summer/1")
    assert summer.flavor == "mlflow" and summer.manifest["entry"] == "mlflow-files.json"
    assert summer.manifest["runs_pickle"] is True
    np.testing.assert_allclose(registry.load("models:/summer/1").predict(X[:4]), X[:4].sum(axis=1))
    # scikit-learn saved as skops (no pickle for modelledger's sklearn flavor): MLflow loads it
    skops = registry.get_version("models:/churn-skops/1")
    assert skops.flavor == "mlflow" and "skops" in got["models:/churn-skops/1"].reason
    np.testing.assert_array_equal(registry.load(skops.uri).predict(X), _fit(1.0).predict(X))

    # a second import finds everything and adds nothing
    before = registry.ledger_head()
    again = import_mlflow(registry, mlflow_db)
    assert again.counts()["version"] == {"imported": 0, "skipped": 6, "failed": 1}
    assert again.counts()["alias"]["imported"] == 0
    assert registry.ledger_head() == before


def test_the_cli_imports_and_says_what_it_did(mlflow_db: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    Registry.open(url, artifacts=str(tmp_path / "art")).init()
    args = ["import", "mlflow", "--tracking-uri", mlflow_db, "--model", "churn", "--json"]
    where = ["--registry", url, "--artifacts", str(tmp_path / "art")]
    done = _cli(*args, *where)
    assert done.returncode == 0, done.stderr
    summary = MlflowImport.from_dict(json.loads(done.stdout))
    assert summary.counts()["version"] == {"imported": 3, "skipped": 0, "failed": 0}
    assert summary.tracking_uri == mlflow_db
    # the table for people (in-process): counts, what was not imported and why; exit 1 on a failure
    args = ["import", "mlflow", "--tracking-uri", mlflow_db, "--model", "churn", "--model", "nope", *where]
    table = CliRunner().invoke(main, args)
    assert table.exit_code == 1, table.output
    assert "versions" in table.output and "@production is protected" in table.output
    assert "MLflow has no registered model 'nope'" in table.output


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "modelledger"
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120)


class MlflowServer:
    """A real ``mlflow server`` on loopback, over one SQLite file and one artefact folder,
    that a test can kill (the whole process group, as a crash would) and start again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        port = free_port()
        command = [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.folder / 'server.db'}",
            "--artifacts-destination",
            str(self.folder / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        log = (self.folder / "server.log").open("ab")
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, (self.folder / "server.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1):
                    return
            except OSError:
                assert time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.2)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A live server holding model ``served``: a sklearn model logged through it (so its
    artefacts are ``mlflow-artifacts:/`` URIs that only the server can serve), registered as
    version 1 and again, from two later runs, as versions 2 and 3."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    previous = mlflow.get_tracking_uri()
    try:
        mlflow.set_tracking_uri(server.url)
        experiment = mlflow.set_experiment("served-training").experiment_id
        _log_sklearn("served", 1.0, COMMITS[0])
        client = mlflow.MlflowClient(server.url)
        first = client.get_model_version("served", "1")
        for commit in COMMITS[1:]:
            run = client.create_run(experiment)
            client.log_param(run.info.run_id, "C", "1.0")
            client.set_tag(run.info.run_id, "mlflow.source.git.commit", commit)
            model_id = first.source.removeprefix("models:/")
            client.create_model_version("served", first.source, run_id=run.info.run_id, model_id=model_id)
        client.set_registered_model_alias("served", "champion", "3")
        yield server
    finally:
        mlflow.set_tracking_uri(previous)
        server.kill()


def _fresh_registry(folder: Path) -> Registry:
    reg = Registry.open(f"sqlite:///{folder / 'registry.db'}", artifacts=str(folder / "artifacts"))
    reg.init()
    return reg


def test_an_unreachable_tracking_server_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    reg = _fresh_registry(tmp_path)
    gone = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StorageError, match=r"cannot read the MLflow registry at .*nothing was imported"):
        import_mlflow(reg, gone, retries=0, timeout=2)
    assert list(reg.iter_models()) == []
    # a database path that is not there is not created (MLflow would make an empty one)
    with pytest.raises(StorageError, match="no MLflow database at"):
        import_mlflow(reg, f"sqlite:///{tmp_path / 'nope.db'}")
    assert not (tmp_path / "nope.db").exists()
    where = [
        "--registry",
        f"sqlite:///{tmp_path / 'registry.db'}",
        "--artifacts",
        str(tmp_path / "artifacts"),
    ]
    done = CliRunner().invoke(main, ["import", "mlflow", "--tracking-uri", gone, "--retries", "0", *where])
    assert done.exit_code == 1 and "cannot read the MLflow registry" in done.output


def test_mlflow_going_away_mid_import_leaves_whole_versions_and_a_rerun_finishes(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    reg = _fresh_registry(tmp_path)
    seen: list[tuple[int, int]] = []

    def kill_after_the_first(done: int, total: int, what: str) -> None:
        seen.append((done, total))
        if done == 1:
            mlflow_server.kill()

    with pytest.raises(ImportInterrupted, match=r"MLflow stopped answering.*1 of 3 versions") as caught:
        import_mlflow(reg, mlflow_server.url, progress=kill_after_the_first, retries=0, timeout=5)
    partial = caught.value.summary
    assert isinstance(partial, MlflowImport) and partial.interrupted
    assert partial.count("version", "imported") == 1
    assert seen[:2] == [(0, 3), (1, 3)]
    assert [v.version for v in reg.iter_versions("served")] == [1]
    assert reg.verify().ok  # no half-written folder, no orphan

    mlflow_server.start()
    finished = import_mlflow(reg, mlflow_server.url)
    assert finished.ok
    assert finished.counts()["version"] == {"imported": 2, "skipped": 1, "failed": 0}
    versions = sorted(reg.iter_versions("served"), key=lambda v: v.version)
    assert [v.manifest["settings"]["mlflow"]["version"] for v in versions] == ["1", "2", "3"]
    assert all(
        v.manifest["settings"]["mlflow"]["artifact_uri"].startswith("mlflow-artifacts:") for v in versions
    )
    assert reg.get_version("models:/served@champion").version == 3
    assert [v.manifest["source"]["revision"] for v in versions] == COMMITS
    np.testing.assert_array_equal(reg.load("models:/served/3").predict(X), _fit(1.0).predict(X))
    assert reg.verify().ok


def test_xgboost_and_onnx_models_logged_to_mlflow_become_native_flavors(
    registry: Registry, tmp_path: Path
) -> None:
    """MLflow's MLmodel names the framework: an XGBoost classifier and an ONNX graph are
    imported as modelledger's own xgboost and onnx flavors (no pickle, no MLflow to load) and
    predict as the originals do."""
    import xgboost
    from tests import nn_models as nm

    with _logging_to(tmp_path / "native.db", "native") as (uri, _client):
        booster = xgboost.XGBClassifier(n_estimators=5, max_depth=2).fit(X, Y)
        with mlflow.start_run():
            mlflow.xgboost.log_model(booster, name="model", registered_model_name="churn-xgb")
        x, y, _ = nm.data()
        weights, intercept = nm.fitted_linear(x, y)
        graph = nm.onnx_regressor(weights, intercept)
        with mlflow.start_run():
            mlflow.onnx.log_model(graph, name="model", registered_model_name="demand-onnx")

    summary = import_mlflow(registry, uri)
    assert summary.counts()["version"] == {"imported": 2, "skipped": 0, "failed": 0}, summary.outcomes

    xgb = registry.get_version("models:/churn-xgb/1")
    assert xgb.flavor == "xgboost" and xgb.manifest["runs_pickle"] is False
    loaded = registry.load(xgb.uri)
    np.testing.assert_array_equal(np.asarray(loaded.predict(X)), booster.predict(X))

    onnx_version = registry.get_version("models:/demand-onnx/1")
    assert onnx_version.flavor == "onnx" and onnx_version.manifest["runs_pickle"] is False
    predicted = np.asarray(registry.load(onnx_version.uri).predict(x[:5])).ravel()
    np.testing.assert_allclose(predicted, x[:5] @ weights + intercept, rtol=1e-5)
