"""IdempotencyMiddleware on moto in-process: replay, payload checks on every path, leases, errors, limits."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError

from payment_examples.core.aws import dynamodb
from payment_examples.core.clock import FixedClock, SeededIds
from payment_examples.core.config import Settings
from payment_examples.core.errors import (
    IdempotencyInProgressError,
    IdempotencyKeyError,
    IdempotencyKeyReuseError,
    IdempotencyResultError,
    ValidationError,
)
from payment_examples.idempotency.middleware import MAX_ITEM_BYTES, FinalError, IdempotencyMiddleware, Outcome
from payment_examples.tables.models import bind_models
from tests.conftest import START


class Counter:
    def __init__(self, value: Any = "done") -> None:
        self.calls = 0
        self.value = value

    def __call__(self) -> Any:
        self.calls += 1
        return self.value


class Declined(FinalError):
    """A final outcome: the card was declined; retrying will not change that."""


class RecordingClient:
    """Records the calls made; with ``strip_item`` it plays an engine that does not return the old item on a
    failed condition, which forces the consistent-read fallback."""

    def __init__(self, client: Any, *, strip_item: bool = False) -> None:
        self._client = client
        self._strip_item = strip_item
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            try:
                return method(*args, **kwargs)
            except ClientError as error:
                if self._strip_item:
                    error.response.pop("Item", None)
                raise

        return call


@pytest.fixture
def fixed() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def middleware(aws: Settings, fixed: FixedClock) -> IdempotencyMiddleware:
    return IdempotencyMiddleware(clock=fixed, ids=SeededIds(1), lease=timedelta(seconds=10))


def stored(settings: Settings, middleware: IdempotencyMiddleware, key: str, scope: str = "global") -> dict | None:
    table = bind_models(settings).idempotency.Meta.table_name
    response = dynamodb().get_item(
        TableName=table, Key={"key": {"S": middleware.record_key(scope, key)}}, ConsistentRead=True
    )
    return response.get("Item")


def test_first_call_runs_and_stores_repeat_replays_without_running(aws: Settings, middleware) -> None:
    fn = Counter({"id": "p-1", "amount": 100})
    first = middleware.process_outcome("k", fn, payload={"amount": 100})
    again = middleware.process_outcome("k", fn, payload={"amount": 100})

    assert (first.value, first.replayed) == ({"id": "p-1", "amount": 100}, False)
    assert (again.value, again.replayed) == ({"id": "p-1", "amount": 100}, True)
    assert fn.calls == 1
    assert stored(aws, middleware, "k")["status"]["S"] == "COMPLETED"


def test_repeat_is_one_round_trip(aws: Settings, middleware) -> None:
    middleware.process("k", Counter(), payload=1)
    client = RecordingClient(dynamodb())
    repeat = IdempotencyMiddleware(client=client, clock=middleware.clock)
    assert repeat.process("k", Counter("other"), payload=1) == "done"
    assert client.calls == ["put_item"]  # the failed conditional put returned the stored record


@pytest.mark.parametrize("value", [0, False, {}, [], "", None, Decimal("1.50"), Decimal("0"), 0.0, {"$decimal": "x"}])
def test_falsy_and_decimal_results_replay_with_same_value_and_type(middleware, value: Any) -> None:
    fn = Counter(value)
    middleware.process("k", fn)
    replayed = middleware.process("k", fn)
    assert replayed == value and type(replayed) is type(value)
    assert fn.calls == 1


def test_in_progress_duplicate_raises_with_retry_after(middleware) -> None:
    def slow() -> str:
        with pytest.raises(IdempotencyInProgressError) as caught:
            middleware.process("k", Counter())
        assert 1 <= caught.value.retry_after <= 10
        assert caught.value.http_status == 409
        return "first"

    assert middleware.process("k", slow) == "first"


@pytest.mark.parametrize("reader", ["put", "get", "cache"])
def test_payload_mismatch_is_refused_on_every_path(aws: Settings, fixed, reader: str) -> None:
    client = RecordingClient(dynamodb(), strip_item=True) if reader == "get" else dynamodb()
    middleware = IdempotencyMiddleware(client=client, clock=fixed, cache_size=16 if reader == "cache" else 0)
    fn = Counter()
    middleware.process("k", fn, payload={"amount": 100})
    with pytest.raises(IdempotencyKeyReuseError) as caught:
        middleware.process("k", fn, payload={"amount": 999})
    assert caught.value.http_status == 422
    assert fn.calls == 1
    if reader == "get":
        assert "get_item" in client.calls  # the fallback path really ran


def test_payload_mismatch_while_in_progress_is_reuse_not_in_progress(middleware) -> None:
    def first() -> str:
        with pytest.raises(IdempotencyKeyReuseError):
            middleware.process("k", Counter(), payload="other")
        return "ok"

    middleware.process("k", first, payload="original")


def test_read_fallback_replays_and_reports_in_progress(aws: Settings, fixed) -> None:
    client = RecordingClient(dynamodb(), strip_item=True)
    middleware = IdempotencyMiddleware(client=client, clock=fixed)

    def first() -> str:
        with pytest.raises(IdempotencyInProgressError):
            middleware.process("k", Counter())
        return "value"

    middleware.process("k", first)
    assert middleware.process_outcome("k", Counter("other")) == Outcome("value", replayed=True)
    assert client.calls.count("get_item") == 2  # one for the in-progress answer, one for the replay


def test_cache_answers_without_a_round_trip_and_expires(aws: Settings, fixed) -> None:
    client = RecordingClient(dynamodb())
    middleware = IdempotencyMiddleware(client=client, clock=fixed, cache_size=16, lifetime=timedelta(hours=1))
    fn = Counter()
    middleware.process("k", fn)
    calls_before = len(client.calls)
    assert middleware.process_outcome("k", fn).replayed
    assert len(client.calls) == calls_before

    fixed.advance(timedelta(hours=2))  # the record has expired: neither cache nor table may replay it
    assert not middleware.process_outcome("k", fn).replayed
    assert fn.calls == 2


def test_expired_record_still_present_is_treated_as_absent(aws: Settings, middleware, fixed) -> None:
    middleware.process("k", Counter("old"), payload="a")
    fixed.advance(timedelta(hours=24, seconds=1))
    assert stored(aws, middleware, "k") is not None  # TTL deletes lazily; the item is still there
    outcome = middleware.process_outcome("k", Counter("new"), payload="b")  # another payload is fine now
    assert (outcome.value, outcome.replayed) == ("new", False)


def test_expired_lease_is_taken_over_and_the_late_finisher_cannot_overwrite(aws: Settings, middleware, fixed) -> None:
    second = Counter("second owner")

    def first_worker() -> str:
        fixed.advance(timedelta(seconds=11))  # stalls past its 10 s lease
        assert middleware.process_outcome("k", second).replayed is False  # taken over
        return "late first owner"

    assert middleware.process("k", first_worker) == "late first owner"
    assert second.calls == 1
    assert middleware.process("k", Counter("third")) == "second owner"  # the new owner's record survived


def test_late_failure_does_not_delete_the_new_owners_record(aws: Settings, middleware, fixed) -> None:
    def first_worker() -> str:
        fixed.advance(timedelta(seconds=11))
        middleware.process("k", Counter("second owner"))
        raise RuntimeError("the first worker fails late")

    with pytest.raises(RuntimeError):
        middleware.process("k", first_worker)
    assert middleware.process("k", Counter("third")) == "second owner"


def test_retryable_error_releases_the_claim(aws: Settings, middleware) -> None:
    attempts = Counter()

    def flaky() -> str:
        attempts()
        if attempts.calls == 1:
            raise ConnectionError("processor unreachable")
        return "charged"

    with pytest.raises(ConnectionError):
        middleware.process("k", flaky)
    assert stored(aws, middleware, "k") is None
    assert middleware.process("k", flaky) == "charged"
    assert attempts.calls == 2


def test_final_error_is_stored_and_replayed_like_a_result(middleware) -> None:
    attempts = Counter()

    def decline() -> None:
        attempts()
        raise Declined("card declined", code="51")

    for _ in range(3):
        with pytest.raises(Declined) as caught:
            middleware.process("k", decline)
        assert (caught.value.message, caught.value.details) == ("card declined", {"code": "51"})
    assert attempts.calls == 1


@pytest.mark.parametrize(
    ("result", "message"),
    [({1, 2}, "set"), ((1, 2), "tuple"), (object(), "object"), ("x" * MAX_ITEM_BYTES, "bytes")],
)
def test_unstorable_result_is_a_clear_error_and_never_runs_again(aws: Settings, middleware, result, message) -> None:
    fn = Counter(result)
    for _ in range(2):
        with pytest.raises(IdempotencyResultError, match=message):
            middleware.process("k", fn)
    assert fn.calls == 1
    assert stored(aws, middleware, "k")["status"]["S"] == "COMPLETED"  # no in-progress record left behind


@pytest.mark.parametrize("key", ["", "k" * 256, "line\nbreak", "tab\tkey", None, 42])
def test_bad_keys_are_refused_before_anything_runs(aws: Settings, middleware, key) -> None:
    fn = Counter()
    with pytest.raises(IdempotencyKeyError) as caught:
        middleware.process(key, fn)
    assert isinstance(caught.value, ValueError) and caught.value.http_status == 400
    assert fn.calls == 0
    table = bind_models(aws).idempotency.Meta.table_name
    assert dynamodb().scan(TableName=table)["Count"] == 0


def test_unhashable_payload_is_refused(middleware) -> None:
    with pytest.raises(ValidationError, match="payload"):
        middleware.process("k", Counter(), payload={"when": object()})


def test_keys_are_scoped_so_tenants_never_collide(middleware) -> None:
    fn = Counter()
    middleware.process("same-key", fn, scope="merchant-a", payload=1)
    middleware.process("same-key", fn, scope="merchant-b", payload=2)
    assert fn.calls == 2


def test_record_has_ttl_of_the_lifetime(aws: Settings, middleware) -> None:
    middleware.process("k", Counter())
    item = stored(aws, middleware, "k")
    assert int(item["expires_at"]["N"]) == int(START.timestamp()) + 24 * 3600
    assert "claim_token" not in item and "lease_expires_at" not in item


def test_configuration_is_validated() -> None:
    with pytest.raises(ValueError):
        IdempotencyMiddleware(lease=timedelta(0))
    with pytest.raises(ValueError):
        IdempotencyMiddleware(lease=timedelta(days=2), lifetime=timedelta(days=1))


def test_a_per_call_lease_longer_than_the_lifetime_keeps_the_record_alive(aws: Settings, fixed) -> None:
    middleware = IdempotencyMiddleware(clock=fixed, lifetime=timedelta(minutes=5), lease=timedelta(minutes=1))
    duplicate = Counter()

    def long_running() -> str:
        fixed.advance(timedelta(minutes=6))  # past the lifetime, still inside this call's 15-minute lease
        with pytest.raises(IdempotencyInProgressError):
            middleware.process("k", duplicate)
        return "done"

    assert middleware.process("k", long_running, lease=timedelta(minutes=15)) == "done"
    assert duplicate.calls == 0


def test_a_stalled_claim_is_not_taken_over_by_another_payload(middleware, fixed) -> None:
    other = Counter("charged 999")

    def stalled() -> str:
        fixed.advance(timedelta(seconds=11))  # the lease has run out
        with pytest.raises(IdempotencyKeyReuseError):
            middleware.process("k", other, payload={"amount": 999})
        return "charged 100"

    assert middleware.process("k", stalled, payload={"amount": 100}) == "charged 100"
    assert other.calls == 0


def test_the_whole_record_counts_toward_the_item_limit(aws: Settings, middleware) -> None:
    scope = "\U0001f4b3" * 255  # 255 four-byte characters: over 1 KB of scope alone
    fn = Counter("x" * (MAX_ITEM_BYTES - 1100))  # the result alone would fit
    with pytest.raises(IdempotencyResultError, match="bytes"):
        middleware.process("k", fn, scope=scope)
    with pytest.raises(IdempotencyResultError):
        middleware.process("k", fn, scope=scope)
    assert fn.calls == 1
    assert stored(aws, middleware, "k", scope)["status"]["S"] == "COMPLETED"


def test_an_engine_refusing_the_result_records_it_as_unstorable(aws: Settings, fixed) -> None:
    class RefusingClient(RecordingClient):
        def __getattr__(self, name: str) -> Any:
            method = super().__getattr__(name)
            if name != "update_item":
                return method

            def update_item(**kwargs: Any) -> Any:
                if kwargs["ExpressionAttributeValues"][":kind"]["S"] == "value":
                    raise ClientError({"Error": {"Code": "ValidationException", "Message": "too large"}}, "UpdateItem")
                return method(**kwargs)

            return update_item

    middleware = IdempotencyMiddleware(client=RefusingClient(dynamodb()), clock=fixed)
    fn = Counter()
    for _ in range(2):
        with pytest.raises(IdempotencyResultError, match="too large"):
            middleware.process("k", fn)
    assert fn.calls == 1
