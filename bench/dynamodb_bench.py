"""DynamoDB cost per verb: requests and capacity units, counted, as the registry grows.

Grows one registry on the DynamoDB store through ``--sizes`` (default 50 -> 1,000 versions) and
counts, at each size, what each verb sends to DynamoDB: requests (by API operation) and
capacity units. The figures come from :class:`modelledger.stores.dynamodb.metering.RequestMeter`,
which listens on the store's boto3 client (botocore's events; nothing is patched):

* ``rcu`` / ``wcu``: read and write capacity units by DynamoDB's published rules, computed from
  the items each request and answer carry (see the meter's docstring for the two
  simplifications). This is what on-demand DynamoDB would bill, per call.
* ``server`` units: what the server answered to ``ReturnConsumedCapacity=TOTAL``. On moto
  these are placeholders (a fixed number per call), shown only to say so.

The server is moto's (``ThreadedMotoServer``) on loopback, in this process. Its timings are
not AWS's, so this bench reports counts and units, never latency. One change to the test
server, for build time only: moto backs up every table a transaction touches once *per item*
of the transaction (to roll a cancelled one back), so a 60-item write on a table of 10,000
items deep-copies 600,000 items, and the build's time grows with the square of its size.
Here the items a transaction names are saved before it runs and put back if it is cancelled
(the same rollback, item by item). What the client sends, which is all that is counted, is
unchanged.

At each size the registry holds (``build`` in the JSON says the same):

* ``hot``: a model with a version registered through ``Registry.register`` (a small
  pickled model, a real artefact folder), whose ``@champion`` names version 1 and whose
  predictions are captured (``load(..., capture=True)``) for ``trace``; it takes a quarter of
  the versions, so its first page is always full;
* ``ref``: a reference model of fixed history (3 versions, one approved, one alias);
* ``aliased``: a model whose ``@champion`` moves ``--moves`` times at the largest size (in
  proportion at the smaller ones), 20 moves per governed write;
* the other versions over models ``m-0000``..., 10 versions each, tagged ``team=t0..t9``.

Every version is a registration: the store's ``create_version`` with the registration walk the
registry itself uses (``decide_registration``), the first hot version's files and manifest with
its own params; only the artefact folder is not written for them (the verbs counted here do
not read it; the metadata is exactly a registration's).

Each verb is called once unmetered (the first call of a process reads the schema, the key,
the roster), then ``--reps`` times metered; the first metered call is reported, ``steady``
says whether every repetition cost the same and ``requests_each`` lists them. Each
registration is of a model of its own: a registration whose folder name (``models/<name>/``
and the time to the second) was taken by one a moment before probes for the next free name
(a GetItem each), which back-to-back calls on one model would measure instead.

Results: ``bench/results/dynamodb.json``: ``{"verbs": {"<verb>": {"label", "by_size":
{"<versions>": usage}, "constant"}}, "sizes": [...], "build": ..., "server": ..., "machine":
...}``.

Example:
    .venv/bin/python bench/dynamodb_bench.py                     # 50 and 1,000 versions
    .venv/bin/python bench/dynamodb_bench.py --sizes 20,200 --moves 500 --no-write
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _machine import cpu_model, dist_version, git_state
from _workload import alias_move_drafts

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUT = HERE / "results" / "dynamodb.json"

ADMIN = "admin@bench.example"
OFFICER = "officer@bench.example"  # approves and deploys: four-eyes refuses the registrant
SERVING = "serving@bench.example"  # signs the receipts of captured predictions
HOT, REF, ALIASED, REGISTER = "hot", "ref", "aliased", "reg"
PAGE = 20  # versions on a listed page
VERSIONS_PER_MODEL = 10
MOVES_PER_WRITE = 20  # alias moves per governed write (a transaction holds at most 100 items)

VERBS: list[tuple[str, str]] = [
    ("register", "register one version (Registry.register)"),
    ("get_by_alias", "get version by alias"),
    ("get_by_number", "get version by number"),
    ("list_page", f"list a page of versions ({PAGE})"),
    ("approve", "approve"),
    ("deploy", "deploy"),
    ("set_alias", "set alias"),
    ("alias_at", "alias at a time (middle of the history)"),
    ("aliases_now", "aliases of a model with their last move"),
    ("trace", "trace a captured prediction"),
    ("history", "history of one model (fixed)"),
    ("search_prefix", "search models by name prefix (a page of 3)"),
    ("search_tag", "search models by tag (a page of 5)"),
]
KNOWN_TO_GROW = {
    "search_tag": "reads models by name until it has a page of matches: an index item per tag is not built"
}


class Score:
    """The model every version holds: twice its input column."""

    def predict(self, frame: Any) -> Any:
        return [float(v) * 2 for v in frame["x"]]


# --------------------------------------------------------------------------- the server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rollback_by_item() -> None:
    """Make moto's TransactWriteItems save the items it names, not whole tables (module doc)."""
    import copy

    import moto.dynamodb.models as backend_module  # the test server, in this process
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    original = DynamoDBBackend.transact_write_items

    class _TablesAsTheyAre:
        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            return value if isinstance(value, Table) else copy.deepcopy(value, memo)

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved = []
        for element in transact_items:
            op = next(iter(element.values()))
            table = self.get_table(op["TableName"])
            if "Key" in op:
                key = op["Key"]
            else:
                names = [n for n in (table.hash_key_attr, table.range_key_attr) if n]
                key = {n: op["Item"][n] for n in names}
            old = self.get_item(op["TableName"], key)
            saved.append(
                (op["TableName"], key, None if old is None else copy.deepcopy(old.to_json()["Attributes"]))
            )
        backend_module.copy = _TablesAsTheyAre  # type: ignore[assignment]
        try:
            original(self, transact_items)
        except Exception:
            for table_name, key, attrs in reversed(saved):
                if attrs is None:
                    self.delete_item(table_name, key)
                else:
                    self.put_item(table_name, attrs)
            raise
        finally:
            backend_module.copy = copy  # type: ignore[assignment]

    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    _rollback_by_item()
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


