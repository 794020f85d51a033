"""The load test: 10,000 payments with a card through the process handler, and a duplicate storm, on both engines.

    make test-load                  # full run: writes tests/load/results.json and RESULTS.md, exit 1 on a wrong count
    python -m tests.load.run --payments 300 --storm-keys 30 --output /tmp/load     # a quick look

Per engine (the moto server process, then dynalite; each a fresh engine from ``local_aws()``):

1. the round trips of one create with a card and of its replay (``payment_examples.harness.load.round_trips``), each
   request sampled ``--trip-samples`` times on the empty tables: the calls in order, each one's median time and
   its share of the request's median time;
2. ``--payments`` distinct requests (``payment_method``: authorised through the simulated processor) from
   ``--threads`` threads: exactly that many payments, approved charges and 201s, no key charged twice;
3. the storm: ``--storm-keys`` keys, each sent ``--storm-copies`` times at once by as many threads: still exactly
   one payment and one charge per key (the extra copies get 409 while the first runs, or its replayed 201).

Counts are asserted exactly (``LoadResult.mismatches``); timings are reported, never asserted. Both engines are
single-threaded server processes (one request at a time), so the throughput is the engine's: more client threads
only queue longer, which is what p50/p95/p99 show.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from payment_examples.core.config import Settings, get_settings
from payment_examples.core.logs import logger
from payment_examples.core.measure import percentile
from payment_examples.engine.local import DYNALITE_DIR, local_aws
from payment_examples.engine.stream import stream_arn
from payment_examples.harness.consumer import Consumer
from payment_examples.harness.load import (
    LoadResult,
    payment_event,
    recording,
    run_load,
)
from payment_examples.tables.models import get_models

HERE = Path(__file__).resolve().parent
PAYMENTS = 10_000
THREADS = 16
STORM_KEYS = 1_000
STORM_COPIES = 8
TRIP_SAMPLES = 20
TRIP_MERCHANT = "trip-merchant"
CARD = {"amount": 1250, "currency": "USD", "payment_method": "pm_card_visa"}
# The minimum round trips (payment_examples/harness/load.py explains each): ours, plus the simulated processor's
# ledger put.
MINIMUM = {
    "create": "2 (the payment's conditional put, recording the call about to be sent; the update applying the "
    "answer) + 1 processor ledger put (the simulated processor's, not ours)",
    "replay": {"moto": "1 (the payment's failed put returns the stored payment)",
               "dynalite": "2 (dynalite ignores ReturnValuesOnConditionCheckFailure: the failed put, then a GetItem)"},
}  # fmt: skip


def trip_table(samples: int) -> dict[str, Any]:
    """One create with a card and its replay, each timed ``samples`` times (fresh keys) after one warm-up: the
    calls in order (the same in every sample, or this fails), per call the median ms and its share of the
    request's median total."""
    from payment_examples.checkout.processor import LocalProcessor
    from payment_examples.checkout.service import Checkout
    from payment_examples.handlers.process import make_handler
    from payment_examples.payments.service import PaymentService
    from payment_examples.tables.models import get_models

    settings = get_settings()
    service = PaymentService(models=get_models(settings))
    handler = make_handler(service, Checkout(service, LocalProcessor(settings=settings)))
    runs: dict[str, list[tuple[float, list]]] = {"create": [], "replay": []}
    for i in range(-1, samples):
        event = payment_event(TRIP_MERCHANT, f"trip-{i + 1}", CARD)
        for kind in ("create", "replay"):
            with recording(settings) as trips:
                start = time.perf_counter()
                response = handler(event, None)
                total = (time.perf_counter() - start) * 1000
            assert response["statusCode"] == 201, response
            assert (response["headers"].get("Idempotent-Replayed") == "true") == (kind == "replay"), response
            if i >= 0:
                runs[kind].append((total, list(trips)))
    out = {}
    for kind, samples_ in runs.items():
        sequences = {tuple((t.operation, t.table, t.error) for t in trips) for _, trips in samples_}
        if len(sequences) != 1:
            raise AssertionError(f"the {kind} made different calls in different samples: {sequences}")
        [sequence] = sequences
        total = statistics.median(total for total, _ in samples_)
        calls = []
        for position, (operation, table, error) in enumerate(sequence):
            ms = statistics.median(trips[position].ms for _, trips in samples_)
            calls.append({"operation": operation, "table": table, "ms": round(ms, 2), "share": round(ms / total, 3),
                          **({"error": error} if error else {})})  # fmt: skip
        calls_ms = sum(call["ms"] for call in calls)
        out[kind] = {
            "samples": len(samples_),
            "round_trips": len(sequence),
            "total_ms": round(total, 2),
            "calls_ms": round(calls_ms, 2),
            "outside_calls_ms": round(total - calls_ms, 2),
            "outside_calls_share": round((total - calls_ms) / total, 3),
            "calls": calls,
        }
    return out


