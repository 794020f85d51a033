"""The processor's notifications (Stripe-like webhooks to us): disputes, refunds made at the processor, and the late
outcome of an authorisation whose answer we lost, each applied to its payment exactly once, whatever the order.

A notification is delivered at least once, in any order, and retried for days until we answer 2xx. So:

* **Per processor object, the latest event applied is kept on the payment** (``Payment.processor_events[<dispute
  dp_.. | refund re_..>] = {"event_id", "at", "state", "outcome", "amount", "applied"}``), written in the SAME
  conditional write as the transition the event causes (``PaymentService.transition`` with ``extend``: a
  read-modify-write of the whole map under the version condition the transition has anyway), or alone
  (``update_unversioned``) when it causes none. A change and its record cannot part: a crash between two writes
  cannot apply a chargeback and forget it, nor record one it never applied.
* **The same event id again** is ``duplicate``; **an event older than the one kept** is ``stale`` (disputes rank
  ``needs_response`` below ``won`` / ``lost``, and a closed dispute is final; otherwise by ``created``). Both write
  nothing and answer 200: the processor must stop sending them.
* **An event is decided from the payment as it is now and the object's record**, never from the event alone:
  ``charge.dispute.created`` charges back the dispute's amount (a captured or partially refunded payment);
  ``charge.dispute.closed`` ``won`` reverses it (a charged-back payment), ``lost`` keeps it. Out of order, the
  final state decides: won before its creation was seen reverses nothing (nothing was taken), lost before it
  charges back; a payment a settlement file charged back already is ``unchanged``. ``charge.refunded`` refunds its
  amount once per refund id (a refund made in the processor's dashboard; one we made through the API is recorded
  in the map by the transition that applied it, ``Checkout._apply``, and is ``unchanged``; on payments written
  before that, its change's detail names the refund, while the kept history still holds it). ``applied`` lists
  the transitions an object's events made, so a settlement file's rows about the same dispute or refund come out
  ``matched`` (reconciliation/decision.py reads it), never applied twice.
* **A processor call in flight on the payment** (``Payment.processor_call``: its answer not applied yet, so the
  payment may not show what the processor did) defers a dispute or refund event (``ProcessorEventDeferredError``,
  503) before anything is decided or recorded: the processor delivers it again once the call is resolved.
* **A transition the state machine refuses** (a dispute on a voided or fully refunded payment, more than is held)
  is ``not_applicable``: logged as a warning, and recorded, so the repeat is a ``duplicate``, not decided again on
  a payment that changed since.
* **The event names no merchant**: the payment is read by the id in its metadata (a consistent read) and must carry
  the event's charge as its ``processor_reference``; anything else is ``unknown_payment``, logged as an error (a
  misrouted or inconsistent notification) and answered 200: retrying it cannot help.
* **A late authorisation outcome** (``charge.authorization.succeeded`` / ``.failed``, object id = the request's
  processor key) is only a trigger: if the payment still has that authorisation in flight it is resolved through
  ``Checkout.resolve``, where the processor's own record (``find``) decides, exactly as the client's retry or
  ``recover`` would; otherwise it is ``unchanged``. Nothing is ever sent to the processor from here: a record not
  found yet defers the event. The call in flight is its record (the resolving transition removes it, and
  ``resolve`` has no ``extend``), so these events add nothing to the map.

On ``VersionConflictError`` (anything else changed the payment meanwhile, or a concurrent delivery of the same
event won) the payment is read again and the event decided again, at most ``MAX_ATTEMPTS`` times; a transition
blocked by another processor call in flight, or a payment that keeps changing, is ``ProcessorEventDeferredError``
(503): the processor delivers the event again later.

Round trips per event: one consistent read of the payment, then one conditional write (none for duplicate, stale
and unknown_payment; a retry after a conflict repeats both). A late authorisation in flight: the read, the
processor's ``find`` twice (ours, which refuses to let ``resolve`` send, and ``resolve``'s own) and ``resolve``'s
transition; with nothing in flight, the read alone.

The processor's side is simulated here too (``notification`` and the builders ``dispute_created``,
``dispute_closed``, ``refunded``, ``authorization_outcome``): the body and ``Processor-Signature`` header a real
processor would send, deterministic when ids are given.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pynamodb.exceptions import DoesNotExist

from payment_examples.checkout.processor import AUTHORIZE, Charge
from payment_examples.checkout.service import Checkout
from payment_examples.core import Clock, currency_exponent, identifier, logger, optional_text, validate_amount
from payment_examples.core.errors import (
    ConfigurationError,
    IllegalTransitionError,
    UnavailableError,
    ValidationError,
    VersionConflictError,
)
from payment_examples.core.signatures import PROCESSOR_SIGNATURE_HEADER, sign
from payment_examples.payments import Balances, Operation, PaymentStatus, plan_transition
from payment_examples.payments.service import PaymentService, update_unversioned
from payment_examples.tables.models import Payment

__all__ = [
    "ACTOR", "AUTHORIZATION_FAILED", "AUTHORIZATION_SUCCEEDED", "Applied", "DISPUTE_CLOSED", "DISPUTE_CREATED",
    "EVENT_TYPES", "EventOutcome", "MAX_ATTEMPTS", "ProcessorEvent", "ProcessorEventDeferredError",
    "ProcessorEvents", "REFUNDED", "authorization_outcome", "dispute_closed", "dispute_created", "notification",
    "parse_event", "refunded",
]  # fmt: skip

DISPUTE_CREATED = "charge.dispute.created"
DISPUTE_CLOSED = "charge.dispute.closed"
REFUNDED = "charge.refunded"
AUTHORIZATION_SUCCEEDED = "charge.authorization.succeeded"
AUTHORIZATION_FAILED = "charge.authorization.failed"
EVENT_TYPES = (DISPUTE_CREATED, DISPUTE_CLOSED, REFUNDED, AUTHORIZATION_SUCCEEDED, AUTHORIZATION_FAILED)

NEEDS_RESPONSE, WON, LOST = "needs_response", "won", "lost"  # a dispute's states
CLOSED = frozenset({WON, LOST})
SUCCEEDED, FAILED = "succeeded", "failed"  # a refund's and an authorisation's
ACTOR = "processor"
MAX_ATTEMPTS = 3
MAX_REASON_LENGTH = 100
LATEST_CREATED = 32_503_680_000  # year 3000: a "created" beyond it is not epoch seconds

_EVENT_ID = re.compile(r"pev_[0-9a-f]{1,64}")
_OBJECT_ID = {"dispute": (re.compile(r"dp_[A-Za-z0-9]{1,64}"), "dp_..."),
              "refund": (re.compile(r"re_[A-Za-z0-9]{1,64}"), "re_...")}  # fmt: skip
_CHARGE_ID = re.compile(r"ch_[A-Za-z0-9]{1,64}")
_REFUNDABLE = frozenset({PaymentStatus.CAPTURED, PaymentStatus.PARTIALLY_REFUNDED})


class EventOutcome(StrEnum):
    APPLIED = "applied"  # the event caused a transition
    UNCHANGED = "unchanged"  # accepted; the payment already is what it says (recorded for disputes and refunds)
    STALE = "stale"  # older than the event kept for its object: nothing written
    DUPLICATE = "duplicate"  # the event kept for its object: nothing written
    NOT_APPLICABLE = "not_applicable"  # the state machine refuses what it asks: recorded, a warning logged
    UNKNOWN_PAYMENT = "unknown_payment"  # no payment of ours carries its charge: nothing written, an error logged


class ProcessorEventDeferredError(UnavailableError):
    """The event cannot be applied now (another processor call on the payment is in flight, or the payment kept
    changing): nothing was written; answered 503 so the processor delivers it again."""

    title = "Try again later"


# -- the event ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessorEvent:
    """One notification, validated. ``object_id``: the dispute (``dp_..``), the refund (``re_..``) or, for an
    authorisation outcome, the processor key of the request; ``state``: the dispute's status, ``succeeded`` for a
    refund, ``succeeded`` / ``failed`` for an authorisation."""

    id: str
    type: str
    created: int  # epoch seconds, the processor's clock
    object_id: str
    charge: str  # the authorisation's reference (ch_..)
    payment_id: str
    amount: int
    currency: str  # upper case, as our payments store it
    state: str
    reason: str | None = None
    decline_code: str | None = None

    @property
    def kind(self) -> str:
        if self.type in (DISPUTE_CREATED, DISPUTE_CLOSED):
            return "dispute"
        return "refund" if self.type == REFUNDED else "authorization"

    def rank(self) -> tuple[int, int]:
        return _rank(self.kind, self.state, self.created)


def parse_event(body: bytes | str | Mapping[str, Any]) -> ProcessorEvent:
    """The notification in ``body`` (raw JSON, or already parsed), or a ``ValidationError`` naming the field. Fields
    this integration does not use are ignored (the processor adds fields over time)."""
    document = _json(body) if isinstance(body, bytes | bytearray | str) else body
    if not isinstance(document, Mapping):
        raise ValidationError("body", "must be a JSON object")
    event_id = _matching("id", document.get("id"), _EVENT_ID, "pev_<hex>")
    event_type = document.get("type")
    if event_type not in EVENT_TYPES:
        raise ValidationError("type", f"{event_type!r} is not a notification we handle ({', '.join(EVENT_TYPES)})")
    created = document.get("created")
    if isinstance(created, bool) or not isinstance(created, int) or not 0 < created < LATEST_CREATED:
        raise ValidationError("created", "must be an integer of epoch seconds")
    data = document.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(obj, Mapping):
        raise ValidationError("data.object", "must be a JSON object")

    def field(name: str) -> Any:
        if obj.get(name) is None:
            raise ValidationError(f"data.object.{name}", "is required")
        return obj[name]

    if event_type in (AUTHORIZATION_SUCCEEDED, AUTHORIZATION_FAILED):
        object_id = identifier("data.object.id", field("id"))  # the processor key our request carried
    else:
        kind = "dispute" if event_type in (DISPUTE_CREATED, DISPUTE_CLOSED) else "refund"
        pattern, shape = _OBJECT_ID[kind]
        object_id = _matching("data.object.id", field("id"), pattern, shape)
    charge = _matching("data.object.charge", field("charge"), _CHARGE_ID, "ch_...")
    payment_id = identifier("data.object.payment_id", field("payment_id"))
    amount = validate_amount(field("amount"), "data.object.amount")
    currency = field("currency")
    currency = currency.upper() if isinstance(currency, str) else currency
    try:
        currency_exponent(currency)
    except ValidationError as error:
        raise ValidationError("data.object.currency", error.message) from None
    reason = decline_code = None
    if event_type in (DISPUTE_CREATED, DISPUTE_CLOSED):
        state = field("status")
        allowed = (NEEDS_RESPONSE,) if event_type == DISPUTE_CREATED else (WON, LOST)
        if state not in allowed:
            raise ValidationError("data.object.status", f"must be {' or '.join(allowed)} for {event_type}")
        reason = optional_text("data.object.reason", obj.get("reason"), max_length=MAX_REASON_LENGTH)
    elif event_type == REFUNDED:
        state = SUCCEEDED
        if obj.get("status") not in (None, SUCCEEDED):
            raise ValidationError("data.object.status", "a refund we are told of must have succeeded")
    elif event_type == AUTHORIZATION_SUCCEEDED:
        state = SUCCEEDED
    else:
        state = FAILED
        decline_code = optional_text("data.object.decline_code", obj.get("decline_code"),
                                     max_length=MAX_REASON_LENGTH)  # fmt: skip
    return ProcessorEvent(event_id, event_type, created, object_id, charge, payment_id, amount, currency, state,
                          reason, decline_code)  # fmt: skip


def _json(raw: bytes | bytearray | str) -> Any:
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        raise ValidationError("body", f"is not valid JSON: {error}") from None
    except RecursionError:
        raise ValidationError("body", "is nested too deeply") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _matching(name: str, value: Any, pattern: re.Pattern[str], shape: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValidationError(name, f"must be an id of the form {shape}")
    return value


def _rank(kind: str, state: str, created: int) -> tuple[int, int]:
    """Which of two events of one object is later: a dispute's closing outranks its opening whatever the clocks
    say (a closed dispute is final); otherwise the processor's ``created``."""
    return (1 if kind == "dispute" and state in CLOSED else 0), int(created)


