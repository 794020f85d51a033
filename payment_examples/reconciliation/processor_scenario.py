"""A merchant's day in a processor's own report: payments created through the service, the rows Stripe, Adyen or
PayPal would report about them (several per payment, fees, a balance adjustment, the payout), rendered in that
processor's layout, with each row's expected outcome (notebook 03, tests).

The payments, and what their rows say (amounts in minor units of USD):

* ``order-1`` authorised 10,000: charged 10,000 (applied: captured), refunded 2,500 then 1,500 (each applied:
  the processor's refunds are one per row, so the second is judged against 2,500 already reported);
* ``order-2`` captured 5,000 through the API: charged 5,000 (matched), disputed 5,000 (applied: charged back),
  the dispute won (applied: the reversal brings it back to captured);
* ``order-3`` captured 3,000 and refunded 1,000 through the API: both rows matched;
* ``order-4`` (Stripe only: a partial capture) authorised 8,000, captured 6,000 through the API: the charge row
  carries the authorised 8,000 (amount_mismatch: the file says more than was captured), then its
  ``partial_capture_reversal`` of 2,000 (matched: the processor keeps 6,000, as captured);
* a charge of another integration, without our payment id (unknown_payment);
* a processor fee and an adjustment on the balance (fee, adjustment), and the payout of the day's net
  (payout): ``payout_error`` makes the payout row differ from its rows' sum by that much, a payout discrepancy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from payment_examples.payments.service import PaymentService
from payment_examples.reconciliation.rows import BalanceKind, BalanceRow, SettlementRow, SettlementStatus

PROCESSORS = ("stripe", "adyen", "paypal")
S, K = SettlementStatus, BalanceKind
# How each processor names the balance rows (what its layout reads back as their description).
DESCRIPTIONS = {
    "stripe": {K.FEE: "monthly fee", K.ADJUSTMENT: "other_adjustment", K.PAYOUT: "payout"},
    "adyen": {K.FEE: "Fee", K.ADJUSTMENT: "MiscCosts", K.PAYOUT: "MerchantPayout"},
    "paypal": {K.FEE: "T0100", K.ADJUSTMENT: "T1200", K.PAYOUT: "T0400"},
}
CURRENCY = "USD"
ACTOR = "processor-scenario"


@dataclass(frozen=True)
class ProcessorDay:
    processor: str
    merchant_id: str
    rows: list[SettlementRow | BalanceRow]
    expected: list[str]  # the outcome of each row, in file order
    payments: dict[str, str]  # order name -> payment id
    payout_id: str

    def render(self) -> bytes:
        """The rows in the processor's own layout."""
        return render(self.processor, self.rows, self.merchant_id)


def render(processor: str, rows: list[SettlementRow | BalanceRow], merchant_id: str) -> bytes:
    if processor == "stripe":
        from payment_examples.reconciliation.stripe_report import COLUMNS, write_stripe_report

        return write_stripe_report(rows, columns=[c for c in COLUMNS if c != "connected_account_id"])
    if processor == "adyen":
        from payment_examples.reconciliation.adyen_report import write_adyen_report

        return write_adyen_report(rows, time_zone="UTC")
    if processor == "paypal":
        from payment_examples.reconciliation.paypal_report import write_paypal_report

        return write_paypal_report(rows, account_id=merchant_id)
    raise ValueError(f"unknown processor {processor!r}: expected one of {', '.join(PROCESSORS)}")


def processor_day(
    service: PaymentService, processor: str, merchant_id: str, *, day: datetime, payout_error: int = 0
) -> ProcessorDay:
    """Create the payments (through ``service``) and build the processor's rows about them (see the module)."""
    if processor not in PROCESSORS:
        raise ValueError(f"unknown processor {processor!r}: expected one of {', '.join(PROCESSORS)}")
    day = day.astimezone(UTC).replace(hour=6, minute=0, second=0, microsecond=0)
    payout_id = {"stripe": f"po_{day:%Y%m%d}", "adyen": f"{merchant_id}:{day:%j}",
                 "paypal": f"{merchant_id}:{day:%Y-%m-%d}"}[processor]  # fmt: skip
    ids: dict[str, str] = {}

    def payment(name: str, amount: int, *steps: tuple[str, int | None]) -> str:
        created = service.create_payment(merchant_id, f"{processor}-{name}-{day:%Y%m%d}", amount, CURRENCY).payment
        service.authorize(merchant_id, created.id, actor=ACTOR)
        for step, value in steps:
            getattr(service, step)(merchant_id, created.id, actor=ACTOR, amount=value)
        ids[name] = created.id
        return created.id

    rows: list[SettlementRow | BalanceRow] = []
    expected: list[str] = []
    clock = iter(range(1, 1000))

    def event(pid: str, status: SettlementStatus, gross: int, outcome: str, fee: int = 0) -> None:
        line = len(rows) + 2
        sign = -1 if status in (S.REFUND, S.CHARGEBACK, S.CAPTURE_REVERSAL) else 1
        rows.append(SettlementRow(line, pid, merchant_id, gross, CURRENCY, status, day + timedelta(minutes=next(clock)),
                                  f"{processor[:2]}-{len(rows) + 1:04d}", fee=fee, net=sign * gross - fee,
                                  net_currency=CURRENCY, payout_id=payout_id))  # fmt: skip
        expected.append(outcome)

    def balance(kind: BalanceKind, amount: int) -> None:
        at, reference = day + timedelta(minutes=next(clock)), f"{processor[:2]}-{len(rows) + 1:04d}"
        rows.append(BalanceRow(len(rows) + 2, kind, merchant_id, amount, CURRENCY, at, reference, payout_id,
                               DESCRIPTIONS[processor][kind]))  # fmt: skip
        expected.append(kind.value)

    one = payment("order-1", 10_000)
    two = payment("order-2", 5_000, ("capture", None))
    three = payment("order-3", 3_000, ("capture", None), ("refund", 1_000))
    event(one, S.SETTLED, 10_000, "applied", fee=320)
    event(two, S.SETTLED, 5_000, "matched", fee=175)
    event(three, S.SETTLED, 3_000, "matched", fee=117)
    event(one, S.REFUND, 2_500, "applied")
    event(three, S.REFUND, 1_000, "matched")
    event(two, S.CHARGEBACK, 5_000, "applied", fee=1_500)
    event(one, S.REFUND, 1_500, "applied")
    event(two, S.CHARGEBACK_REVERSAL, 5_000, "applied", fee=-1_500)
    if processor == "stripe":
        four = payment("order-4", 8_000, ("capture", 6_000))
        event(four, S.SETTLED, 8_000, "amount_mismatch", fee=262)
        event(four, S.CAPTURE_REVERSAL, 2_000, "matched")
    event("", S.SETTLED, 4_200, "unknown_payment", fee=152)
    balance(K.FEE, -1_000)
    balance(K.ADJUSTMENT, 250)
    total = sum((r.net or 0) if isinstance(r, SettlementRow) else r.amount for r in rows)
    balance(K.PAYOUT, total + payout_error)
    return ProcessorDay(processor, merchant_id, rows, expected, ids, payout_id)