def run_engine(engine: str, payments: int, threads: int, storm_keys: int, storm_copies: int, trip_samples: int,
               progress: bool) -> dict[str, Any]:  # fmt: skip
    started = time.perf_counter()
    with local_aws(Settings(engine=engine)):
        trips = trip_table(trip_samples)
        consumer = _live_consumer()  # None where the engine has no streams (dynalite)
        load = run_load(payments, threads=threads, seed=0, progress=progress)
        _say(engine, "load", load)
        storm = run_load(storm_keys, threads=storm_copies, copies=storm_copies, seed=1, progress=progress)
        _say(engine, "storm", storm)
        projection = _consumer_figures(consumer, load.seconds + storm.seconds) if consumer else None
    return {
        "engine": engine,
        "seconds": round(time.perf_counter() - started, 1),
        "load": load.as_dict(),
        "storm": storm.as_dict(),
        "round_trips": trips,
        "projection": projection,
        "minimum_round_trips": {"create": MINIMUM["create"], "replay": MINIMUM["replay"][engine]},
    }


def _live_consumer() -> Consumer | None:
    """The stream's consumer, polling on a background thread while the load runs (as the deployed Lambda would)."""
    settings = get_settings()
    try:
        stream_arn(get_models(settings).payment.Meta.table_name, settings)
    except ValueError:
        return None
    consumer = Consumer(settings)
    consumer.start(interval=0.1)
    return consumer


def _consumer_figures(consumer: Consumer, load_seconds: float) -> dict[str, Any]:
    """What the live consumer did during the load and the storm, and the backlog it had left when they ended."""
    live = consumer.stats.records
    consumer.stop()
    started = time.perf_counter()
    stats = consumer.drain()
    backlog_s = time.perf_counter() - started
    lags = sorted(stats.lag_ms)
    return {
        "records": stats.records, "records_during_load": live, "backlog_records": stats.records - live,
        "backlog_seconds": round(backlog_s, 1), "records_per_s": round(stats.records / (load_seconds + backlog_s), 1),
        "lag_p50_ms": round(percentile(lags, 50), 1), "lag_p99_ms": round(percentile(lags, 99), 1),
        "lag_max_ms": round(lags[-1], 1) if lags else 0.0, "invocations": stats.invocations,
        "retries": stats.retries, "failed": stats.failed,
    }  # fmt: skip


def _say(engine: str, label: str, result: LoadResult) -> None:
    p = result.percentiles()
    print(f"{engine} {label}: {result.requests:,} requests in {result.seconds:.1f} s ({result.throughput:.1f}/s), "
          f"p50 {p['p50']:.0f} ms, p95 {p['p95']:.0f} ms, p99 {p['p99']:.0f} ms; {result.payments:,} payments, "
          f"{result.charges:,} charges, statuses {result.statuses}; "
          + ("exact" if not result.mismatches() else "MISMATCH: " + "; ".join(result.mismatches())),
          file=sys.stderr, flush=True)  # fmt: skip


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, Any]:
    declared = json.loads((DYNALITE_DIR / "package.json").read_text())["dependencies"]["dynalite"]
    installed = DYNALITE_DIR / "node_modules" / "dynalite" / "package.json"
    dynalite = json.loads(installed.read_text())["version"] if installed.exists() else declared
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {cpu_model()}, {platform.system()} "
        f"{platform.release()}",
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "versions": {name: version(name) for name in ("boto3", "botocore", "pynamodb", "moto", "werkzeug")}
        | {"dynalite": dynalite},
    }


def run(
    engines: list[str],
    payments: int = PAYMENTS,
    threads: int = THREADS,
    storm_keys: int = STORM_KEYS,
    storm_copies: int = STORM_COPIES,
    trip_samples: int = TRIP_SAMPLES,
    progress: bool = False,
) -> dict[str, Any]:
    env = environment()
    started = time.perf_counter()
    level = logger.log_level
    logger.setLevel("ERROR")  # engine warnings (dynalite has no TTL) and per-request lines stay out of the output
    try:
        results = [run_engine(engine, payments, threads, storm_keys, storm_copies, trip_samples, progress)
                   for engine in engines]  # fmt: skip
    finally:
        logger.setLevel(level)
    env["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    mismatches = [
        f"{r['engine']} {part}: {m}" for r in results for part in ("load", "storm") for m in r[part]["mismatches"]
    ]
    return {
        "environment": env,
        "parameters": {"payments": payments, "threads": threads, "storm_keys": storm_keys,
                       "storm_copies": storm_copies, "trip_samples": trip_samples, "engines": engines},
        "seconds": round(time.perf_counter() - started, 1),
        "results": results,
        "mismatches": mismatches,
    }  # fmt: skip


