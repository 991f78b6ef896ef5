from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tests.conftest import Api
from tests.helpers import Tripwire

from modelledger import IntegrityError, Registry


def _stored(tmp_path: Path, folder: str, rel: str) -> Path:
    return tmp_path / "artifacts" / folder / rel


def _flip_byte(path: Path, offset: int = 0) -> None:
    os.chmod(path, 0o644)  # artefacts are stored read-only; the attacker does not care
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_flipped_byte_is_caught_before_unpickling(registry: Registry, tmp_path: Path) -> None:
    mark = tmp_path / "unpickled.txt"
    v = registry.register("m", Tripwire(str(mark)))
    assert mark.read_text() == "unpickled\n"  # registration loaded the saved file back once
    mark.unlink()
    registry.load(v.uri)
    assert mark.read_text() == "unpickled\n"  # the tripwire works
    mark.unlink()
    pkl = _stored(tmp_path, v.folder, "artifacts/model.pkl")
    _flip_byte(pkl, offset=len(pkl.read_bytes()) // 2)
    with pytest.raises(IntegrityError) as err:
        registry.load(v.uri)
    assert f"{v.folder}/artifacts/model.pkl" in str(err.value)
    assert not mark.exists()  # nothing was unpickled


def test_flipped_byte_in_a_side_file_blocks_loading(registry: Registry, tmp_path: Path) -> None:
    import pickle

    from tests.helpers import Doubler

    src = tmp_path / "src"
    src.mkdir()
    (src / "model.pkl").write_bytes(pickle.dumps(Doubler()))
    (src / "vocab.txt").write_text("a\nb\n")
    v = registry.register("m", src, manifest={"flavor": "python", "entry": "model.pkl"})
    _flip_byte(_stored(tmp_path, v.folder, "artifacts/vocab.txt"))
    with pytest.raises(IntegrityError, match=r"vocab\.txt"):
        registry.load(v.uri)


def test_stored_files_are_write_once(registry: Registry, fitted_pipeline, tmp_path: Path) -> None:
    v = registry.register("m", fitted_pipeline)
    pkl = _stored(tmp_path, v.folder, "artifacts/model.pkl")
    assert pkl.stat().st_mode & 0o222 == 0  # read-only on disk
    from modelledger import AlreadyExists
    from modelledger.stores.artifacts import ArtifactStore

    store = ArtifactStore((tmp_path / "artifacts").as_uri())
    with pytest.raises(AlreadyExists):
        store.put_bytes(f"{v.folder}/artifacts/model.pkl", b"evil")
    assert registry.verify().ok


def test_verify_names_every_mismatch_missing_and_orphan(registry: Registry, fitted_pipeline, tmp_path: Path):
    v1 = registry.register("m", fitted_pipeline)
    v2 = registry.register("m", fitted_pipeline)
    v3 = registry.register("m", fitted_pipeline)
    assert registry.verify().ok
    _flip_byte(_stored(tmp_path, v1.folder, "artifacts/model.pkl"))
    _stored(tmp_path, v2.folder, "artifacts/model.pkl").unlink()
    _stored(tmp_path, v3.folder, "artifacts/stray.bin").write_bytes(b"x")
    manifest = _stored(tmp_path, v3.folder, "manifest.json")
    record = json.loads(manifest.read_text())
    record["manifest"]["params"] = {"C": 1000}
    os.chmod(manifest, 0o644)
    manifest.write_text(json.dumps(record))
    (tmp_path / "artifacts" / "models" / "m" / "leftover").mkdir()
    report = registry.verify(grace="0")
    assert not report.ok
    assert report.versions_checked == 3
    found = {(p.kind, p.path) for p in report.problems}
    assert found == {
        ("mismatch", f"{v1.folder}/artifacts/model.pkl"),
        ("missing", f"{v2.folder}/artifacts/model.pkl"),
        ("orphan", f"{v3.folder}/artifacts/stray.bin"),
        ("mismatch", f"{v3.folder}/manifest.json"),
        ("orphan", "models/m/leftover"),
    }


def test_manifest_changed_in_the_database_is_caught(registry: Registry, fitted_pipeline, db_url: str):
    from tests.helpers import ledger_editor

    v = registry.register("m", fitted_pipeline, params={"C": 0.5})
    doc = dict(v.manifest)
    doc["params"] = {**doc["params"], "C": 99}
    with ledger_editor(db_url) as editor:
        editor.update_version("m", v.version, manifest=json.dumps(doc))
    with pytest.raises(IntegrityError, match="does not match the recorded digest"):
        registry.load(v.uri)
    kinds = {(p.kind, p.path) for p in registry.verify().problems}
    assert ("mismatch", v.folder) in kinds


@pytest.mark.parametrize("api", ["remote"], indirect=True)
def test_a_server_never_unpickles_an_uploaded_folder(api: Api, tmp_path: Path) -> None:
    """Over HTTP the client loads a folder back (or is told not to); the server, which holds a
    gateway key, never deserialises what a caller sent, and needs no framework to accept it."""
    import pickle

    mark = tmp_path / "mark"
    folder = tmp_path / "upload"
    folder.mkdir()
    (folder / "model.pkl").write_bytes(pickle.dumps(Tripwire(str(mark))))
    manifest = {"flavor": "python", "entry": "model.pkl"}
    v = api.open("alice@example.com").register("m", folder, manifest=manifest, load_check=False)
    assert v.flavor == "python" and v.manifest["runs_pickle"] is True
    assert not mark.exists()  # neither the client (told not to) nor the server unpickled it
    api.open("alice@example.com").register("m", folder, manifest=manifest)
    assert mark.read_text() == "unpickled\n"  # the client's own check: the tripwire works


def test_the_folder_record_holds_the_version_as_registered(registry: Registry, tmp_path: Path) -> None:
    src = tmp_path / "weights"
    src.mkdir()
    (src / "w.bin").write_bytes(b"\x00" * 10)
    v = registry.register("Credit-Risk", src, manifest={"description": "naïve ✓", "metrics": {"auc": 0.5}})
    raw = _stored(tmp_path, v.folder, "manifest.json").read_bytes()
    assert json.loads(raw) == {
        "model": "Credit-Risk",
        "digest": v.digest,
        "files": [f.to_dict() for f in v.files],
        "manifest": dict(v.manifest),
    }
    assert len(raw.splitlines()) == 4  # one field a line: readable with head, diffable
