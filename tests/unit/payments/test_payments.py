"""PaymentService on moto in-process: validation, idempotency, scoping, locking, refunds and the transaction trail."""

from __future__ import annotations

from decimal import Decimal

import pytest

from payment_examples.core.errors import (
    DuplicatePaymentError,
    IllegalTransitionError,
    PaymentNotFoundError,
    ValidationError,
    VersionConflictError,
)
from payment_examples.core.money import MAX_AMOUNT
from payment_examples.harness.consumer import drain
from payment_examples.payments.service import MAX_DESCRIPTION_LENGTH, PaymentService
from payment_examples.tables.models import BoundModels, Payment, transaction_id_for

M, OTHER = "m-1", "m-2"
GOOD = {"merchant_id": M, "idempotency_key": "k-1", "amount": 1000, "currency": "USD"}


def new_payment(service: PaymentService, key: str = "k-1", amount: int = 1000, merchant: str = M) -> Payment:
    return service.create_payment(merchant, key, amount, "USD").payment


def stored(models: BoundModels, payment_id: str) -> Payment:
    return models.payment.get(payment_id, consistent_read=True)


def transaction_count(models: BoundModels) -> int:
    """Transactions projected, once the stream's consumer has caught up."""
    drain()
    return sum(1 for _ in models.transaction.scan())


# -- validation ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", 0),
        ("amount", -100),
        ("amount", 10.0),
        ("amount", "100"),
        ("amount", Decimal("100")),
        ("amount", True),
        ("amount", MAX_AMOUNT + 1),
        ("currency", "usd"),
        ("currency", "XXX"),
        ("currency", ""),
        ("currency", None),
        ("merchant_id", ""),
        ("merchant_id", "m" * 256),
        ("merchant_id", "m\n1"),
        ("idempotency_key", ""),
        ("idempotency_key", "k" * 256),
        ("idempotency_key", "k\n1"),
        ("description", "d" * (MAX_DESCRIPTION_LENGTH + 1)),
        ("customer_id", ""),
    ],
)
def test_create_rejects_bad_input_and_writes_nothing(
    service: PaymentService, models: BoundModels, field: str, value: object
) -> None:
    with pytest.raises(ValidationError) as caught:
        service.create_payment(**{**GOOD, field: value})
    assert caught.value.field == field
    assert list(models.payment.scan()) == []


def test_create_accepts_boundary_lengths(service: PaymentService) -> None:
    result = service.create_payment("m" * 255, "k" * 255, MAX_AMOUNT, "USD", description="d" * MAX_DESCRIPTION_LENGTH)
    assert result.payment.amount == MAX_AMOUNT and not result.replayed


def test_transition_rejects_bad_actor_and_writes_nothing(service: PaymentService, models: BoundModels) -> None:
    payment = new_payment(service)
    with pytest.raises(ValidationError) as caught:
        service.authorize(M, payment.id, actor="")
    assert caught.value.field == "actor"
    assert stored(models, payment.id).version == payment.version
    assert transaction_count(models) == 0


# -- idempotent create --------------------------------------------------------------------------------------------


def test_create_is_idempotent(service: PaymentService, models: BoundModels) -> None:
    first = service.create_payment(M, "k-1", 1000, "USD", description="order 7")
    second = service.create_payment(M, "k-1", 1000, "USD", description="order 7")
    assert (first.replayed, second.replayed) == (False, True)
    assert second.payment.id == first.payment.id
    assert second.payment.created_at == first.payment.created_at
    assert [p.id for p in models.payment.scan()] == [first.payment.id]


@pytest.mark.parametrize(
    "changed", [{"amount": 1001}, {"currency": "EUR"}, {"description": "other"}, {"customer_id": "c-1"}]
)
def test_same_key_different_details_is_a_duplicate(
    service: PaymentService, models: BoundModels, changed: dict[str, object]
) -> None:
    original = service.create_payment(**GOOD).payment
    with pytest.raises(DuplicatePaymentError) as caught:
        service.create_payment(**{**GOOD, **changed})
    assert caught.value.payment_id == original.id
    item = stored(models, original.id)
    assert (int(item.amount), item.currency, item.version) == (1000, "USD", original.version)
    assert sum(1 for _ in models.payment.scan()) == 1


def test_same_key_under_two_merchants_gives_two_payments(service: PaymentService, models: BoundModels) -> None:
    a = service.create_payment(M, "k-1", 1000, "USD")
    b = service.create_payment(OTHER, "k-1", 1000, "USD")
    assert not a.replayed and not b.replayed
    assert a.payment.id != b.payment.id
    assert {(p.id, p.merchant_id) for p in models.payment.scan()} == {(a.payment.id, M), (b.payment.id, OTHER)}


# -- merchant scoping ---------------------------------------------------------------------------------------------


