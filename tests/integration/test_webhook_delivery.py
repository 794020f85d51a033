"""The whole webhook pipeline on the local moto server, the flow engine: real payments (PaymentService create,
authorize, capture, refund), the producer over the payments table's stream, the SQS FIFO queue, the local worker
(harness/webhooks.py, Lambda's SQS event source) with the default urllib3 poster, and local ``Receiver``s that verify
every signature.

One module-scoped setup runs the main flow (two endpoints of one merchant: one that answers, one that fails its
first requests); the other tests add their own merchant, endpoint and payment to the same tables and pipeline. The
settings make retries immediate (``webhook_backoff_base_s=0``: a failed message's visibility is 0) and timeouts
short (``webhook_timeout_s=0.2``), so nothing here waits for a backoff.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import count
from urllib.parse import urlsplit

import pytest

from payment_examples.core.config import Settings, use_settings
from payment_examples.engine.local import create_kms_key
from payment_examples.harness.receiver import Receiver
from payment_examples.harness.webhooks import WebhookPipeline
from payment_examples.payments.service import PaymentService
from payment_examples.tables.models import create_tables
from payment_examples.webhooks.delivery import Deliverer
from payment_examples.webhooks.endpoints import WebhookEndpoints
from payment_examples.webhooks.events import event_id_for
from tests.conftest import V1

pytestmark = [pytest.mark.flow, pytest.mark.slow]

MAX_ATTEMPTS = 3
PAYMENTS = 3  # per merchant of the main flow: 4 events each (created, authorized, captured, refunded)
_prefixes = count()


@dataclass
class World:
    settings: Settings
    service: PaymentService
    endpoints: WebhookEndpoints
    pipeline: WebhookPipeline
    started: datetime
    ok: Receiver
    flaky: Receiver
    ok_endpoint: str
    flaky_endpoint: str
    payments: list[str]
    stack: contextlib.ExitStack


def lifecycle(service: PaymentService, merchant: str, key: str) -> str:
    """A payment through create, authorize, capture and a partial refund: versions 1-4."""
    payment = service.create_payment(merchant, key, 5_000, "EUR").payment
    service.authorize(merchant, payment.id, actor=merchant)
    service.capture(merchant, payment.id, actor=merchant)
    service.refund(merchant, payment.id, actor=merchant, amount=1_000)
    return payment.id


def receiver_at(url: str, secrets: list[str]) -> Receiver:
    """A ``Receiver`` on the port of ``url`` (an endpoint that was down comes up where it was registered)."""
    return Receiver(secrets, port=urlsplit(url).port)


@pytest.fixture(scope="module")
def world(engine_session: Settings) -> Iterator[World]:
    base = replace(
        engine_session, table_prefix=f"wh{next(_prefixes)}-", field_keys=V1, webhook_backoff_base_s=0.0,
        webhook_max_attempts=MAX_ATTEMPTS, webhook_timeout_s=0.2,
    )  # fmt: skip
    settings = replace(base, kms_key_id=create_kms_key(base))
    with use_settings(settings), contextlib.ExitStack() as stack:
        create_tables(settings)
        started = datetime.now(UTC)
        endpoints = WebhookEndpoints(settings=settings)
        deliverer = Deliverer(endpoints=endpoints, settings=settings, rng=random.Random(23))
        pipeline = WebhookPipeline(settings, endpoints=endpoints, deliverer=deliverer)
        ok = stack.enter_context(Receiver())
        flaky = stack.enter_context(Receiver(behaviour="flaky", fail_first=2))
        ok_endpoint, ok_secret = endpoints.add("m-main", ok.url)
        flaky_endpoint, flaky_secret = endpoints.add("m-main", flaky.url)
        ok.secrets.append(ok_secret)
        flaky.secrets.append(flaky_secret)
        service = PaymentService(settings=settings)
        payments = [lifecycle(service, "m-main", f"order-{n}") for n in range(PAYMENTS)]
        pipeline.drain()
        yield World(settings, service, endpoints, pipeline, started, ok, flaky, ok_endpoint.endpoint_id,
                    flaky_endpoint.endpoint_id, payments, stack)  # fmt: skip
        pipeline.stop()


def expected_ids(payments: list[str], versions: range = range(1, 5)) -> set[str]:
    return {event_id_for(payment, version) for payment in payments for version in versions}


def arrival_versions(receiver: Receiver) -> dict[str, list[int]]:
    """Per payment, the versions of every request in arrival order (failed ones too)."""
    seen: dict[str, list[int]] = defaultdict(list)
    for request in receiver.received:
        event = json.loads(request.body)
        seen[event["data"]["object"]["id"]].append(event["payment_version"])
    return seen


def test_every_event_is_delivered_once_in_order_and_signed(world: World) -> None:
    wanted = expected_ids(world.payments)
    ids = world.ok.ids()
    assert len(ids) == len(wanted) and set(ids) == wanted  # once each
    assert all(r.status == 200 for r in world.ok.received)  # every signature verified (a bad one is 400)
    for payment, versions in arrival_versions(world.ok).items():
        assert versions == [1, 2, 3, 4], payment
    types = [e["type"] for e in world.ok.events() if e["data"]["object"]["id"] == world.payments[0]]
    assert types == ["payment.created", "payment.authorized", "payment.captured", "payment.refunded"]
    for event_id in wanted:
        views = {d.endpoint_id: d for d in world.pipeline.deliverer.deliveries(event_id)}
        assert views[world.ok_endpoint].state == "delivered" and views[world.ok_endpoint].attempts == 1
    latencies = world.pipeline.latencies_ms()
    assert len(latencies) >= 2 * len(wanted) and min(latencies) >= 0


def test_an_endpoint_that_fails_then_recovers_gets_every_event_in_order(world: World) -> None:
    wanted = expected_ids(world.payments)
    assert set(world.flaky.ids()) == wanted and len(world.flaky.ids()) == len(wanted)
    statuses = [r.status for r in world.flaky.received]
    assert statuses[:2] == [500, 500] and set(statuses[2:]) == {200}
    for payment, versions in arrival_versions(world.flaky).items():
        assert versions == sorted(versions), payment  # a retry repeats its version; a later one never overtakes
    by_event: dict[str, list[int | None]] = defaultdict(list)
    for request in world.flaky.received:
        by_event[json.loads(request.body)["id"]].append(request.status)
    retried = {event_id for event_id, got in by_event.items() if got != [200]}
    assert 1 <= len(retried) <= 2  # the two failures: one event twice, or two payments' first events once each
    for event_id in wanted:
        [log] = [d for d in world.pipeline.deliverer.deliveries(event_id) if d.endpoint_id == world.flaky_endpoint]
        assert log.state == "delivered" and log.attempts == len(by_event[event_id])
        assert [h["status"] for h in log.history] == by_event[event_id]  # the log saw what the receiver saw
    assert world.pipeline.stats.retried >= 2


def test_an_endpoint_that_is_down_is_dead_lettered_then_replayed(world: World) -> None:
    url = Receiver.down()
    endpoint, secret = world.endpoints.add("m-down", url)
    since = datetime.now(UTC)
    payment = world.service.create_payment("m-down", "order-down", 900, "EUR").payment
    world.service.authorize("m-down", payment.id, actor="m-down")
    before = world.pipeline.stats
    world.pipeline.drain()
    ids = [event_id_for(payment.id, v) for v in (1, 2)]
    for event_id in ids:
        [log] = world.pipeline.deliverer.deliveries(event_id)
        assert (log.state, log.attempts, log.last_status) == ("failed", MAX_ATTEMPTS, None)
        assert log.last_error.startswith("connection failed") and log.failed_partition == "failed"
    assert world.pipeline.stats.failed - before.failed == 2
    sqs = world.pipeline.worker.sqs
    dead = sqs.receive_message(QueueUrl=world.pipeline.queues.dead_letter, MaxNumberOfMessages=10,
                               WaitTimeSeconds=0).get("Messages") or []  # fmt: skip
    assert {json.loads(m["Body"])["event_id"] for m in dead} == set(ids)
    with receiver_at(url, [secret]) as receiver:
        result = world.pipeline.deliverer.replay(since=since, merchant_id="m-down")
        assert (result.found, result.replayed) == (2, 2) and list(result.event_ids) == ids
        again = world.pipeline.deliverer.replay(since=since, merchant_id="m-down")
        assert again.found == 0
        world.pipeline.drain()
        assert receiver.ids() == ids  # once each, in the order they failed (the payment's order)
    for event_id in ids:
        [log] = world.pipeline.deliverer.deliveries(event_id)
        assert (log.state, log.replays, log.failed_key) == ("delivered", 1, None)


def test_an_endpoint_that_times_out_is_given_up_on(world: World) -> None:
    with Receiver(behaviour="timeout", delay=1.0) as slow:
        endpoint, secret = world.endpoints.add("m-slow", slow.url, events=["payment.captured"])
        slow.secrets.append(secret)
        since = datetime.now(UTC)
        payment = world.service.create_payment("m-slow", "order-slow", 700, "EUR").payment
        world.service.authorize("m-slow", payment.id, actor="m-slow")
        world.service.capture("m-slow", payment.id, actor="m-slow")
        world.pipeline.drain()
        captured = event_id_for(payment.id, 3)
        [log] = world.pipeline.deliverer.deliveries(captured)
        assert (log.state, log.attempts, log.last_error) == ("failed", MAX_ATTEMPTS, "timeout after 0.2s")
        assert [h["error"] for h in log.history] == ["timeout after 0.2s"] * MAX_ATTEMPTS
        assert len(slow.received) == MAX_ATTEMPTS and {r.status for r in slow.received} == {None}
        assert world.pipeline.deliverer.deliveries(event_id_for(payment.id, 1)) == []  # not subscribed
        slow.behaviour = "ok"
        assert world.pipeline.deliverer.replay(since=since, merchant_id="m-slow").replayed == 1
        world.pipeline.drain()
        assert slow.ids() == [captured]


def test_the_pipeline_runs_in_the_background(world: World) -> None:
    with Receiver() as receiver:
        endpoint, secret = world.endpoints.add("m-bg", receiver.url, events=["payment.created"])
        receiver.secrets.append(secret)
        world.pipeline.start(interval=0.05)
        try:
            with pytest.raises(RuntimeError):
                world.pipeline.start()
            running = {t.name for t in threading.enumerate()}
            assert {"webhook-pipeline", "webhook-pipeline-delivery"} <= running  # producer and deliverer apart
            payment = world.service.create_payment("m-bg", "order-bg", 300, "EUR").payment
            arrived = threading.Event()
            for _ in range(200):  # at most 10 s; usually a few rounds
                if receiver.ids():
                    arrived.set()
                    break
                arrived.wait(0.05)
        finally:
            world.pipeline.stop()
        assert receiver.ids() == [event_id_for(payment.id, 1)]
    assert not any(t.name.startswith("webhook-pipeline") for t in threading.enumerate())  # both threads ended
    world.pipeline.stop()  # stopping a stopped pipeline is nothing


def test_the_cli_registers_an_endpoint_shows_a_delivery_log_and_replays_what_failed(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    from payment_examples.cli import main

    url = Receiver.down()
    since = datetime.now(UTC)
    assert main(["webhooks", "add-endpoint", "--merchant", "m-cli", url, "--events", "payment.created"]) == 0
    printed = capsys.readouterr().out
    secret = printed.rsplit(": ", 1)[1].strip()
    assert secret.startswith("whsec_") and "we_" in printed
    payment = world.service.create_payment("m-cli", "order-cli", 700, "EUR").payment
    world.service.authorize("m-cli", payment.id, actor="m-cli")  # not subscribed: no delivery
    world.pipeline.drain()
    event_id = event_id_for(payment.id, 1)
    assert main(["webhooks", "deliveries", event_id]) == 0
    log = capsys.readouterr().out
    assert f"{event_id} payment.created" in log and f"failed, {MAX_ATTEMPTS} attempts" in log
    assert log.count("connection failed") == MAX_ATTEMPTS + 1 and secret not in log  # each attempt, and the last
    assert main(["webhooks", "deliveries", event_id_for(payment.id, 2)]) == 1
    with receiver_at(url, [secret]) as receiver:
        assert main(["webhooks", "replay", "--since", since.isoformat(), "--merchant", "m-cli"]) == 0
        assert f"queued again: {event_id}" in capsys.readouterr().out
        world.pipeline.drain()
        assert receiver.ids() == [event_id]
    assert main(["webhooks", "replay", "--since", since.isoformat(), "--merchant", "m-cli"]) == 0
    assert "0 failed deliveries in the window" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["webhooks", "replay", "--since", "2026-12-04T09:00"])  # no offset: refused by argparse
    assert main(["webhooks", "replay", "--since", "2026-12-04", "--until", "2026-12-03T23:00:00Z"]) == 2
