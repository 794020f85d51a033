"""The webhook producer's stream handler: the payments table's DynamoDB stream -> ``webhooks.Producer`` (one queue
message per (event, endpoint), and its delivery-log item).

Deployed as a Lambda function with a DynamoDB Streams event source on the payments table (``template.yaml``), beside
the audit consumer (``handlers/stream.py``) on the same stream; locally ``engine.stream.StreamPoller`` drives it
(``harness/webhooks.py``). Records are handled with Powertools' ``BatchProcessor``: a record that fails is reported in
``batchItemFailures`` and Lambda retries from it (at least once: the producer's steps are idempotent per (event,
endpoint)). One payment's records keep their order: once one fails, the payment's later records in the batch fail
too, unprocessed, so its events are never enqueued past an earlier one that is still to be retried.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from payment_examples.core import Settings, get_settings
from payment_examples.handlers.stream import in_item_order
from payment_examples.webhooks.producer import Producer


@lru_cache(maxsize=8)
def _default_producer(settings: Settings) -> Producer:
    """One producer per container and settings: its endpoint cache and clients live across invocations."""
    return Producer(settings=settings)


def make_handler(producer: Producer | None = None) -> Callable[[dict, Any], dict]:
    """A handler bound to ``producer`` (default: built from the settings in force, once per container)."""

    def handler(event: dict, context: Any) -> dict:
        bound = producer or _default_producer(get_settings())
        return in_item_order(event, context, bound.publish_record)

    return handler


handler = make_handler()  # the Lambda entry point: payment_examples.handlers.webhook_events.handler
