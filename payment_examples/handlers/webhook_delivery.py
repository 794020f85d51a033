"""The webhook deliverer's SQS handler: a batch of the delivery queue's messages -> ``webhooks.Deliverer.handle``.

Deployed as a Lambda function with an SQS event source on the FIFO delivery queue (``template.yaml``,
``ReportBatchItemFailures``); locally ``harness.webhooks.QueueWorker`` drives it. It answers the messageIds to
keep in ``batchItemFailures``: Lambda deletes the others. The deliverer already does what a FIFO batch needs
(a failed message's group is not attempted further in the batch, and each failed message's visibility is its
backoff), so Powertools' FIFO processor, which would stop at the first failure, is not used.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from payment_examples.core import Settings, get_settings
from payment_examples.webhooks.delivery import Deliverer
from payment_examples.webhooks.endpoints import WebhookEndpoints


@lru_cache(maxsize=8)
def _default_deliverer(settings: Settings) -> Deliverer:
    """One deliverer per container and settings: its HTTP pool, clients and queue URLs live across invocations."""
    return Deliverer(endpoints=WebhookEndpoints(settings=settings), settings=settings)


def make_handler(deliverer: Deliverer | None = None) -> Callable[[dict, Any], dict]:
    """A handler bound to ``deliverer`` (default: built from the settings in force, once per container)."""

    def handler(event: dict, context: Any) -> dict:
        bound = deliverer or _default_deliverer(get_settings())
        failures = bound.handle(list(event.get("Records") or []))
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failures]}

    return handler


handler = make_handler()  # the Lambda entry point: payment_examples.handlers.webhook_delivery.handler
