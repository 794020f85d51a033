"""The estimate of one large file's distributed run: waves of ranges, every row reconciled once, priced lines."""

from __future__ import annotations

from decimal import Decimal

import pytest

from payment_examples.cost.estimator import Pricing
from payment_examples.cost.file_run import RowCosts, estimate_file_run

COSTS = RowCosts(read_units=1.0, write_units=4.0, index_write_units=2.0, seconds_per_row=0.004, plan_rows_per_s=50_000)


def test_ten_million_rows_at_forty_at_a_time() -> None:
    run = estimate_file_run(10_000_000, COSTS, concurrency=40, rows_per_range=10_000)
    assert run.ranges == 1000
    assert run.plan_minutes == pytest.approx(2 * 10_000_000 / 50_000 / 60, abs=0.1)
    assert run.map_minutes == pytest.approx(25 * 10_000 * 0.004 / 60, abs=0.1)  # 25 waves of 40 ranges
    wru = Pricing.load().price("dynamodb.on_demand.write_request_unit").unit_price
    assert run.lines["DynamoDB writes"] == wru * 6 * 10_000_000
    assert run.lines["Step Functions transitions"] == Decimal("0.025") * (8 + 3000) / 1000
    assert run.total == sum(run.lines.values()) and run.minutes > run.plan_minutes + run.map_minutes


def test_more_concurrency_is_faster_and_costs_the_same_compute() -> None:
    slow = estimate_file_run(1_000_000, COSTS, concurrency=10)
    fast = estimate_file_run(1_000_000, COSTS, concurrency=100)
    assert fast.map_minutes < slow.map_minutes and fast.lines["Lambda compute"] == slow.lines["Lambda compute"]


@pytest.mark.parametrize(("rows", "kwargs", "message"), [
    (0, {}, "must be positive"), (10, {"concurrency": 0}, "must be positive"),
    (10, {"deferred_share": 1.5}, "deferred_share"),
])  # fmt: skip
def test_bad_inputs_are_refused(rows, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        estimate_file_run(rows, COSTS, **kwargs)
