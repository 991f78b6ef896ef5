"""The ports are complete: the SQL store implements every method of every Protocol with the
same parameters, and the facade types its stores with the Protocols (mypy checks each call)."""

from __future__ import annotations

import inspect
import typing

import pytest

from modelledger import Registry
from modelledger.stores import BACKENDS, open_metadata_store, protocols
from modelledger.stores.sql import SqlMetadataStore

PORTS = [
    protocols.ModelStore,
    protocols.LedgerStore,
    protocols.DatasetStore,
    protocols.TokenStore,
    protocols.WebhookStore,
    protocols.MetadataStore,
]


def _methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


@pytest.mark.parametrize("port", PORTS, ids=lambda p: p.__name__)
def test_the_sql_store_implements_each_port_with_the_same_parameters(port: type) -> None:
    wanted = _methods(port)
    assert wanted, f"{port.__name__} declares no methods"
    have = _methods(SqlMetadataStore)
    for name, sig in wanted.items():
        assert name in have, f"SqlMetadataStore lacks {name}"
        got = have[name]
        assert [(p.name, p.kind) for p in got.parameters.values()] == [
            (p.name, p.kind) for p in sig.parameters.values()
        ], name


def test_the_whole_store_is_the_sum_of_its_concerns() -> None:
    whole = set(_methods(protocols.MetadataStore))
    parts = set().union(*(_methods(p) for p in PORTS[:5]))
    assert parts < whole
    assert whole - parts == {
        "schema_revision",
        "migrate",
        "check_schema",
        "referenced_paths",
        "shared_reads",
        "read_stamp",
        "close",
    }


def test_the_facade_talks_to_its_store_through_the_port() -> None:
    hints = typing.get_type_hints(Registry.__init__)
    assert hints["metadata"] is protocols.MetadataStore


def test_backends_are_chosen_by_url_scheme() -> None:
    assert isinstance(open_metadata_store("sqlite:///x.db"), SqlMetadataStore)
    assert {"sqlite", "postgresql", "dynamodb"} <= set(BACKENDS)
    from modelledger.stores.dynamodb import DynamoStore

    dynamo = open_metadata_store(
        "dynamodb://acme-?region=eu-west-1",
        storage_options={"dynamodb_endpoint_url": "http://localhost:4566"},
    )
    assert isinstance(dynamo, DynamoStore)  # made without a request: constructors do no I/O
    assert (dynamo.prefix, dynamo.region, dynamo.endpoint_url) == (
        "acme-",
        "eu-west-1",
        "http://localhost:4566",
    )
    with pytest.raises(Exception, match="unsupported registry URL"):
        open_metadata_store("mysql://db/x")
