"""A tamper-evident audit trail: one hash chain per entity, appended with ONE conditional put.

Each entity (``payment#<id>``, ``customer#<id>``...) has its own chain of entries numbered 1, 2, 3... Entry *n*
stores ``prev`` (entry *n-1*'s hash, or 64 zeros) and ``hash`` = SHA-256(``prev`` + the entry's canonical JSON),
which covers the entity, the sequence number, time, actor, action, the field diff, detail, request and event ids.
So, as in a ledger database's journal (QLDB's, immudb's, RFC 9162's log):

* appending is a put conditional on (entity, n) not existing: two writers can never both write entry *n*, so a
  chain never forks; the loser re-reads the head and retries on top of the winner. No transaction is needed.
* ``verify(entity)`` re-computes every hash and link and names what does not fit: an entry *edited* (its content
  no longer matches its hash, or a later entry recorded a different hash for it), *deleted* (a gap), *reordered*
  (an intact entry away from its place) or *inserted* (an entry no successor links to, or a key between two).
* what the chain alone cannot catch is a cut or re-computed *tail*: whoever can write the table can delete the
  last entries, or rewrite the chain from some entry on with fresh hashes. ``checkpoint()`` therefore signs the
  chain heads (HMAC-SHA256 with a configured key, or KMS ``GenerateMac``) into a separate table; ``verify``
  checks the chain still contains each signed head. Entries appended after the last checkpoint are only as safe
  as the table's permissions: run checkpoints often, and keep their table and key away from the writers.

Field diffs show values only for an allow-list of fields (``SHOWN_FIELDS``); any other field that changed is
recorded as ``{"field": name, "changed": true}`` with no part of its value (unlike a masked string, which leaks
its unmasked half). Values shown must be strings, integers, booleans or null: never a float, never bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Protocol

from botocore.exceptions import ClientError
from pynamodb.exceptions import DoesNotExist, PutError

from payment_examples.core import Clock, IdFactory, RandomIds, Settings, SystemClock, get_settings, identifier, logger
from payment_examples.core.errors import (
    CONDITIONAL_CHECK_FAILED,
    ConfigurationError,
    ConflictError,
    ValidationError,
    error_code,
)
from payment_examples.tables import BoundModels, get_models, sortable_time

GENESIS = "0" * 64
UNATTRIBUTED = "unattributed"  # the actor of an entry that records a change made outside the package
# Fields whose values an audit entry may show. Everything else (emails, card data, ciphertexts, signatures,
# metadata, free text) appears only as changed.
SHOWN_FIELDS = frozenset({
    "status", "amount", "currency", "captured_amount", "refunded_amount", "merchant_id", "customer_id",
    "version", "key_version", "brand", "last4", "exp_month", "exp_year", "transfer",
})  # fmt: skip
MAX_DETAIL_VALUE = 256
UNREAD = object()  # "known_head" not given: read the head first


class AuditAppendError(ConflictError):
    """An entry could not be appended: other writers won the race for the chain's head too many times in a row."""


# ---------------------------------------------------------------------------------------------------------------
# Entries and their hashes


@dataclass(frozen=True)
class AuditRecord:
    """One entry as stored. ``seq`` is normally an int; a tampered table can hold any number there."""

    entity: str
    seq: int | float
    at: datetime
    actor: str
    action: str
    changes: tuple[dict[str, Any], ...]
    detail: dict[str, str]
    request_id: str | None
    event_id: str | None
    prev: str
    hash: str

    def body(self, seq: int | float | None = None) -> dict[str, Any]:
        """What the hash covers besides ``prev`` (``seq`` overrides the stored number, to test a displacement)."""
        return {
            "entity": self.entity,
            "seq": self.seq if seq is None else seq,
            "at": sortable_time(self.at),
            "actor": self.actor,
            "action": self.action,
            "changes": list(self.changes),
            "detail": dict(self.detail),
            "request_id": self.request_id,
            "event_id": self.event_id,
        }

    def computed_hash(self, seq: int | float | None = None) -> str:
        return chain_hash(self.prev, self.body(seq))


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: one byte string per value (RFC 8785's shape for the types used here)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def chain_hash(prev: str, body: Mapping[str, Any]) -> str:
    return hashlib.sha256(prev.encode() + b"\n" + canonical_json(body)).hexdigest()


def _shown(name: str, value: Any) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, Enum):
        return _shown(name, value.value)
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    if isinstance(value, datetime):
        return sortable_time(value)
    if isinstance(value, Mapping):
        return {str(k): _shown(f"{name}.{k}", v) for k, v in value.items()}
    raise ValidationError(
        name, f"an audited value must be a string, integer, boolean or null, not {type(value).__name__}"
    )