# -- applying it ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    outcome: EventOutcome
    payment: Payment | None  # as the event left it (None: no such payment)
    detail: str = ""


@dataclass(frozen=True)
class _Decision:
    outcome: EventOutcome
    operation: Operation | None = None
    reason: str | None = None
    detail: str = ""


class ProcessorEvents:
    """Applies processor notifications to payments through ``service`` (and ``checkout``, for late authorisation
    outcomes: without one those are refused with a ``ConfigurationError``). ``clock``: what the handler checks
    signature timestamps against (default: the service's)."""

    def __init__(self, service: PaymentService, checkout: Checkout | None = None, clock: Clock | None = None) -> None:
        self.service = service
        self.checkout = checkout
        self.clock = clock or service.clock

    def apply(self, event: ProcessorEvent | Mapping[str, Any] | bytes | str) -> Applied:
        """Apply ``event`` (see the module's docstring); returns once the write, if any, has returned."""
        if not isinstance(event, ProcessorEvent):
            event = parse_event(event)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            payment = self._read(event.payment_id)
            try:
                applied = self._apply(event, payment)
            except VersionConflictError:
                logger.info("processor event: the payment changed meanwhile; deciding again", event_id=event.id,
                            payment_id=event.payment_id, attempt=attempt)  # fmt: skip
                continue
            except ProcessorEventDeferredError as error:
                logger.warning("processor event deferred", event_id=event.id, payment_id=event.payment_id,
                               detail=str(error))  # fmt: skip
                raise
            log = {"unknown_payment": logger.error, "not_applicable": logger.warning}.get(applied.outcome, logger.info)
            log("processor event", event_id=event.id, type=event.type, payment_id=event.payment_id,
                object=event.object_id, outcome=applied.outcome.value, detail=applied.detail)  # fmt: skip
            return applied
        logger.warning("processor event deferred: the payment kept changing", event_id=event.id,
                       payment_id=event.payment_id, attempts=MAX_ATTEMPTS)  # fmt: skip
        raise ProcessorEventDeferredError(f"payment {event.payment_id!r} kept changing; deliver the event again")

    def _read(self, payment_id: str) -> Payment | None:
        try:
            return self.service.models.payment.get(payment_id, consistent_read=True)
        except DoesNotExist:
            return None

    def _apply(self, event: ProcessorEvent, payment: Payment | None) -> Applied:
        if payment is None or not payment.live:
            return Applied(EventOutcome.UNKNOWN_PAYMENT, None, "no payment with this id lives here")
        if event.kind == "authorization":
            return self._authorization(event, payment)
        if payment.processor_call is not None:
            # The processor may have acted on that call (a capture whose answer we lost: the payment still reads
            # authorized, or has no charge yet): decided now, a dispute or refund could be refused, recorded and its
            # redeliveries taken for duplicates. Nothing decided, nothing written: the processor sends it again.
            raise ProcessorEventDeferredError(
                f"a processor {payment.processor_call.operation} is in flight on payment {payment.id!r}", retry_after=5
            )
        if payment.processor_reference != event.charge:
            return Applied(EventOutcome.UNKNOWN_PAYMENT, None, "the payment does not carry the event's charge")
        entries = _entries(payment)
        kept = entries.get(event.object_id)
        if kept is not None and kept.get("event_id") == event.id:
            return Applied(EventOutcome.DUPLICATE, payment, f"already {kept.get('outcome', 'applied')}")
        if kept is not None and _stale(event, kept):
            return Applied(EventOutcome.STALE, payment, f"{kept.get('event_id')} ({kept.get('state')}) is later")
        applied = list(kept.get("applied") or ()) if kept else []
        decision = _decide(event, payment, applied)
        if decision.operation is not None:
            applied.append(decision.operation.value)
        entries[event.object_id] = {
            "event_id": event.id, "at": event.created, "state": event.state, "outcome": decision.outcome.value,
            "amount": event.amount, "applied": applied,
        }  # fmt: skip
        Model = type(payment)
        record = Model.processor_events.set(entries)
        if decision.operation is None:
            update_unversioned(Model, payment.id, int(payment.version), [record])
            payment.processor_events = entries
            return Applied(decision.outcome, payment, decision.detail)
        payment = self.service.transition(
            payment.merchant_id, payment.id, decision.operation, actor=ACTOR, amount=event.amount,
            reason=decision.reason, extend=lambda _: ([record], None), current=payment,
            audit_detail={"processor_event": event.id, "object": event.object_id}, request_id=event.id,
        )  # fmt: skip
        payment.processor_events = entries
        return Applied(EventOutcome.APPLIED, payment, decision.detail)

    def _authorization(self, event: ProcessorEvent, payment: Payment) -> Applied:
        call = payment.processor_call
        if call is not None and call.operation == AUTHORIZE and call.key == event.object_id:
            if self.checkout is None:
                raise ConfigurationError("a late authorisation outcome needs a Checkout (a processor) to resolve it")
            if self.checkout.processor.find(call.key) is None:
                # Never send an authorisation from here: the event says the processor acted, its record will too.
                raise ProcessorEventDeferredError("the processor has no record of the authorisation yet", retry_after=5)
            payment, charge = self.checkout.resolve(payment)  # the processor's record decides, not the event
            if charge is None:
                return Applied(EventOutcome.UNCHANGED, payment, "resolved by another worker meanwhile")
            return Applied(EventOutcome.APPLIED, payment, f"authorisation resolved: {payment.status}")
        if payment.processor_reference not in (None, event.charge):
            return Applied(EventOutcome.UNKNOWN_PAYMENT, None, "the payment carries another charge")
        return Applied(EventOutcome.UNCHANGED, payment, "no such authorisation in flight")


