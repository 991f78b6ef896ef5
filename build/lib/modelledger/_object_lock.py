"""S3 Object Lock: the retention every object the registry writes is given, and what an object holds.

:class:`ObjectLock` is the setting (``object_lock`` in ``Registry.open``, the config files,
``MODELLEDGER_OBJECT_LOCK`` and ``--object-lock``): a mode, ``governance`` or
``compliance``, a retention period, and whether to put a legal hold on every object too.
Its text form is ``MODE:PERIOD[:legal-hold]`` (``governance:30d``,
``compliance:52w:legal-hold``); ``off`` turns it off. :class:`ObjectRetention` is what S3
says one object version holds (mode, retain-until, legal hold): ``verify(retention=True)``
lists one per object, ``gc`` lists the ones it had to leave, and
:class:`~modelledger.errors.ObjectRetained` carries those an erasure could not remove.

Pure: no I/O here; :class:`~modelledger.stores.artifacts.ArtifactStore` sends the headers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from ._time import from_stored, parse_duration, to_iso
from .errors import InvalidInput

__all__ = ["LockMode", "ObjectLock", "ObjectRetention", "object_lock_from"]

LockMode = Literal["governance", "compliance"]
_MODES: tuple[str, ...] = get_args(LockMode)
_OFF = ("off", "none", "")
LEGAL_HOLD = "legal-hold"


@dataclass(frozen=True, slots=True)
class ObjectLock:
    """Write every artefact, manifest, data set file and capture file with S3 Object Lock.

    ``mode`` is ``governance`` (a user with ``s3:BypassGovernanceRetention`` may still
    shorten the retention or delete the version) or ``compliance`` (nobody, the root user
    included, can delete the version before ``retain-until``); ``period`` is how long each
    object version is kept from the moment it is written; ``legal_hold`` also puts a legal
    hold on it (kept until someone with ``s3:PutObjectLegalHold`` lifts it).

    >>> ObjectLock.parse("compliance:52w:legal-hold")
    ObjectLock(mode='compliance', period=datetime.timedelta(days=364), legal_hold=True)
    """

    mode: LockMode
    period: timedelta
    legal_hold: bool = False

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise InvalidInput(f"object_lock mode must be governance or compliance, got {self.mode!r}")
        if not isinstance(self.period, timedelta) or self.period <= timedelta(0):
            shown = _period_text(self.period) if isinstance(self.period, timedelta) else repr(self.period)
            raise InvalidInput(f"object_lock needs a retention period longer than 0, got {shown}")
        if not isinstance(self.legal_hold, bool):
            raise InvalidInput(f"object_lock legal_hold must be true or false, got {self.legal_hold!r}")

    @classmethod
    def parse(cls, text: str) -> ObjectLock:
        """``MODE:PERIOD[:legal-hold]``, as the CLI and ``MODELLEDGER_OBJECT_LOCK`` give it."""
        parts = [p.strip() for p in text.strip().split(":")]
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2].lower() != LEGAL_HOLD):
            raise InvalidInput(
                "object_lock must look like governance:30d or compliance:52w:legal-hold (or off), "
                f"got {text!r}"
            )
        mode = parts[0].lower()
        if mode not in _MODES:
            raise InvalidInput(f"object_lock mode must be governance or compliance, got {parts[0]!r}")
        period = parse_duration(parts[1], what="object_lock retention period")
        return cls(mode, period, len(parts) == 3)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.mode}:{_period_text(self.period)}" + (f":{LEGAL_HOLD}" if self.legal_hold else "")

    def headers(self, written: datetime) -> dict[str, Any]:
        """The PutObject parameters (boto3 names) of an object written at ``written``."""
        out: dict[str, Any] = {
            "ObjectLockMode": self.mode.upper(),
            "ObjectLockRetainUntilDate": written + self.period,
        }
        if self.legal_hold:
            out["ObjectLockLegalHoldStatus"] = "ON"
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "period": _period_text(self.period), "legal_hold": self.legal_hold}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObjectLock:
        """From a mapping (a ``[object_lock]`` table): ``mode``, ``period`` (``30d``) or ``days``,
        ``legal_hold``."""
        unknown = set(data) - {"mode", "period", "days", "legal_hold"}
        if unknown:
            raise InvalidInput(
                f"object_lock has unknown keys {sorted(unknown)} (known: mode, period or days, legal_hold)"
            )
        mode = str(data.get("mode", "")).lower()
        if mode not in _MODES:
            raise InvalidInput(f"object_lock mode must be governance or compliance, got {data.get('mode')!r}")
        if ("period" in data) == ("days" in data):
            raise InvalidInput(
                "object_lock needs a retention period: give period (e.g. 30d) or days, not both"
            )
        if "days" in data:
            days = data["days"]
            if isinstance(days, bool) or not isinstance(days, int):
                raise InvalidInput(f"object_lock days must be a whole number, got {days!r}")
            period = timedelta(days=days)
        else:
            period = parse_duration(str(data["period"]), what="object_lock retention period")
        return cls(mode, period, data.get("legal_hold", False))  # type: ignore[arg-type]


def _period_text(period: timedelta) -> str:
    """``period`` in the largest unit that divides it: ``30d``, ``52w``, ``90s``."""
    seconds = int(period.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds > 0 and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def object_lock_from(value: ObjectLock | Mapping[str, Any] | str | None) -> ObjectLock | None:
    """The setting from any form it is given in; None (or ``off``) when there is none.

    >>> object_lock_from({"mode": "governance", "days": 30})
    ObjectLock(mode='governance', period=datetime.timedelta(days=30), legal_hold=False)
    """
    if value is None or isinstance(value, ObjectLock):
        return value
    if isinstance(value, str):
        return None if value.strip().lower() in _OFF else ObjectLock.parse(value)
    if isinstance(value, Mapping):
        return ObjectLock.from_dict(value)
    raise InvalidInput(
        f"object_lock must be text such as governance:30d or a table, got {type(value).__name__}"
    )


@dataclass(frozen=True, slots=True)
class ObjectRetention:
    """What S3 Object Lock holds on one object version (``path`` relative to the artefact root).

    ``mode`` is ``governance``, ``compliance`` or None (no retention); ``retain_until`` the
    time before which S3 refuses to delete the version; ``legal_hold`` whether a legal hold
    is on (it blocks deletion whatever the date).
    """

    path: str
    mode: str | None
    retain_until: datetime | None
    legal_hold: bool = False
    version_id: str | None = None

    def active(self, at: datetime) -> bool:
        """Whether S3 refuses to delete this version at ``at``."""
        return self.legal_hold or (
            self.mode is not None and self.retain_until is not None and self.retain_until > at
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "mode": self.mode,
            "retain_until": to_iso(self.retain_until) if self.retain_until else None,
            "legal_hold": self.legal_hold,
            "version_id": self.version_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObjectRetention:
        until = data.get("retain_until")
        return cls(
            path=str(data["path"]),
            mode=data.get("mode"),
            retain_until=None if until is None else from_stored(until),
            legal_hold=bool(data.get("legal_hold", False)),
            version_id=data.get("version_id"),
        )
