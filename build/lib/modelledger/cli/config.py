"""``config show``: which registry a command would open, and where each setting came from."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from modelledger import ResolvedConfig

from ._common import config_options, echo_json, json_option, make_console

# What each kind of source is called on the command line, where an "argument" is an option.
_KIND_TEXT = {
    "argument": "command-line option",
    "environment": "environment",
    "project file": "project file",
    "user file": "user file",
    "default": "default",
}

# What a value of None means for each setting.
_UNSET_TEXT = {
    "registry": "(the embedded registry in home)",
    "artifacts": "(beside the database)",
    "identity": "(not set)",
}


@click.group()
def config() -> None:
    """Configuration: see which registry commands use and where each setting comes from.

    Each setting comes from the first of: an option (--registry, --artifacts,
    --storage-option), an environment variable (MODELLEDGER_URL, MODELLEDGER_ARTIFACTS,
    MODELLEDGER_STORAGE_OPTIONS, MODELLEDGER_HOME, MODELLEDGER_IDENTITY), modelledger.toml
    in this folder or the nearest parent (up to the repository root), the user file
    ($MODELLEDGER_CONFIG, else $XDG_CONFIG_HOME/modelledger/config.toml), the default.

    \b
    Example:
        modelledger config show
    """


def _value_text(name: str, value: Any) -> str:
    if value is None:
        return _UNSET_TEXT.get(name, "-")
    if isinstance(value, dict):
        return json.dumps(value, default=str) if value else "(none)"
    return str(value)


def _source_text(setting: dict[str, Any]) -> str:
    kind = _KIND_TEXT[setting["kind"]]
    return f"{kind}: {setting['origin']}" if setting["origin"] else kind


@config.command("show")
@json_option
@config_options
def config_show(settings: ResolvedConfig, as_json: bool) -> None:
    """Print each setting, its value and its source; credentials are shown as ***.

    Takes the same --registry, --artifacts and --storage-option as every other command,
    so it shows what a command given them would use. Nothing is opened or created.

    \b
    Example:
        modelledger config show
        modelledger config show --json
        modelledger config show --artifacts s3://ml/registry --storage-option endpoint_url=http://minio:9000
    """
    document = settings.to_dict()
    if as_json:
        echo_json(document)
        return
    table = Table("Setting", "Value", "Source")
    for name in settings.settings():
        setting = document[name]
        table.add_row(name, escape(_value_text(name, setting["value"])), escape(_source_text(setting)))
    console = make_console()
    console.print(table)
    files = document["files"]
    console.print(f"Project file: {escape(files['project'] or '(none found)')}", soft_wrap=True)
    console.print(f"User file: {escape(files['user'] or '(none found)')}", soft_wrap=True)
