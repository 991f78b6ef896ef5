"""One configuration story: argument > environment > modelledger.toml > user file > default,
the same for ``Registry.open`` and the CLI. Real files in tmp_path; the user's own config
is never read (HOME and XDG_CONFIG_HOME point into tmp_path)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from modelledger import InvalidConfig, InvalidInput, Registry, ResolvedConfig, create_identity, resolve_config
from modelledger.cli import main

VARIABLES = (
    "MODELLEDGER_URL",
    "MODELLEDGER_ARTIFACTS",
    "MODELLEDGER_STORAGE_OPTIONS",
    "MODELLEDGER_HOME",
    "MODELLEDGER_IDENTITY",
    "MODELLEDGER_CONFIG",
    "MODELLEDGER_KEY",
)
ENV = {
    "registry": "MODELLEDGER_URL",
    "artifacts": "MODELLEDGER_ARTIFACTS",
    "storage_options": "MODELLEDGER_STORAGE_OPTIONS",
    "home": "MODELLEDGER_HOME",
    "identity": "MODELLEDGER_IDENTITY",
}


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current folder with no configuration anywhere above it or in the user's home."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("MODELLEDGER_USER", "config@example.com")
    (tmp_path / ".git").mkdir()  # the project file search stops here, never above tmp_path
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def user_file(tmp_path: Path) -> Path:
    return tmp_path / "xdg" / "modelledger" / "config.toml"


def write_toml(path: Path, values: dict[str, Any]) -> Path:
    """A small TOML writer: strings, and one level of tables (JSON strings are TOML strings)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = [f"{k} = {json.dumps(v)}" for k, v in values.items() if not isinstance(v, dict)]
    tables = [
        f"[{k}]\n" + "\n".join(f"{ik} = {json.dumps(iv)}" for ik, iv in v.items())
        for k, v in values.items()
        if isinstance(v, dict)
    ]
    path.write_text("\n".join([*plain, *tables]) + "\n", encoding="utf-8")
    return path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def one_line_error(result: Result, *fragments: str) -> str:
    assert result.exit_code == 1, result.output
    err = result.stderr.strip()
    assert err.startswith("Error: ") and "\n" not in err, err
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in err
    return err


# --------------------------------------------------------------------------- the order

LAYERS = ("argument", "environment", "project file", "user file", "default")


def _value(key: str, layer: str, tmp_path: Path) -> Any:
    """A distinct value of ``key`` for ``layer``, already in resolved (absolute) form."""
    tag = layer.replace(" ", "-")
    return {
        "registry": f"postgresql://{tag}@db/registry",
        "artifacts": f"s3://{tag}/registry",
        "storage_options": {"endpoint_url": f"http://{tag}:9000"},
        "home": str(tmp_path / f"home-{tag}"),
        "identity": f"{tag}@example.com",
    }[key]


DEFAULTS: dict[str, Any] = {
    "registry": None,
    "artifacts": None,
    "storage_options": {},
    "identity": None,
}


