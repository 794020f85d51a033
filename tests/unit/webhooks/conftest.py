"""Webhook fixtures. One moto in-process environment per module (every table, a KMS key, field keys): creating
them per test would cost more than the tests. Tests keep apart by their own merchant (``merchant``), payments
(their own idempotency keys) and delivery queues (``settings``: a fresh pair per test); the module's tables only
ever gain items. Endpoints get seeded ids and secrets on a fixed clock; records are built from item images as the
stream carries them, or read from moto's own stream."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from moto import mock_aws

from payment_examples.core import aws
from payment_examples.core.clock import FixedClock, SeededIds, SteppingClock
from payment_examples.core.config import Settings, use_settings
from payment_examples.encryption.fields import FieldEncryptor, encryptor_for
from payment_examples.engine.local import create_kms_key
from payment_examples.payments.service import PaymentService
from payment_examples.tables.models import BoundModels, bind_models, create_tables
from payment_examples.webhooks.endpoints import WebhookEndpoints
from tests.conftest import START, V1, stream_records

PREFIX = "wh-"
PAYMENTS_TABLE = f"{PREFIX}payments"
_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def environment() -> Iterator[Settings]:
    with mock_aws():
        base = Settings(table_prefix=PREFIX, field_keys=V1)
        settings = replace(base, kms_key_id=create_kms_key(base))
        with use_settings(settings):
            create_tables(settings)
            yield settings


@pytest.fixture
def settings(environment: Settings) -> Settings:
    """The module's settings with a delivery queue and dead-letter queue of the test's own (configured URLs). Only
    for what reads the queue URLs: clients and models are cached per settings, so everything else takes
    ``environment``'s (a new client per test would cost more than the test)."""
    sqs = aws.client("sqs", environment)
    n = next(_numbers)
    fifo = {"FifoQueue": "true", "ContentBasedDeduplication": "false"}
    queue = sqs.create_queue(QueueName=f"wh-test-{n}.fifo", Attributes=fifo)["QueueUrl"]
    dead = sqs.create_queue(QueueName=f"wh-test-{n}-dl.fifo", Attributes=fifo)["QueueUrl"]
    return replace(environment, webhook_queue_url=queue, webhook_dead_letter_queue_url=dead)


@pytest.fixture
def merchant() -> str:
    return f"m-{next(_numbers)}"


@pytest.fixture
def wh_models(environment: Settings) -> BoundModels:
    return bind_models(environment)


@pytest.fixture
def fixed() -> FixedClock:
    return FixedClock(START)


def seeded_secrets() -> Any:
    counter = itertools.count(1)
    return lambda: f"seeded-test-secret-{next(counter):020d}"


@pytest.fixture(scope="module")
def encryptor(environment: Settings) -> FieldEncryptor:
    """One for the module: building one (its KMS client) costs more than a test."""
    return encryptor_for(environment)


@pytest.fixture
def endpoints(environment: Settings, encryptor: FieldEncryptor, fixed: FixedClock) -> WebhookEndpoints:
    return WebhookEndpoints(settings=environment, encryptor=encryptor, clock=fixed, ids=SeededIds(next(_numbers)),
                            secret_factory=seeded_secrets())  # fmt: skip


@pytest.fixture
def payments(wh_models: BoundModels, clock: SteppingClock) -> PaymentService:
    return PaymentService(models=wh_models, clock=clock)


def payment_records(settings: Settings, *payment_ids: str) -> list[dict]:
    """The module's payments-stream records of these payments, in stream order."""
    wanted = set(payment_ids)
    return [r for r in stream_records(settings, PAYMENTS_TABLE) if r["dynamodb"]["Keys"]["id"]["S"] in wanted]


def arn(table: str) -> str:
    return f"arn:aws:dynamodb:us-east-1:123456789012:table/{table}/stream/2026-01-01T00:00:00.000"


def record(new: Any, old: Any = None, *, event: str | None = None, seq: int = 1, table: str = PAYMENTS_TABLE) -> dict:
    """A stream record (NEW_AND_OLD_IMAGES) from items or raw images, as Lambda delivers it."""
    new_image = new.serialize() if hasattr(new, "serialize") else new
    old_image = old.serialize() if hasattr(old, "serialize") else old
    image = new_image or old_image
    data: dict[str, Any] = {"Keys": {"id": image["id"]}, "SequenceNumber": str(seq),
                            "StreamViewType": "NEW_AND_OLD_IMAGES"}  # fmt: skip
    if new_image is not None:
        data["NewImage"] = new_image
    if old_image is not None:
        data["OldImage"] = old_image
    name = event or ("INSERT" if old_image is None else "REMOVE" if new_image is None else "MODIFY")
    return {"eventID": str(seq), "eventName": name, "eventSource": "aws:dynamodb", "eventSourceARN": arn(table),
            "dynamodb": data}  # fmt: skip
