"""What a DynamoDB registry's verbs cost: requests and capacity units, counted at the client.

:class:`RequestMeter` listens on the events of the boto3 client a :class:`DynamoStore` uses
(botocore's own event system: nothing is patched, the store's calls are unchanged) and counts,
per API operation, the requests made and the capacity they consume:

* ``read_units`` / ``write_units``: computed from the items each request and answer carry,
  by DynamoDB's published rules (a strongly consistent read costs 1 unit per 4 KB an item,
  an eventually consistent one, an index Query included, half; a write 1 unit per 1 KB, and
  once more for every global secondary index the item is in; a transaction's items twice).
  Two simplifications, both small for this store: an update or a delete is counted from what
  the request carries (at least one unit), as the request does not say how large the stored
  item is (every item the store updates is under 1 KB); an update's copy into an index is not
  counted.
* ``server_units``: what the server said it consumed, asked for with
  ``ReturnConsumedCapacity=TOTAL`` while the meter is on (``ask_server=False`` leaves the
  requests as the store makes them). DynamoDB's figures are the bill; a test server's are
  not (moto answers a fixed number per call), which is why the computed ones are kept too.

Example::

    with RequestMeter(store) as meter:
        registry.get_version("models:/churn@champion")
    print(meter.take().requests)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from .base import DynamoBase

__all__ = ["RequestMeter", "Usage", "item_size"]

_READ_UNIT = 4096
_WRITE_UNIT = 1024
_CONTEXT_KEY = "modelledger.request_meter"  # where the request's parameters wait for its answer


@dataclass(frozen=True, slots=True)
class Usage:
    """Requests and capacity units of the calls made while a meter was on."""

    requests: int = 0
    attempts: int = 0  # HTTP sends, botocore's retries included
    operations: Mapping[str, int] = field(default_factory=dict)
    read_units: float = 0.0
    write_units: float = 0.0
    server_units: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "attempts": self.attempts,
            "operations": dict(sorted(self.operations.items())),
            "read_units": self.read_units,
            "write_units": self.write_units,
            "server_units": self.server_units,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Usage:
        return cls(
            requests=int(data["requests"]),
            attempts=int(data["attempts"]),
            operations=dict(data["operations"]),
            read_units=float(data["read_units"]),
            write_units=float(data["write_units"]),
            server_units=float(data["server_units"]),
        )


def item_size(item: Mapping[str, Any]) -> int:
    """Bytes of an item in DynamoDB's wire form (``{"name": {"S": "..."}}``), as DynamoDB sizes
    it: each attribute's name plus its value."""
    return sum(len(k.encode()) + _value_size(v) for k, v in item.items())


def _value_size(value: Mapping[str, Any]) -> int:
    (kind, v), *_ = value.items()
    if kind == "S":
        return len(str(v).encode())
    if kind == "N":
        return _number_size(str(v))
    if kind == "B":
        return len(v)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(str(x).encode()) for x in v)
    if kind == "NS":
        return sum(_number_size(str(x)) for x in v)
    if kind == "BS":
        return sum(len(x) for x in v)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_size(x) for k, x in v.items())
    if kind == "L":
        return 3 + sum(1 + _value_size(x) for x in v)
    return 1


def _number_size(text: str) -> int:
    digits = text.lstrip("-").replace(".", "").lstrip("0").rstrip("0") or "0"
    return math.ceil(len(digits) / 2) + 1


def _units(size: int, unit: int) -> int:
    return max(1, math.ceil(size / unit))


