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
in the event (``payment_examples_continuation``) stops a loop that makes no progress.

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
}


def invoke_self(event: dict, context: Any) -> None:
    """Re-invoke this function asynchronously with ``event`` (deployed: needs lambda:InvokeFunction on itself)."""
    client("lambda").invoke(
        FunctionName=context.invoked_function_arn, InvocationType="Event", Payload=json.dumps(event).encode()
    )


def _records(event: dict) -> list[tuple[str, str, str | None]]:
    records = []
    for record in S3Event(event).records:
        obj = record.s3.get_object
        records.append((record.s3.bucket.name, unquote_plus(obj.key), obj.etag or None))
    return records


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
        for raw_record, (bucket, key, etag) in zip(event["Records"], _records(event), strict=True):
            entry = _reconcile_one(bucket, key, etag, config, reconciler_factory, should_continue, sleep)
            files.append(entry)
            if not entry["complete"] and not entry.get("busy") and (not entry.get("error") or entry.get("retryable")):
                unfinished.append(raw_record)
        if unfinished:
            _continue(event, unfinished, context, continue_with)
        return {"files": files}

    return handler


def _reconcile_one(bucket, key, etag, config, reconciler_factory, should_continue, sleep) -> dict[str, Any]:
    outcomes = {o.value: 0 for o in Outcome}
    entry: dict[str, Any] = {"bucket": bucket, "key": key, "etag": etag, "complete": False, "rows": 0,
                             "outcomes": outcomes, "missing_in_file": 0, "report": None}  # fmt: skip
    s3 = client("s3", config)
    try:
        if etag is None:
            etag = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
            entry["etag"] = etag
        source = S3Source(bucket, key, etag, client=s3)
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
        final = code in S3_ERRORS
        logger.warning("settlement file not reconciled", bucket=bucket, key=key, error=code, retryable=not final)
        return entry | {"error": S3_ERRORS.get(code, code)} | ({} if final else {"retryable": True})
    except SettlementFileError as error:
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


def _continue(event: dict, unfinished: list[dict], context: Any, continue_with: Continue | None) -> None:
    count = int(event.get(CONTINUATION, 0)) + 1
    if count > MAX_CONTINUATIONS:
        logger.error("reconciliation continuations exhausted", continuations=count - 1)
        return
    follow_up = {"Records": unfinished, CONTINUATION: count}
    if continue_with is not None:
        continue_with(follow_up, context)
    elif getattr(context, "invoked_function_arn", None):
        invoke_self(follow_up, context)
    else:
        logger.warning("reconciliation incomplete and no way to continue it", files=len(unfinished))


@lru_cache(maxsize=1)
def _default() -> Callable[[dict, Any], dict]:
    return make_handler()


def handler(event: dict, context: Any) -> dict:
    """The Lambda entry point (``template.yaml``)."""
    return _default()(event, context)
