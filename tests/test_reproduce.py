"""Reproduce: a version's training run again in an isolated environment, with a verdict.

One real environment is built for the module (uv, a cache folder of the module's own), from
the versions of this test run's packages that a demo-shaped training needs; the training
script in a temporary git repository runs in it, so that its recorded pins are that very
environment and every reproduction finds it in the cache. Only the changed-pin test builds a
second one.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from modelledger import Registry, RunFailed, StepEvent
from modelledger._environment import Environment, build_environment, modelledger_source
from modelledger.cli import main

# What the demo-shaped training imports: modelledger's own dependencies and scikit-learn
# (uv brings in what these need, scipy, joblib, threadpoolctl...)
TOP_LEVEL = (
    "sqlalchemy",
    "alembic",
    "fsspec",
    "click",
    "rich",
    "pyyaml",
    "cloudpickle",
    "numpy",
    "pandas",
    "pyarrow",
    "cryptography",
    "scikit-learn",
)

TRAIN = """\
import sys

if "--crash" in sys.argv:  # before anything heavy: a run that fails early
    raise SystemExit("training data could not be prepared")

import modelledger
from modelledger import Registry
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

frames = modelledger.inputs()
train, holdout = frames["train"], frames["holdout"]
features = ["age", "income", "loan", "employment"]
unseeded = "--unseeded" in sys.argv
model = GradientBoostingClassifier(
    n_estimators=20, max_depth=2, subsample=0.7, random_state=None if unseeded else 7
)
pipeline = Pipeline(
    [
        (
            "prepare",
            ColumnTransformer(
                [
                    ("num", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]),
                     ["age", "income", "loan"]),
                    ("cat", OneHotEncoder(handle_unknown="ignore"), ["employment"]),
                ]
            ),
        ),
        ("model", model),
    ]
)
pipeline.fit(train[features], train["defaulted"])
auc = roc_auc_score(holdout["defaulted"], pipeline.predict_proba(holdout[features])[:, 1])
version = Registry.open().register(
    "credit", pipeline, sample_input=train[features].head(10), metrics={"auc_holdout": float(auc)}
)
print(version.uri)
if "--fail-after" in sys.argv:  # a run that registers, then fails
    raise SystemExit("the report could not be written")
