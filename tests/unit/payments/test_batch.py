"""process_payment_batch and the two alternatives on moto in-process, single-threaded (max_workers=1): item
construction, validation, in-batch duplicates, replays, retries with backoff, failures and bad arguments.
The concurrent runs (the batch of 1,000 with throttling) are in tests/integration/test_batch_engine.py."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from pynamodb.exceptions import GetError, PutError

from payment_examples.core.aws import dynamodb
from payment_examples.core.clock import FixedClock
from payment_examples.core.errors import ValidationError
from payment_examples.payments.batch import (
    MAX_WORKERS_LIMIT,
    BatchOutcome,
    BatchPaymentRequest,
    backoff_delay,
    build_payment,
    is_retryable,
    process_payment_batch,
    validate_request,
    write_with_batch_write_item,
    write_with_transactions,
)
from payment_examples.payments.service import MAX_DESCRIPTION_LENGTH, CreateResult, PaymentService
from payment_examples.tables.models import BoundModels, payment_id_for

M = "m-1"
BO = BatchOutcome


def request(key: str, amount: int = 1000, merchant: str = M, **extra) -> BatchPaymentRequest:
    return BatchPaymentRequest(merchant, key, amount, "USD", **extra)


def raw_item(models: BoundModels, payment_id: str) -> dict | None:
    response = dynamodb().get_item(
        TableName=models.payment.Meta.table_name, Key={"id": {"S": payment_id}}, ConsistentRead=True
    )
    return response.get("Item")


def stored_count(models: BoundModels) -> int:
    return dynamodb().scan(TableName=models.payment.Meta.table_name, Select="COUNT")["Count"]


def throttle(code: str = "ProvisionedThroughputExceededException") -> PutError:
    """What PynamoDB raises when DynamoDB throttles a put (the cause carries the error code)."""
    cause = ClientError({"Error": {"Code": code, "Message": "slow down"}}, "PutItem")
    return PutError("Failed to put item", cause)


class FlakyService(PaymentService):
    """A real PaymentService whose create_payment first raises ``errors[key]`` (in order), before writing."""

    def __init__(self, errors: dict[str, list[BaseException]], **kwargs) -> None:
        super().__init__(**kwargs)
        self.errors = {key: list(queue) for key, queue in errors.items()}
        self.calls: dict[str, int] = {}

    def create_payment(self, merchant_id: str, idempotency_key: str, *args, **kwargs) -> CreateResult:
        self.calls[idempotency_key] = self.calls.get(idempotency_key, 0) + 1
        queue = self.errors.get(idempotency_key)
        if queue:
            raise queue.pop(0)
        return super().create_payment(merchant_id, idempotency_key, *args, **kwargs)


class UpperBound(random.Random):
    """An rng whose uniform(a, b) is b: the largest delay the backoff allows, to check the bound exactly."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


# -- the item: one construction, three write paths ----------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [{}, {"customer_id": "c-1", "description": "Order #7", "metadata": {"order": "7", "channel": "web"}}],
    ids=["required-only", "every-field"],
)
def test_every_write_path_stores_what_create_payment_stores(models: BoundModels, extra: dict) -> None:
    service = PaymentService(models=models, clock=FixedClock(datetime(2026, 3, 1, 12, tzinfo=UTC)))
    wanted = request("k-1", 1250, **extra)
    payment_id = payment_id_for(M, "k-1")
    table = models.payment.Meta.table_name

    service.create_payment(M, "k-1", 1250, "USD", **extra)
    by_create = raw_item(models, payment_id)
    dynamodb().delete_item(TableName=table, Key={"id": {"S": payment_id}})
    write_with_batch_write_item([wanted], service=service)
    by_batch_write = raw_item(models, payment_id)
    dynamodb().delete_item(TableName=table, Key={"id": {"S": payment_id}})
    write_with_transactions([wanted], service=service)
    by_transaction = raw_item(models, payment_id)
    dynamodb().delete_item(TableName=table, Key={"id": {"S": payment_id}})
    process_payment_batch([wanted], service=service, max_workers=1)
    by_batch = raw_item(models, payment_id)

    assert by_create is not None and by_create["version"] == {"N": "1"} and by_create["status"] == {"S": "pending"}
    assert set(extra) <= set(by_create)  # the optional fields really were stored
    # the one difference allowed: create_payment's write token (a random one per put, to know its own put again)
    assert "w" in by_create["transitions"]["L"][0]["M"]
    by_create, by_batch = _without_write_token(by_create), _without_write_token(by_batch)
    for name in sorted(set(by_create) | set(by_batch_write) | set(by_transaction) | set(by_batch)):
        assert by_batch_write.get(name) == by_create.get(name), name
        assert by_transaction.get(name) == by_create.get(name), name
        assert by_batch.get(name) == by_create.get(name), name
    built = build_payment(validate_request(wanted), model=models.payment, now=service.clock.now()).serialize()
    assert built | {"version": {"N": "1"}} == by_create


