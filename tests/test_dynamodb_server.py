"""The tests' DynamoDB server keeps DynamoDB's all-or-nothing transactions.

tests/dynamodb_server.py changes how moto undoes a cancelled TransactWriteItems (it puts back
the items the transaction names instead of whole copied tables); every DynamoDB leg of the suite
relies on a cancelled transaction leaving nothing behind, so that is checked here, on the server
the suite uses.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3")


@pytest.fixture(scope="module")
def table(dynamodb_server: str) -> Iterator[tuple[Any, str]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        client = boto3.client("dynamodb", endpoint_url=dynamodb_server, region_name="us-east-1")
        name = f"tx{uuid.uuid4().hex[:10]}"
        client.create_table(
            TableName=name,
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        yield client, name


def _all(client: Any, name: str) -> dict[tuple[str, str], dict[str, Any]]:
    items = client.scan(TableName=name, ConsistentRead=True)["Items"]
    return {(i["pk"]["S"], i["sk"]["S"]): i for i in items}


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def test_a_cancelled_transaction_changes_nothing(table: tuple[Any, str]) -> None:
    client, name = table
    client.put_item(TableName=name, Item={**_key("HEAD", "HEAD"), "seq": {"N": "1"}})
    client.put_item(TableName=name, Item={**_key("M#1", "A#prod"), "version": {"N": "3"}})
    client.put_item(TableName=name, Item={**_key("M#1", "V#1"), "stage": {"S": "trained"}})
    before = _all(client, name)

    with pytest.raises(client.exceptions.TransactionCanceledException) as caught:
        client.transact_write_items(
            TransactItems=[
                # applied in moto before the failing condition below is checked:
                {"Put": {"TableName": name, "Item": {**_key("E#0", "2"), "seq": {"N": "2"}}}},
                {
                    "Update": {
                        "TableName": name,
                        "Key": _key("M#1", "A#prod"),
                        "UpdateExpression": "SET version = :v",
                        "ExpressionAttributeValues": {":v": {"N": "4"}},
                    }
                },
                {"Delete": {"TableName": name, "Key": _key("M#1", "V#1")}},
                {
                    "Update": {
                        "TableName": name,
                        "Key": _key("HEAD", "HEAD"),
                        "UpdateExpression": "SET seq = :n",
                        "ConditionExpression": "seq = :old",
                        "ExpressionAttributeValues": {":n": {"N": "3"}, ":old": {"N": "2"}},
                    }
                },
            ]
        )
    reasons = [r["Code"] for r in caught.value.response["CancellationReasons"]]
    assert reasons == ["None", "None", "None", "ConditionalCheckFailed"]
    assert _all(client, name) == before


def test_a_transaction_that_holds_applies_every_item(table: tuple[Any, str]) -> None:
    client, name = table
    client.put_item(TableName=name, Item={**_key("HEAD", "H2"), "seq": {"N": "1"}})
    client.put_item(TableName=name, Item={**_key("GONE", "G"), "x": {"S": "y"}})
    client.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": name, "Item": {**_key("E#0", "N2"), "seq": {"N": "2"}}}},
            {"Delete": {"TableName": name, "Key": _key("GONE", "G")}},
            {
                "Update": {
                    "TableName": name,
                    "Key": _key("HEAD", "H2"),
                    "UpdateExpression": "SET seq = :n",
                    "ConditionExpression": "seq = :old",
                    "ExpressionAttributeValues": {":n": {"N": "2"}, ":old": {"N": "1"}},
                }
            },
        ]
    )
    after = _all(client, name)
    assert after[("E#0", "N2")]["seq"] == {"N": "2"}
    assert after[("HEAD", "H2")]["seq"] == {"N": "2"}
    assert ("GONE", "G") not in after


def test_an_item_named_twice_is_refused_and_changes_nothing(table: tuple[Any, str]) -> None:
    client, name = table
    client.put_item(TableName=name, Item={**_key("TWICE", "T"), "n": {"N": "1"}})
    before = _all(client, name)
    with pytest.raises(client.exceptions.ClientError):
        client.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": name, "Item": {**_key("TWICE", "T"), "n": {"N": "2"}}}},
                {"Put": {"TableName": name, "Item": {**_key("TWICE", "T"), "n": {"N": "3"}}}},
            ]
        )
    assert _all(client, name) == before


def test_queries_answer_from_their_partition_and_index_in_order(dynamodb_server: str) -> None:
    """The server's Query reads one partition (or the index's items): the same items, in the
    same order and pages, as a Query that considered every item of the table."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        client = boto3.client("dynamodb", endpoint_url=dynamodb_server, region_name="us-east-1")
        name = f"q{uuid.uuid4().hex[:10]}"
        client.create_table(
            TableName=name,
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": a, "AttributeType": "S"} for a in ("pk", "sk", "gk", "nf")
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "listing",
                    "KeySchema": [
                        {"AttributeName": "gk", "KeyType": "HASH"},
                        {"AttributeName": "nf", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        for p in ("A", "B", "C"):
            for s in ("03", "01", "10", "02"):
                item = {**_key(p, s)}
                if s != "10":  # not every item carries the index's keys
                    item |= {"gk": {"S": "M"}, "nf": {"S": f"{s}{p}"}}
                client.put_item(TableName=name, Item=item)

        def pages(**args: Any) -> list[list[str]]:
            out, start = [], None
            while True:
                answer = client.query(
                    TableName=name, Limit=2, **args, **({"ExclusiveStartKey": start} if start else {})
                )
                out.append([i["pk"]["S"] + i["sk"]["S"] for i in answer["Items"]])
                start = answer.get("LastEvaluatedKey")
                if not start:
                    return out

        by_pk = {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "B"}}}
        assert pages(**by_pk) == [["B01", "B02"], ["B03", "B10"]]
        assert pages(**by_pk, ScanIndexForward=False) == [["B10", "B03"], ["B02", "B01"]]
        ranged = {
            "KeyConditionExpression": "pk = :p AND sk BETWEEN :lo AND :hi",
            "ExpressionAttributeValues": {":p": {"S": "C"}, ":lo": {"S": "02"}, ":hi": {"S": "09"}},
        }
        assert pages(**ranged) == [["C02", "C03"], []]  # a full last page says "maybe more"
        nothing = {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "Z"}}}
        assert pages(**nothing) == [[]]
        listing = {
            "IndexName": "listing",
            "KeyConditionExpression": "gk = :g AND nf BETWEEN :lo AND :hi",
            "ExpressionAttributeValues": {":g": {"S": "M"}, ":lo": {"S": "01B"}, ":hi": {"S": "03A"}},
        }
        assert pages(**listing) == [["B01", "C01"], ["A02", "B02"], ["C02", "A03"], []]