def field_diff(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, shown: frozenset[str] = SHOWN_FIELDS
) -> list[dict[str, Any]]:
    """The fields that differ between ``before`` and ``after``, sorted by name: shown fields with their values,
    every other field only as changed."""
    before, after = before or {}, after or {}
    changes = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if name in shown:
            changes.append({"field": name, "from": _shown(name, old), "to": _shown(name, new)})
        else:
            changes.append({"field": name, "changed": True})
    return changes


def _detail(detail: Mapping[str, Any] | None) -> dict[str, str]:
    result = {}
    for key, value in (detail or {}).items():
        if not isinstance(key, str) or not isinstance(value, str | int) or isinstance(value, bool):
            raise ValidationError("detail", "must map strings to strings or integers")
        text = str(value)
        if len(text) > MAX_DETAIL_VALUE:
            raise ValidationError(f"detail.{key}", f"must be at most {MAX_DETAIL_VALUE} characters")
        result[key] = text
    return result


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint signers


class Signer(Protocol):
    name: str

    def sign(self, message: bytes) -> bytes: ...
    def verify(self, message: bytes, mac: bytes) -> bool: ...


class HmacSigner:
    """HMAC-SHA256 with a key of at least 32 bytes; ``name`` carries a key id derived from the key (not the key)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ConfigurationError("the audit checkpoint key must be at least 32 bytes")
        self._key = key
        self.name = "hmac-sha256:" + hashlib.sha256(b"audit-key-id\n" + key).hexdigest()[:16]

    def sign(self, message: bytes) -> bytes:
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def verify(self, message: bytes, mac: bytes) -> bool:
        return hmac.compare_digest(self.sign(message), mac)


class KmsMacSigner:
    """KMS ``GenerateMac``/``VerifyMac`` (HMAC_SHA_256) with an HMAC KMS key: the key never leaves KMS."""

    def __init__(self, kms_client: Any, key_id: str) -> None:
        self._kms = kms_client
        self._key_id = key_id
        self.name = f"kms:{key_id}"

    def sign(self, message: bytes) -> bytes:
        response = self._kms.generate_mac(KeyId=self._key_id, Message=message, MacAlgorithm="HMAC_SHA_256")
        return response["Mac"]

    def verify(self, message: bytes, mac: bytes) -> bool:
        try:
            response = self._kms.verify_mac(KeyId=self._key_id, Message=message, MacAlgorithm="HMAC_SHA_256", Mac=mac)
        except ClientError as error:
            if error.response["Error"]["Code"] == "KMSInvalidMacException":
                return False
            raise
        return bool(response["MacValid"])


def signer_for(settings: Settings) -> Signer | None:
    """The checkpoint signer the settings configure: KMS when ``audit_kms_key_id`` is set, else the HMAC key."""
    if settings.audit_kms_key_id:
        from payment_examples.core import aws

        return KmsMacSigner(aws.client("kms", settings), settings.audit_kms_key_id)
    if settings.audit_key:
        return HmacSigner(settings.audit_key.encode())
    return None


# ---------------------------------------------------------------------------------------------------------------
# Verification results


@dataclass(frozen=True)
class ChainProblem:
    kind: str  # edited, deleted, reordered, inserted, truncated, rewritten, forged-checkpoint
    position: int | float  # the entry's number (the checkpoint's for checkpoint problems)
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} at #{self.position}: {self.detail}"


@dataclass(frozen=True)
class ChainVerification:
    entity: str
    entries: int
    head_seq: int
    head_hash: str
    checkpoint_seq: int | None  # the latest valid checkpoint's head, if any
    problems: tuple[ChainProblem, ...] = ()
    # Entries that record a change made outside the package (actor ``unattributed``: a raw write, a delete, a gap
    # the projection could not fill): the chain holds them faithfully, and someone must look at each.
    unattributed: tuple[int | float, ...] = ()

    @property
    def ok(self) -> bool:
        """The chain is intact (nothing edited, deleted, reordered, inserted, cut or re-hashed)."""
        return not self.problems

    def summary(self) -> str:
        flagged = ""
        if self.unattributed:
            flagged = f"; {len(self.unattributed)} unattributed change(s) at " + ", ".join(
                f"#{seq}" for seq in self.unattributed
            )
        if self.ok:
            anchored = f", checkpoint at #{self.checkpoint_seq}" if self.checkpoint_seq else ", no checkpoint"
            return f"{self.entity}: {self.entries} entries, chain intact{anchored}{flagged}"
        return f"{self.entity}: " + "; ".join(str(p) for p in self.problems) + flagged


@dataclass(frozen=True)
class Checkpoint:
    checkpoint_id: str
    at: datetime
    heads: dict[str, tuple[int, str]] = field(default_factory=dict)  # entity -> (seq, hash)


# ---------------------------------------------------------------------------------------------------------------
# The tracker


class AuditTracker:
    """Appends, reads, verifies and checkpoints hash-chained audit entries (tables ``audit-log`` and
    ``audit-checkpoints``). Models, clock, ids and the checkpoint signer are injectable."""

    def __init__(
        self,
        *,
        models: BoundModels | None = None,
        settings: Settings | None = None,
        clock: Clock | None = None,
        ids: IdFactory | None = None,
        signer: Signer | None = None,
        shown_fields: frozenset[str] = SHOWN_FIELDS,
        max_attempts: int = 60,
    ) -> None:
        self._models = models
        self._settings = settings
        self.clock = clock or SystemClock()
        self.ids = ids or RandomIds()
        self._signer = signer
        self.shown_fields = shown_fields
        self.max_attempts = max_attempts
        self.retries = 0  # lost races so far (for tests, notebooks and benchmarks)

    @property
    def models(self) -> BoundModels:
        return self._models or get_models(self._settings)

    @property
    def signer(self) -> Signer:
        signer = self._signer or signer_for(self._settings or get_settings())
        if signer is None:
            raise ConfigurationError("no audit checkpoint key: set PAYMENT_AUDIT_KEY or PAYMENT_AUDIT_KMS_KEY_ID")
        return signer

    # -- appending ---------------------------------------------------------------------------------------------

    def track(
        self,
        entity: str,
        action: str,
        user: str,
        *,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        known_head: AuditRecord | None | object = UNREAD,
        at: datetime | None = None,
        recorded: Callable[[AuditRecord | None], bool] | None = None,
        changes: Iterable[Mapping[str, Any]] | None = None,
    ) -> AuditRecord:
        """Append an entry to ``entity``'s chain and return it: one strongly consistent read of the head and one
        conditional put; a lost race re-reads the head and tries again on top of the winner.

        ``event_id`` makes a replay harmless: when the chain's head already carries it, that entry is returned
        and nothing is written (a writer that crashed after appending and is retried). ``known_head``: the head
        as the caller just read it (None: an empty chain), which saves the first read. ``at``: the time the change
        happened (default: now). ``recorded(head)``: whether the chain already holds this event, for writers whose
        events are ordered (the stream projection: a head past the event means it was written), instead of
        ``event_id`` at the head. ``changes``: the field changes as computed by the caller (instead of the diff
        of ``before`` and ``after``).
        """
        _entity(entity)
        identifier("action", action)
        identifier("user", user)
        if request_id is not None:
            identifier("request_id", request_id)
        if event_id is not None:
            identifier("event_id", event_id)
        if changes is None:
            changes = tuple(field_diff(before, after, self.shown_fields))
        else:
            changes = tuple(dict(c) for c in changes)
        context = _detail(detail)
        Model = self.models.audit
        for attempt in range(self.max_attempts):
            head = self.head(entity) if attempt or known_head is UNREAD else known_head
            if recorded is not None:
                if recorded(head):
                    return head
            elif head is not None and event_id is not None and head.event_id == event_id:
                return head
            seq = 1 if head is None else int(head.seq) + 1
            record = AuditRecord(
                entity, seq, at or self.clock.now(), user, action, changes, context, request_id, event_id,
                head.hash if head is not None else GENESIS, "",
            )  # fmt: skip
            record = _with_hash(record)
            item = Model(
                entity, seq, at=record.at, actor=user, action=action, changes=list(changes) or None,
                detail=context or None, request_id=request_id, event_id=event_id, prev=record.prev, hash=record.hash,
            )  # fmt: skip
            try:
                item.save(condition=Model.entity.does_not_exist())
            except PutError as error:
                if error_code(error) != CONDITIONAL_CHECK_FAILED:
                    raise
                self.retries += 1
                time.sleep(random.uniform(0, min(0.05, 0.002 * 2**attempt)))  # jittered: the race is lost to a peer
                continue
            return record
        raise AuditAppendError(f"could not append to {entity}'s audit trail after {self.max_attempts} attempts")

    # -- reading -----------------------------------------------------------------------------------------------

    def head(self, entity: str) -> AuditRecord | None:
        """The chain's latest entry (one strongly consistent query of one item), or None for no entries."""
        for item in self.models.audit.query(entity, scan_index_forward=False, limit=1, consistent_read=True):
            return _record(item)
        return None

    def entry(self, entity: str, seq: int) -> AuditRecord | None:
        """Entry ``seq`` of the chain (a strongly consistent GetItem), or None."""
        try:
            return _record(self.models.audit.get(_entity(entity), seq, consistent_read=True))
        except DoesNotExist:
            return None

    def history(self, entity: str, *, page_size: int = 100) -> Iterator[AuditRecord]:
        """The chain's entries in order, read page by page (strongly consistent)."""
        _entity(entity)
        if not 1 <= page_size <= 1000:
            raise ValidationError("page_size", "must be between 1 and 1000")
        for item in self.models.audit.query(entity, consistent_read=True, page_size=page_size):
            yield _record(item)

    # -- verifying ---------------------------------------------------------------------------------------------

    def verify(self, entity: str) -> ChainVerification:
        """Re-compute the chain and check it against every checkpoint of the entity; names each problem found."""
        entries = list(self.history(entity, page_size=1000))  # DynamoDB still stops each page at 1 MB
        problems = find_chain_problems(entries)
        intact = {int(e.seq): e for e in entries if _is_integer(e.seq) and e.computed_hash() == e.hash}
        head_seq = max((int(e.seq) for e in entries if _is_integer(e.seq)), default=0)
        checkpoint_seq = None
        checkpoints = list(self.models.audit_checkpoint.query(entity, consistent_read=True))
        signer = self.signer if checkpoints else None
        for checkpoint in checkpoints:
            seq = int(checkpoint.seq)
            if not signer.verify(_checkpoint_message(checkpoint), base64.b64decode(checkpoint.mac)):
                problems.append(ChainProblem("forged-checkpoint", seq, "its signature does not verify; ignored"))
                continue
            checkpoint_seq = max(seq, checkpoint_seq or 0)
            if head_seq < seq:
                problems.append(ChainProblem(
                    "truncated", seq, f"signed with {seq} entries; the chain now ends at #{head_seq}",
                ))  # fmt: skip
            elif seq not in intact or intact[seq].hash != checkpoint.hash:
                problems.append(ChainProblem(
                    "rewritten", seq, "the chain no longer contains the signed head: entries up to here were re-hashed",
                ))  # fmt: skip
        head = intact.get(head_seq)
        flagged = tuple(e.seq for e in entries if e.actor == UNATTRIBUTED)
        return ChainVerification(
            entity, len(entries), head_seq, head.hash if head else "", checkpoint_seq, tuple(_unique(problems)),
            flagged,
        )  # fmt: skip

    # -- checkpoints -------------------------------------------------------------------------------------------

    def checkpoint(self, entities: Iterable[str] | None = None) -> Checkpoint:
        """Sign the current head of each entity's chain (all chains when ``entities`` is None: a full scan of the
        audit table, a batch job's cost) and store the signed heads in ``audit-checkpoints``."""
        signer = self.signer
        checkpoint_id = self.ids.new_id()
        now = self.clock.now()
        names = sorted(set(entities)) if entities is not None else sorted(self.all_entities())
        Model = self.models.audit_checkpoint
        heads = {}
        for entity in names:
            head = self.head(_entity(entity))
            if head is None:
                continue
            item = Model(
                entity, int(head.seq), hash=head.hash, at=now, checkpoint_id=checkpoint_id, signer=signer.name, mac=""
            )
            item.mac = base64.b64encode(signer.sign(_checkpoint_message(item))).decode()
            item.save()
            heads[entity] = (int(head.seq), head.hash)
        logger.info("audit checkpoint", checkpoint_id=checkpoint_id, chains=len(heads))
        return Checkpoint(checkpoint_id, now, heads)

    def all_entities(self) -> set[str]:
        """Every entity with a chain (a full scan of the audit table, reading only the keys)."""
        return {item.entity for item in self.models.audit.scan(attributes_to_get=["entity"])}