def _without_write_token(item: dict) -> dict:
    first = {k: v for k, v in item["transitions"]["L"][0]["M"].items() if k != "w"}
    return item | {"transitions": {"L": [{"M": first}, *item["transitions"]["L"][1:]]}}


# -- outcomes -------------------------------------------------------------------------------------------------------


def test_creates_every_payment_and_reports_in_input_order(service: PaymentService, models: BoundModels) -> None:
    requests = [request("k-0", 100), {"merchant_id": "m-2", "idempotency_key": "k-0", "amount": 5, "currency": "JPY"}]
    requests += [request(f"k-{i}", 100 + i) for i in range(1, 5)]

    result = process_payment_batch(requests, service=service, max_workers=1)

    assert [item.index for item in result.items] == list(range(6))
    assert [item.outcome for item in result.items] == [BO.CREATED] * 6
    assert result.counts == {BO.CREATED: 6} | {o: 0 for o in BO if o is not BO.CREATED}
    assert result.ok and result.failed == [] and result.duration_s > 0
    assert result.items[1].payment_id == payment_id_for("m-2", "k-0")
    for item, wanted in zip(
        result.items, [r if isinstance(r, BatchPaymentRequest) else None for r in requests], strict=True
    ):
        assert item.attempts == 1 and item.detail is None
        if wanted is not None:
            assert raw_item(models, item.payment_id)["amount"] == {"N": str(wanted.amount)}
    assert stored_count(models) == 6


def test_existing_payments_are_replayed_or_refused_never_overwritten(
    service: PaymentService, models: BoundModels
) -> None:
    first = service.create_payment(M, "same", 700, "USD", description="kept").payment
    other = service.create_payment(M, "other", 800, "USD").payment
    service.authorize(M, other.id, actor="test")
    before = {pid: raw_item(models, pid) for pid in (first.id, other.id)}

    result = process_payment_batch(
        [request("same", 700, description="kept"), request("other", 999), request("new", 1)],
        service=service,
        max_workers=1,
    )

    same, changed, new = result.items
    assert (same.outcome, same.payment_id, same.detail) == (BO.REPLAYED, first.id, None)
    assert (changed.outcome, changed.payment_id) == (BO.DUPLICATE_KEY, other.id)
    assert "other" in changed.detail and "different details" in changed.detail
    assert new.outcome is BO.CREATED and not result.ok
    assert {pid: raw_item(models, pid) for pid in (first.id, other.id)} == before  # byte for byte unchanged
    assert raw_item(models, other.id)["status"] == {"S": "authorized"}


def test_in_batch_duplicates_are_reported_and_not_sent(models: BoundModels, clock) -> None:
    service = FlakyService({}, models=models, clock=clock)
    requests = [
        request("a", 100),
        request("b", 200),
        request("a", 100),  # same details as item 0
        {"merchant_id": M, "idempotency_key": "a", "amount": 101, "currency": "USD"},  # other details
        request("b", 200, merchant="m-2"),  # another merchant: a different pair
    ]

    result = process_payment_batch(requests, service=service, max_workers=1)

    assert [item.outcome for item in result.items] == [BO.CREATED, BO.CREATED, BO.DUPLICATE_IN_BATCH,
                                                      BO.DUPLICATE_IN_BATCH, BO.CREATED]  # fmt: skip
    same, different = result.items[2], result.items[3]
    assert same.duplicate_of == different.duplicate_of == 0
    assert same.payment_id == different.payment_id == result.items[0].payment_id
    assert "item 0" in same.detail and "same details" in same.detail
    assert "item 0" in different.detail and "other details" in different.detail
    assert same.attempts == different.attempts == 0 and service.calls == {"a": 1, "b": 2}
    assert result.counts[BO.DUPLICATE_IN_BATCH] == 2
    assert raw_item(models, payment_id_for(M, "a"))["amount"] == {"N": "100"}  # the first one won
    assert stored_count(models) == 3


