"""The command line for people and scripts: golden text of diff, trace and lineage, --json
everywhere, exit codes, alias list, stages in listings, predict with receipts, object stores.

Golden files live in tests/golden/; after an intended change of rendering, regenerate them
with ``MODELLEDGER_REGEN_GOLDEN=1 pytest tests/test_cli_readable.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner, Result

from modelledger import Registry
from modelledger.cli import main
from scenarios import Story, build

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("MODELLEDGER_REGEN_GOLDEN") == "1"


def _normalised(text: str) -> str:
    """Digests, prediction ids and times vary between runs; everything else must not."""
    text = re.sub(r"sha256:[0-9a-f]{12,64}", "sha256:<digest>", text)
    text = re.sub(r"cloudpickle \S+", "cloudpickle <version>", text)
    text = re.sub(r"\b\d{8}T\d{6}Z\b", "<folder-time>", text)
    text = re.sub(r"\b[0-9A-HJKMNP-TV-Z]{26}\b", "<prediction-id>", text)
    text = re.sub(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)?", "<time>", text)
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    got = _normalised(text)
    if REGEN:
        path.write_text(got, encoding="utf-8")
    assert path.exists(), f"no golden file {path}: run with MODELLEDGER_REGEN_GOLDEN=1"
    assert got == path.read_text(encoding="utf-8")


@pytest.fixture
def story(registry: Registry, tmp_path: Path) -> Story:
    return build(registry, tmp_path)


@pytest.fixture
def run(db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    runner = CliRunner()

    def invoke(*args: str, code: int = 0) -> Result:
        result = runner.invoke(
            main, [*args, "--registry", db_url, "--artifacts", str(tmp_path / "artifacts")]
        )
        assert result.exit_code == code, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        return result

    return invoke


# --------------------------------------------------------------------------- golden text


def test_diff_golden(story: Story, run) -> None:  # type: ignore[no-untyped-def]
    out = run("diff", story.v1.uri, story.v2.uri).stdout
    assert "0.3333333" not in out and "\\[" not in out
    _golden("diff_v1_v2.txt", out)


def test_diff_against_a_version_without_data_golden(story: Story, run) -> None:  # type: ignore[no-untyped-def]
    out = run("diff", story.v2.uri, story.bare.uri).stdout
    assert "Columns removed" not in out and "no data set recorded" in out
    assert "Pipeline[simpleimputer, logisticregression]" in out
    _golden("diff_v2_bare.txt", out)


def test_lineage_golden(story: Story, run) -> None:  # type: ignore[no-untyped-def]
    tree = run("lineage", story.v1.uri).stdout
    assert tree.count("split (train_test_split)") == 2 and "(shown above)" in tree
    _golden("lineage_tree.txt", tree)
    mermaid = run("lineage", story.v1.uri, "--format", "mermaid").stdout
    assert mermaid.startswith("flowchart TD") and mermaid.count('"split (train_test_split)"') == 1
    _golden("lineage.mmd", mermaid)
    dot = run("lineage", story.v1.uri, "--format", "dot").stdout
    assert "rankdir=TB" in dot and dot.count('"split (train_test_split)"') == 1
    _golden("lineage.dot", dot)


def test_trace_golden(registry: Registry, run) -> None:  # type: ignore[no-untyped-def]
    """A version with no data and a bare manifest: no None, no empty Data section."""
    mv = registry.register("scorer", lambda rows: [1.5] * len(rows), capture=False)
    row = {f"feature_{i:02d}": float(i) for i in range(30)}
    with registry.load(mv.uri, capture=True) as served:
        _predictions, receipts = served.predict(pd.DataFrame([row]))
    out = run("trace", receipts[0].prediction_id).stdout
    assert "None" not in out and "dirty=" not in out and "\nData\n" not in out
    assert re.search(r"^  feature_29  29(\.0)?$", out, re.M), out  # the input, one key per line
    _golden("trace_bare.txt", out)


# --------------------------------------------------------------------------- scripts


def test_json_on_writes(story: Story, run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    created = json.loads(run("models", "create", "fraud", "--json").stdout)
    assert created["name"] == "fraud"
    moved = json.loads(run("alias", "set", "credit-risk", "champion", "2", "--json").stdout)
    assert moved["version"] == 2
    listed = json.loads(run("alias", "list", "credit-risk", "--json").stdout)
    assert [(a["alias"], a["version"]) for a in listed["aliases"]] == [("champion", 2)]
    table = run("alias", "list", "credit-risk").stdout
    assert "champion" in table and "models:/credit-risk/2" in table
    assert json.loads(run("alias", "rm", "credit-risk", "champion", "--json").stdout)["removed"] is True
    assert json.loads(run("alias", "list", "credit-risk", "--json").stdout)["aliases"] == []
    init = json.loads(run("init", "--json").stdout)
    assert init["revision"] and init["bucket_created"] is False
    assert (
        json.loads(run("predictions", "credit-risk", "--since", "yesterday", "--json").stdout)["count"] == 0
    )
    assert "0 captured" in run("predictions", "credit-risk", "--since", "7d").stdout


def test_stage_in_version_listings(story: Story, run) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(run("versions", "list", "credit-risk", "--json").stdout)
    assert [item["stage"] for item in doc["items"]] == ["validated"] * 3
    assert "Stage" in run("versions", "list", "credit-risk").stdout
    assert json.loads(run("versions", "show", story.v1.uri, "--json").stdout)["stage"] == "validated"


def test_conflicting_flags_are_a_usage_error(story: Story, run) -> None:  # type: ignore[no-untyped-def]
    result = run("lineage", story.v1.uri, "--json", "--format", "dot", code=2)
    err = result.stderr.strip()
    assert "\n" not in err and "--json and --format dot cannot be used together" in err


def test_next_page_cursor_is_quoted(story: Story, run) -> None:  # type: ignore[no-untyped-def]
    out = run("versions", "list", "credit-risk", "--limit", "1").stdout
    assert re.search(r"Next page: --cursor '[^']+'$", out.strip()), out


@pytest.fixture
def files_model(tmp_path: Path) -> Path:
    folder = tmp_path / "files-model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"w")
    return folder


def _manifest(tmp_path: Path, doc: dict[str, object]) -> str:
    path = tmp_path / f"manifest-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return str(path)


def test_register_exit_code_3_when_gates_reject(run, tmp_path: Path, files_model: Path) -> None:  # type: ignore[no-untyped-def]
    manifest = _manifest(tmp_path, {"metrics": {"auc": 0.7}, "gates": ["auc >= 0.8"]})
    result = run("register", "gated", str(files_model), "--manifest", manifest, code=3)
    assert result.stdout.strip() == "models:/gated/1"  # registered all the same
    assert "rejected by its gates: auc >= 0.8 (got 0.7)" in result.stderr
    doc = json.loads(
        run("register", "gated", str(files_model), "--manifest", manifest, "--json", code=3).stdout
    )
    assert doc["stage"] == "rejected" and doc["ok"] is False and doc["gates"][0]["passed"] is False
    passing = _manifest(tmp_path, {"metrics": {"auc": 0.9}, "gates": ["auc >= 0.8"]})
    run("register", "gated", str(files_model), "--manifest", passing, "--require-stage", "validated")
    short = run(
        "register", "gated", str(files_model), "--manifest", passing, "--require-stage", "approved", code=3
    )
    assert "stopped at stage validated, short of --require-stage approved" in short.stderr


def test_help_documents_exit_codes_and_object_stores() -> None:
    text = CliRunner().invoke(main, ["--help"]).stdout
    assert "Exit codes" in text and "3" in text
    assert "endpoint_url" in text


# --------------------------------------------------------------------------- predict


def test_predict_signs_and_writes_receipts(run, registry: Registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mv = registry.register("scorer", lambda rows: [2.0] * len(rows), capture=False)
    data = tmp_path / "in.csv"
    pd.DataFrame({"x": range(25)}).to_csv(data, index=False)
    out = tmp_path / "out.parquet"
    result = run("predict", mv.uri, str(data), "-o", str(out))
    receipts = (tmp_path / "out.receipts.jsonl").read_text().splitlines()
    assert len(receipts) == 25 and len(pd.read_parquet(out)) == 25
    first, last = json.loads(receipts[0])["prediction_id"], json.loads(receipts[-1])["prediction_id"]
    assert f"prediction ids {first} .. {last}" in result.stderr
    assert run("trace", first).stdout.startswith(f"Prediction {first}")
    doc = json.loads(run("predict", mv.uri, str(data), "-o", "/dev/null", "--no-capture", "--json").stdout)
    assert doc["captured"] is False and doc["rows"] == 25 and doc["receipts"] is None


def test_predict_capture_needs_the_serving_role(db_url: str, tmp_path: Path, registry: Registry) -> None:
    mv = registry.register("scorer", lambda rows: [2.0] * len(rows), capture=False)
    pem = tmp_path / "viewer.pub.pem"
    viewer = f"viewer-{uuid.uuid4().hex[:8]}@example.com"  # identities are shared by the session
    runner = CliRunner()
    where = ["--registry", db_url, "--artifacts", str(tmp_path / "artifacts")]
    created = runner.invoke(main, ["identity", "create", "--name", viewer, "-o", str(pem)])
    assert created.exit_code == 0, created.stderr
    registry.enrol(viewer, pem, roles=("viewer",))
    data = tmp_path / "in.csv"
    pd.DataFrame({"x": range(3)}).to_csv(data, index=False)
    as_viewer = ["--as", viewer, *where]
    refused = runner.invoke(main, ["predict", mv.uri, str(data), "--capture", *as_viewer])
    assert refused.exit_code == 1 and "may not sign receipts" in refused.stderr
    scored = runner.invoke(main, ["predict", mv.uri, str(data), "-o", str(tmp_path / "o.csv"), *as_viewer])
    assert scored.exit_code == 0, scored.stderr
    assert not (tmp_path / "o.receipts.jsonl").exists() and "Signed" not in scored.stderr


# --------------------------------------------------------------------------- object stores


def test_init_creates_a_missing_bucket(
    s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"ml-new-{uuid.uuid4().hex[:8]}"
    args = [
        "--registry", f"sqlite:///{tmp_path / 'reg.db'}",
        "--artifacts", f"s3://{bucket}/registry",
        "--storage-option", f"endpoint_url={s3_server}",
    ]  # fmt: skip
    runner = CliRunner()
    model = tmp_path / "m"
    model.mkdir()
    (model / "w.bin").write_bytes(b"w")
    assert runner.invoke(main, ["init", *args]).exit_code == 0
    missing = runner.invoke(main, ["register", "m", str(model), *args])
    assert missing.exit_code == 1
    err = missing.stderr.strip()
    assert "\n" not in err and f"the S3 bucket '{bucket}' does not exist" in err
    assert "modelledger init --create-bucket" in err
    made = runner.invoke(main, ["init", "--create-bucket", "--json", *args])
    assert made.exit_code == 0, made.stderr
    assert json.loads(made.stdout)["bucket_created"] is True
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    assert bucket in [b["Name"] for b in client.list_buckets()["Buckets"]]
    again = runner.invoke(main, ["init", "--create-bucket", "--json", *args])
    assert json.loads(again.stdout)["bucket_created"] is False
