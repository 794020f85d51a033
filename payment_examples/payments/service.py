"""Domain operations on payments: create (idempotent per merchant), read (merchant-scoped) and the transitions
authorize / capture / refund / void / fail / chargeback, each ONE conditional write of the payment.

The payment item is the commit point of every change and carries its record: ``Payment.transitions`` keeps the
change that produced each of its last versions (who, why, the request id, the amount and its detail). Transactions
and the hash-chained audit trail are projections of the table's stream (projection.py, the consumer in
handlers/stream.py), so a change is never half-written and nothing on the request path repairs anything. Reads
say what they read: ``transactions`` the projection, completed from the payment itself for versions the consumer
has not projected yet.

Hot paths use single conditional writes, never ``TransactWriteItems`` (twice the write units on DynamoDB, and on
moto its cost grows with all the data held).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError
from pynamodb.exceptions import DoesNotExist, UpdateError
from pynamodb.expressions.condition import And, Condition
from pynamodb.expressions.update import Action

from payment_examples.audit import AUDITED_FIELDS, AuditRecord, AuditTracker, audit_entity
from payment_examples.core import (
    Clock,
    IdFactory,
    RandomIds,
    Settings,
    SystemClock,
    currency_exponent,
    identifier,
    logger,
    optional_text,
    validate_amount,
)
from payment_examples.core import metadata as validate_metadata
from payment_examples.core.errors import (
    CONDITIONAL_CHECK_FAILED,
    DuplicatePaymentError,
    IllegalTransitionError,
    PaymentMovedError,
    PaymentNotFoundError,
    ValidationError,
    VersionConflictError,
    error_code,
)
from payment_examples.payments.state_machine import Balances, Operation, PaymentStatus, plan_transition
from payment_examples.tables.models import (
    REQUESTS_LIMIT,
    TRANSFER_LIVE,
    BoundModels,
    Payment,
    ProcessorCallAttribute,
    Transaction,
    TransitionAttribute,
    created_key,
    get_models,
    keep_latest,
    merchant_status_key,
    payment_id_for,
    transaction_id_for,
)

MAX_DESCRIPTION_LENGTH = 500
__all__ = ["AUDITED_FIELDS", "CreateResult", "PaymentService", "TransactionView", "audit_entity"]


# What another pattern commits atomically with a transition (same UpdateItem): given the payment as read, extra
# update actions and an extra condition. Reconciliation uses it to record the settlement row that caused it.
WriteExtension = Callable[[Payment], tuple[list[Action], Condition | None]]


@dataclass(frozen=True)
class CreateResult:
    payment: Payment
    replayed: bool  # True when the (merchant, idempotency key) pair had already created this payment


@dataclass(frozen=True)
class TransactionView:
    """One transition of a payment as ``PaymentService.transactions`` reads it. ``source``: "projection" (the
    Transactions table, written by the stream's consumer) or "payment" (the payment's own record of a change the
    consumer has not projected yet: a read right after a write sees the write)."""

    id: str
    payment_id: str
    payment_version: int
    type: str
    amount: int
    currency: str
    actor: str
    from_status: str | None
    to_status: str
    processed_at: datetime
    reason: str | None
    source: str

    @classmethod
    def projected(cls, item: Transaction) -> TransactionView:
        entry = item.audit_trail[0] if item.audit_trail else None
        return cls(
            item.id, item.payment_id, int(item.payment_version), item.type, int(item.amount), item.currency,
            entry.actor if entry else "", entry.from_status if entry else None, entry.to_status if entry else "",
            item.processed_at, entry.detail if entry else None, "projection",
        )  # fmt: skip

    @classmethod
    def from_payment(cls, payment: Payment, transition: TransitionAttribute) -> TransactionView:
        version = int(transition.version)
        return cls(
            transaction_id_for(payment.id, version), payment.id, version, transition.type, int(transition.amount),
            payment.currency, transition.actor, transition.from_status, transition.to_status, transition.at,
            transition.reason, "payment",
        )  # fmt: skip


def _details(payment: Payment) -> tuple:
    """What a repeat of the same create request must match (everything the client sent)."""
    metadata = payment.metadata.as_dict() if payment.metadata is not None else None
    return (payment.merchant_id, payment.idempotency_key, int(payment.amount), payment.currency,
            payment.customer_id, payment.description, metadata or None, payment.payment_method)  # fmt: skip


def audit_snapshot(payment: Payment) -> dict:
    """The payment's audited fields as plain values (what an audit entry diffs)."""
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
    payment changed since it was read or ``condition`` does not hold. Only for bookkeeping that is not a change of
    the payment (the processor call in flight, the settlement rows seen): the stream's consumer records nothing
    for it (projection.BOOKKEEPING)."""
    try:
        Model._get_connection().update_item(
            payment_id, actions=actions, condition=all_of(Model.version == version, condition)
        )
    except UpdateError as error:
        if error_code(error) == CONDITIONAL_CHECK_FAILED:
            raise VersionConflictError(payment_id, version) from None
        raise


def put_new(payment: Payment) -> Payment | None:
    """Put ``payment`` if its id is free: None when it was written, else the stored payment, from the failed put's
    ``ALL_OLD`` image (one round trip; an engine that returns no image, dynalite, costs a consistent read)."""
    Model = type(payment)
    connection = Model._get_connection().connection
    try:
        connection.client.put_item(
            TableName=Model.Meta.table_name,
            Item=payment.serialize(),
            ConditionExpression="attribute_not_exists(#id)",
            ExpressionAttributeNames={"#id": "id"},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as error:
        if error_code(error) != CONDITIONAL_CHECK_FAILED:
            raise
        item = error.response.get("Item")
        if item is None:
            return Model.get(payment.id, consistent_read=True)
        return Model.from_raw_data(item)
    return None


def _own_create(existing: Payment, ours: Payment) -> bool:
    """Whether ``existing`` is the item ``ours`` put (its create's write token): a concurrent duplicate with the
    same details, even at the same instant, carries another token."""
    first = existing.transitions[0] if existing.transitions else None
    return first is not None and first.version == 1 and first.write_token == ours.transitions[0].write_token


def transfer_in_detail(payment: Payment) -> dict[str, str | int]:
    return {"source_account": payment.transfer.peer_account, "source_version": int(payment.transfer.source_version)}


def kept_history(payment: Payment, change: TransitionAttribute) -> list[TransitionAttribute]:
    """The payment's kept changes with ``change`` appended, the oldest dropped beyond ``HISTORY_LIMIT``."""
    return keep_latest(payment.transitions, change)


def requests_of(payment: Payment) -> dict[str, dict[str, Any]]:
    """A copy of ``Payment.requests`` (plain values): Idempotency-Key -> {"v": version, "op": operation}."""
    raw = payment.requests
    found = raw.as_dict() if hasattr(raw, "as_dict") else dict(raw or {})
    return {str(key): dict(value) for key, value in found.items() if isinstance(value, Mapping)}


def requests_with(payment: Payment, request_key: str, version: int, operation: str) -> dict[str, dict[str, Any]]:
    """``Payment.requests`` with ``request_key``'s change (``version``, ``operation``) added, the oldest (by version)
    dropped beyond ``REQUESTS_LIMIT``."""
    kept = requests_of(payment)
    kept[request_key] = {"v": version, "op": operation}
    if len(kept) > REQUESTS_LIMIT:
        latest = sorted(kept.items(), key=lambda item: int(item[1].get("v") or 0))[-REQUESTS_LIMIT:]
        kept = dict(latest)
    return kept


def _detail(values: Mapping[str, Any] | None) -> dict[str, str] | None:
    """A change's detail as stored: strings (the audit entry shows them as they are)."""
    return {str(k): str(v) for k, v in values.items()} if values else None


class PaymentService:
    """Payment operations. Models (hence tables and endpoint), clock and audit tracker are injectable; by default
    the models bound to the settings in force at call time are used, so ``local_aws()`` redirects a service built
    earlier. Every create and transition is one conditional write of the payment that also records the change;
    the stream's consumer projects Transactions and the audit trail (``audit``, read-only here) from it."""

    def __init__(
        self,
        *,
        models: BoundModels | None = None,
        settings: Settings | None = None,
        clock: Clock | None = None,
        audit: AuditTracker | None = None,
        ids: IdFactory | None = None,
    ) -> None:
        self._models = models
        self._settings = settings
        self.clock = clock or SystemClock()
        self.ids = ids or RandomIds()  # the creates' write tokens (seeded ids make a notebook's items reproducible)
        self.audit = audit or AuditTracker(models=models, settings=settings, clock=self.clock)

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
        (``replayed=True``, answered from the failed put's ``ALL_OLD`` image: still one round trip); a repeat with
        different details raises ``DuplicatePaymentError``. The put records the change (``create`` by ``actor``,
        default: the merchant) that the stream's consumer makes the first audit entry of. ``payment_method`` and
        ``processor_call`` (checkout.py): the card to authorise and the authorisation about to be sent, written in
        the same put.
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
            transitions=[
                TransitionAttribute(
                    type="create",
                    amount=amount,
                    actor=actor,
                    to_status=PaymentStatus.PENDING.value,
                    at=now,
                    version=1,
                    request_id=request_id,
                    write_token=self.ids.new_id().replace("-", "")[:16],
                )  # fmt: skip
            ],
            version=1,
        )
        existing = put_new(payment)
        if existing is not None and _own_create(existing, payment):
            existing = None  # our own put landed and only its answer was lost: the SDK's retry found it
        if existing is None:
            logger.info(
                "payment created", payment_id=payment_id, merchant_id=merchant_id, amount=amount, currency=currency
            )
            return CreateResult(payment, replayed=False)
        same = _details(existing) == (
            merchant_id, idempotency_key, amount, currency, customer_id, description, metadata, payment_method,
        )  # fmt: skip
        if not same:
            raise DuplicatePaymentError(merchant_id, idempotency_key, payment_id)
        if not existing.live:
            raise PaymentMovedError(payment_id, existing.transfer.state)
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

    def reverse_chargeback(
        self,
        merchant_id: str,
        payment_id: str,
        *,
        actor: str,
        amount: int | None = None,
        reason: str | None = None,
        expected_version: int | None = None,
    ) -> Payment:
        """The merchant won the dispute: the money is back and the payment is captured (or partially refunded)."""
        return self._transition(
            merchant_id,
            payment_id,
            Operation.REVERSE_CHARGEBACK,
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
        request_key: str | None = None,
    ) -> Payment:
        """Any operation of the state machine; ``extend`` adds actions and a condition to the same conditional
        update, so whatever it writes commits (or fails) together with the transition. ``current``: the payment as
        the caller just read it (saves the read; the update is still conditional on its version).
        ``audit_detail``: context for the audit entry (e.g. the settlement file and line that caused it).
        ``resolves_call``: the key of the processor call whose answer this transition applies (checkout.py); any
        other transition is refused while a processor call is in flight. ``request_key``: the Idempotency-Key of
        the API request this change is made for, recorded in ``Payment.requests`` by the same write."""
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
            request_key=request_key,
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
        request_key: str | None = None,
    ) -> Payment:
        identifier("actor", actor)
        if request_key is not None:
            identifier("request_key", request_key)
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
        read_version = payment.version
        plan = plan_transition(
            payment_id,
            payment.status,
            Balances(int(payment.amount), int(payment.captured_amount), int(payment.refunded_amount)),
            operation,
            amount,
        )
        now = self.clock.now()
        Model = type(payment)
        # The update is the commit point and the whole of the change: conditional on the version read (optimistic
        # locking: a concurrent writer makes it fail and nothing is written), and it appends the change's record
        # (who, why, the request, the amount, the detail, the new version) to the payment's kept history. The
        # stream's consumer projects the audit entry and the Transaction from it (projection.py).
        change = TransitionAttribute(
            type=operation.value, amount=plan.amount, actor=actor, from_status=plan.from_status.value,
            to_status=plan.to_status.value, at=now, reason=reason, version=read_version + 1,
            request_id=request_id, detail=_detail(audit_detail),
        )  # fmt: skip
        extra_actions, extra_condition = extend(payment) if extend is not None else ([], None)
        if request_key is not None:  # the request -> change link, durable: a read-modify-write of the whole map
            # under the version condition below (a concurrent change of the map fails it, and nothing is written)
            requests = requests_with(payment, request_key, read_version + 1, operation.value)
            extra_actions = [*extra_actions, Model.requests.set(requests)]
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
                    Model.transitions.set(kept_history(payment, change)),
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

    # -- reading the projections -----------------------------------------------------------------------------

    def transactions(self, merchant_id: str, payment_id: str) -> list[TransactionView]:
        """The payment's transitions in order: the projected Transactions (``source="projection"``), then those
        the stream's consumer has not projected yet, from the payment's own kept history (``source="payment"``),
        so a read right after a write sees the write. One consistent read of the payment and one query."""
        payment = self.read_payment(merchant_id, payment_id)
        found = [TransactionView.projected(t) for t in self.models.transaction.by_payment.query(payment_id)]
        found.sort(key=lambda t: t.payment_version)
        projected = {t.payment_version for t in found}
        for change in payment.transitions or ():
            if change.type != "create" and int(change.version) not in projected:
                found.append(TransactionView.from_payment(payment, change))
        return found

    def audit_trail(self, merchant_id: str, payment_id: str) -> list[AuditRecord]:
        """The payment's audit entries in order, as far as the stream's consumer has projected them (entry
        ``v<n>`` records version n; ``payment.version`` says how far the payment is)."""
        self.read_payment(merchant_id, payment_id)
        return list(self.audit.history(audit_entity(payment_id)))
