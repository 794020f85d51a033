"""Large settlement files: one function vs the local distributed runner (plan, ranges on threads, merge), and
what a 10,000,000-row file would take and cost on AWS through the state machine.

    python -m tests.benchmarks.distributed --plan-rows 100000 1000000 --e2e-rows 100000   # writes distributed.json

* plan: rows/s of the plan step alone (reading, validating, cutting ranges, finding split payments), which is
  the serial part of the distributed path; for each ``--plan-rows`` size;
* end to end on dynalite (the data-plane judge): the same ``--e2e-rows`` scenario file reconciled by one
  ``run_reconciliation`` (8 worker threads) and by ``run_distributed`` (``--threads`` batches at a time, each
  its own Reconciler with 8 threads), each on a fresh engine with the same payments; rows/s and the ratio;
* per row, with the capacity tracker on a small run (moto server, stream consumer drained): the DynamoDB units
  a row costs, which ``cost.file_run`` prices for the 10,000,000-row estimate.

All on one 2-core machine: the threads, dynalite and the client share the two cores, so the distributed runner's
gain here is bounded by the engine, not by the design (on AWS each batch is its own Lambda and DynamoDB scales).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from payment_examples.core.config import Settings
from payment_examples.core.logs import logger
from payment_examples.cost.file_run import RowCosts, estimate_file_run
from payment_examples.engine.local import local_aws
from payment_examples.reconciliation.distributed import plan, run_distributed
from payment_examples.reconciliation.generator import (
    SettlementScenario,
    create_scenario_payments,
    write_settlement_file,
)
from payment_examples.reconciliation.reconciler import LocalReportSink, LocalSource, Reconciler, run_reconciliation
from tests.benchmarks.run import HERE, environment


def _file(rows: int, seed: int) -> tuple[SettlementScenario, Path]:
    scenario = SettlementScenario(rows, seed, 0.1)
    path = Path(tempfile.mkdtemp()) / f"settlement-{rows}.csv"
    with open(path, "w", newline="") as handle:
        write_settlement_file(scenario, handle)
    return scenario, path


def measure_plan(rows: int, seed: int, rows_per_range: int) -> dict:
    _, path = _file(rows, seed)
    start = time.perf_counter()
    planned = plan(LocalSource(str(path)), LocalReportSink(tempfile.mkdtemp()), rows_per_range=rows_per_range)
    seconds = time.perf_counter() - start
    passes = 2 if planned.deferred else 1  # the second pass collects the split payments' ids
    return {"rows": rows, "file_mib": round(path.stat().st_size / 2**20, 1), "seconds": round(seconds, 1),
            "rows_per_s": round(rows / seconds), "passes": passes,
            "rows_per_s_per_pass": round(rows * passes / seconds), "ranges": len(planned.ranges),
            "deferred_payments": len(planned.deferred)}  # fmt: skip


def measure_end_to_end(rows: int, seed: int, threads: int, rows_per_range: int) -> dict:
    scenario, path = _file(rows, seed)
    results = {}
    for name in ("single", "distributed"):
        with local_aws(Settings(engine="dynalite")):
            create_scenario_payments(scenario)
            source, sink = LocalSource(str(path)), LocalReportSink(tempfile.mkdtemp())
            start = time.perf_counter()
            if name == "single":
                result = run_reconciliation(source, sink, reconciler=Reconciler(max_workers=8))
            else:
                result = run_distributed(source, sink, reconciler_factory=lambda: Reconciler(max_workers=8),
                                         rows_per_range=rows_per_range, workers=threads)  # fmt: skip
            seconds = time.perf_counter() - start
        results[name] = {"seconds": round(seconds, 1), "rows_per_s": round(rows / seconds, 1),
                         "outcomes": result.outcomes, "missing_in_file": result.missing_in_file}  # fmt: skip
        print(name, results[name], flush=True)
    same = all(results["single"][k] == results["distributed"][k] for k in ("outcomes", "missing_in_file"))
    return {"rows": rows, "engine": "dynalite", "threads": threads, "rows_per_range": rows_per_range, **results,
            "same_result": same,
            "ratio": round(results["distributed"]["rows_per_s"] / results["single"]["rows_per_s"], 2)}  # fmt: skip


def measure_units(rows: int, seed: int) -> dict:
    """DynamoDB units per row of a scenario file, the stream's projection included (moto server)."""
    from payment_examples.core import client as aws_client
    from payment_examples.core import dynamodb
    from payment_examples.cost import CapacityTracker
    from payment_examples.harness.consumer import consumer_for
    from payment_examples.harness.cost_workload import _untracked_dynamodb
    from payment_examples.tables import get_models

    scenario, path = _file(rows, seed)
    with local_aws(Settings(engine="moto")):
        from payment_examples.core.config import get_settings

        settings = get_settings()
        create_scenario_payments(scenario)
        consumer = consumer_for(settings)
        consumer.drain()  # the fixtures' own creates, not the file's cost
        tracker = CapacityTracker(_untracked_dynamodb(settings))
        tracker.attach(dynamodb(settings), aws_client("s3", settings)).attach_models(get_models(settings))
        reads_before = sum(p.reads for p in consumer.pollers)
        with tracker, tracker.step("file"):
            run_reconciliation(LocalSource(str(path)), LocalReportSink(tempfile.mkdtemp()),
                               reconciler=Reconciler(max_workers=8))  # fmt: skip
            consumer.drain()
        units = tracker.totals()["file"]
        stream_reads = sum(p.reads for p in consumer.pollers) - reads_before
    return {"rows": rows, "engine": "moto server", "read_units_per_row": round(units["read"] / rows, 3),
            "write_units_per_row": round(units["write"] / rows, 3),
            "index_write_units_per_row": round(units["index_write"] / rows, 3),
            "calls_per_row": round(units["calls"] / rows, 3),
            "stream_reads_per_row": round(stream_reads / rows, 4)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan-rows", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--e2e-rows", type=int, default=100_000)
    parser.add_argument("--units-rows", type=int, default=2_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rows-per-range", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--output", type=Path, default=HERE / "distributed.json")
    args = parser.parse_args(argv)
    logger.setLevel("ERROR")
    report: dict = {"environment": environment()}
    report["plan"] = [measure_plan(n, args.seed, args.rows_per_range) for n in args.plan_rows]
    print("plan:", report["plan"], flush=True)
    report["units"] = measure_units(args.units_rows, args.seed)
    print("units:", report["units"], flush=True)
    if args.e2e_rows:
        report["end_to_end"] = measure_end_to_end(args.e2e_rows, args.seed, args.threads,
                                                  min(args.rows_per_range, max(1, args.e2e_rows // 10)))  # fmt: skip
        per_row = report["end_to_end"]["rows"] / report["end_to_end"]["single"]["rows_per_s"] / args.e2e_rows
    else:
        per_row = 0.01
    largest = max(report["plan"], key=lambda p: p["rows"]) if report["plan"] else {"rows_per_s_per_pass": 40_000}
    units = report["units"]
    costs = RowCosts(units["read_units_per_row"], units["write_units_per_row"], units["index_write_units_per_row"],
                     units["stream_reads_per_row"], seconds_per_row=per_row,
                     plan_rows_per_s=largest["rows_per_s_per_pass"])  # fmt: skip
    estimate = estimate_file_run(10_000_000, costs, concurrency=40, rows_per_range=10_000)
    report["aws_10m_estimate"] = {
        "rows": estimate.rows, "concurrency": estimate.concurrency, "ranges": estimate.ranges,
        "seconds_per_row_per_worker": round(per_row, 5), "minutes": estimate.minutes,
        "plan_minutes": estimate.plan_minutes, "map_minutes": estimate.map_minutes,
        "usd": {k: float(round(v, 4)) for k, v in estimate.lines.items()}, "total_usd": float(round(estimate.total, 2)),
    }  # fmt: skip
    print("10M estimate:", report["aws_10m_estimate"], flush=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
