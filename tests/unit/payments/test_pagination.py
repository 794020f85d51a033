"""Cursor pagination on moto in-process: exact pages (property-based), key conditions vs filters, totals, tenant
isolation, cursor tampering, validation, and the seed helper's items matching what create_payment stores."""

from __future__ import annotations

import base64
import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from unittest.mock import patch

import moto.dynamodb.models.table as moto_table
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from payment_examples.core.aws import dynamodb
from payment_examples.core.clock import FixedClock, SeededIds, SteppingClock
from payment_examples.core.config import Settings, use_settings
from payment_examples.core.errors import ConfigurationError, PaymentNotFoundError, ValidationError
from payment_examples.payments.pagination import (
    CURSOR_VERSION,
    InvalidCursorError,
    PagedResult,
    get_merchant_payments,
    iter_merchant_payments,
    peek_cursor,
    plan_query,
    sign_cursor,
)
from payment_examples.payments.seed import seed_payments
from payment_examples.payments.service import PaymentService
from payment_examples.payments.state_machine import PaymentStatus
from payment_examples.tables.models import Payment, created_key, merchant_status_key, payment_id_for

SECRET = "unit-test-cursor-secret-0123456789abcdef"
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
_merchants = itertools.count()


@pytest.fixture
def settings(aws: Settings) -> Iterator[Settings]:
    """The moto in-process tables, with a cursor secret configured."""
    with_secret = replace(aws, cursor_secret=SECRET)
    with use_settings(with_secret):
        yield with_secret


def new_merchant(prefix: str = "m") -> str:
    """A merchant id no other test or example has used: examples share the tables, never a partition."""
    return f"{prefix}-{next(_merchants)}"


class ListClock:
    """Returns the given instants in turn (ties included): datasets with exact, repeated creation times."""

    def __init__(self, instants: list[datetime]) -> None:
        self._instants = iter(instants)

    def now(self) -> datetime:
        return next(self._instants)


def walk(merchant_id: str, limit: int, **filters) -> list[PagedResult]:
    pages = list(iter_merchant_payments(merchant_id, limit=limit, **filters))
    assert len(pages) < 10_000
    return pages


def ids_of(pages: list[PagedResult]) -> list[str]:
    return [p.id for page in pages for p in page.items]


def expected(payments: list[Payment], order: str = "desc", **filters) -> list[str]:
    """The reference answer, computed in Python from what was written."""

    def keep(p: Payment) -> bool:
        status, low, high = filters.get("status"), filters.get("created_from"), filters.get("created_to")
        currency, min_amount, max_amount = filters.get("currency"), filters.get("min_amount"), filters.get("max_amount")
        return (
            (status is None or p.status == status)
            and (low is None or p.created_at >= low)
            and (high is None or p.created_at < high)
            and (currency is None or p.currency == currency)
            and (min_amount is None or p.amount >= min_amount)
            and (max_amount is None or p.amount <= max_amount)
        )

    chosen = sorted((p for p in payments if keep(p)), key=lambda p: p.created_key, reverse=order == "desc")
    return [p.id for p in chosen]


def assert_exact(pages: list[PagedResult], want: list[str], limit: int) -> None:
    got = ids_of(pages)
    assert got == want  # every match once, in order, nothing else
    assert len(got) == len(set(got))
    assert len(pages) == max(1, math.ceil(len(want) / limit))
    for page in pages[:-1]:
        assert len(page.items) == limit and page.next_cursor is not None
    assert pages[-1].next_cursor is None
    assert pages[-1].items or len(pages) == 1  # never an empty trailing page


# -- exact pages: property-based ----------------------------------------------------------------------------------

STATUSES = list(PaymentStatus)
CURRENCIES = ["USD", "EUR", "JPY"]


