"""Merchant webhook events, read from the payments table's stream: pure functions, no I/O.

A payment's change is already a fact with an identity, (payment id, version), committed in ONE conditional write;
its webhook event is a projection of it, like its audit entry and its Transaction (audit/projection.py). So:

* the event id is derived from (payment id, version) (``event_id_for``): a redelivered stream record, a retried
  Lambda batch or a second consumer produces the same id, and SQS's deduplication and the delivery log's key turn
  the repeat into nothing;
* the body is derived from the record alone (the new image and the change that produced the version), serialised
  deterministically (sorted keys, no spaces), so the same change always gives the same bytes: what is signed, sent
  and kept in the delivery log for a replay.

Which records make events: a new version (the new image's version above the old image's; an INSERT is version 1)
whose change the payment keeps (``Payment.transition_at``). Bookkeeping writes (the same version: the processor
call in flight, settlement rows), deletes, payments moved to or arriving from another account (``transfer`` set
and not live) and writes made outside the package (no change record for the version) make none.

A consumer that is behind can see a record several versions above its old image (the stream coalesces nothing,
but a consumer that missed records, or a replay from the table, does): then every kept change in between becomes
an event, in version order, each built from the same new image. Documented distortion: their ``data.object`` is
the payment's latest state, not the state as of their version (``amount``, ``reason`` and the type are the
change's own).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from payment_examples.core import logger, name_based_id
from payment_examples.payments.public import payment_json
from payment_examples.tables.models import Payment, TransitionAttribute

# The payment's change type (``TransitionAttribute.type``) -> the event type merchants subscribe to.
EVENT_TYPE_FOR_CHANGE: Mapping[str, str] = MappingProxyType({
    "create": "payment.created",
    "authorize": "payment.authorized",
    "capture": "payment.captured",
    "refund": "payment.refunded",
    "void": "payment.voided",
    "fail": "payment.failed",
    "chargeback": "payment.charged_back",
    "reverse_chargeback": "payment.chargeback_reversed",
})  # fmt: skip
# Every event type, in the order of the lifecycle: what an endpoint may subscribe to.
EVENT_TYPES: tuple[str, ...] = tuple(EVENT_TYPE_FOR_CHANGE.values())

_deserialize = TypeDeserializer().deserialize


@dataclass(frozen=True)
class WebhookEvent:
    """One event, ready to send: ``body`` is the exact JSON that is signed, sent and logged."""

    event_id: str
    type: str
    merchant_id: str
    payment_id: str
    payment_version: int
    created_at: datetime  # the change's own time (its commit), not when the event was built
    body: str


def event_id_for(payment_id: str, version: int) -> str:
    """``evt_<32 hex>`` for the change that produced ``version`` of the payment: the same on every delivery."""
    return "evt_" + name_based_id("webhook-event", payment_id, str(int(version))).replace("-", "")


def event_body(event_id: str, event_type: str, payment: Any, change: TransitionAttribute) -> str:
    """The event's JSON: deterministic (sorted keys, no whitespace), so it can be rebuilt byte for byte."""
    body = {
        "id": event_id,
        "type": event_type,
        "created": int(change.at.timestamp()),
        "payment_version": int(change.version),
        "data": {
            "object": payment_json(payment),
            "amount": int(change.amount),
            "reason": change.reason,
        },
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def event_for(payment: Any, change: TransitionAttribute) -> WebhookEvent | None:
    """The event of one kept change of ``payment`` (None for a change type that has no event)."""
    event_type = EVENT_TYPE_FOR_CHANGE.get(change.type)
    if event_type is None:
        logger.warning("a payment change with no webhook event type", payment_id=payment.id, change_type=change.type)
        return None
    version = int(change.version)
    event_id = event_id_for(payment.id, version)
    return WebhookEvent(
        event_id=event_id,
        type=event_type,
        merchant_id=payment.merchant_id,
        payment_id=payment.id,
        payment_version=version,
        created_at=change.at,
        body=event_body(event_id, event_type, payment, change),
    )


def events_from_record(record: Any, *, model: type[Payment] = Payment) -> list[WebhookEvent]:
    """The events of one payments-table stream record (a Powertools ``DynamoDBRecord`` or Lambda's raw dict,
    NEW_AND_OLD_IMAGES), oldest first; empty for a record that makes none (see the module docstring)."""
    raw = record.raw_event if hasattr(record, "raw_event") else record
    if raw.get("eventName") not in ("INSERT", "MODIFY"):
        return []
    data = raw.get("dynamodb") or {}
    new_image, old_image = data.get("NewImage"), data.get("OldImage")
    if not new_image:
        return []
    try:
        payment = model.from_raw_data(dict(new_image))
        version = int(payment.version)
    except Exception:  # a write made outside the package can store anything; the audit projection reports it
        logger.warning("a payments stream record whose new image is not a payment", event_id=raw.get("eventID"))
        return []
    if not payment.live:
        return []  # moved out, or still arriving: the account it is live in sends its events
    events, missing = [], []
    for number in range(_version(old_image) + 1, version + 1):
        change = payment.transition_at(number)
        if change is None:
            missing.append(number)  # older than the kept history, or written outside the package
            continue
        event = event_for(payment, change)
        if event is not None:
            events.append(event)
    if missing:
        logger.warning("payment versions with no kept change: no webhook event", payment_id=payment.id,
                       versions=missing)  # fmt: skip
    return events


def _version(image: Mapping[str, Any] | None) -> int:
    """The image's version (0: no image, or none readable)."""
    value = _deserialize(image["version"]) if image and "version" in image else 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
