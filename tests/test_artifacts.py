from __future__ import annotations

from pathlib import Path

import pytest

from modelledger import AlreadyExists, IntegrityError, Registry
from modelledger.stores.artifacts import ArtifactStore


def _store(backend: tuple[str, dict[str, object]]) -> ArtifactStore:
    url, options = backend
    return ArtifactStore(url, **options)


def test_files_are_write_once(artifact_backend) -> None:
    store = _store(artifact_backend)
    sha = store.put_bytes("a/b.bin", b"hello")
    assert store.hash_file("a/b.bin") == (5, sha)
    with pytest.raises(AlreadyExists):
        store.put_bytes("a/b.bin", b"other")
    assert store.read_bytes("a/b.bin") == b"hello"


def test_claimed_folders_are_never_reused(artifact_backend) -> None:
    store = _store(artifact_backend)
    first = store.claim_folder("models/m", "git-abc")
    second = store.claim_folder("models/m", "git-abc")
    third = store.claim_folder("models/m", "git-abc")
    assert (first, second, third) == ("models/m/git-abc", "models/m/git-abc.2", "models/m/git-abc.3")


def test_register_load_and_verify_on_every_backend(
    artifact_backend, tmp_path: Path, fitted_pipeline, credit_data
) -> None:
    url, options = artifact_backend
    X, _ = credit_data
    reg = Registry.open(f"sqlite:///{tmp_path / 'r.db'}", artifacts=url, storage_options=options)
    reg.init()
    v = reg.register("credit-risk", fitted_pipeline, sample_input=X.head(), execution_id="run-1")
    reg.set_alias("credit-risk", "production", v.version)
    assert (reg.load("models:/credit-risk@production").predict(X) == fitted_pipeline.predict(X)).all()
    assert reg.verify().ok
    # tamper through the backend itself
    store = _store(artifact_backend)
    path = store.full(f"{v.folder}/artifacts/model.pkl")
    data = bytearray(store.read_bytes(f"{v.folder}/artifacts/model.pkl"))
    data[10] ^= 0xFF
    if store.is_local:
        Path(path).chmod(0o644)
    store.fs.pipe_file(path, bytes(data))
    with pytest.raises(IntegrityError, match=r"model\.pkl"):
        reg.load(v.uri)
    assert [p.kind for p in reg.verify().problems] == ["mismatch"]


# --- object stores shared with other processes ------------------------------------------
# Another process writing to the same bucket is simulated by a store with its own S3 client
# and its own listing cache (fsspec shares one filesystem object per process otherwise).


def _other_process(backend: tuple[str, dict[str, object]]) -> ArtifactStore:
    url, options = backend
    return ArtifactStore(url, **options, skip_instance_cache=True)


def test_a_file_written_meanwhile_by_another_process_is_never_overwritten(s3_artifacts) -> None:
    ours, theirs = _store(s3_artifacts), _other_process(s3_artifacts)
    fh = ours.open_new("models/m/v/model.pkl")  # nothing there yet
    theirs.put_bytes("models/m/v/model.pkl", b"their model")
    fh.write(b"our model")
    with pytest.raises(AlreadyExists, match=r"model\.pkl"):
        ours.finish(fh, "models/m/v/model.pkl")
    assert ours.read_bytes("models/m/v/model.pkl") == b"their model"


def test_a_folder_claimed_by_another_process_is_not_claimed_again(s3_artifacts, monkeypatch) -> None:
    ours, theirs = _store(s3_artifacts), _other_process(s3_artifacts)
    assert ours.claim_folder("models/m", "git-abc") == "models/m/git-abc"  # lists models/m
    assert theirs.claim_folder("models/m", "git-def") == "models/m/git-def"
    # our listing of models/m predates git-def: the claim must look again
    assert ours.claim_folder("models/m", "git-def") == "models/m/git-def.2"
    # the race itself: they claim git-xyz between our check and our marker write
    theirs.claim_folder("models/m", "git-xyz")
    monkeypatch.setattr(ours.fs, "exists", lambda path: False)  # our check ran before theirs
    assert ours._make_dir_exclusive("models/m/git-xyz") is False


def test_verify_sees_what_another_process_wrote_since_the_last_listing(
    s3_artifacts, db_url: str, tmp_path: Path, fitted_pipeline
) -> None:
    url, options = s3_artifacts
    reg = Registry.open(db_url, artifacts=url, storage_options=options, actor="alice@example.com")
    reg.register("m", fitted_pipeline, capture=False)
    assert reg.verify().ok
    _other_process(s3_artifacts).put_bytes("models/m/stray/model.pkl", b"not registered")
    report = reg.verify()
    assert [(p.kind, p.path) for p in report.problems] == [("orphan", "models/m/stray")]
