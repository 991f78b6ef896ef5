"""Erasure: bytes removed as a recorded act. The bytes go (on disk, in the bucket); the rows,
digests and events stay; ``verify`` reports the erasure (what, when, who, why) rather than a
missing file, and the chain still verifies. On SQLite and PostgreSQL, over a local folder and
S3."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from modelledger import Conflict, Erased, InvalidInput, NotFound, PermissionDenied, Registry
from modelledger.cli import main
from modelledger.stores.artifacts import ArtifactStore


class Scorer:
    def predict(self, frame: Any) -> Any:
        return np.asarray(frame["income"], dtype=float) / 1000 + np.asarray(frame["age"])


def _frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame({"age": rng.integers(18, 75, n), "income": rng.normal(52_000, 15_000, n).round(2)})


@pytest.fixture(params=["file", "s3"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, object]]:
    if request.param == "file":
        return str(tmp_path / "artifacts"), {}
    return request.getfixturevalue("s3_artifacts")  # type: ignore[no-any-return]


@pytest.fixture
def reg(db_url: str, where: tuple[str, dict[str, object]]) -> Iterator[Registry]:
    url, options = where
    with Registry.open(db_url, artifacts=url, storage_options=options, actor="alice@example.com") as r:
        yield r


def _store(reg: Registry) -> ArtifactStore:
    """A fresh view of the same artefact root (its own listing cache)."""
    return ArtifactStore(reg.artifact_root, **reg._art._storage_options)


def _member(
    reg: Registry, db_url: str, where: tuple[str, dict[str, object]], name: str, *roles: str
) -> Registry:
    member = Registry.open(db_url, artifacts=where[0], storage_options=where[1], actor=name)
    reg.enrol(name, member.whoami()["public_key"], roles=list(roles))
    return member


def _chain_ok(reg: Registry) -> None:
    assert reg.verify_ledger().ok
    assert reg.check_state() == []


def test_erasing_a_version_removes_its_bytes_and_verify_reports_the_erasure(reg: Registry) -> None:
    frame = _frame(5)
    mv = reg.register("credit-risk", Scorer(), sample_input=frame, capture=False)
    store = _store(reg)
    paths = [f"{mv.folder}/artifacts/{f.path}" for f in mv.files]
    assert paths and all(store.exists(p) for p in paths)
    erasure = reg.erase(mv.uri, reason="GDPR art. 17, ticket 812")
    store.refresh()
    assert not any(store.exists(p) for p in paths)  # the bytes are gone
    assert store.exists(f"{mv.folder}/manifest.json")  # metadata and digests stay
    assert (erasure.target, erasure.action, erasure.actor) == (mv.uri, "version.erased", "alice@example.com")
    assert erasure.reason == "GDPR art. 17, ticket 812"
    assert {f["path"]: f["sha256"] for f in erasure.files} == {
        f"{mv.folder}/artifacts/{f.path}": f.sha256 for f in mv.files
    }
    event = reg.history(mv.uri)[-1]
    assert (event.action, event.actor, event.reason, event.seq) == (
        "version.erased",
        "alice@example.com",
        "GDPR art. 17, ticket 812",
        erasure.seq,
    )
    assert event.data["digest"] == mv.digest
    # the row and its digest stay
    assert reg.get_version(mv.uri).digest == mv.digest
    report = reg.verify()
    assert report.ok, [str(p) for p in report.problems]
    assert [e.to_dict() for e in report.erased] == [erasure.to_dict()]
    assert report.erased[0].time == event.time
    _chain_ok(reg)
    with pytest.raises(Erased, match=r"erased at .* by alice@example.com .*GDPR art. 17") as caught:
        reg.load(mv.uri)
    assert isinstance(caught.value, NotFound) and caught.value.seq == erasure.seq
    # erasing again records nothing new
    again = reg.erase(mv.uri, reason="twice")
    assert again.seq == erasure.seq and reg.history(mv.uri)[-1].seq == erasure.seq


def test_a_version_file_removed_without_an_erasure_is_missing(reg: Registry) -> None:
    """The contrast that makes the test above able to fail: no record, a problem."""
    mv = reg.register("credit-risk", Scorer(), sample_input=_frame(5), capture=False)
    _store(reg).remove(f"{mv.folder}/artifacts/{mv.files[0].path}")
    report = reg.verify()
    assert [p.kind for p in report.problems] == ["missing"] and report.erased == ()


def test_an_erased_file_that_comes_back_is_a_problem(reg: Registry, where: Any) -> None:
    mv = reg.register("credit-risk", Scorer(), sample_input=_frame(5), capture=False)
    rel = f"{mv.folder}/artifacts/{mv.files[0].path}"
    data = _store(reg).read_bytes(rel)
    reg.erase(mv.uri, reason="retention ended")
    _store(reg).put_bytes(rel, data)
    report = reg.verify()
    assert [(p.kind, p.path) for p in report.problems] == [("not_erased", rel)]


def test_erasure_needs_a_reason_and_the_admin_role(reg: Registry, db_url: str, where: Any) -> None:
    mv = reg.register("credit-risk", Scorer(), sample_input=_frame(5), capture=False)
    with pytest.raises(InvalidInput, match="reason"):
        reg.erase(mv.uri, reason=" ")
    with pytest.raises(InvalidInput, match="cannot erase"):
        reg.erase("credit-risk", reason="x")
    dev = _member(reg, db_url, where, "dev@bank.example", "contributor", "approver", "deployer")
    with pytest.raises(PermissionDenied, match="needs the admin role"):
        dev.erase(mv.uri, reason="not mine to erase")
    assert reg.load(mv.uri) is not None  # nothing was removed
    assert [e.action for e in reg.history(mv.uri)].count("version.erased") == 0


def test_erasing_a_data_set_removes_its_file(reg: Registry) -> None:
    dv = reg.datasets.register("applications", _frame(20))
    assert reg.datasets.read(dv.uri).num_rows == 20
    erasure = reg.erase(dv.uri, reason="consent withdrawn")
    assert erasure.files[0]["sha256"] == dv.file_sha256 and erasure.action == "dataset.erased"
    assert not _store(reg).exists(dv.path)
    with pytest.raises(Erased, match="consent withdrawn"):
        reg.datasets.read(dv.uri)
    assert reg.datasets.get(dv.uri).digest == dv.digest  # the row and digest stay
    report = reg.verify()
    assert report.ok, [str(p) for p in report.problems]
    assert [e.target for e in report.erased] == [dv.uri]
    _chain_ok(reg)
    # the same content cannot come back under the erased version
    with pytest.raises(Conflict, match="erased"):
        reg.datasets.register("applications", _frame(20))
    assert not _store(reg).exists(dv.path)


def test_erasing_captured_predictions(reg: Registry) -> None:
    frame = _frame(30)
    mv = reg.register("credit-risk", Scorer(), sample_input=frame[:5], capture=False)
    with reg.load(mv.uri, capture=True, flush_rows=10) as served:
        served.predict(frame)
    store = _store(reg)
    captured = [p for p in store.list_files(f"{mv.folder}/predictions") if p.endswith(".parquet")]
    assert captured
    assert reg.predictions(mv.uri).num_rows == 30
    erasure = reg.erase(f"predictions:/{mv.model}/{mv.version}", reason="retention: 30 days")
    assert erasure.action == "predictions.erased"
    assert sorted(erasure.paths) == sorted(f"{mv.folder}/predictions/{p}" for p in captured)
    store.refresh()
    assert not [p for p in store.list_files(f"{mv.folder}/predictions") if p.endswith(".parquet")]
    assert reg.predictions(mv.uri).num_rows == 0
    report = reg.verify()
    assert report.ok, [str(p) for p in report.problems]  # no "missing" for the erased files
    assert [e.target for e in report.erased] == [f"predictions:/{mv.model}/{mv.version}"]
    _chain_ok(reg)
    assert reg.load(mv.uri) is not None  # the model itself is untouched
    with pytest.raises(Exception, match="no captured predictions to erase"):
        reg.erase(f"predictions:/{mv.model}/{mv.version}", reason="again")


def test_erasure_after_a_rename(reg: Registry) -> None:
    mv = reg.register("credit", Scorer(), sample_input=_frame(5), capture=False)
    reg.rename_model("credit", "credit-risk", reason="naming")
    erasure = reg.erase("models:/credit-risk/1", reason="GDPR")
    with pytest.raises(Erased):
        reg.load("models:/credit-risk/1")
    assert reg.erase("models:/credit-risk/1", reason="again").seq == erasure.seq
    assert mv.folder == reg.get_version("models:/credit-risk/1").folder
    report = reg.verify()
    assert report.ok and len(report.erased) == 1


def test_erase_cli_needs_yes(reg: Registry, db_url: str, where: Any) -> None:
    mv = reg.register("credit-risk", Scorer(), sample_input=_frame(5), capture=False)
    args = ["--registry", db_url, "--artifacts", where[0], "--as", "alice@example.com"]
    for key, value in where[1].items():
        args += ["--storage-option", f"{key}={value}"]
    run = CliRunner().invoke
    out = run(main, ["erase", mv.uri, "--reason", "GDPR", *args])
    assert out.exit_code == 2 and "--yes" in out.output
    assert reg.load(mv.uri) is not None  # nothing removed without --yes
    out = run(main, ["erase", mv.uri, "--reason", "GDPR", "--yes", *args])
    assert out.exit_code == 0 and "Erased models:/credit-risk/1" in out.output, out.output
    out = run(main, ["verify", *args])
    assert out.exit_code == 0, out.output
    assert "erased: models:/credit-risk/1 erased at" in out.output and "(GDPR)" in out.output
