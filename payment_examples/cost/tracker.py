"""Record every DynamoDB call a workload makes and the capacity DynamoDB would charge for it.

Local engines do not report capacity truthfully (moto answers a flat 1 unit per request), so the tracker
works the units out itself, with the rules of ``capacity.py``, from the sizes of the items involved. It hooks
botocore's event system on the clients it is given (the package's boto3 clients and PynamoDB's connections)
and uses a *separate* client, invisible to it, to read what the request does not show: the item before a
write (writes charge the larger of before and after), the item after an ``UpdateItem`` that did not return
it, the whole item behind a projection, and the items a filtered query read before its filter.

Those extra reads make a tracked workload slower; they are never counted. They assume no other writer changes
the same item between the tracker's read and the call (true for the workloads measured here).
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from payment_examples.core.errors import CONDITIONAL_CHECK_FAILED
from payment_examples.cost import capacity as rules
from payment_examples.cost.capacity import TableSpec
from payment_examples.cost.item_size import item_size

_PARAMS = "payment_examples.capacity.params"
_BEFORE = "payment_examples.capacity.before"
_WRITES_WITH_IMAGES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
_CHARGED_ERRORS = {CONDITIONAL_CHECK_FAILED, "TransactionCanceledException"}
_PLACEHOLDER = re.compile(r"[#:][A-Za-z0-9_]+")


@dataclass(frozen=True)
class CallRecord:
    """The capacity one DynamoDB call consumed on one table (a batch call gives a record per table)."""

    step: str | None
    operation: str
    table: str
    read_units: float = 0.0
    write_units: float = 0.0
    index_write_units: float = 0.0
    succeeded: bool = True


class CapacityTracker:
    """Attach to clients, run a workload, read ``records`` (DynamoDB) and ``requests`` (every service)."""

    def __init__(self, raw_dynamodb: Any) -> None:
        self._raw = raw_dynamodb
        self._specs: dict[str, TableSpec] = {}
        self._lock = threading.Lock()
        self._attached: list[Any] = []
        self._step: str | None = None
        self.records: list[CallRecord] = []
        self.requests: Counter[tuple[str | None, str, str]] = Counter()  # (step, service, operation)

    # -- wiring ---------------------------------------------------------------------------------------------

    def attach(self, *clients: Any) -> CapacityTracker:
        for client in clients:
            if any(client is seen for seen in self._attached):
                continue
            events = client.meta.events
            events.register("before-parameter-build", self._before, unique_id=f"capacity-before-{id(self)}")
            events.register("after-call", self._after, unique_id=f"capacity-after-{id(self)}")
            self._attached.append(client)
        return self

    def attach_models(self, models: Any) -> CapacityTracker:
        """Attach to the PynamoDB connection of every model of a ``BoundModels``."""
        return self.attach(*(model._get_connection().connection.client for model in models.all()))

    def detach(self) -> None:
        for client in self._attached:
            client.meta.events.unregister("before-parameter-build", unique_id=f"capacity-before-{id(self)}")
            client.meta.events.unregister("after-call", unique_id=f"capacity-after-{id(self)}")
        self._attached.clear()

    def __enter__(self) -> CapacityTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Label the calls made inside the block (the workload's steps run one after another)."""
        previous, self._step = self._step, name
        try:
            yield
        finally:
            self._step = previous

    def reset(self) -> None:
        with self._lock:
            self.records.clear()
            self.requests.clear()

    # -- totals ---------------------------------------------------------------------------------------------

    def totals(self, by: str = "step") -> dict[Any, dict[str, float]]:
        """Units summed per ``step``, ``table`` or ``operation``: read, write, index_write, calls."""
        out: dict[Any, dict[str, float]] = {}
        for record in self.records:
            row = out.setdefault(getattr(record, by), {"read": 0.0, "write": 0.0, "index_write": 0.0, "calls": 0})
            row["read"] += record.read_units
            row["write"] += record.write_units
            row["index_write"] += record.index_write_units
            row["calls"] += 1
        return out

    def table_spec(self, table: str) -> TableSpec:
        spec = self._specs.get(table)
        if spec is None:
            spec = TableSpec.from_description(self._raw.describe_table(TableName=table)["Table"])
            self._specs[table] = spec
        return spec

    # -- botocore handlers ----------------------------------------------------------------------------------

    def _before(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        if model.service_model.service_name != "dynamodb":
            return
        context[_PARAMS] = copy.deepcopy(params)
        if model.name in _WRITES_WITH_IMAGES:
            context[_BEFORE] = self._images(model.name, params)

    def _after(self, http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any):
        service = model.service_model.service_name
        with self._lock:
            self.requests[(self._step, service, model.name)] += 1
        params = context.get(_PARAMS)
        if service != "dynamodb" or params is None:
            return
        code = parsed.get("Error", {}).get("Code") if http_response.status_code >= 300 else None
        if code is not None and code not in _CHARGED_ERRORS:
            return  # validation errors and throttling are not charged
        handler = getattr(self, f"_charge_{_snake(model.name)}", None)
        if handler is None:
            return  # control plane (DescribeTable, CreateTable...): no capacity
        records = handler(params, parsed, code is None, context.get(_BEFORE))
        with self._lock:
            self.records.extend(records)

    # -- images ---------------------------------------------------------------------------------------------

    def _get(self, table: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
        return self._raw.get_item(TableName=table, Key=dict(key), ConsistentRead=True).get("Item")

    def _images(self, operation: str, params: dict[str, Any]) -> list[dict[str, Any] | None]:
        """The items a write will touch, as they are before it (in the order of the request)."""
        targets: list[tuple[str, Mapping[str, Any]]] = []
        if operation == "PutItem":
            targets.append((params["TableName"], self.table_spec(params["TableName"]).key_of(params["Item"])))
        elif operation in ("UpdateItem", "DeleteItem"):
            targets.append((params["TableName"], params["Key"]))
        elif operation == "BatchWriteItem":
            for table, requests in params["RequestItems"].items():
                for request in requests:
                    put = request.get("PutRequest")
                    key = self.table_spec(table).key_of(put["Item"]) if put else request["DeleteRequest"]["Key"]
                    targets.append((table, key))
        else:  # TransactWriteItems
            for action in params["TransactItems"]:
                ((kind, body),) = action.items()
                key = self.table_spec(body["TableName"]).key_of(body["Item"]) if kind == "Put" else body["Key"]
                targets.append((body["TableName"], key))
        return [self._get(table, key) for table, key in targets]

    def _index_units(self, table: str, before: Mapping | None, after: Mapping | None) -> int:
        spec = self.table_spec(table)
        return sum(rules.index_write_units(index, before, after, spec.keys) for index in spec.indexes)

    def _full_items(self, table: str, items: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        spec = self.table_spec(table)
        return [self._get(table, spec.key_of(item)) for item in items]

    # -- charges per operation ------------------------------------------------------------------------------

    def _record(self, operation: str, table: str, **units: Any) -> CallRecord:
        return CallRecord(self._step, operation, table, **units)

    def _charge_put_item(self, params, parsed, ok, before):
        table, old, new = params["TableName"], before[0], params["Item"]
        units = rules.put_units(item_size(new, typed=True), _size(old), succeeded=ok)
        index = self._index_units(table, old, new) if ok else 0
        return [self._record("PutItem", table, write_units=units, index_write_units=index, succeeded=ok)]

    def _charge_update_item(self, params, parsed, ok, before):
        table, old = params["TableName"], before[0]
        if not ok:
            return [self._record("UpdateItem", table, write_units=rules.put_units(0, _size(old), succeeded=False))]
        new = parsed["Attributes"] if params.get("ReturnValues") == "ALL_NEW" else self._get(table, params["Key"])
        units = rules.put_units(_size(new) or 0, _size(old))
        index = self._index_units(table, old, new)
        return [self._record("UpdateItem", table, write_units=units, index_write_units=index)]

    def _charge_delete_item(self, params, parsed, ok, before):
        table, old = params["TableName"], before[0]
        index = self._index_units(table, old, None) if ok and old else 0
        return [self._record("DeleteItem", table, write_units=rules.delete_units(_size(old)), index_write_units=index)]

    def _charge_get_item(self, params, parsed, ok, before):
        table, item = params["TableName"], parsed.get("Item")
        if item is not None and _projected(params):
            item = self._get(table, params["Key"])
        units = rules.read_units(_size(item) or 0, _consistency(params))
        return [self._record("GetItem", table, read_units=units)]

    def _charge_batch_get_item(self, params, parsed, ok, before):
        records = []
        for table, request in params["RequestItems"].items():
            spec = self.table_spec(table)
            returned = parsed.get("Responses", {}).get(table, [])
            if _projected(request):
                returned = [item for item in self._full_items(table, returned) if item is not None]
            sizes = {_canonical(spec.key_of(item)): item_size(item, typed=True) for item in returned}
            unprocessed = {_canonical(k) for k in parsed.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])}
            keys = [_canonical(key) for key in request["Keys"] if _canonical(key) not in unprocessed]
            units = rules.batch_get_units([sizes.get(key) for key in keys], _consistency(request))
            records.append(self._record("BatchGetItem", table, read_units=units))
        return records

    def _charge_query(self, params, parsed, ok, before, operation="Query"):
        table = params["TableName"]
        items = parsed.get("Items")
        if items is None or _projected(params) or "FilterExpression" in params or params.get("Select") == "COUNT":
            items = self._items_read(operation, params)
        units = rules.query_units([item_size(item, typed=True) for item in items], _consistency(params))
        return [self._record(operation, table, read_units=units)]

    def _charge_scan(self, params, parsed, ok, before):
        return self._charge_query(params, parsed, ok, before, operation="Scan")

    def _items_read(self, operation: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Repeat a page without filter, projection or COUNT: the same items are read (Limit and the 1 MB page
        bound apply before any filter), now returned whole."""
        drop = {"FilterExpression", "ProjectionExpression", "AttributesToGet", "Select", "QueryFilter", "ScanFilter"}
        request = {k: v for k, v in params.items() if k not in drop and k != "ReturnConsumedCapacity"}
        used = set(_PLACEHOLDER.findall(request.get("KeyConditionExpression", "")))
        for field in ("ExpressionAttributeNames", "ExpressionAttributeValues"):
            if field in request:
                kept = {k: v for k, v in request[field].items() if k in used}
                request[field] = kept
                if not kept:
                    del request[field]
        method = self._raw.query if operation == "Query" else self._raw.scan
        return method(**request).get("Items", [])

    def _charge_batch_write_item(self, params, parsed, ok, before):
        unprocessed = {
            _canonical(request) for requests in parsed.get("UnprocessedItems", {}).values() for request in requests
        }
        images = iter(before)
        totals: dict[str, list[float]] = {}
        for table, requests in params["RequestItems"].items():
            for request in requests:
                old = next(images)
                if _canonical(request) in unprocessed:
                    continue
                put = request.get("PutRequest")
                new = put["Item"] if put else None
                units = (
                    rules.put_units(item_size(new, typed=True), _size(old)) if put else rules.delete_units(_size(old))
                )
                row = totals.setdefault(table, [0.0, 0.0])
                row[0] += units
                row[1] += self._index_units(table, old, new)
        return [
            self._record("BatchWriteItem", table, write_units=w, index_write_units=i)
            for table, (w, i) in totals.items()
        ]

    def _charge_transact_write_items(self, params, parsed, ok, before):
        records = []
        for action, old in zip(params["TransactItems"], before, strict=True):
            ((kind, body),) = action.items()
            table = body["TableName"]
            if not ok or kind == "ConditionCheck":  # cancelled, or only checked: the existing item, doubled
                records.append(
                    self._record("TransactWriteItems", table, write_units=2 * rules.delete_units(_size(old)))
                )
                continue
            if kind == "Put":
                new = body["Item"]
            elif kind == "Update":
                new = self._get(table, body["Key"])
            else:
                new = None
            units = rules.put_units(_size(new) or 0, _size(old)) if new is not None else rules.delete_units(_size(old))
            records.append(
                self._record(
                    "TransactWriteItems",
                    table,
                    write_units=2 * units,
                    index_write_units=self._index_units(table, old, new),
                )
            )
        return records

    def _charge_transact_get_items(self, params, parsed, ok, before):
        records = []
        for action, response in zip(params["TransactItems"], parsed.get("Responses", []), strict=False):
            body = action["Get"]
            item = response.get("Item")
            if item is not None and _projected(body):
                item = self._get(body["TableName"], body["Key"])
            units = rules.read_units(_size(item) or 0, "transactional")
            records.append(self._record("TransactGetItems", body["TableName"], read_units=units))
        return records


def _size(item: Mapping[str, Any] | None) -> int | None:
    return None if item is None else item_size(item, typed=True)


def _projected(params: Mapping[str, Any]) -> bool:
    return "ProjectionExpression" in params or "AttributesToGet" in params


def _consistency(params: Mapping[str, Any]) -> rules.Consistency:
    return "strong" if params.get("ConsistentRead") else "eventual"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=lambda v: v.hex() if isinstance(v, bytes) else str(v))


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
