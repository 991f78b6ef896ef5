"""The scheduler: fires the refreshes manifests declare, each due time (or new data) once.

See :class:`Scheduler`; the cron lines and declarations it reads are :mod:`modelledger._schedule`,
the refresh it runs and the firing record are :mod:`modelledger._refresh`.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._domain import ModelVersion
from ._events import event_models
from ._identifiers import parse_dataset_uri
from ._paging import MAX_PAGE
from ._run import RunProgress
from ._schedule import RefreshDeclaration, utc
from ._time import now, parse_time, to_text
from .errors import InvalidInput, ModelLedgerError, ModelRenamed, NotFound

if TYPE_CHECKING:
    from ._registry import Registry

__all__ = ["Firing", "Scheduler"]


@dataclass(frozen=True, slots=True)
class Firing:
    """One refresh the scheduler fired: of ``source`` (a version holding ``alias``), by
    ``trigger`` (``schedule``: ``due`` is the cron time it fired for; ``data``: ``data`` names
    the new data set versions by role), recorded once under ``key`` as ledger event ``seq``.
    After the refresh ran: the ``candidate`` and its ``stage``, or the ``error``."""

    model: str
    alias: str
    source: str
    trigger: str
    key: str
    due: str | None = None
    data: Mapping[str, str] = field(default_factory=dict)
    seq: int | None = None
    candidate: str | None = None
    stage: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "alias": self.alias,
            "source": self.source,
            "trigger": self.trigger,
            "key": self.key,
            "due": self.due,
            "data": dict(self.data),
            "seq": self.seq,
            "candidate": self.candidate,
            "stage": self.stage,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Firing:
        return cls(
            model=str(data["model"]),
            alias=str(data["alias"]),
            source=str(data["source"]),
            trigger=str(data["trigger"]),
            key=str(data["key"]),
            due=data.get("due"),
            data={str(k): str(v) for k, v in (data.get("data") or {}).items()},
            seq=data.get("seq"),
            candidate=data.get("candidate"),
            stage=data.get("stage"),
            error=data.get("error"),
        )


@dataclass(frozen=True, slots=True)
class _Declared:
    """A version that holds ``alias`` since ``since`` and declares refreshes while it does."""

    source: ModelVersion
    alias: str
    since: datetime
    declaration: RefreshDeclaration


class Scheduler:
    """Fires the refreshes that manifests declare, each due time (or new data) once.

    A version is refreshed by the scheduler while it holds the alias its manifest's
    ``refresh`` names (default ``production``). Each :meth:`tick`:

    - follows the ledger from the position it last read (:meth:`Registry.events_after`): a
      ``dataset.registered`` event tells which data sets changed, an event about a model (a
      deployment, an alias move, a registration) makes it read that model's declarations again.
      The first tick reads every model's and checks every declaration, so what landed while
      no scheduler ran is caught up;
    - **schedule**: fires for the schedule's latest due time at or before the clock's now, if
      the version already held the alias then (a due time missed while no scheduler ran fires
      once, late; older missed ones do not pile up);
    - **data**: fires when the newest version of a data set in ``on_data`` is newer than the
      one the version was trained with, and the refresh runs on those new versions (in every
      role the version read that data set in);
    - records each firing with :meth:`Registry.record_refresh_trigger`, keyed by the due time
      or the new data set versions: of two schedulers (or one restarted) only the first
      records it, and only the one that recorded it runs the refresh (at most once: a
      scheduler that dies between the two leaves the firing recorded and not run);
    - runs :meth:`Registry.refresh`; a failure is recorded as ``refresh.failed``.

    ``clock`` returns the current time (default: the system clock, UTC); tests pass their own.

    >>> scheduler = Scheduler(registry)  # doctest: +SKIP
    >>> [f.candidate for f in scheduler.tick()]  # doctest: +SKIP
    ['models:/credit-risk/4']
    """

    def __init__(
        self,
        registry: Registry,
        *,
        clock: Callable[[], datetime] | None = None,
        progress: RunProgress | None = None,
    ) -> None:
        self.registry = registry
        self.clock = clock or now
        self.progress = progress
        self.position: int | None = None  # the last ledger seq read; None before the first tick
        self._declared: dict[str, list[_Declared]] = {}
        # (source, key) this process saw recorded: not asked of the ledger again every tick
        self._recorded: set[tuple[str, str]] = set()
        self._check_all = True  # the first look checks every declared data set (a catch-up)

    # ---------------------------------------------------------------- what is declared

    def declarations(self) -> list[tuple[str, str, RefreshDeclaration]]:
        """``(source version, alias, declaration)`` for every version the scheduler watches."""
        if self.position is None:
            self._start()
        return [
            (d.source.uri, d.alias, d.declaration)
            for model in sorted(self._declared)
            for d in self._declared[model]
        ]

    def _start(self) -> None:
        self.position = self.registry.last_event_seq()  # read first: what lands meanwhile is read again
        self._check_all = True
        self._declared = {}
        for model in self.registry.iter_models():
            self._read_model(model.name)

    def _read_model(self, name: str) -> None:
        """Read again which versions of model ``name`` declare refreshes (its aliases may have moved)."""
        found: list[_Declared] = []
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ModelRenamed)  # an event may name a former name
                model = self.registry.get_model(name)
                if model.archived or model.name != name:
                    self._declared.pop(name, None)
                    return
                for move in self.registry.alias_history(name, latest=True):
                    if move.version is None:
                        continue
                    mv = self.registry.get_version(name, move.version)
                    try:
                        declaration = RefreshDeclaration.from_manifest(mv.manifest)
                    except InvalidInput:
                        continue  # a manifest written before refresh was checked: nothing to follow
                    if declaration is not None and declaration.alias == move.alias:
                        found.append(
                            _Declared(mv, move.alias, parse_time(move.time, what="time"), declaration)
                        )
        except NotFound:
            self._declared.pop(name, None)
            return
        if found:
            self._declared[name] = found
        else:
            self._declared.pop(name, None)

    def _follow(self) -> tuple[set[str] | None, set[str]]:
        """Read the ledger since the last position: (data set names that got a new version,
        or None for "check every one" at the first tick; models whose events were read)."""
        if self.position is None:
            self._start()
        position = self.position or 0
        datasets: set[str] = set()
        models: set[str] = set()
        while True:
            events = self.registry.events_after(position, limit=MAX_PAGE)
            for event in events:
                if event.action == "dataset.registered":
                    datasets.add(parse_dataset_uri(event.subject)[0])
                models.update(event_models(event))
                position = event.seq
            self.position = position
            if len(events) < MAX_PAGE:
                break
        for name in models:
            self._read_model(name)
        if self._check_all:
            self._check_all = False
            return None, models
        return datasets, models

    # ---------------------------------------------------------------- what is due

    def _due(self) -> list[Firing]:
        """The firings due now, after reading the ledger since the last tick (which moves the
        position: hence private, called by :meth:`tick` only, which records and runs them)."""
        changed, _models = self._follow()
        at = utc(self.clock())
        firings: list[Firing] = []
        for name in sorted(self._declared):
            for d in self._declared[name]:
                cron = d.declaration.cron
                if cron is not None:
                    due = cron.previous(at)
                    if due > d.since:
                        firings.append(
                            Firing(
                                name,
                                d.alias,
                                d.source.uri,
                                "schedule",
                                f"schedule:{d.alias}:{to_text(due)}",
                                to_text(due),
                            )
                        )
                names = [n for n in d.declaration.on_data if changed is None or n in changed]
                new = self._new_data(d.source, names)
                if new:
                    key = "data:" + ",".join(sorted(set(new.values())))
                    firings.append(Firing(name, d.alias, d.source.uri, "data", key, data=new))
        return firings

    def _new_data(self, source: ModelVersion, names: list[str]) -> dict[str, str]:
        """role -> newest version, for each role whose data set is among ``names`` and has a
        version newer than the one ``source`` was trained with."""
        new: dict[str, str] = {}
        for entry in source.manifest.get("datasets") or ():
            role, uri = entry.get("role"), entry.get("uri")
            if not role or not uri:
                continue
            name, number = parse_dataset_uri(str(uri))
            if name not in names:
                continue
            try:
                newest = self.registry.datasets.get(name)
            except NotFound:
                continue
            if number is None or newest.version > number:
                new[str(role)] = newest.uri
        return new

    # ---------------------------------------------------------------- firing

    def tick(self) -> list[Firing]:
        """Fire what is due now: record each firing once, run its refresh; the firings this
        scheduler recorded, with their outcome (a firing another scheduler recorded first is
        left out)."""
        done: list[Firing] = []
        for firing in self._due():
            if (firing.source, firing.key) in self._recorded:
                continue
            details: dict[str, Any] = {"alias": firing.alias}
            if firing.due is not None:
                details["due"] = firing.due
            if firing.data:
                details["data"] = dict(firing.data)
            event = self.registry.record_refresh_trigger(
                firing.source, key=firing.key, trigger=firing.trigger, details=details
            )
            self._recorded.add((firing.source, firing.key))
            if event is None:
                continue  # another scheduler recorded it first, and runs it
            done.append(self._run(replace(firing, seq=event.seq)))
        return done

    def _run(self, firing: Firing) -> Firing:
        try:
            report = self.registry.refresh(firing.source, data=firing.data or None, progress=self.progress)
        except Exception as exc:  # any failure of the run is recorded, and the scheduler goes on
            error = exc.message if isinstance(exc, ModelLedgerError) else f"{type(exc).__name__}: {exc}"
            self.registry.record_refresh_failure(firing.source, key=firing.key, error=error)
            return replace(firing, error=error)
        return replace(firing, candidate=report.candidate, stage=report.stage)

    def run(
        self,
        *,
        interval: float = 60.0,
        stop: threading.Event | None = None,
        on_firing: Callable[[Firing], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        """Tick every ``interval`` seconds until ``stop`` is set. A tick that fails (the
        database away) is handed to ``on_error`` and the next tick tries again.

        >>> Scheduler(registry).run(interval=60, on_firing=print)  # doctest: +SKIP
        """
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
            raise InvalidInput(f"interval must be a positive number of seconds, got {interval!r}")
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                for firing in self.tick():
                    if on_firing is not None:
                        on_firing(firing)
            except ModelLedgerError as exc:
                if on_error is None:
                    raise
                on_error(exc)
            stop.wait(interval)
