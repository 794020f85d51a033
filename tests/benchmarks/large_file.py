"""A large settlement file: parse-and-validate alone, and end to end on dynalite, with peak memory.

    python -m tests.benchmarks.large_file --rows 1000000 --e2e-rows 100000   # writes tests/benchmarks/large_file.json

Not part of ``make bench``: parsing and validating a 1,000,000-row file takes under a minute, but reconciling one
end to end on dynalite would take hours on a 2-core machine (about 100 rows/s: the client's CPU per DynamoDB call
and dynalite's share the two cores), so the end-to-end run takes its own, smaller row count.
Peak memory is the process's resident set sampled every 0.2 s (``/proc/self/status``), reported as the growth
over the resident set before the phase, so it covers everything the run holds, not only Python objects.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from payment_examples.core.config import Settings
from payment_examples.core.logs import logger
from payment_examples.engine.local import local_aws
from payment_examples.reconciliation.generator import (
    SettlementScenario,
    create_scenario_payments,
    write_settlement_file,
)
from payment_examples.reconciliation.reconciler import LocalReportSink, LocalSource, Reconciler, run_reconciliation
from payment_examples.reconciliation.settlement_file import read_settlement_file
from tests.benchmarks.run import HERE, environment


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@contextmanager
def peak_rss(into: dict):
    """Samples the resident set while the block runs; stores the peak growth in MiB under ``into["peak_mib"]``."""
    base, peak, done = _rss_kib(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], _rss_kib())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        into["peak_mib"] = round((max(peak[0], _rss_kib()) - base) / 1024, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--e2e-rows", type=int, default=100_000, help="rows reconciled end to end on dynalite")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--output", type=Path, default=HERE / "large_file.json")
    args = parser.parse_args(argv)
    logger.setLevel("ERROR")
    scenario = SettlementScenario(args.rows, args.seed, 0.1)
    path = Path(tempfile.mkdtemp()) / "large.csv"
    report: dict = {"environment": environment(), "rows": args.rows}

    start = time.perf_counter()
    with open(path, "w", newline="") as handle:
        write_settlement_file(scenario, handle)
    report["file_mib"] = round(path.stat().st_size / 2**20, 1)
    print(f"wrote {path} ({report['file_mib']} MiB) in {time.perf_counter() - start:.0f} s", flush=True)

    parse: dict = {}
    with peak_rss(parse), open(path, "rb") as handle:
        start = time.perf_counter()
        count = sum(1 for _ in read_settlement_file(handle))
        seconds = time.perf_counter() - start
    parse |= {"seconds": round(seconds, 2), "rows_per_s": round(count / seconds)}
    report["parse_and_validate"] = parse
    print("parse and validate:", parse, flush=True)

    e2e = SettlementScenario(args.e2e_rows, args.seed, 0.1)
    path = path.with_name("e2e.csv")
    with open(path, "w", newline="") as handle:
        write_settlement_file(e2e, handle)
    report["e2e_rows"] = args.e2e_rows
    with local_aws(Settings(engine="dynalite")):
        start = time.perf_counter()
        payments = create_scenario_payments(e2e)
        report["fixtures"] = {"payments": payments, "seconds": round(time.perf_counter() - start, 1)}
        print("payments created:", report["fixtures"], flush=True)
        end_to_end: dict = {}
        with peak_rss(end_to_end):
            start = time.perf_counter()
            result = run_reconciliation(
                LocalSource(str(path)),
                LocalReportSink(tempfile.mkdtemp()),
                reconciler=Reconciler(max_workers=args.workers),
                on_batch=lambda n: None,
            )
            seconds = time.perf_counter() - start
        end_to_end |= {"seconds": round(seconds, 1), "rows_per_s": round(result.rows / seconds, 1),
                       "outcomes": result.outcomes,
                       "missing_in_file": result.missing_in_file, "engine": "dynalite"}  # fmt: skip
        expected = {o: 0 for o in result.outcomes}
        for answer in e2e.answer_key():
            if answer.line:
                expected[answer.outcome] += 1
        end_to_end["matches_answer_key"] = expected == result.outcomes
        report["end_to_end"] = end_to_end
        print("end to end:", end_to_end, flush=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
