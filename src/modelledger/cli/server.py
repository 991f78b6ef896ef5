"""``server``: serve a registry's read API over HTTP (the ``server`` extra)."""

from __future__ import annotations

import importlib
import json
from typing import Any

import click

from modelledger import InvalidInput, Registry

from ._common import json_option, registry_options

SERVER_MODULE = "modelledger.server"
"""Imported by name when the command runs, as ``stores.BACKENDS`` does for backends: FastAPI
and uvicorn are an optional extra and slow to import, and no other command should pay for them."""


def _server_module() -> Any:
    try:
        return importlib.import_module(SERVER_MODULE)
    except ImportError as exc:
        raise InvalidInput(f"the server needs its extra: pip install 'modelledger[server]' ({exc})") from exc


@click.command("server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port.")
@json_option
@registry_options
def server(registry: Registry, host: str, port: int, as_json: bool) -> None:
    """Serve the registry's read API (/api/v1) until interrupted. Every API request needs
    `Authorization: Bearer <token>` (`modelledger tokens create`); /healthz and /readyz need none.
    With --json, first print where it serves as one JSON document.

    \b
    Example:
        modelledger server --registry postgresql://ml@db/registry --artifacts s3://ml/reg --host 0.0.0.0
        modelledger server --registry sqlite:///reg.db --port 8080
    """
    module = _server_module()
    base = f"http://{host}:{port}"
    if as_json:
        click.echo(
            json.dumps(
                {"url": base + module.API_PREFIX, "openapi": f"{base}{module.API_PREFIX}/openapi.json"}
            )
        )
    module.serve(registry, host=host, port=port)
