"""What one settlement row does to its payment, as a pure function (``decide``): the outcomes every row can get,
the running totals of a payment's earlier rows (``Reported``) that the processors' per-event rows are judged
against, and what the processor's notifications changed that no row has accounted for yet (``Notified``). Reads
nothing and writes nothing: ``reconciler.py`` applies the decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from payment_examples.payments import Balances, Operation, PaymentStatus
from payment_examples.reconciliation.rows import SettlementRow, SettlementStatus


class Outcome(StrEnum):
    APPLIED = "applied"
    MATCHED = "matched"
    INVALID_ROW = "invalid_row"
    DUPLICATE_ROW = "duplicate_row"
    UNKNOWN_PAYMENT = "unknown_payment"
    MERCHANT_MISMATCH = "merchant_mismatch"
    CURRENCY_MISMATCH = "currency_mismatch"
    AMOUNT_MISMATCH = "amount_mismatch"
    ILLEGAL_TRANSITION = "illegal_transition"
    FEE = "fee"  # a processor fee row (about the merchant's balance, not a payment)
    ADJUSTMENT = "adjustment"  # any other row about the balance (MiscCosts, a correction, a transfer...)
    PAYOUT = "payout"  # the payout itself (Stripe payout, Adyen MerchantPayout, a PayPal withdrawal)


RECONCILED = frozenset({Outcome.APPLIED, Outcome.MATCHED})
BALANCE = frozenset({Outcome.FEE, Outcome.ADJUSTMENT, Outcome.PAYOUT})  # rows about the balance: not exceptions
DISPUTED = frozenset(
    {Outcome.UNKNOWN_PAYMENT, Outcome.MERCHANT_MISMATCH, Outcome.CURRENCY_MISMATCH, Outcome.AMOUNT_MISMATCH,
     Outcome.ILLEGAL_TRANSITION}
)  # fmt: skip


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    detail: str = ""
    operation: Operation | None = None  # for APPLIED: the transition to run
    amount: int | None = None  # ... and its amount


@dataclass(frozen=True)
class Reported:
    """What earlier rows (of any file) reconciled for a payment, read from its marks: the per-event statuses
    (one refund, a capture reversal, a dispute reversed) are judged against these running totals."""

    settled: int = 0  # the largest settled row's gross (matched, applied, or an amount mismatch)
    refunds: int = 0  # the sum of the reconciled ``refund`` rows
    capture_reversals: int = 0  # the sum of the reconciled ``capture_reversal`` rows
    open_chargebacks: int = 0  # reconciled chargebacks minus reconciled reversals

    @classmethod
    def from_marks(cls, marks: Iterable[Any]) -> Reported:
        settled = refunds = reversals = chargebacks = 0
        counted: set[str] = set()  # an event is counted once, however many files reported it
        for mark in marks:  # sums and a maximum: the marks' order (and their files') does not matter
            if not isinstance(mark, dict):
                continue
            status = mark.get("status") or str(mark.get("event", "")).split("#", 1)[0]
            amount = int(mark.get("amount") or 0)
            if status == SettlementStatus.SETTLED and mark.get("outcome") in _CHARGED:
                settled = max(settled, amount)  # what the processor charged, even where it disagreed
            if mark.get("outcome") not in RECONCILED or mark.get("event") in counted:
                continue
            if mark.get("event"):
                counted.add(mark["event"])
            if status == SettlementStatus.REFUND:
                refunds += amount
            elif status == SettlementStatus.CAPTURE_REVERSAL:
                reversals += amount
            elif status == SettlementStatus.CHARGEBACK:
                chargebacks += 1
            elif status == SettlementStatus.CHARGEBACK_REVERSAL:
                chargebacks -= 1
        return cls(settled, refunds, reversals, chargebacks)


@dataclass(frozen=True)
class Notified:
    """The disputes the processor's notifications charged back and reversed (``Payment.processor_events``, written by
    checkout/processor_events.py: each object's ``applied`` transitions and its ``amount``) that no reconciled row
    has accounted for yet. A settlement row about the same dispute carries another reference (the balance
    transaction, not the dispute), so rows are matched to them by kind and amount: a dispute the webhook already
    charged back, or reversed, comes out ``matched``, never applied a second time."""

    chargebacks: tuple[int, ...] = ()  # the amounts charged back by notifications, not yet matched by a row
    reversals: tuple[int, ...] = ()  # the amounts reversed by notifications, not yet matched by a row

    @classmethod
    def unmatched(cls, events: Mapping[str, Any] | None, marks: Iterable[Any]) -> Notified:
        found: dict[str, list[int]] = {Operation.CHARGEBACK: [], Operation.REVERSE_CHARGEBACK: []}
        for entry in (events or {}).values():
            if isinstance(entry, Mapping):
                for operation, amounts in found.items():
                    if operation in (entry.get("applied") or ()):
                        amounts.append(int(entry.get("amount") or 0))
        rows = {SettlementStatus.CHARGEBACK: found[Operation.CHARGEBACK],
                SettlementStatus.CHARGEBACK_REVERSAL: found[Operation.REVERSE_CHARGEBACK]}  # fmt: skip
        counted: set[str] = set()
        for mark in marks:  # each reconciled row of these kinds accounts for one of them (the same amount first)
            if not isinstance(mark, dict) or mark.get("outcome") not in RECONCILED or mark.get("event") in counted:
                continue
            if mark.get("event"):
                counted.add(mark["event"])
            amounts = rows.get(mark.get("status") or str(mark.get("event", "")).split("#", 1)[0])
            if amounts:
                amount = int(mark.get("amount") or 0)
                amounts.remove(amount if amount in amounts else amounts[0])
        return cls(tuple(found[Operation.CHARGEBACK]), tuple(found[Operation.REVERSE_CHARGEBACK]))


def _notified(amount: int, amounts: tuple[int, ...], what: str) -> Decision:
    if amount in amounts:
        return Decision(Outcome.MATCHED, f"{what} by the processor's notification")
    return Decision(
        Outcome.AMOUNT_MISMATCH, f"{what} by the processor's notification for {amounts[0]}, the row {amount}"
    )


_CHARGED = frozenset({Outcome.APPLIED, Outcome.MATCHED, Outcome.AMOUNT_MISMATCH})
# The processors' statuses of one event each: judged against the payment's earlier rows, matched across files.
PER_EVENT = frozenset({SettlementStatus.REFUND, SettlementStatus.CAPTURE_REVERSAL, SettlementStatus.CHARGEBACK,
                       SettlementStatus.CHARGEBACK_REVERSAL})  # fmt: skip
_CAPTURED_ANY = frozenset({PaymentStatus.CAPTURED, PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED,
                           PaymentStatus.CHARGED_BACK})  # fmt: skip
_REFUNDABLE = frozenset({PaymentStatus.CAPTURED, PaymentStatus.PARTIALLY_REFUNDED})


def decide(
    row: SettlementRow,
    status: str,
    balances: Balances,
    reported: Reported | None = None,
    notified: Notified | None = None,
) -> Decision:
    """The outcome of a row for a payment of its merchant, in its currency, not yet reported in this file.
    ``reported`` is what the payment's earlier rows reconciled (for the per-event statuses); ``notified`` what the
    processor's notifications changed that no row has matched yet (a chargeback row or a reversal row for it is
    ``matched``)."""
    s, amount, reported, notified = PaymentStatus(status), row.amount, reported or Reported(), notified or Notified()
    if row.status is SettlementStatus.SETTLED:
        if s is PaymentStatus.AUTHORIZED:
            if amount <= balances.amount:
                return Decision(Outcome.APPLIED, f"captured {amount}", Operation.CAPTURE, amount)
            return Decision(Outcome.AMOUNT_MISMATCH, f"settled {amount} exceeds the authorised {balances.amount}")
        if s in _CAPTURED_ANY:
            if balances.captured == amount:
                return Decision(Outcome.MATCHED)
            detail = f"settled {amount}, captured {balances.captured}"
            if balances.captured < amount <= balances.amount:  # Stripe charges the authorisation, then reverses
                detail += f" (a capture_reversal of {amount - balances.captured} would reconcile it)"
            return Decision(Outcome.AMOUNT_MISMATCH, detail)
        return Decision(Outcome.ILLEGAL_TRANSITION, f"a {s} payment cannot be settled")
    if row.status is SettlementStatus.REFUNDED:  # the row's amount is the total refunded so far
        return _refunded_in_all(amount, s, balances)
    if row.status is SettlementStatus.REFUND:  # one refund: the processor's total is the earlier refunds and this
        return _refund_event(reported.refunds + amount, s, balances)
    if row.status is SettlementStatus.CAPTURE_REVERSAL:  # the charge row carried more than was captured
        if s not in _CAPTURED_ANY:
            return Decision(Outcome.ILLEGAL_TRANSITION, f"a {s} payment was never captured, so nothing to reverse")
        kept = reported.settled - reported.capture_reversals - amount
        if kept == balances.captured:
            return Decision(Outcome.MATCHED, f"the processor keeps {kept} of the charge, as captured")
        return Decision(
            Outcome.AMOUNT_MISMATCH, f"the processor keeps {kept} of the charge, captured {balances.captured}"
        )
    if row.status is SettlementStatus.CHARGEBACK:
        if s is PaymentStatus.CHARGED_BACK:
            return Decision(Outcome.MATCHED)
        if notified.chargebacks:  # charged back by the webhook (and since reversed, or the payment would be)
            return _notified(amount, notified.chargebacks, "charged back")
        if s in _REFUNDABLE:
            held = balances.captured - balances.refunded
            if amount > held:
                return Decision(Outcome.AMOUNT_MISMATCH, f"chargeback of {amount} exceeds the {held} still held")
            return Decision(Outcome.APPLIED, f"charged back {amount}", Operation.CHARGEBACK, amount)
        return Decision(Outcome.ILLEGAL_TRANSITION, f"a {s} payment cannot be charged back")
    if row.status is SettlementStatus.CHARGEBACK_REVERSAL:  # the merchant won the dispute
        if s is PaymentStatus.CHARGED_BACK:
            held = balances.captured - balances.refunded
            if amount > held:
                return Decision(Outcome.AMOUNT_MISMATCH, f"a reversal of {amount} exceeds the {held} that was held")
            return Decision(Outcome.APPLIED, f"chargeback reversed ({amount})", Operation.REVERSE_CHARGEBACK, amount)
        if s in _REFUNDABLE and reported.open_chargebacks > 0:
            return Decision(Outcome.MATCHED, "the chargeback was already reversed")
        if s in _REFUNDABLE and notified.reversals:
            return _notified(amount, notified.reversals, "reversed")
        return Decision(Outcome.ILLEGAL_TRANSITION, f"a {s} payment has no chargeback to reverse")
    # SettlementStatus.FAILED
    if s in (PaymentStatus.PENDING, PaymentStatus.AUTHORIZED):
        return Decision(Outcome.APPLIED, "failed", Operation.FAIL)
    if s is PaymentStatus.FAILED:
        return Decision(Outcome.MATCHED)
    return Decision(Outcome.ILLEGAL_TRANSITION, f"a {s} payment cannot fail")


def _refund_event(total: int, s: PaymentStatus, balances: Balances) -> Decision:
    """One refund row, the processor's refunds reported so far coming to ``total``. Refunds we made through the
    API settle over days, so a processor total BELOW ours is normal (matched: the rest is still to come); above
    ours, the difference is a refund we have not recorded (applied; a payment never captured has refunded 0)."""
    if total <= balances.refunded:
        return Decision(Outcome.MATCHED, f"the processor has reported {total} of our {balances.refunded} refunded")
    return _refunded_in_all(total, s, balances)


def _refunded_in_all(total: int, s: PaymentStatus, balances: Balances) -> Decision:
    """A row that says the processor has refunded ``total`` in all for this payment."""
    if s not in _CAPTURED_ANY:
        return Decision(Outcome.ILLEGAL_TRANSITION, f"a {s} payment was never captured, so not refunded")
    if balances.refunded == total:
        return Decision(Outcome.MATCHED)
    if balances.refunded > total:
        return Decision(Outcome.AMOUNT_MISMATCH, f"file refunded {total} in total, we refunded {balances.refunded}")
    if total > balances.captured:
        return Decision(Outcome.AMOUNT_MISMATCH, f"refunded {total} exceeds the captured {balances.captured}")
    if s not in _REFUNDABLE:
        return Decision(Outcome.ILLEGAL_TRANSITION, f"a {s} payment cannot be refunded")
    difference = total - balances.refunded
    return Decision(Outcome.APPLIED, f"refunded {difference}", Operation.REFUND, difference)
