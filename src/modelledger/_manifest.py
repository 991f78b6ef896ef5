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
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from ._identifiers import revision_problem, validate_alias
from ._lifecycle import parse_gates
from .errors import InvalidInput, InvalidManifest

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
    "load_manifest_file",
    "load_steps_file",
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
    """Where the training script lives in version control."""

    repo_url: str | None = None
    path: str | None = None
    revision: str | None = None
    dirty: bool | None = None
    branch: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_url": self.repo_url,
            "path": self.path,
            "revision": self.revision,
            "dirty": self.dirty,
            "branch": self.branch,
        }


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
    """Everything recorded about how a version was built. Frozen at registration."""

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
    description: str = ""
    signature: Mapping[str, Any] | None = None
    stages: Mapping[str, str] = field(default_factory=dict)  # stage -> "auto" | "manual"
    gates: tuple[Any, ...] = ()  # validation gates, e.g. "auc >= 0.80 on holdout"
    target_alias: str | None = None  # where `deploy` points by default (production)
    datasets: tuple[Mapping[str, Any], ...] = ()  # {role, uri, digest, rows} per data set used
    steps: tuple[Mapping[str, Any], ...] = ()  # processing steps inside the model (from its pipeline)

    def to_dict(self) -> dict[str, Any]:
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
            "description": self.description,
            "signature": dict(self.signature) if self.signature else None,
            "stages": dict(self.stages),
            "gates": list(self.gates),
            "target_alias": self.target_alias,
            "datasets": [dict(d) for d in self.datasets],
            "steps": [dict(st) for st in self.steps],
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
    ) -> Manifest:
        """Fill in what was not given: git source, Python, platform, dependency versions."""
        src = self.source
        # A source given explicitly describes another checkout: never mix in fields
        # from the repository this process happens to run in.
        explicit = bool(src.repo_url or src.revision)
        if capture_git and not explicit:
            found = capture_source(cwd=cwd, script=script)
            src = SourceInfo(
                repo_url=src.repo_url or found.repo_url,
                path=src.path or found.path,
                revision=src.revision or found.revision,
                dirty=src.dirty if src.dirty is not None else found.dirty,
                branch=src.branch or found.branch,
            )
        deps = dict(capture_dependencies())
        deps.update(self.dependencies)
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
        )


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
    "description": (str,),
    "signature": (dict,),
    "stages": (dict,),
    "gates": (list,),
    "target_alias": (str,),
    "datasets": (list,),
    "steps": (list,),
}
_SOURCE = {"repo_url": (str,), "path": (str,), "revision": (str,), "dirty": (bool,), "branch": (str,)}
_JOB = {"id": (str, int), "started_at": (str, datetime), "ended_at": (str, datetime), "host": (str,)}
_FLAVORS = {"sklearn", "python", "files"}
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
    documents: ``limits`` and the ``source.revision`` pattern. Returns ``doc``."""
    _check_document(doc.to_dict(), limits, None)
    _check_revision(doc.source.revision, None)
    return doc


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
    job = data.get("training_job") or {}
    _check_fields(job, _JOB, "training_job.", source)
    metrics = data.get("metrics") or {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidManifest(f"metrics.{key}", "must be a number", source=source)
    deps = data.get("dependencies") or {}
    for key, value in deps.items():
        if not isinstance(value, str):
            raise InvalidManifest(f"dependencies.{key}", "must be a version string", source=source)
    flavor = data.get("flavor")
    if flavor is not None and flavor not in _FLAVORS:
        raise InvalidManifest("flavor", f"must be one of {', '.join(sorted(_FLAVORS))}", source=source)
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

    return Manifest(
        params=dict(data.get("params") or {}),
        settings=dict(data.get("settings") or {}),
        metrics={k: float(v) for k, v in metrics.items()},
        source=SourceInfo(**{k: src.get(k) for k in _SOURCE}),
        algorithm=data.get("algorithm"),
        framework=data.get("framework"),
        framework_version=data.get("framework_version"),
        dependencies=dict(deps),
        python=data.get("python"),
        platform=data.get("platform"),
        training_job=TrainingJob(**{k: _s(job.get(k)) for k in _JOB}),
        flavor=flavor,
        entry=data.get("entry"),
        description=data.get("description") or "",
        signature=data.get("signature"),
        stages=dict(stages),
        gates=tuple(data.get("gates") or ()),
        target_alias=target,
        datasets=tuple(_check_list_of_maps(data.get("datasets"), "datasets", ("role", "uri"), source)),
        steps=tuple(_check_list_of_maps(data.get("steps"), "steps", ("name",), source)),
    )


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


# ---------------------------------------------------------------- capture


def _git(args: list[str], cwd: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def capture_source(*, cwd: str | os.PathLike[str] | None = None, script: str | None = None) -> SourceInfo:
    """Describe the git checkout that holds ``script`` (default: the running script).

    ``script`` may also be a folder (the training code's directory). Outside a git
    repository every field is ``None``.
    """
    if script is None:
        main = sys.modules.get("__main__")
        script = getattr(main, "__file__", None)
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
    top, remote = checkout
    # One call per registration for what changes between commits: HEAD, branch, dirty files.
    status = _git(["status", "--porcelain=v2", "--branch", "--untracked-files=no"], where)
    if status is None:
        return SourceInfo()
    revision = branch = None
    dirty = False
    for line in status.splitlines():
        if line.startswith("# branch.oid "):
            revision = line.split(" ", 2)[2]
        elif line.startswith("# branch.head "):
            branch = line.split(" ", 2)[2]
        elif line and not line.startswith("#"):
            dirty = True
    if revision in (None, "(initial)"):
        return SourceInfo(repo_url=remote or Path(top).as_uri(), dirty=dirty)
    rel: str | None = None
    if script:
        try:
            rel = Path(script).resolve().relative_to(Path(top).resolve()).as_posix()
        except ValueError:
            rel = None
        if rel == ".":
            rel = None
    return SourceInfo(
        repo_url=remote or Path(top).as_uri(),
        path=rel,
        revision=revision,
        dirty=dirty,
        branch=None if branch in (None, "(detached)") else branch,
    )


@lru_cache(maxsize=64)
def _checkout(where: str) -> tuple[str, str | None] | None:
    """(top-level folder, origin URL) of the checkout holding ``where``; these rarely change."""
    top = _git(["rev-parse", "--show-toplevel"], where)
    if not top:
        return None
    return top, _git(["config", "--get", "remote.origin.url"], where)


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
