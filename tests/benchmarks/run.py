"""Benchmarks: the brief's performance targets, measured on both local engines next to raw boto3.

    make bench                      # full run: writes tests/benchmarks/results.json and RESULTS.md
    python -m tests.benchmarks.run --samples 20 --payments 700 --batch-samples 2 --kms-creates 100 --output /tmp/bench
                                    # a quick look (customer cases: --customer-samples, --uncached-kms-creates)

Each case times the package's call and the same DynamoDB calls made with raw boto3, on the same engine, in the
same run, and reports p50/p95 and the ratio. Targets are judged on dynalite, whose costs scale like DynamoDB's
(moto sorts a whole partition for every query); timings are never asserted anywhere. The customer cases (encrypted
email against the same item with the email in clear, and the KMS calls per 1,000 creates) need KMS, so they run
only on an engine with a KMS key (moto; dynalite has no KMS).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import jwt

from payment_examples.aws import dynamodb
from payment_examples.batch import DEFAULT_MAX_WORKERS, BatchOutcome, BatchPaymentRequest, process_payment_batch
from payment_examples.clock import SeededIds
from payment_examples.config import Settings, get_settings
from payment_examples.customers import CustomerService
from payment_examples.encryption import encryptor_for
from payment_examples.handlers.process import make_handler
from payment_examples.local import DYNALITE_DIR, local_aws
from payment_examples.logs import logger
from payment_examples.measure import Latency, measure
from payment_examples.pagination import get_merchant_payments
from payment_examples.payments import PaymentService
from payment_examples.seed import seed_payments
from payment_examples.utils.idempotency import IdempotencyMiddleware

HERE = Path(__file__).resolve().parent
SECRET = "benchmark-secret-of-at-least-thirty-two-bytes"
TARGETS_MS = {
    "payment creation (with idempotency)": 50.0,
    "idempotency check (repeat request)": 10.0,
    "one filtered page (50 captured) of a large merchant": 200.0,
    "batch of 1,000 payments": 5000.0,
}
BATCH_SIZE = 1_000
MAX_BATCH_SAMPLES = 10
KMS_CREATES = 1_000  # creates counted with the data-key cache (the cache serves up to 1,000 messages per key)
UNCACHED_KMS_CREATES = 100  # creates counted without it (one KMS call each), scaled per 1,000
CUSTOMER_CREATE = "customer creation (email encrypted)"
CUSTOMER_GET = "customer read (email decrypted, audited)"
NO_KMS = "no KMS key on this engine: dynalite has no KMS, so there is no field encryption to measure"


@dataclass(frozen=True)
class Case:
    name: str
    package: Latency
    raw: Latency
    raw_calls: str

    def row(self, engine: str) -> dict[str, Any]:
        target = TARGETS_MS.get(self.name)
        return {
            "engine": engine,
            "case": self.name,
            "samples": len(self.package.samples_ms),
            "p50_ms": round(self.package.p50, 2),
            "p95_ms": round(self.package.p95, 2),
            "raw_p50_ms": round(self.raw.p50, 2),
            "raw_p95_ms": round(self.raw.p95, 2),
            "ratio_p50": round(self.package.p50 / self.raw.p50, 2),
            "raw_calls": self.raw_calls,
            "target_p95_ms": target,
            "meets_target": None if target is None else self.package.p95 < target,
        }


def _event(key: str, body: dict, bearer: str) -> dict:
    return {
        "version": "2.0",
        "routeKey": "POST /payments",
        "rawPath": "/payments",
        "headers": {"authorization": bearer, "idempotency-key": key},
        "requestContext": {"http": {"method": "POST", "path": "/payments"}},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def creation_and_replay(samples: int) -> list[Case]:
    """The process handler end to end (JWT, validation, idempotency, create) against the same raw writes."""
    service, middleware = PaymentService(), IdempotencyMiddleware(ids=SeededIds(1))
    handler = make_handler(service, middleware)
    bearer = "Bearer " + jwt.encode({"merchant_id": "bench", "exp": int(time.time()) + 3600}, SECRET, "HS256")
    body = {"amount": 1250, "currency": "USD"}
    client = dynamodb()
    idempotency_table = middleware.table_name
    payments_table = service.models.payment.Meta.table_name

    def create(i: int) -> None:
        response = handler(_event(f"create-{i}", body, bearer), None)
        assert response["statusCode"] == 201, response

    # The raw baseline writes the same items the package writes (same attributes, so the same index entries):
    # templates taken from one request made through the handler.
    sample = json.loads(handler(_event("template", body, bearer), None)["body"])
    payment_item = client.get_item(TableName=payments_table, Key={"id": {"S": sample["id"]}})["Item"]
    record_key = middleware.record_key("bench", "template")
    record_item = client.get_item(TableName=idempotency_table, Key={"key": {"S": record_key}})["Item"]
    claim_item = {name: value for name, value in record_item.items() if name not in ("outcome", "result")}
    claim_item |= {"status": {"S": "IN_PROGRESS"}, "claim_token": {"S": "t"}, "lease_expires_at": {"N": "1"}}
    created_at = payment_item["created_key"]["S"].split("#")[0]

    def raw_create(i: int) -> None:
        key = {"key": {"S": f"raw-{i}"}}
        client.put_item(
            TableName=idempotency_table,
            Item={**claim_item, **key},
            ConditionExpression="attribute_not_exists(#k)",
            ExpressionAttributeNames={"#k": "key"},
        )
        client.put_item(
            TableName=payments_table,
            Item={**payment_item, "id": {"S": f"raw-{i}"}, "created_key": {"S": f"{created_at}#raw-{i}"}},
            ConditionExpression="attribute_not_exists(id)",
        )
        client.update_item(
            TableName=idempotency_table,
            Key=key,
            UpdateExpression="SET #s = :c, #o = :o, #r = :r REMOVE #l, #t",
            ExpressionAttributeNames={"#s": "status", "#o": "outcome", "#r": "result", "#l": "lease_expires_at",
                                      "#t": "claim_token"},
            ExpressionAttributeValues={":c": {"S": "COMPLETED"}, ":o": record_item["outcome"],
                                       ":r": record_item["result"]},
        )  # fmt: skip

    handler(_event("replayed", body, bearer), None)
    record_key = middleware.record_key("bench", "replayed")

    def replay(i: int) -> None:
        response = handler(_event("replayed", body, bearer), None)
        assert response["headers"].get("Idempotent-Replayed") == "true", response

    def failed_put() -> dict:
        try:
            client.put_item(TableName=idempotency_table, Item={"key": {"S": record_key}, "status": {"S": "X"}},
                            ConditionExpression="attribute_not_exists(#k)", ExpressionAttributeNames={"#k": "key"},
                            ReturnValuesOnConditionCheckFailure="ALL_OLD")  # fmt: skip
        except client.exceptions.ConditionalCheckFailedException as error:
            return error.response
        raise AssertionError("the record should exist")

    # An engine that does not return the old item (dynalite) makes the middleware read it: so does the baseline.
    returns_old_item = "Item" in failed_put()

    def raw_replay(i: int) -> None:
        failed_put()
        if not returns_old_item:
            client.get_item(TableName=idempotency_table, Key={"key": {"S": record_key}}, ConsistentRead=True)

    return [
        Case("payment creation (with idempotency)", measure("package", create, samples),
             measure("raw", raw_create, samples), "PutItem + PutItem + UpdateItem, same items"),
        Case("idempotency check (repeat request)", measure("package", replay, samples),
             measure("raw", raw_replay, samples),
             "failed conditional PutItem (ALL_OLD)" + ("" if returns_old_item else " + consistent GetItem")),
    ]  # fmt: skip


def filtered_page(samples: int, payments: int) -> list[Case]:
    """One page of 50 captured payments (status key condition) from a merchant with ``payments`` payments plus
    two noise merchants, against the same raw Query (same key condition, the same look-ahead Limit=51)."""
    merchant = "bench-merchant"
    captured = sum(p.status == "captured" for p in seed_payments(merchant, payments, ids=SeededIds(7)))
    for i, noise in enumerate(("noise-a", "noise-b")):
        seed_payments(noise, payments // 10, ids=SeededIds(100 + i))
    table, client = PaymentService().models.payment.Meta.table_name, dynamodb()

    def page(i: int) -> None:
        assert len(get_merchant_payments(merchant, limit=50, status="captured").items) == min(50, captured)

    def raw_page(i: int) -> None:
        client.query(
            TableName=table, IndexName="by-merchant-status", KeyConditionExpression="merchant_status = :h",
            ExpressionAttributeValues={":h": {"S": f"{merchant}#captured"}}, ScanIndexForward=False, Limit=51,
        )  # fmt: skip

    return [
        Case("one filtered page (50 captured) of a large merchant", measure("package", page, samples),
             measure("raw", raw_page, samples), f"Query Limit=51 ({payments} payments of the merchant)"),
    ]  # fmt: skip


def payment_batch(samples: int, size: int = BATCH_SIZE) -> list[Case]:
    """``process_payment_batch`` of ``size`` fresh payments (default workers: one conditional put each, with
    validation, in-batch duplicate detection and per-item outcomes) against raw boto3 making the same conditional
    puts of the same items from as many threads. Each sample writes ``size`` payments under fresh keys; no warm-up
    batch (the earlier cases already opened the clients)."""
    service, client = PaymentService(), dynamodb()
    table = service.models.payment.Meta.table_name

    def batch(i: int) -> None:
        requests = [BatchPaymentRequest("bench-batch", f"batch-{i}-{n}", 1250, "USD", description=f"Order #{n}")
                    for n in range(size)]  # fmt: skip
        result = process_payment_batch(requests, service=service)
        assert result.counts[BatchOutcome.CREATED] == size, result.counts

    # The raw items are the package's (same attributes, so the same index entries), under other keys.
    first = process_payment_batch([BatchPaymentRequest("bench-batch", "template", 1250, "USD", description="Order #0")])
    template = client.get_item(TableName=table, Key={"id": {"S": first.items[0].payment_id}})["Item"]
    created_at = template["created_key"]["S"].split("#")[0]

    def raw_put(item_id: str, n: int) -> None:
        client.put_item(
            TableName=table,
            Item={**template, "id": {"S": item_id}, "idempotency_key": {"S": item_id},
                  "created_key": {"S": f"{created_at}#{item_id}"}, "description": {"S": f"Order #{n}"}},
            ConditionExpression="attribute_not_exists(id)",
        )  # fmt: skip

    def raw_batch(i: int) -> None:
        with ThreadPoolExecutor(DEFAULT_MAX_WORKERS) as pool:
            list(pool.map(raw_put, [f"raw-batch-{i}-{n}" for n in range(size)], range(size)))

    return [
        Case(f"batch of {size:,} payments", measure("package", batch, samples, warmup=0),
             measure("raw", raw_batch, samples, warmup=0),
             f"{size:,} conditional PutItem from {DEFAULT_MAX_WORKERS} threads, same items"),
    ]  # fmt: skip


def _email(label: str, i: int) -> str:
    return f"{label}.{i}@example.com".replace("-", "m")  # warm-up calls have negative i


def customer_create_and_get(samples: int) -> list[Case]:
    """``CustomerService.create_customer`` (normalise, KMS envelope encryption with the data-key cache, binding
    signature, blind index, one conditional put) against a raw conditional PutItem of the equivalent item with the
    email in clear (no key version or KMS key id; its email index the clear email, so the same index entries);
    then ``get_customer`` (consistent GetItem, audit-log PutItem, signature check, decryption) of each created
    customer against a raw consistent GetItem of the same item. Needs the engine's KMS key."""
    settings, client = get_settings(), dynamodb()
    service = CustomerService(settings, encryptor=encryptor_for(settings))
    table = service.models.customer.Meta.table_name
    merchant = "bench-customers"
    created: list[str] = []

    def create(i: int) -> None:
        created.append(service.create_customer(merchant, _email("customer", i), actor="bench").id)

    template_id = service.create_customer(merchant, "template@example.com", actor="bench").id
    template = client.get_item(TableName=table, Key={"id": {"S": template_id}})["Item"]
    template = {name: value for name, value in template.items() if name not in ("key_version", "encryption_key_id")}
    created_at = template["created_key"]["S"].split("#")[0]

    def raw_create(i: int) -> None:
        item_id, email = f"raw-{i}", _email("raw", i)
        client.put_item(
            TableName=table,
            Item={**template, "id": {"S": item_id}, "created_key": {"S": f"{created_at}#{item_id}"},
                  "email": {"S": email}, "email_index": {"S": f"{merchant}#{email}"}},
            ConditionExpression="attribute_not_exists(id)",
        )  # fmt: skip

    create_case = Case(CUSTOMER_CREATE, measure("package", create, samples), measure("raw", raw_create, samples),
                       "conditional PutItem, same item with the email in clear")  # fmt: skip

    def get(i: int) -> None:
        view = service.get_customer(merchant, created[i % len(created)], actor="bench", purpose="support")
        assert view.email is not None

    def raw_get(i: int) -> None:
        client.get_item(TableName=table, Key={"id": {"S": created[i % len(created)]}}, ConsistentRead=True)

    return [
        create_case,
        Case(CUSTOMER_GET, measure("package", get, samples), measure("raw", raw_get, samples),
             "consistent GetItem of the same item (no audit entry, no decryption)"),
    ]  # fmt: skip