"""


@dataclass
class World:
    root: Path
    repo: Path
    revision: str
    registry: Registry
    environment: Environment
    seeded: str
    unseeded: str

    @property
    def cache(self) -> Path:
        return self.root / "environments"


def _frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    income = rng.lognormal(10.5, 0.4, n)
    loan = rng.gamma(2.0, 5_000, n)
    employment = rng.choice(["salaried", "self-employed", "unemployed"], n, p=[0.7, 0.2, 0.1])
    logit = -2 + 6 * loan / income + 1.5 * (employment == "unemployed")
    return pd.DataFrame(
        {
            "age": rng.integers(18, 75, n),
            "income": income.round(2),
            "loan": loan.round(2),
            "employment": employment,
            "defaulted": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int),
        }
    )


def _git(*args: str, cwd: Path) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
    return subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _train(world_env: Environment, repo: Path, data: dict[str, str], *flags: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_CURRENT_TEST", "PYTHONDONTWRITEBYTECODE")}
    env.update({f"MODELLEDGER_DATA_{role.upper()}": uri for role, uri in data.items()})
    done = subprocess.run(
        [str(world_env.python), "train.py", *flags],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("reproduce")
    repo = root / "repo"
    repo.mkdir()
    (repo / "train.py").write_text(TRAIN)
    _git("init", "-q", cwd=repo)
    _git("add", "train.py", cwd=repo)
    _git("commit", "-qm", "training", cwd=repo)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODELLEDGER_HOME", str(root / "registry"))
        for name in list(os.environ):
            if name.startswith(("MODELLEDGER_DATA_", "MODELLEDGER_LINK_", "MODELLEDGER_URL")):
                mp.delenv(name)
        mp.chdir(repo)  # the recorded checkout has no remote: reproduce finds it here
        registry = Registry.open()
        rng = np.random.default_rng(3)
        train = registry.datasets.register("applications-train", _frame(rng, 300))
        holdout = registry.datasets.register("applications-holdout", _frame(rng, 80))
        data = {"train": train.uri, "holdout": holdout.uri}
        environment = build_environment(
            python_version=platform.python_version(),
            pins={name: installed_version(name) for name in TOP_LEVEL},
            source=modelledger_source(None, None),
            cache_dir=root / "environments",
        )
        seeded = _train(environment, repo, data)
        unseeded = _train(environment, repo, data, "--unseeded")
        yield World(
            root=root,
            repo=repo,
            revision=_git("rev-parse", "HEAD", cwd=repo),
            registry=registry,
            environment=environment,
            seeded=seeded,
            unseeded=unseeded,
        )
        registry.close()


def _versions(registry: Registry) -> list[str]:
    return [v.uri for v in registry.iter_versions("credit")]


def test_the_training_records_how_it_ran_in_its_environment(world: World) -> None:
    manifest = world.registry.get_version(world.seeded).manifest
    assert manifest["run"]["command"] == ["python", "train.py"]
    assert manifest["run"]["cwd"] == "."
    assert manifest["run"]["seeds"] == {"model__random_state": 7}
    unseeded = world.registry.get_version(world.unseeded).manifest["run"]
    assert unseeded["command"] == ["python", "train.py", "--unseeded"]
    assert unseeded["unseeded"] == ["model__random_state"]
    assert manifest["dependencies"]["scikit-learn"] == installed_version("scikit-learn")


def test_the_demo_shaped_model_is_reproduced_identical(world: World) -> None:
    before = set(_versions(world.registry))
    result = CliRunner().invoke(
        main, ["reproduce", world.seeded, "--cache-dir", str(world.cache), "--require", "identical"]
    )
    assert result.exit_code == 0, result.output
    assert f"{world.seeded} -> " in result.stdout and "IDENTICAL" in result.stdout
    for step in ("checkout", "environment", "data", "run", "verdict"):
        assert f"✓ {step}" in result.stderr
    assert "cached" in result.stderr  # the module's environment, found by the recorded pins
    [new] = set(_versions(world.registry)) - before
    original, rebuilt = world.registry.get_version(world.seeded), world.registry.get_version(new)
    assert rebuilt.manifest["links"] == {"reproduction_of": world.seeded}
    assert [(f.path, f.sha256) for f in rebuilt.files] == [(f.path, f.sha256) for f in original.files]
    event = world.registry.history(world.seeded)[-1]
    assert event.action == "version.reproduced"
    assert (event.data["verdict"], event.data["reproduction"]) == ("identical", new)
    assert world.registry.verify_ledger().ok  # the verdict is signed into the chain like the rest


def test_an_unseeded_model_is_not_identical_and_the_reason_names_the_source(world: World) -> None:
    events: list[StepEvent] = []
    found = world.registry.reproduce(world.unseeded, cache_dir=world.cache, progress=events.append)
    assert found.verdict in ("equivalent", "different")
    assert found.max_difference is not None and found.compared_on is not None
    assert found.compared_on.startswith("datasets:/applications-holdout/")
    assert any("model__random_state is unseeded" in r for r in found.reasons), found.reasons
    if found.verdict == "different":
        assert found.max_difference > found.tolerance
    assert [e.step for e in events if e.status == "done"] == [
        "checkout",
        "environment",
        "data",
        "run",
        "verdict",
    ]


def test_a_changed_dependency_pin_is_reported_different_naming_the_package(world: World) -> None:
    threadpoolctl = installed_version("threadpoolctl")
    older = "3.5.0" if threadpoolctl != "3.5.0" else "3.4.0"
    found = world.registry.reproduce(world.seeded, cache_dir=world.cache, pins={"threadpoolctl": older})
    assert found.verdict == "different"
    assert f"dependency threadpoolctl {threadpoolctl} -> {older}" in found.reasons
    assert found.environment["digest"] != world.environment.digest


def test_a_version_trained_from_uncommitted_changes_is_refused_with_the_reason(world: World) -> None:
    original = world.registry.get_version(world.seeded).manifest
    dirty = world.registry.register(
        "credit",
        lambda rows: rows,
        manifest={
            "source": {**original["source"], "dirty": True, "dirty_paths": ["train.py"]},
            "run": original["run"],
            "python": original["python"],
            "dependencies": original["dependencies"],
        },
    )
    before = _versions(world.registry)
    with pytest.raises(RunFailed) as err:
        world.registry.reproduce(dirty.uri, cache_dir=world.cache)
    assert err.value.step == "checkout"
    assert "uncommitted changes (train.py)" in err.value.detail and "--allow-dirty" in err.value.detail
    assert _versions(world.registry) == before


def _recorded_like(world: World, **changes: object) -> str:
    """A version recording the seeded one's training, with ``changes`` to its manifest."""
    original = world.registry.get_version(world.seeded).manifest
    manifest = {
        key: original[key]
        for key in ("source", "run", "python", "dependencies", "datasets")
        if key in original
    }
    manifest.update(changes)
    return world.registry.register("credit", lambda rows: rows, manifest=manifest, capture=False).uri


