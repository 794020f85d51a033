"""The public JSON of a payment: what the API answers and what a merchant's webhook event carries
(``data.object``): amounts as integers of minor units, times as ISO 8601 UTC with milliseconds. The API adds the
payment's ``links`` (``payment_links``: what may be done with it now); webhook events do not (an event is a fact
about a version, not an offer of what to do next)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from payment_examples.payments.state_machine import Balances, allowed_actions

# Where each of the merchant API's actions is asked for (handlers/actions.py).
ACTION_PATHS = {"capture": "capture", "refund": "refunds", "void": "void"}


def iso_utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def payment_json(payment: Any) -> dict[str, Any]:
    """The public JSON of a payment: amounts as integers of minor units, times as ISO 8601 UTC."""
    return {
        "id": payment.id,
        "merchant_id": payment.merchant_id,
        "amount": int(payment.amount),
        "currency": payment.currency,
        "status": payment.status,
        "captured_amount": int(payment.captured_amount),
        "refunded_amount": int(payment.refunded_amount),
        "customer_id": payment.customer_id,
        "description": payment.description,
        "metadata": payment.metadata.as_dict() if payment.metadata is not None else {},
        "created_at": iso_utc(payment.created_at),
        "updated_at": iso_utc(payment.updated_at),
        "version": int(payment.version),
        **({"payment_method": payment.payment_method} if payment.payment_method else {}),
        **({"processor_reference": payment.processor_reference} if payment.processor_reference else {}),
    }


def payment_links(payment: Any) -> dict[str, dict[str, Any]]:
    """What the merchant may do with the payment now, as links: ``self`` (GET) and each action its status and
    balances allow (``allowed_actions``: capture and refund with their ``max_amount``), so a client never has to
    reimplement the state machine to know which button to show."""
    base = f"/payments/{quote(payment.id, safe='')}"
    balances = Balances(int(payment.amount), int(payment.captured_amount), int(payment.refunded_amount))
    links: dict[str, dict[str, Any]] = {"self": {"href": base, "method": "GET"}}
    for action, limits in allowed_actions(payment.status, balances).items():
        links[action] = {"href": f"{base}/{ACTION_PATHS[action]}", "method": "POST", **limits}
    return links
