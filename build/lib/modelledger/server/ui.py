"""The web UI: ``/ui/`` serves one HTML page and the plain ES modules next to it (no build
step; the graph-layout libraries are vendored, pinned, with their licences, in
``static/vendor``). ``/`` redirects to it.

The page is only a client of the REST API: it calls ``/api/v1`` with the bearer token the user
signs in with, so it can see and do exactly what that token allows, no more. Nothing here reads
the registry; ``registry`` is taken for the shape every route module shares.

The page is sent with a Content-Security-Policy that allows scripts from this origin only, so
that text from the registry (names, reasons, tags), which the scripts only ever insert as text,
could not run as script even through a mistake in them.

With OIDC configured, ``/ui/config.json`` tells the page the issuer and the client id (the
audience its tokens must name), and the page offers "Sign in with <issuer>": the
authorization-code flow with PKCE, run in the browser against the issuer's own endpoints (the
page may then also connect to the issuer's origin, for its discovery document and token
endpoint). The ID token it gets back is the bearer, checked by the server as any other JWT.
"""

# No ``from __future__ import annotations``: FastAPI reads annotations at run time.
import os
from os import PathLike
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from starlette.requests import Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from modelledger import Registry

from .deps import Deps

__all__ = ["STATIC", "UI_PATH", "add_routes"]

UI_PATH = "/ui"
STATIC = Path(__file__).resolve().parent / "static"
"""The page, its scripts and style, and the vendored libraries (package data)."""


def security_headers(connect: str = "") -> dict[str, str]:
    """The headers of every UI response; ``connect``: another origin the page may call (the
    OIDC issuer's), besides this server."""
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'self'; connect-src 'self'{connect}; "
            "img-src 'self' data: blob:; "
            # cytoscape sets inline styles on the elements it creates
            "style-src 'self' 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        # a new release's scripts must replace the old ones at once: revalidate every time
        "Cache-Control": "no-cache",
    }


class _Static(StaticFiles):
    """Static files with the UI's security headers on every response."""

    headers: dict[str, str] = security_headers()

    def file_response(
        self,
        full_path: PathLike[str] | str,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(self.headers)
        return response


def add_routes(app: FastAPI, registry: Registry, deps: Deps) -> None:
    """``GET /`` (a redirect), ``GET /ui/`` (the page) and ``/ui/static/...`` (its files); none
    of them is part of the API's OpenAPI document."""
    del registry  # the page reaches the registry only through the API, with the user's token
    settings = deps.oidc.settings if deps.oidc is not None else None
    config: dict[str, object] = {"oidc": None}
    connect = ""
    if settings is not None:
        config["oidc"] = {"issuer": settings.issuer, "client_id": settings.audience}
        origin = urlsplit(settings.issuer)
        connect = f" {origin.scheme}://{origin.netloc}"
    headers = security_headers(connect)

    def index(_request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=headers)

    def ui_config(_request: Request) -> JSONResponse:
        return JSONResponse(config, headers=headers)

    def to_ui(_request: Request) -> RedirectResponse:
        return RedirectResponse(f"{UI_PATH}/", status_code=307)

    static = _Static(directory=STATIC)
    static.headers = headers
    # plain Starlette routes, as /metrics is: pages, not API routes of the OpenAPI document
    app.router.add_route("/", to_ui, methods=["GET"], include_in_schema=False)
    app.router.add_route(UI_PATH, to_ui, methods=["GET"], include_in_schema=False)
    app.router.add_route(f"{UI_PATH}/", index, methods=["GET"], include_in_schema=False)
    app.router.add_route(f"{UI_PATH}/config.json", ui_config, methods=["GET"], include_in_schema=False)
    app.mount(f"{UI_PATH}/static", static, name="ui-static")
