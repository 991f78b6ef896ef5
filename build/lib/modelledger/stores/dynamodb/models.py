"""The DynamoDB store's models and versions.

A model is the item ``N#<folded name>`` (its id, spelling, description, tags and
``last_version``); its versions, their state, aliases and tags live under ``M#<id>``, so a
listing is one Query. A version number is allocated by a conditional update of
``last_version`` inside the registration's transaction: two registrations that read the same
number cannot both commit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from ..._canonical import canonicalize_str
from ..._domain import FileEntry, LazyFiles, LazyJSON, Model, ModelVersion
from ..._identifiers import fold_name, parse_dataset_uri
from ..._lifecycle import EventDraft, GovContext, ReplayedState, record_dataset
from ..._policy import Policy
from ..._search import Condition, VersionQuery
from ..._time import from_stored, now_text
from ...errors import AlreadyExists, Conflict, InvalidInput, NotFound
from ..protocols import Decide, Signer
from .base import BUCKET, TxItems, chunks, seq_key
from .datasets import DynamoDatasets

__all__ = ["BODY_LIMIT", "DynamoModels"]

BODY_LIMIT = 350_000
"""Bytes of file list and manifest kept on the version item itself; a larger body is split into
chunk items (an item is at most 400 KB, its keys and other attributes included)."""


def _vkey(version: int) -> str:
    return f"V#{seq_key(version, 10)}"


class DynamoModels(DynamoDatasets):
    """Models and versions; registering a version is a governed write, hence the ledger base."""

    def create_model(self, name: str, description: str, tags: Mapping[str, str], now: datetime) -> Model:
        former = {fold_name(old): new for old, new in self._renames().items()}
        if fold_name(name) in former:
            current = former[fold_name(name)]
            raise Conflict(f"{name} is a former name of {current} (it still resolves to it): choose another")
        mid = self.counter("model_id")
        tx = TxItems()
        self._put(
            tx,
            self.state_table,
            self._model_row(mid, name, description, dict(tags), now, 0),
            fail=AlreadyExists("model", name),
        )
        self._put(tx, self.state_table, {"pk": f"M#{mid}", "sk": "#NAME", "name": name})
        self._send(tx)
        return Model(name=name, description=description, tags=dict(tags), created_at=now, latest_version=0)

    @staticmethod
    def _model_row(
        mid: int, name: str, description: str, tags: dict[str, str], now: datetime, last: int
    ) -> dict[str, Any]:
        folded = fold_name(name)
        return {
            "pk": f"N#{folded}",
            "sk": "MODEL",
            "id": mid,
            "name": name,
            "description": description,
            "tags": tags,
            "created_at": now.isoformat(),
            "last_version": last,
            "gk": "M",  # the sparse listing index: models by folded name
            "nf": folded,
        }

    @staticmethod
    def _to_model(item: Mapping[str, Any]) -> Model:
        return Model(
            name=item["name"],
            description=item.get("description", ""),
            tags=dict(item.get("tags") or {}),
            created_at=from_stored(item["created_at"]),
            latest_version=int(item["last_version"]),
            archived=item.get("archived_at") is not None,
        )

    def get_model(self, name: str) -> Model:
        item = self._model_item(name)
        if item is None:
            raise NotFound("model", name)
        return self._to_model(item)

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
        """Models by folded name from the ``listing`` index (eventually consistent: a model
        created a moment ago may be missing); the other conditions are checked per item."""
        lo = fold_name(prefix or "")
        hi = lo + "\U0010ffff"
        if after is not None:
            lo = max(lo, fold_name(after) + "\x00")
        out: list[Model] = []
        if limit <= 0 or lo > hi:
            return out
        rows = self.query(
            self.state_table,
            "M",
            between=(lo, hi) if lo else None,
            index="listing",
            key_name="gk",
            sort_name="nf",
            # a page at a time when every item read is likely kept: a name prefix matching
            # thousands of models reads one page; a tag or stage filter drops most items, and
            # reading them a megabyte a request costs fewer units than a page a request
            per_request=None if tags or stage is not None else limit,
        )
        for item in rows:
            if item.get("archived_at") is not None and not include_archived:
                continue
            held = item.get("tags") or {}
            if any(held.get(k) != v for k, v in tags.items()):
                continue
            if stage is not None:
                last = int(item["last_version"])
                state = (
                    self.get(self.state_table, f"M#{item['id']}", f"T#{seq_key(last, 10)}") if last else None
                )
                if state is None or state["stage"] != stage:
                    continue
            out.append(self._to_model(item))
            if len(out) == limit:
                break
        return out

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
        st = self.state_table

        def attempt(head: tuple[int, str]) -> tuple[TxItems, str]:
            m = self._model_item(name)
            if m is None:
                raise NotFound("model", name)
            stored = str(m["name"])
            data: dict[str, Any] = {"model": stored}
            if description is not None:
                data["description"] = description
            if tags:
                data["tags"] = dict(tags)
            tx = TxItems()
            draft = EventDraft("model.updated", f"models:/{stored}", data)
            self._append(tx, head, [draft], actor=actor, signer=signer, models={stored: m})
            sets, removes = [], []
            names: dict[str, str] = {}
            values: dict[str, Any] = {}
            if description is not None:
                sets.append("description = :d")
                values[":d"] = self.value(description)
            for i, (k, v) in enumerate((tags or {}).items()):
                names[f"#t{i}"] = k
                if v is None:
                    removes.append(f"tags.#t{i}")
                else:
                    sets.append(f"tags.#t{i} = :t{i}")
                    values[f":t{i}"] = self.value(v)
            if sets or removes:
                expr = " ".join(
                    part
                    for part in (
                        "SET " + ", ".join(sets) if sets else "",
                        "REMOVE " + ", ".join(removes) if removes else "",
                    )
                    if part
                )
                update: dict[str, Any] = {
                    "TableName": st,
                    "Key": self.item({"pk": m["pk"], "sk": "MODEL"}),
                    "UpdateExpression": expr,
                }
                if names:
                    update["ExpressionAttributeNames"] = names
                if values:
                    update["ExpressionAttributeValues"] = values
                tx.add("Update", update, key=(st, m["pk"], "MODEL"))
            return tx, stored

        return self.get_model(self._governed(attempt))

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
        """Allocate the next number and register the version with ``walk``'s events, in one
        transaction conditional on the head and on the model's ``last_version``."""
        # compact, as the SQL store keeps it
        files_json = json.dumps([f.to_dict() for f in files], separators=(",", ":"), ensure_ascii=False)
        text = getattr(manifest, "canonical_text", None)
        manifest_json = text if isinstance(text, str) else canonicalize_str(dict(manifest))
        key = self.counter("version_key")  # unique; a lost race leaves a gap, as a sequence does
        body = (files_json + "\n" + manifest_json).encode()
        st = self.state_table

        def attempt(head: tuple[int, str]) -> tuple[TxItems, tuple[str, int]]:
            tx = TxItems()
            m = self._model_item(model)
            if m is None:
                if not create_model:
                    raise NotFound("model", model)
                former = {fold_name(old): new for old, new in self._renames().items()}
                if fold_name(model) in former:
                    raise Conflict(
                        f"{model} was renamed to {former[fold_name(model)]}: register new versions as "
                        f"{former[fold_name(model)]} (a former name is never reused)"
                    )
                mid = self.counter("model_id")
                m = self._model_row(mid, model, "", {}, now, 0)
                number = 1
                # a concurrent first registration created it: read again (Retry)
                self._put(tx, st, {**m, "last_version": 1})
                self._put(tx, st, {"pk": f"M#{mid}", "sk": "#NAME", "name": model})
            else:
                if m["name"] != model:
                    raise Conflict(
                        f"model {model} is stored as {m['name']}: register the version as {m['name']}"
                    )
                mid, number = int(m["id"]), int(m["last_version"]) + 1
                tx.add(
                    "Update",
                    {
                        "TableName": st,
                        "Key": self.item({"pk": m["pk"], "sk": "MODEL"}),
                        "UpdateExpression": "SET last_version = :n",
                        "ConditionExpression": "last_version = :prev",
                        "ExpressionAttributeValues": {
                            ":n": self.value(number),
                            ":prev": self.value(number - 1),
                        },
                    },
                    key=(st, m["pk"], "MODEL"),
                )
            row: dict[str, Any] = {
                "pk": f"M#{mid}",
                "sk": _vkey(number),
                "key": key,
                "version": number,
                "folder": folder,
                "digest": digest,
                "flavor": flavor,
                "created_at": now.isoformat(),
                "created_by": created_by,
            }
            if len(body) <= BODY_LIMIT:
                row["files"], row["manifest"] = files_json, manifest_json
                self._put(tx, st, row)
            else:
                parts = list(chunks(body, BODY_LIMIT))
                self._put(tx, st, {**row, "chunks": len(parts)})
                for i, part in enumerate(parts):
                    self._put(
                        tx, st, {"pk": f"M#{mid}", "sk": f"B#{seq_key(number, 10)}#{i:04d}", "part": part}
                    )
            self._put(tx, st, {"pk": f"K#{key // BUCKET}", "sk": seq_key(key), "mid": mid, "version": number})
            self._put(
                tx,
                st,
                {"pk": f"F#{folder}", "sk": "F", "key": key},
                fail=AlreadyExists("version folder", folder),
            )
            dataset_drafts: list[EventDraft] = []
            unrecorded: list[str] = []
            for uri, role in links:
                dname, dver = parse_dataset_uri(uri)
                dv = self._dv_item(dname, dver)
                dkey = int(dv["key"])
                link = {"pk": f"L#{key}", "sk": f"{role}#{dname}#{dkey}", "role": role, "dataset_key": dkey}
                self._put(tx, st, link)
                self._put(
                    tx,
                    st,
                    {"pk": f"U#{dkey}", "sk": f"{key}#{role}", "mid": mid, "version": number, "role": role},
                )
                exact = f"datasets:/{dname}/{dv['version']}"
                if exact not in unrecorded and not self._recorded(exact, "dataset.registered"):
                    # registered with this version (or before data sets were recorded): record it
                    # now, so verify holds its file to the ledger from here on
                    unrecorded.append(exact)
                    draft = record_dataset(
                        exact, dv["digest"], dv["file_sha256"], int(dv["size_bytes"]), dv["path"]
                    )
                    dataset_drafts.append(draft)
            ctx = GovContext(
                model=model,
                version=number,
                state=None,
                aliases=self._alias_map(mid) if needs_context else {},
                policy=self._ledger_policy() if needs_context else Policy(),
                actor=created_by,
                archived=m.get("archived_at") is not None,
            )
            self._append(
                tx, head, [*dataset_drafts, *walk(ctx)], actor=created_by, signer=signer, models={model: m}
            )
            return tx, (model, number)

        name, number = self._governed(attempt)
        return ModelVersion(
            model=name,
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

    def _body(self, mid: int, item: Mapping[str, Any]) -> tuple[str, str]:
        """A version's files and manifest texts, joined from its chunk items when it has them."""
        if "chunks" not in item:
            return str(item["files"]), str(item["manifest"])
        parts = self.query(self.state_table, f"M#{mid}", begins=f"B#{seq_key(int(item['version']), 10)}#")
        files_json, _, manifest_json = b"".join(p["part"] for p in parts).decode().partition("\n")
        return files_json, manifest_json

    def _to_version(
        self,
        name: str,
        mid: int,
        item: Mapping[str, Any],
        *,
        aliases: Mapping[str, int] | None = None,
        tags: Mapping[int, dict[str, str]] | None = None,
    ) -> ModelVersion:
        """The version of ``item``; a page of versions passes the model's aliases and the page's
        tags, read once for the page, where one version reads its own."""
        version = int(item["version"])
        files_json, manifest_json = self._body(mid, item)
        held = self._alias_map(mid) if aliases is None else aliases
        names = sorted(a for a, v in held.items() if v == version)
        found = self._tags(mid, version, version) if tags is None else tags
        return ModelVersion(
            name,
            version,
            item["folder"],
            item["digest"],
            item["flavor"],
            LazyFiles(files_json),
            LazyJSON(manifest_json),
            from_stored(item["created_at"]),
            item["created_by"],
            tuple(names),
            int(item["key"]),
            dict(found.get(version, {})),
        )

    def _tags(self, mid: int, lo: int, hi: int) -> dict[int, dict[str, str]]:
        """The tags of versions ``lo`` to ``hi``: one Query (tag items sort by version, then key)."""
        out: dict[int, dict[str, str]] = {}
        span = (f"G#{seq_key(lo, 10)}#", f"G#{seq_key(hi, 10)}#\U0010ffff")
        for r in self.query(self.state_table, f"M#{mid}", between=span):
            out.setdefault(int(str(r["sk"])[2:12]), {})[r["key"]] = r["value"]
        return out

    def get_version(
        self, model: str, version: int | None = None, *, alias: str | None = None
    ) -> ModelVersion:
        m = self._model_item(model)
        if m is None:
            raise NotFound("model", model)
        name, mid = str(m["name"]), int(m["id"])
        item: dict[str, Any] | None
        if alias == "latest":
            found = list(self.query(self.state_table, f"M#{mid}", begins="V#", newest_first=True, limit=1))
            item, label = (found[0] if found else None), f"models:/{model}@latest"
        elif alias is not None:
            pointer = self.get(self.state_table, f"M#{mid}", f"A#{alias}")
            if pointer is None:
                raise NotFound("alias", f"models:/{model}@{alias}")
            item = self.get(self.state_table, f"M#{mid}", _vkey(int(pointer["version"])))
            label = f"models:/{model}@{alias}"
        else:
            item = None if version is None else self.get(self.state_table, f"M#{mid}", _vkey(version))
            label = f"models:/{model}/{version}"
        if item is None:
            raise NotFound("alias" if alias and alias != "latest" else "model version", label)
        return self._to_version(name, mid, item)

    def get_version_by_key(self, key: int) -> ModelVersion:
        pointer = self.get(self.state_table, f"K#{key // BUCKET}", seq_key(key))
        if pointer is None:
            raise NotFound("model version", f"key {key}")
        mid = int(pointer["mid"])
        named = self.get(self.state_table, f"M#{mid}", "#NAME")
        item = self.get(self.state_table, f"M#{mid}", _vkey(int(pointer["version"])))
        if named is None or item is None:
            raise NotFound("model version", f"key {key}")
        return self._to_version(str(named["name"]), mid, item)

    def list_versions(self, model: str, *, limit: int, before: int | None) -> list[ModelVersion]:
        """Versions newest first, numbers below ``before``: one Query on the model's partition."""
        m = self._model_item(model)
        if m is None:
            raise NotFound("model", model)
        top = (before if before is not None else 10**10) - 1
        if top < 1 or limit <= 0:
            return []
        mid = int(m["id"])
        span = (_vkey(1), _vkey(top))
        rows = list(self.query(self.state_table, f"M#{mid}", between=span, newest_first=True, limit=limit))
        if not rows:
            return []
        # the page's aliases and tags in two Queries, not two per version
        aliases = self._alias_map(mid)
        tags = self._tags(mid, int(rows[-1]["version"]), int(rows[0]["version"]))
        return [self._to_version(str(m["name"]), mid, r, aliases=aliases, tags=tags) for r in rows]

    def search_versions(self, query: VersionQuery, *, limit: int, before: int | None) -> list[ModelVersion]:
        """Versions meeting every condition, newest registered (by key) first, keys below
        ``before``. A ``model =`` condition reads that model's partition only; otherwise the
        versions are read newest first by key (``K#`` buckets) and each is checked, reading its
        state, aliases or tags only when a condition asks. The index items that let a selective
        tag, metric or stage condition start from its own key are still to build."""
        out: list[ModelVersion] = []
        if limit <= 0:
            return out
        top = (before if before is not None else 2**63) - 1
        for mid, name, item in self._candidates(query, top):
            if all(self._meets(c, mid, name, item) for c in query.conditions):
                out.append(self._to_version(name, mid, item))
                if len(out) == limit:
                    break
        return out

    def _candidates(self, query: VersionQuery, top: int) -> Iterator[tuple[int, str, dict[str, Any]]]:
        model = next((c for c in query.conditions if c.field == "model" and c.op == "="), None)
        if model is not None:
            m = self._model_item(str(model.value))
            if m is None:
                return
            rows = [
                r for r in self.query(self.state_table, f"M#{m['id']}", begins="V#") if int(r["key"]) <= top
            ]
            for r in sorted(rows, key=lambda r: -int(r["key"])):
                yield int(m["id"]), str(m["name"]), r
            return
        top = min(top, self.counter_value("version_key"))
        names: dict[int, str] = {}
        for b in range(top // BUCKET, -1, -1):
            span = (seq_key(b * BUCKET), seq_key(min(top, b * BUCKET + BUCKET - 1)))
            pointers = list(self.query(self.state_table, f"K#{b}", between=span, newest_first=True))
            for i in range(0, len(pointers), 100):
                page = pointers[i : i + 100]
                for mid in {int(p["mid"]) for p in page} - names.keys():
                    named = self.get(self.state_table, f"M#{mid}", "#NAME")
                    names[mid] = "" if named is None else str(named["name"])
                keys = [(f"M#{p['mid']}", _vkey(int(p["version"]))) for p in page]
                found = self.batch_get(self.state_table, keys)
                for p, k in zip(page, keys, strict=True):
                    if k in found:
                        yield int(p["mid"]), names[int(p["mid"])], found[k]

    def _meets(self, c: Condition, mid: int, name: str, item: Mapping[str, Any]) -> bool:
        base, _, sub = c.field.partition(".")
        version = int(item["version"])
        if base == "metrics":
            value = (json.loads(self._body(mid, item)[1]).get("metrics") or {}).get(sub)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                return False  # as the SQL store's metric index: finite numbers only
            return _compare(float(value), c.op, c.value)
        if base == "tags":
            tag = self.get(self.state_table, f"M#{mid}", f"G#{seq_key(version, 10)}#{sub}")
            return tag is not None and tag["value"] == c.value
        if base == "model":
            return _compare(fold_name(name), c.op, fold_name(str(c.value)))
        if base == "version":
            return _compare(version, c.op, c.value)
        if base == "created":
            return _compare(from_stored(item["created_at"]), c.op, c.value)
        if base in ("stage", "registered_by"):
            state = self.get(self.state_table, f"M#{mid}", f"T#{seq_key(version, 10)}")
            return state is not None and _compare(state[base], c.op, c.value)
        if base == "alias":
            found = self.get(self.state_table, f"M#{mid}", f"A#{c.value}")
            return found is not None and int(found["version"]) == version
        raise InvalidInput(f"unknown search field {c.field!r}")  # pragma: no cover - parse_query checks

    def iter_versions(self, batch: int = 500, *, after: int = 0) -> Iterator[ModelVersion]:
        """Every version whose key is above ``after``, in key order (the ``K#`` buckets)."""
        top = self.counter_value("version_key")
        if after >= top:
            return
        for pointer in self._range(self.state_table, "K", after + 1, top):
            try:
                yield self.get_version_by_key(int(pointer["sk"]))
            except NotFound:
                # a key item whose version item is gone (removed behind the store's back): no
                # row, as in the SQL store; verify names it from the ledger's registration
                continue

    # ------------------------------------------------------------ whole-registry reads

    def _models(self) -> list[tuple[int, str]]:
        """(id, name) of every model: ids come from one counter, so they are read by key in
        batches (strongly consistent, no Scan); ids of cancelled creations are gaps."""
        top = self.counter_value("model_id")
        found = self.batch_get(self.state_table, [(f"M#{i}", "#NAME") for i in range(1, top + 1)])
        return sorted((int(pk[2:]), str(item["name"])) for (pk, _sk), item in found.items())

    def current_state(self) -> ReplayedState:
        """The state items as they are (to compare with a replay of the ledger): every model's
        partition, one Query each, and its name item."""
        out = ReplayedState()
        models = self._models()
        items = self.batch_get(self.state_table, [(f"N#{fold_name(n)}", "MODEL") for _i, n in models])
        for mid, name in models:
            named = items.get((f"N#{fold_name(name)}", "MODEL"))
            if named is not None and named.get("archived_at") is not None:
                out.archived[name] = str(named["archived_at"])
            for r in self.query(self.state_table, f"M#{mid}", between=("A#", "T#~")):
                kind, _, rest = str(r["sk"]).partition("#")
                if kind == "T":
                    out.versions[(name, int(rest))] = self._state(name, int(rest), r)
                elif kind == "A":
                    out.aliases[(name, r["alias"])] = int(r["version"])
                elif kind == "G":
                    version = int(rest.partition("#")[0])
                    out.tags.setdefault((name, version), {})[r["key"]] = r["value"]
        policy = self.get(self.state_table, "SET", "policy")
        out.policy = Policy.from_dict(json.loads(policy["value"])) if policy else Policy()
        return out

    def highest_folder_suffix(self, folder: str) -> int:
        """A number n whose folder (``folder``, ``folder.2``...) is registered and whose
        successor is not (0 when ``folder`` itself is free): double, then bisect, one GetItem
        of the folder's uniqueness item per probe, so about 2*log2(n) reads."""

        def taken(n: int) -> bool:
            name = folder if n == 1 else f"{folder}.{n}"
            return self.get(self.state_table, f"F#{name}", "F") is not None

        if not taken(1):
            return 0
        lo, hi = 1, 2
        while taken(hi):
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if taken(mid) else (lo, mid)
        return lo

    def referenced_paths(self) -> tuple[set[str], set[str]]:
        """Every version folder and data set file the metadata refers to: every model's
        versions, one Query each, and the data set versions by key."""
        folders: set[str] = set()
        for mid, _name in self._models():
            for r in self.query(self.state_table, f"M#{mid}", begins="V#"):
                folders.add(str(r["folder"]))
        paths = {path for _key, _uri, path, _sha, _size in self.dataset_files_after(0)}
        return folders, paths

    def rewrite_state(self, state: ReplayedState) -> None:
        """Replace the state items with ``state`` (rebuilt from the ledger). Not one
        transaction (a registry's state can pass 100 items): when a governed write lands
        meanwhile (the head moved), the rewrite is refused and should be run again."""
        head = self._head()
        st = self.state_table
        names = dict(self._models())
        puts: list[dict[str, Any]] = []
        deletes: list[tuple[str, str]] = []
        for mid, name in names.items():
            want: dict[str, dict[str, Any]] = {}
            for (m, v), vs in state.versions.items():
                if m == name:
                    fields = {k: x for k, x in vs.to_dict().items() if k not in ("model", "version")}
                    want[f"T#{seq_key(v, 10)}"] = fields
            for (m, alias), v in state.aliases.items():
                if m == name:
                    want[f"A#{alias}"] = {"alias": alias, "version": v}
            for (m, v), tags in state.tags.items():
                if m == name:
                    for k, x in tags.items():
                        want[f"G#{seq_key(v, 10)}#{k}"] = {"key": k, "value": x}
            have = {
                str(r["sk"]): r
                for r in self.query(st, f"M#{mid}", between=("A#", "T#~"))
                if str(r["sk"])[:2] in ("A#", "G#", "T#")
            }
            for sk in have.keys() - want.keys():
                deletes.append((f"M#{mid}", sk))
            for sk, fields in want.items():
                old = {k: x for k, x in have.get(sk, {}).items() if k not in ("pk", "sk", "updated_at")}
                if old != {k: x for k, x in fields.items() if x is not None}:
                    extra = {"updated_at": now_text()} if sk.startswith("A#") else {}
                    puts.append({"pk": f"M#{mid}", "sk": sk, **fields, **extra})
        self._batch_write(puts, deletes)
        policy = json.dumps(state.policy.to_dict(), sort_keys=True)
        self.client.put_item(TableName=st, Item=self.item({"pk": "SET", "sk": "policy", "value": policy}))
        for name in names.values():
            when = state.archived.get(name)
            update: dict[str, Any] = (
                {"UpdateExpression": "REMOVE archived_at"}
                if when is None
                else {
                    "UpdateExpression": "SET archived_at = :w",
                    "ExpressionAttributeValues": {":w": self.value(when)},
                }
            )
            key = self.item({"pk": f"N#{fold_name(name)}", "sk": "MODEL"})
            self.client.update_item(TableName=st, Key=key, **update)
        if self._head() != head:
            raise Conflict("the ledger moved while the state was rewritten: run the rebuild again")

    def _batch_write(self, puts: Sequence[Mapping[str, Any]], deletes: Sequence[tuple[str, str]]) -> None:
        """BatchWriteItem on the state table, 25 a request, unprocessed items sent again."""
        requests = [{"PutRequest": {"Item": self.item(p)}} for p in puts]
        requests += [{"DeleteRequest": {"Key": self.item({"pk": pk, "sk": sk})}} for pk, sk in deletes]
        for i in range(0, len(requests), 25):
            pending: dict[str, Any] = {self.state_table: requests[i : i + 25]}
            while pending:
                answer = self.client.batch_write_item(RequestItems=pending)
                pending = answer.get("UnprocessedItems") or {}


def _compare(left: Any, op: str, right: Any) -> bool:
    return bool(
        {
            "=": lambda: left == right,
            "!=": lambda: left != right,
            "<": lambda: left < right,
            "<=": lambda: left <= right,
            ">": lambda: left > right,
            ">=": lambda: left >= right,
        }[op]()
    )