def encryption_overhead(cases: list[Case], engine: str, creates: int, uncached_creates: int) -> dict[str, Any]:
    """The encryption overhead per item (from the two customer cases) and the KMS calls made by ``creates``
    customer creations through a fresh encryptor with the data-key cache (one merchant: the cache is per merchant
    and purpose) and by ``uncached_creates`` without it, each scaled per 1,000 creates."""
    settings = get_settings()
    counted = {}
    for cache, n in ((True, creates), (False, uncached_creates)):
        calls: dict[str, int] = {}

        def count(operation: str, calls: dict[str, int] = calls) -> None:
            calls[operation] = calls.get(operation, 0) + 1

        service = CustomerService(settings, encryptor=encryptor_for(settings, cache=cache, on_kms_call=count))
        merchant = f"bench-kms-{'cached' if cache else 'uncached'}"
        latency = measure("kms", lambda i, s=service, m=merchant: s.create_customer(m, _email("kms", i), actor="bench"),
                          n, warmup=0)  # fmt: skip
        counted[cache] = {"creates": n, "calls": calls, "per_1000": round(sum(calls.values()) * 1000 / n, 1),
                          "p50_ms": round(latency.p50, 2)}  # fmt: skip
    by_name = {case.name: case for case in cases}
    create, get = by_name[CUSTOMER_CREATE], by_name[CUSTOMER_GET]
    return {
        "engine": engine, "case": "field encryption of a customer's email",
        "create_overhead_p50_ms": round(create.package.p50 - create.raw.p50, 2),
        "create_ratio_p50": round(create.package.p50 / create.raw.p50, 2),
        "get_overhead_p50_ms": round(get.package.p50 - get.raw.p50, 2),
        "get_ratio_p50": round(get.package.p50 / get.raw.p50, 2),
        "kms_creates": counted[True]["creates"], "kms_calls": counted[True]["calls"],
        "kms_calls_per_1000_creates": counted[True]["per_1000"],
        "uncached_kms_creates": counted[False]["creates"], "uncached_kms_calls": counted[False]["calls"],
        "uncached_kms_calls_per_1000_creates": counted[False]["per_1000"],
        "kms_create_p50_ms": counted[True]["p50_ms"], "uncached_kms_create_p50_ms": counted[False]["p50_ms"],
    }  # fmt: skip


