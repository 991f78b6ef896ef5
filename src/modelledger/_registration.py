"""Registering a model version: plan, then write.

:func:`plan_registration` does every check and gathers every fact first (names, manifest,
provenance captured once, flavor and artefact files, data set roles and references, the
version folder's name), writing nothing to the registry. :func:`write_registration` then
carries the plan out in the one order that makes crashes harmless: inline data sets, then
the sealed version folder, then one metadata transaction. A failure at any point removes
what the call wrote: data set versions it created, the folder, and (through the
transaction) any row or ledger event.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from ._canonical import canonicalize, canonicalize_str
from ._data import DatasetPlan, Datasets, sklearn_steps
from ._domain import DatasetVersion, FileEntry, LazyJSON, Signature, UploadedVersion
from ._entrypoint import remembered_datasets, with_run_facts
from ._identifiers import fold_name, validate_execution_id, validate_folder_key, validate_name
from ._integrity import version_digest
from ._manifest import (
    DEFAULT_LIMITS,
    Manifest,
    ManifestLimits,
    check_limits,
    check_manifest,
    load_manifest_file,
)
from ._model_signing import SIGNATURE_FILE, check_signed_folder
from ._signature import infer_signature
from ._time import now
from .errors import InvalidInput, MissingDependency, ModelLedgerError, NotFound
from .flavors import Flavor, flavor_for_object, get_flavor
from .stores.artifacts import ArtifactStore, iter_file

__all__ = [
    "DATASET_ROLES",
    "FolderNaming",
    "ProgressCallback",
    "RegistrationPlan",
    "plan_registration",
    "write_registration",
]

FolderNaming = Literal["auto", "git", "execution", "date"]
FOLDER_NAMINGS = ("auto", "git", "execution", "date")
ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(bytes_done, bytes_total)`` while artefacts move."""

DATASET_ROLES = ("train", "validation", "holdout", "test")


@dataclass(frozen=True, slots=True)
class RegistrationPlan:
    """A registration checked in full; nothing of it is written yet.

    ``manifest`` is final except for the references to ``inline`` data sets (registered
    when the plan is carried out) and the pipeline ``steps`` that read the train set.
    """

    name: str
    folder_key: str
    flavor: str
    source_dir: Path
    files: tuple[tuple[str, int], ...]  # (relative POSIX path, size in bytes)
    manifest: Manifest
    roles: tuple[str, ...] = ()  # the data set roles in the order given
    known: tuple[tuple[str, DatasetVersion], ...] = ()
    inline: tuple[tuple[str, DatasetPlan], ...] = ()
    steps: tuple[Mapping[str, Any], ...] = ()  # the pipeline's own steps; inputs are the train set
    with_datasets: bool = False
    manifest_text: str = ""  # ``manifest`` as RFC 8785 text, reused when nothing is added to it


@contextmanager
def scratch() -> Iterator[Path]:
    """A private temporary folder for a flavor to save a model into before upload."""
    import tempfile  # tempfile (with shutil, bz2, lzma): loaded by registration, not by `import modelledger`

    with tempfile.TemporaryDirectory(prefix="modelledger-") as tmp:
        yield Path(tmp)


