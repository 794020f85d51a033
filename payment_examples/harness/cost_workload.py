"""Measure what a payment really consumes, and model it from item sizes, so the cost estimate can be checked.

``measure_workload(n)`` runs ``n`` payments through the package on the engine in force (normally the embedded
one) with a ``CapacityTracker`` attached: create (the process handler, with its idempotency record) ->
authorize -> capture -> list (the query handler, every page) -> refund a share -> reconcile a settlement file
(the S3 handler). The result holds the units per step as DynamoDB would charge them, the requests to the other
services, the stored bytes per table and index, and ``metrics(...)`` for ``CostEstimator``.

``model_units(sizes, ...)`` is the estimate the measurement checks: the same steps worked out by hand from
the sizes of this project's items (``WorkloadMeasurement.sizes``: one payment's items after each step, and the
entries its audit trail gained), call by call as the code makes them. The two agree when the model knows every
call; the notebook shows them side by side.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from payment_examples.core import Clock, Settings, SteppingClock, dynamodb, get_settings
from payment_examples.core import client as aws_client
from payment_examples.cost import CapacityTracker, WorkloadMetrics
from payment_examples.cost import capacity as rules
from payment_examples.cost.capacity import item_storage_bytes
from payment_examples.cost.item_size import item_size
from payment_examples.handlers.auth import MERCHANT_CLAIM
from payment_examples.handlers.process import make_handler as make_process_handler
from payment_examples.harness.consumer import Consumer
from payment_examples.payments import PaymentService
from payment_examples.reconciliation import HEADER
from payment_examples.tables import get_models

# "project": the stream's consumer writing every change's Transaction and audit entry (one drain at the end: in
# Lambda it runs as records arrive, with the same writes).
STEPS = ("create", "authorize", "capture", "list", "refund", "reconcile", "project")
API_STEPS = frozenset({"create", "authorize", "capture", "list", "refund"})  # reconcile is triggered by S3
BUCKET = "payment-examples-cost-workload"
_S3_PUTS = frozenset({"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "CopyObject"})


@dataclass(frozen=True)
class StepUnits:
    read: float = 0.0
    write: float = 0.0
    index_write: float = 0.0
    calls: int = 0
    invocations: int = 0  # Lambda invocations the step took

    def __add__(self, other: StepUnits) -> StepUnits:
        return StepUnits(
            self.read + other.read,
            self.write + other.write,
            self.index_write + other.index_write,
            self.calls + other.calls,
            self.invocations + other.invocations,
        )

    def scaled(self, factor: float) -> StepUnits:
        return StepUnits(
            self.read * factor, self.write * factor, self.index_write * factor, self.calls, self.invocations
        )


@dataclass
class WorkloadMeasurement:
    payments: int
    steps: dict[str, StepUnits]
    requests: Counter  # (service, operation) -> calls
    table_bytes: dict[str, int]  # table -> stored bytes (items + 100 B each)
    index_bytes: dict[str, int]  # table -> stored bytes of its index entries
    sizes: dict[str, int] = field(default_factory=dict)  # one payment's item sizes after each step (and audit entries)
    stream_reads: int = 0  # GetRecords calls of the consumer (each a DynamoDB Streams read request unit)

    def total(self) -> StepUnits:
        total = StepUnits()
        for units in self.steps.values():
            total += units
        return total

    def per_payment(self) -> StepUnits:
        return self.total().scaled(1 / self.payments)

    def metrics(
        self,
        payments_per_month: int,
        *,
        reads_per_payment: float = 0.0,
        settlement_files_per_month: int = 30,
        lambda_ms_per_invocation: float = 100.0,
        **assumptions: Any,
    ) -> WorkloadMetrics:
        """Per-payment metrics for ``CostEstimator``. ``reads_per_payment``: extra ``GET /payments/{id}`` calls
        per payment (each a Lambda invocation, an API request and a strongly consistent read of the payment).
        The run reconciled one settlement file; its S3 requests and invocations are per file, priced at
        ``settlement_files_per_month`` (its few DynamoDB units per file stay in the per-payment figures: an
        overestimate of under 2% at 40 payments a file, shrinking as files grow)."""
        per = self.per_payment()
        n = self.payments
        files_share = settlement_files_per_month / payments_per_month if payments_per_month else 0.0
        api = sum(u.invocations for s, u in self.steps.items() if s in API_STEPS) / n
        invocations = api + self.steps["reconcile"].invocations * files_share + self.steps["project"].invocations / n
        final_read = rules.read_units(self.sizes.get("payment.reconciled_capture", 0), "strong")
        s3 = {op: count for (service, op), count in self.requests.items() if service == "s3"}
        puts = sum(c for op, c in s3.items() if op in _S3_PUTS)
        gets = sum(c for op, c in s3.items() if op in ("GetObject", "HeadObject"))
        models = get_models()
        return WorkloadMetrics(
            payments_per_month=payments_per_month,
            read_units_per_payment=per.read + reads_per_payment * final_read,
            write_units_per_payment=per.write,
            index_write_units_per_payment=per.index_write,
            table_bytes_per_payment=sum(b for t, b in self.table_bytes.items() if not _per_file(t)) / n,
            index_bytes_per_payment=sum(b for t, b in self.index_bytes.items() if not _per_file(t)) / n,
            lambda_invocations_per_payment=invocations + reads_per_payment,
            stream_reads_per_payment=self.stream_reads / n,
            lambda_ms_per_invocation=lambda_ms_per_invocation,
            api_requests_per_payment=api + reads_per_payment,
            s3_put_requests_per_payment=puts * files_share,
            s3_get_requests_per_payment=gets * files_share,
            tables=len(models.all()),
            indexes=sum(len(model._indexes) for model in models.all()),
            **assumptions,
        )


def _per_file(table: str) -> bool:
    """The reconciliation table holds a few records per settlement file (checkpoint, merchants, exceptions): a
    cost per file, not per payment, and left out of the per-payment storage."""
    return table.endswith("reconciliation")


# -- the measured run ---------------------------------------------------------------------------------------------


def measure_workload(
    payments: int = 100,
    *,
    merchants: int = 4,
    refund_every: int = 4,
    page_size: int = 50,
    clock: Clock | None = None,
) -> WorkloadMeasurement:
    """Run ``payments`` payments through the flow on the engine in force (tables created, S3 available, a
    cursor secret set) and measure what DynamoDB would charge. Every ``refund_every``-th payment is refunded
    in part. The engine should start empty: the stored bytes are those of every table at the end."""
    if payments < 1 or merchants < 1 or refund_every < 1 or not 1 <= page_size <= 100:
        raise ValueError("payments, merchants and refund_every must be >= 1, page_size within 1..100")
    settings = get_settings()  # the engine in force (inside ``local_aws(...)``: its endpoint and credentials)
    if not settings.cursor_secret:
        raise ValueError("the list step needs a cursor secret (Settings(cursor_secret=...))")
    clock = clock or SteppingClock(datetime(2026, 3, 1, 9, tzinfo=UTC), timedelta(seconds=1))
    raw = _untracked_dynamodb(settings)
    tracker = CapacityTracker(raw)
    service = PaymentService(models=get_models(settings), clock=clock)
    tracker.attach(dynamodb(settings), aws_client("s3", settings)).attach_models(get_models(settings))
    models = get_models(settings)
    invocations: Counter[str] = Counter()
    sizes: dict[str, int] = {}
    with tracker:
        with tracker.step("create"):
            process = make_process_handler(service)
            created = [_create(process, i, merchants) for i in range(payments)]
            invocations["create"] = payments
        first = created[0][1]
        _snapshot(raw, models, sizes, "pending", first)
        for step in ("authorize", "capture"):
            service = PaymentService(models=models, clock=clock)
            with tracker.step(step):
                for merchant, payment_id, _ in created:
                    getattr(service, step)(merchant, payment_id, actor="api")
                invocations[step] = payments
            _snapshot(raw, models, sizes, step, first)
        with tracker.step("list"):
            invocations["list"] = sum(_list_all(f"merchant-{m:04d}", page_size) for m in range(merchants))
        refunded = created[::refund_every]
        service = PaymentService(models=models, clock=clock)
        with tracker.step("refund"):
            for merchant, payment_id, amount in refunded:
                service.refund(merchant, payment_id, actor="api", amount=amount // 2)
            invocations["refund"] = len(refunded)
        _snapshot(raw, models, sizes, "refund", first)
        with tracker.step("reconcile"):
            invocations["reconcile"] = _reconcile(settings, created, {p for _, p, _ in refunded}, clock)
        _snapshot(raw, models, sizes, "reconciled_refund", first)
        if payments > 1:
            _snapshot(raw, models, sizes, "reconciled_capture", created[1][1])
        with tracker.step("project"):  # the consumer, from one container: it knows the chain heads it wrote
            consumer = Consumer(settings)
            stats = consumer.drain()
            invocations["project"] = stats.invocations
            # the GetRecords of the streams the workload wrote to (payments): a deployment reads the customers'
            # and cards' streams too, but what they cost is their traffic's, not the payments'
            stream_reads = sum(poller.reads for poller in consumer.pollers if poller.stats.records)
        for _, payment_id, _ in created[:2]:
            _snapshot_projection(raw, models, sizes, payment_id)
            _audit_sizes(raw, models, sizes, payment_id)
    steps = {}
    for step in STEPS:
        units = tracker.totals().get(step, {"read": 0, "write": 0, "index_write": 0, "calls": 0})
        steps[step] = StepUnits(
            units["read"], units["write"], units["index_write"], int(units["calls"]), invocations[step]
        )
    requests = Counter()
    for (_, service_name, operation), count in tracker.requests.items():
        requests[(service_name, operation)] += count
    table_bytes, index_bytes = stored_bytes(raw, tracker, models)
    return WorkloadMeasurement(payments, steps, requests, table_bytes, index_bytes, sizes, stream_reads)


def _untracked_dynamodb(settings: Settings) -> Any:
    import boto3

    return boto3.session.Session(
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key,
        region_name=settings.region,
    ).client("dynamodb", endpoint_url=settings.endpoint_url)


def _create(handler: Any, i: int, merchants: int) -> tuple[str, str, int]:
    merchant = f"merchant-{i % merchants:04d}"
    amount = 1_000 + (i * 7919) % 90_000
    body = json.dumps({"amount": amount, "currency": "USD", "description": f"order {i:06d}"})
    response = handler(_api_event("POST", "/payments", merchant, body, {"Idempotency-Key": f"order-{i:06d}"}), None)
    if response["statusCode"] != 201:
        raise RuntimeError(f"payment {i} was not created: {response['body']}")
    return merchant, json.loads(response["body"])["id"], amount


def _list_all(merchant: str, page_size: int) -> int:
    from payment_examples.handlers.query import handler

    pages, cursor = 0, None
    while True:
        query = {"limit": str(page_size), **({"cursor": cursor} if cursor else {})}
        response = handler(_api_event("GET", "/payments", merchant, None, {}, query), None)
        if response["statusCode"] != 200:
            raise RuntimeError(f"listing {merchant} failed: {response['body']}")
        pages += 1
        cursor = json.loads(response["body"])["next_cursor"]
        if cursor is None:
            return pages


def _api_event(method, path, merchant, body, headers, query=None) -> dict:
    """An HTTP API (v2) event whose authorizer already verified the merchant."""
    return {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": "&".join(f"{k}={v}" for k, v in (query or {}).items()),
        "headers": {k.lower(): v for k, v in headers.items()} | {"content-type": "application/json"},
        "queryStringParameters": query,
        "requestContext": {
            "http": {"method": method, "path": path},
            "stage": "$default",
            "authorizer": {"jwt": {"claims": {MERCHANT_CLAIM: merchant}, "scopes": []}},
        },
        "body": body,
        "isBase64Encoded": False,
    }


class _LambdaContext:
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:reconcile"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 900_000


def _reconcile(settings: Settings, created, refunded: set[str], clock: Clock) -> int:
    """One settlement file naming every payment (its capture, or its refund so far), through the S3 handler."""
    from payment_examples.handlers.reconcile import make_handler
    from payment_examples.reconciliation.reconciler import Reconciler

    s3 = aws_client("s3", settings)
    s3.create_bucket(Bucket=BUCKET)
    settled_at = (clock.now() + timedelta(days=1)).isoformat()
    lines = [HEADER]
    for i, (merchant, payment_id, amount) in enumerate(created):
        status, total = ("refunded", amount // 2) if payment_id in refunded else ("settled", amount)
        lines.append(f"{payment_id},{merchant},{total},USD,{status},{settled_at},ref-{i:06d}")
    key = "settlements/cost-workload.csv"
    s3.put_object(Bucket=BUCKET, Key=key, Body=io.BytesIO("\n".join(lines).encode() + b"\n"))
    etag = s3.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
    event = {
        "Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": BUCKET}, "object": {"key": key, "eTag": etag}}}]
    }
    handler = make_handler(lambda: Reconciler(clock=clock), continue_with=lambda e, c: pending.append(e))
    invocations, pending = 0, [event]
    while pending:
        result = handler(pending.pop(), _LambdaContext())["files"][0]
        invocations += 1
        if result.get("error"):
            raise RuntimeError(f"reconciliation failed: {result['error']}")
    return invocations


# -- what is stored -------------------------------------------------------------------------------------------------


def stored_bytes(raw: Any, tracker: CapacityTracker, models: Any) -> tuple[dict[str, int], dict[str, int]]:
    """Bytes every table and its indexes hold now (items + 100 B, index entries + 100 B), read by an untracked scan."""
    tables, indexes = {}, {}
    for model in models.all():
        name = model.Meta.table_name
        spec = tracker.table_spec(name)
        tables[name] = indexes[name] = 0
        for page in raw.get_paginator("scan").paginate(TableName=name, ConsistentRead=True):
            for item in page["Items"]:
                table_part, index_part = item_storage_bytes(item, spec)
                tables[name] += table_part
                indexes[name] += index_part
    return tables, indexes


def _snapshot(raw: Any, models: Any, sizes: dict[str, int], label: str, payment_id: str) -> None:
    """Record the size of one payment as stored now, by an untracked read."""
    item = raw.get_item(TableName=models.payment.Meta.table_name, Key={"id": {"S": payment_id}}, ConsistentRead=True)
    sizes[f"payment.{label}"] = item_size(item["Item"], typed=True)


def _snapshot_projection(raw: Any, models: Any, sizes: dict[str, int], payment_id: str) -> None:
    """Record the sizes of the payment's projected Transactions (``transaction.<type>``) and audit entries."""
    pages = raw.get_paginator("query").paginate(
        TableName=models.transaction.Meta.table_name, IndexName="by-payment",
        KeyConditionExpression="payment_id = :p", ExpressionAttributeValues={":p": {"S": payment_id}},
    )  # fmt: skip
    for page in pages:
        for transaction in page["Items"]:
            sizes.setdefault(f"transaction.{transaction['type']['S']}", item_size(transaction, typed=True))
    _audit_sizes(raw, models, sizes, payment_id)


