"""Faults a user meets, and what they see: a read-only, full or refused artefact store, S3
without credentials or without its bucket, a version number past 64 bits, a read-only SQLite
registry; reads that create nothing; the embedded registry in any folder name; eight
processes opening a new registry at once; usage errors on one line.

Faults are real where the system allows it: a read-only bind mount or a tiny tmpfs in a
private mount namespace (``unshare``), a real S3 protocol server. Where a fault cannot be made
for real, it is injected at the outermost edge: the ``os`` calls of the artefact store.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from modelledger import InvalidInput, NotFound, PermissionDenied, Registry, StorageError
from modelledger.cli import main
from modelledger.stores import artifacts as artifacts_module
from modelledger.stores import open_metadata_store
from modelledger.stores.artifacts import ArtifactStore, local_root

CLI = "import sys; from modelledger.cli import main; sys.exit(main(prog_name='modelledger'))"
READ_ONLY = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0"'
TINY_DISK = 'mount -t tmpfs -o size=64k tmpfs "$0"'
ODD_NAME = "a?b #c%d+e f"


def _one_line(stderr: str, *fragments: str) -> str:
    """The error as a user sees it: one line starting with ``Error:``, naming what to do."""
    err = stderr.strip()
    assert err.startswith("Error: "), err
    assert "\n" not in err, err
    assert "unexpected" not in err and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def _in_namespace(setup: str, folder: Path) -> list[str] | None:
    """A command prefix running the rest in a private mount namespace where the shell command
    ``setup`` was applied to ``folder`` (``$0``); None where this system cannot do that."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    flags = ["--mount"] if os.geteuid() == 0 else ["--user", "--map-root-user", "--mount"]
    prefix = [unshare, *flags, "sh", "-c", f'{setup} && exec "$@"', str(folder)]
    probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=60, check=False)
    return prefix if probe.returncode == 0 else None


@pytest.fixture
def read_only() -> Iterator[Callable[[Path], tuple[list[str], bool]]]:
    """Make a folder read-only for commands run with the returned prefix.

    Returns (prefix, is_mount): a read-only bind mount (EROFS) where possible; else, when not
    root, the folder's modes (EACCES); root ignores modes, so there the test is skipped.
    """
    restore: list[tuple[Path, int]] = []

    def make(folder: Path) -> tuple[list[str], bool]:
        prefix = _in_namespace(READ_ONLY, folder)
        if prefix is not None:
            return prefix, True
        if os.geteuid() == 0:
            pytest.skip("no mount namespace here, and root ignores file modes")
        for path in [folder, *folder.rglob("*")]:
            restore.append((path, path.stat().st_mode))
            path.chmod(0o555 if path.is_dir() else 0o444 if path.stat().st_mode & 0o044 else 0o400)
        return [], False

    yield make
    for path, mode in reversed(restore):
        path.chmod(mode)


def _cli(
    prefix: list[str], *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-c", CLI, *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "MODELLEDGER_USER": "ops@example.com", **(env or {})},
    )


def _rows_csv(path: Path, n: int, *, seed: int = 3) -> Path:
    rng = np.random.default_rng(seed)
    pd.DataFrame({"x": rng.random(n), "y": rng.random(n)}).to_csv(path, index=False)
    return path


# --------------------------------------------------------------------------- artefact store


def test_a_read_only_artefact_store_is_one_line_saying_so(
    tmp_path: Path, read_only: Callable[[Path], tuple[list[str], bool]]
) -> None:
    db = f"sqlite:///{tmp_path / 'meta' / 'reg.db'}"
    store = tmp_path / "store"
    store.mkdir()
    Registry.open(db, artifacts=str(store)).init()
    rows = _rows_csv(tmp_path / "rows.csv", 10)
    prefix, is_mount = read_only(store)

    result = _cli(
        prefix, "datasets", "register", "rows", str(rows), "--registry", db, "--artifacts", str(store)
    )

    assert result.returncode == 1, result.stderr
    err = _one_line(result.stderr, str(store))
    assert ("the artefact store is read-only" if is_mount else "permission denied") in err
    assert result.stdout == ""
    assert Registry.open(db, artifacts=str(store)).datasets.list().items == []


def test_a_full_artefact_store_says_to_free_space(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'meta' / 'reg.db'}"
    store = tmp_path / "store"
    store.mkdir()
    Registry.open(db, artifacts=str(store)).init()
    rows = _rows_csv(tmp_path / "rows.csv", 40_000)  # random floats: far more than 64 KiB as Parquet
    prefix = _in_namespace(TINY_DISK, store)
    if prefix is None:
        pytest.skip("no mount namespace for a real full disk here (the injected ENOSPC test covers it)")

    result = _cli(
        prefix, "datasets", "register", "rows", str(rows), "--registry", db, "--artifacts", str(store)
    )

    assert result.returncode == 1, result.stderr
    _one_line(result.stderr, "no space left on the artefact store", "free some space")
    assert Registry.open(db, artifacts=str(store)).datasets.list().items == []


