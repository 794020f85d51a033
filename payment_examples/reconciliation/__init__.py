"""Settlement reconciliation (notebook 03): settlement files in four layouts read into canonical rows
(``settlement_file`` drives the layouts; ``rows``; ``stripe_report``, ``adyen_report``, ``paypal_report``), what a
row does to its payment (``decision``), the ``Reconciler`` that applies or reports each row, resumable across
Lambda invocations (``reconciler``, with its table ``run_store`` and its ``storage``), the distributed path for
files too large for one function (``distributed``), and the generators of scenario files with their answer keys
(``generator``, ``processor_scenario``).
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
