"""Where the registry is: one resolution of settings, shared by the Python API and the CLI.

Each setting is taken from the first layer that sets it:

1. an explicit argument (``Registry.open(url, artifacts=...)``, ``--registry``, ...);
2. an environment variable: ``MODELLEDGER_URL``, ``MODELLEDGER_ARTIFACTS``,
   ``MODELLEDGER_STORAGE_OPTIONS`` (a JSON object), ``MODELLEDGER_HOME``,
   ``MODELLEDGER_IDENTITY``, ``MODELLEDGER_OBJECT_LOCK`` (an empty variable counts as unset);
3. the project file: ``modelledger.toml`` in the current folder or the nearest parent,
   looking no further than the filesystem root or a folder that holds ``.git``;
4. the user file: ``$MODELLEDGER_CONFIG`` if set, else
   ``$XDG_CONFIG_HOME/modelledger/config.toml`` (default ``~/.config/modelledger/config.toml``);
5. the default.

``storage_options`` is taken whole from the highest layer that sets it; tables from
different layers are never merged, so what a layer says is exactly what fsspec gets.

Both files hold the keys ``registry``, ``artifacts``, ``home``, ``identity``, ``openlineage``
(strings; ``openlineage`` names where OpenLineage events are sent, ``MODELLEDGER_OPENLINEAGE``), a
``[storage_options]`` table and ``object_lock`` (``"governance:30d"`` or a table: ``mode``,
``period`` or ``days``, ``legal_hold``; see :class:`~modelledger.ObjectLock`), and may
hold an ``[oidc]`` table for ``modelledger server``
(``issuer``, ``audience``, ``jwks``, ``claim``; see :func:`resolve_oidc`). A relative path
in a file (a folder, a ``sqlite:///`` URL, an identity key file) is relative to the folder
of that file; ``~`` is expanded. Reading configuration never creates anything.

>>> config = resolve_config()  # doctest: +SKIP
>>> config.registry.value, config.registry.source  # doctest: +SKIP
('postgresql://ml@db/registry', '/repo/modelledger.toml')
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, Literal, TypeVar, get_args

from ._object_lock import ObjectLock, object_lock_from
from .errors import InvalidConfig, InvalidInput

__all__ = [
    "DEFAULT_HOME",
    "ENVIRONMENT",
    "OIDC_ENVIRONMENT",
    "PROJECT_FILE",
    "ResolvedConfig",
    "Setting",
    "SourceKind",
    "mask_secrets",
    "resolve_config",
    "resolve_oidc",
]

DEFAULT_HOME = ".modelledger"
"""The embedded default registry's folder, relative to the current folder."""

PROJECT_FILE = "modelledger.toml"

ENVIRONMENT = {
    "registry": "MODELLEDGER_URL",
    "artifacts": "MODELLEDGER_ARTIFACTS",
    "storage_options": "MODELLEDGER_STORAGE_OPTIONS",
    "home": "MODELLEDGER_HOME",
    "identity": "MODELLEDGER_IDENTITY",
    "object_lock": "MODELLEDGER_OBJECT_LOCK",
    "openlineage": "MODELLEDGER_OPENLINEAGE",
}
"""Setting name -> the environment variable that sets it."""

OIDC_TABLE = "oidc"
OIDC_ENVIRONMENT = {
    "issuer": "MODELLEDGER_OIDC_ISSUER",
    "audience": "MODELLEDGER_OIDC_AUDIENCE",
    "jwks": "MODELLEDGER_OIDC_JWKS",
    "claim": "MODELLEDGER_OIDC_CLAIM",
}
"""The server's OIDC setting (a key of the ``[oidc]`` table) -> the environment variable that sets it."""

USER_FILE_VARIABLE = "MODELLEDGER_CONFIG"

SourceKind = Literal["argument", "environment", "project file", "user file", "default"]