class _FaultyOs:
    """The ``os`` module as the artefact store sees it, failing under ``root`` with a real OSError.

    ``errno.ENOSPC`` fails writing file data; the others fail creating folders and files.
    """

    def __init__(self, root: Path, code: int) -> None:
        self.root = str(root)
        self.code = code

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def _fail(self, path: Any) -> None:
        if os.fspath(path).startswith(self.root):
            raise OSError(self.code, os.strerror(self.code), os.fspath(path))

    def makedirs(self, path: Any, *args: Any, **kwargs: Any) -> None:
        if self.code != errno.ENOSPC:
            self._fail(path)
        os.makedirs(path, *args, **kwargs)

    def mkdir(self, path: Any, *args: Any, **kwargs: Any) -> None:
        if self.code != errno.ENOSPC:
            self._fail(path)
        os.mkdir(path, *args, **kwargs)

    def open(self, path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if self.code != errno.ENOSPC and flags & os.O_CREAT:
            self._fail(path)
        return os.open(path, flags, *args, **kwargs)

    def fdopen(self, fd: int, *args: Any, **kwargs: Any) -> Any:
        fh = os.fdopen(fd, *args, **kwargs)
        if self.code == errno.ENOSPC:
            code = self.code

            def write(_data: Any) -> int:
                raise OSError(code, os.strerror(code))

            fh.write = write
        return fh


@pytest.mark.parametrize(
    ("code", "error", "says"),
    [
        (errno.EROFS, StorageError, "the artefact store is read-only; make it writable"),
        (errno.ENOSPC, StorageError, "no space left on the artefact store; free some space"),
        (errno.EACCES, PermissionDenied, "permission denied; give this user access to"),
    ],
    ids=["EROFS", "ENOSPC", "EACCES"],
)
def test_store_faults_become_library_errors_that_say_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, error: type[Exception], says: str
) -> None:
    store = tmp_path / "store"
    reg = Registry.open(f"sqlite:///{tmp_path / 'reg.db'}", artifacts=str(store), actor="a@example.com")
    reg.init()
    monkeypatch.setattr(artifacts_module, "os", _FaultyOs(store, code))

    with pytest.raises(error, match=says) as info:
        reg.register("m", lambda rows: rows, capture=False)
    with pytest.raises(error, match=says):
        reg.datasets.register("rows", pd.DataFrame({"x": [1.0, 2.0]}))

    assert "\n" not in str(info.value)
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == code
    monkeypatch.undo()
    assert reg.list_models().items == [] and reg.datasets.list().items == []
    assert not (store / "models" / "m").exists() or list((store / "models" / "m").iterdir()) == []


@pytest.fixture
def no_aws_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def test_s3_without_credentials_says_how_to_give_them(
    tmp_path: Path, s3_server: str, no_aws_credentials: None
) -> None:
    import boto3

    bucket = f"ml-{uuid.uuid4().hex[:10]}"
    boto3.client(
        "s3", endpoint_url=s3_server, aws_access_key_id="testing", aws_secret_access_key="testing"
    ).create_bucket(Bucket=bucket)
    reg = Registry.open(
        f"sqlite:///{tmp_path / 'reg.db'}",
        artifacts=f"s3://{bucket}/registry",
        storage_options={"endpoint_url": s3_server, "skip_instance_cache": True},
        actor="a@example.com",
    )
    reg.init()

    with pytest.raises(PermissionDenied, match="no S3 credentials found; set AWS_ACCESS_KEY_ID") as info:
        reg.register("m", lambda rows: rows, capture=False)
    assert type(info.value.__cause__).__name__ == "NoCredentialsError"
    assert reg.list_models().items == []


def test_a_missing_bucket_says_it_does_not_exist_and_how_to_create_it(tmp_path: Path, s3_server: str) -> None:
    import boto3

    bucket = f"ml-missing-{uuid.uuid4().hex[:8]}"
    options = {"endpoint_url": s3_server, "key": "testing", "secret": "testing"}
    reg = Registry.open(
        f"sqlite:///{tmp_path / 'reg.db'}", artifacts=f"s3://{bucket}/registry", storage_options=options
    )
    reg.init()
    says = rf"the S3 bucket '{bucket}' does not exist: create it with `modelledger init --create-bucket`"

    with pytest.raises(StorageError, match=says):
        reg.register("m", lambda rows: rows, capture=False)
    with pytest.raises(StorageError, match=says):
        ArtifactStore(f"s3://{bucket}/registry", **options).read_bytes("models/m/x/manifest.json")
    client = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id="t", aws_secret_access_key="t")
    assert bucket not in [b["Name"] for b in client.list_buckets()["Buckets"]]
    assert reg.list_models().items == []


