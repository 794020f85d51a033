"""Transactions and the audit trail projected from the payments table's stream (projection.py, handlers/stream.py,
stream.py), on moto in-process (its stream has real records; no concurrency here)."""

from __future__ import annotations

import copy
from typing import Any

import boto3
import pytest

from payment_examples.audit.projection import PaymentProjector, Projectors, audit_entity
from payment_examples.core.config import Settings
from payment_examples.engine.stream import EventSourceConfig, StreamPoller
from payment_examples.handlers.stream import make_handler
from payment_examples.harness.consumer import Consumer, drain
from payment_examples.payments.service import PaymentService
from payment_examples.tables.models import HISTORY_LIMIT, BoundModels
from tests.conftest import stream_records

M = "m-1"


def records(settings: Settings, models: BoundModels) -> list[dict]:
    """Every record in the payments table's stream, as Lambda delivers them."""
    return stream_records(settings, models.payment.Meta.table_name)


def counts(models: BoundModels) -> tuple[int, int]:
    return sum(1 for _ in models.transaction.scan()), sum(1 for _ in models.audit.scan())


def lifecycle(service: PaymentService, key: str = "k-1") -> str:
    payment = service.create_payment(M, key, 1000, "USD").payment
    service.authorize(M, payment.id, actor="alice")
    service.capture(M, payment.id, actor="bob", amount=600)
    service.refund(M, payment.id, actor="carol", amount=100)
    return payment.id


def chain(service: PaymentService, payment_id: str) -> list[tuple[str, str | None]]:
    return [(e.action, e.event_id) for e in service.audit.history(audit_entity(payment_id))]


FULL = [("create", "v1"), ("authorize", "v2"), ("capture", "v3"), ("refund", "v4")]


def test_each_change_is_projected_once_with_its_diff_and_detail(service: PaymentService, models) -> None:
    payment_id = lifecycle(service)
    assert counts(models) == (0, 0)  # the request path wrote the payment only
    stats = drain()
    assert stats.failed == 0 and stats.records == 4
    assert chain(service, payment_id) == FULL
    trail = service.audit_trail(M, payment_id)
    capture = trail[2]
    assert (capture.actor, capture.detail) == ("bob", {"amount": "600"})
    assert {"field": "captured_amount", "from": 0, "to": 600} in capture.changes
    assert service.audit.verify(audit_entity(payment_id)).ok
    assert counts(models) == (3, 4)
    drain()  # caught up: nothing new, nothing twice
    assert counts(models) == (3, 4)


def test_redelivery_and_replays_write_nothing_twice(aws: Settings, service: PaymentService, models) -> None:
    payment_id = lifecycle(service)
    delivered = records(aws, models)
    handler = make_handler(PaymentProjector(models=models))
    assert handler({"Records": delivered}, None) == {"batchItemFailures": []}
    before = chain(service, payment_id)
    # the same batch again, then every record once more in a fresh container (no remembered heads)
    assert handler({"Records": delivered}, None) == {"batchItemFailures": []}
    fresh = make_handler(PaymentProjector(models=models))
    for record in delivered:
        assert fresh({"Records": [record]}, None) == {"batchItemFailures": []}
    assert chain(service, payment_id) == before == FULL
    assert counts(models) == (3, 4)


def test_out_of_order_delivery_is_caught_up_from_the_kept_history(aws, service: PaymentService, models) -> None:
    """A later record first (its earlier ones delayed): the versions before it come from the payment's history,
    in order; the delayed records then change nothing."""
    payment_id = lifecycle(service)
    delivered = records(aws, models)
    handler = make_handler(PaymentProjector(models=models))
    handler({"Records": [delivered[3]]}, None)
    assert chain(service, payment_id) == FULL
    handler({"Records": delivered[:3]}, None)
    assert chain(service, payment_id) == FULL
    assert counts(models) == (3, 4)
    rebuilt = service.audit_trail(M, payment_id)[1]
    assert rebuilt.detail["rebuilt"] == "from the payment's kept history"
    assert service.audit.verify(audit_entity(payment_id)).ok


def test_a_crash_between_commit_and_projection_is_projected_exactly_once(service: PaymentService, models) -> None:
    """The consumer dies after writing the Transaction and before the entry: the retry writes the entry, once."""
    payment = service.create_payment(M, "k-1", 1000, "USD").payment
    drain()
    service.authorize(M, payment.id, actor="alice")
    consumer = Consumer()
    projector = consumer.projectors.by_table[models.payment.Meta.table_name]
    real = projector.audit.track
    calls = {"n": 0}

    def dies_once(*args: Any, **kwargs: Any):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("the container died")
        return real(*args, **kwargs)

    projector.audit.track = dies_once  # type: ignore[method-assign]
    stats = consumer.drain()
    assert stats.failed == 0 and stats.retries >= 1
    assert chain(service, payment.id) == [("create", "v1"), ("authorize", "v2")]
    assert counts(models) == (1, 2)