def reconciliation_throughput(rows: int, engine: str) -> dict[str, Any]:
    """Rows/s of a whole reconciliation run (parse, BatchGetItem, conditional updates and their Transactions,
    checkpoints, reports) of a generated ``rows``-row file, against raw boto3 making the minimum the same file
    needs: one consistent BatchGetItem per 100 rows and one conditional UpdateItem per valid row, from as many
    threads. Each side runs on its own freshly created payments (same scenario shape, other seeds)."""
    import tempfile

    from payment_examples.reconciliation import LocalReportSink, LocalSource, Reconciler, run_reconciliation
    from payment_examples.settlement_file import SettlementRow, read_settlement_file
    from payment_examples.settlement_generator import (
        SettlementScenario,
        create_scenario_payments,
        write_settlement_file,
    )

    def scenario_file(seed: int) -> str:
        scenario = SettlementScenario(rows, seed, 0.1)
        create_scenario_payments(scenario)
        path = tempfile.mktemp(suffix=".csv")
        with open(path, "w", newline="") as handle:
            write_settlement_file(scenario, handle)
        return path

    package_path, raw_path = scenario_file(1), scenario_file(2)
    start = time.perf_counter()
    result = run_reconciliation(LocalSource(package_path), LocalReportSink(tempfile.mkdtemp()),
                                reconciler=Reconciler(max_workers=DEFAULT_MAX_WORKERS))  # fmt: skip
    package_s = time.perf_counter() - start
    assert result.complete and result.rows == rows

    client = dynamodb()
    table = PaymentService().models.payment.Meta.table_name

    def raw_update(row: SettlementRow) -> None:
        # an unknown payment fails the condition: the row is reported, nothing written
        with contextlib.suppress(client.exceptions.ConditionalCheckFailedException):
            client.update_item(
                TableName=table, Key={"id": {"S": row.payment_id}}, UpdateExpression="SET settlement_mark = :m",
                ConditionExpression="attribute_exists(id)",
                ExpressionAttributeValues={":m": {"S": f"{row.status}#{row.processor_reference}#{row.line}"}},
            )  # fmt: skip

    start = time.perf_counter()
    with open(raw_path, "rb") as handle, ThreadPoolExecutor(DEFAULT_MAX_WORKERS) as pool:
        batch: list[SettlementRow] = []
        for row, _ in read_settlement_file(handle):
            if isinstance(row, SettlementRow):
                batch.append(row)
            if len(batch) == 100:
                keys = [{"id": {"S": pid}} for pid in sorted({r.payment_id for r in batch})]
                client.batch_get_item(RequestItems={table: {"Keys": keys, "ConsistentRead": True}})
                list(pool.map(raw_update, batch))
                batch = []
        if batch:
            keys = [{"id": {"S": pid}} for pid in sorted({r.payment_id for r in batch})]
            client.batch_get_item(RequestItems={table: {"Keys": keys, "ConsistentRead": True}})
            list(pool.map(raw_update, batch))
    raw_s = time.perf_counter() - start
    return {
        "engine": engine, "case": "reconciliation of a settlement file", "rows": rows,
        "rows_per_s": round(rows / package_s, 1), "raw_rows_per_s": round(rows / raw_s, 1),
        "ratio": round(package_s / raw_s, 2), "outcomes": result.outcomes,
        "raw_calls": "BatchGetItem per 100 rows + one conditional UpdateItem per valid row, 8 threads",
    }  # fmt: skip