def _audit_sizes(raw: Any, models: Any, sizes: dict[str, int], payment_id: str) -> None:
    """Record the size of every entry of the payment's audit trail, by an untracked query (entries never change
    once appended, so reading them at the end is reading them as written): ``audit.<action>``, or
    ``audit.reconciled_<action>`` for one a settlement row caused. The first payment read keeps its sizes."""
    from payment_examples.payments.service import audit_entity

    pages = raw.get_paginator("query").paginate(
        TableName=models.audit.Meta.table_name,
        KeyConditionExpression="entity = :entity",
        ExpressionAttributeValues={":entity": {"S": audit_entity(payment_id)}},
        ConsistentRead=True,
    )
    for page in pages:
        for entry in page["Items"]:
            settled = "settlement_file" in entry.get("detail", {}).get("M", {})
            name = ("reconciled_" if settled else "") + entry["action"]["S"]
            sizes.setdefault(f"audit.{name}", item_size(entry, typed=True))


# -- the model the measurement checks ------------------------------------------------------------------------------


def model_units(
    sizes: dict[str, int], payments: int, *, merchants: int = 4, refund_every: int = 4, page_size: int = 50
) -> dict[str, StepUnits]:
    """Each step's units for ``payments`` payments, worked out call by call from the item sizes ``sizes``
    (``WorkloadMeasurement.sizes``). Not modelled: the reconciliation run's own records (checkpoint, lease,
    merchants, reports), a constant per file rather than per payment."""
    w, r = rules.write_units, rules.read_units
    pending, authorized, captured = sizes["payment.pending"], sizes["payment.authorize"], sizes["payment.capture"]
    refunded_size = sizes["payment.refund"]
    audit = {action: sizes[f"audit.{action}"] for action in ("create", "authorize", "capture", "refund")}

    # A transition: a strong read of the payment, then ONE conditional update (the larger of before and after)
    # that also records the change; the created index rewritten (same key) and the status index moved (new key: a
    # delete and a put). Its Transaction and audit entry are the consumer's ("project").
    def transition(before: int, after: int) -> StepUnits:
        return StepUnits(r(before, "strong"), w(max(before, after)), w(max(before, after)) + w(before) + w(after))

    refunds = len(range(0, payments, refund_every))
    # create: ONE put of the payment (its own idempotency record), into both merchant indexes
    create = StepUnits(0, w(pending), 2 * w(pending))
    authorize = transition(pending, authorized)
    capture = transition(authorized, captured)
    refund = transition(captured, refunded_size)

    # project: per change, the Transaction (a conditional put, and its by-payment index entry; not for the create)
    # and the audit entry (a conditional put; the audit table has no index). One consumer container wrote every
    # entry, so it knew each chain's head: no head read (a create's chain is new; a redelivery would read it).
    def projected(transaction: int | None, entry: int) -> StepUnits:
        return StepUnits(0, w(entry) + (w(transaction) if transaction else 0), w(transaction) if transaction else 0)

    project = projected(None, audit["create"]).scaled(payments)
    for step, count in (("authorize", payments), ("capture", payments), ("refund", refunds)):
        project += projected(sizes[f"transaction.{step}"], audit[step]).scaled(count)
    steps = {
        "create": create.scaled(payments),
        "authorize": authorize.scaled(payments),
        "capture": capture.scaled(payments),
        "refund": refund.scaled(refunds),
        "project": project,
    }
    # list: each merchant's payments (all captured then) page by page; a page reads up to page_size + 1 items
    list_read = 0.0
    for m in range(merchants):
        remaining = len(range(m, payments, merchants))
        while True:
            read = min(remaining, page_size + 1)
            list_read += rules.query_units([captured] * read)
            remaining -= page_size
            if remaining <= 0:
                break
    steps["list"] = StepUnits(list_read)
    # reconcile: one consistent batch read per payment, then its mark, written without a transition: the
    # payment grows to its reconciled size and both merchant indexes (which project everything) are rewritten.
    # Every row of the workload's file matches what the payment already records (its capture, or its refund so
    # far), so no row applies a transition and none appends an audit entry (only applied rows are audited).
    row = (sizes["payment.capture"], sizes["payment.reconciled_capture"])
    refund_row = (refunded_size, sizes["payment.reconciled_refund"])
    reconcile = StepUnits()
    for before, after, count in ((*row, payments - refunds), (*refund_row, refunds)):
        reconcile += StepUnits(r(before, "strong"), w(max(before, after)), 2 * w(max(before, after))).scaled(count)
    steps["reconcile"] = reconcile
    return {step: steps[step] for step in STEPS}
