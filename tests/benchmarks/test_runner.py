"""The benchmark runner itself works (tiny sample counts; the timings are not checked, only the report)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.benchmarks import run


def test_runner_measures_every_case_on_both_engines_and_writes_the_report(tmp_path: Path) -> None:
    args = ["--samples", "3", "--payments", "70", "--batch-samples", "3", "--batch-size", "40", "--recon-rows", "60"]
    assert run.main([*args, "--output", str(tmp_path)]) == 0

    report = json.loads((tmp_path / "results.json").read_text())
    cases = {(r["engine"], r["case"]) for r in report["results"]}
    assert {engine for engine, _ in cases} == {"moto", "dynalite"}
    assert len(cases) == len(report["results"])  # every (engine, case) once
    for row in report["results"]:
        assert row["samples"] == 3 and row["p50_ms"] > 0 and row["raw_p50_ms"] > 0 and row["ratio_p50"] > 0
        assert row["p95_ms"] >= row["p50_ms"]
    assert report["environment"]["versions"]["dynalite"]
    throughput = {t["engine"]: t for t in report["throughput"]}
    assert set(throughput) == {"moto", "dynalite"}
    for t in throughput.values():
        assert t["rows"] == 60 and t["rows_per_s"] > 0 and t["raw_rows_per_s"] > 0
        assert sum(t["outcomes"].values()) == 60
    markdown = (tmp_path / "RESULTS.md").read_text()
    # one row per case and engine, plus one throughput row per engine
    assert markdown.count("\n| moto |") == markdown.count("\n| dynalite |") == len(cases) // 2 + 1
