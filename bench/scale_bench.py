"""Registry verbs at scale: does the cost of one call stay flat as the registry grows?

Grows one registry per backend through ``--sizes`` (default 1,000 -> 10,000 -> 100,000
versions) and measures the same verbs at each size: SQLite (the embedded default, a temporary
``$MODELLEDGER_HOME``) and PostgreSQL (a database of its own on 127.0.0.1:5432, created and
dropped by the run unless ``--keep``; artefacts in a temporary folder). At each size the
registry holds:

* versions spread over ``--models`` models (1,000) plus one hot model that takes
  ``--hot-share`` of them (a quarter), 10 reference models of 5 versions each that never grow
  (for history: one model's history, whatever the registry around it holds), a model whose
  alias has moved ``--alias-moves`` times at the largest size (default: as many as versions,
  100,000) and a ledger of ``--events`` events at the largest size (default: ten per version,
  1,000,000); both grow in proportion to the versions at the smaller sizes;
* each ordinary model's ``@champion`` on its latest version; tags ``team=t0..t9`` on the models.

How it is built (``build.path`` in the JSON says the same): every version is written by the
public ``Registry.create_version`` of an ``UploadedVersion`` whose folder holds real files (the
pickled model of the first hot version, registered with ``Registry.register``, and a
``manifest.json`` written as an upload writes it, with its own params and metrics), so the
rows, the registration events and one signed checkpoint per version are exactly those of a
registration. Only the durable commit is shared: ``--batch`` versions run in one database
transaction, and the artefact files are written without fsync. The alias moves and the extra
ledger events go through the store's govern path, 1,000 ``alias.set`` events per call and
checkpoint, as ``bench/ledger_bench.py`` appends them. On the shared 2-core machine this was
written on, a registration through the public API took 5 to 30 ms (its upload is most of it:
pickling, loading back, five fsyncs), hours for both backends at 100,000 versions; this path
took 1.5 to 2.5 ms a version on SQLite and about 10 ms on PostgreSQL (round trips).

Verbs, each ``--reps`` timed calls (200; fewer, but at least 20, when a verb's calls pass
``--verb-budget`` seconds) after ``--warmup`` untimed ones (10), on objects
drawn with a seeded generator (the same draws on both backends): get version by alias, by
number, the first page (100) of the hot model's versions, register one version (public API,
``capture=False``), approve, deploy (a second member, as four-eyes asks), set alias,
``alias_at`` (times in the middle half of the alias history), history of a reference model,
audit of one version, trace of a captured prediction (predictions captured on the hot model
with ``Registry.load(..., capture=True)``), search models by name prefix and by tag (a page
of 100). Growth is the largest size's median over the smallest's; target <= 1.5x.

Verify, at the largest size: a full verify in one process (``jobs=1, workers=1``), then the
default full ``registry.verify()`` (worker processes beside the ledger pass), wall and CPU
time of each (CPU: this process and its worker processes); then 1,000 new versions through
``Registry.register``, then ``registry.verify(since_last=True)``; target: under 5% of the full.

On PostgreSQL each size is measured after ``VACUUM (ANALYZE)`` of the bench's database (the
state autovacuum reaches on its own, at times of its choosing; ``--no-vacuum`` measures the
database as it is): every size in the same state, fresh statistics and no dead rows.

``--buffers`` adds a witness of the work each verb makes the database do, which timing noise
cannot move: after the timed calls, ``--buffer-calls`` more calls (5) run with every statement
explained first. On PostgreSQL, ``EXPLAIN (ANALYZE, BUFFERS)`` of each statement, with its
values, in a savepoint rolled back before the statement runs: the shared buffers it touched
(hit + read: read means not in shared_buffers), the rows its scans read and its plan; and each
read once more under its generic plan (``plan_cache_mode = force_generic_plan``), the plan
PostgreSQL may cache once psycopg has prepared the statement. On
SQLite, the VM instructions of the call (a progress handler) and ``EXPLAIN QUERY PLAN`` of each
statement. Per verb and size the median call's counts and statements go to the JSON under
``"work"``, with the growth of the count and whether the plans stayed the same.

Results go to ``bench/results/scale.json``: ``{"<backend>": {"<verb>": {"<size>": median_ms,
..., "p95": {...}, "growth": ratio}}, "verify": ..., "build": ..., "machine": ...}``.

Example:
    .venv/bin/python bench/scale_bench.py                                  # full run, both backends
    .venv/bin/python bench/scale_bench.py --quick                          # small sizes, a smoke run
    .venv/bin/python bench/scale_bench.py --sizes 1000,10000 --backends sqlite
    .venv/bin/python bench/scale_bench.py --buffers --reps 20 --no-verify    # the work per verb too
    .venv/bin/python bench/scale_bench.py --backends postgres --keep         # keeps the database
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import json
import math
import os
import platform
import random
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from _machine import cpu_model, dist_version, fs_type, git_state
from _workload import alias_move_drafts

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUT = HERE / "results" / "scale.json"
PG_ADMIN = os.environ.get("MODELLEDGER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

GROWTH_TARGET = 1.5  # largest size's median over the smallest's, per verb
SINCE_LAST_TARGET = 0.05  # verify(since_last=True) over a full verify
ADMIN = "admin@bench.example"
OFFICER = "officer@bench.example"  # approves and deploys: four-eyes refuses the registrant
SERVING = "serving@bench.example"  # signs the receipts of captured predictions
HOT = "hot"
ALIASED = "aliased"  # the model whose @champion moves --alias-moves times
FILLER = "ledger-filler"  # the alias moves that bring the ledger to --events
REF_MODELS, REF_VERSIONS = 10, 5  # reference models: a history of fixed size
MOVES_PER_CALL = 1_000  # events per govern call (and checkpoint) for the alias moves and filler
FILLER_ALIASES = 50
MIN_REPS = 20  # timed calls of a verb, at least, however slow it is

VERBS: list[tuple[str, str]] = [
    ("get_by_alias", "get version by alias"),
    ("get_by_number", "get version by number"),
    ("list_first_page", "list versions, first page (100), hot model"),
    ("register", "register one version (public API)"),
    ("approve", "approve"),
    ("deploy", "deploy"),
    ("set_alias", "set alias"),
    ("alias_at", "alias_at, middle of the history"),
    ("history", "history of one model (5 versions)"),
    ("audit_version", "audit of one version"),
    ("trace", "trace a captured prediction"),
    ("search_prefix", "search models by name prefix"),
    ("search_tag", "search models by tag"),
]


class Score:
    """The model every version holds: twice its input column."""

    def predict(self, frame: Any) -> Any:
        return [float(v) * 2 for v in frame["x"]]


# --------------------------------------------------------------------------- helpers


def _pct(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _fsync_floor_ms(folder: Path, n: int = 50) -> float:
    """Median time of one 4 KB write + fsync in ``folder``: the price of a durable commit
    (the write verbs here pay one or more; on a shared machine it moves a lot)."""
    path = folder / "fsync-probe"
    samples = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for _ in range(n):
            start = time.perf_counter()
            os.pwrite(fd, b"x" * 4096, 0)
            os.fsync(fd)
            samples.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(samples) * 1000


def _rng(seed: int, *parts: object) -> random.Random:
    # a str seed is hashed with sha512: the same draws in every process and on both backends
    return random.Random(":".join(str(p) for p in (seed, *parts)))


@contextlib.contextmanager
def one_transaction(meta: Any) -> Iterator[None]:
    """Every write of ``meta`` inside runs in one database transaction: each governed write
    makes its own statements, events and signed checkpoint as when called alone, and the
    durable commit is made once at the end."""
    outer = meta._write
    with outer() as conn:
        meta._write = lambda: contextlib.nullcontext(conn)
        try:
            yield
        finally:
            del meta._write  # the class's own _write again


@dataclass
class Built:
    """What the run knows about the registry it grows."""

    versions: int = 0  # every version of every model
    models: list[str] = field(default_factory=list)  # the ordinary models
    with_versions: list[str] = field(default_factory=list)  # ordinary models holding a version
    last: dict[str, int] = field(default_factory=dict)  # model -> highest version
    pairs: list[tuple[str, int]] = field(default_factory=list)  # (model, version), ordinary + hot
    approved: set[tuple[str, int]] = field(default_factory=set)
    alias_moves: int = 0
    alias_times: list[tuple[int, str]] = field(default_factory=list)  # (moves so far, ledger time)
    filler_events: int = 0
    predictions: list[str] = field(default_factory=list)
    template: Any = None  # the first hot version: its files are every built version's files
    next_folder: int = 0


# --------------------------------------------------------------------------- the backends


@contextlib.contextmanager
def backend_registry(
    backend: str, base: Path, *, keep: bool = False
) -> Iterator[tuple[str | None, str | None]]:
    """``(url, artifacts)`` for ``Registry.open``: None, None for the embedded default. With
    ``keep`` the PostgreSQL database outlives the run (as the temporary folder does)."""
    os.environ["MODELLEDGER_IDENTITIES"] = str(base / "identities")  # never the user's own keys
    os.environ.pop("MODELLEDGER_KEY", None)
    if backend == "sqlite":
        os.environ["MODELLEDGER_HOME"] = str(base / "home")
        yield None, None
        return
    import psycopg  # the postgres extra: only this backend needs it

    db = f"modelledger_scale_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{db}"
    try:
        yield url, str(base / "artifacts")
    finally:
        if keep:
            print(
                f"kept the PostgreSQL database {db}: psql {url}\n"
                f"  Registry.open({url!r}, artifacts={str(base / 'artifacts')!r})\n"
                f"  (MODELLEDGER_IDENTITIES={base / 'identities'}); "
                f"drop it with: psql {PG_ADMIN} -c 'DROP DATABASE \"{db}\" WITH (FORCE)'",
                flush=True,
            )
        else:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def pg_settings() -> dict[str, str] | None:
    """The server settings that decide what a measurement means: the cache's size, and whether
    autovacuum keeps the statistics and the dead rows in hand."""
    try:
        import psycopg  # the postgres extra: only this backend needs it

        with psycopg.connect(PG_ADMIN, connect_timeout=3) as conn:
            names = ("shared_buffers", "autovacuum", "effective_cache_size", "work_mem", "jit")
            return {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names}  # type: ignore[index]
    except Exception:  # only a label for the results
        return None


def vacuum_analyze(url: str) -> float:
    """``VACUUM (ANALYZE)`` the bench's database; returns the seconds it took. A database that
    autovacuum maintains reaches this state on its own, at times of its choosing: done after
    each size, every size is measured in the same state (fresh statistics, dead rows gone),
    and the growth between sizes is not the luck of when autovacuum last ran (on the server
    this bench was written on autovacuum is off, and no table had ever been analysed)."""
    import psycopg  # the postgres extra: only this backend needs it

    start = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    return time.perf_counter() - start


def pg_version() -> str | None:
    try:
        import psycopg  # the postgres extra: only this backend needs it

        with psycopg.connect(PG_ADMIN, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else None
    except Exception:  # only a label for the results
        return None


# --------------------------------------------------------------------------- building


class Builder:
    def __init__(self, registry: Any, officer: Any, serving: Any, cfg: argparse.Namespace) -> None:
        self.registry, self.officer, self.serving, self.cfg = registry, officer, serving, cfg
        self.meta = registry._meta  # the store: its transaction is shared by a batch
        self.art = registry._art  # the artefact store: built folders are written through it
        self.b = Built()
        self.rng = _rng(cfg.seed, "build")
        # folders are written on threads while the main thread makes the metadata writes
        self.pool = ThreadPoolExecutor(max_workers=4)
        self.writes: list[Future[None]] = []
        self.files: list[tuple[str, bytes]] = []  # the template's files: (path, bytes)

    # ---- once, at the start

    def start(self) -> None:
        from modelledger import create_identity

        reg = self.registry
        reg.init()
        reg.enrol(OFFICER, create_identity(OFFICER)[2], roles=["approver", "deployer"], models="*")
        reg.enrol(SERVING, create_identity(SERVING)[2], roles=["serving"], models="*")
        first = reg.register(HOT, Score(), capture=False, params={"i": 0}, metrics={"auc": 0.5})
        self.b.template = first
        self.files = [
            (f.path, Path(self.art.full(f"{first.folder}/artifacts/{f.path}")).read_bytes())
            for f in first.files
        ]
        self._count(HOT, 1, ordinary=False)
        self.b.pairs.append((HOT, 1))
        with self.batch():
            for i in range(self.cfg.models):
                name = f"m-{i:04d}"
                reg.create_model(name, description="bench", tags={"team": f"t{i % 10}"})
                self.b.models.append(name)
            for r in range(REF_MODELS):
                for _ in range(REF_VERSIONS):
                    self._create(f"ref-{r:02d}", ordinary=False)
            for name in (ALIASED, FILLER):
                for _ in range(2):
                    self._create(name, ordinary=False)
        # history of a reference model: its registrations, one approval, one alias
        for r in range(REF_MODELS):
            self.officer.approve(f"models:/ref-{r:02d}/1", reason="bench")
            reg.set_alias(f"ref-{r:02d}", "champion", REF_VERSIONS)

    def _count(self, model: str, version: int, *, ordinary: bool) -> None:
        self.b.versions += 1
        self.b.last[model] = version
        if ordinary and version == 1:
            self.b.with_versions.append(model)

    def _create(self, model: str, *, ordinary: bool) -> None:
        """One version of ``model``: its folder written, then ``Registry.create_version``."""
        from modelledger import UploadedVersion
        from modelledger._canonical import canonicalize_str
        from modelledger._domain import LazyJSON
        from modelledger._integrity import version_digest

        tpl = self.b.template
        self.b.next_folder += 1
        i = self.b.next_folder
        folder = f"models/{model}/b{i:07d}"
        manifest = {
            **dict(tpl.manifest),
            "params": {"i": i},
            "metrics": {"auc": round(0.5 + (i % 499) / 1000, 3)},
        }
        text = canonicalize_str(manifest)
        sealed = LazyJSON(text, manifest)
        digest = version_digest(tpl.files, sealed)
        record = {
            "model": model,
            "digest": digest,
            "files": [f.to_dict() for f in tpl.files],
            "manifest": manifest,
        }
        # written as an upload writes it (verify compares it with the registered manifest)
        record_json = json.dumps(record, indent=2, sort_keys=True)
        self.writes.append(self.pool.submit(self._write_folder, self.art.full(folder), record_json))
        mv = self.registry.create_version(
            UploadedVersion(
                model=model, folder=folder, digest=digest, flavor=tpl.flavor, files=tpl.files, manifest=sealed
            )
        )
        self._count(model, mv.version, ordinary=ordinary)
        if ordinary or model == HOT:
            self.b.pairs.append((model, mv.version))

    def _write_folder(self, root: str, manifest_json: str) -> None:
        os.makedirs(f"{root}/artifacts")
        for rel, data in self.files:
            with open(f"{root}/artifacts/{rel}", "wb") as fh:
                fh.write(data)
        with open(f"{root}/manifest.json", "w") as fh:
            fh.write(manifest_json)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One database transaction, committed once every folder written in it is complete."""
        with one_transaction(self.meta):
            yield
            writes, self.writes = self.writes, []
            for w in writes:
                w.result()

    # ---- growing to a size

    def grow(self, size: int) -> dict[str, float]:
        cfg, b = self.cfg, self.b
        phases: dict[str, float] = {}
        t0 = time.perf_counter()
        todo = size - b.versions
        done = 0
        while done < todo:
            n = min(cfg.batch, todo - done)
            with self.batch():
                for _ in range(n):
                    if self.rng.random() < cfg.hot_share:
                        self._create(HOT, ordinary=False)
                    else:
                        self._create(self.rng.choice(b.models), ordinary=True)
            done += n
            if done % (cfg.batch * 20) == 0 or done == todo:
                el = time.perf_counter() - t0
                print(f"      {b.versions:>9,} versions  {el:7.1f} s  ({done / el:,.0f}/s)", flush=True)
        phases["versions_s"] = time.perf_counter() - t0
        phases["versions_added"] = max(todo, 0)

        # every ordinary model's @champion on its latest version (get by alias reads it)
        t0 = time.perf_counter()
        with one_transaction(self.meta):
            for name in b.with_versions:
                self.registry.set_alias(name, "champion", b.last[name])
        phases["champions_s"] = time.perf_counter() - t0

        largest = max(cfg.size_list)
        t0 = time.perf_counter()
        want = round(cfg.alias_moves * size / largest)
        self._alias_moves(want - b.alias_moves)
        phases["alias_moves_s"] = time.perf_counter() - t0
        phases["alias_moves"] = b.alias_moves

        t0 = time.perf_counter()
        want = round(cfg.events * size / largest)
        head = self.registry.ledger_head()[0]
        self._filler(want - head)
        phases["filler_s"] = time.perf_counter() - t0
        phases["ledger_events"] = self.registry.ledger_head()[0]

        # a few predictions captured on the hot model's latest version, to trace
        t0 = time.perf_counter()
        self._capture()
        phases["capture_s"] = time.perf_counter() - t0
        return phases

    def _alias_moves(self, n: int) -> None:
        signer = self.registry._signer()  # the facade's checkpoint signer, as governed writes use it
        b = self.b
        while n > 0:
            k = min(MOVES_PER_CALL, n)
            start = b.alias_moves

            def decide(ctx: Any, start: int = start, k: int = k) -> list[Any]:
                return alias_move_drafts(ALIASED, start, k)

            events = self.meta.govern(ALIASED, None, decide, actor=self.registry.actor, signer=signer)
            b.alias_moves += k
            b.alias_times.append((b.alias_moves, events[-1].time))
            n -= k

    def _filler(self, n: int) -> None:
        from modelledger._lifecycle import EventDraft

        signer = self.registry._signer()
        b = self.b
        while n > 0:
            k = min(MOVES_PER_CALL, n)
            start = b.filler_events

            def decide(ctx: Any, start: int = start, k: int = k) -> list[Any]:
                out = []
                for i in range(start, start + k):
                    alias = f"a{i % FILLER_ALIASES}"
                    version = 1 + i % 2
                    previous = None if i < FILLER_ALIASES else 1 + (i - FILLER_ALIASES) % 2
                    data = {
                        "model": FILLER,
                        "alias": alias,
                        "version": version,
                        "previous": previous,
                        "aliases": {alias: version},
                    }
                    out.append(EventDraft("alias.set", f"models:/{FILLER}@{alias}", data))
                return out

            self.meta.govern(FILLER, None, decide, actor=self.registry.actor, signer=signer)
            b.filler_events += k
            n -= k

    def _capture(self) -> None:
        import pandas as pd  # a Predictor takes frames: pandas comes with the dev and bench extras

        uri = f"models:/{HOT}/{self.b.last[HOT]}"
        served = self.serving.load(uri, capture=True)
        try:
            receipts = served.predict(pd.DataFrame({"x": [float(i) for i in range(20)]})).receipts
            self.b.predictions.extend(receipts.ids)
        finally:
            served.close()


