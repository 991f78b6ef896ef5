"""The DynamoDB store's data sets: versions, processing steps and their links to model versions.

``D#<name>`` holds the data set (``DATASET``), its versions (``V#<n>``) and a digest index
(``X#<digest>``: same content, same version). Keys come from a counter; ``DK#`` finds a
version by key, ``DP#<path>`` says which versions hold a file, ``P#<input key>`` lists the
versions a processing step made from it, and ``L#<version key>`` / ``U#<data set key>`` link
model versions and data sets both ways.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from ..._domain import ColumnSpec, DatasetSource, DatasetVersion, ProcessingStep
from ..._identifiers import parse_dataset_uri
from ..._lifecycle import record_dataset
from ..._time import from_stored
from ...errors import NotFound
from ..protocols import Signer
from .base import BUCKET, TxItems, seq_key
from .ledger import DynamoLedger

__all__ = ["DynamoDatasets"]


def _vkey(version: int) -> str:
    return f"V#{seq_key(version, 10)}"


class DynamoDatasets(DynamoLedger):
    """Data set versions and lineage links."""

    def _dv_item(self, name: str, version: int | None) -> dict[str, Any]:
        if version is None:
            found = list(self.query(self.state_table, f"D#{name}", begins="V#", newest_first=True, limit=1))
            item = found[0] if found else None
        else:
            item = self.get(self.state_table, f"D#{name}", _vkey(version))
        if item is None:
            if self.get(self.state_table, f"D#{name}", "DATASET") is None:
                raise NotFound("data set", name)
            raise NotFound("data set version", f"datasets:/{name}/{version if version else 'latest'}")
        return item

    @staticmethod
    def _to_dv(item: Mapping[str, Any]) -> DatasetVersion:
        return DatasetVersion(
            name=str(item["name"]),
            version=int(item["version"]),
            digest=item["digest"],
            path=item["path"],
            file_sha256=item["file_sha256"],
            size_bytes=int(item["size_bytes"]),
            row_count=int(item["row_count"]),
            schema=tuple(ColumnSpec.from_dict(c) for c in json.loads(item["schema"])),
            stats=json.loads(item["stats"]),
            source=DatasetSource.from_dict(json.loads(item["source"])),
            steps=tuple(ProcessingStep.from_dict(s) for s in json.loads(item["steps"])),
            created_at=from_stored(item["created_at"]),
            created_by=item["created_by"],
            key=int(item["key"]),
        )

    def _by_key(self, keys: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Data set version items by key: the ``DK#`` pointers, then the versions (batched)."""
        pointers = self.batch_get(self.state_table, [(f"DK#{k // BUCKET}", seq_key(k)) for k in keys])
        wanted = [(f"D#{p['name']}", _vkey(int(p["version"]))) for p in pointers.values()]
        found = self.batch_get(self.state_table, wanted)
        return {int(i["key"]): i for i in found.values()}

    def find_dataset_version(self, name: str, digest: str) -> DatasetVersion | None:
        pointer = self.get(self.state_table, f"D#{name}", f"X#{digest}")
        if pointer is None:
            return None
        item = self.get(self.state_table, f"D#{name}", _vkey(int(pointer["version"])))
        return None if item is None else self._to_dv(item)

    def get_dataset_version(self, name: str, version: int | None) -> DatasetVersion:
        return self._to_dv(self._dv_item(name, version))

    def get_dataset_version_by_key(self, key: int) -> DatasetVersion:
        item = self._by_key([key]).get(key)
        if item is None:
            raise NotFound("data set version", f"key {key}")
        return self._to_dv(item)

    def create_dataset_version(
        self,
        name: str,
        *,
        digest: str,
        path: str,
        file_sha256: str,
        size_bytes: int,
        row_count: int,
        schema: Sequence[ColumnSpec],
        stats: Mapping[str, Any],
        source: DatasetSource,
        steps: Sequence[ProcessingStep],
        created_by: str,
        now: datetime,
        signer: Signer | None = None,
    ) -> tuple[DatasetVersion, bool]:
        """Insert a data set version (or find the one with the same digest); True when new. A
        concurrent registration of the same content makes this attempt's digest claim fail:
        the next attempt finds and returns its version."""
        st = self.state_table
        key = self.counter("dataset_key")

        def attempt(head: tuple[int, str]) -> tuple[TxItems, tuple[DatasetVersion, bool]]:
            tx = TxItems()
            found = self.find_dataset_version(name, digest)
            if found is not None:
                return tx, (found, False)
            # resolve step inputs first: an unknown input writes nothing
            resolved: list[list[dict[str, Any]]] = []
            for step in steps:
                items = []
                for ref in step.inputs:
                    dname, dver = parse_dataset_uri(ref)
                    items.append(self._dv_item(dname, dver))
                resolved.append(items)
            ds = self.get(st, f"D#{name}", "DATASET")
            number = 1 if ds is None else int(ds["last_version"]) + 1
            if ds is None:
                row: dict[str, Any] = {"pk": f"D#{name}", "sk": "DATASET", "name": name, "description": ""}
                row |= {"created_at": now.isoformat(), "last_version": 1, "gk": "D", "nf": name}
                self._put(tx, st, row)
            else:
                tx.add(
                    "Update",
                    {
                        "TableName": st,
                        "Key": self.item({"pk": f"D#{name}", "sk": "DATASET"}),
                        "UpdateExpression": "SET last_version = :n",
                        "ConditionExpression": "last_version = :prev",
                        "ExpressionAttributeValues": {
                            ":n": self.value(number),
                            ":prev": self.value(number - 1),
                        },
                    },
                    key=(st, f"D#{name}", "DATASET"),
                )
            step_rows = []
            inputs: set[int] = set()
            for step, items in zip(steps, resolved, strict=True):
                refs = sorted({(str(i["name"]), int(i["version"])) for i in items})
                inputs.update(int(i["key"]) for i in items)
                step_rows.append({**step.to_dict(), "inputs": [f"datasets:/{n}/{v}" for n, v in refs]})
            version = {
                "pk": f"D#{name}",
                "sk": _vkey(number),
                "key": key,
                "name": name,
                "version": number,
                "digest": digest,
                "path": path,
                "file_sha256": file_sha256,
                "size_bytes": size_bytes,
                "row_count": row_count,
                "schema": json.dumps([c.to_dict() for c in schema]),
                "stats": json.dumps(dict(stats), sort_keys=True),
                "source": json.dumps(source.to_dict(), sort_keys=True),
                "steps": json.dumps(step_rows, sort_keys=True),
                "created_at": now.isoformat(),
                "created_by": created_by,
            }
            self._put(tx, st, version)
            self._put(tx, st, {"pk": f"D#{name}", "sk": f"X#{digest}", "version": number, "key": key})
            self._put(
                tx, st, {"pk": f"DK#{key // BUCKET}", "sk": seq_key(key), "name": name, "version": number}
            )
            self._put(tx, st, {"pk": f"DP#{path}", "sk": seq_key(key)})
            for input_key in sorted(inputs):
                self._put(tx, st, {"pk": f"P#{input_key}", "sk": seq_key(key)})
            if signer is not None:
                draft = record_dataset(f"datasets:/{name}/{number}", digest, file_sha256, size_bytes, path)
                self._append(tx, head, [draft], actor=created_by, signer=signer)
            return tx, (self._to_dv(version), True)

        result: tuple[DatasetVersion, bool] = self._governed(attempt)
        return result

    def discard_dataset_version(self, key: int, remove_file: Callable[[str], None] | None = None) -> bool:
        st = self.state_table
        item = self._by_key([key]).get(key)
        if item is None:
            return False
        used = list(self.query(st, f"U#{key}", limit=1)) or list(self.query(st, f"P#{key}", limit=1))
        if used:
            return False
        name, number = str(item["name"]), int(item["version"])
        inputs = set()
        for step in json.loads(item["steps"]):
            for ref in step["inputs"]:
                dname, dver = parse_dataset_uri(ref)
                inputs.add(int(self._dv_item(dname, dver)["key"]))
        tx = TxItems()
        keys = [
            (f"D#{name}", _vkey(number)),
            (f"D#{name}", f"X#{item['digest']}"),
            (f"DK#{key // BUCKET}", seq_key(key)),
            (f"DP#{item['path']}", seq_key(key)),
            *((f"P#{i}", seq_key(key)) for i in sorted(inputs)),
        ]
        for pk, sk in keys:
            tx.add("Delete", {"TableName": st, "Key": self.item({"pk": pk, "sk": sk})}, key=(st, pk, sk))
        # give the number back only when it was the newest, so numbers stay consecutive
        ds = self.get(st, f"D#{name}", "DATASET")
        if ds is not None and int(ds["last_version"]) == number:
            tx.add(
                "Update",
                {
                    "TableName": st,
                    "Key": self.item({"pk": f"D#{name}", "sk": "DATASET"}),
                    "UpdateExpression": "SET last_version = :n",
                    "ConditionExpression": "last_version = :v",
                    "ExpressionAttributeValues": {":n": self.value(number - 1), ":v": self.value(number)},
                },
                key=(st, f"D#{name}", "DATASET"),
            )
        self._send(tx)
        if remove_file is not None and not list(self.query(st, f"DP#{item['path']}", limit=1)):
            remove_file(str(item["path"]))
        if not list(self.query(st, f"D#{name}", begins="V#", limit=1)):
            self.client.delete_item(
                TableName=st,
                Key=self.item({"pk": f"D#{name}", "sk": "DATASET"}),
                ConditionExpression="last_version = :z",
                ExpressionAttributeValues={":z": self.value(0)},
            )
        return True

    def list_datasets(self, *, prefix: str | None, limit: int, after: str | None) -> list[dict[str, Any]]:
        lo = prefix or ""
        if after is not None:
            lo = max(lo, after + "\x00")
        hi = (prefix or "") + "\U0010ffff"
        if limit <= 0 or lo > hi:
            return []
        rows = self.query(
            self.state_table,
            "D",
            between=(lo, hi) if lo else None,
            index="listing",
            key_name="gk",
            sort_name="nf",
            limit=limit,
        )
        return [
            {
                "name": r["name"],
                "description": r.get("description", ""),
                "latest_version": int(r["last_version"]),
                "created_at": from_stored(r["created_at"]).isoformat(),
            }
            for r in rows
        ]

    def list_dataset_versions(self, name: str, *, limit: int, before: int | None) -> list[DatasetVersion]:
        if self.get(self.state_table, f"D#{name}", "DATASET") is None:
            raise NotFound("data set", name)
        top = (before if before is not None else 10**10) - 1
        if top < 1 or limit <= 0:
            return []
        rows = self.query(
            self.state_table, f"D#{name}", between=(_vkey(1), _vkey(top)), newest_first=True, limit=limit
        )
        return [self._to_dv(r) for r in rows]

    def iter_dataset_files(self, batch: int = 500) -> Iterator[tuple[str, str, str, int]]:
        for _key, uri, path, sha, size in self.dataset_files_after(0, batch):
            yield uri, path, sha, size

    def dataset_files_after(self, after: int, batch: int = 500) -> Iterator[tuple[int, str, str, str, int]]:
        top = self.counter_value("dataset_key")
        keys = (
            [int(p["sk"]) for p in self._range(self.state_table, "DK", after + 1, top)] if after < top else []
        )
        for i in range(0, len(keys), batch):
            found = self._by_key(keys[i : i + batch])
            for k in keys[i : i + batch]:
                item = found.get(k)
                if item is not None:
                    uri = f"datasets:/{item['name']}/{item['version']}"
                    yield k, uri, str(item["path"]), str(item["file_sha256"]), int(item["size_bytes"])

    def model_datasets(self, version_key: int) -> list[tuple[str, DatasetVersion]]:
        links = list(self.query(self.state_table, f"L#{version_key}"))
        found = self._by_key([int(r["dataset_key"]) for r in links])
        out = [(str(r["role"]), self._to_dv(found[int(r["dataset_key"])])) for r in links]
        return sorted(out, key=lambda x: (x[0], x[1].name))

    def dataset_users(self, dataset_key: int) -> list[tuple[str, int, str]]:
        links = list(self.query(self.state_table, f"U#{dataset_key}"))
        names = self.batch_get(
            self.state_table, [(f"M#{m}", "#NAME") for m in {int(r["mid"]) for r in links}]
        )
        out = [
            (str(names[(f"M#{r['mid']}", "#NAME")]["name"]), int(r["version"]), str(r["role"]))
            for r in links
            if (f"M#{r['mid']}", "#NAME") in names
        ]
        return sorted(out)

    def dataset_children(self, dataset_key: int) -> list[int]:
        return [int(r["sk"]) for r in self.query(self.state_table, f"P#{dataset_key}")]
