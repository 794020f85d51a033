"""The deliverer (webhooks/delivery.py) on moto in-process (SQS FIFO, DynamoDB): a 2xx delivers and logs; failures
are logged attempts with their backoff as the message's visibility; the last attempt dead-letters; a failed message
blocks its payment's later ones in the batch; signatures verify with the endpoint's secrets; the log's history,
errors and log lines; disabled endpoints; replays; the default urllib3 poster over real sockets.

Messages are taken from the queue by the local worker (harness/webhooks.QueueWorker, what Lambda's SQS event source
does). "Time passes" for a message in its backoff by setting its visibility to 0 from the test (moto keeps real
time)."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from payment_examples.core import ValidationError, aws
from payment_examples.core.clock import FixedClock, SeededIds
from payment_examples.core.config import Settings
from payment_examples.core.signatures import SIGNATURE_HEADER, SignatureVerificationError, verify_signature
from payment_examples.encryption.fields import encryptor_for
from payment_examples.handlers.webhook_delivery import make_handler
from payment_examples.harness.receiver import Receiver
from payment_examples.harness.webhooks import QueueWorker
from payment_examples.tables.models import BoundModels, sortable_time
from payment_examples.webhooks.delivery import (
    DISABLED_ERROR,
    HISTORY_LIMIT,
    MAX_ERROR_LENGTH,
    USER_AGENT,
    Deliverer,
    DeliveryView,
    UrllibPoster,
    scrub,
)
from payment_examples.webhooks.endpoints import WebhookEndpoints
from payment_examples.webhooks.events import WebhookEvent, event_id_for
from payment_examples.webhooks.producer import Producer, queue_message
from tests.conftest import START
from tests.unit.webhooks.conftest import seeded_secrets

_numbers = itertools.count(1000)

OK = (200, None)


@dataclass(frozen=True)
class Call:
    url: str
    body: bytes
    headers: dict[str, str]
    timeout: float

    @property
    def event_id(self) -> str:
        return self.headers["Payment-Event-Id"]


class FakeHttp:
    """An ``HttpPost`` that records each call and answers what ``answer(call)`` says (default 200)."""

    def __init__(self, answer: Callable[[Call], tuple[int | None, str | None]] | None = None) -> None:
        self.answer = answer or (lambda call: OK)
        self.calls: list[Call] = []

    def __call__(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int | None, str | None]:
        call = Call(url, body, dict(headers), timeout)
        self.calls.append(call)
        return self.answer(call)


class RecordingSqs:
    """The real (moto) client, with its visibility changes recorded."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.visibility: list[int] = []  # ChangeMessageVisibility's values, in order
        self.released: list[int] = []  # ChangeMessageVisibilityBatch's values

    def change_message_visibility(self, **kwargs: Any) -> Any:
        self.visibility.append(kwargs["VisibilityTimeout"])
        return self._client.change_message_visibility(**kwargs)

    def change_message_visibility_batch(self, **kwargs: Any) -> Any:
        self.released += [entry["VisibilityTimeout"] for entry in kwargs["Entries"]]
        return self._client.change_message_visibility_batch(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@dataclass
class Rig:
    settings: Settings
    endpoints: WebhookEndpoints
    deliverer: Deliverer
    http: FakeHttp
    sqs: RecordingSqs
    worker: QueueWorker
    producer: Producer
    clock: FixedClock
    models: BoundModels

    def publish(self, *events: WebhookEvent) -> None:
        self.producer.publish(events)

    def poll(self) -> int:
        return self.worker.poll()

    def log(self, event: WebhookEvent, endpoint_id: str) -> Any:
        return self.models.webhook_delivery.get(event.event_id, endpoint_id, consistent_read=True)

    def in_flight_visible(self) -> None:
        """Time passes: every message waiting out a backoff becomes visible (moto keeps real time, so the test
        reaches into its backend)."""
        from moto.sqs.models import sqs_backends

        queue = sqs_backends["123456789012"]["us-east-1"].get_queue(self.settings.webhook_queue_url.rsplit("/", 1)[1])
        for message in queue._messages:
            message.visible_at = 0.0

    def queue_messages(self, url: str | None = None) -> list[dict]:
        """Every visible message of a queue (received, then made visible again)."""
        client = self.sqs._client
        url = url or self.settings.webhook_queue_url
        found = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"],
                                       WaitTimeSeconds=0).get("Messages") or []  # fmt: skip
        for message in found:
            client.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
        return found


