"""Moving a payment between two real (moto) accounts: crash after every step, retry, exactly one live payment."""

from __future__ import annotations

import pytest

from payment_examples.accounts.registry import local_accounts
from payment_examples.accounts.transfers import STEPS, TransferConflictError, transfer_payment
from payment_examples.core.errors import (
    PaymentMovedError,
    PaymentNotFoundError,
    UnknownAccountError,
    ValidationError,
    VersionConflictError,
)
from payment_examples.harness.consumer import drain
from payment_examples.payments.service import PaymentService
from payment_examples.tables.models import bind_models

M = "merchant-1"
A, B = "account-a", "account-b"


class Crash(Exception):
    pass


@pytest.fixture
def accounts(aws, clock):
    return local_accounts((A, B), settings=aws, clock=clock)


@pytest.fixture
def in_a(accounts, clock) -> PaymentService:
    return PaymentService(models=accounts.models(A), clock=clock)


@pytest.fixture
def in_b(accounts, clock) -> PaymentService:
    return PaymentService(models=accounts.models(B), clock=clock)


@pytest.fixture
def captured(in_a):
    payment = in_a.create_payment(M, "order-1", 2500, "EUR").payment
    in_a.authorize(M, payment.id, actor="api")
    return in_a.capture(M, payment.id, actor="api")


def live_in(service: PaymentService, payment_id: str) -> bool:
    try:
        service.get_payment(M, payment_id)
    except PaymentNotFoundError:  # absent, or not live here (PaymentMovedError)
        return False
    return True


def transfer(accounts, clock, payment_id, **kwargs):
    return transfer_payment(payment_id, merchant_id=M, source=A, target=B, accounts=accounts, clock=clock, **kwargs)


class TestMultiAccountPaymentFlow:
    def test_create_in_a_transfer_to_b_and_verify_both_sides(self, accounts, clock, in_a, in_b, captured, aws):
        result = transfer(accounts, clock, captured.id)
        assert result.steps == STEPS
        assert not live_in(in_a, captured.id) and live_in(in_b, captured.id)
        with pytest.raises(PaymentMovedError, match="moved-out"):
            in_a.refund(M, captured.id, actor="api", amount=100)
        moved = in_b.get_payment(M, captured.id)
        assert (moved.status, moved.amount, moved.captured_amount, moved.currency) == ("captured", 2500, 2500, "EUR")
        in_b.refund(M, captured.id, actor="support", amount=500)  # it lives on in B
        assert in_b.get_payment(M, captured.id).refunded_amount == 500
        assert [t.type for t in in_b.transactions(M, captured.id)] == ["refund"]  # B's history starts at the move
        assert [t.type for t in in_a.transactions(M, captured.id)] == ["authorize", "capture"]
        with pytest.raises(PaymentNotFoundError):  # two accounts, not two tables in one: the default sees nothing
            PaymentService(models=bind_models(aws)).read_payment(M, captured.id)

        drain(accounts.settings(A)), drain(accounts.settings(B))  # each account's consumer on its own stream
        trail_a = in_a.audit_trail(M, captured.id)
        trail_b = in_b.audit_trail(M, captured.id)
        assert [e.action for e in trail_a] == ["create", "authorize", "capture", "transfer-out"]
        assert trail_a[-1].detail == {"target_account": accounts.account(B).account_id, "version": "3"}
        assert [e.action for e in trail_b] == ["transfer-in", "refund"]
        assert trail_b[0].detail == {"source_account": accounts.account(A).account_id, "source_version": "3"}
        assert in_a.audit.verify(f"payment#{captured.id}").ok and in_b.audit.verify(f"payment#{captured.id}").ok

    @pytest.mark.parametrize("crash_after", STEPS)
    def test_a_crash_after_any_step_then_a_retry_converges_to_one_live_payment(
        self, accounts, clock, in_a, in_b, captured, crash_after
    ):
        def crash(step: str) -> None:
            if step == crash_after:
                raise Crash(step)

        with pytest.raises(Crash):
            transfer(accounts, clock, captured.id, on_step=crash)
        assert live_in(in_a, captured.id) + live_in(in_b, captured.id) <= 1  # never live in both
        result = transfer(accounts, clock, captured.id)
        assert result.steps == STEPS[STEPS.index(crash_after) + 1 :]  # only what was still missing
        assert not live_in(in_a, captured.id) and live_in(in_b, captured.id)
        assert [e.action for e in in_a.audit_trail(M, captured.id)].count("transfer-out") == 1
        assert [e.action for e in in_b.audit_trail(M, captured.id)] == ["transfer-in"]
        assert in_a.audit.verify(f"payment#{captured.id}").ok and in_b.audit.verify(f"payment#{captured.id}").ok

    def test_a_completed_transfer_run_again_changes_nothing(self, accounts, clock, in_a, in_b, captured):
        transfer(accounts, clock, captured.id)
        again = transfer(accounts, clock, captured.id)
        assert again.steps == ()
        assert len(in_b.audit_trail(M, captured.id)) == 1 and len(in_a.audit_trail(M, captured.id)) == 4

    def test_a_transition_on_the_source_during_the_copy_makes_the_commit_fail_and_a_retry_moves_it(
        self, accounts, clock, in_a, in_b
    ):
        payment = in_a.create_payment(M, "order-2", 900, "USD").payment
        in_a.authorize(M, payment.id, actor="api")

        def capture_meanwhile(step: str) -> None:
            if step == "copied":
                in_a.capture(M, payment.id, actor="api")

        with pytest.raises(VersionConflictError):
            transfer(accounts, clock, payment.id, on_step=capture_meanwhile)
        assert live_in(in_a, payment.id) and not live_in(in_b, payment.id)  # the copy in B is not live
        result = transfer(accounts, clock, payment.id)
        assert result.steps == STEPS  # the stale copy is replaced
        assert in_b.get_payment(M, payment.id).status == "captured"

    def test_a_transition_that_read_the_payment_before_the_move_cannot_commit_after_it(
        self, accounts, clock, in_a, captured
    ):
        stale = in_a.get_payment(M, captured.id)
        transfer(accounts, clock, captured.id)
        with pytest.raises(VersionConflictError):
            in_a.transition(M, captured.id, "refund", actor="api", amount=100, current=stale)
        assert in_a.read_payment(M, captured.id).refunded_amount == 0

    def test_bad_requests_move_nothing(self, accounts, clock, in_a, in_b, captured):
        with pytest.raises(ValidationError):
            transfer_payment(captured.id, merchant_id=M, source=A, target=A, accounts=accounts)
        with pytest.raises(UnknownAccountError):
            transfer_payment(captured.id, merchant_id=M, source=A, target="account-z", accounts=accounts)
        with pytest.raises(PaymentNotFoundError):  # another merchant's payment
            transfer_payment(captured.id, merchant_id="merchant-2", source=A, target=B, accounts=accounts)
        with pytest.raises(ValidationError):
            transfer(accounts, clock, "")
        assert live_in(in_a, captured.id) and in_b.models.payment.count() == 0

    def test_a_live_payment_with_the_same_id_in_the_target_is_not_overwritten(self, accounts, clock, in_a, in_b):
        here = in_a.create_payment(M, "order-3", 100, "USD").payment
        there = in_b.create_payment(M, "order-3", 100, "USD").payment  # same merchant and key: same id
        with pytest.raises(TransferConflictError):
            transfer(accounts, clock, here.id)
        assert live_in(in_a, here.id) and in_b.get_payment(M, there.id).version == there.version