@pytest.mark.parametrize("winner", LAYERS)
@pytest.mark.parametrize("key", sorted(ENV))
def test_each_setting_comes_from_the_highest_layer_that_sets_it(
    key: str, winner: str, work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every layer from the winner down sets the key; the layers above it do not
    present = LAYERS[LAYERS.index(winner) : -1]
    arguments: dict[str, Any] = {}
    if "argument" in present:
        arguments[key] = _value(key, "argument", tmp_path)
    if "environment" in present:
        value = _value(key, "environment", tmp_path)
        monkeypatch.setenv(ENV[key], json.dumps(value) if isinstance(value, dict) else value)
    if "project file" in present:
        write_toml(work / "modelledger.toml", {key: _value(key, "project file", tmp_path)})
    if "user file" in present:
        write_toml(user_file(tmp_path), {key: _value(key, "user file", tmp_path)})

    setting = resolve_config(**arguments).settings()[key]

    expected = _value(key, winner, tmp_path) if winner != "default" else DEFAULTS.get(key)
    if key == "home":
        expected = Path(expected) if winner != "default" else work / ".modelledger"
    value = dict(setting.value) if key == "storage_options" else setting.value
    assert (value, setting.kind) == (expected, winner)
    origins = {
        "environment": ENV[key],
        "project file": str(work / "modelledger.toml"),
        "user file": str(user_file(tmp_path)),
    }
    assert setting.origin == origins.get(winner)


def test_modelledger_config_names_the_user_file(
    work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_toml(user_file(tmp_path), {"identity": "xdg"})
    elsewhere = write_toml(tmp_path / "team.toml", {"identity": "team"})
    monkeypatch.setenv("MODELLEDGER_CONFIG", str(elsewhere))
    config = resolve_config()
    assert (config.identity.value, config.user_file) == ("team", elsewhere)

    monkeypatch.setenv("MODELLEDGER_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(
        InvalidConfig, match=r"MODELLEDGER_CONFIG names .*missing\.toml, which does not exist"
    ):
        resolve_config()


def test_storage_options_are_taken_whole_from_one_layer(
    work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_toml(user_file(tmp_path), {"storage_options": {"endpoint_url": "http://user:9000", "anon": "x"}})
    write_toml(work / "modelledger.toml", {"storage_options": {"endpoint_url": "http://project:9000"}})
    assert dict(resolve_config().storage_options.value) == {"endpoint_url": "http://project:9000"}
    monkeypatch.setenv("MODELLEDGER_STORAGE_OPTIONS", '{"use_ssl": false}')
    assert dict(resolve_config().storage_options.value) == {"use_ssl": False}


# --------------------------------------------------------------------------- Python and CLI agree


def test_registry_open_follows_the_environment_like_the_cli(
    work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELLEDGER_URL", f"sqlite:///{tmp_path / 'env' / 'reg.db'}")
    monkeypatch.setenv("MODELLEDGER_ARTIFACTS", str(tmp_path / "env-store"))
    assert invoke("init").exit_code == 0
    assert invoke("models", "create", "from-cli").exit_code == 0

    with Registry.open() as registry:
        registry.create_model("from-python")
        from_python = [m.name for m in registry.list_models()]
        assert registry.artifact_root == (tmp_path / "env-store").as_uri()
    listed = invoke("models", "list", "--json")
    assert listed.exit_code == 0, listed.output
    from_cli = [m["name"] for m in json.loads(listed.stdout)["items"]]

    assert from_python == from_cli == ["from-cli", "from-python"]
    assert not (work / ".modelledger").exists()
    assert list(work.iterdir()) == []


def test_the_project_file_is_found_from_a_subfolder_and_its_paths_are_its_own(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = write_toml(
        work / "modelledger.toml",
        {"registry": "sqlite:///meta/reg.db", "artifacts": "store", "identity": "keys/me.pem"},
    )
    sub = work / "src" / "pkg"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)

    config = resolve_config()
    assert config.project_file == project
    assert config.registry.value == f"sqlite:///{work}/meta/reg.db"
    assert config.artifacts.value == str(work / "store")
    assert config.identity.value == str(work / "keys" / "me.pem")

    create_identity("me@example.com", work / "keys" / "me.pem")  # the identity the file names
    Registry.open().init()
    assert (work / "meta" / "reg.db").is_file()
    assert Registry.open().whoami()["key_path"] == str(work / "keys" / "me.pem")
    assert list(sub.iterdir()) == []

    # a bare name is an identity, not a path; and `home` places the embedded registry
    write_toml(project, {"identity": "release-signer", "home": "../registries/team"})
    config = resolve_config()
    assert config.identity.value == "release-signer"
    assert config.home.value == work / "../registries/team"
    create_identity("release-signer")
    with Registry.open() as registry:
        registry.create_model("embedded")
        assert registry.whoami()["key_path"].endswith("release-signer.key")
    assert (work.parent / "registries" / "team" / "registry.db").is_file()
    assert list(sub.iterdir()) == []


def test_the_search_stops_at_a_repository_root(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outer = write_toml(work / "modelledger.toml", {"registry": "postgresql://outer@db/registry"})
    repo = work / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "src").mkdir()
    monkeypatch.chdir(repo / "src")
    assert resolve_config().project_file is None
    assert resolve_config().registry.kind == "default"

    (repo / ".git").rmdir()
    (repo / ".git").write_text("gitdir: /elsewhere/.git/worktrees/repo\n")  # a worktree or submodule
    assert resolve_config().project_file is None

    (repo / ".git").unlink()
    assert resolve_config().project_file == outer

    (repo / ".git").mkdir()
    inner = write_toml(repo / "modelledger.toml", {"registry": "postgresql://inner@db/registry"})
    assert resolve_config().project_file == inner  # the repository's root is still looked in


def test_reading_configuration_creates_nothing(work: Path, tmp_path: Path) -> None:
    write_toml(work / "modelledger.toml", {"home": "h", "artifacts": "store"})
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    resolve_config()
    assert invoke("config", "show").exit_code == 0
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# --------------------------------------------------------------------------- bad configuration

BAD_FILES = [
    ('registry = "unterminated\n', None, "is not valid TOML"),
    ("registry = 5\n", "registry", "must be a string, got an integer"),
    ('artifacts = ["s3://a"]\n', "artifacts", "must be a string, got an array"),
    ('storage_options = "endpoint_url=x"\n', "storage_options", "must be a table, got str"),
    ("home = true\n", "home", "must be a string, got a boolean"),
    ('identity = ""\n', "identity", "must not be empty"),
    ('registy = "sqlite:///typo.db"\n', "registy", "is not a setting"),
]


@pytest.mark.parametrize("where", ["project", "user"])
@pytest.mark.parametrize(("text", "key", "problem"), BAD_FILES, ids=[b[2] for b in BAD_FILES])
def test_a_bad_config_file_names_the_file_and_key(
    where: str, text: str, key: str | None, problem: str, work: Path, tmp_path: Path
) -> None:
    path = work / "modelledger.toml" if where == "project" else user_file(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")

    with pytest.raises(InvalidConfig) as caught:
        Registry.open()
    assert isinstance(caught.value, InvalidInput)
    assert (caught.value.source, caught.value.key) == (str(path), key)
    assert str(path) in str(caught.value) and problem in str(caught.value)
    if key:
        assert f"key '{key}'" in str(caught.value)

    fragments = [str(path), problem, *([f"key '{key}'"] if key else [])]
    one_line_error(invoke("models", "list"), *fragments)
    one_line_error(invoke("config", "show"), *fragments)
    assert not (work / ".modelledger").exists()


@pytest.mark.parametrize(
    ("text", "problem"),
    [("endpoint_url=x", "is not valid JSON"), ('["a"]', "must be a JSON object, got an array")],
)
def test_bad_storage_options_in_the_environment_name_the_variable(
    text: str, problem: str, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELLEDGER_STORAGE_OPTIONS", text)
    with pytest.raises(InvalidConfig, match=f"MODELLEDGER_STORAGE_OPTIONS {problem}"):
        resolve_config()
    one_line_error(invoke("config", "show"), "MODELLEDGER_STORAGE_OPTIONS", problem)


# --------------------------------------------------------------------------- config show

SECRETS = ("hunter2", "AKIAEXAMPLE", "s3cr3t-value", "sess-token-value")


@pytest.fixture
def layered(work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Settings from every layer, with credentials in the URL and the storage options."""
    monkeypatch.setenv("MODELLEDGER_URL", "postgresql://ml:hunter2@db.example/registry")
    project = write_toml(
        work / "modelledger.toml",
        {
            "artifacts": "s3://from-project/registry",
            "storage_options": {
                "endpoint_url": "http://minio:9000",
                "key": "AKIAEXAMPLE",
                "secret": "s3cr3t-value",
                "session_token": "sess-token-value",
            },
        },
    )
    user = write_toml(user_file(tmp_path), {"identity": "release-signer", "artifacts": "s3://from-user/x"})
    return {"project": project, "user": user}


def test_config_show_says_where_each_setting_comes_from_and_masks_secrets(
    layered: dict[str, Path], work: Path
) -> None:
    result = invoke("config", "show", "--registry", "postgresql://ml:hunter2@other/registry")
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│")}
    assert "postgresql://ml:***@other/registry" in rows["registry"]
    assert "command-line option" in rows["registry"]
    assert "s3://from-project/registry" in rows["artifacts"]
    assert f"project file: {layered['project']}" in rows["artifacts"]
    assert '"endpoint_url": "http://minio:9000"' in rows["storage_options"]
    assert '"key": "***"' in rows["storage_options"] and '"secret": "***"' in rows["storage_options"]
    assert f"{work / '.modelledger'}" in rows["home"] and "default" in rows["home"]
    assert "release-signer" in rows["identity"]
    assert f"user file: {layered['user']}" in rows["identity"]
    assert f"Project file: {layered['project']}" in result.stdout
    assert f"User file: {layered['user']}" in result.stdout
    for secret in SECRETS:
        assert secret not in result.output


def test_config_show_json(layered: dict[str, Path], work: Path) -> None:
    result = invoke("config", "show", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["registry"] == {
        "value": "postgresql://ml:***@db.example/registry",
        "kind": "environment",
        "origin": "MODELLEDGER_URL",
    }
    assert doc["artifacts"] == {
        "value": "s3://from-project/registry",
        "kind": "project file",
        "origin": str(layered["project"]),
    }
    assert doc["storage_options"]["value"] == {
        "endpoint_url": "http://minio:9000",
        "key": "***",
        "secret": "***",
        "session_token": "***",
    }
    assert doc["home"] == {"value": str(work / ".modelledger"), "kind": "default", "origin": None}
    assert doc["identity"]["kind"] == "user file"
    assert doc["files"] == {"project": str(layered["project"]), "user": str(layered["user"])}
    for secret in SECRETS:
        assert secret not in result.output


def test_the_python_value_keeps_secrets_but_its_repr_does_not(layered: dict[str, Path]) -> None:
    config = resolve_config()
    assert config.storage_options.value["secret"] == "s3cr3t-value"
    assert config.to_dict(reveal_secrets=True)["registry"]["value"].endswith(":hunter2@db.example/registry")
    for secret in SECRETS:
        assert secret not in repr(config)
    assert ResolvedConfig.from_dict(config.to_dict(reveal_secrets=True)) == config


# --------------------------------------------------------------------------- --storage-option


def test_storage_option_values_are_json_when_they_parse(work: Path) -> None:
    result = invoke(
        "config",
        "show",
        "--json",
        "--storage-option",
        "anon=true",
        "--storage-option",
        "max_concurrency=8",
        "--storage-option",
        'client_kwargs={"region_name": "eu-west-1"}',
        "--storage-option",
        "endpoint_url=http://minio:9000",
        "--storage-option",
        "profile=",
    )
    assert result.exit_code == 0, result.output
    options = json.loads(result.stdout)["storage_options"]
    assert options["kind"] == "argument"
    assert options["value"] == {
        "anon": True,
        "max_concurrency": 8,
        "client_kwargs": {"region_name": "eu-west-1"},
        "endpoint_url": "http://minio:9000",
        "profile": "",
    }
    bad = invoke("config", "show", "--storage-option", "no-equals-sign")
    assert bad.exit_code == 2
    assert "expected KEY=VALUE" in bad.stderr


@pytest.mark.parametrize("given_by", ["option", "environment", "project file"])
def test_storage_options_reach_fsspec(
    given_by: str,
    work: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    s3_artifacts: tuple[str, dict[str, object]],
) -> None:
    """Only the options know the S3 server's endpoint: the data set lands there only if they arrive."""
    import boto3

    url, options = s3_artifacts
    where = ["--registry", f"sqlite:///{tmp_path / 'reg.db'}", "--artifacts", url]
    if given_by == "option":
        where += [arg for k, v in options.items() for arg in ("--storage-option", f"{k}={v}")]
    elif given_by == "environment":
        monkeypatch.setenv("MODELLEDGER_STORAGE_OPTIONS", json.dumps(options))
    else:
        write_toml(work / "modelledger.toml", {"storage_options": dict(options)})
    (work / "rows.csv").write_text("x,y\n1,2\n3,4\n", encoding="utf-8")

    for args in (["init"], ["datasets", "register", "rows", str(work / "rows.csv")]):
        result = invoke(*args, *where)
        assert result.exit_code == 0, result.output

    bucket = url.removeprefix("s3://").split("/", 1)[0]
    s3 = boto3.client("s3", endpoint_url=str(options["endpoint_url"]), region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert any(k.startswith("registry/datasets/rows/") and k.endswith("/data.parquet") for k in keys), keys