def plan_registration(
    name: str,
    source: Any,
    scratch_dir: Path,
    *,
    datasets_service: Datasets,
    folder_naming: FolderNaming,
    manifest: Manifest | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    sample_input: Any = None,
    execution_id: str | None = None,
    capture: bool = True,
    code_path: str | os.PathLike[str] | None = None,
    datasets: Mapping[str, Any] | None = None,
    limits: ManifestLimits = DEFAULT_LIMITS,
    load_check: bool = True,
) -> RegistrationPlan:
    """Check everything and gather every fact a registration needs; writes nothing.

    A model object is saved by its flavor into ``scratch_dir`` (a private temporary folder,
    not the registry); a folder source is used where it is. The manifest, ``params`` and
    ``metrics`` are held to ``limits`` (:class:`ManifestLimits`). ``load_check=False`` does not
    load a folder's files back through its declared flavor (see ``Registry.register``).
    """
    validate_name(name)
    if execution_id is not None:
        validate_execution_id(execution_id)
    doc = _coerce_manifest(manifest, limits)
    if params:
        # Bounded before anything walks it recursively (canonicalisation, JSON encoding).
        check_limits({**doc.params, **params}, "params", limits)
        doc = replace(doc, params={**doc.params, **_json_check(params, "params")})
    if metrics:
        check_limits({**doc.metrics, **metrics}, "metrics", limits)
        doc = replace(doc, metrics={**doc.metrics, **check_metrics(metrics)})
    if doc.training_job.id is None and execution_id is not None:
        doc = replace(doc, training_job=replace(doc.training_job, id=execution_id))
    if datasets is None:
        # what modelledger.inputs() read in this process: the entrypoint contract (_run)
        datasets = remembered_datasets() or None
    known, named, inline = _dataset_roles(datasets or {})
    known += [(role, datasets_service.get(uri)) for role, uri in named]
    folder, flavor, entry, doc = _prepare_source(source, scratch_dir, doc, sample_input, load_check)
    if capture:
        # Provenance is read once and shared: the model's and every inline data set's code.
        # A folder was saved by some other process, so its environment is the one it
        # declares, or labelled as this machine's; an object's is this process's.
        doc = doc.with_captured(
            script=os.fspath(code_path) if code_path is not None else None,
            folder=folder if isinstance(source, (str, os.PathLike)) else None,
            limits=limits,
        )
    doc = with_run_facts(
        doc,
        source,
        capture=capture,
        folder=isinstance(source, (str, os.PathLike)),
        script=os.fspath(code_path) if code_path is not None else None,
        limits=limits,
    )
    doc = replace(doc, flavor=flavor, entry=entry)
    code = {k: v for k, v in doc.source.to_dict().items() if v is not None} if capture else {}
    planned = tuple(
        (role, datasets_service.plan(f"{fold_name(name)}-{role}", value, code=code)) for role, value in inline
    )
    steps: tuple[Mapping[str, Any], ...] = ()
    if datasets and not doc.steps and not isinstance(source, (str, os.PathLike)) and _is_sklearn(source):
        steps = tuple(s.to_dict() for s in sklearn_steps(source, code=code))
    files = _folder_files(folder)
    sizes = []
    for rel in files:
        try:
            sizes.append((rel.as_posix(), (folder / rel).stat().st_size))
            with (folder / rel).open("rb"):
                pass
        except OSError as exc:
            raise InvalidInput(f"cannot read artefact file {folder / rel}: {exc}") from exc
    doc = _check_model_signing(source, folder, sizes, doc)
    try:
        text = canonicalize_str(doc.to_dict())
    except InvalidInput as exc:
        raise InvalidInput(f"the manifest holds a value that is not JSON: {exc.message}") from exc
    return RegistrationPlan(
        name=name,
        folder_key=_folder_key(folder_naming, doc, execution_id),
        flavor=flavor,
        source_dir=folder,
        files=tuple(sizes),
        manifest=doc,
        roles=tuple(datasets or ()),
        known=tuple(known),
        inline=planned,
        steps=steps,
        with_datasets=bool(datasets),
        manifest_text=text,
    )


def write_registration(
    plan: RegistrationPlan,
    *,
    artifacts: ArtifactStore,
    datasets_service: Datasets,
    commit: Callable[[UploadedVersion], Any],
    progress: ProgressCallback | None = None,
    taken: Callable[[str], int] | None = None,
) -> Any:
    """Carry out ``plan``: inline data sets, the sealed folder, then ``commit`` (one transaction).

    ``taken(folder)`` says how far the registered folders ``folder``, ``folder.2``... go
    (``MetadataStore.highest_folder_suffix``), so the folder is claimed without listing the
    model's folders. Whatever fails, what this call wrote is removed again before the error
    propagates.
    """
    created: list[DatasetVersion] = []
    uploaded: UploadedVersion | None = None
    try:
        given = dict(plan.known)
        for role, dplan in plan.inline:
            dv, new = datasets_service.write(dplan, record=False)  # recorded with the version
            if new:
                created.append(dv)
            given[role] = dv
        refs = [(role, given[role]) for role in plan.roles]
        uploaded = _upload(plan, artifacts, refs=refs, progress=progress, taken=taken)
        return commit(uploaded)
    except BaseException:
        if uploaded is not None:
            artifacts.remove_tree(uploaded.folder)
        for dv in reversed(created):
            datasets_service.discard(dv)
        raise


