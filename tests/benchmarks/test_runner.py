"""The benchmark runner itself works (tiny sample counts; the timings are not checked, only the report)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks import run

pytestmark = pytest.mark.slow  # engine processes, threads, subprocesses: make test runs it, make test-fast does not


def test_runner_measures_every_case_on_both_engines_and_writes_the_report(tmp_path: Path) -> None:
    args = ["--samples", "3", "--payments", "70", "--batch-samples", "3", "--batch-size", "40", "--recon-rows", "60"]
    args += ["--customer-samples", "3", "--kms-creates", "20", "--uncached-kms-creates", "5"]
    args += [
        "--verify-samples",
        "2",
        "--verify-entries",
        "120",
        "--recovery-payments",
        "130",
        "--recovery-samples",
        "2",
    ]
    args += ["--cold-samples", "1", "--no-artifact"]
    assert run.main([*args, "--output", str(tmp_path)]) == 0

    report = json.loads((tmp_path / "results.json").read_text())
    cases = {(r["engine"], r["case"]) for r in report["results"]}
    assert {engine for engine, _ in cases} == {"moto", "dynalite"}
    assert len(cases) == len(report["results"])  # every (engine, case) once
    for row in report["results"]:
        # on moto the batch is timed at most MOTO_BATCH_SAMPLES times (its Query sorts the growing audit table)
        capped = row["engine"] == "moto" and row["case"] == "batch of 40 payments"
        recovery = row["case"].startswith("recovery sweep of 130 payments")
        assert row["samples"] == (min(3, run.MOTO_BATCH_SAMPLES) if capped else 2 if recovery else 3)
        assert row["p50_ms"] > 0 and row["raw_p50_ms"] > 0 and row["ratio_p50"] > 0
        assert row["p99_ms"] >= row["p95_ms"] >= row["p50_ms"] and row["raw_p99_ms"] >= row["raw_p95_ms"]
        # ratios and verdicts come from the measurements (the rows' values are rounded to 0.01 ms)
        assert row["ratio_p50"] == pytest.approx(row["p50_ms"] / row["raw_p50_ms"], abs=0.02)
        assert row["ratio_p95"] == pytest.approx(row["p95_ms"] / row["raw_p95_ms"], abs=0.02)
        worst = max(row["ratio_p50"], row["ratio_p95"])
        if abs(worst - run.OVERHEAD_LIMIT) > 0.02:
            assert ("overhead within" in row["verdict"]) == (worst <= run.OVERHEAD_LIMIT), row
        if row["target_p95_ms"] is not None:
            assert ("target met" in row["verdict"]) == row["meets_target"] == (row["p95_ms"] < row["target_p95_ms"])
        else:
            assert "target" not in row["verdict"]
        # the raw baseline makes the same AWS calls as ours (both counted)
        assert row["calls_counted"] == row["raw_calls_counted"] != "none", row
    for engine in ("moto", "dynalite"):
        targets = {r["case"] for r in report["results"] if r["engine"] == engine and r["target_p95_ms"]}
        assert len(targets) == 3  # creation, idempotency check, the page (the batch of 40 is not the target's)
    assert report["environment"]["versions"]["dynalite"]
    throughput = {t["engine"]: t for t in report["throughput"]}
    assert set(throughput) == {"moto", "dynalite"}
    for engine, t in throughput.items():
        assert t["rows"] == 60 and t["rows_per_s"] > 0 and t["raw_rows_per_s"] > 0
        assert sum(t["outcomes"].values()) == 60
        assert t["ratio"] == pytest.approx(t["raw_rows_per_s"] / t["rows_per_s"], rel=0.02)
        # the time per call ratio divides that by the ratio of the calls counted
        assert t["calls"] > t["raw_calls_total"] > 0
        assert t["per_call_ratio"] == pytest.approx(t["ratio"] * t["raw_calls_total"] / t["calls"], rel=0.02)
        # the applied rows' projections, timed apart, where the engine has a stream (moto), and said where not
        projection = t["projection"]
        if engine == "moto":
            assert projection["records"] > 0 and projection["records_per_s"] > 0
            assert "GetRecords" in projection["calls_counted"] and "PutItem" in projection["calls_counted"]
        else:
            assert projection is None

    # the customer cases (field encryption) run wherever the engine has a KMS key, and are skipped elsewhere, said so
    customer_cases = {run.CUSTOMER_CREATE, run.CUSTOMER_GET}
    encrypted = {e["engine"] for e in report["encryption"]}
    assert "moto" in encrypted
    for engine in ("moto", "dynalite"):
        skipped = {(s["engine"], s["case"]) for s in report["skipped"] if s["reason"] == run.NO_KMS}
        expected = {(engine, name) for name in customer_cases}
        assert (expected <= cases) == (engine in encrypted) == (not expected & skipped)
    for encryption in report["encryption"]:
        by_case = {r["case"]: r for r in report["results"] if r["engine"] == encryption["engine"]}
        for prefix, name in (("create", run.CUSTOMER_CREATE), ("get", run.CUSTOMER_GET)):
            row = by_case[name]
            # the overhead is computed before the rows' p50s are rounded to 0.01 ms: equal within that rounding
            assert encryption[f"{prefix}_overhead_p50_ms"] == pytest.approx(row["p50_ms"] - row["raw_p50_ms"],
                                                                            abs=0.011)  # fmt: skip
            assert encryption[f"{prefix}_ratio_p50"] == row["ratio_p50"]
        # the data-key cache: one GenerateDataKey for the 20 creates (50 per 1,000 once scaled); without, one each
        assert encryption["kms_creates"] == 20 and encryption["kms_calls"] == {"GenerateDataKey": 1}
        assert encryption["kms_calls_per_1000_creates"] == 50
        assert encryption["uncached_kms_creates"] == 5 and encryption["uncached_kms_calls"] == {"GenerateDataKey": 5}
        assert encryption["uncached_kms_calls_per_1000_creates"] == 1000
        assert encryption["kms_create_p50_ms"] > 0 and encryption["uncached_kms_create_p50_ms"] > 0

    # cold starts: one row per handler and engine (reconcile wherever the engine has S3), ours next to bare boto3
    cold = {(c["engine"], c["handler"]): c for c in report["cold_starts"]}
    no_s3 = {s["engine"] for s in report["skipped"] if s["case"] == "cold start: reconcile handler"}
    for engine in ("moto", "dynalite"):
        handlers = {"process", "query"} | ({"reconcile"} if engine not in no_s3 else set())
        assert {h for e, h in cold if e == engine} == handlers
    assert "moto" not in no_s3
    for c in cold.values():
        for side in ("ours", "bare"):
            assert c[f"{side}_import_p50_ms"] > 0 and c[f"{side}_invoke_p50_ms"] > 0
            assert c[f"{side}_wall_p50_ms"] > c[f"{side}_total_p50_ms"] * 0.99
        assert c["ratio_p50"] == pytest.approx(c["ours_total_p50_ms"] / c["bare_total_p50_ms"], abs=0.01)
        assert c["ours_calls"] != "none" and c["bare_calls"] != "none"
        if c["handler"] != "reconcile":  # the bare reconcile makes only the minimum calls (said in the report)
            assert c["ours_calls"] == c["bare_calls"]
    assert report["artifact"] == {"built": False, "why": "not requested (--no-artifact)"}
    env = report["environment"]
    assert len(env["load_average_before"]) == len(env["load_average_after"]) == 3 and env["duration_s"] > 0

    # a transition: one consistent read and the one conditional update (the held item: the update alone), on both
    # engines, each against its recorded raw requests; the stream consumer's projection of them where there is one
    rows = {(r["engine"], r["case"]): r for r in report["results"]}
    for engine in ("moto", "dynalite"):
        read, held = rows[engine, run.CAPTURE], rows[engine, run.HELD_CAPTURE]
        assert read["calls_counted"] == "1 GetItem + 1 UpdateItem" and held["calls_counted"] == "1 UpdateItem"
    audit = {a["engine"]: a for a in report["audit"]}
    assert set(audit) == {"moto"}  # dynalite has no streams: skipped, and said so
    assert {("dynalite", "stream consumer", run.NO_STREAM)} <= {(s["engine"], s["case"], s["reason"])
                                                               for s in report["skipped"]}  # fmt: skip
    consumer = audit["moto"]
    # at least the timed captures' changes (3 samples of 2 kinds, package and raw), besides the setup's writes
    assert consumer["records"] > 3 * 4 and consumer["records_per_s"] > 0 and consumer["calls_per_record"] > 0
    assert consumer["ms_per_record"] == pytest.approx(consumer["seconds"] * 1000 / consumer["records"], rel=0.05)
    # verification of a chain of the requested length (120 entries: two pages of 100), on both engines
    verify = {v["engine"]: v for v in report["verify"]}
    assert set(verify) == {"moto", "dynalite"}
    for v in verify.values():
        assert v["entries"] == 120 and v["samples"] == 2 and "of 120 entries" in v["case"]
        assert v["p95_ms"] >= v["p50_ms"] > 0 and v["raw_p95_ms"] >= v["raw_p50_ms"] > 0
        assert v["entries_per_s"] == pytest.approx(120_000 / v["p50_ms"], rel=0.01)
        assert v["ratio_p50"] == pytest.approx(v["p50_ms"] / v["raw_p50_ms"], abs=0.015)
        assert v["raw_calls"].startswith("2 consistent Query pages (Limit=100)")

    markdown = (tmp_path / "RESULTS.md").read_text()
    # per engine: two rows per case (timings, calls), two throughput rows, one verification, one per cold start,
    # the encryption row where it ran and the stream consumer's row where there is a stream
    for engine in ("moto", "dynalite"):
        n = sum(e == engine for e, _ in cases)
        colds = sum(e == engine for e, _ in cold)
        expected = 2 * n + 2 + 1 + colds + (engine in encrypted) + (engine in audit)
        assert markdown.count(f"\n| {engine} |") == expected
    assert "scaled per 1,000" in markdown and "## The Lambda artifact" in markdown
    assert "Not built: not requested" in markdown
    # every case whose overhead is above the limit is listed, with what remains in it
    assert f"## Overheads above {run.OVERHEAD_LIMIT:g}x" in markdown
    for r in report["results"]:
        if max(r["ratio_p50"], r["ratio_p95"]) > run.OVERHEAD_LIMIT:
            assert f"\n| {r['case']} | {r['engine']} | {max(r['ratio_p50'], r['ratio_p95']):g}x | " in markdown
