"""Authorise, capture and refund through the card processor without ever charging twice or losing a charge.

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

Captures and refunds follow the same rule (``capture``, ``refund``): the call is recorded on the payment with one
conditional update (no other call in flight, the version read), sent, and applied by the transition. A call carries
the API request's ``Idempotency-Key`` (handlers/actions.py), and the change that applies it records the key whoever
applies it (in its detail, and in ``Payment.requests`` by the same write), so a retry recognises its own refund
however many changes came after (``change_by_request``). The processor key is derived from the payment, the
operation, the version and that key: a decline changes no version, so another request after it sends another key
(a caller without keys gets one per version, and must not send a declined call again at the same version: a
deduplicating processor would answer the cached decline). An approved refund is also recorded in
``Payment.processor_events`` under its processor reference, so the processor's ``charge.refunded`` notification of
it is never applied a second time (processor_events.py). A call recorded by
another request is that request's until its lease ends (resolving it sooner could send it a second time while the
processor has no record of it yet): meeting one is a 409 with ``Retry-After`` (``ProcessorCallInFlightError``).
The request's own call (the same key: the idempotency middleware lets one attempt at a time in) is resolved at
once, and so is any call met by a caller without keys (notebooks, scripts: each call is taken for its own retry).
A capture or refund throttled on every attempt reached nothing, so its call is removed; a timeout's stays.

Round trips of a fresh create with a card (see notebook 07 for their measured share): the payment put (which also
records the authorisation about to be sent), the processor, and the payment update (authorized, the call removed).
Its Transaction and audit entries are projected from the table's stream (projection.py). A replay is one put. A
capture or a refund: the read that plans it (saved when the caller passes ``current``), the update that records the
call, the processor, and the transition.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action

from payment_examples.checkout.processor import (
    AUTHORIZE,
    CAPTURE,
    REFUND,
    Charge,
    Processor,
    processor_key,
    validate_payment_method,
)
from payment_examples.core import Clock, logger
from payment_examples.core.errors import (
    ConflictError,
    IdempotencyInProgressError,
    IllegalTransitionError,
    PaymentExamplesError,
    ProcessorTimeoutError,
    ProcessorUnavailableError,
    VersionConflictError,
)
from payment_examples.idempotency import FinalError
from payment_examples.payments import Balances, Operation, PaymentStatus, allowed_actions, plan_transition
from payment_examples.payments.service import PaymentService, requests_of, update_unversioned
from payment_examples.tables.models import Payment, ProcessorCallAttribute, payment_id_for

# Where a worker can stop (a crash, a kill): ``on_step`` is called after each; tests kill a real process there.
# How long a request may wait for the processor before a repeat of it, or another request, takes the call over
# (the API handlers pass the invocation's remaining time instead).
DEFAULT_LEASE = timedelta(seconds=30)
STEPS = ("created", "authorize-sent", "authorized", "capture-marked", "capture-sent", "captured", "refund-marked",
         "refund-sent", "refunded")  # fmt: skip
_APPLIED_STEP = {AUTHORIZE: "authorized", CAPTURE: "captured", REFUND: "refunded"}


class PaymentDeclinedError(FinalError, PaymentExamplesError):
    """The processor declined the card: a final outcome (402), stored by the idempotency middleware and replayed to
    every repeat of the request. The payment is ``failed`` with the decline code as its reason."""

    http_status = 402
    title = "Payment declined"

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message, **details)

    def problem_extra(self) -> dict[str, Any]:
        return {"payment_id": self.details.get("payment_id"), "decline_code": self.details.get("decline_code")}


class OperationDeclinedError(IllegalTransitionError):
    """The processor declined a capture or a refund (402): nothing changed but the record of the call, so
    ``allowed`` is what the payment allowed before. A final answer for the request that asked."""

    http_status = 402
    title = "Declined by the processor"

    def __init__(self, payment_id: str, status: str, operation: str, reason: str = "", *, allowed: dict | None = None,
                 decline_code: str | None = None) -> None:  # fmt: skip
        super().__init__(payment_id, status, operation, reason, allowed=allowed)
        self.decline_code = decline_code

    def problem_extra(self) -> dict[str, Any]:
        return {**super().problem_extra(), "decline_code": self.decline_code}


class ProcessorCallInFlightError(ConflictError):
    """Another request's processor call on the payment may still be waiting for the processor's answer: a 409 with
    ``Retry-After`` (its lease's end). Retry then: the call is resolved first."""

    title = "Processor call in flight"

    def __init__(self, payment_id: str, operation: str, retry_after: int) -> None:
        super().__init__(f"a processor {operation} of payment {payment_id!r} is in flight; retry in {retry_after} s")
        self.payment_id = payment_id
        self.retry_after = retry_after


def change_by_request(payment: Payment, operation: str, idempotency_key: str) -> int | None:
    """The version of the change of ``operation`` that the request with ``idempotency_key`` made, if the payment
    records it: in ``Payment.requests`` (written with the change, whatever came after it), else, for changes
    written before that map existed, among its kept changes (the last ``HISTORY_LIMIT``; the detail carries the
    key)."""
    entry = requests_of(payment).get(idempotency_key)
    if entry is not None and entry.get("op") == str(operation):
        return int(entry["v"])
    for change in reversed(payment.transitions or ()):
        detail = change.detail.as_dict() if hasattr(change.detail, "as_dict") else change.detail or {}
        if change.type == operation and detail.get("idempotency_key") == idempotency_key:
            return int(change.version)
    return None


def api_refund_entry(payment: Payment, call: ProcessorCallAttribute, charge: Charge) -> dict[str, Any]:
    """``Payment.processor_events`` with the refund ``charge`` recorded as applied, in the format
    checkout/processor_events.py keeps per processor object: the processor notifies refunds we made too
    (``charge.refunded``), and this record makes that notification ``unchanged`` however many changes came after
    (the kept history is only the last ``HISTORY_LIMIT``). ``event_id``: no notification yet, so the call's
    processor key (never a ``pev_`` id); ``at`` 0, so any notification of it ranks later and replaces the entry."""
    raw = payment.processor_events
    found = raw.as_dict() if hasattr(raw, "as_dict") else dict(raw or {})
    entries = {key: dict(value) for key, value in found.items() if isinstance(value, Mapping)}
    entries[charge.reference] = {
        "event_id": call.key, "at": 0, "state": "succeeded", "outcome": "applied", "amount": int(call.amount),
        "applied": [Operation.REFUND.value],
    }  # fmt: skip
    return entries


def balances_of(payment: Payment) -> Balances:
    return Balances(int(payment.amount), int(payment.captured_amount), int(payment.refunded_amount))


@dataclass(frozen=True)
class CheckoutResult:
    payment: Payment
    replayed: bool  # the payment existed already (a retry, after a timeout or a lost response)
    charge: Charge | None  # the processor's answer applied by this call (None: it had been applied before)


class Checkout:
    """Create-and-authorise, capture, refund and void through ``processor``. ``throttle_attempts``: how many times a
    throttled processor request is sent (backoff with full jitter between them) before
    ``ProcessorUnavailableError``; ``lease``: how long a call is its request's own by default."""

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
        wait = _seconds_left(call, self.clock.now())
        if wait:
            raise IdempotencyInProgressError(wait)

    def _drop_call(self, payment: Payment) -> None:
        """Remove the call recorded on ``payment``, known never to have reached the processor (best effort: if this
        fails, the call is resolved later like any other: ``find`` finds nothing, so it is sent then)."""
        call, Model = payment.processor_call, type(payment)
        try:
            update_unversioned(Model, payment.id, payment.version, [Model.processor_call.remove()],
                               Model.processor_call.key == call.key)  # fmt: skip
        except Exception as error:  # noqa: BLE001 (resolved later, like a call whose answer was lost)
            logger.warning("could not remove a processor call that was never made", payment_id=payment.id,
                           error_type=type(error).__name__)  # fmt: skip

    def _end_lease(self, payment: Payment) -> None:
        """Give the call recorded on ``payment`` up to the next request (best effort: else the lease runs out)."""
        call, Model = payment.processor_call, type(payment)
        try:
            ended = [Model.processor_call.lease_until.set(self.clock.now())]
            update_unversioned(Model, payment.id, payment.version, ended, Model.processor_call.key == call.key)
        except Exception as error:  # noqa: BLE001 (the lease expires by itself)
            logger.warning("could not end a processor call's lease", payment_id=payment.id,
                           error_type=type(error).__name__)  # fmt: skip

    # -- capture, refund, void --------------------------------------------------------------------------------

    def capture(
        self,
        merchant_id: str,
        payment_id: str,
        *,
        actor: str,
        amount: int | None = None,
        request_id: str | None = None,
        idempotency_key: str | None = None,
        lease: timedelta | None = None,
        current: Payment | None = None,
    ) -> CheckoutResult:
        """Capture an authorised payment at the processor, then record it (default: the whole amount). A capture
        whose answer was lost is resolved first; a payment already captured by it is returned as it is. A decline
        is ``OperationDeclinedError`` (the payment stays authorised)."""
        return self._charge(
            Operation.CAPTURE, merchant_id, payment_id, actor=actor, amount=amount, request_id=request_id,
            idempotency_key=idempotency_key, lease=lease, current=current,
        )  # fmt: skip

    def refund(
        self,
        merchant_id: str,
        payment_id: str,
        *,
        actor: str,
        amount: int,
        reason: str | None = None,
        request_id: str | None = None,
        idempotency_key: str | None = None,
        lease: timedelta | None = None,
        current: Payment | None = None,
    ) -> CheckoutResult:
        """Refund ``amount`` of a captured payment at the processor, then record it, exactly once per request.

        ``idempotency_key`` (the API request's) tells this request's retry, which finds its own refund recorded and
        resolves it (from the processor's record: never sent twice), from another refund, which resolves the
        earlier one and then makes its own. Without a key, a refund of the same amount whose answer was lost is
        taken for this call's own (a retry); another amount resolves it and is made as well. ``reason`` is kept on
        the change when this request applies it (not when ``recover`` does: the call record does not hold it). A
        decline is ``OperationDeclinedError`` (nothing changes)."""
        return self._charge(
            Operation.REFUND, merchant_id, payment_id, actor=actor, amount=amount, reason=reason,
            request_id=request_id, idempotency_key=idempotency_key, lease=lease, current=current,
        )  # fmt: skip

    def void(
        self,
        merchant_id: str,
        payment_id: str,
        *,
        actor: str,
        reason: str | None = None,
        request_id: str | None = None,
        idempotency_key: str | None = None,
        current: Payment | None = None,
    ) -> CheckoutResult:
        """Void a card payment. No processor request: the authorisation is left to expire at the processor (a real
        integration would release it). A call in flight is resolved first: it may have moved the money."""
        payment = self._payment(merchant_id, payment_id, current)
        if payment.processor_call is not None:
            payment, _ = self._resolve_earlier(payment, Operation.VOID, actor=actor, request_id=request_id,
                                               reason=reason, idempotency_key=idempotency_key)  # fmt: skip
        payment = self.service.transition(
            merchant_id, payment.id, Operation.VOID, actor=actor, reason=reason, current=payment,
            audit_detail={"idempotency_key": idempotency_key} if idempotency_key else None, request_id=request_id,
            request_key=idempotency_key,
        )  # fmt: skip
        return CheckoutResult(payment, False, None)

    def _charge(
        self,
        operation: Operation,
        merchant_id: str,
        payment_id: str,
        *,
        actor: str,
        amount: int | None,
        reason: str | None = None,
        request_id: str | None,
        idempotency_key: str | None,
        lease: timedelta | None,
        current: Payment | None,
    ) -> CheckoutResult:
        """A capture or a refund: resolve an earlier call, plan, record the call, send it, apply the answer."""
        payment = self._payment(merchant_id, payment_id, current)
        if payment.processor_call is not None:  # an earlier call's answer was lost: resolve it before anything else
            payment, own = self._resolve_earlier(payment, operation, actor=actor, amount=amount,
                                                 request_id=request_id, reason=reason,
                                                 idempotency_key=idempotency_key)  # fmt: skip
            if own is not None:
                return own
        plan = plan_transition(payment.id, payment.status, balances_of(payment), operation, amount)
        Model, now = type(payment), self.clock.now()
        # The processor key: one per request and version. A decline changes no version, so the next request (another
        # Idempotency-Key) must send another key, or a deduplicating processor answers it the cached decline; the
        # same request's retry sends the same one. A caller without a key gets one per version only: it must not
        # send a declined call again at the same version (a deduplicating processor would answer the decline).
        call = ProcessorCallAttribute(
            operation=operation.value, key=processor_key(payment.id, operation.value, payment.version,
                                                         request=idempotency_key),
            amount=plan.amount, started_at=now, lease_until=now + (lease or self.lease),
            idempotency_key=idempotency_key,
        )  # fmt: skip
        update_unversioned(Model, payment.id, payment.version,
                           [Model.processor_call.set(call), Model.updated_at.set(now)],
                           Model.processor_call.does_not_exist())  # fmt: skip
        payment.processor_call = call
        self._step(f"{operation.value}-marked", payment)
        try:
            payment, charge = self.resolve(payment, fresh=True, actor=actor, request_id=request_id, reason=reason)
        except ProcessorUnavailableError:
            self._drop_call(payment)  # throttled every time: the processor did nothing, so nothing is left in flight
            raise
        except ProcessorTimeoutError:
            self._end_lease(payment)  # the client's retry (or another request) may resolve it now
            raise
        if charge is not None and not charge.approved:
            raise _declined(payment, charge)
        return CheckoutResult(payment, False, charge)

    def _payment(self, merchant_id: str, payment_id: str, current: Payment | None) -> Payment:
        if current is not None and current.id == payment_id and current.merchant_id == merchant_id:
            return current
        return self.service.get_payment(merchant_id, payment_id)

    def _resolve_earlier(
        self,
        payment: Payment,
        operation: Operation,
        *,
        actor: str,
        request_id: str | None,
        reason: str | None,
        idempotency_key: str | None,
        amount: int | None = None,
    ) -> tuple[Payment, CheckoutResult | None]:
        """Resolve the call an earlier attempt left on ``payment``. Returns the payment as it is then, and this
        request's answer if the call was this request's own ``operation`` (its retry after a lost answer; without
        keys, one of the same amount)."""
        call = payment.processor_call
        own = call.idempotency_key == idempotency_key  # both None: a caller without keys takes it for its retry
        if not own:  # another request's call stays its own until its lease ends
            wait = _seconds_left(call, self.clock.now())
            if wait:
                raise ProcessorCallInFlightError(payment.id, call.operation, wait)
        same = idempotency_key is not None or amount is None or amount == int(call.amount)
        mine = own and call.operation == operation.value and same
        try:
            payment, charge = self.resolve(
                payment, actor=actor if mine else "processor", request_id=request_id if mine else None,
                reason=reason if mine else None,
            )  # fmt: skip
        except (ProcessorUnavailableError, ProcessorTimeoutError):
            self._end_lease(payment)
            raise
        if not mine:
            return payment, None
        if charge is None:  # another worker applied it (recover, a racing retry): ours if it carries our key
            ours = idempotency_key is not None and change_by_request(payment, operation, idempotency_key) is not None
            return payment, (CheckoutResult(payment, True, None) if ours else None)
        if not charge.approved:
            raise _declined(payment, charge)
        return payment, CheckoutResult(payment, True, charge)

    # -- resolving a call --------------------------------------------------------------------------------------

    def resolve(
        self,
        payment: Payment,
        *,
        fresh: bool = False,
        actor: str = "processor",
        request_id: str | None = None,
        reason: str | None = None,
    ) -> tuple[Payment, Charge | None]:
        """Finish the processor call recorded on ``payment``: its answer from the processor's record (``find``)
        unless ``fresh`` (we recorded it a moment ago and have sent nothing), else sent now under the recorded key,
        then applied. Returns the payment as it ends and the answer applied (None if another worker applied it). A
        declined capture or refund is applied too (the call removed, nothing else changed): the caller whose
        request it was raises ``OperationDeclinedError``."""
        call = payment.processor_call
        if call is None:
            return payment, None
        charge = None if fresh else self.processor.find(call.key)
        if charge is None:
            charge = self._send(payment, call)
        self._step(f"{call.operation}-sent", payment)
        try:
            payment = self._apply(payment, call, charge, actor=actor, request_id=request_id, reason=reason)
        except VersionConflictError:
            # Another worker (a retry, recover) applied it first, or the payment changed: read what it is now.
            current = self.service.read_payment(payment.merchant_id, payment.id)
            if current.processor_call is not None and current.processor_call.key == call.key:
                raise
            return current, None
        self._step(_APPLIED_STEP[call.operation], payment)
        return payment, charge

    def _send(self, payment: Payment, call: ProcessorCallAttribute) -> Charge:
        for attempt in range(self.throttle_attempts):
            try:
                if call.operation == AUTHORIZE:
                    return self.processor.authorize(
                        call.key, payment_id=payment.id, amount=int(call.amount), currency=payment.currency,
                        payment_method=payment.payment_method,
                    )  # fmt: skip
                send = self.processor.capture if call.operation == CAPTURE else self.processor.refund
                return send(
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
        self,
        payment: Payment,
        call: ProcessorCallAttribute,
        charge: Charge,
        *,
        actor: str,
        request_id: str | None,
        reason: str | None = None,
    ) -> Payment:
        Model = type(payment)

        def settle(read: Payment) -> tuple[list[Action], Condition | None]:
            actions = [Model.processor_call.remove()]
            if call.operation == AUTHORIZE and charge.approved:
                actions.append(Model.processor_reference.set(charge.reference))
            if call.operation == REFUND and charge.approved:  # its notification will find it applied
                actions.append(Model.processor_events.set(api_refund_entry(read, call, charge)))
            return actions, Model.processor_call.key == call.key

        detail: dict[str, str | int] = {"processor_reference": charge.reference}
        if call.idempotency_key is not None:
            detail["idempotency_key"] = call.idempotency_key
        if call.operation == AUTHORIZE:
            operation, amount = (Operation.AUTHORIZE, None) if charge.approved else (Operation.FAIL, None)
            reason = None if charge.approved else charge.decline_code
        elif charge.approved:
            operation, amount = Operation(call.operation), int(call.amount)
        else:  # a declined capture or refund changes nothing but the record of the call
            update_unversioned(Model, payment.id, payment.version, *settle(payment))
            payment.processor_call = None
            logger.info("processor declined", payment_id=payment.id, operation=call.operation,
                        decline_code=charge.decline_code)  # fmt: skip
            return payment
        if not charge.approved:
            detail["decline_code"] = charge.decline_code or "declined"
        payment = self.service.transition(
            payment.merchant_id, payment.id, operation, actor=actor, amount=amount, reason=reason, extend=settle,
            current=payment, audit_detail=detail, request_id=request_id, resolves_call=call.key,
            request_key=call.idempotency_key,
        )  # fmt: skip
        payment.processor_call = None
        logger.info("processor answer applied", payment_id=payment.id, operation=call.operation,
                    approved=charge.approved, reference=charge.reference)  # fmt: skip
        return payment

    def _step(self, step: str, payment: Payment) -> None:
        if self._on_step is not None:
            self._on_step(step, payment)


def _declined(payment: Payment, charge: Charge) -> OperationDeclinedError:
    code = charge.decline_code or "declined"
    return OperationDeclinedError(
        payment.id, payment.status, charge.operation, f"declined: {code}",
        allowed=allowed_actions(payment.status, balances_of(payment)), decline_code=code,
    )  # fmt: skip


def _seconds_left(call: ProcessorCallAttribute, now: datetime) -> int:
    """Whole seconds until ``call``'s lease ends (0: it has ended, or it has none)."""
    if call.lease_until is None or call.lease_until <= now:
        return 0
    return max(1, math.ceil((call.lease_until - now).total_seconds()))


def _raise_if_declined(payment: Payment) -> None:
    transition = payment.last_transition
    if payment.status == PaymentStatus.FAILED.value and transition is not None and transition.actor == "processor":
        raise PaymentDeclinedError(
            f"the card was declined: {transition.reason}", payment_id=payment.id, decline_code=transition.reason
        )
