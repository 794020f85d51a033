"""Pagination on the server engines (the local moto server and dynalite): real 1 MB response limits, and read
capacity as an engine that computes it from bytes read reports it."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from payment_examples.core.aws import dynamodb
from payment_examples.core.clock import SteppingClock
from payment_examples.core.config import Settings, use_settings
from payment_examples.handlers import query
from payment_examples.payments.pagination import get_merchant_payments, iter_merchant_payments
from payment_examples.payments.seed import seed_payments
from payment_examples.tables.models import get_models
from tests.api_events import api_event

pytestmark = pytest.mark.slow  # engine processes, threads, subprocesses: make test runs it, make test-fast does not

T0 = datetime(2026, 5, 1, tzinfo=UTC)


@pytest.fixture
def settings(engine: Settings):
    configured = replace(engine, cursor_secret="integration-cursor-secret-0123456789abcdef")
    with use_settings(configured):
        yield configured


def test_pages_stay_exact_when_responses_end_at_one_megabyte(settings: Settings) -> None:
    payments = seed_payments("m-large", 90, clock=SteppingClock(T0))
    with get_models(settings).payment.batch_write() as batch:
        for payment in payments:
            payment.description = "x" * 30_000  # ~30 KB items: about 33 fit in one 1 MB response
            batch.save(payment)
    pages = list(iter_merchant_payments("m-large", limit=40, order="asc"))
    assert [len(page.items) for page in pages] == [40, 40, 10]
    assert [p.id for page in pages for p in page.items] == [p.id for p in payments]
    assert pages[0].stats.requests >= 2  # the engine ended a response early; the page was completed anyway
    assert pages[-1].next_cursor is None


def test_key_condition_reads_what_it_returns_and_a_filter_reads_everything(settings: Settings) -> None:
    seed_payments("m-capacity", 220, clock=SteppingClock(T0))  # 20 refunded (1 in 11)
    by_key = get_merchant_payments("m-capacity", limit=100, status="refunded")
    assert len(by_key.items) == 20 and by_key.stats.scanned_count == 20

    # The same 20 payments through a FilterExpression: what not to do. Every payment of the merchant is read.
    table = get_models(settings).payment.Meta.table_name
    response = dynamodb().query(
        TableName=table,
        IndexName="by-merchant-created",
        KeyConditionExpression="merchant_id = :m",
        FilterExpression="#s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":m": {"S": "m-capacity"}, ":s": {"S": "refunded"}},
        ReturnConsumedCapacity="TOTAL",
    )
    assert sorted(i["id"]["S"] for i in response["Items"]) == sorted(p.id for p in by_key.items)
    assert response["ScannedCount"] == 220
    if settings.engine == "dynalite":  # computes capacity from bytes read, like DynamoDB (moto: a flat 1.0)
        assert response["ConsumedCapacity"]["CapacityUnits"] > 5 * by_key.stats.consumed_capacity


def test_the_handler_walks_pages_on_the_server(settings: Settings) -> None:
    payments = seed_payments("m-api", 25, clock=SteppingClock(T0))
    seen, cursor = [], None
    while True:
        params = {"limit": "10", **({"cursor": cursor} if cursor else {})}
        event = api_event("2.0", "GET", "/payments", claims={"merchant_id": "m-api"}, query=params)
        response = query.handler(event, None)
        assert response["statusCode"] == 200, response
        body = json.loads(response["body"])
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [p.id for p in reversed(payments)]