# --------------------------------------------------------------------------- the registry


def open_registry(store: Any, artifacts: Path, actor: str) -> Any:
    """The registry of ``actor`` on ``store``, built around the store itself rather than by
    ``Registry.open("dynamodb://...")``: the meter listens on this store's client."""
    from modelledger import Registry
    from modelledger.stores.artifacts import ArtifactStore

    return Registry(store, ArtifactStore(artifacts.as_uri()), actor=actor)


@dataclass
class Built:
    versions: int = 0
    models: list[str] = field(default_factory=list)
    last: dict[str, int] = field(default_factory=dict)
    fresh: list[tuple[str, int]] = field(default_factory=list)  # never approved: for approve/deploy
    alias_moves: int = 0
    middle: str = ""  # a time in the middle of the alias history
    predictions: list[str] = field(default_factory=list)
    template: Any = None
    folders: int = 0


class Builder:
    def __init__(self, store: Any, base: Path) -> None:
        from modelledger import create_identity

        os.environ["MODELLEDGER_IDENTITIES"] = str(base / "identities")  # never the user's own keys
        os.environ.pop("MODELLEDGER_KEY", None)
        self.store = store
        art = base / "artifacts"
        self.admin = open_registry(store, art, ADMIN)
        self.officer = open_registry(store, art, OFFICER)
        self.serving = open_registry(store, art, SERVING)
        self.create_identity = create_identity
        self.b = Built()

    def start(self, reps: int) -> None:
        import pandas as pd  # a Predictor takes frames: pandas comes with the dev and bench extras

        reg, b = self.admin, self.b
        reg.init()
        reg.enrol(OFFICER, self.create_identity(OFFICER)[2], roles=["approver", "deployer"], models="*")
        reg.enrol(SERVING, self.create_identity(SERVING)[2], roles=["serving"], models="*")
        b.template = reg.register(HOT, Score(), capture=False, params={"i": 0}, metrics={"auc": 0.5})
        b.versions, b.last[HOT] = 1, 1
        reg.set_alias(HOT, "champion", 1)
        for _ in range(PAGE - 1):
            self._create(HOT)
        for _ in range(3):
            self._create(REF)
        self.officer.approve(f"models:/{REF}/1", reason="bench")
        reg.set_alias(REF, "champion", 1)
        for _ in range(2):
            self._create(ALIASED)
        # the models the register verb writes to, one per call: registrations of one model
        # in the same second would share a folder name and probe for the next (module doc)
        for i in range(reps + 1):
            reg.create_model(f"{REGISTER}-{i}", description="bench")
        served = self.serving.load(f"models:/{HOT}/1", capture=True)
        try:
            b.predictions = list(served.predict(pd.DataFrame({"x": [1.0, 2.0, 3.0]})).receipts.ids)
        finally:
            served.close()

    def _create(self, model: str) -> None:
        """One version of ``model``, registered as ``Registry.create_version`` registers one."""
        from modelledger._canonical import canonicalize_str
        from modelledger._domain import LazyJSON
        from modelledger._integrity import version_digest
        from modelledger._lifecycle import decide_registration
        from modelledger._time import now

        b, tpl = self.b, self.b.template
        b.folders += 1
        folder = f"models/{model}/b{b.folders:07d}"
        manifest = {**dict(tpl.manifest), "params": {"i": b.folders}}
        sealed = LazyJSON(canonicalize_str(manifest), manifest)
        digest = version_digest(tpl.files, sealed)
        record = {"folder": folder, "digest": digest, "flavor": tpl.flavor, "files": len(tpl.files)}
        mv = self.store.create_version(
            model,
            folder=folder,
            digest=digest,
            flavor=tpl.flavor,
            files=tpl.files,
            manifest=sealed,
            created_by=ADMIN,
            now=now(),
            create_model=True,
            walk=lambda ctx: decide_registration(ctx, manifest, record),
            signer=self.admin._signer(),
            needs_context=False,
        )
        b.versions += 1
        b.last[model] = mv.version
        if model not in (HOT, REF, ALIASED):
            b.fresh.append((model, mv.version))

    def grow(self, size: int, moves: int, fresh: int) -> dict[str, float]:
        """Versions up to ``size`` (and at least ``fresh`` never approved, for approve and
        deploy), alias moves up to ``moves``."""
        b = self.b
        t0 = time.perf_counter()
        while b.versions < size or len(b.fresh) < fresh:
            if b.versions % 4 == 0 and b.versions < size:
                self._create(HOT)
                continue
            if not b.models or b.last.get(b.models[-1], 0) >= VERSIONS_PER_MODEL:
                name = f"m-{len(b.models):04d}"
                self.admin.create_model(name, description="bench", tags={"team": f"t{len(b.models) % 10}"})
                b.models.append(name)
            self._create(b.models[-1])
        built = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._alias_moves(moves - b.alias_moves)
        return {"versions_s": round(built, 1), "alias_moves_s": round(time.perf_counter() - t0, 1)}

    def _alias_moves(self, n: int) -> None:
        b, signer = self.b, self.admin._signer()
        target = b.alias_moves + n
        while n > 0:
            k = min(MOVES_PER_WRITE, n)
            start = b.alias_moves

            def decide(_ctx: Any, start: int = start, k: int = k) -> list[Any]:
                return alias_move_drafts(ALIASED, start, k)

            events = self.store.govern(ALIASED, None, decide, actor=ADMIN, signer=signer)
            b.alias_moves += k
            n -= k
            if b.alias_moves - k <= target // 2 < b.alias_moves:
                b.middle = events[0].time


