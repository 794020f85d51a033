"""Load: many payments through the process handler at once, then an exact count of what they left behind.

``run_load(n)`` sends ``n`` distinct ``POST /payments`` requests (each with its own ``Idempotency-Key`` and a
``payment_method``, so each one authorises through the processor) from a thread pool, through the same handler
API Gateway would invoke, against whatever engine is in force (``local_aws()``: the moto server process or
dynalite; never moto in-process, which is not thread-safe). With ``copies=k`` every key is sent ``k`` times at
once: the duplicate storm. Each request is timed; then the tables and the processor's ledger are counted:
payments created, approved authorisations, keys charged or created more than once, the responses' statuses and
the amounts. ``LoadResult.mismatches()`` lists every count that is not exactly what ``n`` requests must leave.

``round_trips(fn)`` records every DynamoDB call ``fn()`` makes on the clients the handler uses (the package's
boto3 client and every PynamoDB model's connection, the processor's ledger included): which operation, on which
table, how long. The minimum a request needs, and why:

* A fresh create with a card is 7 round trips of ours: the idempotency claim (a conditional PutItem: the only
  way to make the key unique without a read), the payment (a conditional PutItem, which also records the
  authorisation about to be sent, so a crash after sending is recoverable), the payment's ``create`` audit entry
  (a PutItem with no head read: the chain is new), the payment update that applies the processor's answer (the
  commit point of ``authorized``, conditional on the version), its audit entry (a PutItem: this service
  appended the head a moment ago), its Transaction (a PutItem; the audit entry and the Transaction cannot join
  the payment update: they are other items, and a ``TransactWriteItems`` costs twice the write units and, on
  moto, grows with the data held), and the idempotency completion (an UpdateItem storing the response). The
  processor's own ledger PutItem is the eighth call in the trace: the simulated processor's cost (a real one is
  an HTTPS call to its API), not ours.
* A replay is 1 round trip on moto and on DynamoDB: the claim's PutItem fails and returns the stored record
  (``ReturnValuesOnConditionCheckFailure=ALL_OLD``), so the response is replayed from it. dynalite ignores that
  parameter and returns no item, so there the middleware falls back to a consistent GetItem: 2 round trips.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from payment_examples.core import Settings, aws, get_settings, logger, percentile
from payment_examples.tables import get_models, payment_id_for

PERCENTILES = {"p50": 50, "p95": 95, "p99": 99}
REPLAYED_HEADER = "Idempotent-Replayed"
# What a storm's extra copies may be answered: 201 (replayed once the first completed) or 409 (still in progress).
STORM_STATUSES = frozenset({201, 409})


# -- the load run ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadResult:
    """What a load run sent, what came back, and what the tables and the processor's ledger hold afterwards."""

    requests: int  # requests sent (keys x copies)
    payments: int  # payments of the run's keys in the payments table
    charges: int  # approved authorisations of the run's payments in the processor's ledger
    duplicate_charges: int  # keys with more than one approved charge or more than one payment
    statuses: dict[int, int]  # HTTP status -> responses
    total_amount: int  # sum of the payments' amounts (minor units)
    latencies_ms: list[float]  # one per request, in completion order
    seconds: float  # wall time from the first request sent to the last answered
    keys: int = 0  # distinct idempotency keys (n_payments)
    copies: int = 1  # requests per key
    threads: int = 1
    amount: int = 0  # the amount each payment was requested with
    charged_amount: int = 0  # sum of the approved charges' amounts
    authorized: int = 0  # payments whose status is authorized
    created_responses: int = 0  # 201 answers that created their payment (not replayed)
    replayed_responses: int = 0  # 201 answers replayed from the stored outcome (Idempotent-Replayed)
    engine: str | None = None
    problems: list[str] = field(default_factory=list)  # the bodies of a few non-2xx answers, for diagnosis

    @property
    def throughput(self) -> float:
        """Requests answered per second of wall time."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentiles(self) -> dict[str, float]:
        """p50, p95 and p99 of the request latencies in milliseconds (measure.percentile: linear interpolation)."""
        return {name: percentile(self.latencies_ms, q) for name, q in PERCENTILES.items()}

    def mismatches(self) -> list[str]:
        """Every count that differs from what ``keys`` requests (``copies`` each) must leave: empty when exact."""
        expected_total = self.keys * self.amount
        wrong = []
        for name, value, want in (
            ("payments", self.payments, self.keys),
            ("charges", self.charges, self.keys),
            ("duplicate_charges", self.duplicate_charges, 0),
            ("authorized payments", self.authorized, self.keys),
            ("total_amount", self.total_amount, expected_total),
            ("charged_amount", self.charged_amount, expected_total),
            ("responses that created a payment", self.created_responses, self.keys),
            ("responses", sum(self.statuses.values()), self.requests),
        ):
            if value != want:
                wrong.append(f"{name}: {value}, expected {want}")
        allowed = {201} if self.copies == 1 else STORM_STATUSES
        other = {status: count for status, count in self.statuses.items() if status not in allowed}
        if other:
            wrong.append(f"statuses other than {sorted(allowed)}: {other}")
        return wrong

    def as_dict(self, *, latencies: bool = False) -> dict[str, Any]:
        """A JSON-ready summary: the counts, throughput and percentiles (the raw latencies only if asked)."""
        data = asdict(self)
        if not latencies:
            del data["latencies_ms"]
        data["statuses"] = {str(status): count for status, count in sorted(self.statuses.items())}
        data["seconds"] = round(self.seconds, 3)
        data["throughput_per_s"] = round(self.throughput, 1)
        data.update({f"{name}_ms": round(value, 2) for name, value in self.percentiles().items()})
        data["mean_ms"] = round(sum(self.latencies_ms) / len(self.latencies_ms), 2) if self.latencies_ms else None
        data["max_ms"] = round(max(self.latencies_ms), 2) if self.latencies_ms else None
        data["mismatches"] = self.mismatches()
        return data


def payment_event(merchant_id: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
    """An HTTP API (v2) ``POST /payments`` event whose merchant comes from JWT authorizer claims (what API Gateway
    passes once its authorizer has verified the token)."""
    return {
        "version": "2.0",
        "routeKey": "POST /payments",
        "rawPath": "/payments",
        "rawQueryString": "",
        "headers": {"idempotency-key": key, "content-type": "application/json"},
        "requestContext": {
            "http": {"method": "POST", "path": "/payments", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
            "stage": "$default",
            "authorizer": {"jwt": {"claims": {"merchant_id": merchant_id}, "scopes": []}},
        },
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def load_keys(n_payments: int, seed: int = 0) -> list[str]:
    """The idempotency keys of a run: ``load-<seed>-<i>``, so runs with different seeds never share a key."""
    return [f"load-{seed}-{i:06d}" for i in range(n_payments)]


def run_load(
    n_payments: int,
    *,
    threads: int = 16,
    copies: int = 1,
    merchant_id: str = "load-merchant",
    amount: int = 1250,
    currency: str = "USD",
    payment_method: str = "pm_card_visa",
    handler: Callable[[dict, Any], dict] | None = None,
    processor: Any = None,
    seed: int = 0,
    progress: bool = False,
) -> LoadResult:
    """Send ``n_payments`` keys x ``copies`` ``POST /payments`` requests from ``threads`` threads through
    ``handler`` (default: ``make_handler`` with a ``Checkout`` through ``processor``), then count.

    ``processor`` (default: a ``LocalProcessor`` on the settings in force, its ledger table created if missing)
    is also where charges are counted, so it must be the one the handler authorises through. The ``copies`` of
    a key are queued one after another, so that ``threads >= copies`` sends them all at the same moment.
    The package's logger is set to ERROR for the run (one log line per request would flood the output and be
    timed too), then restored. Settings are process-wide, so the worker threads use the ones in force.
    """
    from payment_examples.checkout.processor import LocalProcessor
    from payment_examples.checkout.service import Checkout
    from payment_examples.handlers.process import make_handler
    from payment_examples.payments.service import PaymentService

    if n_payments < 1 or threads < 1 or copies < 1:
        raise ValueError("n_payments, threads and copies must be at least 1")
    settings = get_settings()
    if processor is None:
        processor = LocalProcessor(settings=settings)
    if isinstance(processor, LocalProcessor) and not processor.ledger.exists():
        processor.ledger.create_table(wait=True)
    if handler is None:
        service = PaymentService(models=get_models(settings))
        handler = make_handler(service, Checkout(service, processor))

    keys = load_keys(n_payments, seed)
    body = {"amount": amount, "currency": currency, "payment_method": payment_method}
    work = [key for key in keys for _ in range(copies)]
    bar = _progress(len(work), f"{copies} x {n_payments:,} payments" if copies > 1 else f"{n_payments:,} payments",
                    progress)  # fmt: skip
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    created = replayed = 0
    problems: list[str] = []

    def send(key: str) -> None:
        nonlocal created, replayed
        event = payment_event(merchant_id, key, body)
        start = time.perf_counter()
        response = handler(event, None)
        elapsed = (time.perf_counter() - start) * 1000
        status = int(response["statusCode"])
        again = (response.get("headers") or {}).get(REPLAYED_HEADER) == "true"
        with lock:
            latencies.append(elapsed)
            statuses[status] += 1
            if status == 201:
                replayed += again
                created += not again
            elif status != 409 and len(problems) < 5:
                problems.append(f"{status}: {response.get('body', '')[:300]}")
        if bar is not None:
            bar.update()

    level = logger.log_level
    logger.setLevel("ERROR")
    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(threads, thread_name_prefix="load") as pool:
            for _ in pool.map(send, work):
                pass
        seconds = time.perf_counter() - started
    finally:
        logger.setLevel(level)
        if bar is not None:
            bar.close()

    counts = count_outcome(merchant_id, keys, processor, settings)
    return LoadResult(
        requests=len(work),
        payments=counts["payments"],
        charges=counts["charges"],
        duplicate_charges=counts["duplicates"],
        statuses=dict(sorted(statuses.items())),
        total_amount=counts["total_amount"],
        latencies_ms=latencies,
        seconds=seconds,
        keys=n_payments,
        copies=copies,
        threads=threads,
        amount=amount,
        charged_amount=counts["charged_amount"],
        authorized=counts["authorized"],
        created_responses=created,
        replayed_responses=replayed,
        engine="aws" if settings.mode == "aws" else settings.engine,
        problems=problems,
    )


def count_outcome(merchant_id: str, keys: list[str], processor: Any, settings: Settings | None = None) -> dict:
    """What the tables and the processor's ledger hold for ``keys``: counted by scans (a test's ground truth,
    never a request path). Duplicates: keys with more than one payment or more than one approved charge."""
    settings = settings or get_settings()
    wanted = set(keys)
    payments: Counter[str] = Counter()
    total_amount = authorized = 0
    ids = {payment_id_for(merchant_id, key): key for key in keys}
    pages = aws.dynamodb(settings).get_paginator("scan").paginate(
        TableName=get_models(settings).payment.Meta.table_name,
        FilterExpression="merchant_id = :m",
        ExpressionAttributeValues={":m": {"S": merchant_id}},
        ProjectionExpression="id, idempotency_key, amount, #s",
        ExpressionAttributeNames={"#s": "status"},
        ConsistentRead=True,
    )  # fmt: skip
    for page in pages:
        for item in page.get("Items", []):
            key = item["idempotency_key"]["S"]
            if key not in wanted:
                continue
            payments[key] += 1
            total_amount += int(item["amount"]["N"])
            authorized += item["status"]["S"] == "authorized"
    charges: Counter[str] = Counter()
    charged_amount = 0
    for charge in processor.charges():  # approved authorisations
        key = ids.get(charge.payment_id)
        if key is not None:
            charges[key] += 1
            charged_amount += charge.amount
    duplicates = sum(1 for key in keys if payments[key] > 1 or charges[key] > 1)
    return {
        "payments": sum(payments.values()),
        "charges": sum(charges.values()),
        "duplicates": duplicates,
        "total_amount": total_amount,
        "charged_amount": charged_amount,
        "authorized": authorized,
    }


def _progress(total: int, label: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=label, unit="req", mininterval=1.0)


# -- round trips -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundTrip:
    """One DynamoDB call: its operation, its table (without the prefix), its time in milliseconds (from
    botocore's ``before-call`` to ``after-call``: serialising, signing, the HTTP round trip and parsing, retries
    included) and its error code (None: it succeeded; ``ConditionalCheckFailedException`` is an answer too)."""

    operation: str
    table: str
    ms: float
    error: str | None = None


_TABLE = "payment_examples.load.table"
_START = "payment_examples.load.start"


def dynamodb_clients(settings: Settings | None = None) -> list[Any]:
    """Every DynamoDB client the handler's calls go through: the package's boto3 client (the idempotency
    middleware's) and the PynamoDB connection of every model, the processor's ledger included."""
    models = get_models(settings)
    clients = [aws.dynamodb(settings)]
    for model in (*models.all(), models.processor_ledger):
        client = model._get_connection().connection.client
        if not any(client is seen for seen in clients):
            clients.append(client)
    return clients


@contextmanager
def recording(settings: Settings | None = None) -> Iterator[list[RoundTrip]]:
    """Inside the block, every DynamoDB call on ``dynamodb_clients()`` is appended to the yielded list."""
    settings = settings or get_settings()
    prefix = settings.table_prefix
    trips: list[RoundTrip] = []
    lock = threading.Lock()
    tag = f"load-round-trips-{id(trips)}"

    def before_parameter_build(params: dict, context: dict, **_: Any) -> None:
        context[_TABLE] = params.get("TableName", "")

    def before_call(context: dict, **_: Any) -> None:
        context[_START] = time.perf_counter()

    def finish(model: Any, context: dict, error: str | None) -> None:
        start = context.get(_START)
        if start is None:
            return
        table = context.get(_TABLE, "")
        trip = RoundTrip(model.name, table.removeprefix(prefix), (time.perf_counter() - start) * 1000, error)
        with lock:
            trips.append(trip)

    def after_call(http_response: Any, parsed: dict, model: Any, context: dict, **_: Any) -> None:
        code = parsed.get("Error", {}).get("Code") if http_response.status_code >= 300 else None
        finish(model, context, code)

    def after_call_error(model: Any, context: dict, exception: Exception, **_: Any) -> None:
        finish(model, context, type(exception).__name__)

    handlers = {
        "before-parameter-build.dynamodb": before_parameter_build,
        "before-call.dynamodb": before_call,
        "after-call.dynamodb": after_call,
        "after-call-error.dynamodb": after_call_error,
    }
    clients = dynamodb_clients(settings)
    for client in clients:
        for event, handler in handlers.items():
            client.meta.events.register(event, handler, unique_id=f"{tag}-{event}")
    try:
        yield trips
    finally:
        for client in clients:
            for event in handlers:
                client.meta.events.unregister(event, unique_id=f"{tag}-{event}")


def round_trips(fn: Callable[[], object], settings: Settings | None = None) -> list[RoundTrip]:
    """Run ``fn()`` and return the DynamoDB calls it made, in the order they were answered."""
    with recording(settings) as trips:
        fn()
    return list(trips)


def round_trip_table(trips: list[RoundTrip], total_ms: float | None = None) -> dict[str, Any]:
    """Each call with its share of the calls' time; ``total_ms`` (the whole request, if measured) adds the time
    spent outside DynamoDB calls (the handler's own work: parsing, validation, hashing, JSON) and the shares of it.
    """
    calls_ms = sum(trip.ms for trip in trips)
    whole = total_ms if total_ms is not None and total_ms >= calls_ms else calls_ms
    rows = [
        {"operation": t.operation, "table": t.table, "ms": round(t.ms, 2),
         "share": round(t.ms / whole, 3) if whole else 0.0, **({"error": t.error} if t.error else {})}
        for t in trips
    ]  # fmt: skip
    out: dict[str, Any] = {"round_trips": len(trips), "calls_ms": round(calls_ms, 2), "calls": rows}
    if total_ms is not None:
        out["total_ms"] = round(whole, 2)
        out["outside_calls_ms"] = round(whole - calls_ms, 2)
        out["outside_calls_share"] = round((whole - calls_ms) / whole, 3) if whole else 0.0
    return out
