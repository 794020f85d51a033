"""PynamoDB models and table definitions.

The classes below are declarative *definitions*. Code never talks to them directly: ``bind_models(settings)``
returns subclasses bound to one table prefix, region, endpoint and set of credentials (cached per settings), so
the embedded engine, a real endpoint and several AWS accounts can be used side by side without mutating a global.

Key design:

* ``Payment.id`` is derived from (merchant, idempotency key) (``payment_id_for``), so uniqueness of the pair is
  enforced by one conditional put on the payment's own key; no idempotency-key index is needed.
* Two merchant indexes serve the query patterns by key condition, never by filter:
  ``by-merchant-created`` (merchant_id, created_key) lists a merchant's payments by creation time, and
  ``by-merchant-status`` (merchant_status, created_key) lists one status by creation time. ``created_key`` is
  ``<created_at ISO-8601 UTC>#<id>``: sortable by time and unique, so pages have a total order. Each payment
  write therefore also writes two index entries (two more write units on DynamoDB).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from pynamodb.attributes import (
    BinaryAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
    VersionAttribute,
)
from pynamodb.exceptions import TableError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, IncludeProjection
from pynamodb.models import Model

from payment_examples.core import Settings, get_settings, logger, name_based_id

# ---------------------------------------------------------------------------------------------------------------
# Derived keys


def payment_id_for(merchant_id: str, idempotency_key: str) -> str:
    """The payment id for a (merchant, idempotency key) pair: the same pair always gives the same id."""
    return name_based_id("payment", merchant_id, idempotency_key)


def transaction_id_for(payment_id: str, payment_version: int) -> str:
    """The transaction id for the transition that produced ``payment_version``: replaying it rewrites the same item."""
    return name_based_id("transaction", payment_id, str(payment_version))


def sortable_time(instant: datetime) -> str:
    """Fixed-width UTC with microseconds (``2026-01-01T09:00:00.000000Z``): sorts as the instants do.

    The year is padded by hand: ``strftime("%Y")`` does not pad years before 1000 on every platform.
    Raises ``OverflowError`` for an instant whose UTC form falls outside years 1..9999.
    """
    utc = instant.astimezone(UTC)
    return f"{utc.year:04d}-{utc:%m-%dT%H:%M:%S.%f}Z"


def created_key(created_at: datetime, item_id: str) -> str:
    """The merchant indexes' sort key: creation time, then the id (unique, so pages have a total order)."""
    return f"{sortable_time(created_at)}#{item_id}"


def merchant_status_key(merchant_id: str, status: str) -> str:
    return f"{merchant_id}#{status}"


# ---------------------------------------------------------------------------------------------------------------
# Definitions


class _UnboundMeta:
    table_name: str | None = None  # set by bind_models
    billing_mode = "PAY_PER_REQUEST"
    stream_view_type: str | None = None  # a table whose changes are projected (projection.py) has a stream


# Both images in each record: the consumer diffs them for the audit entry, and sees a delete's last state.
NEW_AND_OLD_IMAGES = "NEW_AND_OLD_IMAGES"


class MerchantCreatedIndex(GlobalSecondaryIndex):
    class Meta:
        index_name = "by-merchant-created"
        projection = AllProjection()

    merchant_id = UnicodeAttribute(hash_key=True)
    created_key = UnicodeAttribute(range_key=True)


class MerchantStatusIndex(GlobalSecondaryIndex):
    class Meta:
        index_name = "by-merchant-status"
        projection = AllProjection()

    merchant_status = UnicodeAttribute(hash_key=True)
    created_key = UnicodeAttribute(range_key=True)


class ChangeAttribute(MapAttribute):
    """One change of an item, written in the same conditional write as the change itself: everything its audit entry
    is made of (projection.py builds it from the table's stream). ``version`` is the item version it produced, so
    it links the entry into the item's chain (entry ``v<n>`` follows ``v<n-1>``). Stored under short names: an item
    keeps its last few (``HISTORY_LIMIT``), and DynamoDB bills attribute names by the byte on every write."""

    type = UnicodeAttribute(attr_name="t")  # e.g. create, update-email, rotate-key, add-card, remove-card
    actor = UnicodeAttribute(attr_name="by")
    at = UTCDateTimeAttribute()
    version = NumberAttribute(attr_name="v")
    request_id = UnicodeAttribute(attr_name="rq", null=True)
    detail = MapAttribute(attr_name="d", null=True)  # string -> string: processor reference, settlement row...