# --------------------------------------------------------------------------- counting


def measure(bld: Builder, reps: int) -> dict[str, dict[str, Any]]:
    from modelledger.stores.dynamodb.metering import RequestMeter

    reg, officer, b = bld.admin, bld.officer, bld.b
    fresh = iter(list(b.fresh))
    targets = iter(f"{REGISTER}-{i}" for i in range(reps + 1))
    approved: list[tuple[str, int]] = []
    flip = [1]

    def approve() -> None:
        m, v = next(fresh)
        b.fresh.remove((m, v))
        officer.approve(f"models:/{m}/{v}", reason="bench")
        approved.append((m, v))

    def deploy() -> None:
        m, v = approved.pop(0)
        officer.deploy(f"models:/{m}/{v}", reason="bench")

    def set_alias() -> None:
        flip[0] = 1 + flip[0] % 2
        reg.set_alias(HOT, "bench", flip[0])

    calls: dict[str, Callable[[], Any]] = {
        "register": lambda: reg.register(next(targets), Score(), capture=False, params={"C": 1.0}),
        "get_by_alias": lambda: reg.get_version(f"models:/{HOT}@champion"),
        "get_by_number": lambda: reg.get_version(f"models:/{HOT}/1"),
        "list_page": lambda: reg.list_versions(HOT, limit=PAGE),
        "approve": approve,
        "deploy": deploy,
        "set_alias": set_alias,
        "alias_at": lambda: reg.alias_at(ALIASED, "champion", b.middle),
        "aliases_now": lambda: reg.alias_history(ALIASED, latest=True),
        "trace": lambda: reg.trace(b.predictions[0]),
        "history": lambda: reg.history(REF),
        "search_prefix": lambda: reg.list_models(prefix="m-", limit=3),
        "search_tag": lambda: reg.list_models(tags={"team": "t3"}, limit=5),
    }
    out: dict[str, dict[str, Any]] = {}
    with RequestMeter(bld.store) as meter:
        for verb, _label in VERBS:
            call = calls[verb]
            call()  # unmetered: a first call's one-off reads are not the verb's
            meter.take()
            usages = []
            for _ in range(reps):
                call()
                usages.append(meter.take())
            first = usages[0]
            steady = all((u.requests, u.operations) == (first.requests, first.operations) for u in usages)
            out[verb] = {
                **_rounded(first.to_dict()),
                "steady": steady,
                "requests_each": [u.requests for u in usages],
            }
    return out


