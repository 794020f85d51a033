"""Capacity per operation (AWS "DynamoDB read and write operations", "Conditional writes", "GSI throughput
considerations") and the tracker that works it out for a real run, checked against units worked out by hand."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from payment_examples.cost import capacity as rules
from payment_examples.cost.capacity import IndexSpec, TableSpec, index_write_units, item_storage_bytes
from payment_examples.cost.item_size import item_size
from payment_examples.cost.tracker import CapacityTracker

# -- the rules --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "units"), [(0, 1), (1, 1), (1024, 1), (1025, 2), (3500, 4), (400 * 1024, 400)])
def test_writes_are_1kb_units_at_least_one(size: int, units: int) -> None:
    assert rules.write_units(size) == units


@pytest.mark.parametrize(
    ("size", "consistency", "units"),
    [
        (0, "eventual", 0.5),  # a GetItem of a missing item still costs
        (3500, "strong", 1),  # the docs' example: 3,500 bytes cost a 4 KB read
        (4096, "strong", 1),
        (4097, "strong", 2),
        (10 * 1024, "strong", 3),  # 10 KB rounds to 12 KB
        (8 * 1024, "eventual", 1),  # the docs: 8 KB is 2 strong, 1 eventual, 4 transactional
        (8 * 1024, "transactional", 4),
    ],
)
def test_reads_are_4kb_units_by_consistency(size: int, consistency: str, units: float) -> None:
    assert rules.read_units(size, consistency) == units


def test_unknown_consistency_is_refused() -> None:
    with pytest.raises(ValueError, match="consistency must be one of"):
        rules.read_units(10, "sometimes")


def test_put_charges_the_larger_of_before_and_after_and_a_failed_condition_the_existing_item() -> None:
    assert rules.put_units(500, 3000) == 3  # replaced a 3 KB item with a small one: the larger counts
    assert rules.put_units(3000, None) == 3
    # the docs' example: existing 300 KB, new 310 KB -> 300 if the condition fails, 310 if it succeeds
    assert rules.put_units(310 * 1024, 300 * 1024, succeeded=False) == 300
    assert rules.put_units(310 * 1024, 300 * 1024) == 310
    assert rules.put_units(310 * 1024, None, succeeded=False) == 1  # no existing item: 1 unit


def test_query_rounds_the_page_once_and_batch_get_rounds_every_item() -> None:
    # the docs' BatchGetItem example: 1.5 KB + 6.5 KB items are 4 KB + 8 KB = 3 strong units, not 2
    assert rules.batch_get_units([1536, 6656], "strong") == 3
    assert rules.query_units([1536, 6656], "strong") == 2
    assert rules.batch_get_units([None], "strong") == 1  # a missing key costs like a missing GetItem


def test_storage_adds_100_bytes_per_item_and_per_index_entry() -> None:
    table = TableSpec("t", ("id",), (IndexSpec("by-g", "g", projection="KEYS_ONLY"), IndexSpec("by-h", "h")))
    item = {"id": {"S": "a"}, "g": {"S": "x"}, "data": {"S": "12345"}}
    # item: id(2+1) g(1+1) data(4+5) = 14; the KEYS_ONLY entry: id + g = 5; not in by-h (no h)
    assert item_storage_bytes(item, table) == (14 + 100, 5 + 100)


GSI = IndexSpec("by-g", "g", "r")
KEYS = ("id",)


def _item(g: str | None, data: str, r: str = "1") -> dict:
    item = {"id": {"S": "a"}, "r": {"S": r}, "data": {"S": data}}
    if g is not None:
        item["g"] = {"S": g}
    return item


@pytest.mark.parametrize(
    ("before", "after", "units", "why"),
    [
        (None, _item("x", "d" * 1500), 2, "a new item with the index key: one put of the entry"),
        (_item(None, "d"), _item("x", "d"), 1, "an update that defines the index key: one put"),
        (_item("x", "d" * 1500), _item("y", "d" * 1500), 4, "the key changes: a delete (2) and a put (2)"),
        (_item("x", "d"), _item("x", "d" * 2000), 2, "projected attributes change: one write, the larger entry"),
        (_item("x", "d" * 1500), _item(None, "d" * 1500), 2, "the index key is removed: one delete"),
        (_item(None, "d"), _item(None, "e"), 0, "in the index neither before nor after: free"),
        (_item("x", "d"), _item("x", "d"), 0, "nothing the index holds changed"),
    ],
)
def test_index_writes(before, after, units, why) -> None:
    assert index_write_units(GSI, before, after, KEYS) == units, why


def test_a_keys_only_index_ignores_changes_to_other_attributes() -> None:
    keys_only = IndexSpec("by-g", "g", "r", projection="KEYS_ONLY")
    assert index_write_units(keys_only, _item("x", "d"), _item("x", "changed"), KEYS) == 0


# -- the tracker on a scripted workload ---------------------------------------------------------------------------


@pytest.fixture
def dynamo() -> Iterator[tuple[object, object]]:
    """A table with an index projecting everything; a tracked client and the tracker's own untracked one."""
    with mock_aws():
        tracked = boto3.client("dynamodb", region_name="us-east-1")
        tracked.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[
                {"AttributeName": "id", "AttributeType": "S"},
                {"AttributeName": "g", "AttributeType": "S"},
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "by-g",
                    "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        yield tracked, boto3.client("dynamodb", region_name="us-east-1")


def test_tracker_units_equal_the_units_worked_out_by_hand(dynamo) -> None:
    client, raw = dynamo
    a = {"id": {"S": "a"}, "g": {"S": "x"}, "data": {"S": "x" * 2000}}  # 2+1 + 1+1 + 4+2000 = 2009 bytes
    assert item_size(a) == 2009
    c = {"id": {"S": "c"}, "n": {"N": "12345"}}  # 2+1 + 1+4 (1 + 3 digit pairs) = 8 bytes, not in the index
    assert item_size(c) == 8
    with CapacityTracker(raw).attach(client) as tracker:
        client.put_item(TableName="t", Item=a)  # 2 units; index 2
        with pytest.raises(client.exceptions.ConditionalCheckFailedException):
            client.put_item(TableName="t", Item={"id": {"S": "a"}}, ConditionExpression="attribute_not_exists(id)")
        client.get_item(TableName="t", Key={"id": {"S": "a"}})  # eventual: 0.5
        client.get_item(TableName="t", Key={"id": {"S": "a"}}, ConsistentRead=True, ProjectionExpression="id")  # 1
        client.get_item(TableName="t", Key={"id": {"S": "nope"}}, ConsistentRead=True)  # missing: 1
        update = {"TableName": "t", "Key": {"id": {"S": "a"}}, "ExpressionAttributeValues": {":v": {"S": "y" * 5000}}}
        client.update_item(**update, UpdateExpression="SET #d = :v", ExpressionAttributeNames={"#d": "data"})  # 5009 B
        client.update_item(TableName="t", Key={"id": {"S": "a"}}, UpdateExpression="SET g = :g",
                           ExpressionAttributeValues={":g": {"S": "z"}})  # fmt: skip
        client.put_item(TableName="t", Item=c)
        client.query(TableName="t", IndexName="by-g", KeyConditionExpression="g = :g",
                     ExpressionAttributeValues={":g": {"S": "z"}})  # fmt: skip
        client.scan(TableName="t", FilterExpression="n > :big", ExpressionAttributeValues={":big": {"N": "99999"}})
        client.batch_get_item(
            RequestItems={"t": {"Keys": [{"id": {"S": k}} for k in ("a", "c", "missing")], "ConsistentRead": True}}
        )
        client.batch_write_item(
            RequestItems={
                "t": [
                    {"PutRequest": {"Item": {"id": {"S": "d"}, "g": {"S": "q"}}}},
                    {"DeleteRequest": {"Key": {"id": {"S": "c"}}}},
                ]
            }
        )
        client.delete_item(TableName="t", Key={"id": {"S": "a"}})
        client.transact_write_items(TransactItems=[{"Put": {"TableName": "t", "Item": {"id": {"S": "e"}}}}])
        client.describe_table(TableName="t")  # control plane: not charged

    got = [(r.operation, r.read_units, r.write_units, r.index_write_units, r.succeeded) for r in tracker.records]
    assert got == [
        ("PutItem", 0, 2, 2, True),
        ("PutItem", 0, 2, 0, False),  # the condition failed: the existing 2,009-byte item
        ("GetItem", 0.5, 0, 0, True),
        ("GetItem", 1.0, 0, 0, True),  # the projection returns `id`; the whole item is read and charged
        ("GetItem", 1.0, 0, 0, True),
        ("UpdateItem", 0, 5, 5, True),  # 2,009 -> 5,009 bytes; the index entry rewritten at 5 KB
        ("UpdateItem", 0, 5, 10, True),  # the index key moves: delete 5 + put 5
        ("PutItem", 0, 1, 0, True),
        ("Query", 1.0, 0, 0, True),  # one 5,009-byte entry: 2 units of 4 KB, halved
        ("Scan", 1.0, 0, 0, True),  # the filter returns nothing, but 5,009 + 8 bytes were read
        ("BatchGetItem", 4.0, 0, 0, True),  # 2 (a) + 1 (c) + 1 (missing), each rounded on its own
        ("BatchWriteItem", 0, 2, 1, True),  # put d (1, index 1) + delete c (1)
        ("DeleteItem", 0, 5, 5, True),
        ("TransactWriteItems", 0, 2, 0, True),  # a transaction doubles
    ]
    assert tracker.totals(by="operation")["PutItem"] == {"read": 0.0, "write": 5.0, "index_write": 2.0, "calls": 3}
    assert sum(c for (_, service, _), c in tracker.requests.items() if service == "dynamodb") == 15


def test_tracker_detaches_and_ignores_its_own_reads(dynamo) -> None:
    client, raw = dynamo
    tracker = CapacityTracker(raw).attach(client)
    client.put_item(TableName="t", Item={"id": {"S": "a"}})
    tracker.detach()
    client.put_item(TableName="t", Item={"id": {"S": "b"}})
    # the before-image read of the first put went through `raw`, which is not tracked
    assert [r.operation for r in tracker.records] == ["PutItem"]
    assert sum(tracker.requests.values()) == 1


def test_tracker_labels_calls_with_the_step_in_force(dynamo) -> None:
    client, raw = dynamo
    with CapacityTracker(raw).attach(client) as tracker:
        with tracker.step("create"):
            client.put_item(TableName="t", Item={"id": {"S": "a"}})
        client.get_item(TableName="t", Key={"id": {"S": "a"}})
    assert [(r.step, r.operation) for r in tracker.records] == [("create", "PutItem"), (None, "GetItem")]


def test_a_refused_request_is_not_charged(dynamo) -> None:
    client, raw = dynamo
    with CapacityTracker(raw).attach(client) as tracker, pytest.raises(client.exceptions.ClientError):
        client.put_item(TableName="t", Item={"id": {"N": "1"}})  # wrong key type: a ValidationException
    assert tracker.records == []
