"""``POST /processor/events``: the card processor's notifications (disputes, refunds made at the processor, late
authorisation outcomes), applied by ``checkout.processor_events.ProcessorEvents``.

A thin adapter. There is no JWT here: the processor is not a merchant, and the ``Processor-Signature`` header
(``core.signatures``: HMAC-SHA256 over ``t.body`` with the secret we share with the processor, ``t`` within
``processor_webhook_tolerance_s`` of now) is the authentication. It is checked over the raw bytes received, before
anything in the body is read. Answers:

* 200 ``{"received": true, "outcome": ..., "event_id": ...}`` once the event's write, if any, has returned (the
  change is durable): also for ``duplicate``, ``stale``, ``not_applicable`` and ``unknown_payment``, which a
  retry cannot change, so the processor stops sending them;
* 400 ``application/problem+json`` for a missing, forged, stale or future signature, or a body that is not a
  notification we handle (nothing is written);
* 405 for any method but POST;
* 503 with ``Retry-After`` when DynamoDB is unavailable, or the event must wait (another processor call in flight
  on the payment): the processor delivers it again later (they retry non-2xx answers for days).

Without ``processor_webhook_secret`` (PAYMENT_PROCESSOR_WEBHOOK_SECRET, or the secret's ``processor_webhook_secret``)
every invocation raises ``ConfigurationError`` (a function error, Lambda's Errors metric): it fails closed, as
``require_api_settings`` does for the API, in every mode, since an unsigned notification could refund or charge
back anything.

Round trips per notification (see ``checkout/processor_events.py``), after the signature check (no I/O): a
consistent read of the payment and one conditional write (the transition together with the event's record, or the
record alone); nothing after the read for a duplicate, a stale event or an unknown payment. A late authorisation
outcome whose call is still in flight: the read, the processor's ``find`` (twice) and the resolving transition.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from payment_examples.checkout import Checkout
from payment_examples.checkout.processor import processor_for
from payment_examples.checkout.processor_events import ProcessorEvents
from payment_examples.checkout.processor_events import parse_event as parse_notification
from payment_examples.core import ConfigurationError, Settings, get_settings, logger
from payment_examples.core.errors import MethodNotAllowedError, ValidationError
from payment_examples.core.signatures import PROCESSOR_SIGNATURE_HEADER, SignatureVerificationError, verify_signature
from payment_examples.handlers.http import error_response, header, json_response, parse_event
from payment_examples.payments.service import PaymentService
from payment_examples.tables import get_models

MAX_BODY_BYTES = 64 * 1024


@lru_cache(maxsize=8)
def _default_events(settings: Settings) -> ProcessorEvents:
    """Built on first use, once per container (and per settings, so ``local_aws()`` can redirect it)."""
    service = PaymentService(models=get_models(settings))
    processor = processor_for(settings)
    return ProcessorEvents(service, Checkout(service, processor) if processor is not None else None)


def require_secret(settings: Settings) -> str:
    """The secret notifications are verified with, or ``ConfigurationError``: never accept them unverified."""
    if not settings.processor_webhook_secret:
        raise ConfigurationError(
            "no processor webhook secret (PAYMENT_PROCESSOR_WEBHOOK_SECRET, or processor_webhook_secret in "
            "PAYMENT_SECRETS_ID / PAYMENT_SECRETS_PARAMETER): processor notifications cannot be authenticated"
        )
    return settings.processor_webhook_secret


def make_handler(events: ProcessorEvents | None = None) -> Callable[[dict, Any], dict]:
    """A handler bound to ``events`` (tests inject clocks, a processor and models this way); by default built lazily
    from the settings in force."""

    def handler(event: dict, context: Any) -> dict:
        settings = get_settings()
        secret = require_secret(settings)  # raised, not answered: fail closed
        try:
            return _handle(event, settings, secret, events or _default_events(settings))
        except Exception as error:  # every failure becomes a problem+json response; 5xx reveal no internals
            return error_response(error)

    return handler


handler = make_handler()  # the Lambda entry point: payment_examples.handlers.processor_events.handler


def _handle(event: dict, settings: Settings, secret: str, events: ProcessorEvents) -> dict:
    api = parse_event(event)
    if api.http_method != "POST":
        raise MethodNotAllowedError(f"{api.http_method} is not supported here; use POST", allow="POST")
    body = _raw_body(api)
    try:
        verify_signature(body, header(api, PROCESSOR_SIGNATURE_HEADER), [secret],
                         settings.processor_webhook_tolerance_s, now=events.clock.now().timestamp())  # fmt: skip
    except SignatureVerificationError as error:
        logger.warning("processor notification refused", reason=error.reason)  # never the header, never the secret
        raise
    notification = parse_notification(body)  # only what was verified is read
    applied = events.apply(notification)
    logger.info("processor notification", event_id=notification.id, type=notification.type,
                outcome=applied.outcome.value)  # fmt: skip
    return json_response(200, {"received": True, "outcome": applied.outcome.value, "event_id": notification.id})


def _raw_body(api: Any) -> bytes:
    """The bytes the processor signed: the body as received (base64-decoded where API Gateway encoded it)."""
    raw = api.body
    if not raw:
        raise ValidationError("body", "a JSON notification is required")
    if api.is_base64_encoded:
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ValidationError("body", "is marked base64 but is not base64") from None
    else:
        data = raw.encode("utf-8")
    if len(data) > MAX_BODY_BYTES:
        raise ValidationError("body", f"must be at most {MAX_BODY_BYTES} bytes")
    return data