class TransitionAttribute(ChangeAttribute):
    """One change of a payment (``ChangeAttribute``) with what its Transaction is made of too: the amount, the
    status it moved from and to, the reason."""

    amount = NumberAttribute(attr_name="a")
    from_status = UnicodeAttribute(attr_name="f", null=True)  # None for the create
    to_status = UnicodeAttribute(attr_name="s")
    reason = UnicodeAttribute(attr_name="r", null=True)
    # The create's own put, told apart from a concurrent duplicate's: a random token, so a put whose answer was lost
    # (the SDK's retry then fails its condition) is recognised as ours, not answered as a replay.
    write_token = UnicodeAttribute(attr_name="w", null=True)


# How many of its latest changes an item keeps (``Payment.transitions``, ``Customer.changes``...): what lets the
# stream's consumer rebuild changes whose records it never saw (a consumer stopped past the stream's 24 hours,
# projection.py).
HISTORY_LIMIT = 8


# How many API requests' changes a payment remembers by key (``Payment.requests``): at most ~300 bytes each (a key
# is at most 255 characters), so at most ~30 KB of the 400 KB an item may hold.
REQUESTS_LIMIT = 100


def keep_latest(kept: list[Any] | None, change: Any) -> list[Any]:
    """``kept`` with ``change`` appended, the oldest dropped beyond ``HISTORY_LIMIT``."""
    return [*(kept or [])[-(HISTORY_LIMIT - 1) :], change]


class KeepsChanges:
    """An item that carries its latest changes (``history`` names the list attribute): what the projection reads."""

    history: str = "changes"

    @property
    def last_change(self) -> ChangeAttribute | None:
        """The change that produced the current version (None on an item written without one)."""
        kept = getattr(self, self.history)
        return kept[-1] if kept else None

    def change_at(self, version: int) -> ChangeAttribute | None:
        """The kept change that produced ``version``, if the item still holds it."""
        return next((c for c in getattr(self, self.history) or () if int(c.version) == version), None)


class SettlementAttribute(MapAttribute):
    """The latest settlement-file row that matched or changed this payment (reconciliation.py)."""

    file_id = UnicodeAttribute()
    file_name = UnicodeAttribute()
    line = NumberAttribute()
    status = UnicodeAttribute()  # the row's settlement status: settled, refunded, chargeback, failed
    processor_reference = UnicodeAttribute()
    settled_at = UTCDateTimeAttribute()


class TransferAttribute(MapAttribute):
    """A move between accounts (transfers.py). ``state``: "moved-out" on the source (no longer live there),
    "incoming" on the target's copy until the source has committed, then "active" (live in the target)."""

    state = UnicodeAttribute()
    peer_account = UnicodeAttribute()  # the other side's account id
    source_version = NumberAttribute()  # the source payment's version that was copied
    at = UTCDateTimeAttribute()


TRANSFER_LIVE = "active"


class ProcessorCallAttribute(MapAttribute):
    """A card-processor call in flight (checkout.py): written before the call (for an authorisation, in the create's
    own put), removed by the transition that applies the processor's answer. ``recover`` resolves one that a
    crashed worker left behind, from the processor's record of ``key``."""

    operation = UnicodeAttribute()  # "authorize", "capture" or "refund"
    key = UnicodeAttribute()  # the idempotency key sent to the processor
    amount = NumberAttribute()
    started_at = UTCDateTimeAttribute()
    # Until when the request that recorded it may still apply the answer: a repeat of the request before then is
    # answered 409 (in flight); after it, or once that request gave up (it sets this to its end), it resolves it.
    lease_until = UTCDateTimeAttribute(null=True)
    # The API request's Idempotency-Key (handlers/actions.py): the change that applies the answer carries it in its
    # detail, whoever applies it (the request, its retry, ``recover``), so a retry recognises its own change.
    idempotency_key = UnicodeAttribute(null=True)