# Storage option names whose values are credentials; matched on the lower-cased name, in
# nested tables too (fsspec passes ``client_kwargs`` and the like through).
SECRET_NAMES = frozenset(
    {
        "key",
        "secret",
        "token",
        "password",
        "passwd",
        "aws_secret_access_key",
        "aws_session_token",
        "session_token",
        "sas_token",
        "account_key",
        "connection_string",
        "credentials",
    }
)
SECRET_SUFFIXES = ("_secret", "_token", "_password", "_key")
MASK = "***"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Setting(Generic[T]):
    """One resolved setting: its value and where it came from.

    ``kind`` is the layer; ``origin`` names it precisely: the environment variable or the
    config file's path (``None`` for an argument or the default).
    """

    value: T
    kind: SourceKind
    origin: str | None = None

    @property
    def source(self) -> str:
        """Where the value came from, for people: ``argument``, ``MODELLEDGER_URL``, a path, ``default``."""
        return self.origin or self.kind

    def to_dict(self) -> dict[str, Any]:
        value: Any = self.value
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        return {"value": value, "kind": self.kind, "origin": self.origin}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Setting[Any]:
        kind = data["kind"]
        if kind not in get_args(SourceKind):
            raise ValueError(f"unknown setting source kind {kind!r}")
        return cls(data["value"], kind, data.get("origin"))


@dataclass(frozen=True, slots=True)
class ResolvedConfig:
    """The settings a registry is opened with, each with its source.

    ``registry`` is the metadata URL (``None``: the embedded default in ``home``);
    ``artifacts`` the artefact root (``None``: beside the database); ``storage_options``
    go to fsspec; ``home`` is the embedded default's folder; ``identity`` names the signing
    identity or a key file (``None``: not set). ``project_file`` and ``user_file`` are the
    files that were read, if any. Its ``repr`` and :meth:`to_dict` mask credentials.
    """

    registry: Setting[str | None]
    artifacts: Setting[str | None]
    storage_options: Setting[Mapping[str, Any]]
    home: Setting[Path]
    identity: Setting[str | None]
    # S3 Object Lock for every object written, as text ("governance:30d"); None or "off": none
    object_lock: Setting[str | None] = Setting(None, "default")
    # where OpenLineage events go as things happen (http(s)://, file:// or a path, kafka://); None: nowhere
    openlineage: Setting[str | None] = Setting(None, "default")
    project_file: Path | None = None
    user_file: Path | None = None

    def settings(self) -> dict[str, Setting[Any]]:
        """The settings by name, in the documented order."""
        return {
            "registry": self.registry,
            "artifacts": self.artifacts,
            "storage_options": self.storage_options,
            "home": self.home,
            "identity": self.identity,
            "object_lock": self.object_lock,
            "openlineage": self.openlineage,
        }

    def to_dict(self, *, reveal_secrets: bool = False) -> dict[str, Any]:
        """A JSON-ready document; credentials are ``***`` unless ``reveal_secrets``."""
        out: dict[str, Any] = {name: s.to_dict() for name, s in self.settings().items()}
        if not reveal_secrets:
            for name in ("registry", "artifacts", "openlineage"):
                if out[name]["value"] is not None:
                    out[name]["value"] = mask_url(out[name]["value"])
            out["storage_options"]["value"] = mask_secrets(out["storage_options"]["value"])
        out["files"] = {
            "project": str(self.project_file) if self.project_file else None,
            "user": str(self.user_file) if self.user_file else None,
        }
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResolvedConfig:
        files = data.get("files") or {}
        home = Setting.from_dict(data["home"])
        options = Setting.from_dict(data["storage_options"])
        return cls(
            registry=Setting.from_dict(data["registry"]),
            artifacts=Setting.from_dict(data["artifacts"]),
            storage_options=Setting(MappingProxyType(dict(options.value)), options.kind, options.origin),
            home=Setting(Path(home.value), home.kind, home.origin),
            identity=Setting.from_dict(data["identity"]),
            object_lock=Setting.from_dict(data["object_lock"])
            if "object_lock" in data
            else Setting(None, "default"),
            openlineage=Setting.from_dict(data["openlineage"])
            if "openlineage" in data
            else Setting(None, "default"),
            project_file=Path(files["project"]) if files.get("project") else None,
            user_file=Path(files["user"]) if files.get("user") else None,
        )

    def __repr__(self) -> str:
        # the generated repr would print storage credentials into logs and tracebacks
        return f"ResolvedConfig({self.to_dict()!r})"


