"""The public JSON of a payment: what the API answers and what a merchant's webhook event carries
(``data.object``): amounts as integers of minor units, times as ISO 8601 UTC with milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


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
