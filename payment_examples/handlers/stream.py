"""The stream consumer: audit entries (and a payment's Transactions) projected from each change (projection.py) of
the payments, customers and payment-methods tables.

Deployed as a Lambda function with a DynamoDB Streams event source per table (``template.yaml``: each record goes
to its table's projector by its ``eventSourceARN``; ``ReportBatchItemFailures``,
``BisectBatchOnFunctionError``, bounded retries and record age, an SQS on-failure destination); locally
``stream.StreamPoller`` drives the same handler over the engine's stream. Records are handled with Powertools'
``BatchProcessor``: a record that fails is reported in ``batchItemFailures`` and Lambda retries from it. Records
of one payment keep their order: once one fails, the payment's later records in the batch fail too (unprocessed),
so they are retried after it instead of being projected past it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from payment_examples.audit import PaymentProjector, Projector, Projectors
from payment_examples.core import PaymentExamplesError, Settings, get_settings
from payment_examples.tables import get_models


class BlockedRecordError(PaymentExamplesError):
    """A record not projected because an earlier record of the same item failed in this batch."""


def stream_projectors(settings: Settings) -> Projectors:
    """The projector of every table whose stream the function consumes."""
    from payment_examples.encryption.card_vault import PAYMENT_METHODS
    from payment_examples.encryption.customers import CUSTOMERS

    models = get_models(settings)
    return Projectors([PaymentProjector(models=models, settings=settings),
                       *(Projector(subject, models=models, settings=settings)
                         for subject in (CUSTOMERS, PAYMENT_METHODS))])  # fmt: skip


_default_projectors = lru_cache(maxsize=8)(stream_projectors)


def make_handler(projector: Projector | Projectors | None = None) -> Callable[[dict, Any], dict]:
    """A handler bound to ``projector`` (default: every table's, built from the settings in force, once per
    container)."""

    def handler(event: dict, context: Any) -> dict:
        bound = projector or _default_projectors(get_settings())
        return in_item_order(event, context, bound.project)

    return handler


def in_item_order(event: dict, context: Any, apply: Callable[[DynamoDBRecord], Any]) -> dict:
    """``apply`` each record of a DynamoDB Streams batch with Powertools' ``BatchProcessor``, answering Lambda's
    partial batch response; once a record fails, the same item's later records in the batch fail too
    (``BlockedRecordError``), so they are retried after it rather than applied past it. Other items go on."""
    failed: set[str] = set()

    def record_handler(record: DynamoDBRecord) -> Any:
        keys = (record.raw_event.get("dynamodb") or {}).get("Keys", {})
        key = repr((record.raw_event.get("eventSourceARN"), sorted(keys.items())))
        if key in failed:
            raise BlockedRecordError("an earlier record of this item failed in this batch")
        try:
            return apply(record)
        except Exception:
            failed.add(key)
            raise

    processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
    return process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                    context=context)  # fmt: skip


handler = make_handler()  # the Lambda entry point: payment_examples.handlers.stream.handler
