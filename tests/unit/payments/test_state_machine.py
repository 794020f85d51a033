"""Every (status, operation) pair: the pure planner and the real service on moto agree with an explicit table."""

from __future__ import annotations

import pytest

from payment_examples.core.errors import IllegalTransitionError, ValidationError
from payment_examples.payments.service import PaymentService
from payment_examples.payments.state_machine import (
    TERMINAL,
    Balances,
    Operation,
    PaymentStatus,
    allowed_actions,
    plan_transition,
)
from payment_examples.tables.models import Payment

S, Op = PaymentStatus, Operation
MERCHANT = "m-1"
AMOUNT = 1000
REFUND = 100  # the amount each refund in this file moves

# Written out by hand (not derived from ALLOWED_FROM): every legal pair and where it lands. Everything else is illegal.
LEGAL: dict[tuple[PaymentStatus, Operation], PaymentStatus] = {
    (S.PENDING, Op.AUTHORIZE): S.AUTHORIZED,
    (S.PENDING, Op.VOID): S.VOIDED,
    (S.PENDING, Op.FAIL): S.FAILED,
    (S.AUTHORIZED, Op.CAPTURE): S.CAPTURED,
    (S.AUTHORIZED, Op.VOID): S.VOIDED,
    (S.AUTHORIZED, Op.FAIL): S.FAILED,
    (S.CAPTURED, Op.REFUND): S.PARTIALLY_REFUNDED,
    (S.PARTIALLY_REFUNDED, Op.REFUND): S.PARTIALLY_REFUNDED,
    (S.CAPTURED, Op.CHARGEBACK): S.CHARGED_BACK,
    (S.PARTIALLY_REFUNDED, Op.CHARGEBACK): S.CHARGED_BACK,
    (S.CHARGED_BACK, Op.REVERSE_CHARGEBACK): S.CAPTURED,  # PATH's chargeback came before any refund
}
ALL_PAIRS = [(status, op) for status in PaymentStatus for op in Operation]

# Legal steps (operation, refund amount) that drive a fresh payment to each status.
PATH: dict[PaymentStatus, list[tuple[Operation, int]]] = {
    S.PENDING: [],
    S.AUTHORIZED: [(Op.AUTHORIZE, 0)],
    S.CAPTURED: [(Op.AUTHORIZE, 0), (Op.CAPTURE, 0)],
    S.PARTIALLY_REFUNDED: [(Op.AUTHORIZE, 0), (Op.CAPTURE, 0), (Op.REFUND, REFUND)],
    S.REFUNDED: [(Op.AUTHORIZE, 0), (Op.CAPTURE, 0), (Op.REFUND, AMOUNT)],
    S.VOIDED: [(Op.VOID, 0)],
    S.FAILED: [(Op.FAIL, 0)],
    S.CHARGED_BACK: [(Op.AUTHORIZE, 0), (Op.CAPTURE, 0), (Op.CHARGEBACK, 0)],
}
# Balances a payment has in each status after PATH (REFUNDED: one refund of the whole amount).
BALANCES: dict[PaymentStatus, Balances] = {
    S.PENDING: Balances(AMOUNT),
    S.AUTHORIZED: Balances(AMOUNT),
    S.CAPTURED: Balances(AMOUNT, AMOUNT),
    S.PARTIALLY_REFUNDED: Balances(AMOUNT, AMOUNT, REFUND),
    S.REFUNDED: Balances(AMOUNT, AMOUNT, AMOUNT),
    S.VOIDED: Balances(AMOUNT),
    S.FAILED: Balances(AMOUNT),
    S.CHARGED_BACK: Balances(AMOUNT, AMOUNT),
}


def apply(service: PaymentService, payment_id: str, op: Operation, refund: int = REFUND) -> Payment:
    if op is Op.REFUND:
        return service.refund(MERCHANT, payment_id, actor="tester", amount=refund)
    return getattr(service, op.value)(MERCHANT, payment_id, actor="tester")


def payment_in(service: PaymentService, status: PaymentStatus) -> Payment:
    payment = service.create_payment(MERCHANT, f"key-{status}", AMOUNT, "USD").payment
    for op, refund in PATH[status]:
        payment = apply(service, payment.id, op, refund)
    assert payment.status == status
    return payment


def test_terminal_statuses() -> None:
    assert {S.REFUNDED, S.VOIDED, S.FAILED} == TERMINAL