def test_a_failure_at_a_step_names_it_and_leaves_no_candidate(world: World) -> None:
    missing_python = _recorded_like(world, python="3.4.2")
    run = world.registry.get_version(world.seeded).manifest["run"]
    crashing = _recorded_like(world, run={**run, "command": ["python", "train.py", "--crash"]})
    before = _versions(world.registry)

    with pytest.raises(RunFailed) as err:
        world.registry.reproduce(missing_python, cache_dir=world.cache)
    assert err.value.step == "environment"
    assert "Python 3.4.2, which is not installed on this machine" in err.value.detail

    events: list[StepEvent] = []
    with pytest.raises(RunFailed) as err:
        world.registry.reproduce(crashing, cache_dir=world.cache, progress=events.append)
    assert err.value.step == "run"
    assert "training data could not be prepared" in err.value.detail
    assert events[-1] == StepEvent("run", "failed", err.value.detail)

    assert _versions(world.registry) == before
    assert not [e for e in world.registry.history(missing_python) if e.action == "version.reproduced"]


def test_a_run_that_fails_after_registering_leaves_its_version_rejected(world: World) -> None:
    run = world.registry.get_version(world.seeded).manifest["run"]
    failing = _recorded_like(world, run={**run, "command": ["python", "train.py", "--fail-after"]})
    before = set(_versions(world.registry))
    with pytest.raises(RunFailed) as err:
        world.registry.reproduce(failing, cache_dir=world.cache)
    assert err.value.step == "run" and "the report could not be written" in err.value.detail
    [registered] = set(_versions(world.registry)) - before
    assert world.registry.state(registered).stage == "rejected"  # never a candidate to approve
    rejection = world.registry.history(registered)[-1]
    assert rejection.action == "version.rejected" and "failed at step 'run'" in (rejection.reason or "")


def test_the_environment_digest_is_the_pins_not_their_spelling_or_order() -> None:
    from modelledger._environment import environment_digest

    one = environment_digest("3.11.7", {"scikit-learn": "1.9.1", "numpy": "2.1.0"}, "git:abc")
    assert one == environment_digest("3.11.7", {"numpy": "2.1.0", "Scikit_Learn": "1.9.1"}, "git:abc")
    # modelledger is installed from its source, which the digest names instead of the version
    assert one == environment_digest(
        "3.11.7", {"numpy": "2.1.0", "scikit-learn": "1.9.1", "modelledger": "0.1.0"}, "git:abc"
    )
    assert one != environment_digest("3.11.8", {"numpy": "2.1.0", "scikit-learn": "1.9.1"}, "git:abc")
    assert one != environment_digest("3.11.7", {"numpy": "2.1.1", "scikit-learn": "1.9.1"}, "git:abc")
    assert one != environment_digest("3.11.7", {"numpy": "2.1.0", "scikit-learn": "1.9.1"}, "git:def")


def test_input_differences_name_what_changed() -> None:
    from modelledger._reproduce import input_differences

    a = {
        "python": "3.11.7",
        "dependencies": {"numpy": "2.1.0", "scikit-learn": "1.9.1"},
        "datasets": [{"role": "train", "uri": "datasets:/a/1", "digest": "sha256:" + "1" * 64}],
        "params": {"max_depth": 3},
        "run": {"seeds": {"model__random_state": 7}},
    }
    assert input_differences(a, a) == []
    b = {
        "python": "3.11.7",
        "dependencies": {"numpy": "2.1.0", "scikit-learn": "1.8.0", "scipy": "1.17.1"},
        "datasets": [{"role": "train", "uri": "datasets:/a/2", "digest": "sha256:" + "2" * 64}],
        "params": {"max_depth": 4},
        "run": {"seeds": {"model__random_state": 8}},
    }
    assert input_differences(a, b) == [
        "dependency scikit-learn 1.9.1 -> 1.8.0",
        "dependency scipy (absent) -> 1.17.1",
        "data train: datasets:/a/1 (sha256:111111111111) -> datasets:/a/2 (sha256:222222222222)",
        "parameter max_depth 3 -> 4",
        "seed model__random_state 7 -> 8",
    ]


def test_a_registry_server_client_refuses_to_reproduce_saying_where_to_run_it() -> None:
    from modelledger import InvalidInput

    remote = Registry.open("http://127.0.0.1:9", token="mlt_unused")  # nothing is sent
    with pytest.raises(InvalidInput, match="not available through a registry server"):
        remote.reproduce("models:/credit/1")
