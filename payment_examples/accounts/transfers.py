"""Moving a payment to another AWS account, safely under crashes and retries.

No DynamoDB transaction spans two accounts, so the move is a hand-over in three conditional writes, each of which
a retry can recognise as done:

1. **copy**: put the payment into the target account as ``incoming`` (not live: reads there say not found and
   transitions are refused). Conditional on the id not existing there, or on an earlier incoming copy of an older
   source version (refreshed).
2. **commit**: mark the source ``moved-out``, conditional on the version and status that were copied and on the
   source still being live. This is the one instant ownership changes hands; a transition that committed on the
   source in between makes it fail, and nothing has moved.
3. **activate**: turn the target's copy ``active`` (live), conditional on it still being the incoming copy of the
   committed version.

Each side's audit chain records it: ``transfer-out`` on the source after 2, ``transfer-in`` on the target after 3
(written here; the stream's consumer skips the records of a move, projection.py).

What this guarantees: the payment is never live in both accounts (the target's copy becomes live only after the
source stopped being live), and never lost: before 2 it is live in the source; after 2 both sides record where it
went, and re-running ``transfer_payment`` with the same arguments (after a crash at any step, or twice) completes
the move, performing only the steps still missing. What it cannot avoid: between 2 and 3 it is live in *neither*
account; a crash there leaves it so until the transfer is re-run, which is why a crash-safe caller retries it
(and why ``TransferResult.steps`` says which steps a call performed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pynamodb.exceptions import DoesNotExist, PutError

from payment_examples.accounts.registry import AccountRegistry
from payment_examples.audit import PaymentProjector, recorded_version
from payment_examples.core import Clock, SystemClock, identifier, logger
from payment_examples.core.errors import (
    CONDITIONAL_CHECK_FAILED,
    ConflictError,
    PaymentMovedError,
    ValidationError,
    VersionConflictError,
    error_code,
)
from payment_examples.payments.service import (
    PaymentService,
    audit_entity,
    audit_snapshot,
    transfer_in_detail,
    update_unversioned,
)
from payment_examples.tables.models import TRANSFER_LIVE, Payment, TransferAttribute, merchant_status_key

STEPS = ("copied", "committed", "source-audited", "activated", "target-audited")
MOVED_OUT, INCOMING = "moved-out", "incoming"
# Every attribute a copy carries over. Not the version nor `transitions`: the target's copy starts at version
# 1 with no transition of its own, its audit chain there starts with "transfer-in", and its transaction history
# (and the source's audit chain) stay in the source account.
_COPIED = ("merchant_id", "idempotency_key", "amount", "currency", "status", "captured_amount", "refunded_amount",
           "customer_id", "description", "metadata", "created_at", "created_key", "settlement",
           "settlement_rows")  # fmt: skip


class TransferConflictError(ConflictError):
    """The target account already holds a live payment with this id: nothing was moved."""


@dataclass(frozen=True)
class TransferResult:
    payment_id: str
    source: str
    target: str
    source_payment: Payment  # moved-out
    target_payment: Payment  # live
    steps: tuple[str, ...]  # the steps this call performed (empty: the move was already complete)


def transfer_payment(
    payment_id: str,
    *,
    merchant_id: str,
    source: str,
    target: str,
    accounts: AccountRegistry,
    actor: str = "transfer",
    clock: Clock | None = None,
    on_step: Callable[[str], None] | None = None,
) -> TransferResult:
    """Move the merchant's payment from account ``source`` to ``target`` (names in ``accounts``). Idempotent and
    resumable: see the module docstring. ``on_step`` is called after each step it performs (``STEPS``)."""
    identifier("payment_id", payment_id)
    identifier("merchant_id", merchant_id)
    identifier("actor", actor)
    if source == target:
        raise ValidationError("target", "must be another account than the source")
    clock = clock or SystemClock()
    src = PaymentService(models=accounts.models(source), clock=clock)
    dst = PaymentService(models=accounts.models(target), clock=clock)
    source_id, target_id = accounts.account(source).account_id, accounts.account(target).account_id
    done: list[str] = []

    def step(name: str) -> None:
        done.append(name)
        if on_step is not None:
            on_step(name)

    payment = src.read_payment(merchant_id, payment_id)
    if payment.live:
        if _copy(dst, payment, source_id, clock):
            step("copied")
        _commit(payment, target_id, clock)
        step("committed")
        payment = src.read_payment(merchant_id, payment_id)
    elif payment.transfer.state != MOVED_OUT or payment.transfer.peer_account != target_id:
        raise PaymentMovedError(payment_id, payment.transfer.state)  # arriving here, or gone to a third account
    if _audit_out(src, payment, actor, target_id):
        step("source-audited")
    if _activate(dst, payment, source_id, clock):
        step("activated")
    arrived = dst.read_payment(merchant_id, payment_id)
    if _audit_in(dst, arrived, actor):
        step("target-audited")
    logger.info("payment transferred", payment_id=payment_id, merchant_id=merchant_id, source=source, target=target,
                steps=done)  # fmt: skip
    return TransferResult(payment_id, source, target, payment, arrived, tuple(done))


def _stored(Model: type[Payment], payment_id: str) -> Payment | None:
    try:
        return Model.get(payment_id, consistent_read=True)
    except DoesNotExist:
        return None


def _copy(dst: PaymentService, payment: Payment, source_id: str, clock: Clock) -> bool:
    """Step 1; False when the target already holds the incoming copy of this version."""
    Model = dst.models.payment
    existing = _stored(Model, payment.id)
    if existing is not None:
        state = existing.transfer.state if existing.transfer is not None else TRANSFER_LIVE
        if state == TRANSFER_LIVE:
            raise TransferConflictError(f"payment {payment.id!r} is already live in the target account")
        if state == INCOMING and int(existing.transfer.source_version) == payment.version:
            return False
    now = clock.now()
    copy = Model(
        payment.id,
        **{name: getattr(payment, name) for name in _COPIED},
        updated_at=now,
        merchant_status=merchant_status_key(payment.merchant_id, "transfer-incoming"),
        transfer=TransferAttribute(state=INCOMING, peer_account=source_id, source_version=payment.version, at=now),
    )
    try:
        if existing is None:
            copy.save(condition=Model.id.does_not_exist())
        else:  # an older incoming copy, or the payment's record from when it left this account earlier
            copy.version = existing.version
            copy.save(condition=Model.transfer.state.is_in(INCOMING, MOVED_OUT))  # and on the version
    except PutError as error:
        if error_code(error) == CONDITIONAL_CHECK_FAILED:
            raise VersionConflictError(payment.id, payment.version) from None  # a concurrent transfer
        raise
    return True


def _commit(payment: Payment, target_id: str, clock: Clock) -> None:
    """Step 2: the source stops being live, if it is still the version that was copied. The version is not
    bumped (transaction ids are derived from versions), so the condition names it instead."""
    Model = type(payment)
    now = clock.now()
    actions = [
        Model.transfer.set(TransferAttribute(state=MOVED_OUT, peer_account=target_id, source_version=payment.version,
                                             at=now)),
        Model.merchant_status.set(merchant_status_key(payment.merchant_id, "transferred")),
        Model.updated_at.set(now),
    ]  # fmt: skip
    live = Model.transfer.does_not_exist() | (Model.transfer.state == TRANSFER_LIVE)
    update_unversioned(Model, payment.id, payment.version, actions, live)


def _audit_out(src: PaymentService, payment: Payment, actor: str, target_id: str) -> bool:
    # The source's stream consumer may not have projected the payment's last changes yet: they are projected from
    # the payment's kept history first (idempotent with the consumer), so "transfer-out" follows them in the chain.
    PaymentProjector(models=src.models, audit=src.audit).catch_up(payment)
    entity = audit_entity(payment.id)
    event_id = f"out-v{payment.version}"
    head = src.audit.head(entity)
    if head is not None and head.event_id == event_id:
        return False
    src.audit.track(
        entity, "transfer-out", actor, detail={"target_account": target_id, "version": payment.version},
        event_id=event_id, known_head=head,
    )  # fmt: skip
    return True


def _audit_in(dst: PaymentService, arrived: Payment, actor: str) -> bool:
    entity = audit_entity(arrived.id)
    head = dst.audit.head(entity)
    if recorded_version(head) >= arrived.version:
        return False
    dst.audit.track(
        entity, "transfer-in", actor, after=audit_snapshot(arrived), detail=transfer_in_detail(arrived),
        event_id=f"v{arrived.version}", known_head=head,
    )  # fmt: skip
    return True


def _activate(dst: PaymentService, payment: Payment, source_id: str, clock: Clock) -> bool:
    """Step 3; False when the copy is already live."""
    Model = dst.models.payment
    copy = _stored(Model, payment.id)
    transfer = copy.transfer if copy is not None else None
    ours = transfer is not None and transfer.peer_account == source_id and transfer.source_version == payment.version
    if not ours:
        raise TransferConflictError(f"the target account holds no copy of payment {payment.id!r} to activate")
    if transfer.state == TRANSFER_LIVE:
        return False
    actions = [
        Model.transfer.state.set(TRANSFER_LIVE),
        Model.merchant_status.set(merchant_status_key(copy.merchant_id, copy.status)),
        Model.updated_at.set(clock.now()),
    ]
    update_unversioned(Model, payment.id, copy.version, actions, Model.transfer.state == INCOMING)
    return True