class Payment(KeepsChanges, Model):
    history = "transitions"

    class Meta(_UnboundMeta):
        base_name = "payments"
        stream_view_type = NEW_AND_OLD_IMAGES

    id = UnicodeAttribute(hash_key=True)
    merchant_id = UnicodeAttribute()
    idempotency_key = UnicodeAttribute()
    amount = NumberAttribute()
    currency = UnicodeAttribute()
    status = UnicodeAttribute()
    captured_amount = NumberAttribute(default=0)
    refunded_amount = NumberAttribute(default=0)
    customer_id = UnicodeAttribute(null=True)
    description = UnicodeAttribute(null=True)
    metadata = MapAttribute(null=True)  # merchant-supplied string -> string pairs (validation.metadata)
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    created_key = UnicodeAttribute()
    merchant_status = UnicodeAttribute()
    # The latest changes, oldest first, at most HISTORY_LIMIT; the last one produced the current version.
    transitions = ListAttribute(of=TransitionAttribute, null=True)
    # Reconciliation: the latest matched/applied settlement row, and which file and line first reported each
    # settlement event ("<status>#<processor reference>" -> {file_id, line, outcome, detail}). The second is how a
    # run recognises a duplicate row, or a row it already handled before a crash, without keeping rows in memory.
    settlement = SettlementAttribute(null=True)
    settlement_rows = MapAttribute(null=True)
    transfer = TransferAttribute(null=True)  # set only on payments moved between accounts
    # The card processor (checkout.py): the test payment method, the call in flight, the authorisation's reference.
    payment_method = UnicodeAttribute(null=True)
    processor_call = ProcessorCallAttribute(null=True)
    processor_reference = UnicodeAttribute(null=True)
    # Processor notifications (checkout/processor_events.py): per processor object (a dispute "dp_...", a refund
    # "re_...", an authorisation), the latest event applied: {"event_id", "at" (epoch seconds), "state"}. An
    # older or repeated event of the same object changes nothing; bookkeeping, written with the transition. A refund
    # made through the API is entered by the transition that applies it (checkout/service.py, ``api_refund_entry``).
    processor_events = MapAttribute(null=True)
    # The API requests that changed the payment: their Idempotency-Key -> {"v": the version their change produced,
    # "op": its operation}, written in the SAME conditional write as that change (``PaymentService._transition``'s
    # ``request_key``), so a retry or a takeover recognises its own change however many changes came after it (the
    # kept history, ``transitions``, holds only the last ``HISTORY_LIMIT``). Never written without a transition, so
    # it is no bookkeeping of its own. Bounded: only the latest ``REQUESTS_LIMIT`` (by version) are kept; a request
    # retried after that many other requested changes of the payment is looked up in the kept history only.
    requests = MapAttribute(null=True)
    version = VersionAttribute()

    @property
    def last_transition(self) -> TransitionAttribute | None:
        """The change that produced the current version (None on an item written without one)."""
        return self.last_change  # type: ignore[return-value]

    def transition_at(self, version: int) -> TransitionAttribute | None:
        """The kept change that produced ``version``, if the payment still holds it."""
        return self.change_at(version)  # type: ignore[return-value]

    @property
    def live(self) -> bool:
        """False while the payment is moved out of, or still arriving in, this account."""
        return self.transfer is None or self.transfer.state == TRANSFER_LIVE

    by_merchant_created = MerchantCreatedIndex()
    by_merchant_status = MerchantStatusIndex()


class AuditEntry(MapAttribute):
    at = UTCDateTimeAttribute()
    actor = UnicodeAttribute()
    action = UnicodeAttribute()
    from_status = UnicodeAttribute(null=True)
    to_status = UnicodeAttribute(null=True)
    detail = UnicodeAttribute(null=True)


class PaymentTransactionsIndex(GlobalSecondaryIndex):
    class Meta:
        index_name = "by-payment"
        projection = AllProjection()

    payment_id = UnicodeAttribute(hash_key=True)
    payment_version = NumberAttribute(range_key=True)