def _rounded(usage: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in usage.items()}


# --------------------------------------------------------------------------- run


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "boto3": dist_version("boto3"),
        "moto": dist_version("moto"),
        "modelledger": dist_version("modelledger"),
        "modelledger_git": git_state(REPO),
    }


def report(results: dict[str, Any]) -> None:
    sizes = [str(s["versions"]) for s in results["sizes"]]
    head = f"{'verb':44} " + " ".join(f"{'req@' + s:>9}" for s in sizes)
    head += (
        " " + " ".join(f"{'rcu@' + s:>9}" for s in sizes) + " " + " ".join(f"{'wcu@' + s:>9}" for s in sizes)
    )
    print(head + "  same")
    for verb, label in VERBS:
        row = results["verbs"][verb]
        by = [row["by_size"][s] for s in sizes]
        line = f"{label[:44]:44} " + " ".join(f"{u['requests']:>9}" for u in by)
        line += " " + " ".join(f"{u['read_units']:>9}" for u in by)
        line += " " + " ".join(f"{u['write_units']:>9}" for u in by)
        print(line + ("  yes" if row["constant"] else "  NO"))
    for s in results["sizes"]:
        print(
            f"   at {s['versions']:,} versions: {s['models']:,} models, {s['alias_moves']:,} alias moves, "
            f"{s['ledger_events']:,} ledger events"
        )


