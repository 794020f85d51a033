"""Settlement files dropped in S3 are reconciled (the brief's ReconciliationHandler): a thin adapter over
``payment_examples.reconciliation.reconciler``.

Contract: an S3 ``ObjectCreated`` event with one or more records (object keys URL-decoded: ``+`` is a space,
unicode percent-encoded). Before each batch of at most 500 rows the handler checks
``context.get_remaining_time_in_millis()``; below ``PAYMENT_RECON_SAFETY_MS`` (default 10000) it leaves the
checkpoint where it is and returns ``"complete": false`` for that file. Returns::

    {"files": [{"bucket", "key", "etag", "complete", "rows", "outcomes": {every outcome: count},
                "missing_in_file", "report": {"summary": "s3://...", "exceptions": "s3://..."} or null}]}

A missing object or a bad file is an ``"error"`` for that record; the other records still run. Any other failure
of one record (throttling that outlasted the retries, a lost connection, an unexpected error) is an ``"error"``
with ``"retryable": true``, and that record is continued like an unfinished one.

Finishing without a person: when a file is left incomplete because time ran out, the handler re-invokes its own
function asynchronously (``InvocationType=Event``) with an event of just the unfinished records, so a file of any
size completes by itself, one invocation after another, each resuming from the checkpoint. A continuation counter
in the event (``payment_examples_continuation``) stops a loop that makes no progress. If the re-invocation fails
(no such function, throttled, the permission missing), the handler still returns its summary: the failure is
logged and named in each unfinished entry (``"continuation": {"error": ..., "resumable": true}``), and the
follow-up event is parked on ``PAYMENT_RECON_FAILURE_QUEUE_URL`` (the function's failure queue, where Lambda's
failed asynchronous invocations go too): a re-drive of that message continues the file from its checkpoint. If
it cannot be parked either, the handler raises after logging the summary, so Lambda retries the invocation
(which resumes from the checkpoint). Without a queue (locally) the entry says so and the same event, delivered
again, continues the file.

Which engine: a file larger than ``PAYMENT_RECON_DISTRIBUTED_BYTES`` (default 64 MiB), when
``PAYMENT_RECON_STATE_MACHINE_ARN`` is set, is handed to the Step Functions state machine (Distributed Map over
the file's ranges, ``handlers/settlement_map.py``): the entry says ``"distributed": {"execution": arn}`` and the
reports appear when the execution's merge step finishes. The execution is named after the file (its bucket, key
and ETag), so a repeated event starts nothing twice; if that execution failed, timed out or was aborted, a
repeated event starts the next attempt (``<file id>-2``, ...). A state machine that does not exist or may not be
started is a final error for the record.

The file's layout is detected from its first record (canonical, Stripe, Adyen, PayPal); its merchant, for layouts
whose rows may not name one, is the first folder of the key under ``PAYMENT_RECON_SETTLEMENT_PREFIX``
(``settlements/<merchant>/<file>``).

A record whose run is leased by another invocation (S3 delivered the event twice, or Lambda retried a function
that was killed mid-batch) waits, while time allows and for at most one lease period, for the lease to be released
or to run out, then takes the run over. If the lease keeps being renewed, its owner is alive and will finish: the
record comes back ``"busy": true`` and is not continued.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes import S3Event
from botocore.exceptions import ClientError

from payment_examples.core import PaymentExamplesError, Settings, client, get_settings, logger
from payment_examples.reconciliation import SettlementFileError
from payment_examples.reconciliation.reconciler import Outcome, Reconciler, S3ReportSink, S3Source, run_reconciliation

CONTINUATION = "payment_examples_continuation"
MAX_CONTINUATIONS = 1000

Continue = Callable[[dict, Any], None]
BUSY_POLL_S = 5.0
# What is final for a record: retrying the same event cannot help.
S3_ERRORS = {
    "NoSuchKey": "object not found",
    "404": "object not found",
    "NoSuchBucket": "bucket not found",
    "PreconditionFailed": "the object changed since the event (ETag differs)",
    "AccessDenied": "access denied",
    # starting the state machine
    "StateMachineDoesNotExist": "the state machine does not exist",
    "StateMachineDeleting": "the state machine is being deleted",
    "InvalidArn": "PAYMENT_RECON_STATE_MACHINE_ARN is not a state machine ARN",
    "AccessDeniedException": "access denied",
}
ATTEMPTS = 10  # executions of one file: the first, then one per failed, timed-out or aborted one
_FINISHED_BADLY = {"FAILED", "TIMED_OUT", "ABORTED"}


def invoke_self(event: dict, context: Any) -> None:
    """Re-invoke this function asynchronously with ``event`` (deployed: needs lambda:InvokeFunction on itself)."""
    client("lambda").invoke(
        FunctionName=context.invoked_function_arn, InvocationType="Event", Payload=json.dumps(event).encode()
    )


def _records(event: dict) -> list[tuple[str, str, str | None, int | None]]:
    records = []
    for record in S3Event(event).records:
        obj = record.s3.get_object
        size = obj.get("size") if isinstance(obj.get("size"), int) else None
        records.append((record.s3.bucket.name, unquote_plus(obj.key), obj.etag or None, size))
    return records


def file_merchant(key: str, settlement_prefix: str) -> str | None:
    """The merchant a key names: ``<prefix><merchant>/<name>`` -> merchant; a key directly under the prefix (or
    outside it) names none."""
    if not key.startswith(settlement_prefix):
        return None
    folder, slash, _ = key[len(settlement_prefix) :].partition("/")
    return folder if slash and folder else None


def make_handler(
    reconciler_factory: Callable[[], Reconciler] | None = None,
    *,
    continue_with: Continue | None = None,
    settings: Settings | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Callable[[dict, Any], dict]:
    """A handler with injected dependencies (tests inject a continuation recorder and a reconciler)."""

    def handler(event: dict, context: Any) -> dict:
        config = settings or get_settings()
        if not isinstance(event, dict) or not isinstance(event.get("Records"), list) or not event["Records"]:
            raise ValueError("not an S3 event: expected a non-empty 'Records' list")
        should_continue = lambda: context.get_remaining_time_in_millis() > config.recon_safety_ms  # noqa: E731
        files, unfinished = [], []
        for raw_record, (bucket, key, etag, size) in zip(event["Records"], _records(event), strict=True):
            entry = _reconcile_one(bucket, key, etag, size, config, reconciler_factory, should_continue, sleep)
            files.append(entry)
            if (not entry["complete"] and not entry.get("busy") and "distributed" not in entry
                    and (not entry.get("error") or entry.get("retryable"))):  # fmt: skip
                unfinished.append((raw_record, entry))
        if unfinished:
            _continue(event, unfinished, context, continue_with, config)
        return {"files": files}

    return handler


def _reconcile_one(bucket, key, etag, size, config, reconciler_factory, should_continue, sleep) -> dict[str, Any]:
    outcomes = {o.value: 0 for o in Outcome}
    entry: dict[str, Any] = {"bucket": bucket, "key": key, "etag": etag, "complete": False, "rows": 0,
                             "outcomes": outcomes, "missing_in_file": 0, "report": None}  # fmt: skip
    s3 = client("s3", config)
    try:
        if etag is None or size is None:
            head = s3.head_object(Bucket=bucket, Key=key)
            etag, size = etag or head["ETag"].strip('"'), head["ContentLength"]
            entry["etag"] = etag
        merchant = file_merchant(key, config.recon_settlement_prefix)
        source = S3Source(bucket, key, etag, client=s3, merchant=merchant)
        if config.recon_state_machine_arn and size > config.recon_distributed_bytes:
            return entry | {"distributed": start_distributed(source, config)}
        sink = S3ReportSink(bucket, config.recon_report_prefix, client=s3)
        reconciler = reconciler_factory() if reconciler_factory else Reconciler(settings=config)
        waited = 0.0
        while True:
            result = run_reconciliation(
                source, sink, reconciler=reconciler, should_continue=should_continue, report_name=f"{key}/{etag}"
            )
            if not result.busy or waited > reconciler.lease.total_seconds() or not should_continue():
                break
            sleep(BUSY_POLL_S)  # the owner may have died mid-batch: its lease runs out, then we take over
            waited += BUSY_POLL_S
    except ClientError as error:
        code = error.response["Error"]["Code"]
        final = code in S3_ERRORS  # S3's, and the state machine's that a retry cannot mend
        logger.warning("settlement file not reconciled", bucket=bucket, key=key, error=code, retryable=not final)
        return entry | {"error": S3_ERRORS.get(code, code)} | ({} if final else {"retryable": True})
    except (SettlementFileError, ExecutionsExhaustedError) as error:
        logger.warning("settlement file refused", bucket=bucket, key=key, error=str(error))
        return entry | {"error": str(error)}
    except PaymentExamplesError as error:
        logger.warning("settlement file not reconciled", bucket=bucket, key=key, error=str(error))
        return entry | {"error": str(error), "retryable": True}
    except Exception as error:  # one record's failure must not lose the others; the next invocation resumes
        logger.exception("settlement file not reconciled", bucket=bucket, key=key)
        return entry | {"error": f"{type(error).__name__}: {error}"[:500], "retryable": True}
    entry.update(complete=result.complete, rows=result.rows, outcomes=result.outcomes,
                 missing_in_file=result.missing_in_file, report=result.report)  # fmt: skip
    if result.busy:
        entry["busy"] = True
    return entry


class ExecutionsExhaustedError(PaymentExamplesError):
    """Every attempt of the file's execution ended badly: final for the record (a person looks at the executions)."""


