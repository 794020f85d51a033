"""Benchmarks: the brief's performance targets, measured on both local engines next to raw boto3.

    make bench                      # full run (about 25 min here): writes tests/benchmarks/results.json, RESULTS.md
    python -m tests.benchmarks.run --quick --output /tmp/bench      # a quick look (a few minutes)

Each case times the package's call and raw boto3 making the same AWS calls, on the same engine, in the same run, in
turn (``measure_in_turn``), and reports p50/p95/p99, the ratios and a verdict (the brief's p95 target where there
is one; whether the overhead is within ``OVERHEAD_LIMIT``). The calls of both sides are counted (botocore's
``_make_api_call``) in a warm-up call and written next to the case, so "the same calls" is checked, not assumed.
Targets are judged on dynalite, whose costs scale like DynamoDB's (moto 5 sorts the whole table or partition for
every Query, so there a Query costs more with every item held: the page and the batch are timed fewer times there,
``--moto-page-samples`` and ``--moto-batch-samples``, and the reconciled file is shorter, ``--moto-recon-rows``);
timings are never asserted anywhere. Each group of cases runs on a fresh engine, so no case's cost depends on what
an earlier one wrote. The cases: creation through the process handler (no card: the brief's creation) and its
replay; one filtered page of a 10,000-payment merchant; a capture with and without its audit entry; a recovery
sweep (``recover``) over authorized payments; ``AuditTracker.verify`` of a 1,000-entry chain; customer create and
read with field encryption (wherever the engine has a KMS key; skipped, and said why, elsewhere) and the KMS calls
per 1,000 creates; a batch of 1,000; a reconciliation's rows/s (raw: the minimum the file needs; all calls of both
counted). Then each handler's cold start (fresh processes: ours and a bare boto3 handler making the same calls) and
the Lambda artifact's size (``make lambda``). Where our overhead exceeds 1.25x, ``profile_cases.py`` writes
PROFILE.md (cProfile).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any
from unittest import mock

import jwt
from botocore.client import BaseClient

from payment_examples.audit.chain import AuditTracker
from payment_examples.core.aws import client, dynamodb
from payment_examples.core.clock import SeededIds
from payment_examples.core.config import Settings, get_settings
from payment_examples.core.logs import logger
from payment_examples.core.measure import Latency, measure, percentile
from payment_examples.encryption.customers import CustomerService, access_entity
from payment_examples.encryption.fields import encryptor_for
from payment_examples.engine.local import DYNALITE_DIR, local_aws
from payment_examples.handlers.process import make_handler
from payment_examples.harness.consumer import drain
from payment_examples.idempotency.middleware import IdempotencyMiddleware
from payment_examples.payments.batch import (
    DEFAULT_MAX_WORKERS,
    BatchOutcome,
    BatchPaymentRequest,
    process_payment_batch,
)
from payment_examples.payments.pagination import get_merchant_payments
from payment_examples.payments.seed import seed_payments
from payment_examples.payments.service import PaymentService, audit_entity
from payment_examples.payments.state_machine import Operation
from payment_examples.tables.models import payment_id_for

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
MOTO_BATCH_SAMPLES = 2  # per side: 10 would be 20,000 audited creates each sorting up to 20,000 entries on moto
KMS_CREATES = 1_000  # creates counted with the data-key cache (the cache serves up to 1,000 messages per key)
UNCACHED_KMS_CREATES = 100  # creates counted without it (one KMS call each), scaled per 1,000
CUSTOMER_CREATE = "customer creation (email encrypted)"
CUSTOMER_GET = "customer read (email decrypted, audited)"
NO_STREAM = "the engine has no DynamoDB Streams (dynalite): nothing projects Transactions and audit entries there"
NO_KMS = "no KMS key configured on this engine (settings.kms_key_id is None), so there is no field encryption"
CAPTURE = "capture of an authorized payment"
HELD_CAPTURE = "capture when the caller holds the item"
WARMUP = 3  # measure()'s untimed calls, given i = -1, -2, -3
VERIFY_ENTRIES = 1_000
VERIFY_SAMPLES = 10
VERIFY_PAGE = 100  # AuditTracker.history's page size
MOTO_PAGE_SAMPLES = 30  # moto sorts the merchant's whole partition for every Query: about 1 s a page at 10,000
MOTO_RECON_ROWS = 1_000  # moto's audited reconciliation runs at about 10 rows/s (each head Query sorts the table)
RECOVERY_PAYMENTS = 1_000
MOTO_RECOVERY_PAYMENTS = 300  # moto's Scan and BatchGetItem are slow (about 2 s a sweep of 150 payments)
RECOVERY_SAMPLES = 5
COLD_SAMPLES = 5


OVERHEAD_LIMIT = 1.25  # above this ratio over raw boto3 (p50 or p95), our overhead is profiled (PROFILE.md)


@dataclass(frozen=True)
class Case:
    name: str
    package: Latency
    raw: Latency
    raw_calls: str
    note: str = ""  # what the raw baseline does not do, where that adds information
    calls: str = ""  # the AWS calls ours made (counted in a warm-up call)
    raw_counted: str = ""  # the AWS calls the raw baseline made (counted the same way)

    def row(self, engine: str) -> dict[str, Any]:
        target = TARGETS_MS.get(self.name)
        ratio_p50, ratio_p95 = self.package.p50 / self.raw.p50, self.package.p95 / self.raw.p95
        return {
            "engine": engine,
            "case": self.name,
            "samples": len(self.package.samples_ms),
            "p50_ms": round(self.package.p50, 2),
            "p95_ms": round(self.package.p95, 2),
            "p99_ms": round(percentile(self.package.samples_ms, 99), 2),
            "raw_p50_ms": round(self.raw.p50, 2),
            "raw_p95_ms": round(self.raw.p95, 2),
            "raw_p99_ms": round(percentile(self.raw.samples_ms, 99), 2),
            "ratio_p50": round(ratio_p50, 2),
            "ratio_p95": round(ratio_p95, 2),
            "raw_calls": self.raw_calls,
            "calls_counted": self.calls,
            "raw_calls_counted": self.raw_counted,
            "note": self.note,
            "target_p95_ms": target,
            "meets_target": None if target is None else self.package.p95 < target,
            "verdict": verdict(target, self.package.p95, ratio_p50, ratio_p95),
        }


def verdict(target: float | None, p95: float, ratio_p50: float, ratio_p95: float) -> str:
    """The target (when the case has one) and the overhead over raw boto3, from the measured values."""
    parts = [] if target is None else [f"target {'met' if p95 < target else 'MISSED'}"]
    worst = max(ratio_p50, ratio_p95)
    parts.append(f"overhead {'within' if worst <= OVERHEAD_LIMIT else 'OVER'} {OVERHEAD_LIMIT:g}x")
    return ", ".join(parts)


def case(name: str, timed: dict[str, Latency], counts: dict[str, str], raw_calls: str, note: str = "", *,
         package: str = "package", raw: str = "raw") -> Case:  # fmt: skip
    return Case(name, timed[package], timed[raw], raw_calls, note, counts.get(package, ""), counts.get(raw, ""))


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


def _raw_audit_append(client: Any, table: str, item: dict[str, Any]) -> None:
    """What ``AuditTracker.track`` sends to append ``item`` (an entry as the package stores it): a strongly
    consistent Query of the chain's head (Limit=1, newest first), then the put conditional on the key not existing.
    No hashing: the item's hash fields are the template's."""
    client.query(TableName=table, KeyConditionExpression="entity = :e", ConsistentRead=True, Limit=1,
                 ScanIndexForward=False, ExpressionAttributeValues={":e": item["entity"]})  # fmt: skip
    client.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(entity)")


@contextlib.contextmanager
def counted_calls() -> Iterator[Counter[str]]:
    """Count the AWS API calls made inside the block, by operation name, whoever makes them (boto3 clients and
    PynamoDB's botocore client alike): how the report shows that a raw baseline makes the same calls as ours."""
    calls: Counter[str] = Counter()
    original, lock = BaseClient._make_api_call, threading.Lock()

    def counting(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        with lock:
            calls[operation] += 1
        return original(client, operation, params)

    with mock.patch.object(BaseClient, "_make_api_call", counting):
        yield calls


def calls_of(call: Callable[[int], object], i: int = -100) -> str:
    """The calls ``call(i)`` makes (an extra warm-up call, untimed), as "2 PutItem + 1 Query" in a stable order."""
    with counted_calls() as calls:
        call(i)
    return describe_calls(calls)


def describe_calls(calls: Counter[str] | dict[str, int]) -> str:
    return " + ".join(f"{n} {operation}" for operation, n in sorted(calls.items())) or "none"


def measure_in_turn(
    calls: dict[str, Callable[[int], object]], n: int, *, warmup: int = WARMUP, counts: dict[str, str] | None = None
) -> dict[str, Latency]:
    """``measure`` for several calls at once, taken in turn (sample i of each before sample i+1 of any, the order
    rotating), so that a change in the shared machine's load falls on all of them alike: what their difference
    is computed from. Warm-up calls get negative i, as in ``measure``. ``counts`` receives the AWS calls each made
    in its first warm-up call (in its first sample without warm-up)."""
    names = list(calls)
    for i in range(warmup):
        for name in names:
            if i == 0 and counts is not None:
                with counted_calls() as made:
                    calls[name](-1)
                counts[name] = describe_calls(made)
            else:
                calls[name](-1 - i)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(n):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            counting = counted_calls() if counts is not None and warmup == 0 and i == 0 else None
            with counting or contextlib.nullcontext() as made:
                start = time.perf_counter()
                calls[name](i)
                samples[name].append((time.perf_counter() - start) * 1000)
            if made is not None:
                counts[name] = describe_calls(made)
    return {name: Latency(name, tuple(values)) for name, values in samples.items()}


def recorded_requests(call: Callable[[], object]) -> list[tuple[str, dict[str, Any]]]:
    """The AWS requests ``call()`` makes (operation, parameters as sent to botocore), for a raw baseline to send
    the very same requests (same items, conditions, expressions), with ``replay_requests``."""
    made: list[tuple[str, dict[str, Any]]] = []
    original = BaseClient._make_api_call

    def recording(client_: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        made.append((operation, json.loads(json.dumps(params))))
        return original(client_, operation, params)

    with mock.patch.object(BaseClient, "_make_api_call", recording):
        call()
    return made


def replay_requests(
    client_: Any, requests: list[tuple[str, dict[str, Any]]], replace: dict[str, str], *, may_fail: bool = False
) -> None:
    """Send ``requests`` with raw boto3, each string of ``replace`` replaced (the template's keys by fresh ones).
    ``may_fail``: a failed condition is the expected answer (a repeat request's claim), not an error."""
    methods = {api: method for method, api in client_.meta.method_to_api_mapping.items()}
    for operation, params in requests:
        text = json.dumps(params)
        for old, new in replace.items():
            text = text.replace(old, new)
        try:
            getattr(client_, methods[operation])(**json.loads(text))
        except client_.exceptions.ConditionalCheckFailedException:
            if not may_fail:
                raise


def creation_and_replay(samples: int) -> list[Case]:
    """The process handler end to end (JWT, validation, the one conditional put; no card: the brief's
    creation) and a repeat of one request, each against raw boto3 sending the very requests the handler sent for a
    template request (recorded: same items, conditions and expressions), under fresh keys for the creation."""
    service = PaymentService()
    handler = make_handler(service)
    bearer = "Bearer " + jwt.encode({"merchant_id": "bench", "exp": int(time.time()) + 3600}, SECRET, "HS256")
    body = {"amount": 1250, "currency": "USD"}
    client_ = dynamodb()

    def create(i: int) -> None:
        response = handler(_event(f"create-{i}", body, bearer), None)
        assert response["statusCode"] == 201, response

    template = "bench-template-key"
    creation = recorded_requests(lambda: handler(_event(template, body, bearer), None))
    template_id = payment_id_for("bench", template)

    def raw_create(i: int) -> None:
        replay_requests(client_, creation, {template_id: f"raw-{i}", template: f"raw-key-{i}"})

    handler(_event("replayed", body, bearer), None)
    repeat = recorded_requests(lambda: handler(_event("replayed", body, bearer), None))

    def replay(i: int) -> None:
        response = handler(_event("replayed", body, bearer), None)
        assert response["headers"].get("Idempotent-Replayed") == "true", response

    def raw_replay(i: int) -> None:
        replay_requests(client_, repeat, {}, may_fail=True)

    counts: dict[str, str] = {}
    created = measure_in_turn({"package": create, "raw": raw_create}, samples, counts=counts)
    replay_counts: dict[str, str] = {}
    replayed = measure_in_turn({"package": replay, "raw": raw_replay}, samples, counts=replay_counts)
    return [
        case("payment creation (with idempotency)", created, counts,
             "the handler's request, recorded: the one conditional PutItem of the payment (its id derived from "
             "merchant and key; the change it records is projected to the audit trail from the stream)",
             "through the process handler (JWT, validation, the payment as its own idempotency record), no card: "
             "the brief's creation"),
        case("idempotency check (repeat request)", replayed, replay_counts,
             "the handler's requests, recorded: the failed conditional PutItem of the payment (ALL_OLD) "
             "+ a consistent GetItem of the payment where the engine returns no old item (dynalite)"),
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

    counts: dict[str, str] = {}
    timed = measure_in_turn({"package": page, "raw": raw_page}, samples, counts=counts)
    return [
        case("one filtered page (50 captured) of a large merchant", timed, counts,
             f"Query Limit=51 on by-merchant-status ({payments:,} payments of the merchant)",
             "ours also builds the page's 50 Payment models (PynamoDB deserialisation: most of the difference, see "
             "PROFILE.md) and signs the next page's cursor"),
    ]  # fmt: skip


def payment_batch(samples: int, size: int = BATCH_SIZE) -> list[Case]:
    """``process_payment_batch`` of ``size`` fresh payments (default workers: one conditional put each, which also
    records the create for the stream's consumer, with validation, in-batch duplicate detection and per-item
    outcomes) against raw boto3 sending the very request of a one-payment batch (recorded: the conditional put of
    the payment) for each payment, from as many threads. Each sample writes ``size``
    payments under fresh keys; package and raw batches are timed in turn (both then see tables of about the same
    size); no warm-up batch (the template batch opens the clients)."""
    service, client = PaymentService(), dynamodb()

    def batch(i: int) -> None:
        requests = [BatchPaymentRequest("bench-batch", f"batch-{i}-{n}", 1250, "USD", description=f"Order #{n}")
                    for n in range(size)]  # fmt: skip
        result = process_payment_batch(requests, service=service)
        assert result.counts[BatchOutcome.CREATED] == size, result.counts

    # The raw baseline sends the very requests of a one-payment batch (recorded), under other keys.
    template = "bench-batch-template-key"
    recorded = recorded_requests(
        lambda: process_payment_batch(
            [BatchPaymentRequest("bench-batch", template, 1250, "USD", description="Order #0")], service=service
        )
    )
    template_id = payment_id_for("bench-batch", template)
    assert [operation for operation, _ in recorded] == ["PutItem"], recorded

    def raw_put(item_id: str, n: int) -> None:
        replay_requests(client, recorded, {template_id: item_id, template: item_id, "Order #0": f"Order #{n}"})

    def raw_batch(i: int) -> None:
        with ThreadPoolExecutor(DEFAULT_MAX_WORKERS) as pool:
            list(pool.map(raw_put, [f"raw-batch-{i}-{n}" for n in range(size)], range(size)))

    counts: dict[str, str] = {}
    timed = measure_in_turn({"package": batch, "raw": raw_batch}, samples, warmup=0, counts=counts)
    return [
        case(f"batch of {size:,} payments", timed, counts,
             f"{size:,} x the recorded request of one: the conditional PutItem of the payment (its first audit entry "
             f"is the stream consumer's), from {DEFAULT_MAX_WORKERS} threads"),
    ]  # fmt: skip


def has_stream(models: Any = None) -> bool:
    """Whether the payments table has a stream here (the moto server: yes; dynalite: no streams at all)."""
    table = (models or PaymentService().models).payment.Meta.table_name
    return "LatestStreamArn" in dynamodb().describe_table(TableName=table)["Table"]


def transition_cases(samples: int) -> tuple[list[Case], dict[str, Any] | None]:
    """``PaymentService.capture`` of a fresh authorized payment (a consistent GetItem to plan it, then the one
    conditional UpdateItem that carries the change) and ``transition(..., current=payment)`` (a caller that holds
    the item, as reconciliation does: the update alone), each against raw boto3 sending the very requests the
    package sent for a template payment (recorded), for payments of its own, timed in turn. Then the stream's
    consumer: ``drain()`` of every change the cases wrote (their Transactions and audit entries), timed, where the
    engine has streams."""
    merchant, client = "bench-capture", dynamodb()
    service = PaymentService()

    def authorized(label: str, indexes: range) -> dict[int, Any]:
        def one(i: int) -> tuple[int, Any]:
            payment = service.create_payment(merchant, f"{label}-{i}", 1250, "USD").payment
            return i, service.authorize(merchant, payment.id, actor="bench")

        with ThreadPoolExecutor(DEFAULT_MAX_WORKERS) as pool:
            return dict(pool.map(one, indexes))

    held = {label: authorized(label, range(-WARMUP, samples)) for label in ("read", "raw-read", "held", "raw-held")}
    templates = authorized("template", range(2))
    recorded = {
        "read": recorded_requests(lambda: service.capture(merchant, templates[0].id, actor="bench")),
        "held": recorded_requests(lambda: service.transition(
            merchant, templates[1].id, Operation.CAPTURE, actor="bench", current=templates[1])),
    }  # fmt: skip

    def raw(label: str, template: Any, requests: list) -> Callable[[int], None]:
        return lambda i: replay_requests(client, requests, {template.id: held[label][i].id})

    def capture(i: int) -> object:
        return service.capture(merchant, held["read"][i].id, actor="bench")

    def capture_held(i: int) -> object:
        payment = held["held"][i]
        return service.transition(merchant, payment.id, Operation.CAPTURE, actor="bench", current=payment)

    counts: dict[str, str] = {}
    timed = measure_in_turn(
        {"read": capture, "raw-read": raw("raw-read", templates[0], recorded["read"]),
         "held": capture_held, "raw-held": raw("raw-held", templates[1], recorded["held"])},
        samples, counts=counts,
    )  # fmt: skip
    cases = [
        case(CAPTURE, timed, counts, "the capture's requests, recorded: consistent GetItem (payment) + conditional "
             "UpdateItem (version, merchant, live; the change in the kept history; ALL_NEW)",
             "the Transaction and the audit entry are the stream consumer's (below), not the request's",
             package="read", raw="raw-read"),
        case(HELD_CAPTURE, timed, counts, "the transition's request, recorded: the conditional UpdateItem",
             "`transition(..., current=payment)`: the caller read the item already (reconciliation's BatchGetItem)",
             package="held", raw="raw-held"),
    ]  # fmt: skip
    return cases, projection_throughput() if has_stream(service.models) else None


def projection_throughput() -> dict[str, Any]:
    """``drain()`` of every change written so far: the consumer's records per second and calls per record."""
    with counted_calls() as calls:
        started = time.perf_counter()
        stats = drain()
        elapsed = time.perf_counter() - started
    records = stats.records
    assert records > 0 and stats.failed == 0
    return {
        "case": "stream consumer: drain() of every change written", "records": records,
        "seconds": round(elapsed, 2), "records_per_s": round(records / elapsed, 1),
        "ms_per_record": round(elapsed * 1000 / records, 2), "invocations": stats.invocations,
        "calls_counted": describe_calls(calls), "calls_per_record": round(sum(calls.values()) / records, 2),
    }  # fmt: skip


def recovery_sweep(samples: int, payments: int) -> list[Case]:
    """``recover`` (``payment-examples recover``) over ``payments`` authorized payments with nothing left to fix
    (the sweep's fixed cost: what it pays to find out), against raw boto3 making the calls it needs: a consistent,
    filtered Scan of the idempotency table (claims in progress past their lease, two attributes), a consistent,
    filtered Scan of the payments table (last changed before the cut-off); nothing else (Transactions and audit
    entries are the stream's projections: nothing to repair). Each sample sweeps the same payments."""
    from datetime import timedelta

    from payment_examples.checkout.processor import processor_for
    from payment_examples.checkout.recovery import recover
    from payment_examples.checkout.service import Checkout

    settings, client = get_settings(), dynamodb()
    service, middleware = PaymentService(), IdempotencyMiddleware()
    checkout = Checkout(service, processor_for(settings) or _NoProcessor())
    models = service.models

    def authorize(i: int) -> None:
        payment = service.create_payment("bench-recover", f"recover-{i}", 1250, "USD").payment
        service.authorize("bench-recover", payment.id, actor="bench")

    with ThreadPoolExecutor(DEFAULT_MAX_WORKERS) as pool:
        list(pool.map(authorize, range(payments)))

    def sweep(i: int) -> None:
        report = recover(checkout, middleware, older_than=timedelta(0))
        assert report.payments_checked == payments and report.fixed == 0, report.summary()

    payments_table = models.payment.Meta.table_name

    def raw_sweep(i: int) -> None:
        now_ms = int(time.time() * 1000)
        for _ in client.get_paginator("scan").paginate(
            TableName=middleware.table_name, ConsistentRead=True, ProjectionExpression="#key, claim_token",
            FilterExpression="#status = :in_progress AND #lease_expires_at < :now_ms",
            ExpressionAttributeNames={"#key": "key", "#status": "status", "#lease_expires_at": "lease_expires_at"},
            ExpressionAttributeValues={":in_progress": {"S": "IN_PROGRESS"}, ":now_ms": {"N": str(now_ms)}},
        ):  # fmt: skip
            pass
        cutoff = {"S": models.payment.updated_at.serialize(service.clock.now())}
        found = []
        for page in client.get_paginator("scan").paginate(
            TableName=payments_table, ConsistentRead=True,
            FilterExpression="#u <= :c AND (attribute_not_exists(#pc) OR #pc.#sa <= :c)",
            ExpressionAttributeNames={"#u": "updated_at", "#pc": "processor_call", "#sa": "started_at"},
            ExpressionAttributeValues={":c": cutoff},
        ):  # fmt: skip
            found += page["Items"]
        assert len(found) == payments

    counts: dict[str, str] = {}
    timed = measure_in_turn({"package": sweep, "raw": raw_sweep}, samples, warmup=1, counts=counts)
    return [
        case(f"recovery sweep of {payments:,} payments (nothing to fix)", timed, counts,
             "consistent filtered Scan (idempotency claims) + consistent filtered Scan (payments)",
             "ours also builds a Payment model per item and checks each for a processor call in flight"),
    ]  # fmt: skip


class _NoProcessor:
    """Stands in where no processor is configured: the sweep over payments without a call in flight never asks."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the recovery benchmark has no processor call to resolve ({name})")


def audit_verify(samples: int, engine: str, entries: int = VERIFY_ENTRIES) -> dict[str, Any]:
    """``AuditTracker.verify`` of one payment chain of ``entries`` entries (paged consistent Query of 100 entries
    a page, every SHA-256 link recomputed, the Query of its checkpoints: none here) against raw boto3 reading the
    same items with the same paged consistent Query. The chain is appended untimed through ``track``."""
    tracker, client = AuditTracker(), dynamodb()
    entity = audit_entity("bench-verify")
    head = None
    for n in range(1, entries + 1):
        head = tracker.track(
            entity, "capture" if n % 2 else "refund", "bench", before={"status": "authorized", "captured_amount": n},
            after={"status": "captured", "captured_amount": n + 1}, detail={"amount": n}, event_id=f"v{n}",
            known_head=head,
        )  # fmt: skip
    table = tracker.models.audit.Meta.table_name
    pages = []

    def verify(i: int) -> None:
        result = tracker.verify(entity)
        assert result.ok and result.entries == entries and result.head_seq == entries, result.summary()

    def raw_read(i: int) -> None:
        query = {"TableName": table, "KeyConditionExpression": "entity = :e", "ConsistentRead": True,
                 "ExpressionAttributeValues": {":e": {"S": entity}}, "Limit": VERIFY_PAGE}  # fmt: skip
        count, requests = 0, 0
        while True:
            response = client.query(**query)
            count, requests = count + len(response["Items"]), requests + 1
            if "LastEvaluatedKey" not in response:
                break
            query["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        assert count == entries
        pages.append(requests)

    timed = measure_in_turn({"package": verify, "raw": raw_read}, samples, warmup=1)
    package, raw = timed["package"], timed["raw"]
    return {
        "engine": engine, "case": f"verify one payment's audit chain of {entries:,} entries", "entries": entries,
        "samples": samples, "p50_ms": round(package.p50, 2), "p95_ms": round(package.p95, 2),
        "entries_per_s": round(entries / package.p50 * 1000), "raw_p50_ms": round(raw.p50, 2),
        "raw_p95_ms": round(raw.p95, 2), "raw_entries_per_s": round(entries / raw.p50 * 1000),
        "ratio_p50": round(package.p50 / raw.p50, 2),
        "raw_calls": f"{pages[-1]} consistent Query {'page' if pages[-1] == 1 else 'pages'} (Limit={VERIFY_PAGE}), "
        "the same items; no hashing, no Query of audit-checkpoints",
    }  # fmt: skip


def _email(label: str, i: int) -> str:
    return f"{label}.{i}@example.com".replace("-", "m")  # warm-up calls have negative i


def customer_create_and_get(samples: int) -> list[Case]:
    """``CustomerService.create_customer`` (normalise, KMS envelope encryption with the data-key cache, binding
    signature, blind index, ONE conditional put carrying the change record: the audit entry is the stream
    consumer's) against a raw conditional PutItem of the equivalent item with the email in clear (no key version or
    KMS key id; its email index the clear email, so the same index entries), so the difference is the
    encryption's; then ``get_customer`` (consistent GetItem, the access entry: head Query + conditional PutItem,
    signature check, decryption) of each created customer against a raw consistent GetItem of the same item with
    the same audit calls (head Query + conditional PutItem of the same "decrypt" entry on the access chain). Needs
    the engine's KMS key."""
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
    audit_table = service.models.audit.Meta.table_name

    raw_created: list[str] = []

    def raw_create(i: int) -> None:
        item_id, email = f"raw-{i}", _email("raw", i)
        raw_created.append(item_id)
        client.put_item(
            TableName=table,
            Item={**template, "id": {"S": item_id}, "created_key": {"S": f"{created_at}#{item_id}"},
                  "email": {"S": email}, "email_index": {"S": f"{merchant}#{email}"}},
            ConditionExpression="attribute_not_exists(id)",
        )  # fmt: skip

    counts: dict[str, str] = {}
    creates = measure_in_turn({"package": create, "raw": raw_create}, samples, counts=counts)
    create_case = case(CUSTOMER_CREATE, creates, counts,
                       "conditional PutItem, same item with the email in clear",
                       "ours also encrypts (KMS via the data-key cache), signs and indexes the email")  # fmt: skip

    # The read's audit entry, as ours writes it (action "decrypt"), a template for the raw appends.
    service.get_customer(merchant, template_id, actor="bench", purpose="support")
    decrypt_entry = client.get_item(
        TableName=audit_table, Key={"entity": {"S": access_entity(template_id)}, "seq": {"N": "1"}}
    )["Item"]

    def get(i: int) -> None:
        view = service.get_customer(merchant, created[i % len(created)], actor="bench", purpose="support")
        assert view.email is not None

    def raw_get(i: int) -> None:
        item_id = raw_created[i % len(raw_created)]
        client.get_item(TableName=table, Key={"id": {"S": item_id}}, ConsistentRead=True)
        entity = {"S": access_entity(item_id)}
        head = client.query(
            TableName=audit_table,
            KeyConditionExpression="entity = :e",
            ConsistentRead=True,
            Limit=1,
            ScanIndexForward=False,
            ExpressionAttributeValues={":e": entity},
        )["Items"]
        seq = int(head[0]["seq"]["N"]) + 1 if head else 1
        client.put_item(
            TableName=audit_table,
            ConditionExpression="attribute_not_exists(entity)",
            Item={**decrypt_entry, "entity": entity, "seq": {"N": str(seq)}},
        )
        # fmt: skip

    read_counts: dict[str, str] = {}
    read = measure_in_turn({"package": get, "raw": raw_get}, samples, counts=read_counts)
    return [
        create_case,
        case(CUSTOMER_GET, read, read_counts,
             "consistent GetItem of the same item + audit Query (head) + conditional PutItem (the decrypt entry)",
             "ours also checks the binding signature and decrypts (KMS Decrypt unless cached)"),
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
    """Rows/s of a whole reconciliation run (parse, BatchGetItem, one conditional update per applied row that
    carries the change, checkpoints, reports) of a generated ``rows``-row file, against raw boto3 making the minimum
    the same file needs: one consistent BatchGetItem per 100 rows and one conditional UpdateItem per valid row, from
    as many threads (what the package does beyond that is listed in ``not_in_raw``). Then, where the engine has
    streams, the consumer's projection of the run's changes (Transactions and audit entries), timed apart: it is
    not in the run's time, as it is not in a deployed run's. Each run has its own freshly created payments (same
    scenario shape, another seed)."""
    import tempfile

    from payment_examples.reconciliation.generator import (
        SettlementScenario,
        create_scenario_payments,
        write_settlement_file,
    )
    from payment_examples.reconciliation.reconciler import LocalReportSink, LocalSource, Reconciler, run_reconciliation
    from payment_examples.reconciliation.settlement_file import SettlementRow, read_settlement_file

    streams = has_stream()

    def scenario_file(seed: int) -> str:
        scenario = SettlementScenario(rows, seed, 0.1)
        create_scenario_payments(scenario)
        if streams:
            drain()  # the fixtures' own creates are projected before the timed run
        path = tempfile.mktemp(suffix=".csv")
        with open(path, "w", newline="") as handle:
            write_settlement_file(scenario, handle)
        return path

    def reconcile(path: str, service: PaymentService) -> tuple[float, Any]:
        start = time.perf_counter()
        result = run_reconciliation(LocalSource(path), LocalReportSink(tempfile.mkdtemp()),
                                    reconciler=Reconciler(service, max_workers=DEFAULT_MAX_WORKERS))  # fmt: skip
        elapsed = time.perf_counter() - start
        assert result.complete and result.rows == rows
        return elapsed, result

    package_path, raw_path = scenario_file(1), scenario_file(2)
    with counted_calls() as package_calls:
        package_s, result = reconcile(package_path, PaymentService())
    projection = projection_throughput() if streams else None

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
    with (
        counted_calls() as raw_calls,
        open(raw_path, "rb") as handle,
        ThreadPoolExecutor(DEFAULT_MAX_WORKERS) as pool,
    ):
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
        "projection": projection,  # None: no streams on this engine
        "calls_counted": describe_calls(package_calls), "raw_calls_counted": describe_calls(raw_calls),
        "calls": sum(package_calls.values()), "raw_calls_total": sum(raw_calls.values()),
        "per_call_ratio": round((package_s / sum(package_calls.values())) / (raw_s / sum(raw_calls.values())), 2),
        "raw_calls": "BatchGetItem per 100 rows + one conditional UpdateItem per valid row, "
        f"{DEFAULT_MAX_WORKERS} threads",
        "not_in_raw": "per foreign row: a row item; per batch: a checkpoint; missing_in_file, reports (the "
        "Transactions and audit entries are the stream consumer's: `projection`, timed apart)",
    }  # fmt: skip


COLD_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
mode, target, path = sys.argv[1:4]
with open(path) as handle:
    spec = json.load(handle)


class Context:
    aws_request_id = "cold-start"
    function_name = "bench"

    def get_remaining_time_in_millis(self):
        return 300_000


if mode == "ours":
    import importlib

    handler = importlib.import_module(target).handler
else:
    import boto3

    def handler(event, context):
        dynamodb = boto3.client("dynamodb")
        raw = event["raw"]
        if target == "process":
            for call in raw["calls"]:
                try:
                    getattr(dynamodb, call["op"])(**call["args"])
                except dynamodb.exceptions.ConditionalCheckFailedException:
                    raise
            return {"statusCode": 201}
        if target == "query":
            return dynamodb.query(**raw["query"])
        s3 = boto3.client("s3")
        body = s3.get_object(Bucket=raw["bucket"], Key=raw["key"])["Body"].read().decode()
        rows = [line.split(",") for line in body.splitlines()[1:]]
        for start in range(0, len(rows), 100):
            ids = sorted({row[0] for row in rows[start : start + 100]})
            dynamodb.batch_get_item(RequestItems={raw["table"]: {"Keys": [{"id": {"S": i}} for i in ids],
                                                                 "ConsistentRead": True}})
            for row in rows[start : start + 100]:
                try:
                    dynamodb.update_item(TableName=raw["table"], Key={"id": {"S": row[0]}},
                                         UpdateExpression="SET settlement_mark = :m",
                                         ConditionExpression="attribute_exists(id)",
                                         ExpressionAttributeValues={":m": {"S": row[4] + "#" + row[6]}})
                except dynamodb.exceptions.ConditionalCheckFailedException:
                    pass
        s3.put_object(Bucket=raw["bucket"], Key="bare-reports/" + raw["key"], Body=b"report")
        return {"files": 1}
t1 = time.perf_counter()
from collections import Counter
from botocore.client import BaseClient

calls, original = Counter(), BaseClient._make_api_call


def counting(client, operation, params):
    calls[operation] += 1
    return original(client, operation, params)


BaseClient._make_api_call = counting
result = handler(spec["event"], Context())
t2 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1000, "invoke_ms": (t2 - t1) * 1000, "calls": calls,
                  "status": result.get("statusCode") if isinstance(result, dict) else None}))