def _entries(payment: Payment) -> dict[str, Any]:
    """A copy of the payment's processor-event records (plain values)."""
    raw = payment.processor_events
    found = raw.as_dict() if hasattr(raw, "as_dict") else dict(raw or {})
    return {key: dict(value) for key, value in found.items() if isinstance(value, Mapping)}


def _stale(event: ProcessorEvent, kept: Mapping[str, Any]) -> bool:
    if event.kind == "dispute" and kept.get("state") in CLOSED:
        return True  # final: a later event of a closed dispute changes nothing
    return event.rank() < _rank(event.kind, str(kept.get("state")), int(kept.get("at") or 0))


def _decide(event: ProcessorEvent, payment: Payment, applied: list[str]) -> _Decision:
    """What ``event`` does to ``payment``, given the transitions its object's earlier events made (``applied``)."""
    if event.currency != payment.currency:
        return _Decision(EventOutcome.NOT_APPLICABLE, detail=f"event in {event.currency}, payment {payment.currency}")
    status = PaymentStatus(payment.status)
    if event.kind == "refund":
        if Operation.REFUND in applied or _refunded_through_api(payment, event.object_id):
            return _Decision(EventOutcome.UNCHANGED, detail="this refund was applied before")
        return _planned(event, payment, Operation.REFUND, "refunded at the processor")
    ours_standing = applied.count(Operation.CHARGEBACK) > applied.count(Operation.REVERSE_CHARGEBACK)
    if event.state == WON:
        if status is PaymentStatus.CHARGED_BACK:
            return _planned(event, payment, Operation.REVERSE_CHARGEBACK, "dispute won")
        return _Decision(EventOutcome.UNCHANGED, detail=f"a {status} payment: nothing to reverse")
    # needs_response or lost: the money is taken
    if ours_standing or status is PaymentStatus.CHARGED_BACK:
        return _Decision(EventOutcome.UNCHANGED, detail="charged back already")
    reason = f"dispute: {event.reason}" if event.reason else "dispute"
    return _planned(event, payment, Operation.CHARGEBACK, reason)