class Transaction(Model):
    """One state transition of a payment (authorize, capture, refund, void, fail) with its audit trail."""

    class Meta(_UnboundMeta):
        base_name = "transactions"

    id = UnicodeAttribute(hash_key=True)
    payment_id = UnicodeAttribute()
    merchant_id = UnicodeAttribute()
    payment_version = NumberAttribute()
    type = UnicodeAttribute()
    amount = NumberAttribute()
    currency = UnicodeAttribute()
    status = UnicodeAttribute()
    processed_at = UTCDateTimeAttribute()
    audit_trail = ListAttribute(of=AuditEntry, default=list)
    version = VersionAttribute()

    by_payment = PaymentTransactionsIndex()


class CustomerMerchantIndex(GlobalSecondaryIndex):
    class Meta:
        index_name = "by-merchant"
        projection = AllProjection()

    merchant_id = UnicodeAttribute(hash_key=True)
    created_key = UnicodeAttribute(range_key=True)


class CustomerEmailIndex(GlobalSecondaryIndex):
    class Meta:
        index_name = "by-email"
        projection = AllProjection()

    email_index = UnicodeAttribute(hash_key=True)


class EncryptedField(MapAttribute):
    """A value encrypted by ``encryption.FieldEncryptor``: ciphertext, key version, binding signature."""

    c = BinaryAttribute(legacy_encoding=False)
    v = UnicodeAttribute()
    s = UnicodeAttribute()


class Customer(KeepsChanges, Model):
    """A merchant's customer. The email is stored only as ciphertext (``email``, bound to this item and merchant);
    ``email_index`` is a blind index (keyed HMAC of the normalised email, scoped to the merchant, prefixed with its
    key version) so a customer can be found by email without storing it in clear. ``key_version``: the field-key
    version of the item's fields (what a key rotation moves forward)."""

    class Meta(_UnboundMeta):
        base_name = "customers"
        stream_view_type = NEW_AND_OLD_IMAGES  # its audit chain is projected from the stream (projection.py)

    id = UnicodeAttribute(hash_key=True)
    merchant_id = UnicodeAttribute()
    email_index = UnicodeAttribute(null=True)
    email = EncryptedField(null=True)
    key_version = UnicodeAttribute(null=True)
    encryption_key_id = UnicodeAttribute(null=True)  # the KMS key of the item's fields
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    created_key = UnicodeAttribute()
    changes = ListAttribute(of=ChangeAttribute, null=True)  # the latest, oldest first (HISTORY_LIMIT)
    version = VersionAttribute()

    by_merchant = CustomerMerchantIndex()
    by_email = CustomerEmailIndex()


class PaymentMethodCustomerIndex(GlobalSecondaryIndex):
    class Meta:
        index_name = "by-customer"
        projection = AllProjection()

    customer_id = UnicodeAttribute(hash_key=True)
    created_key = UnicodeAttribute(range_key=True)


class PaymentMethodCardIndex(GlobalSecondaryIndex):
    """Duplicate cards within a merchant: keys and the customer only (no card data in the index)."""

    class Meta:
        index_name = "by-card"
        projection = IncludeProjection(["customer_id"])

    card_index = UnicodeAttribute(hash_key=True)


class PaymentMethod(KeepsChanges, Model):
    """A card in the vault (its own table, so access to card data can be granted apart from customers). The card
    number is stored only encrypted (``pan``, bound to this item and merchant); ``fingerprint`` is a keyed HMAC of
    the entire number (PCI DSS v4.0 3.5.1.1) and ``card_index`` = ``<merchant>#<fingerprint>`` finds the same card
    on other customers of the merchant. Brand, last four digits and expiry are kept in clear, as PCI DSS allows."""

    class Meta(_UnboundMeta):
        base_name = "payment-methods"
        stream_view_type = NEW_AND_OLD_IMAGES  # its audit chain is projected from the stream (projection.py)

    id = UnicodeAttribute(hash_key=True)
    customer_id = UnicodeAttribute()
    merchant_id = UnicodeAttribute()
    brand = UnicodeAttribute()
    last4 = UnicodeAttribute()
    exp_month = NumberAttribute()
    exp_year = NumberAttribute()
    fingerprint = UnicodeAttribute()
    card_index = UnicodeAttribute(null=True)  # removed with the card (it leaves the by-card index)
    pan = EncryptedField(null=True)  # removed with the card: a removed card's number is gone, not hidden
    key_version = UnicodeAttribute()
    encryption_key_id = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()
    created_key = UnicodeAttribute()
    removed_at = UTCDateTimeAttribute(null=True)  # a removed card stays as a tombstone: brand, last four, history
    changes = ListAttribute(of=ChangeAttribute, null=True)  # the latest, oldest first (HISTORY_LIMIT)
    version = VersionAttribute()

    by_customer = PaymentMethodCustomerIndex()
    by_card = PaymentMethodCardIndex()


