"""The command line, run in-process with CliRunner against real SQLite and PostgreSQL registries."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner, Result
from tests.helpers import subcommands

from modelledger.cli import main

Run = Callable[..., Result]

SOURCE = {
    "repo_url": "https://git.example.com/risk/credit.git",
    "path": "train/credit.py",
    "revision": "3f2a9c1e5b7d4a6f8e0c2b4d6f8a0c2e4b6d8f0a",
    "dirty": False,
    "branch": "main",
}
MANIFEST = {
    "flavor": "sklearn",
    "entry": "model.pkl",
    "description": "probability of default",
    "params": {"C": 0.5, "max_iter": 500},
    "metrics": {"auc": 0.87, "accuracy": 0.81},
    "source": SOURCE,
    "training_job": {"id": "run-42", "host": "trainer-1"},
    "algorithm": "sklearn.pipeline.Pipeline[LogisticRegression]",
    "framework": "scikit-learn",
    "framework_version": "1.9.1",
}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def art(tmp_path: Path) -> Path:
    return tmp_path / "cli-artifacts"


@pytest.fixture
def cli(db_url: str, art: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """Run ``modelledger ARGS --registry db_url --artifacts art`` and check the exit code."""
    monkeypatch.setenv("MODELLEDGER_USER", "cli@example.com")
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Result:
        result = runner.invoke(main, [*args, "--registry", db_url, "--artifacts", str(art)])
        assert result.exit_code == code, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        return result

    return run


@pytest.fixture
def model_dir(tmp_path: Path, fitted_pipeline: object) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.pkl").write_bytes(pickle.dumps(fitted_pipeline, protocol=5))
    return folder


def _write_manifest(path: Path, doc: object) -> Path:
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.fixture
def manifest_file(tmp_path: Path) -> Path:
    return _write_manifest(tmp_path / "manifest.yaml", MANIFEST)


@pytest.fixture
def inputs(tmp_path: Path, credit_data: tuple[pd.DataFrame, pd.Series]) -> dict[str, Path]:
    X, _ = credit_data
    X.to_csv(tmp_path / "applications.csv", index=False)
    X.to_parquet(tmp_path / "applications.parquet", index=False)
    X.head(20).to_csv(tmp_path / "sample.csv", index=False)
    return {
        "csv": tmp_path / "applications.csv",
        "parquet": tmp_path / "applications.parquet",
        "sample": tmp_path / "sample.csv",
    }


@pytest.fixture
def registered(cli: Run, model_dir: Path, manifest_file: Path, inputs: dict[str, Path]) -> str:
    result = cli(
        "register",
        "credit-risk",
        str(model_dir),
        "--manifest",
        str(manifest_file),
        "--sample",
        str(inputs["sample"]),
    )
    return result.stdout.strip()


def _json(result: Result) -> dict[str, object] | list[object]:
    doc: dict[str, object] | list[object] = json.loads(result.stdout)
    return doc


def _names(result: Result) -> list[str]:
    doc = json.loads(result.stdout)
    return [m["name"] for m in doc["items"]]


def _stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _assert_one_line_error(result: Result, fragment: str) -> None:
    err = result.stderr.strip()
    assert err.startswith("Error: "), err
    assert "\n" not in err, err
    assert "Traceback" not in result.output
    assert fragment in err


# --------------------------------------------------------------------------- help


def _walk(cmd: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in subcommands(cmd):
            yield from _walk(sub, (*path, name))


COMMANDS = list(_walk(main))


def _example_lines(help_text: str) -> list[str]:
    _, _, block = help_text.partition("Example:")
    lines = []
    for line in block.splitlines()[1:]:
        if not line.strip():
            break
        lines.append(line.strip())
    return lines


def _split(line: str) -> list[str]:
    """Split a shell line, stopping at the first redirection or pipe."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    argv = []
    for token in lexer:
        if token and set(token) <= set("();<>|&"):
            break
        argv.append(token)
    return argv


def _parse_example(argv: list[str]) -> None:
    """Parse an example command line as click would, without running it."""
    cmd: click.Command = main
    args = list(argv)
    while isinstance(cmd, click.Group):
        name = args.pop(0)
        sub = cmd.get_command(click.Context(cmd), name)
        assert sub is not None, f"unknown command {name!r} in example {argv}"
        cmd = sub
    cmd.make_context(cmd.name, args)


