"""Authorise and capture through the card processor without ever charging twice or losing a charge.

The processor is the one side effect we cannot undo or make conditional, so the flow is built around one rule:
**before a request is sent, the payment records it** (``Payment.processor_call``: the operation, the idempotency key
sent, the amount), and the transition that applies the processor's answer removes that record in the same
conditional write. A payment with a call recorded is therefore one whose answer we may not have seen, and every
path that meets one (the client's retry, a capture, ``recover``) resolves it the same way: ask the processor what
it did under that key (``find``), re-send under the same key only if it did nothing, then apply the answer.

The payment is also the request's idempotency record: a repeat of the create finds it (the failed put's ``ALL_OLD``
image, one round trip). While the call recorded on it is within its lease the request that recorded it may still
be waiting for the processor, so the repeat is answered 409 (``IdempotencyInProgressError``, with ``Retry-After``);
a request that gives up (a processor timeout: 503) ends its lease, and a later repeat resolves the call.

Round trips of a fresh create with a card (see notebook 07 for their measured share): the payment put (which also
records the authorisation about to be sent), the processor, and the payment update (authorized, the call removed).
Its Transaction and audit entries are projected from the table's stream (projection.py). A replay is one put.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action

from payment_examples.checkout.processor import (
    AUTHORIZE,
    CAPTURE,
    Charge,
    Processor,
    processor_key,
    validate_payment_method,
)
from payment_examples.core import Clock, logger
from payment_examples.core.errors import (
    IdempotencyInProgressError,
    IllegalTransitionError,
    PaymentExamplesError,
    ProcessorTimeoutError,
    ProcessorUnavailableError,
    VersionConflictError,
)
from payment_examples.idempotency import FinalError
from payment_examples.payments import Balances, Operation, PaymentStatus, plan_transition
from payment_examples.payments.service import PaymentService, update_unversioned
from payment_examples.tables.models import Payment, ProcessorCallAttribute, payment_id_for

# Where a worker can stop (a crash, a kill): ``on_step`` is called after each; tests kill a real process there.
# How long a request may wait for the processor before a repeat of it takes the call over (the process handler
# passes the invocation's remaining time instead).
DEFAULT_LEASE = timedelta(seconds=30)
STEPS = ("created", "authorize-sent", "authorized", "capture-marked", "capture-sent", "captured")


class PaymentDeclinedError(FinalError, PaymentExamplesError):
    """The processor declined the card: a final outcome (402), stored by the idempotency middleware and replayed to
    every repeat of the request. The payment is ``failed`` with the decline code as its reason."""

    http_status = 402
    title = "Payment declined"

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message, **details)

    def problem_extra(self) -> dict[str, Any]:
        return {"payment_id": self.details.get("payment_id"), "decline_code": self.details.get("decline_code")}


@dataclass(frozen=True)
class CheckoutResult:
    payment: Payment
    replayed: bool  # the payment existed already (a retry, after a timeout or a lost response)
    charge: Charge | None  # the processor's answer applied by this call (None: it had been applied before)


class Checkout:
    """Create-and-authorise and capture through ``processor``. ``throttle_attempts``: how many times a throttled
    processor request is sent (backoff with full jitter between them) before ``ProcessorUnavailableError``."""

    def __init__(
        self,
        service: PaymentService,
        processor: Processor,
        *,
        throttle_attempts: int = 4,
        lease: timedelta = DEFAULT_LEASE,
        base_delay: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        on_step: Callable[[str, Payment], None] | None = None,
    ) -> None:
        if throttle_attempts < 1:
            raise ValueError("throttle_attempts must be at least 1")
        self.service = service
        self.processor = processor
        self.throttle_attempts = throttle_attempts
        if lease <= timedelta(0):
            raise ValueError("lease must be positive")
        self.lease = lease
        self.base_delay = base_delay
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._on_step = on_step
        self.throttled = 0  # processor requests refused by throttling and sent again

    @property
    def clock(self) -> Clock:
        return self.service.clock

    # -- create and authorise ----------------------------------------------------------------------------------

    def create_and_authorize(
        self,
        merchant_id: str,
        idempotency_key: str,
        amount: int,
        currency: str,
        payment_method: str,
        *,
        customer_id: str | None = None,
        description: str | None = None,
        metadata: dict[str, str] | None = None,
        actor: str | None = None,
        request_id: str | None = None,
        lease: timedelta | None = None,
    ) -> CheckoutResult:
        """Create the payment and authorise it: ``authorized``, or ``PaymentDeclinedError`` (the payment is then
        ``failed``). A retry of the same request resolves an authorisation whose answer was lost (a timeout, a
        crash) from the processor's record instead of sending it again; a repeat while the first is still in flight
        (within ``lease``, default the checkout's) is ``IdempotencyInProgressError``."""
        validate_payment_method(payment_method)
        payment_id = payment_id_for(merchant_id, idempotency_key)
        now = self.clock.now()
        call = ProcessorCallAttribute(
            operation=AUTHORIZE, key=processor_key(payment_id, AUTHORIZE), amount=amount, started_at=now,
            lease_until=now + (lease or self.lease),
        )  # fmt: skip
        created = self.service.create_payment(
            merchant_id, idempotency_key, amount, currency, customer_id=customer_id, description=description,
            metadata=metadata, actor=actor, request_id=request_id, payment_method=payment_method,
            processor_call=call,
        )  # fmt: skip
        payment = created.payment
        self._step("created", payment)
        charge = None
        # Only the create's own authorisation is this request's business: a repeat that finds a later call recorded
        # (a capture in flight or whose answer was lost) answers with the payment as it is.
        if payment.processor_call is not None and payment.processor_call.operation == AUTHORIZE:
            if created.replayed:
                self._refuse_if_in_flight(payment.processor_call)
            try:
                payment, charge = self.resolve(payment, fresh=not created.replayed, request_id=request_id)
            except (ProcessorUnavailableError, ProcessorTimeoutError):
                self._end_lease(payment)  # the client's retry may resolve it now
                raise
        _raise_if_declined(payment)
        return CheckoutResult(payment, created.replayed, charge)

    def _refuse_if_in_flight(self, call: ProcessorCallAttribute) -> None:
        """409 while the request that recorded ``call`` may still be waiting for the processor's answer."""
        lease_until = call.lease_until
        now = self.clock.now()
        if lease_until is not None and lease_until > now:
            raise IdempotencyInProgressError(max(1, math.ceil((lease_until - now).total_seconds())))

    def _end_lease(self, payment: Payment) -> None:
        """Give the call recorded on ``payment`` up to the next request (best effort: else the lease runs out)."""
        call, Model = payment.processor_call, type(payment)
        try:
            ended = [Model.processor_call.lease_until.set(self.clock.now())]
            update_unversioned(Model, payment.id, payment.version, ended, Model.processor_call.key == call.key)
        except Exception as error:  # noqa: BLE001 (the lease expires by itself)
            logger.warning("could not end a processor call's lease", payment_id=payment.id,
                           error_type=type(error).__name__)  # fmt: skip

    # -- capture -----------------------------------------------------------------------------------------------

    def capture(self, merchant_id: str, payment_id: str, *, actor: str, amount: int | None = None) -> CheckoutResult:
        """Capture an authorised payment at the processor, then record it (default: the whole amount). A capture
        whose answer was lost is resolved first; a payment already captured by it is returned as it is."""
        payment = self.service.get_payment(merchant_id, payment_id)
        if payment.processor_call is not None:  # an earlier call's answer was lost: resolve it before anything else
            payment, charge = self.resolve(payment)
            if charge is not None and charge.operation == CAPTURE:
                return CheckoutResult(payment, True, charge)
        plan = plan_transition(
            payment.id, payment.status,
            Balances(int(payment.amount), int(payment.captured_amount), int(payment.refunded_amount)),
            Operation.CAPTURE, amount,
        )  # fmt: skip
        Model = type(payment)
        call = ProcessorCallAttribute(
            operation=CAPTURE, key=processor_key(payment.id, CAPTURE, payment.version), amount=plan.amount,
            started_at=self.clock.now(),
        )  # fmt: skip
        update_unversioned(Model, payment.id, payment.version,
                           [Model.processor_call.set(call), Model.updated_at.set(call.started_at)],
                           Model.processor_call.does_not_exist())  # fmt: skip
        payment.processor_call = call
        self._step("capture-marked", payment)
        payment, charge = self.resolve(payment, fresh=True, actor=actor)
        return CheckoutResult(payment, False, charge)

    # -- resolving a call --------------------------------------------------------------------------------------

    def resolve(
        self, payment: Payment, *, fresh: bool = False, actor: str = "processor", request_id: str | None = None
    ) -> tuple[Payment, Charge | None]:
        """Finish the processor call recorded on ``payment``: its answer from the processor's record (``find``)
        unless ``fresh`` (we recorded it a moment ago and have sent nothing), else sent now under the recorded key,
        then applied. Returns the payment as it ends and the answer applied (None if another worker applied it)."""
        call = payment.processor_call
        if call is None:
            return payment, None
        charge = None if fresh else self.processor.find(call.key)
        if charge is None:
            charge = self._send(payment, call)
        self._step(f"{call.operation}-sent", payment)
        try:
            payment = self._apply(payment, call, charge, actor=actor, request_id=request_id)
        except VersionConflictError:
            # Another worker (a retry, recover) applied it first, or the payment changed: read what it is now.
            current = self.service.read_payment(payment.merchant_id, payment.id)
            if current.processor_call is not None and current.processor_call.key == call.key:
                raise
            return current, None
        self._step("authorized" if call.operation == AUTHORIZE else "captured", payment)
        return payment, charge

    def _send(self, payment: Payment, call: ProcessorCallAttribute) -> Charge:
        for attempt in range(self.throttle_attempts):
            try:
                if call.operation == AUTHORIZE:
                    return self.processor.authorize(
                        call.key, payment_id=payment.id, amount=int(call.amount), currency=payment.currency,
                        payment_method=payment.payment_method,
                    )  # fmt: skip
                return self.processor.capture(
                    call.key, payment_id=payment.id, authorization=payment.processor_reference,
                    amount=int(call.amount), currency=payment.currency,
                )  # fmt: skip
            except ProcessorUnavailableError:
                if attempt + 1 == self.throttle_attempts:
                    raise
                self.throttled += 1
                self._sleep(self._rng.uniform(0, self.base_delay * 2**attempt))
        raise AssertionError("unreachable")

    def _apply(
        self, payment: Payment, call: ProcessorCallAttribute, charge: Charge, *, actor: str, request_id: str | None
    ) -> Payment:
        Model = type(payment)

        def settle(_: Payment) -> tuple[list[Action], Condition | None]:
            actions = [Model.processor_call.remove()]
            if call.operation == AUTHORIZE and charge.approved:
                actions.append(Model.processor_reference.set(charge.reference))
            return actions, Model.processor_call.key == call.key

        detail: dict[str, str | int] = {"processor_reference": charge.reference}
        if call.operation == AUTHORIZE:
            operation, amount = (Operation.AUTHORIZE, None) if charge.approved else (Operation.FAIL, None)
        elif charge.approved:
            operation, amount = Operation.CAPTURE, int(call.amount)
        else:  # a declined capture changes nothing but the record of the call
            update_unversioned(Model, payment.id, payment.version, *settle(payment))
            payment.processor_call = None
            raise IllegalTransitionError(payment.id, payment.status, "capture", f"declined: {charge.decline_code}")
        if not charge.approved:
            detail["decline_code"] = charge.decline_code or "declined"
        payment = self.service.transition(
            payment.merchant_id, payment.id, operation, actor=actor, amount=amount,
            reason=None if charge.approved else charge.decline_code, extend=settle, current=payment,
            audit_detail=detail, request_id=request_id, resolves_call=call.key,
        )  # fmt: skip
        payment.processor_call = None
        logger.info("processor answer applied", payment_id=payment.id, operation=call.operation,
                    approved=charge.approved, reference=charge.reference)  # fmt: skip
        return payment

    def _step(self, step: str, payment: Payment) -> None:
        if self._on_step is not None:
            self._on_step(step, payment)


def _raise_if_declined(payment: Payment) -> None:
    transition = payment.last_transition
    if payment.status == PaymentStatus.FAILED.value and transition is not None and transition.actor == "processor":
        raise PaymentDeclinedError(
            f"the card was declined: {transition.reason}", payment_id=payment.id, decline_code=transition.reason
        )
