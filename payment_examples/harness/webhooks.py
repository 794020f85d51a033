"""The webhook pipeline run locally: the deployed handlers, driven as Lambda's event sources drive them.

Deployed, two functions carry a payment's change to its merchant: the producer (``handlers/webhook_events.py``, a
DynamoDB Streams event source on the payments table) and the deliverer (``handlers/webhook_delivery.py``, an SQS
event source on the FIFO delivery queue). Here ``WebhookPipeline`` runs both on the engine:

* a ``StreamPoller`` (engine/stream.py) over the payments table with the producer's handler;
* a ``QueueWorker``: what Lambda's SQS event source does. It receives up to ``batch_size`` visible messages
  (``ReceiveMessage`` with every attribute, no long poll), hands them to the handler in Lambda's SQS event shape,
  and deletes those the handler did not report in ``batchItemFailures``. A reported message is left alone: it
  comes back when its visibility timeout (the deliverer's backoff) ends, with its receive count one higher.
  A handler that raises has every message of the batch come back (nothing is deleted).

``drain()`` runs both until the stream is caught up and a receive finds nothing visible (tests and notebooks; a
message waiting out a backoff is not waited for). ``start()`` / ``stop()`` run them in the background, each on its
own thread as the two event sources run apart: the deliverer works through the queue while the producer is still
reading the stream, so a burst of changes is delivered as it is enqueued, not after the whole burst is.
``latencies_ms()``: per delivery, the change's commit (the log item's ``created_at``, the change's own time) to
its ``delivered_at``; the two clocks are the payment service's and the deliverer's, so the figure means
something when both are the system clock.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from payment_examples.core import Settings, aws, get_settings, logger
from payment_examples.engine.stream import EventSourceConfig, StreamPoller
from payment_examples.handlers import webhook_delivery, webhook_events
from payment_examples.tables import get_models
from payment_examples.webhooks.delivery import Deliverer
from payment_examples.webhooks.endpoints import WebhookEndpoints
from payment_examples.webhooks.producer import Producer
from payment_examples.webhooks.queues import QueueUrls, ensure_queues

SqsHandler = Callable[[dict, Any], dict | None]
_FIFO_ATTRIBUTES = ("ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp",
                    "SequenceNumber", "MessageGroupId", "MessageDeduplicationId")  # fmt: skip


class _LambdaContext:
    """What a handler reads of Lambda's context object."""

    function_name = "payment-examples-webhook-delivery"
    memory_limit_in_mb = 512

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@dataclass
class WorkerStats:
    received: int = 0  # messages handed to the handler (a message retried n times counts n + 1)
    batches: int = 0  # handler invocations
    deleted: int = 0
    reported: int = 0  # messages the handler reported as failed (left in the queue)
    errors: int = 0  # invocations that raised (the whole batch left in the queue)


class QueueWorker:
    """Lambda's SQS event source over ``queue_url``, locally (see the module docstring)."""

    def __init__(
        self,
        queue_url: str,
        handler: SqsHandler,
        *,
        settings: Settings | None = None,
        batch_size: int = 10,
        sqs: Any = None,
    ) -> None:
        if not 1 <= batch_size <= 10:
            raise ValueError("batch_size must be between 1 and 10 (ReceiveMessage's limit)")
        self.queue_url = queue_url
        self.handler = handler
        self.settings = settings or get_settings()
        self.batch_size = batch_size
        self.stats = WorkerStats()
        self._sqs = sqs
        self._arn: str | None = None
        self._lock = threading.Lock()  # one batch at a time (drain from a test beside the background thread)

    @property
    def sqs(self) -> Any:
        if self._sqs is None:
            self._sqs = aws.client("sqs", self.settings)
        return self._sqs

    @property
    def arn(self) -> str:
        if self._arn is None:
            attributes = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
            self._arn = attributes["Attributes"]["QueueArn"]
        return self._arn

    def poll(self) -> int:
        """One receive and its invocation. Returns the number of messages received (0: nothing visible)."""
        with self._lock:
            messages = self.sqs.receive_message(
                QueueUrl=self.queue_url, AttributeNames=["All"], MessageAttributeNames=["All"],
                MaxNumberOfMessages=self.batch_size, WaitTimeSeconds=0,
            ).get("Messages") or []  # fmt: skip
            if not messages:
                return 0
            self.stats.received += len(messages)
            self.stats.batches += 1
            records = [self._lambda_record(m) for m in messages]
            try:
                response = self.handler({"Records": records}, _LambdaContext())
            except Exception as error:  # a function error: every message returns after its visibility timeout
                self.stats.errors += 1
                logger.warning("webhook delivery handler failed", messages=len(records),
                               error_type=type(error).__name__)  # fmt: skip
                return len(messages)
            failed = {f.get("itemIdentifier") for f in (response or {}).get("batchItemFailures") or []}
            done = [r for r in records if r["messageId"] not in failed]
            self.stats.reported += len(records) - len(done)
            self._delete(done)
            return len(messages)

    def _delete(self, records: list[dict]) -> None:
        for start in range(0, len(records), 10):
            entries = [{"Id": str(index), "ReceiptHandle": record["receiptHandle"]}
                       for index, record in enumerate(records[start:start + 10])]  # fmt: skip
            response = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            self.stats.deleted += len(response.get("Successful") or [])
            for failure in response.get("Failed") or []:  # an expired receipt: the message will come back
                logger.warning("webhook message not deleted", code=failure.get("Code"))

    def _lambda_record(self, message: dict) -> dict:
        """A message as Lambda's SQS event source delivers it."""
        attributes = message.get("Attributes") or {}
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": {name: attributes[name] for name in _FIFO_ATTRIBUTES if name in attributes},
            "messageAttributes": {
                name: {
                    "stringValue": value.get("StringValue"),
                    "binaryValue": value.get("BinaryValue"),
                    "stringListValues": [],
                    "binaryListValues": [],
                    "dataType": value.get("DataType"),
                }
                for name, value in (message.get("MessageAttributes") or {}).items()
            },  # fmt: skip
            "md5OfBody": message.get("MD5OfBody"),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.arn,
            "awsRegion": self.settings.region,
        }


