"""The DynamoDB store's foundation: the client, the tables, typed item reads and writes.

Two tables per registry, named from the URL's prefix: ``<prefix>ledger`` (append-only: events,
checkpoints, pointers to events) and ``<prefix>state`` (everything that moves). The item
layout and every access pattern are in docs/dynamodb.md.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..._ledger import GENESIS
from ...errors import InvalidInput, MissingDependency, PermissionDenied, SchemaOutdated, StorageError

__all__ = [
    "BUCKET",
    "SCHEMA_REVISION",
    "TX_BYTES",
    "TX_LIMIT",
    "DynamoBase",
    "Retry",
    "TxItems",
    "chunks",
    "parse_url",
    "seq_key",
]

SCHEMA_REVISION = "d1"
"""The table layout this code reads and writes (kept in the state table's ``SET`` item)."""

BUCKET = 10_000
"""Events, checkpoints and version keys per partition: a range read is one Query per bucket."""

TX_LIMIT = 100
"""Items one TransactWriteItems may hold."""
TX_BYTES = 4_000_000
"""Bytes one TransactWriteItems may carry (DynamoDB's limit is 4 MB of items)."""

WRITER_ACTIONS = (
    "GetItem",
    "BatchGetItem",
    "Query",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
    "ConditionCheckItem",
    "DescribeTable",
)
"""What the store calls on its tables in normal use (``init`` also needs CreateTable)."""
LEDGER_DENIED = ("UpdateItem", "DeleteItem", "BatchWriteItem", "DeleteTable", "UpdateTable")
"""What a writer may never do to the ledger table: it only ever puts new items there."""

# The error codes that mean "these credentials may not", not "this request failed".
_DENIED_CODES = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "MissingAuthenticationTokenException",
    }
)

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def parse_url(url: str) -> tuple[str, str | None, str | None]:
    """(table prefix, region, endpoint URL) of ``dynamodb://<prefix>?region=..&endpoint_url=..``.

    >>> parse_url("dynamodb://acme-?region=eu-west-1")
    ('acme-', 'eu-west-1', None)
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "dynamodb":
        raise InvalidInput(f"not a DynamoDB registry URL: {url!r} (use dynamodb://<table-prefix>?region=...)")
    if "@" in parts.netloc:
        # never echo the URL: what precedes the @ is probably a secret
        raise InvalidInput(
            "a dynamodb:// URL carries no credentials: boto3 finds them (AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an IAM role)"
        )
    prefix = parts.netloc + parts.path
    if not prefix or not set(prefix) <= _NAME_CHARS or len(prefix) > 200:
        raise InvalidInput(
            f"the table prefix {prefix!r} must be 1-200 of the characters a-z A-Z 0-9 _ . - "
            "(DynamoDB table names)"
        )
    query = parse_qs(parts.query)
    unknown = set(query) - {"region", "endpoint_url"}
    if unknown:
        raise InvalidInput(f"unknown DynamoDB URL options {sorted(unknown)}: use region and endpoint_url")
    region = query.get("region", [None])[-1]
    endpoint = query.get("endpoint_url", [None])[-1]
    return prefix, region, endpoint


def seq_key(n: int, width: int = 20) -> str:
    """A number as a sort key whose string order is number order."""
    return f"{n:0{width}d}"


class Retry(Exception):
    """The transaction was cancelled by a concurrent write: read again and decide again."""


@dataclass
class TxItems:
    """The items of one TransactWriteItems, and which of them a cancellation may blame."""

    items: list[dict[str, Any]] = field(default_factory=list)
    # position in ``items`` -> the error to raise when that item's condition failed (None: retry)
    on_fail: dict[int, Exception | None] = field(default_factory=dict)
    keys: set[tuple[str, str, str]] = field(default_factory=set)

    def add(
        self, op: str, body: dict[str, Any], *, key: tuple[str, str, str], fail: Exception | None = None
    ) -> None:
        if key in self.keys:
            # DynamoDB refuses two operations on one item in a transaction
            raise StorageError(f"one write changes the item {key[1]}/{key[2]} twice (a store bug)")
        self.keys.add(key)
        if fail is not None:
            self.on_fail[len(self.items)] = fail
        self.items.append({op: body})


class DynamoBase:
    """Client, tables and item helpers shared by the store's concerns."""

    uses_storage_options = True  # open_metadata_store hands it the storage options

    def __init__(self, url: str, *, storage_options: Mapping[str, Any] | None = None) -> None:
        self.url = url
        self.prefix, self.region, self.endpoint_url = parse_url(url)
        options = storage_options or {}
        # Storage options (``--storage-option``, ``[storage_options]``) with names of their own,
        # not fsspec's ``endpoint_url``: the artefact root's endpoint (MinIO, an S3 VPC endpoint)
        # is often not DynamoDB's. The URL's own query wins, as an argument wins over a file.
        self.endpoint_url = self.endpoint_url or options.get("dynamodb_endpoint_url")
        self.region = self.region or options.get("dynamodb_region")
        self.ledger_table = f"{self.prefix}ledger"
        self.state_table = f"{self.prefix}state"
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._ser: Any = None
        self._de: Any = None
        self._roster_cache: Any = None
        self._public_key: tuple[str, bytes] | None = None  # (key id, PEM) once read: never changes

    # ------------------------------------------------------------ client

    @property
    def client(self) -> Any:
        """The boto3 DynamoDB client, made on first use (constructors do no I/O)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    try:
                        import boto3  # only a DynamoDB registry needs it
                        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer  # likewise
                        from botocore.config import Config  # likewise
                        from botocore.exceptions import NoRegionError  # likewise
                    except ImportError as exc:
                        raise MissingDependency(
                            package="boto3", extra="dynamodb", purpose="a dynamodb:// registry"
                        ) from exc
                    self._ser, self._de = TypeSerializer(), TypeDeserializer()
                    try:
                        made = boto3.client(
                            "dynamodb",
                            region_name=self.region,
                            endpoint_url=self.endpoint_url,
                            # AWS's recommended retries (3 attempts, capped backoff) unless the
                            # user's AWS config says otherwise; botocore's legacy default spends
                            # some 25 s retrying an endpoint that refuses connections
                            config=None if _retry_configured() else Config(retries={"mode": "standard"}),
                        )
                    except NoRegionError:
                        raise InvalidInput(
                            f"no AWS region for the DynamoDB registry {self.prefix!r}: add ?region=... "
                            "to its URL, or set AWS_DEFAULT_REGION or an AWS profile's region"
                        ) from None
                    except ValueError as exc:  # a malformed endpoint_url
                        raise InvalidInput(f"DynamoDB endpoint {self.endpoint_url!r}: {exc}") from None
                    self._client = _Translating(made, self)
        return self._client

    @property
    def reads_are_local(self) -> bool:
        return False

    def close(self) -> None:
        self._client = None

    # ------------------------------------------------------------ items

    def item(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Python values as DynamoDB attribute values (None attributes are left out)."""
        self.client  # noqa: B018 - makes the serialiser
        return {k: self._ser.serialize(v) for k, v in values.items() if v is not None}

    def value(self, v: Any) -> Any:
        self.client  # noqa: B018 - makes the serialiser
        return self._ser.serialize(v)

    def plain(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """A DynamoDB item as Python values (numbers as int, binary as bytes)."""
        out: dict[str, Any] = {}
        for k, v in raw.items():
            x = self._de.deserialize(v)
            if type(x).__name__ == "Decimal":
                x = int(x)
            elif type(x).__name__ == "Binary":
                x = bytes(x.value)
            out[k] = x
        return out

    def get(self, table: str, pk: str, sk: str) -> dict[str, Any] | None:
        """GetItem, strongly consistent."""
        try:
            found = self.client.get_item(
                TableName=table, Key=self.item({"pk": pk, "sk": sk}), ConsistentRead=True
            )
        except self.client.exceptions.ResourceNotFoundException as exc:
            raise self._no_tables() from exc
        raw = found.get("Item")
        return None if raw is None else self.plain(raw)

    def query(
        self,
        table: str,
        pk: str,
        *,
        between: tuple[str, str] | None = None,
        begins: str | None = None,
        newest_first: bool = False,
        limit: int | None = None,
        index: str | None = None,
        key_name: str = "pk",
        sort_name: str = "sk",
        per_request: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Query one partition (strongly consistent on the base table; an index is eventually
        consistent), paged, in key order. ``limit`` bounds the answer; ``per_request`` only what
        one request reads (for a caller that filters the items and stops when it has enough)."""
        names = {"#p": key_name}
        values: dict[str, Any] = {":p": self.value(pk)}
        cond = "#p = :p"
        if between is not None:
            cond += " AND #s BETWEEN :lo AND :hi"
            names["#s"] = sort_name
            values[":lo"], values[":hi"] = self.value(between[0]), self.value(between[1])
        elif begins is not None:
            cond += " AND begins_with(#s, :b)"
            names["#s"] = sort_name
            values[":b"] = self.value(begins)
        args: dict[str, Any] = {
            "TableName": table,
            "KeyConditionExpression": cond,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": not newest_first,
        }
        if index is None:
            args["ConsistentRead"] = True
        else:
            args["IndexName"] = index
        left = limit
        while True:
            if left is not None or per_request is not None:
                args["Limit"] = min(n for n in (left, per_request) if n is not None)
            try:
                page = self.client.query(**args)
            except self.client.exceptions.ResourceNotFoundException as exc:
                raise self._no_tables() from exc
            for raw in page.get("Items", []):
                yield self.plain(raw)
            if left is not None:
                left -= len(page.get("Items", []))
                if left <= 0:
                    return
            start = page.get("LastEvaluatedKey")
            if not start:
                return
            args["ExclusiveStartKey"] = start

    def batch_get(self, table: str, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """BatchGetItem, strongly consistent, 100 keys a request, unprocessed keys asked again."""
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for i in range(0, len(keys), 100):
            pending: dict[str, Any] = {
                table: {
                    "Keys": [self.item({"pk": pk, "sk": sk}) for pk, sk in keys[i : i + 100]],
                    "ConsistentRead": True,
                }
            }
            while pending:
                answer = self.client.batch_get_item(RequestItems=pending)
                for raw in answer.get("Responses", {}).get(table, []):
                    item = self.plain(raw)
                    out[(item["pk"], item["sk"])] = item
                pending = answer.get("UnprocessedKeys") or {}
        return out

    def counter(self, name: str) -> int:
        """The next value of an atomic counter (unique, increasing; a cancelled write leaves a gap)."""
        answer = self.client.update_item(
            TableName=self.state_table,
            Key=self.item({"pk": "COUNTER", "sk": name}),
            UpdateExpression="ADD n :one",
            ExpressionAttributeValues={":one": self.value(1)},
            ReturnValues="UPDATED_NEW",
        )
        return int(answer["Attributes"]["n"]["N"])

    def _send(self, tx: TxItems) -> None:
        """TransactWriteItems: all or nothing. A cancellation raises the error of the item whose
        condition failed, or :class:`Retry` when another writer got there first."""
        if len(tx.items) > TX_LIMIT:
            raise InvalidInput(
                f"this write needs {len(tx.items)} items and DynamoDB writes at most {TX_LIMIT} at once: "
                "split it into smaller writes"
            )
        size = _size(tx.items)
        if size > TX_BYTES:
            raise InvalidInput(
                f"this write is {size} bytes and DynamoDB writes at most {TX_BYTES} at once "
                "(a version with a very large file list or manifest)"
            )
        client = self.client
        try:
            # One token per attempt: botocore resends this very request when a response is
            # lost, and DynamoDB applies a token's transaction once; a new attempt is a new
            # decision, with a new token.
            client.transact_write_items(TransactItems=tx.items, ClientRequestToken=uuid.uuid4().hex)
        except client.exceptions.TransactionCanceledException as exc:
            reasons = exc.response.get("CancellationReasons") or []
            for i, reason in enumerate(reasons):
                if reason.get("Code") == "ConditionalCheckFailed" and tx.on_fail.get(i) is not None:
                    raise tx.on_fail[i] from exc  # type: ignore[misc]
            raise Retry from exc
        except client.exceptions.ResourceNotFoundException as exc:
            raise self._no_tables() from exc

    def counter_value(self, name: str) -> int:
        """The counter's current value (0: never used)."""
        found = self.get(self.state_table, "COUNTER", name)
        return 0 if found is None else int(found["n"])

    def _no_tables(self) -> StorageError:
        return StorageError(
            f"the DynamoDB tables {self.ledger_table} and {self.state_table} do not exist: "
            "create them with `modelledger init`"
        )

    # ------------------------------------------------------------ schema

    def _table_specs(self) -> list[dict[str, Any]]:
        def gsi(name: str, key: str, sort: str = "sk") -> dict[str, Any]:
            return {
                "IndexName": name,
                "KeySchema": [
                    {"AttributeName": key, "KeyType": "HASH"},
                    {"AttributeName": sort, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }

        def attrs(*names: str) -> list[dict[str, str]]:
            return [{"AttributeName": n, "AttributeType": "S"} for n in names]

        keys = [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
        return [
            {
                "TableName": self.ledger_table,
                "KeySchema": keys,
                "AttributeDefinitions": attrs("pk", "sk", "actor", "action", "subject", "scope"),
                "GlobalSecondaryIndexes": [
                    gsi("by_actor", "actor"),
                    gsi("by_action", "action"),
                    gsi("by_subject", "subject"),
                    gsi("by_scope", "scope"),
                ],
                "BillingMode": "PAY_PER_REQUEST",
            },
            {
                "TableName": self.state_table,
                "KeySchema": keys,
                "AttributeDefinitions": attrs("pk", "sk", "gk", "nf"),
                "GlobalSecondaryIndexes": [gsi("listing", "gk", "nf")],
                "BillingMode": "PAY_PER_REQUEST",
            },
        ]

    def index_keys(self) -> dict[str, list[tuple[str, ...]]]:
        """The key attributes of each global secondary index, by table: an item that carries
        all of an index's keys is copied into it (and a write pays for each copy)."""
        return {
            spec["TableName"]: [
                tuple(k["AttributeName"] for k in g["KeySchema"])
                for g in spec.get("GlobalSecondaryIndexes", [])
            ]
            for spec in self._table_specs()
        }

    def migrate(self) -> str:
        """Create the tables (on-demand capacity) and the empty ledger's head, once; safe to
        run again or from several processes at once. Returns the layout revision."""
        client = self.client
        for spec in self._table_specs():
            # made already (by us earlier, or by a concurrent init): nothing to do
            with contextlib.suppress(client.exceptions.ResourceInUseException):
                client.create_table(**spec)
        for name in (self.ledger_table, self.state_table):
            client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1})
        head = self.item({"pk": "HEAD", "sk": "HEAD", "seq": 0, "hash": GENESIS.hex()})
        # the ledger exists already: init never resets it
        with contextlib.suppress(client.exceptions.ConditionalCheckFailedException):
            client.put_item(
                TableName=self.state_table, Item=head, ConditionExpression="attribute_not_exists(pk)"
            )
        client.put_item(
            TableName=self.state_table,
            Item=self.item({"pk": "SET", "sk": "schema", "value": SCHEMA_REVISION}),
        )
        return SCHEMA_REVISION

    def writer_policy(self, *, region: str = "*", account: str = "*") -> dict[str, Any]:
        """The IAM policy for a process that writes this registry: everything its verbs call on
        both tables, but never an update or delete of a ledger item. (IAM cannot require a
        condition expression, so a Put over an event stays possible: ``verify`` catches it.)

        >>> DynamoBase("dynamodb://acme-").writer_policy()["Statement"][1]["Effect"]
        'Deny'
        """
        arn = f"arn:aws:dynamodb:{region}:{account}:table/"
        tables = [self.ledger_table, self.state_table]
        return {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "ReadWrite",
                    "Effect": "Allow",
                    "Action": [f"dynamodb:{a}" for a in WRITER_ACTIONS],
                    "Resource": [r for t in tables for r in (arn + t, f"{arn}{t}/index/*")],
                },
                {
                    "Sid": "LedgerIsAppendOnly",
                    "Effect": "Deny",
                    "Action": [f"dynamodb:{a}" for a in LEDGER_DENIED],
                    "Resource": [arn + self.ledger_table],
                },
            ],
        }

    def check_schema(self) -> None:
        rev = self.schema_revision()
        if rev != SCHEMA_REVISION:
            raise SchemaOutdated(current=rev, head=SCHEMA_REVISION)

    def read_stamp(self) -> str | None:
        # Not every write moves the ledger head (creating a model does not), so the head
        # cannot stand for "nothing changed": None until every write moves a stamp item.
        return None

    @contextlib.contextmanager
    def shared_reads(self) -> Iterator[None]:
        yield  # no connections: every request is its own HTTP call on the client's pool

    def schema_revision(self) -> str | None:
        client = self.client
        try:
            found = client.get_item(
                TableName=self.state_table, Key=self.item({"pk": "SET", "sk": "schema"}), ConsistentRead=True
            )
        except client.exceptions.ResourceNotFoundException:
            return None  # no tables yet (an unreachable endpoint is a StorageError, not this)
        raw = found.get("Item")
        return None if raw is None else str(self.plain(raw)["value"])


def _retry_configured() -> bool:
    """Whether the user chose botocore's retries (environment or the active profile)."""
    import botocore.session  # loaded with boto3 already
    from botocore.exceptions import ProfileNotFound  # likewise

    if os.environ.get("AWS_RETRY_MODE") or os.environ.get("AWS_MAX_ATTEMPTS"):
        return True
    try:
        profile = botocore.session.Session().get_scoped_config()
    except ProfileNotFound:  # boto3 reports it when the client is made
        return False
    return "retry_mode" in profile or "max_attempts" in profile


class _Translating:
    """The boto3 client, with the failures of the transport and of the credentials raised as
    modelledger's errors (a request's own outcomes, a failed condition, a missing table, stay
    boto's, for the store to decide on)."""

    def __init__(self, client: Any, store: DynamoBase) -> None:
        self._client = client
        self._store = store
        self.exceptions = client.exceptions
        self.meta = client.meta

    def get_waiter(self, name: str) -> Any:
        return self._client.get_waiter(name)

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._client, name)
        if not callable(call):
            return call

        def translated(*args: Any, **kwargs: Any) -> Any:
            from botocore.exceptions import (  # loaded with boto3 already
                BotoCoreError,
                ClientError,
                ConnectionError,
                NoCredentialsError,
            )

            try:
                return call(*args, **kwargs)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code in _DENIED_CODES:
                    raise PermissionDenied(
                        f"DynamoDB refused the credentials for {self._store.prefix!r} ({code}): "
                        f"{exc.response.get('Error', {}).get('Message', '')}"
                    ) from exc
                raise
            except NoCredentialsError as exc:
                raise PermissionDenied(
                    "no AWS credentials for the DynamoDB registry: set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run where an IAM role applies"
                ) from exc
            except ConnectionError as exc:
                where = self._store.endpoint_url or f"DynamoDB in {self._client.meta.region_name}"
                raise StorageError(f"cannot reach {where}: {exc}") from exc
            except BotoCoreError as exc:
                raise StorageError(f"DynamoDB request failed: {exc}") from exc

        return translated


def chunks(data: bytes, size: int) -> Iterable[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _size(value: Any) -> int:
    """Bytes of the strings and binaries in a request (near enough to DynamoDB's item sizes)."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, Mapping):
        return sum(len(k) + _size(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(_size(v) for v in value)
    return 8
