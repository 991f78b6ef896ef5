"""Opening a DynamoDB registry as a user does: ``Registry.open("dynamodb://...")``, the CLI's
``--registry``, a ``modelledger.toml``, ``modelledger init``, and the errors of a missing
boto3, an unreachable endpoint or credentials put in the URL. (The registry's features on
DynamoDB are the parametrised suite's ``dynamodb`` leg.)"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner
from tests.conftest import _aws_test_credentials, _free_port
from tests.helpers import Doubler

from modelledger import Registry
from modelledger.cli import main
from modelledger.errors import InvalidInput, MissingDependency, StorageError


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> None:
    _aws_test_credentials(monkeypatch)


def _prefix() -> str:
    return f"w{uuid.uuid4().hex[:10]}-"


def test_open_with_s3_artifacts_registers_and_verifies(dynamodb_server: str, aws: None) -> None:
    bucket = f"ml-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=dynamodb_server).create_bucket(Bucket=bucket)
    # the endpoint from the storage options, as a config file would give it, not from the URL
    options = {"endpoint_url": dynamodb_server, "dynamodb_endpoint_url": dynamodb_server}
    url = f"dynamodb://{_prefix()}?region=us-east-1"
    with Registry.open(url, artifacts=f"s3://{bucket}/reg", storage_options=options) as reg:
        assert reg.init() == "d1"
        v = reg.register("m", Doubler())
        reg.set_alias("m", "champion", v.version)
        assert reg.get_version("models:/m@champion").version == 1
        report = reg.verify()
        assert report.ok, report
    keys = [
        o["Key"]
        for o in boto3.client("s3", endpoint_url=dynamodb_server).list_objects_v2(Bucket=bucket)["Contents"]
    ]
    assert any(k.startswith("reg/") for k in keys)  # the artefacts went to S3


def test_init_creates_on_demand_tables_with_their_indexes(dynamodb_server: str, aws: None) -> None:
    prefix = _prefix()
    runner = CliRunner()
    where = ["--registry", f"dynamodb://{prefix}?region=us-east-1&endpoint_url={dynamodb_server}"]
    where += ["--artifacts", "memory://dyn-init"]
    before = runner.invoke(main, ["models", "list", *where])
    assert before.exit_code == 1 and "modelledger init" in before.output  # a read creates nothing
    first = runner.invoke(main, ["init", *where])
    assert first.exit_code == 0, first.output
    client = boto3.client("dynamodb", endpoint_url=dynamodb_server)
    ledger = client.describe_table(TableName=f"{prefix}ledger")["Table"]
    state = client.describe_table(TableName=f"{prefix}state")["Table"]
    for table in (ledger, state):
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert {i["IndexName"] for i in ledger["GlobalSecondaryIndexes"]} == {
        "by_actor",
        "by_action",
        "by_subject",
        "by_scope",
    }
    assert {i["IndexName"] for i in state["GlobalSecondaryIndexes"]} == {"listing"}
    again = runner.invoke(main, ["init", *where])  # init twice keeps the ledger
    assert again.exit_code == 0, again.output
    assert runner.invoke(main, ["models", "create", "credit", *where]).exit_code == 0
    listed = runner.invoke(main, ["models", "list", "--json", *where])
    assert [m["name"] for m in json.loads(listed.stdout)["items"]] == ["credit"]


def test_a_config_file_names_the_registry_and_its_endpoint(
    dynamodb_server: str, aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".git").mkdir()  # the project file search stops here
    (tmp_path / "modelledger.toml").write_text(
        f'registry = "dynamodb://{_prefix()}?region=us-east-1"\n'
        'artifacts = "store"\n'
        f'[storage_options]\ndynamodb_endpoint_url = "{dynamodb_server}"\n'
    )
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    assert runner.invoke(main, ["init"]).exit_code == 0
    assert runner.invoke(main, ["models", "create", "from-file"]).exit_code == 0
    assert "from-file" in runner.invoke(main, ["models", "list"]).stdout
    with Registry.open() as reg:  # the Python API reads the same file
        assert [m.name for m in reg.list_models()] == ["from-file"]


def test_an_unreachable_endpoint_is_a_storage_error(aws: None) -> None:
    url = f"dynamodb://{_prefix()}?region=us-east-1&endpoint_url=http://127.0.0.1:{_free_port()}"
    with (
        Registry.open(url, artifacts="memory://unreachable") as reg,
        pytest.raises(StorageError, match="cannot reach"),
    ):
        reg.list_models()


def test_credentials_never_go_in_the_url() -> None:
    with pytest.raises(InvalidInput, match="carries no credentials") as caught:
        Registry.open("dynamodb://AKIAEXAMPLE:s3cr3t@acme-?region=eu-west-1", artifacts="memory://x")
    assert "s3cr3t" not in str(caught.value)
    with pytest.raises(InvalidInput, match="unknown DynamoDB URL options"):
        Registry.open("dynamodb://acme-?aws_secret_access_key=s3cr3t", artifacts="memory://x")


def test_without_boto3_the_error_names_the_extra(tmp_path: Path) -> None:
    # a process where boto3 cannot be imported, as on an install without the extra
    script = (
        "import sys; sys.modules['boto3'] = None\n"
        "from modelledger import Registry\n"
        "from modelledger.errors import MissingDependency\n"
        "reg = Registry.open('dynamodb://acme-?region=eu-west-1', artifacts='memory://x')\n"
        "try:\n"
        "    reg.list_models()\n"
        "except MissingDependency as exc:\n"
        "    print(type(exc).__name__, exc.extra, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.startswith(f"{MissingDependency.__name__} dynamodb "), out.stdout + out.stderr
    assert "pip install 'modelledger[dynamodb]'" in out.stdout


def test_no_region_anywhere_is_invalid_input(
    aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))  # no profile's region either
    reg = Registry.open(f"dynamodb://{_prefix()}", artifacts="memory://x")
    with pytest.raises(InvalidInput, match=r"no AWS region .*\?region="):
        reg.list_models()
    reg.close()