def environment() -> dict[str, Any]:
    dynalite = json.loads((DYNALITE_DIR / "node_modules" / "dynalite" / "package.json").read_text())["version"]
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": {name: version(name) for name in ("boto3", "botocore", "pynamodb", "moto", "werkzeug")}
        | {"dynalite": dynalite},
    }


def run(
    engines: list[str],
    samples: int,
    payments: int,
    batch_samples: int | None = None,
    batch_size: int = BATCH_SIZE,
    recon_rows: int = 2_000,
    customer_samples: int | None = None,
    kms_creates: int = KMS_CREATES,
    uncached_kms_creates: int = UNCACHED_KMS_CREATES,
) -> dict[str, Any]:
    batch_samples = min(samples, MAX_BATCH_SAMPLES) if batch_samples is None else batch_samples
    customer_samples = samples if customer_samples is None else customer_samples
    throughput, encryption, skipped = [], [], []
    level = logger.log_level
    logger.setLevel("ERROR")  # a log line per request would be measured too
    try:
        rows = []
        for engine in engines:
            with local_aws(Settings(engine=engine, jwt_secret=SECRET, cursor_secret=SECRET)):
                cases = creation_and_replay(samples) + filtered_page(samples, payments)
                cases += payment_batch(batch_samples, batch_size)
                if get_settings().kms_key_id:  # the embedded moto engine makes a KMS key; dynalite has no KMS
                    customer_cases = customer_create_and_get(customer_samples)
                    encryption.append(encryption_overhead(customer_cases, engine, kms_creates, uncached_kms_creates))
                    cases += customer_cases
                else:
                    skipped += [{"engine": engine, "case": name, "reason": NO_KMS}
                                for name in (CUSTOMER_CREATE, CUSTOMER_GET)]  # fmt: skip
                rows += [case.row(engine) for case in cases]
                throughput.append(reconciliation_throughput(recon_rows, engine))
    finally:
        logger.setLevel(level)
    return {"environment": environment(), "results": rows, "throughput": throughput, "encryption": encryption,
            "skipped": skipped}  # fmt: skip


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        "# Benchmark results",
        "",
        f"Measured {env['date']} on {env['machine']}, Python {env['python']}; "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        + ". Written by `make bench` (tests/benchmarks/run.py); a shared, noisy 2-core machine: compare ratios "
        "more than absolute numbers. Targets are judged on dynalite.",
        "",
        "| engine | case | n | p50 ms | p95 ms | raw p50 ms | raw p95 ms | p50 ratio | raw calls | target p95 | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        target = "" if r["target_p95_ms"] is None else f"< {r['target_p95_ms']:g} ms"
        met = "" if r["meets_target"] is None else ("yes" if r["meets_target"] else "no")
        lines.append(
            f"| {r['engine']} | {r['case']} | {r['samples']} | {r['p50_ms']} | {r['p95_ms']} | {r['raw_p50_ms']} "
            f"| {r['raw_p95_ms']} | {r['ratio_p50']}x | {r['raw_calls']} | {target} | {met} |"
        )
    throughput = report.get("throughput", [])
    if throughput:
        lines += [
            "",
            "| engine | case | rows | rows/s | raw rows/s | time ratio | raw calls |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {t['engine']} | {t['case']} | {t['rows']} | {t['rows_per_s']} | {t['raw_rows_per_s']} | {t['ratio']}x "
            f"| {t['raw_calls']} |"
            for t in throughput
        ]
    encryption = report.get("encryption", [])
    if encryption:
        lines += [
            "",
            "| engine | case | create overhead p50 ms | create p50 ratio | read overhead p50 ms | read p50 ratio "
            "| KMS calls per 1,000 creates, data-key cache | KMS calls per 1,000 creates, no cache |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {e['engine']} | {e['case']} | {e['create_overhead_p50_ms']} | {e['create_ratio_p50']}x "
            f"| {e['get_overhead_p50_ms']} | {e['get_ratio_p50']}x "
            f"| {_kms(e, '')} | {_kms(e, 'uncached_')} |"
            for e in encryption
        ]
        lines += [
            "",
            "Customer cases: the overhead is the encrypted call's p50 minus its raw baseline's (the same item with the "
            "email in clear; the read's baseline writes no audit entry and decrypts nothing). KMS calls are counted "
            "on fresh encryptors for one merchant (the data-key cache is per merchant and purpose).",
        ]
    skipped: dict[tuple[str, str], list[str]] = {}
    for s in report.get("skipped", []):
        skipped.setdefault((s["engine"], s["reason"]), []).append(s["case"])
    lines += [f"\nSkipped on {engine}: {', '.join(names)} ({reason})." for (engine, reason), names in skipped.items()]
    return "\n".join(lines) + "\n"


