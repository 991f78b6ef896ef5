"""Refresh, end to end: a real training script (tests/refresh_train.py, committed to a git
repository of its own) trained once and deployed, then refreshed on a schedule under a
controlled clock, when a new version of its data set lands, and by hand on data that fails its
gate. The runs go through the real engine (checkout, environment, run, registration and its
gates); the environment is the prebuilt one of this interpreter, found in the cache as a second
run would find it.

One module-scoped story (four training runs) feeds every test, so each test reads its part."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from tests.conftest import enrol_cast

from modelledger import Firing, RefreshReport, Registry, Scheduler, parse_cron
from modelledger._environment import MARKER, environment_digest, modelledger_source
from modelledger._lifecycle import EventDraft
from modelledger.cli import main

HERE = Path(__file__).parent
SCHEDULE = "0 3 * * MON"


def _frame(seed: int, rows: int, *, shift: float = 0.0) -> pd.DataFrame:
    """Applications whose defaulters earn about 30 and the others about 60 (``shift`` added to
    every income: an extract in another unit, from which the cut learnt fails the holdout)."""
    rng = np.random.default_rng(seed)
    defaulted = rng.integers(0, 2, rows)
    income = np.where(defaulted == 1, rng.normal(30, 5, rows), rng.normal(60, 5, rows)) + shift
    return pd.DataFrame({"income": income.round(2), "defaulted": defaulted})


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


@dataclass
class Story:
    registry: Registry
    v1: str
    clock: list[datetime]
    due: datetime
    ticks: dict[str, list[Firing]] = field(default_factory=dict)
    manual: RefreshReport | None = None
    cli: Any = None
    new_train: str = ""
    bad_train: str = ""


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    root = tmp_path_factory.mktemp("refresh")
    repo = root / "repo"
    repo.mkdir()
    shutil.copy(HERE / "refresh_train.py", repo / "train.py")
    _git(repo, "init", "-q")
    _git(repo, "add", "train.py")
    _git(repo, "commit", "-q", "-m", "training")
    url, artifacts = f"sqlite:///{root / 'registry.db'}", str(root / "artifacts")
    enrol_cast(url, artifacts)
    registry = Registry.open(url, artifacts=artifacts, actor="alice@example.com")
    officer = Registry.open(url, artifacts=artifacts, actor="bob@example.com")
    train = registry.datasets.register("apps-train", _frame(1, 200))
    holdout = registry.datasets.register("apps-holdout", _frame(2, 100))

    # the first version: trained by the script as a person would run it
    env = {
        **os.environ,
        **registry.process_environment(),
        "MODELLEDGER_DATA_TRAIN": train.uri,
        "MODELLEDGER_DATA_HOLDOUT": holdout.uri,
    }
    subprocess.run([sys.executable, "train.py"], cwd=repo, env=env, check=True, capture_output=True)
    v1 = registry.get_version("models:/credit/latest")
    officer.approve(v1.uri, reason="holdout report reviewed")
    officer.deploy(v1.uri)

    # later runs find this interpreter's environment ready in the cache
    cache = root / "environments"
    _prebuilt_environment(cache, v1.manifest)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODELLEDGER_ENV_CACHE", str(cache))
        start = datetime.now(timezone.utc)
        story = Story(registry, v1.uri, [start], parse_cron(SCHEDULE).next_after(start))
        scheduler = Scheduler(registry, clock=lambda: story.clock[0])
        story.ticks["before"] = scheduler.tick()  # the last due time is older than the deployment
        story.clock[0] = story.due + timedelta(seconds=30)
        story.ticks["due"] = scheduler.tick()
        story.clock[0] = story.due + timedelta(minutes=5)
        story.ticks["again"] = scheduler.tick()
        # a restart, or a second scheduler: the due time is recorded, nothing fires again
        story.ticks["restarted"] = Scheduler(registry, clock=lambda: story.clock[0]).tick()

        story.new_train = registry.datasets.register("apps-train", _frame(3, 300)).uri
        story.ticks["data"] = scheduler.tick()
        story.ticks["data again"] = scheduler.tick()

        story.bad_train = registry.datasets.register("apps-train", _frame(4, 200, shift=60.0)).uri
        story.cli = CliRunner().invoke(
            main,
            [
                "refresh",
                "models:/credit@production",
                "--data",
                f"train={story.bad_train}",
                "--json",
                "--registry",
                url,
                "--artifacts",
                artifacts,
                "--as",
                "alice@example.com",
            ],
        )
        if story.cli.exit_code in (0, 3):
            story.manual = RefreshReport.from_dict(json.loads(story.cli.stdout))
        yield story
    registry.close()
    officer.close()


def _prebuilt_environment(cache: Path, manifest: Any) -> None:
    python = str(manifest["python"])
    source = modelledger_source(None, None)
    digest = environment_digest(python, dict(manifest["dependencies"]), source[1])
    folder = cache / digest.split(":", 1)[1][:24]
    (folder / "bin").mkdir(parents=True)
    launcher = folder / "bin" / "python"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    launcher.chmod(0o755)
    (folder / MARKER).write_text('{"packages": 0, "installer": "prebuilt for the tests"}')


def test_a_schedule_fires_once_per_due_time(story: Story) -> None:
    assert story.ticks["before"] == []
    [fired] = story.ticks["due"]
    assert (fired.trigger, fired.source, fired.due) == ("schedule", story.v1, _text(story.due))
    assert fired.error is None and fired.candidate is not None
    assert story.ticks["again"] == [] and story.ticks["restarted"] == []
    events = [e for e in story.registry.history(story.v1) if e.action == "refresh.triggered"]
    assert [e.data["trigger"] for e in events] == ["schedule", "data"]
    assert events[0].data["due"] == _text(story.due) and events[0].seq == fired.seq
    candidate = story.registry.get_version(fired.candidate)
    assert candidate.manifest["links"] == {"refresh_of": story.v1}
    assert story.registry.state(candidate.uri).stage == "validated"  # its gate passed; approval is manual


def test_new_data_fires_a_refresh_on_it(story: Story) -> None:
    [fired] = story.ticks["data"]
    assert fired.trigger == "data" and fired.data == {"train": story.new_train}
    assert story.ticks["data again"] == []
    candidate = story.registry.get_version(str(fired.candidate))
    roles = {d["role"]: d["uri"] for d in candidate.manifest["datasets"]}
    assert roles == {"train": story.new_train, "holdout": "datasets:/apps-holdout/1"}
    assert fired.stage == "validated"


def test_lineage_shows_the_source_and_the_new_data(story: Story) -> None:
    candidate = str(story.ticks["data"][0].candidate)
    graph = story.registry.lineage(candidate)
    upstream = {(e.source, e.label) for e in graph.edges if e.target == candidate}
    assert (story.v1, "refresh_of") in upstream
    assert (story.new_train, "train") in upstream
    assert graph.nodes[story.v1].kind == "model"

    result = CliRunner().invoke(main, ["lineage", candidate, *_where(story)])
    assert result.exit_code == 0, result.output
    assert f"refresh_of: {story.v1}" in result.output
    assert f"train: {story.new_train}" in result.output


def test_diff_shows_what_the_refresh_changed(story: Story) -> None:
    candidate = str(story.ticks["data"][0].candidate)
    d = story.registry.diff(story.v1, candidate)
    assert d.links == [{"from": candidate, "relation": "refresh_of", "to": story.v1}]
    [train] = d.datasets
    assert (train["role"], train["old"], train["new"]) == ("train", "datasets:/apps-train/1", story.new_train)
    assert train["rows"] == {"old": 200, "new": 300}
    assert train["old_digest"] != train["new_digest"]
    assert "cut" in d.params  # what it learnt moved with the data

    result = CliRunner().invoke(main, ["diff", story.v1, candidate, *_where(story)])
    assert result.exit_code == 0, result.output
    assert f"{candidate} is a refresh of {story.v1}" in result.output
    assert f"datasets:/apps-train/1 -> {story.new_train}" in result.output
    assert "200 -> 300" in result.output


def test_trace_of_a_refreshed_model_names_its_source(story: Story) -> None:
    candidate = str(story.ticks["data"][0].candidate)
    with story.registry.load(candidate, capture=True) as predictor:
        prediction = predictor.predict(pd.DataFrame({"income": [25.0]})).receipts[0].prediction_id
    report = story.registry.trace(prediction)
    [link] = report.links
    assert (link["relation"], link["target"]) == ("refresh_of", story.v1)
    assert link["data"] == {"train": {"old": "datasets:/apps-train/1", "new": story.new_train}}

    result = CliRunner().invoke(main, ["trace", prediction, *_where(story)])
    assert result.exit_code == 0, result.output
    line = f"{story.v1}; data: train datasets:/apps-train/1 -> {story.new_train}"
    assert re.search(rf"\n  refresh of +{re.escape(line)}\n", result.output), result.output


def test_a_refresh_whose_gate_fails_ends_rejected_and_undeployed(story: Story) -> None:
    assert story.cli.exit_code == 3, story.cli.output
    report = story.manual
    assert report is not None and report.rejected and report.source == story.v1
    assert report.changed == {"train": {"old": "datasets:/apps-train/1", "new": story.bad_train}}
    [gate] = report.gates
    assert gate["gate"] == "accuracy >= 0.8" and not gate["passed"] and gate["value"] < 0.8
    assert story.registry.state(report.candidate).stage == "rejected"
    assert story.registry.get_version("models:/credit@production").uri == story.v1
    rejected = [e for e in story.registry.history(report.candidate) if e.action == "validation.evaluated"]
    assert rejected[-1].data["stage"] == "rejected"


def _text(when: datetime) -> str:
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _where(story: Story) -> list[str]:
    url = story.registry.process_environment()
    return ["--registry", url["MODELLEDGER_URL"], "--artifacts", url["MODELLEDGER_ARTIFACTS"]]


def test_lineage_trace_and_diff_show_a_reproduction_with_its_verdict(story: Story) -> None:
    """A version linked ``reproduction_of`` shows the link with the verdict that
    ``Registry.reproduce`` recorded about the original (``version.reproduced``, written here as
    it writes it: reproduce's own tests run it)."""
    v1 = story.registry.get_version(story.v1)
    copy = story.registry.register(
        "credit",
        lambda rows: [0 for _ in rows],
        capture=False,
        manifest={"links": {"reproduction_of": v1.uri}},
        datasets={d["role"]: d["uri"] for d in v1.manifest["datasets"]},
    )
    data = {"model": "credit", "version": v1.version, "reproduction": copy.uri, "verdict": "different"}
    data["reasons"] = ["dependency numpy: 2.1.0 -> 2.2.0"]
    draft = EventDraft("version.reproduced", v1.uri, data, "verdict: different")
    story.registry._meta.govern(
        "credit",
        v1.version,
        lambda _ctx: [draft],
        actor="alice@example.com",
        signer=story.registry._signer(),
        needs_state=False,
        needs_policy=False,
    )
    graph = story.registry.lineage(copy.uri)
    assert (v1.uri, copy.uri, "reproduction_of (different)") in {
        (e.source, e.target, e.label) for e in graph.edges
    }
    result = CliRunner().invoke(main, ["lineage", copy.uri, *_where(story)])
    assert f"reproduction_of (different): {v1.uri}" in result.output, result.output
    assert story.registry.diff(v1.uri, copy.uri).links == [
        {"from": copy.uri, "relation": "reproduction_of", "to": v1.uri}
    ]
    with story.registry.load(copy.uri, capture=True) as predictor:
        prediction = predictor.predict(pd.DataFrame({"income": [25.0]})).receipts[0].prediction_id
    [link] = story.registry.trace(prediction).links
    assert (link["relation"], link["verdict"]) == ("reproduction_of", "different")
    result = CliRunner().invoke(main, ["trace", prediction, *_where(story)])
    line = f"{v1.uri}: different (dependency numpy: 2.1.0 -> 2.2.0)"
    assert re.search(rf"\n  reproduction of +{re.escape(line)}\n", result.output), result.output
