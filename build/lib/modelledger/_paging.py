"""Paging: one limit rule and one opaque cursor for every listing.

A listing asks its store for ``limit + 1`` rows after the cursor's position; the extra
row only tells that another page exists. The cursor is the last row's sort key, encoded
so callers treat it as opaque.

>>> rows = ["a", "b", "c"]
>>> page = make_page(rows, 2, key=lambda r: r)
>>> page.items, decode_cursor(page.next_cursor, str)
(['a', 'b'], 'b')
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ._domain import Page
from .errors import InvalidInput

__all__ = ["MAX_PAGE", "check_limit", "decode_cursor", "encode_cursor", "make_page"]

MAX_PAGE = 1000
T = TypeVar("T")
K = TypeVar("K", int, str)


def check_limit(limit: object) -> int:
    """``limit`` if it is a whole number from 1 to :data:`MAX_PAGE`, else :class:`InvalidInput`."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}, got {limit!r}")
    return limit


def encode_cursor(value: int | str) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: type[K]) -> K | None:
    """The sort key a cursor carries (``None`` for no cursor); a cursor of the wrong kind is refused."""
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value: Any = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError, TypeError, AttributeError) as exc:
        raise InvalidInput(f"invalid cursor {cursor!r}") from exc
    if isinstance(value, bool) or not isinstance(value, kind):
        raise InvalidInput(f"invalid cursor {cursor!r}")
    return value


def make_page(rows: Sequence[T], limit: int, *, key: Callable[[T], int | str]) -> Page[T]:
    """The page of the first ``limit`` of ``rows`` (fetched as ``limit + 1``), with its next cursor."""
    nxt = encode_cursor(key(rows[limit - 1])) if len(rows) > limit else None
    return Page(items=list(rows[:limit]), next_cursor=nxt)