def test_other_merchants_payment_reads_as_not_found(service: PaymentService) -> None:
    payment = new_payment(service)
    with pytest.raises(PaymentNotFoundError):
        service.get_payment(OTHER, payment.id)
    with pytest.raises(PaymentNotFoundError):
        service.get_payment(M, "no-such-id")
    with pytest.raises(PaymentNotFoundError):
        service.transactions(OTHER, payment.id)
    assert service.get_payment(M, payment.id).id == payment.id


@pytest.mark.parametrize(
    "call",
    [
        lambda s, pid: s.authorize(OTHER, pid, actor="x"),
        lambda s, pid: s.capture(OTHER, pid, actor="x"),
        lambda s, pid: s.refund(OTHER, pid, actor="x", amount=1),
        lambda s, pid: s.void(OTHER, pid, actor="x"),
        lambda s, pid: s.fail(OTHER, pid, actor="x"),
    ],
    ids=["authorize", "capture", "refund", "void", "fail"],
)
def test_transitions_across_merchants_are_not_found(service: PaymentService, models: BoundModels, call) -> None:
    payment = new_payment(service)
    service.authorize(M, payment.id, actor="owner")
    service.capture(M, payment.id, actor="owner", amount=500)
    before = stored(models, payment.id)
    with pytest.raises(PaymentNotFoundError):
        call(service, payment.id)
    after = stored(models, payment.id)
    assert (after.status, after.version, after.updated_at) == (before.status, before.version, before.updated_at)
    assert transaction_count(models) == 2


# -- optimistic locking -------------------------------------------------------------------------------------------


def test_stale_expected_version_conflicts_and_writes_nothing(service: PaymentService, models: BoundModels) -> None:
    payment = new_payment(service)
    service.authorize(M, payment.id, actor="a", expected_version=payment.version)
    with pytest.raises(VersionConflictError) as caught:
        service.void(M, payment.id, actor="b", expected_version=payment.version)
    assert caught.value.expected_version == payment.version
    item = stored(models, payment.id)
    assert (item.status, item.version) == ("authorized", payment.version + 1)
    assert transaction_count(models) == 1


def test_stale_read_loses_the_race(service: PaymentService, models: BoundModels, monkeypatch) -> None:
    payment = new_payment(service)
    stale = service.get_payment(M, payment.id)  # read before someone else's transition
    service.authorize(M, payment.id, actor="first")
    monkeypatch.setattr(service, "get_payment", lambda merchant_id, payment_id: stale)
    # void is legal from the stale (pending) status, so only the version condition can stop it.
    with pytest.raises(VersionConflictError):
        service.void(M, payment.id, actor="second")
    monkeypatch.undo()
    item = stored(models, payment.id)
    assert (item.status, item.version, item.last_transition.actor) == ("authorized", 2, "first")
    assert [t.type for t in service.transactions(M, payment.id)] == ["authorize"]


# -- timestamps and versions --------------------------------------------------------------------------------------


def test_created_at_is_never_rewritten(service: PaymentService, models: BoundModels) -> None:
    created = new_payment(service)
    history = [
        created,
        service.authorize(M, created.id, actor="a"),
        service.capture(M, created.id, actor="a"),
        service.refund(M, created.id, actor="a", amount=100),
        service.refund(M, created.id, actor="a", amount=900),
    ]
    item = stored(models, created.id)
    assert (item.created_at, item.created_key) == (created.created_at, created.created_key)
    assert all((p.created_at, p.created_key) == (created.created_at, created.created_key) for p in history)
    assert all(later.updated_at > earlier.updated_at for earlier, later in zip(history, history[1:], strict=False))
    assert [p.version for p in history] == [created.version + n for n in range(5)]
    assert (item.updated_at, item.version) == (history[-1].updated_at, history[-1].version)
    assert [t.processed_at for t in service.transactions(M, created.id)] == [p.updated_at for p in history[1:]]


# -- refunds ------------------------------------------------------------------------------------------------------


def test_partial_refunds_accumulate_up_to_the_captured_amount(service: PaymentService, models: BoundModels) -> None:
    payment = new_payment(service, amount=1000)
    service.authorize(M, payment.id, actor="a")
    service.capture(M, payment.id, actor="a")
    statuses = [service.refund(M, payment.id, actor="a", amount=amount).status for amount in (300, 300, 400)]
    assert statuses == ["partially_refunded", "partially_refunded", "refunded"]
    item = stored(models, payment.id)
    assert (int(item.captured_amount), int(item.refunded_amount)) == (1000, 1000)
    with pytest.raises(IllegalTransitionError):
        service.refund(M, payment.id, actor="a", amount=1)


def test_refund_exceeding_remaining_writes_nothing(service: PaymentService, models: BoundModels) -> None:
    payment = new_payment(service, amount=1000)
    service.authorize(M, payment.id, actor="a")
    service.capture(M, payment.id, actor="a")
    service.refund(M, payment.id, actor="a", amount=600)
    before = stored(models, payment.id)
    with pytest.raises(IllegalTransitionError):
        service.refund(M, payment.id, actor="a", amount=401)
    after = stored(models, payment.id)
    assert (after.status, after.version, int(after.refunded_amount)) == (before.status, before.version, 600)
    assert transaction_count(models) == 3
    assert service.refund(M, payment.id, actor="a", amount=400).status == "refunded"