@pytest.mark.parametrize(
    ("path", "command"), COMMANDS, ids=[" ".join(p) or "modelledger" for p, _ in COMMANDS]
)
def test_every_command_has_an_example_that_parses(path: tuple[str, ...], command: click.Command) -> None:
    ctx = click.Context(command, info_name=" ".join(("modelledger", *path)))
    help_text = command.get_help(ctx)
    assert "Example:" in help_text, f"`modelledger {' '.join(path)}` has no Example: block in its help"
    examples = _example_lines(help_text)
    assert examples, "the Example: block is empty (or lost its \\b formatting)"
    for line in examples:
        argv = _split(line)
        assert argv[0] == "modelledger"
        assert argv[1 : 1 + len(path)] == list(path), f"example {line!r} is for another command"
        if len(argv) > 1 and "--help" not in argv:
            _parse_example(argv[1:])


# --------------------------------------------------------------------------- init


def test_init_creates_a_new_sqlite_registry(tmp_path: Path) -> None:
    runner = CliRunner()
    where = ["--registry", f"sqlite:///{tmp_path / 'new' / 'reg.db'}", "--artifacts", str(tmp_path / "store")]
    before = runner.invoke(main, ["models", "list", *where])
    assert before.exit_code == 1
    _assert_one_line_error(before, "modelledger init")
    assert not (tmp_path / "new").exists()  # a read creates nothing

    first = runner.invoke(main, ["init", *where])
    assert first.exit_code == 0, first.output
    assert (tmp_path / "new" / "reg.db").exists()
    revision = first.stdout.split()[-1]
    again = runner.invoke(main, ["migrate", *where])
    assert again.exit_code == 0, again.output
    assert again.stdout.split()[-1] == revision

    listed = runner.invoke(main, ["models", "list", "--json", *where])
    assert listed.exit_code == 0
    assert json.loads(listed.stdout) == {"items": [], "next_cursor": None}


def test_environment_variables_choose_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELLEDGER_URL", f"sqlite:///{tmp_path / 'env.db'}")
    monkeypatch.setenv("MODELLEDGER_ARTIFACTS", str(tmp_path / "env-store"))
    runner = CliRunner()
    assert runner.invoke(main, ["init"]).exit_code == 0
    assert runner.invoke(main, ["models", "create", "from-env"]).exit_code == 0
    assert "from-env" in runner.invoke(main, ["models", "list"]).stdout


# --------------------------------------------------------------------------- models


def test_models_create_list_show(cli: Run) -> None:
    created = cli(
        "models",
        "create",
        "credit-risk",
        "--description",
        "PD [model]",
        "--tag",
        "team=risk",
        "--tag",
        "tier=1",
    )
    assert "credit-risk" in created.stdout
    cli("models", "create", "credit-card", "--tag", "team=cards")
    cli("models", "create", "fraud")

    assert _names(cli("models", "list", "--json")) == ["credit-card", "credit-risk", "fraud"]
    assert _names(cli("models", "list", "--json", "--prefix", "credit")) == ["credit-card", "credit-risk"]
    assert _names(cli("models", "list", "--json", "--tag", "team=risk")) == ["credit-risk"]
    assert _names(cli("models", "list", "--json", "--tag", "team=risk", "--tag", "tier=2")) == []

    table = cli("models", "list", "--prefix", "credit").stdout
    assert "credit-card" in table and "credit-risk" in table and "fraud" not in table
    assert "team=risk" in table
    assert "Next page" not in table

    shown = cli("models", "show", "credit-risk").stdout
    assert "PD [model]" in shown and "team=risk" in shown and "tier=1" in shown
    doc = _json(cli("models", "show", "credit-risk", "--json"))
    assert isinstance(doc, dict)
    assert doc["tags"] == {"team": "risk", "tier": "1"}
    assert doc["description"] == "PD [model]"


def test_models_list_pages_with_a_cursor(cli: Run) -> None:
    names = [f"model-{i}" for i in range(5)]
    for name in names:
        cli("models", "create", name)

    first = cli("models", "list", "--limit", "2").stdout
    assert "model-0" in first and "model-1" in first and "model-2" not in first
    assert "Next page: --cursor " in first

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        args = ["models", "list", "--json", "--limit", "2"] + (["--cursor", cursor] if cursor else [])
        doc = json.loads(cli(*args).stdout)
        seen += [m["name"] for m in doc["items"]]
        pages += 1
        cursor = doc["next_cursor"]
        if cursor is None:
            break
        human = cli("models", "list", "--limit", "2", "--cursor", cursor).stdout
        assert f"model-{2 * pages}" in human
    assert seen == names
    assert pages == 3


# --------------------------------------------------------------------------- versions


