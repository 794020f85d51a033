"""Domain operations on payments: create (idempotent per merchant), read (merchant-scoped) and the transitions
authorize / capture / refund / void / fail, each guarded by optimistic locking and recorded as a Transaction.

Hot paths use single conditional writes, never ``TransactWriteItems`` (twice the write units on DynamoDB, and on
moto its cost grows with all the data held).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pynamodb.exceptions import DoesNotExist, PutError, UpdateError
from pynamodb.expressions.condition import And, Condition
from pynamodb.expressions.update import Action

from payment_examples.clock import Clock, SystemClock
from payment_examples.config import Settings
from payment_examples.errors import (
    CONDITIONAL_CHECK_FAILED,
    DuplicatePaymentError,
    IllegalTransitionError,
    PaymentMovedError,
    PaymentNotFoundError,
    ValidationError,
    VersionConflictError,
    error_code,
)
from payment_examples.logs import logger
from payment_examples.models import (
    TRANSFER_LIVE,
    AuditEntry,
    BoundModels,
    Payment,
    ProcessorCallAttribute,
    Transaction,
    TransitionAttribute,
    created_key,
    get_models,
    merchant_status_key,
    payment_id_for,
    transaction_id_for,
)
from payment_examples.money import currency_exponent, validate_amount
from payment_examples.state_machine import Balances, Operation, PaymentStatus, plan_transition
from payment_examples.utils.audit import UNREAD, AuditRecord, AuditTracker
from payment_examples.validation import identifier, optional_text
from payment_examples.validation import metadata as validate_metadata

MAX_DESCRIPTION_LENGTH = 500


# What another pattern commits atomically with a transition (same UpdateItem): given the payment as read, extra
# update actions and an extra condition. Reconciliation uses it to record the settlement row that caused it.
WriteExtension = Callable[[Payment], tuple[list[Action], Condition | None]]


@dataclass(frozen=True)
class CreateResult:
    payment: Payment
    replayed: bool  # True when the (merchant, idempotency key) pair had already created this payment


def _details(payment: Payment) -> tuple:
    """What a repeat of the same create request must match (everything the client sent)."""
    metadata = payment.metadata.as_dict() if payment.metadata is not None else None
    return (payment.merchant_id, payment.idempotency_key, int(payment.amount), payment.currency,
            payment.customer_id, payment.description, metadata or None, payment.payment_method)  # fmt: skip


# What a payment's audit entries show and diff (utils/audit.py shows only its allow-list of these values).
AUDITED_FIELDS = ("status", "amount", "currency", "captured_amount", "refunded_amount", "merchant_id",
                  "customer_id", "description", "metadata")  # fmt: skip


def audit_entity(payment_id: str) -> str:
    return f"payment#{payment_id}"


def audit_snapshot(payment: Payment) -> dict:
    """The payment's audited fields as plain values (the audit tracker diffs two of these)."""
    values = {name: getattr(payment, name) for name in AUDITED_FIELDS}
    if values["metadata"] is not None:
        values["metadata"] = values["metadata"].as_dict()
    return values


class AllOf(Condition):
    """A conjunction rendered flat, ``(a AND b AND c)``: PynamoDB's ``&`` wraps every pair in parentheses, and
    dynalite's expression parser takes time exponential in that nesting (a transition's six-clause condition cost
    100-300 ms a write there, flat about 10 ms; DynamoDB does not mind either way)."""

    def __init__(self, *conditions: Condition) -> None:
        super().__init__("AND", *conditions)
        self.format_string = "(" + " {operator} ".join(f"{{{i}}}" for i in range(len(conditions))) + ")"


def all_of(*conditions: Condition | None) -> Condition | None:
    """The conjunction of ``conditions`` (None skipped, nested ANDs flattened) as one flat ``AllOf``."""
    flat: list[Condition] = []
    pending = [c for c in conditions if c is not None]
    while pending:
        condition = pending.pop(0)
        if isinstance(condition, And | AllOf):
            pending[:0] = condition.values
        else:
            flat.append(condition)
    if len(flat) < 2:
        return flat[0] if flat else None
    return AllOf(*flat)


def update_unversioned(
    Model: type[Payment], payment_id: str, version: int, actions: list[Action], condition: Condition | None = None
) -> None:
    """A conditional ``UpdateItem`` that leaves the payment's version as it is (Transaction ids are derived from
    versions, so only transitions bump it), conditional on that version instead: ``VersionConflictError`` when the
    payment changed since it was read or ``condition`` does not hold."""
    try:
        Model._get_connection().update_item(
            payment_id, actions=actions, condition=all_of(Model.version == version, condition)
        )
    except UpdateError as error:
        if error_code(error) == CONDITIONAL_CHECK_FAILED:
            raise VersionConflictError(payment_id, version) from None
        raise