# ---------------------------------------------------------------------------------------------------------------
# Finding what was changed


def find_chain_problems(entries: list[AuditRecord]) -> list[ChainProblem]:
    """Every edit, deletion, displacement and insertion in ``entries`` (one chain, in key order)."""
    problems: list[ChainProblem] = []
    numbers = [int(e.seq) for e in entries if _is_integer(e.seq)]
    candidates = range(1, max(numbers, default=0) + 2)
    # 1. What each entry really is: the number its hash was computed with (None: its content was changed).
    identity: list[int | None] = []
    for entry in entries:
        if not _is_integer(entry.seq):
            identity.append(None)
            problems.append(ChainProblem("inserted", entry.seq, "an entry between two numbered entries"))
            continue
        if entry.computed_hash() == entry.hash:
            identity.append(int(entry.seq))
            continue
        found = next((n for n in candidates if n != entry.seq and entry.computed_hash(n) == entry.hash), None)
        identity.append(found)
        if found is None:
            problems.append(ChainProblem("edited", entry.seq, "its content no longer matches its hash"))
    # 2. Two intact entries claiming one number: the one its successor does not link to was slipped in.
    linked = {e.prev for e in entries}
    claims: dict[int, list[int]] = {}
    for index, number in enumerate(identity):
        if number is not None:
            claims.setdefault(number, []).append(index)
    inserted = set()
    for number, indexes in claims.items():
        if len(indexes) > 1:
            for index in indexes:
                if entries[index].hash not in linked:
                    inserted.add(index)
                    detail = f"a second entry #{number} that no entry links to"
                    problems.append(ChainProblem("inserted", entries[index].seq, detail))
    # 3. Intact entries away from their place (allowing for the entries inserted before them).
    shift = 0
    for index, (entry, number) in enumerate(zip(entries, identity, strict=True)):
        if index in inserted:
            shift += 1
        elif number is not None and _is_integer(entry.seq) and number != int(entry.seq) - shift:
            problems.append(ChainProblem("reordered", entry.seq, f"entry #{number} is stored here"))
    # 4. Numbers nobody holds, and links that do not match.
    genuine = {n: entries[i[0] if i[0] not in inserted else i[-1]] for n, i in claims.items()}
    edited_at = {int(e.seq) for e, n in zip(entries, identity, strict=True) if n is None and _is_integer(e.seq)}
    for number in range(1, max(genuine, default=0) + 1):
        if number not in genuine and number not in edited_at:
            problems.append(ChainProblem("deleted", number, "no entry holds this number"))
    for number, entry in sorted(genuine.items()):
        expected = GENESIS if number == 1 else genuine[number - 1].hash if number - 1 in genuine else None
        if expected is not None and entry.prev != expected:
            problems.append(ChainProblem(
                "edited", number - 1, f"entry #{number} recorded a different hash for it: it was rewritten",
            ))  # fmt: skip
    return sorted(problems, key=lambda p: (float(p.position), p.kind))


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def _entity(entity: str) -> str:
    if not isinstance(entity, str) or not 3 <= len(entity) <= 512 or "#" not in entity:
        raise ValidationError("entity", "must be '<kind>#<id>', at most 512 characters")
    return entity