@st.composite
def scenarios(draw):
    n = draw(st.integers(0, 30))
    offsets = sorted(draw(st.lists(st.integers(0, 12), min_size=n, max_size=n)))  # ms; ties are likely
    data = {
        "instants": [T0 + timedelta(milliseconds=o) for o in offsets],
        "statuses": draw(st.lists(st.sampled_from(STATUSES), min_size=n, max_size=n)) or [PaymentStatus.PENDING],
        "currencies": draw(st.lists(st.sampled_from(CURRENCIES), min_size=n, max_size=n)) or ["USD"],
        "seed": draw(st.integers(0, 2**32)),
    }
    filters: dict = {"order": draw(st.sampled_from(["asc", "desc"]))}
    if draw(st.booleans()):
        filters["status"] = draw(st.sampled_from(STATUSES)).value
    bounds = [
        None if b is None else T0 + timedelta(milliseconds=b, microseconds=draw(st.sampled_from([0, 0, 1, 999])))
        for b in (draw(st.none() | st.integers(-1, 14)), draw(st.none() | st.integers(-1, 14)))
    ]
    if None not in bounds:
        bounds.sort()
    filters["created_from"], filters["created_to"] = bounds
    if draw(st.booleans()):
        filters["currency"] = draw(st.sampled_from(CURRENCIES))
    amounts = [draw(st.none() | st.integers(50, 1050)), draw(st.none() | st.integers(50, 1050))]
    if None not in amounts:
        amounts.sort()
    filters["min_amount"], filters["max_amount"] = amounts
    limit = draw(st.integers(1, 12))
    # DynamoDB ends a response at 1 MB; a small moto limit makes responses end after a few ~400-byte items.
    size_limit = draw(st.sampled_from([moto_table.RESULT_SIZE_LIMIT, 1_500, 3_000]))
    return data, filters, limit, size_limit


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@pytest.mark.slow  # seconds: make test runs it, make test-fast does not
@given(scenario=scenarios())
def test_walking_every_page_returns_each_match_exactly_once(settings: Settings, scenario) -> None:
    data, filters, limit, size_limit = scenario
    merchant = new_merchant()
    payments = seed_payments(
        merchant,
        len(data["instants"]),
        clock=ListClock(data["instants"]),
        ids=SeededIds(data["seed"]),
        statuses=data["statuses"],
        currencies=data["currencies"],
        amount_range=(100, 1000),
    )
    with patch.object(moto_table, "RESULT_SIZE_LIMIT", size_limit):
        pages = walk(merchant, limit, **filters)
        total = get_merchant_payments(merchant, limit=limit, include_total=True, **filters).total
    want = expected(payments, **filters)
    assert_exact(pages, want, limit)
    assert total == len(want)


# -- exact pages: the cases the property covers, spelled out ------------------------------------------------------


def test_pages_are_exact_when_dynamodb_ends_responses_early(settings: Settings) -> None:
    merchant = new_merchant()
    payments = seed_payments(merchant, 40, clock=SteppingClock(T0))
    table = settings.table_name("payments")
    with patch.object(moto_table, "RESULT_SIZE_LIMIT", 2_000):
        raw = dynamodb().query(
            TableName=table,
            IndexName="by-merchant-created",
            KeyConditionExpression="merchant_id = :m",
            ExpressionAttributeValues={":m": {"S": merchant}},
            Limit=8,
        )
        assert raw["Count"] < 8 and "LastEvaluatedKey" in raw  # the engine really ends responses early
        pages = walk(merchant, 7)
    assert_exact(pages, expected(payments), 7)
    assert sum(page.stats.requests for page in pages) > len(pages)  # pages were assembled from several responses


def test_limit_dividing_the_result_gives_no_empty_final_page(settings: Settings) -> None:
    merchant = new_merchant()
    payments = seed_payments(merchant, 12, clock=SteppingClock(T0))
    for limit in (1, 3, 4, 6, 12):
        assert_exact(walk(merchant, limit), expected(payments), limit)
    single = get_merchant_payments(merchant, limit=12)
    assert len(single.items) == 12 and single.next_cursor is None
    one_more = get_merchant_payments(merchant, limit=11)
    assert len(one_more.items) == 11 and one_more.next_cursor is not None


def test_an_empty_result_is_one_empty_page_without_cursor(settings: Settings) -> None:
    page = get_merchant_payments(new_merchant(), limit=5, include_total=True)
    assert (page.items, page.next_cursor, page.total) == ([], None, 0)


def test_newest_first_by_default_and_oldest_first_on_request(settings: Settings) -> None:
    merchant = new_merchant()
    payments = seed_payments(merchant, 5, clock=SteppingClock(T0))
    assert [p.id for p in get_merchant_payments(merchant).items] == [p.id for p in reversed(payments)]
    assert [p.id for p in get_merchant_payments(merchant, order="asc").items] == [p.id for p in payments]


