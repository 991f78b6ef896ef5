"""Refresh: a new candidate trained by the same entrypoint, in the same pinned environment, on
newer data (the ``RefreshVerbs`` mixin of :class:`~modelledger.Registry`).

``registry.refresh("models:/credit-risk@production")`` resolves the source version, picks the
data (the newest version of each data set the source's manifest names in a role, or what
``data`` says for some roles), runs the recorded entrypoint through :mod:`modelledger._run`
(the checkout of the recorded revision, the environment built from the recorded Python and
pins, ``MODELLEDGER_DATA_<ROLE>`` naming the new data) and lets the script register its model
as any registration does: the new version's manifest carries ``links: {refresh_of: <source>}``,
and its registration walks the stages and gates its manifest declares (automatic stages move
on, failing gates reject it on the spot, an automatic deployment happens only after every
gate passed). So a refresh whose gates fail is recorded as ``rejected`` by the ledger's own
``validation.evaluated`` event, and is never deployed.

A manifest declares when a refresh fires by itself (:class:`~modelledger._schedule.RefreshDeclaration`)::

    refresh: {schedule: "0 3 * * MON", on_data: [applications], alias: production}

``alias`` (default ``production``) says while holding which alias the version is refreshed:
the scheduler (:mod:`modelledger._scheduler`) refreshes a version only while it holds that
alias, so a declaration follows the deployed model, not every candidate that carries it.

Firings are ledger events, ``refresh.triggered`` on the source version's subject, each with a
``key`` naming what fired (the schedule's due time, or the new data set versions);
:meth:`RefreshVerbs.record_refresh_trigger` appends one only if no event about that version
has the same key yet, inside the ledger's serialised write, so that two schedulers (or one
restarted) never fire the same due time twice. A firing whose refresh then fails is followed by
``refresh.failed`` with the error, so that no firing disappears without a trace.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._domain import DatasetVersion, ModelVersion
from ._identifiers import parse_dataset_uri
from ._ledger import LedgerEvent
from ._lifecycle import EventDraft, VersionState
from ._paging import MAX_PAGE
from ._run import RunProgress, execute_run
from .errors import Conflict, InvalidInput
from .stores.protocols import MetadataStore, Signer

if TYPE_CHECKING:
    from ._data import Datasets

__all__ = [
    "REFRESH_ACTIONS",
    "RefreshReport",
    "RefreshVerbs",
    "refresh_data",
]

REFRESH_ACTIONS = ("refresh.triggered", "refresh.failed")
"""Ledger actions a scheduler appends about a source version (see the module's documentation)."""


@dataclass(frozen=True, slots=True)
class RefreshReport:
    """What one refresh did: ``candidate``, registered ``refresh_of`` ``source``, now at
    ``stage`` after its registration walked the stages and gates; the data it ran on
    (``data``: role -> data set version), which roles got other data than the source had
    (``changed``: role -> ``{"old", "new"}``) and the gates' results (``gates``)."""

    source: str
    candidate: str
    stage: str
    data: Mapping[str, str]
    changed: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict)
    gates: tuple[Mapping[str, Any], ...] = ()

    @property
    def rejected(self) -> bool:
        return self.stage == "rejected"

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "candidate": self.candidate,
            "stage": self.stage,
            "data": dict(self.data),
            "changed": {k: dict(v) for k, v in self.changed.items()},
            "gates": [dict(g) for g in self.gates],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RefreshReport:
        return cls(
            source=str(data["source"]),
            candidate=str(data["candidate"]),
            stage=str(data["stage"]),
            data={str(k): str(v) for k, v in (data.get("data") or {}).items()},
            changed={str(k): dict(v) for k, v in (data.get("changed") or {}).items()},
            gates=tuple(dict(g) for g in data.get("gates") or ()),
        )


