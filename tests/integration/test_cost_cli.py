"""`payment-examples cost`: measures the DynamoDB units on a fresh embedded engine, prices them, prints a table or
JSON; bad arguments and unknown regions are refused before anything starts. The measured run agrees with the
model worked out from item sizes (the stream's projections included) on every step but the reconciliation run's
own records."""

from __future__ import annotations

import json

import pytest

from payment_examples.cli import main
from payment_examples.core.config import Settings
from payment_examples.core.logs import log_level, logger
from payment_examples.engine.local import local_aws
from payment_examples.harness.cost_workload import STEPS, measure_workload, model_units

pytestmark = pytest.mark.slow  # engine processes, threads, subprocesses: make test runs it, make test-fast does not


def test_cost_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    level = logger.log_level
    assert main(["cost", "--payments-per-month", "1000000", "--format", "json", "--measure-payments", "4"]) == 0
    assert logger.log_level == level  # quiet while measuring, then put back
    result = json.loads(capsys.readouterr().out)
    assert result["region"] == "us-east-1" and result["payments_per_month"] == 1_000_000
    names = [line["name"] for line in result["lines"]]
    assert names[:4] == ["DynamoDB reads", "DynamoDB writes", "DynamoDB index writes", "DynamoDB storage"]
    by_name = {line["name"]: line for line in result["lines"]}
    # every payment takes at least 9 table writes (create, authorize and capture one each, the reconciliation
    # mark 1; projected from the stream: the create's audit entry, and a Transaction and an entry for each
    # transition) and at least 12 index writes (its writes go into both merchant indexes, a status change moves
    # one entry: a delete and a put; each Transaction has its by-payment entry); audit entries have no index
    assert by_name["DynamoDB writes"]["quantity"] >= 9 * 1_000_000
    assert by_name["DynamoDB index writes"]["quantity"] >= 12 * 1_000_000
    assert result["total_usd"] == pytest.approx(sum(line["cost"] for line in result["lines"]), abs=0.05)
    assert result["cost_per_1000_payments_usd"] == pytest.approx(result["total_usd"] / 1000, rel=1e-3)


def test_the_model_from_item_sizes_matches_the_measured_run_but_for_the_reconciliation_records() -> None:
    settings = Settings(region="us-east-1", table_prefix="cost-model-", cursor_secret="c" * 64)
    with log_level("ERROR"), local_aws(settings):
        measured = measure_workload(9, page_size=2)  # payments 0, 4 and 8 refunded; one or two pages a merchant
    model = model_units(measured.sizes, 9, page_size=2)
    units = ("read", "write", "index_write")
    for step in STEPS:
        estimate = [getattr(model[step], u) for u in units]
        found = [getattr(measured.steps[step], u) for u in units]
        if step == "reconcile":  # plus its checkpoint, lease, merchants and report: a few units per file
            assert all(e <= f for e, f in zip(estimate, found, strict=True)) and found != estimate
        else:
            assert found == estimate, step
    # each create and transition appended one entry to the payment's audit trail; the file's rows applied none
    audited = {name for name in measured.sizes if name.startswith("audit.")}
    assert audited == {"audit.create", "audit.authorize", "audit.capture", "audit.refund"}


def test_cost_as_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", "--payments-per-month", "250000", "--measure-payments", "3", "--architecture", "x86_64"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("250,000 payments/month in us-east-1")
    assert "Lambda compute (x86_64)" in out and "cost per 1,000 payments: $" in out and "\ntotal " in out


def test_an_unknown_region_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", "--payments-per-month", "10", "--region", "mars-1"]) == 2
    assert "no prices for region 'mars-1'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["cost"],
        ["cost", "--payments-per-month", "-5"],
        ["cost", "--payments-per-month", "lots"],
        ["cost", "--payments-per-month", "10", "--format", "xml"],
        ["cost", "--payments-per-month", "10", "--table-class", "glacier"],
        ["cost", "--payments-per-month", "10", "--reads-per-payment", "-1"],
    ],
)
def test_bad_arguments_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_bad_lambda_memory_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", "--payments-per-month", "10", "--lambda-memory", "64", "--measure-payments", "1"]) == 2
    assert "lambda_memory_mb must be within 128..10240" in capsys.readouterr().err
