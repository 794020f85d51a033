"""The merchant query handler (GET /payments, GET /payments/{id}) on moto in-process, REST v1 and HTTP API v2:
routing, identity from auth only, exact pages through the API, tenant isolation, and every parameter error."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from payment_examples.core.clock import SeededIds, SteppingClock
from payment_examples.core.config import Settings, use_settings
from payment_examples.handlers import query
from payment_examples.handlers.http import payment_json, payment_links
from payment_examples.payments.seed import seed_payments
from payment_examples.tables.models import Payment
from tests.api_events import HS_SECRET, api_event, token

VERSIONS = ["1.0", "2.0"]
SECRET = "handler-test-cursor-secret-0123456789abcdef"
T0 = datetime(2026, 4, 1, 8, tzinfo=UTC)
MERCHANTS = ("merchant-1", "merchant-2", "merchant-1#captured")


@pytest.fixture
def settings(aws: Settings):
    configured = replace(aws, jwt_secret=HS_SECRET, cursor_secret=SECRET)
    with use_settings(configured):
        yield configured


@pytest.fixture
def data(settings: Settings) -> dict[str, list[Payment]]:
    """Three merchants on one clock (interleaved, colliding creation times); merchant-1 has 30 payments."""
    return {
        merchant: seed_payments(merchant, n, clock=SteppingClock(T0), ids=SeededIds(i))
        for i, (merchant, n) in enumerate(zip(MERCHANTS, (30, 12, 7), strict=True))
    }


def get(
    path: str = "/payments",
    query_params: dict[str, str] | None = None,
    *,
    version: str = "2.0",
    merchant: str | None = "merchant-1",
    auth: str | None = None,
    method: str = "GET",
) -> dict:
    """A request authenticated with a Bearer JWT for ``merchant`` (or ``auth`` as the raw header)."""
    headers = {}
    if auth is not None:
        headers["Authorization"] = auth
    elif merchant is not None:
        headers["Authorization"] = f"Bearer {token(merchant_id=merchant)}"
    return query.handler(api_event(version, method, path, headers=headers, query=query_params), None)


def ok(response: dict) -> Any:
    assert response["statusCode"] == 200, response
    assert response["headers"]["Content-Type"] == "application/json"
    assert response["headers"]["Cache-Control"] == "no-store"
    return json.loads(response["body"])


def problem(response: dict, status: int) -> dict:
    assert response["statusCode"] == status, response
    assert response["headers"]["Content-Type"] == "application/problem+json"
    body = json.loads(response["body"])
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def newest_first(payments: list[Payment]) -> list[str]:
    return [p.id for p in sorted(payments, key=lambda p: p.created_key, reverse=True)]


def walk(query_params: dict[str, str], *, versions=VERSIONS, merchant: str = "merchant-1") -> list[dict]:
    """Every page, alternating REST and HTTP API events (a cursor is not tied to the API flavour)."""
    pages, cursor = [], None
    for i in range(1000):
        params = {**query_params, **({"cursor": cursor} if cursor else {})}
        page = ok(get(query_params=params, version=versions[i % len(versions)], merchant=merchant))
        pages.append(page)
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError("pagination does not end")


# -- listing ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_list_body_shape_and_item_fields(data: dict[str, list[Payment]], version: str) -> None:
    body = ok(get(query_params={"limit": "5"}, version=version))
    assert set(body) == {"items", "next_cursor"}
    assert len(body["items"]) == 5 and isinstance(body["next_cursor"], str)
    newest = max(data["merchant-1"], key=lambda p: p.created_key)
    # the same fields as the process handler's 201 body, and the links to what may be done next
    assert body["items"][0] == {**payment_json(newest), "links": payment_links(newest)}
    for item in body["items"]:
        assert {"id", "amount", "currency", "status", "created_at", "updated_at", "merchant_id"} <= set(item)
        assert type(item["amount"]) is int and type(item["captured_amount"]) is int
        assert datetime.fromisoformat(item["created_at"]).utcoffset() == timedelta(0)
        assert item["created_at"].endswith("Z")


def test_each_answer_says_what_it_was_read_from(data: dict[str, list[Payment]]) -> None:
    page = get(query_params={"limit": "5"})
    assert page["headers"]["Read-From"] == "index; eventually consistent"  # a merchant index (a GSI)
    one = get(f"/payments/{data['merchant-1'][0].id}")
    assert ok(one)["id"] == data["merchant-1"][0].id
    assert one["headers"]["Read-From"] == "item; consistent"  # the item itself: sees a write answered just now


def test_walking_pages_through_the_api_returns_each_payment_once(data: dict[str, list[Payment]]) -> None:
    pages = walk({"limit": "7"})
    assert [len(p["items"]) for p in pages] == [7, 7, 7, 7, 2]
    assert [i["id"] for p in pages for i in p["items"]] == newest_first(data["merchant-1"])
    assert all("total" not in p for p in pages)


def test_default_page_size_and_the_largest_page(data: dict[str, list[Payment]]) -> None:
    more = seed_payments("merchant-big", 120, clock=SteppingClock(T0))
    default = ok(get(merchant="merchant-big"))
    assert len(default["items"]) == query.DEFAULT_PAGE_SIZE and default["next_cursor"]
    largest = ok(get(query_params={"limit": "100"}, merchant="merchant-big"))
    assert [i["id"] for i in largest["items"]] == newest_first(more)[:100]


def test_total_is_added_only_when_asked(data: dict[str, list[Payment]]) -> None:
    for value in ("true", "1", "TRUE"):
        assert ok(get(query_params={"include_total": value, "limit": "2"}))["total"] == 30
    assert "total" not in ok(get(query_params={"include_total": "false"}))
    assert ok(get(query_params={"include_total": "true", "status": "refunded"}))["total"] == 3


def test_filters_and_order(data: dict[str, list[Payment]]) -> None:
    own = data["merchant-1"]
    asc = [i["id"] for p in walk({"order": "asc", "limit": "4", "status": "captured"}) for i in p["items"]]
    assert asc == [p.id for p in sorted(own, key=lambda p: p.created_key) if p.status == "captured"]

    start, end = own[5].created_at, own[17].created_at  # from inclusive, to exclusive
    window = {"from": start.isoformat(), "to": end.isoformat().replace("+00:00", "Z"), "limit": "5"}
    assert [i["id"] for p in walk(window) for i in p["items"]] == newest_first(own[5:17])
    shifted = {"from": start.astimezone(datetime.fromisoformat("2026-01-01T00:00+05:30").tzinfo).isoformat()}
    assert len(ok(get(query_params={**shifted, "limit": "100"}))["items"]) == 25

    assert ok(get(query_params={"from": "2026-04-02"}))["items"] == []  # a date is UTC midnight
    assert len(ok(get(query_params={"to": "2026-04-02", "limit": "100"}))["items"]) == 30

    usd = [i for p in walk({"currency": "USD", "min_amount": "10000", "limit": "3"}) for i in p["items"]]
    want = [p for p in own if p.currency == "USD" and p.amount >= 10000]
    assert [i["id"] for i in usd] == newest_first(want) and all(i["currency"] == "USD" for i in usd)


def test_a_named_stage_prefix_and_a_trailing_slash_route_the_same(data: dict[str, list[Payment]]) -> None:
    event = api_event("2.0", "GET", "/prod/payments", headers={"Authorization": f"Bearer {token()}"})
    event["requestContext"]["stage"] = "prod"
    staged = ok(query.handler(event, None))
    assert staged == ok(get()) == ok(get("/payments/"))


# -- one payment --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_get_one_payment(data: dict[str, list[Payment]], version: str) -> None:
    payment = data["merchant-1"][3]
    assert ok(get(f"/payments/{payment.id}", version=version)) == {**payment_json(payment),
                                                                   "links": payment_links(payment)}  # fmt: skip


def test_every_payment_answered_links_to_what_its_status_and_balances_allow(data: dict[str, list[Payment]]) -> None:
    """One payment of each status the seed writes: its links, in a page and alone, written out by hand."""
    expected = {
        "pending": lambda p: {"void": {}},
        "authorized": lambda p: {"capture": {"max_amount": int(p.amount)}, "void": {}},
        "captured": lambda p: {"refund": {"max_amount": int(p.amount)}},
        "partially_refunded": lambda p: {"refund": {"max_amount": int(p.amount) - int(p.amount) // 2}},
        "refunded": lambda p: {},
        "voided": lambda p: {},
        "failed": lambda p: {},
    }
    paths = {"capture": "capture", "refund": "refunds", "void": "void"}
    page = {i["id"]: i for i in ok(get(query_params={"limit": "100"}))["items"]}
    for status, actions in expected.items():
        payment = next(p for p in data["merchant-1"] if p.status == status)
        base = f"/payments/{payment.id}"
        want = {"self": {"href": base, "method": "GET"}} | {
            name: {"href": f"{base}/{paths[name]}", "method": "POST", **limits}
            for name, limits in actions(payment).items()
        }
        assert page[payment.id]["links"] == want, status
        assert ok(get(base))["links"] == want, status


@pytest.mark.parametrize("version", VERSIONS)
def test_another_merchants_payment_is_a_404_like_a_missing_one(data: dict[str, list[Payment]], version: str) -> None:
    foreign = data["merchant-2"][0]
    missing_id = "00000000-0000-4000-8000-000000000000"
    foreign_body = problem(get(f"/payments/{foreign.id}", version=version), 404)
    missing_body = problem(get(f"/payments/{missing_id}", version=version), 404)
    assert foreign_body == {**missing_body, "detail": missing_body["detail"].replace(missing_id, foreign.id)}
    assert "merchant-2" not in json.dumps(foreign_body)
    assert ok(get(f"/payments/{foreign.id}", merchant="merchant-2"))["id"] == foreign.id


# -- tenant isolation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("viewer", MERCHANTS)
def test_each_merchant_sees_only_its_own_payments(data: dict[str, list[Payment]], viewer: str) -> None:
    for params in ({"limit": "4"}, {"limit": "3", "status": "captured"}, {"limit": "5", "currency": "USD"}):
        items = [i for p in walk(params, merchant=viewer) for i in p["items"]]
        assert {i["merchant_id"] for i in items} <= {viewer}
        assert len(items) == len([p for p in data[viewer] if all(
            getattr(p, k) == v for k, v in params.items() if k in ("status", "currency"))])  # fmt: skip
    for owner in set(MERCHANTS) - {viewer}:
        for payment in data[owner][:3]:
            problem(get(f"/payments/{payment.id}", merchant=viewer), 404)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_merchant_comes_from_credentials_never_from_the_query(data: dict, version: str) -> None:
    body = problem(get(query_params={"merchant_id": "merchant-2"}, version=version), 400)
    assert body["invalid_params"][0]["name"] == "merchant_id"
    claims_event = api_event(version, "GET", "/payments", claims={"merchant_id": "merchant-2"}, query={"limit": "50"})
    items = ok(query.handler(claims_event, None))["items"]
    assert {i["merchant_id"] for i in items} == {"merchant-2"} and len(items) == 12


def test_a_cursor_issued_to_another_merchant_is_a_400(data: dict[str, list[Payment]]) -> None:
    for owner, viewer in (("merchant-1", "merchant-2"), ("merchant-2", "merchant-1#captured")):
        cursor = ok(get(query_params={"limit": "2"}, merchant=owner))["next_cursor"]
        body = problem(get(query_params={"limit": "2", "cursor": cursor}, merchant=viewer), 400)
        assert body["invalid_params"] == [{"name": "cursor", "reason": "was issued for another merchant"}]


# -- authentication and routing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", ["/payments", "/payments/some-id"])
def test_no_or_bad_credentials_are_401(settings: Settings, version: str, path: str) -> None:
    for auth in (None, "Bearer not.a.jwt", f"Bearer {token(secret='another-secret-that-is-32-bytes-long!!')}"):
        response = get(path, version=version, merchant=None, auth=auth)
        problem(response, 401)
        assert response["headers"]["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405_with_allow(settings: Settings, version: str, method: str) -> None:
    response = get(method=method, version=version)
    problem(response, 405)
    assert response["headers"]["Allow"] == "GET"


@pytest.mark.parametrize("path", ["/", "/payment", "/payments/a/b", "/merchants/m/payments", "/paymentsx"])
def test_unknown_paths_are_404(settings: Settings, path: str) -> None:
    problem(get(path), 404)


def test_a_non_proxy_event_is_a_400(settings: Settings) -> None:
    problem(query.handler(["not", "an", "event"], None), 400)  # type: ignore[arg-type]


# -- parameter validation -----------------------------------------------------------------------------------------

BAD_PARAMETERS = [
    ({"status": "settled"}, "status"),
    ({"status": ""}, "status"),
    ({"from": "yesterday"}, "from"),
    ({"from": "2026-13-01"}, "from"),
    ({"from": "2026-04-01T08:00:00"}, "from"),  # no offset: ambiguous
    ({"to": "2026-04-01T25:00:00Z"}, "to"),
    ({"to": "1700000000"}, "to"),
    ({"from": "2026-04-02", "to": "2026-04-01"}, "from"),
    ({"from": "0001-01-01T00:00:00+01:00"}, "from"),  # before year 1 in UTC
    ({"to": "9999-12-31T23:30:00-01:00"}, "to"),  # after year 9999 in UTC
    ({"limit": "0"}, "limit"),
    ({"limit": "101"}, "limit"),
    ({"limit": "-1"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"limit": "1.5"}, "limit"),
    ({"limit": ""}, "limit"),
    ({"cursor": ""}, "cursor"),
    ({"cursor": "garbage"}, "cursor"),
    ({"cursor": "eyJ2IjoxfQ.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, "cursor"),
    ({"order": "newest"}, "order"),
    ({"order": "DESC"}, "order"),
    ({"include_total": "maybe"}, "include_total"),
    ({"currency": "usd"}, "currency"),
    ({"min_amount": "-5"}, "min_amount"),
    ({"min_amount": "1e3"}, "min_amount"),
    ({"max_amount": "99999999999999"}, "max_amount"),
    ({"min_amount": "500", "max_amount": "100"}, "min_amount"),
    ({"page": "2"}, "page"),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("params", "name"), BAD_PARAMETERS, ids=[f"{n}={p[n]!r}" for p, n in BAD_PARAMETERS])
def test_bad_parameters_are_400_naming_the_parameter(data: dict, version: str, params: dict, name: str) -> None:
    body = problem(get(query_params=params, version=version), 400)
    assert body["type"].endswith("/invalid-request")
    assert [p["name"] for p in body["invalid_params"]] == [name]
    assert body["invalid_params"][0]["reason"]


def test_a_repeated_parameter_is_a_400(data: dict) -> None:
    event = api_event("1.0", "GET", "/payments", headers={"Authorization": f"Bearer {token()}"}, query={"limit": "5"})
    event["multiValueQueryStringParameters"] = {"limit": ["5", "10"]}
    body = problem(query.handler(event, None), 400)
    assert body["invalid_params"][0]["name"] == "limit"


def test_a_cursor_with_other_filters_is_a_400(data: dict) -> None:
    cursor = ok(get(query_params={"limit": "2", "status": "captured"}))["next_cursor"]
    assert ok(get(query_params={"limit": "2", "status": "captured", "cursor": cursor}))["items"]
    for changed in ({"status": "pending"}, {}, {"status": "captured", "order": "asc"}):
        body = problem(get(query_params={"limit": "2", "cursor": cursor, **changed}), 400)
        assert body["invalid_params"][0]["name"] == "cursor"


def test_no_cursor_secret_is_a_500_that_reveals_nothing(aws: Settings) -> None:
    with use_settings(replace(aws, jwt_secret=HS_SECRET)):
        body = problem(get(), 500)
    assert body["detail"] == "the request could not be processed"


# -- Lambda container behaviour -----------------------------------------------------------------------------------


def test_import_creates_no_clients() -> None:
    code = (
        "import payment_examples.handlers.query, payment_examples.core.aws as aws\n"
        "import payment_examples.tables.models as m\n"
        "assert aws._client.cache_info().currsize == 0 and m.bind_models.cache_info().currsize == 0\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_service_is_built_once_and_reused(data: dict[str, list[Payment]]) -> None:
    query._default_service.cache_clear()
    for payment in data["merchant-1"][:3]:
        ok(get(f"/payments/{payment.id}"))
    info = query._default_service.cache_info()
    assert (info.misses, info.hits) == (1, 2)


def test_years_before_1000_bound_ranges_correctly(data: dict[str, list[Payment]]) -> None:
    everything = len(data["merchant-1"])
    assert ok(get(query_params={"from": "0001-01-01", "to": "0500-01-01", "limit": "100"}))["items"] == []
    assert len(ok(get(query_params={"from": "0999-01-01", "to": "9999-01-01", "limit": "100"}))["items"]) == everything
