"""The manifest: the controlling document of a model version.

It pins what is needed to explain and rebuild a version: hyperparameters and
settings, where the training code lives (repository, path, revision, dirty
flag), the algorithm and framework with every installed dependency version,
the Python runtime, metrics and the training job. Git and environment facts are
captured automatically; anything given explicitly wins.

Whatever enters as a manifest (a file, a mapping, a :class:`Manifest` built in Python) and
the ``params``/``metrics`` merged into it is held to :class:`ManifestLimits` before anything
walks it: file size, string length, nesting depth and entries per field. A YAML
manifest may not use anchors or aliases (``&x``/``*x``, including ``<<: *x`` merges), so a
small file cannot expand into a huge document ("billion laughs"). ``source.revision``
becomes part of a folder name, so it must look like a git revision (no ``/``, ``..`` or
control characters, at most 128 characters).

No credential is ever stored: every URL that enters a manifest, captured or given
(``source.repo_url``, ``datasets[].uri``, ``steps[].code.repo_url``), passes through
:func:`redact_url` first, so the manifest that is hashed and written to the ledger never
holds a password, token or signature.
"""

from __future__ import annotations

import json
import os
import re
import site
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from ._identifiers import revision_problem, validate_alias
from ._lifecycle import parse_gates
from ._schedule import RefreshDeclaration
from .errors import InvalidInput, InvalidManifest
from .flavors import flavor_names, is_flavor_name

__all__ = [
    "DEFAULT_LIMITS",
    "Manifest",
    "ManifestLimits",
    "SourceInfo",
    "TrainingJob",
    "capture_dependencies",
    "capture_source",
    "check_limits",
    "check_manifest",
    "checkout_top",
    "load_manifest_file",
    "load_steps_file",
    "redact_code",
    "redact_url",
    "running_script",
]

MANIFEST_FORMAT = 1


@dataclass(frozen=True, slots=True)
class ManifestLimits:
    """Bounds on what a manifest, ``params``, ``metrics`` and model tags may hold.

    A value beyond a bound is refused with :class:`InvalidManifest` naming the field (model
    tags: :class:`~modelledger.errors.InvalidInput` naming the tag), before it is expanded,
    walked or stored. Pass your own to ``Registry.open(..., manifest_limits=...)``.

    - ``max_file_bytes``: size of a manifest file (1 MiB).
    - ``max_string_length``: characters in any string or mapping key of a manifest, such as
      ``description`` or a value in ``params`` (64 KiB, 65,536 characters).
    - ``max_depth``: how deeply mappings and lists nest inside one top-level field such as
      ``params``, ``settings`` or ``metrics`` (32; ``{"a": {"b": 1}}`` is 2 deep).
    - ``max_entries``: mapping keys and list items in one top-level field, counted through
      every level (100,000; the captured ``dependencies`` of a large environment are a few
      hundred).
    - ``max_tags``: tags on one model (256).
    - ``max_tag_key_length`` / ``max_tag_value_length``: characters in a tag's key (256, the
      width of the stored column) and value (4,096).

    >>> ManifestLimits(max_depth=8).max_entries
    100000
    """

    max_file_bytes: int = 1024 * 1024
    max_string_length: int = 64 * 1024
    max_depth: int = 32
    max_entries: int = 100_000
    max_tags: int = 256
    max_tag_key_length: int = 256
    max_tag_value_length: int = 4096

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"ManifestLimits.{name} must be a positive integer, got {value!r}")


DEFAULT_LIMITS = ManifestLimits()
"""The limits a registry applies unless it was opened with others."""


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """Where the training script lives in version control.

    ``repo_url`` holds no credentials (see :func:`redact_url`). ``dirty`` is true when a
    tracked file differs from ``revision`` or the script itself is not tracked (untracked or
    ignored by git). ``dirty_paths`` then names what made it dirty, relative to the
    repository root, the script first, at most 50 of them; ``dirty_count`` is how many there
    are in all. ``unknown`` says why nothing else is recorded when the running ``__main__``
    is a runner and not the training code (``"run under pytest"``, ``"run in a Jupyter
    kernel"``). These three appear in :meth:`to_dict` only when set, so a clean or explicit
    source reads as it always did::

        {"repo_url": "https://git.example.com/risk/credit.git", "path": "train.py",
         "revision": "9f1c2ab...", "dirty": true, "branch": "main",
         "dirty_paths": ["train.py", "features.py"], "dirty_count": 2}

    >>> SourceInfo(unknown="run under pytest").to_dict()["unknown"]
    'run under pytest'
    """

    repo_url: str | None = None
    path: str | None = None
    revision: str | None = None
    dirty: bool | None = None
    branch: str | None = None
    dirty_paths: tuple[str, ...] = ()
    dirty_count: int = 0
    unknown: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "repo_url": self.repo_url,
            "path": self.path,
            "revision": self.revision,
            "dirty": self.dirty,
            "branch": self.branch,
        }
        if self.dirty_paths or self.dirty_count:
            out["dirty_paths"] = list(self.dirty_paths)
            out["dirty_count"] = max(self.dirty_count, len(self.dirty_paths))
        if self.unknown is not None:
            out["unknown"] = self.unknown
        return out


@dataclass(frozen=True, slots=True)
class TrainingJob:
    id: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    host: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "started_at": self.started_at, "ended_at": self.ended_at, "host": self.host}