def test_partial_capture_caps_refunds(service: PaymentService, models: BoundModels) -> None:
    payment = new_payment(service, amount=1000)
    service.authorize(M, payment.id, actor="a")
    captured = service.capture(M, payment.id, actor="a", amount=700)
    assert (captured.status, int(captured.captured_amount)) == ("captured", 700)
    with pytest.raises(IllegalTransitionError):
        service.refund(M, payment.id, actor="a", amount=701)
    assert service.refund(M, payment.id, actor="a", amount=700).status == "refunded"
    assert int(stored(models, payment.id).refunded_amount) == 700


def test_capture_exceeding_authorised_writes_nothing(service: PaymentService, models: BoundModels) -> None:
    payment = new_payment(service, amount=1000)
    authorized = service.authorize(M, payment.id, actor="a")
    with pytest.raises(IllegalTransitionError):
        service.capture(M, payment.id, actor="a", amount=1001)
    item = stored(models, payment.id)
    assert (item.status, item.version, int(item.captured_amount)) == ("authorized", authorized.version, 0)


# -- the transaction trail ----------------------------------------------------------------------------------------


def test_each_transition_writes_a_deterministic_transaction(service: PaymentService, models: BoundModels) -> None:
    payment = new_payment(service, amount=1000)
    steps = [
        (lambda: service.authorize(M, payment.id, actor="alice"), "authorize", 1000, "pending", "authorized"),
        (lambda: service.capture(M, payment.id, actor="bob", amount=600), "capture", 600, "authorized", "captured"),
        (
            lambda: service.refund(M, payment.id, actor="carol", amount=200),
            "refund",
            200,
            "captured",
            "partially_refunded",
        ),
    ]
    for step, kind, amount, from_status, to_status in steps:
        after = step()
        drain()  # the consumer projects it
        transaction = models.transaction.get(transaction_id_for(payment.id, after.version), consistent_read=True)
        assert (transaction.payment_id, transaction.merchant_id, transaction.payment_version) == (
            payment.id,
            M,
            after.version,
        )
        assert (transaction.type, int(transaction.amount), transaction.currency) == (kind, amount, "USD")
        assert transaction.processed_at == after.updated_at
        [entry] = transaction.audit_trail
        assert (entry.actor, entry.action, entry.from_status, entry.to_status) == (
            after.last_transition.actor,
            kind,
            from_status,
            to_status,
        )
    trail = service.transactions(M, payment.id)
    assert [(t.type, t.actor, t.source) for t in trail] == [
        ("authorize", "alice", "projection"),
        ("capture", "bob", "projection"),
        ("refund", "carol", "projection"),
    ]
    assert transaction_count(models) == 3


def test_void_records_its_reason(service: PaymentService) -> None:
    payment = new_payment(service)
    service.void(M, payment.id, actor="ops", reason="customer cancelled")
    [transaction] = service.transactions(M, payment.id)
    assert (transaction.type, transaction.reason) == ("void", "customer cancelled")


def test_a_read_right_after_a_write_sees_it_from_the_payment(service: PaymentService, models: BoundModels) -> None:
    """Before the consumer has projected a change, ``transactions`` shows it from the payment, and says so."""
    payment = new_payment(service)
    service.authorize(M, payment.id, actor="a")
    drain()
    service.capture(M, payment.id, actor="b", amount=300)
    early = service.transactions(M, payment.id)
    assert [(t.type, t.payment_version, t.source) for t in early] == [
        ("authorize", 2, "projection"), ("capture", 3, "payment"),
    ]  # fmt: skip
    assert sum(1 for _ in models.transaction.scan()) == 1  # nothing was written by the read
    drain()
    late = service.transactions(M, payment.id)
    assert [t.source for t in late] == ["projection", "projection"]
    assert [(t.id, t.amount, t.actor, t.processed_at) for t in late] == [
        (t.id, t.amount, t.actor, t.processed_at) for t in early
    ]


def test_a_change_is_one_write_and_records_itself(service: PaymentService, models: BoundModels) -> None:
    """The create and each transition write the payment alone; the change is kept on it for the projection."""
    payment = new_payment(service)
    service.authorize(M, payment.id, actor="a")
    captured = service.capture(M, payment.id, actor="b", amount=400)
    assert sum(1 for _ in models.transaction.scan()) == 0 and sum(1 for _ in models.audit.scan()) == 0
    stored_payment = stored(models, payment.id)
    assert [(t.type, int(t.version), t.actor) for t in stored_payment.transitions] == [
        ("create", 1, M), ("authorize", 2, "a"), ("capture", 3, "b"),
    ]  # fmt: skip
    assert captured.last_transition.version == captured.version == 3