def test_a_poison_record_is_bisected_out_and_the_rest_proceed(service: PaymentService, models) -> None:
    ids = [lifecycle(service, f"k-{i}") for i in range(3)]
    poison = ids[1]
    projector = PaymentProjector(models=models)
    real = projector.apply
    failures: list[dict] = []

    def apply(change):
        if change.keys["id"]["S"] == poison and change.event == "MODIFY":
            raise ValueError("cannot project this record")
        return real(change)

    projector.apply = apply  # type: ignore[method-assign]
    config = EventSourceConfig(batch_size=100, maximum_retry_attempts=2)
    consumer = Consumer(projectors=Projectors([projector]), config=config, on_failure=failures.append)
    consumer.drain()
    assert chain(service, ids[0]) == FULL and chain(service, ids[2]) == FULL
    assert chain(service, poison) == [("create", "v1")]  # its later records went to the on-failure destination
    # As Lambda does with a partial batch response: the batch is split at the failed record and the rest retried,
    # then given up on from there; the rest's other payments had been projected on the way (Powertools goes on).
    given_up = [r["dynamodb"]["Keys"]["id"]["S"] for f in failures for r in f["records"]]
    assert given_up[0] == poison and given_up.count(poison) == 3
    assert {f["reason"] for f in failures} == {"MaximumRetryAttempts"}
    assert consumer.stats.failed == len(given_up)


def test_a_failed_record_holds_back_the_later_records_of_its_payment(aws, service: PaymentService, models) -> None:
    """Powertools goes on after a failed record; the handler fails the same payment's later records too, so
    none is projected past the one that failed."""
    payment_id = lifecycle(service)
    delivered = records(aws, models)
    projector = PaymentProjector(models=models)
    real = projector.apply

    def apply(change):
        if change.event == "MODIFY" and change.sequence == int(delivered[1]["dynamodb"]["SequenceNumber"]):
            raise ValueError("once")
        return real(change)

    projector.apply = apply  # type: ignore[method-assign]
    response = make_handler(projector)({"Records": delivered}, None)
    failed = [f["itemIdentifier"] for f in response["batchItemFailures"]]
    assert failed == [r["dynamodb"]["SequenceNumber"] for r in delivered[1:]]
    assert chain(service, payment_id) == [("create", "v1")]


def test_a_consumer_stopped_past_the_retention_loses_no_change(aws, service: PaymentService, models) -> None:
    """The stream trimmed everything but the last record (a consumer stopped for more than 24 hours): the
    payment's kept history brings back every version; a payment with no record left comes back by rebuild."""
    payment_id = lifecycle(service)
    other = lifecycle(service, "k-2")
    delivered = records(aws, models)
    last = [r for r in delivered if r["dynamodb"]["Keys"]["id"]["S"] == payment_id][-1]
    projector = PaymentProjector(models=models)
    make_handler(projector)({"Records": [last]}, None)
    assert chain(service, payment_id) == FULL
    assert chain(service, other) == []
    rebuilt = list(PaymentProjector(models=models).rebuild())
    assert {p.item_id for p in rebuilt if p.audit} == {other}
    assert chain(service, other) == FULL
    assert counts(models) == (6, 8)
    assert all(service.audit.verify(audit_entity(i)).ok for i in (payment_id, other))


def test_a_gap_beyond_the_kept_history_is_written_as_a_gap(aws, service: PaymentService, models) -> None:
    payment = service.create_payment(M, "k-1", 10 * HISTORY_LIMIT, "USD").payment
    service.authorize(M, payment.id, actor="a")
    service.capture(M, payment.id, actor="a")
    for _ in range(HISTORY_LIMIT):
        service.refund(M, payment.id, actor="a", amount=1)
    last = records(aws, models)[-1]
    make_handler(PaymentProjector(models=models))({"Records": [last]}, None)
    actions = [a for a, _ in chain(service, payment.id)]
    version = HISTORY_LIMIT + 3
    assert len(actions) == version  # one entry per version, none skipped
    assert actions[: version - HISTORY_LIMIT] == ["projection-gap"] * (version - HISTORY_LIMIT)
    assert actions[version - HISTORY_LIMIT :] == ["refund"] * HISTORY_LIMIT


