"""The ``payment-examples`` console script."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from payment_examples.core import PaymentExamplesError

if TYPE_CHECKING:
    from datetime import datetime

    from payment_examples.core.config import Settings
    from payment_examples.harness.consumer import Consumer


def _bounded(convert: Callable[[str], float], what: str, low: float, high: float | None = None) -> Callable:
    """An argparse type: ``convert`` the text, then check it lies within [low, high]."""

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not low <= value <= (high if high is not None else value):  # also refuses NaN
            bounds = f"within [{low}, {high}]" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    return parse


_positive = _bounded(int, "an integer", 1)
_natural = _bounded(lambda text: int(text.replace("_", "")), "a whole number", 0)  # 1_000_000 reads well
_non_negative = _bounded(float, "a number", 0)
_rate = _bounded(float, "a number", 0, 1)


def _local(args: argparse.Namespace) -> int:
    from payment_examples.core.config import get_settings
    from payment_examples.engine.local import local_aws

    try:  # Ctrl-C at any moment, even while starting or printing, stops the engine cleanly
        with local_aws() as engine_endpoint:
            settings = get_settings()
            services = settings.endpoint_for("s3")
            credentials = "AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing"
            if services == engine_endpoint:
                print(f"embedded engine (local moto server process) at {engine_endpoint}", flush=True)
                print("point other shells or notebooks at it with:")
                print(f"  export AWS_ENDPOINT_URL={engine_endpoint} {credentials}")
            else:
                print(f"embedded engine: dynalite (DynamoDB) at {engine_endpoint}", flush=True)
                print(f"                 local moto server (S3, KMS, STS) at {services}", flush=True)
                print("point other shells or notebooks at it with:")
                print(f"  export AWS_ENDPOINT_URL_DYNAMODB={engine_endpoint} AWS_ENDPOINT_URL={services} {credentials}")
            print(f"tables created with prefix {settings.table_prefix!r}; Ctrl-C stops the engine", flush=True)
            consumer = _background_consumer(settings)
            try:
                while True:
                    time.sleep(3600)
            finally:
                if consumer is not None:
                    consumer.stop()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    return 0


def _background_consumer(settings: Settings) -> Consumer | None:
    """The payments stream's consumer on a background thread, where the engine has streams (the moto server)."""
    from payment_examples.engine.stream import stream_arn
    from payment_examples.harness.consumer import Consumer
    from payment_examples.tables.models import get_models

    table = get_models(settings).payment.Meta.table_name
    try:
        stream_arn(table, settings)
    except ValueError:
        print("no DynamoDB Streams on this engine: Transactions and audit entries are not projected", flush=True)
        return None
    consumer = Consumer(settings)
    consumer.start()
    print("stream consumer running: Transactions and audit entries are projected as payments change", flush=True)
    return consumer


def _create_tables(args: argparse.Namespace) -> int:
    from payment_examples.core.config import get_settings
    from payment_examples.engine.local import create_kms_key
    from payment_examples.tables.models import create_tables

    for name in create_tables():
        print(name)
    settings = get_settings()
    if settings.kms_key_id:
        print(f"field encryption: KMS key {settings.kms_key_id}")
    elif settings.mode == "aws":
        print("field encryption: set PAYMENT_KMS_KEY_ID to the KMS key of customer and card data", file=sys.stderr)
    else:  # a local endpoint: create (or find) the key, and say how to use it
        print(f"field encryption: export PAYMENT_KMS_KEY_ID={create_kms_key(settings)}")
    return 0


def _reports(args: argparse.Namespace) -> int:
    from payment_examples.reports.runner import duration, run_notebooks

    run = run_notebooks(
        args.notebooks, args.output, params_file=args.params, html=not args.no_html,
        scenarios_file=args.scenarios, raise_on_failure=False, jobs=args.jobs,
    )  # fmt: skip
    for failed in run.failed:
        partial = f" (partial output: {failed.html or failed.notebook})" if failed.notebook else ""
        print(f"payment-examples: notebook failed: {failed.failure}{partial}", file=sys.stderr)
    print(
        f"{len(run.reports)} notebooks, {len(run.scenarios)} scenario runs, {len(run.failures)} failed, "
        f"in {duration(run.seconds)} ({run.jobs} at a time)"
    )
    print(run.index)
    return 1 if run.failures else 0


