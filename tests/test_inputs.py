"""The entrypoint contract: ``modelledger.inputs()``, the recorded ``run`` and ``links``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import modelledger
from modelledger import InvalidInput, InvalidManifest, Manifest, Registry
from modelledger._entrypoint import data_variables, forget, links_from_environment

TRAIN_SCRIPT = """\
import sys

import modelledger
from modelledger import Registry
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

frames = modelledger.inputs(env=["FEATURE_SET"])
modelledger.seed(11)
train = frames["train"]
model = Pipeline([("scale", StandardScaler()), ("forest", RandomForestClassifier(n_estimators=3))])
model.fit(train[["x"]], train["y"])
version = Registry.open().register("toy", model)
print(version.uri)
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    """The embedded registry in a folder of its own, as a training script opens it."""
    monkeypatch.setenv("MODELLEDGER_HOME", str(tmp_path / "reg"))
    for name in list(os.environ):
        if name.startswith(("MODELLEDGER_DATA_", "MODELLEDGER_LINK_", "MODELLEDGER_URL")):
            monkeypatch.delenv(name)
    forget()
    reg = Registry.open()
    yield reg
    reg.close()
    forget()


def toy_frame(n: int = 40) -> pd.DataFrame:
    return pd.DataFrame({"x": [float(i) for i in range(n)], "y": [i % 2 for i in range(n)]})


# ---------------------------------------------------------------- the manifest fields


def test_run_links_and_refresh_round_trip_and_are_absent_when_unset() -> None:
    doc = {
        "run": {
            "command": ["python", "train.py", "--n", "3"],
            "cwd": "models/credit",
            "env": {"MODELLEDGER_DATA_TRAIN": "datasets:/applications/3"},
            "seeds": {"model__random_state": 7},
            "unseeded": ["forest__random_state"],
        },
        "links": {"reproduction_of": "models:/credit-risk/3"},
        "refresh": {"schedule": "0 3 * * MON", "on_data": ["applications"]},
    }
    manifest = Manifest.from_dict(doc)
    out = manifest.to_dict()
    assert {k: out[k] for k in doc} == doc
    assert Manifest.from_dict(out) == manifest
    # a manifest that records none of them reads, and hashes, as it always did
    assert not {"run", "links", "refresh"} & set(Manifest().to_dict())


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"links": {"copy_of": "models:/x/3"}}, "links.copy_of"),
        ({"links": {"refresh_of": "models:/x@production"}}, "links.refresh_of"),
        ({"links": {"refresh_of": 3}}, "links.refresh_of"),
        ({"run": {"command": []}}, "run.command"),
        ({"run": {"command": ["python", 3]}}, "run.command"),
        ({"run": {"cwd": "../elsewhere"}}, "run.cwd"),
        ({"run": {"cwd": "/abs/path"}}, "run.cwd"),
        ({"run": {"seeds": {"numpy": "7"}}}, "run.seeds.numpy"),
        ({"run": {"env": {"N": 3}}}, "run.env.N"),
        ({"run": {"host": "x"}}, "run.host"),
        ({"refresh": {"on_data": [""]}}, "refresh.on_data"),
        ({"refresh": {"cron": "0 3 * * *"}}, "refresh.cron"),
    ],
)
def test_a_bad_run_links_or_refresh_is_refused_naming_the_field(doc: dict, field: str) -> None:
    with pytest.raises(InvalidManifest) as err:
        Manifest.from_dict(doc)
    assert err.value.field == field


def test_a_manifest_built_in_python_is_held_to_the_same_rules(home: Registry) -> None:
    bad = Manifest(links={"reproduction_of": "models:/x/latest"})
    with pytest.raises(InvalidManifest, match=r"links\.reproduction_of"):
        home.register("toy", lambda rows: rows, manifest=bad)


# ---------------------------------------------------------------- inputs()