"""
COLD_MODULES = {"process": "payment_examples.handlers.process", "query": "payment_examples.handlers.query",
                "reconcile": "payment_examples.handlers.reconcile"}  # fmt: skip


def _child_env(settings: Settings) -> dict[str, str]:
    """A fresh process pointed at the running engine's endpoints (as boto3 reads them: DynamoDB's, and the other
    services'), tables and secrets; logs at ERROR, as in the in-process cases."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "PAYMENT_"))}
    return env | {
        "AWS_ENDPOINT_URL_DYNAMODB": dynamodb().meta.endpoint_url,
        "AWS_ENDPOINT_URL": client("s3").meta.endpoint_url,
        "AWS_ACCESS_KEY_ID": settings.aws_access_key_id or "bench",
        "AWS_SECRET_ACCESS_KEY": settings.aws_secret_access_key or "bench",
        "AWS_DEFAULT_REGION": settings.region, "AWS_REGION": settings.region,
        "PAYMENT_TABLE_PREFIX": settings.table_prefix, "PAYMENT_JWT_SECRET": SECRET, "PAYMENT_CURSOR_SECRET": SECRET,
        "POWERTOOLS_LOG_LEVEL": "ERROR", "PYTHONDONTWRITEBYTECODE": "1",
    }  # fmt: skip