def _cost(args: argparse.Namespace) -> int:
    import json
    import secrets

    from payment_examples.core.config import Settings
    from payment_examples.core.logs import log_level
    from payment_examples.cost.estimator import CostEstimator, Pricing
    from payment_examples.engine.local import local_aws
    from payment_examples.harness.cost_workload import measure_workload

    estimator = CostEstimator(Pricing.load(args.region))  # an unknown region fails before the engine starts
    # Always a fresh embedded engine: the workload writes payments, so it never runs against a real account.
    settings = Settings(region="us-east-1", table_prefix="cost-", cursor_secret=secrets.token_hex(32))
    with log_level("ERROR"), local_aws(settings):
        measured = measure_workload(args.measure_payments)
    metrics = measured.metrics(
        args.payments_per_month,
        reads_per_payment=args.reads_per_payment,
        retention_months=args.retention_months,
        table_class=args.table_class,
        lambda_memory_mb=args.lambda_memory,
        lambda_architecture=args.architecture,
    )
    breakdown = estimator.estimate_monthly(metrics)
    if args.format == "json":
        print(json.dumps(breakdown.to_dict(), indent=1, default=str))
    else:
        print(
            f"{args.payments_per_month:,} payments/month in {breakdown.region} (prices checked "
            f"{breakdown.prices_checked_on}; DynamoDB units measured on {args.measure_payments} payments)"
        )
        print(breakdown.table())
    return 0


