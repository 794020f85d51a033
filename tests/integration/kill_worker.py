"""A worker process that runs create (with a card) -> authorize -> capture through the process handler and
``Checkout``, and SIGKILLs itself at a chosen point: after a named DynamoDB call or after a ``Checkout`` step.

``python -m tests.integration.kill_worker --key K --kill-at POINT`` against the endpoints in
``AWS_ENDPOINT_URL_DYNAMODB`` and ``AWS_ENDPOINT_URL`` (and ``PAYMENT_TABLE_PREFIX``, ``PAYMENT_PROCESSOR=local``,
``PAYMENT_JWT_SECRET``). With ``--kill-at none`` it
runs to the end and prints the outcome: the uninterrupted run the killed ones are compared with.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from datetime import timedelta
from typing import Any

from payment_examples.checkout.processor import LocalProcessor
from payment_examples.checkout.service import Checkout
from payment_examples.core.aws import dynamodb
from payment_examples.core.errors import IllegalTransitionError
from payment_examples.handlers import process
from payment_examples.payments.service import PaymentService
from payment_examples.tables.models import get_models
from tests.api_events import api_event, token

MERCHANT = "merchant-k"
AMOUNT = 4_200
LEASE = timedelta(seconds=1)  # a killed worker's processor call is its own briefly (in Lambda: the time it had left)

# (point, DynamoDB operation, table, which call of that kind) -- killed right after that call returned
CALL_POINTS = {
    "payment-put": ("PutItem", "payments", 1),
    "authorize-committed": ("UpdateItem", "payments", 1),
    "capture-committed": ("UpdateItem", "payments", 3),  # 2 is the capture's processor-call record
}
STEP_POINTS = ("created", "authorize-sent", "authorized", "capture-marked", "capture-sent")
POINTS = (*CALL_POINTS, *STEP_POINTS)


def kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", required=True)
    parser.add_argument("--kill-at", required=True, choices=(*POINTS, "none"))
    args = parser.parse_args()

    models = get_models()
    seen: dict[tuple[str, str], int] = {}

    def after_call(model: Any, context: Any, **_: Any) -> None:
        table = context.get("kill_table", "")
        seen[(model.name, table)] = seen.get((model.name, table), 0) + 1
        planned = CALL_POINTS.get(args.kill_at)
        if planned and (planned[0], planned[1]) == (model.name, table) and seen[(model.name, table)] == planned[2]:
            kill()

    def before_build(params: dict, context: Any, **_: Any) -> None:
        name = params.get("TableName", "")
        context["kill_table"] = name.removeprefix(models.payment.Meta.table_name.removesuffix("payments"))

    clients = {dynamodb(), *(m._get_connection().connection.client for m in models.all())}
    for client in clients:
        client.meta.events.register("before-parameter-build.dynamodb", before_build)
        client.meta.events.register("after-call.dynamodb", after_call)

    def on_step(step: str, _payment: Any) -> None:
        if step == args.kill_at:
            kill()

    print(json.dumps(client_flow(models, args.key, on_step)))


def client_flow(models: Any, key: str, on_step: Any = None) -> dict:
    """What a merchant's integration does: POST /payments with a card (retried with the same key after a failure),
    then capture. A capture refused because the payment is captured already counts as done."""
    service = PaymentService(models=models)
    checkout = Checkout(service, LocalProcessor(models=models), on_step=on_step, lease=LEASE)
    handler = process.make_handler(service, checkout)
    headers = {"Authorization": f"Bearer {token(merchant_id=MERCHANT)}", "Idempotency-Key": key}
    body = {"amount": AMOUNT, "currency": "EUR", "payment_method": "pm_card_visa"}
    response = handler(api_event("2.0", "POST", "/payments", headers=headers, body=body), None)
    payment = json.loads(response["body"])
    try:
        final = checkout.capture(MERCHANT, payment["id"], actor=MERCHANT).payment.status
    except IllegalTransitionError as error:
        final = f"refused: {error.status}"
    return {"status": response["statusCode"], "payment": payment["id"], "final": final}


if __name__ == "__main__":
    main()
