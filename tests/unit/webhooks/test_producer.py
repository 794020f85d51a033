"""The producer (webhooks/producer.py) and the local queues (webhooks/queues.py) on moto in-process: one FIFO
message per (event, endpoint) with its group and deduplication ids, the delivery log written before the messages
without losing what is there, and a partial batch failure raised so the stream record is retried."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from payment_examples.core import aws
from payment_examples.core.errors import ConfigurationError
from payment_examples.payments.service import PaymentService
from payment_examples.tables.models import get_models
from payment_examples.webhooks.endpoints import WebhookEndpoints
from payment_examples.webhooks.events import events_from_record
from payment_examples.webhooks.producer import BATCH_LIMIT, Producer, WebhookPublishError, _batches, queue_message
from payment_examples.webhooks.queues import ensure_queues, queue_names, queue_urls
from tests.unit.webhooks.conftest import payment_records, record


def lifecycle(payments: PaymentService, merchant: str, key: str = "k-1") -> str:
    payment = payments.create_payment(merchant, key, 1000, "USD").payment
    payments.authorize(merchant, payment.id, actor="alice")
    payments.capture(merchant, payment.id, actor="bob", amount=600)
    return payment.id


def received(settings) -> list[dict]:
    """Every message in the test's delivery queue, in the order SQS hands them out (deleted as read)."""
    sqs = aws.client("sqs", replace(settings, webhook_queue_url=None, webhook_dead_letter_queue_url=None))
    found: list[dict] = []
    for _ in range(50):
        batch = sqs.receive_message(QueueUrl=settings.webhook_queue_url, MaxNumberOfMessages=10,
                                    AttributeNames=["All"], WaitTimeSeconds=0).get("Messages", [])  # fmt: skip
        if not batch:
            return found
        for message in batch:
            found.append(message)
            sqs.delete_message(QueueUrl=settings.webhook_queue_url, ReceiptHandle=message["ReceiptHandle"])
    raise AssertionError("the queue did not drain")


def deliveries(event_ids: set[str]) -> dict[tuple[str, str], Any]:
    Model = get_models().webhook_delivery
    return {(d.event_id, d.endpoint_id): d for d in Model.scan() if d.event_id in event_ids}


def producer_for(settings, endpoints: WebhookEndpoints, clock, sqs: Any = None) -> Producer:
    """A producer on the test's queue, with the module's models and clients."""
    environment = replace(settings, webhook_queue_url=None, webhook_dead_letter_queue_url=None)
    return Producer(endpoints=endpoints, models=get_models(environment), settings=settings, clock=clock,
                    sqs=sqs or aws.client("sqs", environment))  # fmt: skip


@pytest.fixture
def producer(settings, endpoints: WebhookEndpoints, fixed) -> Producer:
    return producer_for(settings, endpoints, fixed)


def test_one_message_per_event_and_subscribed_enabled_endpoint(environment, settings, endpoints, producer, payments,
                                                              merchant, fixed) -> None:  # fmt: skip
    everything, _ = endpoints.add(merchant, "https://example.com/all")
    captures, _ = endpoints.add(merchant, "https://example.com/captures", events=["payment.captured"])
    off, _ = endpoints.add(merchant, "https://example.com/off")
    endpoints.disable(merchant, off.endpoint_id)
    payment_id = lifecycle(payments, merchant)
    events = []
    for delivered in payment_records(environment, payment_id):
        events += events_from_record(delivered)
        producer.publish_record(delivered)
    wanted = [(e.event_id, everything.endpoint_id) for e in events] + [(events[2].event_id, captures.endpoint_id)]
    messages = received(settings)
    bodies = [json.loads(m["Body"]) for m in messages]
    assert sorted((b["event_id"], b["endpoint_id"]) for b in bodies) == sorted(wanted)
    by_event = {e.event_id: e for e in events}
    for message, body in zip(messages, bodies, strict=True):
        event = by_event[body["event_id"]]
        assert message["Attributes"]["MessageGroupId"] == f"{body['endpoint_id']}:{payment_id}"
        assert message["Attributes"]["MessageDeduplicationId"] == f"{event.event_id}:{body['endpoint_id']}"
        assert body == {"event_id": event.event_id, "endpoint_id": body["endpoint_id"], "merchant_id": merchant,
                        "payment_id": payment_id, "payment_version": event.payment_version, "type": event.type,
                        "body": event.body}  # fmt: skip
    # per endpoint, one payment's events in order
    in_group = [b["payment_version"] for b in bodies if b["endpoint_id"] == everything.endpoint_id]
    assert in_group == [1, 2, 3]
    logged = deliveries(set(by_event))
    assert set(logged) == set(wanted)
    for (event_id, _), item in logged.items():
        event = by_event[event_id]
        assert (item.state, item.attempts, item.replays, item.body) == ("pending", 0, 0, event.body)
        assert (item.merchant_id, item.payment_id, item.payment_version, item.event_type) == (
            merchant, payment_id, event.payment_version, event.type)  # fmt: skip
        assert item.created_at == event.created_at and item.enqueued_at == fixed.now()


