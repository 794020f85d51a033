"""Webhook events from the payments table's stream (webhooks/events.py): which records make events, their ids and
their bodies. Real items: payments made with PaymentService on moto in-process, records from its stream or built
from item images."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from payment_examples.payments.public import payment_json
from payment_examples.payments.service import PaymentService, update_unversioned
from payment_examples.tables.models import HISTORY_LIMIT, TransferAttribute, TransitionAttribute
from payment_examples.webhooks.events import (
    EVENT_TYPE_FOR_CHANGE,
    EVENT_TYPES,
    event_for,
    event_id_for,
    events_from_record,
)
from tests.unit.webhooks.conftest import payment_records, record


def lifecycle(payments: PaymentService, merchant: str, key: str = "k-1") -> str:
    payment = payments.create_payment(merchant, key, 1000, "USD").payment
    payments.authorize(merchant, payment.id, actor="alice")
    payments.capture(merchant, payment.id, actor="bob", amount=600)
    payments.refund(merchant, payment.id, actor="carol", amount=100)
    return payment.id


def test_each_change_in_the_stream_is_one_event_with_its_body(environment, wh_models, payments, merchant) -> None:
    payment_id = lifecycle(payments, merchant)
    delivered = payment_records(environment, payment_id)
    assert [r["eventName"] for r in delivered] == ["INSERT", "MODIFY", "MODIFY", "MODIFY"]
    per_record = [events_from_record(r) for r in delivered]
    assert [len(events) for events in per_record] == [1, 1, 1, 1]
    events = [events[0] for events in per_record]
    assert [e.type for e in events] == ["payment.created", "payment.authorized", "payment.captured", "payment.refunded"]
    assert [e.payment_version for e in events] == [1, 2, 3, 4]
    assert {(e.merchant_id, e.payment_id) for e in events} == {(merchant, payment_id)}
    for event, delivered_record in zip(events, delivered, strict=True):
        stored = wh_models.payment.from_raw_data(delivered_record["dynamodb"]["NewImage"])
        change = stored.transition_at(event.payment_version)
        assert event.event_id == event_id_for(payment_id, event.payment_version)
        assert event.created_at == change.at
        body = json.loads(event.body)
        assert body == {
            "id": event.event_id,
            "type": event.type,
            "created": int(change.at.timestamp()),
            "payment_version": event.payment_version,
            "data": {"object": payment_json(stored), "amount": int(change.amount), "reason": None},
        }
        assert body["data"]["object"]["version"] == event.payment_version  # the payment as of that version
        # deterministic: sorted keys, no whitespace, the same bytes when rebuilt from the same record
        assert event.body == json.dumps(body, separators=(",", ":"), sort_keys=True)
        assert events_from_record(delivered_record) == [event]
    assert [json.loads(e.body)["data"]["amount"] for e in events] == [1000, 1000, 600, 100]
    assert json.loads(events[2].body)["data"]["object"]["captured_amount"] == 600


def test_the_reason_of_a_change_is_in_its_body(environment, wh_models, payments, merchant) -> None:
    payment = payments.create_payment(merchant, "k-void", 500, "EUR").payment
    payments.authorize(merchant, payment.id, actor="alice")
    payments.void(merchant, payment.id, actor="alice", reason="customer changed their mind")
    [event] = events_from_record(payment_records(environment, payment.id)[-1])
    assert event.type == "payment.voided"
    body = json.loads(event.body)
    assert body["data"]["reason"] == "customer changed their mind" and body["data"]["object"]["status"] == "voided"


def test_bookkeeping_without_a_new_version_makes_no_event(environment, wh_models, payments, merchant) -> None:
    payment = payments.create_payment(merchant, "k-1", 1000, "USD").payment
    Model = wh_models.payment
    update_unversioned(Model, payment.id, 1, [Model.processor_reference.set("ch_123")])
    last = payment_records(environment, payment.id)[-1]
    assert last["eventName"] == "MODIFY"
    assert last["dynamodb"]["NewImage"]["processor_reference"] == {"S": "ch_123"}
    assert events_from_record(last) == []


def test_a_delete_makes_no_event(environment, wh_models, payments, merchant) -> None:
    payment = payments.create_payment(merchant, "k-1", 1000, "USD").payment
    wh_models.payment.get(payment.id).delete()
    last = payment_records(environment, payment.id)[-1]
    assert last["eventName"] == "REMOVE"
    assert events_from_record(last) == []


@pytest.mark.parametrize("state, expected", [("moved-out", 0), ("incoming", 0), ("active", 1)])
def test_a_payment_not_live_in_this_account_makes_no_event(wh_models, payments, merchant, state, expected) -> None:
    payment = payments.create_payment(merchant, "k-1", 1000, "USD").payment
    before = wh_models.payment.get(payment.id)
    after = payments.authorize(merchant, payment.id, actor="alice")
    after.transfer = TransferAttribute(state=state, peer_account="acct-2", source_version=2,
                                       at=datetime(2026, 1, 2, tzinfo=UTC))  # fmt: skip
    assert len(events_from_record(record(after, before))) == expected


def test_a_version_jump_makes_an_event_per_change_in_order_from_the_latest_image(
    environment, wh_models, payments, merchant
) -> None:
    payment_id = lifecycle(payments, merchant)
    delivered = payment_records(environment, payment_id)
    one_by_one = [e for r in delivered for e in events_from_record(r)]
    v1, v4 = delivered[0]["dynamodb"]["NewImage"], delivered[-1]["dynamodb"]["NewImage"]
    jumped = events_from_record(record(v4, v1))
    assert [e.payment_version for e in jumped] == [2, 3, 4]
    assert [(e.event_id, e.type, e.created_at) for e in jumped] == [
        (e.event_id, e.type, e.created_at) for e in one_by_one[1:]
    ]
    latest = payment_json(wh_models.payment.from_raw_data(v4))
    bodies = [json.loads(e.body) for e in jumped]
    assert [b["data"]["object"] for b in bodies] == [latest] * 3  # the documented distortion: the latest state
    assert [(b["payment_version"], b["data"]["amount"]) for b in bodies] == [(2, 1000), (3, 600), (4, 100)]
    # an INSERT seen only at a later version (a consumer that missed it): every kept change from version 1
    assert [e.payment_version for e in events_from_record(record(v4))] == [1, 2, 3, 4]
    assert all(e.payment_id == payment_id for e in jumped)


def test_a_jump_beyond_the_kept_history_makes_events_for_the_kept_changes_only(
    environment, wh_models, payments, merchant
) -> None:
    payment = payments.create_payment(merchant, "k-1", 1000, "USD").payment
    payments.authorize(merchant, payment.id, actor="alice")
    payments.capture(merchant, payment.id, actor="bob")
    for _ in range(HISTORY_LIMIT):
        payments.refund(merchant, payment.id, actor="carol", amount=1)
    delivered = payment_records(environment, payment.id)
    latest = delivered[-1]["dynamodb"]["NewImage"]
    version = 3 + HISTORY_LIMIT
    events = events_from_record(record(latest, delivered[0]["dynamodb"]["NewImage"]))
    assert [e.payment_version for e in events] == list(range(version - HISTORY_LIMIT + 1, version + 1))
    assert {e.type for e in events} == {"payment.refunded"}


def test_an_image_that_is_not_a_payment_makes_no_event() -> None:
    garbage = {"id": {"S": "p-1"}, "version": {"S": "not a number"}}
    assert events_from_record(record(garbage)) == []
    assert events_from_record({"eventName": "MODIFY", "dynamodb": {}}) == []


def test_a_change_type_without_an_event_type_makes_none(payments, merchant) -> None:
    payment = payments.create_payment(merchant, "k-1", 1000, "USD").payment
    odd = TransitionAttribute(type="frobnicate", actor="x", at=payment.created_at, version=2, amount=0,
                              to_status="pending")  # fmt: skip
    assert event_for(payment, odd) is None
    assert event_for(payment, payment.transition_at(1)).type == "payment.created"


def test_event_ids_are_stable_and_distinct_per_payment_and_version() -> None:
    assert event_id_for("p-1", 1) == event_id_for("p-1", 1)
    ids = {event_id_for(p, v) for p in ("p-1", "p-2") for v in (1, 2, 3)}
    assert len(ids) == 6
    assert all(re.fullmatch(r"evt_[0-9a-f]{32}", i) for i in ids)


def test_event_types_cover_every_operation() -> None:
    from payment_examples.payments.state_machine import Operation

    assert set(EVENT_TYPE_FOR_CHANGE) == {"create", *(op.value for op in Operation)}
    assert len(set(EVENT_TYPES)) == len(EVENT_TYPES) == len(EVENT_TYPE_FOR_CHANGE)
