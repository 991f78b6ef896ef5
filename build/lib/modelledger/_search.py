"""Searching versions: a small query language and keyword filters, both to one :class:`VersionQuery`.

A query is conditions joined by ``and``::

    stage = 'approved' and metrics.auc > 0.8 and registered_by = 'alice@bank.example'
    model = credit-risk and created >= '2026-11-01' and alias = production

Fields: ``model``, ``version``, ``stage``, ``alias``, ``registered_by`` (the member the ledger
proves registered it), ``created`` (a time: RFC 3339, a date, or a relative time such as
``7d``), ``metrics.<name>`` and ``tags.<key>``. Operators: ``=``, ``!=``, ``<``, ``<=``, ``>``,
``>=`` (``alias`` and ``tags`` take ``=`` only, ``stage``, ``model`` and ``registered_by``
``=`` and ``!=``). Values are numbers, quoted strings, or bare words. Every condition is
answered from an index (the stores keep metrics in their own indexed table), so a search never
reads every version.

>>> parse_query("stage = 'approved' and metrics.auc > 0.8").conditions[1]
Condition(field='metrics.auc', op='>', value=0.8)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._lifecycle import STAGES
from ._time import parse_time
from .errors import InvalidInput

__all__ = ["Condition", "VersionQuery", "parse_query", "query_from_filters"]

_OPS = ("=", "!=", "<", "<=", ">", ">=")
_EQUALITY = ("=", "!=")
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<field>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_.\-]+)?)\s*
        (?P<op>!=|>=|<=|=|>|<)\s*
        (?:'(?P<sq>[^']*)'|"(?P<dq>[^"]*)"|(?P<bare>[^\s'"]+))
    )\s*""",
    re.VERBOSE,
)
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)
MAX_CONDITIONS = 20


@dataclass(frozen=True, slots=True)
class Condition:
    """One ``field op value`` of a query; ``value`` is a float for numeric fields, a datetime
    for ``created``, a string otherwise."""

    field: str
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class VersionQuery:
    """Conditions that every version found meets (their conjunction)."""

    conditions: tuple[Condition, ...] = ()

    def __and__(self, other: VersionQuery) -> VersionQuery:
        return VersionQuery(self.conditions + other.conditions)


def _number(field: str, raw: Any) -> float:
    if isinstance(raw, bool):
        raise InvalidInput(f"{field} compares with a number, got {raw!r}")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise InvalidInput(f"{field} compares with a number, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidInput(f"{field} compares with a finite number, got {raw!r}")
    return value


def condition(field: str, op: str, raw: Any) -> Condition:
    """A checked condition: the field known, the operator allowed for it, the value typed."""
    if op not in _OPS:
        raise InvalidInput(f"unknown operator {op!r}: use one of {', '.join(_OPS)}")
    base, _, sub = field.partition(".")
    if base in ("metrics", "tags"):
        if not sub:
            raise InvalidInput(f"name the {base[:-1]}: {base}.<name>")
        if base == "tags":
            if op != "=":
                raise InvalidInput(f"{field} takes = only")
            return Condition(field, op, str(raw))
        return Condition(field, op, _number(field, raw))
    if sub:
        raise InvalidInput(f"unknown field {field!r}")
    if base == "version":
        return Condition(field, op, _number(field, raw))
    if base == "created":
        when: datetime = raw if isinstance(raw, datetime) else parse_time(str(raw), what="created")
        return Condition(field, op, when)
    if base in ("model", "registered_by", "stage", "alias"):
        allowed = ("=",) if base == "alias" else _EQUALITY
        if op not in allowed:
            raise InvalidInput(f"{field} takes {' or '.join(allowed)} only")
        value = str(raw)
        if base == "stage" and value not in STAGES:
            raise InvalidInput(f"unknown stage {value!r}: stages are {', '.join(STAGES)}")
        return Condition(field, op, value)
    known = "model, version, stage, alias, registered_by, created, metrics.<name>, tags.<key>"
    raise InvalidInput(f"unknown field {field!r}: search by {known}")


def parse_query(text: str) -> VersionQuery:
    """Parse ``field op value [and ...]`` (see the module documentation)."""
    if not isinstance(text, str) or not text.strip():
        return VersionQuery()
    if len(text) > 2000:
        raise InvalidInput("a search query is at most 2,000 characters")
    parts = _AND.split(text.strip())
    if len(parts) > MAX_CONDITIONS:
        raise InvalidInput(f"a search joins at most {MAX_CONDITIONS} conditions")
    out = []
    for part in parts:
        m = _TOKEN.fullmatch(part)
        if m is None:
            raise InvalidInput(
                f"cannot read {part!r}: write field op value, such as stage = 'approved' or metrics.auc > 0.8"
            )
        raw = next(v for v in (m["sq"], m["dq"], m["bare"]) if v is not None)
        out.append(condition(m["field"], m["op"], raw))
    return VersionQuery(tuple(out))


def query_from_filters(
    *,
    model: str | None = None,
    stage: str | None = None,
    alias: str | None = None,
    registered_by: str | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    tags: Mapping[str, str] | None = None,
    metrics: Mapping[str, str] | None = None,
) -> VersionQuery:
    """Keyword filters as a query; ``metrics`` maps a name to a comparison such as ``">= 0.8"``."""
    out = []
    for field, value in (
        ("model", model),
        ("stage", stage),
        ("alias", alias),
        ("registered_by", registered_by),
    ):
        if value is not None:
            out.append(condition(field, "=", value))
    if since is not None:
        out.append(condition("created", ">=", since))
    if until is not None:
        out.append(condition("created", "<", until))
    for key, value in (tags or {}).items():
        out.append(condition(f"tags.{key}", "=", value))
    for name, comparison in (metrics or {}).items():
        m = re.fullmatch(r"\s*(!=|>=|<=|=|>|<)\s*(\S+)\s*", str(comparison))
        if m is None:
            raise InvalidInput(f"metric {name}: write a comparison such as '>= 0.8', got {comparison!r}")
        out.append(condition(f"metrics.{name}", m[1], m[2]))
    return VersionQuery(tuple(out))
