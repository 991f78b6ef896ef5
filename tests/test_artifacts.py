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
