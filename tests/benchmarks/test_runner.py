"""The benchmark runner itself works (tiny sample counts; the timings are not checked, only the report)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks import run


def test_runner_measures_every_case_on_both_engines_and_writes_the_report(tmp_path: Path) -> None:
    args = ["--samples", "3", "--payments", "70", "--batch-samples", "3", "--batch-size", "40", "--recon-rows", "60"]
    args += ["--customer-samples", "3", "--kms-creates", "20", "--uncached-kms-creates", "5"]
    args += ["--verify-samples", "2", "--verify-entries", "120"]
    assert run.main([*args, "--output", str(tmp_path)]) == 0

    report = json.loads((tmp_path / "results.json").read_text())
    cases = {(r["engine"], r["case"]) for r in report["results"]}
    assert {engine for engine, _ in cases} == {"moto", "dynalite"}
    assert len(cases) == len(report["results"])  # every (engine, case) once
    for row in report["results"]:
        # on moto the batch is timed at most MOTO_BATCH_SAMPLES times (its Query sorts the growing audit table)
        capped = row["engine"] == "moto" and row["case"] == "batch of 40 payments"
        assert row["samples"] == (min(3, run.MOTO_BATCH_SAMPLES) if capped else 3)
        assert row["p50_ms"] > 0 and row["raw_p50_ms"] > 0 and row["ratio_p50"] > 0
        assert row["p95_ms"] >= row["p50_ms"]
    assert report["environment"]["versions"]["dynalite"]
    throughput = {t["engine"]: t for t in report["throughput"]}
    assert set(throughput) == {"moto", "dynalite"}
    for t in throughput.values():
        assert t["rows"] == 60 and t["rows_per_s"] > 0 and t["raw_rows_per_s"] > 0 and t["unaudited_rows_per_s"] > 0
        assert sum(t["outcomes"].values()) == sum(t["unaudited_outcomes"].values()) == 60
        # both time ratios are of the same rows: rows/s are inversely proportional to the times
        assert t["audited_time_ratio"] == pytest.approx(t["unaudited_rows_per_s"] / t["rows_per_s"], rel=0.02)
        assert t["ratio"] == pytest.approx(t["raw_rows_per_s"] / t["rows_per_s"], rel=0.02)

    # the customer cases (field encryption) need KMS: measured on moto, skipped on dynalite and said so
    customer_cases = {run.CUSTOMER_CREATE, run.CUSTOMER_GET}
    assert {("moto", name) for name in customer_cases} <= cases
    assert not {("dynalite", name) for name in customer_cases} & cases
    assert {(s["engine"], s["case"]) for s in report["skipped"]} == {("dynalite", name) for name in customer_cases}
    [encryption] = report["encryption"]
    assert encryption["engine"] == "moto"
    by_case = {r["case"]: r for r in report["results"] if r["engine"] == "moto"}
    for prefix, name in (("create", run.CUSTOMER_CREATE), ("get", run.CUSTOMER_GET)):
        row = by_case[name]
        # the overhead is computed before the rows' p50s are rounded to 0.01 ms: equal within that rounding
        assert encryption[f"{prefix}_overhead_p50_ms"] == pytest.approx(row["p50_ms"] - row["raw_p50_ms"], abs=0.011)
        assert encryption[f"{prefix}_ratio_p50"] == row["ratio_p50"]
    # the data-key cache: one GenerateDataKey for the 20 creates (50 per 1,000 once scaled); without it, one each
    assert encryption["kms_creates"] == 20 and encryption["kms_calls"] == {"GenerateDataKey": 1}
    assert encryption["kms_calls_per_1000_creates"] == 50
    assert encryption["uncached_kms_creates"] == 5 and encryption["uncached_kms_calls"] == {"GenerateDataKey": 5}
    assert encryption["uncached_kms_calls_per_1000_creates"] == 1000
    assert encryption["kms_create_p50_ms"] > 0 and encryption["uncached_kms_create_p50_ms"] > 0

    # the audit trail's cost on both engines: a capture with and without its audit entry, both against the raw
    # calls of the unaudited path; the overhead is the difference of the two p50s and the ratio their quotient
    rows = {(r["engine"], r["case"]): r for r in report["results"]}
    audit = {a["engine"]: a for a in report["audit"]}
    assert set(audit) == {"moto", "dynalite"}
    for engine, overhead in audit.items():
        on, off = rows[engine, run.AUDITED_CAPTURE], rows[engine, run.UNAUDITED_CAPTURE]
        assert (on["raw_p50_ms"], on["raw_p95_ms"]) == (off["raw_p50_ms"], off["raw_p95_ms"])  # one baseline
        assert (overhead["audited_p50_ms"], overhead["unaudited_p50_ms"]) == (on["p50_ms"], off["p50_ms"])
        assert overhead["overhead_p50_ms"] == pytest.approx(on["p50_ms"] - off["p50_ms"], abs=0.011)
        assert overhead["overhead_p95_ms"] == pytest.approx(on["p95_ms"] - off["p95_ms"], abs=0.011)
        # the quotient of the unrounded p50s (each > 1 ms, so rounding moves it by less than 0.01), then rounded
        assert overhead["ratio_p50"] == pytest.approx(on["p50_ms"] / off["p50_ms"], abs=0.015)
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
    # one row per case and engine, plus one throughput, one audit overhead and one verification row per engine,
    # plus the encryption row on moto
    moto_cases = sum(engine == "moto" for engine, _ in cases)
    assert markdown.count("\n| moto |") == moto_cases + 4
    assert markdown.count("\n| dynalite |") == len(cases) - moto_cases + 3 == moto_cases + 1
    assert "Skipped on dynalite: " + run.CUSTOMER_CREATE in markdown and "scaled per 1,000" in markdown
