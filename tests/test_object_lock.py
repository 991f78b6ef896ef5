"""S3 Object Lock: with ``object_lock`` set, every artefact, manifest, data set file and capture
file is written with a retention period (and a legal hold on request); S3 refuses to delete a
retained object version; ``verify(retention=True)`` reports each object's retention; ``gc``
leaves retained orphans and says so; an erasure under compliance mode hides what it cannot
remove and says until when the bytes stay. Against moto's S3 server on loopback, over SQLite.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from tests.conftest import enrol_cast

from modelledger import (
    Erased,
    InvalidConfig,
    InvalidInput,
    ObjectLock,
    ObjectRetained,
    Registry,
    StorageError,
)
from modelledger.cli import main


class Scorer:
    def predict(self, frame: Any) -> Any:
        return np.asarray(frame["income"], dtype=float) / 1000 + np.asarray(frame["age"])


def _frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return pd.DataFrame({"age": rng.integers(18, 75, n), "income": rng.normal(52_000, 15_000, n).round(2)})


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A boto3 client on the test S3 server: what an operator would check with."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")


@pytest.fixture
def locked_bucket(s3: Any) -> str:
    bucket = f"lock-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    return bucket


@pytest.fixture
def options(s3_server: str) -> dict[str, object]:
    return {"endpoint_url": s3_server, "key": "testing", "secret": "testing"}


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    enrol_cast(url, str(tmp_path / "unused"))
    return url


def _open(db: str, bucket: str, options: dict[str, object], lock: Any) -> Registry:
    return Registry.open(
        db,
        artifacts=f"s3://{bucket}/registry",
        storage_options=options,
        actor="alice@example.com",
        object_lock=lock,
    )


def _key(mv_folder: str, rest: str) -> str:
    return f"registry/{mv_folder}/{rest}"


def _keys(s3: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", ()))


def _versions(s3: Any, bucket: str, key: str) -> list[str]:
    answer = s3.list_object_versions(Bucket=bucket, Prefix=key)
    return [v["VersionId"] for v in answer.get("Versions", ()) if v["Key"] == key]


def test_every_kind_of_object_is_written_with_retention_and_verify_reports_it(
    s3: Any, locked_bucket: str, options: dict[str, object], db: str
) -> None:
    before = datetime.now(timezone.utc)
    with _open(db, locked_bucket, options, "governance:2d:legal-hold") as reg:
        frame = _frame(20)
        mv = reg.register("credit-risk", Scorer(), sample_input=frame[:5], capture=False)
        dv = reg.datasets.register("applications", frame)
        with reg.load(mv.uri, capture=True, flush_rows=10) as served:
            served.predict(frame)
        captures = [
            f"registry/{mv.folder}/predictions/{p}"
            for p in reg._art.list_files(f"{mv.folder}/predictions")
            if p.endswith(".parquet")
        ]
        kinds = {
            "artefact": [_key(mv.folder, f"artifacts/{f.path}") for f in mv.files],
            "manifest": [_key(mv.folder, "manifest.json")],
            "data set": [f"registry/{dv.path}"],
            "capture": captures,
        }
        assert all(kinds.values()), kinds
        after = datetime.now(timezone.utc)
        for kind, keys in kinds.items():
            for key in keys:
                head = s3.head_object(Bucket=locked_bucket, Key=key)
                assert head["ObjectLockMode"] == "GOVERNANCE", (kind, key)
                until = head["ObjectLockRetainUntilDate"]
                # moto keeps whole seconds: allow the one it drops
                assert before + timedelta(days=2, seconds=-1) <= until <= after + timedelta(days=2), (
                    kind,
                    key,
                )
                assert head["ObjectLockLegalHoldStatus"] == "ON", (kind, key)
        # the data set's staging file went whole, every version of it (it was never retained)
        staged = s3.list_object_versions(Bucket=locked_bucket, Prefix="registry/datasets/.staging-")
        assert not staged.get("Versions") and not staged.get("DeleteMarkers")

        report = reg.verify(retention=True)
        assert report.ok, [str(p) for p in report.problems]
        held = {f"registry/{r.path}": r for r in report.retention}
        for keys in kinds.values():
            for key in keys:
                assert held[key].mode == "governance"
                assert held[key].legal_hold is True
                assert held[key].retain_until is not None and held[key].retain_until > after + timedelta(
                    days=1
                )
        assert not any(p.endswith(".claimed") for p in held)  # claim markers are not listed
        assert any("0 without Object Lock retention" in n for n in report.notes), report.notes
        assert reg.verify().retention == ()  # only when asked: one HEAD request per object


def test_deleting_a_retained_object_version_is_refused_by_s3(
    s3: Any, locked_bucket: str, options: dict[str, object], db: str
) -> None:
    from botocore.exceptions import ClientError

    with _open(db, locked_bucket, options, ObjectLock("compliance", timedelta(days=1))) as reg:
        mv = reg.register("credit-risk", Scorer(), sample_input=_frame(5), capture=False)
    key = _key(mv.folder, "manifest.json")
    (version,) = _versions(s3, locked_bucket, key)
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=locked_bucket, Key=key, VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    # a delete without a version id only puts a delete marker on top: the version is kept
    s3.delete_object(Bucket=locked_bucket, Key=key)
    assert _versions(s3, locked_bucket, key) == [version]
    body = s3.get_object(Bucket=locked_bucket, Key=key, VersionId=version)["Body"].read()
    assert mv.digest.encode() in body or b"manifest" in body


def test_gc_leaves_retained_orphans_reports_them_and_collects_unretained_ones(
    s3: Any, locked_bucket: str, options: dict[str, object], db: str
) -> None:
    with _open(db, locked_bucket, options, "governance:1d") as reg:
        held = reg.upload("abandoned", Scorer(), sample_input=_frame(5), capture=False)  # never registered
        # an orphan written without Object Lock (e.g. before it was turned on)
        with _open(db, locked_bucket, options, "off") as plain:
            loose = plain.upload("abandoned-too", Scorer(), sample_input=_frame(5), capture=False)
        dry = reg.gc(older_than="0")
        assert [i.path for i in dry.items] == [loose.folder]
        assert dry.retained and all(r.path.startswith(held.folder + "/") for r in dry.retained)
        assert f"{held.folder}/manifest.json" in {r.path for r in dry.retained}
        assert all(r.mode == "governance" for r in dry.retained)

        done = reg.gc(older_than="0", delete=True)
        assert [i.path for i in done.items] == [loose.folder]
        assert done.retained and all(r.path.startswith(held.folder + "/") for r in done.retained)
    keys = _keys(s3, locked_bucket)
    assert any(k.startswith(f"registry/{held.folder}/") for k in keys)  # left whole
    # the unretained orphan is gone for good: no version, no delete marker left behind
    gone = s3.list_object_versions(Bucket=locked_bucket, Prefix=f"registry/{loose.folder}/")
    assert not gone.get("Versions") and not gone.get("DeleteMarkers")


def test_erasure_under_compliance_hides_the_bytes_and_says_until_when_they_stay(
    s3: Any, locked_bucket: str, options: dict[str, object], db: str
) -> None:
    with _open(db, locked_bucket, options, "compliance:1d") as reg:
        mv = reg.register("credit-risk", Scorer(), sample_input=_frame(5), capture=False)
        with pytest.raises(ObjectRetained, match="compliance retention until") as kept:
            reg.erase(mv.uri, reason="GDPR art. 17, ticket 812")
        assert sorted(r.path for r in kept.value.objects) == sorted(
            f"{mv.folder}/artifacts/{f.path}" for f in mv.files
        )
        with pytest.raises(Erased):  # recorded, and the objects are out of sight
            reg.load(mv.uri)
        report = reg.verify()
        assert report.ok, [str(p) for p in report.problems]
        assert [e.target for e in report.erased] == [mv.uri]
    for f in mv.files:  # ...but S3 keeps each version until its retain-until date
        key = _key(mv.folder, f"artifacts/{f.path}")
        assert _versions(s3, locked_bucket, key)
        assert key not in _keys(s3, locked_bucket)


def test_a_bucket_without_object_lock_is_a_clear_error_before_any_file_is_uploaded(
    s3: Any, options: dict[str, object], db: str
) -> None:
    bucket = f"plain-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    with (
        _open(db, bucket, options, "governance:1d") as reg,
        pytest.raises(StorageError, match="does not have Object Lock enabled") as err,
    ):
        reg.register("credit-risk", Scorer(), sample_input=_frame(5), capture=False)
    assert "put-object-lock-configuration" in str(err.value)
    assert [k for k in _keys(s3, bucket) if not k.endswith(".claimed")] == []


def test_object_lock_is_refused_on_a_store_that_is_not_s3_and_checked_in_config(
    tmp_path: Path, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InvalidInput, match="needs an s3:// artefact root"):
        Registry.open(db, artifacts=str(tmp_path / "art"), object_lock="governance:30d")
    with pytest.raises(InvalidInput, match="governance or compliance"):
        Registry.open(db, artifacts="s3://b/r", object_lock="legal:30d")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "modelledger.toml").write_text('[object_lock]\nmode = "compliance"\nperiod = "soon"\n')
    with pytest.raises(InvalidConfig, match="object_lock"):
        Registry.open(db, artifacts="s3://b/r")
    (tmp_path / "modelledger.toml").write_text(
        '[object_lock]\nmode = "compliance"\ndays = 365\nlegal_hold = true\n'
    )
    reg = Registry.open(db, artifacts="s3://b/r")
    assert reg._art.object_lock == ObjectLock("compliance", timedelta(days=365), legal_hold=True)
    monkeypatch.setenv("MODELLEDGER_OBJECT_LOCK", "off")  # the environment overrides the file
    assert Registry.open(db, artifacts="s3://b/r")._art.object_lock is None


def test_cli_creates_a_bucket_with_object_lock_and_lists_retention(
    s3: Any, s3_server: str, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = f"cli-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("MODELLEDGER_STORAGE_OPTIONS", f'{{"endpoint_url": "{s3_server}"}}')
    where = ["--registry", db, "--artifacts", f"s3://{bucket}/registry", "--object-lock", "governance:1d"]
    runner = CliRunner()
    out = runner.invoke(main, ["init", "--create-bucket", *where, "--as", "alice@example.com"])
    assert out.exit_code == 0, out.output
    assert s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"][
        "ObjectLockEnabled"
    ] == ("Enabled")
    with Registry.open(
        db, artifacts=f"s3://{bucket}/registry", actor="alice@example.com", object_lock="governance:1d"
    ) as reg:
        mv = reg.register("credit-risk", Scorer(), sample_input=_frame(5), capture=False)
    out = runner.invoke(main, ["verify", "--retention", "--json", *where, "--as", "alice@example.com"])
    assert out.exit_code == 0, out.output
    import json

    listed = {r["path"]: r for r in json.loads(out.stdout)["retention"]}
    assert listed[f"{mv.folder}/manifest.json"]["mode"] == "governance"


def test_erasing_again_once_the_retention_is_over_removes_every_version(
    s3: Any, locked_bucket: str, options: dict[str, object], db: str
) -> None:
    import time

    with _open(db, locked_bucket, options, "compliance:2s") as reg:
        mv = reg.register("credit-risk", Scorer(), sample_input=_frame(5), capture=False)
        try:
            reg.erase(mv.uri, reason="consent withdrawn")
        except ObjectRetained as kept:  # the usual case: erased within the 2 s
            until = max(r.retain_until for r in kept.objects if r.retain_until is not None)
            time.sleep(max(0.0, (until - datetime.now(timezone.utc)).total_seconds()) + 0.3)
            erasure = reg.erase(mv.uri, reason="consent withdrawn")  # finishes; records nothing new
            assert erasure.target == mv.uri
        assert [e.target for e in reg.verify().erased] == [mv.uri]
    for f in mv.files:
        key = _key(mv.folder, f"artifacts/{f.path}")
        left = s3.list_object_versions(Bucket=locked_bucket, Prefix=key)
        assert not left.get("Versions") and not left.get("DeleteMarkers")
    assert _key(mv.folder, "manifest.json") in _keys(s3, locked_bucket)  # erasure keeps the manifest


def test_a_file_uploaded_in_parts_keeps_its_retention(
    s3: Any, locked_bucket: str, options: dict[str, object]
) -> None:
    from modelledger.stores.artifacts import ArtifactStore

    # 5 MiB parts (S3's smallest), so a 6 MiB file goes up as a multipart upload
    store = ArtifactStore(
        f"s3://{locked_bucket}/registry",
        object_lock=ObjectLock.parse("governance:1d"),
        default_block_size=5 * 1024 * 1024,
        **options,
    )
    size, _sha = store.put_stream("models/big/1/artifacts/weights.bin", iter([b"\0" * (1 << 20)] * 6))
    head = s3.head_object(Bucket=locked_bucket, Key="registry/models/big/1/artifacts/weights.bin")
    assert head["ContentLength"] == size == 6 << 20
    assert head["ObjectLockMode"] == "GOVERNANCE"


def test_a_registry_server_client_takes_the_retention_flag_and_says_where_to_run_it() -> None:
    # the CLI passes retention= to every verify, a server's client included
    remote = Registry.open("http://127.0.0.1:9/", token="mlt_unused")
    with pytest.raises(InvalidInput, match="verify --retention needs the artefact store"):
        remote.verify(retention=True)