# --------------------------------------------------------------------------- metadata store


def test_a_version_past_64_bits_is_refused_as_invalid_input(registry: Registry, db_url: str) -> None:
    registry.register("m", lambda rows: rows, capture=False)
    huge = 2**64
    for call in (
        lambda: registry.get_version("m", huge),
        lambda: registry.get_version(f"models:/m/{huge}"),
        lambda: registry.state(f"models:/m/{huge}"),
        lambda: registry.set_alias("m", "prod", huge),
        lambda: registry.datasets.get("d", huge),
        lambda: registry.datasets.get(f"datasets:/d/{huge}"),
    ):
        with pytest.raises(InvalidInput, match="too large"):
            call()

    result = CliRunner().invoke(
        main,
        ["versions", "show", "m", str(huge), "--registry", db_url, "--artifacts", registry.artifact_root],
    )
    assert result.exit_code == 1
    _one_line(result.stderr, "too large", str(2**63 - 1))


def test_the_sqlite_store_itself_refuses_a_number_past_64_bits(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    Registry.open(url, artifacts=str(tmp_path / "a")).init()
    store = open_metadata_store(url)
    with pytest.raises(InvalidInput, match="too large"):
        store.get_version_by_key(2**64)
    with pytest.raises(InvalidInput, match="too large"):
        store.list_versions("m", limit=10, before=2**70)
    store.close()


def test_a_read_only_sqlite_registry_still_reads_and_refuses_writes_in_one_line(
    tmp_path: Path, read_only: Callable[[Path], tuple[list[str], bool]]
) -> None:
    home = tmp_path / "registry"
    url = f"sqlite:///{home / 'registry.db'}"
    with Registry.open(url, actor="a@example.com") as reg:
        reg.init()
        reg.register("m", lambda rows: rows, capture=False)
    prefix, is_mount = read_only(home)

    listed = _cli(prefix, "models", "list", "--json", "--registry", url)
    assert listed.returncode == 0, listed.stderr
    assert [m["name"] for m in json.loads(listed.stdout)["items"]] == ["m"]
    verified = _cli(prefix, "verify", "--registry", url)
    assert verified.returncode == 0, verified.stderr
    embedded = _cli(prefix, "versions", "list", "m", "--json", env={"MODELLEDGER_HOME": str(home)})
    assert embedded.returncode == 0, embedded.stderr
    assert [v["version"] for v in json.loads(embedded.stdout)["items"]] == [1]

    created = _cli(prefix, "models", "create", "other", "--registry", url)
    assert created.returncode == 1
    err = _one_line(created.stderr, f"the registry database {home / 'registry.db'}", "reads work")
    assert ("read-only file system" if is_mount else "read-only for this user") in err


def test_a_full_disk_under_the_sqlite_database_says_to_free_space(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    prefix = _in_namespace(TINY_DISK, disk)
    if prefix is None:
        pytest.skip("no mount namespace for a real full disk here")

    result = _cli(
        prefix, "init", "--registry", f"sqlite:///{disk / 'reg.db'}", "--artifacts", str(tmp_path / "a")
    )

    assert result.returncode == 1, result.stderr
    _one_line(result.stderr, f"the registry database {disk / 'reg.db'} cannot grow: the disk is full")


# --------------------------------------------------------------------------- reads create nothing

READS = [
    ["models", "list"],
    ["versions", "list", "m"],
    ["datasets", "list"],
    ["audit"],
    ["verify"],
    ["keys", "export"],
]


def test_reads_never_create_an_explicit_sqlite_registry(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing' / 'x.db'}"
    runner = CliRunner()
    for args in READS:
        result = runner.invoke(main, [*args, "--registry", url])
        assert result.exit_code == 1, (args, result.output)
        _one_line(
            result.stderr, f"registry database not found: {tmp_path / 'missing' / 'x.db'}", "modelledger init"
        )
    with pytest.raises(NotFound, match="modelledger init"):
        Registry.open(url).list_models()
    assert list(tmp_path.iterdir()) == []

    assert runner.invoke(main, ["init", "--registry", url]).exit_code == 0
    assert (tmp_path / "missing" / "x.db").is_file()
    assert runner.invoke(main, ["models", "list", "--registry", url]).exit_code == 0


def test_a_read_of_a_missing_embedded_registry_says_so_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("MODELLEDGER_HOME", str(home))
    monkeypatch.setenv("MODELLEDGER_USER", "a@example.com")
    runner = CliRunner()
    for args in READS:
        result = runner.invoke(main, args)
        assert result.exit_code == 1, (args, result.output)
        _one_line(result.stderr, f"registry not found: {home}: nothing has been registered there yet")
    with pytest.raises(NotFound, match="nothing has been registered there yet"):
        Registry.open().get_model("m")
    assert not home.exists()

    # the first write creates it
    assert runner.invoke(main, ["models", "create", "m"]).exit_code == 0
    # the registry, and the user's own key outside it
    assert (home / "registry.db").is_file() and not (home / "registry.db.key").exists()
    assert (Path(os.environ["MODELLEDGER_IDENTITIES"]) / "a@example.com.key").is_file()
    assert "m" in runner.invoke(main, ["models", "list"]).stdout


# --------------------------------------------------------------------------- any folder name


def test_the_embedded_registry_works_in_any_folder_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / ODD_NAME
    data = tmp_path / "in ?#%+ put"
    data.mkdir()
    rows = _rows_csv(data / "rows.csv", 20)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODELLEDGER_HOME", str(home))
    monkeypatch.setenv("MODELLEDGER_USER", "a@example.com")

    with Registry.open() as reg:
        v = reg.register("m", lambda rows: rows, capture=False, datasets={"train": str(rows)})
        assert local_root(reg.artifact_root) == str(home / "artifacts")
    listed = CliRunner().invoke(main, ["versions", "list", "m", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [x["version"] for x in json.loads(listed.stdout)["items"]] == [1]
    with Registry.open() as reg:
        assert reg.load(v.uri).predict([[1, 2]]) == [[1, 2]]
        assert reg.datasets.get("m-train").row_count == 20
        assert reg.verify().ok

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ODD_NAME, data.name])
    assert {p.name for p in home.iterdir()} <= {
        "registry.db",
        "registry.db-wal",
        "registry.db-shm",
        "artifacts",
    }
    assert (home / "artifacts" / v.folder / "manifest.json").is_file()
    assert list((home / "artifacts" / "datasets" / "m-train").rglob("data.parquet"))


# --------------------------------------------------------------------------- concurrent first use

FIRST_USE = r"""
import json, os, sys, time
from modelledger import Registry

start = float(sys.argv[1])
while time.time() < start:
    time.sleep(0.001)
# one person's eight processes: the same key, created once, made the root by whichever is first
reg = Registry.open(actor="worker@example.com")
v = reg.register("m", lambda rows: rows, capture=False)
print(json.dumps(v.version))
"""


@pytest.mark.parametrize("attempt", [1, 2])
def test_eight_processes_opening_a_new_embedded_registry_at_once_all_succeed(
    tmp_path: Path, attempt: int
) -> None:
    home = tmp_path / "home"
    ids = tmp_path / "ids"  # no key yet: the race creates it too
    env = {**os.environ, "MODELLEDGER_HOME": str(home), "MODELLEDGER_IDENTITIES": str(ids)}
    start = time.time() + 3.0  # every worker is imported and waiting before the gun
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FIRST_USE, str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(8)
    ]
    versions = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        versions.append(json.loads(out))
    assert sorted(versions) == list(range(1, 9))

    # one key, made by whichever process came first, and none inside the registry
    assert [p.name for p in ids.iterdir() if not p.name.startswith(".")] == ["worker@example.com.key"]
    assert not [p.name for p in home.iterdir() if "key" in p.name]
    with Registry.open(f"sqlite:///{home / 'registry.db'}", key=ids / "worker@example.com.key") as reg:
        assert [m.name for m in reg.members()] == ["worker@example.com"]
        assert reg.get_model("m").latest_version == 8
        assert [e.seq for e in reg.audit(action="registry.initialized").items] == [1]
        report = reg.verify()
        assert report.ok, report.problems
        assert report.versions_checked == 8


# --------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["models", "create"], "Error: Missing argument 'NAME'. Try 'modelledger models create --help'."),
        (["models", "list", "--tag", "no-equals"], "expected KEY=VALUE"),
        (["models", "lst"], "No such command 'lst'"),
        (["--no-such-option"], "No such option"),
        (["versions", "show", "models:/m/1", "2"], "give VERSION only with a model name"),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(args: list[str], says: str) -> None:
    result = CliRunner().invoke(main, args, prog_name="modelledger")
    assert result.exit_code == 2, result.output
    err = _one_line(result.stderr, says)
    assert err.endswith("--help'."), err
    assert "Usage:" not in result.output
    assert result.stdout == ""
