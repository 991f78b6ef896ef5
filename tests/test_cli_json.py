"""Every command takes --json, and the lifecycle and key commands print one JSON document."""

from __future__ import annotations

import json
from pathlib import Path

import click
from click.testing import CliRunner
from tests.helpers import subcommands

from modelledger import Registry
from modelledger.cli import main


def _commands(cmd: click.Command, path: list[str]) -> list[tuple[str, click.Command]]:
    if isinstance(cmd, click.Group):
        return [c for name, sub in subcommands(cmd) for c in _commands(sub, [*path, name])]
    return [(" ".join(path), cmd)]


def test_every_command_takes_json() -> None:
    missing = [
        name
        for name, cmd in _commands(main, [])
        if "--json" not in {o for p in cmd.params for o in getattr(p, "opts", [])}
    ]
    assert missing == []


def test_lifecycle_and_key_commands_print_json(registry: Registry, db_url: str, tmp_path: Path) -> None:
    v = registry.register("credit", lambda rows: rows, capture=False)
    Registry.open(db_url, artifacts=registry.artifact_root, actor="bob@example.com").approve(
        v.uri, reason="ok"
    )
    where = ["--registry", db_url, "--artifacts", registry.artifact_root]
    runner = CliRunner()

    def run(*args: str) -> dict[str, object]:
        result = runner.invoke(main, [*args, "--json", *where])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    assert run("versions", "tag", v.uri, "team=risk")["tags"] == {"team": "risk"}
    assert run("versions", "retire", v.uri, "--reason", "superseded")["stage"] == "retired"
    assert run("models", "rename", "credit", "credit-risk", "--reason", "naming")["name"] == "credit-risk"
    assert run("models", "archive", "credit-risk")["archived"] is True
    assert run("models", "unarchive", "credit-risk")["archived"] is False
    assert str(run("keys", "export")["public_key"]).startswith("-----BEGIN PUBLIC KEY-----")
    assert "seq" in run("checkpoint", "export")
    made = runner.invoke(
        main,
        ["identity", "create", "--name", "dana@bank.example", "--key", str(tmp_path / "d.key"), "--json"],
    )
    assert made.exit_code == 0, made.output
    doc = json.loads(made.stdout)
    assert doc["key_path"] == str(tmp_path / "d.key") and doc["public_key"].startswith(
        "-----BEGIN PUBLIC KEY"
    )
