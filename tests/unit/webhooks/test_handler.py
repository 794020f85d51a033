"""The producer's stream handler (handlers/webhook_events.py): Powertools' partial batch response, and a failed
record blocking the same payment's later records in the batch so its events are never enqueued out of order."""

from __future__ import annotations

import json
from typing import Any

from payment_examples.core import aws
from payment_examples.handlers import webhook_events
from payment_examples.handlers.webhook_events import make_handler
from payment_examples.webhooks.producer import Published
from payment_examples.webhooks.queues import ensure_queues
from tests.unit.webhooks.conftest import payment_records


class FailingProducer:
    """Fails the records of one (payment, version); records what it was asked to publish."""

    def __init__(self, payment_id: str, version: int) -> None:
        self.failing = (payment_id, version)
        self.seen: list[tuple[str, int]] = []

    def publish_record(self, record: Any) -> Published:
        image = record.raw_event["dynamodb"]["NewImage"]
        key = (image["id"]["S"], int(image["version"]["N"]))
        self.seen.append(key)
        if key == self.failing:
            raise RuntimeError("SQS is down")
        return Published(1)


def test_a_failed_record_is_reported_and_blocks_its_payments_later_records(environment, payments, merchant) -> None:
    a = payments.create_payment(merchant, "k-a", 1000, "USD").payment
    b = payments.create_payment(merchant, "k-b", 2000, "USD").payment
    payments.authorize(merchant, a.id, actor="alice")
    payments.authorize(merchant, b.id, actor="alice")
    payments.capture(merchant, a.id, actor="bob")
    payments.capture(merchant, b.id, actor="bob")
    records = payment_records(environment, a.id, b.id)
    order = [(r["dynamodb"]["Keys"]["id"]["S"], r["dynamodb"]["SequenceNumber"]) for r in records]
    assert [p for p, _ in order] == [a.id, b.id] * 3
    producer = FailingProducer(a.id, 2)
    response = make_handler(producer)({"Records": records}, None)
    failed = [f["itemIdentifier"] for f in response["batchItemFailures"]]
    assert failed == [seq for p, seq in order[2:] if p == a.id]  # a's v2 and, unprocessed, its v3
    assert producer.seen == [(a.id, 1), (b.id, 1), (a.id, 2), (b.id, 2), (b.id, 3)]


def test_the_deployed_handler_builds_its_producer_from_the_settings(environment, endpoints, payments, merchant) -> None:
    urls = ensure_queues(environment)  # the local queues: no queue URL configured
    endpoint, _ = endpoints.add(merchant, "https://example.com/hooks")
    payment = payments.create_payment(merchant, "k-1", 1000, "USD").payment
    payments.authorize(merchant, payment.id, actor="alice")
    records = payment_records(environment, payment.id)
    assert webhook_events.handler({"Records": records}, None) == {"batchItemFailures": []}
    assert webhook_events.handler({"Records": records}, None) == {"batchItemFailures": []}  # a redelivery
    sqs = aws.client("sqs", environment)
    messages = sqs.receive_message(QueueUrl=urls.queue, MaxNumberOfMessages=10)["Messages"]
    assert [json.loads(m["Body"])["type"] for m in messages] == ["payment.created", "payment.authorized"]
    assert {json.loads(m["Body"])["endpoint_id"] for m in messages} == {endpoint.endpoint_id}
