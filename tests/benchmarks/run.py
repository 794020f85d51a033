"""Benchmarks: the brief's performance targets, measured on both local engines next to raw boto3.

    make bench                      # full run: writes tests/benchmarks/results.json and RESULTS.md
    python -m tests.benchmarks.run --samples 20 --payments 700 --batch-samples 2 --kms-creates 100 --output /tmp/bench
                                    # a quick look (customer cases: --customer-samples, --uncached-kms-creates;
                                    # audit chain verification: --verify-samples, --verify-entries)

Each case times the package's call and the same DynamoDB calls made with raw boto3, on the same engine, in the
same run, in turn (``measure_in_turn``), and reports p50/p95 and the ratio. Targets are judged on dynalite, whose
costs scale like DynamoDB's (moto 5 sorts the whole table for every Query, so there a Query costs more with every
item the table holds); timings are never asserted anywhere. Each group of cases runs on a fresh engine, so no case's
cost depends on what an earlier one wrote; on moto the batch (1,000 more audit entries per batch, each create's head
Query sorting them all) is timed at most ``--moto-batch-samples`` times. The customer cases (encrypted email against
the same item with the email in clear, and the KMS calls per 1,000 creates) need KMS, so they run only on an engine
with a KMS key (moto; dynalite has no KMS). The audit trail's cost: a capture with and without its audit entry
(``PaymentService(audited=False)``), a reconciliation with and without, and ``AuditTracker.verify`` of a
1,000-entry chain next to reading the same items.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from collections.abc import Callable
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
from payment_examples.customers import audit_entity as customer_entity
from payment_examples.encryption import encryptor_for
from payment_examples.handlers.process import make_handler
from payment_examples.local import DYNALITE_DIR, local_aws
from payment_examples.logs import logger
from payment_examples.measure import Latency, measure
from payment_examples.models import transaction_id_for
from payment_examples.pagination import get_merchant_payments
from payment_examples.payments import PaymentService, audit_entity
from payment_examples.seed import seed_payments
from payment_examples.utils.audit import AuditTracker
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
MOTO_BATCH_SAMPLES = 2  # per side: 10 would be 20,000 audited creates each sorting up to 20,000 entries on moto
KMS_CREATES = 1_000  # creates counted with the data-key cache (the cache serves up to 1,000 messages per key)
UNCACHED_KMS_CREATES = 100  # creates counted without it (one KMS call each), scaled per 1,000
CUSTOMER_CREATE = "customer creation (email encrypted)"
CUSTOMER_GET = "customer read (email decrypted, audited)"
NO_KMS = "no KMS key on this engine: dynalite has no KMS, so there is no field encryption to measure"
AUDITED_CAPTURE = "capture of an authorized payment (audited)"
UNAUDITED_CAPTURE = "capture of an authorized payment (audited=False)"
WARMUP = 3  # measure()'s untimed calls, given i = -1, -2, -3
VERIFY_ENTRIES = 1_000
VERIFY_SAMPLES = 10
VERIFY_PAGE = 100  # AuditTracker.history's page size


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


def _raw_audit_append(client: Any, table: str, item: dict[str, Any]) -> None:
    """What ``AuditTracker.track`` sends to append ``item`` (an entry as the package stores it): a strongly
    consistent Query of the chain's head (Limit=1, newest first), then the put conditional on the key not existing.
    No hashing: the item's hash fields are the template's."""
    client.query(TableName=table, KeyConditionExpression="entity = :e", ConsistentRead=True, Limit=1,
                 ScanIndexForward=False, ExpressionAttributeValues={":e": item["entity"]})  # fmt: skip
    client.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(entity)")


def _only_audit_entry(client: Any, table: str, entity: str) -> dict[str, Any]:
    """The one entry of ``entity``'s audit chain, as stored (a template for raw appends)."""
    response = client.query(TableName=table, KeyConditionExpression="entity = :e",
                            ExpressionAttributeValues={":e": {"S": entity}})  # fmt: skip
    [item] = response["Items"]
    return item


