"""The delivery queue and its dead letters (SQS FIFO): where the producer puts one message per (event, endpoint)
and the deliverer takes them from.

FIFO, because a merchant must see a payment's events in the order they happened: the message group is
``<endpoint>:<payment>``, so one payment's events reach one endpoint in order while other payments and endpoints
go on in parallel (a slow endpoint holds back only its own groups). Deduplication ids are explicit
(``<event>:<endpoint>``): a redelivered stream record sends the same message again within SQS's five-minute
window and it is dropped; later than that, the delivery log (one item per (event, endpoint)) still says it was
delivered.

Deployed, ``template.yaml`` creates the queues and the settings name them (``PAYMENT_WEBHOOK_QUEUE_URL``,
``PAYMENT_WEBHOOK_DEAD_LETTER_QUEUE_URL``); locally ``ensure_queues`` creates them on the engine, named after the
table prefix, so tests and notebooks with their own prefix never share a queue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from payment_examples.core import ConfigurationError, Settings, aws, error_code, get_settings

VISIBILITY_TIMEOUT_S = 30  # SQS's default; the deliverer sets a failed message's own (its backoff) itself
QUEUE_BASE = "webhooks"
DEAD_LETTER_BASE = "webhook-dead-letters"
_MISSING = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})


@dataclass(frozen=True)
class QueueUrls:
    queue: str
    dead_letter: str | None  # None: no dead-letter queue configured (a deployment that relies on the redrive only)


def queue_names(settings: Settings) -> tuple[str, str]:
    """The local queues' names: (delivery queue, dead-letter queue), after the table prefix."""
    return settings.table_name(QUEUE_BASE) + ".fifo", settings.table_name(DEAD_LETTER_BASE) + ".fifo"


BATCH_SIZE = 10  # messages per receive (the delivery function's event source: template.yaml)


def max_receive_count(settings: Settings | None = None) -> int:
    """The redrive's backstop, as in template.yaml: ``BATCH_SIZE * webhook_max_attempts + 5``. The deliverer counts
    attempts in the delivery log and moves a message to the dead letters itself at its last one; SQS counts
    receives, and a payment's later messages are received (and handed back unattempted, in order) on every retry
    of an earlier one that blocks them: at most the 9 ahead of it in a batch, each up to its last attempt, then its
    own attempts (the 5: AWS's margin for Lambda's throttled receives). Only a message whose worker crashes on it
    again and again reaches this."""
    return BATCH_SIZE * (settings or get_settings()).webhook_max_attempts + 5


def ensure_queues(settings: Settings | None = None) -> QueueUrls:
    """The queues' URLs, creating the local ones if missing (and bringing an existing one's redrive policy in line
    with the settings). Configured URLs are returned as they are: deployed queues belong to the template."""
    settings = settings or get_settings()
    if settings.webhook_queue_url:
        return queue_urls(settings)
    sqs = aws.client("sqs", settings)
    queue_name, dead_letter_name = queue_names(settings)
    fifo = {"FifoQueue": "true", "ContentBasedDeduplication": "false"}
    dead_letter = _create(sqs, dead_letter_name, fifo)
    arn = sqs.get_queue_attributes(QueueUrl=dead_letter, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": str(max_receive_count(settings))})
    queue = _create(sqs, queue_name, {**fifo, "VisibilityTimeout": str(VISIBILITY_TIMEOUT_S), "RedrivePolicy": redrive})
    return QueueUrls(queue, dead_letter)


def queue_urls(settings: Settings | None = None) -> QueueUrls:
    """The configured URLs, else those of the local queues (``ConfigurationError`` if they do not exist)."""
    settings = settings or get_settings()
    if settings.webhook_queue_url:
        return QueueUrls(settings.webhook_queue_url, settings.webhook_dead_letter_queue_url)
    sqs = aws.client("sqs", settings)
    queue_name, dead_letter_name = queue_names(settings)
    queue = _url(sqs, queue_name)
    if queue is None:
        raise ConfigurationError(
            f"no webhook queue: PAYMENT_WEBHOOK_QUEUE_URL is not set and {queue_name} does not exist "
            "(webhooks.ensure_queues creates the local ones)"
        )
    return QueueUrls(queue, settings.webhook_dead_letter_queue_url or _url(sqs, dead_letter_name))


def _create(sqs: Any, name: str, attributes: dict[str, str]) -> str:
    try:
        return sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    except ClientError as error:
        if error_code(error) not in ("QueueAlreadyExists", "QueueNameExists"):
            raise
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]  # it exists with other attributes: set the mutable ones
    mutable = {k: v for k, v in attributes.items() if k != "FifoQueue"}
    sqs.set_queue_attributes(QueueUrl=url, Attributes=mutable)
    return url


def _url(sqs: Any, name: str) -> str | None:
    try:
        return sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as error:
        if error_code(error) in _MISSING:
            return None
        raise