@pytest.mark.parametrize(
    ("item", "field", "words"),
    [
        ({"merchant_id": M, "idempotency_key": "bad-1", "amount": 0, "currency": "USD"}, "amount", "positive"),
        ({"merchant_id": M, "idempotency_key": "bad-2", "amount": 10.5, "currency": "USD"}, "amount", "float"),
        (request("bad-3", 10.0), "amount", "float"),
        ({"merchant_id": M, "idempotency_key": "bad-4", "amount": 10, "currency": "XXX"}, "currency", "ISO 4217"),
        ({"merchant_id": M, "amount": 10, "currency": "USD"}, "idempotency_key", "required"),
        ({"merchant_id": M, "idempotency_key": "bad-6", "amount": 10, "currency": "USD", "card": "4111"}, "card",
         "unknown field"),
        ({"merchant_id": M, "idempotency_key": "", "amount": 10, "currency": "USD"}, "idempotency_key", "empty"),
        (request("bad-8", description="d" * (MAX_DESCRIPTION_LENGTH + 1)), "description", "at most"),
        (request("bad-9", metadata={"k": 1}), "metadata.k", "string"),
        (["m-1", "bad-10", 10, "USD"], "request", "list"),
        ("m-1,bad-11,10,USD", "request", "str"),
    ],
)  # fmt: skip
def test_invalid_items_are_reported_and_the_rest_is_created(
    service: PaymentService, models: BoundModels, item: object, field: str, words: str
) -> None:
    result = process_payment_batch([request("good-1"), item, request("good-2")], service=service, max_workers=1)

    bad = result.items[1]
    assert (bad.outcome, bad.field, bad.payment_id, bad.attempts) == (BO.INVALID, field, None, 0)
    assert bad.detail.startswith(f"{field}: ") and words in bad.detail
    assert [result.items[0].outcome, result.items[2].outcome] == [BO.CREATED, BO.CREATED]
    assert result.counts[BO.INVALID] == 1 and stored_count(models) == 2  # nothing written for the invalid one


def test_an_invalid_item_does_not_make_a_later_valid_one_a_duplicate(service: PaymentService) -> None:
    result = process_payment_batch([request("k", 0), request("k", 10)], service=service, max_workers=1)
    assert [item.outcome for item in result.items] == [BO.INVALID, BO.CREATED]


def test_empty_batch(service: PaymentService) -> None:
    result = process_payment_batch([], service=service)
    assert result.items == [] and set(result.counts.values()) == {0} and len(result.counts) == len(BO)


# -- retries --------------------------------------------------------------------------------------------------------


def test_throttled_item_is_retried_with_exponential_full_jitter_bounds(models: BoundModels, clock) -> None:
    service = FlakyService({"t": [throttle(), throttle("ThrottlingException"), throttle(), throttle()]},
                           models=models, clock=clock)  # fmt: skip
    sleeps = Sleeps()

    result = process_payment_batch(
        [request("t"), request("u")],
        service=service,
        max_workers=1,
        base_delay=0.05,
        max_delay=0.3,
        sleep=sleeps,
        rng=UpperBound(),
    )

    assert [(item.outcome, item.attempts) for item in result.items] == [(BO.CREATED, 5), (BO.CREATED, 1)]
    assert sleeps == pytest.approx([0.05, 0.1, 0.2, 0.3])  # base * 2**retry, capped at max_delay
    assert service.calls == {"t": 5, "u": 1} and stored_count(models) == 2


