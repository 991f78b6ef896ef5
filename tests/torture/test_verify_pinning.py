"""What ``verify`` can only prove with something kept outside the registry, and what it now
accounts for itself: a ledger cut short, a history re-signed with another key, a stray file
in a version folder, and writes still under way."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from tests.helpers import DynamoAttacker, attacker

from modelledger import Predictor, Registry
from modelledger._keys import generate_key, load_private_key
from modelledger._ledger import sign_checkpoint
from modelledger.cli import main
from modelledger.stores.artifacts import ArtifactStore


def _cut_tail(db_url: str, keep: int, *, fix_head: bool) -> None:
    """Delete every event after ``keep`` and their checkpoints, as someone hiding them would."""
    if db_url.startswith("dynamodb:"):
        editor = DynamoAttacker(db_url)
        editor.cut_after(keep)
        if fix_head:
            editor.set_head(keep, next(e["hash"] for e in editor.events() if e["seq"] == keep))
        return
    with attacker(db_url) as conn:
        conn.execute(sa.text("DELETE FROM ledger_events WHERE seq > :k"), {"k": keep})
        conn.execute(sa.text("DELETE FROM ledger_checkpoints WHERE seq > :k"), {"k": keep})
        conn.execute(sa.text("DELETE FROM alias_history WHERE seq > :k"), {"k": keep * 100 + 99})
        if fix_head:
            last = conn.execute(
                sa.text("SELECT hash FROM ledger_events WHERE seq = :k"), {"k": keep}
            ).scalar_one()
            conn.execute(
                sa.text("UPDATE ledger_head SET seq = :k, hash = :h WHERE id = 1"), {"k": keep, "h": last}
            )


def _keep_until_first_deploy(history: Registry) -> int:
    return next(e.seq for e in history.audit(limit=1000) if e.action == "deployment.deployed")


def test_a_ledger_cut_short_is_caught_by_a_trusted_checkpoint(history: Registry, db_url: str) -> None:
    trusted = history.latest_checkpoint()  # kept outside, e.g. in a release pipeline's artefacts
    keep = _keep_until_first_deploy(history)
    _cut_tail(db_url, keep, fix_head=True)
    history.rebuild_state()  # the tables made to match the shortened ledger
    assert history.verify().ok  # nothing inside the registry can tell
    report = history.verify(trusted_checkpoint=trusted.to_dict())
    assert [(p.kind, p.path) for p in report.problems] == [("truncated", f"ledger event {keep + 1}")]
    assert f"vouches for seq {trusted.seq}" in report.problems[0].detail


def test_a_cut_that_leaves_the_head_row_is_caught_without_a_pin(history: Registry, db_url: str) -> None:
    keep = _keep_until_first_deploy(history)
    head = history.latest_checkpoint().seq
    _cut_tail(db_url, keep, fix_head=False)
    history.rebuild_state()
    kinds = {(p.kind, p.path) for p in history.verify().problems}
    assert ("truncated", "ledger head") in kinds
    assert any(f"says seq {head}" in p.detail for p in history.verify().problems)


@pytest.fixture
def keep_key_rows(db_url: str) -> Iterator[None]:
    """The session's PostgreSQL key row outlives a test that replaces it: put it back."""
    if db_url.startswith("dynamodb:"):  # tables of the test's own: nothing outlives it
        yield
        return
    with attacker(db_url) as conn:
        rows = conn.exec_driver_sql("SELECT key_id, public_pem, created_at FROM registry_keys").all()
    yield
    insert = sa.text("INSERT INTO registry_keys (key_id, public_pem, created_at) VALUES (:k, :p, :c)")
    with attacker(db_url) as conn:
        conn.exec_driver_sql("DELETE FROM registry_keys")
        for kid, pem, created in rows:
            conn.execute(insert, {"k": kid, "p": pem, "c": created})