def test_items_are_full_payments(settings: Settings) -> None:
    merchant = new_merchant()
    (seeded,) = seed_payments(merchant, 1, clock=SteppingClock(T0), statuses=["partially_refunded"])
    (item,) = get_merchant_payments(merchant).items
    assert isinstance(item, Payment)
    assert item.serialize() == seeded.serialize()


# -- time range: from inclusive, to exclusive ---------------------------------------------------------------------


def test_time_range_is_half_open_at_microsecond_precision(settings: Settings) -> None:
    merchant = new_merchant()
    step = timedelta(microseconds=1)
    payments = seed_payments(merchant, 6, clock=SteppingClock(T0, step), statuses=["captured"])
    at = [p.created_at for p in payments]

    def listed(**bounds) -> list[str]:
        return ids_of(walk(merchant, 2, order="asc", **bounds))

    assert listed(created_from=at[2]) == [p.id for p in payments[2:]]  # from: inclusive
    assert listed(created_to=at[2]) == [p.id for p in payments[:2]]  # to: exclusive
    assert listed(created_from=at[1], created_to=at[4]) == [p.id for p in payments[1:4]]
    assert listed(created_from=at[3], created_to=at[3]) == []  # empty range, not an error
    assert listed(created_from=at[1], created_to=at[4], status="captured") == [p.id for p in payments[1:4]]
    # Another timezone names the same instants.
    assert listed(created_from=at[1].astimezone(timezone(timedelta(hours=2))), created_to=at[2]) == [payments[1].id]


def test_equal_creation_times_are_ordered_by_id_and_split_cleanly_across_pages(settings: Settings) -> None:
    merchant = new_merchant()
    payments = seed_payments(merchant, 9, clock=FixedClock(T0))  # one instant for all
    want = expected(payments, order="asc")
    assert want == sorted(p.id for p in payments)
    assert_exact(walk(merchant, 2, order="asc"), want, 2)
    assert ids_of(walk(merchant, 4, created_from=T0, created_to=T0 + timedelta(microseconds=1))) == want[::-1]
    assert ids_of(walk(merchant, 4, created_to=T0)) == []


# -- key conditions vs filters, and totals ------------------------------------------------------------------------


def test_status_and_time_range_read_only_what_they_return(settings: Settings) -> None:
    merchant = new_merchant()
    payments = seed_payments(merchant, 110, clock=SteppingClock(T0))  # 10 refunded (1 in 11)
    page = get_merchant_payments(merchant, status="refunded", limit=100)
    assert len(page.items) == 10
    assert page.stats.scanned_count == page.stats.count == 10  # key condition: items read == items returned
    window = get_merchant_payments(merchant, created_from=payments[20].created_at, created_to=payments[30].created_at)
    assert len(window.items) == 10 and window.stats.scanned_count == 10


def test_a_filter_expression_reads_more_than_it_returns_but_pages_stay_exact(settings: Settings) -> None:
    merchant = new_merchant()
    payments = seed_payments(merchant, 60, clock=SteppingClock(T0), currencies=["USD", "EUR", "EUR", "EUR", "EUR"])
    pages = walk(merchant, 5, currency="USD")
    assert_exact(pages, expected(payments, currency="USD"), 5)
    read = sum(page.stats.scanned_count for page in pages)
    returned = sum(len(page.items) for page in pages)
    assert returned == 12 and read > 2 * returned
    assert get_merchant_payments(merchant, limit=100, currency="USD").stats.scanned_count == 60


def test_total_only_when_asked_and_independent_of_the_cursor(settings: Settings) -> None:
    merchant = new_merchant()
    payments = seed_payments(merchant, 30, clock=SteppingClock(T0))
    first = get_merchant_payments(merchant, limit=4)
    assert first.total is None and first.total_stats is None
    second = get_merchant_payments(merchant, first.next_cursor, 4, include_total=True)
    assert second.total == 30
    assert second.total_stats is not None and second.total_stats.scanned_count == 30  # a total reads every match
    captured = get_merchant_payments(merchant, limit=1, status="captured", include_total=True)
    assert captured.total == len(expected(payments, status="captured")) == 14  # 5 of every 11
    assert get_merchant_payments(merchant, limit=1, currency="JPY", include_total=True).total == 6  # 1 of every 5


