"""The capacity DynamoDB charges for each operation, worked out from item sizes.

Sources (AWS DynamoDB Developer Guide): "DynamoDB read and write operations" (read-write-operations.html),
"Conditional writes" (WorkingWithItems.html#WorkingWithItems.ConditionalUpdate), "Provisioned throughput
considerations for Global Secondary Indexes" (GSI.html#GSI.ThroughputConsiderations), "Amazon DynamoDB
Transactions: capacity management" (transaction-apis.html#transaction-capacity-handling) and "Time to Live"
(TTL.html: TTL deletes consume no write capacity).

* Writes are charged in 1 KB units, at least 1. ``PutItem`` and ``UpdateItem`` charge the larger of the item
  before and after; ``DeleteItem`` the deleted item. A write whose condition fails still consumes: the size of
  the existing item, or 1 unit when there is none.
* Reads are charged in 4 KB units, at least 1: a strongly consistent read a whole unit, an eventually
  consistent read half, a transactional read two. A ``GetItem`` of a missing item still costs its unit.
  ``Query`` and ``Scan`` add up the sizes of the items they *read* on a page (before any filter or projection)
  and round once; ``BatchGetItem`` and ``BatchWriteItem`` round every item on its own.
* Transactions charge every item twice.
* Every global secondary index holding the item costs one write of the index entry's size (its keys and the
  projected attributes); when the index key changes it is a delete plus a put; no write when the item is in
  the index neither before nor after, or when nothing the index holds changed.
* Storage: the item's bytes plus 100 bytes, and the same for every index entry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from payment_examples.cost.item_size import item_size

WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4096
STORAGE_OVERHEAD_BYTES = 100

Consistency = Literal["eventual", "strong", "transactional"]
_READ_FACTOR: dict[str, float] = {"eventual": 0.5, "strong": 1.0, "transactional": 2.0}


def write_units(size: int) -> int:
    """Write units for one item of ``size`` bytes (1 KB units, at least 1)."""
    return max(1, math.ceil(size / WRITE_UNIT_BYTES))


def read_units(size: int, consistency: Consistency = "eventual") -> float:
    """Read units for ``size`` bytes read at once (4 KB units, at least 1, then the consistency's factor)."""
    try:
        factor = _READ_FACTOR[consistency]
    except KeyError:
        raise ValueError(f"consistency must be one of {sorted(_READ_FACTOR)}, got {consistency!r}") from None
    return max(1, math.ceil(size / READ_UNIT_BYTES)) * factor


def put_units(new_size: int, old_size: int | None = None, *, succeeded: bool = True) -> int:
    """``PutItem``/``UpdateItem``: the larger of before and after; a failed condition the existing item (or 1)."""
    if not succeeded:
        return write_units(old_size or 0)
    return write_units(max(new_size, old_size or 0))


def delete_units(old_size: int | None) -> int:
    """``DeleteItem``: the deleted item (1 unit when there was none)."""
    return write_units(old_size or 0)


def query_units(sizes: list[int], consistency: Consistency = "eventual") -> float:
    """One ``Query``/``Scan`` page: the sizes of the items read, summed, then rounded up once."""
    return read_units(sum(sizes), consistency)


def batch_get_units(sizes: list[int | None], consistency: Consistency = "eventual") -> float:
    """``BatchGetItem``: every key rounded on its own (a missing item costs like a missing ``GetItem``)."""
    return sum(read_units(size or 0, consistency) for size in sizes)


def storage_bytes(size: int) -> int:
    """Stored bytes of one item or index entry of ``size`` bytes."""
    return size + STORAGE_OVERHEAD_BYTES


@dataclass(frozen=True)
class IndexSpec:
    """A global secondary index: its keys and what it projects."""

    name: str
    hash_key: str
    range_key: str | None = None
    projection: Literal["ALL", "KEYS_ONLY", "INCLUDE"] = "ALL"
    include: tuple[str, ...] = ()

    def entry(self, item: Mapping[str, Any] | None, table_keys: tuple[str, ...]) -> dict[str, Any] | None:
        """The index entry for ``item`` (DynamoDB JSON), or None when the item lacks an index key."""
        if item is None or self.hash_key not in item or (self.range_key and self.range_key not in item):
            return None
        if self.projection == "ALL":
            return dict(item)
        names = {*table_keys, self.hash_key, *([self.range_key] if self.range_key else [])}
        if self.projection == "INCLUDE":
            names |= set(self.include)
        return {name: value for name, value in item.items() if name in names}

    def keys_of(self, entry: Mapping[str, Any]) -> tuple[Any, ...]:
        return (repr(entry.get(self.hash_key)), repr(entry.get(self.range_key)) if self.range_key else None)


@dataclass(frozen=True)
class TableSpec:
    """A table's key attributes and its global secondary indexes (what capacity and storage depend on)."""

    name: str
    keys: tuple[str, ...]
    indexes: tuple[IndexSpec, ...] = ()

    @classmethod
    def from_description(cls, table: Mapping[str, Any]) -> TableSpec:
        """From ``DescribeTable``'s ``Table``."""
        indexes = []
        for index in table.get("GlobalSecondaryIndexes", []):
            schema = {k["KeyType"]: k["AttributeName"] for k in index["KeySchema"]}
            projection = index.get("Projection", {})
            indexes.append(
                IndexSpec(
                    index["IndexName"],
                    schema["HASH"],
                    schema.get("RANGE"),
                    projection.get("ProjectionType", "ALL"),
                    tuple(projection.get("NonKeyAttributes", ())),
                )
            )
        keys = tuple(k["AttributeName"] for k in table["KeySchema"])
        return cls(table["TableName"], keys, tuple(indexes))

    def key_of(self, item: Mapping[str, Any]) -> dict[str, Any]:
        return {name: item[name] for name in self.keys}

    def index(self, name: str) -> IndexSpec:
        for index in self.indexes:
            if index.name == name:
                return index
        raise KeyError(f"{self.name} has no index {name!r}")


def index_write_units(
    index: IndexSpec, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, table_keys: tuple[str, ...]
) -> int:
    """Write units one index consumes when a table item goes from ``before`` to ``after`` (None: absent)."""
    old, new = index.entry(before, table_keys), index.entry(after, table_keys)
    if old is None and new is None:
        return 0
    if old is None:
        return write_units(item_size(new, typed=True))
    if new is None:
        return write_units(item_size(old, typed=True))
    if index.keys_of(old) != index.keys_of(new):
        return write_units(item_size(old, typed=True)) + write_units(item_size(new, typed=True))
    if old == new:
        return 0
    return write_units(max(item_size(old, typed=True), item_size(new, typed=True)))


def item_storage_bytes(item: Mapping[str, Any], table: TableSpec) -> tuple[int, int]:
    """(table bytes, index bytes) that ``item`` (DynamoDB JSON) occupies, overheads included."""
    table_bytes = storage_bytes(item_size(item, typed=True))
    index_bytes = 0
    for index in table.indexes:
        entry = index.entry(item, table.keys)
        if entry is not None:
            index_bytes += storage_bytes(item_size(entry, typed=True))
    return table_bytes, index_bytes