@pytest.mark.parametrize(("status", "op"), ALL_PAIRS, ids=[f"{s}-{o}" for s, o in ALL_PAIRS])
def test_plan_transition(status: PaymentStatus, op: Operation) -> None:
    balances = BALANCES[status]
    amount = REFUND if op is Op.REFUND else None
    if (status, op) not in LEGAL:
        with pytest.raises(IllegalTransitionError) as caught:
            plan_transition("p", status.value, balances, op, amount)
        assert (caught.value.status, caught.value.operation) == (status, op)
        return
    plan = plan_transition("p", status.value, balances, op, amount)
    assert (plan.from_status, plan.to_status, plan.operation) == (status, LEGAL[status, op], op)
    expected_moved = {Op.REFUND: REFUND, Op.CHARGEBACK: AMOUNT - balances.refunded}.get(op, AMOUNT)
    assert plan.amount == expected_moved


@pytest.mark.parametrize(("status", "op"), ALL_PAIRS, ids=[f"{s}-{o}" for s, o in ALL_PAIRS])
def test_transition_through_service(service: PaymentService, status: PaymentStatus, op: Operation) -> None:
    before = payment_in(service, status)
    if (status, op) in LEGAL:
        after = apply(service, before.id, op)
        stored = service.get_payment(MERCHANT, before.id)
        assert stored.status == after.status == LEGAL[status, op]
        assert stored.version == before.version + 1
        assert stored.merchant_status == f"{MERCHANT}#{LEGAL[status, op]}"
    else:
        with pytest.raises(IllegalTransitionError):
            apply(service, before.id, op)
        stored = service.get_payment(MERCHANT, before.id)
        assert (stored.status, stored.version, stored.updated_at) == (status, before.version, before.updated_at)
        assert len(service.transactions(MERCHANT, before.id)) == len(PATH[status])


def test_plan_balances_after_capture_and_refunds() -> None:
    captured = plan_transition("p", "authorized", Balances(1000), Op.CAPTURE, 700)
    assert (captured.amount, captured.balances) == (700, Balances(1000, 700, 0))
    partial = plan_transition("p", "captured", captured.balances, Op.REFUND, 300)
    assert (partial.to_status, partial.balances) == (S.PARTIALLY_REFUNDED, Balances(1000, 700, 300))
    full = plan_transition("p", "partially_refunded", partial.balances, Op.REFUND, 400)
    assert (full.to_status, full.balances) == (S.REFUNDED, Balances(1000, 700, 700))


@pytest.mark.parametrize(
    ("status", "balances", "op", "amount"),
    [
        ("authorized", Balances(1000), Op.CAPTURE, 1001),  # more than authorised
        ("captured", Balances(1000, 1000), Op.REFUND, 1001),  # more than captured
        ("partially_refunded", Balances(1000, 1000, 900), Op.REFUND, 101),  # more than remains
        ("captured", Balances(1000, 600), Op.REFUND, 601),  # capped by a partial capture
        ("partially_refunded", Balances(1000, 1000, 300), Op.CHARGEBACK, 701),  # more than is still held
    ],
)
def test_plan_rejects_bad_amounts(status: str, balances: Balances, op: Operation, amount: int | None) -> None:
    with pytest.raises(IllegalTransitionError):
        plan_transition("p", status, balances, op, amount)


@pytest.mark.parametrize(
    ("status", "balances", "op", "amount"),
    [
        ("captured", Balances(1000, 1000), Op.REFUND, None),  # refund needs an amount
        ("pending", Balances(1000), Op.AUTHORIZE, 500),  # authorize takes no amount
        ("authorized", Balances(1000), Op.VOID, 1000),  # void takes no amount
    ],
)
def test_a_missing_or_unexpected_amount_is_a_validation_error(status, balances, op, amount) -> None:
    with pytest.raises(ValidationError) as caught:
        plan_transition("p", status, balances, op, amount)
    assert caught.value.field == "amount"


@pytest.mark.parametrize(("op", "amount"), [(Op.CAPTURE, 0), (Op.CAPTURE, 10.0), (Op.CAPTURE, True)])
def test_plan_validates_capture_amount(op: Operation, amount: object) -> None:
    with pytest.raises(ValidationError):
        plan_transition("p", "authorized", Balances(1000), op, amount)  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", [0, -5, 2.5])
def test_plan_validates_refund_amount(amount: object) -> None:
    with pytest.raises(ValidationError):
        plan_transition("p", "captured", Balances(1000, 1000), Op.REFUND, amount)  # type: ignore[arg-type]


def test_plan_rejects_unknown_status() -> None:
    with pytest.raises(ValueError):
        plan_transition("p", "settled", Balances(1000), Op.AUTHORIZE)


