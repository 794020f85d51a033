"""Bulk-write deterministic payments for demos, tests and benchmarks (``seed_payments``).

The items are exactly what ``PaymentService.create_payment`` followed by the state machine would have stored, as
far as the queries can tell: the id is derived from (merchant, idempotency key), ``created_key`` and
``merchant_status`` are the same derived keys, amounts are integers of minor units and the balances agree with
the status. They are written with ``BatchWriteItem`` (25 puts a request, unprocessed items retried by PynamoDB),
not one conditional put per payment, so 10,000 payments take seconds. Consequently: there is no idempotency
check (seeding the same ids again overwrites them with the same content) and no Transaction trail is written.
Use ``PaymentService`` for anything that is not a fixture.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from payment_examples.core import (
    Clock,
    IdFactory,
    SeededIds,
    Settings,
    SteppingClock,
    currency_exponent,
    identifier,
    validate_amount,
)
from payment_examples.payments.state_machine import PaymentStatus
from payment_examples.tables import Payment, created_key, get_models, merchant_status_key, payment_id_for

S = PaymentStatus
# Roughly what a live merchant looks like: mostly captured, a tail of everything else (11 entries, cycled).
DEFAULT_STATUS_MIX: tuple[PaymentStatus, ...] = (
    S.CAPTURED, S.CAPTURED, S.CAPTURED, S.CAPTURED, S.AUTHORIZED, S.PENDING,
    S.REFUNDED, S.PARTIALLY_REFUNDED, S.CAPTURED, S.VOIDED, S.FAILED,
)  # fmt: skip
DEFAULT_CURRENCIES: tuple[str, ...] = ("USD", "USD", "EUR", "GBP", "JPY")
DEFAULT_AMOUNT_RANGE = (1_00, 2_000_00)  # minor units, inclusive


def _balances(status: PaymentStatus, amount: int) -> tuple[int, int]:
    """(captured, refunded) consistent with ``status`` (a partial refund refunds half the amount)."""
    if status is S.CAPTURED:
        return amount, 0
    if status is S.PARTIALLY_REFUNDED:
        return amount, amount // 2
    if status is S.REFUNDED:
        return amount, amount
    return 0, 0


def seed_payments(
    merchant_id: str,
    n: int,
    *,
    clock: Clock | None = None,
    ids: IdFactory | None = None,
    statuses: Sequence[PaymentStatus | str] = DEFAULT_STATUS_MIX,
    currencies: Sequence[str] = DEFAULT_CURRENCIES,
    amount_range: tuple[int, int] = DEFAULT_AMOUNT_RANGE,
    settings: Settings | None = None,
) -> list[Payment]:
    """Write ``n`` payments of ``merchant_id`` in batches and return them in creation order.

    Payment ``i`` gets ``clock.now()`` as its creation time, ``ids.new_id()`` as its idempotency key,
    ``statuses[i % len(statuses)]``, ``currencies[i % len(currencies)]`` and an amount within ``amount_range``
    derived from its id. Defaults: a clock stepping 1 ms from 2026-01-01T00:00Z and ``SeededIds(0)``, so the same
    call always writes the same payments.
    """
    identifier("merchant_id", merchant_id)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if not statuses:
        raise ValueError("statuses must not be empty")
    if not currencies:
        raise ValueError("currencies must not be empty")
    status_cycle = [PaymentStatus(s) for s in statuses]
    for currency in currencies:
        currency_exponent(currency)
    low, high = (validate_amount(a, "amount_range") for a in amount_range)
    if low > high:
        raise ValueError(f"amount_range {amount_range!r} is empty")
    if S.PARTIALLY_REFUNDED in status_cycle and low < 2:
        raise ValueError("a partially refunded payment needs an amount of at least 2 minor units")
    clock = clock or SteppingClock(datetime(2026, 1, 1, tzinfo=UTC), timedelta(milliseconds=1))
    ids = ids or SeededIds(0)

    Model = get_models(settings).payment
    written: list[Payment] = []
    with Model.batch_write() as batch:
        for i in range(n):
            key = ids.new_id()
            payment_id = payment_id_for(merchant_id, key)
            now = clock.now()
            status = status_cycle[i % len(status_cycle)]
            amount = low + int(payment_id.replace("-", "")[:12], 16) % (high - low + 1)
            captured, refunded = _balances(status, amount)
            payment = Model(
                payment_id,
                merchant_id=merchant_id,
                idempotency_key=key,
                amount=amount,
                currency=currencies[i % len(currencies)],
                status=status.value,
                captured_amount=captured,
                refunded_amount=refunded,
                description=f"Order #{i + 1}",
                created_at=now,
                updated_at=now,
                created_key=created_key(now, payment_id),
                merchant_status=merchant_status_key(merchant_id, status),
                version=1,
            )
            batch.save(payment)
            written.append(payment)
    return written
