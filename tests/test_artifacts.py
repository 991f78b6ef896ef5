from __future__ import annotations

import posixpath
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelledger import AlreadyExists, IntegrityError, InvalidInput, NotFound, Registry, StorageError
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


def test_a_claim_starts_after_the_numbers_the_caller_knows_are_taken(artifact_backend) -> None:
    store = _store(artifact_backend)
    assert store.claim_folder("models/m", "run-1", after=3) == "models/m/run-1.4"
    assert store.claim_folder("models/m", "run-1", after=3) == "models/m/run-1.5"  # .4 exists: stepped over
    assert store.claim_folder("models/m", "run-1") == "models/m/run-1"


def test_claims_racing_in_threads_each_get_their_own_folder(tmp_path: Path) -> None:
    import threading

    store = ArtifactStore((tmp_path / "store").as_uri())
    claimed: list[str] = []

    def claim() -> None:
        for _ in range(5):
            claimed.append(store.claim_folder("models/m", "git-abc"))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(["models/m/git-abc", *(f"models/m/git-abc.{n}" for n in range(2, 31))])


def test_put_atomic_publishes_a_file_once_and_keeps_the_first(artifact_backend) -> None:
    import pyarrow as pa

    store = _store(artifact_backend)
    assert store.put_atomic("p/date=1/a.bin", b"first") is True
    assert store.put_atomic("p/date=1/a.bin", b"second") is False  # a retried write keeps the file
    assert store.read_bytes("p/date=1/a.bin") == b"first"
    assert store.put_atomic("p/date=1/b.bin", memoryview(b"view")) is True
    assert store.put_atomic("p/date=1/c.bin", pa.py_buffer(b"arrow")) is True  # any buffer
    assert store.read_bytes("p/date=1/b.bin") == b"view"
    assert store.read_bytes("p/date=1/c.bin") == b"arrow"
    assert store.list_names("p/date=1") == ["a.bin", "b.bin", "c.bin"]  # no temporary file left


def test_put_atomic_leaves_no_partial_file_when_a_write_fails(tmp_path: Path, monkeypatch) -> None:
    import os

    store = ArtifactStore((tmp_path / "store").as_uri())

    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(StorageError, match="disk full"):
        store.put_atomic("p/a.bin", b"data")
    assert store.list_names("p") == []  # neither the file nor its temporary copy
    monkeypatch.undo()
    assert store.put_atomic("p/a.bin", b"data") is True
    assert (tmp_path / "store" / "p" / "a.bin").read_bytes() == b"data"


def test_list_names_lists_one_folder_level(artifact_backend) -> None:
    store = _store(artifact_backend)
    assert store.list_names("nothing/here") == []
    store.put_bytes("f/b.txt", b"1")
    store.put_bytes("f/a.txt", b"2")
    store.put_bytes("f/sub/deeper.txt", b"3")
    assert store.list_names("f") == ["a.txt", "b.txt", "sub"]
    assert store.list_names("f/sub") == ["deeper.txt"]
    folder = store.claim_folder("models/m", "run")
    store.put_bytes(f"{folder}/model.pkl", b"x")
    assert store.list_names(folder) == ["model.pkl"]  # the claim marker is not listed


def test_list_files_and_dirs_list_every_level_alike_on_every_backend(artifact_backend) -> None:
    store = _store(artifact_backend)
    assert store.list_files("nothing/here") == [] and store.list_dirs("nothing/here") == []
    store.put_bytes("f/b.txt", b"1")
    store.put_bytes("f/sub/deeper.txt", b"3")
    store.put_bytes("f/sub/x/y.txt", b"4")
    assert store.list_files("f") == ["b.txt", "sub/deeper.txt", "sub/x/y.txt"]
    assert store.list_dirs("f") == ["sub"]
    folder = store.claim_folder("models/m", "run")
    store.put_bytes(f"{folder}/artifacts/model.pkl", b"x")
    assert store.list_files(folder) == ["artifacts/model.pkl"]  # the claim marker is not listed
    with store.open("f/sub/deeper.txt") as fh:
        assert fh.read() == b"3"
    with pytest.raises(NotFound):
        store.open("f/missing.txt")


