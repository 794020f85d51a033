"""A table's DynamoDB stream, read here and delivered to a stream handler as Lambda's event source mapping does.

In AWS the consumer is a Lambda function with a DynamoDB Streams event source (``template.yaml``): Lambda reads
each shard in order, invokes the function with batches of records, and on a failure retries from the failed
record (``ReportBatchItemFailures``), halves the batch on a function error (``BisectBatchOnFunctionError``), gives
up after ``MaximumRetryAttempts`` or ``MaximumRecordAgeInSeconds`` and sends what it gave up on to the on-failure
destination. ``StreamPoller`` does the same against any endpoint with streams (the moto server, moto in-process,
AWS), with the same handler and the same event shape, so tests and notebooks run the code that is deployed:

* ``drain()`` delivers everything written so far and returns when the stream is caught up (tests, notebooks);
* ``start()`` / ``stop()`` run it on a background thread (``payment-examples local``).

Position is kept per shard in memory: a new poller starts at the oldest record still in the stream
(``TRIM_HORIZON``), which is safe because the consumer is idempotent per (entity, version).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from payment_examples.core import Settings, aws, get_settings, logger

StreamHandler = Callable[[dict, Any], dict | None]
FailureDestination = Callable[[dict], None]


@dataclass(frozen=True)
class EventSourceConfig:
    """The event source mapping's settings (the same names and defaults as ``template.yaml``'s)."""

    batch_size: int = 100
    maximum_retry_attempts: int = 3
    bisect_batch_on_function_error: bool = True
    maximum_record_age: timedelta = timedelta(hours=6)
    report_batch_item_failures: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 10_000:
            raise ValueError("batch_size must be between 1 and 10000")
        if not 0 <= self.maximum_retry_attempts <= 10_000:
            raise ValueError("maximum_retry_attempts must be between 0 and 10000")
        if self.maximum_record_age <= timedelta(0):
            raise ValueError("maximum_record_age must be positive")


@dataclass
class DeliveryStats:
    """What a poller has done so far."""

    records: int = 0  # records handed to the handler for the first time
    invocations: int = 0
    retries: int = 0  # invocations that repeated records (after a failure, or a half of a bisected batch)
    failed: int = 0  # records given up on (sent to the on-failure destination)
    lag_ms: list[float] = field(default_factory=list)  # per record: delivered - written (ApproximateCreationDateTime)


class _LambdaContext:
    """What a handler reads of Lambda's context object."""

    function_name = "payment-examples-stream-consumer"
    memory_limit_in_mb = 512

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def stream_arn(table_name: str, settings: Settings | None = None) -> str:
    """The table's latest stream ARN (``ValueError`` if the table has no stream)."""
    description = aws.dynamodb(settings).describe_table(TableName=table_name)["Table"]
    arn = description.get("LatestStreamArn")
    if not arn or not description.get("StreamSpecification", {}).get("StreamEnabled", True):
        raise ValueError(f"table {table_name} has no stream")
    return arn


