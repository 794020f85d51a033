"""A merchant's payments, page by page: signed cursors and ``get_merchant_payments``.

What a page costs and why it is exact:

* **Key conditions, not filters.** Status and creation-time range are served by the merchant indexes' key
  conditions (``by-merchant-status`` when a status is given, else ``by-merchant-created``; the sort key of both is
  ``created_key`` = ``<created_at>#<id>``). DynamoDB bills a query by the bytes it *reads*, and with a key condition
  it reads only matching items: the items read are proportional to the items returned. Currency and amount range
  have no index, so they are a ``FilterExpression``: DynamoDB reads every item the key condition selects and
  discards the others *after* billing for them. They are offered, and documented as costlier.
* **Exact pages.** DynamoDB's ``Limit`` counts items read (before a filter) and a response stops at 1 MB, so one
  request may return fewer items than asked, or none while more exist. We keep querying until ``limit + 1``
  matching items are in hand (or the index is exhausted): the first ``limit`` are the page and the extra one only
  proves that something is left. The cursor is built from the last item *returned*, never from DynamoDB's
  ``LastEvaluatedKey``, so walking every page yields each matching payment exactly once, in order, and
  ``next_cursor`` is ``None`` exactly when nothing is left (no empty final page). The look-ahead item costs one
  more item read per page (a few hundred bytes inside the same 4 KB read unit, in practice nothing).
* **Time range.** ``created_from`` is inclusive and ``created_to`` exclusive (half-open, so consecutive ranges
  tile). Because ``created_key`` is the fixed-width UTC time followed by ``#<id>``, the bounds are exact as the
  key condition ``created_key BETWEEN "<from>" AND "<to>"``: every key of an instant ``t`` with
  ``from <= t < to`` sorts between them, and a key of the instant ``to`` itself sorts after ``"<to>"`` (it is
  longer, with the same prefix), so it is excluded.
* **Totals cost reads.** ``include_total=True`` runs a second, paginated ``Select=COUNT`` query over the whole
  result set: it reads (and bills) every matching item, whatever the page size. Ask for it once, not per page.
* **Consistency.** Global secondary indexes are eventually consistent: a payment created or changed a moment ago
  may be missing from a page, or (after a status change) be listed under its old status for a moment.

Cursors are opaque to clients, URL-safe and signed with HMAC-SHA256 under ``PAYMENT_CURSOR_SECRET``
(``Settings.cursor_secret``). Without a secret nothing is listed at all (``ConfigurationError``): we never sign
with a default key. A cursor is bound to the merchant, the index, the filter set and the order it was issued
for, and carries a format version; anything else (tampered, truncated, foreign, of another version, or garbage)
raises ``InvalidCursorError`` (HTTP 400, parameter ``cursor``) before DynamoDB is called. Cursors are signed, not
encrypted: they hold the position (the last item's ``created_key``, i.e. its creation time and id) and nothing the
merchant cannot see anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from payment_examples.core import ConfigurationError, Settings, ValidationError, aws, get_settings, identifier
from payment_examples.core.money import MAX_AMOUNT, currency_exponent
from payment_examples.payments.state_machine import PaymentStatus
from payment_examples.tables import Payment, get_models, merchant_status_key, sortable_time

CURSOR_VERSION = 1
MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
MAX_CURSOR_LENGTH = 2048
# With a FilterExpression, DynamoDB's Limit counts items *read*; read at least this many per request so a sparse
# filter does not turn into one round trip per matching item.
FILTER_READ_BATCH = 100

CREATED_INDEX = "by-merchant-created"
STATUS_INDEX = "by-merchant-status"

_MAC_CONTEXT = b"payment-examples/cursor\x00"  # domain separation: this key signs cursors and nothing else
_CURSOR_RE = re.compile(r"^[A-Za-z0-9_-]{1,2000}\.[A-Za-z0-9_-]{43}$")
_CREATED_KEY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z#[^#]+$")


class Order(StrEnum):
    ASC = "asc"  # oldest first
    DESC = "desc"  # newest first


class InvalidCursorError(ValidationError):
    """The cursor is not one this service issued for this merchant, index, filter set and order (HTTP 400)."""

    def __init__(self, message: str) -> None:
        super().__init__("cursor", message)


# ---------------------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class QueryStats:
    """What the DynamoDB requests behind a result did.

    ``scanned_count`` is DynamoDB's ScannedCount: the items *read* (matched by the key condition), which is what a
    query is billed on (their bytes, rounded up to 4 KB per request). ``count`` is the items that came back after
    any FilterExpression. ``consumed_capacity`` is the sum of ``ConsumedCapacity.CapacityUnits`` as the engine
    reported it (DynamoDB computes it from bytes read; moto reports a flat 1.0 per query request).
    """

    requests: int = 0
    scanned_count: int = 0
    count: int = 0
    consumed_capacity: float = 0.0

    def __add__(self, other: QueryStats) -> QueryStats:
        return QueryStats(
            self.requests + other.requests,
            self.scanned_count + other.scanned_count,
            self.count + other.count,
            self.consumed_capacity + other.consumed_capacity,
        )

    @classmethod
    def of(cls, response: dict[str, Any]) -> QueryStats:
        capacity = (response.get("ConsumedCapacity") or {}).get("CapacityUnits", 0.0)
        return cls(1, int(response.get("ScannedCount", 0)), int(response.get("Count", 0)), float(capacity))


@dataclass(frozen=True)
class PagedResult:
    """One page: ``items`` in the requested order, ``next_cursor`` (None when nothing is left) and ``total``
    (the size of the whole result set, only when asked for). ``stats`` describes the page's requests and
    ``total_stats`` the count query's."""

    items: list[Payment]
    next_cursor: str | None
    total: int | None = None
    stats: QueryStats = field(default_factory=QueryStats)
    total_stats: QueryStats | None = None


