"""Every command and subcommand of ``modelledger`` documents itself with an example.

The sqlite-utils habit: ``--help`` says what a command does and ends with an ``Example:``
block of runnable command lines, so a reader can copy one and adapt it.
"""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner
from tests.helpers import subcommands

from modelledger.cli import main


def _walk(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in subcommands(command):
            yield from _walk(sub, (*path, name))


COMMANDS = list(_walk(main))


def test_the_walk_finds_every_command() -> None:
    paths = {" ".join(path) for path, _ in COMMANDS}
    assert {"", "models list", "datasets lineage", "policy set", "receipt verify", "gc"} <= paths
    assert len(paths) >= 40


@pytest.mark.parametrize(
    ("path", "command"), COMMANDS, ids=[" ".join(p) or "modelledger" for p, _ in COMMANDS]
)
def test_help_has_a_description_and_an_example(path: tuple[str, ...], command: click.Command) -> None:
    name = " ".join(("modelledger", *path))
    assert (command.help or "").strip(), f"{name} has no docstring or help"

    result = CliRunner().invoke(main, [*path, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output, f"{name} --help has no Example: block"

    # the block is kept as written (a \b paragraph) and runs the command itself
    examples = result.output.split("Example:", 1)[1].splitlines()
    runs = [line.strip() for line in examples if line.strip().startswith("modelledger ")]
    assert runs, f"{name} --help: the Example: block has no `modelledger ...` command line"
    assert any(run == name or run.startswith(f"{name} ") for run in runs), (
        f"{name} --help: no example runs `{name}`"
    )
