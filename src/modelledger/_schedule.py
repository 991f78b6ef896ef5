"""When refreshes fire: cron schedules, and the scheduler that fires each due time once.

**Cron.** :func:`parse_cron` reads the five fields of a classic crontab line, in UTC::

    minute  hour  day-of-month  month  day-of-week
    0-59    0-23  1-31          1-12   0-7 (0 and 7 are Sunday)
                                JAN-DEC SUN-SAT

Each field is ``*``, a number or name, a range ``a-b``, a step ``*/n``, ``a-b/n`` or ``a/n``
(``a`` to the field's end), or a comma-separated list of those; names are case-insensitive.
``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily`` (``@midnight``) and
``@hourly`` stand for their usual lines. As in Vixie cron (the cron of most Linux systems),
when both day fields are restricted (neither starts with ``*``) a day matches if *either*
does: ``0 3 1 * MON`` fires on the 1st and on every Monday. A line that can never fire
(``0 0 30 2 *``) is refused when read.

>>> parse_cron("0 3 * * MON").next_after(datetime(2026, 12, 1, tzinfo=timezone.utc)).isoformat()
'2026-12-07T03:00:00+00:00'

**Declarations.** :class:`RefreshDeclaration` is a manifest's ``refresh`` section: when the
version wants refreshing (``schedule``, ``on_data``) and while holding which ``alias``. The
scheduler that acts on them is :mod:`modelledger._scheduler`.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from ._identifiers import validate_alias, validate_dataset_name
from .errors import InvalidInput, InvalidManifest

__all__ = ["CronSchedule", "RefreshDeclaration", "parse_cron", "utc"]

_UTC = timezone.utc
_MINUTE = timedelta(minutes=1)

_MONTHS = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
_DAYS = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}

# (name, lowest, highest, names)
_FIELDS: tuple[tuple[str, int, int, Mapping[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_ITEM = re.compile(r"^(?P<range>\*|[0-9A-Za-z]+(?:-[0-9A-Za-z]+)?)(?:/(?P<step>[0-9]+))?$")

# The longest a satisfiable line can wait between two firings: 29 February on a given weekday
# (when one day field is "*") recurs within 28 years, and a 2100-style century year without a
# leap day only stretches a 4-year wait to 8. Searching further means a bug, not a schedule.
_HORIZON_YEARS = 40


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A parsed cron line: the allowed values of each field, and how the two day fields combine.

    ``days_either`` is True when both day fields are restricted (a day matches if either
    does), False when at least one is ``*``-based (both must match).
    """

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday ... 6 = Saturday
    days_either: bool

    def matches(self, when: datetime) -> bool:
        """Whether the schedule fires in the minute ``when`` falls in (UTC; naive means UTC).

        >>> parse_cron("*/15 9-17 * * MON-FRI").matches(datetime(2026, 12, 1, 9, 45))
        True
        """
        t = utc(when)
        return (
            t.month in self.months
            and self._day_matches(t)
            and t.hour in self.hours
            and t.minute in self.minutes
        )

    def _day_matches(self, t: datetime) -> bool:
        in_days = t.day in self.days
        in_weekdays = (t.weekday() + 1) % 7 in self.weekdays  # Python: Monday 0; cron: Sunday 0
        return (in_days or in_weekdays) if self.days_either else (in_days and in_weekdays)

    def next_after(self, when: datetime) -> datetime:
        """The first time strictly after ``when`` at which the schedule fires (UTC, whole minute).

        >>> parse_cron("@daily").next_after(datetime(2026, 12, 1, 0, 0)).isoformat()
        '2026-12-02T00:00:00+00:00'
        """
        t = utc(when).replace(second=0, microsecond=0) + _MINUTE
        limit = t.year + _HORIZON_YEARS
        while t.year <= limit:
            if t.month not in self.months:
                t = _first_of_next_month(t)
            elif not self._day_matches(t):
                t = t.replace(hour=0, minute=0) + timedelta(days=1)
            elif t.hour not in self.hours:
                later = [h for h in self.hours if h > t.hour]
                t = t.replace(hour=min(later), minute=0) if later else _next_day(t)
            elif t.minute not in self.minutes:
                later = [m for m in self.minutes if m > t.minute]
                t = t.replace(minute=min(later)) if later else _next_hour(t)
            else:
                return t
        raise InvalidInput(f"cron schedule {self.expression!r} does not fire in {_HORIZON_YEARS} years")

    def previous(self, when: datetime) -> datetime:
        """The last time at or before ``when`` at which the schedule fired (UTC, whole minute).

        >>> parse_cron("0 3 * * MON").previous(datetime(2026, 12, 7, 3, 0, 30)).isoformat()
        '2026-12-07T03:00:00+00:00'
        """
        t = utc(when).replace(second=0, microsecond=0)
        limit = t.year - _HORIZON_YEARS
        while t.year >= limit:
            if t.month not in self.months:
                t = t.replace(day=1, hour=0, minute=0) - _MINUTE  # the last minute of the month before
            elif not self._day_matches(t):
                t = t.replace(hour=0, minute=0) - _MINUTE
            elif t.hour not in self.hours:
                earlier = [h for h in self.hours if h < t.hour]
                t = (
                    t.replace(hour=max(earlier), minute=59)
                    if earlier
                    else t.replace(hour=0, minute=0) - _MINUTE
                )
            elif t.minute not in self.minutes:
                earlier = [m for m in self.minutes if m < t.minute]
                t = t.replace(minute=max(earlier)) if earlier else t.replace(minute=0) - _MINUTE
            else:
                return t
        raise InvalidInput(f"cron schedule {self.expression!r} did not fire in {_HORIZON_YEARS} years")


