"""``recover``: find and finish what crashed workers left behind (``payment-examples recover``).

Two kinds of leftovers, each resolved by the same idempotent step a live retry would take, so ``recover`` is safe
to run at any time, also twice at once and beside live traffic (anything younger than ``older_than`` is left to
the worker that may still be handling it):

* **Idempotency claims in progress past their lease**: released (a conditional delete on the claim's token, so a
  worker that takes the key over meanwhile keeps its claim). The client's retry then runs the request again, which
  finds the payment and answers as the first run would have. They are not completed here: a claim does not hold
  the request, the payment does.
* **Processor calls in flight** (``Payment.processor_call``: an authorisation, a capture or a refund): resolved
  from the processor's record of the call's key, re-sent under the same key only if the processor never acted on
  it, then applied (``checkout.Checkout.resolve``; a declined capture or refund only removes the call). The change
  carries the API request's idempotency key recorded with the call, so that request's retry answers from it.
Transactions and audit entries are not among them: they are projections of the payments table's stream
(projection.py), behind the commit by at most the consumer's lag, never missing.

Finding them is a batch job's cost: one parallel scan of the payments table (filtered to payments last changed
before the cut-off) and one of the idempotency table (filtered to claims in progress). Nothing on the request path
pays for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from payment_examples.checkout.service import Checkout
from payment_examples.core import logger
from payment_examples.idempotency import IdempotencyMiddleware
from payment_examples.tables import Payment

DEFAULT_OLDER_THAN = timedelta(minutes=5)
_BATCH = 100


@dataclass
class RecoveryReport:
    released_claims: int = 0
    resolved_calls: list[tuple[str, str, str]] = field(default_factory=list)  # (payment id, operation, outcome)
    payments_checked: int = 0

    @property
    def fixed(self) -> int:
        return self.released_claims + len(self.resolved_calls)

    def summary(self) -> str:
        return (
            f"checked {self.payments_checked} payments: released {self.released_claims} stale idempotency claims, "
            f"resolved {len(self.resolved_calls)} processor calls"
        )


def recover(
    checkout: Checkout,
    middleware: IdempotencyMiddleware,
    *,
    older_than: timedelta = DEFAULT_OLDER_THAN,
) -> RecoveryReport:
    """Resolve every leftover older than ``older_than`` (by the checkout's clock) and report what was fixed."""
    if older_than < timedelta(0):
        raise ValueError("older_than must not be negative")
    service = checkout.service
    report = RecoveryReport()
    report.released_claims = middleware.release_stale_claims()
    cutoff = service.clock.now() - older_than
    for chunk in _chunks(_settled_payments(service.models.payment, cutoff)):
        report.payments_checked += len(chunk)
        for payment in chunk:
            if not is_in_flight(payment, cutoff):
                continue
            operation = payment.processor_call.operation
            try:
                payment, charge = checkout.resolve(payment)
            except Exception as error:  # report and go on: one payment never stops the sweep
                logger.warning("recover could not resolve a processor call", payment_id=payment.id,
                               error_type=type(error).__name__)  # fmt: skip
                report.resolved_calls.append((payment.id, operation, f"error: {type(error).__name__}"))
                continue
            outcome = "applied by another worker" if charge is None else ("approved" if charge.approved else "declined")
            report.resolved_calls.append((payment.id, operation, outcome))
    logger.info("recover finished", released_claims=report.released_claims,
                resolved_calls=len(report.resolved_calls))  # fmt: skip
    return report


def _settled_payments(Model: type[Payment], cutoff: datetime) -> Iterator[Payment]:
    """Payments last changed, and whose processor call was sent, before ``cutoff`` (younger ones may still be in a
    live worker's hands)."""
    quiet = (Model.updated_at <= cutoff) & (
        Model.processor_call.does_not_exist() | (Model.processor_call.started_at <= cutoff)
    )
    yield from Model.scan(quiet, consistent_read=True)


def is_in_flight(payment: Payment, cutoff: datetime) -> bool:
    """A processor call recorded on ``payment`` before ``cutoff`` (what ``recover`` resolves)."""
    call = payment.processor_call
    return call is not None and call.started_at <= cutoff


def _chunks(payments: Iterator[Payment]) -> Iterator[list[Payment]]:
    chunk: list[Payment] = []
    for payment in payments:
        chunk.append(payment)
        if len(chunk) == _BATCH:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