# ---------------------------------------------------------------------------------------------------------------
# The query plan: which index, which key condition, which filter


@dataclass(frozen=True)
class QueryPlan:
    """A validated request, turned into the index, key condition and filter that serve it."""

    merchant_id: str
    status: PaymentStatus | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    order: Order = Order.DESC
    currency: str | None = None
    min_amount: int | None = None
    max_amount: int | None = None

    @property
    def index(self) -> str:
        return STATUS_INDEX if self.status is not None else CREATED_INDEX

    @property
    def hash_attribute(self) -> str:
        return "merchant_status" if self.status is not None else "merchant_id"

    @property
    def hash_value(self) -> str:
        if self.status is not None:
            return merchant_status_key(self.merchant_id, self.status)
        return self.merchant_id

    @property
    def filtered(self) -> bool:
        """True when a FilterExpression is needed (items read may then exceed items returned)."""
        return self.currency is not None or self.min_amount is not None or self.max_amount is not None

    def filter_digest(self) -> str:
        """A short digest of everything that decides the result set and its order, for binding cursors."""
        canonical = json.dumps(
            {
                "status": self.status.value if self.status is not None else None,
                "from": time_bound(self.created_from) if self.created_from is not None else None,
                "to": time_bound(self.created_to) if self.created_to is not None else None,
                "order": self.order.value,
                "currency": self.currency,
                "min_amount": self.min_amount,
                "max_amount": self.max_amount,
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return _b64encode(hashlib.sha256(canonical.encode()).digest()[:16])

    def request(self, table_name: str) -> dict[str, Any]:
        """The Query request (without Limit / ExclusiveStartKey / Select)."""
        names = {"#h": self.hash_attribute}
        values: dict[str, Any] = {":h": {"S": self.hash_value}}
        condition = "#h = :h"
        low = time_bound(self.created_from) if self.created_from is not None else None
        high = time_bound(self.created_to) if self.created_to is not None else None
        if low is not None or high is not None:
            names["#k"] = "created_key"
        if low is not None and high is not None:
            condition += " AND #k BETWEEN :low AND :high"
            values.update({":low": {"S": low}, ":high": {"S": high}})
        elif low is not None:
            condition += " AND #k >= :low"
            values[":low"] = {"S": low}
        elif high is not None:
            condition += " AND #k < :high"
            values[":high"] = {"S": high}

        filters = []
        if self.currency is not None:
            names["#cur"] = "currency"
            values[":cur"] = {"S": self.currency}
            filters.append("#cur = :cur")
        if self.min_amount is not None:
            names["#amt"] = "amount"
            values[":amin"] = {"N": str(self.min_amount)}
            filters.append("#amt >= :amin")
        if self.max_amount is not None:
            names["#amt"] = "amount"
            values[":amax"] = {"N": str(self.max_amount)}
            filters.append("#amt <= :amax")

        request: dict[str, Any] = {
            "TableName": table_name,
            "IndexName": self.index,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": self.order is Order.ASC,
            "ReturnConsumedCapacity": "TOTAL",
        }
        if filters:
            request["FilterExpression"] = " AND ".join(filters)
        return request

    def start_key(self, last_created_key: str) -> dict[str, Any]:
        """The ExclusiveStartKey that resumes after the item whose sort key is ``last_created_key``."""
        payment_id = last_created_key.split("#", 1)[1]
        return {
            "id": {"S": payment_id},
            self.hash_attribute: {"S": self.hash_value},
            "created_key": {"S": last_created_key},
        }


def time_bound(value: datetime) -> str:
    """The ``created_key`` prefix of an instant (the same format, so bounds compare exactly with the keys)."""
    return sortable_time(value)


def plan_query(
    merchant_id: str,
    *,
    status: PaymentStatus | str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    order: Order | str = Order.DESC,
    currency: str | None = None,
    min_amount: int | None = None,
    max_amount: int | None = None,
) -> QueryPlan:
    """Validate the filters (``ValidationError`` naming the argument) and choose how to serve them."""
    identifier("merchant_id", merchant_id)
    if status is not None:
        try:
            status = PaymentStatus(status)
        except ValueError:
            allowed = ", ".join(s.value for s in PaymentStatus)
            raise ValidationError("status", f"unknown status {status!r}; one of: {allowed}") from None
    for name, value in (("created_from", created_from), ("created_to", created_to)):
        if value is not None and (not isinstance(value, datetime) or value.utcoffset() is None):
            raise ValidationError(name, "must be a timezone-aware datetime")
        try:
            if value is not None:
                time_bound(value)
        except OverflowError:
            raise ValidationError(name, "is outside the years 1 to 9999 in UTC") from None
    if created_from is not None and created_to is not None and created_from > created_to:
        raise ValidationError("created_from", "must not be after created_to")
    try:
        order = Order(order)
    except ValueError:
        raise ValidationError("order", f"must be 'asc' or 'desc', got {order!r}") from None
    if currency is not None:
        currency_exponent(currency)
    for name, value in (("min_amount", min_amount), ("max_amount", max_amount)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValidationError(name, f"must be a non-negative integer of minor units, got {value!r}")
        if value is not None and value > MAX_AMOUNT:
            raise ValidationError(name, f"must be at most {MAX_AMOUNT} minor units, got {value}")
    if min_amount is not None and max_amount is not None and min_amount > max_amount:
        raise ValidationError("min_amount", "must not be greater than max_amount")
    return QueryPlan(merchant_id, status, created_from, created_to, order, currency, min_amount, max_amount)


# ---------------------------------------------------------------------------------------------------------------
# Cursors


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, payload_text: str) -> str:
    return _b64encode(hmac.new(secret.encode(), _MAC_CONTEXT + payload_text.encode("ascii"), hashlib.sha256).digest())


def _require_secret(settings: Settings) -> str:
    if not settings.cursor_secret:
        raise ConfigurationError(
            "PAYMENT_CURSOR_SECRET is not set: pagination cursors cannot be signed, and unsigned cursors are not issued"
        )
    return settings.cursor_secret


def sign_cursor(payload: dict[str, Any], secret: str) -> str:
    """``<base64url(JSON payload)>.<base64url(HMAC-SHA256)>``. Exposed for tests and the notebook."""
    payload_text = _b64encode(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())
    return f"{payload_text}.{_mac(secret, payload_text)}"


def encode_cursor(plan: QueryPlan, last_created_key: str, secret: str) -> str:
    return sign_cursor(
        {
            "v": CURSOR_VERSION,
            "m": plan.merchant_id,
            "i": plan.index,
            "f": plan.filter_digest(),
            "o": plan.order.value,
            "k": last_created_key,
        },
        secret,
    )


def peek_cursor(cursor: str) -> dict[str, Any]:
    """What a cursor carries, WITHOUT verifying it (for debugging and teaching; never act on the result)."""
    payload_text, _, _ = cursor.partition(".")
    return json.loads(_b64decode(payload_text))


def decode_cursor(cursor: object, plan: QueryPlan, secret: str) -> str:
    """Verify ``cursor`` for ``plan`` and return the position it carries (the last returned ``created_key``).

    The signature is checked (in constant time, over the exact text) before anything in the payload is parsed.
    """
    if not isinstance(cursor, str) or not cursor:
        raise InvalidCursorError("must be a non-empty string")
    if len(cursor) > MAX_CURSOR_LENGTH or not _CURSOR_RE.fullmatch(cursor):
        raise InvalidCursorError("is malformed (not a cursor issued by this service)")
    payload_text, _, signature = cursor.partition(".")
    if not hmac.compare_digest(signature, _mac(secret, payload_text)):
        raise InvalidCursorError("signature does not match: the cursor was altered, truncated or not issued here")
    try:
        payload = json.loads(_b64decode(payload_text))
    except (binascii.Error, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidCursorError("is malformed (not a cursor issued by this service)") from None
    if not isinstance(payload, dict):
        raise InvalidCursorError("is malformed (not a cursor issued by this service)")
    version = payload.get("v")
    if version != CURSOR_VERSION or isinstance(version, bool):
        raise InvalidCursorError(
            f"format version {version!r} is not supported (current: {CURSOR_VERSION}); start again from the first page"
        )
    if payload.get("m") != plan.merchant_id:
        raise InvalidCursorError("was issued for another merchant")
    if (
        payload.get("i") != plan.index
        or payload.get("f") != plan.filter_digest()
        or payload.get("o") != plan.order.value
    ):
        raise InvalidCursorError("was issued for other filters or another order; pass the same filters as page one")
    position = payload.get("k")
    if not isinstance(position, str) or not _CREATED_KEY_RE.fullmatch(position):
        raise InvalidCursorError("is malformed (not a cursor issued by this service)")
    return position


# ---------------------------------------------------------------------------------------------------------------
# Queries


def _validate_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValidationError("limit", f"must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
    return limit


def _collect(
    client: Any, request: dict[str, Any], want: int, start_key: dict[str, Any] | None, filtered: bool
) -> tuple[list[dict[str, Any]], QueryStats]:
    """Up to ``want`` matching raw items from ``start_key`` on, following LastEvaluatedKey as often as needed."""
    items: list[dict[str, Any]] = []
    stats = QueryStats()
    while len(items) < want:
        remaining = want - len(items)
        page_request = {**request, "Limit": max(remaining, FILTER_READ_BATCH) if filtered else remaining}
        if start_key is not None:
            page_request["ExclusiveStartKey"] = start_key
        response = client.query(**page_request)
        stats += QueryStats.of(response)
        items.extend(response.get("Items", []))
        start_key = response.get("LastEvaluatedKey")
        if start_key is None:
            break
    return items[:want], stats


def count_matching(plan: QueryPlan, *, settings: Settings | None = None) -> tuple[int, QueryStats]:
    """How many payments match ``plan`` (a paginated ``Select=COUNT`` query). Costs a read of every match."""
    settings = settings or get_settings()
    request = {**plan.request(get_models(settings).payment.Meta.table_name), "Select": "COUNT"}
    client = aws.dynamodb(settings)
    total, stats, start_key = 0, QueryStats(), None
    while True:
        page_request = dict(request)
        if start_key is not None:
            page_request["ExclusiveStartKey"] = start_key
        response = client.query(**page_request)
        stats += QueryStats.of(response)
        total += int(response["Count"])
        start_key = response.get("LastEvaluatedKey")
        if start_key is None:
            return total, stats


def get_merchant_payments(
    merchant_id: str,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
    status: PaymentStatus | str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    order: Order | str = Order.DESC,
    include_total: bool = False,
    *,
    currency: str | None = None,
    min_amount: int | None = None,
    max_amount: int | None = None,
    settings: Settings | None = None,
) -> PagedResult:
    """One exact page of ``merchant_id``'s payments, newest first by default.

    ``status`` and ``created_from`` (inclusive) / ``created_to`` (exclusive) are key conditions (cheap);
    ``currency`` and ``min_amount`` / ``max_amount`` (inclusive) are a FilterExpression (billed for every item
    read, matching or not). ``cursor`` is the previous page's ``next_cursor`` and must come with the same filters
    and order. ``include_total=True`` adds a count query that reads every match (see the module docstring).

    Raises ``ValidationError`` (naming the argument) for bad input, ``InvalidCursorError`` for a cursor not issued
    for this merchant and these filters, ``ConfigurationError`` when no cursor secret is configured.
    """
    settings = settings or get_settings()
    plan = plan_query(
        merchant_id,
        status=status,
        created_from=created_from,
        created_to=created_to,
        order=order,
        currency=currency,
        min_amount=min_amount,
        max_amount=max_amount,
    )
    limit = _validate_limit(limit)
    secret = _require_secret(settings)
    start_key = plan.start_key(decode_cursor(cursor, plan, secret)) if cursor is not None else None

    model = get_models(settings).payment
    client = aws.dynamodb(settings)
    raw, stats = _collect(client, plan.request(model.Meta.table_name), limit + 1, start_key, plan.filtered)
    page = raw[:limit]
    next_cursor = encode_cursor(plan, page[-1]["created_key"]["S"], secret) if len(raw) > limit else None

    total, total_stats = count_matching(plan, settings=settings) if include_total else (None, None)
    return PagedResult([model.from_raw_data(item) for item in page], next_cursor, total, stats, total_stats)


def iter_merchant_payments(merchant_id: str, *, limit: int = DEFAULT_LIMIT, **filters: Any) -> Iterator[PagedResult]:
    """Every page in turn (``filters`` as for ``get_merchant_payments``): for exports and the notebook's walk."""
    cursor = None
    while True:
        page = get_merchant_payments(merchant_id, cursor, limit, **filters)
        yield page
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