def make_rig(settings: Settings, endpoints: WebhookEndpoints, fixed: FixedClock, wh_models: BoundModels,
             client: Any, http: FakeHttp | None = None, *, seed: int = 7) -> Rig:  # fmt: skip
    """A deliverer, worker and producer on the test's queues. Every client is the module's (one per test's
    settings would cost a botocore client, ~0.2 s, each)."""
    http = http or FakeHttp()
    sqs = RecordingSqs(client)
    deliverer = Deliverer(endpoints=endpoints, models=wh_models, settings=settings, clock=fixed, http=http,
                          rng=random.Random(seed), sqs=sqs)  # fmt: skip
    worker = QueueWorker(settings.webhook_queue_url, make_handler(deliverer), settings=settings, sqs=sqs)
    producer = Producer(endpoints=endpoints, models=wh_models, settings=settings, clock=fixed, sqs=sqs._client)
    return Rig(settings, endpoints, deliverer, http, sqs, worker, producer, fixed, wh_models)


@pytest.fixture(scope="module")
def encryptor(environment: Settings) -> Any:
    """One field encryptor for the module (each builds a KMS client: ~0.4 s)."""
    return encryptor_for(environment)


@pytest.fixture
def endpoints(environment: Settings, fixed: FixedClock, encryptor: Any) -> WebhookEndpoints:
    """The package's endpoints fixture, with the module's encryptor."""
    return WebhookEndpoints(settings=environment, clock=fixed, ids=SeededIds(next(_numbers)),
                            secret_factory=seeded_secrets(), encryptor=encryptor)  # fmt: skip


@pytest.fixture(scope="module")
def sqs(environment: Settings) -> Any:
    return aws.client("sqs", environment)


@pytest.fixture
def rig(settings: Settings, endpoints: WebhookEndpoints, fixed: FixedClock, wh_models: BoundModels, sqs: Any) -> Rig:
    return make_rig(settings, endpoints, fixed, wh_models, sqs)


def event(merchant: str, payment: str, version: int = 1, type_: str = "payment.created") -> WebhookEvent:
    event_id = event_id_for(payment, version)
    body = json.dumps({"id": event_id, "type": type_, "created": int(START.timestamp()), "payment_version": version,
                       "data": {"object": {"id": payment, "merchant_id": merchant}, "amount": 100, "reason": None}},
                      separators=(",", ":"), sort_keys=True)  # fmt: skip
    return WebhookEvent(event_id, type_, merchant, payment, version, START, body)


def answer_by_event(answers: dict[str, tuple[int | None, str | None]]) -> Callable[[Call], tuple]:
    return lambda call: answers.get(call.event_id, OK)


# -- delivered -----------------------------------------------------------------------------------------------------


def test_a_2xx_delivers_signed_and_logs_it(rig: Rig, merchant: str) -> None:
    endpoint, secret = rig.endpoints.add(merchant, "https://example.com/hooks")
    evt = event(merchant, "pay-1")
    rig.publish(evt)
    rig.clock.advance(timedelta(seconds=3))
    assert rig.poll() == 1
    [call] = rig.http.calls
    assert call.url == "https://example.com/hooks" and call.body == evt.body.encode()
    assert call.timeout == rig.settings.webhook_timeout_s
    assert call.headers["Content-Type"] == "application/json"
    assert call.headers["User-Agent"] == USER_AGENT
    assert call.headers["Payment-Event-Id"] == evt.event_id
    now = rig.clock.now().timestamp()
    assert verify_signature(call.body, call.headers[SIGNATURE_HEADER], [secret], now=now) == int(now)
    item = rig.log(evt, endpoint.endpoint_id)
    assert (item.state, item.attempts, item.last_status, item.last_error) == ("delivered", 1, 200, None)
    assert item.delivered_at == rig.clock.now() and item.created_at == START
    assert item.failed_partition is None and item.failed_key is None
    [entry] = [DeliveryView.of(item).history[0]]
    assert entry == {"at": sortable_time(rig.clock.now()), "status": 200, "error": None, "ms": entry["ms"]}
    assert isinstance(entry["ms"], int) and entry["ms"] >= 0
    assert rig.poll() == 0 and rig.queue_messages() == []  # deleted from the queue
    assert rig.worker.stats.deleted == 1
    counters = rig.deliverer.counters
    assert (counters.delivered, counters.attempts, counters.failed) == (1, 1, 0)
    assert counters.latency_ms == [3000.0]  # commit (created_at) -> delivered_at, from the log item


