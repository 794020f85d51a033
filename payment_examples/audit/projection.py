"""Transactions and the audit trail as projections of the tables' streams: payments, customers and payment methods.

Each table is a ``Subject`` (which model, which chain, what an entry diffs; customers.py and card_vault.py define
theirs) and has its ``Projector``; ``Projectors`` routes one Lambda function's records to them by event source.
What follows is said of payments; customers and cards are the same without Transactions (their changes are kept
in ``changes``, their chains are ``customer#<id>`` and ``payment_method#<id>``).

A create or a transition is ONE conditional write of the payment, and that write carries everything its audit entry
and its Transaction are made of: the change itself, kept in ``Payment.transitions`` (who, why, the request id, the
amount, the processor's or the settlement file's detail, and the version it produced, which links the entry into
the payment's chain). This module turns each stream record of the payments table into

* the payment's audit entry (event id ``v<version>``), with the field diff of the record's old and new images;
* its Transaction (id derived from payment and version), for every change but the create;

and both are idempotent per (payment, version): redelivery, retries and replays write nothing twice. The
Transaction is written before the entry, so an entry present means its Transaction is too, and the entry at the
chain's head is the consumer's position for the payment.

What the stream alone would lose is covered from the item:

* **A consumer behind by more than the stream keeps** (24 hours) sees, in the first record it gets for a payment,
  the payment's last ``HISTORY_LIMIT`` changes, and writes the versions it missed from them before the record's
  own; ``PaymentProjector.rebuild`` does the same for payments that have no record left at all (a scan). A gap
  larger than the kept history is written as a ``projection-gap`` entry and logged as an error: the chain says
  what it cannot show.
* **A change not made through this package** (a raw ``UpdateItem``, a ``PutItem`` without a change record, a
  delete) becomes an ``unattributed`` entry with what changed, and is logged as an error (the alarm): the
  package's own writes always add a change record for the version they produce, or change only bookkeeping
  (the processor call in flight, the settlement rows seen).

Moves between accounts (``transfers.py``) still write their own entries; their records are skipped here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer
from pynamodb.exceptions import PutError

from payment_examples.audit.chain import SHOWN_FIELDS, UNATTRIBUTED, AuditRecord, AuditTracker
from payment_examples.core import Settings, logger
from payment_examples.core.errors import CONDITIONAL_CHECK_FAILED, error_code
from payment_examples.tables.models import (
    AuditEntry,
    BoundModels,
    ChangeAttribute,
    Payment,
    TransitionAttribute,
    get_models,
    transaction_id_for,
)

GAP = "projection-gap"
# Attributes the package changes without a new version (and without an audit entry): a change of only these is
# the package's own bookkeeping, not an unattributed change.
BOOKKEEPING = frozenset({
    "updated_at", "processor_call", "processor_reference", "settlement", "settlement_rows", "merchant_status",
    "processor_events",
})  # fmt: skip
# What a payment's audit entries diff (the entry shows the values of SHOWN_FIELDS only).
AUDITED_FIELDS = ("status", "amount", "currency", "captured_amount", "refunded_amount", "merchant_id",
                  "customer_id", "description", "metadata")  # fmt: skip
_deserialize = TypeDeserializer().deserialize


def audit_entity(payment_id: str) -> str:
    return f"payment#{payment_id}"


# ---------------------------------------------------------------------------------------------------------------
# Where a chain is: the key of its head entry


def event_key(event_id: str | None) -> tuple[int, int, int]:
    """The position an entry's event id stands for, in the order the payment's changes happened: ``v<n>`` (the
    change that produced version n), ``out-v<n>`` (moved to another account at version n), ``x<n>-<seq>`` (an
    unattributed change seen at version n, stream sequence number seq)."""
    text = event_id or ""
    try:
        if text.startswith("v"):
            return int(text[1:]), 0, 0
        if text.startswith("out-v"):
            return int(text[5:]), 1, 0
        if text.startswith("x"):
            version, _, seq = text[1:].partition("-")
            return int(version), 2, int(seq)
    except ValueError:
        pass
    return 0, 0, 0


@dataclass(frozen=True)
class Change:
    """One stream record (or one stored item, in a rebuild), as the projector reads it."""

    event: str  # INSERT, MODIFY, REMOVE (REBUILD: the item as stored, no record)
    sequence: int
    keys: dict[str, Any]
    old: Mapping[str, Any] | None  # the images in DynamoDB's attribute-value form
    new: Mapping[str, Any] | None

    @classmethod
    def from_record(cls, record: Any) -> Change:
        """From a Lambda stream record: a Powertools ``DynamoDBRecord`` or the raw dict."""
        raw = record.raw_event if hasattr(record, "raw_event") else record
        data = raw["dynamodb"]
        return cls(raw["eventName"], int(data["SequenceNumber"]), data.get("Keys") or {}, data.get("OldImage"),
                   data.get("NewImage"))  # fmt: skip


def _plain(image: Mapping[str, Any] | None) -> dict[str, Any]:
    return {name: _deserialize(value) for name, value in (image or {}).items()}


def _item(image: Mapping[str, Any] | None, Model: type[Any]) -> Any:
    """The image as an item of ``Model``, or None when it is not one this package could have written."""
    if not image:
        return None
    try:
        item = Model.from_raw_data(dict(image))
        int(item.version or 0)
    except Exception:  # an out-of-band write can store anything
        return None
    return item


# ---------------------------------------------------------------------------------------------------------------
# What is projected: one table's items


@dataclass(frozen=True)
class Subject:
    """A table whose changes are projected: which model, which chain, what an entry diffs."""

    kind: str  # "payment", "customer", "payment_method": the item's name in logs
    model: Callable[[BoundModels], type[Any]]
    entity: Callable[[str], str]  # the item's audit chain
    audited: Callable[[Any], dict[str, Any]]  # what its entries diff
    creates: frozenset[str] = frozenset({"create"})  # change types that create the item
    bookkeeping: frozenset[str] = frozenset()  # attributes changed without a new version (see BOOKKEEPING)
    transactions: bool = False  # payments: every change but the create is also a Transaction
    transfers: bool = False  # payments: moves between accounts write their own entries (transfers.py)


def _audited(payment: Payment) -> dict[str, Any]:
    values = {name: getattr(payment, name) for name in AUDITED_FIELDS}
    if values["metadata"] is not None:
        values["metadata"] = values["metadata"].as_dict()
    return values


PAYMENTS = Subject("payment", lambda models: models.payment, audit_entity, _audited, bookkeeping=BOOKKEEPING,
                   transactions=True, transfers=True)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# The projector


@dataclass(frozen=True)
class Projected:
    item_id: str
    audit: tuple[str, ...] = ()  # event ids of the entries written
    transactions: tuple[int, ...] = ()  # versions whose Transaction was written
    unattributed: bool = False


class _Heads:
    """The chain heads this consumer wrote last (bounded, thread-safe): Lambda delivers one shard's records to one
    invocation at a time, so the head it wrote is normally still the head; a wrong guess costs a retry, never a
    fork (the append is conditional on the entry's number)."""

    def __init__(self, size: int = 4096) -> None:
        self._entries: OrderedDict[str, AuditRecord | None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, entity: str) -> AuditRecord | None | object:
        with self._lock:
            return self._entries.get(entity, _UNKNOWN)

    def put(self, entity: str, record: AuditRecord | None) -> None:
        with self._lock:
            self._entries[entity] = record
            self._entries.move_to_end(entity)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def forget(self, entity: str) -> None:
        with self._lock:
            self._entries.pop(entity, None)


_UNKNOWN = object()


class Projector:
    """Builds the audit entries (and for payments the Transactions) of one table's changes (see the module's
    docstring)."""

    def __init__(
        self,
        subject: Subject,
        *,
        models: BoundModels | None = None,
        settings: Settings | None = None,
        audit: AuditTracker | None = None,
    ) -> None:
        self.subject = subject
        self._models = models
        self._settings = settings
        self.audit = audit or AuditTracker(models=models, settings=settings)
        self._heads = _Heads()

    @property
    def models(self) -> BoundModels:
        return self._models or get_models(self._settings)

    @property
    def Model(self) -> type[Any]:
        return self.subject.model(self.models)

    @property
    def table_name(self) -> str:
        return str(self.Model.Meta.table_name)

    # -- entry points ------------------------------------------------------------------------------------------

    def project(self, record: Any) -> Projected:
        """Project one stream record (the record handler of ``handlers/stream.py``); a record of another table's
        stream is refused (``ValueError``), never read as one of this table's items."""
        raw = record.raw_event if hasattr(record, "raw_event") else record
        source = raw.get("eventSourceARN")
        if source and _table_of(source) != self.table_name:
            raise ValueError(f"a record of {_table_of(source)!r}'s stream, not of {self.table_name!r}'s")
        return self.apply(Change.from_record(record))

    def rebuild(self, *, segments: int = 1, segment: int = 0) -> Iterator[Projected]:
        """Project every item as stored (a scan, one segment of ``segments``): what a consumer stopped for longer
        than the stream keeps runs once, beside the restarted consumer, to catch items whose records are all gone.
        Idempotent like the consumer: what is projected already is skipped."""
        Model = self.Model
        client = Model._get_connection().connection.client
        kwargs: dict[str, Any] = {"TableName": Model.Meta.table_name, "ConsistentRead": True}
        if segments > 1:
            kwargs.update(Segment=segment, TotalSegments=segments)
        for page in client.get_paginator("scan").paginate(**kwargs):
            for item in page["Items"]:
                yield self.apply(Change("REBUILD", 0, {"id": item["id"]}, None, item))

    def catch_up(self, item: Any) -> Projected:
        """Project what ``item`` (as just read) holds and the chain does not yet: what a writer that appends to the
        chain itself (a transfer) does first, so that its entry follows the item's changes."""
        return self.apply(Change("REBUILD", 0, {"id": {"S": item.id}}, None, item.serialize()))

    def apply(self, change: Change) -> Projected:
        Model = self.Model
        item_id = _deserialize((change.keys or {}).get("id") or (change.new or change.old or {})["id"])
        entity = self.subject.entity(item_id)
        old, new = _item(change.old, Model), _item(change.new, Model)
        if change.event == "REMOVE":
            return self._unattributed(entity, item_id, change, "delete")
        if change.event == "REBUILD":
            if new is not None and _attributed(None, new):
                return self._project_versions(entity, new, None)
            return Projected(item_id)
        if self.subject.transfers and _is_transfer(change, old, new):
            return Projected(item_id)  # transfers.py writes these entries itself
        if new is not None and _attributed(old, new):
            return self._project_versions(entity, new, old)
        if not _changed_beyond(self.subject.bookkeeping, change.old, change.new):
            return Projected(item_id)  # bookkeeping, or a write that changed nothing
        return self._unattributed(entity, item_id, change, "change")

    # -- the package's own changes -----------------------------------------------------------------------------

    def _project_versions(self, entity: str, item: Any, old: Any) -> Projected:
        """Write what is missing up to ``item``'s version: the versions after the chain's head (from the kept
        history), then this one. Transactions first, then the entries."""
        version = int(item.version)
        head = self._head(entity, assume_empty=old is None and version == 1)
        head_version = recorded_version(head)
        if head_version >= version:
            return Projected(item.id)  # a redelivery: already projected
        written, transactions = [], []
        for number in range(head_version + 1, version + 1):
            change = item.change_at(number)
            if change is None:
                head = self._gap(entity, item, number, head)
                written.append(head.event_id)
                continue
            create = change.type in self.subject.creates
            if self.subject.transactions and not create:
                self._put_transaction(item, change)
                transactions.append(number)
            if number == version and (create or (old is not None and int(old.version) == version - 1)):
                audited = self.subject.audited
                before, after, rebuilt = (None if create else audited(old)), audited(item), False
            else:  # from the kept change alone: for a payment, the status it moved, and its amount
                before, after = _from_kept(change, create)
                rebuilt = True
            head = self._append(entity, change, before, after, head, rebuilt=rebuilt, create=create)
            written.append(head.event_id)
        return Projected(item.id, tuple(written), tuple(transactions))

    def _append(
        self,
        entity: str,
        change: ChangeAttribute,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        head: AuditRecord | None,
        *,
        rebuilt: bool,
        create: bool,
    ) -> AuditRecord:
        detail: dict[str, str | int] = {}
        if change.detail is not None:
            detail.update(change.detail.as_dict())
        amount = getattr(change, "amount", None)
        if amount and not create:
            detail["amount"] = int(amount)
        if rebuilt:
            detail["rebuilt"] = f"from the {self.subject.kind.replace('_', ' ')}'s kept history"
        record = self.audit.track(
            entity, change.type, change.actor, before=before, after=after, detail=detail,
            request_id=change.request_id, event_id=f"v{int(change.version)}", known_head=head,
            at=change.at, recorded=lambda h: recorded_version(h) >= int(change.version),
        )  # fmt: skip
        self._heads.put(entity, record)
        return record

    def _put_transaction(self, payment: Payment, transition: TransitionAttribute) -> None:
        Model = self.models.transaction
        transaction = Model(
            transaction_id_for(payment.id, int(transition.version)),
            payment_id=payment.id,
            merchant_id=payment.merchant_id,
            payment_version=int(transition.version),
            type=transition.type,
            amount=transition.amount,
            currency=payment.currency,
            status="succeeded",
            processed_at=transition.at,
            audit_trail=[
                AuditEntry(
                    at=transition.at,
                    actor=transition.actor,
                    action=transition.type,
                    from_status=transition.from_status,
                    to_status=transition.to_status,
                    detail=transition.reason,
                )  # fmt: skip
            ],
        )
        try:
            transaction.save(condition=Model.id.does_not_exist())
        except PutError as error:
            if error_code(error) != CONDITIONAL_CHECK_FAILED:
                raise  # else: written before (a redelivery whose entry had not been appended yet)

    def _gap(self, entity: str, item: Any, version: int, head: AuditRecord | None) -> AuditRecord:
        kind = self.subject.kind
        logger.error(f"audit projection gap: a change is no longer in the stream or the {kind}'s history",
                     **{f"{kind}_id": item.id}, version=version)  # fmt: skip
        record = self.audit.track(
            entity, GAP, UNATTRIBUTED, detail={"version": version, "reason": "not in the stream or the kept history"},
            event_id=f"v{version}", known_head=head, at=getattr(item, "updated_at", None),
            recorded=lambda h: recorded_version(h) >= version,
        )  # fmt: skip
        self._heads.put(entity, record)
        return record

    # -- changes made elsewhere --------------------------------------------------------------------------------

    def _unattributed(self, entity: str, item_id: str, change: Change, kind: str) -> Projected:
        version = _image_version(change.new if kind == "change" else change.old)
        event_id = f"x{version}-{change.sequence}"
        head = self._head(entity)
        if event_key(head.event_id if head else None) >= event_key(event_id):
            return Projected(item_id)  # a redelivery
        changes = _raw_changes(_plain(change.old), _plain(change.new))
        subject = self.subject.kind
        logger.error(f"unattributed change to a {subject.replace('_', ' ')}", **{f"{subject}_id": item_id},
                     kind=kind, version=version, fields=[c["field"] for c in changes],
                     sequence_number=str(change.sequence))  # fmt: skip
        detail = {"kind": kind, "event": change.event, "sequence_number": str(change.sequence)}
        fields = {c["field"]: c for c in changes}
        record = self.audit.track(
            entity, f"{UNATTRIBUTED}-{kind}", UNATTRIBUTED, detail=detail, event_id=event_id, known_head=head,
            changes=[fields[name] for name in sorted(fields)],
            recorded=lambda h: event_key(h.event_id if h else None) >= event_key(event_id),
        )  # fmt: skip
        self._heads.put(entity, record)
        if kind == "delete":
            self._heads.forget(entity)
        return Projected(item_id, (record.event_id,), (), unattributed=True)

    # -- helpers -----------------------------------------------------------------------------------------------

    def _head(self, entity: str, *, assume_empty: bool = False) -> AuditRecord | None:
        known = self._heads.get(entity)
        if known is not _UNKNOWN:
            return known  # type: ignore[return-value]
        if assume_empty:
            return None  # a create's record: the chain is new (a wrong guess re-reads the head)
        return self.audit.head(entity)


class PaymentProjector(Projector):
    """The payments table's projector: audit entries and Transactions."""

    def __init__(
        self,
        *,
        models: BoundModels | None = None,
        settings: Settings | None = None,
        audit: AuditTracker | None = None,
    ) -> None:
        super().__init__(PAYMENTS, models=models, settings=settings, audit=audit)


class Projectors:
    """Several tables' projectors behind one record handler: each record goes to its table's (named in the record's
    ``eventSourceARN``), as one Lambda function with an event source per table receives them."""

    def __init__(self, projectors: Iterable[Projector]) -> None:
        self.by_table = {projector.table_name: projector for projector in projectors}

    def project(self, record: Any) -> Projected:
        raw = record.raw_event if hasattr(record, "raw_event") else record
        table = _table_of(raw.get("eventSourceARN") or "")
        projector = self.by_table.get(table)
        if projector is None:
            raise ValueError(f"no projector for the stream of table {table!r} (projecting {sorted(self.by_table)})")
        return projector.project(record)


def _table_of(arn: str) -> str:
    """``arn:aws:dynamodb:<region>:<account>:table/<name>/stream/<label>`` -> ``<name>``."""
    _, _, rest = arn.partition(":table/")
    return rest.split("/", 1)[0]


def _from_kept(change: ChangeAttribute, create: bool) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """What an entry rebuilt from a kept change can show: a payment's status move (and its amount on the create);
    nothing of another item's fields (they are not kept)."""
    to_status = getattr(change, "to_status", None)
    if to_status is None:
        return None, None
    from_status = getattr(change, "from_status", None)
    before = {"status": from_status} if from_status else None
    return before, {"status": to_status, **({"amount": int(change.amount)} if create else {})}


def recorded_version(head: AuditRecord | None) -> int:
    """The last payment version a chain whose latest entry is ``head`` records (0: none; an unattributed delete
    starts over): entries are appended in version order, their event ids name it (``event_key``)."""
    if head is None or head.action == f"{UNATTRIBUTED}-delete":
        return 0
    return event_key(head.event_id)[0]


def _attributed(old: Any, new: Any) -> bool:
    """Whether ``new`` was written by the package: a new version with the change that produced it."""
    change = new.last_change
    if change is None or int(change.version) != int(new.version):
        return False
    return old is None or int(new.version) > int(old.version)


def _is_transfer(change: Change, old: Payment | None, new: Payment | None) -> bool:
    if new is None or new.transfer is None:
        return False
    if old is None:
        return True  # a copy arriving from another account
    before = old.transfer.as_dict() if old.transfer is not None else None
    return before != new.transfer.as_dict()


def _image_version(image: Mapping[str, Any] | None) -> int:
    value = _plain(image).get("version")
    return int(value) if isinstance(value, int | Decimal) and value == int(value) else 0


def _changed_beyond(bookkeeping: frozenset[str], old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    old, new = old or {}, new or {}
    return any(old.get(name) != new.get(name) for name in set(old) | set(new) if name not in bookkeeping)


def _raw_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What an out-of-band write changed: every attribute by name, values only for the shown fields that hold a
    plain string, integer or boolean (an out-of-band write can store anything: nothing else is shown)."""
    changes = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if name in SHOWN_FIELDS and all(_showable(v) for v in (before, after)):
            changes.append({"field": name, "from": _show(before), "to": _show(after)})
        else:
            changes.append({"field": name, "changed": True})
    return changes


def _showable(value: Any) -> bool:
    if isinstance(value, Decimal):
        return value == value.to_integral_value() and abs(value) < 10**18
    return value is None or isinstance(value, str | bool | int)


def _show(value: Any) -> Any:
    return int(value) if isinstance(value, Decimal) else value
