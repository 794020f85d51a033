"""The producer: a payments-table stream record -> its webhook events -> the delivery log's item and one queue
message per (event, endpoint).

It runs in the stream's consumer (``handlers/webhook_events.py``), never in the request that changed the payment:
the payment's one conditional write is the commit point, and the event follows from it as a projection, at least
once, whatever happens to the request afterwards. Every step is idempotent per (event, endpoint), so a retried
record repeats them harmlessly:

1. the merchant's endpoints (``WebhookEndpoints.for_merchant``: one query, cached per merchant for the ttl; most
   merchants have none, and then nothing else happens), the enabled ones that want the event's type;
2. the delivery log item, one ``UpdateItem`` per (event, endpoint) that writes the whole item, ``pending``, on
   the condition that it does not exist (plain ``SET``s: cheaper than one ``if_not_exists`` per attribute). A
   retried record finds it there; then, and only then, a second write sets the attributes still absent
   (``if_not_exists``): nothing the deliverer logged is rewritten, nothing is lost (the log never goes back to
   ``pending``), and an item a deliverer wrote first (a message of a producer that logged after sending) is
   completed;
3. the messages, ``SendMessageBatch`` (at most 10 per call, in order, never two of one message group in one call:
   a failed entry then stops its group's later messages from being sent ahead of it). An entry that fails raises
   ``WebhookPublishError``, so the record is reported as failed and retried from there; what was sent already is
   sent again with the same deduplication id (``<event>:<endpoint>``), which SQS drops within its five minutes.

The log is written before the messages go out, so a message always finds its log item: the deliverer's one write
per attempt is a short update conditioned on the item existing, not one that must also write the item's identity
(it keeps that longer update as a fallback, for a message sent by a producer that logged after sending). A crash
between the two leaves ``pending`` items whose messages the record's retry sends; a record given up on (its
retries spent) goes to the stream's on-failure queue and leaves its items ``pending``, never delivered: the log
still names every event that was due, and shows which never left.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pynamodb.exceptions import UpdateError

from payment_examples.core import Clock, PaymentExamplesError, Settings, SystemClock, aws, get_settings, logger
from payment_examples.core.errors import CONDITIONAL_CHECK_FAILED, error_code
from payment_examples.tables.models import BoundModels, get_models
from payment_examples.webhooks.endpoints import Endpoint, WebhookEndpoints
from payment_examples.webhooks.events import WebhookEvent, events_from_record
from payment_examples.webhooks.queues import queue_urls

BATCH_LIMIT = 10  # SendMessageBatch's most entries per call
PENDING = "pending"


class WebhookPublishError(PaymentExamplesError):
    """SQS refused some messages of a batch: the stream record is reported as failed and retried (at least once).
    ``failed`` holds (event id, endpoint id, SQS error code) per refused message; never a body."""

    title = "Webhook messages not sent"

    def __init__(self, failed: Sequence[tuple[str, str, str]]) -> None:
        shown = ", ".join(f"{event}:{endpoint} ({code})" for event, endpoint, code in failed[:5])
        super().__init__(f"{len(failed)} webhook message(s) not sent: {shown}")
        self.failed = tuple(failed)


@dataclass(frozen=True)
class Published:
    """What one ``publish`` did: how many events it was given, and the (event id, endpoint id) of each message sent,
    in the order sent."""

    events: int
    messages: tuple[tuple[str, str], ...] = ()


def queue_message(
    *,
    event_id: str,
    endpoint_id: str,
    merchant_id: str,
    payment_id: str,
    payment_version: int,
    event_type: str,
    body: str,
    replay: int = 0,
) -> dict[str, str]:
    """A delivery message's ``MessageGroupId``, ``MessageDeduplicationId`` and ``MessageBody``: one payment's events
    in order per endpoint; the same (event, endpoint) always deduplicated, a replay ``n`` (``:r<n>``) not."""
    dedup = f"{event_id}:{endpoint_id}" + (f":r{replay}" if replay else "")
    message = {
        "event_id": event_id,
        "endpoint_id": endpoint_id,
        "merchant_id": merchant_id,
        "payment_id": payment_id,
        "payment_version": int(payment_version),
        "type": event_type,
        "body": body,
    }
    return {
        "MessageGroupId": f"{endpoint_id}:{payment_id}",
        "MessageDeduplicationId": dedup,
        "MessageBody": json.dumps(message, separators=(",", ":"), sort_keys=True),
    }


class Producer:
    """Turns payments-table stream records into delivery messages and log items (see the module docstring)."""

    def __init__(
        self,
        *,
        endpoints: WebhookEndpoints | None = None,
        models: BoundModels | None = None,
        settings: Settings | None = None,
        clock: Clock | None = None,
        sqs: Any = None,
    ) -> None:
        self._models = models
        self._settings = settings
        self.clock = clock or SystemClock()
        self.endpoints = endpoints or WebhookEndpoints(models=models, settings=settings, clock=self.clock)
        self._sqs = sqs
        self._queue_url: str | None = None

    @property
    def settings(self) -> Settings:
        return self._settings or get_settings()

    @property
    def models(self) -> BoundModels:
        return self._models or get_models(self.settings)

    @property
    def sqs(self) -> Any:
        return self._sqs or aws.client("sqs", self.settings)

    @property
    def queue_url(self) -> str:
        """Looked up on the first message (a producer that never sends needs no queue)."""
        if self._queue_url is None:
            self._queue_url = queue_urls(self.settings).queue
        return self._queue_url

    # -- entry points ---------------------------------------------------------------------------------------------

    def publish_record(self, record: Any) -> Published:
        """The record handler: one payments-table stream record (a record of another table is a ``ValueError``)."""
        raw = record.raw_event if hasattr(record, "raw_event") else record
        table = self.models.payment.Meta.table_name
        source = _table_of(raw.get("eventSourceARN") or "")
        if source and source != table:
            raise ValueError(f"a record of {source!r}'s stream, not of the payments table {table!r}'s")
        return self.publish(events_from_record(raw, model=self.models.payment))

    def publish(self, events: Iterable[WebhookEvent]) -> Published:
        """Write the log item of each (event, enabled endpoint that wants it), then enqueue their messages."""
        events = list(events)
        wanted = self._fan_out(events)
        if not wanted:
            return Published(len(events))
        now = self.clock.now()
        for event, endpoint in wanted:
            self._log(event, endpoint, now)
        self._send(wanted)
        sent = tuple((event.event_id, endpoint.endpoint_id) for event, endpoint in wanted)
        logger.info("webhook messages enqueued", payment_ids=sorted({e.payment_id for e in events}),
                    events=len(events), messages=len(sent))  # fmt: skip
        return Published(len(events), sent)

    # -- steps ----------------------------------------------------------------------------------------------------

    def _fan_out(self, events: list[WebhookEvent]) -> list[tuple[WebhookEvent, Endpoint]]:
        by_merchant: dict[str, list[Endpoint]] = {}
        wanted = []
        for event in events:
            if event.merchant_id not in by_merchant:
                by_merchant[event.merchant_id] = self.endpoints.for_merchant(event.merchant_id)
            wanted += [(event, e) for e in by_merchant[event.merchant_id] if e.enabled and e.wants(event.type)]
        return wanted

    def _send(self, wanted: list[tuple[WebhookEvent, Endpoint]]) -> None:
        for batch in _batches([(event, endpoint, _message(event, endpoint)) for event, endpoint in wanted]):
            entries = [{"Id": str(index), **message} for index, (_, _, message) in enumerate(batch)]
            response = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            failed = response.get("Failed") or []
            if failed:
                refused = []
                for failure in failed:
                    event, endpoint, _ = batch[int(failure["Id"])]
                    refused.append((event.event_id, endpoint.endpoint_id, str(failure.get("Code"))))
                logger.warning("webhook messages refused by SQS", failed=len(refused),
                               codes=sorted({code for _, _, code in refused}))  # fmt: skip
                raise WebhookPublishError(refused)

    def _log(self, event: WebhookEvent, endpoint: Endpoint, now: datetime) -> None:
        """The whole pending item, if it does not exist; if it does (an earlier try of this record wrote it, and
        the deliverer may have logged attempts on it since), only the attributes it lacks (``if_not_exists``)."""
        Model = self.models.webhook_delivery
        fields = [
            (Model.merchant_id, event.merchant_id),
            (Model.payment_id, event.payment_id),
            (Model.payment_version, event.payment_version),
            (Model.event_type, event.type),
            (Model.body, event.body),
            (Model.state, PENDING),
            (Model.attempts, 0),
            (Model.replays, 0),
            (Model.created_at, event.created_at),
            (Model.enqueued_at, now),
        ]
        connection = Model._get_connection()
        try:
            connection.update_item(event.event_id, range_key=endpoint.endpoint_id,
                                   actions=[attribute.set(value) for attribute, value in fields],
                                   condition=Model.event_id.does_not_exist())  # fmt: skip
            return
        except UpdateError as error:
            if error_code(error) != CONDITIONAL_CHECK_FAILED:
                raise
        # SET a = if_not_exists(a, v): a retried record rewrites nothing the item holds
        actions = [attribute.set(attribute | value) for attribute, value in fields]
        connection.update_item(event.event_id, range_key=endpoint.endpoint_id, actions=actions)


def _message(event: WebhookEvent, endpoint: Endpoint) -> dict[str, str]:
    return queue_message(event_id=event.event_id, endpoint_id=endpoint.endpoint_id, merchant_id=event.merchant_id,
                         payment_id=event.payment_id, payment_version=event.payment_version, event_type=event.type,
                         body=event.body)  # fmt: skip


def _batches(messages: list[Any]) -> list[list[Any]]:
    """In order, at most ``BATCH_LIMIT`` each, and a new batch where a message group would repeat."""
    batches: list[list[Any]] = []
    groups: set[str] = set()
    for item in messages:
        group = item[2]["MessageGroupId"]
        if not batches or len(batches[-1]) == BATCH_LIMIT or group in groups:
            batches.append([])
            groups = set()
        batches[-1].append(item)
        groups.add(group)
    return batches


def _table_of(arn: str) -> str:
    """``arn:aws:dynamodb:<region>:<account>:table/<name>/stream/<label>`` -> ``<name>`` ("" for no ARN)."""
    _, _, rest = arn.partition(":table/")
    return rest.split("/", 1)[0]
