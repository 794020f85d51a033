"""Create many payments at once (``process_payment_batch``), keeping every guarantee of ``create_payment``.

The default is one conditional put per payment, ``PaymentService.create_payment`` itself, run by a bounded pool
of threads: the payment id derived from (merchant, idempotency key) plus ``attribute_not_exists(id)`` keeps the
pair unique, a repeat with the same details is a replay, a repeat with other details is refused, and nothing that
exists is ever overwritten. What the batch adds:

* validation of every item before anything is written, so one bad item is reported (``invalid``, naming the
  field) instead of losing the rest of the batch;
* in-batch duplicates found before sending: a later item with the pair of an earlier one is not sent
  (``duplicate_in_batch``, naming the first one's index);
* retries of throttling, server errors and lost connections with exponential backoff and full jitter, on top of
  the SDK's own retries (botocore's standard mode already retries throttling a few times per call; this layer
  outlasts a sustained throttle, e.g. a hot partition during a large batch);
* a per-item outcome in input order, counts and the duration. One item's error is an outcome (``failed``), never
  an exception that hides what happened to the others.

Why not the two batch APIs DynamoDB has (both kept below, clearly labelled, for the notebook and the benchmark):

* ``BatchWriteItem`` takes no condition expressions: each put replaces whatever item has the same id, so a retried
  batch resets existing payments (captured ones included) to new pending ones. Fast, fine for fixtures
  (``seed.py``), wrong for creating payments.
* ``TransactWriteItems`` is atomic per transaction (at most 100 items), but costs twice the write units of the
  same puts, and one existing payment cancels its whole chunk. On moto each transaction also copies every table
  it touches (its cost grows with all data held), and dynalite has no transactions at all.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from datetime import datetime
from enum import StrEnum

from pynamodb.exceptions import PynamoDBException, TransactWriteError
from pynamodb.transactions import TransactWrite

from payment_examples.core import currency_exponent, identifier, logger, optional_text, validate_amount
from payment_examples.core import metadata as validate_metadata
from payment_examples.core.errors import (
    THROTTLING_CODES,
    ConfigurationError,
    DuplicatePaymentError,
    ValidationError,
    error_code,
    is_retryable,
)
from payment_examples.payments.service import MAX_DESCRIPTION_LENGTH, PaymentService
from payment_examples.payments.state_machine import PaymentStatus
from payment_examples.tables.models import (
    Payment,
    TransitionAttribute,
    created_key,
    merchant_status_key,
    payment_id_for,
)

DEFAULT_MAX_WORKERS = 8
# The models' connection pool holds 64 connections (models.py): more threads than that would only queue for one.
MAX_WORKERS_LIMIT = 64
MAX_ATTEMPTS_LIMIT = 20
# DynamoDB's limit on TransactWriteItems (raised from 25 in 2022); moto enforces the same 100.
TRANSACTION_MAX_ITEMS = 100
# Error codes that mean "not now": throttling (the request was refused before anything was written) and
# server-side errors. ClientErrors with an HTTP status of 500 or more count too, as do lost connections.


class BatchOutcome(StrEnum):
    CREATED = "created"  # this batch created the payment
    REPLAYED = "replayed"  # the pair had already created this exact payment: it is returned, nothing written
    DUPLICATE_KEY = "duplicate_key"  # the pair already created a payment with other details: refused
    DUPLICATE_IN_BATCH = "duplicate_in_batch"  # an earlier item of this batch has the same pair: not sent
    INVALID = "invalid"  # refused by validation before anything was written
    FAILED = "failed"  # a retryable error outlasted max_attempts, or an unexpected error


@dataclass(frozen=True)
class BatchPaymentRequest:
    """One payment to create: the arguments of ``PaymentService.create_payment``.

    A plain carrier, not validated on construction, so a bad item becomes that item's ``invalid`` outcome instead
    of an exception raised while the caller builds the batch. Plain dicts with these keys are accepted too.
    """

    merchant_id: str
    idempotency_key: str
    amount: int
    currency: str
    customer_id: str | None = None
    description: str | None = None
    metadata: dict[str, str] | None = None

    @property
    def pair(self) -> tuple[str, str]:
        return (self.merchant_id, self.idempotency_key)


@dataclass(frozen=True)
class BatchItemResult:
    index: int  # position in the input
    outcome: BatchOutcome
    payment_id: str | None  # created/replayed: the payment; duplicate_key: the existing one; else None (see below)
    detail: str | None  # why, for every outcome but created/replayed (a replay after an ambiguous error says so)
    attempts: int  # create_payment calls made (0 when nothing was sent)
    field: str | None = None  # invalid: the field that was wrong
    duplicate_of: int | None = None  # duplicate_in_batch: index of the first item with the same pair


@dataclass(frozen=True)
class BatchResult:
    items: list[BatchItemResult]  # one per request, in input order
    counts: dict[BatchOutcome, int]  # every outcome present, zeros included
    duration_s: float

    def of(self, *outcomes: BatchOutcome | str) -> list[BatchItemResult]:
        """The items that ended with one of ``outcomes``, in input order."""
        wanted = {BatchOutcome(o) for o in outcomes}
        return [item for item in self.items if item.outcome in wanted]

    @property
    def ok(self) -> bool:
        """True when every item ended created or replayed: each requested payment exists as requested."""
        return all(item.outcome in (BatchOutcome.CREATED, BatchOutcome.REPLAYED) for item in self.items)

    @property
    def failed(self) -> list[BatchItemResult]:
        """The items worth resending later (the same batch again is safe: created ones come back replayed)."""
        return self.of(BatchOutcome.FAILED)


# -- validation and the item ---------------------------------------------------------------------------------------

_FIELDS = tuple(f.name for f in fields(BatchPaymentRequest))
_REQUIRED = ("merchant_id", "idempotency_key", "amount", "currency")


def validate_request(request: object) -> BatchPaymentRequest:
    """A validated copy of one request (a ``BatchPaymentRequest`` or a mapping with its field names).

    The same validators and normalisation as ``create_payment`` (an empty ``metadata`` becomes None); a
    ``ValidationError`` names the field (an unknown key, a missing one, or the bad value).
    """
    if isinstance(request, Mapping):
        unknown = sorted(str(name) for name in request if name not in _FIELDS)
        if unknown:
            raise ValidationError(unknown[0], f"unknown field (allowed: {', '.join(_FIELDS)})")
        missing = [name for name in _REQUIRED if name not in request]
        if missing:
            raise ValidationError(missing[0], "is required")
        request = BatchPaymentRequest(**request)
    elif not isinstance(request, BatchPaymentRequest):
        raise ValidationError("request", f"must be a BatchPaymentRequest or a mapping, got {type(request).__name__}")
    identifier("merchant_id", request.merchant_id)
    identifier("idempotency_key", request.idempotency_key)
    validate_amount(request.amount)
    currency_exponent(request.currency)
    if request.customer_id is not None:
        identifier("customer_id", request.customer_id)
    optional_text("description", request.description, max_length=MAX_DESCRIPTION_LENGTH)
    return replace(request, metadata=validate_metadata("metadata", request.metadata) or None)


def build_payment(request: BatchPaymentRequest, *, model: type[Payment], now: datetime) -> Payment:
    """The unsaved ``Payment`` that ``create_payment`` builds for a validated ``request`` created at ``now``.

    ``payments.py`` has no builder to share, so this mirrors ``create_payment`` field for field; a unit test
    compares the items the three write paths store, attribute by attribute, so they cannot drift apart.
    ``version`` is left unset, as there: a conditional save or a transaction stores 1.
    """
    payment_id = payment_id_for(request.merchant_id, request.idempotency_key)
    return model(
        payment_id,
        merchant_id=request.merchant_id,
        idempotency_key=request.idempotency_key,
        amount=request.amount,
        currency=request.currency,
        status=PaymentStatus.PENDING.value,
        captured_amount=0,
        refunded_amount=0,
        customer_id=request.customer_id,
        description=request.description,
        metadata=request.metadata,
        created_at=now,
        updated_at=now,
        created_key=created_key(now, payment_id),
        merchant_status=merchant_status_key(request.merchant_id, PaymentStatus.PENDING),
        transitions=[
            TransitionAttribute(
                type="create",
                amount=request.amount,
                actor=request.merchant_id,
                to_status=PaymentStatus.PENDING.value,
                at=now,
                version=1,
            )  # fmt: skip
        ],
    )


# -- retries -------------------------------------------------------------------------------------------------------


def backoff_delay(retry: int, *, base_delay: float, max_delay: float, rng: random.Random) -> float:
    """Seconds to wait before retry number ``retry`` (0 for the first): exponential backoff with full jitter.

    ``uniform(0, min(max_delay, base_delay * 2**retry))`` (AWS Architecture Blog, "Exponential Backoff And
    Jitter"): the growing bound backs off from a throttled table, and the uniform spread stops the workers that
    were throttled together from all coming back at the same instant, which would be throttled again.
    """
    return rng.uniform(0, min(max_delay, base_delay * 2 ** min(retry, 64)))


def _describe(error: BaseException) -> str:
    """The error's type and DynamoDB's code and message (or the error's text): for the caller, never logged."""
    code = error_code(error)
    message = error.cause_response_message if isinstance(error, PynamoDBException) else None
    if code is None:
        return f"{type(error).__name__}: {error}"
    return f"{type(error).__name__}: {code}: {message}" if message else f"{type(error).__name__}: {code}"


# -- the batch ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Policy:
    max_attempts: int
    base_delay: float
    max_delay: float
    sleep: Callable[[float], object]
    rng: random.Random


def _create(service: PaymentService, index: int, request: BatchPaymentRequest, policy: _Policy) -> BatchItemResult:
    """One item: ``create_payment`` with retries. Returns its outcome; never raises for the item."""
    ambiguous = False  # did a retried error leave it unknown whether the put was applied?
    attempts = 0
    while True:
        attempts += 1
        try:
            created = service.create_payment(
                request.merchant_id,
                request.idempotency_key,
                request.amount,
                request.currency,
                customer_id=request.customer_id,
                description=request.description,
                metadata=request.metadata,
            )
        except DuplicatePaymentError as error:
            return BatchItemResult(index, BatchOutcome.DUPLICATE_KEY, error.payment_id, str(error), attempts)
        except ValidationError as error:  # validated already; kept so that it could never fail the batch
            return BatchItemResult(index, BatchOutcome.INVALID, None, str(error), attempts, field=error.field)
        except Exception as error:  # one item's error is its outcome, whatever it is
            retryable = is_retryable(error)
            if retryable and attempts < policy.max_attempts:
                ambiguous = ambiguous or error_code(error) not in THROTTLING_CODES
                delay = backoff_delay(
                    attempts - 1, base_delay=policy.base_delay, max_delay=policy.max_delay, rng=policy.rng
                )
                logger.debug("payment batch item retried", index=index, code=error_code(error), delay_s=delay)
                policy.sleep(delay)
                continue
            logger.warning(
                "payment batch item failed",
                index=index,
                merchant_id=request.merchant_id,
                error_type=type(error).__name__,
                code=error_code(error),
                attempts=attempts,
            )
            detail = _describe(error) + (f" (still failing after {attempts} attempts)" if retryable else "")
            return BatchItemResult(index, BatchOutcome.FAILED, None, detail, attempts)
        if not created.replayed:
            return BatchItemResult(index, BatchOutcome.CREATED, created.payment.id, None, attempts)
        # A put that timed out may still have been applied; its retry then finds our own payment.
        detail = "an earlier attempt in this batch may have written it" if ambiguous else None
        return BatchItemResult(index, BatchOutcome.REPLAYED, created.payment.id, detail, attempts)


def _bounded_int(name: str, value: object, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise ValidationError(name, f"must be an integer from 1 to {high}, got {value!r}")


def _check_requests(requests: object) -> list:
    if isinstance(requests, str | bytes | Mapping) or not isinstance(requests, Iterable):
        raise ValidationError("requests", f"must be an iterable of payment requests, got {type(requests).__name__}")
    return list(requests)


def process_payment_batch(
    requests: Iterable[BatchPaymentRequest | Mapping[str, object]],
    *,
    service: PaymentService | None = None,
    max_workers: int = DEFAULT_MAX_WORKERS,
    max_attempts: int = 6,
    base_delay: float = 0.05,
    max_delay: float = 2.0,
    sleep: Callable[[float], object] = time.sleep,
    rng: random.Random | None = None,
) -> BatchResult:
    """Create every requested payment with ``create_payment``, ``max_workers`` at a time; report each outcome.

    Each item is tried at most ``max_attempts`` times; retryable errors (throttling, 5xx, lost connections) wait
    ``backoff_delay`` seconds (``sleep`` and ``rng`` are injectable, so tests do not sleep). Running the same
    batch again is safe: what was created comes back ``replayed``. Bad arguments raise ``ValidationError``.
    With ``max_workers=1`` everything runs in the calling thread (moto in-process is not thread-safe).
    """
    _bounded_int("max_workers", max_workers, MAX_WORKERS_LIMIT)
    _bounded_int("max_attempts", max_attempts, MAX_ATTEMPTS_LIMIT)
    for name, value in (("base_delay", base_delay), ("max_delay", max_delay)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
            raise ValidationError(name, f"must be a finite number of seconds >= 0, got {value!r}")
    if max_delay < base_delay:
        raise ValidationError("max_delay", f"must be at least base_delay ({base_delay}), got {max_delay}")
    if not callable(sleep):
        raise ValidationError("sleep", "must be callable")
    if rng is not None and not isinstance(rng, random.Random):
        raise ValidationError("rng", f"must be a random.Random, got {type(rng).__name__}")
    items = _check_requests(requests)

    started = time.perf_counter()
    service = service or PaymentService()
    policy = _Policy(max_attempts, base_delay, max_delay, sleep, rng or random.Random())
    results: list[BatchItemResult | None] = [None] * len(items)
    to_send: list[tuple[int, BatchPaymentRequest]] = []
    first_of: dict[tuple[str, str], tuple[int, BatchPaymentRequest]] = {}
    repeats: list[tuple[int, BatchPaymentRequest]] = []
    for index, raw in enumerate(items):
        try:
            request = validate_request(raw)
        except ValidationError as error:
            results[index] = BatchItemResult(index, BatchOutcome.INVALID, None, str(error), 0, field=error.field)
            continue
        if first_of.setdefault(request.pair, (index, request))[0] == index:
            to_send.append((index, request))
        else:
            repeats.append((index, request))

    def send(item: tuple[int, BatchPaymentRequest]) -> BatchItemResult:
        return _create(service, item[0], item[1], policy)

    if max_workers == 1 or len(to_send) <= 1:
        outcomes = list(map(send, to_send))
    else:
        with ThreadPoolExecutor(min(max_workers, len(to_send)), thread_name_prefix="payment-batch") as pool:
            outcomes = list(pool.map(send, to_send))
    for outcome in outcomes:
        results[outcome.index] = outcome

    for index, request in repeats:
        first_index, first_request = first_of[request.pair]
        same = "same details" if request == first_request else "other details: it would be refused"
        detail = f"item {first_index} has the same merchant_id and idempotency_key ({same}); not sent"
        first_payment = results[first_index].payment_id  # type: ignore[union-attr]
        results[index] = BatchItemResult(
            index, BatchOutcome.DUPLICATE_IN_BATCH, first_payment, detail, 0, duplicate_of=first_index
        )

    done: list[BatchItemResult] = [r for r in results if r is not None]
    counts = {outcome: 0 for outcome in BatchOutcome}
    for result in done:
        counts[result.outcome] += 1
    duration = time.perf_counter() - started
    logger.info(
        "payment batch processed",
        items=len(done),
        duration_s=round(duration, 3),
        counts={o.value: n for o, n in counts.items()},  # not as top-level keys: "created" is a LogRecord field
    )
    return BatchResult(done, counts, duration)


# -- the alternatives the notebook compares (not the default) ---------------------------------------------------


def _validated_unique(requests: object) -> list[BatchPaymentRequest]:
    """Every request validated, and no pair twice; else ``ValidationError`` naming ``requests[i]``, before any write."""
    validated: list[BatchPaymentRequest] = []
    first: dict[tuple[str, str], int] = {}
    for index, raw in enumerate(_check_requests(requests)):
        try:
            request = validate_request(raw)
        except ValidationError as error:
            raise ValidationError(f"requests[{index}].{error.field}", error.message) from None
        if first.setdefault(request.pair, index) != index:
            earlier = first[request.pair]
            raise ValidationError(
                f"requests[{index}]", f"repeats the merchant_id and idempotency_key of requests[{earlier}]"
            )
        validated.append(request)
    return validated


@dataclass(frozen=True)
class BatchWriteItemResult:
    written: int  # puts applied (every request: BatchWriteItem cannot refuse one)
    overwritten: list[str]  # ids of payments that existed before and were replaced
    duration_s: float


def write_with_batch_write_item(
    requests: Iterable[BatchPaymentRequest | Mapping[str, object]],
    *,
    service: PaymentService | None = None,
    detect_overwrites: bool = True,
) -> BatchWriteItemResult:
    """NOT the default, and wrong for payments: ``BatchWriteItem``, 25 puts a request (PynamoDB resends
    unprocessed items), the same items ``create_payment`` stores.

    It takes no condition expressions, so each put replaces whatever payment has the same id: an existing
    payment of the pair, captured or refunded, becomes a new pending payment with the new details and creation
    time, and the caller is told nothing. ``overwritten`` is found the only way there is, by reading the ids
    (one consistent ``BatchGetItem`` per 100) just before writing; that read is itself racy, which is the point.
    Invalid requests or a pair given twice raise ``ValidationError`` before anything is written.
    """
    validated = _validated_unique(requests)
    service = service or PaymentService()
    Model = service.models.payment
    started = time.perf_counter()
    overwritten: list[str] = []
    if detect_overwrites and validated:
        ids = [payment_id_for(*request.pair) for request in validated]
        existing = {p.id for p in Model.batch_get(ids, consistent_read=True, attributes_to_get=["id"])}
        overwritten = [payment_id for payment_id in ids if payment_id in existing]
    with Model.batch_write() as batch:
        for request in validated:
            payment = build_payment(request, model=Model, now=service.clock.now())
            payment.version = 1  # what create_payment's conditional save stores; a batch put stores it as given
            batch.save(payment)
    duration = time.perf_counter() - started
    logger.info("payments written with BatchWriteItem", written=len(validated), overwritten=len(overwritten))
    return BatchWriteItemResult(len(validated), overwritten, duration)


@dataclass(frozen=True)
class CancelledChunk:
    first_index: int  # index of the chunk's first request
    size: int
    reasons: dict[int, str]  # request index -> DynamoDB's cancellation reason (ConditionalCheckFailed: it exists)


@dataclass(frozen=True)
class TransactionsResult:
    items_written: int
    chunks_committed: int
    cancelled: list[CancelledChunk]
    duration_s: float

    @property
    def chunks_cancelled(self) -> int:
        return len(self.cancelled)


def write_with_transactions(
    requests: Iterable[BatchPaymentRequest | Mapping[str, object]],
    *,
    chunk_size: int = TRANSACTION_MAX_ITEMS,
    service: PaymentService | None = None,
) -> TransactionsResult:
    """NOT the default: ``TransactWriteItems`` of ``chunk_size`` (at most 100) conditional puts, the same items
    and condition as ``create_payment``.

    Each chunk is atomic, which a batch of independent payments does not need, and pays for it: twice the write
    units of the same puts on DynamoDB, and one existing payment cancels its whole chunk (every new payment in
    it is not written and must be resent without the conflicting one; ``cancelled`` says which). On moto each
    transaction copies every table it touches, so its cost grows with all data held.

    dynalite has no transactions: it answers ``UnknownOperationException`` to the first chunk, before anything is
    written, and this raises ``ConfigurationError``; callers that run on either engine catch it (the notebook
    prints it). Invalid requests or a pair given twice raise ``ValidationError`` before anything is written.
    """
    _bounded_int("chunk_size", chunk_size, TRANSACTION_MAX_ITEMS)
    validated = _validated_unique(requests)
    service = service or PaymentService()
    Model = service.models.payment
    connection = Model._get_connection().connection  # the bound model's endpoint and credentials
    started = time.perf_counter()
    written, committed, cancelled = 0, 0, []
    for start in range(0, len(validated), chunk_size):
        chunk = validated[start : start + chunk_size]
        try:
            with TransactWrite(connection=connection) as transaction:
                for request in chunk:
                    payment = build_payment(request, model=Model, now=service.clock.now())
                    transaction.save(payment, condition=Model.id.does_not_exist())
        except TransactWriteError as error:
            if error_code(error) == "UnknownOperationException":
                raise ConfigurationError(
                    "this engine does not support TransactWriteItems (dynalite has none); use moto or DynamoDB"
                ) from error
            if error_code(error) != "TransactionCanceledException":
                raise
            reasons = {start + i: r.code for i, r in enumerate(error.cancellation_reasons) if r is not None}
            cancelled.append(CancelledChunk(start, len(chunk), reasons))
        else:
            committed += 1
            written += len(chunk)
    duration = time.perf_counter() - started
    logger.info(
        "payments written with TransactWriteItems",
        written=written,
        chunks_committed=committed,
        chunks_cancelled=len(cancelled),
    )
    return TransactionsResult(written, committed, cancelled, duration)
