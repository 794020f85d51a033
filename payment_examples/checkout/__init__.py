"""Checkout and failure modes (notebooks 01 and 07): the processor interface and its local simulator with faults
(``processor``), ``Checkout``, which creates and charges a payment under the idempotency middleware (``service``),
and ``recover``, which finishes the checkouts a crash left in flight (``recovery``). Its one arrow to a sibling
pattern, checkout -> idempotency, is declared in tests/layers.py.
"""

from __future__ import annotations

from payment_examples.checkout.processor import Charge, Fault, LocalProcessor, Processor, processor_for
from payment_examples.checkout.recovery import RecoveryReport, is_in_flight, recover
from payment_examples.checkout.service import Checkout, CheckoutResult, PaymentDeclinedError

__all__ = [
    "Charge",
    "Checkout",
    "CheckoutResult",
    "Fault",
    "LocalProcessor",
    "PaymentDeclinedError",
    "Processor",
    "RecoveryReport",
    "is_in_flight",
    "processor_for",
    "recover",
]