def test_an_out_of_band_update_is_an_unattributed_entry(service: PaymentService, models, caplog) -> None:
    payment = service.create_payment(M, "k-1", 1000, "USD").payment
    raw = boto3.client("dynamodb", region_name="us-east-1")
    raw.update_item(
        TableName=models.payment.Meta.table_name, Key={"id": {"S": payment.id}},
        UpdateExpression="SET amount = :a, description = :d",
        ExpressionAttributeValues={":a": {"N": "1"}, ":d": {"S": "edited by hand"}},
    )  # fmt: skip
    drain()
    trail = service.audit_trail(M, payment.id)
    assert [e.action for e in trail] == ["create", "unattributed-change"]
    edit = trail[1]
    assert edit.actor == "unattributed"
    assert {"field": "amount", "from": 1000, "to": 1} in edit.changes
    assert {"field": "description", "changed": True} in edit.changes  # free text is never shown
    assert "unattributed change to a payment" in caplog.text
    drain()
    assert len(service.audit_trail(M, payment.id)) == 2
    verified = service.audit.verify(audit_entity(payment.id))
    assert verified.ok and verified.unattributed == (2,)  # the chain is intact, and verify names the change
    assert verified.summary().endswith("; 1 unattributed change(s) at #2")


def test_a_delete_is_an_unattributed_entry(service: PaymentService, models) -> None:
    payment = service.create_payment(M, "k-1", 1000, "USD").payment
    service.authorize(M, payment.id, actor="a")
    boto3.client("dynamodb", region_name="us-east-1").delete_item(
        TableName=models.payment.Meta.table_name, Key={"id": {"S": payment.id}}
    )
    drain()
    actions = [e.action for e in service.audit.history(audit_entity(payment.id))]
    assert actions == ["create", "authorize", "unattributed-delete"]
    assert service.audit.verify(audit_entity(payment.id)).unattributed == (3,)


def test_bookkeeping_and_writes_that_change_nothing_are_not_entries(aws, service: PaymentService, models) -> None:
    payment = service.create_payment(M, "k-1", 1000, "USD").payment
    raw = boto3.client("dynamodb", region_name="us-east-1")
    table = models.payment.Meta.table_name
    item = raw.get_item(TableName=table, Key={"id": {"S": payment.id}})["Item"]
    raw.put_item(TableName=table, Item=item)  # the same item again: moto emits a MODIFY record
    changed = copy.deepcopy(item)
    changed["updated_at"] = {"S": "2026-01-01T10:00:00.000000+0000"}
    raw.put_item(TableName=table, Item=changed)
    drain()
    assert chain(service, payment.id) == [("create", "v1")]


def test_a_malformed_out_of_band_write_is_still_recorded(service: PaymentService, models) -> None:
    payment = service.create_payment(M, "k-1", 1000, "USD").payment
    boto3.client("dynamodb", region_name="us-east-1").update_item(
        TableName=models.payment.Meta.table_name, Key={"id": {"S": payment.id}},
        UpdateExpression="SET amount = :a, version = :v",
        ExpressionAttributeValues={":a": {"S": "a lot"}, ":v": {"N": "7"}},
    )  # fmt: skip
    stats = drain()
    assert stats.failed == 0
    edit = service.audit.history(audit_entity(payment.id))
    assert [e.action for e in edit] == ["create", "unattributed-change"]


def test_the_poller_rejects_a_bad_configuration() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        EventSourceConfig(batch_size=0)
    with pytest.raises(ValueError, match="maximum_retry_attempts"):
        EventSourceConfig(maximum_retry_attempts=-1)


def test_a_table_without_a_stream_is_a_clear_error(aws: Settings, models: BoundModels) -> None:
    with pytest.raises(ValueError, match="has no stream"):
        StreamPoller(models.transaction.Meta.table_name, lambda e, c: None).drain()


def test_a_function_error_bisects_the_batch_down_to_the_poison_record(service: PaymentService, models) -> None:
    """A handler that crashes on one record (a function error, not a partial response): the batch is halved until
    that record stands alone, every other record is delivered, and only the poison goes to the destination."""
    for i in range(5):
        service.create_payment(M, f"k-{i}", 100 + i, "USD")
    delivered: list[str] = []
    failures: list[dict] = []

    def handler(event: dict, context: Any) -> dict:
        amounts = [r["dynamodb"]["NewImage"]["amount"]["N"] for r in event["Records"]]
        if "102" in amounts:
            raise RuntimeError("poison")
        delivered.extend(amounts)
        return {"batchItemFailures": []}

    poller = StreamPoller(models.payment.Meta.table_name, handler, on_failure=failures.append,
                          config=EventSourceConfig(maximum_retry_attempts=1))  # fmt: skip
    poller.drain()
    assert sorted(delivered) == ["100", "101", "103", "104"]
    [failure] = failures
    assert [r["dynamodb"]["NewImage"]["amount"]["N"] for r in failure["records"]] == ["102"]
    assert failure["reason"] == "MaximumRetryAttempts" and "poison" in failure["error"]
