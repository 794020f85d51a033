"""What `make reports` shows of each executed notebook (title, headline, charts as PNG files), the comparison chart of
a notebook's scenarios, and the landing page ``index.html`` that links them all (plain HTML, inline CSS)."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from math import ceil
from pathlib import Path
from typing import Any
from urllib.parse import quote

from payment_examples.core import ConfigurationError

HEADLINE_TAG = "headline"
# The benchmark report of `make bench` (in a source checkout; an installed package has none, and the index says so).
BENCHMARKS = Path(__file__).resolve().parents[2] / "tests" / "benchmarks"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
Number = int | float


@dataclass(frozen=True)
class Headline:
    """The output of the cell tagged ``headline``: its text, and the numbers of its ``application/json`` output."""

    text: str
    values: dict[str, Number] = field(default_factory=dict)
    breakdown: dict[str, Number] = field(default_factory=dict)


@dataclass(frozen=True)
class NotebookFailure:
    """Why a notebook's run failed; the cell index counts the cells of the executed notebook (papermill's)."""

    notebook: str
    ename: str
    evalue: str
    cell_index: int | None = None
    exec_count: int | None = None
    source_line: str = ""

    def __str__(self) -> str:
        where = ""
        if self.cell_index is not None:
            line = f": `{self.source_line}`" if self.source_line else ""
            where = f" in cell {self.cell_index} (execution count {self.exec_count}{line})"
        return f"{self.notebook}{where}: {self.ename}: {self.evalue}"


@dataclass(frozen=True)
class NotebookReport:
    """One executed notebook (or one scenario of a notebook) and what the index shows of it."""

    name: str  # the output files' stem: the notebook's stem, or "<stem>-<scenario>"
    title: str
    parameters: dict[str, Any]
    notebook: Path | None  # the executed notebook, partial when the run failed; None if none was written
    html: Path | None
    figures: tuple[Path, ...] = ()
    headline: Headline | None = None
    failure: NotebookFailure | None = None
    scenario: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


# -- reading an executed notebook ------------------------------------------------------------------------------------


def notebook_title(nb: Any, default: str) -> str:
    """The text of the notebook's first markdown heading, else ``default``."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip() or default
    return default


