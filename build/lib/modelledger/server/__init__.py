"""modelledger's HTTP server: a versioned read API over any registry (``modelledger server``).

It needs the ``server`` extra (``pip install 'modelledger[server]'``) and is imported only by
the ``modelledger server`` command, so ``import modelledger`` and the rest of the command
line never load FastAPI or uvicorn.

>>> from modelledger.server import create_app  # doctest: +SKIP
>>> app = create_app(Registry.open("postgresql://ml@db/registry", artifacts="s3://ml/reg"))  # doctest: +SKIP
"""

from __future__ import annotations

from .app import API_PREFIX, create_app, serve
from .errors import STATUS, status_for
from .oidc import OidcSettings, OidcVerifier
from .ops import ServerOptions, serve_app, serve_workers, set_route_limits

__all__ = [
    "API_PREFIX",
    "STATUS",
    "OidcSettings",
    "OidcVerifier",
    "ServerOptions",
    "create_app",
    "serve",
    "serve_app",
    "serve_workers",
    "set_route_limits",
    "status_for",
]