def test_chargeback_takes_what_is_still_held_or_a_smaller_amount() -> None:
    whole = plan_transition("p", "partially_refunded", Balances(1000, 1000, 300), Op.CHARGEBACK)
    assert (whole.to_status, whole.amount, whole.balances) == (S.CHARGED_BACK, 700, Balances(1000, 1000, 300))
    part = plan_transition("p", "captured", Balances(1000, 1000), Op.CHARGEBACK, 400)
    assert part.amount == 400


def test_a_reversed_chargeback_restores_what_the_payment_was_before_it() -> None:
    after_refund = plan_transition("p", "charged_back", Balances(AMOUNT, AMOUNT, REFUND), Op.REVERSE_CHARGEBACK)
    assert (after_refund.to_status, after_refund.amount) == (S.PARTIALLY_REFUNDED, AMOUNT - REFUND)
    whole = plan_transition("p", "charged_back", Balances(AMOUNT, AMOUNT), Op.REVERSE_CHARGEBACK, 400)
    assert (whole.to_status, whole.amount, whole.balances) == (S.CAPTURED, 400, Balances(AMOUNT, AMOUNT))
    with pytest.raises(IllegalTransitionError, match="exceeds the 900 that was held"):
        plan_transition("p", "charged_back", Balances(AMOUNT, AMOUNT, REFUND), Op.REVERSE_CHARGEBACK, 901)


# -- what the merchant API may do next (allowed_actions) -------------------------------------------------------------

# Written out by hand, per status with BALANCES[status]: the merchant API's actions and their limits.
ALLOWED: dict[PaymentStatus, dict[str, dict[str, int]]] = {
    S.PENDING: {"void": {}},
    S.AUTHORIZED: {"capture": {"max_amount": AMOUNT}, "void": {}},
    S.CAPTURED: {"refund": {"max_amount": AMOUNT}},
    S.PARTIALLY_REFUNDED: {"refund": {"max_amount": AMOUNT - REFUND}},
    S.REFUNDED: {},
    S.VOIDED: {},
    S.FAILED: {},
    S.CHARGED_BACK: {},
}


@pytest.mark.parametrize("status", list(PaymentStatus))
def test_allowed_actions_per_status(status: PaymentStatus) -> None:
    assert allowed_actions(status.value, BALANCES[status]) == ALLOWED[status]


def test_allowed_actions_agree_with_the_planner() -> None:
    """Each action allowed plans at its max_amount and refuses one more; each action not allowed is refused."""
    for status in PaymentStatus:
        balances, allowed = BALANCES[status], allowed_actions(status.value, BALANCES[status])
        for op in (Op.CAPTURE, Op.REFUND, Op.VOID):
            limit = allowed.get(op.value, {}).get("max_amount")
            if op.value not in allowed:
                with pytest.raises(IllegalTransitionError):
                    plan_transition("p", status.value, balances, op, REFUND if op is Op.REFUND else None)
            elif limit is None:
                plan_transition("p", status.value, balances, op)
            else:
                assert plan_transition("p", status.value, balances, op, limit).amount == limit
                with pytest.raises(IllegalTransitionError):
                    plan_transition("p", status.value, balances, op, limit + 1)


def test_a_partial_capture_limits_the_refunds() -> None:
    assert allowed_actions("captured", Balances(1000, 600)) == {"refund": {"max_amount": 600}}
    assert allowed_actions("partially_refunded", Balances(1000, 600, 450)) == {"refund": {"max_amount": 150}}


@pytest.mark.parametrize(
    ("status", "balances", "op", "amount", "allowed"),
    [
        ("authorized", Balances(1000), Op.CAPTURE, 1001, {"capture": {"max_amount": 1000}, "void": {}}),
        ("partially_refunded", Balances(1000, 1000, 900), Op.REFUND, 101, {"refund": {"max_amount": 100}}),
        ("captured", Balances(1000, 1000), Op.VOID, None, {"refund": {"max_amount": 1000}}),
        ("refunded", Balances(1000, 1000, 1000), Op.REFUND, 1, {}),
    ],
)
def test_a_refusal_says_what_is_allowed_instead(status, balances, op, amount, allowed) -> None:
    with pytest.raises(IllegalTransitionError) as caught:
        plan_transition("p-1", status, balances, op, amount)
    assert caught.value.allowed == allowed
    assert caught.value.http_status == 422
    assert caught.value.problem_extra() == {"payment_id": "p-1", "payment_status": status,
                                            "operation": op.value, "allowed": allowed}  # fmt: skip


def test_a_refusal_without_balances_keeps_its_message_and_omits_allowed() -> None:
    error = IllegalTransitionError("p-1", S.AUTHORIZED, Op.VOID, "a processor capture is in flight")
    assert str(error) == "cannot void payment 'p-1' in status 'authorized': a processor capture is in flight"
    assert error.allowed is None and "allowed" not in error.problem_extra()
