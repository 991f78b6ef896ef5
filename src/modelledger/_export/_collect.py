"""What every export format is rendered from: :class:`Provenance`, gathered once by :func:`collect`.

``collect`` reads only through the public :class:`~modelledger.Registry` verbs and returns the
library's own value types, so a renderer is a pure function of one frozen value: the same
registry gives the same ``Provenance``, and so the same bytes. Nothing here reads the clock:
``generated_at`` is the time of the newest event the export covers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .._domain import DatasetVersion, ModelVersion, Page
from .._keys import load_public_key
from .._ledger import LedgerEvent
from .._serving import parse_prediction_id
from .._time import from_stored, to_text
from ..errors import InvalidInput, NotFound

__all__ = ["KINDS", "ExportSource", "Provenance", "collect", "kind_of"]

KINDS = ("model", "dataset", "prediction")


class _DatasetReader(Protocol):
    def get(self, uri_or_name: str, version: int | None = None) -> DatasetVersion: ...


class ExportSource(Protocol):
    """The public :class:`~modelledger.Registry` verbs an export reads through (a protocol, so
    that this module needs no import of the facade that imports it)."""

    @property
    def datasets(self) -> _DatasetReader: ...

    def get_version(self, name_or_uri: str, version: int | None = None) -> ModelVersion: ...

    def prediction(self, prediction_id: str) -> dict[str, Any]: ...

    def history(self, uri_or_name: str) -> list[LedgerEvent]: ...

    def audit(
        self, *, action: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[LedgerEvent]: ...

    def whoami(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Provenance:
    """Everything an export says about one model version, data set version or prediction.

    ``datasets`` holds every data set version upstream (the model's inputs and, transitively,
    their steps' inputs), inputs before what was made from them; ``roles`` maps the model's
    direct inputs (their ``datasets:/`` identifiers) to their role; ``events`` are the ledger's
    events about the subject in ledger order; ``key_id``/``public_key`` (raw Ed25519, 32 bytes)
    name the identity whose key signs the formats that sign.
    """

    subject: str
    kind: str
    model: ModelVersion | None
    datasets: tuple[DatasetVersion, ...]
    roles: Mapping[str, str]
    events: tuple[LedgerEvent, ...]
    prediction: Mapping[str, Any] | None
    key_id: str
    public_key: bytes
    generated_at: str

    def dataset_by_uri(self, uri: str) -> DatasetVersion | None:
        """The upstream data set version of identifier ``uri`` (``datasets:/name/3``), if collected."""
        for dv in self.datasets:
            if dv.uri == uri:
                return dv
        return None


def kind_of(identifier: str) -> str:
    """``model``, ``dataset`` or ``prediction``: what an export identifier names.

    >>> kind_of("models:/credit-risk@production"), kind_of("datasets:/applications/2")
    ('model', 'dataset')
    """
    if not isinstance(identifier, str) or not identifier:
        raise InvalidInput("give a model version, a data set version or a prediction id to export")
    if identifier.startswith("models:/"):
        return "model"
    if identifier.startswith("datasets:/"):
        return "dataset"
    try:
        parse_prediction_id(identifier)
    except InvalidInput:
        raise InvalidInput(
            f"cannot export {identifier!r}: give models:/<name>/<n> (or @alias), "
            "datasets:/<name>/<n> or a prediction id"
        ) from None
    return "prediction"


def collect(registry: ExportSource, identifier: str) -> Provenance:
    """The provenance of ``identifier``: a model version (``models:/x/3``, ``models:/x@alias``),
    a data set version (``datasets:/d/2``) or a prediction id.

    >>> p = collect(registry, "models:/credit-risk@production")  # doctest: +SKIP
    >>> p.subject, [d.uri for d in p.datasets]  # doctest: +SKIP
    """
    kind = kind_of(identifier)
    model: ModelVersion | None = None
    dataset: DatasetVersion | None = None
    record: Mapping[str, Any] | None = None
    if kind == "prediction":
        record = registry.prediction(identifier)
        model = registry.get_version(f"models:/{record['model']}/{int(record['version'])}")
        subject = str(record["prediction_id"])
    elif kind == "model":
        model = registry.get_version(identifier)
        subject = model.uri
    else:
        dataset = registry.datasets.get(identifier)
        subject = dataset.uri

    roles: dict[str, str] = {}
    starts: list[str] = []
    if model is not None:
        for entry in model.manifest.get("datasets") or ():
            uri = str(entry["uri"])
            roles[uri] = str(entry.get("role") or "")
            starts.append(uri)
    datasets = _upstream(registry, starts, dataset)

    if model is not None:
        events = _version_events(registry, model)
    else:
        assert dataset is not None
        events = _dataset_events(registry, dataset.uri)
    times = [from_stored(e.time) for e in events]
    if record is not None:
        times.append(from_stored(str(record["time"])))
    if dataset is not None:
        times.append(dataset.created_at)
    who = registry.whoami()
    return Provenance(
        subject=subject,
        kind=kind,
        model=model,
        datasets=datasets,
        roles=roles,
        events=events,
        prediction=dict(record) if record is not None else None,
        key_id=str(who["key_id"]),
        public_key=_raw_public_key(str(who["public_key"])),
        generated_at=to_text(max(times)) if times else "",
    )


def _upstream(
    registry: ExportSource, starts: list[str], own: DatasetVersion | None
) -> tuple[DatasetVersion, ...]:
    """Every data set version reachable from ``starts`` (and ``own``) through steps' inputs,
    in registration order (a step's inputs exist before its output, so inputs come first).
    A data set the registry no longer finds is left out."""
    found: dict[str, DatasetVersion] = {}
    pending = list(starts)
    if own is not None:
        found[own.uri] = own
        pending.extend(i for step in own.steps for i in step.inputs)
    while pending:
        uri = pending.pop()
        if uri in found:
            continue
        try:
            dv = registry.datasets.get(uri)
        except NotFound:
            continue  # a record that is gone: renderers name it from the identifier alone
        found[uri] = dv
        pending.extend(i for step in dv.steps for i in step.inputs if i not in found)
    return tuple(sorted(found.values(), key=lambda d: (d.key, d.name, d.version)))


def _version_events(registry: ExportSource, mv: ModelVersion) -> tuple[LedgerEvent, ...]:
    """The model's events about this version: its own subject (under any former name too) and
    the alias moves that pointed an alias at it or away from it."""
    mine = []
    suffix = f"/{mv.version}"
    for event in registry.history(mv.model):
        if "@" in event.subject:  # an alias: moved to this version or away from it
            moved = ("version", "previous", "to", "from")  # alias.set/deleted; a rollback
            ours = mv.version in [event.data.get(k) for k in moved]
        else:
            ours = event.subject.startswith("models:/") and event.subject.endswith(suffix)
        if ours:
            mine.append(event)
    return tuple(sorted(mine, key=lambda e: e.seq))


def _dataset_events(registry: ExportSource, uri: str) -> tuple[LedgerEvent, ...]:
    """The ledger's events about one data set version (its registration, an erasure).

    The public API keeps no per-data-set history, so this pages through the data set events;
    an export is a rare, one-off read."""
    out: list[LedgerEvent] = []
    cursor: str | None = None
    while True:
        page = registry.audit(action="dataset.*", limit=1000, cursor=cursor)
        out.extend(e for e in page if e.subject == uri)
        cursor = page.next_cursor
        if cursor is None:
            return tuple(out)


def _raw_public_key(pem: str) -> bytes:
    """The 32 raw bytes of an Ed25519 public key given as PEM."""
    # slow to import: only exporting needs the raw form
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return load_public_key(pem.encode("ascii")).public_bytes(Encoding.Raw, PublicFormat.Raw)