def _planned(event: ProcessorEvent, payment: Payment, operation: Operation, reason: str) -> _Decision:
    """``operation`` of the event's amount, if the state machine allows it (checked here, so a refusal is recorded
    as not_applicable instead of raised)."""
    balances = Balances(int(payment.amount), int(payment.captured_amount), int(payment.refunded_amount))
    try:
        plan_transition(payment.id, payment.status, balances, operation, event.amount)
    except IllegalTransitionError as error:
        return _Decision(EventOutcome.NOT_APPLICABLE, detail=str(error))
    return _Decision(EventOutcome.APPLIED, operation, reason, f"{operation.value} of {event.amount}")


def _refunded_through_api(payment: Payment, refund_id: str) -> bool:
    """A refund we made ourselves (its transition's detail names the processor's refund): the processor notifies
    those too."""
    for change in payment.transitions or ():
        detail = change.detail.as_dict() if change.detail is not None else {}
        if change.type == Operation.REFUND and detail.get("processor_reference") == refund_id:
            return True
    return False


# -- the processor's side (simulated) -------------------------------------------------------------------------------


def notification(
    event_type: str,
    obj: Mapping[str, Any],
    *,
    secret: str,
    created: int,
    event_id: str | None = None,
    signed_at: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers the processor sends for ``obj``: ``Processor-Signature`` signed with ``secret`` at
    ``signed_at`` (default: ``created``). ``event_id`` default: a random ``pev_<hex>``."""
    document = {"id": event_id or f"pev_{uuid.uuid4().hex}", "object": "event", "type": event_type,
                "created": created, "data": {"object": dict(obj)}}  # fmt: skip
    body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
    signature = sign(body, [secret], created if signed_at is None else signed_at)
    return body, {"Content-Type": "application/json", PROCESSOR_SIGNATURE_HEADER: signature}


def _charge_of(payment: Payment) -> str:
    if not payment.processor_reference:
        raise ValueError(f"payment {payment.id} has no processor reference: the processor never authorised it")
    return payment.processor_reference


def _dispute(payment: Payment, dispute_id: str | None, amount: int | None, reason: str, status: str) -> dict:
    held = int(payment.captured_amount) - int(payment.refunded_amount)
    return {"id": dispute_id or f"dp_{uuid.uuid4().hex[:24]}", "object": "dispute", "charge": _charge_of(payment),
            "payment_id": payment.id, "amount": amount if amount is not None else (held or int(payment.amount)),
            "currency": payment.currency.lower(), "reason": reason, "status": status}  # fmt: skip


def dispute_created(
    payment: Payment, *, dispute_id: str | None = None, amount: int | None = None, reason: str = "fraudulent"
) -> tuple[str, dict[str, Any]]:
    """``(type, object)`` of a dispute opened on ``payment`` (default amount: what it still holds)."""
    return DISPUTE_CREATED, _dispute(payment, dispute_id, amount, reason, NEEDS_RESPONSE)


def dispute_closed(
    payment: Payment, *, dispute_id: str, status: str, amount: int | None = None, reason: str = "fraudulent"
) -> tuple[str, dict[str, Any]]:
    """``(type, object)`` of the dispute ``dispute_id`` closed ``won`` or ``lost``."""
    if status not in CLOSED:
        raise ValueError("a dispute closes won or lost")
    return DISPUTE_CLOSED, _dispute(payment, dispute_id, amount, reason, status)


def refunded(payment: Payment, *, amount: int, refund_id: str | None = None) -> tuple[str, dict[str, Any]]:
    """``(type, object)`` of a refund of ``amount`` made at the processor (its dashboard, say)."""
    return REFUNDED, {"id": refund_id or f"re_{uuid.uuid4().hex[:24]}", "object": "refund",
                      "charge": _charge_of(payment), "payment_id": payment.id, "amount": amount,
                      "currency": payment.currency.lower(), "status": SUCCEEDED}  # fmt: skip


def authorization_outcome(payment: Payment, charge: Charge) -> tuple[str, dict[str, Any]]:
    """``(type, object)`` of what the processor did with an authorisation request (its ledger's ``charge``)."""
    return (AUTHORIZATION_SUCCEEDED if charge.approved else AUTHORIZATION_FAILED), {
        "id": charge.key, "object": "authorization", "charge": charge.reference, "payment_id": payment.id,
        "amount": charge.amount, "currency": charge.currency.lower(), "decline_code": charge.decline_code,
    }  # fmt: skip