@dataclass(frozen=True, slots=True)
class Manifest:
    """Everything recorded about how a version was built. Frozen at registration.

    ``environment`` says whose ``dependencies``, ``python`` and ``platform`` these are:
    ``{"origin": "training" | "registering-machine", "from": <where they were read>}``.

    - ``{"origin": "training", "from": "process"}``: a model object registered from the
      Python process that holds it (the training run, as a rule); read from that process.
    - ``{"origin": "training", "from": "manifest"}``: a folder whose manifest lists
      ``dependencies``; only those are recorded.
    - ``{"origin": "training", "from": "requirements.txt"}`` (or ``uv.lock``,
      ``poetry.lock``, ``Pipfile.lock``, ``pylock.toml``, ``environment.yml``,
      ``requirements-gpu.txt``, ...): a folder that holds such a file at its top level; the
      pinned versions in it are recorded.
    - ``{"origin": "registering-machine", "from": "process"}``: a folder that says nothing
      about its training environment (``modelledger register ./model``); what is recorded is
      the machine that ran the registration, not necessarily the one that trained.

    Only with ``"from": "process"`` are the running interpreter's packages, Python, platform
    and host filled in; otherwise nothing of the registering machine is mixed in. A manifest
    may give ``environment`` itself (``origin`` required); a missing ``from`` is filled in
    as above.

    ``run`` records how training was run, to run it again (``modelledger reproduce``,
    refresh): ``{"command": ["python", "train.py", ...] ("python": the environment's
    interpreter), "cwd": a folder inside the repository, "env": {name: value} (only the
    variables that matter: ``MODELLEDGER_DATA_*`` and declared ones, never a secret),
    "seeds": {name: int}, "unseeded": [random sources left unseeded]}``. ``links`` names the
    version this one was made from: ``{"reproduction_of" | "refresh_of": "models:/x/3"}``.
    ``refresh`` declares when to train again: ``{"schedule": "0 3 * * MON", "on_data":
    ["applications"]}``. All three appear in :meth:`to_dict` only when set (see
    :mod:`modelledger._entrypoint`, which fills ``run`` and ``links`` in at registration).
    """

    params: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    source: SourceInfo = field(default_factory=SourceInfo)
    algorithm: str | None = None
    framework: str | None = None
    framework_version: str | None = None
    dependencies: Mapping[str, str] = field(default_factory=dict)
    python: str | None = None
    platform: str | None = None
    training_job: TrainingJob = field(default_factory=TrainingJob)
    flavor: str | None = None
    entry: str | None = None  # the file a flavor loads, for folder registrations
    runs_pickle: bool | None = None  # whether loading unpickles (runs code from the files)
    description: str = ""
    signature: Mapping[str, Any] | None = None
    stages: Mapping[str, str] = field(default_factory=dict)  # stage -> "auto" | "manual"
    gates: tuple[Any, ...] = ()  # validation gates, e.g. "auc >= 0.80 on holdout"
    target_alias: str | None = None  # where `deploy` points by default (production)
    datasets: tuple[Mapping[str, Any], ...] = ()  # {role, uri, digest, rows} per data set used
    steps: tuple[Mapping[str, Any], ...] = ()  # processing steps inside the model (from its pipeline)
    environment: Mapping[str, str] | None = None  # {"origin": ..., "from": ...}, see above
    # How training was run, to run it again (see modelledger._run): {"command": [argv...],
    # "cwd": path inside the repository, "env": {name: value}, "seeds": {name: int},
    # "unseeded": [names of random sources left unseeded]}
    run: Mapping[str, Any] | None = None
    # What this version was made from: {"reproduction_of" | "refresh_of": "models:/x/3"}
    links: Mapping[str, str] = field(default_factory=dict)
    # When to train it again: {"schedule": "0 3 * * MON", "on_data": ["applications"]}
    refresh: Mapping[str, Any] | None = None
    # a folder signed with the OpenSSF model_signing tool: given as {public_key: PEM}, recorded
    # after the check with who signed and what (modelledger._model_signing)
    model_signing: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = self._base_dict()
        # Only when set: a manifest without them reads (and hashes) exactly as it always did.
        if self.run is not None:
            out["run"] = _plain(self.run)
        if self.links:
            out["links"] = dict(self.links)
        if self.refresh is not None:
            out["refresh"] = _plain(self.refresh)
        if self.model_signing is not None:
            out["model_signing"] = dict(self.model_signing)
        return out

    def _base_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "params": dict(self.params),
            "settings": dict(self.settings),
            "metrics": dict(self.metrics),
            "source": self.source.to_dict(),
            "algorithm": self.algorithm,
            "framework": self.framework,
            "framework_version": self.framework_version,
            "dependencies": dict(self.dependencies),
            "python": self.python,
            "platform": self.platform,
            "training_job": self.training_job.to_dict(),
            "flavor": self.flavor,
            "entry": self.entry,
            "runs_pickle": self.runs_pickle,
            "description": self.description,
            "signature": dict(self.signature) if self.signature else None,
            "stages": dict(self.stages),
            "gates": list(self.gates),
            "target_alias": self.target_alias,
            "datasets": [dict(d) for d in self.datasets],
            "steps": [dict(st) for st in self.steps],
            "environment": dict(self.environment) if self.environment is not None else None,
        }

    @classmethod
    def from_dict(
        cls, data: Any, *, source: str | None = None, limits: ManifestLimits = DEFAULT_LIMITS
    ) -> Manifest:
        """Validate a manifest document; a bad one raises :class:`InvalidManifest` naming the field."""
        return _validate(data, source, limits)

    def with_captured(
        self,
        *,
        capture_git: bool = True,
        cwd: str | os.PathLike[str] | None = None,
        script: str | None = None,
        folder: str | os.PathLike[str] | None = None,
        limits: ManifestLimits = DEFAULT_LIMITS,
    ) -> Manifest:
        """Fill in what was not given: git source, environment (dependencies, Python, platform).

        ``folder`` is the artefact folder when a folder of files is registered: its training
        environment comes from this manifest's ``dependencies`` or a lock or requirements
        file in it, else it is labelled the registering machine's (see :class:`Manifest`).
        Without ``folder`` the model object is in this process, whose environment is recorded.

        >>> Manifest().with_captured(folder="model").environment  # doctest: +SKIP
        {'origin': 'registering-machine', 'from': 'process'}
        """
        src = self.source
        # A source given explicitly describes another checkout: never mix in fields
        # from the repository this process happens to run in.
        explicit = bool(src.repo_url or src.revision)
        if capture_git and not explicit:
            found = capture_source(cwd=cwd, script=script)
            given_dirty = src.dirty is not None
            src = SourceInfo(
                repo_url=src.repo_url or found.repo_url,
                path=src.path or found.path,
                revision=src.revision or found.revision,
                dirty=src.dirty if given_dirty else found.dirty,
                branch=src.branch or found.branch,
                dirty_paths=src.dirty_paths if given_dirty else found.dirty_paths,
                dirty_count=src.dirty_count if given_dirty else found.dirty_count,
                unknown=src.unknown or found.unknown,
            )
        origin, read_from, deps = self._environment_source(folder, limits)
        if read_from != "process":
            # The training environment is known from a file or the manifest: recording this
            # machine's Python, platform or host beside it would describe two machines as one.
            return replace(
                self, source=src, dependencies=deps, environment={"origin": origin, "from": read_from}
            )
        # platform and socket only here, where a registration describes its machine: every
        # inference process imports modelledger and needs neither
        import platform
        import socket  # as platform: only a registration asks for the host name

        deps = {**capture_dependencies(), **self.dependencies}
        job = self.training_job
        if job.host is None:
            job = replace(job, host=socket.gethostname())
        return replace(
            self,
            source=src,
            dependencies=deps,
            python=self.python or platform.python_version(),
            platform=self.platform or platform.platform(),
            training_job=job,
            environment={"origin": origin, "from": read_from},
        )

    def _environment_source(
        self, folder: str | os.PathLike[str] | None, limits: ManifestLimits
    ) -> tuple[str, str, dict[str, str]]:
        """(origin, where the dependencies are read, those given or read from a file)."""
        deps = dict(self.dependencies)
        if folder is None:
            origin, read_from = "training", "process"
        elif deps:
            origin, read_from = "training", "manifest"
        else:
            declared = _read_environment_file(Path(folder), limits)
            if declared is not None:
                (read_from, deps), origin = declared, "training"
            else:
                origin, read_from = "registering-machine", "process"
        given = self.environment or {}
        if "from" in given:
            read_from, deps = given["from"], dict(self.dependencies)
        return given.get("origin", origin), read_from, deps


# ---------------------------------------------------------------- validation

