"""Three of moto's costs that grow with the table, removed from the moto server process; every answer is moto's.

The project's moto server (``local.serve``) calls ``install()``. Measured on it (2026-12-02, 2-core machine):

* **A Query on a table's own key sorted the whole table.** moto 5.2's ``Table.query`` builds its candidates from
  ``Table.all_items()``, which collects every item of the table and sorts them all before keeping those with the
  queried hash key. Every audited write reads its chain's head with such a Query (``audit.py``), so a flow slowed
  down as the table grew: reconciling 1,000 settlement rows ran at 31 rows/s on an empty table and 15 rows/s with
  3,000 payments more. Now such a query's ``all_items()`` is the queried key's items alone (DynamoDB too reads one
  partition); moto's query does everything else (the range-key sort, the limit, the 1 MB page, the start key,
  filters, projections, counts) unchanged. A query on an index still scans the table: moto keeps no index.
* **The table sort compared values in Python.** ``all_items()`` (a Scan's order, an index query's candidates)
  sorted with ``DynamoType.__lt__``, computing both keys' values in every comparison; now each item's key is
  computed once (``DynamoType.cast_value``, what moto's comparisons compare): the same order, as the sort is
  stable and a table's key types are fixed by its schema.
* **A transaction deep-copied its table once per item.** ``transact_write_items`` backs up each table it writes
  (to roll back on a failed condition) with a deep copy taken once *per item*: a 100-item transaction copied a
  4,000-payment table 100 times (2 s each, against 0.5 s for the 1,000 puts of ``BatchWriteItem``). The backup
  loop changes nothing between copies, so the first copy of each table serves the rest of that loop.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import inspect
from types import ModuleType
from typing import Any

import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table

# -- a Query on the table's own key -------------------------------------------------------------------------------


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


# -- the table sort -----------------------------------------------------------------------------------------------


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


# -- a transaction's backup ---------------------------------------------------------------------------------------

_backups: contextvars.ContextVar[dict[int, Table] | None] = contextvars.ContextVar("moto_backups", default=None)


class _CopyOncePerTable(ModuleType):
    """``copy`` as moto's DynamoDB backend sees it: inside a transaction, a table's deep copy is taken once."""

    def __init__(self) -> None:
        super().__init__("copy")

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)

    def deepcopy(self, value: Any, memo: dict[int, Any] | None = None) -> Any:
        backups = _backups.get()
        if backups is None or not isinstance(value, Table):
            return copy.deepcopy(value, memo)
        if id(value) not in backups:
            backups[id(value)] = copy.deepcopy(value, memo)
        return backups[id(value)]


def _one_backup_per_table(transact: Any) -> Any:
    @functools.wraps(transact)
    def transact_write_items(self: DynamoDBBackend, *args: Any, **kwargs: Any) -> Any:
        token = _backups.set({})
        try:
            return transact(self, *args, **kwargs)
        finally:
            _backups.reset(token)

    transact_write_items.one_backup_per_table = True  # type: ignore[attr-defined]
    return transact_write_items


def install() -> None:
    """Remove the three costs (idempotent; meant for the moto server process, whose moto it changes)."""
    if not getattr(Table.query, "reads_one_partition", False):
        Table.query = _by_partition(Table.query)  # type: ignore[method-assign]
    if not getattr(Table.all_items, "keys_computed_once", False):
        Table.all_items = _all_items_sorted_once  # type: ignore[method-assign]
    if not getattr(DynamoDBBackend.transact_write_items, "one_backup_per_table", False):
        transact = _one_backup_per_table(DynamoDBBackend.transact_write_items)
        DynamoDBBackend.transact_write_items = transact  # type: ignore[method-assign]
        dynamodb_models.copy = _CopyOncePerTable()  # type: ignore[attr-defined]
