"""A way in from MLflow: copy an MLflow model registry into this one (``import_mlflow``).

The importer is a client of the public :class:`~modelledger.Registry` verbs (``create_model``,
``update_model``, ``register``, ``set_version_tags``, ``set_alias``): every version it
writes is an ordinary registration, planned and written in one step, held to the registry's
own governance. What it adds is the reading of MLflow:

- **What is copied.** Registered models (description, tags), their versions (description,
  tags, the legacy stage as the version tag ``mlflow.stage``, the MLflow aliases pointing at
  each as ``mlflow.aliases``), each version's source run (params, metrics, tags, the git
  commit in ``mlflow.source.git.commit``, source name, entry point, start and end times) and
  its artefacts: the MLflow model folder. The manifest's ``settings.mlflow`` records where it
  came from: tracking URI (credentials removed), name, version, ``models:/<name>/<version>``,
  the version's source (``models:/m-...`` or ``runs:/...``), run id, experiment id, logged
  model id. Aliases become aliases (see :func:`map_alias`).
- **Verified.** MLflow records no digest for artefacts. Each file the artefact listing names
  is downloaded, its size must equal the listing's ``file_size``, it is read to its end, and
  the model must load back through its modelledger flavor from those bytes before anything is
  registered; from then on the registry's sha256 of every file seals exactly the bytes MLflow
  served.
- **Idempotent.** A version is imported once: the key is the MLflow model name, version and
  run id in ``settings.mlflow`` of a registered manifest (read with one listing of the target
  model's versions). A rerun registers only what is new and brings tags and aliases of
  versions already imported up to date; it never deletes anything.
- **Stages are facts, not decisions.** An MLflow stage (``Staging``, ``Production``,
  ``Archived``) is recorded, never acted on: an imported version goes as far as the registry's
  policy takes any registration (by default ``validated``); approving and deploying it is the
  registry's own governance. A protected alias (``production``, ``rollback`` or one the policy
  protects) is not set: it is reported as skipped.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from ._identifiers import revision_problem, validate_alias, validate_name
from ._manifest import redact_url
from .errors import (
    ImportInterrupted,
    InvalidInput,
    MissingDependency,
    ModelLedgerError,
    NotFound,
    PermissionDenied,
    StorageError,
)
from .flavors import get_flavor
from .flavors.mlflow import INDEX, write_index

if TYPE_CHECKING:
    from ._domain import ModelVersion
    from ._registry import Registry

__all__ = [
    "MLFLOW_FLAVORS",
    "ImportOutcome",
    "ImportProgress",
    "MlflowImport",
    "import_mlflow",
    "map_alias",
]

Kind = Literal["model", "version", "alias"]
Status = Literal["imported", "skipped", "failed"]
KINDS: tuple[Kind, ...] = ("model", "version", "alias")
STATUSES: tuple[Status, ...] = ("imported", "skipped", "failed")

ImportProgress = Callable[[int, int, str], None]
"""``progress(versions_done, versions_total, what)``: called before each version and at the end."""

MLFLOW_FLAVORS: Mapping[str, tuple[str, str]] = {
    # MLmodel flavor -> (modelledger flavor, the MLmodel key naming its data file)
    "sklearn": ("sklearn", "pickled_model"),
    "xgboost": ("xgboost", "data"),
    "lightgbm": ("lightgbm", "data"),
    "catboost": ("catboost", "data"),
    "onnx": ("onnx", "data"),
    "pytorch": ("pytorch", "model_data"),
}
"""MLflow flavors that become a native modelledger flavor, most specific first. A model with
none of them (or whose native flavor this installation lacks) but with ``python_function``
becomes flavor ``mlflow`` (loaded by ``mlflow.pyfunc``)."""

_PICKLE_FORMATS = ("pickle", "cloudpickle")  # MLflow's sklearn formats plain pickle.loads reads
_SKIPPED_RUN_TAGS = ("mlflow.log-model.history",)  # bulky JSON that repeats the MLmodel files
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)\s*$")


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    """What became of one MLflow model, version or alias.

    ``source`` names it in MLflow (``churn``, ``models:/churn/3``, ``churn@Champion``),
    ``target`` in this registry (``churn``, ``models:/churn/4``, ``churn@champion``) when
    there is one; ``reason`` says why it was skipped or failed, or notes a mapping.
    """

    kind: Kind
    source: str
    status: Status
    target: str | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "status": self.status,
            "target": self.target,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImportOutcome:
        return cls(
            kind=data["kind"],
            source=str(data["source"]),
            status=data["status"],
            target=data.get("target"),
            reason=str(data.get("reason") or ""),
        )


@dataclass(frozen=True, slots=True)
class MlflowImport:
    """The summary of one import: every outcome, in the order they happened.

    ``interrupted`` is set (the reason) when MLflow went away part-way: what is listed was
    done, the rest was not started, and a rerun finishes it.

    >>> summary = modelledger.import_mlflow(registry, "sqlite:///mlflow.db")  # doctest: +SKIP
    >>> summary.count("version", "imported")  # doctest: +SKIP
    12
    """

    tracking_uri: str
    outcomes: tuple[ImportOutcome, ...] = ()
    interrupted: str | None = None

    def count(self, kind: Kind, status: Status) -> int:
        return sum(1 for o in self.outcomes if o.kind == kind and o.status == status)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{kind: {status: n}}`` for every kind and status (zeros included)."""
        return {k: {s: self.count(k, s) for s in STATUSES} for k in KINDS}

    @property
    def ok(self) -> bool:
        """True when nothing failed and the import ran to its end."""
        return self.interrupted is None and not any(o.status == "failed" for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tracking_uri": self.tracking_uri,
            "counts": self.counts(),
            "ok": self.ok,
            "interrupted": self.interrupted,
            "outcomes": [o.to_dict() for o in self.outcomes],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MlflowImport:
        return cls(
            tracking_uri=str(data["tracking_uri"]),
            outcomes=tuple(ImportOutcome.from_dict(o) for o in data.get("outcomes") or ()),
            interrupted=data.get("interrupted"),
        )


def map_alias(alias: str) -> str:
    """The modelledger alias for an MLflow alias, or :class:`InvalidInput` saying why none.

    MLflow aliases may hold upper case (``Champion``); modelledger's are lower case, so an
    alias is lower-cased and must then be a valid modelledger alias (a letter first, then
    letters, digits, ``_`` or ``-``, at most 64; not ``latest``).

    >>> map_alias("Champion")
    'champion'
    """
    return validate_alias(alias.lower())


class _MlflowGone(Exception):
    """MLflow stopped answering: the import stops here (a rerun finishes it)."""


@dataclass
class _Run:
    """The state of one import while it runs."""

    registry: Registry
    client: Any
    tracking_uri: str
    shown_uri: str
    progress: ImportProgress | None
    outcomes: list[ImportOutcome] = field(default_factory=list)
    done: int = 0
    total: int = 0

    def add(
        self, kind: Kind, source: str, status: Status, target: str | None = None, reason: str = ""
    ) -> None:
        self.outcomes.append(ImportOutcome(kind, source, status, target, reason))

    def tick(self, what: str) -> None:
        if self.progress is not None:
            self.progress(self.done, self.total, what)

    def summary(self, interrupted: str | None = None) -> MlflowImport:
        return MlflowImport(self.shown_uri, tuple(self.outcomes), interrupted)

    def reachable(self) -> bool:
        try:
            self.client.search_registered_models(max_results=1)
        except Exception:  # any failure of the cheapest call means MLflow is not answering
            return False
        return True

    def mlflow_call(self, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()``; a failure while MLflow does not answer stops the import (:class:`_MlflowGone`)."""
        try:
            return fn()
        except Exception as exc:  # MLflow raises its own, requests', urllib3's and OSError
            if not self.reachable():
                raise _MlflowGone(f"MLflow stopped answering while {what}: {_short(exc)}") from exc
            raise


def import_mlflow(
    registry: Registry,
    tracking_uri: str,
    *,
    registry_uri: str | None = None,
    models: Sequence[str] | None = None,
    rename: Mapping[str, str] | None = None,
    progress: ImportProgress | None = None,
    timeout: int = 30,
    retries: int = 1,
) -> MlflowImport:
    """Import MLflow's registered models into ``registry`` (only what is not yet imported).

    ``tracking_uri`` is a tracking server (``http://host:5000``) or MLflow's database
    (``sqlite:///mlflow.db``, ``postgresql://...``); ``registry_uri`` defaults to it.
    ``models`` limits the import to those MLflow names; ``rename`` maps an MLflow name to the
    modelledger name to use. ``timeout`` (seconds per HTTP request) and ``retries`` bound how
    long an unreachable server is waited for. Returns a :class:`MlflowImport` summary; a
    tracking URI that does not answer is a :class:`~modelledger.errors.StorageError` before
    anything is written, and MLflow going away part-way is
    :class:`~modelledger.errors.ImportInterrupted` carrying the summary so far (each version
    is registered whole or not at all, so a rerun finishes the import).

    >>> summary = modelledger.import_mlflow(registry, "http://127.0.0.1:5000")  # doctest: +SKIP
    >>> summary.counts()["version"]  # doctest: +SKIP
    {'imported': 12, 'skipped': 0, 'failed': 0}
    """
    try:
        # optional and heavy: only an import from MLflow needs it
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise MissingDependency(package="mlflow", extra="mlflow", purpose="importing from MLflow") from exc
    shown = redact_url(tracking_uri)
    for uri in (tracking_uri, registry_uri):
        if uri and uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
            # MLflow would create an empty database there and find nothing to import
            raise StorageError(f"no MLflow database at {uri}: check the path; nothing was imported")
    renamed = dict(rename or {})
    wanted = set(models) if models is not None else None
    with _http_limits(timeout, retries):
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)
        run = _Run(registry, client, tracking_uri, shown, progress)
        try:
            listing = _list_registry(client, wanted)
        except Exception as exc:  # whatever MLflow raises, nothing has been written yet
            raise StorageError(
                f"cannot read the MLflow registry at {shown}: {_short(exc)} "
                "(is the tracking server running and the URI right?); nothing was imported"
            ) from exc
        run.total = sum(len(versions) for _, versions in listing)
        for missing in sorted((wanted or set()) - {rm.name for rm, _ in listing}):
            run.add("model", missing, "failed", None, f"MLflow has no registered model {missing!r}")
        try:
            for rm, versions in listing:
                _import_model(run, rm, versions, renamed.get(rm.name, rm.name))
        except _MlflowGone as exc:
            summary = run.summary(str(exc))
            raise ImportInterrupted(
                f"{exc}; {run.done} of {run.total} versions were looked at "
                f"({summary.count('version', 'imported')} imported) before it stopped; "
                "what was imported is complete, run the import again to finish",
                summary=summary,
            ) from exc.__cause__
        run.tick("done")
        return run.summary()


@contextlib.contextmanager
def _http_limits(timeout: int, retries: int) -> Iterator[None]:
    """MLflow reads its HTTP timeout and retries from the environment on every request: set
    them for the import (its defaults wait minutes for a server that is gone), then restore."""
    names = {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout)),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(int(retries)),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }
    before = {k: os.environ.get(k) for k in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _pages(fetch: Callable[[str | None], Any]) -> Iterator[Any]:
    token: str | None = None
    while True:
        page = fetch(token)
        yield from page
        token = getattr(page, "token", None)
        if not token:
            return


def _list_registry(client: Any, wanted: set[str] | None) -> list[tuple[Any, list[Any]]]:
    """Every registered model (by name) with its versions (by number): what will be imported."""
    found = []
    rms = _pages(lambda t: client.search_registered_models(max_results=100, page_token=t))
    for rm in sorted(rms, key=lambda m: m.name):
        if wanted is not None and rm.name not in wanted:
            continue
        versions = list(_pages(functools.partial(_versions_page, client, rm.name)))
        found.append((rm, sorted(versions, key=lambda v: int(v.version))))
    return found


def _versions_page(client: Any, name: str, token: str | None) -> Any:
    quoted = name.replace("'", "\\'")
    return client.search_model_versions(f"name = '{quoted}'", max_results=1000, page_token=token)


def _import_model(run: _Run, rm: Any, versions: list[Any], target: str) -> None:
    registry = run.registry
    label = rm.name if target == rm.name else f"{rm.name} (as {target})"
    try:
        validate_name(target)
    except InvalidInput as exc:
        run.add("model", rm.name, "failed", None, f"{exc.message}; import it under another name with rename")
        for mv in versions:
            run.done += 1
            run.add(
                "version", f"models:/{rm.name}/{mv.version}", "failed", None, "its model was not imported"
            )
        return
    description = rm.description or ""
    tags = {k: str(v) for k, v in (rm.tags or {}).items()}
    try:
        try:
            model = registry.get_model(target)
        except NotFound:
            model = None
        if model is None:
            registry.create_model(target, description=description, tags=tags)
            run.add("model", rm.name, "imported", target)
        else:
            changes: dict[str, str | None] = {k: v for k, v in tags.items() if model.tags.get(k) != v}
            new_description = description if description and description != model.description else None
            if changes or new_description is not None:
                registry.update_model(target, description=new_description, tags=changes)
                run.add(
                    "model", rm.name, "skipped", target, "exists: description and tags brought up to date"
                )
            else:
                run.add("model", rm.name, "skipped", target, "already imported")
    except ModelLedgerError as exc:
        run.add("model", rm.name, "failed", target, exc.message)
        for mv in versions:
            run.done += 1
            run.add(
                "version", f"models:/{rm.name}/{mv.version}", "failed", None, "its model was not imported"
            )
        return
    aliases_of: dict[str, list[str]] = {}
    for alias, number in (rm.aliases or {}).items():
        aliases_of.setdefault(str(number), []).append(alias)
    imported = _imported_versions(registry, target) if model is not None else {}
    numbers: dict[str, int] = {}  # MLflow version -> modelledger version
    for mv in versions:
        run.tick(f"{label} v{mv.version}")
        number = _import_version(
            run, rm.name, target, mv, imported, sorted(aliases_of.get(str(mv.version), []))
        )
        run.done += 1
        if number is not None:
            numbers[str(mv.version)] = number
    _import_aliases(run, rm, target, numbers)


def _imported_versions(registry: Registry, target: str) -> dict[tuple[str, str, str], ModelVersion]:
    """(MLflow name, version, run id) -> the version it became, for what was imported before."""
    found: dict[tuple[str, str, str], ModelVersion] = {}
    for v in registry.iter_versions(target):
        settings = v.manifest.get("settings")
        origin = settings.get("mlflow") if isinstance(settings, Mapping) else None
        if isinstance(origin, Mapping):
            key = (str(origin.get("name")), str(origin.get("version")), str(origin.get("run_id") or ""))
            found[key] = v
    return found


def _version_tags(mv: Any, aliases: list[str]) -> dict[str, str]:
    tags = {str(k): str(v) for k, v in (mv.tags or {}).items()}
    stage = getattr(mv, "current_stage", None)
    if stage and stage != "None":
        tags["mlflow.stage"] = str(stage)
    if aliases:
        tags["mlflow.aliases"] = ",".join(aliases)
    return tags


def _import_version(
    run: _Run,
    name: str,
    target: str,
    mv: Any,
    imported: Mapping[tuple[str, str, str], ModelVersion],
    aliases: list[str],
) -> int | None:
    """Import one version whole (or not at all); its modelledger number, None if not imported."""
    source = f"models:/{name}/{mv.version}"
    registry = run.registry
    tags = _version_tags(mv, aliases)
    before = imported.get((name, str(mv.version), str(mv.run_id or "")))
    if before is not None:
        uri = before.uri
        try:
            changes: dict[str, str | None] = {k: v for k, v in tags.items() if before.tags.get(k) != v}
            if changes:
                registry.set_version_tags(uri, changes, reason=f"imported from MLflow {source}")
                run.add("version", source, "skipped", uri, "already imported: tags brought up to date")
            else:
                run.add("version", source, "skipped", uri, "already imported")
        except ModelLedgerError as exc:
            run.add("version", source, "failed", uri, f"already imported, but its tags: {exc.message}")
        return before.version
    status = getattr(mv, "status", "READY")
    if status != "READY":
        run.add("version", source, "skipped", None, f"MLflow status is {status}, not READY")
        return None
    import tempfile  # tempfile (with shutil, bz2, lzma): loaded by an import run, not by `import modelledger`

    with tempfile.TemporaryDirectory(prefix="modelledger-mlflow-") as tmp:
        try:
            folder, manifest, note = _prepare(run, name, mv, Path(tmp))
            registered = registry.register(
                target, folder, manifest=manifest, capture=False, execution_id=_execution_id(mv.run_id)
            )
        except _MlflowGone:
            raise
        except (ModelLedgerError, _Unusable) as exc:
            run.add("version", source, "failed", None, _message(exc))
            return None
        except Exception as exc:  # MLflow and the model's framework may raise anything
            run.add("version", source, "failed", None, _short(exc))
            return None
    uri = registered.uri
    if tags:
        try:
            registry.set_version_tags(uri, tags, reason=f"imported from MLflow {source}")
        except ModelLedgerError as exc:
            note = f"{note}; tags not set: {exc.message}".lstrip("; ")
    if getattr(mv, "current_stage", None) not in (None, "None"):
        stage_note = (
            f"MLflow stage {mv.current_stage} recorded as tag mlflow.stage "
            "(not acted on: approve and deploy it through governance)"
        )
        note = f"{note}; {stage_note}".lstrip("; ")
    run.add("version", source, "imported", uri, note)
    return registered.version


class _Unusable(Exception):
    """This version cannot be imported (its files or model); the import goes on."""


def _message(exc: BaseException) -> str:
    if isinstance(exc, ModelLedgerError):
        return exc.message
    return str(exc) if isinstance(exc, _Unusable) else _short(exc)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first[:300]}" if first else type(exc).__name__


def _execution_id(run_id: Any) -> str | None:
    return str(run_id) if run_id and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", str(run_id)) else None


def _prepare(run: _Run, name: str, mv: Any, tmp: Path) -> tuple[Path, dict[str, Any], str]:
    """Download and verify the version's files into ``tmp/model``, load them back, build the
    manifest: (folder, manifest, note). Writes nothing to the registry."""
    # heavy: part of mlflow, which this module only ever imports inside an import
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    client = run.client
    what = f"reading models:/{name}/{mv.version}"
    mlflow_run = run.mlflow_call(what, lambda: client.get_run(mv.run_id)) if mv.run_id else None
    artifact_uri = run.mlflow_call(what, functools.partial(_artifact_uri, client, name, mv))
    repo = get_artifact_repository(artifact_uri, tracking_uri=run.tracking_uri)
    folder = tmp / "model"
    folder.mkdir()
    files = _download_verified(run, repo, folder, what)
    if "MLmodel" not in files:
        raise _Unusable(f"{artifact_uri} holds no MLmodel file: not an MLflow model")
    mlmodel = _read_mlmodel(folder / "MLmodel")
    flavor, entry, note = _choose_flavor(mlmodel, files)
    if flavor == "mlflow":
        write_index(folder, files)
    try:
        loaded = _load_back(flavor, entry, folder)
    except _Unusable as exc:
        if flavor == "mlflow" or "python_function" not in mlmodel["flavors"]:
            raise
        # MLflow's own loader may read what the native flavor cannot (say, a whole pickled
        # torch module where modelledger's pytorch flavor reads its own format)
        write_index(folder, files)
        try:
            loaded = _load_back("mlflow", INDEX, folder)
        except _Unusable as again:
            raise _Unusable(f"{exc}; {again}") from again
        note = "; ".join(n for n in (note, f"{exc}: loaded by mlflow.pyfunc instead") if n)
        flavor, entry = "mlflow", INDEX
    manifest = _manifest(run, name, mv, mlflow_run, mlmodel, flavor, entry, artifact_uri, folder, loaded)
    return folder, manifest, note


def _artifact_uri(client: Any, name: str, mv: Any) -> str:
    """Where the version's files are. A version of an MLflow 3 logged model (source
    ``models:/m-...``) is read from the logged model's location directly: MlflowClient's
    ``get_model_version_download_uri`` first reads the whole registered model (to refuse
    prompts), a cost that grows with its number of versions."""
    source = str(mv.source or "")
    model_id = getattr(mv, "model_id", None) or (
        source.removeprefix("models:/") if source.startswith("models:/m-") else None
    )
    if model_id:
        return str(client.get_logged_model(model_id).artifact_location)
    return str(client.get_model_version_download_uri(name, str(mv.version)))


def _download_verified(run: _Run, repo: Any, folder: Path, what: str) -> list[str]:
    """Every listed file, downloaded, size-checked against the listing and read to its end."""
    import shutil  # shutil (with bz2, lzma): loaded by an import run, not by `import modelledger`

    listed: list[tuple[str, int | None]] = []

    def walk(path: str | None) -> None:
        for info in run.mlflow_call(what, lambda: repo.list_artifacts(path)):
            if info.is_dir:
                walk(info.path)
            else:
                listed.append((info.path, info.file_size))

    walk(None)
    if not listed:
        raise _Unusable("MLflow lists no artefact files for it")
    staging = folder.parent / "download"
    staging.mkdir()
    out = []
    for rel, size in listed:
        p = PurePosixPath(rel)
        if p.is_absolute() or ".." in p.parts:
            raise _Unusable(f"MLflow lists an unsafe artefact path {rel!r}")
        local = Path(run.mlflow_call(what, functools.partial(repo.download_artifacts, rel, str(staging))))
        got, _ = _read_through(local)
        if size is not None and got != size:
            raise _Unusable(f"artefact {rel} is {got} bytes, but MLflow lists {size}")
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(local, target)
        out.append(p.as_posix())
    return sorted(out)


def _read_through(path: Path) -> tuple[int, str]:
    """(bytes read, sha256): the file read completely, as MLflow served it."""
    h = hashlib.sha256()
    n = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            n += len(chunk)
            h.update(chunk)
    return n, h.hexdigest()


def _read_mlmodel(path: Path) -> dict[str, Any]:
    import yaml  # a dependency already; only this reader needs it here

    try:
        doc = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise _Unusable(f"its MLmodel file is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("flavors"), dict):
        raise _Unusable("its MLmodel file names no flavors")
    return doc


def _has_flavor(name: str) -> bool:
    try:
        get_flavor(name)
    except ModelLedgerError:
        return False
    return True


def _choose_flavor(mlmodel: Mapping[str, Any], files: Sequence[str]) -> tuple[str, str, str]:
    """(modelledger flavor, entry file, note): the native flavor when there is one for it."""
    flavors: Mapping[str, Any] = mlmodel["flavors"]
    notes = []
    for ml_name, (ours, key) in MLFLOW_FLAVORS.items():
        conf = flavors.get(ml_name)
        if not isinstance(conf, Mapping):
            continue
        data = conf.get(key)
        entry = str(data) if isinstance(data, str) else None
        if ml_name == "pytorch" and entry is not None:
            entry = f"{entry}/model.pth"  # MLflow keeps the saved module under its data folder
        if ml_name == "sklearn" and conf.get("serialization_format", "cloudpickle") not in _PICKLE_FORMATS:
            notes.append(f"sklearn serialised as {conf.get('serialization_format')}: loaded by mlflow.pyfunc")
        elif not _has_flavor(ours):
            notes.append(f"no modelledger flavor {ours!r} installed: loaded by mlflow.pyfunc")
        elif entry is None or entry not in files:
            notes.append(f"its {ml_name} data file {entry!r} is missing: loaded by mlflow.pyfunc")
        else:
            return ours, entry, "; ".join(notes)
        break
    if "python_function" in flavors:
        return "mlflow", INDEX, "; ".join(notes)
    raise _Unusable(
        f"MLflow flavors {', '.join(sorted(flavors))}: none can be loaded here "
        f"(native: {', '.join(MLFLOW_FLAVORS)}; or python_function)"
    )


def _load_back(flavor: str, entry: str, folder: Path) -> Any:
    """Load the model from the downloaded bytes, as the registry will: a version that does not
    load is reported and not registered."""

    def read(rel: str) -> bytes:
        p = PurePosixPath(rel)
        if p.is_absolute() or ".." in p.parts:
            raise InvalidInput(f"unsafe path {rel!r}")
        try:
            return (folder / rel).read_bytes()
        except FileNotFoundError as exc:  # flavors ask for optional files and expect NotFound
            raise NotFound("file", f"{rel} in the MLflow model") from exc

    try:
        return get_flavor(flavor).load(read, entry)
    except MissingDependency:
        raise
    except Exception as exc:  # a framework reports bad bytes in its own way
        raise _Unusable(f"does not load as a {flavor} model: {_message(exc)}") from exc


def _iso(ms: Any) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _requirements(folder: Path) -> dict[str, str]:
    path = folder / "requirements.txt"
    if not path.is_file():
        return {}
    pins = {}
    for line in path.read_text(errors="replace").splitlines():
        m = _PIN.match(line)
        if m:
            pins[m.group(1)] = m.group(2)
    return pins


def _manifest(
    run: _Run,
    name: str,
    mv: Any,
    mlflow_run: Any,
    mlmodel: Mapping[str, Any],
    flavor: str,
    entry: str,
    artifact_uri: str,
    folder: Path,
    loaded: Any,
) -> dict[str, Any]:
    info = getattr(mlflow_run, "info", None)
    data = getattr(mlflow_run, "data", None)
    run_tags = {str(k): str(v) for k, v in (getattr(data, "tags", None) or {}).items()}
    params = {str(k): str(v) for k, v in (getattr(data, "params", None) or {}).items()}
    metrics: dict[str, float] = {}
    dropped = []
    for k, v in (getattr(data, "metrics", None) or {}).items():
        if isinstance(v, (int, float)) and math.isfinite(v):
            metrics[str(k)] = float(v)
        else:
            dropped.append(str(k))
    commit = run_tags.get("mlflow.source.git.commit")
    source: dict[str, Any] = {}
    if commit and revision_problem(commit) is None:
        source["revision"] = commit
    if run_tags.get("mlflow.source.git.repoURL"):
        source["repo_url"] = run_tags["mlflow.source.git.repoURL"]
    if run_tags.get("mlflow.source.git.branch"):
        source["branch"] = run_tags["mlflow.source.git.branch"]
    if run_tags.get("mlflow.source.name"):
        source["path"] = run_tags["mlflow.source.name"]
    if "revision" not in source:
        source["unknown"] = "imported from MLflow: the run recorded no git commit"
    model_id = getattr(mv, "model_id", None)
    mv_source = str(mv.source or "")
    if not model_id and mv_source.startswith("models:/m-"):
        model_id = mv_source.removeprefix("models:/")
    origin = {
        "tracking_uri": run.shown_uri,
        "name": name,
        "version": str(mv.version),
        "model_uri": f"models:/{name}/{mv.version}",
        "source": redact_url(mv_source) if "://" in mv_source else mv_source,
        "artifact_uri": redact_url(artifact_uri) if "://" in artifact_uri else artifact_uri,
        "run_id": mv.run_id or None,
        "experiment_id": getattr(info, "experiment_id", None),
        "run_name": getattr(info, "run_name", None),
        "model_id": model_id,
        "stage": getattr(mv, "current_stage", None),
        "created_at": _iso(getattr(mv, "creation_timestamp", None)),
        "user_id": getattr(mv, "user_id", None) or run_tags.get("mlflow.user"),
        "source_name": run_tags.get("mlflow.source.name"),
        "source_type": run_tags.get("mlflow.source.type"),
        "entry_point": run_tags.get("mlflow.project.entryPoint"),
        "git_commit": commit,
        "mlflow_version": mlmodel.get("mlflow_version"),
        "flavors": sorted(mlmodel["flavors"]),
        "run_tags": {k: v for k, v in run_tags.items() if k not in _SKIPPED_RUN_TAGS},
    }
    if dropped:
        origin["dropped_metrics"] = sorted(dropped)  # NaN or infinite: not JSON numbers
    deps = _requirements(folder)
    pyfunc = mlmodel["flavors"].get("python_function") or {}
    manifest: dict[str, Any] = {
        "params": params,
        "metrics": metrics,
        "settings": {"mlflow": origin},
        "source": source,
        "training_job": {
            "id": mv.run_id or None,
            "started_at": _iso(getattr(info, "start_time", None)),
            "ended_at": _iso(getattr(info, "end_time", None)),
        },
        "flavor": flavor,
        "entry": entry,
        "description": mv.description or "",
        "dependencies": deps,
        # the pins MLflow wrote beside the model; without them the environment is not known
        "environment": {"origin": "training", "from": "requirements.txt"} if deps else None,
    }
    if isinstance(pyfunc, Mapping) and pyfunc.get("python_version"):
        manifest["python"] = str(pyfunc["python_version"])
    native = getattr(loaded, "native", loaded)
    cls = type(native)
    manifest["algorithm"] = f"{cls.__module__}.{cls.__qualname__}"
    if flavor == "sklearn":
        manifest["framework"] = "scikit-learn"
        version = (mlmodel["flavors"].get("sklearn") or {}).get("sklearn_version")
        if version:
            manifest["framework_version"] = str(version)
    elif flavor == "mlflow":
        manifest["framework"] = "mlflow"
        if mlmodel.get("mlflow_version"):
            manifest["framework_version"] = str(mlmodel["mlflow_version"])
    else:
        conf = mlmodel["flavors"].get(_ml_name(flavor)) or {}
        version = next((v for k, v in conf.items() if k.endswith("_version")), None)
        manifest["framework"] = _ml_name(flavor)
        if version:
            manifest["framework_version"] = str(version)
    json.dumps(manifest, allow_nan=False)  # proven JSON here, so a failure names this version
    return {k: v for k, v in manifest.items() if v is not None}


def _ml_name(flavor: str) -> str:
    return next((ml for ml, (ours, _) in MLFLOW_FLAVORS.items() if ours == flavor), flavor)


def _import_aliases(run: _Run, rm: Any, target: str, numbers: Mapping[str, int]) -> None:
    registry = run.registry
    taken: dict[str, str] = {}
    for alias, mlflow_version in sorted((rm.aliases or {}).items()):
        source = f"{rm.name}@{alias}"
        try:
            ours = map_alias(alias)
        except InvalidInput as exc:
            run.add(
                "alias", source, "skipped", None, f"{exc.message}; recorded in the version tag mlflow.aliases"
            )
            continue
        if ours in taken:
            run.add("alias", source, "skipped", None, f"@{ours} is already taken by {taken[ours]}")
            continue
        taken[ours] = source
        number = numbers.get(str(mlflow_version))
        if number is None:
            run.add("alias", source, "skipped", None, f"version {mlflow_version} was not imported")
            continue
        note = f"renamed from {alias}" if ours != alias else ""
        try:
            if _alias_target(registry, target, ours) == number:
                run.add("alias", source, "skipped", f"{target}@{ours}", "already set")
                continue
            registry.set_alias(target, ours, number, reason=f"imported from MLflow {source}")
        except ModelLedgerError as exc:
            run.add("alias", source, "skipped" if _is_refusal(exc) else "failed", None, exc.message)
            continue
        run.add("alias", source, "imported", f"{target}@{ours}", note)


def _alias_target(registry: Registry, target: str, alias: str) -> int | None:
    try:
        return registry.get_version(f"models:/{target}@{alias}").version
    except ModelLedgerError:
        return None


def _is_refusal(exc: ModelLedgerError) -> bool:
    """A governance rule said no (a protected alias): skipped by design, not a failure."""
    return isinstance(exc, PermissionDenied)
