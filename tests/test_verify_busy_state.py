"""``verify`` compares the state tables with a replay of the ledger while writers keep writing.

On a store whose state is many requests rather than one snapshot (DynamoDB), the ledger head
can move during every read of the tables. The store here is the registry's own, with a real
write landing in the middle of each read of the state tables, so the head never holds still:
an entry that the write touched must be accepted (it was read before the write), and an entry
edited behind the library's back must still be reported."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from tests.helpers import DynamoAttacker

from modelledger import Registry


class _WriteDuringEachRead:
    """The registry's store, but a real write lands as each ``current_state`` starts: the read
    sees it, though the ledger head read just before did not."""

    def __init__(self, store: Any, write: Callable[[], None]) -> None:
        self._store = store
        self._write = write
        self.reads = 0

    def current_state(self) -> Any:
        self._write()
        self.reads += 1
        return self._store.current_state()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _folder(tmp_path: Path, name: str) -> Path:
    src = tmp_path / name
    src.mkdir()
    (src / "weights.txt").write_text(name)
    return src


def _busy(registry: Registry, db_url: str, tmp_path: Path) -> tuple[Registry, _WriteDuringEachRead]:
    for i in range(2):
        registry.register("m", _folder(tmp_path, f"m{i}"), capture=False, load_check=False)
    registry.register("other", _folder(tmp_path, "o"), capture=False, load_check=False)
    writer = Registry.open(db_url, artifacts=str(tmp_path / "artifacts"), actor="alice@example.com")
    moves = iter(range(10_000))
    busy = _WriteDuringEachRead(
        registry._meta, lambda: writer.set_alias("m", "canary", 1 + next(moves) % 2, reason="busy")
    )
    registry._meta = busy  # type: ignore[assignment]
    return writer, busy


def test_entries_moving_during_the_read_are_not_differences(
    registry: Registry, db_url: str, tmp_path: Path
) -> None:
    writer, busy = _busy(registry, db_url, tmp_path)
    try:
        report = registry.verify(record=False, grace="0")
    finally:
        writer.close()
    assert busy.reads >= 2  # the head moved during every read: the tolerant comparison ran
    assert report.ok, [str(p) for p in report.problems]


def test_an_edited_entry_is_reported_while_others_move(
    registry: Registry, db_url: str, tmp_path: Path
) -> None:
    writer, busy = _busy(registry, db_url, tmp_path)
    if db_url.startswith("dynamodb:"):
        editor = DynamoAttacker(db_url)
        state = next(i for i in editor.model_items("other") if i["sk"].startswith("T#"))
        editor.put_state({**state, "stage": "approved", "approved_by": "mallory"})
    else:
        engine = sa.create_engine(db_url)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE version_state SET stage = 'approved', approved_by = 'mallory' "
                "WHERE model_id = (SELECT id FROM models WHERE name = 'other')"
            )
        engine.dispose()
    try:
        report = registry.verify(record=False, grace="0")
    finally:
        writer.close()
    assert busy.reads >= 2
    assert [(p.kind, p.path) for p in report.problems] == [("state", "state of models:/other/1")]