@dataclass(frozen=True)
class PipelineStats:
    records: int  # stream records handed to the producer
    messages: int  # queue messages handed to the deliverer (with every retry)
    delivered: int
    failed: int  # given up on: dead-lettered, or the endpoint disabled
    attempts: int  # HTTP attempts
    retried: int  # failed attempts left for a later one (backoff)
    blocked: int  # messages not attempted behind a failed one of their payment in a batch


class WebhookPipeline:
    """Producer and deliverer over the engine (see the module docstring). With settings that name no queue the
    local queues are created (``ensure_queues``)."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        endpoints: WebhookEndpoints | None = None,
        deliverer: Deliverer | None = None,
        batch_size: int = 10,
        config: EventSourceConfig | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.queues: QueueUrls = ensure_queues(self.settings)  # the configured ones as they are, else the local ones
        self.endpoints = endpoints or (deliverer.endpoints if deliverer else WebhookEndpoints(settings=self.settings))
        self.producer = Producer(endpoints=self.endpoints, settings=self.settings)
        self.deliverer = deliverer or Deliverer(endpoints=self.endpoints, settings=self.settings, queues=self.queues)
        self.poller = StreamPoller(
            get_models(self.settings).payment.Meta.table_name,
            webhook_events.make_handler(self.producer),
            settings=self.settings,
            config=config,
        )
        self.worker = QueueWorker(
            self.queues.queue, webhook_delivery.make_handler(self.deliverer), settings=self.settings,
            batch_size=batch_size,
        )  # fmt: skip
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    @property
    def stats(self) -> PipelineStats:
        counters = self.deliverer.counters
        return PipelineStats(
            records=self.poller.stats.records, messages=self.worker.stats.received, delivered=counters.delivered,
            failed=counters.failed, attempts=counters.attempts, retried=counters.retried, blocked=counters.blocked,
        )  # fmt: skip

    def latencies_ms(self) -> list[float]:
        """Per delivery so far, in the order delivered: commit (``created_at``) -> ``delivered_at``, in ms, read
        from the log items the deliveries wrote (their ``UpdateItem``'s new image)."""
        return list(self.deliverer.counters.latency_ms)

    def round(self) -> tuple[int, int]:
        """One round: the stream caught up (every record so far to the producer), then one receive. Returns
        (stream records, queue messages)."""
        before = self.poller.stats.records
        self.poller.drain()
        return self.poller.stats.records - before, self.worker.poll()

    def drain(self, *, max_rounds: int = 10_000) -> PipelineStats:
        """Until the stream is caught up and a receive finds nothing visible."""
        for _ in range(max_rounds):
            if self.round() == (0, 0):
                return self.stats
        raise RuntimeError(f"the webhook pipeline still had work after {max_rounds} rounds")

    # -- in the background ---------------------------------------------------------------------------------------

    def start(self, *, interval: float = 0.2) -> None:
        """Run the producer's stream poller and the deliverer's queue worker on two daemon threads until ``stop()``
        (each waits ``interval`` s after a round that found nothing)."""
        if self._threads:
            raise RuntimeError("this pipeline is already running")
        self._stopping.clear()
        self._threads = [
            threading.Thread(target=self._run, args=(self._stream_round, interval), daemon=True,
                             name="webhook-pipeline"),
            threading.Thread(target=self._run, args=(self.worker.poll, interval), daemon=True,
                             name="webhook-pipeline-delivery"),
        ]  # fmt: skip
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        if not self._threads:
            return
        self._stopping.set()
        for thread in self._threads:
            thread.join()
        self._threads = []

    def __enter__(self) -> WebhookPipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _stream_round(self) -> int:
        """The stream caught up; the number of records it held."""
        before = self.poller.stats.records
        self.poller.drain()
        return self.poller.stats.records - before

    def _run(self, work: Callable[[], int], interval: float) -> None:
        while not self._stopping.is_set():
            try:
                if work() == 0:
                    self._stopping.wait(interval)
            except Exception as error:  # the engine went away, a network blip: log, wait, go on
                logger.warning("webhook pipeline round failed", error_type=type(error).__name__)
                self._stopping.wait(max(interval, 1.0))
