"""Reading captured predictions back: one prediction by id, or a version's rows for a time range.

The files are those of :mod:`modelledger._serving.capture_writer`; a lookup by id reads
one folder listing (the id's date), opens only the file whose name range holds the id
and reads only the row group whose statistics do. Receipts are rebuilt from the rows,
audit path included (:func:`receipt_from_row`, :func:`receipts_from_table`).

>>> reader = CaptureReader(ArtifactStore("file:///data/registry/artifacts"))  # doctest: +SKIP
>>> reader.find(version, "01J2Y6J0S3000000AE4ZC2R1T7")["receipt"]  # doctest: +SKIP
>>> reader.read(version, since="7d").to_pandas()  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .._time import parse_time, to_ms
from ..errors import IntegrityError, InvalidInput
from .capture_writer import capture_schema, date_folder, parse_part_name, path_from_tree, predictions_folder
from .receipts import InclusionProof, Receipt, id_ms, parse_prediction_id, rfc3339_ms

if TYPE_CHECKING:
    import pyarrow as pa

    from .._domain import ModelVersion
    from ..stores.artifacts import ArtifactStore

__all__ = ["CaptureReader", "receipt_from_row", "receipts_from_table"]


def receipt_from_row(row: Mapping[str, Any], tree: bytes | None = None) -> Receipt:
    """Rebuild the receipt of one captured row (a dict with the capture columns).

    A row of a call with several rows needs its call's ``tree``: the row's own ``tree``
    value when it has one, else the value on the call's first captured row (same
    ``root``). :meth:`CaptureReader.find` and :func:`receipts_from_table` find it for you.

    >>> row = CaptureReader(store).read(version).slice(0, 1).to_pylist()[0]  # doctest: +SKIP
    >>> receipt_from_row(row).prediction_id  # doctest: +SKIP
    """
    pid = row["prediction_id"]
    size, index = int(row["tree_size"]), int(row["leaf_index"])
    if size > 1:
        tree = row.get("tree") or tree
        if tree is None:
            raise InvalidInput(f"the receipt of {pid} needs the Merkle tree of its call (root {row['root']})")
        path = path_from_tree(bytes(tree), index, size)
    else:
        path = ()
    return Receipt(
        prediction_id=pid,
        model=row["model"],
        version=int(row["version"]),
        digest=row["digest"],
        input_digest=row["input_digest"],
        output=json.loads(row["output"]),
        time=rfc3339_ms(id_ms(pid)),
        key_id=row["key_id"],
        proof=InclusionProof(leaf_index=index, tree_size=size, audit_path=path, root=row["root"]),
        signature=row["signature"],
    )


def receipts_from_table(table: pa.Table) -> list[Receipt]:
    """The receipt of every row of a table of captured predictions, in row order.

    >>> receipts = receipts_from_table(registry.predictions("models:/credit-risk/3"))  # doctest: +SKIP
    >>> all(verify_receipt(r, public_pem) for r in receipts)  # doctest: +SKIP
    True
    """
    trees: dict[str, bytes] = {}
    for root, tree in zip(table.column("root").to_pylist(), table.column("tree").to_pylist(), strict=True):
        if tree is not None:
            trees[root] = tree
    return [receipt_from_row(row, trees.get(row["root"])) for row in table.to_pylist()]


def _prediction_record(row: Mapping[str, Any], tree: bytes | None) -> dict[str, Any]:
    receipt = receipt_from_row(row, tree)
    return {
        "prediction_id": receipt.prediction_id,
        "time": receipt.time,
        "model": receipt.model,
        "version": receipt.version,
        "digest": receipt.digest,
        "input_digest": receipt.input_digest,
        "input": json.loads(row["input"]),
        "output": receipt.output,
        "receipt": receipt.to_dict(),
    }


def _find_tree(parquet: Any, group: int, table: pa.Table, root: str, where: str) -> bytes:
    """The tree stored on the first captured row of the call with this root: here or in an earlier group."""
    import pyarrow.compute as pc  # heavy: loaded on first use so `import modelledger` stays fast

    for g in range(group, -1, -1):
        if g != group:
            table = parquet.read_row_group(g, columns=["root", "tree"])
        roots = table.column("root")
        found = table.filter(pc.and_(pc.equal(roots, root), pc.is_valid(table.column("tree"))))
        if found.num_rows:
            return bytes(found.column("tree")[0].as_py())
        if roots[0].as_py() != root:
            break  # the call's rows start in this group, and its first row has no tree
    raise IntegrityError(where, f"the Merkle tree of the call with root {root} is missing")


def _sorted_by_id(tables: list[pa.Table]) -> pa.Table:
    import pyarrow as pa  # heavy: loaded on first use so `import modelledger` stays fast
    import pyarrow.compute as pc  # heavy: loaded on first use so `import modelledger` stays fast

    if not tables:
        return capture_schema().empty_table()
    table = pa.concat_tables(tables)
    return table.take(pc.sort_indices(table, [("prediction_id", "ascending")]))


class CaptureReader:
    """Reads the predictions captured in an artefact store.

    Times (``since``, ``until``) are what :func:`~modelledger._time.parse_time` takes: a
    datetime (naive means UTC), ISO 8601 text, or ``today``, ``yesterday``, ``7d``...
    """

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    def _parts(self, folder: str) -> list[tuple[str, str, str]]:
        """(first id, last id, file name) of each capture file in a date folder, in order."""
        out = []
        for name in self.store.list_names(folder):
            ids = parse_part_name(name)
            if ids is not None:
                out.append((*ids, name))
        out.sort()
        return out

    def find(self, version: ModelVersion, prediction_id: str) -> dict[str, Any] | None:
        """The captured prediction ``prediction_id`` of ``version``, or None if it was not captured.

        Returns ``prediction_id``, ``time``, ``model``, ``version``, ``digest``,
        ``input_digest``, ``input`` (the row, as JSON data), ``output`` and ``receipt`` (the
        receipt as a dict; check it with :func:`~modelledger._serving.receipts.verify_receipt`).
        An id made by another version gives None; a string that is no prediction id raises
        :class:`~modelledger.errors.InvalidInput`.
        """
        import pyarrow.compute as pc  # heavy: loaded on first use so `import modelledger` stays fast
        import pyarrow.parquet as pq  # heavy: loaded on first use so `import modelledger` stays fast

        pid = prediction_id.upper() if isinstance(prediction_id, str) else prediction_id
        when, key = parse_prediction_id(pid)
        if version.key and key != version.key:
            return None
        folder = date_folder(version.folder, when.date().isoformat())
        for first, last, name in self._parts(folder):
            if not first <= pid <= last:
                continue
            with self.store.open_input(f"{folder}/{name}") as source:
                parquet = pq.ParquetFile(source)
                meta = parquet.metadata
                column = parquet.schema_arrow.get_field_index("prediction_id")
                for group in range(meta.num_row_groups):
                    stats = meta.row_group(group).column(column).statistics
                    if stats is not None and stats.has_min_max and not stats.min <= pid <= stats.max:
                        continue
                    table = parquet.read_row_group(group)
                    hits = table.filter(pc.equal(table.column("prediction_id"), pid))
                    if hits.num_rows:
                        row = hits.slice(0, 1).to_pylist()[0]
                        tree = row["tree"]
                        if tree is None and row["tree_size"] > 1:
                            tree = _find_tree(parquet, group, table, row["root"], f"{folder}/{name}")
                        return _prediction_record(row, tree)
        return None

    def read(
        self,
        version: ModelVersion,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
    ) -> pa.Table:
        """The captured predictions of ``version`` with ``since <= time < until``, sorted by id.

        Only the date folders in range are listed, and only the files whose id range (hence
        time range) overlaps are read.
        """
        return self.read_versions([version], since, until)

    def read_versions(
        self,
        versions: Iterable[ModelVersion],
        since: datetime | str | None = None,
        until: datetime | str | None = None,
    ) -> pa.Table:
        """:meth:`read` of several versions at once, as one table sorted by id."""
        start = None if since is None else parse_time(since, what="since")
        end = None if until is None else parse_time(until, what="until")
        return _sorted_by_id([t for v in versions for t in self._tables(v, start, end)])

    def _tables(self, version: ModelVersion, start: datetime | None, end: datetime | None) -> list[pa.Table]:
        """The rows of each of the version's files in the time range, filtered where the file
        straddles one of its ends."""
        import pyarrow as pa  # heavy: loaded on first use so `import modelledger` stays fast
        import pyarrow.compute as pc  # heavy: loaded on first use so `import modelledger` stays fast
        import pyarrow.parquet as pq  # heavy: loaded on first use so `import modelledger` stays fast

        start_ms = to_ms(start) if start else None
        end_ms = to_ms(end) if end else None
        base = predictions_folder(version.folder)
        tables = []
        for entry in self.store.list_names(base):
            if not entry.startswith("date="):
                continue
            day = entry[5:]
            if (start and day < start.date().isoformat()) or (end and day > end.date().isoformat()):
                continue
            for first, last, name in self._parts(f"{base}/{entry}"):
                lo, hi = id_ms(first), id_ms(last)
                if (start_ms is not None and hi < start_ms) or (end_ms is not None and lo >= end_ms):
                    continue
                with self.store.open_input(f"{base}/{entry}/{name}") as source:
                    table = pq.ParquetFile(source).read()
                if (start_ms is not None and lo < start_ms) or (end_ms is not None and hi >= end_ms):
                    times = table.column("time")
                    keep = None
                    if start is not None:
                        keep = pc.greater_equal(times, pa.scalar(start, pa.timestamp("ms", tz="UTC")))
                    if end is not None:
                        before = pc.less(times, pa.scalar(end, pa.timestamp("ms", tz="UTC")))
                        keep = before if keep is None else pc.and_(keep, before)
                    table = table.filter(keep)
                tables.append(table)
        return tables