def test_the_handler_answers_batch_item_failures(rig: Rig, merchant: str) -> None:
    endpoint, _ = rig.endpoints.add(merchant, "https://example.com/hooks")
    good, bad = event(merchant, "pay-ok"), event(merchant, "pay-bad")
    rig.http.answer = answer_by_event({bad.event_id: (503, None)})
    rig.publish(good, bad)
    client = rig.sqs._client
    messages = client.receive_message(QueueUrl=rig.settings.webhook_queue_url, MaxNumberOfMessages=10,
                                      AttributeNames=["All"])["Messages"]  # fmt: skip
    records = [rig.worker._lambda_record(m) for m in messages]
    first = records[0]  # Lambda's SQS record shape
    assert (first["eventSource"], first["awsRegion"]) == ("aws:sqs", "us-east-1")
    assert first["eventSourceARN"].endswith(":" + rig.settings.webhook_queue_url.rsplit("/", 1)[1])
    assert first["attributes"]["MessageGroupId"] == f"{endpoint.endpoint_id}:pay-ok"
    assert first["attributes"]["ApproximateReceiveCount"] == "1" and first["receiptHandle"] and first["md5OfBody"]
    response = make_handler(rig.deliverer)({"Records": records}, None)
    bad_id = next(r["messageId"] for r in records if json.loads(r["body"])["event_id"] == bad.event_id)
    assert response == {"batchItemFailures": [{"itemIdentifier": bad_id}]}
    assert make_handler(rig.deliverer)({"Records": []}, None) == {"batchItemFailures": []}


def test_a_message_that_overtakes_the_producers_log_write_leaves_a_whole_item(rig: Rig, merchant: str) -> None:
    endpoint, _ = rig.endpoints.add(merchant, "https://example.com/hooks")
    evt = event(merchant, "pay-early")
    message = queue_message(
        event_id=evt.event_id,
        endpoint_id=endpoint.endpoint_id,
        merchant_id=merchant,
        payment_id=evt.payment_id,
        payment_version=1,
        event_type=evt.type,
        body=evt.body,
    )
    rig.sqs._client.send_message(QueueUrl=rig.settings.webhook_queue_url, **message)
    assert rig.poll() == 1  # delivered before any log item (a producer that logged after sending): the fallback
    # The producer's log write comes now: the item exists, so it sets only what is absent (if_not_exists). (Its
    # message is sent again too: SQS drops it within five minutes; moto only while the first is still in the queue,
    # so it is not polled here.)
    rig.publish(evt)
    item = rig.log(evt, endpoint.endpoint_id)
    assert (item.state, item.attempts, item.merchant_id, item.body, item.created_at) == (
        "delivered", 1, merchant, evt.body, START)  # fmt: skip