_TOP = {
    "format": (int,),
    "params": (dict,),
    "settings": (dict,),
    "metrics": (dict,),
    "source": (dict,),
    "algorithm": (str,),
    "framework": (str,),
    "framework_version": (str,),
    "dependencies": (dict,),
    "python": (str,),
    "platform": (str,),
    "training_job": (dict,),
    "flavor": (str,),
    "entry": (str,),
    "runs_pickle": (bool,),
    "description": (str,),
    "signature": (dict,),
    "stages": (dict,),
    "gates": (list,),
    "target_alias": (str,),
    "datasets": (list,),
    "steps": (list,),
    "environment": (dict,),
    "run": (dict,),
    "links": (dict,),
    "refresh": (dict,),
    "model_signing": (dict,),
}
_MODEL_SIGNING = {
    "public_key": (str,),
    "signature": (str,),
    "method": (str,),
    "key_fingerprint": (str,),
    "digest": (str,),
    "files": (int,),
    "ignored": (list,),
}
_SOURCE = {
    "repo_url": (str,),
    "path": (str,),
    "revision": (str,),
    "dirty": (bool,),
    "branch": (str,),
    "dirty_paths": (list,),
    "dirty_count": (int,),
    "unknown": (str,),
}
_ENVIRONMENT = {"origin": (str,), "from": (str,)}
_RUN = {"command": (list,), "cwd": (str,), "env": (dict,), "seeds": (dict,), "unseeded": (list,)}
LINK_KINDS = ("reproduction_of", "refresh_of")
"""The kinds of link a manifest's ``links`` may hold (a version made from another one)."""
_REFRESH = {"schedule": (str,), "on_data": (list,), "alias": (str,)}
_ORIGINS = ("training", "registering-machine")
_JOB = {"id": (str, int), "started_at": (str, datetime), "ended_at": (str, datetime), "host": (str,)}
_STAGE_MODES = ("data_prepared", "trained", "validated", "approved", "deployed")


def _type_names(types: tuple[type, ...]) -> str:
    names = {
        dict: "a mapping",
        str: "a string",
        int: "an integer",
        bool: "true or false",
        float: "a number",
        datetime: "a timestamp",
    }
    return " or ".join(names.get(t, t.__name__) for t in types)


def _check_fields(
    data: Mapping[str, Any], spec: Mapping[str, tuple[type, ...]], prefix: str, source: str | None
) -> None:
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in spec:
            raise InvalidManifest(path, "is not a known manifest field", source=source)
        if value is None:
            continue
        types = spec[key]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            raise InvalidManifest(
                path, f"must be {_type_names(types)}, got {type(value).__name__}", source=source
            )


def check_limits(
    value: Any, field: str, limits: ManifestLimits = DEFAULT_LIMITS, *, source: str | None = None
) -> None:
    """Refuse ``value``, the content of manifest field ``field``, if it exceeds ``limits``.

    Strings and mapping keys are measured, mappings and lists counted and their nesting
    measured; other values are left to the type checks. The walk keeps its own stack, so a
    value nested thousands deep (or one that contains itself) is refused, never recursed into.
    """
    # A trail is (parent trail, key): building each child's path string would copy the
    # parent's, which for long keys in wide mappings costs far more than the value itself.
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(value, 0, ())]
    entries = 0
    while stack:
        item, depth, trail = stack.pop()
        if isinstance(item, str):
            if len(item) > limits.max_string_length:
                raise InvalidManifest(
                    _trail_path(field, trail),
                    f"is {len(item)} characters long, more than the limit of {limits.max_string_length}",
                    source=source,
                )
            continue
        if isinstance(item, Mapping):
            children: Iterator[tuple[Any, Any]] = iter(item.items())
        elif isinstance(item, (list, tuple)):
            children = enumerate(item)
        else:
            continue
        depth += 1
        if depth > limits.max_depth:
            raise InvalidManifest(
                field,
                f"nests deeper than the limit of {limits.max_depth} levels "
                f"(at {_trail_path(field, trail, short=True)})",
                source=source,
            )
        entries += len(item)
        if entries > limits.max_entries:
            raise InvalidManifest(
                field, f"holds more than the limit of {limits.max_entries} keys and items", source=source
            )
        for key, child in children:
            if isinstance(key, str) and len(key) > limits.max_string_length:
                raise InvalidManifest(
                    _trail_path(field, trail),
                    f"has a key of {len(key)} characters, more than the limit of {limits.max_string_length}",
                    source=source,
                )
            stack.append((child, depth, (trail, key)))


def _trail_path(field: str, trail: tuple[Any, ...], *, short: bool = False) -> str:
    keys: list[Any] = []
    while trail:
        trail, key = trail
        keys.append(key)
    out = field
    for key in reversed(keys):
        if isinstance(key, int):
            out += f"[{key}]"
        else:
            out += f".{str(key)[:64]}"
        if short and len(out) > 120:
            return out[:120] + "..."
    return out


def _check_document(data: Mapping[str, Any], limits: ManifestLimits, source: str | None) -> None:
    for key, value in data.items():
        check_limits(value, str(key), limits, source=source)


def _check_revision(revision: Any, source: str | None) -> None:
    """``source.revision`` names a version folder (``git-<12 characters>``): a strict pattern."""
    if revision is None or revision == "":  # "" has always meant "not given" (see with_captured)
        return
    problem = revision_problem(revision)
    if problem is not None:
        raise InvalidManifest("source.revision", problem, source=source)


def check_manifest(doc: Manifest, limits: ManifestLimits = DEFAULT_LIMITS) -> Manifest:
    """Hold a :class:`Manifest` built in Python to what :meth:`Manifest.from_dict` enforces on
    documents: ``limits``, the ``source.revision`` pattern and ``environment``'s shape.
    Returns ``doc`` with every URL's credentials removed (:func:`redact_url`)."""
    _check_document(doc.to_dict(), limits, None)
    _check_revision(doc.source.revision, None)
    if doc.environment is not None:
        _check_environment(doc.environment, None)
    _check_run_fields(doc.run, doc.links, doc.refresh, None)
    return _redacted(doc)


def _check_environment(env: Mapping[str, Any], source: str | None) -> None:
    _check_fields(env, _ENVIRONMENT, "environment.", source)
    if env.get("origin") not in _ORIGINS:
        raise InvalidManifest("environment.origin", f"must be one of {', '.join(_ORIGINS)}", source=source)
    if "from" in env and not env["from"]:
        raise InvalidManifest("environment.from", "must not be empty", source=source)


def _redacted(doc: Manifest) -> Manifest:
    """``doc`` without credentials in any URL it holds (a no-op, returning ``doc``, if none)."""
    src = doc.source
    repo_url = redact_url(src.repo_url) if src.repo_url else src.repo_url
    datasets = tuple(
        {**d, "uri": redact_url(d["uri"])} if isinstance(d.get("uri"), str) else d for d in doc.datasets
    )
    steps = tuple(_redacted_code(st) for st in doc.steps)
    if repo_url == src.repo_url and datasets == doc.datasets and steps == doc.steps:
        return doc
    return replace(doc, source=replace(src, repo_url=repo_url), datasets=datasets, steps=steps)


def _redacted_code(step: Mapping[str, Any]) -> Mapping[str, Any]:
    code = step.get("code")
    if not isinstance(code, Mapping):
        return step
    clean = redact_code(code)
    return step if clean is code else {**step, "code": clean}


def redact_code(code: Mapping[str, Any]) -> Mapping[str, Any]:
    """A code reference (``{"repo_url": ..., "path": ..., ...}``) with its ``repo_url``
    passed through :func:`redact_url`; ``code`` itself when nothing was removed.

    >>> redact_code({"repo_url": "https://u:pw@host/r.git", "path": "etl.py"})
    {'repo_url': 'https://host/r.git', 'path': 'etl.py'}
    """
    url = code.get("repo_url")
    if not isinstance(url, str) or (clean := redact_url(url)) == url:
        return code
    return {**code, "repo_url": clean}


