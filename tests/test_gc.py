"""gc: what the artefact root holds that nothing references goes; nothing registered does."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
import pytest
from click.testing import CliRunner

from modelledger import InvalidInput, Registry
from modelledger.cli import main


def _root(registry: Registry) -> Path:
    return Path(unquote(urlparse(registry.artifact_root).path))


def _age(path: Path, days: float) -> None:
    """Make every file at or below ``path`` look last written ``days`` ago."""
    then = time.time() - days * 86400
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if p.is_file():
            os.utime(p, (then, then))


@pytest.fixture
def leftovers(registry: Registry, fitted_pipeline, credit_data) -> dict[str, str]:
    """A registered version and data set, plus one leftover of each kind gc collects."""
    X, _ = credit_data
    kept = registry.register("credit-risk", fitted_pipeline, sample_input=X.head(), capture=False)
    data = registry.datasets.register("applications", X.head(50))
    abandoned = registry.upload("credit-risk", fitted_pipeline, capture=False)  # never registered
    root = _root(registry)
    staging = root / "datasets" / ".staging-feedc0de.parquet"
    staging.write_bytes(b"PAR1 interrupted ingest")
    stray = root / "datasets" / "applications" / "0badc0de0badc0de" / "data.parquet"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"PAR1 moved, never committed")
    return {
        "kept": kept.folder,
        "data": data.path,
        "abandoned": abandoned.folder,
        "staging": "datasets/.staging-feedc0de.parquet",
        "stray": "datasets/applications/0badc0de0badc0de/data.parquet",
    }


def test_dry_run_lists_only_unreferenced_things_and_changes_nothing(
    registry: Registry, leftovers: dict[str, str]
) -> None:
    root = _root(registry)
    report = registry.gc(older_than=timedelta(0))
    assert {(i.path, i.kind) for i in report.items} == {
        (leftovers["abandoned"], "model folder"),
        (leftovers["staging"], "ingest staging"),
        (leftovers["stray"], "data set file"),
    }
    assert not report.deleted and report.recent == 0
    sizes = {i.path: i.size_bytes for i in report.items}
    assert sizes[leftovers["staging"]] == len(b"PAR1 interrupted ingest")
    assert sizes[leftovers["abandoned"]] > 0
    assert all((root / p).exists() for p in leftovers.values())


def test_young_leftovers_are_left_alone(registry: Registry, leftovers: dict[str, str]) -> None:
    report = registry.gc(older_than=timedelta(hours=1), delete=True)
    assert report.items == () and report.recent == 3
    assert all((_root(registry) / p).exists() for p in leftovers.values())


def test_delete_removes_old_leftovers_and_keeps_everything_registered(
    registry: Registry, leftovers: dict[str, str], credit_data
) -> None:
    root = _root(registry)
    for key in ("abandoned", "staging", "stray", "kept", "data"):
        _age(root / leftovers[key], days=3)  # registered things are old too: age is no reason
    report = registry.gc(delete=True)  # default grace: 24 hours
    assert report.deleted and len(report.items) == 3
    for key in ("abandoned", "staging", "stray"):
        assert not (root / leftovers[key]).exists()
    assert not (root / leftovers["stray"]).parent.exists()  # the folder it leaves empty goes too
    assert registry.verify().ok
    X, _ = credit_data
    assert len(registry.load("models:/credit-risk@latest").predict(X.head())) == 5
    assert len(registry.datasets.to_pandas("datasets:/applications/1")) == 50
    assert registry.gc(older_than=timedelta(0)).items == ()


def test_a_registration_committed_after_the_listing_is_not_deleted(
    registry: Registry, fitted_pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    staged = registry.upload("late", fitted_pipeline, capture=False)
    lookup = registry._meta.referenced_paths
    calls = 0

    def registration_lands_meanwhile() -> tuple[set[str], set[str]]:
        nonlocal calls
        calls += 1
        seen = lookup()
        if calls == 1:
            registry.create_version(staged)  # commits between gc's listing and its deletion
        return seen

    monkeypatch.setattr(registry._meta, "referenced_paths", registration_lands_meanwhile)
    report = registry.gc(older_than=timedelta(0), delete=True)
    assert report.items == ()  # spared: by the ledger's registration record, or by the second look
    assert registry.verify().ok
    assert registry.load("models:/late/1") is not None


def test_gc_on_an_object_store(s3_artifacts, db_url: str, fitted_pipeline) -> None:
    url, options = s3_artifacts
    reg = Registry.open(db_url, artifacts=url, storage_options=options, actor="alice@example.com")
    reg.register("m", fitted_pipeline, capture=False)
    abandoned = reg.upload("m", fitted_pipeline, capture=False)
    assert reg.gc(older_than=timedelta(hours=1)).recent == 1  # S3's LastModified is read
    report = reg.gc(older_than=timedelta(0), delete=True)
    assert [i.path for i in report.items] == [abandoned.folder]
    assert reg.verify().ok


def test_bad_grace_period_is_refused(registry: Registry) -> None:
    with pytest.raises(InvalidInput, match="older_than"):
        registry.gc(older_than=timedelta(hours=-1))


def test_cli_gc(registry: Registry, leftovers: dict[str, str], db_url: str) -> None:
    runner = CliRunner()
    where = ["--registry", db_url, "--artifacts", registry.artifact_root]

    dry = runner.invoke(main, ["gc", "--older-than", "0", *where])
    assert dry.exit_code == 0, dry.output
    assert leftovers["abandoned"] in dry.stdout and "would remove 3 unreferenced items" in dry.stdout
    assert "--delete" in dry.stdout

    bad = runner.invoke(main, ["gc", "--older-than", "soon", *where])
    assert bad.exit_code == 1 and "older_than must look like 90s, 30m, 24h, 7d or 2w" in bad.output

    done = runner.invoke(main, ["gc", "--older-than", "0", "--delete", "--json", *where])
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert doc["deleted"] is True and {i["path"] for i in doc["items"]} == {
        leftovers["abandoned"],
        leftovers["staging"],
        leftovers["stray"],
    }
    assert registry.verify().ok
    assert runner.invoke(main, ["verify", *where]).exit_code == 0


def test_registered_data_sets_are_never_collected(registry: Registry) -> None:
    dv = registry.datasets.register("tiny", pd.DataFrame({"x": [1, 2, 3]}))
    _age(_root(registry) / dv.path, days=30)
    assert registry.gc(older_than=timedelta(0), delete=True).items == ()
    assert registry.datasets.to_pandas(dv.uri)["x"].tolist() == [1, 2, 3]


def test_an_empty_folder_left_by_a_claim_cut_short_is_collected(registry: Registry) -> None:
    root = Path(unquote(urlparse(registry.artifact_root).path))
    empty = root / "models" / "m" / "20261130T000000Z"
    empty.mkdir(parents=True)  # what a crash right after claiming the folder leaves
    old = time.time() - 3 * 3600
    os.utime(empty, (old, old))
    assert [(p.kind, p.path) for p in registry.verify(grace="1h").problems] == [
        ("orphan", "models/m/20261130T000000Z")
    ]
    report = registry.gc(older_than="1h", delete=True)
    assert [i.path for i in report.items] == ["models/m/20261130T000000Z"]
    assert not empty.exists()
    assert registry.verify(grace="0").ok