def test_a_history_re_signed_with_another_key_is_caught_by_the_pinned_key(
    history: Registry,
    db_url: str,
    tmp_path: Path,
    keep_key_rows: None,
) -> None:
    genuine = history.public_key()
    public = generate_key(tmp_path / "mallory.key")
    mallory = load_private_key(tmp_path / "mallory.key")
    if db_url.startswith("dynamodb:"):
        editor = DynamoAttacker(db_url)
        for row in editor.checkpoints():
            cp = sign_checkpoint(mallory, int(row["seq"]), row["head_hash"], row["time"])
            editor.update_checkpoint(row["seq"], signature=cp.signature, key_id=cp.key_id)
        key = editor.get_state("KEY", "KEY")
        editor.put_state({**key, "key_id": cp.key_id, "public_pem": public.decode(), "created_at": "x"})
    else:
        with attacker(db_url) as conn:
            rows = conn.exec_driver_sql("SELECT seq, head_hash, time FROM ledger_checkpoints").all()
            for seq, head, when in rows:
                cp = sign_checkpoint(mallory, int(seq), head, when)
                conn.execute(
                    sa.text("UPDATE ledger_checkpoints SET signature = :s, key_id = :k WHERE seq = :q"),
                    {"s": cp.signature, "k": cp.key_id, "q": seq},
                )
            conn.exec_driver_sql("DELETE FROM registry_keys")
            conn.execute(
                sa.text("INSERT INTO registry_keys (key_id, public_pem, created_at) VALUES (:k, :p, 'x')"),
                {"k": cp.key_id, "p": public.decode()},
            )
    fresh = Registry.open(db_url, artifacts=history.artifact_root)
    # checkpoints by a key no member holds: every event after the root is named, even unpinned
    unpinned = fresh.verify().problems
    assert unpinned and {p.kind for p in unpinned} == {"unauthorized", "untrusted_key"}
    pin = tmp_path / "registry.pub.pem"
    pin.write_bytes(genuine)
    kinds = [p.kind for p in fresh.verify(public_key=pin).problems]
    assert kinds[0] == "untrusted_key" and "checkpoint_wrong_key" in kinds


def test_a_stray_file_in_a_version_folder_is_reported(history: Registry, tmp_path: Path) -> None:
    v = history.get_version("credit-risk", 1)
    stray = tmp_path / "artifacts" / v.folder / "notes.txt"
    stray.write_text("added later")
    report = history.verify(grace="0")
    assert [(p.kind, p.path) for p in report.problems] == [("orphan", f"{v.folder}/notes.txt")]


def test_an_upload_still_under_way_is_in_flight_not_a_problem(
    history: Registry, fitted_pipeline: object
) -> None:
    uploaded = history.upload("credit-risk", fitted_pipeline, capture=False)
    report = history.verify()
    assert report.ok
    assert [(p.kind, p.path) for p in report.in_flight] == [("in_flight", uploaded.folder)]
    assert [(p.kind, p.path) for p in history.verify(grace="0").problems] == [("orphan", uploaded.folder)]
    history.create_version(uploaded)
    assert history.verify(grace="0").ok


