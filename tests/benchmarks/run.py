"""Benchmarks: the brief's performance targets, measured on both local engines next to raw boto3.

    make bench                      # full run: writes tests/benchmarks/results.json and RESULTS.md
    python -m tests.benchmarks.run --samples 20 --payments 700 --output /tmp/bench   # a quick look

Each case times the package's call and the same DynamoDB calls made with raw boto3, on the same engine, in the
same run, and reports p50/p95 and the ratio. Targets are judged on dynalite, whose costs scale like DynamoDB's
(moto sorts a whole partition for every query); timings are never asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import jwt

from payment_examples.aws import dynamodb
from payment_examples.clock import SeededIds
from payment_examples.config import Settings
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
}


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


def environment() -> dict[str, Any]:
    dynalite = json.loads((DYNALITE_DIR / "node_modules" / "dynalite" / "package.json").read_text())["version"]
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": {name: version(name) for name in ("boto3", "botocore", "pynamodb", "moto", "werkzeug")}
        | {"dynalite": dynalite},
    }


def run(engines: list[str], samples: int, payments: int) -> dict[str, Any]:
    level = logger.log_level
    logger.setLevel("ERROR")  # a log line per request would be measured too
    try:
        rows = []
        for engine in engines:
            with local_aws(Settings(engine=engine, jwt_secret=SECRET, cursor_secret=SECRET)):
                cases = creation_and_replay(samples) + filtered_page(samples, payments)
                rows += [case.row(engine) for case in cases]
    finally:
        logger.setLevel(level)
    return {"environment": environment(), "results": rows}


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
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="moto,dynalite")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--payments", type=int, default=10_000, help="payments of the large merchant")
    parser.add_argument("--output", type=Path, default=HERE)
    args = parser.parse_args(argv)
    report = run(args.engines.split(","), args.samples, args.payments)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.output / "RESULTS.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
