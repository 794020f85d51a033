"""What the API handlers share: event parsing (REST v1 and HTTP API v2, via Powertools event data classes), the
request's path and JSON body, the invocation's lease, JSON and RFC 9457 ``application/problem+json`` responses, and
the payment's JSON shape (with its links)."""

from __future__ import annotations

import binascii
import json
import re
from datetime import timedelta
from typing import Any

from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent, APIGatewayProxyEventV2

from payment_examples.core import logger
from payment_examples.core.errors import (
    EngineUnavailableError,
    MethodNotAllowedError,
    PaymentExamplesError,
    UnavailableError,
    ValidationError,
    is_retryable,
)
from payment_examples.payments.public import iso_utc, payment_json, payment_links

__all__ = ["MAX_BODY_BYTES", "ApiEvent", "error_response", "header", "invocation_lease", "iso_utc", "json_body",
           "json_response", "parse_event", "payment_body", "payment_json", "payment_links", "problem_response",
           "raw_body", "request_path"]  # fmt: skip

ApiEvent = APIGatewayProxyEvent | APIGatewayProxyEventV2
PROBLEM_TYPE_BASE = "https://payment-examples.dev/problems/"
MAX_BODY_BYTES = 16 * 1024


def parse_event(event: dict) -> ApiEvent:
    """The Powertools data class for an API Gateway REST (v1 proxy) or HTTP API (v2) event."""
    if not isinstance(event, dict):
        raise ValidationError("event", "not an API Gateway proxy event")
    parsed = APIGatewayProxyEventV2(event) if event.get("version") == "2.0" else APIGatewayProxyEvent(event)
    try:  # every part the handlers read, checked here: a malformed event is a 400, never a KeyError's 500
        if not isinstance(parsed.http_method, str):
            raise TypeError("method")
        dict(parsed.headers or {})
        dict(parsed.query_string_parameters or {})
        dict(parsed.path_parameters or {})
        if not isinstance(parsed.body, str | None):
            raise TypeError("body")
        bool(parsed.is_base64_encoded)
    except (KeyError, TypeError, AttributeError, ValueError):
        raise ValidationError("event", "not an API Gateway proxy event") from None
    return parsed


def header(event: ApiEvent, name: str) -> str | None:
    return event.headers.get(name)  # Powertools' headers mapping is case-insensitive


def request_path(api: ApiEvent) -> str:
    """The request path without the stage: HTTP API's rawPath starts with a named stage, REST's path never does."""
    if isinstance(api, APIGatewayProxyEventV2):
        path, stage = api.raw_path or "", (api.raw_event.get("requestContext") or {}).get("stage")
        if stage and stage != "$default" and path.startswith(f"/{stage}/"):
            return path[len(stage) + 1 :]
        return path
    return api.path or ""


def raw_body(api: ApiEvent) -> str | None:
    """The body as text, decoded when API Gateway marked it base64 (a 400 naming ``body`` if it is not)."""
    if not api.is_base64_encoded:
        return api.body
    try:
        return api.decoded_body
    except (binascii.Error, ValueError):  # bad base64, or bytes that are not UTF-8 (UnicodeDecodeError)
        raise ValidationError("body", "is marked base64 but is not base64-encoded UTF-8 text") from None


def json_body(raw: str | None) -> Any:
    """The body parsed as JSON: at most ``MAX_BODY_BYTES``, no ``NaN``/``Infinity``, not nested beyond what the
    parser can take; each failure a 400 naming ``body``."""
    if not raw:
        raise ValidationError("body", "a JSON object is required")
    if len(raw.encode()) > MAX_BODY_BYTES:
        raise ValidationError("body", f"must be at most {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError) as error:
        raise ValidationError("body", f"is not valid JSON: {error}") from None
    except RecursionError:
        raise ValidationError("body", "is nested too deeply") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def invocation_lease(context: Any) -> timedelta | None:
    """How long what this request claims (a processor call, an idempotency key) is its own: the time this
    invocation may still run (None outside Lambda: the claimer's default)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    return timedelta(milliseconds=max(1000, int(remaining())))


def payment_body(payment: Any) -> dict[str, Any]:
    """A payment as the API answers it: ``payment_json`` and its ``links`` (what the merchant may do with it now)."""
    return {**payment_json(payment), "links": payment_links(payment)}


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> dict:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", **(headers or {})},
        "body": json.dumps(body, separators=(",", ":"), sort_keys=True),
    }


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    slug: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> dict:
    """An RFC 9457 problem details response."""
    body = {"type": PROBLEM_TYPE_BASE + slug, "title": title, "status": status, "detail": detail, **(extra or {})}
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/problem+json", **(headers or {})},
        "body": json.dumps(body, separators=(",", ":"), sort_keys=True),
    }


def error_response(error: Exception) -> dict:
    """Map an exception to a problem response. DynamoDB throttling or an unreachable engine that outlasted the
    client's retries is a 503 with ``Retry-After``; unexpected errors become a 500 that reveals no internals."""
    if not isinstance(error, PaymentExamplesError) and is_retryable(error):
        logger.warning("engine unavailable", error_type=type(error).__name__)
        error = EngineUnavailableError("the payment store is busy or unreachable; retry with the same key")
    if isinstance(error, UnavailableError):
        return problem_response(
            error.http_status, error.title, str(error), slug=_slug(error),
            headers={"Retry-After": str(error.retry_after)},
        )  # fmt: skip
    if isinstance(error, ValidationError):
        return problem_response(
            400, error.title, str(error), slug="invalid-request",
            extra={"invalid_params": [{"name": error.field, "reason": error.message}]},
        )  # fmt: skip
    if isinstance(error, PaymentExamplesError) and error.http_status < 500:
        slug = _slug(error)
        retry_after = getattr(error, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        if error.http_status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="payments"'  # RFC 6750
        if isinstance(error, MethodNotAllowedError):
            headers["Allow"] = error.allow  # RFC 9110 15.5.6
        extra = error.problem_extra() if hasattr(error, "problem_extra") else None
        return problem_response(error.http_status, error.title, str(error), slug=slug, extra=extra, headers=headers)
    logger.exception("unhandled error")
    return problem_response(500, "Internal error", "the request could not be processed", slug="internal")


def _slug(error: Exception) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", type(error).__name__.removesuffix("Error")).lower()
