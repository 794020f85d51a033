"""The three Lambda steps of the reconciliation state machine (``template.yaml`` ``ReconcileStateMachine``): thin
adapters over ``payment_examples.reconciliation.distributed``. The reconcile handler starts an execution for a
file above ``PAYMENT_RECON_DISTRIBUTED_BYTES`` with ``{"bucket", "key", "etag", "merchant"}``.

* ``plan_handler``: that input -> the same, plus ``ranges`` (how many), ``rows``, ``ranges_key`` and
  ``deferred_key`` (the JSON objects the plan wrote under the report prefix: the Map's ``ItemReader`` reads the
  ranges; every batch reads the deferred ids).
* ``batch_handler``: one ``ItemBatcher`` batch, ``{"Items": [range, ...], "BatchInput": {bucket, key, etag,
  merchant, deferred_key}}`` -> ``{"partial": <name under the report prefix>}``.
* ``merge_handler``: the plan's output plus ``"results": <the Map's ResultWriterDetails {Bucket, Key}>`` -> the
  summary (the reports' S3 URIs, counts): it reads the ``manifest.json`` the Map wrote, takes the partials of the
  SUCCEEDED result files, and finishes the run (a range without a partial fails the execution; nothing is
  finished).

A file's reports go where a single run's do: ``<report prefix><key>/<etag>/``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from payment_examples.core import Settings, client, get_settings, logger
from payment_examples.reconciliation.distributed import Range, merge, plan, reconcile_ranges
from payment_examples.reconciliation.reconciler import Reconciler, S3ReportSink, S3Source

_FILE_FIELDS = ("bucket", "key", "etag")


def _file(event: dict[str, Any], config: Settings) -> tuple[S3Source, S3ReportSink, str]:
    if not isinstance(event, dict) or any(not isinstance(event.get(name), str) or not event[name]
                                          for name in _FILE_FIELDS):  # fmt: skip
        raise ValueError(f"expected {{{', '.join(_FILE_FIELDS)}}} naming the settlement object, got {event!r:.200}")
    s3 = client("s3", config)
    merchant = event.get("merchant") or None
    source = S3Source(event["bucket"], event["key"], event["etag"], client=s3, merchant=merchant)
    sink = S3ReportSink(event["bucket"], config.recon_report_prefix, client=s3)
    return source, sink, f"{source.key}/{source.etag}"


def plan_handler(event: dict[str, Any], context: Any, *, settings: Settings | None = None) -> dict[str, Any]:
    config = settings or get_settings()
    source, sink, base = _file(event, config)
    planned = plan(source, sink, rows_per_range=config.recon_rows_per_range, base=base)
    prefix = config.recon_report_prefix
    return {"bucket": source.bucket, "key": source.key, "etag": source.etag, "merchant": source.merchant,
            "ranges": len(planned.ranges), "rows": planned.rows, "ranges_key": prefix + planned.ranges_name,
            "deferred_key": prefix + planned.deferred_name}  # fmt: skip


@lru_cache(maxsize=4)
def _deferred(bucket: str, key: str, s3: Any) -> frozenset[str]:
    """The deferred ids, read once per warm container and plan."""
    return frozenset(json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))


def batch_handler(
    event: dict[str, Any], context: Any, *, settings: Settings | None = None, reconciler: Reconciler | None = None
) -> dict[str, Any]:
    config = settings or get_settings()
    if not isinstance(event, dict) or not isinstance(event.get("Items"), list) or not event["Items"]:
        raise ValueError("not a Map batch: expected a non-empty 'Items' list and a 'BatchInput'")
    given = event.get("BatchInput") or {}
    source, sink, base = _file(given, config)
    deferred = (
        _deferred(source.bucket, given["deferred_key"], source.client) if given.get("deferred_key") else frozenset()
    )
    ranges = [Range.from_json(item) for item in event["Items"]]
    name = reconcile_ranges(source, sink, ranges, deferred, reconciler=reconciler or Reconciler(settings=config),
                            base=base)  # fmt: skip
    return {"partial": name}


def partial_names(s3: Any, results: dict[str, Any]) -> list[str]:
    """The partials the Map's SUCCEEDED children returned, from its ResultWriter ``manifest.json``."""
    manifest = json.loads(s3.get_object(Bucket=results["Bucket"], Key=results["Key"])["Body"].read())
    names = []
    for result_file in manifest.get("ResultFiles", {}).get("SUCCEEDED", []):
        body = s3.get_object(Bucket=manifest.get("DestinationBucket", results["Bucket"]), Key=result_file["Key"])
        for child in json.loads(body["Body"].read()):
            names.append(json.loads(child["Output"])["partial"])
    return names


def merge_handler(
    event: dict[str, Any], context: Any, *, settings: Settings | None = None, reconciler: Reconciler | None = None
) -> dict[str, Any]:
    config = settings or get_settings()
    source, sink, base = _file(event, config)
    results = event.get("results")
    if not isinstance(results, dict) or not results.get("Bucket") or not results.get("Key"):
        raise ValueError("expected 'results': the Map's ResultWriterDetails {Bucket, Key}")
    if not isinstance(event.get("ranges"), int) or event["ranges"] < 0:
        raise ValueError("expected 'ranges': how many ranges the plan cut (0 for a file of no rows)")
    names = partial_names(source.client, results)
    result = merge(source, sink, names, reconciler=reconciler or Reconciler(settings=config),
                   expected_ranges=event["ranges"], report_name=base)  # fmt: skip
    logger.info("distributed reconciliation finished", key=source.key, rows=result.rows)
    return {"bucket": source.bucket, "key": source.key, "etag": source.etag, "complete": result.complete,
            "rows": result.rows, "outcomes": result.outcomes, "missing_in_file": result.missing_in_file,
            "report": result.report,
            "payout_discrepancies": len((result.summary or {}).get("payout_discrepancies", []))}  # fmt: skip