def test_without_a_cursor_secret_nothing_is_listed(aws: Settings) -> None:
    merchant = new_merchant()
    seed_payments(merchant, 3)
    with pytest.raises(ConfigurationError, match="PAYMENT_CURSOR_SECRET"):
        get_merchant_payments(merchant, limit=1)
    with pytest.raises(ConfigurationError, match="PAYMENT_CURSOR_SECRET"):
        get_merchant_payments(merchant, limit=50)  # even a page that would need no cursor: fail predictably


# -- tenant isolation ---------------------------------------------------------------------------------------------

# Ids that share prefixes and contain the '#' of the derived keys: "acme#captured" must never be mistaken for
# acme's captured payments (their index key is "acme#captured"), nor "acme" for "acme-2".
TENANTS = ["acme", "acme#captured", "acme-2", "globex"]


@pytest.fixture
def tenants(settings: Settings) -> dict[str, list[Payment]]:
    written = {}
    for seed, merchant in enumerate(TENANTS):
        # Same clock start for everyone: creation times interleave and collide across merchants.
        written[merchant] = seed_payments(merchant, 25 + seed, clock=SteppingClock(T0), ids=SeededIds(seed))
    return written


ISOLATION_FILTERS = [
    {},
    {"status": "captured"},
    {"status": "refunded", "order": "asc"},
    {"created_from": T0 + timedelta(milliseconds=3), "created_to": T0 + timedelta(milliseconds=9)},
    {"currency": "USD", "min_amount": 1},
]


@pytest.mark.parametrize("filters", ISOLATION_FILTERS, ids=lambda f: ",".join(f) or "none")
def test_lists_return_only_the_callers_payments(tenants: dict[str, list[Payment]], filters: dict) -> None:
    for viewer, own in tenants.items():
        pages = walk(viewer, 4, **filters)
        assert {p.merchant_id for page in pages for p in page.items} <= {viewer}
        assert ids_of(pages) == expected(own, **filters)


def test_another_merchants_payment_reads_as_not_found(tenants: dict[str, list[Payment]]) -> None:
    service = PaymentService()
    for viewer, owner in itertools.permutations(TENANTS, 2):
        foreign = tenants[owner][0]
        with pytest.raises(PaymentNotFoundError) as caught:
            service.get_payment(viewer, foreign.id)
        assert str(caught.value) == f"payment {foreign.id!r} not found"  # the same words as a missing id
        assert service.get_payment(owner, foreign.id).id == foreign.id


@pytest.mark.parametrize("filters", ISOLATION_FILTERS, ids=lambda f: ",".join(f) or "none")
def test_a_cursor_issued_to_another_merchant_is_refused(tenants: dict[str, list[Payment]], filters: dict) -> None:
    for viewer, owner in itertools.permutations(TENANTS, 2):
        cursor = get_merchant_payments(owner, limit=1, **filters).next_cursor
        assert cursor is not None
        with pytest.raises(InvalidCursorError, match="another merchant") as caught:
            get_merchant_payments(viewer, cursor, 1, **filters)
        assert caught.value.field == "cursor"


# -- cursor tampering ---------------------------------------------------------------------------------------------


@pytest.fixture
def issued(settings: Settings) -> tuple[str, str]:
    merchant = new_merchant()
    seed_payments(merchant, 5, clock=SteppingClock(T0))
    cursor = get_merchant_payments(merchant, limit=2, status=None).next_cursor
    assert cursor is not None
    return merchant, cursor


def refused(merchant: str, cursor: object, match: str | None = None, **filters) -> InvalidCursorError:
    with pytest.raises(InvalidCursorError, match=match) as caught:
        get_merchant_payments(merchant, cursor, 2, **filters)
    assert isinstance(caught.value, ValidationError) and caught.value.field == "cursor"
    return caught.value


def test_the_issued_cursor_works_and_carries_its_binding(issued: tuple[str, str]) -> None:
    merchant, cursor = issued
    assert len(get_merchant_payments(merchant, cursor, 2).items) == 2
    payload = peek_cursor(cursor)
    assert payload["v"] == CURSOR_VERSION and payload["m"] == merchant and payload["i"] == "by-merchant-created"
    assert payload["o"] == "desc" and payload["f"] == plan_query(merchant).filter_digest()
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")  # URL-safe