def test_a_redelivered_record_sends_and_logs_nothing_twice_and_loses_nothing(environment, settings, endpoints, producer,
                                                                              payments, merchant) -> None:  # fmt: skip
    endpoint, _ = endpoints.add(merchant, "https://example.com/all")
    payment = payments.create_payment(merchant, "k-1", 1000, "USD").payment
    [delivered] = payment_records(environment, payment.id)
    first = producer.publish_record(delivered)
    [(event_id, endpoint_id)] = first.messages
    Model = get_models().webhook_delivery
    # the deliverer got there: delivered, one attempt
    Model(event_id, endpoint_id).update(actions=[Model.state.set("delivered"), Model.attempts.set(1),
                                                 Model.last_status.set(200)])  # fmt: skip
    before = Model.get(event_id, endpoint_id).attribute_values
    again = producer.publish_record(delivered)
    assert again.messages == first.messages
    assert Model.get(event_id, endpoint_id).attribute_values == before  # nothing lost, nothing rewritten
    assert len(deliveries({event_id})) == 1
    assert len(received(settings)) == 1  # SQS dropped the repeat (same deduplication id)
    assert endpoint.endpoint_id == endpoint_id


def test_a_deliverer_that_logged_first_keeps_its_state(
    environment, settings, endpoints, producer, payments, merchant
) -> None:
    endpoints.add(merchant, "https://example.com/all")
    payment = payments.create_payment(merchant, "k-1", 1000, "USD").payment
    [event] = events_from_record(payment_records(environment, payment.id)[0])
    [endpoint] = endpoints.for_merchant(merchant)
    Model = get_models().webhook_delivery
    Model._get_connection().update_item(event.event_id, range_key=endpoint.endpoint_id, actions=[
        Model.state.set("delivered"), Model.attempts.set(1)])  # fmt: skip
    producer.publish([event])
    item = Model.get(event.event_id, endpoint.endpoint_id)
    assert (item.state, item.attempts, item.body, item.payment_id) == ("delivered", 1, event.body, payment.id)