def write_figures(nb: Any, folder: Path) -> tuple[Path, ...]:
    """Write every ``image/png`` output, in output order, to ``folder/figure-<n>.png`` (n from 1)."""
    for stale in folder.glob("figure-*.png"):
        stale.unlink()
    images = [
        output["data"]["image/png"]
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    if images:
        folder.mkdir(parents=True, exist_ok=True)
    written = []
    for number, image in enumerate(images, start=1):
        target = folder / f"figure-{number}.png"
        target.write_bytes(base64.b64decode(image))
        written.append(target)
    return tuple(written)


def read_headline(nb: Any, notebook: str) -> Headline | None:
    """The outputs of the first code cell tagged ``headline``; None if there is none or it has no output.

    The text is what the cell printed (its stdout: the sentence that answers the notebook's question), else the
    ``text/plain`` of its non-image outputs. A bad ``application/json`` shape (see the README:
    ``{"values": {label: number}, "breakdown": {item: number}}``) is a ConfigurationError."""
    cell = next(
        (c for c in nb.cells if c.cell_type == "code" and HEADLINE_TAG in c.metadata.get("tags", [])),
        None,
    )
    if cell is None or not cell.outputs:
        return None
    bundles = [o["data"] for o in cell.outputs if "data" in o and "image/png" not in o["data"]]
    plain = [b["text/plain"] for b in bundles if "text/plain" in b]
    stdout = [o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout"]
    text = "".join(stdout) if stdout else "\n".join(plain)
    data = next((b["application/json"] for b in bundles if "application/json" in b), None)
    if data is None:
        return Headline(text.strip())
    if not isinstance(data, Mapping) or set(data) - {"values", "breakdown"}:
        raise ConfigurationError(f"{notebook}: the headline JSON must be a mapping with 'values' and/or 'breakdown'")
    return Headline(
        text.strip(),
        _numbers(data.get("values", {}), "values", notebook),
        _numbers(data.get("breakdown", {}), "breakdown", notebook),
    )


def _numbers(data: Any, key: str, notebook: str) -> dict[str, Number]:
    if not isinstance(data, Mapping) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in data.values()
    ):
        raise ConfigurationError(f"{notebook}: the headline JSON's {key!r} must map labels to numbers, got {data!r}")
    return {str(label): value for label, value in data.items()}


# -- the scenario comparison chart -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """The scenarios' headline JSON side by side: per line item and per value label, one number per scenario."""

    scenarios: list[str]  # in run (file) order
    breakdown: dict[str, list[Number]]  # a line item a scenario lacks counts 0
    values: dict[str, list[Number | None]]


def compare_scenarios(reports: Sequence[NotebookReport]) -> Comparison | None:
    """The headline JSON of the scenarios that ran without error; None when none has any."""
    rows = [(r.scenario or r.name, r.headline) for r in reports if r.ok and r.headline]
    rows = [(name, h) for name, h in rows if h.values or h.breakdown]
    if not rows:
        return None
    return Comparison(
        [name for name, _ in rows],
        {item: [h.breakdown.get(item, 0) for _, h in rows] for item in _union(h.breakdown for _, h in rows)},
        {label: [h.values.get(label) for _, h in rows] for label in _union(h.values for _, h in rows)},
    )


def draw_comparison(comparison: Comparison, target: Path, *, title: str) -> Path:
    """Stacked bars of the line items per scenario, then one panel per value label; written as a PNG."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed (Agg)

    names = comparison.scenarios
    panels = (1 if comparison.breakdown else 0) + len(comparison.values)
    columns = min(panels, 3)
    figure = Figure(figsize=(4.8 * columns, 3.8 * ceil(panels / columns)), layout="constrained")
    axes = iter(figure.subplots(ceil(panels / columns), columns, squeeze=False).ravel())
    if comparison.breakdown:
        ax = next(axes)
        bottom: list[Number] = [0] * len(names)
        for item, heights in comparison.breakdown.items():
            ax.bar(names, heights, bottom=bottom, label=item)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.set_title("breakdown per scenario")
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles[::-1], labels[::-1], fontsize="small")  # top to bottom, as stacked
    for label, numbers in comparison.values.items():
        ax = next(axes)
        ax.bar(names, [float("nan") if n is None else n for n in numbers], color="#4c72b0")
        ax.set_title(label)
    for unused in axes:
        unused.set_visible(False)
    figure.suptitle(title)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, format="png", dpi=100)
    return target


def _union(mappings: Iterable[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for mapping in mappings for key in mapping))


# -- the landing page ------------------------------------------------------------------------------------------------

_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; padding: 0 1rem; color: #222; }
h1 { margin-bottom: .2rem; } .meta { color: #555; margin-top: 0; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(22rem, 1fr)); gap: 1rem; }
.card { border: 1px solid #ccc; border-radius: 8px; padding: .8rem 1rem; background: #fff; }
.card.failed { border-color: #c0392b; background: #fdf2f1; }
.card h2, .card h3 { font-size: 1.05rem; margin: 0 0 .5rem; }
.status { font-weight: 600; } .status.ok { color: #1e7d32; } .status.failed { color: #c0392b; }
pre { background: #f6f8fa; padding: .5rem; overflow-x: auto; font-size: 12px; }
.headline { font-size: 1rem; font-weight: 600; margin: 0 0 .4rem; white-space: pre-line; overflow-wrap: anywhere; }
.figures img { max-width: 100%; max-height: 9rem; border: 1px solid #ddd; margin: .2rem .2rem 0 0; }
table { border-collapse: collapse; font-size: 13px; } td, th { border: 1px solid #ddd; padding: .2rem .5rem; }
th { background: #f0f0f0; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.comparison { max-width: 100%; border: 1px solid #ddd; }
"""


@dataclass(frozen=True)
class BenchmarkReport:
    """The latest benchmark report, rendered into the reports folder: its page, its date and a one-line summary."""

    html: Path
    measured_at: str | None
    summary: str


def write_benchmarks(output: Path, source: Path = BENCHMARKS) -> BenchmarkReport | None:
    """Render ``source/RESULTS.md`` (written by `make bench`) to ``output/benchmarks.html``, with its date and the
    targets met per engine from ``source/results.json``; None when there is no report."""
    results_md, results_json = source / "RESULTS.md", source / "results.json"
    if not results_md.is_file():
        return None
    text = results_md.read_text(encoding="utf-8")
    measured_at, summary = None, ""
    if results_json.is_file():
        try:
            data = json.loads(results_json.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            data = {}
        measured_at = data.get("environment", {}).get("date")
        met: dict[str, list[bool]] = {}
        for row in data.get("results", []):
            if row.get("meets_target") is not None:
                met.setdefault(row["engine"], []).append(bool(row["meets_target"]))
        summary = "; ".join(f"{engine}: {sum(v)} of {len(v)} targets met" for engine, v in met.items())
    try:
        import mistune

        body = mistune.create_markdown(escape=True, plugins=["table"])(text)
    except ImportError:  # a runtime install without the dev extras: the text as it is
        body = f"<pre>{_e(text)}</pre>"
    title = "payment_examples: benchmark report"
    target = output / "benchmarks.html"
    target.write_text(
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f'<style>{_CSS}</style></head><body><p class="meta"><a href="index.html">reports index</a> &middot; '
        f"source: tests/benchmarks/RESULTS.md</p>\n{body}</body></html>\n",
        encoding="utf-8",
    )
    return BenchmarkReport(target, measured_at, summary)


def write_index(
    output: Path,
    reports: Sequence[NotebookReport],
    *,
    run_at: datetime,
    scenarios: Sequence[NotebookReport] = (),
    comparison: Path | None = None,
    title: str = "payment_examples: notebook reports",
    benchmarks: Path | None = BENCHMARKS,
    jobs: int = 1,
) -> Path:
    """Write ``output/index.html``: run date (UTC), one card per notebook, the scenarios' section, and a link to
    the latest benchmark report (``benchmarks``: the folder of `make bench`'s RESULTS.md, rendered beside it).
    ``jobs`` > 1 says that many notebooks ran at a time, so their timings shared the machine."""
    failed = sum(not r.ok for r in [*reports, *scenarios])
    status = f"{failed} failed" if failed else "all ran"
    parts = [
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>',
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">Run at {_e(run_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"))} UTC &middot; '
        f"{len(reports)} notebooks, {len(scenarios)} scenario runs, {status}{_shared(jobs)}</p>",
        _benchmarks_section(output, write_benchmarks(output, benchmarks) if benchmarks is not None else None),
        '<section class="cards">',
        *(_card(output, report) for report in reports),
        "</section>",
    ]
    if scenarios:
        parts.append(_scenarios_section(output, scenarios, comparison))
    parts.append("</body></html>\n")
    target = output / "index.html"
    target.write_text("\n".join(parts), encoding="utf-8")
    return target


