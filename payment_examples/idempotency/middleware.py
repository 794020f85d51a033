"""Idempotency middleware: run a side effect at most once per key, and replay its outcome to every repeat.

Modelled on the idempotency utility of Powertools for AWS Lambda, minus its known failure modes:

* Claim with ONE conditional put (absent, expired-but-not-yet-deleted by TTL, or an in-progress claim whose lease
  ran out) that returns the existing record on failure (``ReturnValuesOnConditionCheckFailure=ALL_OLD``), so a
  repeat is answered in one round trip; a consistent read is the fallback where the engine returns no item.
* Every claim carries a token. Completing and releasing are conditional on still holding it, so a worker whose
  lease expired (crashed, timed out, paused) can neither overwrite nor delete the record of the worker that took
  the key over.
* The payload hash is checked on every path: the failed put, the read fallback and the local cache.
* Results round-trip exactly (``utils.codec``): falsy values, ``None`` and ``Decimal`` come back as they went in
  (``str``/``int`` subclasses such as enums as equal plain values).
  A result that cannot be stored is recorded as a final error, so the side effect is never silently re-run.
* An exception from ``fn`` releases the claim (a retry runs again) unless it is a ``FinalError`` (e.g. a declined
  card), which is stored and re-raised to every repeat like a result.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from payment_examples.core import Clock, IdFactory, RandomIds, Settings, SystemClock, aws, identifier, logger
from payment_examples.core.errors import (
    CONDITIONAL_CHECK_FAILED,
    IdempotencyInProgressError,
    IdempotencyKeyError,
    IdempotencyKeyReuseError,
    IdempotencyResultError,
    ValidationError,
)
from payment_examples.idempotency import codec
from payment_examples.tables import get_models

T = TypeVar("T")

IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"
DEFAULT_SCOPE = "global"
DEFAULT_LIFETIME = timedelta(hours=24)
DEFAULT_LEASE = timedelta(seconds=60)
MAX_ITEM_BYTES = 400 * 1024  # DynamoDB's item size limit (attribute names and values, UTF-8)

# outcome kinds stored with a completed record
_VALUE, _FINAL_ERROR, _UNSTORABLE = "value", "final_error", "unstorable"


class FinalError(Exception):
    """Raise (a subclass of) this from ``fn`` for an outcome that must be replayed, not retried.

    Subclasses are re-created on replay from ``message`` and ``details`` (keyword arguments that must be
    storable), so give them the signature ``__init__(self, message="", **details)``.
    """

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


@dataclass(frozen=True)
class Outcome:
    value: Any
    replayed: bool


@dataclass(frozen=True)
class _Record:
    status: str
    payload_hash: str | None
    expires_at: int  # epoch seconds (the TTL attribute)
    lease_expires_at: int | None  # epoch milliseconds
    kind: str | None
    result: str | None

    @classmethod
    def from_item(cls, item: dict) -> _Record:
        def text(name: str) -> str | None:
            return item[name]["S"] if name in item else None

        def number(name: str) -> int | None:
            return int(item[name]["N"]) if name in item else None

        return cls(
            status=item["status"]["S"],
            payload_hash=text("payload_hash"),
            expires_at=number("expires_at") or 0,
            lease_expires_at=number("lease_expires_at"),
            kind=text("outcome"),
            result=text("result"),
        )

    def expired(self, now_s: int) -> bool:
        return self.expires_at < now_s

    def lease_expired(self, now_ms: int) -> bool:
        return self.status == IN_PROGRESS and (self.lease_expires_at or 0) < now_ms


class IdempotencyMiddleware:
    """``process(key, fn, payload=...)`` runs ``fn`` once per (scope, key) and replays its outcome afterwards.

    Every argument is optional: the client and table default to the settings in force at call time (so
    ``local_aws()`` redirects a middleware built earlier); clock, id factory, record lifetime, in-progress lease
    and the size of a local cache of completed records are injectable.
    """

    def __init__(
        self,
        *,
        client: Any | None = None,
        table_name: str | None = None,
        settings: Settings | None = None,
        clock: Clock | None = None,
        ids: IdFactory | None = None,
        lifetime: timedelta = DEFAULT_LIFETIME,
        lease: timedelta = DEFAULT_LEASE,
        cache_size: int = 0,
    ) -> None:
        if lifetime <= timedelta(0) or lease <= timedelta(0):
            raise ValueError("lifetime and lease must be positive")
        if lease > lifetime:
            raise ValueError("the in-progress lease must not outlive the record")
        self._client = client
        self._table_name = table_name
        self._settings = settings
        self.clock = clock or SystemClock()
        self.ids = ids or RandomIds()
        self.lifetime = lifetime
        self.lease = lease
        self._cache: OrderedDict[str, _Record] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()

    @property
    def client(self) -> Any:
        return self._client or aws.dynamodb(self._settings)

    @property
    def table_name(self) -> str:
        return self._table_name or get_models(self._settings).idempotency.Meta.table_name

    # -- public API --------------------------------------------------------------------------------------------

    def process(
        self,
        key: str,
        fn: Callable[[], T],
        *,
        payload: Any = None,
        scope: str = DEFAULT_SCOPE,
        lease: timedelta | None = None,
    ) -> T:
        """``fn()``'s result, computed at most once per (scope, key) within the record lifetime."""
        return self.process_outcome(key, fn, payload=payload, scope=scope, lease=lease).value

    def process_outcome(
        self,
        key: str,
        fn: Callable[[], T],
        *,
        payload: Any = None,
        scope: str = DEFAULT_SCOPE,
        lease: timedelta | None = None,
    ) -> Outcome:
        """Like ``process``, and says whether the value was replayed from an earlier call."""
        record_key = self.record_key(scope, key)
        try:
            digest = codec.payload_hash(payload)
        except TypeError as error:
            raise ValidationError("payload", str(error)) from None
        lease = lease or self.lease
        if lease <= timedelta(0):
            raise ValueError("the lease must be positive")

        cached = self._cached(record_key, digest)
        if cached is not None:
            return Outcome(self._replay(cached), replayed=True)

        claim = self._claim(record_key, scope, digest, lease)
        if isinstance(claim, _Record):
            self._remember(record_key, claim)
            return Outcome(self._replay(claim), replayed=True)
        token, expires_at = claim

        try:
            value = fn()
        except FinalError as error:
            self._complete(record_key, token, _FINAL_ERROR, self._final_error_text(error))
            raise
        except BaseException:
            self._release(record_key, token)
            raise
        try:
            text = codec.encode(value)
            size = _completed_item_bytes(record_key, scope, digest, text)
            if size > MAX_ITEM_BYTES:
                raise TypeError(f"the record would be {size} bytes; DynamoDB stores at most {MAX_ITEM_BYTES}")
            stored = self._complete(record_key, token, _VALUE, text)
        except (TypeError, ClientError) as error:
            if isinstance(error, ClientError) and error.response.get("Error", {}).get("Code") != "ValidationException":
                raise
            # Recorded as completed-with-this-error: a retry reports it instead of running the side effect again.
            reason = f"the operation ran, but its result cannot be stored for replay: {error}"
            self._complete(record_key, token, _UNSTORABLE, codec.encode(reason))
            raise IdempotencyResultError(reason) from None
        if stored:
            self._remember(record_key, _Record(COMPLETED, digest, expires_at, None, _VALUE, text))
        return Outcome(value, replayed=False)

    def release_stale_claims(self) -> int:
        """Delete every claim still in progress past its lease (a crashed or timed-out worker's), each conditional
        on its token and its lease being over, so a claim taken over meanwhile is kept. A scan: a batch job's cost
        (``recovery.py``), never on the request path. Returns how many were released."""
        now_ms = _ms(self.clock.now().timestamp())
        paginator = self.client.get_paginator("scan")
        released = 0
        pages = paginator.paginate(
            TableName=self.table_name,
            FilterExpression="#status = :in_progress AND #lease_expires_at < :now_ms",
            ExpressionAttributeNames={"#key": "key", "#status": "status", "#lease_expires_at": "lease_expires_at"},
            ExpressionAttributeValues={":in_progress": {"S": IN_PROGRESS}, ":now_ms": {"N": str(now_ms)}},
            ProjectionExpression="#key, claim_token",
            ConsistentRead=True,
        )
        for page in pages:
            for item in page.get("Items", []):
                try:
                    self.client.delete_item(
                        TableName=self.table_name,
                        Key={"key": item["key"]},
                        ConditionExpression="#claim_token = :token AND #status = :in_progress"
                        " AND #lease_expires_at < :now_ms",
                        ExpressionAttributeNames={
                            "#claim_token": "claim_token",
                            "#status": "status",
                            "#lease_expires_at": "lease_expires_at",
                        },
                        ExpressionAttributeValues={
                            ":token": item["claim_token"],
                            ":in_progress": {"S": IN_PROGRESS},
                            ":now_ms": {"N": str(now_ms)},
                        },
                    )
                except ClientError as error:
                    if not _condition_failed(error):
                        raise
                    continue
                released += 1
        if released:
            logger.info("stale idempotency claims released", released=released)
        return released

    @staticmethod
    def record_key(scope: str, key: str) -> str:
        """The stored key: a hash of (scope, key), so identical keys of two tenants never collide."""
        try:
            identifier("idempotency_key", key)
            identifier("scope", scope)
        except ValidationError as error:
            raise IdempotencyKeyError(error.field, error.message) from None
        return hashlib.sha256(f"{scope}\x1f{key}".encode()).hexdigest()

    # -- steps -------------------------------------------------------------------------------------------------

    def _claim(self, record_key: str, scope: str, digest: str, lease: timedelta) -> tuple[str, int] | _Record:
        """Claim the key (returns our token and the record's expiry) or find the completed record to replay."""
        for _attempt in range(3):
            now = self.clock.now()
            now_ms = _ms(now.timestamp())
            now_s = now_ms // 1000
            lease_end_ms = now_ms + _ms(lease.total_seconds())
            # The record must not expire while its claim is held (a per-call lease may exceed the lifetime).
            expires_at = max(now_s + math.ceil(self.lifetime.total_seconds()), math.ceil(lease_end_ms / 1000))
            token = self.ids.new_id()
            item = {
                "key": {"S": record_key},
                "scope": {"S": scope},
                "status": {"S": IN_PROGRESS},
                "payload_hash": {"S": digest},
                "claim_token": {"S": token},
                "lease_expires_at": {"N": str(lease_end_ms)},
                "expires_at": {"N": str(expires_at)},
                "created_at": {"S": now.strftime("%Y-%m-%dT%H:%M:%S.%f+0000")},
            }
            try:
                self.client.put_item(
                    TableName=self.table_name,
                    Item=item,
                    ConditionExpression=(
                        "attribute_not_exists(#key) OR #expires_at < :now_s"
                        # a stalled claim is taken over only by the same request: another payload is a reuse
                        " OR (#status = :in_progress AND #lease_expires_at < :now_ms AND #payload_hash = :digest)"
                    ),
                    ExpressionAttributeNames={
                        "#key": "key",
                        "#expires_at": "expires_at",
                        "#status": "status",
                        "#lease_expires_at": "lease_expires_at",
                        "#payload_hash": "payload_hash",
                    },
                    ExpressionAttributeValues={
                        ":digest": {"S": digest},
                        ":now_s": {"N": str(now_s)},
                        ":now_ms": {"N": str(now_ms)},
                        ":in_progress": {"S": IN_PROGRESS},
                    },
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
                return token, expires_at
            except ClientError as error:
                if not _condition_failed(error):
                    raise
                old = error.response.get("Item") or self._read(record_key)
            if old is None:
                continue  # deleted (released or TTL) between our put and our read: claim again
            record = _Record.from_item(old)
            if record.expired(now_s):
                continue  # expired (TTL is lazy) between our put and our read: claim again
            if record.payload_hash != digest:
                raise IdempotencyKeyReuseError()
            if record.lease_expired(now_ms):
                continue  # the lease ran out between our put and our read: claim again
            if record.status == COMPLETED:
                return record
            raise IdempotencyInProgressError(max(1, math.ceil(((record.lease_expires_at or 0) - now_ms) / 1000)))
        raise IdempotencyInProgressError(1)  # the record keeps changing under us: let the caller retry shortly

    def _read(self, record_key: str) -> dict | None:
        response = self.client.get_item(TableName=self.table_name, Key={"key": {"S": record_key}}, ConsistentRead=True)
        return response.get("Item")

    def _complete(self, record_key: str, token: str, kind: str, text: str) -> bool:
        """Store the outcome if we still hold the claim; False (and nothing written) if the lease was lost."""
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key={"key": {"S": record_key}},
                UpdateExpression="SET #status = :completed, #outcome = :kind, #result = :result"
                " REMOVE #lease_expires_at, #claim_token",
                ConditionExpression="#claim_token = :token AND #status = :in_progress",
                ExpressionAttributeNames={
                    "#status": "status",
                    "#outcome": "outcome",
                    "#result": "result",
                    "#lease_expires_at": "lease_expires_at",
                    "#claim_token": "claim_token",
                },
                ExpressionAttributeValues={
                    ":completed": {"S": COMPLETED},
                    ":kind": {"S": kind},
                    ":result": {"S": text},
                    ":token": {"S": token},
                    ":in_progress": {"S": IN_PROGRESS},
                },
            )
        except ClientError as error:
            if not _condition_failed(error):
                raise
            # Our lease ran out and another worker owns the key now: leave its record alone.
            logger.warning("idempotency lease lost before completion; the new owner's record is kept")
            return False
        return True

    def _release(self, record_key: str, token: str) -> None:
        try:
            self.client.delete_item(
                TableName=self.table_name,
                Key={"key": {"S": record_key}},
                ConditionExpression="#claim_token = :token AND #status = :in_progress",
                ExpressionAttributeNames={"#claim_token": "claim_token", "#status": "status"},
                ExpressionAttributeValues={":token": {"S": token}, ":in_progress": {"S": IN_PROGRESS}},
            )
        except ClientError as error:
            if not _condition_failed(error):
                raise
            logger.warning("idempotency lease lost before release; the new owner's record is kept")

    def _replay(self, record: _Record) -> Any:
        if record.kind == _FINAL_ERROR:
            raise _rebuild_final_error(codec.decode(record.result or "null"))
        if record.kind == _UNSTORABLE:
            raise IdempotencyResultError(codec.decode(record.result or "null"))
        return codec.decode(record.result or "null")

    @staticmethod
    def _final_error_text(error: FinalError) -> str:
        cls = type(error)
        data = {"class": f"{cls.__module__}.{cls.__qualname__}", "message": error.message, "details": error.details}
        try:
            return codec.encode(data)
        except TypeError:
            data["details"] = {}
            return codec.encode(data)

    # -- local cache of completed records ----------------------------------------------------------------------

    def _cached(self, record_key: str, digest: str) -> _Record | None:
        if not self._cache_size:
            return None
        with self._cache_lock:
            record = self._cache.get(record_key)
            if record is None:
                return None
            if record.expired(_ms(self.clock.now().timestamp()) // 1000):
                del self._cache[record_key]
                return None
            self._cache.move_to_end(record_key)
        if record.payload_hash != digest:
            raise IdempotencyKeyReuseError()
        return record

    def _remember(self, record_key: str, record: _Record) -> None:
        if not self._cache_size or record.status != COMPLETED:
            return
        with self._cache_lock:
            self._cache[record_key] = record
            self._cache.move_to_end(record_key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)


def _completed_item_bytes(record_key: str, scope: str, digest: str, text: str) -> int:
    """The size DynamoDB counts for the completed record: UTF-8 names and values (numbers at their maximum)."""
    strings = {
        "key": record_key,
        "scope": scope,
        "status": COMPLETED,
        "payload_hash": digest,
        "created_at": "0000-00-00T00:00:00.000000+0000",
        "outcome": _VALUE,
        "result": text,
    }
    return sum(len(name.encode()) + len(value.encode()) for name, value in strings.items()) + len("expires_at") + 21


def _condition_failed(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == CONDITIONAL_CHECK_FAILED


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _rebuild_final_error(data: dict) -> FinalError:
    name, message, details = data.get("class", ""), data.get("message", ""), data.get("details") or {}
    for cls in _final_error_classes():
        if f"{cls.__module__}.{cls.__qualname__}" == name:
            try:
                return cls(message, **details)
            except TypeError:
                break
    return FinalError(message, **details)


def _final_error_classes() -> list[type[FinalError]]:
    found, pending = [], [FinalError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found
