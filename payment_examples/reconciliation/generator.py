"""Seeded settlement files with known answers: the payments, the file, and the expected outcome of every row.

``SettlementScenario(rows, seed, discrepancy_rate)`` describes, deterministically and as a stream (a 1,000,000-row
scenario never sits in memory), three things the notebook, the tests, the benchmarks and ``payment-examples
gen-settlement`` share:

* the payments the file refers to, in the states the rows need (``create_scenario_payments`` writes them as
  fixtures with ``BatchWriteItem``, like ``seed.py``);
* the settlement file (``write_settlement_file``), most rows clean (a capture to apply, a capture to match, a
  refund, a chargeback, a failure) and a ``discrepancy_rate`` share with a discrepancy of every kind the
  reconciliation knows: malformed rows, duplicates, unknown payments, another merchant's payment, wrong currency,
  wrong amounts, illegal transitions;
* the answer key: each data row's expected outcome (by line), and the payments expected as ``missing_in_file``
  (captured, never in the file, older than the grace period; a few younger ones must *not* be reported).
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TextIO

from payment_examples.core import Settings
from payment_examples.payments import PaymentStatus
from payment_examples.reconciliation.settlement_file import COLUMNS
from payment_examples.tables.models import (
    TransitionAttribute,
    created_key,
    get_models,
    merchant_status_key,
    payment_id_for,
)

S = PaymentStatus
DEFAULT_MERCHANTS = ("merchant-a", "merchant-b", "merchant-c")
CURRENCIES = ("USD", "USD", "EUR", "GBP", "JPY")
# Clean rows: (kind, weight). Discrepancies: chosen uniformly.
CLEAN = (("capture", 55), ("capture_partial", 5), ("match_capture", 25), ("refund", 4), ("match_refund", 3),
         ("chargeback", 2), ("match_chargeback", 2), ("fail", 2), ("match_fail", 2))  # fmt: skip
DISCREPANCIES = ("invalid_row", "duplicate_row", "unknown_payment", "merchant_mismatch", "currency_mismatch",
                 "amount_mismatch", "illegal_transition")  # fmt: skip
_INVALID = (
    ("amount", "12.50"), ("amount", "-100"), ("amount", "0"), ("amount", ""), ("currency", "XYZ"),
    ("currency", "usd"), ("status", "captured"), ("settled_at", "2026-03-02 10:00"), ("settled_at", "yesterday"),
    ("payment_id", ""), ("merchant_id", ""), ("processor_reference", "ref\nwith a line break"), ("row", None),
)  # fmt: skip


@dataclass(frozen=True)
class PaymentSpec:
    """A payment as the scenario needs it to exist before the file is reconciled."""

    merchant_id: str
    idempotency_key: str
    amount: int
    currency: str
    status: PaymentStatus
    captured: int
    refunded: int
    created_at: datetime

    @property
    def id(self) -> str:
        return payment_id_for(self.merchant_id, self.idempotency_key)


@dataclass(frozen=True)
class Expected:
    """The expected outcome of one data row (``line`` set) or one ``missing_in_file`` payment (``line`` None)."""

    line: int | None
    payment_id: str
    outcome: str
    kind: str


@dataclass(frozen=True)
class Event:
    payments: tuple[PaymentSpec, ...]
    fields: list[str] | None  # the CSV row, None for a payment that has no row
    expected: Expected


class SettlementScenario:
    def __init__(
        self,
        rows: int,
        seed: int = 0,
        discrepancy_rate: float = 0.1,
        *,
        settled_on: date = date(2026, 3, 2),
        merchants: tuple[str, ...] = DEFAULT_MERCHANTS,
        grace: timedelta = timedelta(days=2),
    ) -> None:
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise ValueError(f"rows must be a positive integer, got {rows!r}")
        if not 0.0 <= discrepancy_rate <= 1.0:
            raise ValueError(f"discrepancy_rate must be within [0, 1], got {discrepancy_rate!r}")
        if len(merchants) < 2:
            raise ValueError("a scenario needs at least two merchants (for merchant_mismatch)")
        self.rows, self.seed, self.rate = rows, seed, discrepancy_rate
        self.merchants = merchants
        self.day_start = datetime.combine(settled_on, time(0), UTC)
        self.created_from = self.day_start - timedelta(days=10)
        self.grace = grace

    # -- the stream of events -------------------------------------------------------------------------------------

    def events(self) -> Iterator[Event]:
        rng = random.Random(self.seed)
        line = 1  # the header
        last_valid: tuple[list[str], str] | None = None
        for i in range(self.rows):
            kind = self._kind(rng, i)
            if kind == "duplicate_row" and last_valid is None:
                kind = "capture"
            if kind == "duplicate_row":
                fields, payment_id = last_valid
                payments = ()
                outcome = "duplicate_row"
            else:
                payments, fields, payment_id, outcome = self._row(rng, i, kind)
                if outcome != "invalid_row":
                    last_valid = (fields, payment_id)
            yield Event(payments, fields, Expected(line + 1, payment_id, outcome, kind))
            line += 1 + sum(value.count("\n") for value in fields)
        # Payments the file does not mention: captured long ago (missing) or recently (within the grace period).
        # The cutoff is the latest valid settled_at minus the grace period: within the last day of the file.
        extra = max(1, round(self.rows * self.rate / 10))
        after_any_cutoff = self.day_start + timedelta(days=1) - self.grace
        for j in range(extra):
            merchant = self.merchants[j % len(self.merchants)]
            for label, created in (("missing", self.created_from + timedelta(seconds=j)),
                                   ("recent", after_any_cutoff + timedelta(seconds=j))):  # fmt: skip
                amount = rng.randint(100, 500_000)
                spec = PaymentSpec(merchant, f"{label}-{self.seed}-{j}", amount, CURRENCIES[j % len(CURRENCIES)],
                                   S.CAPTURED, amount, 0, created)  # fmt: skip
                yield Event((spec,), None, Expected(None, spec.id, "missing_in_file", label))

    def payments(self) -> Iterator[PaymentSpec]:
        for event in self.events():
            yield from event.payments

    def answer_key(self) -> Iterator[Expected]:
        """Each data row's expected outcome, then the expected ``missing_in_file`` payments."""
        for event in self.events():
            if event.expected.kind != "recent":
                yield event.expected

    def _kind(self, rng: random.Random, i: int) -> str:
        if rng.random() < self.rate:
            return DISCREPANCIES[rng.randrange(len(DISCREPANCIES))]
        return rng.choices([k for k, _ in CLEAN], weights=[w for _, w in CLEAN])[0]

    def _settled_at(self, i: int) -> datetime:
        return self.day_start + timedelta(seconds=86_399 * i // max(1, self.rows - 1))  # in file order, one day

    def _row(self, rng: random.Random, i: int, kind: str) -> tuple[tuple[PaymentSpec, ...], list[str], str, str]:
        merchant = self.merchants[i % len(self.merchants)]
        amount = rng.randint(100, 500_000)
        currency = CURRENCIES[rng.randrange(len(CURRENCIES))]
        created = self.created_from + timedelta(milliseconds=i)
        reference = f"ref-{self.seed}-{i}" if i % 50 else f"ref,{self.seed},{i}"  # some need quoting

        def spec(status: PaymentStatus, captured: int = 0, refunded: int = 0, owner: str = merchant) -> PaymentSpec:
            return PaymentSpec(owner, f"settle-{self.seed}-{i}", amount, currency, status, captured, refunded, created)

        def row(payment_id: str, row_amount: int, status: str, row_currency: str = currency) -> list[str]:
            settled = self._settled_at(i).isoformat().replace("+00:00", "Z")
            return [payment_id, merchant, str(row_amount), row_currency, status, settled, reference]

        half = max(1, amount // 2)
        # kind -> (payment status, captured, refunded, owner or None for no payment), row amount, row status, outcome
        plan: dict[str, tuple[tuple | None, int, str, str]] = {
            "capture": ((S.AUTHORIZED, 0, 0, merchant), amount, "settled", "applied"),
            "capture_partial": ((S.AUTHORIZED, 0, 0, merchant), half, "settled", "applied"),
            "match_capture": ((S.CAPTURED, amount, 0, merchant), amount, "settled", "matched"),
            "refund": ((S.CAPTURED, amount, 0, merchant), half, "refunded", "applied"),
            "match_refund": ((S.PARTIALLY_REFUNDED, amount, half, merchant), half, "refunded", "matched"),
            "chargeback": ((S.CAPTURED, amount, 0, merchant), amount, "chargeback", "applied"),
            "match_chargeback": ((S.CHARGED_BACK, amount, 0, merchant), amount, "chargeback", "matched"),
            "fail": ((S.PENDING, 0, 0, merchant), amount, "failed", "applied"),
            "match_fail": ((S.FAILED, 0, 0, merchant), amount, "failed", "matched"),
            "unknown_payment": (None, amount, "settled", "unknown_payment"),
            "merchant_mismatch": ((S.AUTHORIZED, 0, 0, self._other(merchant)), amount, "settled",
                                  "merchant_mismatch"),
            "currency_mismatch": ((S.AUTHORIZED, 0, 0, merchant), amount, "settled", "currency_mismatch"),
            "amount_mismatch": ((S.AUTHORIZED, 0, 0, merchant), amount + 1, "settled", "amount_mismatch"),
            "illegal_transition": ((S.VOIDED, 0, 0, merchant), amount, "settled", "illegal_transition"),
            "invalid_row": ((S.AUTHORIZED, 0, 0, merchant), amount, "settled", "invalid_row"),
        }  # fmt: skip
        state, row_amount, status, outcome = plan[kind]
        payment = spec(state[0], state[1], state[2], owner=state[3]) if state else None
        payment_id = payment.id if payment else payment_id_for(merchant, f"never-created-{self.seed}-{i}")
        row_currency = ("JPY" if currency != "JPY" else "USD") if kind == "currency_mismatch" else currency
        fields = row(payment_id, row_amount, status, row_currency)
        if kind == "invalid_row":
            column, bad = _INVALID[rng.randrange(len(_INVALID))]
            if column == "row":
                fields = fields[:-1]  # a field short
            else:
                fields[COLUMNS.index(column)] = bad
        return ((payment,) if payment else ()), fields, payment_id, outcome

    def _other(self, merchant: str) -> str:
        return self.merchants[(self.merchants.index(merchant) + 1) % len(self.merchants)]


def write_settlement_file(scenario: SettlementScenario, handle: TextIO, *, crlf: bool = False) -> int:
    """Write the scenario's file (header, then every row) to a text handle opened with ``newline=""``."""
    writer = csv.writer(handle, lineterminator="\r\n" if crlf else "\n")
    writer.writerow(COLUMNS)
    rows = 0
    for event in scenario.events():
        if event.fields is not None:
            writer.writerow(event.fields)
            rows += 1
    return rows


def settlement_bytes(scenario: SettlementScenario, *, crlf: bool = False) -> bytes:
    """The file in memory (small scenarios: tests and notebooks)."""
    buffer = io.StringIO(newline="")
    write_settlement_file(scenario, buffer, crlf=crlf)
    return buffer.getvalue().encode()


def write_answer_key(scenario: SettlementScenario, handle: TextIO) -> int:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(("line", "payment_id", "outcome", "kind"))
    count = 0
    for expected in scenario.answer_key():
        writer.writerow(("" if expected.line is None else expected.line, expected.payment_id, expected.outcome,
                         expected.kind))  # fmt: skip
        count += 1
    return count


FIXTURE_ACTOR = "settlement-scenario"


def create_scenario_payments(scenario: SettlementScenario, settings: Settings | None = None) -> int:
    """Write the scenario's payments as fixtures (``BatchWriteItem``: fast, unconditional; not for real payments)."""
    Model = get_models(settings).payment
    count = 0
    with Model.batch_write() as batch:
        for spec in scenario.payments():
            batch.save(
                Model(
                    spec.id, merchant_id=spec.merchant_id, idempotency_key=spec.idempotency_key, amount=spec.amount,
                    currency=spec.currency, status=spec.status.value, captured_amount=spec.captured,
                    refunded_amount=spec.refunded, created_at=spec.created_at, updated_at=spec.created_at,
                    created_key=created_key(spec.created_at, spec.id),
                    merchant_status=merchant_status_key(spec.merchant_id, spec.status), version=1,
                    # the fixture's own create, so the stream's consumer projects it like any payment's first change
                    transitions=[TransitionAttribute(
                        type="create", amount=spec.amount, actor=FIXTURE_ACTOR, to_status=spec.status.value,
                        at=spec.created_at, version=1,
                    )],
                )
            )  # fmt: skip
            count += 1
    return count