def markdown(results: dict[str, Any]) -> str:
    """The table for the docs: per verb, requests by operation and units at each size."""
    sizes = [str(s["versions"]) for s in results["sizes"]]
    lines = [
        "| verb | requests | by operation | read units | write units | same at every size |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for verb, label in VERBS:
        row = results["verbs"][verb]
        by = [row["by_size"][s] for s in sizes]
        ops = ", ".join(f"{k} {v}" for k, v in by[-1]["operations"].items())

        def cell(key: str, by: list[dict[str, Any]] = by) -> str:
            values = [u[key] for u in by]
            return str(values[0]) if len(set(values)) == 1 else " / ".join(str(v) for v in values)

        same = "yes" if row["constant"] else "no: " + row.get("note", "grows")
        lines.append(
            f"| {label} | {cell('requests')} | {ops} | {cell('read_units')} | {cell('write_units')} | {same} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="50,1000", help="versions at each step (default %(default)s)")
    p.add_argument(
        "--moves", type=int, default=2000, help="alias moves at the largest size (default %(default)s)"
    )
    p.add_argument(
        "--reps", type=int, default=3, help="metered calls per verb and size (default %(default)s)"
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON (default %(default)s)")
    p.add_argument("--no-write", action="store_true", help="do not write the results JSON")
    p.add_argument("--markdown", action="store_true", help="also print the table docs/dynamodb.md shows")
    p.add_argument("--from-json", type=Path, help="print the tables of a results file; run nothing")
    cfg = p.parse_args(argv)
    if cfg.from_json:
        done = json.loads(cfg.from_json.read_text())
        report(done)
        print(markdown(done))
        return 0
    sizes = [int(s) for s in cfg.sizes.split(",")]
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")  # the test server takes any
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    from modelledger.stores.dynamodb import DynamoStore

    results: dict[str, Any] = {"sizes": [], "verbs": {}, "build": {}}
    by_size: dict[str, dict[str, dict[str, Any]]] = {}
    started = time.perf_counter()
    with moto_server() as endpoint, tempfile.TemporaryDirectory(prefix="modelledger-dynamodb-") as tmp:
        store = DynamoStore(f"dynamodb://b{uuid.uuid4().hex[:8]}-?region=us-east-1&endpoint_url={endpoint}")
        t0 = time.perf_counter()
        store.migrate()
        bld = Builder(store, Path(tmp))
        bld.start(cfg.reps)
        results["build"]["start_s"] = round(time.perf_counter() - t0, 1)
        for size in sizes:
            moves = max(10, round(cfg.moves * size / sizes[-1]))
            print(f"   growing to {size:,} versions and {moves:,} alias moves", flush=True)
            results["build"][str(size)] = bld.grow(size, moves, cfg.reps + 1)
            fact = {
                "versions": bld.b.versions,
                "models": len(bld.b.models) + 4 + cfg.reps,
                "alias_moves": bld.b.alias_moves,
                "ledger_events": store.ledger_head()[0],
            }
            results["sizes"].append(fact)
            by_size[str(fact["versions"])] = measure(bld, cfg.reps)
            bld.b.versions += cfg.reps + 1  # the registrations measured
        store.close()
    for verb, label in VERBS:
        per = {s: by_size[s][verb] for s in by_size}
        shapes = {
            (u["requests"], json.dumps(u["operations"], sort_keys=True), u["read_units"], u["write_units"])
            for u in per.values()
        }
        row: dict[str, Any] = {"label": label, "by_size": per, "constant": len(shapes) == 1}
        if verb in KNOWN_TO_GROW:
            row["note"] = KNOWN_TO_GROW[verb]
        results["verbs"][verb] = row
    results["build"]["total_s"] = round(time.perf_counter() - started, 1)
    results["server"] = {
        "kind": "moto ThreadedMotoServer on loopback, in the bench process",
        "transactions": "rolled back item by item, not by copying whole tables (module doc)",
        "server_units": "moto answers ReturnConsumedCapacity with fixed numbers: not a measurement",
    }
    results["machine"] = machine()
    report(results)
    if cfg.markdown:
        print(markdown(results))
    if not cfg.no_write:
        cfg.out.parent.mkdir(parents=True, exist_ok=True)
        cfg.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"   results: {cfg.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