def update_calls(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The delivery log's UpdateItems from now on (their keyword arguments)."""
    connection = rig.models.webhook_delivery._get_connection()
    calls: list[dict] = []
    original = connection.update_item

    def update_item(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(connection, "update_item", update_item)
    return calls


def test_an_attempt_is_one_short_update_of_the_item_the_producer_wrote(
    rig: Rig, merchant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, _ = rig.endpoints.add(merchant, "https://example.com/hooks")
    evt = event(merchant, "pay-short")
    rig.publish(evt)  # the log item first, then the message
    calls = update_calls(rig, monkeypatch)
    assert rig.poll() == 1
    [call] = calls  # conditioned on the item existing, without the identity's if_not_exists
    assert "attribute_exists" in repr(call["condition"]) and "merchant_id" not in repr(call["actions"])
    item = rig.log(evt, endpoint.endpoint_id)
    assert (item.state, item.attempts, item.merchant_id, item.created_at) == ("delivered", 1, merchant, START)


def test_the_endpoint_is_read_once_per_ttl_and_a_disable_is_seen_when_it_ends(rig: Rig, merchant: str) -> None:
    endpoint, _ = rig.endpoints.add(merchant, "https://example.com/hooks")
    rig.publish(event(merchant, "pay-c1"), event(merchant, "pay-c2"))
    assert rig.poll() == 2 and len(rig.http.calls) == 2
    assert rig.deliverer.endpoint_reads == 1  # one GetItem and one decryption for both messages
    rig.publish(event(merchant, "pay-c3"))
    rig.endpoints.disable(merchant, endpoint.endpoint_id)  # after its message was enqueued
    assert rig.poll() == 1 and len(rig.http.calls) == 3  # within the ttl: the endpoint as read (documented)
    rig.clock.advance(rig.deliverer.endpoint_ttl)
    late = event(merchant, "pay-c4")
    rig.endpoints.enable(merchant, endpoint.endpoint_id)
    rig.publish(late)
    rig.endpoints.disable(merchant, endpoint.endpoint_id)
    assert rig.poll() == 1 and len(rig.http.calls) == 3  # the ttl over: read again, disabled, given up
    assert (rig.log(late, endpoint.endpoint_id).state, rig.deliverer.endpoint_reads) == ("failed", 2)
    rig.endpoints.enable(merchant, endpoint.endpoint_id)
    rig.deliverer.forget(merchant, endpoint.endpoint_id)  # read at once
    rig.publish(event(merchant, "pay-c5"))
    assert rig.poll() == 1 and len(rig.http.calls) == 4 and rig.deliverer.endpoint_reads == 3
    with pytest.raises(ValueError):
        Deliverer(endpoints=rig.endpoints, settings=rig.settings, endpoint_ttl=timedelta(seconds=-1))


def test_a_cached_endpoint_is_read_again_when_a_secret_it_signs_with_expires(rig: Rig, merchant: str) -> None:
    endpoint, first = rig.endpoints.add(merchant, "https://example.com/hooks")
    second = rig.endpoints.rotate_secret(merchant, endpoint.endpoint_id, previous_valid_for=timedelta(seconds=20))
    rig.publish(event(merchant, "pay-exp", 1))
    assert rig.poll() == 1 and rig.http.calls[0].headers[SIGNATURE_HEADER].count("v1=") == 2
    rig.clock.advance(timedelta(seconds=21))  # within the ttl, but the previous secret no longer signs
    rig.publish(event(merchant, "pay-exp", 2))
    assert rig.poll() == 1 and rig.deliverer.endpoint_reads == 2
    header = rig.http.calls[1].headers[SIGNATURE_HEADER]
    now = rig.clock.now().timestamp()
    assert header.count("v1=") == 1 and verify_signature(rig.http.calls[1].body, header, [second], now=now)
    assert first != second


# -- failed attempts and backoff -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer", [(500, None), (None, "timeout after 5s"), (None, "connection failed: Connection refused")],
    ids=["500", "timeout", "refused"],
)  # fmt: skip
def test_a_failed_attempt_is_logged_and_waits_out_its_backoff(rig: Rig, merchant: str, answer: tuple) -> None:
    endpoint, _ = rig.endpoints.add(merchant, "https://example.com/hooks")
    evt = event(merchant, "pay-f")
    rig.http.answer = lambda call: answer
    rig.publish(evt)
    assert rig.poll() == 1
    item = rig.log(evt, endpoint.endpoint_id)
    assert (item.state, item.attempts, item.last_status, item.last_error) == ("pending", 1, *answer)
    assert [(e["status"], e["error"]) for e in DeliveryView.of(item).history] == [answer]
    [visibility] = rig.sqs.visibility
    assert 15 <= visibility <= 30  # attempt 1: base 30 s, equal jitter: [d/2, d]
    assert rig.worker.stats.reported == 1 and rig.worker.stats.deleted == 0
    assert rig.poll() == 0  # in flight for its backoff
    rig.in_flight_visible()
    rig.http.answer = lambda call: OK
    assert rig.poll() == 1
    item = rig.log(evt, endpoint.endpoint_id)
    assert (item.state, item.attempts, item.last_status, item.last_error) == ("delivered", 2, 200, None)
    assert len(rig.http.calls) == 2


def test_backoff_is_exponential_capped_with_equal_jitter() -> None:
    settings = Settings(webhook_backoff_base_s=30.0, webhook_backoff_cap_s=900.0)
    deliverer = Deliverer(endpoints=None, settings=settings, rng=random.Random(1), http=FakeHttp())  # type: ignore[arg-type]
    for attempt in range(1, 12):
        ceiling = min(900.0, 30.0 * 2 ** (attempt - 1))
        values = {deliverer.backoff(attempt) for _ in range(200)}
        assert min(values) >= ceiling / 2 and max(values) <= ceiling
        assert len(values) > 5  # jittered, not one value
    zero = Deliverer(endpoints=None, settings=Settings(webhook_backoff_base_s=0), http=FakeHttp())  # type: ignore[arg-type]
    assert {zero.backoff(n) for n in range(1, 6)} == {0}  # base 0: retries at once
    assert isinstance(deliverer.backoff(1), int)
    with pytest.raises(ValueError):
        deliverer.backoff(0)
    # the same seed gives the same delays
    a = Deliverer(endpoints=None, settings=settings, rng=random.Random(5), http=FakeHttp())  # type: ignore[arg-type]
    b = Deliverer(endpoints=None, settings=settings, rng=random.Random(5), http=FakeHttp())  # type: ignore[arg-type]
    assert [a.backoff(n) for n in range(1, 8)] == [b.backoff(n) for n in range(1, 8)]


def test_the_last_attempt_dead_letters_and_logs_failed(settings: Settings, endpoints: WebhookEndpoints,
                                                        fixed: FixedClock, wh_models: BoundModels,
                                                        sqs: Any, merchant: str) -> None:  # fmt: skip
    settings = replace(settings, webhook_max_attempts=4, webhook_backoff_base_s=30.0, webhook_backoff_cap_s=100.0)
    rig = make_rig(settings, endpoints, fixed, wh_models, sqs, FakeHttp(lambda call: (500, None)))
    endpoint, _ = endpoints.add(merchant, "https://example.com/down")
    evt = event(merchant, "pay-dead")
    rig.publish(evt)
    for _ in range(4):
        assert rig.poll() == 1
        rig.in_flight_visible()
        fixed.advance(timedelta(minutes=1))
    ceilings = [30, 60, 100]  # attempts 1-3 (the third capped); the fourth is the last
    assert len(rig.sqs.visibility) == 3
    assert all(c / 2 <= v <= c for v, c in zip(rig.sqs.visibility, ceilings, strict=True))
    item = rig.log(evt, endpoint.endpoint_id)
    failed_at = START + timedelta(minutes=3)
    assert (item.state, item.attempts, item.last_status) == ("failed", 4, 500)
    assert item.failed_at == failed_at and item.failed_partition == "failed"
    assert item.failed_key == f"{sortable_time(failed_at)}#{evt.event_id}#{endpoint.endpoint_id}"
    assert rig.poll() == 0 and rig.queue_messages() == []  # not reported: deleted from the delivery queue
    [dead] = rig.queue_messages(settings.webhook_dead_letter_queue_url)
    assert json.loads(dead["Body"])["event_id"] == evt.event_id
    assert dead["Attributes"]["MessageGroupId"] == f"{endpoint.endpoint_id}:{evt.payment_id}"
    assert dead["Attributes"]["MessageDeduplicationId"] == f"{evt.event_id}:{endpoint.endpoint_id}"
    counters = rig.deliverer.counters
    assert (counters.attempts, counters.retried, counters.failed, counters.delivered) == (4, 3, 1, 0)


def test_an_endpoint_that_cannot_be_read_is_a_failed_attempt_and_given_up_on_in_the_log(
    settings: Settings,
    endpoints: WebhookEndpoints,
    fixed: FixedClock,
    wh_models: BoundModels,
    sqs: Any,
    merchant: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A secret that cannot be decrypted (a key version removed, KMS refusing) must not leave the message to SQS's
    redrive with its log still pending, where no replay finds it: each failure is an attempt, the last one gives up."""
    settings = replace(settings, webhook_max_attempts=2)
    rig = make_rig(settings, endpoints, fixed, wh_models, sqs, FakeHttp(lambda call: (200, None)))
    endpoint, _ = endpoints.add(merchant, "https://example.com/hooks")
    evt = event(merchant, "pay-unreadable")
    rig.publish(evt)

    def refuse(endpoint: Any) -> list[str]:
        raise RuntimeError("KMS said no")

    monkeypatch.setattr(endpoints, "active_secrets", refuse)
    for _ in range(2):
        assert rig.poll() == 1
        rig.in_flight_visible()
    item = rig.log(evt, endpoint.endpoint_id)
    assert (item.state, item.attempts, item.last_error) == ("failed", 2, "endpoint unavailable: RuntimeError")
    assert rig.http.calls == [] and rig.poll() == 0
    [dead] = rig.queue_messages(settings.webhook_dead_letter_queue_url)
    assert json.loads(dead["Body"])["event_id"] == evt.event_id
    monkeypatch.undo()
    result = rig.deliverer.replay(since=START - timedelta(days=1), merchant_id=merchant)
    assert result.event_ids == (evt.event_id,)


def test_a_failed_message_blocks_its_payments_later_messages_in_the_batch(rig: Rig, merchant: str) -> None:
    endpoint, _ = rig.endpoints.add(merchant, "https://example.com/hooks")
    a1, a2, a3 = (event(merchant, "pay-a", v) for v in (1, 2, 3))
    b1 = event(merchant, "pay-b")
    rig.http.answer = answer_by_event({a1.event_id: (500, None)})
    rig.publish(a1, a2, a3, b1)
    assert rig.poll() == 4  # one batch
    assert [c.event_id for c in rig.http.calls] == [a1.event_id, b1.event_id]  # a2, a3 not attempted
    assert rig.sqs.released == [0, 0]  # made visible at once: they wait behind a1, which is in flight
    assert rig.worker.stats.reported == 3 and rig.worker.stats.deleted == 1
    assert rig.deliverer.counters.blocked == 2
    assert rig.log(a2, endpoint.endpoint_id).attempts == 0 and rig.log(b1, endpoint.endpoint_id).state == "delivered"
    assert rig.poll() == 0  # a2 and a3 are visible but SQS FIFO keeps them behind a1
    rig.in_flight_visible()
    rig.http.answer = lambda call: OK
    assert rig.poll() == 3
    assert [c.event_id for c in rig.http.calls[2:]] == [a1.event_id, a2.event_id, a3.event_id]  # in order
    assert {rig.log(e, endpoint.endpoint_id).state for e in (a1, a2, a3)} == {"delivered"}


def test_attempts_are_counted_by_the_log_not_by_the_receive_count(settings: Settings, endpoints: WebhookEndpoints,
                                                                   fixed: FixedClock, wh_models: BoundModels,
                                                                   sqs: Any, merchant: str) -> None:  # fmt: skip
    """A message blocked behind its group's failing one is received (its ApproximateReceiveCount grows) but not
    attempted: when the first is given up on, the second still gets every one of its attempts."""
    settings = replace(settings, webhook_max_attempts=3)
    rig = make_rig(settings, endpoints, fixed, wh_models, sqs, FakeHttp(lambda call: (500, None)))
    endpoint, _ = endpoints.add(merchant, "https://example.com/down")
    first, second = event(merchant, "pay-count", 1), event(merchant, "pay-count", 2)
    rig.publish(first, second)
    for _ in range(3):  # the first's three attempts; in the last batch the second's first attempt follows
        assert rig.poll() == 2
        rig.in_flight_visible()
    assert rig.log(first, endpoint.endpoint_id).state == "failed"
    log = rig.log(second, endpoint.endpoint_id)
    assert (log.state, log.attempts) == ("pending", 1)  # received three times, attempted once
    for _ in range(2):
        assert rig.poll() == 1
        rig.in_flight_visible()
    log = rig.log(second, endpoint.endpoint_id)
    assert (log.state, log.attempts) == ("failed", 3)
    assert [c.event_id for c in rig.http.calls] == [first.event_id] * 3 + [second.event_id] * 3


# -- signatures, history, errors, logs ---------------------------------------------------------------------------------


def test_during_a_rotation_both_secrets_sign(rig: Rig, merchant: str) -> None:
    endpoint, first = rig.endpoints.add(merchant, "https://example.com/hooks")
    second = rig.endpoints.rotate_secret(merchant, endpoint.endpoint_id, previous_valid_for=timedelta(hours=1))
    rig.publish(event(merchant, "pay-rot", 1))
    assert rig.poll() == 1
    header = rig.http.calls[0].headers[SIGNATURE_HEADER]
    assert header.count("v1=") == 2
    now = rig.clock.now().timestamp()
    body = rig.http.calls[0].body
    for secret in (first, second):
        assert verify_signature(body, header, [secret], now=now)
    rig.clock.advance(timedelta(hours=2))  # the previous secret expired: the new one alone
    rig.publish(event(merchant, "pay-rot", 2))
    assert rig.poll() == 1
    header = rig.http.calls[1].headers[SIGNATURE_HEADER]
    assert header.count("v1=") == 1
    now = rig.clock.now().timestamp()
    assert verify_signature(rig.http.calls[1].body, header, [second], now=now)
    with pytest.raises(SignatureVerificationError):
        verify_signature(rig.http.calls[1].body, header, [first], now=now)


def test_the_history_keeps_the_last_ten_attempts(settings: Settings, endpoints: WebhookEndpoints,
                                                 fixed: FixedClock, wh_models: BoundModels,
                                                 sqs: Any, merchant: str) -> None:  # fmt: skip
    settings = replace(settings, webhook_max_attempts=20)
    errors = iter(f"boom {n}" for n in range(1, 100))
    rig = make_rig(settings, endpoints, fixed, wh_models, sqs, FakeHttp(lambda call: (None, next(errors))))
    endpoint, _ = endpoints.add(merchant, "https://example.com/hooks")
    evt = event(merchant, "pay-hist")
    rig.publish(evt)
    for _ in range(12):
        assert rig.poll() == 1
        rig.in_flight_visible()
    item = rig.log(evt, endpoint.endpoint_id)
    history = DeliveryView.of(item).history
    assert item.attempts == 12 and len(history) == HISTORY_LIMIT
    assert [e["error"] for e in history] == [f"boom {n}" for n in range(3, 13)]  # oldest first
    assert item.last_error == "boom 12"


def test_errors_are_truncated_and_never_hold_a_secret_or_the_signature(
    rig: Rig, merchant: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    endpoint, secret = rig.endpoints.add(merchant, "https://example.com/hooks")
    rig.http.answer = lambda call: (None, f"echo {call.headers[SIGNATURE_HEADER]} {secret} " + "x" * 500)
    evt = event(merchant, "pay-secret")
    rig.publish(evt)
    assert rig.poll() == 1
    signature = rig.http.calls[0].headers[SIGNATURE_HEADER]
    item = rig.log(evt, endpoint.endpoint_id)
    assert len(item.last_error) == MAX_ERROR_LENGTH and item.last_error.startswith("echo [redacted] [redacted] xx")
    stored = json.dumps(item.attribute_values, default=str)
    logged = json.dumps([r.__dict__ for r in caplog.records], default=str)
    assert "webhook attempt" in logged
    for text in (stored, logged):
        assert secret not in text and signature not in text
        assert signature.split("v1=")[1] not in text  # not even the MAC alone
    assert scrub(None, [secret]) is None and scrub("short", []) == "short"


# -- endpoints that are gone, bad messages -----------------------------------------------------------------------------


def test_a_disabled_or_deleted_endpoint_is_logged_failed_without_a_request(rig: Rig, merchant: str) -> None:
    endpoint, _ = rig.endpoints.add(merchant, "https://example.com/hooks")
    evt = event(merchant, "pay-off")
    rig.publish(evt)
    rig.endpoints.disable(merchant, endpoint.endpoint_id)
    gone = event(merchant, "pay-gone")
    message = queue_message(
        event_id=gone.event_id,
        endpoint_id="we_deleted",
        merchant_id=merchant,
        payment_id=gone.payment_id,
        payment_version=1,
        event_type=gone.type,
        body=gone.body,
    )
    rig.sqs._client.send_message(QueueUrl=rig.settings.webhook_queue_url, **message)
    assert rig.poll() == 2
    assert rig.http.calls == []
    for e, endpoint_id in ((evt, endpoint.endpoint_id), (gone, "we_deleted")):
        item = rig.log(e, endpoint_id)
        assert (item.state, item.last_error, item.attempts, item.failed_partition) == (
            "failed", DISABLED_ERROR, 0, "failed")  # fmt: skip
    assert rig.poll() == 0 and rig.deliverer.counters.failed == 2


def test_a_malformed_message_goes_to_the_dead_letters(rig: Rig, merchant: str) -> None:
    client = rig.sqs._client
    client.send_message(QueueUrl=rig.settings.webhook_queue_url, MessageBody='{"event_id": 3}',
                        MessageGroupId="g", MessageDeduplicationId="bad-1")  # fmt: skip
    client.send_message(QueueUrl=rig.settings.webhook_queue_url, MessageBody="not json",
                        MessageGroupId="g2", MessageDeduplicationId="bad-2")  # fmt: skip
    assert rig.poll() == 2
    assert rig.http.calls == [] and rig.poll() == 0
    dead = rig.queue_messages(rig.settings.webhook_dead_letter_queue_url)
    assert sorted(m["Body"] for m in dead) == sorted(['{"event_id": 3}', "not json"])


def test_a_function_error_leaves_the_whole_batch_in_the_queue(rig: Rig, merchant: str) -> None:
    rig.endpoints.add(merchant, "https://example.com/hooks")
    rig.publish(event(merchant, "pay-err"))

    def broken(event: dict, context: Any) -> dict:
        raise RuntimeError("boom")

    worker = QueueWorker(rig.settings.webhook_queue_url, broken, settings=rig.settings)
    assert worker.poll() == 1 and worker.stats.errors == 1 and worker.stats.deleted == 0
    rig.in_flight_visible()
    assert rig.poll() == 1 and rig.deliverer.counters.delivered == 1


# -- replay ------------------------------------------------------------------------------------------------------------


def test_replay_picks_exactly_the_failed_ones_and_sends_each_once(settings: Settings, endpoints: WebhookEndpoints,
                                                                  fixed: FixedClock, wh_models: BoundModels,
                                                                  sqs: Any, merchant: str) -> None:  # fmt: skip
    settings = replace(settings, webhook_max_attempts=1)
    failing: set[str] = set()
    rig = make_rig(settings, endpoints, fixed, wh_models, sqs,
                   FakeHttp(lambda call: (500, None) if call.event_id in failing else OK))  # fmt: skip
    other = merchant + "-other"
    endpoint, _ = endpoints.add(merchant, "https://example.com/hooks")
    other_endpoint, _ = endpoints.add(other, "https://example.com/other")
    t0 = START + timedelta(days=30)  # after every other test's failures (the module's tables are shared)
    fixed.set(t0)
    # failed at t0, t0+1m, t0+2m (ours), t0+1m (another merchant's); one delivered
    ours = [event(merchant, f"pay-r{n}") for n in range(3)]
    theirs = event(other, "pay-r-other")
    delivered = event(merchant, "pay-r-ok")
    failing.update(e.event_id for e in (*ours, theirs))
    for n, batch in enumerate([(ours[0],), (ours[1], theirs, delivered), (ours[2],)]):
        fixed.set(t0 + timedelta(minutes=n))
        rig.publish(*batch)
        while rig.poll():
            pass
    assert rig.deliverer.counters.failed == 4 and rig.deliverer.counters.delivered == 1
    fixed.set(t0 + timedelta(minutes=10))

    with pytest.raises(ValidationError):
        rig.deliverer.replay(since=t0.replace(tzinfo=None))
    with pytest.raises(ValidationError):
        rig.deliverer.replay(since=t0, until=t0)
    with pytest.raises(ValidationError):
        rig.deliverer.replay(since=t0, merchant_id="")

    # [t0+1m, t0+2m) of our merchant: ours[1] only (not theirs, not ours[2] failed at until, not the delivered)
    result = rig.deliverer.replay(since=t0 + timedelta(minutes=1), until=t0 + timedelta(minutes=2),
                                  merchant_id=merchant)  # fmt: skip
    assert (result.found, result.replayed, result.skipped, result.event_ids) == (1, 1, 0, (ours[1].event_id,))
    item = rig.log(ours[1], endpoint.endpoint_id)
    assert (item.state, item.replays, item.failed_partition, item.failed_key) == ("pending", 1, None, None)
    assert item.enqueued_at == fixed.now()
    # everything since t0: the other three
    result = rig.deliverer.replay(since=t0)
    assert set(result.event_ids) == {ours[0].event_id, ours[2].event_id, theirs.event_id}
    assert result.event_ids[0] == ours[0].event_id  # in the order they failed
    again = rig.deliverer.replay(since=t0)  # a second run finds nothing failed: sends nothing
    assert (again.found, again.replayed) == (0, 0)

    messages = rig.queue_messages()
    assert len(messages) == 4  # each once
    assert {m["Attributes"]["MessageDeduplicationId"].rsplit(":", 1)[1] for m in messages} == {"r1"}
    failing.clear()
    while rig.poll():
        pass
    assert {rig.log(e, endpoint.endpoint_id).state for e in ours} == {"delivered"}
    assert rig.log(theirs, other_endpoint.endpoint_id).state == "delivered"
    assert sorted(c.event_id for c in rig.http.calls[5:]) == sorted(e.event_id for e in (*ours, theirs))


def test_a_replay_that_lost_the_race_sends_nothing(settings: Settings, endpoints: WebhookEndpoints,
                                                   fixed: FixedClock, wh_models: BoundModels,
                                                   sqs: Any, merchant: str) -> None:  # fmt: skip
    settings = replace(settings, webhook_max_attempts=1)
    rig = make_rig(settings, endpoints, fixed, wh_models, sqs, FakeHttp(lambda call: (500, None)))
    endpoints.add(merchant, "https://example.com/hooks")
    since = START + timedelta(days=60)  # after every other test's failures (the module's tables are shared)
    fixed.set(since)
    rig.publish(event(merchant, "pay-race"))
    assert rig.poll() == 1
    Model = wh_models.webhook_delivery
    [stale] = list(Model.failed_by_time.query("failed", Model.failed_key >= sortable_time(since)))
    assert rig.deliverer.replay(since=since).replayed == 1
    assert rig.deliverer._replay_one(stale) is False  # the other replay read the same item before: it loses
    assert len(rig.queue_messages()) == 1


def test_deliveries_and_their_view(rig: Rig, merchant: str) -> None:
    endpoint, _ = rig.endpoints.add(merchant, "https://example.com/a")
    second, _ = rig.endpoints.add(merchant, "https://example.com/b")
    evt = event(merchant, "pay-view")
    rig.http.answer = lambda call: (500, None) if call.url.endswith("/b") else OK
    rig.publish(evt)
    assert rig.poll() == 2
    found = {item.endpoint_id: DeliveryView.of(item) for item in rig.deliverer.deliveries(evt.event_id)}
    assert {v.state for v in found.values()} == {"delivered", "pending"}
    shown = found[second.endpoint_id].as_dict()
    assert shown["last_status"] == 500 and "body" not in shown
    json.dumps(shown)  # printable as it is
    assert rig.deliverer.deliveries("evt_none") == []
    with pytest.raises(ValidationError):
        rig.deliverer.deliveries("")


# -- the default poster (urllib3), over real sockets -------------------------------------------------------------------


class _Answers(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"x" * (1_000_000 if self.path == "/big" else 2)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client stopped reading
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def answers() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_the_default_poster_follows_no_redirect_and_reads_little(answers: str) -> None:
    poster = UrllibPoster()
    headers = {"Content-Type": "application/json"}
    assert poster(f"{answers}/ok", b"{}", headers, 2.0) == (200, None)
    assert poster(f"{answers}/redirect", b"{}", headers, 2.0) == (302, None)
    assert poster(f"{answers}/big", b"{}", headers, 2.0) == (200, None)
    assert poster(f"{answers}/ok", b"{}", headers, 2.0) == (200, None)  # the pool still works


def test_the_default_poster_reports_refused_connections_and_timeouts() -> None:
    poster = UrllibPoster()
    status, error = poster(Receiver.down(), b"{}", {}, 1.0)
    assert status is None and error.startswith("connection failed:") and "refused" in error.lower()
    with Receiver(behaviour="timeout", delay=2.0) as receiver:
        assert poster(receiver.url, b"{}", {}, 0.2) == (None, "timeout after 0.2s")