class IdempotencyRecord(Model):
    """A claimed or completed idempotency key. ``expires_at`` is the DynamoDB TTL attribute (deleted lazily)."""

    class Meta(_UnboundMeta):
        base_name = "idempotency"

    key = UnicodeAttribute(hash_key=True)  # sha256 of (scope, client key): fixed length, tenants never collide
    scope = UnicodeAttribute(null=True)  # e.g. the merchant id
    status = UnicodeAttribute()
    payload_hash = UnicodeAttribute(null=True)
    claim_token = UnicodeAttribute(null=True)
    lease_expires_at = NumberAttribute(null=True)  # epoch milliseconds
    result = UnicodeAttribute(null=True)  # JSON
    created_at = UTCDateTimeAttribute()
    expires_at = TTLAttribute()


class AuditLog(Model):
    """One entry of an entity's hash-chained audit trail (utils/audit.py). ``seq`` numbers the entity's entries
    1, 2, 3...; an append is one put conditional on (entity, seq) not existing, so concurrent writers can never
    fork a chain. ``hash`` = SHA-256 of ``prev`` (the previous entry's hash) and the entry's canonical JSON."""

    class Meta(_UnboundMeta):
        base_name = "audit-log"

    entity = UnicodeAttribute(hash_key=True)  # e.g. "payment#<id>", "customer#<id>"
    seq = NumberAttribute(range_key=True)
    at = UTCDateTimeAttribute()
    actor = UnicodeAttribute()
    action = UnicodeAttribute()
    changes = ListAttribute(null=True)  # [{"field", "from", "to"}] or [{"field", "changed": true}] (not shown)
    detail = MapAttribute(null=True)  # string -> string context: purpose, file and line, account...
    request_id = UnicodeAttribute(null=True)
    event_id = UnicodeAttribute(null=True)  # the writer's id for the event (a replay finds it at the head)
    prev = UnicodeAttribute()
    hash = UnicodeAttribute()


class AuditCheckpoint(Model):
    """A signed chain head (utils/audit.py ``AuditTracker.checkpoint``), kept apart from the chains it anchors so
    that access to it can be granted (and denied) separately: a truncated or rewritten tail is caught against it."""

    class Meta(_UnboundMeta):
        base_name = "audit-checkpoints"

    entity = UnicodeAttribute(hash_key=True)
    seq = NumberAttribute(range_key=True)  # the head's sequence number when signed
    hash = UnicodeAttribute()
    at = UTCDateTimeAttribute()
    checkpoint_id = UnicodeAttribute()
    signer = UnicodeAttribute()  # "hmac-sha256:<key id>" or "kms:<key id>"
    mac = UnicodeAttribute()  # base64


class ReconciliationRecord(Model):
    """Reconciliation runs and what they leave behind, one partition per settlement file (``pk`` = ``file#<id>``):
    ``sk`` = ``run`` (the checkpoint and lease), ``merchant#<id>`` (merchants seen), ``row#<digest>`` (first sight
    of a row whose payment is not this merchant's) and ``exception#<line>`` (a row for the exceptions report).
    reconciliation.py reads and writes the items with plain DynamoDB calls; this class defines the table."""

    class Meta(_UnboundMeta):
        base_name = "reconciliation"

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)


