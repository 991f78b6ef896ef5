"""The SQL store's data sets: versions, processing steps and their links to model versions."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..._domain import ColumnSpec, DatasetSource, DatasetVersion, ProcessingStep
from ..._identifiers import parse_dataset_uri
from ..._lifecycle import record_dataset
from ..._time import from_stored
from ...errors import NotFound
from ..protocols import Signer
from . import tables as t
from .ledger import SqlLedger
from .statements import ESC, like_escape

__all__ = ["SqlDatasets"]


class SqlDatasets(SqlLedger):
    """Data set versions and lineage links."""

    def find_dataset_version(self, name: str, digest: str) -> DatasetVersion | None:
        q = (
            sa.select(*self._DV_COLS)
            .join(t.datasets, t.datasets.c.id == t.dataset_versions.c.dataset_id)
            .where(t.datasets.c.name == name, t.dataset_versions.c.digest == digest)
        )
        with self._read() as conn:
            row = conn.execute(q).first()
            return self._to_dataset_version(conn, row) if row else None

    def get_dataset_version(self, name: str, version: int | None) -> DatasetVersion:
        with self._read() as conn:
            return self._to_dataset_version(conn, self._dataset_version_row(conn, name, version))

    def get_dataset_version_by_key(self, key: int) -> DatasetVersion:
        q = (
            sa.select(*self._DV_COLS)
            .join(t.datasets, t.datasets.c.id == t.dataset_versions.c.dataset_id)
            .where(t.dataset_versions.c.id == key)
        )
        with self._read() as conn:
            row = conn.execute(q).first()
            if row is None:
                raise NotFound("data set version", f"key {key}")
            return self._to_dataset_version(conn, row)

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
        """Insert a data set version (or find the one with the same digest); True when new.

        With ``signer`` it is a governed write: a new version is recorded in the ledger
        (``dataset.registered``) in the same transaction.
        """
        # a concurrent first registration of this data set (or of this content) may win the
        # insert: then run once more, to find and return what it committed
        for attempt in (1, 2):
            try:
                with self._write() as conn:
                    head = self._lock_head(conn) if signer is not None else None  # one lock order
                    ds_q = sa.select(t.datasets).where(t.datasets.c.name == name)
                    if not self.is_sqlite:
                        # writers of one data set take turns from here, so the digest check below sees
                        # what an earlier writer of the same content committed
                        ds_q = ds_q.with_for_update()
                    ds = conn.execute(ds_q).first()
                    if ds is None:
                        conn.execute(t.datasets.insert().values(name=name, created_at=now, last_version=0))
                        ds = self._dataset_row(conn, name)
                    existing = conn.execute(
                        sa.select(*self._DV_COLS)
                        .join(t.datasets, t.datasets.c.id == t.dataset_versions.c.dataset_id)
                        .where(
                            t.dataset_versions.c.dataset_id == ds.id, t.dataset_versions.c.digest == digest
                        )
                    ).first()
                    if existing is not None:
                        return self._to_dataset_version(conn, existing), False
                    # resolve step inputs first: an unknown input writes nothing
                    resolved: list[list[int]] = []
                    for step in steps:
                        ids = []
                        for ref in step.inputs:
                            dname, dver = parse_dataset_uri(ref)
                            ids.append(int(self._dataset_version_row(conn, dname, dver).id))
                        resolved.append(ids)
                    num = conn.execute(
                        t.datasets.update()
                        .where(t.datasets.c.id == ds.id)
                        .values(last_version=t.datasets.c.last_version + 1)
                        .returning(t.datasets.c.last_version)
                    ).scalar_one()
                    inserted = conn.execute(
                        t.dataset_versions.insert().values(
                            dataset_id=ds.id,
                            version=num,
                            digest=digest,
                            path=path,
                            file_sha256=file_sha256,
                            size_bytes=size_bytes,
                            row_count=row_count,
                            schema=json.dumps([c.to_dict() for c in schema]),
                            stats=json.dumps(dict(stats), sort_keys=True),
                            source=json.dumps(source.to_dict(), sort_keys=True),
                            created_at=now,
                            created_by=created_by,
                        )
                    )
                    dv_id = int(inserted.inserted_primary_key[0])  # type: ignore[index]
                    for position, (step, ids) in enumerate(zip(steps, resolved, strict=True)):
                        sid = conn.execute(
                            t.processing_steps.insert().values(
                                output_id=dv_id,
                                position=position,
                                name=step.name,
                                kind=step.kind,
                                params=json.dumps(dict(step.params), sort_keys=True),
                                columns=json.dumps(list(step.columns)),
                                code=json.dumps(dict(step.code), sort_keys=True),
                            )
                        ).inserted_primary_key[0]  # type: ignore[index]
                        for input_id in sorted(set(ids)):
                            conn.execute(t.step_inputs.insert().values(step_id=sid, input_id=input_id))
                    row = conn.execute(
                        sa.select(*self._DV_COLS)
                        .join(t.datasets, t.datasets.c.id == t.dataset_versions.c.dataset_id)
                        .where(t.dataset_versions.c.id == dv_id)
                    ).one()
                    if signer is not None and head is not None:
                        draft = record_dataset(
                            f"datasets:/{name}/{num}", digest, file_sha256, size_bytes, path
                        )
                        self._append(conn, head, [draft], actor=created_by, signer=signer)
                    return self._to_dataset_version(conn, row), True
            except sa.exc.IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # the loop returns or raises

    def discard_dataset_version(self, key: int, remove_file: Callable[[str], None] | None = None) -> bool:
        dv, ps = t.dataset_versions.c, t.processing_steps.c
        with self._write() as conn:
            owner = conn.execute(sa.select(dv.dataset_id).where(dv.id == key)).first()
            if owner is not None and not self.is_sqlite:
                # the lock a new version of this data set takes to get its number: a registration
                # adopting this same file then commits wholly before or after this removal
                conn.execute(sa.select(t.datasets.c.id).where(t.datasets.c.id == owner[0]).with_for_update())
            used = (
                conn.execute(
                    sa.select(t.model_datasets.c.version_id).where(
                        t.model_datasets.c.dataset_version_id == key
                    )
                ).first()
                or conn.execute(
                    sa.select(t.step_inputs.c.step_id).where(t.step_inputs.c.input_id == key)
                ).first()
            )
            if used is not None:
                return False
            steps = [r[0] for r in conn.execute(sa.select(ps.id).where(ps.output_id == key))]
            if steps:
                conn.execute(t.step_inputs.delete().where(t.step_inputs.c.step_id.in_(steps)))
                conn.execute(t.processing_steps.delete().where(ps.id.in_(steps)))
            row = conn.execute(sa.select(dv.dataset_id, dv.version, dv.path).where(dv.id == key)).first()
            if row is None:
                return False
            conn.execute(t.dataset_versions.delete().where(dv.id == key))
            shared = conn.execute(sa.select(dv.id).where(dv.path == row.path).limit(1)).first()
            if remove_file is not None and shared is None:
                remove_file(row.path)  # inside the transaction: see the lock above
            # give the number back only when it was the newest, so numbers stay consecutive
            conn.execute(
                t.datasets.update()
                .where(t.datasets.c.id == row.dataset_id, t.datasets.c.last_version == row.version)
                .values(last_version=row.version - 1)
            )
            if conn.execute(sa.select(dv.id).where(dv.dataset_id == row.dataset_id).limit(1)).first() is None:
                conn.execute(t.datasets.delete().where(t.datasets.c.id == row.dataset_id))
            return True

    def list_datasets(self, *, prefix: str | None, limit: int, after: str | None) -> list[dict[str, Any]]:
        q = sa.select(t.datasets).order_by(t.datasets.c.name).limit(limit)
        if prefix:
            q = q.where(t.datasets.c.name.like(like_escape(prefix) + "%", escape=ESC))
        if after is not None:
            q = q.where(t.datasets.c.name > after)
        with self._read() as conn:
            return [
                {
                    "name": r.name,
                    "description": r.description,
                    "latest_version": r.last_version,
                    "created_at": from_stored(r.created_at).isoformat(),
                }
                for r in conn.execute(q)
            ]

    def list_dataset_versions(self, name: str, *, limit: int, before: int | None) -> list[DatasetVersion]:
        q = (
            sa.select(*self._DV_COLS)
            .join(t.datasets, t.datasets.c.id == t.dataset_versions.c.dataset_id)
            .where(t.datasets.c.name == name)
            .order_by(t.dataset_versions.c.version.desc())
            .limit(limit)
        )
        if before is not None:
            q = q.where(t.dataset_versions.c.version < before)
        with self._read() as conn:
            self._dataset_row(conn, name)
            return [self._to_dataset_version(conn, r) for r in conn.execute(q).all()]

    def iter_dataset_files(self, batch: int = 500) -> Iterator[tuple[str, str, str, int]]:
        """(uri, path, sha256, size) of every data set version's stored file, in pages (for verify)."""
        for _key, uri, path, sha, size in self.dataset_files_after(0, batch):
            yield uri, path, sha, size

    def dataset_files_after(self, after: int, batch: int = 500) -> Iterator[tuple[int, str, str, str, int]]:
        """(key, uri, path, sha256, size) of each data set version with a key above ``after``, in pages."""
        dv, ds = t.dataset_versions.c, t.datasets.c
        last = after
        while True:
            q = (
                sa.select(dv.id, ds.name, dv.version, dv.path, dv.file_sha256, dv.size_bytes)
                .join(t.datasets, ds.id == dv.dataset_id)
                .where(dv.id > last)
                .order_by(dv.id)
                .limit(batch)
            )
            with self._read() as conn:
                rows = conn.execute(q).all()
            if not rows:
                return
            for key, name, version, path, sha, size in rows:
                yield int(key), f"datasets:/{name}/{version}", path, sha, int(size)
            last = int(rows[-1][0])

    def model_datasets(self, version_key: int) -> list[tuple[str, DatasetVersion]]:
        q = (
            sa.select(t.model_datasets.c.role, *self._DV_COLS)
            .join(t.dataset_versions, t.dataset_versions.c.id == t.model_datasets.c.dataset_version_id)
            .join(t.datasets, t.datasets.c.id == t.dataset_versions.c.dataset_id)
            .where(t.model_datasets.c.version_id == version_key)
            .order_by(t.model_datasets.c.role, t.datasets.c.name)
        )
        with self._read() as conn:
            return [(r.role, self._to_dataset_version(conn, r)) for r in conn.execute(q).all()]

    def dataset_users(self, dataset_key: int) -> list[tuple[str, int, str]]:
        """(model, version, role) of every model version trained or evaluated on a data set version."""
        q = (
            sa.select(t.models.c.name, t.versions.c.version, t.model_datasets.c.role)
            .join(t.versions, t.versions.c.id == t.model_datasets.c.version_id)
            .join(t.models, t.models.c.id == t.versions.c.model_id)
            .where(t.model_datasets.c.dataset_version_id == dataset_key)
            .order_by(t.models.c.name, t.versions.c.version, t.model_datasets.c.role)
        )
        with self._read() as conn:
            return [(r.name, r.version, r.role) for r in conn.execute(q)]

    def dataset_children(self, dataset_key: int) -> list[int]:
        """Keys of data set versions made from this one by a processing step."""
        q = (
            sa.select(t.processing_steps.c.output_id)
            .join(t.step_inputs, t.step_inputs.c.step_id == t.processing_steps.c.id)
            .where(t.step_inputs.c.input_id == dataset_key)
            .distinct()
        )
        with self._read() as conn:
            return [int(r[0]) for r in conn.execute(q)]
