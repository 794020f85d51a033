"""The card processor: the interface the payment flow calls, and ``LocalProcessor``, a simulated one.

The double charge that idempotency exists to prevent happens here, not in our tables. Every request carries an
idempotency key derived from ours (``processor_key``), and ``find(key)`` tells what the processor did with an
earlier request under that key: after a timeout we ask before we send anything again.

``LocalProcessor`` keeps its ledger in a DynamoDB table of its own (``processor-ledger``), so threads and worker
processes share it through the local server; the ledger is the ground truth that tests count charges in. Its
behaviour is injectable: latency, declines by test payment method (as processors' test cards do), a timeout before
the charge, a timeout *after* it (the charge happened, the answer was lost), and throttling.

Real processors also deduplicate requests by their idempotency key for a while (24 hours at Stripe). The
simulator does not by default: it acts on every request it receives, so a test that counts one charge proves
that *our* side sent one, not that the processor covered for us. ``deduplicates=True`` models the real thing.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from pynamodb.exceptions import PutError

from payment_examples.core import Clock, IdFactory, RandomIds, Settings, SystemClock, identifier, name_based_id
from payment_examples.core.errors import (
    CONDITIONAL_CHECK_FAILED,
    ConfigurationError,
    ProcessorTimeoutError,
    ProcessorUnavailableError,
    ValidationError,
    error_code,
)
from payment_examples.tables.models import BoundModels, ProcessorCharge, get_models

AUTHORIZE, CAPTURE, REFUND = "authorize", "capture", "refund"

# Test payment methods, named as processors' test cards are: these approve...
APPROVING_METHODS = frozenset({"pm_card_visa", "pm_card_mastercard", "pm_card_amex"})
# ...and these decline, with the decline code the processor answers.
DECLINING_METHODS = {
    "pm_card_declined": "card_declined",
    "pm_card_insufficient_funds": "insufficient_funds",
    "pm_card_expired": "expired_card",
}


def processor_key(payment_id: str, operation: str, version: int = 0, *, request: str | None = None) -> str:
    """The idempotency key sent to the processor for ``operation`` on a payment (at ``version`` for captures and
    refunds; ``request``: the API request's Idempotency-Key): derived, so every retry of the same request sends the
    same key, and another request at the same version (after a decline, which changes no version) another one."""
    parts = (payment_id, operation, str(version)) if request is None else (payment_id, operation, str(version), request)
    return name_based_id("processor", *parts)


def validate_payment_method(value: object) -> str:
    identifier("payment_method", value)
    if not isinstance(value, str) or not value.startswith("pm_"):
        raise ValidationError("payment_method", "must be a payment method id (pm_...)")
    return value


@dataclass(frozen=True)
class Charge:
    """What the processor did with one request: approved or declined (a decline is an answer, not an error)."""

    key: str
    operation: str
    reference: str
    payment_id: str
    amount: int
    currency: str
    approved: bool
    decline_code: str | None = None
    authorization: str | None = None
    at: datetime | None = None


class Processor(Protocol):
    """What the payment flow needs from a card processor. Every call takes an idempotency key; a timeout raises
    ``ProcessorTimeoutError`` (outcome unknown), throttling ``ProcessorUnavailableError`` (nothing done)."""

    def authorize(self, key: str, *, payment_id: str, amount: int, currency: str, payment_method: str) -> Charge: ...

    def capture(self, key: str, *, payment_id: str, authorization: str, amount: int, currency: str) -> Charge: ...

    def refund(self, key: str, *, payment_id: str, authorization: str, amount: int, currency: str) -> Charge: ...

    def find(self, key: str) -> Charge | None: ...


class Fault(StrEnum):
    TIMEOUT_BEFORE = "timeout_before_charge"  # the request never reached the processor
    TIMEOUT_AFTER = "timeout_after_charge"  # the processor acted; its answer was lost
    THROTTLE = "throttle"  # the processor refused the request (nothing done)


class LocalProcessor:
    """A simulated processor whose ledger is the ``processor-ledger`` table of the models in force.

    ``inject(fault, times=1, operation=None)`` makes the next ``times`` matching calls fail that way (thread-safe);
    ``latency`` seconds are slept per call (``sleep`` is injectable); ``ids`` name its references.
    """

    def __init__(
        self,
        *,
        models: BoundModels | None = None,
        settings: Settings | None = None,
        clock: Clock | None = None,
        ids: IdFactory | None = None,
        latency: float = 0.0,
        deduplicates: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if latency < 0:
            raise ConfigurationError("latency must not be negative")
        self._models = models
        self._settings = settings
        self.clock = clock or SystemClock()
        self.ids = ids or RandomIds()
        self.latency = latency
        self.deduplicates = deduplicates
        self._sleep = sleep
        self._faults: deque[tuple[Fault, str | None]] = deque()
        self._lock = threading.Lock()
        self.calls = 0  # requests received (including the ones a fault refused)

    @property
    def ledger(self) -> type[ProcessorCharge]:
        return (self._models or get_models(self._settings)).processor_ledger

    def inject(self, fault: Fault | str, *, times: int = 1, operation: str | None = None) -> None:
        """Make the next ``times`` calls (of ``operation``, or of any) fail with ``fault``."""
        fault = Fault(fault)
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._faults.extend([(fault, operation)] * times)

    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    # -- the processor's API -------------------------------------------------------------------------------------

    def authorize(self, key: str, *, payment_id: str, amount: int, currency: str, payment_method: str) -> Charge:
        validate_payment_method(payment_method)
        if payment_method in APPROVING_METHODS:
            decline_code = None
        else:
            decline_code = DECLINING_METHODS.get(payment_method, "invalid_payment_method")
        return self._act(
            key, AUTHORIZE, "ch", payment_id=payment_id, amount=amount, currency=currency,
            payment_method=payment_method, decline_code=decline_code,
        )  # fmt: skip

    def capture(self, key: str, *, payment_id: str, authorization: str, amount: int, currency: str) -> Charge:
        return self._act(key, CAPTURE, "cp", payment_id=payment_id, amount=amount, currency=currency,
                         authorization=authorization)  # fmt: skip

    def refund(self, key: str, *, payment_id: str, authorization: str, amount: int, currency: str) -> Charge:
        return self._act(key, REFUND, "re", payment_id=payment_id, amount=amount, currency=currency,
                         authorization=authorization)  # fmt: skip

    def find(self, key: str) -> Charge | None:
        """The processor's latest record of a request under ``key`` (None: it never acted on one)."""
        identifier("key", key)
        latest = None
        for item in self.ledger.query(key, consistent_read=True):
            if latest is None or item.at >= latest.at:
                latest = item
        return _charge(latest) if latest is not None else None

    # -- ground truth for tests and notebooks --------------------------------------------------------------------

    def charges(self, operation: str | None = AUTHORIZE, *, approved: bool | None = True) -> list[Charge]:
        """Everything in the ledger (a scan: for tests, notebooks and benchmarks, not for a request path)."""
        found = [_charge(item) for item in self.ledger.scan(consistent_read=True)]
        return [
            c for c in found
            if (operation is None or c.operation == operation) and (approved is None or c.approved == approved)
        ]  # fmt: skip

    # -- internals ---------------------------------------------------------------------------------------------

    def _act(self, key: str, operation: str, prefix: str, **fields: object) -> Charge:
        identifier("key", key)
        with self._lock:
            self.calls += 1
            fault = self._next_fault(operation)
        if self.latency:
            self._sleep(self.latency)
        if fault is Fault.THROTTLE:
            raise ProcessorUnavailableError(f"the processor throttled the {operation} request", retry_after=1)
        if fault is Fault.TIMEOUT_BEFORE:
            raise ProcessorTimeoutError(f"the processor did not answer the {operation} request in time")
        if self.deduplicates:
            earlier = self.find(key)
            if earlier is not None and earlier.operation == operation:
                return self._answer(earlier, fault)
        decline_code = fields.pop("decline_code", None)
        item = self.ledger(
            key,
            f"{prefix}_{self.ids.new_id().replace('-', '')[:24]}",
            operation=operation,
            approved="false" if decline_code else "true",
            decline_code=decline_code,
            at=self.clock.now(),
            **fields,
        )
        try:
            item.save(condition=type(item).reference.does_not_exist())
        except PutError as error:
            if error_code(error) == CONDITIONAL_CHECK_FAILED:
                raise ConfigurationError("the processor's id factory repeated a reference") from None
            raise
        return self._answer(_charge(item), fault)

    @staticmethod
    def _answer(charge: Charge, fault: Fault | None) -> Charge:
        if fault is Fault.TIMEOUT_AFTER:
            raise ProcessorTimeoutError(f"the processor did not answer the {charge.operation} request in time")
        return charge

    def _next_fault(self, operation: str) -> Fault | None:
        for index, (fault, only) in enumerate(self._faults):
            if only is None or only == operation:
                del self._faults[index]
                return fault
        return None


def _charge(item: ProcessorCharge) -> Charge:
    return Charge(
        key=item.key,
        operation=item.operation,
        reference=item.reference,
        payment_id=item.payment_id,
        amount=int(item.amount),
        currency=item.currency,
        approved=item.approved == "true",
        decline_code=item.decline_code,
        authorization=item.authorization,
        at=item.at,
    )


def processor_for(settings: Settings, *, clock: Clock | None = None) -> Processor | None:
    """The configured processor (``PAYMENT_PROCESSOR``), or None when none is."""
    if settings.processor == "local":
        return LocalProcessor(settings=settings, clock=clock)
    return None