def test_every_single_character_change_is_refused(issued: tuple[str, str]) -> None:
    merchant, cursor = issued
    for position, char in enumerate(cursor):
        for replacement in {"A", "B", "-", "_"} - {char}:
            refused(merchant, cursor[:position] + replacement + cursor[position + 1 :])


@pytest.mark.parametrize("cut", [1, 2, 10, 43, 44, 100])
def test_truncated_and_extended_cursors_are_refused(issued: tuple[str, str], cut: int) -> None:
    merchant, cursor = issued
    refused(merchant, cursor[:-cut])
    refused(merchant, cursor[cut:])
    refused(merchant, cursor + "A" * cut)


def test_a_payload_edited_without_the_key_is_refused(issued: tuple[str, str]) -> None:
    merchant, cursor = issued
    payload_text, signature = cursor.split(".")
    for change in ({"m": "someone-else"}, {"k": "2000-01-01T00:00:00.000000Z#x"}, {"v": 2}, {"o": "asc"}):
        forged = dict(peek_cursor(cursor), **change)
        text = base64.urlsafe_b64encode(json.dumps(forged, sort_keys=True).encode()).rstrip(b"=").decode()
        refused(merchant, f"{text}.{signature}", "signature")
    refused(merchant, sign_cursor(peek_cursor(cursor), "another-deployment-secret-0123456789abcdef"), "signature")


@pytest.mark.parametrize(
    "filters",
    [
        {"status": "captured"},
        {"order": "asc"},
        {"created_from": T0},
        {"created_to": T0 + timedelta(days=1)},
        {"currency": "USD"},
        {"min_amount": 0},
        {"max_amount": 10**9},
    ],
    ids=lambda f: next(iter(f)),
)
def test_a_cursor_used_with_other_filters_is_refused(issued: tuple[str, str], filters: dict) -> None:
    merchant, cursor = issued
    refused(merchant, cursor, "other filters", **filters)


def test_filters_that_name_the_same_set_keep_the_cursor_valid(settings: Settings) -> None:
    merchant = new_merchant()
    seed_payments(merchant, 5, clock=SteppingClock(T0))
    utc = T0 + timedelta(hours=1)
    cursor = get_merchant_payments(merchant, limit=2, created_to=utc, status="captured").next_cursor
    same_instant = utc.astimezone(timezone(timedelta(hours=-5)))
    page = get_merchant_payments(merchant, cursor, 2, status=PaymentStatus.CAPTURED, created_to=same_instant)
    # 4 of the 5 are captured: the second page holds the last 2. A cursor binds values, not their spelling.
    assert len(page.items) == 2 and page.next_cursor is None


@pytest.mark.parametrize("version", [0, 2, CURSOR_VERSION + 1, "1", None, True, 1.5])
def test_a_correctly_signed_cursor_of_another_format_version_is_refused(issued: tuple[str, str], version) -> None:
    merchant, cursor = issued
    payload = dict(peek_cursor(cursor), v=version)
    refused(merchant, sign_cursor(payload, SECRET), "format version")


@pytest.mark.parametrize(
    "payload",
    [
        ["not", "an", "object"],
        "a string",
        {"v": 1},
        {"k": 42},
        {"k": "not-a-created-key"},
        {"k": "2026-03-01T12:00:00.000000Z"},  # no id
        {"k": "2026-03-01T12:00:00.000000Z#a#b"},
    ],
    ids=repr,
)
def test_a_correctly_signed_but_malformed_payload_is_refused(issued: tuple[str, str], payload) -> None:
    merchant, cursor = issued
    if isinstance(payload, dict) and set(payload) != {"v"}:
        payload = dict(peek_cursor(cursor), **payload)
    refused(merchant, sign_cursor(payload, SECRET))


def test_signed_non_json_is_refused(issued: tuple[str, str]) -> None:
    from payment_examples.payments import pagination

    merchant, _ = issued
    text = base64.urlsafe_b64encode(b"\xff\xfe not json").rstrip(b"=").decode()
    refused(merchant, f"{text}.{pagination._mac(SECRET, text)}", "malformed")


