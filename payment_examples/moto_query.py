"""A Query on a moto table's own key reads that key's partition, not the whole table sorted.

moto 5.2's ``Table.query`` builds its candidates from ``Table.all_items()``, which collects every item of the
table and sorts them all (by hash and range key, comparing ``DynamoType`` values in Python) before keeping the
ones with the queried hash key. So one Query on a 20,000-item table costs a sort of 20,000 items, and a flow
whose every write first reads the head of an audit chain (``audit.py``) grows quadratically with the table:
reconciling 1,000 settlement rows ran at 31 rows/s on an empty table and 15 rows/s with 3,000 payments more
(measured on the moto server, 2026-12-02). DynamoDB reads one partition for such a Query.

``install()`` (called by the moto server child, ``local.serve``) wraps ``Table.query`` so that, for a query on
the table's own key (no ``index_name``), ``all_items()`` yields just the items stored under the queried hash
key. Everything else moto's query does (the range-key sort, the limit, the 1 MB page, the start key, filters,
projections, consumed counts) runs unchanged on those candidates, so the answer is the same; a query on an
index keeps moto's scan of the table (an index has no partitions of its own in moto).

``all_items()`` itself (an index query's candidates, and every Scan) sorts by the same keys as moto but computes
each key once (``DynamoType.cast_value``, which moto's own comparisons use) instead of in every comparison:
the same items in the same order (the sort is stable and a table's key types are fixed by its schema).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from moto.dynamodb.models.table import Table


class _Partition:
    """``table`` seen through one hash key: ``all_items()`` is that key's items; every other name is the table's."""

    def __init__(self, table: Table, hash_key: Any) -> None:
        self._table = table
        self._hash_key = hash_key

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)

    def all_items(self) -> list[Any]:
        stored = self._table.items.get(self._hash_key)  # .get: the items dict is a defaultdict
        if stored is None:
            return []
        return list(stored.values()) if self._table.range_key_attr else [stored]


def _by_partition(query: Any) -> Any:
    signature = inspect.signature(query)  # moto's backend passes index_name by position

    @functools.wraps(query)
    def partition_query(self: Table, *args: Any, **kwargs: Any) -> Any:
        call = signature.bind(self, *args, **kwargs).arguments
        if call.get("index_name") is None and call.get("hash_key") is not None:
            self = _Partition(self, call["hash_key"])  # type: ignore[assignment]
        return query(self, *args, **kwargs)

    partition_query.reads_one_partition = True  # type: ignore[attr-defined]
    return partition_query


def _item_key(item: Any) -> Any:
    # moto's sort key, (hash, range) or hash, as the values its DynamoType comparisons compare
    return (item.hash_key.cast_value, item.range_key.cast_value) if item.range_key else item.hash_key.cast_value


def _all_items_sorted_once(table: Table) -> list[Any]:
    items: list[Any] = []
    for stored in table.items.values():
        if table.range_key_attr:
            items.extend(stored.values())
        else:
            items.append(stored)
    return sorted(items, key=_item_key)


_all_items_sorted_once.keys_computed_once = True  # type: ignore[attr-defined]


def install() -> None:
    """Make base-table queries read one partition and the table sort compute each key once (idempotent; for the
    moto server process)."""
    if not getattr(Table.query, "reads_one_partition", False):
        Table.query = _by_partition(Table.query)  # type: ignore[method-assign]
    if not getattr(Table.all_items, "keys_computed_once", False):
        Table.all_items = _all_items_sorted_once  # type: ignore[method-assign]
