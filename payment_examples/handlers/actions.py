"""``POST /payments/{id}/capture``, ``POST /payments/{id}/refunds``, ``POST /payments/{id}/void``: the rest of the
payments API, each at most once per ``Idempotency-Key``.

A thin adapter, like handlers/process.py: route (REST v1 and HTTP API v2 events), authenticate the merchant,
validate the body, then run the action under the idempotency middleware and answer the payment (with its
``links``: what may be done with it next).

* ``capture``: body optional, ``{"amount": n}`` (default: the whole authorised amount). 200.
* ``refunds``: ``{"amount": n, "reason": "..."}`` (reason optional, at most 500 characters). 201; ``Location`` is
  the payment, which holds the refund (one of its transactions, not a resource of its own).
* ``void``: body optional, ``{"reason": "..."}``. 200.

Why a middleware here and not in process.py: a create's payment id is derived from its key, so the payment is its
own idempotency record; a payment has many refunds, so an action needs a record of its own
(``IdempotencyMiddleware.process_outcome``, scope ``merchant:<id>``, payload the action, the payment and the
validated body). What it stores is the final *response*, replayed exactly to every repeat (with
``Idempotent-Replayed: true``):

* stored: the success, a 422 the state machine refuses (``IllegalTransitionError``: the payment's status, the
  operation and what is ``allowed`` now, with the ``max_amount`` of each) and a 402 a declined capture or refund;
* not stored (the claim is released, and a retry runs again): a 404 (another merchant's payment reads as missing),
  a processor timeout or throttling and an unavailable engine (503 with ``Retry-After``: the retry resolves what
  the first attempt left in flight, from the processor's record), another request's processor call in flight or
  a payment changed under us (409);
* before the claim, so never stored: 400 (the key, bad JSON, unknown fields, bad amounts), 401, 404 of an unknown
  route, 405. A repeat while the first runs is 409 with ``Retry-After``; the key with another payload (another
  body, route or payment) is 422.

A worker that committed its change and stopped before completing the record (a crash, a timeout) leaves the claim
in progress; after its lease the next attempt takes it over. Every change this handler makes carries the key in its
detail (``audit_detail``, or the processor call's ``idempotency_key``, also when ``recover`` applies it) and in
``Payment.requests`` (key -> the version its change produced, written by the same conditional write), so the taker
finds it however many changes came after (``change_by_request``) and answers from the payment instead of acting
again.

Card payments (``payment_method`` set) go through ``Checkout``: capture and refund at the processor (recorded on the
payment before they are sent, so never twice), void without a processor call (the authorisation is left to expire
at the processor; a real integration would release it). A card payment where no processor is configured is a 500
(a deployment error), not a change made behind the processor's back.

Round trips, as counted from the code (DynamoDB unless named):

* fresh, no card: claim (PutItem), the consistent read that plans the change (GetItem), the change (UpdateItem),
  the record completed (UpdateItem): 4.
* fresh, card capture or refund: claim, read, the call recorded (UpdateItem), the processor, the change, the record
  completed: 5 and 1 processor request (a lost refund resolved first: the processor's ``find`` and one more change).
  A card void: 4, as without a card.
* replay: 1, the failed claim (its ``ALL_OLD`` image; an engine that returns none, dynalite: one more read).
* refused (422): claim, read, record completed: 3 (planned from the read; nothing written). Declined (402): claim,
  read, call recorded, the processor, call removed, record completed: 5 and 1. Not found (404): claim, read, the
  claim released (DeleteItem): 3.

Deployed it fails closed like the process handler (``config.require_api_settings``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from payment_examples.checkout import Checkout
from payment_examples.checkout.processor import processor_for
from payment_examples.checkout.service import change_by_request
from payment_examples.core import (
    Settings,
    get_settings,
    identifier,
    logger,
    optional_text,
    require_api_settings,
    validate_amount,
)
from payment_examples.core.errors import (
    ConfigurationError,
    IllegalTransitionError,
    MethodNotAllowedError,
    NotFoundError,
    ValidationError,
)
from payment_examples.handlers.auth import merchant_identity
from payment_examples.handlers.http import (
    ApiEvent,
    error_response,
    header,
    invocation_lease,
    json_body,
    json_response,
    parse_event,
    payment_body,
    raw_body,
    request_path,
)
from payment_examples.idempotency import IdempotencyMiddleware
from payment_examples.payments import Operation, PaymentService
from payment_examples.payments.service import MAX_DESCRIPTION_LENGTH
from payment_examples.tables import Payment, get_models

IDEMPOTENCY_HEADER = "Idempotency-Key"
_ROUTE = re.compile(r"^/payments/(?P<id>[^/]+)/(?P<action>[^/]+)/?$")


@dataclass(frozen=True)
class Action:
    """A route: the operation it asks for, the body fields it takes and the status of its success."""

    name: str
    operation: Operation
    fields: frozenset[str]
    status: int


ACTIONS = {  # by the path's last segment
    "capture": Action("capture", Operation.CAPTURE, frozenset({"amount"}), 200),
    "refunds": Action("refund", Operation.REFUND, frozenset({"amount", "reason"}), 201),
    "void": Action("void", Operation.VOID, frozenset({"reason"}), 200),
}


@dataclass(frozen=True)
class ActionRequest:
    action: Action
    payment_id: str
    amount: int | None = None  # capture: None is the whole authorised amount
    reason: str | None = None

    @classmethod
    def parse(cls, action: Action, payment_id: str, raw: str | None) -> ActionRequest:
        """Validate the body (optional for capture and void); every error names the offending field."""
        body = json_body(raw) if raw or action.operation is Operation.REFUND else {}
        if not isinstance(body, dict):
            raise ValidationError("body", "must be a JSON object")
        unknown = sorted(set(body) - action.fields)
        if unknown:
            raise ValidationError(unknown[0], f"is not a known field (allowed: {', '.join(sorted(action.fields))})")
        amount = body.get("amount")
        if amount is None and action.operation is Operation.REFUND:
            raise ValidationError("amount", "is required")
        return cls(
            action,
            payment_id,
            amount=None if amount is None else validate_amount(amount),
            reason=optional_text("reason", body.get("reason"), max_length=MAX_DESCRIPTION_LENGTH),
        )

    @property
    def payload(self) -> dict[str, Any]:
        """What a repeat under the same key must match: the action, the payment and the validated body."""
        body = {name: getattr(self, name) for name in sorted(self.action.fields)}
        return {"action": self.action.name, "payment_id": self.payment_id, "body": body}


@dataclass(frozen=True)
class Dependencies:
    service: PaymentService
    checkout: Checkout | None  # None: no processor configured
    middleware: IdempotencyMiddleware


@lru_cache(maxsize=8)
def _default_dependencies(settings: Settings) -> Dependencies:
    """Built on first use, once per container (and per settings, so ``local_aws()`` can redirect it)."""
    service = PaymentService(models=get_models(settings))
    processor = processor_for(settings)
    checkout = Checkout(service, processor) if processor is not None else None
    return Dependencies(service, checkout, IdempotencyMiddleware(settings=settings))


def make_handler(
    service: PaymentService | None = None,
    checkout: Checkout | None = None,
    middleware: IdempotencyMiddleware | None = None,
) -> Callable[[dict, Any], dict]:
    """A handler bound to the given service, checkout and middleware (tests and notebooks inject clocks, ids and a
    processor this way); whatever is not given is built lazily from the settings in force."""

    def handler(event: dict, context: Any) -> dict:
        # Fail closed (PAYMENT_USE_AWS=1), as handlers/process.py does.
        settings = require_api_settings(get_settings(), cursors=False)
        try:
            deps = None if service and checkout and middleware else _default_dependencies(settings)
            bound = Dependencies(
                service or deps.service,
                checkout or (deps.checkout if service is None else None),
                middleware or deps.middleware,
            )
            return _handle(event, context, settings, bound)
        except Exception as error:  # every failure becomes a problem+json response; 5xx reveal no internals
            return error_response(error)

    return handler


handler = make_handler()  # the Lambda entry point: payment_examples.handlers.actions.handler


def _handle(event: dict, context: Any, settings: Settings, deps: Dependencies) -> dict:
    api = parse_event(event)
    action, payment_id = _route(api)
    if api.http_method != "POST":
        raise MethodNotAllowedError(f"{api.http_method} is not supported here; use POST", allow="POST")
    merchant_id = merchant_identity(event, header(api, "Authorization"), settings).merchant_id
    key = header(api, IDEMPOTENCY_HEADER)
    if key is None:
        raise ValidationError(IDEMPOTENCY_HEADER, "header is required")
    identifier(IDEMPOTENCY_HEADER, key)
    request = ActionRequest.parse(action, payment_id, raw_body(api))
    lease = invocation_lease(context)
    request_id = getattr(context, "aws_request_id", None) or None

    def run() -> dict:
        return _run(deps, merchant_id, key, request, request_id=request_id, lease=lease)

    outcome = deps.middleware.process_outcome(
        key, run, payload=request.payload, scope=f"merchant:{merchant_id}", lease=lease
    )
    response = outcome.value
    if outcome.replayed:
        response = {**response, "headers": {**response["headers"], "Idempotent-Replayed": "true"}}
    logger.info("payment action", merchant_id=merchant_id, payment_id=payment_id, action=action.name,
                status=response["statusCode"], replayed=outcome.replayed)  # fmt: skip
    return response


def _route(api: ApiEvent) -> tuple[Action, str]:
    """The action and the payment id, from the path (the id from the path parameters where API Gateway gives them)."""
    path = request_path(api)
    route = _ROUTE.fullmatch(path)
    action = ACTIONS.get(route["action"]) if route else None
    if action is None:
        raise NotFoundError(f"no resource at {path!r}")
    payment_id = (api.path_parameters or {}).get("id") or unquote(route["id"])
    return action, identifier("id", payment_id)


def _run(
    deps: Dependencies,
    merchant_id: str,
    key: str,
    request: ActionRequest,
    *,
    request_id: str | None,
    lease: timedelta | None,
) -> dict:
    """The action, once: the final response (stored by the middleware), or an exception for what may be retried."""
    payment = deps.service.get_payment(merchant_id, request.payment_id)  # 404 here releases the claim
    done = change_by_request(payment, request.action.operation, key) is not None
    if not done:  # else: an earlier attempt committed it and stopped before completing the record; answer from it
        try:
            payment = _act(deps, payment, merchant_id, key, request, request_id=request_id, lease=lease)
        except IllegalTransitionError as refusal:  # final (422; a decline 402): stored and replayed like a success
            return error_response(refusal)
    headers = {"Location": f"/payments/{payment.id}"} if request.action.status == 201 else {}
    if done:
        headers["Idempotent-Replayed"] = "true"
    return json_response(request.action.status, payment_body(payment), headers)


def _act(
    deps: Dependencies,
    payment: Payment,
    merchant_id: str,
    key: str,
    request: ActionRequest,
    *,
    request_id: str | None,
    lease: timedelta | None,
) -> Payment:
    operation = request.action.operation
    if not payment.payment_method:  # no card: the change is the payment's alone, one conditional write
        return deps.service.transition(
            merchant_id, payment.id, operation, actor=merchant_id, amount=request.amount, reason=request.reason,
            current=payment, audit_detail={"idempotency_key": key}, request_id=request_id, request_key=key,
        )  # fmt: skip
    if deps.checkout is None:
        raise ConfigurationError(f"payment {payment.id!r} is a card payment and no processor is configured here")
    common: dict[str, Any] = {"actor": merchant_id, "request_id": request_id, "idempotency_key": key,
                              "current": payment}  # fmt: skip
    if operation is Operation.CAPTURE:
        return deps.checkout.capture(merchant_id, payment.id, amount=request.amount, lease=lease, **common).payment
    if operation is Operation.REFUND:
        return deps.checkout.refund(
            merchant_id, payment.id, amount=request.amount, reason=request.reason, lease=lease, **common
        ).payment
    return deps.checkout.void(merchant_id, payment.id, reason=request.reason, **common).payment
