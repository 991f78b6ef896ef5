"""The SQL store's models and versions."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..._canonical import canonicalize_str
from ..._domain import FileEntry, LazyFiles, LazyJSON, Model, ModelVersion
from ..._identifiers import fold_name, parse_dataset_uri
from ..._lifecycle import EventDraft, GovContext, record_dataset
from ..._policy import Policy
from ..._search import Condition, VersionQuery
from ..._time import from_stored
from ...errors import AlreadyExists, Conflict, InvalidInput, NotFound
from ..protocols import Decide, Signer
from . import tables as t
from .ledger import SqlLedger
from .statements import (
    COMPACT,
    Q_HIGHEST_FOLDER_SUFFIX,
    Q_LIST_VERSIONS,
    Q_LIST_VERSIONS_BELOW,
    Q_METRICS_INSERT,
    Q_NEXT_VERSION,
    Q_VERSION,
    Q_VERSION_BY_ALIAS,
    Q_VERSION_BY_KEY,
    Q_VERSION_INSERT,
    Q_VERSION_LATEST,
    Q_VERSION_TAGS,
    VERSION_COLS,
    byte_order,
    metric_values,
    named,
    prefix_range,
)

__all__ = ["SqlModels"]


class SqlModels(SqlLedger):
    """Models and versions; registering a version is a governed write, hence the ledger base."""

    def create_model(self, name: str, description: str, tags: Mapping[str, str], now: datetime) -> Model:
        try:
            with self._write() as conn:
                renamed = _folded(self._renames(conn)).get(fold_name(name))
                if renamed is not None:
                    raise Conflict(
                        f"{name} is a former name of {renamed} (it still resolves to it): choose another"
                    )
                self._insert_model(conn, name, description, now, ignore=False)
                row = self._model_row(conn, name)
                if tags:
                    conn.execute(
                        t.model_tags.insert(),
                        [{"model_id": row.id, "key": k, "value": v} for k, v in tags.items()],
                    )
        except sa.exc.IntegrityError as exc:
            raise AlreadyExists("model", name) from exc
        return self._to_model(row, tags)

    def get_model(self, name: str) -> Model:
        with self._read() as conn:
            row = self._model_row(conn, name)
            return self._to_model(row, self._tags(conn, [row.id])[row.id])

    def list_models(
        self,
        *,
        prefix: str | None,
        tags: Mapping[str, str],
        limit: int,
        after: str | None,
        stage: str | None = None,
        include_archived: bool = False,
    ) -> list[Model]:
        # In folded-name order: the order of the index on lower(name) (in the "C" collation on
        # PostgreSQL), so a page, a prefix and a cursor are one range of it read up to ``limit``
        folded = sa.func.lower(t.models.c.name)
        q = sa.select(t.models).order_by(byte_order(folded)).limit(limit)
        if not include_archived:
            q = q.where(t.models.c.archived_at.is_(None))
        if stage is not None:
            st = t.version_state.c
            latest = sa.select(st.model_id, st.version).where(st.stage == stage)
            q = q.where(sa.tuple_(t.models.c.id, t.models.c.last_version).in_(latest))
        if prefix:  # a prefix matches names in any case, as names do
            q = q.where(prefix_range(folded, fold_name(prefix)))
        if after is not None:
            q = q.where(byte_order(folded) > byte_order(sa.func.lower(after)))
        pairs = list(tags.items())
        if pairs:
            # the first tag drives the query from the (key, value) index: the models that carry
            # it, sorted, rather than a walk of every model probing for the tag
            tag = t.model_tags.alias("tag")
            q = q.select_from(tag.join(t.models, t.models.c.id == tag.c.model_id)).where(
                tag.c.key == pairs[0][0], tag.c.value == pairs[0][1]
            )
        for key, value in pairs[1:]:
            tagged = sa.select(t.model_tags.c.model_id).where(
                t.model_tags.c.key == key, t.model_tags.c.value == value
            )
            q = q.where(t.models.c.id.in_(tagged))
        with self._read() as conn:
            rows = conn.execute(q).all()
            tag_map = self._tags(conn, [r.id for r in rows])
        return [self._to_model(r, tag_map[r.id]) for r in rows]

    def update_model(
        self,
        name: str,
        *,
        description: str | None,
        tags: Mapping[str, str | None] | None,
        actor: str,
        signer: Signer,
    ) -> Model:
        """Change a model's description or tags, recorded (``model.updated``) in the same write."""
        with self._write() as conn:
            head = self._lock_head(conn)
            row = self._model_row(conn, name)
            name = row.name  # the stored spelling, whatever case the caller used
            data: dict[str, Any] = {"model": name}
            if description is not None:
                data["description"] = description
            if tags:
                data["tags"] = dict(tags)
            self._append(
                conn, head, [EventDraft("model.updated", f"models:/{name}", data)], actor=actor, signer=signer
            )
            if description is not None:
                conn.execute(t.models.update().where(t.models.c.id == row.id).values(description=description))
            for key, value in (tags or {}).items():
                conn.execute(
                    t.model_tags.delete().where(t.model_tags.c.model_id == row.id, t.model_tags.c.key == key)
                )
                if value is not None:
                    conn.execute(t.model_tags.insert().values(model_id=row.id, key=key, value=value))
            row = self._model_row(conn, name)
            return self._to_model(row, self._tags(conn, [row.id])[row.id])

    # ------------------------------------------------------------ versions

    def create_version(
        self,
        model: str,
        *,
        folder: str,
        digest: str,
        flavor: str,
        files: Sequence[FileEntry],
        manifest: Mapping[str, Any],
        created_by: str,
        now: datetime,
        create_model: bool,
        walk: Decide,
        signer: Signer,
        links: Sequence[tuple[str, str]] = (),
        needs_context: bool = True,
    ) -> ModelVersion:
        files_json = COMPACT.encode([f.to_dict() for f in files])
        # Stored in canonical form, so a load can digest the text as it is, without re-encoding.
        text = getattr(manifest, "canonical_text", None)
        manifest_json = text if isinstance(text, str) else canonicalize_str(dict(manifest))
        try:
            with self._write() as conn:
                # Every governed write takes the ledger head first: one lock order, no deadlocks.
                head = self._lock_head(conn)
                # The number is allocated inside this transaction: the row lock (PostgreSQL)
                # or the write lock (SQLite) serialises concurrent registrations.
                run = self.driver
                row = run.first(conn, Q_NEXT_VERSION, {"model_name": model})
                if row is None and create_model:
                    renamed = _folded(self._renames(conn)).get(fold_name(model))
                    if renamed is not None:
                        raise Conflict(
                            f"{model} was renamed to {renamed}: register new versions as {renamed} "
                            "(a former name is never reused)"
                        )
                    self._insert_model(conn, model, "", now, ignore=True)
                    row = run.first(conn, Q_NEXT_VERSION, {"model_name": model})
                if row is None:
                    raise NotFound("model", model)
                model_id, number, archived = int(row[0]), int(row[1]), row[2]
                if row[3] != model:
                    # the model exists under another spelling (created concurrently since the
                    # caller looked): its folder was named after the caller's spelling
                    raise Conflict(f"model {model} is stored as {row[3]}: register the version as {row[3]}")
                dataset_drafts: list[EventDraft] = []
                inserted = run.first(
                    conn,
                    Q_VERSION_INSERT,
                    {
                        "model_id": model_id,
                        "version": number,
                        "folder": folder,
                        "digest": digest,
                        "flavor": flavor,
                        "files": files_json,
                        "manifest": manifest_json,
                        "created_at": now,
                        "created_by": created_by,
                    },
                )
                assert inserted is not None
                key = int(inserted[0])
                metric_rows = metric_values(key, manifest.get("metrics"))
                if metric_rows:
                    run.executemany(conn, Q_METRICS_INSERT, metric_rows)
                unrecorded = []
                for uri, role in links:
                    dname, dver = parse_dataset_uri(uri)
                    dv = self._dataset_version_row(conn, dname, dver)
                    conn.execute(
                        t.model_datasets.insert().values(version_id=key, dataset_version_id=dv.id, role=role)
                    )
                    exact = f"datasets:/{dname}/{dv.version}"
                    if exact not in unrecorded and not self._recorded(conn, exact, "dataset.registered"):
                        # registered with this version (or before data sets were recorded): record
                        # it now, so verify holds its file to the ledger from here on
                        unrecorded.append(exact)
                        draft = record_dataset(exact, dv.digest, dv.file_sha256, int(dv.size_bytes), dv.path)
                        dataset_drafts.append(draft)
                ctx = GovContext(
                    model=model,
                    version=number,
                    state=None,
                    aliases=self._alias_map(conn, model_id) if needs_context else {},
                    policy=self._ledger_policy(conn) if needs_context else Policy(),
                    actor=created_by,
                    archived=archived is not None,
                )
                self._append(
                    conn,
                    head,
                    [*dataset_drafts, *walk(ctx)],
                    actor=created_by,
                    signer=signer,
                    model_ids={model: model_id},
                )
        except sa.exc.IntegrityError as exc:
            raise AlreadyExists("version folder", folder) from exc
        return ModelVersion(
            model=model,
            version=number,
            folder=folder,
            digest=digest,
            flavor=flavor,
            files=tuple(files),
            manifest=dict(manifest),
            created_at=now,
            created_by=created_by,
            key=key,
        )

    def _version_tags(self, conn: Connection, keys: Sequence[int]) -> dict[int, dict[str, str]]:
        out: dict[int, dict[str, str]] = {}
        if keys:
            for vid, key, value in conn.execute(Q_VERSION_TAGS, {"keys": list(keys)}):
                out.setdefault(int(vid), {})[key] = value
        return out

    @classmethod
    def _named_version(cls, row: Sequence[Any]) -> ModelVersion:
        """A row of ``NAMED_VERSIONS_Q``: the version's columns, then its aliases and tags as JSON."""
        aliases, tags = row[-2], row[-1]
        return cls._to_version(
            row[:-2], json.loads(aliases) if aliases else (), json.loads(tags) if tags else None
        )

    @staticmethod
    def _to_version(row: Any, aliases: Sequence[str], tags: Mapping[str, str] | None = None) -> ModelVersion:
        key, model, version, folder, digest, flavor, files, manifest, created_at, created_by = row
        return ModelVersion(
            model,
            version,
            folder,
            digest,
            flavor,
            LazyFiles(files),
            LazyJSON(manifest),
            from_stored(created_at),
            created_by,
            tuple(sorted(aliases)) if aliases else (),
            key,
            dict(tags or {}),
        )

    def _aliases(self, conn: Connection, model: str, versions: Sequence[int]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {v: [] for v in versions}
        if not versions:
            return out
        q = (
            sa.select(t.aliases.c.alias, t.aliases.c.version)
            .join(t.models, t.models.c.id == t.aliases.c.model_id)
            .where(named(model), t.aliases.c.version.in_(versions))
        )
        for r in conn.execute(q):
            out[r.version].append(r.alias)
        return out

    def get_version(
        self, model: str, version: int | None = None, *, alias: str | None = None
    ) -> ModelVersion:
        q: Any
        params: dict[str, Any]
        if alias == "latest":
            q, params = Q_VERSION_LATEST, {"model": model}
            label = f"models:/{model}@latest"
        elif alias is not None:
            q, params = Q_VERSION_BY_ALIAS, {"model": model, "alias": alias}
            label = f"models:/{model}@{alias}"
        else:
            q, params = Q_VERSION, {"model": model, "version": version}
            label = f"models:/{model}/{version}"
        with self._read() as conn:
            row = self.driver.first(conn, q, params)
            if row is None:
                self._model_row(conn, model)  # raises NotFound("model") when the model is unknown
                raise NotFound("alias" if alias and alias != "latest" else "model version", label)
        return self._named_version(row)

    def get_version_by_key(self, key: int) -> ModelVersion:
        with self._read() as conn:
            row = conn.execute(Q_VERSION_BY_KEY, {"key": key}).first()
            if row is None:
                raise NotFound("model version", f"key {key}")
            aliases = self._aliases(conn, row.model_name, [row.version])[row.version]
            tags = self._version_tags(conn, [int(row.key)])
        return self._to_version(row, aliases, tags.get(int(row.key)))

    def list_versions(self, model: str, *, limit: int, before: int | None) -> list[ModelVersion]:
        params = {"model": model, "before": before if before is not None else 2**31 - 1, "lim": limit}
        with self._read() as conn:
            # the window of the ``limit`` numbers below ``before``: at most ``limit`` rows read
            rows = self.driver.all(conn, Q_LIST_VERSIONS, params)
            if len(rows) < limit and (not rows or int(rows[-1][2]) > 1):
                # short, and not down to version 1: the end of the model, or numbers missing
                # from the window; the versions below it, whatever their numbers
                below = int(rows[-1][2]) if rows else params["before"]
                rest = {"model": model, "before": below, "lim": limit - len(rows)}
                rows.extend(self.driver.all(conn, Q_LIST_VERSIONS_BELOW, rest))
            if not rows:
                self._model_row(conn, model)  # NotFound for an unknown model
                return []
        return [self._named_version(r) for r in rows]

    def search_versions(self, query: VersionQuery, *, limit: int, before: int | None) -> list[ModelVersion]:
        """Versions meeting every condition of ``query``, newest registered first (by key),
        keys below ``before``. Each condition is a semi-join on an indexed table, so the
        database starts from the most selective index rather than reading every version."""
        v = t.versions.c
        q = sa.select(*VERSION_COLS).join(t.models, t.models.c.id == v.model_id)
        for c in query.conditions:
            q = q.where(_condition(c))
        if before is not None:
            q = q.where(v.id < before)
        q = q.order_by(v.id.desc()).limit(limit)
        with self._read(snapshot=True) as conn:
            rows = conn.execute(q).all()
            by_model: dict[str, list[int]] = {}
            for r in rows:
                by_model.setdefault(r[1], []).append(r[2])
            aliases = {m: self._aliases(conn, m, vs) for m, vs in by_model.items()}
        return [self._to_version(r, aliases[r[1]].get(r[2], ())) for r in rows]

    def iter_versions(self, batch: int = 500, *, after: int = 0) -> Iterator[ModelVersion]:
        """Every version of every model with a key above ``after``, fetched in pages (for verify)."""
        last = after
        while True:
            q = (
                sa.select(*VERSION_COLS)
                .join(t.models, t.models.c.id == t.versions.c.model_id)
                .where(t.versions.c.id > last)
                .order_by(t.versions.c.id)
                .limit(batch)
            )
            with self._read() as conn:
                rows = conn.execute(q).all()
            if not rows:
                return
            for r in rows:
                yield self._to_version(r, ())
            last = rows[-1].key

    def highest_folder_suffix(self, folder: str) -> int:
        with self._read() as conn:
            found = conn.execute(Q_HIGHEST_FOLDER_SUFFIX, {"base": folder, "dotted": f"{folder}."}).scalar()
        return int(found or 0)

    def referenced_paths(self) -> tuple[set[str], set[str]]:
        """Every version folder and every data set file path the metadata refers to (for gc)."""
        with self._read(snapshot=True) as conn:
            folders = set(conn.execute(sa.select(t.versions.c.folder)).scalars())
            paths = set(conn.execute(sa.select(t.dataset_versions.c.path)).scalars())
        return folders, paths


def _compare(column: Any, op: str, value: Any) -> Any:
    return {
        "=": column == value,
        "!=": column != value,
        "<": column < value,
        "<=": column <= value,
        ">": column > value,
        ">=": column >= value,
    }[op]


def _condition(c: Condition) -> Any:
    """One search condition as a SQL predicate on ``model_versions``."""
    v, st, a, mt = t.versions.c, t.version_state.c, t.aliases.c, t.version_metrics.c
    base, _, sub = c.field.partition(".")
    if base == "metrics":
        ids = sa.select(mt.version_id).where(mt.key == sub, _compare(mt.value, c.op, c.value))
        return v.id.in_(ids)
    if base == "tags":
        vt = t.version_tags.c
        return v.id.in_(sa.select(vt.version_id).where(vt.key == sub, vt.value == c.value))
    if base == "model":  # names are compared without regard to case
        return _compare(sa.func.lower(t.models.c.name), c.op, fold_name(str(c.value)))
    if base == "version":
        return _compare(v.version, c.op, c.value)
    if base == "created":
        return _compare(v.created_at, c.op, c.value)
    if base == "stage":
        pairs = sa.select(st.model_id, st.version).where(_compare(st.stage, c.op, c.value))
        return sa.tuple_(v.model_id, v.version).in_(pairs)
    if base == "registered_by":
        pairs = sa.select(st.model_id, st.version).where(_compare(st.registered_by, c.op, c.value))
        return sa.tuple_(v.model_id, v.version).in_(pairs)
    if base == "alias":
        pairs = sa.select(a.model_id, a.version).where(a.alias == c.value)
        return sa.tuple_(v.model_id, v.version).in_(pairs)
    raise InvalidInput(f"unknown search field {c.field!r}")  # pragma: no cover - parse_query checks


def _folded(renames: Mapping[str, str]) -> dict[str, str]:
    """The rename map keyed by case-folded former name: a former name matches in any case."""
    return {fold_name(old): new for old, new in renames.items()}