# --------------------------------------------------------------------------- the work witness

_DML = ("SELECT", "WITH", "INSERT", "UPDATE", "DELETE")
_SCANS = ("Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan")
SQLITE_STEP = 10  # the progress handler counts SQLite VM instructions in steps of this many


def _statement_key(sql: str) -> str:
    """A statement's text on one line, shortened: what the breakdown names it by."""
    text = " ".join(sql.split())
    return text if len(text) <= 160 else text[:157] + "..."


def _pg_nodes(node: dict[str, Any], depth: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    yield depth, node
    for child in node.get("Plans", ()):
        yield from _pg_nodes(child, depth + 1)


def doc_planning(doc: Any) -> int:
    """Shared buffers the planner touched for one EXPLAIN document (catalog rows not yet in
    this connection's caches, and the index ends it reads to estimate a range)."""
    top = (json.loads(doc) if isinstance(doc, str) else doc)[0]
    planning = top.get("Planning", {})
    return int(planning.get("Shared Hit Blocks", 0)) + int(planning.get("Shared Read Blocks", 0))


def _pg_shape(plan: dict[str, Any]) -> str:
    """The plan's shape: node types, with the index or table each reads, without numbers."""
    parts = []
    for depth, node in _pg_nodes(plan):
        name = node["Node Type"]
        if node.get("Index Name"):
            name += f" {node['Index Name']}"
            if node.get("Scan Direction") == "Backward":
                name += " backward"
        elif node.get("Relation Name"):
            name += f" {node['Relation Name']}"
        parts.append("  " * depth + name)
    return "\n".join(parts)


@dataclass
class Work:
    """What one call of a verb made the database do."""

    hit: int = 0  # PostgreSQL: shared buffers found in shared_buffers
    read: int = 0  # PostgreSQL: shared buffers read from the OS (its page cache or the disk)
    rows: int = 0  # rows the scans produced plus the rows their filters removed
    steps: int = 0  # SQLite: virtual machine instructions (in steps of SQLITE_STEP)
    planning: int = 0  # PostgreSQL: shared buffers the planner touched (hit + read)
    generic: int = 0  # PostgreSQL: buffers with each read under its generic (cacheable) plan
    statements: list[dict[str, Any]] = field(default_factory=list)

    @property
    def buffers(self) -> int:
        return self.hit + self.read


class WorkWitness:
    """Counts the work each call of a verb makes the database do, independent of timing noise.

    PostgreSQL: each statement a registry sends is first run under ``EXPLAIN (ANALYZE, BUFFERS,
    FORMAT JSON)`` on the same connection, with the same values, inside a savepoint that is then
    rolled back (a statement outside a transaction is a read, explained as it is), and then run
    for real. The plan gives the shared buffers touched (hit + read), the rows each scan read
    and the plan's shape. The explained run comes first, so the real one finds every page
    warm; the count is that of the statement, not of the cache. Not counted: the foreign-key
    checks the triggers of an insert make (one primary-key probe each) and the planning.

    SQLite: a progress handler counts the virtual machine instructions each call runs (a
    seek in an index is one, however deep the tree), and each statement's ``EXPLAIN QUERY
    PLAN`` is read on a connection of its own.
    """

    def __init__(self, registries: Sequence[Any]) -> None:
        self.engines = [r._meta.engine for r in registries]
        self.dialect = self.engines[0].dialect.name
        self.work: Work | None = None  # the call being counted
        self._sqlite_path: str | None = None
        if self.dialect == "sqlite":
            self._sqlite_path = str(registries[0]._meta.sqlite_path)

    # ---- one call

    def count(self, call: Callable[[], Any]) -> Work:
        import sqlalchemy as sa  # the store's engine: the dev venv has it

        self.work = Work()
        listeners = self._listeners()
        for engine in self.engines:
            for name, fn in listeners:
                sa.event.listen(engine, name, fn)
        try:
            call()
        finally:
            for engine in self.engines:
                for name, fn in listeners:
                    sa.event.remove(engine, name, fn)
        work, self.work = self.work, None
        if self.dialect == "sqlite":
            self._sqlite_plans(work)
        return work

    def _listeners(self) -> list[tuple[str, Callable[..., None]]]:
        if self.dialect == "sqlite":

            def on_checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
                work = self.work
                assert work is not None

                def step() -> int:
                    work.steps += SQLITE_STEP
                    return 0

                dbapi_conn.set_progress_handler(step, SQLITE_STEP)
                dbapi_conn.set_trace_callback(lambda sql: work.statements.append({"sql": sql}))

            def on_checkin(dbapi_conn: Any, _record: Any) -> None:
                if dbapi_conn is not None:
                    dbapi_conn.set_progress_handler(None, 0)
                    dbapi_conn.set_trace_callback(None)

        else:
            cursor_class = self._explaining_cursor()

            def on_checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
                dbapi_conn.cursor_factory = cursor_class

            def on_checkin(dbapi_conn: Any, _record: Any) -> None:
                if dbapi_conn is not None:
                    import psycopg

                    dbapi_conn.cursor_factory = psycopg.Cursor

        return [("checkout", on_checkout), ("checkin", on_checkin)]

    # ---- PostgreSQL

    def _explaining_cursor(self) -> type:
        import psycopg

        witness = self

        class Explaining(psycopg.Cursor):  # type: ignore[type-arg]
            def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:
                witness._explain(self.connection, query, params)
                return super().execute(query, params, **kw)

            def executemany(self, query: Any, params_seq: Any, **kw: Any) -> Any:
                params_seq = list(params_seq)
                for params in params_seq:
                    witness._explain(self.connection, query, params)
                return super().executemany(query, params_seq, **kw)

        return Explaining

    def _explain(self, conn: Any, query: Any, params: Any) -> None:
        import psycopg

        work = self.work
        sql = query if isinstance(query, str) else query.decode() if isinstance(query, bytes) else str(query)
        if work is None or not sql.lstrip()[:8].upper().startswith(_DML):
            return
        in_tx = not conn.autocommit
        if not in_tx and not sql.lstrip()[:8].upper().startswith(("SELECT", "WITH")):
            work.statements.append(
                {"sql": _statement_key(sql), "note": "a write outside a transaction: not explained"}
            )
            return
        cur = psycopg.Cursor(conn)
        try:
            if in_tx:
                cur.execute("SAVEPOINT work_witness")
            try:
                cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
                row = cur.fetchone()
                generic = self._generic(cur, sql, params, in_tx)
            except psycopg.Error as exc:
                if not in_tx:
                    raise
                cur.execute("ROLLBACK TO SAVEPOINT work_witness")
                cur.execute("RELEASE SAVEPOINT work_witness")
                work.statements.append({"sql": _statement_key(sql), "note": f"not explained: {exc}"})
                return
            if in_tx:
                cur.execute("ROLLBACK TO SAVEPOINT work_witness")
                cur.execute("RELEASE SAVEPOINT work_witness")
        finally:
            cur.close()
        assert row is not None
        doc = row[0]
        plan = (json.loads(doc) if isinstance(doc, str) else doc)[0]["Plan"]
        hit, read = int(plan["Shared Hit Blocks"]), int(plan["Shared Read Blocks"])
        planned = doc_planning(doc)
        rows = 0
        for _depth, node in _pg_nodes(plan):
            if node["Node Type"] in _SCANS:
                loops = int(node.get("Actual Loops", 1))
                rows += loops * (
                    int(node.get("Actual Rows", 0))
                    + int(node.get("Rows Removed by Filter", 0))
                    + int(node.get("Rows Removed by Index Recheck", 0))
                )
        work.hit += hit
        work.read += read
        work.rows += rows
        work.planning += planned
        work.generic += hit + read if generic is None else generic
        work.statements.append(
            {
                "sql": _statement_key(sql),
                "hit": hit,
                "read": read,
                "rows": rows,
                "planning": planned,
                "generic": generic,
                "plan": _pg_shape(plan),
            }
        )

    @staticmethod
    def _generic(cur: Any, sql: str, params: Any, in_tx: bool) -> int | None:
        """The buffers of a read under the plan PostgreSQL may cache for it once prepared (a
        generic plan: made for any value, estimated from averages). psycopg prepares a statement
        on its fifth run; EXPLAIN of the text plans for the values given and cannot show this.
        None for a write or a statement without named parameters."""
        import psycopg

        if (
            not isinstance(params, dict)
            or not params
            or not sql.lstrip()[:8].upper().startswith(("SELECT", "WITH"))
        ):
            return None
        names: list[str] = []

        def number(m: Any) -> str:
            if m.group(1) not in names:
                names.append(m.group(1))
            return f"${names.index(m.group(1)) + 1}"

        text = re.sub(r"%\((\w+)\)s", number, sql).replace("%%", "%")
        # its own savepoint (in a transaction) or a RESET (outside one): a failure here leaves
        # neither the transaction aborted nor the connection planning generically
        cur.execute("SAVEPOINT work_witness_generic" if in_tx else "SELECT 1")
        prepared = False
        try:
            values = ", ".join(psycopg.sql.Literal(params[n]).as_string(cur.connection) for n in names)
            cur.execute(f"SET {'LOCAL ' if in_tx else ''}plan_cache_mode = force_generic_plan")
            cur.execute(f"PREPARE work_witness_generic AS {text}")
            prepared = True
            cur.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE work_witness_generic({values})")
            doc = cur.fetchone()[0]
        except (psycopg.Error, KeyError, TypeError):
            if in_tx:
                cur.execute("ROLLBACK TO SAVEPOINT work_witness_generic")
            return None
        finally:
            if in_tx:
                cur.execute("RELEASE SAVEPOINT work_witness_generic")
            else:
                cur.execute("RESET plan_cache_mode")
            if prepared:
                cur.execute("DEALLOCATE work_witness_generic")
        plan = (json.loads(doc) if isinstance(doc, str) else doc)[0]["Plan"]
        return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])

    # ---- SQLite

    def _sqlite_plans(self, work: Work) -> None:
        """The query plan of each statement the call ran (writes are planned, not run)."""
        conn = sqlite3.connect(f"{Path(self._sqlite_path or '').as_uri()}?mode=ro", uri=True)
        try:
            kept = []
            for s in work.statements:
                sql = s["sql"]
                if not sql.lstrip()[:8].upper().startswith(_DML):
                    continue
                try:
                    lines = [str(r[3]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql)]
                except sqlite3.Error as exc:
                    lines = [f"not planned: {exc}"]
                kept.append({"sql": _statement_key(sql), "plan": "\n".join(lines)})
            work.statements = kept
        finally:
            conn.close()


