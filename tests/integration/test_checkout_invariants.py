"""The checkout flow's invariants under random sequences, on the local moto server process, the flow engine (a
Hypothesis stateful test: moto in-process is not thread-safe, and the servers are what the flow runs against
elsewhere).

The machine creates card payments through the process handler (approving and declining test cards), replays earlier
requests, captures (``Checkout.capture``), refunds and voids (``PaymentService``), and meanwhile makes things go
wrong: processor timeouts before and after the charge, DynamoDB responses lost after the write was applied (a
botocore hook), workers killed at a step of the flow (``on_step`` raises; a killed worker runs no cleanup, so its
processor call stays its own until its lease runs out; the real SIGKILL is tested elsewhere), and ``recover`` runs
after the clock moved past its cut-off. After every step, once the stream's consumer has caught up (``drain``), the
books must balance:

* captured <= authorised amount, refunded <= captured;
* exactly one Transaction per payment version (ids derived from (payment id, version)) and one audit entry per
  version, the chain intact: the projections of the payments table's stream, whatever was lost or killed;
* the Transactions' amounts add up to the payment's balances (captures to ``captured_amount``, refunds to
  ``refunded_amount``);
* at most one approved processor authorisation per payment, exactly one (the payment's ``processor_reference``)
  for a payment that holds or held money, and at most one approved capture, equal to ``captured_amount`` once no
  processor call is in flight;
* a replay gets the first final answer's status (201 or 402) about the same payment, answered from the payment as it
  is now (one round trip: the payment is its own idempotency record).

After a ``recover`` run that nothing interrupted, nothing is left in flight: no processor call.

Each Hypothesis example gets empty tables (deleted and created again under one prefix: a new prefix per example
would cost about 2.5 s of new botocore clients, one per model class) and a fixed clock that only the machine moves.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import replace
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
    rule,
    run_state_machine_as_test,
)

from payment_examples.checkout.processor import (
    APPROVING_METHODS,
    AUTHORIZE,
    CAPTURE,
    DECLINING_METHODS,
    Fault,
    LocalProcessor,
)
from payment_examples.checkout.recovery import recover
from payment_examples.checkout.service import Checkout
from payment_examples.core import aws
from payment_examples.core.clock import FixedClock, SeededIds
from payment_examples.core.config import Settings, use_settings
from payment_examples.core.errors import IllegalTransitionError, PaymentNotFoundError, ProcessorTimeoutError
from payment_examples.handlers import process
from payment_examples.harness.consumer import drain
from payment_examples.idempotency.middleware import IdempotencyMiddleware
from payment_examples.payments.service import PaymentService, audit_entity
from payment_examples.tables.models import BoundModels, bind_models, create_tables, payment_id_for, transaction_id_for
from tests.api_events import HS_SECRET, api_event, token
from tests.conftest import START

# the rest of the flow: on the moto server alone (tests/conftest.py); engine processes: not in make test-fast
pytestmark = [pytest.mark.flow, pytest.mark.slow]

MERCHANT = "merchant-1"
CARDS = (*sorted(APPROVING_METHODS) * 2, *sorted(DECLINING_METHODS))  # two approvals for every decline
OLD = timedelta(minutes=5)  # recover's cut-off
# Payments that hold or held money: each has exactly one approved authorisation at the processor.
HELD = frozenset({"authorized", "captured", "partially_refunded", "refunded", "charged_back"})
# DynamoDB calls whose response can be lost after the server applied them: (operation, table without prefix).
LOSABLE = (
    ("PutItem", "payments"),  # the create (with the authorisation about to be sent)
    ("UpdateItem", "payments"),  # a transition's commit, or a capture's call being recorded
)
# Lose the response of one call of this kind during the step, mostly none.
LOSE = st.sampled_from([None] * 12 + list(LOSABLE))
_prefixes = count()
# What a replay repeats of the first final answer: the payment is answered as it is now (it may have been captured
# or refunded since), so its id, the decline and what the request asked for.
SAME = ("id", "payment_id", "decline_code", "amount", "currency", "payment_method", "created_at")
OUTCOMES: Counter[str] = Counter()  # what the runs did (to check that the machine reaches every path)


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


class CheckoutMachine(RuleBasedStateMachine):
    keys = Bundle("keys")

    def __init__(self, ctx: Ctx) -> None:
        super().__init__()
        self.models = ctx.fresh_tables()
        self.network = ctx.network
        self.network.armed, self.network.fired = None, 0
        self.clock = FixedClock(START)
        self.service = PaymentService(models=self.models, clock=self.clock)
        self.processor = LocalProcessor(models=self.models, clock=self.clock, ids=SeededIds(7))
        self.checkout = Checkout(self.service, self.processor, sleep=lambda _: None, on_step=self._on_step)
        self.middleware = IdempotencyMiddleware(settings=ctx.settings, clock=self.clock, ids=SeededIds(8))
        self.handler = process.make_handler(self.service, self.checkout)
        self.kill_at: str | None = None
        self.bodies: dict[str, dict] = {}  # idempotency key -> the request body
        self.final: dict[str, tuple[int, dict]] = {}  # idempotency key -> the first final response (201, 402)
        self.next_key = count()

    # -- plumbing -------------------------------------------------------------------------------------------------

    def _on_step(self, step: str, _payment: Any) -> None:
        if step == self.kill_at:
            raise WorkerKilled(step)  # a BaseException: from here on, the worker's cleanup never runs

    def _post(self, key: str) -> tuple[int, dict]:
        headers = {"Authorization": f"Bearer {token(merchant_id=MERCHANT)}", "Idempotency-Key": key}
        return response(
            self.handler(api_event("2.0", "POST", "/payments", headers=headers, body=self.bodies[key]), None)
        )

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

    def _pick(self, key: str, pick: int, statuses: frozenset[str]) -> str:
        """Mostly a payment in one of ``statuses`` (Hypothesis draws bundle entries mostly from the first few, which
        would leave captures and refunds mostly illegal), else ``key``."""
        if pick % 4 == 0:
            return key
        ids = {payment_id_for(MERCHANT, k): k for k in self.bodies}
        found = sorted(ids[p.id] for p in self.models.payment.scan(consistent_read=True) if p.status in statuses)
        return found[pick % len(found)] if found else key

    def _record(self, key: str, outcome: tuple[int, dict]) -> None:
        if outcome[0] in (201, 402) and key not in self.final:
            self.final[key] = outcome

    # -- rules ----------------------------------------------------------------------------------------------------

    @initialize(target=keys, amount=st.integers(1, 3000))
    def first_payment(self, amount: int) -> str:
        """Every run starts with a payment that goes through (so captures and refunds have something to act on)."""
        return self.create(amount=amount, card="pm_card_visa", fault=None, kill=None, lose=None)

    @rule(
        target=keys,
        amount=st.integers(1, 3000),
        card=st.sampled_from(CARDS),
        fault=st.sampled_from([None] * 4 + [Fault.TIMEOUT_BEFORE, Fault.TIMEOUT_AFTER]),
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

    @rule(
        key=keys,
        percent=st.one_of(st.none(), st.integers(1, 120)),
        fault=st.sampled_from([None] * 4 + [Fault.TIMEOUT_BEFORE, Fault.TIMEOUT_AFTER]),
        kill=st.sampled_from([None] * 5 + ["capture-marked", "capture-sent", "captured"]),
        lose=LOSE,
        pick=st.integers(0, 99),
    )
    def capture(
        self, key: str, percent: int | None, fault: Fault | None, kill: str | None, lose: Any, pick: int
    ) -> None:
        """Capture (all, or a share of the authorised amount, possibly too much) through the processor."""
        key = self._pick(key, pick, frozenset({"authorized"}))
        amount = None if percent is None else max(1, self.bodies[key]["amount"] * percent // 100)
        if fault is not None:
            self.processor.inject(fault, operation=CAPTURE)
        self.kill_at = kill
        fired = self.network.fired
        try:
            with self._lossy(lose):
                self.checkout.capture(MERCHANT, payment_id_for(MERCHANT, key), actor=MERCHANT, amount=amount)
            OUTCOMES["captured"] += 1
        except (WorkerKilled, IllegalTransitionError, PaymentNotFoundError, ProcessorTimeoutError) as error:
            OUTCOMES[f"capture: {type(error).__name__}"] += 1
        except Exception:
            if self.network.fired == fired:
                raise
        finally:
            self.kill_at = None

    @rule(
        key=keys,
        amount=st.integers(1, 3000),
        void=st.sampled_from([False, False, False, True]),
        lose=LOSE,
        pick=st.integers(0, 99),
    )
    def refund_or_void(self, key: str, amount: int, void: bool, lose: Any, pick: int) -> None:
        """``PaymentService.refund`` (of any amount: too much is refused), or now and then ``void``."""
        wanted = {"authorized", "pending"} if void else {"captured", "partially_refunded"}
        key = self._pick(key, pick, frozenset(wanted))
        payment_id = payment_id_for(MERCHANT, key)
        if void:
            self._void(payment_id, lose)
            return
        refund = self.service.refund
        self._transition(lose, "refund", lambda: refund(MERCHANT, payment_id, actor=MERCHANT, amount=amount))

    def _void(self, payment_id: str, lose: Any) -> None:
        self._transition(lose, "void", lambda: self.service.void(MERCHANT, payment_id, actor=MERCHANT))

    def _transition(self, lose: Any, name: str, call: Any) -> None:
        fired = self.network.fired
        try:
            with self._lossy(lose):
                call()
            OUTCOMES[f"{name} applied"] += 1
        except (IllegalTransitionError, PaymentNotFoundError):  # not found: a lost response stopped its create
            pass
        except Exception:
            if self.network.fired == fired:
                raise

    @rule(
        seconds=st.sampled_from([5, 31, 301]),
        sweep=st.booleans(),
        kill=st.sampled_from([None, None, "authorize-sent", "authorized", "capture-sent", "captured"]),
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


@pytest.fixture(scope="module")
def ctx(engine_session: Settings) -> Iterator[Ctx]:
    settings = replace(engine_session, table_prefix=f"inv{next(_prefixes)}-", processor="local", jwt_secret=HS_SECRET)
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
