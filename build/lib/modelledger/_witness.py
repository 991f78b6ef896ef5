"""Checkpoints kept outside the registry, on a policy: what bounds the gap at the tail.

Every governed write signs its own checkpoint in the database (the signature that says who
authorised it), so the database always holds one per write. What those cannot show is a
ledger cut short: whoever deletes the last writes deletes their checkpoints with them. Only a
checkpoint kept elsewhere shows it (``verify --trusted-checkpoint``). A
:class:`CheckpointWitness` keeps copies of the newest checkpoint in a folder of its own (a
local path or any fsspec URL, ideally storage the database's writers cannot delete from),
one write-once file per copy (``checkpoint-<seq>.json``), on a density policy: every
``every_events`` events, every ``every_seconds`` seconds, and at the end of the session.
``docs/verify.md`` states the gap each setting leaves.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from ._ledger import Checkpoint
from .errors import AlreadyExists, InvalidInput
from .stores.artifacts import ArtifactStore
from .stores.protocols import MetadataStore

__all__ = ["CheckpointWitness", "witnessed_checkpoint"]

_PREFIX, _SUFFIX = "checkpoint-", ".json"


def _name(seq: int) -> str:
    return f"{_PREFIX}{seq:012d}{_SUFFIX}"


def _seq_of(name: str) -> int | None:
    if not (name.startswith(_PREFIX) and name.endswith(_SUFFIX)):
        return None
    digits = name[len(_PREFIX) : -len(_SUFFIX)]
    return int(digits) if digits.isdigit() else None


class CheckpointWitness:
    """Copies the newest committed checkpoint to ``folder`` when ``every_events`` events or
    more came after the last copy, when ``every_seconds`` seconds or more passed since it
    (and anything is new), and at the end of the session (:meth:`Registry.close`), whatever
    the policy. It looks when a governed write of its registry starts, and when the registry
    closes: it copies only what is committed, never a write still in flight. ``None`` turns
    a rule off; with both off, only the end of each session is kept.

    >>> registry.witness_checkpoints("/mnt/worm", every_events=1000, every_seconds=300)  # doctest: +SKIP
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        every_events: int | None = 1000,
        every_seconds: float | None = 300.0,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if every_events is not None and every_events < 1:
            raise InvalidInput(f"every_events must be at least 1, got {every_events}")
        if every_seconds is not None and every_seconds <= 0:
            raise InvalidInput(f"every_seconds must be positive, got {every_seconds}")
        url = folder.as_uri() if isinstance(folder, Path) else folder
        if "://" not in url:
            url = Path(url).expanduser().resolve().as_uri()
        self.every_events, self.every_seconds = every_events, every_seconds
        self._store = ArtifactStore(url, **dict(storage_options or {}))
        self._last: int | None = None  # seq of the newest copy (read from the folder once)
        self._since = time.monotonic()

    def last_seq(self) -> int:
        """The seq of the newest copy in the folder (0: none yet)."""
        if self._last is None:
            newest = witnessed_checkpoint(self._store)
            self._last = newest.seq if newest is not None else 0
        return self._last

    def offer(self, meta: MetadataStore, *, closing: bool = False) -> Checkpoint | None:
        """Copy the store's newest checkpoint if the policy (or ``closing``) says so; returns
        the checkpoint copied, if any."""
        head = meta.ledger_head()[0]
        last = self.last_seq()
        if head <= last:
            return None
        due = closing or (self.every_events is not None and head - last >= self.every_events)
        if not due and self.every_seconds is not None:
            due = time.monotonic() - self._since >= self.every_seconds
        if not due:
            return None
        found = meta.checkpoints(after=max(last, head - 1) if head > 0 else None)
        if not found:
            return None  # the head is not signed (yet): nothing a copy could vouch for
        newest = found[-1]
        text = json.dumps(newest.to_dict(), sort_keys=True).encode()
        with contextlib.suppress(AlreadyExists):  # another process copied the same checkpoint
            self._store.put_bytes(_name(newest.seq), text)
        self._last, self._since = newest.seq, time.monotonic()
        return newest


def witnessed_checkpoint(folder: ArtifactStore | str | Path) -> Checkpoint | None:
    """The newest checkpoint a :class:`CheckpointWitness` kept in ``folder``, or None."""
    store = folder
    if not isinstance(store, ArtifactStore):
        text = folder.as_uri() if isinstance(folder, Path) else str(folder)
        store = ArtifactStore(text if "://" in text else Path(text).expanduser().resolve().as_uri())
    seqs = [(seq, name) for name in store.list_names("") if (seq := _seq_of(name)) is not None]
    if not seqs:
        return None
    _seq, name = max(seqs)
    try:
        return Checkpoint.from_dict(json.loads(store.read_bytes(name)))
    except ValueError as exc:
        raise InvalidInput(f"the witnessed checkpoint {name} is not a checkpoint: {exc}") from exc