@pytest.mark.parametrize("garbage", ["", " ", ".", "abc", "a.b", "%00", "null", "x" * 5000, 42, b"bytes", ["list"]])
def test_garbage_is_refused(issued: tuple[str, str], garbage: object) -> None:
    merchant, _ = issued
    refused(merchant, garbage)


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.text(max_size=400) | st.from_regex(r"[A-Za-z0-9_-]{1,300}\.[A-Za-z0-9_-]{43}", fullmatch=True))
def test_random_strings_are_refused_never_crash(issued: tuple[str, str], garbage: str) -> None:
    merchant, _ = issued
    refused(merchant, garbage)


# -- validation ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("merchant_id", {"merchant_id": ""}),
        ("limit", {"limit": 0}),
        ("limit", {"limit": 1001}),
        ("limit", {"limit": "10"}),
        ("limit", {"limit": True}),
        ("status", {"status": "settled"}),
        ("created_from", {"created_from": datetime(2026, 1, 1)}),  # naive
        ("created_to", {"created_to": "2026-01-01"}),
        ("created_from", {"created_from": T0 + timedelta(seconds=1), "created_to": T0}),
        ("order", {"order": "newest"}),
        ("currency", {"currency": "usd"}),
        ("min_amount", {"min_amount": -1}),
        ("max_amount", {"max_amount": 1.5}),
        ("min_amount", {"min_amount": 10, "max_amount": 9}),
    ],
)
def test_bad_arguments_name_the_argument(settings: Settings, field: str, kwargs: dict) -> None:
    arguments = {"merchant_id": "m-valid", **kwargs}
    with pytest.raises(ValidationError) as caught:
        get_merchant_payments(**arguments)
    assert caught.value.field == field


# -- the seed helper ----------------------------------------------------------------------------------------------


def test_seeded_payments_have_the_keys_create_payment_gives(settings: Settings) -> None:
    class OneKey:
        def new_id(self) -> str:
            return "idem-1"

    created = PaymentService(clock=FixedClock(T0)).create_payment("m-seed", "idem-1", 100, "USD").payment
    (seeded,) = seed_payments("m-seed", 1, clock=FixedClock(T0), ids=OneKey(), statuses=["pending"])
    assert seeded.id == created.id == payment_id_for("m-seed", "idem-1")
    assert seeded.created_key == created.created_key == created_key(T0, created.id)
    assert seeded.merchant_status == created.merchant_status == merchant_status_key("m-seed", "pending")
    assert (seeded.created_at, seeded.updated_at, seeded.version) == (created.created_at, created.updated_at, 1)
    assert ids_of([get_merchant_payments("m-seed", status="pending")]) == [created.id]


def test_seeding_is_deterministic_and_balances_match_the_status(settings: Settings) -> None:
    first = seed_payments("m-det", 22, clock=SteppingClock(T0), ids=SeededIds(5))
    again = seed_payments("m-det", 22, clock=SteppingClock(T0), ids=SeededIds(5))
    assert [p.serialize() for p in first] == [p.serialize() for p in again]
    assert [p.status for p in first[:11]] == [p.status for p in first[11:]]
    for p in first:
        assert isinstance(p.amount, int) and 1_00 <= p.amount <= 2_000_00
        captured, refunded = int(p.captured_amount), int(p.refunded_amount)
        if p.status in ("pending", "authorized", "voided", "failed"):
            assert captured == refunded == 0
        elif p.status == "captured":
            assert (captured, refunded) == (p.amount, 0)
        elif p.status == "partially_refunded":
            assert captured == p.amount and 0 < refunded < captured
        else:
            assert captured == refunded == p.amount
    listed = get_merchant_payments("m-det", limit=100, include_total=True)
    assert listed.total == 22  # the same ids again overwrite, they do not duplicate


@pytest.mark.parametrize(
    "kwargs",
    [{"n": -1}, {"n": 1.0}, {"statuses": []}, {"currencies": ["XYZ"]}, {"amount_range": (10, 5)}, {"statuses": ["x"]}],
)
def test_seed_refuses_bad_arguments(settings: Settings, kwargs: dict) -> None:
    arguments = {"merchant_id": "m-bad", "n": 1, **kwargs}
    with pytest.raises(ValueError):
        seed_payments(**arguments)
