"""Delivering merchant webhooks: one signed POST per (event, endpoint) message of the FIFO queue, retried with
backoff, logged, dead-lettered at the last attempt, replayable.

Deployed as a Lambda function with an SQS event source on the delivery queue (``handlers/webhook_delivery.py``,
``ReportBatchItemFailures``); locally ``harness.webhooks.QueueWorker`` drives the same handler. Why it is built so:

* **Order per payment, per endpoint.** The queue's message group is ``<endpoint>:<payment>``. SQS FIFO hands out
  a group's next message only once the previous one is deleted, so a failed message simply stays in flight for
  its backoff and holds its payment's later events behind it. Inside one batch the handler must do the same:
  once a group's message fails, the group's later messages are failures too, not attempted, and made visible
  again at once (SQS keeps them behind the first, which is still in flight). Other payments go on.
* **The backoff is the message's own visibility timeout**: ``ChangeMessageVisibility`` to ``backoff(attempt)``
  (exponential, capped, equal jitter so a recovering endpoint is not hit by every retry in the same second). No
  sleeping function, no scheduler: SQS holds the message.
* **Attempts are counted in the delivery log, not by SQS.** A message's ``ApproximateReceiveCount`` also counts
  every batch it sat in behind its group's failing message (received, not attempted): a payment's third event
  would reach the limit before its first attempt. The log's ``attempts`` (an atomic ``ADD`` in the attempt's own
  write, read back from its new image) counts only real attempts. Each ``replay`` gives ``webhook_max_attempts``
  more: a delivery gives up once ``attempts >= webhook_max_attempts * (replays + 1)``.
* **The worker gives up itself**: at its last attempt it logs the delivery failed (with the keys of the sparse
  ``failed-by-time`` index), copies the message to the dead-letter queue and lets it be deleted (a second write,
  at the last attempt only). The queue's redrive policy is only a backstop for a worker that crashes on a
  message; its ``maxReceiveCount`` must leave room for the receives of blocked messages (see above).
  A dead-lettered event no longer holds back its payment's later events: they are delivered, and a ``replay``
  sends it afterwards (``Payment-Event-Id`` and ``payment_version`` let the merchant order and deduplicate).
* **One write per attempt** (two at the last): an ``UpdateItem`` on the delivery log (``WebhookDelivery``) that
  counts the attempt, appends it to the history and sets the outcome, conditioned on the item existing: the
  producer writes the whole item before it sends the message. Only if the condition fails (a message sent by a
  producer that logged after sending) is the attempt written again with the identity fields (``if_not_exists``),
  so it leaves a whole item. The history keeps the last ``HISTORY_LIMIT`` attempts: a further write trims it only
  once it grew past that (after replays, or with more than ten attempts allowed).
* **The endpoint is read once per ``endpoint_ttl``** (60 s by default, as the producer's ``for_merchant``), with its
  secrets decrypted once, not per message: one ``GetItem`` and the decryption per endpoint and minute, held in
  this process only (never logged). The price: a disable, a re-enable, a new URL or a rotation (made anywhere,
  even through this deliverer's own ``WebhookEndpoints``) is seen within the ttl, as the producer sees its
  endpoints (``for_merchant``). A
  message to a just-disabled endpoint may still be delivered within it; a rotation signs with the secret that was
  current for up to the ttl, which the merchant's receiver accepts while the previous secret is valid (a
  rotation with ``previous_valid_for=0`` may see attempts fail until the ttl ends: they are retried). ``forget()``
  drops the cache (``endpoint_ttl=0`` disables it).
* **Delivery is at least once.** A crash between the merchant's 2xx and the log write delivers again;
  merchants deduplicate on ``Payment-Event-Id`` (as with every webhook provider).
* **Nothing secret leaves the signer**: the log and the log lines hold statuses, durations and error texts
  (scrubbed of the secrets and the signature, truncated), never a secret or the ``Payment-Signature`` value.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import urllib3
from pynamodb.exceptions import UpdateError
from pynamodb.expressions.condition import size

from payment_examples.core import (
    Clock,
    NotFoundError,
    Settings,
    SystemClock,
    ValidationError,
    aws,
    get_settings,
    identifier,
    logger,
)
from payment_examples.core.errors import CONDITIONAL_CHECK_FAILED, error_code
from payment_examples.core.signatures import SIGNATURE_HEADER, sign
from payment_examples.tables.models import BoundModels, WebhookDelivery, get_models, sortable_time
from payment_examples.webhooks.endpoints import Endpoint, WebhookEndpoints
from payment_examples.webhooks.producer import queue_message
from payment_examples.webhooks.queues import QueueUrls, queue_urls

# (url, body, headers, timeout seconds) -> (HTTP status or None, error text or None)
HttpPost = Callable[[str, bytes, dict[str, str], float], tuple[int | None, str | None]]

USER_AGENT = "payment-examples-webhooks/1"
EVENT_ID_HEADER = "Payment-Event-Id"
HISTORY_LIMIT = 10
MAX_ERROR_LENGTH = 200
MAX_RESPONSE_BYTES = 4096
FAILED_PARTITION = "failed"
ENDPOINT_TTL = timedelta(seconds=60)  # as WebhookEndpoints.for_merchant's cache (the producer's)
DISABLED_ERROR = "endpoint disabled"
REDACTED = "[redacted]"
_MESSAGE_FIELDS = ("event_id", "endpoint_id", "merchant_id", "payment_id", "payment_version", "type", "body")


# ---------------------------------------------------------------------------------------------------------------
# The HTTP client


class UrllibPoster:
    """The default ``HttpPost``: urllib3, one pool for every endpoint (keep-alive per host), no retries (the queue
    retries), no redirects followed (a 3xx is a failed attempt: following it would send a signed payment event
    wherever the endpoint points), at most ``MAX_RESPONSE_BYTES`` of the answer read and discarded (a merchant's
    endpoint must not make us download a file)."""

    def __init__(self, pool: urllib3.PoolManager | None = None) -> None:
        self._pool = pool or urllib3.PoolManager(num_pools=64, maxsize=8, retries=False)

    def __call__(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int | None, str | None]:
        try:
            response = self._pool.request(
                "POST", url, body=body, headers=headers, timeout=urllib3.Timeout(total=timeout),
                retries=False, redirect=False, preload_content=False,
            )  # fmt: skip
        except urllib3.exceptions.HTTPError as error:
            return None, describe_http_error(error, timeout)
        try:
            chunk = response.read(MAX_RESPONSE_BYTES, decode_content=False)
        except (urllib3.exceptions.HTTPError, OSError):
            chunk = b"x" * MAX_RESPONSE_BYTES  # the status is the answer; the connection is not reused
        if len(chunk) < MAX_RESPONSE_BYTES:
            response.release_conn()  # read to its end: the connection goes back to the pool
        else:
            response.close()  # more than we read: drop the connection rather than download the rest
            response.release_conn()
        return response.status, None


def describe_http_error(error: BaseException, timeout: float) -> str:
    """A short, stable text for a failed request (the log's ``error``): no object reprs, no URL."""
    if isinstance(error, urllib3.exceptions.NewConnectionError):  # a subclass of ConnectTimeoutError: first
        cause = error.__cause__ or error.__context__
        reason = getattr(cause, "strerror", None) or str(cause or error).rsplit(": ", 1)[-1]
        return f"connection failed: {reason}"
    if isinstance(error, urllib3.exceptions.TimeoutError):
        return f"timeout after {timeout:g}s"
    if isinstance(error, urllib3.exceptions.SSLError):
        return f"TLS error: {error}"
    if isinstance(error, urllib3.exceptions.ProtocolError):
        return f"connection broken: {error.args[0] if error.args else error}"
    return f"{type(error).__name__}: {error}"


_default_poster: UrllibPoster | None = None
_poster_lock = threading.Lock()


def default_poster() -> UrllibPoster:
    """One poster per process (a Lambda container reuses its connections across invocations)."""
    global _default_poster
    with _poster_lock:
        if _default_poster is None:
            _default_poster = UrllibPoster()
        return _default_poster


# ---------------------------------------------------------------------------------------------------------------
# Results and views


@dataclass
class DeliveryCounters:
    """What a deliverer has done (thread-safe to read; updated by the handling thread)."""

    delivered: int = 0
    failed: int = 0  # given up on: dead-lettered at the last attempt, or the endpoint disabled or deleted
    attempts: int = 0  # HTTP attempts made
    retried: int = 0  # failed attempts left in the queue for a later one
    blocked: int = 0  # messages not attempted because an earlier message of their group failed in the batch
    latency_ms: list[float] = field(default_factory=list)  # per delivery: commit (created_at) -> delivered_at


@dataclass(frozen=True)
class ReplayResult:
    found: int  # failed deliveries in the window (and of the merchant, if one was given)
    replayed: int  # put back to pending and sent again
    skipped: int  # changed since they were read (another replay, or delivered meanwhile): not sent
    event_ids: tuple[str, ...]  # the replayed deliveries' events, in the order they failed


@dataclass(frozen=True)
class DeliveryView:
    """A delivery log item for printing (no body, and the log never holds a secret or a signature)."""

    event_id: str
    endpoint_id: str
    merchant_id: str
    payment_id: str
    payment_version: int
    event_type: str
    state: str
    attempts: int
    replays: int
    last_status: int | None
    last_error: str | None
    history: tuple[dict[str, Any], ...]
    created_at: datetime | None  # None only until the producer's write lands (an attempt overtook it)
    enqueued_at: datetime | None
    delivered_at: datetime | None
    failed_at: datetime | None

    @classmethod
    def of(cls, item: WebhookDelivery) -> DeliveryView:
        return cls(
            event_id=item.event_id, endpoint_id=item.endpoint_id, merchant_id=item.merchant_id,
            payment_id=item.payment_id, payment_version=int(item.payment_version), event_type=item.event_type,
            state=item.state, attempts=int(item.attempts or 0), replays=int(item.replays or 0),
            last_status=None if item.last_status is None else int(item.last_status), last_error=item.last_error,
            history=tuple(_plain(entry) for entry in item.history or ()), created_at=item.created_at,
            enqueued_at=item.enqueued_at, delivered_at=item.delivered_at, failed_at=item.failed_at,
        )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (times as ISO 8601 UTC)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = sortable_time(value) if isinstance(value, datetime) else list(value) if name == "history" \
                else value  # fmt: skip
        return out


@dataclass(frozen=True)
class _CachedEndpoint:
    """An endpoint as read, its active secrets in clear (newest first; never shown in a repr), and until when
    this is used without reading it again."""

    endpoint: Endpoint
    secrets: tuple[str, ...] = field(repr=False)
    expires_at: datetime


@dataclass(frozen=True)
class _Message:
    event_id: str
    endpoint_id: str
    merchant_id: str
    payment_id: str
    payment_version: int
    type: str
    body: str

    @classmethod
    def parse(cls, text: str) -> _Message:
        data = json.loads(text)
        if not isinstance(data, dict) or any(name not in data for name in _MESSAGE_FIELDS):
            raise ValueError(f"a webhook message has the fields {', '.join(_MESSAGE_FIELDS)}")
        for name in _MESSAGE_FIELDS:
            kind = int if name == "payment_version" else str
            if not isinstance(data[name], kind) or isinstance(data[name], bool):
                raise ValueError(f"a webhook message's {name} must be a {kind.__name__}")
        return cls(**{name: data[name] for name in _MESSAGE_FIELDS})

    @property
    def group_id(self) -> str:
        return f"{self.endpoint_id}:{self.payment_id}"


# ---------------------------------------------------------------------------------------------------------------
# The deliverer


class Deliverer:
    """Delivers the queue's messages (see the module docstring). Models, settings, clock, HTTP client, the jitter's
    random source and the SQS client are injectable; by default the settings in force when it is built."""

    def __init__(
        self,
        *,
        endpoints: WebhookEndpoints,
        models: BoundModels | None = None,
        settings: Settings | None = None,
        clock: Clock | None = None,
        http: HttpPost | None = None,
        rng: random.Random | None = None,
        sqs: Any = None,
        queues: QueueUrls | None = None,
        endpoint_ttl: timedelta = ENDPOINT_TTL,
        endpoint_cache_size: int = 10_000,
    ) -> None:
        self.endpoint_ttl = endpoint_ttl
        if self.endpoint_ttl < timedelta(0) or endpoint_cache_size < 1:
            raise ValueError("endpoint_ttl must not be negative and endpoint_cache_size must be positive")
        self.endpoints = endpoints
        self.settings = settings or get_settings()
        self._models = models
        self.clock = clock or SystemClock()
        self.http = http or default_poster()
        self.rng = rng or random.Random()
        self._sqs = sqs
        self._queues = queues
        self.counters = DeliveryCounters()
        self._lock = threading.Lock()
        self._endpoint_cache: OrderedDict[tuple[str, str], _CachedEndpoint] = OrderedDict()
        self._endpoint_cache_size = endpoint_cache_size
        self.endpoint_reads = 0  # GetItems of an endpoint (what the cache saves)

    @property
    def models(self) -> BoundModels:
        return self._models or get_models(self.settings)

    @property
    def sqs(self) -> Any:
        if self._sqs is None:
            self._sqs = aws.client("sqs", self.settings)
        return self._sqs

    @property
    def queues(self) -> QueueUrls:
        """The delivery queue (visibility changes, replays) and the dead letters: configured, or the local ones."""
        if self._queues is None:
            self._queues = queue_urls(self.settings)
        return self._queues

    def backoff(self, attempt: int) -> int:
        """Seconds before attempt ``attempt + 1``: ``min(cap, base * 2**(attempt-1))`` with equal jitter (half
        fixed, half uniform), rounded up to whole seconds (what ChangeMessageVisibility takes)."""
        if attempt < 1:
            raise ValueError("attempt counts from 1")
        settings = self.settings
        ceiling = min(settings.webhook_backoff_cap_s, settings.webhook_backoff_base_s * 2.0 ** min(attempt - 1, 64))
        return min(43_200, math.ceil(ceiling / 2 + self.rng.uniform(0, ceiling / 2)))

    # -- a batch -------------------------------------------------------------------------------------------------

    def handle(self, records: list[dict]) -> list[str]:
        """Deliver a Lambda SQS batch in order; returns the messageIds to report as ``batchItemFailures``."""
        failures: list[str] = []
        failed_groups: set[str] = set()
        blocked: list[dict] = []
        for record in records:
            group = (record.get("attributes") or {}).get("MessageGroupId") or record.get("messageId")
            if group in failed_groups:
                failures.append(record["messageId"])
                blocked.append(record)
                continue
            try:
                ok = self._handle_one(record)
            except Exception as error:  # the log or SQS failed: the message comes back after its visibility timeout
                logger.warning("webhook message not handled", message_id=record.get("messageId"),
                               error_type=type(error).__name__)  # fmt: skip
                ok = False
            if not ok:
                failures.append(record["messageId"])
                failed_groups.add(group)
        if blocked:
            self._release(blocked)
        return failures

    def _handle_one(self, record: dict) -> bool:
        """One message. False: report it as a failure (it stays in the queue for a later attempt)."""
        try:
            message = _Message.parse(record["body"])
        except (ValueError, TypeError, KeyError) as error:
            logger.error("malformed webhook message dead-lettered", message_id=record.get("messageId"),
                         error=str(error)[:MAX_ERROR_LENGTH])  # fmt: skip
            self._dead_letter(record, None)
            return True
        try:
            cached = self._endpoint(message)
        except Exception as raised:  # noqa: BLE001 (the endpoint could not be read or its secret not decrypted)
            # A failed attempt like any other: counted, backed off, given up on at the last one (and so in the log
            # and replayable), never left to SQS's redrive with its log still pending.
            error = f"endpoint unavailable: {type(raised).__name__}"
            logger.warning("webhook endpoint unavailable", **_ids(message), error_type=type(raised).__name__)
            status, entry = None, {"at": sortable_time(self.clock.now()), "status": None, "error": error, "ms": 0}
        else:
            if cached is None or not cached.endpoint.enabled:
                self._give_up(message, status=None, error=DISABLED_ERROR, entry=None)
                logger.warning("webhook not delivered: endpoint disabled", **_ids(message))
                return True
            status, error, entry = self._attempt(message, cached)
        if status is not None and 200 <= status < 300:
            self._delivered(message, status, entry)
            return True
        item = self._log_attempt(message, status, error, entry)
        if item.state != "pending":  # a duplicate message of a delivery already delivered or given up on
            logger.info("webhook message dropped: the delivery is already " + item.state, **_ids(message))
            return True
        max_attempts = self.settings.webhook_max_attempts
        attempts, replays = int(item.attempts or 0), int(item.replays or 0)
        attempt = max(1, attempts - max_attempts * replays)  # this round's (each replay gives max_attempts more)
        if attempts < max_attempts * (replays + 1):
            delay = self.backoff(attempt)
            self._set_visibility(record, delay)
            with self._lock:
                self.counters.retried += 1
            logger.info("webhook attempt failed", **_ids(message), attempt=attempt, status=status, error=error,
                        retry_in_s=delay)  # fmt: skip
            return False
        self._give_up(message, status=status, error=error, entry=None, identity=False)
        self._dead_letter(record, message)
        logger.warning("webhook given up", **_ids(message), attempt=attempt, status=status, error=error)
        return True

    # -- the endpoint ------------------------------------------------------------------------------------------

    def _endpoint(self, message: _Message) -> _CachedEndpoint | None:
        """The message's endpoint and its decrypted secrets: from the cache within ``endpoint_ttl``, else one
        ``GetItem`` and the decryption (None: no such endpoint, not cached)."""
        key = (message.merchant_id, message.endpoint_id)
        now = self.clock.now()
        with self._lock:
            cached = self._endpoint_cache.get(key)
            if cached is not None and now < cached.expires_at:
                self._endpoint_cache.move_to_end(key)
                return cached
        try:
            endpoint = self.endpoints.get(*key)
        except NotFoundError:
            endpoint = None
        with self._lock:
            self.endpoint_reads += 1
        if endpoint is None:
            self.forget(*key)
            return None
        secrets = tuple(self.endpoints.active_secrets(endpoint))
        # Held until the ttl ends, or sooner if a secret it signs with expires (then it no longer signs).
        expiries = [s.expires_at for s in endpoint.stored_secrets if s.expires_at is not None and now < s.expires_at]
        cached = _CachedEndpoint(endpoint, secrets, min([now + self.endpoint_ttl, *expiries]))
        if self.endpoint_ttl > timedelta(0):
            with self._lock:
                self._endpoint_cache[key] = cached
                self._endpoint_cache.move_to_end(key)
                while len(self._endpoint_cache) > self._endpoint_cache_size:
                    self._endpoint_cache.popitem(last=False)
        return cached

    def forget(self, merchant_id: str | None = None, endpoint_id: str | None = None) -> None:
        """Drop the cached endpoint (every one, without arguments): its next message reads it again."""
        with self._lock:
            if merchant_id is None or endpoint_id is None:
                self._endpoint_cache.clear()
            else:
                self._endpoint_cache.pop((merchant_id, endpoint_id), None)

    # -- one attempt ---------------------------------------------------------------------------------------------

    def _attempt(self, message: _Message, cached: _CachedEndpoint) -> tuple[int | None, str | None, dict]:
        now = self.clock.now()
        endpoint, secrets = cached.endpoint, list(cached.secrets)
        body = message.body.encode()
        started = time.perf_counter()
        signature = ""
        if not secrets:
            status, error = None, "no active signing secret"
        else:
            signature = sign(body, secrets, int(now.timestamp()))
            headers = {
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                SIGNATURE_HEADER: signature,
                EVENT_ID_HEADER: message.event_id,
            }
            try:
                status, error = self.http(endpoint.url, body, headers, self.settings.webhook_timeout_s)
            except Exception as raised:  # an injected client's bug must not lose the message
                status, error = None, f"{type(raised).__name__}: {raised}"
        ms = int((time.perf_counter() - started) * 1000)
        error = scrub(error, (*secrets, signature))
        with self._lock:
            self.counters.attempts += 1
        entry = {"at": sortable_time(now), "status": status, "error": error, "ms": ms}
        logger.info("webhook attempt", **_ids(message), status=status, error=error, ms=ms)
        return status, error, entry

    # -- the log ---------------------------------------------------------------------------------------------------

    def _item(self, message: _Message) -> WebhookDelivery:
        return self.models.webhook_delivery(message.event_id, message.endpoint_id)

    def _identity(self, message: _Message) -> list[Any]:
        """The item's identity, set only where absent: what the fallback of ``_update`` adds, for a message whose
        log item is not there (sent by a producer that logged after sending; its own write keeps what this wrote)."""
        Model = self.models.webhook_delivery
        return [
            Model.merchant_id.set(Model.merchant_id | message.merchant_id),
            Model.payment_id.set(Model.payment_id | message.payment_id),
            Model.payment_version.set(Model.payment_version | message.payment_version),
            Model.event_type.set(Model.event_type | message.type),
            Model.body.set(Model.body | message.body),
        ]  # not created_at: only the producer knows the change's exact time, and it sets it when absent

    def _history(self, entry: dict | None) -> list[Any]:
        if entry is None:
            return []
        Model = self.models.webhook_delivery
        return [Model.history.set((Model.history | []).append([entry])), Model.attempts.add(1)]

    def _update(
        self, item: WebhookDelivery, actions: list[Any], *, fallback: list[Any] | None, condition: Any = None
    ) -> bool:
        """One ``UpdateItem`` of the log item, which the producer wrote before it sent the message: conditioned on
        it existing (and on ``condition``). If it does not exist, the same update again with ``fallback`` (the
        identity) and ``condition`` alone. ``fallback=None``: the item exists (an attempt was just logged on it).
        False: ``condition`` failed (item as it was); the new image is in ``item`` otherwise."""
        Model = type(item)
        if fallback is not None:
            exists = Model.event_id.exists()
            try:
                item.update(actions=actions, condition=exists if condition is None else exists & condition)
                return True
            except UpdateError as failed:
                if error_code(failed) != CONDITIONAL_CHECK_FAILED:
                    raise
            actions = [*fallback, *actions]  # missing, or ``condition`` failed: which one, the next write tells
        try:
            item.update(actions=actions, condition=condition)
        except UpdateError as failed:
            if condition is None or error_code(failed) != CONDITIONAL_CHECK_FAILED:
                raise
            return False
        return True

    def _delivered(self, message: _Message, status: int, entry: dict) -> None:
        Model = self.models.webhook_delivery
        now = self.clock.now()
        item = self._item(message)
        self._update(item, [
            *self._history(entry), Model.state.set("delivered"), Model.delivered_at.set(now),
            Model.last_status.set(status), Model.last_error.remove(), Model.failed_partition.remove(),
            Model.failed_key.remove(),
        ], fallback=self._identity(message))  # fmt: skip
        self._trim(item)
        with self._lock:
            self.counters.delivered += 1
            if item.created_at is not None:
                self.counters.latency_ms.append(max(0.0, (now - item.created_at).total_seconds() * 1000))
        logger.info("webhook delivered", **_ids(message), status=status)

    def _log_attempt(self, message: _Message, status: int | None, error: str | None, entry: dict) -> WebhookDelivery:
        """Count and record a failed attempt; returns the item as it now is (the update's new image). Its state is
        not touched: pending, or delivered / failed for a duplicate message (never moved back)."""
        Model = self.models.webhook_delivery
        item = self._item(message)
        self._update(item, [
            *self._history(entry),
            Model.last_status.set(status) if status is not None else Model.last_status.remove(),
            Model.last_error.set(error) if error is not None else Model.last_error.remove(),
        ], fallback=[*self._identity(message), Model.state.set(Model.state | "pending")])  # fmt: skip
        self._trim(item)
        return item

    def _give_up(
        self, message: _Message, *, status: int | None, error: str | None, entry: dict | None, identity: bool = True
    ) -> None:
        """Log the delivery failed, with the sparse index's keys (what ``replay`` reads), unless it was delivered
        (a duplicate message). ``identity``: the item may not exist (no attempt was logged on it yet)."""
        Model = self.models.webhook_delivery
        now = self.clock.now()
        item = self._item(message)
        updated = self._update(
            item,
            [
                *self._history(entry), Model.state.set("failed"), Model.failed_at.set(now),
                Model.failed_partition.set(FAILED_PARTITION),
                Model.failed_key.set(f"{sortable_time(now)}#{message.event_id}#{message.endpoint_id}"),
                Model.last_status.set(status) if status is not None else Model.last_status.remove(),
                Model.last_error.set(error) if error is not None else Model.last_error.remove(),
            ],
            fallback=self._identity(message) if identity else None,
            condition=Model.state.does_not_exist() | (Model.state != "delivered"),
        )  # fmt: skip
        if not updated:
            logger.info("webhook already delivered (a duplicate message)", **_ids(message))
            return
        self._trim(item)
        with self._lock:
            self.counters.failed += 1

    def _trim(self, item: WebhookDelivery) -> None:
        """Drop the oldest history entries past ``HISTORY_LIMIT`` (only after many attempts: a second write),
        conditional on the history still being the length just seen (a concurrent attempt trims its own)."""
        history = item.history or []
        extra = len(history) - HISTORY_LIMIT
        if extra <= 0:
            return
        Model = type(item)
        try:
            item.update(
                actions=[Model.history[index].remove() for index in range(extra)],
                condition=size(Model.history) == len(history),
            )
        except UpdateError as failed:
            if error_code(failed.cause) != CONDITIONAL_CHECK_FAILED:
                raise

    # -- the queue -------------------------------------------------------------------------------------------------

    def _set_visibility(self, record: dict, seconds: int) -> None:
        try:
            self.sqs.change_message_visibility(
                QueueUrl=self.queues.queue, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=seconds
            )
        except Exception as error:  # the message then returns after the queue's own visibility timeout
            logger.warning("webhook backoff not set", message_id=record.get("messageId"),
                           error_type=type(error).__name__)  # fmt: skip

    def _release(self, records: list[dict]) -> None:
        """Make blocked messages visible again at once: SQS keeps them behind their group's failed message."""
        with self._lock:
            self.counters.blocked += len(records)
        for start in range(0, len(records), 10):
            entries = [{"Id": str(index), "ReceiptHandle": record["receiptHandle"], "VisibilityTimeout": 0}
                       for index, record in enumerate(records[start:start + 10])]  # fmt: skip
            try:
                self.sqs.change_message_visibility_batch(QueueUrl=self.queues.queue, Entries=entries)
            except Exception as error:
                logger.warning("blocked webhook messages not released", error_type=type(error).__name__)

    def _dead_letter(self, record: dict, message: _Message | None) -> None:
        """Copy the message to the dead-letter queue (same group and deduplication id). Without one configured
        the log alone keeps it (``replay`` reads the log, not the dead letters)."""
        dead_letter = self.queues.dead_letter
        if dead_letter is None:
            logger.warning(
                "no dead-letter queue: the delivery log keeps the message", message_id=record.get("messageId")
            )
            return
        attributes = record.get("attributes") or {}
        group = attributes.get("MessageGroupId") or (message.group_id if message else "malformed")
        dedup = attributes.get("MessageDeduplicationId") or (
            f"{message.event_id}:{message.endpoint_id}" if message else record.get("messageId", "malformed")
        )
        self.sqs.send_message(QueueUrl=dead_letter, MessageBody=record["body"], MessageGroupId=group,
                              MessageDeduplicationId=dedup)  # fmt: skip

    # -- replay and reads ------------------------------------------------------------------------------------------

    def replay(self, *, since: datetime, until: datetime | None = None, merchant_id: str | None = None) -> ReplayResult:
        """Send again the deliveries that failed in ``[since, until)`` (of ``merchant_id``, if given), read from
        the sparse ``failed-by-time`` index. Each is put back to pending first (failed keys removed, ``replays``
        + 1), conditional on it still being the failed item read, so two replays never both send it; then one
        message with the deduplication id ``<event>:<endpoint>:r<replays>``."""
        _aware("since", since)
        if until is not None and _aware("until", until) <= since:
            raise ValidationError("until", "must be after since")
        if merchant_id is not None:
            identifier("merchant_id", merchant_id)
        Model = self.models.webhook_delivery
        # Keys are "<failed_at>#<event>#<endpoint>": a key failed at ``since`` sorts after ``sortable_time(since)``,
        # one failed at ``until`` after ``sortable_time(until)``, so BETWEEN on the bare times is [since, until).
        low = sortable_time(since)
        key_condition = (
            Model.failed_key >= low if until is None else Model.failed_key.between(low, sortable_time(until))
        )
        filter_condition = Model.merchant_id == merchant_id if merchant_id is not None else None
        found = 0
        replayed: list[str] = []
        for item in Model.failed_by_time.query(FAILED_PARTITION, key_condition, filter_condition=filter_condition):
            found += 1
            if self._replay_one(item):
                replayed.append(item.event_id)
        logger.info("webhooks replayed", found=found, replayed=len(replayed), merchant_id=merchant_id)
        return ReplayResult(found, len(replayed), found - len(replayed), tuple(replayed))

    def _replay_one(self, item: WebhookDelivery) -> bool:
        Model = type(item)
        read_key = item.failed_key
        try:
            item.update(
                actions=[Model.state.set("pending"), Model.replays.add(1), Model.enqueued_at.set(self.clock.now()),
                         Model.failed_partition.remove(), Model.failed_key.remove()],
                condition=(Model.state == "failed") & (Model.failed_key == read_key),
            )  # fmt: skip
        except UpdateError as failed:
            if error_code(failed.cause) != CONDITIONAL_CHECK_FAILED:
                raise
            return False  # another replay took it, or it was delivered meanwhile
        message = queue_message(event_id=item.event_id, endpoint_id=item.endpoint_id, merchant_id=item.merchant_id,
                                payment_id=item.payment_id, payment_version=int(item.payment_version),
                                event_type=item.event_type, body=item.body, replay=int(item.replays))  # fmt: skip
        try:
            self.sqs.send_message(QueueUrl=self.queues.queue, **message)
        except Exception:
            self._unreplay(item, read_key)
            raise
        return True

    def _unreplay(self, item: WebhookDelivery, read_key: str) -> None:
        """The send failed: put the item back to failed (same keys) so a later replay finds it."""
        Model = type(item)
        try:
            item.update(
                actions=[Model.state.set("failed"), Model.failed_partition.set(FAILED_PARTITION),
                         Model.failed_key.set(read_key)],
                condition=(Model.state == "pending") & (Model.replays == int(item.replays)),
            )  # fmt: skip
        except UpdateError:
            logger.error("replayed webhook left pending without a message", event_id=item.event_id,
                         endpoint_id=item.endpoint_id)  # fmt: skip

    def deliveries(self, event_id: str) -> list[WebhookDelivery]:
        """The event's delivery log items, one per endpoint (a consistent query)."""
        identifier("event_id", event_id)
        return list(self.models.webhook_delivery.query(event_id, consistent_read=True))


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def scrub(text: str | None, secrets: Iterable[str]) -> str | None:
    """``text`` without any of ``secrets`` (replaced by ``[redacted]``), truncated to ``MAX_ERROR_LENGTH``."""
    if text is None:
        return None
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text if len(text) <= MAX_ERROR_LENGTH else text[: MAX_ERROR_LENGTH - 1] + "…"


def _ids(message: _Message) -> dict[str, Any]:
    return {"event_id": message.event_id, "endpoint_id": message.endpoint_id, "merchant_id": message.merchant_id,
            "payment_id": message.payment_id, "payment_version": message.payment_version}  # fmt: skip


def _aware(name: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise ValidationError(name, f"must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(name, "must be timezone-aware")
    return value


def _plain(value: Any) -> Any:
    """A history entry as plain Python (PynamoDB hands raw maps back as MapAttribute, numbers as floats/Decimals)."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {key: _plain(inner) for key, inner in value.items()}
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