def test_a_linked_folder_in_a_version_is_one_orphan_and_is_not_followed(tmp_path: Path) -> None:
    registry = Registry.open(f"sqlite:///{tmp_path / 'r.db'}", artifacts=str(tmp_path / "art"))
    registry.init()
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.txt").write_text("v1\n")
    v = registry.register("m", src, capture=False, load_check=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "payload.bin").write_bytes(b"planted")
    (tmp_path / "art" / v.folder / "artifacts" / "extra").symlink_to(outside, target_is_directory=True)
    found = [(p.kind, p.path) for p in registry.verify(record=False).problems]
    assert found == [("orphan", f"{v.folder}/artifacts/extra")]
    registry.close()


def test_open_input_reads_parquet_with_random_access(artifact_backend) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = _store(artifact_backend)
    table = pa.table({"id": list(range(1000)), "name": [f"row {i}" for i in range(1000)]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=100)
    store.put_atomic("p/part.parquet", sink.getvalue())
    with store.open_input("p/part.parquet") as source:
        parquet = pq.ParquetFile(source)
        assert parquet.metadata.num_row_groups == 10
        assert parquet.read_row_group(7).column("id").to_pylist() == list(range(700, 800))
        assert parquet.read().equals(table)
    with store.open_input("p/part.parquet") as fh:
        fh.seek(4)
        assert fh.read(4) == store.read_bytes("p/part.parquet")[4:8]
    with pytest.raises(NotFound):
        store.open_input("p/missing.parquet")


def test_register_load_and_verify_on_every_backend(
    artifact_backend, tmp_path: Path, fitted_pipeline, credit_data
) -> None:
    url, options = artifact_backend
    X, _ = credit_data
    reg = Registry.open(f"sqlite:///{tmp_path / 'r.db'}", artifacts=url, storage_options=options)
    reg.init()
    v = reg.register("credit-risk", fitted_pipeline, sample_input=X.head(), execution_id="run-1")
    reg.set_alias("credit-risk", "champion", v.version)
    assert (reg.load("models:/credit-risk@champion").predict(X) == fitted_pipeline.predict(X)).all()
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


# --- relative paths that would leave the root ------------------------------------------

UNSAFE_KEYS = [
    "(absolute)",  # replaced by an absolute path beside the store's root
    "../outside.bin",
    "models/../../outside.bin",
    "models/m/..",
    "models/./m",
    "models//m",
    "models/m/",
    "models\\..\\..\\outside.bin",
    "models/m\x00.bin",
    "models/m\n.bin",
]


def _every_method_taking_a_path(store: ArtifactStore) -> dict[str, Callable[[str], Any]]:
    def opened(fh: Any) -> None:
        fh.close()

    return {
        "put_bytes": lambda k: store.put_bytes(k, b"evil"),
        "put_stream": lambda k: store.put_stream(k, iter([b"evil"])),
        "put_atomic": lambda k: store.put_atomic(k, b"evil"),
        "open_new": lambda k: opened(store.open_new(k)),
        "move (source)": lambda k: store.move(k, "moved/here.bin"),
        "move (target)": lambda k: store.move("keep/a.bin", k),
        "claim_folder (parent)": lambda k: store.claim_folder(k, "run-1"),
        "claim_folder (key)": lambda k: store.claim_folder("models/m", k),
        "remove_tree": store.remove_tree,
        "remove": store.remove,
        "sync_folder": store.sync_folder,
        "open": lambda k: opened(store.open(k)),
        "open_input": lambda k: opened(store.open_input(k)),
        "read_bytes": store.read_bytes,
        "hash_file": store.hash_file,
        "exists": store.exists,
        "list_files": store.list_files,
        "list_names": store.list_names,
        "list_dirs": store.list_dirs,
        "usage": store.usage,
        "full": store.full,
        "uri": store.uri,
    }


def _everything_beside(store: ArtifactStore) -> list[str]:
    """Every object in the folder (bucket) holding the store's root, fresh from the backend."""
    store.refresh()
    return sorted(store.fs.find(posixpath.dirname(store.root) or "/"))


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_no_method_accepts_a_path_that_leaves_the_root(artifact_backend, key: str) -> None:
    store = _store(artifact_backend)
    store.put_bytes("keep/a.bin", b"kept")
    if key == "(absolute)":
        key = "/" + posixpath.join(posixpath.dirname(store.root), "outside.bin").lstrip("/")
    before = _everything_beside(store)
    accepted = []
    for method, call in _every_method_taking_a_path(store).items():
        try:
            call(key)
        except InvalidInput as exc:
            assert "unsafe artefact" in str(exc)
        else:
            accepted.append(method)
    assert accepted == []
    assert _everything_beside(store) == before  # nothing written, moved or removed anywhere
    assert store.read_bytes("keep/a.bin") == b"kept"


def test_the_root_itself_can_be_listed_but_never_written_or_removed(artifact_backend) -> None:
    store = _store(artifact_backend)
    store.put_bytes("keep/a.bin", b"kept")
    assert store.exists("") and store.list_names("") == ["keep"]
    assert store.full("") == store.root
    for call in (store.remove_tree, store.remove, store.sync_folder, lambda k: store.put_bytes(k, b"x")):
        with pytest.raises(InvalidInput, match="is empty"):
            call("")
    assert store.read_bytes("keep/a.bin") == b"kept"


def test_ordinary_keys_with_dots_and_equals_signs_are_kept(artifact_backend) -> None:
    store = _store(artifact_backend)
    for key in ("datasets/.staging-1a2b.parquet", "p/date=2026-11-30/part-a-b.parquet", "m/v.2/a b.txt"):
        store.put_bytes(key, b"ok")
        assert store.read_bytes(key) == b"ok"


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
    assert ours.claim_folder("models/m", "git-abc") == "models/m/git-abc"
    assert ours.list_names("models/m") == ["git-abc"]  # fsspec now holds a listing of models/m
    assert theirs.claim_folder("models/m", "git-def") == "models/m/git-def"
    # our listing of models/m predates git-def: the claim must look again
    assert ours.claim_folder("models/m", "git-def") == "models/m/git-def.2"
    # the race itself: they claim git-xyz between our check and our marker write
    theirs.claim_folder("models/m", "git-xyz")
    monkeypatch.setattr(ours.fs, "exists", lambda path: False)  # our check ran before theirs
    assert ours._make_dir_exclusive("models/m/git-xyz") is False


def test_list_names_sees_what_another_process_wrote_since_the_last_listing(s3_artifacts) -> None:
    ours, theirs = _store(s3_artifacts), _other_process(s3_artifacts)
    ours.put_atomic("p/date=1/part-a.parquet", b"a")
    assert ours.list_names("p/date=1") == ["part-a.parquet"]
    assert ours.fs.ls(ours.full("p/date=1"), detail=False)  # fsspec now holds a cached listing
    theirs.put_atomic("p/date=1/part-b.parquet", b"b")
    assert ours.list_names("p/date=1") == ["part-a.parquet", "part-b.parquet"]
    assert ours.put_atomic("p/date=1/part-b.parquet", b"ours") is False  # theirs is kept
    assert ours.read_bytes("p/date=1/part-b.parquet") == b"b"


def test_verify_sees_what_another_process_wrote_since_the_last_listing(
    s3_artifacts, db_url: str, tmp_path: Path, fitted_pipeline
) -> None:
    url, options = s3_artifacts
    reg = Registry.open(db_url, artifacts=url, storage_options=options, actor="alice@example.com")
    reg.register("m", fitted_pipeline, capture=False)
    assert reg.verify().ok
    _other_process(s3_artifacts).put_bytes("models/m/stray/model.pkl", b"not registered")
    assert [(p.kind, p.path) for p in reg.verify().in_flight] == [("in_flight", "models/m/stray")]
    report = reg.verify(grace="0")
    assert [(p.kind, p.path) for p in report.problems] == [("orphan", "models/m/stray")]