def test_register_then_list_and_show_versions(cli: Run, registered: str, model_dir: Path) -> None:
    assert registered == "models:/credit-risk/1"
    sha = hashlib.sha256((model_dir / "model.pkl").read_bytes()).hexdigest()

    listed = cli("versions", "list", "credit-risk").stdout
    assert "sklearn" in listed and "auc=0.87" in listed and "cli@example.com" in listed
    page = json.loads(cli("versions", "list", "credit-risk", "--json").stdout)
    assert [v["version"] for v in page["items"]] == [1]
    assert page["next_cursor"] is None

    shown = cli("versions", "show", "credit-risk", "1").stdout
    for value in [
        "models:/credit-risk/1",
        page["items"][0]["digest"],
        SOURCE["repo_url"],
        SOURCE["path"],
        SOURCE["revision"],
        "run-42",
        "trainer-1",
        "scikit-learn 1.9.1",
        MANIFEST["algorithm"],
        "max_iter",
        "500",
        "accuracy",
        "0.81",
        "model.pkl",
        sha,
        "input: employment",
    ]:
        assert str(value) in shown, value
    assert "Dependencies" in shown and "packages" in shown

    doc = json.loads(cli("versions", "show", "models:/credit-risk/1", "--json").stdout)
    m = doc["manifest"]
    assert m["params"] == MANIFEST["params"]
    assert m["metrics"] == MANIFEST["metrics"]
    assert m["source"] == SOURCE
    assert m["python"] and m["platform"]
    assert m["dependencies"]["scikit-learn"]
    assert [c["name"] for c in m["signature"]["inputs"]] == ["age", "income", "loan_amount", "employment"]
    assert doc["files"] == [
        {"path": "model.pkl", "size": (model_dir / "model.pkl").stat().st_size, "sha256": sha}
    ]
    # a bare name means the latest version
    assert json.loads(cli("versions", "show", "credit-risk", "--json").stdout)["digest"] == doc["digest"]


def test_execution_id_names_the_training_job(cli: Run, model_dir: Path, tmp_path: Path) -> None:
    manifest = _write_manifest(
        tmp_path / "m.yaml", {"flavor": "sklearn", "entry": "model.pkl", "source": SOURCE}
    )
    uri = cli(
        "register", "credit-risk", str(model_dir), "--manifest", str(manifest), "--execution-id", "job-7"
    )
    doc = json.loads(cli("versions", "show", uri.stdout.strip(), "--json").stdout)
    assert doc["manifest"]["training_job"]["id"] == "job-7"
    assert doc["folder"].endswith("run-job-7")


def test_alias_set_and_rm(cli: Run, registered: str) -> None:
    assert "models:/credit-risk@champion" in cli("alias", "set", "credit-risk", "champion", "1").stdout
    doc = json.loads(cli("versions", "show", "models:/credit-risk@champion", "--json").stdout)
    assert doc["version"] == 1 and doc["aliases"] == ["champion"]
    assert "champion" in cli("versions", "list", "credit-risk").stdout

    cli("alias", "rm", "credit-risk", "champion")
    gone = cli("versions", "show", "models:/credit-risk@champion", code=1)
    _assert_one_line_error(gone, "not found")


def test_a_registered_folder_says_whose_environment_it_records(
    cli: Run, model_dir: Path, tmp_path: Path
) -> None:
    # Nothing in the folder says how it was trained: this machine's packages, labelled so.
    cli("register", "plain", str(model_dir))
    plain = json.loads(cli("versions", "show", "plain", "--json").stdout)["manifest"]
    assert plain["environment"] == {"origin": "registering-machine", "from": "process"}
    assert plain["dependencies"]["click"] and plain["python"]
    assert "the registering machine (process)" in cli("versions", "show", "plain").stdout

    pinned = tmp_path / "pinned"
    pinned.mkdir()
    (pinned / "model.pkl").write_bytes((model_dir / "model.pkl").read_bytes())
    (pinned / "requirements.txt").write_text(
        "# pip freeze on the trainer\n"
        "scikit-learn==1.4.2\n"
        "numpy==1.26.4 ; python_version >= '3.10'\n"
        "pandas[parquet]==2.2.2 \\\n    --hash=sha256:abc\n"
        "-r more.txt\n"
        "--index-url https://pypi.example/simple\n"
        "scipy>=1.10  # a range is not what was installed\n"
    )
    cli("register", "pinned", str(pinned))
    doc = json.loads(cli("versions", "show", "pinned", "--json").stdout)["manifest"]
    assert doc["environment"] == {"origin": "training", "from": "requirements.txt"}
    assert doc["dependencies"] == {"scikit-learn": "1.4.2", "numpy": "1.26.4", "pandas": "2.2.2"}
    # nothing of the registering machine is mixed into the trainer's environment
    assert doc["python"] is None and doc["platform"] is None and doc["training_job"]["host"] is None
    assert "the training environment (requirements.txt)" in cli("versions", "show", "pinned").stdout

    manifest = _write_manifest(
        tmp_path / "m.yaml", {"dependencies": {"scikit-learn": "1.3.0"}, "python": "3.11.4"}
    )
    cli("register", "declared", str(model_dir), "--manifest", str(manifest))
    declared = json.loads(cli("versions", "show", "declared", "--json").stdout)["manifest"]
    assert declared["environment"] == {"origin": "training", "from": "manifest"}
    assert declared["dependencies"] == {"scikit-learn": "1.3.0"} and declared["python"] == "3.11.4"


