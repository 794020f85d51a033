"""The payments domain (notebooks 00 and 02): the state machine, ``PaymentService`` (create, authorize, capture,
refund, void, with optimistic versions), batch creation (``batch``), the merchant's paginated queries with signed
cursors (``pagination``) and seed data (``seed``: the payments notebook 02 pages through).

Every pattern folder builds on it; it imports the core, the tables and the audit layer only.
"""

from __future__ import annotations

from payment_examples.payments.batch import (
    BatchPaymentRequest,
    BatchResult,
    process_payment_batch,
    write_with_batch_write_item,
    write_with_transactions,
)
from payment_examples.payments.pagination import (
    InvalidCursorError,
    Order,
    PagedResult,
    QueryStats,
    decode_cursor,
    encode_cursor,
    get_merchant_payments,
    iter_merchant_payments,
    plan_query,
)
from payment_examples.payments.seed import seed_payments
from payment_examples.payments.service import CreateResult, PaymentService, TransactionView
from payment_examples.payments.state_machine import (
    Balances,
    Operation,
    PaymentStatus,
    Transition,
    allowed_actions,
    plan_transition,
)

__all__ = [
    "Balances",
    "BatchPaymentRequest",
    "BatchResult",
    "CreateResult",
    "InvalidCursorError",
    "Operation",
    "Order",
    "PagedResult",
    "PaymentService",
    "PaymentStatus",
    "QueryStats",
    "TransactionView",
    "Transition",
    "allowed_actions",
    "decode_cursor",
    "encode_cursor",
    "get_merchant_payments",
    "iter_merchant_payments",
    "plan_query",
    "plan_transition",
    "process_payment_batch",
    "seed_payments",
    "write_with_batch_write_item",
    "write_with_transactions",
]