def test_backoff_delay_is_uniform_between_zero_and_the_capped_bound() -> None:
    rng = random.Random(3)
    for retry in range(12):
        bound = min(2.0, 0.05 * 2**retry)
        delays = [backoff_delay(retry, base_delay=0.05, max_delay=2.0, rng=rng) for _ in range(200)]
        assert all(0 <= d <= bound for d in delays)
        assert max(delays) > bound * 0.8 and min(delays) < bound * 0.2  # spread over the whole range: jitter
    assert backoff_delay(10_000, base_delay=0.05, max_delay=2.0, rng=UpperBound()) == 2.0  # no overflow


def test_a_throttle_that_never_stops_fails_that_item_only(models: BoundModels, clock) -> None:
    service = FlakyService({"stuck": [throttle()] * 100}, models=models, clock=clock)
    sleeps = Sleeps()

    result = process_payment_batch(
        [request("a"), request("stuck"), request("b")], service=service, max_workers=1, max_attempts=4, sleep=sleeps
    )

    stuck = result.items[1]
    assert (stuck.outcome, stuck.attempts, stuck.payment_id) == (BO.FAILED, 4, None)
    assert "ProvisionedThroughputExceededException" in stuck.detail and "4 attempts" in stuck.detail
    assert len(sleeps) == 3 and service.calls["stuck"] == 4
    assert result.failed == [stuck] and result.of("created") == [result.items[0], result.items[2]]
    assert raw_item(models, payment_id_for(M, "stuck")) is None and stored_count(models) == 2


@pytest.mark.parametrize(
    "error",
    [RuntimeError("bug"), PutError("Failed", ClientError({"Error": {"Code": "ValidationException"}}, "PutItem"))],
    ids=["unexpected", "not-retryable-code"],
)  # fmt: skip
def test_a_non_retryable_error_fails_at_once_and_the_batch_goes_on(models: BoundModels, clock, error) -> None:
    service = FlakyService({"x": [error]}, models=models, clock=clock)
    sleeps = Sleeps()

    result = process_payment_batch([request("x"), request("y")], service=service, max_workers=1, sleep=sleeps)

    failed = result.items[0]
    assert (failed.outcome, failed.attempts) == (BO.FAILED, 1)
    assert failed.detail.startswith(type(error).__name__) and "attempts" not in failed.detail
    assert sleeps == [] and result.items[1].outcome is BO.CREATED


