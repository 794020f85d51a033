"""The checkout flow's invariants under random sequences, on the local moto server process, the flow engine (a
Hypothesis stateful test: moto in-process is not thread-safe, and the servers are what the flow runs against
elsewhere).

The machine creates card payments through the process handler (approving and declining test cards) and replays
earlier requests; captures, refunds and voids them through the actions handler (``POST /payments/{id}/capture``,
``/refunds``, ``/void``, each under an ``Idempotency-Key``; now and then a capture straight through
``Checkout.capture``) and repeats earlier action requests; and sends signed processor notifications through the
processor events handler (``POST /processor/events``: a dispute opened, closed won or lost, a refund made at the
processor, a notification of one of our own refunds, the processor's redelivery of an earlier notification, an
older notification of a dispute after a newer one, and the late outcome of an authorisation whose answer was lost).
Meanwhile it makes things go wrong: processor timeouts before and after the charge (authorisations, captures,
refunds), DynamoDB responses lost after the write was applied (a botocore hook), workers killed at a step of the flow
(``on_step`` raises; a killed worker runs no cleanup, so its processor call and its idempotency claim stay its own
until their leases run out; the real SIGKILL is tested elsewhere), and ``recover`` runs after the clock moved past
its cut-off. After every step, once the stream's consumer has caught up (``drain``), the books must balance:

* captured <= authorised amount, refunded <= captured;
* exactly one Transaction per payment version (ids derived from (payment id, version)) and one audit entry per
  version, the chain intact: the projections of the payments table's stream, whatever was lost or killed;
* the Transactions' amounts add up to the payment's balances (captures to ``captured_amount``, refunds to
  ``refunded_amount``, processor-initiated refunds included);
* at most one approved processor authorisation per payment, exactly one (the payment's ``processor_reference``)
  for a payment that holds or held money, and at most one approved capture, equal to ``captured_amount`` once no
  processor call is in flight;
* the processor's refunds are ours: once no call is in flight, the ledger's refunds of a payment are exactly its
  refund Transactions that no processor notification made (count and sum: refunded_amount less the refunds made at
  the processor), and no request (by its key) made more than one;
* disputes: a payment is ``charged_back`` exactly when the record its dispute keeps (``processor_events``) is
  opened or lost with a chargeback standing; a dispute makes at most one chargeback and one reversal, and the
  chargeback Transactions are the ones the disputes' records applied;
* a replay gets the first final answer's status (201 or 402) about the same payment, answered from the payment as it
  is now (one round trip: the payment is its own idempotency record); an action's repeat gets the first final
  answer (200, 201, 402 or 422) exactly, body and status, marked ``Idempotent-Replayed``;
* every notification is answered 200 (a duplicate as ``duplicate``, an older event of a closed dispute as
  ``stale``), or 503 when the engine lost a response or another processor call was in flight on the payment.

After a ``recover`` run that nothing interrupted, nothing is left in flight: no processor call.

Each Hypothesis example gets empty tables (deleted and created again under one prefix: a new prefix per example
would cost about 2.5 s of new botocore clients, one per model class) and a fixed clock that only the machine moves
(the processor events handler checks signatures against the events' clock, the machine's, so they are signed at
its time).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from itertools import count
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from pynamodb.exceptions import DoesNotExist

from payment_examples.checkout.processor import (
    APPROVING_METHODS,
    AUTHORIZE,
    CAPTURE,
    DECLINING_METHODS,
    REFUND,
    Fault,
    LocalProcessor,
)
from payment_examples.checkout.processor_events import (
    ProcessorEvents,
    authorization_outcome,
    dispute_closed,
    dispute_created,
    notification,
    refunded,
)
from payment_examples.checkout.recovery import recover
from payment_examples.checkout.service import Checkout, ProcessorCallInFlightError, balances_of
from payment_examples.core import aws
from payment_examples.core.clock import FixedClock, SeededIds
from payment_examples.core.config import Settings, use_settings
from payment_examples.core.errors import IllegalTransitionError, PaymentNotFoundError, ProcessorTimeoutError
from payment_examples.handlers import actions, process, processor_events
from payment_examples.harness.consumer import drain
from payment_examples.idempotency.middleware import IdempotencyMiddleware
from payment_examples.payments import Operation, plan_transition
from payment_examples.payments.service import PaymentService, audit_entity
from payment_examples.tables.models import (
    BoundModels,
    Payment,
    bind_models,
    create_tables,
    payment_id_for,
    transaction_id_for,
)
from tests.api_events import HS_SECRET, api_event, token
from tests.conftest import START

# the rest of the flow: on the moto server alone (tests/conftest.py); engine processes: not in make test-fast
pytestmark = [pytest.mark.flow, pytest.mark.slow]

MERCHANT = "merchant-1"
PROCESSOR_SECRET = "whsec_invariants-processor-secret-0123456789"
CARDS = (*sorted(APPROVING_METHODS) * 2, *sorted(DECLINING_METHODS))  # two approvals for every decline
OLD = timedelta(minutes=5)  # recover's cut-off
# Payments that hold or held money: each has exactly one approved authorisation at the processor.
HELD = frozenset({"authorized", "captured", "partially_refunded", "refunded", "charged_back"})
# Payments a notification is mostly about: the processor holds their money (captured, not all refunded).
HOLDING = frozenset({"captured", "partially_refunded", "charged_back"})
# DynamoDB calls whose response can be lost after the server applied them: (operation, table without prefix).
LOSABLE = (
    ("PutItem", "payments"),  # the create (with the authorisation about to be sent)
    ("UpdateItem", "payments"),  # a transition's commit, a processor call being recorded, an event's record
)
# Lose the response of one call of this kind during the step, mostly none.
LOSE = st.sampled_from([None] * 12 + list(LOSABLE))
FAULT = st.sampled_from([None] * 4 + [Fault.TIMEOUT_BEFORE, Fault.TIMEOUT_AFTER])
_prefixes = count()
# What a replay repeats of the first final answer: the payment is answered as it is now (it may have been captured
# or refunded since), so its id, the decline and what the request asked for.
SAME = ("id", "payment_id", "decline_code", "amount", "currency", "payment_method", "created_at")
OUTCOMES: Counter[str] = Counter()  # what the runs did (to check that the machine reaches every path)


@dataclass(frozen=True)
class Verb:
    """An action of the payments API: its route, the statuses it acts on, its success and where a worker stops."""

    path: str
    operation: Operation
    wants: frozenset[str]
    success: int
    steps: tuple[str, ...] = ()  # marked, sent, applied (no processor call: none)


VERBS = {
    "capture": Verb("capture", Operation.CAPTURE, frozenset({"authorized"}), 200,
                    ("capture-marked", "capture-sent", "captured")),
    "refund": Verb("refunds", Operation.REFUND, frozenset({"captured", "partially_refunded"}), 201,
                   ("refund-marked", "refund-sent", "refunded")),
    "void": Verb("void", Operation.VOID, frozenset({"authorized", "pending"}), 200),
}  # fmt: skip
FINAL_ACTION = frozenset({200, 201, 402, 422})  # stored by the middleware: every repeat gets it exactly
# Notifications: weights of what the processor sends.
EVENT_KINDS = ("created",) * 3 + ("won", "lost") * 2 + ("refund",) * 2 + ("ours", "again", "again", "older", "late")


@dataclass(frozen=True)
class Sent:
    """A notification the processor sent (its redelivery is the same body, signed again)."""

    payment_id: str
    object_id: str
    event_id: str
    event_type: str
    obj: dict[str, Any]
    created: int


class WorkerKilled(BaseException):
    """Stands for a worker killed at a step: a BaseException, so no ``except Exception`` of the flow handles it."""


class Network:
    """Loses the response of the next armed DynamoDB call after the server applied it (botocore hooks on every
    client the flow uses; registered once per test, since the clients live as long as the settings)."""

    def __init__(self, settings: Settings, clients: list[Any]) -> None:
        self.prefix = settings.table_prefix
        self.armed: tuple[str, str] | None = None
        self.fired = 0
        for client in clients:
            events = client.meta.events
            events.register("before-parameter-build.dynamodb", self._before, unique_id=f"lose-before-{id(self)}")
            events.register("after-call.dynamodb", self._after, unique_id=f"lose-after-{id(self)}")

    def _before(self, params: dict, model: Any, context: dict, **_: Any) -> None:
        if self.armed is not None and (model.name, params.get("TableName")) == (
            self.armed[0],
            self.prefix + self.armed[1],
        ):
            self.armed = None
            context["lose_response"] = True

    def _after(self, context: dict, **_: Any) -> None:
        if context.get("lose_response"):
            self.fired += 1
            raise ReadTimeoutError(endpoint_url="the local engine (response lost on purpose)")


class Ctx:
    """What lives as long as the test: the settings, their models and the lossy network."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        create_tables(settings)
        self.models = bind_models(settings)
        tables = (*self.models.all(), self.models.processor_ledger)
        clients = [m._get_connection().connection.client for m in tables] + [aws.dynamodb(settings)]
        self.network = Network(settings, clients)

    def fresh_tables(self) -> BoundModels:
        for model in (*self.models.all(), self.models.processor_ledger):
            model.delete_table()
        create_tables(self.settings)
        return self.models