def mask_secrets(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with every credential-like value (``key``, ``secret``, ``token``, ...) as ``***``.

    >>> mask_secrets({"endpoint_url": "http://minio:9000", "secret": "s3cr3t"})
    {'endpoint_url': 'http://minio:9000', 'secret': '***'}
    """
    out: dict[str, Any] = {}
    for name, value in options.items():
        lowered = str(name).lower()
        if lowered in SECRET_NAMES or lowered.endswith(SECRET_SUFFIXES):
            out[name] = MASK
        elif isinstance(value, Mapping):
            out[name] = mask_secrets(value)
        else:
            out[name] = value
    return out


_URL_PASSWORD = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/@:]*):[^/@]*@")


def mask_url(url: str) -> str:
    """``url`` with the password of its user-info part as ``***``.

    >>> mask_url("postgresql://ml:hunter2@db/registry")
    'postgresql://ml:***@db/registry'
    """
    return _URL_PASSWORD.sub(rf"\1:{MASK}@", url)


def resolve_config(
    *,
    registry: str | None = None,
    artifacts: str | os.PathLike[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    home: str | os.PathLike[str] | None = None,
    identity: str | None = None,
    object_lock: ObjectLock | Mapping[str, Any] | str | None = None,
    openlineage: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ResolvedConfig:
    """Resolve every setting: argument > environment > project file > user file > default.

    An argument of ``None`` is "not given". ``cwd`` (default: the current folder) is where
    the project file search starts and what relative arguments and environment paths are
    relative to; ``environ`` defaults to ``os.environ``. Raises :class:`InvalidConfig`
    naming the file (or variable) and key for unreadable TOML, unknown keys or wrong types.
    Reads files; writes and creates nothing.

    >>> resolve_config(artifacts="s3://ml/registry").artifacts.kind  # doctest: +SKIP
    'argument'
    """
    env = os.environ if environ is None else environ
    base = Path(cwd if cwd is not None else os.getcwd()).absolute()

    arguments = {
        "registry": registry,
        "artifacts": os.fspath(artifacts) if artifacts is not None else None,
        "storage_options": storage_options,
        "home": os.fspath(home) if home is not None else None,
        "identity": identity,
        # a bad argument is the caller's InvalidInput, not a configuration problem
        "object_lock": None if object_lock is None else _lock_text(object_lock_from(object_lock)),
        "openlineage": openlineage,
    }
    layers: list[dict[str, Setting[Any]]] = [
        {
            name: Setting(_normalise(name, value, base, expand_user=False), "argument")
            for name, value in arguments.items()
            if value is not None
        },
        _environment_layer(env, base),
    ]
    project_file = find_project_file(base)
    if project_file is not None:
        layers.append(_file_layer(project_file, "project file"))
    user_file = _user_file(env, base)
    if user_file is not None:
        layers.append(_file_layer(user_file, "user file"))
    layers.append(
        {
            "registry": Setting(None, "default"),
            "artifacts": Setting(None, "default"),
            "storage_options": Setting({}, "default"),
            "home": Setting(base / DEFAULT_HOME, "default"),
            "identity": Setting(None, "default"),
            "object_lock": Setting(None, "default"),
            "openlineage": Setting(None, "default"),
        }
    )

    chosen = {name: next(layer[name] for layer in layers if name in layer) for name in ENVIRONMENT}
    options = chosen["storage_options"]
    return ResolvedConfig(
        registry=chosen["registry"],
        artifacts=chosen["artifacts"],
        # a read-only view, so the frozen value cannot be changed behind the caller's back
        storage_options=Setting(MappingProxyType(dict(options.value)), options.kind, options.origin),
        home=chosen["home"],
        identity=chosen["identity"],
        object_lock=chosen["object_lock"],
        openlineage=chosen["openlineage"],
        project_file=project_file,
        user_file=user_file,
    )


def find_project_file(start: Path) -> Path | None:
    """``modelledger.toml`` in ``start`` or its nearest parent; the search ends at the
    filesystem root or at a folder holding ``.git`` (a repository's root is still looked in)."""
    for folder in (start, *start.parents):
        candidate = folder / PROJECT_FILE
        if candidate.is_file():
            return candidate
        # a file in worktrees and submodules, a folder otherwise
        if (folder / ".git").exists():
            return None
    return None


def _user_file(env: Mapping[str, str], base: Path) -> Path | None:
    """The user's config file if there is one; ``$MODELLEDGER_CONFIG`` must name a file that exists."""
    pointed = env.get(USER_FILE_VARIABLE)
    if pointed:
        path = base / Path(pointed).expanduser()
        if not path.exists():
            raise InvalidConfig(USER_FILE_VARIABLE, None, f"names {path}, which does not exist")
        return path
    xdg = env.get("XDG_CONFIG_HOME")
    # the XDG specification says a relative XDG_CONFIG_HOME is invalid and must be ignored
    root = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    path = root / "modelledger" / "config.toml"
    return path if path.is_file() else None


def _environment_layer(env: Mapping[str, str], base: Path) -> dict[str, Setting[Any]]:
    layer: dict[str, Setting[Any]] = {}
    for name, variable in ENVIRONMENT.items():
        text = env.get(variable)
        if not text:
            continue
        value: Any = text
        if name == "storage_options":
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise InvalidConfig(variable, None, f"is not valid JSON: {exc}") from None
            if not isinstance(value, dict):
                raise InvalidConfig(variable, None, f"must be a JSON object, got {_type_name(value)}")
        elif name == "object_lock":
            value = _object_lock_text(variable, None, text)
        layer[name] = Setting(_normalise(name, value, base, expand_user=False), "environment", variable)
    return layer


def _read_file(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib  # loaded only when a config file exists: `import modelledger` stays fast
    else:  # pragma: no cover - Python 3.10 has no tomllib; tomli is the same parser
        import tomli as tomllib  # loaded only when a config file exists
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidConfig(str(path), None, f"is not valid TOML: {exc}") from None
    except OSError as exc:
        raise InvalidConfig(str(path), None, f"cannot be read: {exc.strerror or exc}") from None


def _file_layer(path: Path, kind: SourceKind) -> dict[str, Setting[Any]]:
    data = _read_file(path)
    layer: dict[str, Setting[Any]] = {}
    for name, value in data.items():
        if name == OIDC_TABLE:
            # the server's table, resolved by resolve_oidc; checked here too, so that a mistake
            # in it shows on every command and not only when the server starts
            _oidc_file_layer(path, kind, value)
            continue
        if name not in ENVIRONMENT:
            known = ", ".join([*ENVIRONMENT, f"[{OIDC_TABLE}]"])
            raise InvalidConfig(str(path), name, f"is not a setting (known: {known})")
        if name == "storage_options":
            if not isinstance(value, dict):
                raise InvalidConfig(str(path), name, f"must be a table, got {_type_name(value)}")
        elif name == "object_lock":
            value = _object_lock_text(str(path), name, value)
        elif not isinstance(value, str):
            raise InvalidConfig(str(path), name, f"must be a string, got {_type_name(value)}")
        elif not value:
            raise InvalidConfig(str(path), name, "must not be empty")
        layer[name] = Setting(_normalise(name, value, path.parent, expand_user=True), kind, str(path))
    return layer


def _oidc_file_layer(path: Path, kind: SourceKind, table: Any) -> dict[str, Setting[str]]:
    if not isinstance(table, dict):
        raise InvalidConfig(str(path), OIDC_TABLE, f"must be a table, got {_type_name(table)}")
    layer: dict[str, Setting[str]] = {}
    for name, value in table.items():
        key = f"{OIDC_TABLE}.{name}"
        if name not in OIDC_ENVIRONMENT:
            raise InvalidConfig(str(path), key, f"is not a setting (known: {', '.join(OIDC_ENVIRONMENT)})")
        if not isinstance(value, str):
            raise InvalidConfig(str(path), key, f"must be a string, got {_type_name(value)}")
        if not value:
            raise InvalidConfig(str(path), key, "must not be empty")
        layer[name] = Setting(_normalise(key, value, path.parent, expand_user=True), kind, str(path))
    return layer


def resolve_oidc(
    *,
    issuer: str | None = None,
    audience: str | None = None,
    jwks: str | None = None,
    claim: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Setting[str]]:
    """The OIDC settings of ``modelledger server``, each from the first layer that sets it:
    argument > environment (``MODELLEDGER_OIDC_ISSUER``, ``_AUDIENCE``, ``_JWKS``, ``_CLAIM``) >
    the ``[oidc]`` table of the project file > that of the user file. Only the settings some
    layer sets are returned (an empty dict: OIDC is not configured); what is missing and what
    the defaults are is the server's business. ``jwks`` is a URL or a file, and a relative file
    is relative to the config file that names it (or to ``cwd``). Each setting is resolved on its
    own, so ``--oidc-audience`` overrides the audience of a config file and keeps its issuer.

    >>> resolve_oidc(issuer="https://login.example.com")["issuer"].kind  # doctest: +SKIP
    'argument'
    """
    env = os.environ if environ is None else environ
    base = Path(cwd if cwd is not None else os.getcwd()).absolute()
    arguments = {"issuer": issuer, "audience": audience, "jwks": jwks, "claim": claim}
    layers: list[dict[str, Setting[str]]] = [
        {
            name: Setting(_normalise(f"{OIDC_TABLE}.{name}", value, base, expand_user=False), "argument")
            for name, value in arguments.items()
            if value
        },
        {
            name: Setting(
                _normalise(f"{OIDC_TABLE}.{name}", env[variable], base, expand_user=False),
                "environment",
                variable,
            )
            for name, variable in OIDC_ENVIRONMENT.items()
            if env.get(variable)
        },
    ]
    files: list[tuple[Path | None, SourceKind]] = [
        (find_project_file(base), "project file"),
        (_user_file(env, base), "user file"),
    ]
    for path, kind in files:
        table = _read_file(path).get(OIDC_TABLE) if path is not None else None
        if path is not None and table is not None:
            layers.append(_oidc_file_layer(path, kind, table))
    return {
        name: next(layer[name] for layer in layers if name in layer)
        for name in OIDC_ENVIRONMENT
        if any(name in layer for layer in layers)
    }


def _normalise(name: str, value: Any, base: Path, *, expand_user: bool) -> Any:
    """A setting's value with local paths made absolute against ``base``.

    ``expand_user`` is for config files; shells already expand ``~`` in arguments and
    environment variables, and a literal ``~`` there is left alone as it always was.
    """

    def absolute(text: str) -> str:
        path = Path(text).expanduser() if expand_user else Path(text)
        return str(base / path)

    if name == "home":
        return Path(absolute(value))
    if name == "openlineage":  # a URL, "off", or a file
        return value if "://" in value or value == "off" else absolute(value)
    if name in ("artifacts", f"{OIDC_TABLE}.jwks"):  # a URL, or a folder or file
        return value if "://" in value else absolute(value)
    if name == "identity":
        return absolute(value) if _is_path(value) else value
    if name == "registry":
        return _sqlite_absolute(value, base, expand_user=expand_user) if expand_user else value
    return value


def _is_path(identity: str) -> bool:
    """An identity naming a key file rather than an identity: it has a ``/`` or starts with ``~``."""
    return "/" in identity or os.sep in identity or identity.startswith("~")


_SQLITE_PATH = re.compile(r"^(sqlite(?:\+[a-z0-9_]+)?:///)([^?]*)(.*)$", re.IGNORECASE)


def _sqlite_absolute(url: str, base: Path, *, expand_user: bool) -> str:
    """A ``sqlite:///relative.db`` URL with its file made absolute against ``base``.

    SQLAlchemy reads ``sqlite:///x.db`` relative to the process's current folder, which is
    not what a path written in a config file means.
    """
    match = _SQLITE_PATH.match(url)
    if match is None:
        return url
    prefix, path, rest = match.groups()
    if not path or path.startswith("/") or path == ":memory:":
        return url
    target = Path(path).expanduser() if expand_user else Path(path)
    if target.is_absolute():
        return f"{prefix}{target}{rest}"
    return f"{prefix}{base / target}{rest}"


def _object_lock_text(source: str, key: str | None, value: Any) -> str:
    """The object_lock setting, checked, as its text form (``governance:30d``, or ``off``)."""
    if not isinstance(value, (str, Mapping)):
        raise InvalidConfig(
            source, key, f"must be text such as governance:30d or a table, got {_type_name(value)}"
        )
    try:
        return _lock_text(object_lock_from(value))
    except InvalidInput as exc:
        raise InvalidConfig(source, key, str(exc)) from None


def _lock_text(lock: ObjectLock | None) -> str:
    return "off" if lock is None else str(lock)


def _type_name(value: Any) -> str:
    names = {dict: "a table", list: "an array", bool: "a boolean", int: "an integer", float: "a number"}
    return names.get(type(value), type(value).__name__)
