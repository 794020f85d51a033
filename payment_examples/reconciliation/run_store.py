"""The reconciliation table (one partition per settlement file): the run's checkpoint and lease, the items of
rows about payments that are not the merchant's, the file's merchants, and its exceptions (``RunStore``: plain
DynamoDB calls)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from payment_examples.core import Clock, Settings, SystemClock, get_settings, name_based_id
from payment_examples.core import client as aws_client
from payment_examples.core.errors import CONDITIONAL_CHECK_FAILED, PaymentExamplesError
from payment_examples.reconciliation.decision import Outcome
from payment_examples.reconciliation.rows import SettlementRow
from payment_examples.tables.models import get_models


class ReconciliationError(PaymentExamplesError):
    """A run cannot go on (the object changed under it, the engine keeps refusing reads, ...)."""


@dataclass(frozen=True)
class SettlementFile:
    """Which file a run reconciles: ``file_id`` keys its checkpoint and marks; ``name`` is for people."""

    file_id: str
    name: str

    @classmethod
    def for_s3(cls, bucket: str, key: str, etag: str) -> SettlementFile:
        return cls(name_based_id("settlement-file", bucket, key, etag.strip('"')), f"s3://{bucket}/{key}")


def row_digest(row: SettlementRow) -> str:
    return hashlib.sha256("\x1f".join((row.payment_id, row.dedupe_key)).encode()).hexdigest()[:32]


class RunStore:
    """Plain DynamoDB calls on the reconciliation table (one partition per file)."""

    def __init__(self, settings: Settings | None = None, *, clock: Clock | None = None) -> None:
        self._settings = settings
        self.clock = clock or SystemClock()

    @property
    def settings(self) -> Settings:
        return self._settings or get_settings()

    @property
    def table(self) -> str:
        return get_models(self.settings).reconciliation.Meta.table_name

    @property
    def client(self) -> Any:
        return aws_client("dynamodb", self.settings)

    @staticmethod
    def _pk(file: SettlementFile) -> dict[str, Any]:
        return {"S": f"file#{file.file_id}"}

    def load(self, file: SettlementFile) -> dict[str, Any] | None:
        item = self.client.get_item(
            TableName=self.table, Key={"pk": self._pk(file), "sk": {"S": "run"}}, ConsistentRead=True
        ).get("Item")
        return json.loads(item["state"]["S"]) if item else None

    def acquire(self, file: SettlementFile, owner: str, lease: timedelta) -> dict[str, Any] | None:
        """Take the run's lease (create the run at the start if new); None if another live invocation holds it."""
        now = self.clock.now()
        initial = json.dumps(_initial_state(file, now))
        try:
            response = self.client.update_item(
                TableName=self.table,
                Key={"pk": self._pk(file), "sk": {"S": "run"}},
                UpdateExpression="SET lease_owner = :o, lease_until = :u, #s = if_not_exists(#s, :init)",
                ConditionExpression="attribute_not_exists(pk) OR lease_until < :now OR lease_owner = :o",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={
                    ":o": {"S": owner},
                    ":u": {"N": str(_ms(now + lease))},
                    ":now": {"N": str(_ms(now))},
                    ":init": {"S": initial},
                },  # fmt: skip
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == CONDITIONAL_CHECK_FAILED:
                return None
            raise
        return json.loads(response["Attributes"]["state"]["S"])

    def save(self, file: SettlementFile, owner: str, state: dict[str, Any], expected_line: int, lease: timedelta):
        """Write the checkpoint if we still hold the lease and nobody moved the run since ``expected_line``."""
        now = self.clock.now()
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"pk": self._pk(file), "sk": {"S": "run"}},
                UpdateExpression="SET #s = :s, lease_until = :u, next_line = :n",
                ConditionExpression="lease_owner = :o AND (attribute_not_exists(next_line) OR next_line = :e)",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={
                    ":s": {"S": json.dumps(state)},
                    ":u": {"N": str(_ms(now + lease))},
                    ":o": {"S": owner},
                    ":n": {"N": str(state["position"]["line"])},
                    ":e": {"N": str(expected_line)},
                },  # fmt: skip
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == CONDITIONAL_CHECK_FAILED:
                raise ReconciliationError(
                    f"{file.name}: lost the run's lease (another invocation took it over); stopping"
                ) from None
            raise

    def release(self, file: SettlementFile, owner: str) -> None:
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"pk": self._pk(file), "sk": {"S": "run"}},
                UpdateExpression="SET lease_until = :zero",
                ConditionExpression="lease_owner = :o",
                ExpressionAttributeValues={":zero": {"N": "0"}, ":o": {"S": owner}},
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != CONDITIONAL_CHECK_FAILED:
                raise

    def claim_row(self, file: SettlementFile, row: SettlementRow, outcome: Outcome) -> dict[str, Any] | None:
        """First sight of a foreign row: put its item; None if we put it, else the item already there."""
        item = {"pk": self._pk(file), "sk": {"S": f"row#{row_digest(row)}"}, "line": {"N": str(row.line)},
                "outcome": {"S": outcome.value}}  # fmt: skip
        try:
            self.client.put_item(
                TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(sk)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )  # fmt: skip
            return None
        except ClientError as error:
            if error.response["Error"]["Code"] != CONDITIONAL_CHECK_FAILED:
                raise
            old = error.response.get("Item") or self.client.get_item(
                TableName=self.table, Key={"pk": item["pk"], "sk": item["sk"]}, ConsistentRead=True
            ).get("Item")  # engines without ALL_OLD (dynalite) read it
        return _row_record(file, old)

    def row_item(self, file: SettlementFile, row: SettlementRow) -> dict[str, Any] | None:
        item = self.client.get_item(
            TableName=self.table, Key={"pk": self._pk(file), "sk": {"S": f"row#{row_digest(row)}"}},
            ConsistentRead=True,
        ).get("Item")  # fmt: skip
        return _row_record(file, item) if item is not None else None

    def _query(self, file: SettlementFile, prefix: str) -> Iterator[dict[str, Any]]:
        request = {
            "TableName": self.table, "KeyConditionExpression": "pk = :p AND begins_with(sk, :s)",
            "ExpressionAttributeValues": {":p": self._pk(file), ":s": {"S": prefix}}, "ConsistentRead": True,
        }  # fmt: skip
        while True:
            response = self.client.query(**request)
            yield from response["Items"]
            if "LastEvaluatedKey" not in response:
                return
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def row_digests(self, file: SettlementFile) -> Iterator[str]:
        return (item["sk"]["S"].removeprefix("row#") for item in self._query(file, "row#"))

    def merchants(self, file: SettlementFile) -> Iterator[str]:
        return (item["sk"]["S"].removeprefix("merchant#") for item in self._query(file, "merchant#"))

    def exceptions(self, file: SettlementFile) -> Iterator[dict[str, Any]]:
        for item in self._query(file, "exception#"):
            yield json.loads(item["row"]["S"])

    def put_items(self, file: SettlementFile, items: list[tuple[str, dict[str, Any]]]) -> None:
        """Idempotent record items (same key, same content): BatchWriteItem is fine here, unlike for payments."""
        requests = [{"PutRequest": {"Item": {"pk": self._pk(file), "sk": {"S": sk}, **attrs}}} for sk, attrs in items]
        for start in range(0, len(requests), 25):
            _batch_write(self.client, self.table, requests[start : start + 25])