def start_distributed(source: S3Source, config: Settings) -> dict[str, Any]:
    """Start the state machine for ``source``, named after the file: a repeat finds the execution running or
    succeeded and starts nothing; after one that failed, timed out or was aborted it starts the next attempt."""
    machine = config.recon_state_machine_arn
    payload = json.dumps({"bucket": source.bucket, "key": source.key, "etag": source.etag, "merchant": source.merchant})
    sfn = client("stepfunctions", config)
    for attempt in range(1, ATTEMPTS + 1):
        name = source.file.file_id + (f"-{attempt}" if attempt > 1 else "")  # a UUID: within Step Functions' 80
        arn = f"{machine.replace(':stateMachine:', ':execution:')}:{name}"
        try:
            arn = sfn.start_execution(stateMachineArn=machine, name=name, input=payload)["executionArn"]
        except ClientError as error:
            if error.response["Error"]["Code"] != "ExecutionAlreadyExists":
                raise
            status = sfn.describe_execution(executionArn=arn)["status"]
            if status in _FINISHED_BADLY:
                logger.warning("the file's execution ended badly; starting the next", execution=arn, status=status)
                continue
        logger.info("settlement file handed to the state machine", key=source.key, execution=arn)
        return {"execution": arn, "attempt": attempt}
    raise ExecutionsExhaustedError(f"{ATTEMPTS} executions of the state machine ended badly; giving up")