def response(raw: dict) -> tuple[int, dict]:
    return raw["statusCode"], json.loads(raw["body"])


def entries_of(payment: Payment) -> dict[str, dict[str, Any]]:
    """The payment's processor-event records (per dispute or refund), as plain values."""
    raw = payment.processor_events
    found = raw.as_dict() if hasattr(raw, "as_dict") else dict(raw or {})
    return {key: dict(value) for key, value in found.items()}


def detail_of(change: Any) -> dict[str, Any]:
    return change.detail.as_dict() if hasattr(change.detail, "as_dict") else dict(change.detail or {})


class CheckoutMachine(RuleBasedStateMachine):
    keys = Bundle("keys")
    requests = Bundle("requests")  # action requests' idempotency keys

    def __init__(self, ctx: Ctx) -> None:
        super().__init__()
        self.models = ctx.fresh_tables()
        self.network = ctx.network
        self.network.armed, self.network.fired = None, 0
        self.secret = ctx.settings.processor_webhook_secret
        self.clock = FixedClock(START)
        self.service = PaymentService(models=self.models, clock=self.clock)
        self.processor = LocalProcessor(models=self.models, clock=self.clock, ids=SeededIds(7))
        self.checkout = Checkout(self.service, self.processor, sleep=lambda _: None, on_step=self._on_step)
        self.middleware = IdempotencyMiddleware(settings=ctx.settings, clock=self.clock, ids=SeededIds(8))
        self.handler = process.make_handler(self.service, self.checkout)
        self.actions = actions.make_handler(self.service, self.checkout, self.middleware)
        self.events = ProcessorEvents(self.service, self.checkout)  # its clock: the service's, the machine's
        self.notify = processor_events.make_handler(self.events)
        self.kill_at: str | None = None
        self.bodies: dict[str, dict] = {}  # idempotency key -> the request body
        self.final: dict[str, tuple[int, dict]] = {}  # idempotency key -> the first final response (201, 402)
        self.next_key = count()
        self.asked: dict[str, tuple[str, dict | None]] = {}  # action key -> (path, body)
        self.answered: dict[str, tuple[int, dict]] = {}  # action key -> the first final answer (FINAL_ACTION)
        self.sent: list[Sent] = []  # notifications, in the order first sent
        self.next_event = count(1)
        self.dispute_amounts: dict[str, int] = {}  # dispute id -> its amount (what the payment held when opened)

    # -- plumbing -------------------------------------------------------------------------------------------------

    def _on_step(self, step: str, _payment: Any) -> None:
        if step == self.kill_at:
            raise WorkerKilled(step)  # a BaseException: from here on, the worker's cleanup never runs

    def _post(self, key: str) -> tuple[int, dict]:
        headers = {"Authorization": f"Bearer {token(merchant_id=MERCHANT)}", "Idempotency-Key": key}
        return response(
            self.handler(api_event("2.0", "POST", "/payments", headers=headers, body=self.bodies[key]), None)
        )

    def _act(self, key: str) -> tuple[int, dict, dict]:
        """The action request remembered under ``key``, through the actions handler: status, body, headers."""
        path, body = self.asked[key]
        headers = {"Authorization": f"Bearer {token(merchant_id=MERCHANT)}", "Idempotency-Key": key}
        payment_id = path.split("/")[2]
        event = api_event("2.0", "POST", path, headers=headers, body=body, path_parameters={"id": payment_id})
        raw = self.actions(event, None)
        return raw["statusCode"], json.loads(raw["body"]), raw["headers"]

    def _quiet(self) -> bool:
        """No processor fault injected earlier is still pending (one could change an outcome)."""
        return self.processor.pending_faults() == 0

    @contextlib.contextmanager
    def _lossy(self, lose: tuple[str, str] | None) -> Iterator[None]:
        """Lose the response of the first ``lose`` call made inside the block (if any is made)."""
        self.network.armed = lose
        try:
            yield
        finally:
            self.network.armed = None

    def _pick(self, key: str, pick: int, statuses: frozenset[str], stray: int = 4) -> str:
        """Mostly a payment in one of ``statuses`` (Hypothesis draws bundle entries mostly from the first few, which
        would leave captures and refunds mostly illegal), else (one pick in ``stray``) ``key``."""
        if pick % stray == 0:
            return key
        ids = {payment_id_for(MERCHANT, k): k for k in self.bodies}
        found = sorted(ids[p.id] for p in self.models.payment.scan(consistent_read=True) if p.status in statuses)
        return found[pick % len(found)] if found else key

    def _payment(self, payment_id: str) -> Payment | None:
        try:
            return self.models.payment.get(payment_id, consistent_read=True)
        except DoesNotExist:
            return None

    def _record(self, key: str, outcome: tuple[int, dict]) -> None:
        if outcome[0] in (201, 402) and key not in self.final:
            self.final[key] = outcome

    # -- rules: creates -------------------------------------------------------------------------------------------

    @initialize(target=keys, amount=st.integers(1, 3000))
    def first_payment(self, amount: int) -> str:
        """Every run starts with a payment that goes through (so captures and voids have something to act on)..."""
        return self.create(amount=amount, card="pm_card_visa", fault=None, kill=None, lose=None)

    @initialize(target=keys, amount=st.integers(2, 3000))
    def captured_payment(self, amount: int) -> str:
        """...and one captured through the API (so refunds and disputes have something to act on)."""
        key = self.create(amount=amount, card="pm_card_visa", fault=None, kill=None, lose=None)
        request = f"action-{next(self.next_key)}"
        self.asked[request] = (f"/payments/{payment_id_for(MERCHANT, key)}/capture", None)
        status, answer, _ = self._act(request)
        assert status == 200 and answer["status"] == "captured", answer
        return key

    @rule(
        target=keys,
        amount=st.integers(1, 3000),
        card=st.sampled_from(CARDS),
        fault=FAULT,
        kill=st.sampled_from([None] * 5 + ["created", "authorize-sent", "authorized"]),
        lose=LOSE,
    )
    def create(self, amount: int, card: str, fault: Fault | None, kill: str | None, lose: Any) -> str:
        """A new request through the process handler, perhaps with a processor timeout or a killed worker."""
        key = f"order-{next(self.next_key)}"
        self.bodies[key] = {"amount": amount, "currency": "USD", "payment_method": card}
        quiet = self._quiet() and fault is None and kill is None
        if fault is not None:
            self.processor.inject(fault, operation=AUTHORIZE)
        self.kill_at = kill
        fired = self.network.fired
        try:
            with self._lossy(lose):
                outcome = self._post(key)
        except WorkerKilled:
            return key
        finally:
            self.kill_at = None
        quiet = quiet and self.network.fired == fired
        self._record(key, outcome)
        OUTCOMES[f"create: {outcome[0]}"] += 1
        if quiet:
            if card in APPROVING_METHODS:
                assert outcome[0] == 201 and outcome[1]["status"] == "authorized", outcome
            else:
                assert outcome[0] == 402 and outcome[1]["decline_code"] == DECLINING_METHODS[card], outcome
        elif fault is not None and kill is None and self.network.fired == fired:
            assert outcome[0] == 503, outcome
        return key

    @rule(key=keys, lose=LOSE)
    def replay(self, key: str, lose: Any) -> None:
        """The same request again (same key, same body): the original response once that was final."""
        fired = self.network.fired
        with self._lossy(lose):
            outcome = self._post(key)
        lost = self.network.fired > fired
        if key in self.final and not lost:  # the same answer about the same payment, as the payment is now
            first = self.final[key]
            assert outcome[0] == first[0], (outcome, first)
            assert {k: outcome[1].get(k) for k in SAME} == {k: first[1].get(k) for k in SAME}, (outcome, first)
        self._record(key, outcome)
        assert outcome[0] in (201, 402, 409, 500, 503), outcome

    # -- rules: captures, refunds, voids --------------------------------------------------------------------------

    @rule(
        target=requests,
        key=keys,
        verb=st.sampled_from(["capture"] * 3 + ["refund"] * 3 + ["void"]),
        percent=st.one_of(st.none(), st.integers(1, 120)),
        fault=FAULT,
        kill=st.sampled_from([None] * 5 + [0, 1, 2]),
        lose=LOSE,
        pick=st.integers(0, 99),
        direct=st.sampled_from([False] * 5 + [True]),
    )
    def action(
        self, key: str, verb: str, percent: int | None, fault: Fault | None, kill: int | None, lose: Any, pick: int,
        direct: bool,
    ) -> Any:  # fmt: skip
        """A capture (all, or a share of the authorised amount, possibly too much), a refund (a share of what is
        still refundable, possibly too much) or a void through the actions handler under a new key, perhaps with a
        processor timeout, a killed worker or a lost response; now and then a capture straight through
        ``Checkout.capture`` (no key: a script's)."""
        spec = VERBS[verb]
        key = self._pick(key, pick, spec.wants)
        payment_id = payment_id_for(MERCHANT, key)
        if direct and verb == "capture":
            self._capture_directly(key, percent, fault, kill, lose)
            return multiple()
        before = self._payment(payment_id)
        amount: int | None = None
        if verb == "capture" and percent is not None:
            amount = max(1, self.bodies[key]["amount"] * percent // 100)
        elif verb == "refund":
            held = int(before.captured_amount) - int(before.refunded_amount) if before is not None else 0
            amount = max(1, (held or self.bodies[key]["amount"]) * (percent or 30) // 100)  # mostly partial
        body = {"amount": amount} if amount is not None else ({"reason": "cancelled"} if percent else None)
        request = f"action-{next(self.next_key)}"
        self.asked[request] = (f"/payments/{payment_id}/{spec.path}", body)
        pending = not self._quiet()
        if fault is not None and spec.steps:
            self.processor.inject(fault, operation=spec.operation.value)
        killing = kill is not None and bool(spec.steps)
        self.kill_at = spec.steps[kill] if killing else None
        fired = self.network.fired
        try:
            with self._lossy(lose):
                status, answer, headers = self._act(request)
        except WorkerKilled:
            OUTCOMES[f"{verb}: killed"] += 1
            return request
        finally:
            self.kill_at = None
        lost = self.network.fired > fired
        OUTCOMES[f"{verb}: {status}"] += 1
        assert status in (spec.success, 404, 409, 422, 503), (verb, status, answer)
        assert "Idempotent-Replayed" not in headers, headers  # a new key: nothing to replay
        if status in FINAL_ACTION:
            self.answered[request] = (status, answer)
        if before is None or before.processor_call is not None or pending or lost or killing:
            return request
        # Nothing in flight, nothing pending, nothing lost: the state machine decides, and a timeout is a 503.
        try:
            plan_transition(payment_id, before.status, balances_of(before), spec.operation, amount)
        except IllegalTransitionError:
            assert status == 422 and answer["status"] == 422, (verb, before.status, amount, status, answer)
            return request
        if fault is not None and spec.steps:
            assert status == 503 and headers.get("Retry-After"), (verb, status, answer)
        else:
            assert status == spec.success, (verb, before.status, amount, status, answer)
            assert answer["id"] == payment_id and answer["version"] == int(before.version) + 1, answer
        return request

    def _capture_directly(
        self, key: str, percent: int | None, fault: Fault | None, kill: int | None, lose: Any
    ) -> None:
        amount = None if percent is None else max(1, self.bodies[key]["amount"] * percent // 100)
        if fault is not None:
            self.processor.inject(fault, operation=CAPTURE)
        self.kill_at = VERBS["capture"].steps[kill] if kill is not None else None
        fired = self.network.fired
        try:
            with self._lossy(lose):
                self.checkout.capture(MERCHANT, payment_id_for(MERCHANT, key), actor=MERCHANT, amount=amount)
            OUTCOMES["captured directly"] += 1
        except (
            WorkerKilled, IllegalTransitionError, PaymentNotFoundError, ProcessorTimeoutError,
            ProcessorCallInFlightError,
        ) as error:  # fmt: skip
            OUTCOMES[f"capture directly: {type(error).__name__}"] += 1
        except Exception:
            if self.network.fired == fired:
                raise
        finally:
            self.kill_at = None

    @rule(request=requests, lose=LOSE)
    def replay_action(self, request: str, lose: Any) -> None:
        """An earlier action request again (same key, route and body): once its first answer was final, exactly
        that answer, replayed; before, it runs (again), finishing what an earlier attempt left."""
        fired = self.network.fired
        with self._lossy(lose):
            status, answer, headers = self._act(request)
        lost = self.network.fired > fired
        OUTCOMES[f"replay action: {status}"] += 1
        assert status in (200, 201, 404, 409, 422, 503), (status, answer)
        if request in self.answered and not lost:
            assert (status, answer) == self.answered[request], ((status, answer), self.answered[request])
            assert headers.get("Idempotent-Replayed") == "true", headers
        if status in FINAL_ACTION:
            self.answered.setdefault(request, (status, answer))

    # -- rules: the processor's notifications ---------------------------------------------------------------------

    @rule(
        key=keys,
        kind=st.sampled_from(EVENT_KINDS),
        percent=st.integers(1, 100),
        pick=st.integers(0, 99),
        lose=LOSE,
    )
    def processor_event(self, key: str, kind: str, percent: int, pick: int, lose: Any) -> None:
        """A signed notification through the processor events handler, about a payment that (mostly) holds money:
        its dispute opened, closed won or lost, a refund made at the processor (at most what is refundable), a
        notification of one of our own refunds, the redelivery of the latest notification of an object, an older
        one after a newer one of the same dispute, or the late outcome of an authorisation in flight."""
        found = self._notification(key, kind, percent, pick)
        if found is None:
            OUTCOMES["event: nothing to send"] += 1
            return
        sent, before, kind = found
        created = sent.created
        body, headers = notification(sent.event_type, sent.obj, secret=self.secret, created=created,
                                     event_id=sent.event_id, signed_at=int(self.clock.now().timestamp()))  # fmt: skip
        kept = entries_of(before).get(sent.object_id)
        fired = self.network.fired
        with self._lossy(lose):
            raw = self.notify(api_event("2.0", "POST", "/processor/events", headers=headers, body=body.decode()), None)
        status, answer = response(raw)
        lost = self.network.fired > fired
        OUTCOMES[f"event {kind}: {answer.get('outcome', status)}"] += 1
        late = kind == "late"  # its call is in flight, and the processor has its record: resolved now
        if status == 503 and (lost or (before.processor_call is not None and not late)):
            return  # the processor delivers it again later
        assert status == 200, (kind, sent, status, answer)
        assert answer["received"] is True and answer["event_id"] == sent.event_id, answer
        if lost:
            return
        outcome = answer["outcome"]
        if late:
            assert outcome == "applied", answer
        elif kept is not None and kept["event_id"] == sent.event_id:
            assert outcome == "duplicate", (kept, answer)
        elif kept is not None and sent.object_id.startswith("dp_") and kept["state"] in ("won", "lost"):
            assert outcome == "stale", (kept, answer)
        elif kind == "ours":
            assert outcome == "unchanged", (sent, answer)
        elif kept is None and kind in ("refund", "created", "won", "lost"):  # the first word about its object
            assert outcome == self._first_outcome(before, kind, int(sent.obj["amount"])), (before.status, sent, answer)

    @staticmethod
    def _first_outcome(payment: Payment, kind: str, amount: int) -> str:
        """What the first event about a refund or a dispute does to ``payment`` (nothing in flight on it)."""
        if kind == "won" and payment.status != "charged_back":
            return "unchanged"  # nothing was taken
        if kind in ("created", "lost") and payment.status == "charged_back":
            return "unchanged"
        operation = {"refund": Operation.REFUND, "won": Operation.REVERSE_CHARGEBACK}.get(kind, Operation.CHARGEBACK)
        try:
            plan_transition(payment.id, payment.status, balances_of(payment), operation, amount)
        except IllegalTransitionError:
            return "not_applicable"
        return "applied"

    def _notification(self, key: str, kind: str, percent: int, pick: int) -> tuple[Sent, Payment, str] | None:
        """What the processor sends now (a new notification, remembered, or one sent before), the payment it is
        about as it is before it is sent, and what it is (``kind``, or what was sent instead when there was none)."""
        if kind in ("again", "older"):
            latest: dict[str, Sent] = {}
            for sent in self.sent:
                latest[sent.object_id] = sent
            if kind == "again":
                choices = sorted(latest.values(), key=lambda s: s.event_id)
            else:  # an older event of a dispute whose newer one was sent (out of order)
                choices = [s for s in self.sent if s.object_id.startswith("dp_") and latest[s.object_id] is not s]
            if choices:
                sent = choices[pick % len(choices)]
                return sent, self._payment(sent.payment_id), kind
            kind = "created"
        if kind == "late":
            in_flight = sorted(
                (p for p in self.models.payment.scan(consistent_read=True)
                 if p.processor_call is not None and p.processor_call.operation == AUTHORIZE),
                key=lambda p: p.id,
            )  # fmt: skip
            charges = [(p, self.processor.find(p.processor_call.key)) for p in in_flight]
            charges = [(p, c) for p, c in charges if c is not None]  # no record: a 503 (nothing to trigger yet)
            if charges:
                payment, charge = charges[pick % len(charges)]
                return self._remember(payment, *authorization_outcome(payment, charge)), payment, kind
            kind = "created"
        payment = self._payment(payment_id_for(MERCHANT, self._pick(key, pick, HOLDING, stray=8)))
        if payment is None or not payment.processor_reference:
            return None  # the processor never authorised it: it sends nothing about it
        if kind == "ours":
            ours = sorted((c.reference, c.amount) for c in self.processor.charges(REFUND) if c.payment_id == payment.id)
            if ours:
                reference, amount = ours[pick % len(ours)]
                return self._remember(payment, *refunded(payment, amount=amount, refund_id=reference)), payment, kind
            kind = "created"
        if kind == "refund":
            held = int(payment.captured_amount) - int(payment.refunded_amount)
            amount = max(1, held * percent // 100)
            refund_id = f"re_pr{next(self.next_event):06d}"
            return self._remember(payment, *refunded(payment, amount=amount, refund_id=refund_id)), payment, kind
        # One dispute per charge (as card networks have it), named after the payment, of what it held when opened.
        dispute = "dp_" + hashlib.sha256(payment.id.encode()).hexdigest()[:24]
        amount = self.dispute_amounts.get(dispute)
        if kind == "created" and amount is not None:  # opened once: the processor closes it
            kind = ("won", "lost")[pick % 2]
        elif kind != "created" and amount is None and pick % 3:  # mostly opened before it is closed
            kind = "created"
        if kind == "created":
            event = dispute_created(payment, dispute_id=dispute, amount=amount)
        else:
            event = dispute_closed(payment, dispute_id=dispute, status=kind, amount=amount)
        self.dispute_amounts.setdefault(dispute, event[1]["amount"])
        return self._remember(payment, *event), payment, kind

    def _remember(self, payment: Payment, event_type: str, obj: dict[str, Any]) -> Sent:
        sent = Sent(payment.id, obj["id"], f"pev_{next(self.next_event):08x}", event_type, obj,
                    int(self.clock.now().timestamp()))  # fmt: skip
        self.sent.append(sent)
        return sent

    # -- rules: time ----------------------------------------------------------------------------------------------

    @rule(
        seconds=st.sampled_from([5, 31, 301]),
        sweep=st.booleans(),
        kill=st.sampled_from([None, None, "authorize-sent", "authorized", "capture-sent", "captured", "refund-sent"]),
        lose=LOSE,
    )
    def time_passes(self, seconds: int, sweep: bool, kill: str | None, lose: Any) -> None:
        """Time passes (leases run out), and perhaps ``recover`` runs once everything is older than its cut-off
        (perhaps killed itself)."""
        self.clock.advance(timedelta(seconds=seconds))
        if not sweep:
            return
        self.clock.advance(OLD + timedelta(seconds=1))
        quiet = self._quiet()  # a processor fault still pending may strike recover too (it reports, and goes on)
        self.kill_at = kill
        fired = self.network.fired
        try:
            with self._lossy(lose):
                report = recover(self.checkout, self.middleware, older_than=OLD)
        except WorkerKilled:
            return
        except Exception:
            if self.network.fired == fired:
                raise
            return
        finally:
            self.kill_at = None
        if self.network.fired > fired or not quiet:
            return
        OUTCOMES[f"recover resolved {len(report.resolved_calls)} calls"] += 1
        # Nothing interrupted it: nothing may be left behind.
        assert not [r for r in report.resolved_calls if r[2].startswith("error")], report
        for payment in self.models.payment.scan(consistent_read=True):
            assert payment.processor_call is None, (payment.id, payment.status, payment.processor_call.operation)

    # -- invariants -----------------------------------------------------------------------------------------------

    @invariant()
    def the_books_balance(self) -> None:
        assert drain().failed == 0  # the consumer catches up on everything committed so far, giving up on nothing
        payments = list(self.models.payment.scan(consistent_read=True))
        transactions = defaultdict(list)
        for transaction in self.models.transaction.scan(consistent_read=True):
            transactions[transaction.payment_id].append(transaction)
        charges = defaultdict(list)
        for charge in self.processor.charges(None, approved=True):
            charges[charge.payment_id, charge.operation].append(charge)
        assert set(t for t in transactions) <= {p.id for p in payments}
        for p in payments:
            amount, captured, refunded = int(p.amount), int(p.captured_amount), int(p.refunded_amount)
            where = (p.id, p.status, int(p.version))
            assert 0 <= captured <= amount, where
            assert 0 <= refunded <= captured, where
            # Exactly one Transaction per version (2, 3, ...: version 1 is the create) and one audit entry per
            # version (1, 2, ...), whatever was lost or killed: the projections are complete once drained.
            versions = [int(t.payment_version) for t in transactions[p.id]]
            assert sorted(versions) == list(range(2, p.version + 1)), (where, versions)
            assert all(t.id == transaction_id_for(p.id, int(t.payment_version)) for t in transactions[p.id]), where
            chain = self.service.audit.verify(audit_entity(p.id))
            assert chain.ok and chain.entries == p.version, (where, chain.summary())
            # The Transactions add up to the balances.
            moved = [(t.type, int(t.amount)) for t in transactions[p.id]]
            assert sum(a for kind, a in moved if kind == "capture") == captured, (where, moved)
            assert sum(a for kind, a in moved if kind == "refund") == refunded, (where, moved)
            # The processor: one authorisation per payment that holds money, at most one capture, and the money
            # captured there is the money captured here once no call is in flight.
            authorisations = charges[p.id, AUTHORIZE]
            assert len(authorisations) <= 1, (where, authorisations)
            if p.status in HELD:
                assert len(authorisations) == 1 and p.processor_reference == authorisations[0].reference, where
            captures = charges[p.id, CAPTURE]
            assert len(captures) <= 1, (where, captures)
            if p.processor_call is None:
                assert sum(c.amount for c in captures) == captured, (where, captures)
            self._refunds_balance(p, where, moved, charges[p.id, REFUND])
            self._disputes_balance(p, where, moved)

    def _refunds_balance(self, p: Payment, where: tuple, moved: list[tuple[str, int]], ledger: list[Any]) -> None:
        """The ledger's refunds are the refund Transactions no notification made, each request's at most once."""
        entries = entries_of(p)
        assert all(e["applied"].count("refund") <= 1 for e in entries.values()), (where, entries)
        # Refunds made at the processor: recorded under their refund id, one the ledger (ours) does not hold. (Ours
        # may be recorded too, under the ledger's reference: by the transition that applied it, or its notification.)
        references = {c.reference for c in ledger}
        at_processor = [
            int(e["amount"])
            for k, e in entries.items()
            if k.startswith("re_") and k not in references and "refund" in e["applied"]
        ]
        refunds = [a for kind, a in moved if kind == "refund"]
        ours_count, ours_sum = len(refunds) - len(at_processor), sum(refunds) - sum(at_processor)
        call = p.processor_call
        in_flight = int(call.amount) if call is not None and call.operation == REFUND else None
        if in_flight is None:
            assert (len(ledger), sum(c.amount for c in ledger)) == (ours_count, ours_sum), (where, ledger, moved)
        else:  # its answer may be lost: at the processor, not yet here
            assert len(ledger) - ours_count in (0, 1), (where, ledger, moved)
            assert sum(c.amount for c in ledger) - ours_sum in (0, in_flight), (where, ledger, moved)
        kept = [detail_of(t) for t in p.transitions or () if t.type == "refund"]
        per_request = Counter(d["idempotency_key"] for d in kept if "idempotency_key" in d)
        assert all(n == 1 for n in per_request.values()), (where, per_request)
        per_reference = Counter(d.get("processor_reference") for d in kept if "processor_event" not in d)
        assert all(n == 1 and r in references for r, n in per_reference.items()), (where, per_reference, references)

    def _disputes_balance(self, p: Payment, where: tuple, moved: list[tuple[str, int]]) -> None:
        """Charged back exactly while a dispute's chargeback stands (opened or lost), at most one each way."""
        disputes = {k: e for k, e in entries_of(p).items() if k.startswith("dp_")}
        standing = []
        for dispute, entry in disputes.items():
            made, reversed_ = entry["applied"].count("chargeback"), entry["applied"].count("reverse_chargeback")
            assert made <= 1 and reversed_ <= made, (where, dispute, entry)
            if made > reversed_:
                assert entry["state"] in ("needs_response", "lost"), (where, dispute, entry)
                standing.append(dispute)
            elif entry["state"] == "lost":  # lost: the money is gone, unless it never held any
                assert made == 0 and entry["outcome"] in ("not_applicable", "unchanged"), (where, dispute, entry)
        assert (p.status == "charged_back") == bool(standing), (where, disputes)
        kinds = Counter(kind for kind, _ in moved)
        applied = Counter(op for e in disputes.values() for op in e["applied"])
        assert (kinds["chargeback"], kinds["reverse_chargeback"]) == (
            applied["chargeback"],
            applied["reverse_chargeback"],
        ), (where, kinds, disputes)


@pytest.fixture(scope="module")
def ctx(engine_session: Settings) -> Iterator[Ctx]:
    settings = replace(engine_session, table_prefix=f"inv{next(_prefixes)}-", processor="local", jwt_secret=HS_SECRET,
                       processor_webhook_secret=PROCESSOR_SECRET)  # fmt: skip
    with use_settings(settings):
        yield Ctx(settings)


def test_checkout_invariants_hold_under_random_sequences(ctx: Ctx) -> None:
    run_state_machine_as_test(
        lambda: CheckoutMachine(ctx),
        settings=hypothesis_settings(
            max_examples=15,
            stateful_step_count=15,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


# -- counterexamples found by the machine, as plain tests --------------------------------------------------------------


@pytest.fixture
def machine(ctx: Ctx) -> CheckoutMachine:
    return CheckoutMachine(ctx)


def test_a_void_while_a_processor_call_is_in_flight_leaves_none_stuck(machine: CheckoutMachine) -> None:
    # The worker is killed after the processor approved the authorisation, before the answer was applied.
    key = machine.create(amount=900, card="pm_card_visa", fault=None, kill="authorize-sent", lose=None)
    payment_id = payment_id_for(MERCHANT, key)
    with pytest.raises(IllegalTransitionError, match="in flight"):  # refused until the authorisation is resolved
        machine.service.void(MERCHANT, payment_id, actor=MERCHANT)
    machine.clock.advance(OLD + timedelta(seconds=1))
    report = recover(machine.checkout, machine.middleware, older_than=OLD)
    assert not [outcome for *_, outcome in report.resolved_calls if outcome.startswith("error")], report
    assert machine.models.payment.get(payment_id, consistent_read=True).processor_call is None


@pytest.mark.parametrize("call", [("PutItem", "payments"), ("UpdateItem", "payments")])
def test_a_lost_dynamodb_response_is_a_503_to_retry(machine: CheckoutMachine, call: tuple[str, str]) -> None:
    machine.network.armed = call  # the payment's put, or the commit of its authorisation
    machine.bodies["order"] = {"amount": 900, "currency": "USD", "payment_method": "pm_card_visa"}
    status, problem = machine._post("order")
    assert machine.network.fired == 1
    assert status == 503, problem