class FakeSqs:
    """Records SendMessageBatch calls; refuses the entries whose Id is in ``refuse``."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.calls: list[list[dict]] = []
        self.refuse = refuse

    def send_message_batch(self, *, QueueUrl: str, Entries: list[dict]) -> dict:  # noqa: N803 (boto3's names)
        self.calls.append(Entries)
        failed = [{"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "try again"}
                  for e in Entries if e["Id"] in self.refuse]  # fmt: skip
        return {"Successful": [{"Id": e["Id"]} for e in Entries if e["Id"] not in self.refuse],
                **({"Failed": failed} if failed else {})}  # fmt: skip


def test_a_partial_batch_failure_raises_after_logging_and_its_retry_sends_everything(
    environment, settings, endpoints, payments, merchant, fixed
) -> None:
    endpoints.add(merchant, "https://example.com/a")
    endpoints.add(merchant, "https://example.com/b")
    first, second = endpoints.for_merchant(merchant)  # in endpoint id order: the second is entry "1"
    payment = payments.create_payment(merchant, "k-1", 1000, "USD").payment
    [delivered] = payment_records(environment, payment.id)
    sqs = FakeSqs(refuse=frozenset({"1"}))
    producer = producer_for(settings, endpoints, fixed, sqs)
    with pytest.raises(WebhookPublishError) as caught:
        producer.publish_record(delivered)
    [event] = events_from_record(delivered)
    assert caught.value.failed == ((event.event_id, second.endpoint_id, "InternalError"),)
    assert "try again" not in str(caught.value) and event.body not in str(caught.value)
    assert len(sqs.calls) == 1 and first.endpoint_id in sqs.calls[0][0]["MessageDeduplicationId"]
    # The log was written before the messages: both items are there, pending, whole (the retry sends their messages).
    logged = deliveries({event.event_id})
    assert sorted(logged) == sorted((event.event_id, e.endpoint_id) for e in (first, second))
    assert {(d.state, d.attempts, d.body, d.created_at) for d in logged.values()} == {
        ("pending", 0, event.body, event.created_at)}  # fmt: skip
    before = {key: item.attribute_values for key, item in logged.items()}
    sqs.refuse = frozenset()
    again = producer.publish_record(delivered)
    assert again.messages == ((event.event_id, first.endpoint_id), (event.event_id, second.endpoint_id))
    sent = [entry["MessageDeduplicationId"] for entry in sqs.calls[1]]
    assert sent == [f"{event.event_id}:{first.endpoint_id}", f"{event.event_id}:{second.endpoint_id}"]
    assert {key: item.attribute_values for key, item in deliveries({event.event_id}).items()} == before


def test_batches_of_ten_in_order_never_two_of_one_group(
    environment, settings, endpoints, payments, merchant, fixed
) -> None:
    endpoints.add(merchant, "https://example.com/all")
    payment_id = lifecycle(payments, merchant)
    latest = payment_records(environment, payment_id)[-1]["dynamodb"]["NewImage"]
    sqs = FakeSqs()
    producer = producer_for(settings, endpoints, fixed, sqs)
    published = producer.publish_record(record(latest))  # versions 1-3 at once: one group
    assert [len(call) for call in sqs.calls] == [1, 1, 1]
    assert [json.loads(c[0]["MessageBody"])["payment_version"] for c in sqs.calls] == [1, 2, 3]
    assert len(published.messages) == 3

    def messages(groups: int) -> list[tuple[None, None, dict[str, str]]]:
        return [(None, None, queue_message(event_id=f"evt_{i}", endpoint_id="we_x", merchant_id="m",
                                           payment_id=f"p-{i % groups}", payment_version=1, event_type="t",
                                           body="{}")) for i in range(25)]  # fmt: skip

    assert [len(b) for b in _batches(messages(25))] == [BATCH_LIMIT, BATCH_LIMIT, 5]
    assert [len(b) for b in _batches(messages(4))] == [4, 4, 4, 4, 4, 4, 1]  # a new batch where a group repeats
    assert [m for b in _batches(messages(4)) for m in b] == messages(4)  # in order


def test_a_merchant_without_endpoints_costs_one_cached_query(
    environment, settings, endpoints, payments, merchant, fixed
) -> None:
    sqs = FakeSqs()
    producer = producer_for(settings, endpoints, fixed, sqs)
    payment_id = lifecycle(payments, merchant)
    for delivered in payment_records(environment, payment_id):
        assert producer.publish_record(delivered).messages == ()
    assert endpoints.queries == 1 and sqs.calls == []
    assert deliveries({e.event_id for r in payment_records(environment, payment_id)
                                 for e in events_from_record(r)}) == {}  # fmt: skip


def test_a_record_of_another_table_is_refused(environment, producer, payments, settings, merchant) -> None:
    payment = payments.create_payment(merchant, "k-1", 1000, "USD").payment
    [delivered] = payment_records(environment, payment.id)
    with pytest.raises(ValueError, match="not of the payments table"):
        producer.publish_record(
            {**delivered, "eventSourceARN": delivered["eventSourceARN"].replace("payments", "customers")}
        )


def test_the_local_queues_fifo_with_a_redrive_to_the_dead_letters(environment) -> None:
    urls = ensure_queues(environment)
    assert ensure_queues(environment) == urls == queue_urls(environment)  # idempotent
    sqs = aws.client("sqs", environment)
    names = queue_names(environment)
    assert names == ("wh-webhooks.fifo", "wh-webhook-dead-letters.fifo")
    attributes = sqs.get_queue_attributes(QueueUrl=urls.queue, AttributeNames=["All"])["Attributes"]
    assert (attributes["FifoQueue"], attributes["ContentBasedDeduplication"]) == ("true", "false")
    assert attributes["VisibilityTimeout"] == "30"
    dead_arn = sqs.get_queue_attributes(QueueUrl=urls.dead_letter, AttributeNames=["QueueArn"])["Attributes"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dead_arn["QueueArn"]
    assert int(redrive["maxReceiveCount"]) == 10 * environment.webhook_max_attempts + 5  # as in template.yaml


def test_configured_queue_urls_win_and_missing_local_ones_are_a_configuration_error(settings, environment) -> None:
    assert queue_urls(settings).queue == settings.webhook_queue_url
    assert ensure_queues(settings).dead_letter == settings.webhook_dead_letter_queue_url
    with pytest.raises(ConfigurationError, match="ensure_queues"):
        queue_urls(replace(environment, table_prefix="nowhere-"))
