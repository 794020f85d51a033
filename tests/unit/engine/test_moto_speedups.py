"""The moto server's speed-ups answer every Query, Scan and transaction exactly as moto's own code does."""

from __future__ import annotations

from typing import Any

import boto3
import moto.dynamodb.models as dynamodb_models
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table

from payment_examples.engine import moto_speedups

REGION = "us-east-1"


def _tables(client: Any) -> None:
    client.create_table(
        TableName="chains",
        KeySchema=[{"AttributeName": "entity", "KeyType": "HASH"}, {"AttributeName": "seq", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "entity", "AttributeType": "S"},
            {"AttributeName": "seq", "AttributeType": "N"},
            {"AttributeName": "actor", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by_actor",
                "KeySchema": [
                    {"AttributeName": "actor", "KeyType": "HASH"},
                    {"AttributeName": "seq", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    client.create_table(
        TableName="payments",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for entity in ("payment#a", "payment#b", "payment#c"):
        for seq in (5, 1, 12, 3, 2, 40, 7):  # written out of order: the answer must be sorted by the range key
            client.put_item(
                TableName="chains",
                Item={
                    "entity": {"S": entity}, "seq": {"N": str(seq)}, "actor": {"S": f"actor-{seq % 3}"},
                    "big": {"S": "x" * 200_000},  # 7 of these exceed a 1 MB page
                },
            )  # fmt: skip
    client.create_table(
        TableName="ledger",
        KeySchema=[{"AttributeName": "n", "KeyType": "HASH"}, {"AttributeName": "at", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "n", "AttributeType": "N"},
            {"AttributeName": "at", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    for n in ("10", "9", "1.5", "-3", "100"):  # numbers sort as numbers, not as strings
        for at in ("b", "a", "c"):
            client.put_item(TableName="ledger", Item={"n": {"N": n}, "at": {"S": at}})
    for pid in ("p-2", "p-1", "p-3"):
        client.put_item(TableName="payments", Item={"id": {"S": pid}, "amount": {"N": "100"}})


def _on(entity: str, condition: str = "", values: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A Query on one chain (``entity``), with more key condition, values and request fields."""
    return {
        "TableName": "chains", "KeyConditionExpression": "entity = :e" + condition,
        "ExpressionAttributeValues": {":e": {"S": entity}, **(values or {})}, **extra,
    }  # fmt: skip


QUERIES: list[dict[str, Any]] = [
    _on("payment#b"),
    _on("payment#b", ScanIndexForward=False, Limit=1, ProjectionExpression="seq"),
    _on("payment#a", " AND seq BETWEEN :lo AND :hi", {":lo": {"N": "2"}, ":hi": {"N": "12"}}),
    _on("payment#c", "", {":x": {"S": "actor-1"}}, FilterExpression="actor = :x"),
    _on("payment#a", Limit=2, ExclusiveStartKey={"entity": {"S": "payment#a"}, "seq": {"N": "3"}}),
    _on("none"),
    {
        "TableName": "chains", "IndexName": "by_actor", "KeyConditionExpression": "actor = :x",
        "ExpressionAttributeValues": {":x": {"S": "actor-2"}},
    },
    {"TableName": "payments", "KeyConditionExpression": "id = :i", "ExpressionAttributeValues": {":i": {"S": "p-1"}}},
    {"TableName": "payments", "KeyConditionExpression": "id = :i", "ExpressionAttributeValues": {":i": {"S": "p-9"}}},
]  # fmt: skip


def _answers(client: Any) -> list[dict[str, Any]]:
    answers = []
    for query in QUERIES:
        pages, request = [], dict(query)
        while True:  # every page, to the end
            response = client.query(**request)
            response.pop("ResponseMetadata")
            pages.append(response)
            if "LastEvaluatedKey" not in response:
                break
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        answers.append({"query": query, "pages": pages})
    for table in ("chains", "payments", "ledger"):  # a Scan is in moto's table order: all_items()
        pages, request = [], {"TableName": table, "Limit": 4}
        while True:
            response = client.scan(**request)
            response.pop("ResponseMetadata")
            pages.append(response)
            if "LastEvaluatedKey" not in response:
                break
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        answers.append({"scan": table, "pages": pages})
    return answers


@pytest.fixture
def restored_query(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Table, "query", Table.query)  # whatever install() does is undone after the test
    monkeypatch.setattr(Table, "all_items", Table.all_items)
    monkeypatch.setattr(DynamoDBBackend, "transact_write_items", DynamoDBBackend.transact_write_items)
    monkeypatch.setattr(dynamodb_models, "copy", dynamodb_models.copy)


def test_every_query_answers_as_moto_does(restored_query: None) -> None:
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        _tables(client)
        before = _answers(client)
        moto_speedups.install()
        after = _answers(client)
    assert after == before
    assert len(before[0]["pages"]) == 2  # the 1 MB page end is moto's, kept: 7 items of 200 KB need two pages
    assert [item["seq"]["N"] for page in before[0]["pages"] for item in page["Items"]] == [
        "1", "2", "3", "5", "7", "12", "40"
    ]  # fmt: skip
    ledger = next(answer for answer in before if answer.get("scan") == "ledger")
    keys = [(item["n"]["N"], item["at"]["S"]) for page in ledger["pages"] for item in page["Items"]]
    assert keys[:4] == [("-3", "a"), ("-3", "b"), ("-3", "c"), ("1.5", "a")]


def test_reads_only_the_queried_partition(restored_query: None, monkeypatch: pytest.MonkeyPatch) -> None:
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        _tables(client)
        moto_speedups.install()
        sorted_table = []
        original = Table.all_items
        monkeypatch.setattr(Table, "all_items", lambda self: sorted_table.append(self.name) or original(self))
        client.query(**QUERIES[0])
        client.query(**QUERIES[5])  # a key with no items: nothing sorted, and no empty partition left behind
        assert sorted_table == []
        table = next(t for t in _backend_tables() if t.name == "chains")
        assert len(table.items) == 3
        client.query(**QUERIES[6])  # an index: moto's scan of the table, as before
        assert sorted_table == ["chains"]


def _backend_tables() -> list[Table]:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    return list(dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].tables.values())


def test_install_is_idempotent(restored_query: None) -> None:
    moto_speedups.install()
    wrapped = Table.query
    moto_speedups.install()
    assert Table.query is wrapped
    assert Table.query.reads_one_partition and Table.all_items.keys_computed_once
    assert DynamoDBBackend.transact_write_items.one_backup_per_table


def test_the_moto_server_child_installs_it(restored_query: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import werkzeug.serving

    from payment_examples.engine import local

    class Started(Exception):
        pass

    def make_server(*args: Any, **kwargs: Any) -> None:
        raise Started

    monkeypatch.setattr(werkzeug.serving, "make_server", make_server)
    assert not getattr(Table.query, "reads_one_partition", False)
    with pytest.raises(Started):
        local.serve()
    assert Table.query.reads_one_partition


def _put(table: str, pid: str, amount: int, condition: str | None = None) -> dict[str, Any]:
    put: dict[str, Any] = {"TableName": table, "Item": {"id": {"S": pid}, "amount": {"N": str(amount)}}}
    if condition:
        put["ConditionExpression"] = condition
        put["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
    return {"Put": put}


def _transactions(client: Any) -> list[Any]:
    """A committed transaction over two tables, then one cancelled by its last item: what each answered and left."""
    for name in ("payments", "transactions"):
        client.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    outcomes: list[Any] = []
    committed = [_put("payments", f"p-{n}", n) for n in range(6)] + [_put("transactions", "t-1", 1)]
    outcomes.append(client.transact_write_items(TransactItems=committed)["ResponseMetadata"]["HTTPStatusCode"])
    cancelled = [_put("payments", f"p-{n}", 100 + n) for n in range(6, 9)]  # new items, then changed ones
    cancelled += [_put("payments", "p-1", 500), _put("transactions", "t-1", 9, "attribute_not_exists(id)")]
    with pytest.raises(ClientError) as error:
        client.transact_write_items(TransactItems=cancelled)
    outcomes.append(error.value.response["Error"]["Code"])
    outcomes.append(error.value.response.get("CancellationReasons"))
    for name in ("payments", "transactions"):  # the cancelled one left nothing: every table as the first left it
        outcomes.append(sorted((i["id"]["S"], i["amount"]["N"]) for i in client.scan(TableName=name)["Items"]))
    return outcomes


def test_transactions_commit_and_roll_back_as_in_moto(restored_query: None) -> None:
    with mock_aws():
        before = _transactions(boto3.client("dynamodb", region_name=REGION))
    moto_speedups.install()
    with mock_aws():
        after = _transactions(boto3.client("dynamodb", region_name=REGION))
    assert after == before
    assert before[1] == "TransactionCanceledException"
    assert before[3] == [(f"p-{n}", str(n)) for n in range(6)]


def test_a_transaction_copies_each_table_once(restored_query: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import copy

    copied: list[str] = []
    deepcopy = copy.deepcopy

    def counting(value: Any, memo: Any = None) -> Any:
        if isinstance(value, Table):
            copied.append(value.name)
        return deepcopy(value, memo)

    moto_speedups.install()
    monkeypatch.setattr(copy, "deepcopy", counting)
    with mock_aws():
        _transactions(boto3.client("dynamodb", region_name=REGION))
    assert sorted(copied) == ["payments", "payments", "transactions", "transactions"]  # one per table per call
