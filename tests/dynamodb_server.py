"""The tests' DynamoDB (and S3) protocol server: moto's, in a process of its own.

``python tests/dynamodb_server.py`` binds a free loopback port, prints ``port <n>`` and serves
until its standard input closes (the test session that started it ended, or died: no server
outlives its session).

It is moto's server with two changes that make its cost follow what a request touches rather
than the size of the table (the suite's DynamoDB legs spent most of their time in these two).

Transactions: moto deep-copies every table a transaction names, once per item of the
transaction, before it applies anything, so that it can put the copies back if a condition
fails: a transaction's cost grows with the size of the whole table (a registration of version
100 copied the ledger's thousands of items some fifteen times). Here the transaction first
copies only the items it names, and a cancelled one puts those back: the same all-or-nothing
outcome (an item a transaction does not name cannot change), at a cost that does not grow with
the table.

Queries: moto starts every Query from all the table's items, sorted by key with its slow
typed comparisons, and then keeps one partition's. Here a base-table Query starts from its
partition's items and an index Query from the unsorted items (moto sorts them by the index's
keys afterwards): the same answers, pages and order (tests/test_dynamodb_server.py).

Every condition, every write, every filter and every error stays moto's own code.

One request at a time (no threads): DynamoDB runs each transaction atomically, and moto does
so only when requests do not interleave (it checks the conditions and then writes, in separate
steps), so a threaded server would let two writers both win the ledger head. Client threads and
processes still race for the head exactly as they would against DynamoDB. Being its own process,
its work never waits for the GIL of the test process (whose threads may be busy registering).
"""

from __future__ import annotations

import copy
import os
import sys
import threading
import types
from typing import Any


def _item_key(table: Any, op_type: str, op: dict[str, Any]) -> tuple[Any, Any] | None:
    """The (hash, range) key a transaction item names, as moto keys its table (None: moto will
    refuse the item itself)."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    attrs = op.get("Item") if op_type == "Put" else op.get("Key")
    if not isinstance(attrs, dict) or table.hash_key_attr not in attrs:
        return None
    hash_value = DynamoType(attrs[table.hash_key_attr])
    if table.range_key_attr is None:
        return hash_value, None
    if table.range_key_attr not in attrs:
        return None
    return hash_value, DynamoType(attrs[table.range_key_attr])


def _restore(table: Any, hash_value: Any, range_value: Any, before: Any) -> None:
    """Put one item back as it was (``before`` None: it did not exist)."""
    if range_value is None:
        if before is None:
            table.items.pop(hash_value, None)
        else:
            table.items[hash_value] = before
    elif before is None:
        table.items[hash_value].pop(range_value, None)
    else:
        table.items[hash_value][range_value] = before


def patch_transactions() -> None:
    """Make moto's TransactWriteItems undo a cancellation item by item (see the module's text)."""
    from moto.dynamodb import models
    from moto.dynamodb.models import DynamoDBBackend, Table

    if getattr(DynamoDBBackend, "_items_rollback", False):
        return
    original = DynamoDBBackend.transact_write_items

    # moto's transaction copies whole tables with ``copy.deepcopy``; the module's ``copy`` is
    # swapped for one that hands a table back as it is (moto's rollback then puts the same
    # table back: a no-op) and copies everything else as before.
    def deepcopy(value: Any, memo: Any = None) -> Any:
        if isinstance(value, Table):
            return value
        return copy.deepcopy(value, memo)

    models.copy = types.SimpleNamespace(deepcopy=deepcopy, copy=copy.copy)  # type: ignore[attr-defined]

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved = []
        for entry in transact_items:
            if not isinstance(entry, dict) or len(entry) != 1:
                continue  # moto refuses it before it writes anything
            op_type, op = next(iter(entry.items()))
            table = self.tables.get(op.get("TableName")) if isinstance(op, dict) else None
            key = None if table is None else _item_key(table, op_type, op)
            if key is not None:
                saved.append((table, *key, copy.deepcopy(table.get_item(*key))))
        try:
            original(self, transact_items)
        except BaseException:
            # in reverse: an item named twice (which moto refuses) ends as it first was
            for table, hash_value, range_value, before in reversed(saved):
                _restore(table, hash_value, range_value, before)
            raise

    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    DynamoDBBackend._items_rollback = True  # type: ignore[attr-defined]


def patch_queries() -> None:
    """Make moto's Query read only what it may answer from (see the module's text)."""
    from moto.dynamodb.models import Table

    if getattr(Table, "_partition_queries", False):
        return
    original = Table.query

    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        # moto's Query starts from ``all_items()``: every item of the table, sorted by its
        # key. A base-table Query keeps those of one partition and sorts them by sort key; an
        # index Query keeps those with the index's keys and sorts them by the index's and
        # table's keys (a total order). Neither needs the first sort, and the first needs no
        # other partition: each is given just that, and moto's own filtering and ordering run
        # on it unchanged.
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
        if self.range_key_attr is None:  # not the registry's tables: as moto does it
            return original(self, hash_key, *args, **kwargs)
        if index_name:
            items = [item for part in self.items.values() for item in part.values()]
        elif hash_key is not None:
            items = list(self.items.get(hash_key, {}).values())
        else:
            return original(self, hash_key, *args, **kwargs)
        self.all_items = lambda: items  # this instance, for this call (one request at a time)
        try:
            return original(self, hash_key, *args, **kwargs)
        finally:
            del self.all_items

    Table.query = query  # type: ignore[method-assign]
    Table._partition_queries = True  # type: ignore[attr-defined]


def main() -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class Quiet(MotoRequestHandler):
        def log(self, *_args: Any) -> None:
            pass  # a line per request would bury a failure's report

    patch_transactions()
    patch_queries()
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, app, threaded=False, request_handler=Quiet)

    def watch_parent() -> None:
        sys.stdin.read()  # returns when the session closes the pipe or dies
        os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()
    print(f"port {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
