"""The processor's notifications applied to payments (checkout/processor_events.py), on moto in-process: each type,
duplicates, stale and out-of-order events, refusals recorded, misrouted events, late authorisation outcomes through
the simulated processor, the audit trail and Transactions projected from the stream, and the settlement rows that
come after a webhook (reconciliation matches them instead of applying them again)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from payment_examples.audit.projection import PaymentProjector
from payment_examples.checkout.processor import AUTHORIZE, CAPTURE, Fault, LocalProcessor, processor_key
from payment_examples.checkout.processor_events import (
    DISPUTE_CREATED,
    MAX_ATTEMPTS,
    REFUNDED,
    EventOutcome,
    ProcessorEventDeferredError,
    ProcessorEvents,
    authorization_outcome,
    dispute_closed,
    dispute_created,
    notification,
    parse_event,
    refunded,
)
from payment_examples.checkout.service import Checkout, PaymentDeclinedError
from payment_examples.core.clock import SeededIds, SteppingClock
from payment_examples.core.config import Settings, use_settings
from payment_examples.core.errors import (
    ConfigurationError,
    ProcessorTimeoutError,
    ValidationError,
    VersionConflictError,
)
from payment_examples.harness.consumer import drain
from payment_examples.payments.service import PaymentService, update_unversioned
from payment_examples.payments.state_machine import Balances
from payment_examples.reconciliation.decision import Notified, Outcome, Reported, decide
from payment_examples.reconciliation.reconciler import Reconciler, RunStore
from payment_examples.reconciliation.rows import SettlementRow, SettlementStatus
from payment_examples.reconciliation.run_store import SettlementFile
from payment_examples.tables.models import (
    HISTORY_LIMIT,
    BoundModels,
    Payment,
    ProcessorCallAttribute,
    bind_models,
    create_tables,
)
from tests.conftest import START

M = "merchant-1"
SECRET = "whsec_processor-test-secret-0123456789abcdef"
T = int(START.timestamp())  # the processor's clock, epoch seconds


@dataclass
class Rig:
    settings: Settings
    models: BoundModels
    service: PaymentService
    processor: LocalProcessor
    checkout: Checkout
    events: ProcessorEvents
    clock: SteppingClock

    def payment(self, key: str = "order-1", amount: int = 1000, *, capture: bool = True) -> Payment:
        payment = self.checkout.create_and_authorize(M, key, amount, "USD", "pm_card_visa").payment
        if capture:
            payment = self.checkout.capture(M, payment.id, actor=M).payment
        return payment

    def read(self, payment: Payment) -> Payment:
        return self.models.payment.get(payment.id, consistent_read=True)

    def raw(self, payment: Payment) -> dict:
        return self.models.payment._get_connection().get_item(payment.id, consistent_read=True)["Item"]

    def send(self, built: tuple[str, dict], *, created: int = T, event_id: str) -> Any:
        body, _ = notification(*built, secret=SECRET, created=created, event_id=event_id)
        return self.events.apply(parse_event(body))


@pytest.fixture
def rig(aws: Settings, clock: SteppingClock) -> Iterator[Rig]:
    settings = replace(aws, processor="local")
    with use_settings(settings):
        create_tables(settings)
        models = bind_models(settings)
        service = PaymentService(models=models, clock=clock)
        processor = LocalProcessor(models=models, clock=clock, ids=SeededIds(7))
        checkout = Checkout(service, processor, sleep=lambda _: None)
        yield Rig(settings, models, service, processor, checkout, ProcessorEvents(service, checkout), clock)


def entry(rig: Rig, payment: Payment, object_id: str) -> dict:
    return rig.read(payment).processor_events.as_dict()[object_id]


# -- disputes ----------------------------------------------------------------------------------------------------------


def test_a_dispute_charges_back_its_amount_in_one_write_that_records_the_event(rig: Rig) -> None:
    payment = rig.payment()
    applied = rig.send(dispute_created(payment, dispute_id="dp_1", amount=600), event_id="pev_01")
    assert applied.outcome is EventOutcome.APPLIED
    stored = rig.read(payment)
    assert (stored.status, int(stored.version)) == ("charged_back", int(payment.version) + 1)  # one transition
    change = stored.last_transition
    assert (change.type, change.actor, int(change.amount)) == ("chargeback", "processor", 600)
    assert change.detail.as_dict() == {"processor_event": "pev_01", "object": "dp_1"}
    assert entry(rig, payment, "dp_1") == {"event_id": "pev_01", "at": T, "state": "needs_response",
                                           "outcome": "applied", "amount": 600, "applied": ["chargeback"]}  # fmt: skip


def test_a_won_dispute_is_reversed_and_a_lost_one_is_recorded_only(rig: Rig) -> None:
    won, lost = rig.payment("won"), rig.payment("lost")
    for payment, name in ((won, "dp_won"), (lost, "dp_lost")):
        rig.send(dispute_created(payment, dispute_id=name), event_id=f"pev_{len(name):02x}a")
    assert rig.send(dispute_closed(won, dispute_id="dp_won", status="won"), created=T + 60,
                    event_id="pev_b1").outcome is EventOutcome.APPLIED  # fmt: skip
    assert rig.read(won).status == "captured" and rig.read(won).last_transition.type == "reverse_chargeback"
    assert entry(rig, won, "dp_won")["applied"] == ["chargeback", "reverse_chargeback"]
    before = rig.read(lost)
    closed = rig.send(dispute_closed(lost, dispute_id="dp_lost", status="lost"), created=T + 60, event_id="pev_b2")
    assert closed.outcome is EventOutcome.UNCHANGED
    after = rig.read(lost)
    assert (after.status, after.version) == ("charged_back", before.version)  # no transition, the map records it
    assert entry(rig, lost, "dp_lost")["state"] == "lost" and entry(rig, lost, "dp_lost")["event_id"] == "pev_b2"


def test_a_dispute_a_settlement_file_charged_back_first_is_unchanged_and_its_win_reverses_it(rig: Rig) -> None:
    payment = rig.payment()
    payment = rig.service.chargeback(M, payment.id, actor="reconciliation", amount=1000)
    assert rig.send(dispute_created(payment, dispute_id="dp_1"), event_id="pev_01").outcome is EventOutcome.UNCHANGED
    assert rig.read(payment).version == payment.version
    won = rig.send(dispute_closed(payment, dispute_id="dp_1", status="won"), created=T + 1, event_id="pev_02")
    assert won.outcome is EventOutcome.APPLIED and rig.read(payment).status == "captured"
    assert entry(rig, payment, "dp_1")["applied"] == ["reverse_chargeback"]


def test_a_repeated_event_is_a_duplicate_and_writes_nothing(rig: Rig) -> None:
    payment = rig.payment()
    built = dispute_created(payment, dispute_id="dp_1")
    rig.send(built, event_id="pev_01")
    before = rig.raw(payment)
    assert rig.send(built, event_id="pev_01").outcome is EventOutcome.DUPLICATE
    assert rig.raw(payment) == before


def test_an_event_older_than_the_one_kept_is_stale_and_writes_nothing(rig: Rig) -> None:
    payment = rig.payment()
    rig.send(dispute_created(payment, dispute_id="dp_1"), event_id="pev_01")
    rig.send(dispute_closed(payment, dispute_id="dp_1", status="lost"), created=T + 100, event_id="pev_02")
    before = rig.raw(payment)
    # a creation delivered again after the close (even with a later timestamp): a closed dispute is final
    assert rig.send(dispute_created(payment, dispute_id="dp_1"), created=T + 200,
                    event_id="pev_03").outcome is EventOutcome.STALE  # fmt: skip
    assert rig.send(dispute_closed(payment, dispute_id="dp_1", status="won"), created=T + 300,
                    event_id="pev_04").outcome is EventOutcome.STALE  # fmt: skip
    refund = rig.payment("refund")
    rig.send(refunded(refund, amount=100, refund_id="re_1"), created=T + 50, event_id="pev_05")
    refund_before = rig.raw(refund)
    assert rig.send(refunded(refund, amount=100, refund_id="re_1"), created=T + 10,
                    event_id="pev_06").outcome is EventOutcome.STALE  # fmt: skip
    assert rig.raw(payment) == before and rig.raw(refund) == refund_before


def test_out_of_order_the_final_state_decides(rig: Rig) -> None:
    won, lost = rig.payment("won"), rig.payment("lost")
    # won before its creation was seen: nothing was taken, nothing to reverse
    first = rig.send(dispute_closed(won, dispute_id="dp_w", status="won"), created=T + 60, event_id="pev_01")
    assert first.outcome is EventOutcome.UNCHANGED
    assert (rig.read(won).status, rig.read(won).version) == ("captured", won.version)
    assert rig.send(dispute_created(won, dispute_id="dp_w"), event_id="pev_02").outcome is EventOutcome.STALE
    assert rig.read(won).status == "captured"
    # lost before its creation: the money is gone
    assert rig.send(dispute_closed(lost, dispute_id="dp_l", status="lost"), created=T + 60,
                    event_id="pev_03").outcome is EventOutcome.APPLIED  # fmt: skip
    assert rig.read(lost).status == "charged_back"
    assert rig.send(dispute_created(lost, dispute_id="dp_l"), event_id="pev_04").outcome is EventOutcome.STALE
    assert [t.type for t in rig.service.transactions(M, lost.id)] == ["authorize", "capture", "chargeback"]


def test_a_dispute_the_state_machine_refuses_is_not_applicable_and_recorded(rig: Rig) -> None:
    voided = rig.payment("voided", capture=False)
    voided = rig.service.void(M, voided.id, actor=M)  # keeps its processor reference
    refunded_in_full = rig.service.refund(M, rig.payment("refunded").id, actor=M, amount=1000)
    for payment, state in ((voided, "voided"), (refunded_in_full, "refunded")):
        refused = rig.send(dispute_created(payment, dispute_id="dp_1", amount=1000), event_id="pev_01")
        assert refused.outcome is EventOutcome.NOT_APPLICABLE
        stored = rig.read(payment)
        assert (stored.status, stored.version) == (state, payment.version)
        recorded = entry(rig, payment, "dp_1")
        assert (recorded["outcome"], recorded["applied"]) == ("not_applicable", [])
        assert rig.send(dispute_created(payment, dispute_id="dp_1", amount=1000),
                        event_id="pev_01").outcome is EventOutcome.DUPLICATE  # fmt: skip


def test_a_dispute_for_more_than_is_held_or_in_another_currency_is_not_applicable(rig: Rig) -> None:
    payment = rig.payment()
    rig.service.refund(M, payment.id, actor=M, amount=300)
    payment = rig.read(payment)
    assert rig.send(dispute_created(payment, dispute_id="dp_1", amount=800),
                    event_id="pev_01").outcome is EventOutcome.NOT_APPLICABLE  # fmt: skip
    kind, obj = dispute_created(payment, dispute_id="dp_2", amount=100)
    assert rig.send((kind, {**obj, "currency": "eur"}), event_id="pev_02").outcome is EventOutcome.NOT_APPLICABLE
    assert rig.read(payment).status == "partially_refunded"


def test_an_event_whose_charge_or_payment_is_not_ours_is_unknown_and_writes_nothing(rig: Rig) -> None:
    payment = rig.payment()
    before = rig.raw(payment)
    kind, obj = dispute_created(payment, dispute_id="dp_1")
    mismatch = rig.send((kind, {**obj, "charge": "ch_someoneelse"}), event_id="pev_01")
    assert (mismatch.outcome, mismatch.payment) == (EventOutcome.UNKNOWN_PAYMENT, None)
    missing = rig.send((kind, {**obj, "payment_id": "no-such-payment"}), event_id="pev_02")
    assert missing.outcome is EventOutcome.UNKNOWN_PAYMENT
    assert rig.raw(payment) == before


def test_a_payment_that_changes_meanwhile_is_read_and_decided_again(rig: Rig, monkeypatch) -> None:
    payment = rig.payment()
    real_read = rig.events._read
    reads = []

    def read_then_refund(payment_id: str) -> Payment:
        found = real_read(payment_id)
        reads.append(found.version)
        if len(reads) == 1:  # between our read and our write, the merchant refunds 300
            rig.service.refund(M, payment_id, actor=M, amount=300)
        return found

    monkeypatch.setattr(rig.events, "_read", read_then_refund)
    applied = rig.send(dispute_created(payment, dispute_id="dp_1", amount=1000), event_id="pev_01")
    assert applied.outcome is EventOutcome.NOT_APPLICABLE  # decided again: 1,000 is more than the 700 held now
    assert reads == [payment.version, payment.version + 1]
    assert rig.read(payment).status == "partially_refunded"


def test_a_payment_that_keeps_changing_defers_the_event(rig: Rig, monkeypatch) -> None:
    payment = rig.payment()
    reads = []
    real_read = rig.events._read
    monkeypatch.setattr(rig.events, "_read", lambda payment_id: reads.append(payment_id) or real_read(payment_id))

    def conflict(event: Any, current: Payment) -> None:
        raise VersionConflictError(current.id, current.version)

    monkeypatch.setattr(rig.events, "_apply", conflict)
    with pytest.raises(ProcessorEventDeferredError) as raised:
        rig.send(dispute_created(payment, dispute_id="dp_1", amount=100), event_id="pev_01")
    assert len(reads) == MAX_ATTEMPTS == 3 and raised.value.http_status == 503


def test_a_transition_blocked_by_a_processor_call_in_flight_is_deferred(rig: Rig) -> None:
    payment = rig.payment()
    Model = rig.models.payment
    call = ProcessorCallAttribute(operation="refund", key="refund-key", amount=100, started_at=rig.clock.now())
    update_unversioned(Model, payment.id, payment.version, [Model.processor_call.set(call)])
    with pytest.raises(ProcessorEventDeferredError) as raised:
        rig.send(dispute_created(payment, dispute_id="dp_1"), event_id="pev_01")
    assert raised.value.http_status == 503
    stored = rig.read(payment)
    assert stored.status == "captured" and stored.processor_events is None


# -- refunds made at the processor -------------------------------------------------------------------------------------


def test_a_refund_at_the_processor_is_applied_once_per_refund_id(rig: Rig) -> None:
    payment = rig.payment()
    assert rig.send(refunded(payment, amount=250, refund_id="re_1"), event_id="pev_01").outcome is EventOutcome.APPLIED
    stored = rig.read(payment)
    assert (stored.status, int(stored.refunded_amount), stored.last_transition.actor) == (
        "partially_refunded", 250, "processor")  # fmt: skip
    # the same refund told again in a later event (another id): applied already
    again = rig.send(refunded(payment, amount=250, refund_id="re_1"), created=T + 5, event_id="pev_02")
    assert again.outcome is EventOutcome.UNCHANGED and int(rig.read(payment).refunded_amount) == 250
    assert rig.send(refunded(payment, amount=750, refund_id="re_2"), event_id="pev_03").outcome is EventOutcome.APPLIED
    assert rig.read(payment).status == "refunded"
    assert rig.send(refunded(payment, amount=1, refund_id="re_3"),
                    event_id="pev_04").outcome is EventOutcome.NOT_APPLICABLE  # fmt: skip


def test_a_refund_we_made_ourselves_is_not_applied_again(rig: Rig) -> None:
    payment = rig.payment()
    Model = rig.models.payment
    rig.service.transition(M, payment.id, "refund", actor=M, amount=200, audit_detail={"processor_reference": "re_api"},
                           extend=lambda _: ([], None))  # fmt: skip
    assert rig.send(refunded(payment, amount=200, refund_id="re_api"),
                    event_id="pev_01").outcome is EventOutcome.UNCHANGED  # fmt: skip
    assert int(Model.get(payment.id, consistent_read=True).refunded_amount) == 200


def test_a_refund_we_made_through_the_api_stays_applied_after_the_history_forgets_it(rig: Rig) -> None:
    """Checkout records its refund in ``processor_events`` with the transition: the processor's notification of it
    is ``unchanged`` however many changes came after (the kept history holds only HISTORY_LIMIT)."""
    payment = rig.payment()
    first = rig.checkout.refund(M, payment.id, actor=M, amount=10, idempotency_key="r0").charge
    for i in range(HISTORY_LIMIT):
        rig.checkout.refund(M, payment.id, actor=M, amount=10, idempotency_key=f"r{i + 1}")
    stored = rig.read(payment)
    assert all(t.detail is None or t.detail.as_dict().get("processor_reference") != first.reference
               for t in stored.transitions)  # fmt: skip
    applied = rig.send(refunded(stored, amount=10, refund_id=first.reference), event_id="pev_aa")
    assert applied.outcome is EventOutcome.UNCHANGED and int(rig.read(payment).refunded_amount) == 90
    assert rig.read(payment).processor_events.as_dict()[first.reference]["applied"] == ["refund"]


@pytest.mark.parametrize("kind", ["dispute", "refund"])
def test_a_dispute_or_refund_while_a_capture_is_in_flight_is_deferred_then_applied(rig: Rig, kind: str) -> None:
    """A capture whose answer was lost leaves the payment authorized: decided then, a chargeback would be refused,
    recorded, and its redeliveries taken for duplicates. Deferred (503) with nothing written, it is applied once the
    capture is resolved."""
    payment = rig.payment(capture=False)
    rig.processor.inject(Fault.TIMEOUT_AFTER, operation=CAPTURE)
    with pytest.raises(ProcessorTimeoutError):
        rig.checkout.capture(M, payment.id, actor=M)
    stored = rig.read(payment)
    event = (dispute_created(stored, dispute_id="dp_1", amount=1000) if kind == "dispute"
             else refunded(stored, amount=1000, refund_id="re_1"))  # fmt: skip
    with pytest.raises(ProcessorEventDeferredError) as raised:
        rig.send(event, event_id="pev_01")
    assert raised.value.http_status == 503
    assert rig.read(payment).processor_events is None and rig.read(payment).version == stored.version
    rig.checkout.capture(M, payment.id, actor=M)  # the client's retry resolves the capture
    assert rig.send(event, event_id="pev_01").outcome is EventOutcome.APPLIED
    assert rig.read(payment).status == ("charged_back" if kind == "dispute" else "refunded")


# -- late authorisation outcomes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "status"), [("pm_card_visa", "authorized"), ("pm_card_declined", "failed")])
def test_a_late_authorisation_outcome_resolves_the_call_in_flight(rig: Rig, method: str, status: str) -> None:
    rig.processor.inject(Fault.TIMEOUT_AFTER)
    with pytest.raises(ProcessorTimeoutError):  # the processor acted; its answer was lost; the request gave up
        rig.checkout.create_and_authorize(M, "order-1", 1000, "USD", method)
    payment = rig.models.payment.get(rig.processor.charges(approved=None)[0].payment_id, consistent_read=True)
    assert payment.status == "pending" and payment.processor_call.operation == AUTHORIZE
    charge = rig.processor.find(processor_key(payment.id, AUTHORIZE))
    applied = rig.send(authorization_outcome(payment, charge), event_id="pev_01")
    assert applied.outcome is EventOutcome.APPLIED and applied.payment.status == status
    stored = rig.read(payment)
    assert stored.processor_call is None and stored.status == status
    assert rig.processor.calls == 1  # found in the processor's record, never sent again
    if status == "authorized":
        assert stored.processor_reference == charge.reference
    # nothing in flight any more: the same outcome again changes nothing
    before = rig.raw(payment)
    assert rig.send(authorization_outcome(payment, charge), event_id="pev_02").outcome is EventOutcome.UNCHANGED
    assert rig.raw(payment) == before
    if status == "failed":  # and the client's retry replays the decline
        with pytest.raises(PaymentDeclinedError):
            rig.checkout.create_and_authorize(M, "order-1", 1000, "USD", method)


def test_an_authorisation_outcome_the_processor_has_no_record_of_is_deferred_and_nothing_is_sent(rig: Rig) -> None:
    rig.processor.inject(Fault.TIMEOUT_BEFORE)  # the request never reached the processor
    with pytest.raises(ProcessorTimeoutError):
        rig.checkout.create_and_authorize(M, "order-1", 1000, "USD", "pm_card_visa")
    payment = next(iter(rig.models.payment.scan()))
    before, calls = rig.raw(payment), rig.processor.calls
    key = processor_key(payment.id, AUTHORIZE)
    forged = ("charge.authorization.succeeded", {"id": key, "charge": "ch_1", "payment_id": payment.id,
                                                 "amount": 1000, "currency": "usd"})  # fmt: skip
    with pytest.raises(ProcessorEventDeferredError):
        rig.send(forged, event_id="pev_01")
    assert rig.raw(payment) == before and rig.processor.calls == calls
    assert rig.processor.charges(approved=None) == []


def test_an_authorisation_outcome_with_nothing_in_flight_changes_nothing(rig: Rig) -> None:
    payment = rig.payment(capture=False)
    charge = rig.processor.find(processor_key(payment.id, AUTHORIZE))
    before = rig.raw(payment)
    assert rig.send(authorization_outcome(payment, charge), event_id="pev_01").outcome is EventOutcome.UNCHANGED
    kind, obj = authorization_outcome(payment, charge)
    other = rig.send((kind, {**obj, "charge": "ch_another"}), event_id="pev_02")
    assert other.outcome is EventOutcome.UNKNOWN_PAYMENT
    assert rig.raw(payment) == before and rig.processor.calls == 1


def test_a_late_authorisation_outcome_without_a_processor_is_a_configuration_error(rig: Rig) -> None:
    rig.processor.inject(Fault.TIMEOUT_AFTER)
    with pytest.raises(ProcessorTimeoutError):
        rig.checkout.create_and_authorize(M, "order-1", 1000, "USD", "pm_card_visa")
    charge = rig.processor.charges()[0]
    payment = rig.models.payment.get(charge.payment_id)
    body, _ = notification(*authorization_outcome(payment, charge), secret=SECRET, created=T, event_id="pev_01")
    with pytest.raises(ConfigurationError):
        ProcessorEvents(rig.service).apply(body)


# -- what the stream's consumer makes of it ----------------------------------------------------------------------------


def test_the_audit_trail_and_transactions_show_the_chargeback_by_the_processor(rig: Rig) -> None:
    payment = rig.payment()
    rig.send(dispute_created(payment, dispute_id="dp_1"), event_id="pev_01")
    rig.send(dispute_closed(payment, dispute_id="dp_1", status="lost"), created=T + 9, event_id="pev_02")  # map only
    stats = drain()
    assert stats.failed == 0
    trail = rig.service.audit_trail(M, payment.id)
    assert [e.action for e in trail] == ["create", "authorize", "capture", "chargeback"]  # nothing unattributed
    chargeback = trail[-1]
    assert chargeback.actor == "processor"
    assert chargeback.detail == {"processor_event": "pev_01", "object": "dp_1", "amount": "1000"}
    assert rig.service.audit.verify(f"payment#{payment.id}").ok
    views = rig.service.transactions(M, payment.id)
    assert [(v.type, v.actor, v.amount, v.source) for v in views][-1] == ("chargeback", "processor", 1000, "projection")
    assert PaymentProjector(models=rig.models).subject.bookkeeping >= {"processor_events"}


# -- parsing -----------------------------------------------------------------------------------------------------------


def _document(**changes: Any) -> dict:
    obj = {"id": "dp_1", "charge": "ch_1", "payment_id": "p-1", "amount": 100, "currency": "usd",
           "reason": "fraudulent", "status": "needs_response"}  # fmt: skip
    obj.update(changes.pop("obj", {}))
    return {"id": "pev_01", "type": DISPUTE_CREATED, "created": T, "data": {"object": obj}, **changes}


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ("not json", "body"),
        ("[1, 2]", "body"),
        ('{"id": NaN}', "body"),
        (_document(id="evt_1"), "id"),
        (_document(id="pev_XYZ"), "id"),
        (_document(type="charge.captured"), "type"),
        (_document(created="1767225600"), "created"),
        (_document(created=True), "created"),
        (_document(created=-5), "created"),
        (_document(data=None), "data.object"),
        (_document(data={"object": []}), "data.object"),
        (_document(obj={"id": None}), "data.object.id"),
        (_document(obj={"id": "re_1"}), "data.object.id"),
        (_document(obj={"charge": "py_1"}), "data.object.charge"),
        (_document(obj={"payment_id": ""}), "data.object.payment_id"),
        (_document(obj={"payment_id": "p\n1"}), "data.object.payment_id"),
        (_document(obj={"payment_id": 12}), "data.object.payment_id"),
        (_document(obj={"amount": 0}), "data.object.amount"),
        (_document(obj={"amount": -100}), "data.object.amount"),
        (_document(obj={"amount": 10.5}), "data.object.amount"),
        (_document(obj={"amount": "100"}), "data.object.amount"),
        (_document(obj={"currency": "usdollar"}), "data.object.currency"),
        (_document(obj={"currency": 840}), "data.object.currency"),
        (_document(obj={"status": "won"}), "data.object.status"),
        (_document(type="charge.dispute.closed"), "data.object.status"),
        (_document(obj={"reason": 5}), "data.object.reason"),
        (_document(type=REFUNDED, obj={"id": "re_1", "status": "pending"}), "data.object.status"),
    ],
)
def test_a_bad_notification_is_a_validation_error_naming_the_field(document: Any, field: str) -> None:
    raw = document if isinstance(document, str) else json.dumps(document)
    with pytest.raises(ValidationError) as raised:
        parse_event(raw)
    assert raised.value.field == field


def test_a_good_notification_parses_and_ignores_fields_it_does_not_use() -> None:
    event = parse_event(json.dumps(_document(livemode=False, obj={"evidence": {"x": 1}})))
    assert (event.id, event.object_id, event.charge, event.amount, event.currency, event.state) == (
        "pev_01", "dp_1", "ch_1", 100, "USD", "needs_response")  # fmt: skip


def test_the_simulated_processor_signs_what_it_sends_and_is_deterministic_given_ids(rig: Rig) -> None:
    from payment_examples.core.signatures import PROCESSOR_SIGNATURE_HEADER, verify_signature

    payment = rig.payment()
    built = dispute_created(payment, dispute_id="dp_1")
    first = notification(*built, secret=SECRET, created=T, event_id="pev_01")
    assert first == notification(*built, secret=SECRET, created=T, event_id="pev_01")
    body, headers = first
    assert verify_signature(body, headers[PROCESSOR_SIGNATURE_HEADER], [SECRET], now=T) == T
    assert json.loads(body)["data"]["object"]["charge"] == payment.processor_reference
    assert notification(*built, secret=SECRET, created=T)[0] != body  # a new event id each time otherwise
    with pytest.raises(ValueError):
        dispute_closed(payment, dispute_id="dp_1", status="needs_response")


# -- reconciliation after the webhook ----------------------------------------------------------------------------------

FILE = SettlementFile("file-1", "settlement-1.csv")


def _row(payment: Payment, status: str, amount: int, line: int, reference: str) -> SettlementRow:
    return SettlementRow(line, payment.id, M, amount, "USD", SettlementStatus(status), START, reference)


def _reconcile(rig: Rig, rows: list[SettlementRow]) -> list[str]:
    reconciler = Reconciler(rig.service, store=RunStore(rig.settings, clock=rig.clock), clock=rig.clock,
                            max_workers=1)  # fmt: skip
    return [r.outcome.value for r in reconciler.reconcile_batch(FILE, rows)]


def test_settlement_rows_after_the_webhook_are_matched_not_applied_again(rig: Rig) -> None:
    charged_back, won, refund = rig.payment("cb"), rig.payment("won"), rig.payment("refund")
    rig.send(dispute_created(charged_back, dispute_id="dp_1"), event_id="pev_01")
    rig.send(dispute_created(won, dispute_id="dp_2", amount=400), event_id="pev_02")
    rig.send(dispute_closed(won, dispute_id="dp_2", status="won", amount=400), created=T + 1, event_id="pev_03")
    rig.send(refunded(refund, amount=300, refund_id="re_1"), event_id="pev_04")
    versions = {p.id: rig.read(p).version for p in (charged_back, won, refund)}
    outcomes = _reconcile(rig, [
        _row(charged_back, "chargeback", 1000, 2, "txn_1"),
        _row(won, "chargeback", 400, 3, "txn_2"),  # the dispute's withdrawal, then its reversal: both the webhook's
        _row(won, "chargeback_reversal", 400, 4, "txn_3"),
        _row(refund, "refund", 300, 5, "txn_4"),
        _row(refund, "refunded", 300, 6, "txn_5"),
    ])  # fmt: skip
    assert outcomes == ["matched"] * 5
    assert {p.id: rig.read(p).version for p in (charged_back, won, refund)} == versions  # no transition at all
    assert [rig.read(p).status for p in (charged_back, won, refund)] == ["charged_back", "captured",
                                                                          "partially_refunded"]  # fmt: skip


def test_a_reversal_row_alone_is_matched_and_a_row_disagreeing_with_the_webhook_is_a_mismatch(rig: Rig) -> None:
    alone, other, plain = rig.payment("alone"), rig.payment("other"), rig.payment("plain")
    for payment, dispute, amount in ((alone, "dp_1", 1000), (other, "dp_2", 400)):
        rig.send(dispute_created(payment, dispute_id=dispute, amount=amount), event_id=f"pev_{dispute[-1]}a")
        rig.send(dispute_closed(payment, dispute_id=dispute, status="won", amount=amount), created=T + 1,
                 event_id=f"pev_{dispute[-1]}b")  # fmt: skip
    outcomes = _reconcile(rig, [
        _row(alone, "chargeback_reversal", 1000, 2, "txn_1"),  # its chargeback row is in another period's file
        _row(other, "chargeback", 500, 3, "txn_2"),
        _row(plain, "chargeback", 1000, 4, "txn_3"),  # no webhook: applied as before
    ])  # fmt: skip
    assert outcomes == ["matched", "amount_mismatch", "applied"]
    assert [rig.read(p).status for p in (alone, other, plain)] == ["captured", "captured", "charged_back"]


def test_notified_counts_what_no_reconciled_row_has_matched_yet() -> None:
    events = {"dp_1": {"amount": 400, "applied": ["chargeback", "reverse_chargeback"]},
              "re_1": {"amount": 300, "applied": ["refund"]}}  # fmt: skip
    assert Notified.unmatched(events, []) == Notified((400,), (400,))
    marks = [{"status": "chargeback", "event": "chargeback#t1", "outcome": "matched", "amount": 400},
             {"status": "chargeback", "event": "chargeback#t1", "outcome": "matched", "amount": 400},  # same event
             {"status": "chargeback_reversal", "event": "chargeback_reversal#t2", "outcome": "illegal_transition",
              "amount": 400}]  # fmt: skip
    assert Notified.unmatched(events, marks) == Notified((), (400,))
    row = SettlementRow(2, "p", M, 400, "USD", SettlementStatus.CHARGEBACK, START, "t9")
    captured = Balances(1000, 1000)
    assert decide(row, "captured", captured, Reported(), Notified((400,), ())).outcome is Outcome.MATCHED
    assert decide(row, "captured", captured, Reported(), Notified()).outcome is Outcome.APPLIED
