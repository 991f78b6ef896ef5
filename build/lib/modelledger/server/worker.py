"""The app of one worker process of ``modelledger server --workers N`` (see
:func:`.ops.serve_workers`, which names :func:`worker_app` to uvicorn)."""

from __future__ import annotations

import gc
import json
import os

from fastapi import FastAPI

from modelledger import Registry, resolve_oidc

from .app import create_app
from .oidc import OidcSettings
from .ops import OPTIONS_ENV, ServerOptions

__all__ = ["worker_app"]


def worker_app() -> FastAPI:
    """The app over the registry this process's environment names (``MODELLEDGER_URL``...),
    with the options the parent process passed on."""
    options = ServerOptions(**json.loads(os.environ.get(OPTIONS_ENV, "{}")))
    resolved = resolve_oidc()  # MODELLEDGER_OIDC_*, as the parent process passed them on
    values = {name: setting.value for name, setting in resolved.items()}
    oidc = (
        OidcSettings(values["issuer"], values["audience"], values["jwks"], claim=values.get("claim", "email"))
        if values
        else None
    )
    # as `modelledger server` does (ServerCommand): no garbage collection while the app is
    # built, whose objects live as long as the process, then those objects frozen out of it
    collecting = gc.isenabled()
    gc.disable()
    try:
        return create_app(Registry.open(), oidc=oidc, options=options)
    finally:
        gc.freeze()
        if collecting:
            gc.enable()
