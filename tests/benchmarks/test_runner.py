"""The benchmark runner itself works (tiny sample counts; the timings are not checked, only the report)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.benchmarks import run


def test_runner_measures_every_case_on_both_engines_and_writes_the_report(tmp_path: Path) -> None:
    assert run.main(["--samples", "3", "--payments", "70", "--output", str(tmp_path)]) == 0

    report = json.loads((tmp_path / "results.json").read_text())
    cases = {(r["engine"], r["case"]) for r in report["results"]}
    assert {engine for engine, _ in cases} == {"moto", "dynalite"}
    assert len(cases) == len(report["results"])  # every (engine, case) once
    for row in report["results"]:
        assert row["samples"] == 3 and row["p50_ms"] > 0 and row["raw_p50_ms"] > 0 and row["ratio_p50"] > 0
        assert row["p95_ms"] >= row["p50_ms"]
    assert report["environment"]["versions"]["dynalite"]
    markdown = (tmp_path / "RESULTS.md").read_text()
    assert markdown.count("\n| moto |") == markdown.count("\n| dynalite |") == len(cases) // 2