def _resolve_dataset(datasets: Datasets, ref: str, role: str) -> DatasetVersion:
    """``datasets:/name/8``, ``datasets:/name`` or ``name`` (the newest version) for ``role``."""
    if not isinstance(ref, str) or not ref:
        raise InvalidInput(
            f"data for role {role!r} must name a data set version such as datasets:/applications/8"
        )
    if ref.startswith("datasets:/"):
        name, number = parse_dataset_uri(ref)
        return datasets.get(name, number)
    return datasets.get(ref)


def refresh_data(
    datasets: Datasets, manifest: Mapping[str, Any], data: Mapping[str, str] | None, *, uri: str
) -> tuple[dict[str, str], dict[str, dict[str, str | None]]]:
    """The data a refresh of the version (``uri``, its ``manifest``) runs on, and what changed.

    Returns ``(role -> data set version, role -> {"old", "new"})`` for every role the manifest
    names: ``data``'s choice for the roles it gives (a version, or a data set name for its
    newest version), the newest version of the same data set for the others. A role the
    manifest does not name is refused: the entrypoint would not read it.
    """
    recorded = {str(d["role"]): str(d["uri"]) for d in manifest.get("datasets") or () if d.get("role")}
    if not recorded:
        raise Conflict(f"{uri} records no data sets in roles: a refresh has no data to change")
    chosen = dict(data or {})
    unknown = sorted(set(chosen) - set(recorded))
    if unknown:
        raise InvalidInput(
            f"{uri} reads no data set in role {unknown[0]!r} (its roles: {', '.join(sorted(recorded))})"
        )
    out: dict[str, str] = {}
    changed: dict[str, dict[str, str | None]] = {}
    for role, old in sorted(recorded.items()):
        if role in chosen:
            new = _resolve_dataset(datasets, chosen[role], role).uri
        else:
            name, _number = parse_dataset_uri(old)
            new = datasets.get(name).uri  # the newest version
        out[role] = new
        if new != old:
            changed[role] = {"old": old, "new": new}
    return out, changed


