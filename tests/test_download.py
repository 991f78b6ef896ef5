"""``Registry.download``: a version's files back in a folder, for every flavor, each byte
checked while it streams, on SQLite, PostgreSQL and through a server (``api`` fixture), and
``modelledger download`` on the command line, locally and against a server."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.conftest import Api
from tests.helpers import Doubler, ledger_editor
from tests.test_server import running

from modelledger import AlreadyExists, DownloadedVersion, IntegrityError, ModelVersion, NotFound, Registry
from modelledger._integrity import version_digest
from modelledger.cli import main


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _weights(tmp_path: Path) -> Path:
    """A folder of files with no loader, as an ONNX or transformers export is."""
    folder = tmp_path / "bert-export"
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "model.onnx").write_bytes(bytes(range(256)) * 40)
    (folder / "config.json").write_text('{"hidden_size": 8}')
    (folder / "tokenizer" / "vocab.txt").write_text("[PAD]\n[CLS]\nhello\n")
    return folder


def _tamper(api: Api, mv: ModelVersion, path: str, data: bytes) -> None:
    """Replace a stored artefact's bytes, as someone with write access to the bucket could."""
    store = api.local("alice@example.com")._art
    full = store.full(f"{mv.folder}/artifacts/{path}")
    if store.is_local:
        Path(full).chmod(0o644)  # artefacts are stored read-only; the attacker does not care
    store.fs.pipe_file(full, data)


def _assert_matches(got: DownloadedVersion, mv: ModelVersion) -> None:
    assert got.version.uri == mv.uri
    assert sorted(got.files) == sorted(f.path for f in mv.files)
    for entry in mv.files:
        path = Path(got.dest) / entry.path
        assert path.stat().st_size == entry.size and _sha(path) == entry.sha256
    assert not [p for p in Path(got.dest).iterdir() if p.name.startswith(".modelledger-download")]


def test_download_brings_back_every_flavor(api: Api, tmp_path: Path, fitted_pipeline: object) -> None:
    reg = api.open("alice@example.com")
    weights = _weights(tmp_path)
    files = reg.register("bert-onnx", str(weights), capture=False)
    sk = reg.register("credit-risk", fitted_pipeline, capture=False)
    py = reg.register("doubler", Doubler(), capture=False)
    assert files.flavor == "files" and sk.flavor == "sklearn" and py.flavor != "files"

    got = reg.download("models:/bert-onnx/latest", tmp_path / "out" / "bert")
    _assert_matches(got, files)
    assert got.downloaded == got.files
    for rel in ("model.onnx", "config.json", "tokenizer/vocab.txt"):
        assert (tmp_path / "out" / "bert" / rel).read_bytes() == (weights / rel).read_bytes()
    assert got.paths == [str(tmp_path / "out" / "bert" / f) for f in got.files]
    assert DownloadedVersion.from_dict(json.loads(json.dumps(got.to_dict()))) == got

    for mv in (sk, py):
        _assert_matches(reg.download(mv.uri, tmp_path / mv.model), mv)


def test_a_second_download_writes_nothing_and_other_bytes_are_kept_unless_told(
    api: Api, tmp_path: Path
) -> None:
    reg = api.open("alice@example.com")
    mv = reg.register("bert-onnx", str(_weights(tmp_path)), capture=False)
    dest = tmp_path / "dest"
    reg.download(mv.uri, dest)
    again = reg.download(mv.uri, dest)
    assert again.downloaded == () and sorted(again.files) == sorted(f.path for f in mv.files)

    (dest / "config.json").write_text("mine")
    with pytest.raises(AlreadyExists, match="overwrite"):
        reg.download(mv.uri, dest)
    assert (dest / "config.json").read_text() == "mine"  # refused before any byte moved
    fixed = reg.download(mv.uri, dest, overwrite=True)
    assert fixed.downloaded == ("config.json",)
    _assert_matches(fixed, mv)


def test_a_subset_of_files_and_the_version_record(api: Api, tmp_path: Path) -> None:
    reg = api.open("alice@example.com")
    mv = reg.register("bert-onnx", str(_weights(tmp_path)), capture=False)
    got = reg.download(mv.uri, tmp_path / "d", files=["tokenizer/vocab.txt"], manifest=True)
    assert got.files == ("tokenizer/vocab.txt",) and got.manifest_file == "modelledger-version.json"
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["modelledger-version.json", "tokenizer"]
    record = json.loads((tmp_path / "d" / "modelledger-version.json").read_text())
    assert ModelVersion.from_dict(record).digest == mv.digest
    assert version_digest(ModelVersion.from_dict(record).files, record["manifest"]) == mv.digest
    with pytest.raises(NotFound, match=r"weights\.bin"):
        reg.download(mv.uri, tmp_path / "e", files=["weights.bin"])
    assert not (tmp_path / "e").exists()


def test_a_tampered_artefact_is_refused_and_leaves_no_file(api: Api, tmp_path: Path) -> None:
    reg = api.open("alice@example.com")
    mv = reg.register("bert-onnx", str(_weights(tmp_path)), capture=False)
    onnx = next(f for f in mv.files if f.path == "model.onnx")
    _tamper(api, mv, "model.onnx", b"\x00" * onnx.size)  # same size, other bytes
    dest = tmp_path / "new"
    with pytest.raises(IntegrityError, match=r"model\.onnx"):
        reg.download(mv.uri, dest)
    assert not dest.exists()  # it was made for this download, and nothing was left in it

    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    _tamper(api, mv, "model.onnx", b"\x00" * (onnx.size + 10))  # longer than recorded
    with pytest.raises(IntegrityError, match=r"model\.onnx"):  # a server sends the recorded size only
        reg.download(mv.uri, kept)
    assert [p.name for p in kept.iterdir()] == ["notes.txt"]  # not even the files that matched


