"""The tables: every PynamoDB table of the workbook and ``create_tables``, bound per settings (``get_models``).

One module (``models``) for every table (Payment, Transaction, Customer, PaymentMethod, IdempotencyRecord,
AuditLog, AuditCheckpoint, ReconciliationRecord, ProcessorCharge), because they share one binding and one
``create_tables``: the data layer sits under the engine (which creates them) and under the domain and the patterns
(which use them). Shapes only, no behaviour; it imports only the core. Notebook 00 shows the tables.
"""

from __future__ import annotations

from payment_examples.tables.models import (
    DEFINITIONS,
    AuditEntry,
    BoundModels,
    Payment,
    Transaction,
    bind_models,
    create_tables,
    created_key,
    get_models,
    merchant_status_key,
    payment_id_for,
    sortable_time,
    transaction_id_for,
)

__all__ = [
    "AuditEntry",
    "BoundModels",
    "DEFINITIONS",
    "Payment",
    "Transaction",
    "bind_models",
    "create_tables",
    "created_key",
    "get_models",
    "merchant_status_key",
    "payment_id_for",
    "sortable_time",
    "transaction_id_for",
]
