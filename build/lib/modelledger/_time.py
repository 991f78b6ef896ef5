"""Time: the one place that reads, writes and tells the time.

Every time modelledger stores is UTC. Times given by a user may be a ``datetime`` (naive
means UTC), ISO 8601 / RFC 3339 text (``2026-11-01``, ``2026-11-01T09:30:00Z``,
``...+02:00``), or relative: ``now``, ``today``, ``yesterday``, or an age such as ``90s``,
``30m``, ``24h``, ``7d``, ``2w`` (that long before now).

>>> parse_time("2026-11-01T09:30:00Z").isoformat()
'2026-11-01T09:30:00+00:00'
>>> parse_duration("7d")
datetime.timedelta(days=7)
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from .errors import InvalidInput

__all__ = [
    "EPOCH",
    "from_stored",
    "now",
    "now_text",
    "parse_duration",
    "parse_time",
    "to_iso",
    "to_ms",
    "to_text",
]

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_UTC = timezone.utc
_DURATION = re.compile(r"\s*(\d+)\s*(s|m|h|d|w)\s*")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(_UTC)


def now_text() -> str:
    """The current time as RFC 3339 UTC text with microseconds (the ledger's time format).

    >>> now_text()  # doctest: +SKIP
    '2026-11-01T12:00:00.123456Z'
    """
    # isoformat is several times cheaper than strftime; "+00:00" becomes "Z"
    return datetime.now(_UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def to_text(value: datetime) -> str:
    """``value`` as RFC 3339 UTC text with microseconds, comparable as a string with the ledger's."""
    utc = value.replace(tzinfo=_UTC) if value.tzinfo is None else value.astimezone(_UTC)
    return utc.isoformat(timespec="microseconds")[:-6] + "Z"


def to_iso(value: datetime) -> str:
    """``value`` in UTC as ISO 8601 with its ``+00:00`` offset (the form of ``to_dict`` outputs)."""
    return value.astimezone(_UTC).isoformat()


def to_ms(value: datetime) -> int:
    """Milliseconds since the Unix epoch."""
    return (value - EPOCH) // timedelta(milliseconds=1)


def parse_duration(value: str | timedelta, *, what: str = "duration") -> timedelta:
    """``90s``, ``30m``, ``24h``, ``7d``, ``2w`` or ``0`` as a timedelta.

    >>> parse_duration("24h")
    datetime.timedelta(days=1)
    """
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise InvalidInput(f"{what} must not be negative, got {value!r}")
        return value
    if isinstance(value, str) and value.strip() == "0":
        return timedelta(0)
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidInput(f"{what} must look like 90s, 30m, 24h, 7d or 2w, got {value!r}")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def parse_time(value: datetime | str, *, what: str = "time") -> datetime:
    """A time given by a user, as an aware UTC ``datetime`` (see the module documentation).

    >>> parse_time("2026-11-01").isoformat()
    '2026-11-01T00:00:00+00:00'
    >>> parse_time("yesterday") < parse_time("today") <= parse_time("now")
    True
    """
    if isinstance(value, datetime):
        return value.replace(tzinfo=_UTC) if value.tzinfo is None else value.astimezone(_UTC)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{what} must be a datetime or text such as 2026-11-01T09:30:00Z, got {value!r}")
    text = value.strip()
    word = text.lower()
    if word == "now":
        return now()
    if word in ("today", "yesterday"):
        midnight = now().replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight if word == "today" else midnight - timedelta(days=1)
    if _DURATION.fullmatch(text):
        return now() - parse_duration(text, what=what)
    try:
        # Python 3.10's fromisoformat knows no "Z"
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"invalid {what} {value!r}: use ISO 8601 (2026-11-01T09:30:00Z), a date, "
            "now, today, yesterday, or an age such as 7d"
        ) from None
    return parsed.replace(tzinfo=_UTC) if parsed.tzinfo is None else parsed.astimezone(_UTC)


def from_stored(value: datetime | str) -> datetime:
    """A time read back from a database: naive text or datetime means UTC.

    This runs per row of every listing, so it avoids the general parser.
    """
    if isinstance(value, str):
        # Appending the offset costs a sixth of parsing and then calling .replace(tzinfo=...).
        naive = value[-6:-5] not in ("+", "-") and not value.endswith("Z")
        value = datetime.fromisoformat(value + "+00:00" if naive else value.replace("Z", "+00:00"))
    if value.tzinfo is _UTC:
        return value
    if value.tzinfo is None:
        return value.replace(tzinfo=_UTC)
    return value.astimezone(_UTC)
