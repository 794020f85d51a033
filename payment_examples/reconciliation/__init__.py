"""Settlement reconciliation (notebook 03): the processor's settlement file (``settlement_file``: read and check
rows), the ``Reconciler`` that matches each row to its payment and applies or reports it, resumable across Lambda
invocations (``reconciler``), and the generator of scenario files with their answer keys (``generator``).
"""

from __future__ import annotations

from payment_examples.reconciliation.generator import (
    SettlementScenario,
    create_scenario_payments,
    settlement_bytes,
    write_answer_key,
    write_settlement_file,
)
from payment_examples.reconciliation.reconciler import (
    LocalReportSink,
    LocalSource,
    Reconciler,
    ReconciliationError,
    RunResult,
    S3ReportSink,
    S3Source,
    iter_results,
    run_reconciliation,
)
from payment_examples.reconciliation.settlement_file import (
    HEADER,
    SettlementFileError,
    SettlementRow,
    SettlementStatus,
    check_settlement_file,
    read_settlement_file,
)

__all__ = [
    "HEADER",
    "LocalReportSink",
    "LocalSource",
    "Reconciler",
    "ReconciliationError",
    "RunResult",
    "S3ReportSink",
    "S3Source",
    "SettlementFileError",
    "SettlementRow",
    "SettlementScenario",
    "SettlementStatus",
    "check_settlement_file",
    "create_scenario_payments",
    "iter_results",
    "read_settlement_file",
    "run_reconciliation",
    "settlement_bytes",
    "write_answer_key",
    "write_settlement_file",
]