def measure_in_turn(calls: dict[str, Callable[[int], object]], n: int, *, warmup: int = WARMUP) -> dict[str, Latency]:
    """``measure`` for several calls at once, taken in turn (sample i of each before sample i+1 of any, the order
    rotating), so that a change in the shared machine's load falls on all of them alike: what their difference
    is computed from. Warm-up calls get negative i, as in ``measure``."""
    names = list(calls)
    for i in range(warmup):
        for name in names:
            calls[name](-1 - i)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(n):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            calls[name](i)
            samples[name].append((time.perf_counter() - start) * 1000)
    return {name: Latency(name, tuple(values)) for name, values in samples.items()}


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
    audit_table = service.models.audit.Meta.table_name
    audit_item = _only_audit_entry(client, audit_table, audit_entity(sample["id"]))

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
        _raw_audit_append(client, audit_table, {**audit_item, "entity": {"S": audit_entity(f"raw-{i}")}})
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

    created = measure_in_turn({"package": create, "raw": raw_create}, samples)
    replayed = measure_in_turn({"package": replay, "raw": raw_replay}, samples)
    return [
        Case("payment creation (with idempotency)", created["package"], created["raw"],
             "PutItem + PutItem + audit Query (head) + PutItem (entry) + UpdateItem, same items"),
        Case("idempotency check (repeat request)", replayed["package"], replayed["raw"],
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

    timed = measure_in_turn({"package": page, "raw": raw_page}, samples)
    return [
        Case("one filtered page (50 captured) of a large merchant", timed["package"], timed["raw"],
             f"Query Limit=51 ({payments} payments of the merchant)"),
    ]  # fmt: skip


def payment_batch(samples: int, size: int = BATCH_SIZE) -> list[Case]:
    """``process_payment_batch`` of ``size`` fresh payments (default workers: one conditional put each and its
    audit entry, with validation, in-batch duplicate detection and per-item outcomes) against raw boto3 making the
    same conditional puts of the same items and the same audit calls (head Query + conditional PutItem) from as many
    threads. Each sample writes ``size`` payments under fresh keys; package and raw batches are timed in turn (both
    then see tables of about the same size); no warm-up batch (the template batch and read open the clients)."""
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
    audit_table = service.models.audit.Meta.table_name
    audit_item = _only_audit_entry(client, audit_table, audit_entity(first.items[0].payment_id))

    def raw_put(item_id: str, n: int) -> None:
        client.put_item(
            TableName=table,
            Item={**template, "id": {"S": item_id}, "idempotency_key": {"S": item_id},
                  "created_key": {"S": f"{created_at}#{item_id}"}, "description": {"S": f"Order #{n}"}},
            ConditionExpression="attribute_not_exists(id)",
        )  # fmt: skip
        _raw_audit_append(client, audit_table, {**audit_item, "entity": {"S": audit_entity(item_id)}})

    def raw_batch(i: int) -> None:
        with ThreadPoolExecutor(DEFAULT_MAX_WORKERS) as pool:
            list(pool.map(raw_put, [f"raw-batch-{i}-{n}" for n in range(size)], range(size)))

    timed = measure_in_turn({"package": batch, "raw": raw_batch}, samples, warmup=0)
    return [
        Case(f"batch of {size:,} payments", timed["package"], timed["raw"],
             f"{size:,} x (conditional PutItem + audit Query + PutItem) from {DEFAULT_MAX_WORKERS} threads, "
             "same items"),
    ]  # fmt: skip


def audited_transition(samples: int) -> list[Case]:
    """``PaymentService.capture`` of a fresh authorized payment with the default service (the transition plus its
    audit entry: a strongly consistent Query of the chain's head and a conditional PutItem) and with
    ``audited=False``, against the raw calls of the unaudited path: a consistent GetItem of the payment, an
    eventually consistent GetItem of the previous Transaction (the crash check), the conditional UpdateItem
    (version, merchant, live; ALL_NEW) and the conditional PutItem of the Transaction, with the same values.
    Each side captures payments of its own, created and authorized untimed by the same service (so the audited
    ones have their two entries already); the three are timed in turn (``measure_in_turn``)."""
    merchant, client = "bench-capture", dynamodb()
    audited, unaudited = PaymentService(), PaymentService(audited=False)
    payments_table = audited.models.payment.Meta.table_name
    transactions_table = audited.models.transaction.Meta.table_name

    def authorized(service: PaymentService, label: str, indexes: range) -> dict[int, str]:
        def one(i: int) -> tuple[int, str]:
            payment = service.create_payment(merchant, f"{label}-{i}", 1250, "USD").payment
            return i, service.authorize(merchant, payment.id, actor="bench").id

        with ThreadPoolExecutor(DEFAULT_MAX_WORKERS) as pool:
            return dict(pool.map(one, indexes))

    ids = {label: authorized(service, label, range(-WARMUP, samples)) for label, service in
           (("audited", audited), ("unaudited", unaudited), ("raw", unaudited))}  # fmt: skip

    # The raw values are those of a capture made through the package (same attributes, so the same item sizes).
    template_id = unaudited.capture(merchant, authorized(unaudited, "template", range(1))[0], actor="bench").id
    captured = client.get_item(TableName=payments_table, Key={"id": {"S": template_id}})["Item"]
    transaction = client.get_item(TableName=transactions_table,
                                  Key={"id": {"S": transaction_id_for(template_id, 3)}})["Item"]  # fmt: skip
    names = {"#m": "merchant_id", "#tr": "transfer", "#st": "state", "#v": "version", "#s": "status",
             "#ms": "merchant_status", "#ca": "captured_amount", "#ra": "refunded_amount", "#u": "updated_at",
             "#lt": "last_transition"}  # fmt: skip
    values = {":m": {"S": merchant}, ":live": {"S": "active"}, ":one": {"N": "1"}}
    values |= {f":{short[1:]}": captured[names[short]] for short in ("#s", "#ms", "#ca", "#ra", "#u", "#lt")}

    def capture(service: PaymentService, label: str) -> Callable[[int], object]:
        return lambda i: service.capture(merchant, ids[label][i], actor="bench")

    def raw_capture(i: int) -> None:
        key = {"id": {"S": ids["raw"][i]}}
        payment = client.get_item(TableName=payments_table, Key=key, ConsistentRead=True)["Item"]
        version = int(payment["version"]["N"])
        client.get_item(TableName=transactions_table, Key={"id": {"S": transaction_id_for(ids["raw"][i], version)}})
        client.update_item(
            TableName=payments_table, Key=key, ReturnValues="ALL_NEW",
            ConditionExpression="#m = :m AND (attribute_not_exists(#tr) OR #tr.#st = :live) AND #v = :v",
            UpdateExpression="SET #s = :s, #ms = :ms, #ca = :ca, #ra = :ra, #u = :u, #lt = :lt ADD #v :one",
            ExpressionAttributeNames=names, ExpressionAttributeValues={**values, ":v": {"N": str(version)}},
        )  # fmt: skip
        client.put_item(
            TableName=transactions_table,
            Item={**transaction, "id": {"S": transaction_id_for(ids["raw"][i], version + 1)},
                  "payment_id": {"S": ids["raw"][i]}},
            ConditionExpression="attribute_not_exists(id) AND attribute_not_exists(#v)",
            ExpressionAttributeNames={"#v": "version"},
        )  # fmt: skip

    timed = measure_in_turn(
        {"audited": capture(audited, "audited"), "unaudited": capture(unaudited, "unaudited"), "raw": raw_capture},
        samples,
    )
    assert audited.audit.retries == 0  # one writer per chain: no lost race, so exactly one Query + one PutItem each
    raw_calls = "consistent GetItem + GetItem (previous Transaction) + conditional UpdateItem + conditional PutItem"
    return [
        Case(AUDITED_CAPTURE, timed["audited"], timed["raw"], raw_calls + " (the unaudited path: no audit calls)"),
        Case(UNAUDITED_CAPTURE, timed["unaudited"], timed["raw"], raw_calls + ", same values"),
    ]


def audit_overhead(cases: list[Case], engine: str) -> dict[str, Any]:
    """The audit entry's cost per transition: the audited capture's p50 minus the unaudited one's, and their ratio."""
    by_name = {case.name: case for case in cases}
    on, off = by_name[AUDITED_CAPTURE], by_name[UNAUDITED_CAPTURE]
    return {
        "engine": engine, "case": "audit entry of a payment transition (capture)",
        "audited_p50_ms": round(on.package.p50, 2), "unaudited_p50_ms": round(off.package.p50, 2),
        "overhead_p50_ms": round(on.package.p50 - off.package.p50, 2),
        "ratio_p50": round(on.package.p50 / off.package.p50, 2),
        "overhead_p95_ms": round(on.package.p95 - off.package.p95, 2),
        "audit_calls": "strongly consistent Query (Limit=1) of the chain head + conditional PutItem",
    }  # fmt: skip


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
    signature, blind index, one conditional put, the create's audit entry) against a raw conditional PutItem of the
    equivalent item with the email in clear (no key version or KMS key id; its email index the clear email, so the
    same index entries) and the same audit calls (head Query + conditional PutItem of the same entry), so the
    difference is the encryption's; then ``get_customer`` (consistent GetItem, the audit entry: head Query +
    conditional PutItem, signature check, decryption) of each created customer against a raw consistent GetItem of
    the same item (no audit entry). Needs the engine's KMS key."""
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
    audit_item = _only_audit_entry(client, audit_table, customer_entity(template_id))

    def raw_create(i: int) -> None:
        item_id, email = f"raw-{i}", _email("raw", i)
        client.put_item(
            TableName=table,
            Item={**template, "id": {"S": item_id}, "created_key": {"S": f"{created_at}#{item_id}"},
                  "email": {"S": email}, "email_index": {"S": f"{merchant}#{email}"}},
            ConditionExpression="attribute_not_exists(id)",
        )  # fmt: skip
        _raw_audit_append(client, audit_table, {**audit_item, "entity": {"S": customer_entity(item_id)}})

    creates = measure_in_turn({"package": create, "raw": raw_create}, samples)
    create_case = Case(CUSTOMER_CREATE, creates["package"], creates["raw"],
                       "conditional PutItem, same item with the email in clear, + audit Query + PutItem")  # fmt: skip

    def get(i: int) -> None:
        view = service.get_customer(merchant, created[i % len(created)], actor="bench", purpose="support")
        assert view.email is not None

    def raw_get(i: int) -> None:
        client.get_item(TableName=table, Key={"id": {"S": created[i % len(created)]}}, ConsistentRead=True)

    read = measure_in_turn({"package": get, "raw": raw_get}, samples)
    return [
        create_case,
        Case(CUSTOMER_GET, read["package"], read["raw"],
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
    """Rows/s of a whole reconciliation run (parse, BatchGetItem, conditional updates with their audit entries and
    Transactions, checkpoints, reports) of a generated ``rows``-row file, against raw boto3 making the minimum the
    same file needs: one consistent BatchGetItem per 100 rows and one conditional UpdateItem per valid row, from as
    many threads (what the package does beyond that is listed in ``not_in_raw``); and the same run with
    ``PaymentService(audited=False)``, for the audit trail's share. Each run has its own freshly created payments
    (same scenario shape, other seeds). The scenario's payments are fixtures written without an
    audit trail; the package's get their ``create`` entry first (untimed), as payments created through
    ``PaymentService`` have, so that each applied row appends one entry, not a repaired ``create`` entry too."""
    import tempfile

    from payment_examples.reconciliation import LocalReportSink, LocalSource, Reconciler, run_reconciliation
    from payment_examples.settlement_file import SettlementRow, read_settlement_file
    from payment_examples.settlement_generator import (
        SettlementScenario,
        create_scenario_payments,
        write_settlement_file,
    )

    tracker = AuditTracker()

    def start_chain(spec: Any) -> None:
        snapshot = {"status": spec.status.value, "amount": spec.amount, "currency": spec.currency,
                    "merchant_id": spec.merchant_id, "captured_amount": spec.captured,
                    "refunded_amount": spec.refunded}  # fmt: skip
        tracker.track(audit_entity(spec.id), "create", spec.merchant_id, after=snapshot, event_id="v1", known_head=None)

    def scenario_file(seed: int, *, chains: bool) -> str:
        scenario = SettlementScenario(rows, seed, 0.1)
        create_scenario_payments(scenario)
        if chains:
            with ThreadPoolExecutor(DEFAULT_MAX_WORKERS) as pool:
                list(pool.map(start_chain, {spec.id: spec for spec in scenario.payments()}.values()))
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

    package_path, raw_path = scenario_file(1, chains=True), scenario_file(2, chains=False)
    unaudited_path = scenario_file(3, chains=False)
    package_s, result = reconcile(package_path, PaymentService())
    unaudited_s, unaudited = reconcile(unaudited_path, PaymentService(audited=False))

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
        "unaudited_rows_per_s": round(rows / unaudited_s, 1), "audited_time_ratio": round(package_s / unaudited_s, 2),
        "unaudited_outcomes": unaudited.outcomes,
        "raw_calls": "BatchGetItem per 100 rows + one conditional UpdateItem per valid row, "
        f"{DEFAULT_MAX_WORKERS} threads",
        "not_in_raw": "per applied row: the audit entry (Query + PutItem), the Transaction (PutItem, and a GetItem of "
        "the previous one if any); per foreign row: a row item; per batch: a checkpoint; missing_in_file, reports",
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
) -> dict[str, Any]:
    batch_samples = min(samples, MAX_BATCH_SAMPLES) if batch_samples is None else batch_samples
    customer_samples = samples if customer_samples is None else customer_samples
    throughput, encryption, audit, verify, skipped = [], [], [], [], []
    level = logger.log_level
    logger.setLevel("ERROR")  # a log line per request would be measured too
    try:
        rows = []
        for engine in engines:
            settings = Settings(engine=engine, jwt_secret=SECRET, cursor_secret=SECRET)
            # A fresh engine per group: no case pays for what an earlier one wrote (on moto every audited write's
            # head Query sorts the whole audit table, so its cost grows with every entry the run has written).
            with local_aws(settings):
                cases = creation_and_replay(samples)
            with local_aws(settings):
                cases += filtered_page(samples, payments)
            with local_aws(settings):
                capture_cases = audited_transition(samples)
            audit.append(audit_overhead(capture_cases, engine))
            cases += capture_cases
            with local_aws(settings):
                verify.append(audit_verify(verify_samples, engine, verify_entries))
            with local_aws(settings):
                if get_settings().kms_key_id:  # the embedded moto engine makes a KMS key; dynalite has no KMS
                    customer_cases = customer_create_and_get(customer_samples)
                    encryption.append(encryption_overhead(customer_cases, engine, kms_creates, uncached_kms_creates))
                    cases += customer_cases
                else:
                    skipped += [{"engine": engine, "case": name, "reason": NO_KMS}
                                for name in (CUSTOMER_CREATE, CUSTOMER_GET)]  # fmt: skip
            with local_aws(settings):
                cases += payment_batch(min(batch_samples, moto_batch_samples) if engine == "moto" else batch_samples,
                                       batch_size)  # fmt: skip
            rows += [case.row(engine) for case in cases]
            with local_aws(settings):
                throughput.append(reconciliation_throughput(recon_rows, engine))
    finally:
        logger.setLevel(level)
    return {"environment": environment(), "results": rows, "throughput": throughput, "encryption": encryption,
            "audit": audit, "verify": verify, "skipped": skipped}  # fmt: skip


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        "# Benchmark results",
        "",
        f"Measured {env['date']} on {env['machine']}, Python {env['python']}; "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        + ". Written by `make bench` (tests/benchmarks/run.py); a shared, noisy 2-core machine: compare ratios "
        "more than absolute numbers. Targets are judged on dynalite. Each group of cases runs on a fresh engine. "
        "moto 5 sorts the whole table for every Query, so there each audited write's head Query costs more with "
        "every audit entry held: its batch case (1,000 more entries per batch) is timed fewer times, package and raw "
        "batches in turn.",
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
            "| engine | case | rows | rows/s | raw rows/s | time ratio | rows/s audited=False | audited time ratio "
            "| raw calls | the package also writes |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {t['engine']} | {t['case']} | {t['rows']} | {t['rows_per_s']} | {t['raw_rows_per_s']} | {t['ratio']}x "
            f"| {t['unaudited_rows_per_s']} | {t['audited_time_ratio']}x | {t['raw_calls']} | {t['not_in_raw']} |"
            for t in throughput
        ]
        lines += [
            "",
            "Reconciliation: the raw baseline is the minimum the file needs (read each payment, one conditional "
            "update per valid row); everything else the package writes is in the last column. The same file shape "
            "is also reconciled through `PaymentService(audited=False)`: the audited time ratio is the audited run's "
            "time over that one's. The scenario's fixture payments are given their `create` audit entry before the "
            "audited run (untimed), as payments created through `PaymentService` have.",
        ]
    audit = report.get("audit", [])
    if audit:
        lines += [
            "",
            "| engine | case | audited p50 ms | audited=False p50 ms | overhead p50 ms | p50 ratio | overhead p95 ms "
            "| audit calls per transition |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {a['engine']} | {a['case']} | {a['audited_p50_ms']} | {a['unaudited_p50_ms']} | {a['overhead_p50_ms']} "
            f"| {a['ratio_p50']}x | {a['overhead_p95_ms']} | {a['audit_calls']} |"
            for a in audit
        ]
        lines += [
            "",
            "Audit overhead: `PaymentService().capture` minus `PaymentService(audited=False).capture`, each on fresh "
            "authorized payments of its own, the two (and their raw baseline, in the table above) timed in turn. "
            "The ratio is audited over unaudited. On moto every Query reads the whole table (it filters all the "
            "table's items by partition key), so the head read costs more the more audit entries the run has "
            "written before it; dynalite, like DynamoDB, reads only the item asked for.",
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
            "Customer cases: the overhead is the encrypted call's p50 minus its raw baseline's (the same item with the "
            "email in clear; the create's baseline writes the same audit entry, Query + PutItem, so its overhead is "
            "the encryption's; the read's baseline writes no audit entry and decrypts nothing, so its overhead "
            "includes the audit entry the read appends before decrypting). KMS calls are counted on fresh encryptors "
            "for one merchant (the data-key cache is per merchant and purpose).",
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
    parser.add_argument("--output", type=Path, default=HERE)
    args = parser.parse_args(argv)
    report = run(args.engines.split(","), args.samples, args.payments, args.batch_samples, args.batch_size,
                 args.recon_rows, args.customer_samples, args.kms_creates, args.uncached_kms_creates,
                 args.verify_samples, args.verify_entries, args.moto_batch_samples)  # fmt: skip
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.output / "RESULTS.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
