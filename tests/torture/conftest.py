"""Fixtures shared by the torture tests (on top of those in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelledger import Registry


@pytest.fixture
def history(db_url: str, tmp_path: Path, fitted_pipeline) -> Registry:
    """A registry with a real governance history: two versions, approvals, deployments."""
    alice = Registry.open(db_url, artifacts=str(tmp_path / "artifacts"), actor="alice@bank.example")
    bob = Registry.open(db_url, artifacts=str(tmp_path / "artifacts"), actor="bob@bank.example")
    for _ in range(2):
        uri = alice.register("credit-risk", fitted_pipeline, metrics={"auc": 0.9}, capture=False).uri
        bob.approve(uri, reason="reviewed")
        bob.deploy(uri, reason="release")
    bob.close()
    report = alice.verify()
    assert report.ok, report.problems
    assert report.events_checked >= 12
    return alice
