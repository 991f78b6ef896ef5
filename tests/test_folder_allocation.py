"""A version's folder is claimed without listing the model's folders: the metadata says how far
the numbers of a key go, and exclusive creates step over folders claimed but not registered."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelledger import Registry
from modelledger.stores import open_metadata_store
from modelledger.stores.artifacts import ArtifactStore

LISTING = ("ls", "listdir", "find", "walk", "glob", "du", "expand_path")


def _weights(tmp_path: Path) -> Path:
    src = tmp_path / "weights"
    src.mkdir(exist_ok=True)
    (src / "w.bin").write_bytes(b"\x00" * 10)
    return src


def _registry(db_url: str, store: ArtifactStore) -> Registry:
    reg = Registry(open_metadata_store(db_url), store, actor="alice@example.com")
    reg.init()
    return reg


def _count_calls(monkeypatch: pytest.MonkeyPatch, target: Any, names: tuple[str, ...]) -> Counter[str]:
    """Count each call of ``names`` on ``target`` (the fsspec filesystem: the store's outer edge)."""
    calls: Counter[str] = Counter()
    for name in names:
        real = getattr(target, name)

        def counted(*args: Any, _real: Callable[..., Any] = real, _name: str = name, **kwargs: Any) -> Any:
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(target, name, counted)
    return calls


@pytest.fixture
def mkdirs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every folder os.mkdir is asked to create."""
    made: list[str] = []
    real = os.mkdir

    def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        made.append(os.fspath(path))
        real(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    yield made


def test_a_registration_beside_many_folders_of_its_key_lists_nothing_and_claims_once(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mkdirs: list[str]
) -> None:
    store = ArtifactStore((tmp_path / "art").as_uri())
    reg = _registry(db_url, store)
    src = _weights(tmp_path)
    # 200 on SQL; 40 on DynamoDB, whose test server copies the tables a transaction touches
    # (so each registration there costs more as they grow): 40 still takes the search for the
    # highest number through six doublings and a bisection
    count = 40 if db_url.startswith("dynamodb:") else 200
    for _ in range(count):  # one execution id for every version: the key they all share
        reg.register("m", src, execution_id="nightly", capture=False)
    listed = _count_calls(monkeypatch, store.fs, LISTING)
    mkdirs.clear()
    v = reg.register("m", src, execution_id="nightly", capture=False)
    assert v.folder == f"models/m/run-nightly.{count + 1}"
    assert sum(listed.values()) == 0, listed
    tried = {p for p in mkdirs if os.path.dirname(p) == store.full("models/m")}
    assert tried == {store.full(f"models/m/run-nightly.{count + 1}")}  # no other number tried
    reg.close()


def test_folders_claimed_but_not_registered_are_stepped_over(db_url: str, tmp_path: Path) -> None:
    store = ArtifactStore((tmp_path / "art").as_uri())
    reg = _registry(db_url, store)
    src = _weights(tmp_path)
    assert reg.register("m", src, execution_id="r", capture=False).folder == "models/m/run-r"
    # another writer's claims, in flight (or left by a crash): not in the metadata
    assert store.claim_folder("models/m", "run-r", after=1) == "models/m/run-r.2"
    assert store.claim_folder("models/m", "run-r", after=1) == "models/m/run-r.3"
    assert reg.register("m", src, execution_id="r", capture=False).folder == "models/m/run-r.4"
    assert reg.register("m", src, execution_id="r", capture=False).folder == "models/m/run-r.5"
    reg.close()


def test_a_registered_folder_whose_files_are_gone_is_not_claimed_again(db_url: str, tmp_path: Path) -> None:
    store = ArtifactStore((tmp_path / "art").as_uri())
    reg = _registry(db_url, store)
    src = _weights(tmp_path)
    first = reg.register("m", src, execution_id="r", capture=False)
    store.remove(first.folder)  # the metadata still names it
    assert reg.register("m", src, execution_id="r", capture=False).folder == "models/m/run-r.2"
    reg.close()


def test_racing_registrations_never_share_a_folder(db_url: str, tmp_path: Path) -> None:
    store = ArtifactStore((tmp_path / "art").as_uri())
    _registry(db_url, store).close()
    src = _weights(tmp_path)
    folders: list[str] = []
    errors: list[BaseException] = []

    def register() -> None:
        reg = Registry(open_metadata_store(db_url), ArtifactStore(store.url), actor="alice@example.com")
        try:
            for _ in range(3):
                folders.append(reg.register("m", src, execution_id="r", capture=False).folder)
        except BaseException as exc:
            errors.append(exc)
        finally:
            reg.close()

    threads = [threading.Thread(target=register) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # every number claimed was registered: no gap, no folder shared
    assert sorted(folders) == sorted(["models/m/run-r", *(f"models/m/run-r.{n}" for n in range(2, 13))])


def test_on_s3_a_registration_claims_its_folder_without_listing_the_model(
    s3_artifacts: tuple[str, dict[str, object]], db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, options = s3_artifacts
    store = ArtifactStore(url, **options)
    reg = _registry(db_url, store)
    src = _weights(tmp_path)
    for _ in range(5):
        reg.register("m", src, execution_id="r", capture=False)
    theirs = ArtifactStore(url, **options, skip_instance_cache=True)
    assert theirs.claim_folder("models/m", "run-r", after=5) == "models/m/run-r.6"  # in flight
    listed = _count_calls(monkeypatch, store.fs, LISTING)
    opened: list[str] = []
    real_open = store.fs.open

    def open_(path: str, *args: Any, **kwargs: Any) -> Any:
        opened.append(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(store.fs, "open", open_)
    v = reg.register("m", src, execution_id="r", capture=False)
    assert v.folder == "models/m/run-r.7"
    models_m = store.full("models/m")
    assert sum(listed.values()) == 0, listed
    assert [p for p in opened if p.endswith("/.claimed")] == [f"{models_m}/run-r.7/.claimed"]
    assert reg.load(v.uri) is not None
    assert reg.verify().ok
    reg.close()