class StreamPoller:
    """Deliver a table's stream records to ``handler`` (a Lambda stream handler: ``handler(event, context)``
    returning ``{"batchItemFailures": [...]}``) in order, per shard. ``on_failure`` receives what was given up on
    (the records and why), as the on-failure destination would; by default it is logged as an error."""

    def __init__(
        self,
        table_name: str,
        handler: StreamHandler,
        *,
        settings: Settings | None = None,
        config: EventSourceConfig | None = None,
        on_failure: FailureDestination | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.table_name = table_name
        self.handler = handler
        self.settings = settings or get_settings()
        self.config = config or EventSourceConfig()
        self.on_failure = on_failure or _log_failure
        self.stats = DeliveryStats()
        self.reads = 0  # GetRecords calls (each one read request unit of DynamoDB Streams)
        self._now = now
        self._arn: str | None = None
        self._iterators: dict[str, str | None] = {}  # shard id -> next iterator (None: the shard is closed)
        self._lock = threading.Lock()  # one delivery at a time (drain from a test beside the background thread)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def arn(self) -> str:
        if self._arn is None:
            self._arn = stream_arn(self.table_name, self.settings)
        return self._arn

    # -- reading -----------------------------------------------------------------------------------------------

    def _follow_table(self) -> None:
        """Start over on the table's current stream if it is a new one (the table was created again)."""
        with self._lock:
            arn = stream_arn(self.table_name, self.settings)
            if arn != self._arn:
                self._arn, self._iterators = arn, {}

    def _streams(self) -> Any:
        return aws.client("dynamodbstreams", self.settings)

    def _refresh_shards(self) -> None:
        shards = self._streams().describe_stream(StreamArn=self.arn)["StreamDescription"]["Shards"]
        for shard in shards:  # listed parents first; a new shard starts at its oldest record
            shard_id = shard["ShardId"]
            if shard_id not in self._iterators:
                self._iterators[shard_id] = self._streams().get_shard_iterator(
                    StreamArn=self.arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]

    def poll(self) -> int:
        """One round: read each shard once and deliver what it held. Returns the number of records read."""
        with self._lock:
            self._refresh_shards()
            read = 0
            for shard_id, iterator in list(self._iterators.items()):
                if iterator is None:
                    continue
                response = self._streams().get_records(ShardIterator=iterator, Limit=self.config.batch_size)
                self.reads += 1
                self._iterators[shard_id] = response.get("NextShardIterator")
                records = response["Records"]
                read += len(records)
                if records:
                    self._deliver([self._lambda_record(r) for r in records])
            return read

    def drain(self, *, max_rounds: int = 100_000) -> DeliveryStats:
        """Deliver until a round finds nothing new (every record written before the call has been delivered)."""
        self._follow_table()
        for _ in range(max_rounds):
            if self.poll() == 0:
                return self.stats
        raise RuntimeError(f"the stream of {self.table_name} was not caught up after {max_rounds} rounds")

    def _lambda_record(self, record: dict) -> dict:
        """A record as Lambda delivers it: the event source's ARN added, the creation time as epoch seconds."""
        record = dict(record)
        record["eventSourceARN"] = self.arn
        dynamodb = dict(record["dynamodb"])
        created = dynamodb.get("ApproximateCreationDateTime")
        if isinstance(created, datetime):
            dynamodb["ApproximateCreationDateTime"] = created.timestamp()
        record["dynamodb"] = dynamodb
        return record

    # -- delivering --------------------------------------------------------------------------------------------

    def _deliver(self, records: list[dict]) -> None:
        """Invoke the handler with ``records`` until each has succeeded or been given up on, in order."""
        self.stats.records += len(records)
        queue: list[tuple[list[dict], int]] = [(records, 0)]  # (batch, failed attempts so far)
        first = True
        while queue:
            batch, attempts = queue.pop(0)
            if not first:
                self.stats.retries += 1
            first = False
            failed_at, error = self._invoke(batch)
            if failed_at is None:
                continue
            rest = batch[failed_at:]
            if self._too_old(rest[0]):
                self._give_up(rest, "MaximumRecordAgeInSeconds", error)
            elif error is not None and self.config.bisect_batch_on_function_error and len(rest) > 1:
                half = len(rest) // 2  # halves do not count as retries: the failing record is narrowed down
                queue[:0] = [(rest[:half], attempts), (rest[half:], attempts)]
            elif attempts >= self.config.maximum_retry_attempts:
                self._give_up(rest, "MaximumRetryAttempts", error)
            else:
                queue.insert(0, (rest, attempts + 1))

    def _invoke(self, batch: list[dict]) -> tuple[int | None, str | None]:
        """Call the handler once. Returns (index of the first record to retry, the function error) or (None, None)."""
        self.stats.invocations += 1
        try:
            response = self.handler({"Records": batch}, _LambdaContext())
        except Exception as error:  # a function error: the whole batch is retried (or bisected)
            logger.warning("stream handler failed", table=self.table_name, records=len(batch),
                           error_type=type(error).__name__)  # fmt: skip
            return 0, f"{type(error).__name__}: {error}"
        now = self._now().timestamp()
        failures = (response or {}).get("batchItemFailures") or [] if self.config.report_batch_item_failures else []
        failed = {f.get("itemIdentifier") for f in failures}
        for index, record in enumerate(batch):
            if record["dynamodb"]["SequenceNumber"] in failed:
                self._record_lag(batch[:index], now)
                return index, None
        self._record_lag(batch, now)
        return None, None

    def _record_lag(self, delivered: list[dict], now: float) -> None:
        for record in delivered:
            created = record["dynamodb"].get("ApproximateCreationDateTime")
            if created is not None:
                self.stats.lag_ms.append(max(0.0, (now - float(created)) * 1000))

    def _too_old(self, record: dict) -> bool:
        created = record["dynamodb"].get("ApproximateCreationDateTime")
        if created is None:
            return False
        return self._now().timestamp() - float(created) > self.config.maximum_record_age.total_seconds()

    def _give_up(self, records: list[dict], reason: str, error: str | None) -> None:
        self.stats.failed += len(records)
        self.on_failure({
            "reason": reason, "error": error, "table": self.table_name, "stream_arn": self.arn,
            "first_sequence_number": records[0]["dynamodb"]["SequenceNumber"],
            "last_sequence_number": records[-1]["dynamodb"]["SequenceNumber"],
            "records": records,
        })  # fmt: skip

    # -- in the background -------------------------------------------------------------------------------------

    def start(self, *, interval: float = 0.2) -> None:
        """Poll on a daemon thread until ``stop()`` (what ``payment-examples local`` runs)."""
        if self._thread is not None:
            raise RuntimeError("this poller is already running")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True, name="stream-poller")
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join()
        self._thread = None

    def _run(self, interval: float) -> None:
        while not self._stopping.is_set():
            try:
                if self.poll() == 0:
                    self._stopping.wait(interval)
            except Exception as error:  # the engine went away, a network blip: log, wait, go on
                logger.warning("stream poll failed", table=self.table_name, error_type=type(error).__name__)
                self._stopping.wait(max(interval, 1.0))


def _log_failure(failure: dict) -> None:
    logger.error("stream records given up on", reason=failure["reason"], table=failure["table"],
                 first_sequence_number=failure["first_sequence_number"],
                 last_sequence_number=failure["last_sequence_number"], records=len(failure["records"]),
                 error=failure["error"])  # fmt: skip