def _kms(row: dict[str, Any], prefix: str) -> str:
    """KMS calls per 1,000 creates, with what was counted (``prefix``: "" with the cache, "uncached_" without)."""
    creates, calls = row[f"{prefix}kms_creates"], row[f"{prefix}kms_calls"]
    counted = ", ".join(f"{n} {operation}" for operation, n in sorted(calls.items())) or "none"
    scaled = "" if creates == 1_000 else ", scaled per 1,000"
    return (
        f"{row[f'{prefix}kms_calls_per_1000_creates']:g} ({counted} over {creates:,} creates{scaled}; "
        f"create p50 {row[f'{prefix}kms_create_p50_ms']} ms)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="moto,dynalite")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--payments", type=int, default=10_000, help="payments of the large merchant")
    parser.add_argument(
        "--batch-samples", type=int, default=None,
        help=f"batches timed per engine (default: --samples, at most {MAX_BATCH_SAMPLES}); each writes fresh payments",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="payments per batch (target: 1,000)")
    parser.add_argument("--recon-rows", type=int, default=2_000, help="rows of the reconciled settlement file")
    parser.add_argument(
        "--customer-samples", type=int, default=None,
        help="customer creations and reads timed per engine with KMS (default: --samples); dynalite is skipped",
    )  # fmt: skip
    parser.add_argument("--kms-creates", type=int, default=KMS_CREATES,
                        help="customer creations whose KMS calls are counted with the data-key cache")  # fmt: skip
    parser.add_argument(
        "--uncached-kms-creates", type=int, default=UNCACHED_KMS_CREATES,
        help="customer creations whose KMS calls are counted without the cache (scaled per 1,000)",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, default=HERE)
    args = parser.parse_args(argv)
    report = run(args.engines.split(","), args.samples, args.payments, args.batch_samples, args.batch_size,
                 args.recon_rows, args.customer_samples, args.kms_creates, args.uncached_kms_creates)  # fmt: skip
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.output / "RESULTS.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
