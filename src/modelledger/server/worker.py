"""The app of one worker process of ``modelledger server --workers N`` (see
:func:`.ops.serve_workers`, which names :func:`worker_app` to uvicorn)."""

from __future__ import annotations

import json
import os

from fastapi import FastAPI

from modelledger import Registry

from .app import create_app
from .ops import OPTIONS_ENV, ServerOptions

__all__ = ["worker_app"]


def worker_app() -> FastAPI:
    """The app over the registry this process's environment names (``MODELLEDGER_URL``...),
    with the options the parent process passed on."""
    options = ServerOptions(**json.loads(os.environ.get(OPTIONS_ENV, "{}")))
    return create_app(Registry.open(), options=options)