def test_versions_show_names_what_made_the_source_dirty(cli: Run, model_dir: Path, tmp_path: Path) -> None:
    source = {**SOURCE, "dirty": True, "dirty_paths": ["train/credit.py"], "dirty_count": 3}
    manifest = _write_manifest(tmp_path / "m.yaml", {"source": source})
    cli("register", "m", str(model_dir), "--manifest", str(manifest))
    shown = cli("versions", "show", "m").stdout
    assert "train/credit.py (and 2 more)" in shown
    doc = json.loads(cli("versions", "show", "m", "--json").stdout)["manifest"]
    assert doc["source"] == source


# --------------------------------------------------------------------------- predict


@pytest.mark.parametrize(
    ("fmt", "output"), [("csv", None), ("parquet", "scored.parquet"), ("csv", "scored.csv")]
)
def test_predict_matches_the_pipeline(
    cli: Run,
    registered: str,
    inputs: dict[str, Path],
    credit_data: tuple[pd.DataFrame, pd.Series],
    fitted_pipeline: object,
    tmp_path: Path,
    fmt: str,
    output: str | None,
) -> None:
    X, _ = credit_data
    args = ["predict", "models:/credit-risk/1", str(inputs[fmt])]
    if output is None:
        scored = pd.read_csv(io.StringIO(cli(*args).stdout))
    else:
        cli(*args, "-o", str(tmp_path / output))
        path = tmp_path / output
        scored = pd.read_parquet(path) if output.endswith(".parquet") else pd.read_csv(path)
    assert list(scored.columns) == [*X.columns, "prediction"]
    assert scored["prediction"].tolist() == fitted_pipeline.predict(X).tolist()  # type: ignore[attr-defined]
    pd.testing.assert_frame_equal(scored[list(X.columns)], X, check_dtype=False)


# --------------------------------------------------------------------------- verify


def test_verify_reports_a_flipped_byte(cli: Run, registered: str, art: Path, inputs: dict[str, Path]) -> None:
    clean = cli("verify")
    assert "1 versions, 0 data sets, 1 files" in clean.stdout and "no problems" in clean.stdout
    assert json.loads(cli("verify", "--json").stdout)["ok"] is True

    (stored,) = [p for p in _stored_files(art) if p.name == "model.pkl"]
    rel = stored.relative_to(art).as_posix()
    stored.chmod(0o644)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))

    broken = cli("verify", code=1)
    assert rel in broken.stdout and "mismatch" in broken.stdout
    report = json.loads(cli("verify", "--json", code=1).stdout)
    assert report["ok"] is False
    assert [p["path"] for p in report["problems"]] == [rel]
    # loading refuses the tampered bytes too
    _assert_one_line_error(cli("predict", registered, str(inputs["sample"]), code=1), "integrity")


# --------------------------------------------------------------------------- errors


