"""``server``: serve a registry's read API over HTTP (the ``server`` extra)."""

from __future__ import annotations

import importlib
import json
from typing import Any

import click

from modelledger import InvalidInput, Registry, Setting, resolve_oidc

from ._common import json_option, registry_options

SERVER_MODULE = "modelledger.server"
"""Imported by name when the command runs, as ``stores.BACKENDS`` does for backends: FastAPI
and uvicorn are an optional extra and slow to import, and no other command should pay for them."""


def _server_module() -> Any:
    try:
        return importlib.import_module(SERVER_MODULE)
    except ImportError as exc:
        raise InvalidInput(f"the server needs its extra: pip install 'modelledger[server]' ({exc})") from exc


_OIDC_HOME = "else `{key}` in the [oidc] table of modelledger.toml or the user config"


def _oidc_settings(module: Any, resolved: dict[str, Setting[str]]) -> Any:
    """The server's ``OidcSettings`` from the resolved settings; None when none is set."""
    if not resolved:
        return None
    missing = [name for name in ("issuer", "audience", "jwks") if name not in resolved]
    if missing:
        given = ", ".join(f"{name} from {setting.source}" for name, setting in resolved.items())
        raise InvalidInput(
            f"OIDC needs an issuer, an audience and a JWKS; {' and '.join(missing)} not set "
            f"(--oidc-{missing[0]}, MODELLEDGER_OIDC_{missing[0].upper()} or {missing[0]} in "
            f"the [oidc] table; given: {given})"
        )
    values = {name: setting.value for name, setting in resolved.items()}
    settings = module.OidcSettings(**values)
    if settings.jwks_url is None:
        # a key file is checked now: a typo should stop the server, not fail every request;
        # a URL is read on the first token, so the server starts while the issuer is down
        module.OidcVerifier(settings).load_keys()
    return settings


@click.command("server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port.")
@click.option(
    "--oidc-issuer",
    metavar="URL",
    help="Also accept JWTs of this OIDC issuer (their iss) "
    f"[env: MODELLEDGER_OIDC_ISSUER; {_OIDC_HOME.format(key='issuer')}]",
)
@click.option(
    "--oidc-audience",
    metavar="TEXT",
    help="The audience the issuer's tokens must name (their aud), e.g. the client id "
    f"[env: MODELLEDGER_OIDC_AUDIENCE; {_OIDC_HOME.format(key='audience')}]",
)
@click.option(
    "--oidc-jwks",
    metavar="URL|FILE",
    help="The issuer's public keys (JWKS): an https:// URL, read again when a token names a new "
    f"key, or a file [env: MODELLEDGER_OIDC_JWKS; {_OIDC_HOME.format(key='jwks')}]",
)
@click.option(
    "--oidc-claim",
    metavar="CLAIM",
    help="The token claim holding the member name [env: MODELLEDGER_OIDC_CLAIM; "
    f"{_OIDC_HOME.format(key='claim')}; default: email]",
)
@json_option
@registry_options
def server(
    registry: Registry,
    host: str,
    port: int,
    oidc_issuer: str | None,
    oidc_audience: str | None,
    oidc_jwks: str | None,
    oidc_claim: str | None,
    as_json: bool,
) -> None:
    """Serve the registry's read API (/api/v1) until interrupted. Every API request needs
    `Authorization: Bearer <token>`: an API token (`modelledger tokens create`) or, with the
    --oidc-* options, a JWT of that OIDC issuer whose claim (default: email) names an enrolled
    member; /healthz and /readyz need none. With --json, first print where it serves as one
    JSON document.

    \b
    Example:
        modelledger server --registry postgresql://ml@db/registry --artifacts s3://ml/reg --host 0.0.0.0
        modelledger server --registry sqlite:///reg.db --port 8080
        modelledger server --oidc-issuer https://login.example.com --oidc-audience modelledger \\
          --oidc-jwks https://login.example.com/.well-known/jwks.json
    """
    module = _server_module()
    oidc = _oidc_settings(
        module,
        resolve_oidc(issuer=oidc_issuer, audience=oidc_audience, jwks=oidc_jwks, claim=oidc_claim),
    )
    base = f"http://{host}:{port}"
    if as_json:
        click.echo(
            json.dumps(
                {
                    "url": base + module.API_PREFIX,
                    "openapi": f"{base}{module.API_PREFIX}/openapi.json",
                    "oidc_issuer": oidc.issuer if oidc is not None else None,
                }
            )
        )
    module.serve(registry, host=host, port=port, oidc=oidc)