class ProcessorCharge(Model):
    """The simulated card processor's ledger (processor.py ``LocalProcessor``): one item per request it acted on,
    keyed by the idempotency key the request carried. It is the ground truth tests count charges in. Created only
    where the local processor is configured (``PAYMENT_PROCESSOR=local``, the embedded engine's default)."""

    class Meta(_UnboundMeta):
        base_name = "processor-ledger"

    key = UnicodeAttribute(hash_key=True)  # the idempotency key of the request
    reference = UnicodeAttribute(range_key=True)  # the processor's id for what it did: "ch_...", "cp_...", "re_..."
    operation = UnicodeAttribute()  # authorize, capture, refund
    payment_id = UnicodeAttribute()  # the merchant's reference (our payment id)
    amount = NumberAttribute()
    currency = UnicodeAttribute()
    payment_method = UnicodeAttribute(null=True)
    approved = UnicodeAttribute()  # "true" / "false"
    decline_code = UnicodeAttribute(null=True)
    authorization = UnicodeAttribute(null=True)  # capture and refund: the authorisation's reference
    at = UTCDateTimeAttribute()


class WebhookEndpoint(Model):
    """A merchant's webhook endpoint (webhooks/endpoints.py): where its events are delivered and the secrets they
    are signed with, each encrypted (``encryption.FieldEncryptor``, bound to the endpoint and secret id). At most
    two secrets are active: the current one and, during a rotation, the previous one until ``expires_at``."""

    class Meta(_UnboundMeta):
        base_name = "webhook-endpoints"

    merchant_id = UnicodeAttribute(hash_key=True)
    endpoint_id = UnicodeAttribute(range_key=True)  # "we_<32 hex>"
    url = UnicodeAttribute()
    events = ListAttribute(of=UnicodeAttribute, null=True)  # event types delivered (None: every type)
    enabled = UnicodeAttribute(default="true")  # "true" / "false"
    # [{"id": "whs_<hex>", "secret": {"c", "v", "s"} (the encrypted field), "created_at", "expires_at" | None}]
    secrets = ListAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    version = VersionAttribute()


class FailedDeliveriesIndex(GlobalSecondaryIndex):
    """Sparse: only deliveries that gave up (``state`` = failed) carry its keys; ``webhooks replay --since`` reads
    them by the time they failed."""

    class Meta:
        index_name = "failed-by-time"
        projection = AllProjection()

    failed_partition = UnicodeAttribute(hash_key=True)  # "failed"
    failed_key = UnicodeAttribute(range_key=True)  # "<failed_at sortable>#<event_id>#<endpoint_id>"


class WebhookDelivery(Model):
    """The delivery log (webhooks/delivery.py): one item per (event, endpoint), with every attempt's outcome. It
    never holds a secret or a signature; the event's body is kept so a failed delivery can be replayed."""

    class Meta(_UnboundMeta):
        base_name = "webhook-deliveries"

    event_id = UnicodeAttribute(hash_key=True)  # "evt_<32 hex>", derived from (payment id, version)
    endpoint_id = UnicodeAttribute(range_key=True)
    merchant_id = UnicodeAttribute()
    payment_id = UnicodeAttribute()
    payment_version = NumberAttribute()
    event_type = UnicodeAttribute()
    body = UnicodeAttribute()  # the event's JSON, exactly as signed and sent
    state = UnicodeAttribute()  # pending, delivered, failed
    attempts = NumberAttribute(default=0)
    replays = NumberAttribute(default=0)
    last_status = NumberAttribute(null=True)  # the last attempt's HTTP status (None: no answer)
    last_error = UnicodeAttribute(null=True)
    # the latest attempts, oldest first (at most 10): {"at", "status" | None, "error" | None, "ms"}
    history = ListAttribute(null=True)
    created_at = UTCDateTimeAttribute()  # when the change was committed (the change's own time)
    enqueued_at = UTCDateTimeAttribute(null=True)
    delivered_at = UTCDateTimeAttribute(null=True)
    failed_at = UTCDateTimeAttribute(null=True)
    failed_partition = UnicodeAttribute(null=True)
    failed_key = UnicodeAttribute(null=True)

    failed_by_time = FailedDeliveriesIndex()


DEFINITIONS: tuple[type[Model], ...] = (
    Payment, Transaction, Customer, IdempotencyRecord, AuditLog, ReconciliationRecord, PaymentMethod,
    AuditCheckpoint, WebhookEndpoint, WebhookDelivery,
)  # fmt: skip

# ---------------------------------------------------------------------------------------------------------------
# Binding


