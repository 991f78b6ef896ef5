"""``server``: serve a registry's API and web UI over HTTP (the ``server`` extra)."""

from __future__ import annotations

import gc
import importlib
import json
import re
from typing import Any

import click

from modelledger import InvalidInput, Registry, Setting, resolve_oidc

from ._common import json_option, registry_options

SERVER_MODULE = "modelledger.server"
"""Imported by name when the command runs, as ``stores.BACKENDS`` does for backends: FastAPI
and uvicorn are an optional extra and slow to import, and no other command should pay for them."""

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1 << 10, "m": 1000**2, "mb": 1000**2}
_UNITS |= {"mib": 1 << 20, "g": 1000**3, "gb": 1000**3, "gib": 1 << 30}


def _server_module() -> Any:
    try:
        return importlib.import_module(SERVER_MODULE)
    except ImportError as exc:
        raise InvalidInput(f"the server needs its extra: pip install 'modelledger[server]' ({exc})") from exc


_COLLECTING = "modelledger.server.collecting"
"""Key of ``ctx.meta``: whether the garbage collector ran before :class:`ServerCommand` paused it."""


class ServerCommand(click.Command):
    """The ``server`` command: Python's cyclic garbage collector is paused from the command's
    start (before the registry opens) until the app is built, then what start-up made is frozen
    (:func:`_started`).

    Start-up makes some hundred thousand objects that live as long as the process (modules,
    SQLAlchemy tables, FastAPI routes, pydantic schemas) and next to no garbage; each full
    collection meanwhile walks all of them to free nothing, which was about a tenth of the time
    to healthy. ``gc.freeze()`` then leaves them out of the collections made while serving."""

    def invoke(self, ctx: click.Context) -> Any:
        ctx.meta[_COLLECTING] = gc.isenabled()
        gc.disable()
        try:
            return super().invoke(ctx)
        finally:
            _started(ctx)  # a command that failed before serving


def _started(ctx: click.Context) -> None:
    """Start-up is over: freeze its objects and let the collector run again (if it ran before)."""
    collecting = ctx.meta.pop(_COLLECTING, None)
    if collecting is None:
        return
    gc.freeze()
    if collecting:
        gc.enable()


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


class ByteSize(click.ParamType[int]):
    """A number of bytes: ``1048576``, ``512KiB``, ``64MiB``, ``1GiB`` (or kB, MB, GB)."""

    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", str(value))
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in _UNITS:
            self.fail(f"{value!r} is not a size such as 1048576, 512KiB, 64MiB or 1GiB", param, ctx)
        return int(match.group(1)) * _UNITS[unit]


def _environment(registry: Registry) -> dict[str, str]:
    """What the worker processes need to open the registry this command opened: the options
    given on the command line (the rest they resolve as this process did)."""
    given = click.get_current_context().params
    env = {"MODELLEDGER_ARTIFACTS": registry.artifact_root}
    if given.get("registry_url"):
        env["MODELLEDGER_URL"] = given["registry_url"]
    if given.get("storage_options") is not None:
        env["MODELLEDGER_STORAGE_OPTIONS"] = json.dumps(given["storage_options"])
    if given.get("as_actor"):
        env["MODELLEDGER_USER"] = given["as_actor"]
    return env


@click.command("server", cls=ServerCommand)
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
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Processes serving on the one port; each opens the registry itself.",
)
@click.option(
    "--max-body",
    default="64MiB",
    show_default=True,
    type=ByteSize(),
    help="Largest request body (bytes, or 512KiB, 64MiB, 1GiB); larger is 413. 0: no limit.",
)
@click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds a response may take to start; later is 503. 0: no limit.",
)
@click.option(
    "--graceful-timeout",
    default=30,
    show_default=True,
    type=click.IntRange(min=0),
    help="Seconds requests in flight get to finish after SIGTERM or SIGINT.",
)
@click.option(
    "--read-cache",
    default=4096,
    show_default=True,
    type=click.IntRange(min=0),
    help="Answers of repeated quick reads kept while the database shows no commit since. 0: none.",
)
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="One JSON line per request on stderr (logger modelledger.server.access).",
)
@click.option(
    "--scheduler",
    "scheduler",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Also run the refresh scheduler, ticking every SECONDS (the server's identity then needs "
    "the contributor role; see `modelledger scheduler`).",
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
    workers: int,
    max_body: int,
    timeout: float,
    graceful_timeout: int,
    read_cache: int,
    access_log: bool,
    scheduler: float | None,
    as_json: bool,
) -> None:
    """Serve the registry's API (/api/v1) until SIGTERM or SIGINT, letting requests in flight
    finish. Every API request needs `Authorization: Bearer <token>`: an API token (`modelledger
    tokens create`) or, with the --oidc-* options, a JWT of that OIDC issuer whose claim
    (default: email) names an enrolled member; /healthz, /readyz and /metrics (Prometheus) need
    none. Writes are made on the caller's behalf with this server's own key, which must be
    enrolled with the gateway role (choose it with MODELLEDGER_IDENTITY). The web UI is at /ui/
    (/ redirects there); it signs in with the same tokens. With --json, first print where it
    serves as one JSON document.

    \b
    Example:
        modelledger server --registry postgresql://ml@db/registry --artifacts s3://ml/reg --host 0.0.0.0
        modelledger server --registry sqlite:///reg.db --port 8080 --workers 4 --max-body 16MiB
        modelledger server --oidc-issuer https://id.example.com --oidc-audience ml --oidc-jwks jwks.json
    """
    module = _server_module()
    resolved = resolve_oidc(issuer=oidc_issuer, audience=oidc_audience, jwks=oidc_jwks, claim=oidc_claim)
    oidc = _oidc_settings(module, resolved)
    options = module.ServerOptions(
        max_body=max_body or None,
        timeout=timeout or None,
        access_log=access_log,
        graceful_timeout=graceful_timeout,
        read_cache=read_cache,
        scheduler=scheduler,
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
    if workers == 1:
        app = module.create_app(registry, oidc=oidc, options=options)
        _started(click.get_current_context())
        module.serve_app(app, host=host, port=port, options=options)
    else:
        _started(click.get_current_context())  # each worker process builds its own app
        # each worker resolves the OIDC settings again, from the environment given here
        environment = _environment(registry)
        environment.update(
            {f"MODELLEDGER_OIDC_{name.upper()}": str(setting.value) for name, setting in resolved.items()}
        )
        module.serve_workers(host=host, port=port, workers=workers, options=options, environment=environment)