def utc(when: datetime) -> datetime:
    """``when`` in UTC (a naive time is taken as UTC)."""
    if not isinstance(when, datetime):
        raise InvalidInput(f"a time must be a datetime, got {type(when).__name__}")
    return when.replace(tzinfo=_UTC) if when.tzinfo is None else when.astimezone(_UTC)


def _first_of_next_month(t: datetime) -> datetime:
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return t.replace(year=year, month=month, day=1, hour=0, minute=0)


def _next_day(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0) + timedelta(days=1)


def _next_hour(t: datetime) -> datetime:
    return t.replace(minute=0) + timedelta(hours=1)


def parse_cron(expression: str) -> CronSchedule:
    """Read a five-field cron line (see the module's documentation); InvalidInput names the field.

    >>> sorted(parse_cron("0 3 * * MON-WED,FRI").weekdays)
    [1, 2, 3, 5]
    """
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidInput("a cron schedule must be text such as '0 3 * * MON'")
    text = " ".join(expression.split())
    line = _MACROS.get(text.lower(), text)
    if line.startswith("@"):
        raise InvalidInput(f"cron schedule {expression!r}: unknown macro (use one of {', '.join(_MACROS)})")
    parts = line.split(" ")
    if len(parts) != 5:
        raise InvalidInput(
            f"cron schedule {expression!r} has {len(parts)} fields: write five "
            "(minute hour day-of-month month day-of-week), e.g. '0 3 * * MON'"
        )
    sets = [_field(expression, part, *spec) for part, spec in zip(parts, _FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in sets[4])  # 7 is Sunday too
    schedule = CronSchedule(
        expression=text,
        minutes=sets[0],
        hours=sets[1],
        days=sets[2],
        months=sets[3],
        weekdays=weekdays,
        days_either=not parts[2].startswith("*") and not parts[4].startswith("*"),
    )
    if not schedule.days_either and not any(
        day <= _longest(month) for month in schedule.months for day in schedule.days
    ):
        raise InvalidInput(f"cron schedule {expression!r} can never fire: no month has that day")
    return schedule


def _longest(month: int) -> int:
    return 29 if month == 2 else calendar.monthrange(2001, month)[1]


def _field(
    expression: str, text: str, name: str, low: int, high: int, names: Mapping[str, int]
) -> frozenset[int]:
    def bad(problem: str) -> InvalidInput:
        return InvalidInput(f"cron schedule {expression!r}: {name} field {text!r} {problem}")

    def number(token: str) -> int:
        value = names.get(token.upper()) if not token.isdigit() else int(token)
        if value is None:
            known = f" or a name ({', '.join(names)})" if names else ""
            raise bad(f"has {token!r}, which is not a number{known}")
        if not low <= value <= high:
            raise bad(f"has {value}, outside {low}-{high}")
        return value

    values: set[int] = set()
    for item in text.split(","):
        m = _ITEM.match(item)
        if m is None:
            raise bad("cannot be read (write *, 5, 1-5, */15, 1-30/2 or a list of those)")
        span, step_text = m.group("range"), m.group("step")
        step = 1 if step_text is None else int(step_text)
        if step < 1:
            raise bad("has a step of 0")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            a, b = span.split("-")
            first, last = number(a), number(b)
            if first > last:
                raise bad(f"has the range {span}, which runs backwards")
        else:
            first = number(span)
            last = high if step_text is not None else first  # "5/15": from 5 to the end, every 15
        values.update(range(first, last + 1, step))
    return frozenset(values)


# ---------------------------------------------------------------- declarations

_DECLARATION_KEYS = ("schedule", "on_data", "alias")


@dataclass(frozen=True, slots=True)
class RefreshDeclaration:
    """When a version asks to be refreshed: on a cron ``schedule`` (UTC), when a new version of
    a data set in ``on_data`` lands, or both; only while it holds ``alias``.

    >>> RefreshDeclaration.from_manifest({"refresh": {"schedule": "0 3 * * MON"}}).alias
    'production'
    """

    schedule: str | None = None
    on_data: tuple[str, ...] = ()
    alias: str = "production"

    @property
    def cron(self) -> CronSchedule | None:
        return None if self.schedule is None else parse_cron(self.schedule)

    def to_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule, "on_data": list(self.on_data), "alias": self.alias}

    @classmethod
    def from_dict(cls, raw: Any) -> RefreshDeclaration:
        """Validate a manifest's ``refresh`` section; :class:`InvalidManifest` names the field."""
        if not isinstance(raw, Mapping):
            raise InvalidManifest("refresh", "must be a mapping such as {schedule: '0 3 * * MON'}")
        unknown = sorted(set(raw) - set(_DECLARATION_KEYS))
        if unknown:
            raise InvalidManifest(
                f"refresh.{unknown[0]}", f"is not a refresh setting ({', '.join(_DECLARATION_KEYS)})"
            )
        schedule = raw.get("schedule")
        if schedule is not None:
            if not isinstance(schedule, str):
                raise InvalidManifest("refresh.schedule", "must be a cron line such as '0 3 * * MON'")
            try:
                schedule = parse_cron(schedule).expression
            except InvalidInput as exc:
                raise InvalidManifest("refresh.schedule", exc.message) from exc
        on_data = raw.get("on_data") or []
        if isinstance(on_data, str):
            on_data = [on_data]
        if not isinstance(on_data, (list, tuple)):
            raise InvalidManifest("refresh.on_data", "must be a list of data set names")
        names: list[str] = []
        for i, name in enumerate(on_data):
            try:
                names.append(validate_dataset_name(name))
            except InvalidInput as exc:
                raise InvalidManifest(f"refresh.on_data[{i}]", exc.message) from exc
        try:
            alias = validate_alias(raw.get("alias") or "production")
        except InvalidInput as exc:
            raise InvalidManifest("refresh.alias", exc.message) from exc
        if schedule is None and not names:
            raise InvalidManifest("refresh", "declares neither a schedule nor on_data: say when to refresh")
        return cls(schedule=schedule, on_data=tuple(dict.fromkeys(names)), alias=alias)

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> RefreshDeclaration | None:
        """The declaration a version's manifest makes (None when it makes none)."""
        raw = manifest.get("refresh")
        return None if not raw else cls.from_dict(raw)