def test_a_retry_after_an_ambiguous_error_finds_its_own_payment(models: BoundModels, clock) -> None:
    """The put was applied but the answer was lost (a 500 after writing): the retry replays it, and says why."""

    class LostAnswer(PaymentService):
        calls = 0

        def create_payment(self, *args, **kwargs):
            result = super().create_payment(*args, **kwargs)
            LostAnswer.calls += 1
            if LostAnswer.calls == 1:
                raise throttle("InternalServerError")
            return result

    result = process_payment_batch([request("k")], service=LostAnswer(models=models, clock=clock), sleep=Sleeps())

    item = result.items[0]
    assert (item.outcome, item.attempts) == (BO.REPLAYED, 2)
    assert "earlier attempt" in item.detail and stored_count(models) == 1


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (throttle(), True),
        (throttle("ThrottlingException"), True),
        (throttle("RequestLimitExceeded"), True),
        (throttle("InternalServerError"), True),
        (GetError("Failed to get item", ClientError({"Error": {"Code": "ThrottlingException"}}, "GetItem")), True),
        (ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "PutItem"), True),
        (ClientError({"Error": {"Code": "Whatever"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutItem"), True),
        (PutError("Failed to put item", EndpointConnectionError(endpoint_url="http://x")), True),
        (PutError("Failed to put item", ReadTimeoutError(endpoint_url="http://x")), True),
        (throttle("ConditionalCheckFailedException"), False),
        (throttle("ValidationException"), False),
        (ClientError({"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "PutItem"),
         False),
        (ValueError("no"), False),
    ],
)  # fmt: skip
def test_which_errors_are_retried(error: BaseException, retryable: bool) -> None:
    assert is_retryable(error) is retryable


# -- the alternatives -----------------------------------------------------------------------------------------------


def test_batch_write_item_overwrites_an_existing_payment(service: PaymentService, models: BoundModels) -> None:
    existing = service.create_payment(M, "k-1", 500, "USD").payment
    service.authorize(M, existing.id, actor="test")
    service.capture(M, existing.id, actor="test")

    result = write_with_batch_write_item([request("k-1", 9), request("k-2", 9)], service=service)

    assert result.written == 2 and result.overwritten == [existing.id]
    item = raw_item(models, existing.id)
    assert (item["amount"], item["status"], item["captured_amount"], item["version"]) == (
        {"N": "9"}, {"S": "pending"}, {"N": "0"}, {"N": "1"},
    )  # fmt: skip  # the captured payment is gone: what process_payment_batch never does


def test_transactions_cancel_a_whole_chunk_on_one_conflict(service: PaymentService, models: BoundModels) -> None:
    service.create_payment(M, "k-3", 500, "USD")

    result = write_with_transactions([request(f"k-{i}") for i in range(5)], chunk_size=2, service=service)

    assert (result.items_written, result.chunks_committed, result.chunks_cancelled) == (3, 2, 1)
    assert [(c.first_index, c.size) for c in result.cancelled] == [(2, 2)]
    assert result.cancelled[0].reasons == {3: "ConditionalCheckFailed"}
    assert raw_item(models, payment_id_for(M, "k-2")) is None  # new, but in the cancelled chunk
    assert raw_item(models, payment_id_for(M, "k-3"))["amount"] == {"N": "500"}
    assert stored_count(models) == 4


@pytest.mark.parametrize("write", [write_with_batch_write_item, write_with_transactions])
def test_the_alternatives_refuse_bad_input_before_writing(service: PaymentService, models: BoundModels, write) -> None:
    with pytest.raises(ValidationError) as invalid:
        write([request("a"), request("b", 0)], service=service)
    assert invalid.value.field == "requests[1].amount"
    with pytest.raises(ValidationError) as repeated:
        write([request("a"), request("b"), request("a", 5)], service=service)
    assert repeated.value.field == "requests[2]" and "requests[0]" in str(repeated.value)
    assert stored_count(models) == 0


# -- arguments and logs -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_workers": 0}, "max_workers"),
        ({"max_workers": MAX_WORKERS_LIMIT + 1}, "max_workers"),
        ({"max_workers": 2.0}, "max_workers"),
        ({"max_workers": True}, "max_workers"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"base_delay": -0.1}, "base_delay"),
        ({"base_delay": float("nan")}, "base_delay"),
        ({"max_delay": float("inf")}, "max_delay"),
        ({"base_delay": 1.0, "max_delay": 0.5}, "max_delay"),
        ({"sleep": 1}, "sleep"),
        ({"rng": 42}, "rng"),
        ({"requests": {"merchant_id": M}}, "requests"),
        ({"requests": "abc"}, "requests"),
        ({"requests": None}, "requests"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_written(
    service: PaymentService, models: BoundModels, kwargs: dict, field: str
) -> None:
    arguments = {"requests": [request("k")], "service": service} | kwargs
    with pytest.raises(ValidationError) as error:
        process_payment_batch(arguments.pop("requests"), **arguments)
    assert error.value.field == field
    assert stored_count(models) == 0


@pytest.mark.parametrize("chunk_size", [0, 101])
def test_transaction_chunks_are_at_most_one_hundred(service: PaymentService, chunk_size: int) -> None:
    with pytest.raises(ValidationError, match="chunk_size"):
        write_with_transactions([request("k")], chunk_size=chunk_size, service=service)


def test_logs_say_what_happened_without_free_text(service: PaymentService, caplog: pytest.LogCaptureFixture) -> None:
    card = "4111111111111111"
    with caplog.at_level("DEBUG", logger="payment_examples"):
        process_payment_batch(
            [request("k", description=f"card {card}", metadata={"pan": card}), request("k", 5)],
            service=service,
            max_workers=1,
        )
    summary = [r for r in caplog.records if r.getMessage() == "payment batch processed"]
    assert len(summary) == 1 and summary[0].counts["duplicate_in_batch"] == summary[0].counts["created"] == 1
    assert caplog.records and all(card not in repr(vars(record)) for record in caplog.records)