@dataclass(frozen=True)
class BoundModels:
    payment: type[Payment]
    transaction: type[Transaction]
    customer: type[Customer]
    idempotency: type[IdempotencyRecord]
    audit: type[AuditLog]
    reconciliation: type[ReconciliationRecord]
    payment_method: type[PaymentMethod]
    audit_checkpoint: type[AuditCheckpoint]
    webhook_endpoint: type[WebhookEndpoint]
    webhook_delivery: type[WebhookDelivery]
    processor_ledger: type[ProcessorCharge]  # not in all(): only where the local processor is configured

    def all(self) -> tuple[type[Model], ...]:
        return (
            self.payment,
            self.transaction,
            self.customer,
            self.idempotency,
            self.audit,
            self.reconciliation,
            self.payment_method,
            self.audit_checkpoint,
            self.webhook_endpoint,
            self.webhook_delivery,
        )


class _SharedClient:
    """One botocore client for every model class bound to the same settings, created once, on first use.

    PynamoDB gives each model class its own connection, which creates its own client (each from a new botocore
    session: its own copy of the service model, 0.1-0.3 s of CPU) the first time it is used, and creates one per
    thread that gets there first: a fresh container whose first invocation fans out to 8 threads over 4 tables
    created clients for seconds (the reconcile handler's cold start). Clients are thread-safe; sharing one is what
    boto3's own advice is."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client: Any = None

    def attach(self, connection: Any) -> None:
        inner = connection.connection
        if inner._client is not None:
            return
        with self._lock:
            if self._client is None:
                self._client = inner.client  # PynamoDB creates it (its config: no parameter validation, retries)
            elif inner._client is None:
                inner._client = self._client


def _bind(definition: type[Model], settings: Settings, shared: _SharedClient | None = None) -> Any:
    shared = shared or _SharedClient()
    pynamodb_connection = definition._get_connection.__func__  # type: ignore[attr-defined]

    def _get_connection(cls: type[Model]) -> Any:
        connection = pynamodb_connection(cls)  # PynamoDB's: created once per class, then cached
        shared.attach(connection)
        return connection

    meta = type(
        "Meta",
        (),
        {
            "table_name": settings.table_name(definition.Meta.base_name),
            "region": settings.region,
            "host": settings.endpoint_url,
            "billing_mode": "PAY_PER_REQUEST",
            **({"stream_view_type": definition.Meta.stream_view_type} if definition.Meta.stream_view_type else {}),
            "aws_access_key_id": settings.aws_access_key_id,
            "aws_secret_access_key": settings.aws_secret_access_key,
            "aws_session_token": settings.aws_session_token,
            "max_retry_attempts": 5,
            "max_pool_connections": 64,
        },
    )
    namespace = {"Meta": meta, "__module__": __name__, "_get_connection": classmethod(_get_connection)}
    return type(definition.__name__, (definition,), namespace)


@lru_cache(maxsize=32)
def bind_models(settings: Settings) -> BoundModels:
    """Model classes bound to ``settings`` (cached: the same settings give the same classes and connections), all
    of them sharing one DynamoDB client."""
    shared = _SharedClient()
    return BoundModels(*(_bind(definition, settings, shared) for definition in (*DEFINITIONS, ProcessorCharge)))


def get_models(settings: Settings | None = None) -> BoundModels:
    return bind_models(settings or get_settings())


def create_tables(settings: Settings | None = None) -> list[str]:
    """Create every table (with its indexes and TTL setting) that does not exist yet, and the simulated
    processor's ledger where ``settings.processor`` is "local". Returns the table names."""
    settings = settings or get_settings()
    models = get_models(settings)
    wanted = (*models.all(), models.processor_ledger) if settings.processor == "local" else models.all()
    for model in wanted:
        if model.exists():
            continue
        try:
            model.create_table(wait=True)
        except TableError as error:
            # An engine without UpdateTimeToLive (dynalite) still gets its tables; records then expire only
            # logically (readers treat them as absent). Any other TTL failure (e.g. permissions) is raised.
            if "UpdateTimeToLive" not in str(error) or "UnknownOperationException" not in str(error):
                raise
            logger.warning("this engine cannot enable TTL", table=model.Meta.table_name)
    return [model.Meta.table_name for model in wanted]