def _validate(data: Any, source: str | None, limits: ManifestLimits) -> Manifest:
    if not isinstance(data, Mapping):
        raise InvalidManifest("(document)", "must be a mapping of fields", source=source)
    # Top-level names and types first (it stops at the first unknown field, so it reads at most
    # a few dozen entries), then the limits: every later check may walk a field's content, and
    # must only ever walk a bounded one.
    _check_fields(data, _TOP, "", source)
    _check_document(data, limits, source)
    if data.get("format", MANIFEST_FORMAT) != MANIFEST_FORMAT:
        raise InvalidManifest("format", f"must be {MANIFEST_FORMAT}", source=source)
    src = data.get("source") or {}
    _check_fields(src, _SOURCE, "source.", source)
    _check_revision(src.get("revision"), source)
    dirty_paths = src.get("dirty_paths") or []
    if not all(isinstance(p, str) for p in dirty_paths):
        raise InvalidManifest("source.dirty_paths", "must be a list of paths (strings)", source=source)
    if (src.get("dirty_count") or 0) < 0:
        raise InvalidManifest("source.dirty_count", "must not be negative", source=source)
    environment = data.get("environment")
    if environment is not None:
        _check_environment(environment, source)
    _check_run_fields(data.get("run"), data.get("links"), data.get("refresh"), source)
    job = data.get("training_job") or {}
    _check_fields(job, _JOB, "training_job.", source)
    signing = data.get("model_signing")
    if signing is not None:
        _check_fields(signing, _MODEL_SIGNING, "model_signing.", source)
    metrics = data.get("metrics") or {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidManifest(f"metrics.{key}", "must be a number", source=source)
    deps = data.get("dependencies") or {}
    for key, value in deps.items():
        if not isinstance(value, str):
            raise InvalidManifest(f"dependencies.{key}", "must be a version string", source=source)
    flavor = data.get("flavor")
    if flavor is not None and flavor != "files" and not is_flavor_name(flavor):
        names = ", ".join((*flavor_names(), "files"))
        raise InvalidManifest("flavor", f"must be one of {names}", source=source)
    stages = data.get("stages") or {}
    for key, mode in stages.items():
        if key not in _STAGE_MODES:
            raise InvalidManifest(
                f"stages.{key}",
                f"is not a stage that can be automated ({', '.join(_STAGE_MODES)})",
                source=source,
            )
        if mode not in ("auto", "manual"):
            raise InvalidManifest(f"stages.{key}", "must be 'auto' or 'manual'", source=source)

    try:
        parse_gates(data.get("gates"))
    except InvalidManifest as exc:
        raise InvalidManifest(exc.field, exc.problem, source=source) from exc
    target = data.get("target_alias")
    if target is not None:
        try:
            validate_alias(target)
        except Exception as exc:
            raise InvalidManifest("target_alias", str(exc), source=source) from exc
    for key in ("params", "settings"):
        try:
            json.dumps(data.get(key) or {}, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidManifest(key, f"must hold JSON values only ({exc})", source=source) from exc

    def _s(v: Any) -> str | None:
        if v is None:
            return None
        return v.isoformat() if isinstance(v, datetime) else str(v)

    doc = Manifest(
        params=dict(data.get("params") or {}),
        settings=dict(data.get("settings") or {}),
        metrics={k: float(v) for k, v in metrics.items()},
        source=SourceInfo(
            repo_url=src.get("repo_url"),
            path=src.get("path"),
            revision=src.get("revision"),
            dirty=src.get("dirty"),
            branch=src.get("branch"),
            dirty_paths=tuple(dirty_paths),
            dirty_count=src.get("dirty_count") or len(dirty_paths),
            unknown=src.get("unknown"),
        ),
        algorithm=data.get("algorithm"),
        framework=data.get("framework"),
        framework_version=data.get("framework_version"),
        dependencies=dict(deps),
        python=data.get("python"),
        platform=data.get("platform"),
        training_job=TrainingJob(**{k: _s(job.get(k)) for k in _JOB}),
        flavor=flavor,
        entry=data.get("entry"),
        runs_pickle=data.get("runs_pickle"),
        description=data.get("description") or "",
        signature=data.get("signature"),
        stages=dict(stages),
        gates=tuple(data.get("gates") or ()),
        target_alias=target,
        datasets=tuple(_check_list_of_maps(data.get("datasets"), "datasets", ("role", "uri"), source)),
        steps=tuple(_check_list_of_maps(data.get("steps"), "steps", ("name",), source)),
        environment=dict(environment) if environment is not None else None,
        run=_plain(data["run"]) if data.get("run") is not None else None,
        links=dict(data.get("links") or {}),
        refresh=_plain(data["refresh"]) if data.get("refresh") is not None else None,
        model_signing=dict(signing) if signing is not None else None,
    )
    return _redacted(doc)


def _plain(value: Any) -> Any:
    """``value`` with every mapping a dict and every sequence a list (JSON's shapes)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_SEED_VALUE = "must be an integer seed"


def _check_run_fields(run: Any, links: Any, refresh: Any, source: str | None) -> None:
    """The shapes of ``run``, ``links`` and ``refresh`` (see :class:`Manifest`)."""
    if run is not None:
        if not isinstance(run, Mapping):
            raise InvalidManifest("run", "must be a mapping", source=source)
        _check_fields(run, _RUN, "run.", source)
        command = run.get("command")
        if command is not None and (not command or not all(isinstance(a, str) for a in command)):
            raise InvalidManifest("run.command", "must be a non-empty list of strings (argv)", source=source)
        cwd = run.get("cwd")
        if cwd is not None:
            parts = Path(cwd).parts
            if cwd.startswith(("/", "\\")) or Path(cwd).is_absolute() or ".." in parts or "\0" in cwd:
                raise InvalidManifest(
                    "run.cwd", "must be a relative path inside the repository (no '..')", source=source
                )
        for name, value in (run.get("env") or {}).items():
            if not isinstance(value, str):
                raise InvalidManifest(f"run.env.{name}", "must be a string", source=source)
        for name, value in (run.get("seeds") or {}).items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidManifest(f"run.seeds.{name}", _SEED_VALUE, source=source)
        if not all(isinstance(n, str) for n in run.get("unseeded") or ()):
            raise InvalidManifest("run.unseeded", "must be a list of names", source=source)
    if links is not None:
        if not isinstance(links, Mapping):
            raise InvalidManifest("links", "must be a mapping", source=source)
        for kind, target in links.items():
            if kind not in LINK_KINDS:
                raise InvalidManifest(
                    f"links.{kind}", f"must be one of {', '.join(LINK_KINDS)}", source=source
                )
            if not isinstance(target, str) or not _VERSION_URI.fullmatch(target):
                raise InvalidManifest(
                    f"links.{kind}", "must name a model version (models:/<name>/<number>)", source=source
                )
    if refresh is not None:
        if not isinstance(refresh, Mapping):
            raise InvalidManifest("refresh", "must be a mapping", source=source)
        _check_fields(refresh, _REFRESH, "refresh.", source)
        if not all(isinstance(n, str) and n for n in refresh.get("on_data") or ()):
            raise InvalidManifest("refresh.on_data", "must be a list of data set names", source=source)
        try:  # the scheduler's own reading: a cron line that cannot fire is refused now, not at 3 am
            RefreshDeclaration.from_dict(refresh)
        except InvalidManifest as exc:
            raise InvalidManifest(exc.field, exc.problem, source=source) from exc


# a link names one version by number: an alias would move under it
_VERSION_URI = re.compile(r"models:/[A-Za-z0-9][A-Za-z0-9._-]{0,127}/[1-9][0-9]{0,17}")


def _check_list_of_maps(
    value: Any, field_name: str, required: tuple[str, ...], source: str | None
) -> list[dict[str, Any]]:
    out = []
    for i, item in enumerate(value or ()):
        if not isinstance(item, Mapping):
            raise InvalidManifest(f"{field_name}[{i}]", "must be a mapping", source=source)
        for key in required:
            if not isinstance(item.get(key), str) or not item.get(key):
                raise InvalidManifest(f"{field_name}[{i}].{key}", "is required (a string)", source=source)
        out.append(dict(item))
    return out


def load_manifest_file(path: str | os.PathLike[str], *, limits: ManifestLimits = DEFAULT_LIMITS) -> Manifest:
    """Read and validate a manifest from a YAML or JSON file.

    The file may be at most ``limits.max_file_bytes``; YAML anchors and aliases are refused.

    >>> m = load_manifest_file("manifest.yaml")  # doctest: +SKIP
    """
    p = Path(path)
    return Manifest.from_dict(_read_document(p, limits), source=str(p), limits=limits)


def load_steps_file(
    path: str | os.PathLike[str], *, limits: ManifestLimits = DEFAULT_LIMITS
) -> list[dict[str, Any]]:
    """Processing steps from a YAML or JSON file: a list of steps, or ``{"steps": [...]}``.

    Read with the same bounds as a manifest (size, nesting, no YAML anchors or aliases).

    >>> registry.datasets.register("clean", df, steps=load_steps_file("steps.yaml"))  # doctest: +SKIP
    """
    p = Path(path)
    doc = _read_document(p, limits)
    if isinstance(doc, Mapping) and set(doc) == {"steps"}:
        doc = doc["steps"]
    if not isinstance(doc, list) or not all(isinstance(step, Mapping) for step in doc):
        raise InvalidManifest(
            "steps", "must be a list of steps (mappings with at least a name)", source=str(p)
        )
    return [dict(step) for step in doc]


def _read_document(p: Path, limits: ManifestLimits) -> Any:
    """The parsed YAML or JSON document at ``p``, read within ``limits``."""
    try:
        # Read one byte past the limit, never the whole file: it may be huge or endless.
        with p.open("rb") as fh:
            raw = fh.read(limits.max_file_bytes + 1)
    except FileNotFoundError as exc:
        raise InvalidManifest("(file)", f"does not exist: {p}", source=str(p)) from exc
    except OSError as exc:
        raise InvalidManifest("(file)", f"cannot be read: {exc}", source=str(p)) from exc
    if len(raw) > limits.max_file_bytes:
        raise InvalidManifest(
            "(file)", f"is larger than the limit of {limits.max_file_bytes} bytes", source=str(p)
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidManifest("(file)", f"cannot be read: {exc}", source=str(p)) from exc
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else _load_yaml(text, limits, str(p))
    except InvalidManifest:
        raise
    except RecursionError as exc:  # json's decoder recurses once per nesting level
        raise InvalidManifest(
            "(document)", f"nests deeper than the limit of {limits.max_depth} levels", source=str(p)
        ) from exc
    except Exception as exc:  # yaml and json raise several unrelated types
        raise InvalidManifest(
            "(document)", f"is not valid {p.suffix.lstrip('.') or 'YAML'}: {exc}", source=str(p)
        ) from exc
    return data


def _load_yaml(text: str, limits: ManifestLimits, source: str) -> Any:
    """Parse YAML that uses no anchor or alias and nests no deeper than ``limits`` allow.

    The event stream is read first (libyaml's parser keeps its own stack, so this is safe
    for any input) and refused at the first anchor, alias or level too many; only a document
    that passes is composed, which is recursive and, with aliases, could be exponential.
    """
    import yaml  # only YAML manifests need it

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    # Nesting inside a top-level field, counted as check_limits counts it: the document's
    # own mapping is one level more.
    deepest = limits.max_depth + 1
    depth = 0
    root_is_mapping = False
    top_nodes = 0  # complete nodes directly in the root mapping: keys and values alternate
    key = ""  # the top-level field being read, to name it in a refusal
    for event in yaml.parse(text, Loader=loader):
        in_field = root_is_mapping and (depth > 1 or top_nodes % 2 == 1)
        where = key if in_field else "(document)"
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise InvalidManifest(
                where,
                f"uses a YAML anchor or alias (line {line}): manifests may not, "
                "so that a small file cannot expand into a huge document",
                source=source,
            )
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if depth == 0:
                root_is_mapping = isinstance(event, yaml.MappingStartEvent)
            depth += 1
            if depth > deepest:
                raise InvalidManifest(
                    where,
                    f"nests deeper than the limit of {limits.max_depth} levels (line {line})",
                    source=source,
                )
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
            if depth == 1:
                top_nodes += 1
        elif isinstance(event, yaml.ScalarEvent) and depth == 1:
            if top_nodes % 2 == 0:
                key = event.value[:200]
            top_nodes += 1
    return yaml.load(text, Loader=loader)  # a safe loader, on a document checked above


# ---------------------------------------------------------------- redaction

# Query (and fragment) parameters that carry a credential, compared case-insensitively:
# tokens of git hosts and APIs, passwords, and the signatures of pre-signed S3, GCS and
# Azure URLs (``sig`` is Azure's SAS signature).
_SECRET_PARAMS = frozenset(
    {
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "private_token",
        "auth",
        "authorization",
        "password",
        "passwd",
        "pwd",
        "secret",
        "client_secret",
        "key",
        "api_key",
        "apikey",
        "sig",
        "signature",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "x-goog-signature",
        "x-goog-credential",
    }
)
_SSH_SCHEMES = frozenset({"ssh", "git+ssh", "ssh+git"})
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
# git's scp-like syntax, ``user@host:path``: the host is what follows the last "@".
_SCP_LIKE = re.compile(r"(?P<user>[^/]+)@(?P<host>[^@:/]+):(?P<path>.*)", re.DOTALL)


def redact_url(url: str) -> str:
    """``url`` without the credentials it may carry; anything else is returned unchanged.

    Removed: the user information of a URL (``https://alice:ghp_x@host/...`` and
    ``https://TOKEN@host/...`` become ``https://host/...``; every scheme but ssh), a password
    on ssh (``ssh://git:pw@host/...`` keeps ``git@``), and query or fragment parameters that
    hold a secret (``token``, ``access_token``, ``private_token``, ``auth``, ``password``,
    ``key``, ``api_key``, ``sig``, ``signature``, ``X-Amz-Signature``, ``X-Amz-Credential``,
    ``X-Amz-Security-Token`` and a few more, in any case). On ssh, and in git's scp-like
    ``git@host:org/repo.git``, a user name alone is kept: ssh authenticates with a key, so
    the name is an account such as ``git``, not a secret. On every other scheme a bare user
    name is removed too, since hosts accept a token in its place.

    >>> redact_url("https://alice:ghp_secret@github.com/org/repo.git")
    'https://github.com/org/repo.git'
    >>> redact_url("https://gitlab.example.com/org/repo.git?private_token=abc&ref=main")
    'https://gitlab.example.com/org/repo.git?ref=main'
    >>> redact_url("git@github.com:org/repo.git")
    'git@github.com:org/repo.git'
    """
    scheme, sep, rest = url.partition("://")
    if sep and _SCHEME.fullmatch(scheme):
        cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        authority, tail = rest[:cut], rest[cut:]
        userinfo, at, host = authority.rpartition("@")
        if at:
            user = userinfo.partition(":")[0] if scheme.lower() in _SSH_SCHEMES else ""
            authority = f"{user}@{host}" if user else host
        return f"{scheme}://{authority}{_without_secret_params(tail)}"
    scp = _SCP_LIKE.fullmatch(url)
    if scp is not None:
        user = scp["user"].partition(":")[0]
        return f"{user}@{scp['host']}:{_without_secret_params(scp['path'])}"
    return url


def _without_secret_params(tail: str) -> str:
    """A URL's path, query and fragment without the secret parameters of query and fragment."""
    before, hashmark, fragment = tail.partition("#")
    path, question, query = before.partition("?")
    if question and (kept := _kept_params(query)) != query:
        before = f"{path}?{kept}" if kept else path
    if hashmark and (kept := _kept_params(fragment)) != fragment:
        fragment = kept
        hashmark = "#" if kept else ""
    return f"{before}{hashmark}{fragment}"


def _kept_params(params: str) -> str:
    parts = params.split("&")
    kept = [p for p in parts if unquote_plus(p.partition("=")[0]).strip().lower() not in _SECRET_PARAMS]
    # Rebuilt only when something went, so a URL without secrets is stored byte for byte.
    return params if len(kept) == len(parts) else "&".join(kept)


# ---------------------------------------------------------------- capture

_DIRTY_PATHS_SHOWN = 50  # dirty_paths lists at most this many; dirty_count counts them all


def _git(args: list[str], cwd: str) -> str | None:
    # subprocess (with locale, selectors, signal): only asking git needs it, not `import modelledger`
    import subprocess

    try:
        out = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            encoding="utf-8",
            errors="replace",  # a path that is not UTF-8 must not make provenance capture fail
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def running_script() -> tuple[str | None, str | None]:
    """(the script this process runs, or None and why it cannot be named: ``"run under
    pytest"``); both None for ``python -c``, standard input or the REPL (see
    :func:`capture_source`)."""
    return _running_script()


def checkout_top(where: str) -> str | None:
    """The top-level folder of the git checkout holding the folder ``where``, or None."""
    found = _checkout(where)
    return found[0] if found is not None else None


def capture_source(*, cwd: str | os.PathLike[str] | None = None, script: str | None = None) -> SourceInfo:
    """Describe the git checkout that holds ``script`` (default: the running script).

    ``script`` may also be a folder (the training code's directory). Outside a git
    repository every field is ``None``. The remote URL is recorded without credentials
    (:func:`redact_url`). ``dirty`` is true when a tracked file is changed or ``script``
    itself is untracked or ignored (for a folder: the folder itself, not files inside it);
    ``dirty_paths`` says which.

    With neither ``script`` nor ``cwd``, the running script is ``__main__``'s file. When
    that is a runner installed with Python or a package (``python -m cProfile``, ``profile``,
    ``trace``, ``pdb``, pytest, IPython, a Jupyter kernel: any ``__main__`` in the standard
    library, site-packages or the interpreter's scripts folder), the script it runs is
    ``sys.argv[0]`` if that is a ``.py`` file of the user's; otherwise nothing is recorded
    but ``unknown``, which says why: never the runner's file or repository. Code given with
    ``python -c`` or on standard input records the current folder's checkout, without a path.

    >>> capture_source(script="training/train.py").dirty  # doctest: +SKIP
    False
    """
    if script is None:
        script, unknown = _running_script()
        if unknown is not None and not cwd:
            return SourceInfo(unknown=unknown)
    if cwd:
        base = Path(cwd)
    elif script and Path(script).is_dir():
        base = Path(script).resolve()
    else:
        base = Path(script).resolve().parent if script else Path.cwd()
    where = str(base)
    checkout = _checkout(where)
    if checkout is None:
        return SourceInfo()
    top, remote, git_dir, common_dir = checkout
    rel: str | None = None
    if script:
        try:
            rel = Path(script).resolve().relative_to(Path(top).resolve()).as_posix()
        except ValueError:
            rel = None
        if rel == ".":
            rel = None
    key = (where, rel)
    with _captures_lock:
        kept = _captures.get(key)
    if isinstance(kept, _Capture) and _stamp(kept.git, kept.files) == kept.stamp:
        return kept.found
    git = (git_dir, common_dir)
    refs = _stamp(git, ())  # HEAD, refs, config, index: what can make a checkout watchable
    # Watching a checkout costs a `git ls-files` on top of the status: worth it only from the
    # second capture in a process (a script that registers once pays for one git process),
    # and not again for one found unwatchable until its refs or index change.
    watch = None
    if kept is not None and not (isinstance(kept, _Unwatched) and kept.refs == refs):
        watch = _watched(top, git_dir, common_dir, rel)
    before = _stamp(*watch) if watch is not None else None
    started = time.time_ns()
    found = _capture_status(where, top, remote, rel)
    now_kept: _Capture | _Unwatched
    if kept is None:
        now_kept = _Unwatched(refs=None)  # seen once: watch from the next capture on
    elif watch is None or before is None or found.revision is None:
        now_kept = _Unwatched(refs=refs)  # an untracked script, a submodule...: until refs change
    elif before[-1] >= started - _RACY_NS or _stamp(*watch) != before:
        now_kept = _Unwatched(refs=None)  # a file too young, or changed while git ran: next time
    else:
        now_kept = _Capture(git=watch[0], files=watch[1], stamp=before, found=found)
    with _captures_lock:
        if len(_captures) >= _CAPTURES_KEPT and key not in _captures:
            _captures.clear()
        _captures[key] = now_kept
    return found


def _capture_status(where: str, top: str, remote: str | None, rel: str | None) -> SourceInfo:
    """The source as one ``git status`` describes it (see :func:`capture_source`)."""
    # One call per capture for what changes between commits: HEAD, branch, changed files,
    # and whether the script is untracked or ignored. Listing untracked and ignored paths
    # (folders collapsed) costs a directory walk, yet less than a second git process in the
    # small repositories training code lives in; -z keeps paths unquoted.
    status = _git(
        ["status", "--porcelain=v2", "--branch", "-z", "--untracked-files=normal", "--ignored=matching"],
        where,
    )
    if status is None:
        return SourceInfo()
    revision, branch, dirty_paths = _parse_status(status, rel)
    repo_url = remote or Path(top).as_uri()
    shown = tuple(dirty_paths[:_DIRTY_PATHS_SHOWN])
    if revision in (None, "(initial)"):
        return SourceInfo(
            repo_url=repo_url, dirty=bool(dirty_paths), dirty_paths=shown, dirty_count=len(dirty_paths)
        )
    return SourceInfo(
        repo_url=repo_url,
        path=rel,
        revision=revision,
        dirty=bool(dirty_paths),
        branch=None if branch in (None, "(detached)") else branch,
        dirty_paths=shown,
        dirty_count=len(dirty_paths),
    )


# ---------------------------------------------------------------- reusing a capture
#
# A registration loop captures the same checkout again and again. What ``git status`` said is
# kept per (folder, script) with a stamp of everything its answer depends on: HEAD (its text),
# the ref it names, packed-refs, the config and the index (their stat), and the stat of every
# tracked file, which is what git itself compares to find changed files. Any difference runs
# git again. Kept only when it is safe: the script is tracked (whether an untracked file is
# ignored depends on files that are not stamped), no submodule (its own checkout is not
# stamped), nothing stamped changed while git ran, and nothing stamped is younger than
# _RACY_NS (a file written within the file system's timestamp resolution of the stamp could
# change again without its stat changing: git's "racy clean" problem; git writes its own
# files by renaming a new one into place, so their inode changes with every write).

_RACY_NS = 2_000_000_000  # the coarsest common mtime resolution (FAT: 2 s)
_WATCHED_FILES = 20_000  # beyond this, stat-ing every file costs about what git status does
_CAPTURES_KEPT = 64


@dataclass(frozen=True, slots=True)
class _Unwatched:
    refs: tuple[Any, ...] | None  # the refs' stamp when found unwatchable; None: try again


@dataclass(frozen=True, slots=True)
class _Capture:
    git: tuple[str, str]  # the git folder and the common git folder (shared by worktrees)
    files: tuple[str, ...]  # every tracked file, absolute
    stamp: tuple[Any, ...]
    found: SourceInfo


_captures: dict[tuple[str, str | None], _Capture | _Unwatched] = {}
_captures_lock = threading.Lock()


def _watched(
    top: str, git_dir: str, common_dir: str, rel: str | None
) -> tuple[tuple[str, str], tuple[str, ...]] | None:
    """(git folders, tracked files) to stamp, or None when a capture must not be reused."""
    listing = _git(["ls-files", "-z", "--stage"], top)
    if listing is None or "\ufffd" in listing:  # a path that is not UTF-8 cannot be stat-ed back
        return None
    paths: list[str] = []
    for entry in listing.split("\0"):
        if not entry:
            continue
        meta, _, path = entry.partition("\t")
        if meta.startswith("160000"):  # a submodule: its changes are not in our stamp
            return None
        paths.append(path)
    if len(paths) > _WATCHED_FILES:
        return None
    if rel is not None and rel not in paths and not any(p.startswith(f"{rel}/") for p in paths):
        return None  # an untracked script: ignored or not depends on files not stamped
    return (git_dir, common_dir), tuple(os.path.join(top, p) for p in dict.fromkeys(paths))


def _stamp(git: tuple[str, str], files: tuple[str, ...]) -> tuple[Any, ...]:
    """What a capture depends on, as stat results; the last item is the newest tracked file's mtime."""
    git_dir, common_dir = git
    try:
        head = Path(git_dir, "HEAD").read_text(errors="replace").strip()
    except OSError:
        head = ""
    watched = [
        os.path.join(git_dir, "index"),
        os.path.join(common_dir, "packed-refs"),
        os.path.join(common_dir, "config"),
        os.path.join(common_dir, "reftable", "tables.list"),
    ]
    if head.startswith("ref: "):
        watched.append(os.path.join(common_dir, head[5:]))
        watched.append(os.path.join(git_dir, head[5:]))  # a worktree's own refs
    stats: list[tuple[int, int, int, int, int] | None] = []
    newest = 0
    for n, path in enumerate((*watched, *files)):
        try:
            st = os.lstat(path)
        except OSError:
            stats.append(None)
            continue
        stats.append((st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_mode))
        if n >= len(watched):  # git replaces its own files (a new inode each time): never racy
            newest = max(newest, st.st_mtime_ns)
    return (head, *stats, newest)


def _parse_status(status: str, script: str | None) -> tuple[str | None, str | None, list[str]]:
    """(HEAD, branch, the paths that make the checkout dirty) from ``git status -z --porcelain=v2``.

    Changed tracked files count, and ``script`` (relative to the root) when it is untracked or
    ignored itself or lies in a folder that is; other untracked or ignored files do not (they
    are outputs, data, caches). ``script`` comes first in the list.
    """
    revision = branch = None
    changed: list[str] = []
    script_untracked = False
    fields = iter(status.split("\0"))
    for entry in fields:
        kind = entry[:2]
        if entry.startswith("# branch.oid "):
            revision = entry.split(" ", 2)[2]
        elif entry.startswith("# branch.head "):
            branch = entry.split(" ", 2)[2]
        elif kind == "1 ":  # ordinary change: 8 fields, then the path
            changed.append(entry.split(" ", 8)[-1])
        elif kind == "2 ":  # rename or copy: 9 fields, the path, then the original path
            changed.append(entry.split(" ", 9)[-1])
            next(fields, None)
        elif kind == "u ":  # unmerged: 10 fields, then the path
            changed.append(entry.split(" ", 10)[-1])
        elif kind in ("? ", "! ") and script is not None:
            path = entry[2:]
            if path == script or (path.endswith("/") and f"{script}/".startswith(path)):
                script_untracked = True
    if script is not None and (script_untracked or script in changed):
        changed = [script, *(p for p in changed if p != script)]
    return revision, branch, changed


def _running_script() -> tuple[str | None, str | None]:
    """(the script this process runs, or None and why it cannot be named).

    Both None for ``python -c``, standard input or the plain REPL: there is no runner to
    mistake for the code, and the current folder's checkout is recorded, as it always was.
    """
    main = sys.modules.get("__main__")
    file = getattr(main, "__file__", None)
    if isinstance(file, str) and file and not _installed(file):
        return file, None
    # __main__ is a runner (a profiler, debugger, test runner or notebook kernel) or has no
    # file: the profilers and trace leave the script they run in sys.argv[0].
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0.endswith(".py") and os.path.isfile(argv0) and not _installed(argv0):
        return argv0, None
    # pytest sets the variable while a test runs, in its own process and in pytest-xdist's
    # workers (whose __main__ has no file); a child process inherits it, but not pytest.
    if os.environ.get("PYTEST_CURRENT_TEST") and "_pytest" in sys.modules:
        return None, "run under pytest"
    if "ipykernel" in sys.modules:
        return None, "run in a Jupyter kernel"
    if "IPython" in sys.modules and not file:
        return None, "run in IPython"
    if not file:
        return None, None
    spec_name = getattr(getattr(main, "__spec__", None), "name", None)
    if isinstance(spec_name, str) and spec_name:
        return None, f"run under {spec_name.removesuffix('.__main__')}"
    return None, f"run under {Path(file).stem}"


def _installed(path: str) -> bool:
    """Whether ``path`` belongs to the interpreter or an installed package, not to user code."""
    real = os.path.realpath(path)
    if {"site-packages", "dist-packages"} & set(Path(real).parts):
        return True
    return any(real == root or real.startswith(root + os.sep) for root in _install_roots())


@lru_cache(maxsize=1)
def _install_roots() -> tuple[str, ...]:
    """The standard library, site-packages and scripts folders of this interpreter and its base."""
    roots: set[str] = set()
    base = {
        "base": sys.base_prefix,
        "platbase": sys.base_exec_prefix,
        "installed_base": sys.base_prefix,
        "installed_platbase": sys.base_exec_prefix,
    }
    keys = ("stdlib", "platstdlib", "purelib", "platlib", "scripts")
    for paths in (sysconfig.get_paths(), sysconfig.get_paths(vars=base)):
        roots.update(paths[k] for k in keys if k in paths)
    roots.update(getattr(site, "getsitepackages", list)())
    if site.ENABLE_USER_SITE and isinstance(site.USER_SITE, str):
        roots.add(site.USER_SITE)
    return tuple(sorted({os.path.realpath(r) for r in roots if r}))


@lru_cache(maxsize=64)
def _checkout(where: str) -> tuple[str, str | None, str, str] | None:
    """(top-level folder, origin URL without credentials, git folder, common git folder) of
    the checkout holding ``where``; these rarely change."""
    found = _git(["rev-parse", "--show-toplevel", "--absolute-git-dir", "--git-common-dir"], where)
    lines = found.splitlines() if found else []
    if len(lines) != 3 or not lines[0]:
        return None
    top, git_dir, common_dir = lines
    remote = _git(["config", "--get", "remote.origin.url"], where)
    # --git-common-dir is relative to ``where`` unless it is elsewhere
    common_dir = os.path.normpath(os.path.join(where, common_dir))
    return top, redact_url(remote) if remote else remote, git_dir, common_dir


@lru_cache(maxsize=1)
def _dependencies() -> tuple[tuple[str, str], ...]:
    # importlib.metadata pulls in email, zipfile and csv: a third of `import modelledger`
    from importlib.metadata import distributions

    found: dict[str, str] = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if name:
            found[name.lower()] = dist.version
    return tuple(sorted(found.items()))


def capture_dependencies() -> dict[str, str]:
    """Every installed distribution and its version (read once per process)."""
    return dict(_dependencies())


# ---------------------------------------------------------------- a folder's declared environment

# Looked for at the top of an artefact folder, in this order: lock files pin every package,
# so they come before requirements files, which may list only direct dependencies.
_ENVIRONMENT_FILES = (
    "pylock.toml",
    "uv.lock",
    "poetry.lock",
    "Pipfile.lock",
    "requirements.txt",
    "environment.yml",
    "environment.yaml",
)
# Lock files of large projects outgrow a manifest's limit (they list hashes for every wheel).
_ENVIRONMENT_FILE_BYTES = 32 * 1024 * 1024
# name==version or name===version, with optional extras, then nothing but a marker or options.
_PIN = re.compile(
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*===?\s*(?P<version>[^\s;,*]+)\s*(?:[;\s].*)?",
    re.DOTALL,
)
# conda's name=version[=build] (also name==version), after an optional channel::
_CONDA_PIN = re.compile(
    r"(?:[^:\s]+::)?(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*==?\s*(?P<version>[^\s=*,]+)(?:=\S+)?"
)


def _read_environment_file(folder: Path, limits: ManifestLimits) -> tuple[str, dict[str, str]] | None:
    """(file name, pinned package versions) of the environment ``folder`` declares, or None.

    The first of :data:`_ENVIRONMENT_FILES` present at the folder's top level wins, then
    any other ``requirements*.txt`` (by name). Only exact pins are recorded
    (``name==version``; a range says nothing about what was installed); names are lower-cased
    as :func:`capture_dependencies` records them. A file that cannot be parsed is refused
    with :class:`InvalidManifest`, rather than silently recording another environment.
    """
    try:
        names = {p.name for p in folder.iterdir() if p.is_file()}
    except OSError:
        return None
    extra = sorted(n for n in names if n.startswith("requirements") and n.endswith(".txt"))
    readable = (n for n in (*_ENVIRONMENT_FILES, *extra) if not _is_toml(n) or _toml_loads() is not None)
    name = next((n for n in readable if n in names), None)
    if name is None:
        return None
    path = folder / name
    try:
        with path.open("rb") as fh:
            raw = fh.read(_ENVIRONMENT_FILE_BYTES + 1)
        if len(raw) > _ENVIRONMENT_FILE_BYTES:
            raise ValueError(f"it is larger than {_ENVIRONMENT_FILE_BYTES} bytes")
        deps = _parse_environment(name, raw.decode("utf-8"), limits, str(path))
    except InvalidManifest:
        raise
    except (OSError, ValueError, RecursionError, TypeError, AttributeError) as exc:
        # ValueError covers UnicodeDecodeError, json's and tomllib's errors
        raise InvalidManifest("environment", f"cannot be read from {name}: {exc}", source=str(path)) from exc
    check_limits(deps, "dependencies", limits, source=str(path))
    return name, deps


def _parse_environment(name: str, text: str, limits: ManifestLimits, source: str) -> dict[str, str]:
    found: dict[str, str] = {}
    if name.endswith(".txt"):
        for line in _requirement_lines(text):
            _add_pin(found, _PIN.fullmatch(line))
    elif name == "Pipfile.lock":
        for pkg, spec in (json.loads(text).get("default") or {}).items():
            version = spec.get("version") if isinstance(spec, Mapping) else None
            if isinstance(version, str) and version.startswith("=="):
                found[str(pkg).lower()] = version[2:]
    elif name.startswith("environment."):
        doc = _load_yaml(text, limits, source)
        for item in (doc or {}).get("dependencies") or ():
            if isinstance(item, str):
                _add_pin(found, _CONDA_PIN.fullmatch(item.strip()))
            elif isinstance(item, Mapping):  # {"pip": [requirement lines]}
                for line in item.get("pip") or ():
                    _add_pin(found, _PIN.fullmatch(str(line).strip()))
    else:  # pylock.toml lists [[packages]]; uv.lock and poetry.lock list [[package]]
        loads = _toml_loads()
        assert loads is not None  # a TOML file is only chosen when it can be read
        doc = loads(text)
        for pkg in doc.get("packages" if name == "pylock.toml" else "package") or ():
            if isinstance(pkg, Mapping) and isinstance(pkg.get("name"), str):
                version = pkg.get("version")
                if isinstance(version, str):
                    found[pkg["name"].lower()] = version
    return found


def _is_toml(name: str) -> bool:
    return name in ("pylock.toml", "uv.lock", "poetry.lock")


@lru_cache(maxsize=1)
def _toml_loads() -> Callable[[str], dict[str, Any]] | None:
    """A TOML parser: the standard library's from Python 3.11, else tomli if installed.

    Without one (Python 3.10 without tomli) TOML lock files are passed over: the next file
    found, or the registering machine's label, is still true.
    """
    try:
        import tomllib  # only folders with a TOML lock file need it; absent before Python 3.11

        return tomllib.loads
    except ImportError:
        pass
    try:
        import tomli  # the same parser, installed separately on Python 3.10

        loads: Callable[[str], dict[str, Any]] = tomli.loads
        return loads
    except ImportError:
        return None


def _requirement_lines(text: str) -> Iterator[str]:
    """Logical lines of a requirements file: continuations joined, comments and options dropped."""
    for line in re.sub(r"\\\r?\n", " ", text).splitlines():
        line = re.sub(r"(^|\s)#.*", "", line).strip()
        if line and not line.startswith("-"):
            yield line


def _add_pin(found: dict[str, str], match: re.Match[str] | None) -> None:
    if match is not None:
        found[match["name"].lower()] = match["version"]