class RefreshVerbs:
    """Mixed into :class:`~modelledger.Registry`; see its documentation."""

    _meta: MetadataStore

    if TYPE_CHECKING:  # provided by Registry

        def _ready(self, *, write: bool = False) -> None: ...
        def _signer(self) -> Signer: ...
        @property
        def actor(self) -> str: ...
        @property
        def datasets(self) -> Datasets: ...
        def get_version(self, name_or_uri: str, version: int | None = None) -> ModelVersion: ...
        def state(self, uri: str) -> VersionState: ...
        def history(self, uri_or_name: str) -> list[LedgerEvent]: ...
        def process_environment(self) -> dict[str, str]: ...
        def reject(self, uri: str, *, reason: str) -> VersionState: ...

    def refresh(
        self,
        identifier: str,
        *,
        data: Mapping[str, str] | None = None,
        progress: RunProgress | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
    ) -> RefreshReport:
        """Train a new candidate from the version's recorded entrypoint, in its pinned
        environment, on newer data, registered ``refresh_of`` that version.

        ``data`` maps roles to data set versions (``{"train": "datasets:/applications/8"}``);
        every other role the manifest names gets the newest version of its data set. The
        candidate's registration walks its stages and gates as any registration does: the
        report's ``stage`` says where it stopped (``rejected`` when a gate failed; such a
        version is never deployed). ``progress`` is called with a ``StepEvent`` per step;
        ``cache_dir`` is where environments are cached (as for :meth:`reproduce`); ``timeout``
        bounds the run in seconds. A failing step (checkout, environment, data, run) raises
        :class:`~modelledger.RunFailed` naming it and leaves no candidate (one the run
        registered before failing is rejected).

        >>> report = registry.refresh("models:/credit-risk@production",
        ...                           data={"train": "datasets:/applications/8"})  # doctest: +SKIP
        >>> report.candidate, report.stage  # doctest: +SKIP
        ('models:/credit-risk/4', 'validated')
        """
        source = self.get_version(identifier)
        chosen, changed = refresh_data(self.datasets, source.manifest, data, uri=source.uri)
        outcome = execute_run(
            self,
            source,
            data=chosen,
            link=("refresh_of", source.uri),
            progress=progress,
            cache_dir=cache_dir,
            timeout=timeout,
        )
        return self._refresh_report(source, outcome.version, dict(outcome.data), changed)

    def _refresh_report(
        self,
        source: ModelVersion,
        candidate: ModelVersion,
        chosen: Mapping[str, str],
        changed: Mapping[str, Mapping[str, str | None]],
    ) -> RefreshReport:
        links = candidate.manifest.get("links") or {}
        if links.get("refresh_of") != source.uri:
            # the entrypoint registered something, but not as this refresh: say so, never pretend
            raise Conflict(
                f"{candidate.uri} does not record refresh_of {source.uri} (links: {dict(links) or 'none'}): "
                "the entrypoint must register through modelledger.inputs()"
            )
        gates: tuple[Mapping[str, Any], ...] = ()
        for event in self.history(candidate.uri):
            if event.action == "validation.evaluated":
                gates = tuple(dict(r) for r in event.data.get("results") or ())
        return RefreshReport(
            source=source.uri,
            candidate=candidate.uri,
            stage=self.state(candidate.uri).stage,
            data=dict(chosen),
            changed={k: dict(v) for k, v in changed.items()},
            gates=gates,
        )

    # ------------------------------------------------------------------ firings

    def record_refresh_trigger(
        self, source: str, *, key: str, trigger: str, details: Mapping[str, Any] | None = None
    ) -> LedgerEvent | None:
        """Record that a refresh of ``source`` (a version) fired, once per ``key``: the
        ``refresh.triggered`` event, or None when an event about ``source`` has that key
        already (another scheduler, or this one before a restart, fired it). The check and the
        append are one serialised ledger write, so of two callers exactly one gets the event.

        >>> registry.record_refresh_trigger("models:/credit-risk/3", trigger="schedule",
        ...     key="schedule:production:2026-12-07T03:00:00.000000Z")  # doctest: +SKIP
        """
        if trigger not in ("schedule", "data", "manual"):
            raise InvalidInput(f"unknown refresh trigger {trigger!r} (schedule, data or manual)")
        if not isinstance(key, str) or not key:
            raise InvalidInput("a refresh firing needs a key")
        mv = self.get_version(source)
        data = {
            "model": mv.model,
            "version": mv.version,
            "trigger": trigger,
            "key": key,
            **dict(details or {}),
        }
        reason = f"refresh fired ({trigger}): {key}"

        def decide(_ctx: Any) -> list[EventDraft]:
            # Called under the ledger's write lock (SQL) or against the head the append is
            # conditional on (DynamoDB): what this reads is everything written before.
            if self._refresh_fired(mv.uri, key):
                return []
            return [EventDraft("refresh.triggered", mv.uri, data, reason)]

        events = self._meta.govern(
            mv.model,
            mv.version,
            decide,
            actor=self.actor,
            signer=self._signer(),
            needs_state=False,
            needs_policy=False,
        )
        return events[0] if events else None

    def record_refresh_failure(self, source: str, *, key: str, error: str) -> LedgerEvent:
        """Record that the refresh a firing (``key``) started for ``source`` failed, and why."""
        mv = self.get_version(source)
        data = {"model": mv.model, "version": mv.version, "key": key, "error": error}
        draft = EventDraft("refresh.failed", mv.uri, data, f"refresh failed: {error}")
        events = self._meta.govern(
            mv.model,
            mv.version,
            lambda _ctx: [draft],
            actor=self.actor,
            signer=self._signer(),
            needs_state=False,
            needs_policy=False,
        )
        return events[0]

    def _refresh_fired(self, subject: str, key: str) -> bool:
        after = 0
        while True:
            rows = self._meta.audit(
                subjects=[subject],
                subject_prefixes=[],
                actor=None,
                action="refresh.triggered",
                since=None,
                until=None,
                after=after,
                limit=MAX_PAGE,
            )
            if any(event.data.get("key") == key for event, _hash in rows):
                return True
            if len(rows) < MAX_PAGE:
                return False
            after = rows[-1][0].seq