def _rotate_keys(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from payment_examples.encryption.customers import CustomerService
    from payment_examples.encryption.key_rotation import rotate_keys

    service = CustomerService()
    target = service.encryptor.keyring.current
    with tqdm(unit="item", desc=f"rotating to key version {target}", disable=args.quiet, file=sys.stderr) as bar:
        result = rotate_keys(service, page_size=args.page_size, on_item=lambda kind, item_id, rotated: bar.update(1))
    print(
        f"key version {result.target_version}: {result.scanned} items read, {result.rotated['customers']} customers "
        f"and {result.rotated['payment_methods']} payment methods rotated, {result.already_current} already "
        f"current, {result.conflicts} version conflicts retried"
    )
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    from payment_examples.audit.chain import AuditTracker

    tracker = AuditTracker()
    entities = args.entity or sorted(tracker.all_entities())
    broken = 0
    for entity in entities:
        result = tracker.verify(entity)
        broken += not result.ok
        print(result.summary())
    print(f"{len(entities)} chains verified, {broken} with problems")
    return 1 if broken else 0


def _recover(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from payment_examples.checkout.processor import processor_for
    from payment_examples.checkout.recovery import recover
    from payment_examples.checkout.service import Checkout
    from payment_examples.core.config import get_settings
    from payment_examples.core.errors import ConfigurationError
    from payment_examples.idempotency.middleware import IdempotencyMiddleware
    from payment_examples.payments.service import PaymentService

    processor = processor_for(get_settings())
    if processor is None:
        raise ConfigurationError("recover resolves processor calls: set PAYMENT_PROCESSOR (e.g. local)")
    report = recover(Checkout(PaymentService(), processor), IdempotencyMiddleware(),
                     older_than=timedelta(seconds=args.older_than))  # fmt: skip
    for payment_id, operation, outcome in report.resolved_calls:
        print(f"resolved {operation} of payment {payment_id}: {outcome}")
    print(report.summary())
    return 1 if any(outcome.startswith("error") for _, _, outcome in report.resolved_calls) else 0


def _since(text: str) -> datetime:
    """An ISO 8601 instant with an offset (``2026-12-04T09:00:00Z``) or a date (UTC midnight)."""
    from datetime import UTC, datetime

    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date or date-time") from None
    if len(text) == 10:
        value = value.replace(tzinfo=UTC)
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs an offset (such as Z or +01:00)")
    return value.astimezone(UTC)


def _webhooks_replay(args: argparse.Namespace) -> int:
    from payment_examples.webhooks.delivery import Deliverer
    from payment_examples.webhooks.endpoints import WebhookEndpoints

    if args.until is not None and args.until <= args.since:
        raise PaymentExamplesError("--until must be later than --since")
    result = Deliverer(endpoints=WebhookEndpoints()).replay(since=args.since, until=args.until,
                                                             merchant_id=args.merchant)  # fmt: skip
    for event_id in result.event_ids:
        print(f"queued again: {event_id}")
    print(f"{result.found} failed deliveries in the window: {result.replayed} queued again, {result.skipped} "
          "skipped (changed meanwhile: delivered, or replayed by another run)")  # fmt: skip
    return 0


def _webhooks_add(args: argparse.Namespace) -> int:
    from payment_examples.webhooks.endpoints import WebhookEndpoints

    endpoint, secret = WebhookEndpoints().add(args.merchant, args.url, events=args.events or None)
    print(f"endpoint {endpoint.endpoint_id} for {endpoint.merchant_id}: {endpoint.url}")
    print(f"signing secret (shown once; verify with payment_examples.webhooks.verify_signature): {secret}")
    return 0


def _webhooks_rotate(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from payment_examples.webhooks.endpoints import WebhookEndpoints

    secret = WebhookEndpoints().rotate_secret(
        args.merchant, args.endpoint, previous_valid_for=timedelta(hours=args.previous_valid_for)
    )
    print(f"new signing secret (shown once; the previous one signs too for {args.previous_valid_for} h): {secret}")
    return 0


def _webhooks_deliveries(args: argparse.Namespace) -> int:
    from payment_examples.webhooks.delivery import Deliverer, DeliveryView
    from payment_examples.webhooks.endpoints import WebhookEndpoints

    found = Deliverer(endpoints=WebhookEndpoints()).deliveries(args.event_id)
    if not found:
        print(f"no delivery of {args.event_id} is logged")
        return 1
    for item in map(DeliveryView.of, found):
        status = item.last_status if item.last_status is not None else "-"
        print(f"{item.event_id} {item.event_type} -> {item.endpoint_id}: {item.state}, {item.attempts} attempts, "
              f"{item.replays} replays, last status {status}, last error {item.last_error or '-'}")  # fmt: skip
        for attempt in item.history:
            print(f"  {attempt['at']}  status {attempt.get('status') or '-'}  {attempt.get('ms')} ms  "
                  f"{attempt.get('error') or ''}".rstrip())  # fmt: skip
    return 0


def _audit_checkpoint(args: argparse.Namespace) -> int:
    from payment_examples.audit.chain import AuditTracker

    checkpoint = AuditTracker().checkpoint(args.entity or None)
    print(f"checkpoint {checkpoint.checkpoint_id}: {len(checkpoint.heads)} chain heads signed")
    return 0


def _gen_settlement(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from payment_examples.reconciliation.generator import SettlementScenario, write_answer_key, write_settlement_file

    scenario = SettlementScenario(args.rows, args.seed, args.discrepancy_rate)
    output = Path(args.output)
    with open(output, "w", encoding="utf-8", newline="") as handle:
        rows = write_settlement_file(scenario, handle, crlf=args.crlf)
    answers = output.with_name(output.name + ".answers.csv")
    with open(answers, "w", encoding="utf-8", newline="") as handle:
        write_answer_key(scenario, handle)
    sidecar = output.with_name(output.name + ".scenario.json")
    sidecar.write_text(json.dumps({"rows": args.rows, "seed": args.seed, "discrepancy_rate": args.discrepancy_rate}))
    print(f"{output}: {rows} rows (seed {args.seed}, discrepancy rate {args.discrepancy_rate})")
    print(f"{answers}: the expected outcome of every row, and the payments expected as missing_in_file")
    print(f"{sidecar}: what `payment-examples reconcile {output} --create-payments` needs to create the payments")
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    from payment_examples.core.config import get_settings
    from payment_examples.engine.local import local_aws

    settings = get_settings()
    if settings.mode == "embedded" and args.source.startswith("s3://"):
        print("payment-examples: an s3:// source needs AWS_ENDPOINT_URL or PAYMENT_USE_AWS=1", file=sys.stderr)
        return 2
    if settings.mode == "embedded" and not args.create_payments:
        print(
            "payment-examples: the embedded engine starts empty: pass --create-payments (for a file made by "
            "gen-settlement), or point AWS_ENDPOINT_URL / PAYMENT_USE_AWS=1 at your tables",
            file=sys.stderr,
        )
        return 2
    with local_aws():
        return _reconcile_on_engine(args)


def _reconcile_on_engine(args: argparse.Namespace) -> int:
    import csv
    import json
    from pathlib import Path
    from urllib.parse import urlparse

    from tqdm import tqdm

    from payment_examples.core.aws import client
    from payment_examples.core.config import get_settings
    from payment_examples.core.logs import logger
    from payment_examples.reconciliation.generator import SettlementScenario, create_scenario_payments
    from payment_examples.reconciliation.reconciler import (
        LocalReportSink,
        LocalSource,
        Reconciler,
        S3ReportSink,
        S3Source,
        run_reconciliation,
    )

    logger.setLevel("WARNING")
    if args.source.startswith("s3://"):
        url = urlparse(args.source)
        bucket, key = url.netloc, url.path.lstrip("/")
        etag = client("s3").head_object(Bucket=bucket, Key=key)["ETag"]
        source = S3Source(bucket, key, etag, layout=args.format, merchant=args.merchant)
        sink = S3ReportSink(bucket, get_settings().recon_report_prefix)
        report_name = f"{key}/{source.etag}"
    else:
        path = Path(args.source)
        if not path.is_file():
            print(f"payment-examples: {path} is not a file", file=sys.stderr)
            return 2
        source = LocalSource(str(path), layout=args.format, merchant=args.merchant)
        sink = LocalReportSink(args.report_dir or str(path.with_name(path.name + ".reports")))
        report_name = source.file.file_id
    if args.create_payments:
        sidecar = Path(args.source + ".scenario.json")
        if not sidecar.is_file():
            print(f"payment-examples: --create-payments needs {sidecar} (written by gen-settlement)", file=sys.stderr)
            return 2
        spec = json.loads(sidecar.read_text())
        created = create_scenario_payments(SettlementScenario(spec["rows"], spec["seed"], spec["discrepancy_rate"]))
        print(f"created {created} payments for the scenario of {sidecar.name}")
    if args.distributed:
        from payment_examples.reconciliation.distributed import run_distributed

        result = run_distributed(
            source, sink, reconciler_factory=lambda: Reconciler(max_workers=args.workers),
            rows_per_range=args.rows_per_range, workers=args.distributed, report_name=report_name,
        )  # fmt: skip
    else:
        with tqdm(unit=" rows", desc="reconciling", disable=args.quiet) as progress:
            result = run_reconciliation(
                source, sink, reconciler=Reconciler(max_workers=args.workers), on_batch=progress.update,
                report_name=report_name,
            )  # fmt: skip
    if result.busy:
        print("another invocation is reconciling this file right now; it will finish it")
        return 1
    summary = result.summary or {}
    print(f"\n{'outcome':20} {'rows':>10}")
    for outcome, count in summary.get("outcomes", {}).items():
        print(f"{outcome:20} {count:>10}")
    print(f"{'missing_in_file':20} {summary.get('missing_in_file', 0):>10}")
    print(f"\n{'currency':8} {'matched':>14} {'applied':>14} {'disputed':>14} {'missing':>14}")
    for currency, amounts in summary.get("amounts", {}).items():
        print(f"{currency:8} {amounts['matched']:>14} {amounts['applied']:>14} {amounts['disputed']:>14} "
              f"{amounts['missing_in_file']:>14}")  # fmt: skip
    fees = {
        c: a for c, a in summary.get("amounts", {}).items() if a.get("fee") or a.get("adjustment") or a.get("payout")
    }
    if fees:
        print(f"\n{'currency':8} {'fees':>14} {'adjustments':>14} {'payouts':>14}")
        for currency, amounts in fees.items():
            print(f"{currency:8} {amounts['fee']:>14} {amounts['adjustment']:>14} {amounts['payout']:>14}")
    for payout in summary.get("payout_discrepancies", []):
        print(f"payout {payout['payout_id']} {payout['currency']}: the rows sum to {payout['actual']}, "
              f"the payout is {payout['expected']}")  # fmt: skip
    print(f"\nlayout: {summary.get('layout')}; rows: {summary.get('rows')}, {summary.get('rows_per_s')} rows/s, "
          f"{summary.get('duration_s')} s")  # fmt: skip
    print(f"summary:    {result.report['summary']}\nexceptions: {result.report['exceptions']}")
    answers = Path(args.source + ".answers.csv")
    if not args.source.startswith("s3://") and answers.is_file():
        with open(answers, newline="") as handle:
            expected = [row["outcome"] for row in csv.DictReader(handle) if row["line"]]
        agrees = all(summary["outcomes"][o] == expected.count(o) for o in summary["outcomes"])
        print(f"answer key {answers.name}: {'every outcome count agrees' if agrees else 'DIFFERS'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="payment-examples", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    local = commands.add_parser("local", help="run the embedded engine in the foreground until Ctrl-C")
    local.set_defaults(run=_local)

    tables = commands.add_parser("create-tables", help="create the tables on the configured endpoint or account")
    tables.set_defaults(run=_create_tables)

    reports = commands.add_parser("reports", help="execute every notebook with papermill into a reports folder")
    reports.add_argument("--notebooks", default="notebooks", help="folder of .ipynb sources (default: notebooks)")
    reports.add_argument("--output", default="reports", help="output folder (default: reports)")
    reports.add_argument("--params", default=None, help="YAML file of parameters (top level: all notebooks)")
    reports.add_argument("--no-html", action="store_true", help="write executed notebooks only")
    reports.add_argument("--scenarios", default=None, help="YAML file: one notebook rendered once per scenario")
    reports.add_argument(
        "--jobs", type=int, default=1, help="notebooks run at a time, each with its own kernel and engine (default: 1)"
    )
    reports.set_defaults(run=_reports)

    cost = commands.add_parser(
        "cost", help="estimate the monthly AWS bill, from DynamoDB units measured on the embedded engine"
    )
    cost.add_argument("--payments-per-month", type=_natural, required=True)
    cost.add_argument("--region", default="us-east-1", help="a region with data/pricing/<region>.json")
    cost.add_argument("--format", choices=("table", "json"), default="table")
    cost.add_argument("--reads-per-payment", type=_non_negative, default=2.0, help="GET /payments/{id} per payment")
    cost.add_argument("--retention-months", type=_positive, default=12)
    cost.add_argument("--table-class", choices=("standard", "standard_ia"), default="standard")
    cost.add_argument("--lambda-memory", type=_positive, default=512, help="MB (128..10240)")
    cost.add_argument("--architecture", choices=("arm64", "x86_64"), default="arm64")
    cost.add_argument("--measure-payments", type=_positive, default=20, help="payments in the measured run")
    cost.set_defaults(run=_cost)

    rotate = commands.add_parser(
        "rotate-keys",
        help="re-encrypt customer emails and card numbers under the current field-key version and KMS key",
    )
    rotate.add_argument("--page-size", type=_positive, default=100)
    rotate.add_argument("--quiet", action="store_true", help="no progress bar")
    rotate.set_defaults(run=_rotate_keys)

    verify = commands.add_parser(
        "audit-verify", help="verify audit chains (exit 1 if any was tampered with) against their checkpoints"
    )
    verify.add_argument("entity", nargs="*", help="e.g. payment#<id> (default: every chain, a full table scan)")
    verify.set_defaults(run=_audit_verify)

    sign = commands.add_parser("audit-checkpoint", help="sign the heads of audit chains (PAYMENT_AUDIT_KEY)")
    sign.add_argument("entity", nargs="*", help="e.g. customer#<id> (default: every chain, a full table scan)")
    sign.set_defaults(run=_audit_checkpoint)

    sweep = commands.add_parser(
        "recover",
        help="finish what crashed workers left: stale idempotency claims, processor calls in flight, "
        "missing Transactions and audit entries (exit 1 if a call could not be resolved)",
    )
    sweep.add_argument(
        "--older-than", type=_non_negative, default=300.0,
        help="seconds (default 300); younger leftovers are left to the workers that may still hold them",
    )  # fmt: skip
    sweep.set_defaults(run=_recover)

    gen = commands.add_parser(
        "gen-settlement", help="write a seeded settlement file with discrepancies, and its answers"
    )
    gen.add_argument("--rows", type=_positive, required=True)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--discrepancy-rate", type=_rate, default=0.1)
    gen.add_argument("--output", required=True, help="the CSV to write (answers and scenario files go beside it)")
    gen.add_argument("--crlf", action="store_true", help="CRLF line ends")
    gen.set_defaults(run=_gen_settlement)

    recon = commands.add_parser("reconcile", help="reconcile a settlement file (a path or s3://bucket/key)")
    recon.add_argument("source", help="a local CSV or s3://bucket/key")
    recon.add_argument(
        "--create-payments",
        action="store_true",
        help="first create the payments of a gen-settlement file (demo on the embedded engine)",
    )
    recon.add_argument("--report-dir", help="where the reports of a local file go (default: <file>.reports/)")
    recon.add_argument("--workers", type=_positive, default=8)
    recon.add_argument("--format", choices=("canonical", "stripe", "adyen", "paypal"),
                       help="the file's layout (default: detected from its first record)")  # fmt: skip
    recon.add_argument("--merchant", help="the file's merchant, for reports whose rows may not name one (Stripe)")
    recon.add_argument(
        "--distributed",
        type=_positive,
        metavar="THREADS",
        help="plan, reconcile ranges on THREADS threads, merge (the state machine's path, locally)",
    )
    recon.add_argument("--rows-per-range", type=_positive, default=10_000, help="with --distributed")
    recon.add_argument("--quiet", action="store_true", help="no progress bar")
    recon.set_defaults(run=_reconcile)

    webhooks = commands.add_parser("webhooks", help="merchant webhooks: endpoints, deliveries, replays")
    actions = webhooks.add_subparsers(dest="action", required=True, metavar="ACTION")
    replay = actions.add_parser("replay", help="queue again the deliveries that gave up (their dead letters)")
    replay.add_argument(
        "--since", type=_since, required=True, help="failed at or after: a date (UTC) or an ISO 8601 time with offset"
    )
    replay.add_argument("--until", type=_since, help="failed before (default: now)")
    replay.add_argument("--merchant", help="only this merchant's deliveries")
    replay.set_defaults(run=_webhooks_replay)
    add = actions.add_parser("add-endpoint", help="register a merchant's endpoint; prints its signing secret once")
    add.add_argument("--merchant", required=True)
    add.add_argument("url", help="https://... (http://127.0.0.1 locally)")
    add.add_argument("--events", nargs="+", metavar="TYPE", help="event types (default: every type)")
    add.set_defaults(run=_webhooks_add)
    rotate = actions.add_parser("rotate-secret", help="a new signing secret; the previous one stays valid a while")
    rotate.add_argument("--merchant", required=True)
    rotate.add_argument("endpoint", help="the endpoint id (we_...)")
    rotate.add_argument("--previous-valid-for", type=_non_negative, default=24.0, metavar="HOURS")
    rotate.set_defaults(run=_webhooks_rotate)
    log = actions.add_parser("deliveries", help="the delivery log of one event (attempts, statuses, last error)")
    log.add_argument("event_id", help="evt_...")
    log.set_defaults(run=_webhooks_deliveries)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except PaymentExamplesError as error:
        print(f"payment-examples: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