def summarise_work(calls: Sequence[Work], dialect: str) -> dict[str, Any]:
    """Per verb and size: the median call's counts, the range over the calls, and the median
    call's statements (each with its plan)."""
    measure = (lambda w: w.buffers) if dialect == "postgresql" else (lambda w: w.steps)
    ordered = sorted(calls, key=measure)
    mid = ordered[(len(ordered) - 1) // 2]
    out: dict[str, Any] = {"calls": len(calls)}
    if dialect == "postgresql":
        out.update(
            buffers=mid.buffers,
            hit=mid.hit,
            read=mid.read,
            rows=mid.rows,
            planning=mid.planning,
            generic=mid.generic,
            buffers_min=measure(ordered[0]),
            buffers_max=measure(ordered[-1]),
        )
    else:
        out.update(vm_steps=mid.steps, vm_steps_min=measure(ordered[0]), vm_steps_max=measure(ordered[-1]))
    out["statements"] = mid.statements
    return out


# --------------------------------------------------------------------------- measuring


def measure_verbs(
    bld: Builder, size: int, cfg: argparse.Namespace, witness: WorkWitness | None = None
) -> tuple[dict[str, list[float]], dict[str, list[Work]]]:
    """Each verb's timed calls (seconds) and, with a ``witness``, its counted calls."""
    reg, officer, b = bld.registry, bld.officer, bld.b
    counted_calls = cfg.buffer_calls if witness is not None else 0
    n = cfg.reps + cfg.warmup + counted_calls
    out: dict[str, list[float]] = {}
    counted: dict[str, list[Work]] = {}

    def run(verb: str, calls: Sequence[Callable[[], Any]]) -> int:
        """Time ``calls`` after the warm-up ones; a slow verb stops after ``--verb-budget``
        seconds (with at least ``MIN_REPS`` timed calls). Then, with a witness, count the work
        of the next ``--buffer-calls`` calls (apart from the timing: explaining doubles the
        work). Returns how many calls were made."""
        for call in calls[: cfg.warmup]:
            call()
        samples: list[float] = []
        deadline = time.perf_counter() + cfg.verb_budget
        made = cfg.warmup
        for call in calls[cfg.warmup : cfg.warmup + cfg.reps]:
            start = time.perf_counter()
            call()
            made += 1
            samples.append(time.perf_counter() - start)
            if len(samples) >= MIN_REPS and start > deadline:
                break
        out[verb] = samples
        if witness is not None:
            counted[verb] = [witness.count(call) for call in calls[made : made + counted_calls]]
            made += len(counted[verb])
        return int(made)

    def draw(verb: str, pool: Sequence[Any], k: int = n, *, distinct: bool = False) -> list[Any]:
        rng = _rng(cfg.seed, size, verb)
        return rng.sample(list(pool), k) if distinct else [rng.choice(pool) for _ in range(k)]

    with_alias = [*b.with_versions]
    run(
        "get_by_alias",
        [partial(reg.get_version, f"models:/{m}@champion") for m in draw("alias", with_alias)],
    )
    run("get_by_number", [partial(reg.get_version, m, v) for m, v in draw("number", b.pairs)])
    run("list_first_page", [partial(reg.list_versions, HOT, limit=100) for _ in range(n)])

    rng = _rng(cfg.seed, size, "register")
    targets = [rng.choice(b.models) for _ in range(n)]

    def register(m: str) -> None:
        mv = reg.register(m, Score(), capture=False, params={"C": 1.0}, metrics={"auc": 0.9})
        pending.append((m, mv.version))

    pending: list[tuple[str, int]] = []
    run("register", [partial(register, m) for m in targets])
    for m, v in pending:
        bld._count(m, v, ordinary=True)
        b.pairs.append((m, v))

    fresh = [p for p in b.pairs if p not in b.approved and p[0] != HOT]
    chosen = draw("approve", fresh, min(n, len(fresh)), distinct=True)
    made = run("approve", [partial(officer.approve, f"models:/{m}/{v}", reason="bench") for m, v in chosen])
    chosen = chosen[:made]
    b.approved.update(chosen)
    rng = _rng(cfg.seed, size, "deploy")
    rng.shuffle(chosen)
    run("deploy", [partial(officer.deploy, f"models:/{m}/{v}", reason="bench") for m, v in chosen])

    run("set_alias", [partial(reg.set_alias, m, "bench", v) for m, v in draw("set_alias", b.pairs)])

    times = b.alias_times
    middle = times[len(times) // 4 : max(len(times) // 4 + 1, 3 * len(times) // 4)]
    run("alias_at", [partial(reg.alias_at, ALIASED, "champion", w) for _, w in draw("alias_at", middle)])

    refs = [f"ref-{r:02d}" for r in range(REF_MODELS)]
    run("history", [partial(reg.history, m) for m in draw("history", refs)])
    run("audit_version", [partial(reg.audit, model=m, version=v) for m, v in draw("audit", b.pairs)])
    run("trace", [partial(reg.trace, pid) for pid in draw("trace", b.predictions)])
    # "m-00".."m-09" with 1,000 models: each names 100 of them, a full page. (Two digits up to
    # 100 prefixes, as before, left nine draws in ten matching no model at all.)
    prefixes = [f"m-{i:02d}" for i in range(max(1, min(100, cfg.models // 100)))]
    run("search_prefix", [partial(reg.list_models, prefix=p) for p in draw("prefix", prefixes)])
    teams = [f"t{i}" for i in range(10)]
    run("search_tag", [partial(reg.list_models, tags={"team": t}) for t in draw("tag", teams)])
    return out, counted


def _timed_verify(reg: Any, **kwargs: Any) -> tuple[Any, float, float]:
    """``reg.verify(**kwargs)`` with its wall time and its CPU time: this process's (every
    thread) plus that of the worker processes it started and waited for."""
    before = os.times()
    start = time.perf_counter()
    report = reg.verify(**kwargs)
    wall = time.perf_counter() - start
    after = os.times()
    cpu = sum(
        getattr(after, f) - getattr(before, f) for f in ("user", "system", "children_user", "children_system")
    )
    if not report.ok:
        raise RuntimeError(f"verify({kwargs}) found problems: {[str(p) for p in report.problems[:5]]}")
    return report, wall, cpu


def measure_verify(bld: Builder, cfg: argparse.Namespace) -> dict[str, Any]:
    reg = bld.registry
    # the same registry, one after the other: the one-process verify (jobs=1, workers=1: every
    # part in turn on one thread, as verify ran before worker processes) and the default
    # (worker processes checking signatures and version folders beside the ledger pass)
    _serial, serial_s, serial_cpu = _timed_verify(reg, jobs=1, workers=1, record=False)
    full, full_s, full_cpu = _timed_verify(reg)
    print(
        f"      full verify: {full_s:.1f} s, {full_cpu:.1f} s CPU ({full.events_checked:,} events, "
        f"{full.versions_checked:,} versions, {full.files_checked:,} files); in one process: "
        f"{serial_s:.1f} s, {serial_cpu:.1f} s CPU = {serial_s / full_s:.2f}x the wall time",
        flush=True,
    )
    rng = _rng(cfg.seed, "verify")
    start = time.perf_counter()
    for i in range(cfg.verify_versions):
        reg.register(
            rng.choice(bld.b.models), Score(), capture=False, params={"after": i}, metrics={"auc": 0.7}
        )
    register_s = time.perf_counter() - start
    start = time.perf_counter()
    since = reg.verify(since_last=True)
    since_s = time.perf_counter() - start
    if not since.ok:
        raise RuntimeError(f"verify(since_last=True) found problems: {[str(p) for p in since.problems[:5]]}")
    ratio = since_s / full_s
    print(
        f"      {cfg.verify_versions:,} versions registered in {register_s:.1f} s; "
        f"verify(since_last=True): {since_s:.2f} s ({since.events_checked:,} events, "
        f"{since.versions_checked:,} versions) = {ratio:.1%} of the full verify",
        flush=True,
    )
    return {
        "full_s": round(full_s, 3),
        "full_cpu_s": round(full_cpu, 3),
        "one_process_s": round(serial_s, 3),
        "one_process_cpu_s": round(serial_cpu, 3),
        "speedup": round(serial_s / full_s, 3),
        "jobs": os.cpu_count(),
        "full": {
            "events_checked": full.events_checked,
            "versions_checked": full.versions_checked,
            "files_checked": full.files_checked,
        },
        "registered_after": cfg.verify_versions,
        "register_s": round(register_s, 2),
        "since_last_s": round(since_s, 3),
        "since_last": {
            "events_checked": since.events_checked,
            "versions_checked": since.versions_checked,
            "files_checked": since.files_checked,
            "notes": list(getattr(since, "notes", ()) or ()),
        },
        "ratio": round(ratio, 4),
        "target": f"since_last < {SINCE_LAST_TARGET:.0%} of full",
        "pass": ratio < SINCE_LAST_TARGET,
    }


def run_backend(backend: str, cfg: argparse.Namespace, folders: list[Path]) -> dict[str, Any]:
    """Build and measure one backend. Its temporary folder is added to ``folders`` and left
    for the caller to remove once the results are out (100,000 version folders take minutes)."""
    from modelledger import Registry

    base = Path(tempfile.mkdtemp(prefix=f"modelledger-scale-{backend}-", dir=cfg.dir))
    folders.append(base)
    samples: dict[str, dict[int, list[float]]] = {verb: {} for verb, _ in VERBS}
    work: dict[str, dict[int, list[Work]]] = {verb: {} for verb, _ in VERBS}
    dialect = "sqlite" if backend == "sqlite" else "postgresql"
    build: dict[str, Any] = {"steps": {}}
    verify: dict[str, Any] | None = None
    started = time.perf_counter()
    try:
        with backend_registry(backend, base, keep=cfg.keep) as (url, artifacts):
            opened = [
                Registry.open(url, artifacts=artifacts, actor=who) if url else Registry.open(actor=who)
                for who in (ADMIN, OFFICER, SERVING)
            ]
            reg, officer, serving = opened
            bld = None
            try:
                bld = Builder(reg, officer, serving, cfg)
                witness = WorkWitness(opened) if cfg.buffers else None
                build["fsync_floor_ms_before"] = round(_fsync_floor_ms(base), 3)
                t0 = time.perf_counter()
                bld.start()
                build["start_s"] = round(time.perf_counter() - t0, 2)
                fixed = bld.b.versions
                for size in cfg.size_list:
                    if size < bld.b.versions:
                        print(
                            f"   [{backend}] {size:,}: the registry already holds {bld.b.versions:,} versions"
                        )
                    print(f"   [{backend}] growing to {size:,} versions", flush=True)
                    phases = bld.grow(size)
                    print(
                        f"   [{backend}] {bld.b.versions:,} versions, {phases['alias_moves']:,} alias moves, "
                        f"{phases['ledger_events']:,} events; built in "
                        f"{sum(v for k, v in phases.items() if k.endswith('_s')):.1f} s; measuring",
                        flush=True,
                    )
                    if url is not None and not cfg.no_vacuum:
                        phases["vacuum_analyze_s"] = vacuum_analyze(url)
                        print(
                            f"   [{backend}] VACUUM (ANALYZE) in {phases['vacuum_analyze_s']:.1f} s",
                            flush=True,
                        )
                    gc.collect()
                    t0 = time.perf_counter()
                    measured, counted = measure_verbs(bld, size, cfg, witness)
                    phases["measure_s"] = time.perf_counter() - t0
                    for verb, values in measured.items():
                        samples[verb][size] = values
                    for verb, calls in counted.items():
                        work[verb][size] = calls
                    build["steps"][str(size)] = {
                        k: (round(v, 2) if isinstance(v, float) else v) for k, v in phases.items()
                    }
                    print(f"   [{backend}] measured in {phases['measure_s']:.1f} s", flush=True)
                build["fsync_floor_ms_after"] = round(_fsync_floor_ms(base), 3)
                build["fixed_versions"] = fixed
                build["versions_at_end"] = bld.b.versions
                if not cfg.no_verify:
                    print(f"   [{backend}] verify at {bld.b.versions:,} versions", flush=True)
                    t0 = time.perf_counter()
                    verify = measure_verify(bld, cfg)
                    build["verify_phase_s"] = round(time.perf_counter() - t0, 1)
            finally:
                if bld is not None:
                    bld.pool.shutdown()
                for r in opened:
                    r.close()
    finally:
        build["total_s"] = round(time.perf_counter() - started, 1)
    build["total_s"] = round(time.perf_counter() - started, 1)
    verbs: dict[str, Any] = {}
    for verb, label in VERBS:
        by_size = samples[verb]
        medians = {s: statistics.median(v) * 1000 for s, v in by_size.items() if v}
        if not medians:
            continue
        lo, hi = min(medians), max(medians)
        growth = medians[hi] / medians[lo] if medians[lo] > 0 else float("inf")
        verbs[verb] = {
            **{str(s): round(ms, 4) for s, ms in medians.items()},
            "p95": {str(s): round(_pct(v, 0.95) * 1000, 4) for s, v in by_size.items() if v},
            "reps": {str(s): len(v) for s, v in by_size.items()},
            "growth": round(growth, 3),
            "label": label,
            "pass": growth <= GROWTH_TARGET,
        }
        if work[verb]:
            verbs[verb]["work"] = work_row(work[verb], dialect)
    return {"verbs": verbs, "verify": verify, "build": build}


def work_row(by_size: dict[int, list[Work]], dialect: str) -> dict[str, Any]:
    """A verb's witness row: per size, the median call's counts and statements; the growth of
    the count from the smallest size to the largest; whether every size ran the same plans."""
    sizes = {s: summarise_work(calls, dialect) for s, calls in by_size.items() if calls}
    key = "buffers" if dialect == "postgresql" else "vm_steps"
    lo, hi = min(sizes), max(sizes)
    first = sizes[lo][key]
    shapes = {s: [st.get("plan", st.get("note", "")) for st in row["statements"]] for s, row in sizes.items()}
    return {
        "measure": key,
        **{str(s): row for s, row in sizes.items()},
        "growth": round(sizes[hi][key] / first, 3) if first else None,
        "same_plans": all(v == shapes[lo] for v in shapes.values()),
    }


# --------------------------------------------------------------------------- output


def print_table(backend: str, result: dict[str, Any], sizes: Sequence[int]) -> None:
    verbs = result["verbs"]
    head = "".join(f"{f'{s:,}':>20}" for s in sizes)
    print()
    print(f"{backend}: median / p95 ms at each size (versions); growth = largest/smallest median")
    print(f"{'verb':<44}{head}{'growth':>9}  target <= {GROWTH_TARGET}x")
    print("-" * (44 + 20 * len(sizes) + 24))
    for verb, label in VERBS:
        row = verbs.get(verb)
        if row is None:
            continue
        cells = ""
        for s in sizes:
            key = str(s)
            cells += f"{row[key]:>10.3f} {row['p95'][key]:>9.3f}" if key in row else f"{'-':>20}"
        print(f"{label:<44}{cells}{row['growth']:>8.2f}x  {'PASS' if row['pass'] else 'FAIL'}")
    print_work(backend, verbs, sizes)
    v = result.get("verify")
    if v:
        print(
            f"verify: full {v['full_s']:.2f} s ({v['one_process_s']:.2f} s in one process: "
            f"{v['speedup']:.2f}x); after {v['registered_after']:,} new versions, "
            f"since_last {v['since_last_s']:.3f} s = {v['ratio']:.1%} of the full "
            f"(target < {SINCE_LAST_TARGET:.0%}): {'PASS' if v['pass'] else 'FAIL'}"
        )
    b = result["build"]
    print(
        f"fsync floor (4 KB + fsync, median of 50): {b.get('fsync_floor_ms_before')} ms before, "
        f"{b.get('fsync_floor_ms_after')} ms after; backend run {b['total_s']:.0f} s"
    )


def print_work(backend: str, verbs: dict[str, Any], sizes: Sequence[int]) -> None:
    """The witness table: the work of the median counted call at each size."""
    rows = [(label, verbs[verb]["work"]) for verb, label in VERBS if "work" in verbs.get(verb, {})]
    if not rows:
        return
    pg = rows[0][1]["measure"] == "buffers"
    print()
    if pg:
        print(f"{backend}: shared buffers touched per call (hit + read; read in brackets), rows scanned")
    else:
        print(f"{backend}: SQLite VM instructions per call (in steps of {SQLITE_STEP})")
    head = "".join(f"{f'{s:,}':>20}" for s in sizes)
    print(f"{'verb':<44}{head}{'growth':>9}  plans")
    print("-" * (44 + 20 * len(sizes) + 24))
    for label, row in rows:
        cells = ""
        for s in sizes:
            cell = row.get(str(s))
            if cell is None:
                cells += f"{'-':>20}"
            elif pg:
                touched = f"{cell['buffers']} ({cell['read']})"
                cells += f"{touched:>13}{cell['rows']:>7}"
            else:
                cells += f"{cell['vm_steps']:>20,}"
        growth = f"{row['growth']:.2f}x" if row["growth"] is not None else "-"
        print(f"{label:<44}{cells}{growth:>9}  {'same' if row['same_plans'] else 'CHANGED'}")
    if pg:  # the plans a prepared statement may switch to, where they would do more
        for label, row in rows:
            for s in sizes:
                cell = row.get(str(s))
                if cell and cell.get("generic", 0) > 1.1 * cell["buffers"] + 10:
                    print(
                        f"  generic plans, {label} at {s:,}: {cell['generic']} buffers "
                        f"(the values' own plans: {cell['buffers']})"
                    )


def machine(cfg: argparse.Namespace, load_before: float, backends: Sequence[str]) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": pg_version() if "postgres" in backends else None,
        "postgresql_settings": pg_settings() if "postgres" in backends else None,
        "filesystem": fs_type(Path(cfg.dir or tempfile.gettempdir())),
        "sqlalchemy": dist_version("sqlalchemy"),
        "psycopg": dist_version("psycopg"),
        "modelledger": dist_version("modelledger"),
        "modelledger_git": git_state(REPO),
        "loadavg_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=None, help="versions at each step (default 1000,10000,100000)")
    p.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    p.add_argument("--quick", action="store_true", help="small sizes and fewer repetitions: a smoke run")
    p.add_argument("--models", type=int, default=None, help="ordinary models (default 1,000)")
    p.add_argument("--hot-share", type=float, default=0.25, help="share of the versions the hot model takes")
    p.add_argument(
        "--alias-moves", type=int, default=None, help="alias moves at the largest size (default: that size)"
    )
    p.add_argument(
        "--events", type=int, default=None, help="ledger events at the largest size (default: 10 x that size)"
    )
    p.add_argument("--reps", type=int, default=None, help="timed calls per verb and size (default 200)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 10)")
    p.add_argument(
        "--verb-budget",
        type=float,
        default=30.0,
        help="seconds of timed calls per verb and size, at most (30)",
    )
    p.add_argument("--batch", type=int, default=500, help="versions per build transaction (default 500)")
    p.add_argument(
        "--verify-versions", type=int, default=None, help="versions between the two verifies (1,000)"
    )
    p.add_argument("--no-verify", action="store_true", help="skip the verify section")
    p.add_argument("--seed", type=int, default=1, help="seed of every draw (default 1)")
    p.add_argument("--dir", default=None, help="parent of the temporary folders")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON (default %(default)s)")
    p.add_argument("--no-write", action="store_true", help="do not write the results JSON")
    p.add_argument(
        "--keep", action="store_true", help="keep the temporary folders (and the PostgreSQL database)"
    )
    p.add_argument(
        "--buffers",
        action="store_true",
        help="count each verb's work too: PostgreSQL shared buffers and rows per call "
        "(EXPLAIN ANALYZE, BUFFERS of every statement), SQLite VM instructions and query plans",
    )
    p.add_argument(
        "--no-vacuum",
        action="store_true",
        help="PostgreSQL: measure each size without VACUUM (ANALYZE) first (as autovacuum left it)",
    )
    p.add_argument("--buffer-calls", type=int, default=5, help="calls counted per verb and size (5)")
    cfg = p.parse_args(argv)
    quick = cfg.quick
    defaults = {
        "sizes": "200,2000" if quick else "1000,10000,100000",
        "models": 100 if quick else 1_000,
        "reps": 30 if quick else 200,
        "warmup": 3 if quick else 10,
        "verify_versions": 100 if quick else 1_000,
    }
    for key, value in defaults.items():
        if getattr(cfg, key) is None:
            setattr(cfg, key, value)
    try:
        cfg.size_list = sorted({int(s) for s in cfg.sizes.split(",") if s.strip()})
    except ValueError:
        p.error("--sizes takes numbers separated by commas")
    if cfg.size_list and cfg.alias_moves is None:
        cfg.alias_moves = cfg.size_list[-1]  # one move per version: 100,000 at 100,000 versions
    if cfg.size_list and cfg.events is None:
        cfg.events = 10 * cfg.size_list[-1]  # ten events per version: 1,000,000 at 100,000
    backends = [b.strip() for b in cfg.backends.split(",") if b.strip()]
    unknown = set(backends) - {"sqlite", "postgres"}
    if unknown or not backends:
        p.error(f"unknown backend(s): {', '.join(sorted(unknown))} (sqlite, postgres)")
    fixed = 1 + REF_MODELS * REF_VERSIONS + 4
    draws = cfg.reps + cfg.warmup + (cfg.buffer_calls if cfg.buffers else 0)
    if not cfg.size_list or cfg.size_list[0] <= fixed + draws:
        p.error(f"the smallest size must exceed {fixed + draws} (fixed content plus one draw of approvals)")
    if cfg.buffer_calls < 1:
        p.error("--buffer-calls >= 1")
    if cfg.models < 10 or not 0 <= cfg.hot_share < 1 or cfg.reps < 1 or cfg.warmup < 0 or cfg.batch < 1:
        p.error("--models >= 10, 0 <= --hot-share < 1, --reps >= 1, --warmup >= 0, --batch >= 1")

    started = _dt.datetime.now(_dt.timezone.utc)
    load_before = os.getloadavg()[0]
    results: dict[str, Any] = {}
    builds: dict[str, Any] = {}
    folders: list[Path] = []
    try:
        report(cfg, backends, results, builds, folders, started, load_before)
    finally:
        if cfg.keep:
            print(f"kept {', '.join(map(str, folders))}")
        else:
            print("removing the temporary folders (a version folder is 4 inodes)", flush=True)
            t0 = time.perf_counter()
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
            print(f"removed the temporary folders in {time.perf_counter() - t0:.0f} s")
    return 0


def report(
    cfg: argparse.Namespace,
    backends: list[str],
    results: dict[str, Any],
    builds: dict[str, Any],
    folders: list[Path],
    started: _dt.datetime,
    load_before: float,
) -> None:
    """Run every backend, print its table, write the results JSON."""
    quick = cfg.quick
    for backend in backends:
        print(f"== {backend}", flush=True)
        out = run_backend(backend, cfg, folders)
        results[backend] = {**out["verbs"], "verify": out["verify"]}
        builds[backend] = out["build"]
        print_table(backend, out, cfg.size_list)
        gc.collect()
    results["build"] = {
        "path": (
            "each version: its folder written directly (the first hot version's pickled model, "
            "manifest.json as an upload writes it, no fsync), then Registry.create_version, "
            f"{cfg.batch} per database transaction (one commit; each version's own events and "
            "signed checkpoint); alias moves and extra ledger events: the store's govern, "
            f"{MOVES_PER_CALL} alias.set events per call and checkpoint"
        ),
        "sizes": cfg.size_list,
        "models": cfg.models,
        "hot_share": cfg.hot_share,
        "reference_models": f"{REF_MODELS} x {REF_VERSIONS} versions",
        "alias_moves_at_largest": cfg.alias_moves,
        "ledger_events_at_largest": cfg.events,
        "reps": cfg.reps,
        "warmup": cfg.warmup,
        "verb_budget_s": cfg.verb_budget,
        "seed": cfg.seed,
        "backends": builds,
    }
    results["machine"] = machine(cfg, load_before, backends)
    results["run"] = {
        "date": started.isoformat(timespec="seconds"),
        "wall_s": round((_dt.datetime.now(_dt.timezone.utc) - started).total_seconds(), 1),
        "quick": quick,
        "growth_target": GROWTH_TARGET,
        "since_last_target": SINCE_LAST_TARGET,
    }
    m = results["machine"]
    print()
    print(
        f"{m['cpu_count']} x {m['cpu_model']}, python {m['python']}, sqlite {m['sqlite']}, "
        f"postgresql {m['postgresql']}, {m['filesystem']}; load {m['loadavg_1min']['before']:.2f} before, "
        f"{m['loadavg_1min']['after']:.2f} after; {results['run']['wall_s']:.0f} s in all"
    )
    if not cfg.no_write:
        cfg.out.parent.mkdir(parents=True, exist_ok=True)
        cfg.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {cfg.out}")


if __name__ == "__main__":
    sys.exit(main())
