"""The payment state machine as pure functions: which operation may run from which status, with which amounts.

    pending --authorize--> authorized --capture--> captured --refund--> partially_refunded --refund--> refunded
       |                      |                        \\________________refund (in full)_________________/
       +--void / fail---------+--void / fail--> voided / failed

    captured / partially_refunded --chargeback--> charged_back   (the card holder's bank took the money back)
    charged_back --reverse_chargeback--> captured / partially_refunded   (the merchant won the dispute)

``refunded``, ``voided`` and ``failed`` are terminal. ``charged_back`` is not: a dispute the merchant wins comes
back (Stripe's ``dispute_reversal``, Adyen's ``ChargebackReversed``), and the payment is again what it was before
the chargeback (captured, or partially refunded where refunds were made). Refunds never exceed the captured
amount, and a chargeback, or its reversal, never exceeds what is still held (captured minus refunded).

``allowed_actions`` says what the merchant API may still do with a payment (its links, and the ``allowed`` of a
refused operation's 422), from the same table, so the two never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from payment_examples.core import IllegalTransitionError, ValidationError, validate_amount


class PaymentStatus(StrEnum):
    PENDING = "pending"
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    VOIDED = "voided"
    FAILED = "failed"
    CHARGED_BACK = "charged_back"


class Operation(StrEnum):
    AUTHORIZE = "authorize"
    CAPTURE = "capture"
    REFUND = "refund"
    VOID = "void"
    FAIL = "fail"
    CHARGEBACK = "chargeback"
    REVERSE_CHARGEBACK = "reverse_chargeback"


S, Op = PaymentStatus, Operation

ALLOWED_FROM: dict[Operation, frozenset[PaymentStatus]] = {
    Op.AUTHORIZE: frozenset({S.PENDING}),
    Op.CAPTURE: frozenset({S.AUTHORIZED}),
    Op.REFUND: frozenset({S.CAPTURED, S.PARTIALLY_REFUNDED}),
    Op.VOID: frozenset({S.PENDING, S.AUTHORIZED}),
    Op.FAIL: frozenset({S.PENDING, S.AUTHORIZED}),
    Op.CHARGEBACK: frozenset({S.CAPTURED, S.PARTIALLY_REFUNDED}),
    Op.REVERSE_CHARGEBACK: frozenset({S.CHARGED_BACK}),
}

TERMINAL: frozenset[PaymentStatus] = frozenset(
    s for s in PaymentStatus if not any(s in allowed for allowed in ALLOWED_FROM.values())
)


@dataclass(frozen=True)
class Balances:
    """The money state a transition reads and writes (all integers, minor units)."""

    amount: int  # authorised amount requested at creation
    captured: int = 0
    refunded: int = 0


@dataclass(frozen=True)
class Transition:
    operation: Operation
    from_status: PaymentStatus
    to_status: PaymentStatus
    amount: int  # the money moved by this transition
    balances: Balances  # the balances after it


def allowed_actions(status: str, balances: Balances) -> dict[str, dict[str, int]]:
    """The merchant API's actions that ``status`` and ``balances`` allow now, each with its limit: ``{"capture":
    {"max_amount": authorised}}`` when capturable, ``{"refund": {"max_amount": captured - refunded}}`` when
    refundable, ``{"void": {}}`` when voidable. Pure, like ``plan_transition``, whose refusals carry it."""
    current = PaymentStatus(status)
    actions: dict[str, dict[str, int]] = {}
    if current in ALLOWED_FROM[Op.CAPTURE]:
        actions[Op.CAPTURE.value] = {"max_amount": balances.amount}
    if current in ALLOWED_FROM[Op.REFUND] and balances.captured > balances.refunded:
        actions[Op.REFUND.value] = {"max_amount": balances.captured - balances.refunded}
    if current in ALLOWED_FROM[Op.VOID]:
        actions[Op.VOID.value] = {}
    return actions


def plan_transition(
    payment_id: str, status: str, balances: Balances, operation: Operation, amount: int | None = None
) -> Transition:
    """What ``operation`` does from ``status``, or ``IllegalTransitionError``. Pure: reads nothing, writes nothing.

    ``amount`` is optional for capture (default: the whole authorised amount; a smaller capture releases the rest)
    and for chargeback and its reversal (default: everything still held), required for refund, and not accepted
    for the others (a missing or unexpected amount is a ``ValidationError``; an amount the balances do not allow is
    an ``IllegalTransitionError``, which says what is allowed instead: ``allowed_actions``).
    """
    current = PaymentStatus(status)
    operation = Operation(operation)

    def refused(reason: str = "") -> IllegalTransitionError:
        return IllegalTransitionError(
            payment_id, current, operation, reason, allowed=allowed_actions(current, balances)
        )

    if current not in ALLOWED_FROM[operation]:
        raise refused()

    if operation is Op.CAPTURE:
        captured = balances.amount if amount is None else validate_amount(amount)
        if captured > balances.amount:
            raise refused(f"capture of {captured} exceeds the authorised {balances.amount}")
        return Transition(operation, current, S.CAPTURED, captured, Balances(balances.amount, captured, 0))

    if operation is Op.REFUND:
        if amount is None:
            raise ValidationError("amount", "a refund needs an amount")
        refund = validate_amount(amount)
        remaining = balances.captured - balances.refunded
        if refund > remaining:
            raise refused(f"refund of {refund} exceeds the {remaining} still refundable")
        refunded = balances.refunded + refund
        to_status = S.REFUNDED if refunded == balances.captured else S.PARTIALLY_REFUNDED
        return Transition(operation, current, to_status, refund, Balances(balances.amount, balances.captured, refunded))

    if operation is Op.CHARGEBACK:
        held = balances.captured - balances.refunded
        charged_back = held if amount is None else validate_amount(amount)
        if charged_back > held:
            raise refused(f"chargeback of {charged_back} exceeds the {held} still held")
        return Transition(operation, current, S.CHARGED_BACK, charged_back, balances)

    if operation is Op.REVERSE_CHARGEBACK:
        held = balances.captured - balances.refunded
        returned = held if amount is None else validate_amount(amount)
        if returned > held:
            raise refused(f"a reversal of {returned} exceeds the {held} that was held")
        to_status = S.CAPTURED if balances.refunded == 0 else S.PARTIALLY_REFUNDED
        return Transition(operation, current, to_status, returned, balances)

    if amount is not None:
        raise ValidationError("amount", f"{operation} takes no amount")
    to_status = {Op.AUTHORIZE: S.AUTHORIZED, Op.VOID: S.VOIDED, Op.FAIL: S.FAILED}[operation]
    return Transition(operation, current, to_status, balances.amount, balances)
