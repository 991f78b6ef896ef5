"""Workload pieces the benches share (not measurements)."""

from __future__ import annotations

from typing import Any


def alias_move_drafts(model: str, start: int, count: int) -> list[Any]:
    """``count`` moves of ``model``'s ``@champion`` between versions 1 and 2, moves ``start``
    onwards, as the governed write of ``Registry.set_alias`` drafts them: one ledger event
    each, so a long alias history is built in a few governed writes."""
    from modelledger._lifecycle import EventDraft

    out = []
    for i in range(start, start + count):
        version, previous = 1 + i % 2, (None if i == 0 else 1 + (i - 1) % 2)
        data = {
            "model": model,
            "alias": "champion",
            "version": version,
            "previous": previous,
            "aliases": {"champion": version},
        }
        out.append(EventDraft("alias.set", f"models:/{model}@champion", data))
    return out