def _upload(
    plan: RegistrationPlan,
    artifacts: ArtifactStore,
    *,
    refs: list[tuple[str, DatasetVersion]] | None = None,
    progress: ProgressCallback | None = None,
    taken: Callable[[str], int] | None = None,
) -> UploadedVersion:
    """Write and seal the plan's version folder; a failure removes the folder again."""
    doc, text = plan.manifest, plan.manifest_text
    if plan.with_datasets:
        links = [
            {"role": r, "uri": dv.uri, "digest": dv.digest, "rows": dv.row_count} for r, dv in refs or ()
        ]
        train = tuple(str(ref["uri"]) for ref in links if ref["role"] == "train")
        steps = [{**s, "inputs": list(train)} for s in plan.steps] if plan.steps else list(doc.steps)
        doc = replace(doc, datasets=tuple(links), steps=tuple(steps))
        text = ""
    manifest = doc.to_dict()
    # the digest, the metadata row and the ledger all use this one text
    text = text or canonicalize_str(manifest)
    total = sum(size for _rel, size in plan.files)
    parent = f"models/{plan.name}"
    # The metadata says which numbers are registered (also those whose files are gone); the
    # exclusive create then steps over folders claimed but not registered (yet).
    after = taken(f"{parent}/{plan.folder_key}") if taken is not None else 0
    folder = artifacts.claim_folder(parent, plan.folder_key, after=after)
    try:
        done = 0
        entries = []

        def tick(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress(done, total)

        for rel, _size in plan.files:
            size, sha = artifacts.put_stream(
                f"{folder}/artifacts/{rel}", iter_file(plan.source_dir / rel), tick
            )
            entries.append(FileEntry(path=rel, size=size, sha256=sha))
        sealed = LazyJSON(text, manifest)
        digest = version_digest(entries, sealed)
        artifacts.put_bytes(f"{folder}/manifest.json", _folder_record(plan.name, digest, entries, text))
        artifacts.sync_folder(folder)
    except BaseException as exc:
        artifacts.remove_tree(folder)
        if isinstance(exc, OSError):
            raise artifacts.error(exc, "write artefacts to", folder) from exc
        raise
    return UploadedVersion(
        model=plan.name,
        folder=folder,
        digest=digest,
        flavor=plan.flavor,
        files=tuple(entries),
        manifest=sealed,
    )


def _folder_record(model: str, digest: str, entries: list[FileEntry], text: str) -> bytes:
    """``manifest.json``: ``{"digest", "files", "manifest", "model"}``, one field a line.

    It is only ever read as JSON (``verify`` compares it by value), so the manifest goes in as
    the canonical text already made for the digest and the metadata row, not encoded a second
    time, and the rest with the C encoder (``indent`` would fall back to the pure-Python one).
    """
    files = json.dumps([e.to_dict() for e in entries])
    return (
        f'{{"digest": {json.dumps(digest)},\n"files": {files},\n'
        f'"manifest": {text},\n"model": {json.dumps(model)}}}\n'
    ).encode()


# ---------------------------------------------------------------------- checks, all side-effect free


def _dataset_roles(
    datasets: Mapping[str, Any],
) -> tuple[list[tuple[str, DatasetVersion]], list[tuple[str, str]], list[tuple[str, Any]]]:
    """Split ``role -> data set`` into versions given, identifiers given and data to register."""
    known: list[tuple[str, DatasetVersion]] = []
    named: list[tuple[str, str]] = []
    inline: list[tuple[str, Any]] = []
    for role, value in datasets.items():
        if role not in DATASET_ROLES:
            raise InvalidInput(f"unknown data set role {role!r}: use {', '.join(DATASET_ROLES)}")
        if isinstance(value, DatasetVersion):
            known.append((role, value))
        elif isinstance(value, str) and value.startswith("datasets:/"):
            named.append((role, value))
        else:
            inline.append((role, value))
    return known, named, inline


def _check_model_signing(source: Any, folder: Path, sizes: list[tuple[str, int]], doc: Manifest) -> Manifest:
    """A folder signed with the OpenSSF model_signing tool (a ``model.sig`` at its top) is
    registered only with that signature checked against the key the manifest gives; the
    manifest then records who signed and what. Any other folder costs one pass over the names
    already listed."""
    signed = any(rel == SIGNATURE_FILE for rel, _ in sizes)
    if not signed and doc.model_signing is None:
        return doc
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidInput(
            "model_signing applies to a folder signed with model_signing, not to a model object"
        )
    record = check_signed_folder(folder, [rel for rel, _ in sizes], doc.model_signing)
    return replace(doc, model_signing=record)


def _prepare_source(
    source: Any, tmp: Path, doc: Manifest, sample_input: Any, load_check: bool = True
) -> tuple[Path, str, str | None, Manifest]:
    """(folder holding the files, flavor name, entry file, manifest with what the flavor says).

    Whatever a flavor is to load later is loaded back once here, from the staged files,
    before anything is written: a file the flavor cannot read is refused now, not at the
    first ``load``.
    """
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.is_dir():
            raise InvalidInput(f"artefact folder does not exist or is not a folder: {folder}")
        files = _folder_files(folder)
        if not files:
            raise InvalidInput(f"artefact folder is empty: {folder}")
        flavor_name = doc.flavor or "files"
        entry = doc.entry
        runs_pickle = False
        if flavor_name != "files":
            declared = get_flavor(flavor_name)
            entry = entry or declared.entry
            if entry not in {p.as_posix() for p in files}:
                raise InvalidInput(f"the manifest's entry file {entry!r} is not in {folder}")
            if load_check:
                loaded = _load_back(declared, folder, files, entry, f"{folder / entry}")
                doc = _described_by(declared, loaded, doc)
            runs_pickle = declared.runs_pickle
        if sample_input is not None:
            doc = replace(doc, signature=infer_signature(sample_input).to_dict())
        return folder, flavor_name, entry, replace(doc, runs_pickle=runs_pickle)
    if source is None:
        raise InvalidInput("nothing to register: source is None")
    flavor = flavor_for_object(source)
    out = tmp / "artifacts"
    out.mkdir()
    flavor.save(source, out)
    loaded = _load_back(flavor, out, _folder_files(out), flavor.entry, f"the saved {type(source).__name__}")
    described = flavor.describe(source)
    doc = replace(
        doc,
        algorithm=doc.algorithm or described["algorithm"],
        framework=doc.framework or described["framework"],
        framework_version=doc.framework_version or described["framework_version"],
        runs_pickle=flavor.runs_pickle,
    )
    doc = _described_by(flavor, loaded, doc)
    # The algorithm's hyperparameters, as fitted; anything given explicitly wins.
    algorithm = source.steps[-1][1] if isinstance(getattr(source, "steps", None), list) else source
    get_params = getattr(algorithm, "get_params", None)
    flavor_params = getattr(flavor, "params", None)  # optional: a framework's own objects (a Booster)
    if callable(get_params):
        doc = replace(doc, params={**_jsonable_params(get_params(deep=False)), **doc.params})
    elif callable(flavor_params):
        doc = replace(doc, params={**_jsonable_params(flavor_params(source)), **doc.params})
    if sample_input is not None:
        # the model as it will be served: an ONNX graph has no predict of its own, and a torch
        # module's own predict (if any) takes tensors
        predict = getattr(loaded, "predict", None) or getattr(source, "predict", None) or source
        try:
            sample_output = predict(sample_input)
        except Exception as exc:  # the user's model may raise anything
            raise InvalidInput(f"the model failed to predict on sample_input: {exc}") from exc
        doc = replace(doc, signature=infer_signature(sample_input, sample_output).to_dict())
    return out, flavor.name, flavor.entry, doc


def _described_by(flavor: Flavor, loaded: Any, doc: Manifest) -> Manifest:
    """What the flavor reads off the model as loaded back fills what the manifest leaves
    empty. A flavor may define ``loaded_facts(loaded)`` (optional, like ``params``): a dict
    with any of ``signature`` (a ``Signature.to_dict()``, e.g. an ONNX graph's inputs and
    outputs), ``algorithm``, ``framework``, ``framework_version`` (what a folder registration
    has no object to describe by). The flavor is asked, never the model: a user's object may
    have a ``signature`` of its own that means something else."""
    loaded_facts = getattr(flavor, "loaded_facts", None)
    if not callable(loaded_facts):
        return doc
    facts = loaded_facts(loaded)
    signature = facts.get("signature")
    if not doc.signature and signature:
        doc = replace(doc, signature=Signature.from_dict(signature).to_dict())
    return replace(
        doc,
        algorithm=doc.algorithm or facts.get("algorithm"),
        framework=doc.framework or facts.get("framework"),
        framework_version=doc.framework_version or facts.get("framework_version"),
    )


def _load_back(flavor: Flavor, folder: Path, files: list[Path], entry: str, what: str) -> Any:
    """Load the staged files once through ``flavor``, as ``load`` will: refuse what fails.

    A framework that is not installed stays :class:`MissingDependency` (install it, then
    register); anything else the framework raises means the files are not such a model.
    """
    staged = {p.as_posix() for p in files}

    def read(rel: str) -> bytes:
        if rel not in staged:
            raise NotFound("file", f"{rel} in {folder}")
        return (folder / rel).read_bytes()

    try:
        return flavor.load(read, entry)
    except MissingDependency:
        raise
    except Exception as exc:  # a framework's reader reports a bad file through any exception
        reason = exc.message if isinstance(exc, ModelLedgerError) else f"{type(exc).__name__}: {exc}"
        reason = " ".join(reason.split())[:500]  # framework errors can run to many lines
        raise InvalidInput(f"{what} does not load as a {flavor.name} model: {reason}") from exc


def _folder_key(naming: FolderNaming, doc: Manifest, execution_id: str | None) -> str:
    rev = doc.source.revision
    if naming == "auto":
        naming = "execution" if execution_id else ("git" if rev else "date")
    if naming == "git":
        if not rev:
            raise InvalidInput(
                "folder naming is 'git' but no git revision is known: run inside a git "
                "repository or set source.revision in the manifest"
            )
        # The revision was checked where it entered (manifest or git); the key is checked
        # again because it becomes a path segment whatever produced it.
        return validate_folder_key(f"git-{rev[:12]}" + ("-dirty" if doc.source.dirty else ""))
    if naming == "execution":
        if not execution_id:
            raise InvalidInput("folder naming is 'execution' but no execution_id was given")
        return validate_folder_key(f"run-{validate_execution_id(execution_id)}")
    return now().strftime("%Y%m%dT%H%M%SZ")


def check_folder_naming(value: object) -> FolderNaming:
    if value not in FOLDER_NAMINGS:
        raise InvalidInput(f"folder_naming must be one of {', '.join(FOLDER_NAMINGS)}, got {value!r}")
    return value  # type: ignore[return-value]


def _is_sklearn(obj: Any) -> bool:
    return type(obj).__module__.startswith("sklearn.")


def _folder_files(folder: Path) -> list[Path]:
    """Every regular file below ``folder``, relative to it, sorted; links are refused.

    ``os.walk`` does not follow a symlinked directory (and would silently leave its files
    out), so one is refused like a symlinked file: what is stored is exactly what is there.
    """
    out = []
    try:
        for dirpath, dirnames, filenames in os.walk(folder, onerror=_raise):
            dirnames.sort()
            for dn in dirnames:
                if (Path(dirpath) / dn).is_symlink():
                    raise InvalidInput(
                        f"symbolic links are not stored as artefacts: {Path(dirpath) / dn} "
                        "links to a folder; copy the folder in instead"
                    )
            for fn in sorted(filenames):
                full = Path(dirpath) / fn
                if full.is_symlink():
                    raise InvalidInput(f"symbolic links are not stored as artefacts: {full}")
                if not full.is_file():
                    raise InvalidInput(f"not a regular file, cannot be stored as an artefact: {full}")
                out.append(full.relative_to(folder))
    except PermissionError as exc:
        raise InvalidInput(f"cannot read artefact folder {folder}: {exc}") from exc
    return out


def _raise(exc: OSError) -> None:
    raise exc


def _coerce_manifest(
    manifest: Manifest | Mapping[str, Any] | str | os.PathLike[str] | None, limits: ManifestLimits
) -> Manifest:
    if manifest is None:
        return Manifest()
    if isinstance(manifest, Manifest):
        # Built in Python, so never validated: hold it to the same limits and revision rule.
        return check_manifest(manifest, limits)
    if isinstance(manifest, (str, os.PathLike)):
        return load_manifest_file(manifest, limits=limits)
    return Manifest.from_dict(manifest, limits=limits)


def _json_check(values: Mapping[str, Any], what: str) -> dict[str, Any]:
    try:
        canonicalize(dict(values))
    except InvalidInput as exc:
        raise InvalidInput(f"{what} must hold JSON values only: {exc.message}") from exc
    return dict(values)


def check_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Metrics as floats; anything that is not a number is refused."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"metric {key!r} must be a number, got {type(value).__name__}")
        out[str(key)] = float(value)
    return out


def _jsonable_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Estimator parameters as JSON values; nested estimators become their class name."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if value is None or isinstance(value, (bool, int, str)):
            out[key] = value
        elif isinstance(value, float):
            out[key] = value if value == value and value not in (float("inf"), float("-inf")) else str(value)
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float, str)) for v in value):
            out[key] = list(value)
        else:
            out[key] = repr(value) if not hasattr(value, "get_params") else type(value).__name__
    return out