def _shared(jobs: int) -> str:
    if jobs <= 1:
        return ""
    return f" &middot; {jobs} notebooks ran at a time: each one's timings shared the machine with another's"


def _benchmarks_section(output: Path, report: BenchmarkReport | None) -> str:
    if report is None:
        return '<p class="meta" id="benchmarks">No benchmark report: run <code>make bench</code>.</p>'
    when = f" measured {_e(report.measured_at)}" if report.measured_at else " (undated)"
    summary = f" &middot; {_e(report.summary)}" if report.summary else ""
    return (
        f'<p class="meta" id="benchmarks"><a href="{_href(output, report.html)}">Benchmark report</a>{when}'
        f" (<code>make bench</code>: the brief's targets on both engines next to raw boto3){summary}</p>"
    )


def _card(output: Path, report: NotebookReport) -> str:
    heading = report.title if report.scenario is None else f"{report.title}: scenario {report.scenario}"
    link = report.html or report.notebook
    title = f'<a href="{_href(output, link)}">{_e(heading)}</a>' if link else _e(heading)
    if report.failure:
        status = f'<p class="status failed">FAILED: {_e(str(report.failure))}</p>'
    else:
        status = '<p class="status ok">ran without errors</p>'
    headline = f'<p class="headline">{_e(report.headline.text)}</p>' if report.headline else ""
    thumbnails = "".join(
        f'<a href="{_href(output, png)}"><img src="{_href(output, png)}" alt="{_e(report.name)} figure {n}"></a>'
        for n, png in enumerate(report.figures, start=1)
    )
    links = " &middot; ".join(
        f'<a href="{_href(output, path)}">{kind}</a>'
        for kind, path in (("HTML", report.html), ("executed notebook", report.notebook))
        if path
    )
    return (
        f'<article class="card {"ok" if report.ok else "failed"}" id="{_e(report.name)}"><h2>{title}</h2>{headline}'
        f'{status}<div class="figures">{thumbnails}</div>{_parameters(report.parameters)}<p>{links}</p></article>'
    )


def _parameters(parameters: Mapping[str, Any]) -> str:
    if not parameters:
        return "<p>parameters: the notebook's defaults</p>"
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_json(v))}</td></tr>" for k, v in parameters.items())
    return f"<table><caption>parameters</caption>{rows}</table>"


def _scenarios_section(output: Path, scenarios: Sequence[NotebookReport], comparison: Path | None) -> str:
    labels = _union(r.headline.values for r in scenarios if r.headline)
    items = _union(r.headline.breakdown for r in scenarios if r.headline)
    head = "".join(
        f"<th>{_e(c)}</th>" for c in ["scenario", "status", *labels, *(["breakdown total"] if items else [])]
    )
    rows = []
    for report in scenarios:
        headline = report.headline or Headline("")
        cells = [f"<td>{_e(str(report.scenario))}</td>", f"<td>{'ok' if report.ok else 'FAILED'}</td>"]
        cells += [f'<td class="num">{_e(_format(headline.values.get(label)))}</td>' for label in labels]
        if items:
            total = sum(headline.breakdown.values()) if headline.breakdown else None
            cells.append(f'<td class="num">{_e(_format(total))}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    chart = (
        f'<p><img class="comparison" src="{_href(output, comparison)}" alt="comparison of the scenarios"></p>'
        if comparison
        else "<p>No comparison chart: no scenario produced headline JSON.</p>"
    )
    return (
        f'<h2 id="scenarios">Scenarios</h2>{chart}<table><tr>{head}</tr>{"".join(rows)}</table>'
        f'<section class="cards">{"".join(_card(output, r) for r in scenarios)}</section>'
    )


def _format(value: Number | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}" if abs(value) >= 1 else f"{value:.4g}"


def _json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except TypeError:
        return repr(value)


def _href(output: Path, path: Path) -> str:
    return _e(quote(path.relative_to(output).as_posix()))


def _e(text: str) -> str:
    return html.escape(text, quote=True)