BAD_INPUTS = {
    "name with a slash": (["models", "create", "credit/risk"], "invalid model name"),
    "unknown model": (["models", "show", "unknown"], "model not found: unknown"),
    "unknown model's versions": (["versions", "list", "unknown"], "not found"),
    "unknown version": (["versions", "show", "unknown", "3"], "not found"),
    "register a bad name": (
        ["register", "credit/risk", "{folder}", "--manifest", "{manifest}"],
        "invalid model name",
    ),
    "malformed manifest": (
        ["register", "credit-risk", "{folder}", "--manifest", "{bad_metric}"],
        "'metrics.auc'",
    ),
    "unknown manifest field": (
        ["register", "credit-risk", "{folder}", "--manifest", "{bad_field}"],
        "'paramz'",
    ),
    "manifest is not YAML": (
        ["register", "credit-risk", "{folder}", "--manifest", "{not_yaml}"],
        "not valid",
    ),
    "missing folder": (
        ["register", "credit-risk", "{missing}", "--manifest", "{manifest}"],
        "does not exist",
    ),
    "sample of another type": (
        ["register", "credit-risk", "{folder}", "--manifest", "{manifest}", "--sample", "{manifest}"],
        "use a .csv or .parquet",
    ),
    "predict an unknown model": (["predict", "models:/unknown/1", "{sample}"], "not found"),
    "alias on an unknown model": (["alias", "set", "unknown", "prod", "1"], "not found"),
    "page size out of range": (["models", "list", "--limit", "0"], "limit"),
    "bad cursor": (["models", "list", "--cursor", "!!"], "invalid cursor"),
}


@pytest.mark.parametrize(("args", "fragment"), BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_one_line_and_writes_nothing(
    cli: Run,
    args: list[str],
    fragment: str,
    model_dir: Path,
    manifest_file: Path,
    inputs: dict[str, Path],
    art: Path,
) -> None:
    tmp = model_dir.parent
    paths = {
        "folder": model_dir,
        "manifest": manifest_file,
        "bad_metric": _write_manifest(tmp / "bad.yaml", {**MANIFEST, "metrics": {"auc": "high"}}),
        "bad_field": _write_manifest(tmp / "typo.yaml", {"paramz": {"C": 1}}),
        "not_yaml": tmp / "broken.yaml",
        "missing": tmp / "no-such-folder",
        "sample": inputs["sample"],
    }
    paths["not_yaml"].write_text("params: {C: 1\n", encoding="utf-8")
    result = cli(*[a.format(**paths) for a in args], code=1)
    _assert_one_line_error(result, fragment)
    assert result.stdout == ""
    assert _names(cli("models", "list", "--json")) == []
    assert _stored_files(art) == []


def test_usage_errors_are_one_line_with_exit_code_2(cli: Run) -> None:
    result = cli("models", "list", "--tag", "no-equals-sign", code=2)
    _assert_one_line_error(result, "KEY=VALUE")
    assert "Usage:" not in result.stderr and result.stderr.strip().endswith("--help'.")
    _assert_one_line_error(cli("versions", "show", "models:/m/1", "2", code=2), "give VERSION only")


def test_unexpected_errors_are_one_line_unless_traceback(
    cli: Run, model_dir: Path, tmp_path: Path, credit_data: tuple[pd.DataFrame, pd.Series]
) -> None:
    # Without --sample there is no signature to check, so the pipeline itself fails on bad columns.
    manifest = _write_manifest(
        tmp_path / "m.yaml", {"flavor": "sklearn", "entry": "model.pkl", "source": SOURCE}
    )
    uri = cli("register", "credit-risk", str(model_dir), "--manifest", str(manifest)).stdout.strip()
    X, _ = credit_data
    X.drop(columns=["income"]).head().to_csv(tmp_path / "short.csv", index=False)

    plain = cli("predict", uri, str(tmp_path / "short.csv"), code=1)
    _assert_one_line_error(plain, "unexpected")
    assert "--traceback" in plain.stderr

    verbose = cli("predict", uri, str(tmp_path / "short.csv"), "--traceback", code=1)
    assert "Traceback (most recent call last)" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1].startswith("Error: unexpected")


# --------------------------------------------------------------------------- progress


def test_register_a_large_folder_with_a_progress_bar(
    cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # let rich draw as on a terminal
    small = tmp_path / "small"
    small.mkdir()
    (small / "notes.txt").write_text("tiny")
    big = tmp_path / "big"
    big.mkdir()
    (big / "weights.bin").write_bytes(os.urandom(5 * 1024 * 1024))
    manifest = _write_manifest(tmp_path / "m.yaml", {"description": "raw files", "source": SOURCE})

    quiet = cli("register", "notes", str(small), "--manifest", str(manifest))
    assert quiet.stdout.strip() == "models:/notes/1"
    assert "Uploading" not in quiet.stderr

    loud = cli("register", "weights", str(big), "--manifest", str(manifest))
    assert loud.stdout.strip().splitlines()[-1] == "models:/weights/1"
    assert "Uploading weights" in loud.stderr and "5.2 MB" in loud.stderr
    assert "Traceback" not in loud.output
    doc = json.loads(cli("versions", "show", "weights", "--json").stdout)
    assert doc["files"][0]["size"] == 5 * 1024 * 1024