def recorded(head: AuditRecord | None, version: int) -> bool:
    """Whether a payment chain whose latest entry is ``head`` already records ``version``: its entries' event ids
    end with the version they record (``v<n>``, ``out-v<n>``), and are appended in version order."""
    number = (head.event_id or "").rpartition("v")[2] if head is not None else ""
    return number.isdigit() and int(number) >= version


def transfer_in_detail(payment: Payment) -> dict[str, str | int]:
    return {"source_account": payment.transfer.peer_account, "source_version": int(payment.transfer.source_version)}


class _HeadCache:
    """The audit entries this service appended last, per chain (bounded, thread-safe): the known head of the
    payment's next transition when the same container makes it (a guess: a wrong one costs a retry, never a fork)."""

    def __init__(self, size: int = 1024) -> None:
        self._entries: OrderedDict[str, AuditRecord] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, entity: str, version: int) -> AuditRecord | object:
        with self._lock:
            record = self._entries.get(entity)
        if record is None or record.event_id != f"v{version}":
            return UNREAD
        return record

    def put(self, entity: str, record: AuditRecord) -> None:
        with self._lock:
            self._entries[entity] = record
            self._entries.move_to_end(entity)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


class PaymentService:
    """Payment operations. Models (hence tables and endpoint), clock and audit tracker are injectable; by default
    the models bound to the settings in force at call time are used, so ``local_aws()`` redirects a service built
    earlier. Every create and transition is appended to the payment's hash-chained audit trail (``audit``);
    ``audited=False`` turns that off (the benchmarks compare the two)."""

    def __init__(
        self,
        *,
        models: BoundModels | None = None,
        settings: Settings | None = None,
        clock: Clock | None = None,
        audit: AuditTracker | None = None,
        audited: bool = True,
    ) -> None:
        self._models = models
        self._settings = settings
        self.clock = clock or SystemClock()
        self.audit = audit or AuditTracker(models=models, settings=settings, clock=self.clock)
        self.audited = audited
        self._heads = _HeadCache()

    @property
    def models(self) -> BoundModels:
        return self._models or get_models(self._settings)

    # -- create and read ---------------------------------------------------------------------------------------

    def create_payment(
        self,
        merchant_id: str,
        idempotency_key: str,
        amount: int,
        currency: str,
        *,
        customer_id: str | None = None,
        description: str | None = None,
        metadata: dict[str, str] | None = None,
        actor: str | None = None,
        request_id: str | None = None,
        payment_method: str | None = None,
        processor_call: ProcessorCallAttribute | None = None,
    ) -> CreateResult:
        """Create a pending payment, exactly once per (merchant, idempotency key).

        The payment id is derived from the pair, so ONE conditional put (``attribute_not_exists`` on the id) is the
        uniqueness guarantee, also under concurrency. A repeat with the same details returns the stored payment
        (``replayed=True``); a repeat with different details raises ``DuplicatePaymentError``. The payment's audit
        trail starts with a ``create`` entry by ``actor`` (default: the merchant); a replay writes it if a crash
        had left it unwritten. ``payment_method`` and ``processor_call`` (checkout.py): the card to authorise and
        the authorisation about to be sent, written in the same put.
        """
        identifier("merchant_id", merchant_id)
        identifier("idempotency_key", idempotency_key)
        validate_amount(amount)
        currency_exponent(currency)
        if customer_id is not None:
            identifier("customer_id", customer_id)
        optional_text("description", description, max_length=MAX_DESCRIPTION_LENGTH)
        metadata = validate_metadata("metadata", metadata) or None  # {} is stored as absent
        actor = identifier("actor", actor if actor is not None else merchant_id)
        if request_id is not None:
            identifier("request_id", request_id)

        Model = self.models.payment
        now = self.clock.now()
        payment_id = payment_id_for(merchant_id, idempotency_key)
        payment = Model(
            payment_id,
            merchant_id=merchant_id,
            idempotency_key=idempotency_key,
            amount=amount,
            currency=currency,
            status=PaymentStatus.PENDING.value,
            captured_amount=0,
            refunded_amount=0,
            customer_id=customer_id,
            description=description,
            metadata=metadata,
            created_at=now,
            updated_at=now,
            created_key=created_key(now, payment_id),
            merchant_status=merchant_status_key(merchant_id, PaymentStatus.PENDING),
            payment_method=payment_method,
            processor_call=processor_call,
        )
        try:
            payment.save(condition=Model.id.does_not_exist())
        except PutError as error:
            if error_code(error) != CONDITIONAL_CHECK_FAILED:
                raise
        else:
            logger.info(
                "payment created", payment_id=payment_id, merchant_id=merchant_id, amount=amount, currency=currency
            )
            self._audit_created(payment, actor, request_id, fresh=True)
            return CreateResult(payment, replayed=False)

        existing = Model.get(payment_id, consistent_read=True)
        same = _details(existing) == (
            merchant_id,
            idempotency_key,
            amount,
            currency,
            customer_id,
            description,
            metadata,
            payment_method,
        )
        if not same:
            raise DuplicatePaymentError(merchant_id, idempotency_key, payment_id)
        if not existing.live:
            raise PaymentMovedError(payment_id, existing.transfer.state)
        self._audit_created(existing, actor, request_id)
        return CreateResult(existing, replayed=True)

    def get_payment(self, merchant_id: str, payment_id: str) -> Payment:
        """The payment, if it belongs to ``merchant_id`` and is live in this account; another merchant's payment
        reads as not found, and so does one moved to another account (``PaymentMovedError``)."""
        payment = self.read_payment(merchant_id, payment_id)
        if not payment.live:
            raise PaymentMovedError(payment_id, payment.transfer.state)
        return payment

    def read_payment(self, merchant_id: str, payment_id: str) -> Payment:
        """The merchant's payment whether or not it is live here (transfers and audits read moved payments)."""
        identifier("merchant_id", merchant_id)
        identifier("payment_id", payment_id)
        try:
            payment = self.models.payment.get(payment_id, consistent_read=True)
        except DoesNotExist:
            raise PaymentNotFoundError(payment_id) from None
        if payment.merchant_id != merchant_id:
            raise PaymentNotFoundError(payment_id)
        return payment

    # -- transitions -------------------------------------------------------------------------------------------

    def authorize(
        self, merchant_id: str, payment_id: str, *, actor: str, expected_version: int | None = None
    ) -> Payment:
        return self._transition(
            merchant_id, payment_id, Operation.AUTHORIZE, actor=actor, expected_version=expected_version
        )

    def capture(
        self,
        merchant_id: str,
        payment_id: str,
        *,
        actor: str,
        amount: int | None = None,
        expected_version: int | None = None,
    ) -> Payment:
        return self._transition(
            merchant_id, payment_id, Operation.CAPTURE, actor=actor, amount=amount, expected_version=expected_version
        )

    def refund(
        self, merchant_id: str, payment_id: str, *, actor: str, amount: int, expected_version: int | None = None
    ) -> Payment:
        return self._transition(
            merchant_id, payment_id, Operation.REFUND, actor=actor, amount=amount, expected_version=expected_version
        )

    def void(
        self,
        merchant_id: str,
        payment_id: str,
        *,
        actor: str,
        reason: str | None = None,
        expected_version: int | None = None,
    ) -> Payment:
        return self._transition(
            merchant_id, payment_id, Operation.VOID, actor=actor, reason=reason, expected_version=expected_version
        )

    def fail(
        self,
        merchant_id: str,
        payment_id: str,
        *,
        actor: str,
        reason: str | None = None,
        expected_version: int | None = None,
    ) -> Payment:
        return self._transition(
            merchant_id, payment_id, Operation.FAIL, actor=actor, reason=reason, expected_version=expected_version
        )

    def chargeback(
        self,
        merchant_id: str,
        payment_id: str,
        *,
        actor: str,
        amount: int | None = None,
        reason: str | None = None,
        expected_version: int | None = None,
    ) -> Payment:
        """The card holder's bank took the money back (default: everything still held). Terminal."""
        return self._transition(
            merchant_id,
            payment_id,
            Operation.CHARGEBACK,
            actor=actor,
            amount=amount,
            reason=reason,
            expected_version=expected_version,
        )

    def transition(
        self,
        merchant_id: str,
        payment_id: str,
        operation: Operation | str,
        *,
        actor: str,
        amount: int | None = None,
        reason: str | None = None,
        expected_version: int | None = None,
        extend: WriteExtension | None = None,
        current: Payment | None = None,
        audit_detail: dict[str, str | int] | None = None,
        request_id: str | None = None,
        resolves_call: str | None = None,
    ) -> Payment:
        """Any operation of the state machine; ``extend`` adds actions and a condition to the same conditional
        update, so whatever it writes commits (or fails) together with the transition. ``current``: the payment as
        the caller just read it (saves the read; the update is still conditional on its version).
        ``audit_detail``: context for the audit entry (e.g. the settlement file and line that caused it).
        ``resolves_call``: the key of the processor call whose answer this transition applies (checkout.py); any
        other transition is refused while a processor call is in flight."""
        try:
            operation = Operation(operation)
        except ValueError:
            raise ValidationError("operation", f"unknown operation {operation!r}") from None
        return self._transition(
            merchant_id,
            payment_id,
            operation,
            actor=actor,
            amount=amount,
            reason=reason,
            expected_version=expected_version,
            extend=extend,
            current=current,
            audit_detail=audit_detail,
            request_id=request_id,
            resolves_call=resolves_call,
        )

    def _transition(
        self,
        merchant_id: str,
        payment_id: str,
        operation: Operation,
        *,
        actor: str,
        amount: int | None = None,
        reason: str | None = None,
        expected_version: int | None = None,
        extend: WriteExtension | None = None,
        current: Payment | None = None,
        audit_detail: dict[str, str | int] | None = None,
        request_id: str | None = None,
        resolves_call: str | None = None,
    ) -> Payment:
        identifier("actor", actor)
        optional_text("reason", reason, max_length=MAX_DESCRIPTION_LENGTH)
        if current is not None and current.id == payment_id and current.merchant_id == merchant_id:
            payment = current
        else:
            payment = self.get_payment(merchant_id, payment_id)
        if expected_version is not None and payment.version != expected_version:
            raise VersionConflictError(payment_id, expected_version)
        call = payment.processor_call
        if call is not None and call.key != resolves_call:
            # The processor may have acted (an authorisation held, money captured) without our knowing yet: a
            # void or a settlement now could contradict it. The call is resolved first (checkout.py, recover).
            raise IllegalTransitionError(
                payment_id, payment.status, operation, f"a processor {call.operation} is in flight; resolve it first"
            )
        self._ensure_recorded(payment)
        read_version = payment.version
        before = audit_snapshot(payment)
        plan = plan_transition(
            payment_id,
            payment.status,
            Balances(int(payment.amount), int(payment.captured_amount), int(payment.refunded_amount)),
            operation,
            amount,
        )
        now = self.clock.now()
        Model = type(payment)
        # Write order, and why it is crash-safe:
        # 1. The payment update is the commit point. It is conditional on the version we read (optimistic
        #    locking: a concurrent writer makes it fail and nothing is written) and it stores `last_transition`,
        #    everything needed to rebuild this transition's audit entry and Transaction.
        # 2. The audit entry is appended with the event id "v<new version>", then the Transaction is put under an
        #    id derived from (payment id, new version). Both are idempotent (a replay finds the event at the
        #    chain's head; the Transaction's id is fixed), and the Transaction is written last, so "Transaction
        #    present" implies "audit entry present". A crash after 1 is repaired by replaying 2: the next
        #    transition does so before it overwrites `last_transition` (`_ensure_recorded`), and so does reading
        #    the trail.
        # The reverse order could leave a Transaction for a transition that never committed, whose id a
        # different later transition would then collide with.
        # The gap this leaves: after a crash between 1 and 2 on a terminal transition (refunded, voided,
        # failed) no later transition comes to replay 2, so the Transaction appears only when the trail is read
        # (`transactions`) or `record_transaction` is called. A consumer that needs it at once should build
        # Transactions from the payments table's stream, where `last_transition` is written at the commit point.
        extra_actions, extra_condition = extend(payment) if extend is not None else ([], None)
        # Live: a transfer that commits between our read and this write leaves the version as it was.
        condition = all_of(
            Model.merchant_id == merchant_id,
            Model.transfer.does_not_exist() | (Model.transfer.state == TRANSFER_LIVE),
            Model.processor_call.does_not_exist() if resolves_call is None else None,  # nor overtake a call
            extra_condition,
            Model.version == read_version,  # optimistic locking on the version read, in the same flat AND
        )
        try:
            payment.update(
                actions=[
                    Model.status.set(plan.to_status.value),
                    Model.merchant_status.set(merchant_status_key(merchant_id, plan.to_status)),
                    Model.captured_amount.set(plan.balances.captured),
                    Model.refunded_amount.set(plan.balances.refunded),
                    Model.updated_at.set(now),
                    Model.last_transition.set(
                        TransitionAttribute(
                            type=operation.value,
                            amount=plan.amount,
                            actor=actor,
                            from_status=plan.from_status.value,
                            to_status=plan.to_status.value,
                            at=now,
                            reason=reason,
                        )
                    ),
                    *extra_actions,
                ],
                condition=condition,
                add_version_condition=False,  # it is in ``condition``; the version is still incremented
            )
        except UpdateError as error:
            if error_code(error) != CONDITIONAL_CHECK_FAILED:
                raise
            # Our own write may have landed and only its answer been lost (the client retried it, and the retry
            # failed its condition): then the payment shows exactly this transition at the next version.
            payment = self._landed(payment, read_version, plan.to_status.value, operation.value, actor, now)
        detail = dict(audit_detail or {})
        if plan.amount:
            detail["amount"] = plan.amount
        self._audit(payment, operation.value, actor, before=before, detail=detail, request_id=request_id)
        self.record_transaction(payment)
        logger.info(
            "payment transition",
            payment_id=payment_id,
            merchant_id=merchant_id,
            operation=operation.value,
            to_status=plan.to_status.value,
            version=payment.version,
        )
        return payment

    def _landed(
        self, payment: Payment, read_version: int, to_status: str, operation: str, actor: str, at: datetime
    ) -> Payment:
        """The payment as our lost-answer update left it, or ``VersionConflictError`` if someone else changed it."""
        current = type(payment).get(payment.id, consistent_read=True)
        transition = current.last_transition
        if (
            current.version == read_version + 1
            and transition is not None
            and (transition.type, transition.actor, transition.to_status, transition.at)
            == (operation, actor, to_status, at)
        ):
            logger.info("payment transition landed; its answer was lost", payment_id=payment.id)
            return current
        raise VersionConflictError(payment.id, read_version)

    # -- the transaction trail ---------------------------------------------------------------------------------

    def record_transaction(self, payment: Payment) -> Transaction | None:
        """Write the Transaction for ``payment``'s current version from its ``last_transition`` (idempotent).

        Returns None for a payment that has had no transition yet.
        """
        transition = payment.last_transition
        if transition is None:
            return None
        Model = self.models.transaction
        transaction = Model(
            transaction_id_for(payment.id, payment.version),
            payment_id=payment.id,
            merchant_id=payment.merchant_id,
            payment_version=payment.version,
            type=transition.type,
            amount=transition.amount,
            currency=payment.currency,
            status="succeeded",
            processed_at=transition.at,
            audit_trail=[
                AuditEntry(
                    at=transition.at,
                    actor=transition.actor,
                    action=transition.type,
                    from_status=transition.from_status,
                    to_status=transition.to_status,
                    detail=transition.reason,
                )
            ],
        )
        try:
            transaction.save(condition=Model.id.does_not_exist())
        except PutError as error:
            if error_code(error) != CONDITIONAL_CHECK_FAILED:
                raise
            # Already recorded (a replay): the stored item is the same transition.
        return transaction

    def _ensure_recorded(self, payment: Payment) -> None:
        """Replay the Transaction of ``payment``'s current version if a crash left it unwritten.

        One eventually consistent GetItem (half a read unit) in the normal case; only a missing item costs a put.
        Without this, the next transition would overwrite ``last_transition``, the only copy of the lost record.
        """
        if payment.last_transition is None:
            return
        try:
            self.models.transaction.get(transaction_id_for(payment.id, payment.version))
        except DoesNotExist:
            self._audit_replay(payment)
            self.record_transaction(payment)

    def transactions(self, merchant_id: str, payment_id: str) -> list[Transaction]:
        """The payment's transactions in order, repairing the latest one if a crash left it unwritten."""
        payment = self.read_payment(merchant_id, payment_id)
        Model = self.models.transaction
        found = list(Model.by_payment.query(payment_id))
        found.sort(key=lambda t: int(t.payment_version))
        if payment.last_transition is not None and (not found or int(found[-1].payment_version) != payment.version):
            self._audit_replay(payment)
            repaired = self.record_transaction(payment)
            if repaired is not None:
                found.append(repaired)
        return found

    # -- the audit trail ---------------------------------------------------------------------------------------

    def audit_trail(self, merchant_id: str, payment_id: str) -> list[AuditRecord]:
        """The payment's audit entries in order, after repairing the latest one if a crash left it unwritten."""
        payment = self.read_payment(merchant_id, payment_id)
        if payment.last_transition is not None:
            self._audit_replay(payment)
        elif payment.transfer is None:  # an arrived payment's first entry is its transfer's to write
            self._audit_created(payment, payment.merchant_id, None)
        return list(self.audit.history(audit_entity(payment_id)))

    def repair(self, payment: Payment) -> tuple[str, ...]:
        """Write what a crash after the commit left unwritten for ``payment``'s current version: its audit entry
        (``create`` at version 1) and its Transaction. Idempotent and safe beside live traffic (both writes are
        conditional and recognised on replay). Returns what it wrote: "audit", "transaction"."""
        wrote = []
        auditable = self.audited and (payment.last_transition is not None or payment.transfer is None)
        if auditable and not recorded(self.audit.head(audit_entity(payment.id)), payment.version):
            if payment.last_transition is None:
                self._audit_created(payment, payment.merchant_id, None)
            else:
                self._audit_replay(payment)
            wrote.append("audit")
        if payment.last_transition is not None:
            try:
                self.models.transaction.get(transaction_id_for(payment.id, payment.version), consistent_read=True)
            except DoesNotExist:
                self.record_transaction(payment)
                wrote.append("transaction")
        return tuple(wrote)

    def _audit_created(self, payment: Payment, actor: str, request_id: str | None, *, fresh: bool = False) -> None:
        """The ``create`` entry. ``fresh``: this call's put created the payment, so its chain is empty and the
        entry is put without reading the head first (a lost race, impossible here, would still re-read)."""
        if self.audited:
            self._audit(payment, "create", actor, before=None, detail={}, request_id=request_id,
                        known_head=None if fresh else UNREAD)  # fmt: skip

    def _audit(
        self,
        payment: Payment,
        action: str,
        actor: str,
        *,
        before: dict | None,
        detail: dict,
        request_id: str | None,
        replayed: bool = False,
        known_head: AuditRecord | None | object = UNREAD,
    ) -> AuditRecord | None:
        """Append the entry for ``payment``'s current version (event id ``v<version>``), idempotently. A chain
        that lacks its ``create`` entry (a crash right after the create's put) gets it first, rebuilt from the
        payment's fields.

        The head is read (one strongly consistent query) unless the caller knows it, or this service appended the
        entry of the version just before (kept in a small cache: the create-then-authorise flow of checkout.py
        saves the read). A stale guess costs nothing but a retry: the put is conditional on the number being free,
        and a lost put re-reads the head."""
        if not self.audited:
            return None
        entity = audit_entity(payment.id)
        event_id = f"v{payment.version}"
        if known_head is UNREAD:
            known_head = self._heads.get(entity, payment.version - 1)
        if known_head is UNREAD:
            head = self.audit.head(entity)
            if recorded(head, payment.version):
                return head
            if head is None and payment.version > 1:
                head = self._audit_first(payment)
        else:
            head = known_head
        if replayed:
            detail = {**detail, "repaired": "true"}
        record = self.audit.track(
            entity, action, actor, before=before, after=audit_snapshot(payment), detail=detail,
            request_id=request_id, event_id=event_id, known_head=head,
        )  # fmt: skip
        self._heads.put(entity, record)
        return record

    def _audit_first(self, payment: Payment) -> AuditRecord:
        """A missing first entry (event ``v1``), rebuilt: ``create``, or ``transfer-in`` for a payment that
        arrived from another account."""
        entity = audit_entity(payment.id)
        if payment.transfer is not None:
            return self.audit.track(
                entity, "transfer-in", "transfer", after=audit_snapshot(payment),
                detail={**transfer_in_detail(payment), "repaired": "true"}, event_id="v1", known_head=None,
            )  # fmt: skip
        created = {name: getattr(payment, name) for name in ("amount", "currency", "merchant_id")}
        return self.audit.track(
            entity, "create", payment.merchant_id, after={"status": PaymentStatus.PENDING.value, **created},
            detail={"repaired": "true"}, event_id="v1", known_head=None,
        )  # fmt: skip

    def _audit_replay(self, payment: Payment) -> None:
        """Append the audit entry of ``payment``'s latest transition if a crash left it unwritten: rebuilt from
        ``last_transition`` (the balances before it are not kept: the status change is shown, the amount is in the
        detail)."""
        transition = payment.last_transition
        if transition is None or not self.audited:
            return
        before = {**audit_snapshot(payment), "status": transition.from_status}
        detail = {"amount": int(transition.amount)} if transition.amount else {}
        self._audit(payment, transition.type, transition.actor, before=before, detail=detail, request_id=None,
                    replayed=True)  # fmt: skip