def _is_integer(value: int | float) -> bool:
    return float(value).is_integer()


def _with_hash(record: AuditRecord) -> AuditRecord:
    return replace(record, hash=record.computed_hash())


def _record(item: Any) -> AuditRecord:
    seq = item.seq if not _is_integer(item.seq) else int(item.seq)
    return AuditRecord(
        item.entity, seq, item.at, item.actor, item.action,
        tuple(_plain(c) for c in (item.changes or [])), _plain(item.detail) or {},
        item.request_id, item.event_id, item.prev, item.hash,
    )  # fmt: skip


def _plain(value: Any) -> Any:
    """PynamoDB's raw map/list values as plain JSON values (numbers as ints, as they were hashed)."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float | Decimal) and float(value).is_integer():
        return int(value)
    return value


def _checkpoint_message(item: Any) -> bytes:
    return canonical_json({
        "entity": item.entity, "seq": int(item.seq), "hash": item.hash, "at": sortable_time(item.at),
        "checkpoint_id": item.checkpoint_id, "signer": item.signer,
    })  # fmt: skip


def _unique(problems: list[ChainProblem]) -> list[ChainProblem]:
    seen, result = set(), []
    for problem in problems:
        key = (problem.kind, problem.position)
        if key not in seen:
            seen.add(key)
            result.append(problem)
    return result