def test_a_version_row_and_file_edited_together_are_refused_locally_and_through_a_server(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The version row is an index: the ledger's signed registration is the authority. Here the
    bytes match the edited row, so only the proof against the ledger can catch them."""
    artifacts = str(tmp_path / "art")
    reg = Registry.open(db_url, artifacts=artifacts, actor="alice@example.com")
    mv = reg.register("bert-onnx", str(_weights(tmp_path)), capture=False)
    evil = hashlib.sha256(b"evil").hexdigest()
    forged = tuple(f if f.path != "config.json" else type(f)(f.path, 4, evil) for f in mv.files)
    with ledger_editor(db_url) as editor:
        editor.update_version(
            "bert-onnx",
            mv.version,
            files=json.dumps([f.to_dict() for f in forged]),
            digest=version_digest(forged, mv.manifest),
        )
    stored = Path(artifacts) / mv.folder / "artifacts" / "config.json"
    stored.chmod(0o644)
    stored.write_bytes(b"evil")
    fresh = Registry.open(db_url, artifacts=artifacts, actor="alice@example.com")
    with pytest.raises(IntegrityError, match="registered in the ledger"):
        fresh.download(mv.uri, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()

    server = Registry.open(db_url, artifacts=artifacts)
    monkeypatch.setenv("MODELLEDGER_CACHE", str(tmp_path / "cache"))
    with running(server) as base:
        remote = Registry.open(base, token=reg.create_token("alice@example.com")[0])
        assert remote.get_version(mv.uri).digest != mv.digest  # the server reads the edited row
        with pytest.raises(IntegrityError, match="registered in the ledger"):
            remote.download(mv.uri, tmp_path / "remote")
        remote.close()
    server.close()
    assert not (tmp_path / "remote").exists()


def test_download_on_the_command_line_locally_and_through_a_server(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifacts = str(tmp_path / "art")
    reg = Registry.open(db_url, artifacts=artifacts, actor="alice@example.com")
    mv = reg.register("bert-onnx", str(_weights(tmp_path)), capture=False)
    runner = CliRunner()
    where = ["--registry", db_url, "--artifacts", artifacts]
    local = runner.invoke(main, ["download", "models:/bert-onnx/latest", str(tmp_path / "a"), *where])
    assert local.exit_code == 0, local.output
    assert str(tmp_path / "a" / "model.onnx") in local.stdout
    assert _sha(tmp_path / "a" / "model.onnx") == next(f.sha256 for f in mv.files if f.path == "model.onnx")

    server = Registry.open(db_url, artifacts=artifacts)
    monkeypatch.setenv("MODELLEDGER_TOKEN", reg.create_token("alice@example.com")[0])
    monkeypatch.setenv("MODELLEDGER_CACHE", str(tmp_path / "cache"))
    with running(server) as base:
        args = ["download", "models:/bert-onnx/1", str(tmp_path / "b"), "--file", "config.json"]
        remote = runner.invoke(main, [*args, "--json", "--registry", base])
        assert remote.exit_code == 0, remote.output
        assert json.loads(remote.stdout)["files"] == ["config.json"]
        assert (tmp_path / "b" / "config.json").read_text() == '{"hidden_size": 8}'
        (tmp_path / "b" / "config.json").write_text("mine")
        refused = runner.invoke(main, [*args, "--registry", base])
        assert refused.exit_code == 1 and "overwrite" in refused.stderr
    server.close()


DOWNLOAD_SCRIPT = r"""
import json, sys
from modelledger import Registry

url, art, dest = sys.argv[1], sys.argv[2], sys.argv[3]
# A child inherits its parent's peak RSS: reset the high-water mark, then read VmHWM.
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
calls = []
got = Registry.open(url, artifacts=art).download(
    "models:/big/latest", dest, progress=lambda done, total: calls.append((done, total))
)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
rss_mb = int(hwm.split()[1]) / 1024
print(json.dumps({"rss_mb": rss_mb, "files": got.files, "calls": len(calls), "last": calls[-1]}))
"""


def test_a_large_file_downloads_in_bounded_memory(tmp_path: Path) -> None:
    src = tmp_path / "weights"
    src.mkdir()
    size = 512 * 1024**2
    with (src / "weights.bin").open("wb") as fh:
        fh.write(b"\x5a" * 1024 * 1024)  # real bytes at both ends, a sparse middle
        fh.truncate(size - 1024 * 1024)
        fh.seek(size - 1024 * 1024)
        fh.write(b"\xa5" * 1024 * 1024)
    url, art = f"sqlite:///{tmp_path / 'r.db'}", str(tmp_path / "art")
    reg = Registry.open(url, artifacts=art, actor="alice@example.com")
    reg.init()
    reg.register("big", str(src), capture=False)
    reg.close()
    out = subprocess.run(
        [sys.executable, "-c", DOWNLOAD_SCRIPT, url, art, str(tmp_path / "dest")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["files"] == ["weights.bin"] and result["last"] == [size, size]
    assert result["calls"] >= 512  # reported chunk by chunk
    assert result["rss_mb"] < 200, result  # the file is never held whole
    assert (tmp_path / "dest" / "weights.bin").stat().st_size == size