def _cold(mode: str, target: str, spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """One fresh process: its wall time (interpreter start included), import and first invocation times, calls."""
    import subprocess
    import sys
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(spec, handle)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", COLD_CHILD, mode, target, handle.name], env=env,
                          capture_output=True, text=True, timeout=300, cwd=HERE.parent.parent)  # fmt: skip
    wall_ms = (time.perf_counter() - start) * 1000
    os.unlink(handle.name)
    if done.returncode != 0:
        raise RuntimeError(f"cold start of {mode} {target} failed: {done.stderr[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if out["status"] is not None and out["status"] >= 300:
        raise RuntimeError(f"cold start of {mode} {target} answered {out['status']}: {done.stdout[-2000:]}")
    return out | {"wall_ms": wall_ms}


def cold_starts(samples: int, engine: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each handler's cold start: a fresh Python process importing the handler module and making its first
    invocation against the running engine (process: a create without card; query: one filtered page; reconcile: a
    20-row settlement file in S3), next to a fresh process importing boto3 and making the same DynamoDB (and S3)
    calls. The two are run in turn, ``samples`` times each. Returns (rows, skipped)."""
    from payment_examples.reconciliation.generator import (
        SettlementScenario,
        create_scenario_payments,
        write_settlement_file,
    )
    from payment_examples.reconciliation.reconciler import Reconciler  # noqa: F401  (the tables exist: local_aws made them)

    settings = get_settings()
    env = _child_env(settings)
    service = PaymentService()
    bearer = "Bearer " + jwt.encode({"merchant_id": "cold", "exp": int(time.time()) + 3600}, SECRET, "HS256")
    payments_table = service.models.payment.Meta.table_name

    # process: the calls of one create, as ours made them in this process (templates for the bare handler)
    body = {"amount": 1250, "currency": "USD"}
    handler = make_handler(service)
    made: list[tuple[str, dict]] = []
    original = BaseClient._make_api_call

    def recording(client_: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        made.append((operation, params))
        return original(client_, operation, params)

    with mock.patch.object(BaseClient, "_make_api_call", recording):
        assert handler(_event("cold-template", body, bearer), None)["statusCode"] == 201
    names = {"PutItem": "put_item", "UpdateItem": "update_item", "Query": "query", "GetItem": "get_item"}

    def process_spec(i: int, mode: str) -> dict[str, Any]:
        if mode == "ours":
            return {"event": _event(f"cold-{i}", body, bearer)}
        calls = []
        replace = {payment_id_for("cold", "cold-template"): f"bare-{i}", "cold-template": f"bare-key-{i}"}
        for operation, params in made:
            text = json.dumps(params)
            for old, new in replace.items():
                text = text.replace(old, new)
            calls.append({"op": names[operation], "args": json.loads(text)})
        return {"event": {"raw": {"calls": calls}}}

    seed_payments("cold", 500, ids=SeededIds(11))
    query_event = {
        "version": "2.0",
        "routeKey": "GET /payments",
        "rawPath": "/payments",
        "rawQueryString": "status=captured&limit=50",
        "queryStringParameters": {"status": "captured", "limit": "50"},
        "headers": {"authorization": bearer},
        "requestContext": {"http": {"method": "GET", "path": "/payments"}, "stage": "$default"},
        "isBase64Encoded": False,
    }
    raw_query = {"TableName": payments_table, "IndexName": "by-merchant-status", "Limit": 51,
                 "KeyConditionExpression": "merchant_status = :h", "ScanIndexForward": False,
                 "ExpressionAttributeValues": {":h": {"S": "cold#captured"}}}  # fmt: skip

    def query_spec(i: int, mode: str) -> dict[str, Any]:
        return {"event": query_event if mode == "ours" else {"raw": {"query": raw_query}}}

    bucket, skipped = "bench-cold-settlements", []
    try:
        client("s3").create_bucket(Bucket=bucket)
        has_s3 = True
    except Exception as error:  # an engine without S3 (dynalite before its moto companion)
        has_s3 = False
        skipped.append({"engine": engine, "case": "cold start: reconcile handler",
                        "reason": f"no S3 on this engine ({type(error).__name__})"})  # fmt: skip

    def reconcile_spec(i: int, mode: str) -> dict[str, Any]:
        import io

        scenario = SettlementScenario(20, 1000 + i * 2 + (mode == "bare"), 0.1)
        create_scenario_payments(scenario)
        text = io.StringIO(newline="")
        write_settlement_file(scenario, text)
        key = f"cold/{mode}-{i}.csv"
        etag = client("s3").put_object(Bucket=bucket, Key=key, Body=text.getvalue().encode())["ETag"].strip('"')
        if mode == "bare":
            return {"event": {"raw": {"bucket": bucket, "key": key, "table": payments_table}}}
        obj = {"key": key, "size": len(text.getvalue()), "eTag": etag}
        record = {"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                  "s3": {"bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"}, "object": obj}}  # fmt: skip
        return {"event": {"Records": [record]}}

    specs = {"process": process_spec, "query": query_spec} | ({"reconcile": reconcile_spec} if has_s3 else {})
    rows = []
    for target, spec in specs.items():
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "bare": []}
        for i in range(samples):
            for mode in ("ours", "bare") if i % 2 == 0 else ("bare", "ours"):
                runs[mode].append(_cold(mode, COLD_MODULES[target] if mode == "ours" else target, spec(i, mode), env))
        row: dict[str, Any] = {"engine": engine, "handler": target, "samples": samples}
        for mode, results in runs.items():
            for measure_ in ("import_ms", "invoke_ms", "wall_ms"):
                values = [r[measure_] for r in results]
                row[f"{mode}_{measure_[:-3]}_p50_ms"] = round(percentile(values, 50), 1)
                row[f"{mode}_{measure_[:-3]}_p95_ms"] = round(percentile(values, 95), 1)
            total = [r["import_ms"] + r["invoke_ms"] for r in results]
            row[f"{mode}_total_p50_ms"] = round(percentile(total, 50), 1)
            row[f"{mode}_total_p95_ms"] = round(percentile(total, 95), 1)
            row[f"{mode}_calls"] = describe_calls(results[0]["calls"])
        row["ratio_p50"] = round(row["ours_total_p50_ms"] / row["bare_total_p50_ms"], 2)
        row["ratio_p95"] = round(row["ours_total_p95_ms"] / row["bare_total_p95_ms"], 2)
        rows.append(row)
    return rows, skipped


def lambda_artifact() -> dict[str, Any]:
    """``make lambda`` (the arm64 artifact of template.yaml), then its unzipped bytes, its zipped size (zipped in a
    temporary directory, deflate level 9 as ``sam build`` would not do better) and its largest top-level entries."""
    import shutil
    import subprocess
    import tempfile
    import zipfile

    root = HERE.parent.parent
    start = time.perf_counter()
    done = subprocess.run(["make", "lambda"], cwd=root, capture_output=True, text=True, timeout=900)
    build_s = time.perf_counter() - start
    if done.returncode != 0:
        return {"built": False, "why": f"`make lambda` failed (exit {done.returncode}): {done.stderr[-1500:]}"}
    folder = root / "build" / "lambda"
    sizes: dict[str, int] = {}
    total = 0
    for path in folder.rglob("*"):
        if path.is_file():
            size = path.stat().st_size
            total += size
            top = path.relative_to(folder).parts[0]
            sizes[top] = sizes.get(top, 0) + size
    with tempfile.TemporaryDirectory() as temp:
        archive = Path(temp) / "lambda.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zipped:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    zipped.write(path, path.relative_to(folder))
        zipped_bytes = archive.stat().st_size
    largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:10]
    shutil.rmtree(root / "build" / "wheels", ignore_errors=True)
    return {
        "built": True, "platform": "manylinux2014_aarch64, CPython 3.11", "build_s": round(build_s, 1),
        "unzipped_bytes": total, "zipped_bytes": zipped_bytes,
        "largest": [{"name": name, "bytes": size} for name, size in largest],
        "limit_note": "Lambda's limits: 50 MB zipped for a direct upload, 250 MB unzipped (code and layers)",
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
    verify_samples: int = VERIFY_SAMPLES,
    verify_entries: int = VERIFY_ENTRIES,
    moto_batch_samples: int = MOTO_BATCH_SAMPLES,
    *,
    moto_page_samples: int = MOTO_PAGE_SAMPLES,
    moto_recon_rows: int = MOTO_RECON_ROWS,
    recovery_payments: int = RECOVERY_PAYMENTS,
    moto_recovery_payments: int = MOTO_RECOVERY_PAYMENTS,
    recovery_samples: int = RECOVERY_SAMPLES,
    cold_samples: int = COLD_SAMPLES,
    artifact: bool = True,
) -> dict[str, Any]:
    batch_samples = min(samples, MAX_BATCH_SAMPLES) if batch_samples is None else batch_samples
    customer_samples = samples if customer_samples is None else customer_samples
    throughput, encryption, audit, verify, skipped, cold = [], [], [], [], [], []
    load_before = os.getloadavg()
    started = time.perf_counter()
    level = logger.log_level
    logger.setLevel("ERROR")  # a log line per request would be measured too
    try:
        rows = []
        for engine in engines:
            moto = engine == "moto"
            settings = Settings(engine=engine, jwt_secret=SECRET, cursor_secret=SECRET)
            # A fresh engine per group: no case pays for what an earlier one wrote (on moto every audited write's
            # head Query sorts the whole audit table, so its cost grows with every entry the run has written).
            with local_aws(settings):
                cases = creation_and_replay(samples)
            with local_aws(settings):
                cases += filtered_page(min(samples, moto_page_samples) if moto else samples, payments)
            with local_aws(settings):
                capture_cases, projection = transition_cases(samples)
            if projection is None:
                skipped += [{"engine": engine, "case": "stream consumer", "reason": NO_STREAM}]
            else:
                audit.append({"engine": engine} | projection)
            cases += capture_cases
            with local_aws(settings):
                cases += recovery_sweep(
                    recovery_samples, min(recovery_payments, moto_recovery_payments) if moto else recovery_payments
                )
            with local_aws(settings):
                verify.append(audit_verify(verify_samples, engine, verify_entries))
            with local_aws(settings):
                # field encryption needs a KMS key: the embedded moto engine makes one (and dynalite's moto
                # companion, where it has one); elsewhere the customer cases are skipped, and say why
                if get_settings().kms_key_id:
                    customer_cases = customer_create_and_get(customer_samples)
                    encryption.append(encryption_overhead(customer_cases, engine, kms_creates, uncached_kms_creates))
                    cases += customer_cases
                else:
                    skipped += [{"engine": engine, "case": name, "reason": NO_KMS}
                                for name in (CUSTOMER_CREATE, CUSTOMER_GET)]  # fmt: skip
            with local_aws(settings):
                cases += payment_batch(min(batch_samples, moto_batch_samples) if moto else batch_samples, batch_size)
            rows += [c.row(engine) for c in cases]
            with local_aws(settings):
                throughput.append(reconciliation_throughput(min(recon_rows, moto_recon_rows) if moto else recon_rows,
                                                            engine))  # fmt: skip
            if cold_samples:
                with local_aws(settings):
                    cold_rows, cold_skipped = cold_starts(cold_samples, engine)
                cold += cold_rows
                skipped += cold_skipped
    finally:
        logger.setLevel(level)
    lambda_size = lambda_artifact() if artifact else {"built": False, "why": "not requested (--no-artifact)"}
    env = environment() | {"load_average_before": [round(x, 2) for x in load_before],
                           "load_average_after": [round(x, 2) for x in os.getloadavg()],
                           "duration_s": round(time.perf_counter() - started, 1)}  # fmt: skip
    return {"environment": env, "results": rows, "throughput": throughput, "encryption": encryption,
            "audit": audit, "verify": verify, "cold_starts": cold, "artifact": lambda_size,
            "skipped": skipped}  # fmt: skip


def _projection_cell(projection: dict[str, Any] | None) -> str:
    if projection is None:
        return "no streams"
    return f"{projection['records_per_s']} ({projection['records']:,} records, {projection['seconds']} s)"


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    load = ""
    if "load_average_before" in env:
        load = (
            f" Load average (1, 5, 15 min) {', '.join(map(str, env['load_average_before']))} before the run and "
            f"{', '.join(map(str, env['load_average_after']))} after; the run took {env['duration_s']:.0f} s."
        )
    lines = [
        "# Benchmark results",
        "",
        f"Measured {env['date']} on {env['machine']}, Python {env['python']}; "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        + f".{load} Written by `make bench` (tests/benchmarks/run.py); a shared, noisy 2-core machine: compare "
        "ratios more than absolute numbers. Targets are judged on dynalite (moto 5 sorts the whole partition or "
        "table for every Query). Each group of cases runs on a fresh engine. Ours and its raw boto3 baseline are "
        "timed in turn, sample by sample, in the same process against the same engine; the baseline makes the same "
        "AWS calls (both are counted, by operation, in a warm-up call: the calls table below). Verdict: the p95 "
        f"target where the brief sets one, and whether our overhead (the worse of the p50 and p95 ratios) is within "
        f"{OVERHEAD_LIMIT:g}x; where it is not, tests/benchmarks/PROFILE.md says where the time goes.",
        "",
        "| engine | case | n | p50 ms | p95 ms | p99 ms | raw p50 | raw p95 | raw p99 | ratio p50 | ratio p95 "
        "| target p95 | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        target = "" if r["target_p95_ms"] is None else f"< {r['target_p95_ms']:g} ms"
        lines.append(
            f"| {r['engine']} | {r['case']} | {r['samples']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} "
            f"| {r['raw_p50_ms']} | {r['raw_p95_ms']} | {r['raw_p99_ms']} | {r['ratio_p50']}x | {r['ratio_p95']}x "
            f"| {target} | {r['verdict']} |"
        )
    lines += [
        "",
        "The calls of each case: what the raw baseline does, and the AWS calls counted in one warm-up call of ours "
        "and of the baseline (botocore's `_make_api_call`, PynamoDB's and boto3's alike).",
        "",
        "| engine | case | raw baseline | calls counted, ours | calls counted, raw | note |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['engine']} | {r['case']} | {r['raw_calls']} | {r['calls_counted']} | {r['raw_calls_counted']} "
        f"| {r['note']} |"
        for r in report["results"]
    ]
    throughput = report.get("throughput", [])
    if throughput:
        lines += [
            "",
            "| engine | case | rows | rows/s | raw rows/s | time ratio | AWS calls, ours / raw | time per call ratio "
            "| verdict | projection after the run: records/s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {t['engine']} | {t['case']} | {t['rows']} | {t['rows_per_s']} | {t['raw_rows_per_s']} | {t['ratio']}x "
            f"| {t['calls']:,} / {t['raw_calls_total']:,} | {t['per_call_ratio']}x "
            f"| {'within' if t['per_call_ratio'] <= OVERHEAD_LIMIT else 'OVER'} {OVERHEAD_LIMIT:g}x per call "
            f"| {_projection_cell(t['projection'])} |"
            for t in throughput
        ]
        lines += ["", "| engine | raw calls | counted, ours | counted, raw | the package also writes |",
                  "|---|---|---|---|---|"]  # fmt: skip
        lines += [
            f"| {t['engine']} | {t['raw_calls']} | {t['calls_counted']} | {t['raw_calls_counted']} "
            f"| {t['not_in_raw']} |"
            for t in throughput
        ]
        lines += [
            "",
            "Reconciliation: the raw baseline is the minimum the file needs (read each payment, one conditional "
            "update per valid row); everything else the package writes is in the last column, and all calls of both "
            "runs are counted: the time ratio mixes the extra calls with our overhead, the time per call ratio "
            "(each run's time over its call count) separates them. An applied row is one conditional update that "
            "carries the change; its Transaction and audit entry are projected from the stream afterwards by the "
            "consumer (`drain()`, timed apart: the last column; dynalite has no streams).",
        ]
    audit = report.get("audit", [])
    if audit:
        lines += [
            "",
            "| engine | stream consumer | records | records/s | ms per record | invocations | calls per record "
            "| calls counted |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {a['engine']} | {a['case']} | {a['records']:,} | {a['records_per_s']} | {a['ms_per_record']} "
            f"| {a['invocations']} | {a['calls_per_record']} | {a['calls_counted']} |"
            for a in audit
        ]
        lines += [
            "",
            "The stream consumer after the capture cases: `drain()` reads the payments table's stream (DescribeStream, "
            "GetShardIterator, GetRecords) and runs the Lambda handler (`handlers/stream.py`) on batches of up to 100 "
            "records: per change a Transaction and an audit entry (conditional PutItems), the chain's head read once "
            "per payment and remembered. This is the work the audit trail costs; the request no longer pays it.",
        ]
    verify = report.get("verify", [])
    if verify:
        lines += [
            "",
            "| engine | case | n | p50 ms | p95 ms | entries/s at p50 | raw p50 ms | raw p95 ms | raw entries/s "
            "| p50 ratio | raw calls |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {v['engine']} | {v['case']} | {v['samples']} | {v['p50_ms']} | {v['p95_ms']} | {v['entries_per_s']:,} "
            f"| {v['raw_p50_ms']} | {v['raw_p95_ms']} | {v['raw_entries_per_s']:,} | {v['ratio_p50']}x "
            f"| {v['raw_calls']} |"
            for v in verify
        ]
        lines += [
            "",
            "Verification: `AuditTracker.verify` reads the chain (strongly consistent, 100 entries a page), "
            "recomputes every SHA-256 link and looks for edits, gaps, displacements and insertions, then reads the "
            "entity's checkpoints (none here, so nothing is signed or checked); the raw baseline only reads the "
            "same items.",
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
            "Customer cases (wherever the engine has a KMS key): the overhead is the encrypted call's p50 minus its "
            "raw baseline's, which makes the same DynamoDB calls with the email in clear (the create: the same item's "
            "conditional put and its first audit entry; the read: the consistent get and the decrypt entry's head "
            "Query and put), so the overhead is the encryption's: KMS through the data-key cache, the binding "
            "signature, the blind index, the decryption. KMS calls are counted on fresh encryptors for one merchant "
            "(the data-key cache is per merchant and purpose).",
        ]
    cold = report.get("cold_starts", [])
    if cold:
        lines += [
            "",
            "| engine | handler | n | ours: import p50 / p95 ms | ours: first invocation p50 / p95 ms "
            "| ours: total p50 / p95 ms | bare boto3: import p50 / p95 ms | bare: first invocation p50 / p95 ms "
            "| bare: total p50 / p95 ms | ratio p50 / p95 | process wall p50, ours / bare ms | calls, ours "
            "| calls, bare |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {c['engine']} | {c['handler']} | {c['samples']} "
            f"| {c['ours_import_p50_ms']} / {c['ours_import_p95_ms']} "
            f"| {c['ours_invoke_p50_ms']} / {c['ours_invoke_p95_ms']} | {c['ours_total_p50_ms']} / "
            f"{c['ours_total_p95_ms']} | {c['bare_import_p50_ms']} / {c['bare_import_p95_ms']} "
            f"| {c['bare_invoke_p50_ms']} / {c['bare_invoke_p95_ms']} | {c['bare_total_p50_ms']} / "
            f"{c['bare_total_p95_ms']} | {c['ratio_p50']}x / {c['ratio_p95']}x | {c['ours_wall_p50_ms']} / "
            f"{c['bare_wall_p50_ms']} | {c['ours_calls']} | {c['bare_calls']} |"
            for c in cold
        ]
        lines += [
            "",
            "Cold starts: each sample is a fresh Python process (`python -c`, no bytecode written) that imports the "
            "handler module and makes its first invocation against the running engine; the bare handler imports "
            "boto3 and makes the same DynamoDB (and S3) calls with a fresh client. Total = import + first "
            "invocation, timed inside the process; the process wall time adds the interpreter's start. The process "
            "handler creates a payment without card; the query handler returns one page of 50 captured payments of "
            "a 500-payment merchant; the reconcile handler reconciles a fresh 20-row settlement file from S3 (the "
            "bare one reads the file, one BatchGetItem, an UpdateItem per row, writes a report: ours also keeps the "
            "run's lease and checkpoint, audit entries, Transactions and its report files).",
        ]
    artifact = report.get("artifact")
    if artifact:
        lines += ["", "## The Lambda artifact", ""]
        if artifact.get("built"):
            mb = 1024 * 1024
            largest = ", ".join(f"{e['name']} {e['bytes'] / mb:.1f} MB" for e in artifact["largest"])
            lines += [
                f"`make lambda` ({artifact['platform']}, {artifact['build_s']:g} s): build/lambda holds "
                f"{artifact['unzipped_bytes']:,} bytes ({artifact['unzipped_bytes'] / mb:.1f} MB) unzipped; zipped "
                f"(deflate 9, in a temporary directory) {artifact['zipped_bytes']:,} bytes "
                f"({artifact['zipped_bytes'] / mb:.1f} MB). {artifact['limit_note']}. Largest entries: {largest}.",
            ]
        else:
            lines.append(f"Not built: {artifact['why']}")
    lines += _overheads(report)
    skipped: dict[tuple[str, str], list[str]] = {}
    for s in report.get("skipped", []):
        skipped.setdefault((s["engine"], s["reason"]), []).append(s["case"])
    lines += [f"\nSkipped on {engine}: {', '.join(names)} ({reason})." for (engine, reason), names in skipped.items()]
    return "\n".join(lines) + "\n"


FIXED = (
    "Found by profiling (tests/benchmarks/profile_cases.py, PROFILE.md) and fixed: (1) the reconcile handler's "
    "first invocation built a botocore client per model class and thread (PynamoDB gives each class its own "
    "connection and each thread its own session: 8 threads over 4 tables at once), 4-5 s of a 5.7 s cold start; "
    "model classes bound to one settings now share one client, created once (models.py); (2) `recover` built whole "
    "Transaction and audit entry models of every payment only to see whether they exist; it now reads back their "
    "keys only (recovery.py); (3) every transition's condition was PynamoDB's nested pairs of parentheses, "
    "`((((a AND (b OR c)) AND d) AND e) AND f)`, which dynalite's expression parser takes exponential time over: "
    "100-300 ms a transition there (about 13 ms flat), most of a reconciliation's time; conditions are now sent as "
    "one flat AND (payments.py `all_of`). And in this runner: the old baselines sent simpler requests than ours "
    "(a claim with a one-clause condition and a two-attribute item, puts without the version condition, an "
    "unaudited capture for an audited one, a read without its audit entry, an audit head Query ours does not "
    "make): the creation, replay, capture and batch baselines now send the very requests ours sent (recorded), "
    "and every case counts both sides' calls."
)
REMAINS = {
    "one filtered page": "PynamoDB builds a Payment model of each of the 50 items (deserialisation of about 25 "
    "attributes each, dates parsed): the price of returning models; the query itself is the raw one.",
    "recovery sweep": "a Payment model per scanned item (the sweep needs the payment: its processor call, version, "
    "transition) and the filter of every item; the calls are the raw ones.",
    "verify one payment": "the SHA-256 of every entry and the chain checks: the work verification is for.",
    "batch of": "validation, in-batch duplicate detection and a Payment model per request.",
    "customer": "the encryption itself (envelope encryption with the data-key cache, binding signature, blind index) "
    "and its decryption with the signature check.",
    "capture": "PynamoDB's model update (the conditional update's expression built from the model), the state "
    "machine, the Transaction model.",
    "payment creation": "the handler's JWT verification, validation, payload hashing and the Payment model.",
    "idempotency check": "the handler's JWT verification, event parsing and the stored response's decoding.",
    "cold start: process": "imports: PyJWT with cryptography, Powertools, PynamoDB (about 0.2 s more than boto3 "
    "alone), and two DynamoDB clients at the first call (the idempotency middleware's boto3 client in aws.py and "
    "the models' PynamoDB client); sharing one would need aws.py's client to take PynamoDB's settings.",
    "cold start: query": "the same imports as the process handler's, and the models' client.",
    "cold start: reconcile": "the same imports, an S3 and a DynamoDB client, and 5 times the calls (lease, "
    "checkpoint, audit entries, Transactions, report files) the bare handler skips.",
    "reconciliation": "its calls are not the raw baseline's kind: transitions that move index keys (status) with "
    "conditions, Transactions, audit entries, where the baseline only sets one attribute per row; plus per row a "
    "Payment model, the state machine, and the lease, checkpoint and report machinery.",
}


def _overheads(report: dict[str, Any]) -> list[str]:
    """The section on overheads above OVERHEAD_LIMIT: each such case (from the measurements), what remains in it."""
    over = [(r["engine"], r["case"], max(r["ratio_p50"], r["ratio_p95"])) for r in report["results"]
            if max(r["ratio_p50"], r["ratio_p95"]) > OVERHEAD_LIMIT]  # fmt: skip
    over += [(c["engine"], f"cold start: {c['handler']}", c["ratio_p50"]) for c in report.get("cold_starts", [])
             if c["ratio_p50"] > OVERHEAD_LIMIT]  # fmt: skip
    over += [(t["engine"], "reconciliation (time per call)", t["per_call_ratio"]) for t in report.get("throughput", [])
             if t.get("per_call_ratio", 0) > OVERHEAD_LIMIT]  # fmt: skip
    over += [(v["engine"], v["case"], v["ratio_p50"]) for v in report.get("verify", [])
             if v["ratio_p50"] > OVERHEAD_LIMIT]  # fmt: skip
    lines = ["", f"## Overheads above {OVERHEAD_LIMIT:g}x", "", FIXED, ""]
    if not over:
        return [*lines, f"No case's overhead over raw boto3 is above {OVERHEAD_LIMIT:g}x in this run."]
    lines += ["| case | engine | worst ratio | what remains (profiled: PROFILE.md) |", "|---|---|---|---|"]
    for engine, name, ratio in over:
        why = next((text for key, text in REMAINS.items() if name.startswith(key) or key in name), "not profiled")
        lines.append(f"| {name} | {engine} | {ratio:g}x | {why} |")
    return lines


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
    parser.add_argument(
        "--moto-batch-samples", type=int, default=MOTO_BATCH_SAMPLES,
        help="at most this many batches per side on moto (its Query sorts the whole, growing, audit table)",
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
    parser.add_argument("--verify-samples", type=int, default=VERIFY_SAMPLES,
                        help="audit chain verifications timed per engine")  # fmt: skip
    parser.add_argument("--verify-entries", type=int, default=VERIFY_ENTRIES,
                        help="entries of the verified audit chain")  # fmt: skip
    parser.add_argument(
        "--moto-page-samples",
        type=int,
        default=MOTO_PAGE_SAMPLES,
        help="at most this many filtered pages per side on moto (about 1 s each at 10,000)",
    )
    parser.add_argument(
        "--moto-recon-rows", type=int, default=MOTO_RECON_ROWS, help="at most this many settlement rows on moto"
    )
    parser.add_argument(
        "--recovery-payments", type=int, default=RECOVERY_PAYMENTS, help="payments the recovery sweep checks"
    )
    parser.add_argument(
        "--moto-recovery-payments",
        type=int,
        default=MOTO_RECOVERY_PAYMENTS,
        help="at most this many payments swept on moto",
    )
    parser.add_argument("--recovery-samples", type=int, default=RECOVERY_SAMPLES, help="recovery sweeps timed")
    parser.add_argument(
        "--cold-samples",
        type=int,
        default=COLD_SAMPLES,
        help="fresh processes per handler and side (0: no cold starts)",
    )
    parser.add_argument("--no-artifact", action="store_true", help="do not build and measure the Lambda artifact")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a quick look (a few minutes): fewer samples, smaller merchant, batch, file and sweep",
    )
    parser.add_argument("--output", type=Path, default=HERE)
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.payments, args.batch_samples = min(args.samples, 30), min(args.payments, 2_000), 2
        args.recon_rows, args.moto_recon_rows = min(args.recon_rows, 300), min(args.moto_recon_rows, 300)
        args.kms_creates, args.uncached_kms_creates = min(args.kms_creates, 100), min(args.uncached_kms_creates, 20)
        args.verify_samples, args.recovery_payments = min(args.verify_samples, 3), min(args.recovery_payments, 300)
        args.moto_page_samples, args.cold_samples = min(args.moto_page_samples, 10), min(args.cold_samples, 3)
    report = run(args.engines.split(","), args.samples, args.payments, args.batch_samples, args.batch_size,
                 args.recon_rows, args.customer_samples, args.kms_creates, args.uncached_kms_creates,
                 args.verify_samples, args.verify_entries, args.moto_batch_samples,
                 moto_page_samples=args.moto_page_samples, moto_recon_rows=args.moto_recon_rows,
                 recovery_payments=args.recovery_payments, moto_recovery_payments=args.moto_recovery_payments,
                 recovery_samples=args.recovery_samples,
                 cold_samples=args.cold_samples, artifact=not args.no_artifact)  # fmt: skip
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.output / "RESULTS.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
