"""What one large settlement file costs and how long it takes on AWS, reconciled by the state machine (plan ->
Distributed Map of range batches -> merge), worked out from measured per-row figures (tests/benchmarks/
distributed.py measures them on this machine; nothing here measures).

Time: the plan reads the file once (twice when payments are split across ranges: the second pass collects their
ids), the Map runs ``concurrency`` batches at a time, each reconciling ``rows_per_range`` rows at the measured
rate of one worker, and the merge reconciles the deferred rows and queries ``missing_in_file``. Cost: DynamoDB
request units per row (measured with the capacity tracker: the payment's read, the conditional update with its
mark, index writes, the stream's projection of each applied change), Lambda GB-seconds of the three steps,
Step Functions state transitions (a few for the parent, ``transitions_per_child`` per child execution), and S3
requests (ranged GETs per range, the plan's and results' objects). Prices: ``data/pricing/<region>.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from payment_examples.cost.estimator import Pricing


@dataclass(frozen=True)
class RowCosts:
    """Measured per row of a settlement file (a mix of outcomes, as the scenario's)."""

    read_units: float
    write_units: float  # table writes, the stream's projections included
    index_write_units: float
    stream_read_units: float = 0.0
    seconds_per_row: float = 0.005  # one worker (a Lambda with its threads), end to end per row
    plan_rows_per_s: float = 40_000.0  # reading and validating, no DynamoDB


@dataclass(frozen=True)
class FileRunEstimate:
    rows: int
    ranges: int
    concurrency: int
    minutes: float
    plan_minutes: float
    map_minutes: float
    lines: dict[str, Decimal]  # dimension -> USD

    @property
    def total(self) -> Decimal:
        return sum(self.lines.values(), Decimal(0))


def estimate_file_run(
    rows: int,
    costs: RowCosts,
    *,
    concurrency: int = 40,
    rows_per_range: int = 10_000,
    deferred_share: float = 0.01,
    plan_passes: int = 2,
    batch_memory_mb: int = 1024,
    plan_memory_mb: int = 3008,
    transitions_per_child: int = 3,
    pricing: Pricing | None = None,
    architecture: str = "x86_64",
) -> FileRunEstimate:
    """Minutes and dollars for one file of ``rows`` rows (see the module for what is counted)."""
    if rows < 1 or concurrency < 1 or rows_per_range < 1:
        raise ValueError("rows, concurrency and rows_per_range must be positive")
    if not 0 <= deferred_share <= 1:
        raise ValueError("deferred_share must be within [0, 1]")
    pricing = pricing or Pricing.load()
    ranges = math.ceil(rows / rows_per_range)
    plan_s = plan_passes * rows / costs.plan_rows_per_s
    waves = math.ceil(ranges / concurrency)
    map_s = waves * min(rows, rows_per_range) * costs.seconds_per_row
    merge_s = deferred_share * rows * costs.seconds_per_row
    worker_s = rows * costs.seconds_per_row  # every row is reconciled once, by a batch or the merge

    def usd(key: str, quantity: float) -> Decimal:
        return pricing.price(key).unit_price * Decimal(str(quantity))

    gb_seconds = plan_s * plan_memory_mb / 1024 + worker_s * batch_memory_mb / 1024
    lines = {
        "DynamoDB reads": usd("dynamodb.on_demand.read_request_unit", rows * costs.read_units),
        "DynamoDB writes": usd("dynamodb.on_demand.write_request_unit", rows * (costs.write_units +
                                                                                costs.index_write_units)),
        "DynamoDB Streams reads": usd("dynamodb.streams.read_request_unit", rows * costs.stream_read_units),
        "Lambda compute": usd(f"lambda.gb_second.{architecture}", gb_seconds),
        "Lambda requests": usd("lambda.request", ranges + 2),
        "Step Functions transitions": usd("stepfunctions.standard.state_transition",
                                          8 + ranges * transitions_per_child),
        "S3 requests": usd("s3.get_request", plan_passes + ranges * 2 + 2) + usd("s3.put_request", ranges + 6),
    }  # fmt: skip
    return FileRunEstimate(rows, ranges, concurrency, round((plan_s + map_s + merge_s) / 60, 1),
                           round(plan_s / 60, 1), round(map_s / 60, 1), lines)  # fmt: skip