def _row_record(file: SettlementFile, item: dict[str, Any]) -> dict[str, Any]:
    """A ``row#`` item as a mark (the shape ``_earlier`` reads)."""
    return {"file_id": file.file_id, "line": int(item["line"]["N"]), "outcome": item["outcome"]["S"]}


def _backoff(attempt: int) -> float:
    """Seconds before asking again for what a batch call left unprocessed."""
    return min(2.0, 0.05 * 2**attempt)


def _batch_write(client: Any, table: str, requests: list[dict], attempts: int = 8) -> None:
    for attempt in range(attempts):
        unprocessed = client.batch_write_item(RequestItems={table: requests}).get("UnprocessedItems", {})
        requests = unprocessed.get(table, [])
        if not requests:
            return
        time.sleep(_backoff(attempt))
    raise ReconciliationError(f"BatchWriteItem left {len(requests)} items unprocessed after {attempts} attempts")


def _ms(instant: datetime) -> int:
    return int(instant.timestamp() * 1000)


def _initial_state(file: SettlementFile, now: datetime) -> dict[str, Any]:
    return {
        "file_id": file.file_id, "name": file.name, "status": "running", "position": {"line": 1, "offset": 0},
        "rows": 0, "outcomes": {o.value: 0 for o in Outcome}, "amounts": {}, "latest_settled_at": None,
        "started_at": now.isoformat(), "seconds": 0.0, "invocations": 0, "summary": None, "report": None,
        "layout": None, "payouts": {},
    }  # fmt: skip