def test_inputs_reads_each_role_and_the_next_registration_records_them(
    home: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = home.datasets.register("toy-train", toy_frame())
    holdout = home.datasets.register("toy-holdout", toy_frame(10))
    monkeypatch.setenv("MODELLEDGER_DATA_TRAIN", train.uri)
    monkeypatch.setenv("MODELLEDGER_DATA_HOLDOUT", holdout.uri)
    monkeypatch.setenv("MODELLEDGER_LINK_REPRODUCTION_OF", "models:/toy-origin/2")

    frames = modelledger.inputs()  # the registry from the environment, as a script opens it

    assert set(frames) == {"train", "holdout"}
    pd.testing.assert_frame_equal(frames["train"], toy_frame())
    version = home.register("toy", lambda rows: rows)
    roles = {d["role"]: (d["uri"], d["digest"]) for d in version.manifest["datasets"]}
    assert roles == {"train": (train.uri, train.digest), "holdout": (holdout.uri, holdout.digest)}
    assert version.manifest["links"] == {"reproduction_of": "models:/toy-origin/2"}
    # under a test runner the command is pytest's, not a training's: no run is recorded
    assert "run" not in version.manifest


def test_data_sets_given_to_register_win_over_what_inputs_read(
    home: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = home.datasets.register("toy-train", toy_frame())
    other = home.datasets.register("toy-other", toy_frame(12))
    monkeypatch.setenv("MODELLEDGER_DATA_TRAIN", train.uri)
    modelledger.inputs(home)
    version = home.register("toy", lambda rows: rows, datasets={"train": other.uri})
    assert [d["uri"] for d in version.manifest["datasets"]] == [other.uri]


def test_inputs_refuses_what_it_cannot_honour(home: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidInput, match="MODELLEDGER_DATA_TRAIN=datasets:/"):
        modelledger.inputs(home)  # nothing named
    monkeypatch.setenv("MODELLEDGER_DATA_FEATURES", "datasets:/toy/1")
    with pytest.raises(InvalidInput, match="unknown data set role 'features'"):
        modelledger.inputs(home)
    monkeypatch.delenv("MODELLEDGER_DATA_FEATURES")
    monkeypatch.setenv("MODELLEDGER_DATA_TRAIN", "/data/train.csv")
    with pytest.raises(InvalidInput, match="must name a data set version"):
        modelledger.inputs(home)
    monkeypatch.setenv("MODELLEDGER_DATA_TRAIN", "datasets:/toy/1")
    with pytest.raises(InvalidInput, match="looks like a secret"):
        modelledger.inputs(home, env=["DB_PASSWORD"])


def test_variables_are_read_as_roles_and_links() -> None:
    env = {
        "MODELLEDGER_DATA_TRAIN": "datasets:/a/3",
        "MODELLEDGER_DATA_HOLDOUT": "datasets:/b/1",
        "MODELLEDGER_LINK_REFRESH_OF": "models:/x/4",
        "HOME": "/root",
    }
    assert data_variables(env) == {"holdout": "datasets:/b/1", "train": "datasets:/a/3"}
    assert links_from_environment(env) == {"refresh_of": "models:/x/4"}


def test_seed_is_an_integer_and_seeds_the_global_generators() -> None:
    import random

    import numpy as np

    assert modelledger.seed(5) == 5
    first = (random.random(), float(np.random.random()))
    modelledger.seed(5)
    assert (random.random(), float(np.random.random())) == first
    with pytest.raises(InvalidInput):
        modelledger.seed("5")  # type: ignore[arg-type]
    forget()


# ---------------------------------------------------------------- a training script's run


def test_a_training_script_records_how_to_run_it_again(home: Registry, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    (repo / "models" / "train.py").write_text(TRAIN_SCRIPT)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "-C", str(repo), "add", "."], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-qm", "train"], check=True)
    train = home.datasets.register("toy-train", toy_frame())
    env = {
        **os.environ,
        "MODELLEDGER_DATA_TRAIN": train.uri,
        "FEATURE_SET": "v2",
        "API_TOKEN": "s3cr3t",  # set, but never declared: not recorded
        "MODELLEDGER_LINK_REFRESH_OF": "models:/toy/1",
    }
    env.pop("PYTEST_CURRENT_TEST", None)
    done = subprocess.run(
        [sys.executable, str(repo / "models" / "train.py"), "--fast"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    version = home.get_version(done.stdout.strip())
    run = version.manifest["run"]
    # an absolute script path inside the checkout is recorded relative to the working folder
    assert run["command"] == ["python", "models/train.py", "--fast"]
    assert run["cwd"] == "."
    assert run["env"] == {"FEATURE_SET": "v2", "MODELLEDGER_DATA_TRAIN": train.uri}
    assert run["seeds"] == {"random": 11, "numpy.random": 11}
    assert run["unseeded"] == ["forest__random_state"]  # why two runs of it may differ
    assert version.manifest["links"] == {"refresh_of": "models:/toy/1"}
    assert [d["role"] for d in version.manifest["datasets"]] == ["train"]
    assert "s3cr3t" not in json.dumps(dict(version.manifest))