def markdown(report: dict[str, Any]) -> str:
    env, params = report["environment"], report["parameters"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    lines = [
        "# Load test results",
        "",
        f"Measured {env['date']} on {env['machine']} (load average {env['load_average_at_start']} at the start, "
        f"{env['load_average_at_end']} at the end: a shared machine), Python {env['python']}; {versions}. "
        f"Written by `make test-load` (tests/load/run.py) in {report['seconds']:,} s.",
        "",
        f"Each engine is a fresh local server process. Load: {params['payments']:,} distinct `POST /payments` "
        f"requests with `payment_method` (each authorised through the simulated processor) from {params['threads']} "
        f"threads. Storm: {params['storm_keys']:,} keys, each sent {params['storm_copies']} times at once by "
        f"{params['storm_copies']} threads. Counts come from the tables and the processor's ledger afterwards and "
        "must be exact. Both engines handle one request at a time, so throughput is the engine's and the "
        "latencies include the queue in front of it.",
        "",
        "| engine | run | requests | seconds | requests/s | p50 ms | p95 ms | p99 ms | payments | charges "
        "| duplicates | total amount | statuses | exact |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        for part in ("load", "storm"):
            x = r[part]
            statuses = ", ".join(f"{s}: {n:,}" for s, n in x["statuses"].items())
            exact = "yes" if not x["mismatches"] else "NO: " + "; ".join(x["mismatches"])
            lines.append(
                f"| {r['engine']} | {part} | {x['requests']:,} | {x['seconds']:,} | {x['throughput_per_s']} "
                f"| {x['p50_ms']} | {x['p95_ms']} | {x['p99_ms']} | {x['payments']:,} | {x['charges']:,} "
                f"| {x['duplicate_charges']} | {x['total_amount']:,} | {statuses} | {exact} |"
            )
    lines += ["", "## Round trips per request", ""]
    lines.append(
        f"One request at a time on the empty tables, {params['trip_samples']} samples each: the DynamoDB calls in "
        "order, each call's median time (botocore's before-call to after-call: serialising, the HTTP round trip, "
        "parsing) and its share of the request's median time; the rest is the handler's own work (event parsing, "
        "validation, hashing, JSON) and the hooks'."
    )
    for r in report["results"]:
        for kind in ("create", "replay"):
            t = r["round_trips"][kind]
            lines += [
                "",
                f"**{r['engine']}, {kind}**: {t['round_trips']} round trips, {t['total_ms']} ms at the median "
                f"({t['calls_ms']} ms in calls, {t['outside_calls_ms']} ms outside them, "
                f"{t['outside_calls_share']:.0%}). Minimum: {r['minimum_round_trips'][kind]}.",
                "",
                "| # | operation | table | ms | share |",
                "|---|---|---|---|---|",
            ]
            lines += [
                f"| {i} | {c['operation']} | {c['table']} | {c['ms']} | {c['share']:.0%}"
                f"{' (' + c['error'] + ')' if c.get('error') else ''} |"
                for i, c in enumerate(t["calls"], 1)
            ]
    projected = [r for r in report["results"] if r.get("projection")]
    if projected:
        lines += [
            "", "## The stream consumer under the load", "",
            "The payments stream's consumer (`consumer.Consumer`, the deployed Lambda's handler) polled on a thread "
            "of the same process while the load and the storm ran, then drained what was left. Lag: each record's "
            "delivery time minus its write time (the stream's `ApproximateCreationDateTime`). The consumer shares the "
            "two cores and the GIL with the "
            "sixteen client threads here; deployed, it is a Lambda of its own per shard.",
            "",
            "| engine | records | during the load | backlog at the end | backlog drained in s | records/s "
            "| lag p50 ms | lag p99 ms | lag max ms | invocations | retries | failed |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]  # fmt: skip
        for r in projected:
            x = r["projection"]
            lines.append(
                f"| {r['engine']} | {x['records']:,} | {x['records_during_load']:,} | {x['backlog_records']:,} "
                f"| {x['backlog_seconds']} | {x['records_per_s']} | {x['lag_p50_ms']} | {x['lag_p99_ms']} "
                f"| {x['lag_max_ms']} | {x['invocations']:,} | {x['retries']} | {x['failed']} |"
            )
    if report["mismatches"]:
        lines += ["", "**Mismatches:** " + "; ".join(report["mismatches"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="moto,dynalite")
    parser.add_argument("--payments", type=int, default=PAYMENTS)
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--storm-keys", type=int, default=STORM_KEYS)
    parser.add_argument("--storm-copies", type=int, default=STORM_COPIES)
    parser.add_argument("--trip-samples", type=int, default=TRIP_SAMPLES)
    parser.add_argument("--progress", action="store_true", help="a progress bar per run (stderr)")
    parser.add_argument("--output", type=Path, default=HERE)
    args = parser.parse_args(argv)
    report = run(args.engines.split(","), args.payments, args.threads, args.storm_keys, args.storm_copies,
                 args.trip_samples, args.progress)  # fmt: skip
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.output / "RESULTS.md").write_text(markdown(report))
    print(markdown(report))
    if report["mismatches"]:
        print("load test FAILED: " + "; ".join(report["mismatches"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
