"""`payment-examples cost`: measures the DynamoDB units on a fresh embedded engine, prices them, prints a table or
JSON; bad arguments and unknown regions are refused before anything starts."""

from __future__ import annotations

import json

import pytest

from payment_examples.cli import main
from payment_examples.logs import logger


def test_cost_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    level = logger.log_level
    assert main(["cost", "--payments-per-month", "1000000", "--format", "json", "--measure-payments", "4"]) == 0
    assert logger.log_level == level  # quiet while measuring, then put back
    result = json.loads(capsys.readouterr().out)
    assert result["region"] == "us-east-1" and result["payments_per_month"] == 1_000_000
    names = [line["name"] for line in result["lines"]]
    assert names[:4] == ["DynamoDB reads", "DynamoDB writes", "DynamoDB index writes", "DynamoDB storage"]
    by_name = {line["name"]: line for line in result["lines"]}
    # every payment is written at least 9 times across the flow, each into two indexes on average
    assert by_name["DynamoDB writes"]["quantity"] >= 8 * 1_000_000
    assert by_name["DynamoDB index writes"]["quantity"] > by_name["DynamoDB writes"]["quantity"]
    assert result["total_usd"] == pytest.approx(sum(line["cost"] for line in result["lines"]), abs=0.05)
    assert result["cost_per_1000_payments_usd"] == pytest.approx(result["total_usd"] / 1000, rel=1e-3)


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
