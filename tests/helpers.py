"""Small model classes used by the tests (importable, so pickles can find them), the
attacker's raw database connection, an ASGI app served on a free loopback port, and the
subcommands of a click group."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import click
import numpy as np
import sqlalchemy as sa

from modelledger.stores.dynamodb.ledger import ALIAS_SLOTS


class Doubler:
    """A plain Python model: predicts twice the first column."""

    def predict(self, data: Any) -> Any:
        return np.asarray(data)[:, 0] * 2


class Tripwire:
    """Unpickling this object leaves a mark in the file it names."""

    def __init__(self, mark: str) -> None:
        self.mark = mark

    def predict(self, data: Any) -> Any:
        return np.zeros(len(data))

    def __setstate__(self, state: dict[str, Any]) -> None:
        with open(state["mark"], "a") as fh:
            fh.write("unpickled\n")
        self.__dict__.update(state)


@contextmanager
def attacker(db_url: str) -> Iterator[sa.Connection]:
    """A raw connection with the append-only triggers out of the way."""
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                for name in conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger'"
                ).scalars():
                    conn.exec_driver_sql(f"DROP TRIGGER {name}")
            else:
                conn.exec_driver_sql("SET LOCAL session_replication_role = replica")  # skips triggers
            yield conn
    finally:
        engine.dispose()


class DynamoAttacker:
    """A DynamoDB registry's tables edited item by item with boto3, as someone holding write
    access to them could (the writer's IAM policy denies UpdateItem and DeleteItem on the
    ledger table; an administrator's does not): the DynamoDB counterpart of :func:`attacker`.
    Rows are plain dicts with the SQL tables' column names, so one test reads the same on both.
    """

    def __init__(self, db_url: str) -> None:
        import boto3
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

        from modelledger.stores.dynamodb import parse_url

        prefix, region, endpoint = parse_url(db_url)
        self.client = boto3.client("dynamodb", region_name=region, endpoint_url=endpoint)
        self.ledger, self.state = f"{prefix}ledger", f"{prefix}state"
        self._ser, self._de = TypeSerializer(), TypeDeserializer()

    def _plain(self, raw: dict[str, Any]) -> dict[str, Any]:
        out = {k: self._de.deserialize(v) for k, v in raw.items()}
        return {k: int(v) if type(v).__name__ == "Decimal" else v for k, v in out.items()}

    def _items(self, table: str, pk: str) -> list[dict[str, Any]]:
        args: dict[str, Any] = {
            "TableName": table,
            "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": {"S": pk}},
            "ConsistentRead": True,
        }
        out: list[dict[str, Any]] = []
        while True:
            page = self.client.query(**args)
            out.extend(self._plain(raw) for raw in page["Items"])
            if "LastEvaluatedKey" not in page:
                return out
            args["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _put(self, table: str, item: dict[str, Any]) -> None:
        self.client.put_item(
            TableName=table, Item={k: self._ser.serialize(v) for k, v in item.items() if v is not None}
        )

    def _delete(self, table: str, pk: str, sk: str) -> None:
        self.client.delete_item(TableName=table, Key={"pk": {"S": pk}, "sk": {"S": sk}})

    # the tests' registries hold far fewer than 10,000 events: bucket 0 is the whole ledger
    def events(self) -> list[dict[str, Any]]:
        """Every event item (``seq``, ``time``, ``actor``, ``action``, ``subject``, ``data``,
        ``reason``, ``hash``...), in seq order."""
        return self._items(self.ledger, "E#0")

    def event(self, seq: int) -> dict[str, Any]:
        return next(e for e in self.events() if e["seq"] == seq)

    def put_event(self, row: dict[str, Any]) -> None:
        """Write an event item over the one of its seq (or as a new one)."""
        self._put(self.ledger, {**row, "pk": "E#0", "sk": f"{row['seq']:020d}"})

    def delete_event(self, seq: int) -> None:
        self._delete(self.ledger, "E#0", f"{seq:020d}")

    def checkpoints(self) -> list[dict[str, Any]]:
        return self._items(self.ledger, "C#0")

    def put_checkpoint(self, row: dict[str, Any]) -> None:
        self._put(self.ledger, {**row, "pk": "C#0", "sk": f"{row['seq']:020d}"})

    def delete_checkpoint(self, seq: int) -> None:
        self._delete(self.ledger, "C#0", f"{seq:020d}")

    def head(self) -> tuple[int, str]:
        item = self._items(self.state, "HEAD")[0]
        return int(item["seq"]), str(item["hash"])

    def set_head(self, seq: int, hash_hex: str) -> None:
        self._put(self.state, {"pk": "HEAD", "sk": "HEAD", "seq": seq, "hash": hash_hex})

    def version_item(self, model: str, version: int, kind: str = "V") -> dict[str, Any]:
        """The state table's item of a model's version: ``V`` its record (``manifest``, ``files``,
        ``digest``), ``T`` its governance state (``stage``, ``approved_by``...)."""
        from modelledger._identifiers import fold_name

        name = next(i for i in self._items(self.state, f"N#{fold_name(model)}") if i["sk"] == "MODEL")
        key = f"{kind}#{version:010d}"
        return next(v for v in self._items(self.state, f"M#{name['id']}") if v["sk"] == key)

    def setting(self, key: str) -> str:
        return str(self.get_state("SET", key)["value"])

    def set_setting(self, key: str, value: str) -> None:
        self.put_state({"pk": "SET", "sk": key, "value": value})

    def get_state(self, pk: str, sk: str) -> dict[str, Any]:
        return next(i for i in self._items(self.state, pk) if i["sk"] == sk)

    def put_state(self, item: dict[str, Any]) -> None:
        self._put(self.state, item)

    def model_record(self, model: str) -> dict[str, Any]:
        """The model's name item (``id``, ``description``, ``tags``, ``archived_at``...)."""
        from modelledger._identifiers import fold_name

        return next(i for i in self._items(self.state, f"N#{fold_name(model)}") if i["sk"] == "MODEL")

    def model_items(self, model: str) -> list[dict[str, Any]]:
        """Every state item of a model's partition (versions ``V#``, states ``T#``, aliases ``A#``...)."""
        from modelledger._identifiers import fold_name

        name = next(i for i in self._items(self.state, f"N#{fold_name(model)}") if i["sk"] == "MODEL")
        return self._items(self.state, f"M#{name['id']}")

    def _scan(self, table: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        args: dict[str, Any] = {"TableName": table}
        while True:
            page = self.client.scan(**args)
            out.extend(self._plain(raw) for raw in page["Items"])
            if "LastEvaluatedKey" not in page:
                return out
            args["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def everything(self) -> list[dict[str, Any]]:
        """Every item of both tables (a Scan: the attacker's, never the store's)."""
        return self._scan(self.ledger) + self._scan(self.state)

    def cut_after(self, keep: int) -> None:
        """Every ledger item of an event after ``keep`` deleted (the events, their data chunks,
        pointers and checkpoints), and the alias-history items of those events: the counterpart
        of deleting the SQL ledger's tail."""
        for item in self._scan(self.ledger):
            pk, sk = item["pk"], item["sk"]
            seq = int(pk[3:]) if pk.startswith("ED#") else int(sk) if sk.isdigit() else 0
            if seq > keep:
                self._delete(self.ledger, pk, sk)
        for item in self._scan(self.state):
            # an alias move's item carries its number: its event's seq * ALIAS_SLOTS + its place
            if (
                item["pk"].startswith("M#")
                and item["sk"].startswith("W#")
                and int(item["move"]) // ALIAS_SLOTS > keep
            ):
                self._delete(self.state, item["pk"], item["sk"])

    def delete_state(self, item: dict[str, Any]) -> None:
        self._delete(self.state, item["pk"], item["sk"])

    # the edits of LedgerEditor, for tests that read the same on every backend

    def update_event(self, seq: int, **changes: Any) -> None:
        self.put_event({**self.event(seq), **changes})

    def insert_event(self, row: dict[str, Any]) -> None:
        self.put_event(row)

    def update_checkpoint(self, seq: int, **changes: Any) -> None:
        self.put_checkpoint({**next(c for c in self.checkpoints() if c["seq"] == seq), **changes})

    def update_version(self, model: str, version: int, **changes: Any) -> None:
        self.put_state({**self.version_item(model, version), **changes})


class SqlEditor:
    """:class:`DynamoAttacker`'s edits on a SQL registry, through :func:`attacker`'s connection."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    def events(self) -> list[dict[str, Any]]:
        return [
            dict(r) for r in self.conn.exec_driver_sql("SELECT * FROM ledger_events ORDER BY seq").mappings()
        ]

    def checkpoints(self) -> list[dict[str, Any]]:
        rows = self.conn.exec_driver_sql("SELECT * FROM ledger_checkpoints ORDER BY seq").mappings()
        return [dict(r) for r in rows]

    def _update(self, table: str, where: str, params: dict[str, Any], changes: dict[str, Any]) -> None:
        sets = ", ".join(f"{k} = :{k}" for k in changes)
        self.conn.execute(sa.text(f"UPDATE {table} SET {sets} WHERE {where}"), {**params, **changes})

    def update_event(self, seq: int, **changes: Any) -> None:
        self._update("ledger_events", "seq = :where_seq", {"where_seq": seq}, changes)

    def delete_event(self, seq: int) -> None:
        self.conn.execute(sa.text("DELETE FROM ledger_events WHERE seq = :s"), {"s": seq})

    def update_checkpoint(self, seq: int, **changes: Any) -> None:
        self._update("ledger_checkpoints", "seq = :where_seq", {"where_seq": seq}, changes)

    def insert_event(self, row: dict[str, Any]) -> None:
        cols = ("seq", "time", "actor", "action", "subject", "data", "reason", "hash")
        values = {c: row.get(c) for c in cols}
        self.conn.execute(
            sa.text(
                f"INSERT INTO ledger_events ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"
            ),
            values,
        )

    def delete_checkpoint(self, seq: int) -> None:
        self.conn.execute(sa.text("DELETE FROM ledger_checkpoints WHERE seq = :s"), {"s": seq})

    def head(self) -> tuple[int, str]:
        seq, hash_hex = self.conn.execute(sa.text("SELECT seq, hash FROM ledger_head WHERE id = 1")).one()
        return int(seq), str(hash_hex)

    def set_head(self, seq: int, hash_hex: str) -> None:
        self.conn.execute(
            sa.text("UPDATE ledger_head SET seq = :s, hash = :h WHERE id = 1"), {"s": seq, "h": hash_hex}
        )

    def setting(self, key: str) -> str:
        value = self.conn.execute(sa.text("SELECT value FROM registry_settings WHERE key = :k"), {"k": key})
        return str(value.scalar_one())

    def set_setting(self, key: str, value: str) -> None:
        self.conn.execute(
            sa.text("UPDATE registry_settings SET value = :v WHERE key = :k"), {"v": value, "k": key}
        )

    def update_version(self, model: str, version: int, **changes: Any) -> None:
        where = "version = :where_v AND model_id = (SELECT id FROM models WHERE name = :where_m)"
        self._update("model_versions", where, {"where_v": version, "where_m": model}, changes)

    def cut_after(self, keep: int) -> None:
        """Every event after ``keep`` deleted with its checkpoints and alias moves (whose seq is
        the event's * 100 + its place), as :meth:`DynamoAttacker.cut_after`; the head is left."""
        self.conn.execute(sa.text("DELETE FROM ledger_events WHERE seq > :k"), {"k": keep})
        self.conn.execute(sa.text("DELETE FROM ledger_checkpoints WHERE seq > :k"), {"k": keep})
        self.conn.execute(sa.text("DELETE FROM alias_history WHERE seq > :k"), {"k": keep * 100 + 99})


@contextmanager
def ledger_editor(db_url: str) -> Iterator[SqlEditor | DynamoAttacker]:
    """Edits of events, checkpoints and versions behind the library's back, on any backend."""
    if db_url.startswith("dynamodb:"):
        yield DynamoAttacker(db_url)
        return
    with attacker(db_url) as conn:
        yield SqlEditor(conn)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn in a thread on a free loopback port; yields its base URL."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


class LoopbackHTTP:
    """A plain HTTP server on 127.0.0.1 (a free port) answering with ``handler`` in a thread of
    its own: the outer edge a test fakes (an identity provider, a key set, a webhook receiver).
    ``port`` 0 takes a free one; a given port lets a test bring a receiver back where it was."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0) -> None:
        self._http = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.port = self._http.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=10)


def subcommands(group: click.Group) -> list[tuple[str, click.Command]]:
    """``group``'s commands by name, through click's own look-up (``list_commands`` and
    ``get_command``): the ``modelledger`` group imports a command's module only then, so its
    ``commands`` dict holds only those looked up so far."""
    ctx = click.Context(group)
    found = [(name, group.get_command(ctx, name)) for name in group.list_commands(ctx)]
    return [(name, command) for name, command in found if command is not None]