class RequestMeter:
    """Count the DynamoDB requests ``store`` makes while the meter is entered (thread-safe).

    ``take()`` returns the :class:`Usage` since the last ``take()`` (or the start) and starts
    counting afresh: a bench meters one verb at a time that way.
    """

    def __init__(self, store: DynamoBase, *, ask_server: bool = True) -> None:
        self._store = store
        self._ask = ask_server
        self._lock = threading.Lock()
        self._client: Any = None
        self._id = f"modelledger-meter-{id(self)}"
        self._indexes = store.index_keys()  # table -> the key attributes of each of its indexes
        self._reset()

    def _reset(self) -> None:
        self._requests = 0
        self._attempts = 0
        self._ops: Counter[str] = Counter()
        self._read = 0.0
        self._write = 0.0
        self._server = 0.0

    def _hooks(self) -> list[tuple[str, Any]]:
        return [
            ("before-parameter-build.dynamodb", self._before),
            ("before-send.dynamodb", self._sent),
            ("after-call.dynamodb", self._after),
        ]

    def __enter__(self) -> RequestMeter:
        self._client = self._store.client
        events = self._client.meta.events
        for name, handler in self._hooks():
            events.register(name, handler, unique_id=f"{self._id}-{name}")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        events = self._client.meta.events
        for name, handler in self._hooks():
            events.unregister(name, handler, unique_id=f"{self._id}-{name}")

    def take(self) -> Usage:
        """The usage counted since the last call, and a fresh count from now."""
        with self._lock:
            usage = Usage(
                requests=self._requests,
                attempts=self._attempts,
                operations=dict(self._ops),
                read_units=self._read,
                write_units=self._write,
                server_units=self._server,
            )
            self._reset()
        return usage

    # ------------------------------------------------------------ botocore's events

    def _before(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        if self._ask and "ReturnConsumedCapacity" in model.input_shape.members:
            params.setdefault("ReturnConsumedCapacity", "TOTAL")
        context[_CONTEXT_KEY] = params

    def _sent(self, **_: Any) -> None:
        with self._lock:
            self._attempts += 1

    def _after(self, parsed: Mapping[str, Any], model: Any, context: Mapping[str, Any], **_: Any) -> None:
        params = context.get(_CONTEXT_KEY) or {}
        read, write = self._cost(model.name, params, parsed)
        consumed = parsed.get("ConsumedCapacity")
        reported = consumed if isinstance(consumed, list) else [consumed] if consumed else []
        with self._lock:
            self._requests += 1
            self._ops[model.name] += 1
            self._read += read
            self._write += write
            self._server += sum(float(c.get("CapacityUnits", 0.0)) for c in reported)

    # ------------------------------------------------------------ DynamoDB's rules

    def _write_cost(self, table: str, item: Mapping[str, Any], times: int = 1) -> float:
        """A put: 1 unit per KB (``times`` for a transaction), again for each index holding it."""
        units = _units(item_size(item), _WRITE_UNIT)
        copies = sum(1 for keys in self._indexes.get(table, []) if all(k in item for k in keys))
        return float(units * times + units * copies)

    def _cost(self, op: str, params: Mapping[str, Any], parsed: Mapping[str, Any]) -> tuple[float, float]:
        if op == "GetItem":
            factor = 1.0 if params.get("ConsistentRead") else 0.5
            found = parsed.get("Item")
            return factor * (_units(item_size(found), _READ_UNIT) if found else 1), 0.0
        if op == "Query":
            factor = 1.0 if params.get("ConsistentRead") and not params.get("IndexName") else 0.5
            items: Sequence[Mapping[str, Any]] = parsed.get("Items", [])
            size = sum(item_size(i) for i in items)
            count, scanned = int(parsed.get("Count", 0)), int(parsed.get("ScannedCount", 0))
            if items and scanned > count:  # a filter dropped some: they were read all the same
                size = size * scanned // count
            return factor * _units(size, _READ_UNIT), 0.0
        if op == "BatchGetItem":
            read = 0.0
            for table, spec in params.get("RequestItems", {}).items():
                factor = 1.0 if spec.get("ConsistentRead") else 0.5
                got = parsed.get("Responses", {}).get(table, [])
                later = parsed.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
                missing = len(spec.get("Keys", [])) - len(got) - len(later)
                read += factor * (sum(_units(item_size(i), _READ_UNIT) for i in got) + max(missing, 0))
            return read, 0.0
        if op == "PutItem":
            return 0.0, self._write_cost(params["TableName"], params["Item"])
        if op in ("UpdateItem", "DeleteItem"):
            return 0.0, float(_units(_carried(params), _WRITE_UNIT))
        if op == "TransactWriteItems":
            write = 0.0
            for element in params.get("TransactItems", []):
                (kind, body), *_ = element.items()
                if kind == "Put":
                    write += self._write_cost(body["TableName"], body["Item"], times=2)
                else:
                    write += 2 * _units(_carried(body), _WRITE_UNIT)
            return 0.0, write
        if op == "BatchWriteItem":
            write = 0.0
            for table, requests in params.get("RequestItems", {}).items():
                later = len(parsed.get("UnprocessedItems", {}).get(table, []))
                done = requests[: max(len(requests) - later, 0)]
                for r in done:
                    put = r.get("PutRequest")
                    write += self._write_cost(table, put["Item"]) if put else 1.0
            return 0.0, write
        return 0.0, 0.0  # table management: no capacity


def _carried(body: Mapping[str, Any]) -> int:
    """Bytes of the key and values an update or delete sends."""
    values = body.get("ExpressionAttributeValues") or {}
    return item_size(body.get("Key") or {}) + sum(_value_size(v) for v in values.values())
