"""The merchant query API (Lambda behind API Gateway, REST v1 or HTTP API v2): the brief's MerchantPaymentsHandler.

* ``GET /payments``: one page of the caller's payments. Query parameters: ``status``, ``from`` (inclusive) and
  ``to`` (exclusive) as ISO 8601 (a date means UTC midnight; a date-time needs an offset such as ``Z``),
  ``limit`` (1..100, default 50), ``cursor`` (the previous page's ``next_cursor``, with the same filters),
  ``order`` (``desc``, newest first, default; or ``asc``), ``include_total`` (``true``/``false``; costs a read
  of every match), and the filter-expression parameters ``currency``, ``min_amount``, ``max_amount`` (costlier:
  see ``payment_examples.payments.pagination``). Body: ``{"items": [...], "next_cursor": "..." | null}`` plus
  ``"total"`` when asked for.
* ``GET /payments/{id}``: one payment. Another merchant's payment is a 404, exactly like a missing one.

Every payment answered carries its ``links``: ``self`` and the actions its status and balances allow now (capture,
refund with their ``max_amount``, void; ``payments.public.payment_links``), served by handlers/actions.py.

Each 200 says what it was read from in a ``Read-From`` header: ``item; consistent`` (one payment: a strongly
consistent read, so it shows a write answered a moment ago) or ``index; eventually consistent`` (a page, from a
merchant index: a write of a moment ago may not show yet).

The merchant comes from the same authentication as the process handler (verified authorizer claims or a Bearer
JWT, ``payment_examples.handlers.auth``), never from the query string. Bad parameters are a 400 problem+json naming the
parameter; unknown or repeated parameters are refused rather than ignored. Deployed (``PAYMENT_USE_AWS=1``) it
fails closed like the process handler, and also without the cursor secret (``config.require_api_settings``).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from payment_examples.core import Settings, get_settings, identifier, require_api_settings
from payment_examples.core.errors import MethodNotAllowedError, NotFoundError, ValidationError
from payment_examples.handlers.auth import merchant_identity
from payment_examples.handlers.http import (
    ApiEvent,
    error_response,
    header,
    json_response,
    parse_event,
    payment_body,
    request_path,
)
from payment_examples.payments import PaymentService, get_merchant_payments
from payment_examples.tables import get_models

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 50
LIST_PARAMETERS = frozenset(
    {"status", "from", "to", "limit", "cursor", "order", "include_total", "currency", "min_amount", "max_amount"}
)
_ROUTE = re.compile(r"^/payments(?:/(?P<id>[^/]+))?/?$")
_DIGITS = re.compile(r"^[0-9]+$")
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
_NO_STORE = {"Cache-Control": "no-store"}  # payment data must not sit in shared caches
# What each answer was read from (``Read-From``), so a client knows what it may expect right after a write: one
# payment is a strongly consistent read of its item (it sees every write that was answered); a page is a query of
# a merchant index, which DynamoDB keeps eventually consistent (a payment written a moment ago may be missing
# from it, or show its previous status). Neither reads the stream's projections (Transactions, audit entries).
READ_FROM_ITEM = "item; consistent"
READ_FROM_INDEX = "index; eventually consistent"


@lru_cache(maxsize=8)
def _default_service(settings: Settings) -> PaymentService:
    """Built on first use, once per container (and per settings, so ``local_aws()`` can redirect it)."""
    return PaymentService(models=get_models(settings))


def handler(event: dict, context: Any = None) -> dict:
    """Lambda entry point: route on method and path, authenticate, answer JSON or problem+json."""
    # Fail closed (PAYMENT_USE_AWS=1): see handlers/process.py; this handler also needs the cursor secret.
    settings = require_api_settings(get_settings(), cursors=True)
    try:
        return _handle(event, settings)
    except Exception as error:  # every failure becomes a problem+json response; 5xx reveal no internals
        return error_response(error)


def _handle(event: dict, settings: Settings) -> dict:
    api = parse_event(event)
    path = request_path(api)
    route = _ROUTE.fullmatch(path)
    if route is None:
        raise NotFoundError(f"no resource at {path!r}")
    if api.http_method != "GET":
        raise MethodNotAllowedError(f"{api.http_method} is not supported on {path}; use GET", allow="GET")
    merchant_id = merchant_identity(event, header(api, "Authorization"), settings).merchant_id
    if route["id"] is not None:
        return _get_one(merchant_id, unquote(route["id"]), settings)
    return _list(merchant_id, _query_parameters(api), settings)


def _query_parameters(event: ApiEvent) -> dict[str, str]:
    """Single-valued query parameters; a repeated or unknown parameter is a 400."""
    raw = event.raw_event
    single = raw.get("queryStringParameters") or {}
    multi = raw.get("multiValueQueryStringParameters") or {}  # REST v1 only (HTTP API joins repeats with ",")
    for name, values in multi.items():
        if isinstance(values, list) and len(values) > 1:
            raise ValidationError(name, "must be given at most once")
    for name in single:
        if name not in LIST_PARAMETERS:
            raise ValidationError(name, f"unknown parameter; accepted: {', '.join(sorted(LIST_PARAMETERS))}")
    return {name: value for name, value in single.items() if isinstance(value, str)}


def _get_one(merchant_id: str, payment_id: str, settings: Settings) -> dict:
    identifier("id", payment_id)
    payment = _default_service(settings).get_payment(merchant_id, payment_id)
    return json_response(200, payment_body(payment), headers=_NO_STORE | {"Read-From": READ_FROM_ITEM})


def _list(merchant_id: str, params: dict[str, str], settings: Settings) -> dict:
    created_from = _instant("from", params.get("from"))
    created_to = _instant("to", params.get("to"))
    if created_from is not None and created_to is not None and created_from > created_to:
        raise ValidationError("from", "must not be after 'to'")
    include_total = _boolean("include_total", params.get("include_total"))
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ValidationError("order", f"must be 'asc' or 'desc', got {order!r}")
    cursor = params.get("cursor")
    if cursor is not None and not cursor:
        raise ValidationError("cursor", "must not be empty (omit it for the first page)")
    page = get_merchant_payments(
        merchant_id,
        cursor,
        _integer("limit", params.get("limit"), low=1, high=MAX_PAGE_SIZE, default=DEFAULT_PAGE_SIZE),
        params.get("status"),
        created_from,
        created_to,
        order,
        include_total,
        currency=params.get("currency"),
        min_amount=_integer("min_amount", params.get("min_amount"), low=0),
        max_amount=_integer("max_amount", params.get("max_amount"), low=0),
        settings=settings,
    )
    body: dict[str, Any] = {"items": [payment_body(p) for p in page.items], "next_cursor": page.next_cursor}
    if include_total:
        body["total"] = page.total
    return json_response(200, body, headers=_NO_STORE | {"Read-From": READ_FROM_INDEX})


def _integer(
    name: str, value: str | None, *, low: int, high: int | None = None, default: int | None = None
) -> int | None:
    if value is None:
        return default
    if not _DIGITS.fullmatch(value):
        raise ValidationError(name, f"must be a whole number, got {value!r}")
    if len(value) > 15:
        raise ValidationError(name, f"is out of range, got {value}")
    number = int(value)
    if number < low or (high is not None and number > high):
        raise ValidationError(name, f"must be from {low} to {high}, got {number}" if high else f"must be >= {low}")
    return number


def _boolean(name: str, value: str | None) -> bool:
    if value is None:
        return False
    if value.lower() not in _BOOLEANS:
        raise ValidationError(name, f"must be true or false, got {value!r}")
    return _BOOLEANS[value.lower()]


def _instant(name: str, value: str | None) -> datetime | None:
    """ISO 8601: a date (UTC midnight) or a date-time with an offset (``Z`` or ``+hh:mm``)."""
    if value is None:
        return None
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), tzinfo=UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(name, f"{value!r} is not an ISO 8601 date or date-time") from None
    if parsed.utcoffset() is None:
        raise ValidationError(name, f"{value!r} has no UTC offset; add one, e.g. {value}Z")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValidationError(name, f"{value!r} is outside the years 1 to 9999 in UTC") from None
