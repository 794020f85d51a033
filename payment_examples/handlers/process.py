"""``POST /payments``: create a payment exactly once per ``Idempotency-Key`` (the brief's ProcessPaymentHandler).

A thin adapter: authenticate the merchant, validate the request, run ``PaymentService.create_payment`` (with a
``payment_method``: ``Checkout.create_and_authorize``, through the configured processor) and map the outcome or the
error to an HTTP response (a decline is 402, a processor timeout or an unavailable engine 503 with ``Retry-After``).
Works for API Gateway REST (v1 proxy) and HTTP API (v2) events. Clients are built on the first invocation and
reused by the container.

No idempotency middleware: the payment id is derived from (merchant, key), so the payment item is the request's
idempotency record. A repeat is answered from the stored payment in the same single round trip (the failed put's
``ALL_OLD`` image): the same request is replayed (``Idempotent-Replayed: true``), another payload under the key is
422, a card payment whose processor call is still in flight is 409 with ``Retry-After``, a decline is replayed as
402 (the payment is ``failed`` with the decline code). ``utils/idempotency.py`` is the general utility for
operations that have no natural key (notebook 01 shows what it costs).

Deployed (``PAYMENT_USE_AWS=1``, ``template.yaml``) it fails closed: without a JWT audience or a JWT key it raises
``ConfigurationError`` on every invocation instead of answering (``config.require_api_settings``); the keys come
from the secret named by ``PAYMENT_SECRETS_ID`` (``payment_examples.core.secrets``), never from the function's
configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from payment_examples.checkout import Checkout
from payment_examples.checkout.processor import processor_for, validate_payment_method
from payment_examples.core import (
    Settings,
    currency_exponent,
    get_settings,
    identifier,
    logger,
    metadata,
    optional_text,
    require_api_settings,
    validate_amount,
)
from payment_examples.core.errors import MethodNotAllowedError, ValidationError
from payment_examples.handlers.auth import merchant_identity
from payment_examples.handlers.http import (
    MAX_BODY_BYTES,  # noqa: F401 (part of this module's interface: tests size their bodies by it)
    error_response,
    header,
    invocation_lease,
    json_body,
    json_response,
    parse_event,
    payment_json,
    raw_body,
)
from payment_examples.payments.service import MAX_DESCRIPTION_LENGTH, PaymentService
from payment_examples.tables import get_models

FIELDS = frozenset({"amount", "currency", "customer_id", "description", "metadata", "payment_method"})
IDEMPOTENCY_HEADER = "Idempotency-Key"


@dataclass(frozen=True)
class PaymentRequest:
    amount: int
    currency: str
    customer_id: str | None = None
    description: str | None = None
    metadata: dict[str, str] | None = None
    payment_method: str | None = None  # present: authorise through the configured processor (checkout.py)

    @classmethod
    def from_body(cls, body: Any) -> PaymentRequest:
        """Validate the JSON body; every error names the offending field."""
        if not isinstance(body, dict):
            raise ValidationError("body", "must be a JSON object")
        unknown = sorted(set(body) - FIELDS)
        if unknown:
            raise ValidationError(unknown[0], f"is not a known field (allowed: {', '.join(sorted(FIELDS))})")
        if "amount" not in body:
            raise ValidationError("amount", "is required")
        if "currency" not in body:
            raise ValidationError("currency", "is required")
        amount = validate_amount(body["amount"])
        currency_exponent(body["currency"])
        customer_id = body.get("customer_id")
        if customer_id is not None:
            identifier("customer_id", customer_id)
        return cls(
            amount=amount,
            currency=body["currency"],
            customer_id=customer_id,
            description=optional_text("description", body.get("description"), max_length=MAX_DESCRIPTION_LENGTH),
            metadata=metadata("metadata", body.get("metadata")),
            payment_method=validate_payment_method(body["payment_method"]) if "payment_method" in body else None,
        )


@dataclass(frozen=True)
class Dependencies:
    service: PaymentService
    checkout: Checkout | None  # None: no processor configured


@lru_cache(maxsize=8)
def _default_dependencies(settings: Settings) -> Dependencies:
    """Built on first use, once per container (and per settings, so ``local_aws()`` can redirect it)."""
    service = PaymentService(models=get_models(settings))
    processor = processor_for(settings)
    return Dependencies(service, Checkout(service, processor) if processor is not None else None)


def make_handler(
    service: PaymentService | None = None, checkout: Checkout | None = None
) -> Callable[[dict, Any], dict]:
    """A handler bound to the given service and checkout (tests and notebooks inject clocks, ids and a processor
    this way); whatever is not given is built lazily from the settings in force."""

    def handler(event: dict, context: Any) -> dict:
        # Fail closed (PAYMENT_USE_AWS=1): missing keys or audience raise ConfigurationError out of the handler, so
        # every invocation fails as a function error (Lambda's Errors metric) until the configuration is fixed.
        settings = require_api_settings(get_settings(), cursors=False)
        try:
            deps = None if service and checkout else _default_dependencies(settings)
            bound = Dependencies(service or deps.service, checkout or (deps.checkout if service is None else None))
            return _handle(event, context, settings, bound)
        except Exception as error:  # every failure becomes a problem+json response; 5xx reveal no internals
            return error_response(error)

    return handler


handler = make_handler()  # the Lambda entry point: payment_examples.handlers.process.handler


def _handle(event: dict, context: Any, settings: Settings, deps: Dependencies) -> dict:
    api = parse_event(event)
    if api.http_method != "POST":
        raise MethodNotAllowedError(f"{api.http_method} is not supported here; use POST", allow="POST")
    merchant_id = merchant_identity(event, header(api, "Authorization"), settings).merchant_id
    key = header(api, IDEMPOTENCY_HEADER)
    if key is None:
        raise ValidationError(IDEMPOTENCY_HEADER, "header is required")
    identifier(IDEMPOTENCY_HEADER, key)
    request = PaymentRequest.from_body(json_body(raw_body(api)))
    if request.payment_method is not None and deps.checkout is None:
        raise ValidationError("payment_method", "no card processor is configured here (PAYMENT_PROCESSOR)")
    fields = {
        "customer_id": request.customer_id,
        "description": request.description,
        "metadata": request.metadata,
        "request_id": getattr(context, "aws_request_id", None) or None,
    }
    if request.payment_method is None:
        result = deps.service.create_payment(merchant_id, key, request.amount, request.currency, **fields)
    else:  # a decline raises PaymentDeclinedError (402), also on every repeat
        result = deps.checkout.create_and_authorize(
            merchant_id, key, request.amount, request.currency, request.payment_method, lease=invocation_lease(context),
            **fields,
        )  # fmt: skip
    headers = {"Location": f"/payments/{result.payment.id}"}
    if result.replayed:  # the payment existed already: a retry after a timeout or a lost response
        headers["Idempotent-Replayed"] = "true"
    logger.info("payment request", merchant_id=merchant_id, payment_id=result.payment.id, replayed=result.replayed)
    return json_response(201, payment_json(result.payment), headers)


_lease = invocation_lease  # the name this module's tests know (handlers.http holds it, shared with the actions)
