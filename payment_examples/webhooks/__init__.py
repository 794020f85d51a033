"""Signed merchant webhooks from the payments table's stream (notebook 08).

A payment's change commits in one conditional write; its webhook event follows from the stream, at least once and
in order per payment and endpoint, never from the request that made the change:

* ``events``: the event id (derived from payment and version), its type and its deterministic JSON body, read from
  a stream record (pure functions);
* ``endpoints``: merchants' endpoints (``WebhookEndpoints``), their event subscriptions and their signing secrets,
  stored encrypted (``encryption.FieldEncryptor``: the one declared arrow webhooks -> encryption), at most two
  active during a rotation;
* ``queues``: the SQS FIFO delivery queue and its dead letters (``ensure_queues`` creates the local ones);
* ``producer``: stream record -> one message per (event, endpoint) and its delivery-log item
  (``handlers/webhook_events.py`` is its Lambda handler);
* ``delivery``: the deliverer that signs and posts each message, retries with backoff, gives up to the dead
  letters and replays (``handlers/webhook_delivery.py``);
* ``verify_signature`` (``core.signatures``): what a merchant's receiver runs on each request, re-exported here as
  the helper to copy.
"""

from __future__ import annotations

from payment_examples.core.signatures import SIGNATURE_HEADER, SignatureVerificationError, verify_signature
from payment_examples.webhooks.delivery import (
    Deliverer,
    DeliveryCounters,
    DeliveryView,
    HttpPost,
    ReplayResult,
    UrllibPoster,
)
from payment_examples.webhooks.endpoints import (
    Endpoint,
    EndpointChangedError,
    WebhookEndpointNotFoundError,
    WebhookEndpoints,
    check_events,
)
from payment_examples.webhooks.events import (
    EVENT_TYPE_FOR_CHANGE,
    EVENT_TYPES,
    WebhookEvent,
    event_body,
    event_for,
    event_id_for,
    events_from_record,
)
from payment_examples.webhooks.producer import Producer, Published, WebhookPublishError, queue_message
from payment_examples.webhooks.queues import QueueUrls, ensure_queues, queue_names, queue_urls

__all__ = [
    "EVENT_TYPES",
    "EVENT_TYPE_FOR_CHANGE",
    "SIGNATURE_HEADER",
    "Deliverer",
    "DeliveryCounters",
    "DeliveryView",
    "Endpoint",
    "EndpointChangedError",
    "HttpPost",
    "Producer",
    "Published",
    "QueueUrls",
    "ReplayResult",
    "SignatureVerificationError",
    "UrllibPoster",
    "WebhookEndpointNotFoundError",
    "WebhookEndpoints",
    "WebhookEvent",
    "WebhookPublishError",
    "check_events",
    "ensure_queues",
    "event_body",
    "event_for",
    "event_id_for",
    "events_from_record",
    "queue_message",
    "queue_names",
    "queue_urls",
    "verify_signature",
]