def test_cli_exports_a_checkpoint_and_verifies_against_it(
    history: Registry, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = ["--registry", db_url, "--artifacts", history.artifact_root]
    runner = CliRunner()
    cp = tmp_path / "cp.json"
    pem = tmp_path / "pub.pem"
    assert runner.invoke(main, ["checkpoint", "export", "-o", str(cp), *where]).exit_code == 0
    assert runner.invoke(main, ["keys", "export", "-o", str(pem), *where]).exit_code == 0
    assert json.loads(cp.read_text())["seq"] == history.latest_checkpoint().seq
    pinned = ["verify", "--trusted-checkpoint", str(cp), "--public-key", str(pem), *where]
    assert runner.invoke(main, pinned).exit_code == 0
    _cut_tail(db_url, _keep_until_first_deploy(history), fix_head=True)
    history.rebuild_state()
    assert runner.invoke(main, ["verify", *where]).exit_code == 0
    result = runner.invoke(main, pinned)
    assert result.exit_code == 1
    assert "truncated" in result.output and "events were removed" in result.output


def _served(registry: Registry, fitted_pipeline: object, frame: pd.DataFrame) -> str:
    v = registry.register("served", fitted_pipeline, sample_input=frame.head(5), capture=False)
    with registry.load(v.uri, capture=True) as served:
        served.predict(frame.head(40))
        served.predict(frame.head(3))
    return v.uri


@pytest.mark.parametrize("edit", ["output", "input", "dropped signature"])
def test_edited_captures_are_caught_when_asked(
    db_url: str,
    tmp_path: Path,
    fitted_pipeline: object,
    credit_data: tuple[pd.DataFrame, pd.Series],
    edit: str,
) -> None:
    registry = Registry.open(db_url, artifacts=str(tmp_path / "artifacts"), actor="alice@bank.example")
    uri = _served(registry, fitted_pipeline, credit_data[0])
    assert registry.verify(captures=True).ok
    folder = tmp_path / "artifacts" / registry.get_version(uri).folder / "predictions"
    path = sorted(folder.rglob("*.parquet"))[0]
    table = pq.read_table(path)
    rows = table.to_pylist()
    if edit == "output":
        rows[5]["output"] = "1" if rows[5]["output"] != "1" else "0"  # a decision flipped
    elif edit == "input":
        rows[5]["input"] = rows[5]["input"].replace("0", "9", 1)
    else:
        rows[5]["signature"] = rows[6]["signature"][::-1]
    path.chmod(0o644)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    assert registry.verify().ok  # the default verify does not read captures
    problems = registry.verify(captures=True).problems
    # the file no longer hashes to its ledger record, and the row no longer matches its receipt
    assert [(p.kind, p.version) for p in problems] == [("mismatch", uri), ("mismatch", uri)]
    assert all(p.path.endswith(path.name) for p in problems)
    assert "sha256 is" in problems[0].detail and rows[5]["prediction_id"] in problems[1].detail


def test_every_written_capture_file_is_recorded_in_the_ledger(
    db_url: str, tmp_path: Path, fitted_pipeline: object, credit_data: tuple[pd.DataFrame, pd.Series]
) -> None:
    registry = Registry.open(db_url, artifacts=str(tmp_path / "artifacts"), actor="alice@bank.example")
    uri = _served(registry, fitted_pipeline, credit_data[0])
    folder = tmp_path / "artifacts" / registry.get_version(uri).folder / "predictions"
    on_disk = sorted(str(p.relative_to(tmp_path / "artifacts")) for p in folder.rglob("*.parquet"))
    records = [f for e in registry.audit(action="predictions.written", limit=100) for f in e.data["files"]]
    assert sorted(r["path"] for r in records) == on_disk and sum(r["rows"] for r in records) == 43
    for r in records:
        data = (tmp_path / "artifacts" / r["path"]).read_bytes()
        assert (r["size"], r["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    # a version's own history is about governance, not the capture files
    assert "predictions.written" not in {e.action for e in registry.history(uri)}
    report = registry.verify(captures=True)
    assert report.ok and report.unrecorded == ()


@pytest.mark.parametrize("how", ["deleted", "emptied folder"])
def test_a_deleted_capture_file_is_caught(
    db_url: str,
    tmp_path: Path,
    fitted_pipeline: object,
    credit_data: tuple[pd.DataFrame, pd.Series],
    how: str,
) -> None:
    registry = Registry.open(db_url, artifacts=str(tmp_path / "artifacts"), actor="alice@bank.example")
    uri = _served(registry, fitted_pipeline, credit_data[0])
    folder = tmp_path / "artifacts" / registry.get_version(uri).folder / "predictions"
    files = sorted(folder.rglob("*.parquet"))
    for path in files if how == "emptied folder" else files[:1]:
        path.unlink()
    problems = registry.verify().problems  # found without --captures: one listing per version
    assert {(p.kind, p.version) for p in problems} == {("missing", uri)}
    assert sorted(p.path for p in problems) == sorted(
        str(f.relative_to(tmp_path / "artifacts")) for f in (files if how == "emptied folder" else files[:1])
    )


def test_a_capture_file_left_unrecorded_is_listed_then_recorded_by_init(
    db_url: str, tmp_path: Path, fitted_pipeline: object, credit_data: tuple[pd.DataFrame, pd.Series]
) -> None:
    registry = Registry.open(db_url, artifacts=str(tmp_path / "artifacts"), actor="alice@bank.example")
    v = registry.register("served", fitted_pipeline, sample_input=credit_data[0].head(5), capture=False)
    loaded = registry.load(v.uri)
    # A serving process stopped between writing a file and recording it: no record made.
    with Predictor(loaded, key=registry.key_path, store=ArtifactStore(registry.artifact_root)) as served:
        served.predict(credit_data[0].head(7))
    report = registry.verify()
    assert report.ok and [(p.kind, p.version) for p in report.unrecorded] == [("unrecorded", v.uri)]
    result = CliRunner().invoke(main, ["verify", "--registry", db_url, "--artifacts", registry.artifact_root])
    assert result.exit_code == 0 and "no ledger record" in result.output
    registry.init()
    assert registry.verify(captures=True).unrecorded == ()
    (event,) = registry.audit(action="predictions.written", limit=10)
    assert event.data["files"][0]["rows"] == 7 and event.actor == "alice@bank.example"


@pytest.mark.parametrize("how", ["on its own", "with a model version"])
def test_a_replaced_data_set_file_with_a_rewritten_row_is_caught(
    db_url: str,
    tmp_path: Path,
    fitted_pipeline: object,
    credit_data: tuple[pd.DataFrame, pd.Series],
    how: str,
) -> None:
    registry = Registry.open(db_url, artifacts=str(tmp_path / "artifacts"), actor="alice@bank.example")
    frame = credit_data[0].assign(target=credit_data[1])
    if how == "on its own":
        dv = registry.datasets.register("applications", frame, capture=False)
    else:
        registry.register("m", fitted_pipeline, capture=False, datasets={"train": frame})
        dv = registry.datasets.get("m-train")
    recorded = list(registry.audit(action="dataset.registered", limit=1000))
    assert [(e.subject, e.data["file_sha256"]) for e in recorded] == [(dv.uri, dv.file_sha256)]
    # The attacker swaps the Parquet file for other data and rewrites the row to match it.
    forged = tmp_path / "forged.parquet"
    pq.write_table(pa.Table.from_pandas(frame.head(10)), forged)
    target = tmp_path / "artifacts" / dv.path
    target.chmod(0o644)
    target.write_bytes(forged.read_bytes())
    sha, size = hashlib.sha256(forged.read_bytes()).hexdigest(), forged.stat().st_size
    if db_url.startswith("dynamodb:"):
        editor = DynamoAttacker(db_url)
        item = editor.get_state(f"D#{dv.name}", f"V#{dv.version:010d}")
        editor.put_state({**item, "file_sha256": sha, "size_bytes": size})
    else:
        with attacker(db_url) as conn:
            conn.execute(
                sa.text("UPDATE dataset_versions SET file_sha256 = :s, size_bytes = :n WHERE path = :p"),
                {"s": sha, "n": size, "p": dv.path},
            )
    details = {p.detail for p in registry.verify().problems if p.kind == "mismatch" and p.path == dv.path}
    assert "data set row differs from its record in the ledger" in details
    assert any(d.endswith(f"expected {dv.file_sha256}") for d in details)  # held to the ledger's sha256
