"""What the reports show of an executed notebook (title, headline, charts as PNG files), the scenario comparison, and
the index page; on notebooks built in memory (no kernel)."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest
from matplotlib.figure import Figure
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from payment_examples.core.errors import ConfigurationError
from payment_examples.reports.index import (
    BENCHMARKS,
    PNG_SIGNATURE,
    Headline,
    NotebookFailure,
    NotebookReport,
    compare_scenarios,
    draw_comparison,
    notebook_title,
    read_headline,
    write_benchmarks,
    write_figures,
    write_index,
)


def _png(width: float) -> str:
    buffer = io.BytesIO()
    Figure(figsize=(width, 1)).savefig(buffer, format="png", dpi=20)
    return base64.b64encode(buffer.getvalue()).decode()


def _figure_output(png: str) -> nbformat.NotebookNode:
    return new_output("display_data", data={"image/png": png, "text/plain": "<Figure size 640x480 with 1 Axes>"})


def _headline_cell(*outputs: nbformat.NotebookNode) -> nbformat.NotebookNode:
    return new_code_cell("figure", metadata={"tags": ["headline"]}, outputs=list(outputs))


def _stdout(text: str) -> nbformat.NotebookNode:
    return new_output("stream", name="stdout", text=text)


def _json(data: object, text: str = "the figure") -> nbformat.NotebookNode:
    return new_output("display_data", data={"application/json": data, "text/plain": text})


def test_the_headline_is_the_printed_sentence_not_the_table_nor_the_figure() -> None:
    table = new_output("execute_result", data={"text/plain": "   n  p50_ms\nop  5  4.2"}, execution_count=3)
    cell = _headline_cell(
        _stdout("Creating a payment takes "), _stdout("4.2 ms at p50.\n"), table, _figure_output(_png(2))
    )
    notebook = new_notebook(cells=[new_code_cell("x = 1", outputs=[_stdout("not me")]), cell])

    assert read_headline(notebook, "nb") == Headline("Creating a payment takes 4.2 ms at p50.")


def test_the_headline_falls_back_to_text_plain_and_is_none_without_a_tagged_cell_or_output() -> None:
    result = new_output("execute_result", data={"text/plain": "p50 4.2 ms"}, execution_count=3)
    displayed = new_notebook(cells=[_headline_cell(result, _figure_output(_png(2)))])
    assert read_headline(displayed, "nb") == Headline("p50 4.2 ms")
    assert read_headline(new_notebook(cells=[new_code_cell("x", outputs=[_stdout("1")])]), "nb") is None
    assert read_headline(new_notebook(cells=[_headline_cell()]), "nb") is None


def test_the_headline_json_gives_values_and_breakdown() -> None:
    data = {"values": {"monthly cost": 12.5, "payments": 1000}, "breakdown": {"writes": 10, "storage": 2.5}}
    headline = read_headline(new_notebook(cells=[_headline_cell(_json(data, "$12.50 a month"))]), "cost")

    assert headline == Headline("$12.50 a month", {"monthly cost": 12.5, "payments": 1000}, data["breakdown"])
    only_values = read_headline(new_notebook(cells=[_headline_cell(_json({"values": {"a": 1}}))]), "cost")
    assert only_values == Headline("the figure", {"a": 1}, {})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "must be a mapping with 'values' and/or 'breakdown'"),
        ({"value": {"a": 1}}, "must be a mapping with 'values' and/or 'breakdown'"),
        ({"values": [1, 2]}, "'values' must map labels to numbers"),
        ({"values": {"a": "12"}}, "'values' must map labels to numbers"),
        ({"breakdown": {"writes": True}}, "'breakdown' must map labels to numbers"),
    ],
)
def test_a_headline_json_of_another_shape_is_refused(data: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=f"cost: the headline JSON.*{message}"):
        read_headline(new_notebook(cells=[_headline_cell(_json(data))]), "cost")


def test_every_png_output_is_written_in_output_order_and_stale_figures_are_removed(tmp_path: Path) -> None:
    first, second, third = _png(1), _png(2), _png(3)
    notebook = new_notebook(
        cells=[
            new_markdown_cell("# Title"),
            new_code_cell("a", outputs=[_figure_output(first), _stdout("text")]),
            new_code_cell("b", outputs=[]),
            new_code_cell("c", outputs=[_figure_output(second), _figure_output(third)]),
        ]
    )
    folder = tmp_path / "nb"
    folder.mkdir()
    (folder / "figure-9.png").write_bytes(b"stale")

    written = write_figures(notebook, folder)

    assert written == tuple(folder / f"figure-{n}.png" for n in (1, 2, 3))
    assert sorted(folder.iterdir()) == list(written)
    assert [p.read_bytes() for p in written] == [base64.b64decode(png) for png in (first, second, third)]
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in written)
    assert write_figures(new_notebook(cells=[]), tmp_path / "none") == ()
    assert not (tmp_path / "none").exists()


def test_the_title_is_the_first_markdown_heading() -> None:
    cells = [new_code_cell("# a comment, not a heading"), new_markdown_cell("Intro\n\n## 01 · Idempotency\n# Later")]
    assert notebook_title(new_notebook(cells=cells), "stem") == "01 · Idempotency"
    assert notebook_title(new_notebook(cells=[new_markdown_cell("no heading")]), "stem") == "stem"


def test_a_failure_names_the_notebook_the_cell_and_the_exception() -> None:
    failure = NotebookFailure("03_reconciliation", "KeyError", "'USD'", 7, 5, "amounts = summary['USD']")
    assert (
        str(failure) == "03_reconciliation in cell 7 (execution count 5: `amounts = summary['USD']`): KeyError: 'USD'"
    )
    assert str(NotebookFailure("02_pagination", "DeadKernelError", "Kernel died")) == (
        "02_pagination: DeadKernelError: Kernel died"
    )


def _report(output: Path, name: str, **fields: object) -> NotebookReport:
    base: dict[str, object] = {
        "name": name,
        "title": name,
        "parameters": {},
        "notebook": output / f"{name}.ipynb",
        "html": output / f"{name}.html",
    }
    return NotebookReport(**{**base, **fields})  # type: ignore[arg-type]


def test_the_index_escapes_text_links_relative_paths_and_marks_failures(tmp_path: Path) -> None:
    figure = tmp_path / "with space" / "figure-1.png"
    ok = _report(
        tmp_path,
        "with space",
        title="<script>alert(1)</script> & more",
        parameters={"note": "<b>", "rows": [1, 2]},
        figures=(figure,),
        headline=Headline("p50 < 5 ms"),
    )
    failed = _report(tmp_path, "broken", failure=NotebookFailure("broken", "ValueError", "<boom>", 3, 2, "raise x"))
    run_at = datetime(2026, 5, 6, 9, 30, tzinfo=timezone(timedelta(hours=2)))

    page = write_index(tmp_path, [ok, failed], run_at=run_at).read_text(encoding="utf-8")

    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    assert "Run at 2026-05-06 07:30:00 UTC" in page  # converted to UTC
    assert "p50 &lt; 5 ms" in page and "&quot;&lt;b&gt;&quot;" in page and "[1, 2]" in page
    assert '<a href="with%20space.html">' in page and 'src="with%20space/figure-1.png"' in page
    assert '<article class="card failed" id="broken">' in page
    assert "FAILED: broken in cell 3 (execution count 2: `raise x`): ValueError: &lt;boom&gt;" in page
    assert '<a href="broken.html">HTML</a>' in page  # the partial output
    assert "2 notebooks, 0 scenario runs, 1 failed" in page
    assert 'id="scenarios"' not in page


def test_each_card_leads_with_its_whole_headline_sentence(tmp_path: Path) -> None:
    sentence = (
        "One page of 50 captured payments from a merchant with 10,000 takes 32.8 ms at p50 on dynalite, 2.01x the "
        "raw Query, and 281.9 ms on the moto server, which sorts the whole table for every query."
    )
    report = _report(tmp_path, "02_pagination", title="02 · Pagination", headline=Headline(sentence))

    page = write_index(tmp_path, [report], run_at=datetime(2026, 1, 1, tzinfo=UTC)).read_text(encoding="utf-8")

    # right under the title, whole, in a paragraph that wraps (not a <pre> box that clips at its width)
    assert f'</a></h2><p class="headline">{sentence}</p><p class="status ok">' in page
    css = page[page.index("<style>") : page.index("</style>")]
    rule = css[css.index(".headline {") :].split("}")[0]
    assert "white-space: pre;" not in rule and "nowrap" not in rule and "overflow: hidden" not in rule


def _scenario(output: Path, name: str, headline: Headline | None, **fields: object) -> NotebookReport:
    return _report(output, f"cost-{name}", scenario=name, headline=headline, **fields)


def test_the_comparison_takes_the_scenarios_that_ran_in_order(tmp_path: Path) -> None:
    reports = [
        _scenario(tmp_path, "10M", Headline("", {"monthly": 100.0}, {"writes": 80, "storage": 20})),
        _scenario(tmp_path, "1M", Headline("", {"monthly": 9.5, "per payment": 0.1}, {"writes": 8, "reads": 1.5})),
        _scenario(
            tmp_path, "bad", Headline("", {"monthly": 1}), failure=NotebookFailure("cost-bad", "ValueError", "x")
        ),
        _scenario(tmp_path, "text", Headline("only text")),
    ]

    comparison = compare_scenarios(reports)

    assert comparison is not None and comparison.scenarios == ["10M", "1M"]
    assert comparison.breakdown == {"writes": [80, 8], "storage": [20, 0], "reads": [0, 1.5]}
    assert comparison.values == {"monthly": [100.0, 9.5], "per payment": [None, 0.1]}
    assert compare_scenarios(reports[2:]) is None
    chart = draw_comparison(comparison, tmp_path / "scenarios" / "cost-comparison.png", title="cost")
    assert chart.read_bytes().startswith(PNG_SIGNATURE) and chart.stat().st_size > 5_000


def test_the_index_shows_the_scenarios_with_their_numbers_and_the_chart(tmp_path: Path) -> None:
    scenarios = [
        _scenario(tmp_path / "scenarios", "100k", Headline("", {"monthly": 1234567.891}, {"a": 1, "b": 2})),
        _scenario(tmp_path / "scenarios", "1M", None, failure=NotebookFailure("cost-1M", "ValueError", "x")),
    ]
    chart = tmp_path / "scenarios" / "cost-comparison.png"

    page = write_index(
        tmp_path, [], run_at=datetime(2026, 1, 1, tzinfo=UTC), scenarios=scenarios, comparison=chart
    ).read_text(encoding="utf-8")

    section = page[page.index('<h2 id="scenarios">') :]
    assert '<img class="comparison" src="scenarios/cost-comparison.png"' in section
    assert "<th>monthly</th><th>breakdown total</th>" in section
    assert '<td>100k</td><td>ok</td><td class="num">1,234,567.89</td><td class="num">3</td>' in section
    assert '<td>1M</td><td>FAILED</td><td class="num"></td><td class="num"></td>' in section
    assert 'href="scenarios/cost-100k.html"' in section
    no_chart = write_index(tmp_path, [], run_at=datetime(2026, 1, 1, tzinfo=UTC), scenarios=scenarios[1:])
    assert "No comparison chart" in no_chart.read_text(encoding="utf-8")


def test_the_index_links_the_latest_benchmark_report_with_its_date(tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "RESULTS.md").write_text(
        "# Benchmark results\n\nMeasured <today>.\n\n| engine | case | p95 ms |\n|---|---|---|\n"
        "| dynalite | x | 1.5 |\n"
    )
    rows = [{"engine": "dynalite", "case": "a", "meets_target": True},
            {"engine": "dynalite", "case": "b", "meets_target": False},
            {"engine": "moto", "case": "a", "meets_target": False},
            {"engine": "moto", "case": "c", "meets_target": None}]  # fmt: skip
    (bench / "results.json").write_text(json.dumps({"environment": {"date": "2026-11-29T19:05:00+00:00"},
                                                    "results": rows}))  # fmt: skip
    output = tmp_path / "reports"
    output.mkdir()

    page = write_index(output, [], run_at=datetime(2026, 1, 1, tzinfo=UTC), benchmarks=bench).read_text()

    assert '<a href="benchmarks.html">Benchmark report</a> measured 2026-11-29T19:05:00+00:00' in page
    assert "dynalite: 1 of 2 targets met; moto: 0 of 1 targets met" in page
    rendered = (output / "benchmarks.html").read_text()
    assert "<table>" in rendered and "<td>dynalite</td>" in rendered and "<h1>Benchmark results</h1>" in rendered
    assert "&lt;today&gt;" in rendered  # the report's text is escaped, not taken as HTML
    assert '<a href="index.html">' in rendered

    # no report (an installed package, or before the first `make bench`): the index says how to make one
    empty = tmp_path / "empty"
    empty.mkdir()
    page = write_index(empty, [], run_at=datetime(2026, 1, 1, tzinfo=UTC), benchmarks=tmp_path / "none").read_text()
    assert "No benchmark report: run <code>make bench</code>." in page and not (empty / "benchmarks.html").exists()


def test_by_default_the_index_links_the_checkouts_benchmark_report(tmp_path: Path) -> None:
    assert (BENCHMARKS / "RESULTS.md").is_file() and (BENCHMARKS / "run.py").is_file()
    page = write_index(tmp_path, [], run_at=datetime(2026, 1, 1, tzinfo=UTC)).read_text()
    report = write_benchmarks(tmp_path)
    assert report is not None and report.html == tmp_path / "benchmarks.html"
    assert '<a href="benchmarks.html">Benchmark report</a> measured ' + str(report.measured_at) in page