def _continue(
    event: dict, unfinished: list[tuple[dict, dict]], context: Any, continue_with: Continue | None, config: Settings
) -> None:
    count = int(event.get(CONTINUATION, 0)) + 1
    entries = [entry for _, entry in unfinished]
    follow_up = {"Records": [record for record, _ in unfinished], CONTINUATION: count}
    if count > MAX_CONTINUATIONS:
        reason = f"{MAX_CONTINUATIONS} continuations made no progress"
        logger.error("reconciliation continuations exhausted", continuations=count - 1, files=entries)
        parked = _park({**follow_up, CONTINUATION: 0}, reason, config)  # a re-drive starts a fresh budget
        for entry in entries:
            entry["continuation"] = {"error": reason, "resumable": True, "parked": parked}
        return
    try:
        if continue_with is not None:
            continue_with(follow_up, context)
        elif getattr(context, "invoked_function_arn", None):
            invoke_self(follow_up, context)
        else:
            logger.warning("reconciliation incomplete and no way to continue it", files=len(unfinished))
            return
    except Exception as error:  # the summary must not be lost with it: the checkpoint keeps the file resumable
        reason = _describe(error)
        # The summary goes to the log: if parking fails too, the invocation fails and this is where it is kept.
        logger.error("reconciliation continuation failed; the file stays resumable from its checkpoint",
                     error=reason, files=entries)  # fmt: skip
        parked = _park(follow_up, reason, config)
        for entry in entries:
            entry["continuation"] = {"error": reason, "resumable": True, "parked": parked}
        return
    for entry in entries:
        entry["continuation"] = {"invoked": count}


def _park(follow_up: dict, reason: str, config: Settings) -> str | None:
    """Put the follow-up event on the failure queue (its re-drive continues the file); None without a queue. If it
    cannot be parked, raise: Lambda then retries the invocation, which resumes from the checkpoint."""
    if not config.recon_failure_queue_url:
        logger.warning("no PAYMENT_RECON_FAILURE_QUEUE_URL: deliver the same event again to continue the file")
        return None
    body = json.dumps({"requestPayload": follow_up, "responsePayload": {"errorMessage": reason}})
    client("sqs", config).send_message(QueueUrl=config.recon_failure_queue_url, MessageBody=body)
    return config.recon_failure_queue_url


def _describe(error: Exception) -> str:
    if isinstance(error, ClientError):
        detail = error.response.get("Error", {})
        return f"{detail.get('Code', 'ClientError')}: {detail.get('Message', '')}"[:500]
    return f"{type(error).__name__}: {error}"[:500]


@lru_cache(maxsize=1)
def _default() -> Callable[[dict, Any], dict]:
    return make_handler()


def handler(event: dict, context: Any) -> dict:
    """The Lambda entry point (``template.yaml``)."""
    return _default()(event, context)
