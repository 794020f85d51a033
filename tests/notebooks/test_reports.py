"""The main job's machinery: every notebook runs under papermill into a separate folder and is rendered to HTML, its
charts written as PNG files, and an index page links them all; a failing notebook is named with its cell while the
others' reports are still written; the cost notebook can run once per scenario with a comparison chart; parameter
and scenario files are checked against the notebooks' parameters cells before anything runs.

Apart from the run of the real notebooks and the checks of the real parameter files, the notebooks are tiny
synthetic ones written into tmp_path."""

from __future__ import annotations

import re
import tempfile
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from payment_examples.cli import main
from payment_examples.core.clock import FixedClock
from payment_examples.core.errors import ConfigurationError
from payment_examples.engine.local import DESCRIPTIONS
from payment_examples.reports.index import PNG_SIGNATURE, Headline, read_headline
from payment_examples.reports.kernels import AsyncIpcKernelManager, IpcKernelManager
from payment_examples.reports.runner import (
    NotebookRunError,
    check_parameters,
    duration,
    load_params,
    load_scenarios,
    run_notebooks,
)

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
# Most of these start Jupyter kernels (seconds each): make test runs them, make test-fast does not.
pytestmark = pytest.mark.slow
RUN_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


# Two real notebooks run end to end under papermill: the first (it prints the engine) and the encryption one (field
# keys, KMS, the stream's consumer). Strict nbval already executes every notebook at its committed defaults, and the
# parameter files and headlines of all of them are checked without running them (below); running all eight again
# here cost 130 s of the 8-minute `make test`. `payment-examples reports --params notebooks/params/ci.yaml` runs them
# all at these sizes (about 2 minutes).
PAPERMILL_RUN = ("00_getting_started", "05_encryption")


def test_real_notebooks_run_under_papermill_with_ci_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # On the default engine (the moto server: the kernels inherit the environment, and PAYMENT_ENGINE is unset).
    monkeypatch.delenv("PAYMENT_ENGINE", raising=False)
    chosen = tmp_path / "notebooks"
    chosen.mkdir()
    for stem in PAPERMILL_RUN:
        (chosen / f"{stem}.ipynb").write_bytes((NOTEBOOKS / f"{stem}.ipynb").read_bytes())
    params = {k: v for k, v in load_params(NOTEBOOKS / "params" / "ci.yaml").items() if k in PAPERMILL_RUN}
    assert sorted(params) == sorted(PAPERMILL_RUN)  # they have CI sizes of their own
    params_file = tmp_path / "ci.yaml"
    params_file.write_text(yaml.safe_dump(params))
    output = tmp_path / "reports"
    run = run_notebooks(chosen, output, params_file=params_file, progress=False)

    sources = sorted(f"{stem}.ipynb" for stem in PAPERMILL_RUN)
    assert sorted(p.name for p in run.written if p.suffix == ".ipynb") == sources
    for source in sources:
        executed = nbformat.read(output / source, as_version=4)
        code = [cell for cell in executed.cells if cell.cell_type == "code"]
        assert all(cell.execution_count for cell in code), f"{source}: a cell did not run"
        assert not [o for cell in code for o in cell.outputs if o.output_type == "error"]
        # papermill injected the CI parameters after the tagged cell
        injected = [cell for cell in code if "injected-parameters" in cell.metadata.get("tags", [])]
        assert len(injected) == 1
        html = (output / source).with_suffix(".html").read_text()
        assert "<html" in html and len(html) > 10_000
    assert not run.failures
    assert all(report.headline and report.headline.text for report in run.reports)
    assert run.index == output / "index.html" and run.index.is_file()
    # ...and they ran on the default engine (00 prints what its embedded engine runs)
    started = nbformat.read(output / "00_getting_started.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for cell in started.cells if cell.cell_type == "code" for o in cell.outputs)
    assert f"engine: {DESCRIPTIONS['moto']}" in printed


# -- synthetic notebooks ---------------------------------------------------------------------------------------------


def _write_notebook(path: Path, *cells: nbformat.NotebookNode) -> Path:
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(new_notebook(cells=list(cells), metadata={"kernelspec": kernelspec}), path)
    return path


def _parameters(source: str) -> nbformat.NotebookNode:
    return new_code_cell(source, metadata={"tags": ["parameters"]})


def _headline(source: str) -> nbformat.NotebookNode:
    return new_code_cell(source, metadata={"tags": ["headline"]})


def _charts(folder: Path) -> Path:
    """Two matplotlib charts and a printed headline; the title needs escaping."""
    return _write_notebook(
        folder / "alpha.ipynb",
        new_markdown_cell("# Alpha <chart> & co\n\nTwo charts."),
        _parameters("n = 1"),
        new_code_cell(
            "import matplotlib.pyplot as plt\n"
            "plt.plot([0, n], [0, n])\nplt.show()\n"
            "plt.bar(['a', 'b'], [n, 2])\nplt.show()"
        ),
        _headline('print(f"alpha total {n * 2}")'),
    )


def _cost(folder: Path) -> Path:
    """A headline that displays the JSON mimebundle of the contract (values and breakdown), and one chart."""
    return _write_notebook(
        folder / "cost.ipynb",
        new_markdown_cell("# Cost"),
        _parameters("payments_per_month = 1000\nprice_per_million = 2.0"),
        new_code_cell("import matplotlib.pyplot as plt\nplt.plot([0, 1], [0, payments_per_month])\nplt.show()"),
        _headline(
            "from IPython.display import display\n"
            "writes = payments_per_month * price_per_million / 1e6\n"
            "reads = writes / 2\n"
            'display({"application/json": {"values": {"monthly cost": writes + reads, "payments": payments_per_month},'
            ' "breakdown": {"writes": writes, "reads": reads}}, "text/plain": f"monthly cost {writes + reads:.2f}"},'
            " raw=True)"
        ),
    )


def _broken(folder: Path) -> Path:
    return _write_notebook(
        folder / "broken.ipynb",
        new_markdown_cell("# Broken"),
        _parameters("x = 1"),
        new_code_cell("y = x + 1"),
        new_code_cell('raise ValueError(f"boom {y}")'),
        _headline('print("never reached")'),
    )


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href"):
            self.hrefs.append(str(values["href"]))
        if tag == "img" and values.get("src"):
            self.images.append(str(values["src"]))


def _links(index: Path) -> _Links:
    parser = _Links()
    parser.feed(index.read_text(encoding="utf-8"))
    return parser


def _yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- the index and the PNG files -------------------------------------------------------------------------------------


def test_the_index_links_every_notebook_and_every_png_it_shows_exists(tmp_path: Path) -> None:
    sources = tmp_path / "nbs"
    sources.mkdir()
    _charts(sources), _cost(sources)
    params = _yaml(tmp_path / "params.yaml", "alpha:\n  n: 5\ncost:\n  price_per_million: 4.0\n")
    output = tmp_path / "reports"

    run = run_notebooks(sources, output, params_file=params, clock=FixedClock(RUN_AT), progress=False)

    assert run.index == output / "index.html" and not run.failures
    links = _links(run.index)
    assert {"alpha.html", "cost.html"} <= set(links.hrefs)
    for link in [*links.hrefs, *links.images]:
        assert (output / link).is_file(), link
    # every chart of every notebook is a PNG file, numbered in output order, and shown as a thumbnail
    pngs = sorted(p.relative_to(output).as_posix() for p in output.rglob("*.png"))
    assert pngs == ["alpha/figure-1.png", "alpha/figure-2.png", "cost/figure-1.png"]
    assert sorted(set(links.images)) == pngs
    assert all((output / png).read_bytes().startswith(PNG_SIGNATURE) for png in pngs)
    assert all((output / png).stat().st_size > 1_000 for png in pngs)
    page = run.index.read_text(encoding="utf-8")
    assert "2026-01-02 03:04:05 UTC" in page
    assert "Alpha &lt;chart&gt; &amp; co" in page and "<chart>" not in page
    assert "alpha total 10" in page  # the headline, computed with the parameters file's n = 5
    alpha, cost = run.reports
    assert alpha.headline and alpha.headline.text == "alpha total 10" and alpha.parameters == {"n": 5}
    assert cost.headline and cost.headline.values == {"monthly cost": 0.006, "payments": 1000}
    assert cost.headline.breakdown == {"reads": 0.002, "writes": 0.004}
    assert set(run.written) >= {output / "alpha.ipynb", output / "alpha.html", output / "alpha" / "figure-2.png"}


def test_the_kernels_talk_over_ipc_and_log_no_unencrypted_tcp_warning(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    sources = tmp_path / "nbs"
    sources.mkdir()
    _write_notebook(
        sources / "transport.ipynb",
        new_markdown_cell("# Transport"),
        _headline(
            "from ipykernel.connect import get_connection_info\nprint(get_connection_info(unpack=True)['transport'])"
        ),
    )

    run = run_notebooks(sources, tmp_path / "reports", html=False, progress=False)

    assert run.reports[0].headline == Headline("ipc")
    # the kernel's stderr is this process's: over TCP it would have logged the warning here
    assert "without encryption" not in capfd.readouterr().err
    assert not list(sources.glob("kernel-ipc*"))  # the sockets are not in the working directory either


def test_each_kernel_manager_has_its_own_ipc_sockets_in_the_temporary_folder() -> None:
    first, second = IpcKernelManager(), AsyncIpcKernelManager()
    assert first.transport == second.transport == "ipc"
    assert first.ip != second.ip
    assert all(Path(m.ip).parent == Path(tempfile.gettempdir()) for m in (first, second))


# -- a notebook that fails -------------------------------------------------------------------------------------------


def test_a_failing_notebook_is_named_with_its_cell_and_the_others_are_still_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = tmp_path / "nbs"
    sources.mkdir()
    _broken(sources), _charts(sources)
    output = tmp_path / "reports"

    code = main(["reports", "--notebooks", str(sources), "--output", str(output)])

    out, err = capsys.readouterr()
    assert code == 1
    assert "notebook failed: broken in cell 3 (execution count 3: `raise ValueError" in err
    assert "ValueError: boom 2" in err and f"partial output: {output / 'broken.html'}" in err
    assert out.splitlines()[-1] == str(output / "index.html")
    # the other notebook's reports, the failed one's partial output, and the index are all written
    assert (output / "alpha.html").is_file() and (output / "alpha" / "figure-1.png").is_file()
    partial = nbformat.read(output / "broken.ipynb", as_version=4)
    assert [o.ename for c in partial.cells if c.cell_type == "code" for o in c.outputs if "ename" in o] == [
        "ValueError"
    ]
    links = _links(output / "index.html")
    assert {"alpha.html", "broken.html"} <= set(links.hrefs)
    page = (output / "index.html").read_text(encoding="utf-8")
    assert '<article class="card failed" id="broken">' in page and "ValueError: boom 2" in page
    assert '<article class="card ok" id="alpha">' in page


def test_two_at_a_time_gives_the_same_reports_in_order_says_so_and_prints_each_with_its_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = tmp_path / "nbs"
    sources.mkdir()
    _broken(sources), _charts(sources), _cost(sources)
    output = tmp_path / "reports"

    code = main(["reports", "--notebooks", str(sources), "--output", str(output), "--jobs", "2"])

    out, err = capsys.readouterr()
    assert code == 1  # broken failed; the others ran beside it
    run_lines = [line for line in err.splitlines() if line.startswith("payment-examples reports: ")]
    assert run_lines[0].endswith(f"3 notebook(s), 2 at a time, into {output}")
    ended = sorted(line.split(": ")[1] for line in run_lines[1:])
    assert ended == ["alpha", "broken", "cost"]
    assert any(re.search(r"broken: FAILED in \d+ s \(\d/3 done\)", line) for line in run_lines)
    assert any(re.search(r"alpha: ran in \d+ s \(\d/3 done\)", line) for line in run_lines)
    assert re.search(r"^3 notebooks, 0 scenario runs, 1 failed, in \d+ s \(2 at a time\)$", out, re.M)
    page = (output / "index.html").read_text(encoding="utf-8")
    # the cards in notebook order, whichever ended first, and the index says the timings shared the machine
    assert page.index('id="alpha"') < page.index('id="broken"') < page.index('id="cost"')
    assert "2 notebooks ran at a time" in page
    assert "alpha total 2" in page and (output / "alpha" / "figure-2.png").is_file()


def test_jobs_below_one_are_refused(tmp_path: Path) -> None:
    sources = tmp_path / "nbs"
    sources.mkdir()
    _charts(sources)
    with pytest.raises(ConfigurationError, match="jobs must be at least 1, got 0"):
        run_notebooks(sources, tmp_path / "reports", jobs=0, progress=False)


def test_the_duration_is_read_in_seconds_then_minutes() -> None:
    assert [duration(s) for s in (0.4, 42.4, 59.6, 185, 3600)] == [
        "0 s",
        "42 s",
        "1 min 00 s",
        "3 min 05 s",
        "60 min 00 s",
    ]


def test_run_notebooks_raises_naming_the_notebook_and_cell_after_writing_the_index(tmp_path: Path) -> None:
    sources = tmp_path / "nbs"
    sources.mkdir()
    _broken(sources)

    with pytest.raises(NotebookRunError, match=r"broken in cell 3 \(execution count 3.*ValueError: boom 2") as error:
        run_notebooks(sources, tmp_path / "reports", progress=False)

    run = error.value.run
    assert [f.cell_index for f in run.failures] == [3] and run.failures[0].ename == "ValueError"
    assert run.index.is_file() and "card failed" in run.index.read_text(encoding="utf-8")
    assert (tmp_path / "reports" / "broken.html").is_file()


# -- scenarios -------------------------------------------------------------------------------------------------------


def test_each_scenario_is_rendered_and_compared_on_the_index(tmp_path: Path) -> None:
    sources = tmp_path / "nbs"
    sources.mkdir()
    _cost(sources)
    params = _yaml(tmp_path / "params.yaml", "cost:\n  price_per_million: 4.0\n")
    scenarios = _yaml(
        tmp_path / "scenarios.yaml",
        "notebook: cost\nscenarios:\n  small: {payments_per_month: 1000000}\n  big: {payments_per_month: 3000000}\n",
    )
    output = tmp_path / "reports"

    run = run_notebooks(sources, output, params_file=params, scenarios_file=scenarios, progress=False)

    assert not run.failures
    assert [r.scenario for r in run.scenarios] == ["small", "big"]  # file order, not sorted
    for name, payments in [("small", 1_000_000), ("big", 3_000_000)]:
        executed = output / "scenarios" / f"cost-{name}.ipynb"
        assert executed.is_file() and executed.with_suffix(".html").is_file()
        assert (output / "scenarios" / f"cost-{name}" / "figure-1.png").read_bytes().startswith(PNG_SIGNATURE)
        injected = next(
            c
            for c in nbformat.read(executed, as_version=4).cells
            if "injected-parameters" in c.metadata.get("tags", [])
        )
        assert f"payments_per_month = {payments}" in injected.source and "price_per_million = 4.0" in injected.source
    small, big = (r.headline for r in run.scenarios)
    assert small and small.breakdown == {"reads": 2.0, "writes": 4.0} and small.values["monthly cost"] == 6.0
    assert big and big.breakdown == {"reads": 6.0, "writes": 12.0} and big.values["monthly cost"] == 18.0
    # the notebook's own run is still there, with the parameters file only
    assert run.reports[0].headline and run.reports[0].headline.values["monthly cost"] == pytest.approx(0.006)
    assert run.comparison == output / "scenarios" / "cost-comparison.png"
    assert run.comparison.read_bytes().startswith(PNG_SIGNATURE)
    links = _links(run.index)
    assert "scenarios/cost-comparison.png" in links.images
    assert {"scenarios/cost-small.html", "scenarios/cost-big.html"} <= set(links.hrefs)
    page = run.index.read_text(encoding="utf-8")
    table = page[page.index('<h2 id="scenarios">') :]
    assert table.index("<td>small</td>") < table.index("<td>big</td>")
    assert '<td class="num">6</td>' in table and '<td class="num">18</td>' in table


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("- just\n- a list\n", "expected a mapping with 'notebook' and 'scenarios'"),
        ("scenarios:\n  a: {x: 1}\n", "'notebook' is missing"),
        ("notebook: [cost]\nscenarios:\n  a: {x: 1}\n", "'notebook' is missing"),
        ("notebook: cost\n", "'scenarios' is missing or empty"),
        ("notebook: cost\nscenarios: {}\n", "'scenarios' is missing or empty"),
        ("notebook: cost\nscenarios: [a, b]\n", "'scenarios' is missing or empty"),
        ("notebook: cost\nscenarios:\n  small: 3\n", "scenario small must be a mapping of parameters"),
        ("notebook: cost\nscenarios:\n  small:\n", "scenario small must be a mapping of parameters"),
        ("notebook: cost\nscenarios:\n  a/b: {}\n", "scenario name 'a/b' is not filename-safe"),
        ("notebook: cost\nscenarios:\n  ../up: {}\n", "scenario name '../up' is not filename-safe"),
        ("notebook: cost\nscenarios:\n  two words: {}\n", "scenario name 'two words' is not filename-safe"),
        ("notebook: cost\nscenario:\n  a: {}\n", "unknown key\\(s\\) scenario"),
        ("notebook: cost\nscenarios: {a: {x: 1}\n", "not valid YAML"),
    ],
)
def test_malformed_scenario_files_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = _yaml(tmp_path / "scenarios.yaml", content)
    with pytest.raises(ConfigurationError, match=message) as error:
        load_scenarios(path)
    assert str(path) in str(error.value)


def test_a_scenario_file_naming_an_unknown_notebook_or_parameter_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    sources = tmp_path / "nbs"
    sources.mkdir()
    _cost(sources)
    output = tmp_path / "reports"
    unknown_notebook = _yaml(tmp_path / "a.yaml", "notebook: costs\nscenarios:\n  small: {payments_per_month: 1}\n")
    unknown_key = _yaml(tmp_path / "b.yaml", "notebook: cost\nscenarios:\n  small: {payments_per_mnth: 1}\n")

    with pytest.raises(ConfigurationError, match=r"a\.yaml: notebook 'costs' does not exist"):
        run_notebooks(sources, output, scenarios_file=unknown_notebook, progress=False)
    with pytest.raises(ConfigurationError, match=r"b\.yaml \(scenario small\): notebook cost has no parameter "):
        run_notebooks(sources, output, scenarios_file=unknown_key, progress=False)
    assert not output.exists()


# -- parameters ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "alpha:\n  m: 5\n",
            r"params\.yaml: notebook alpha has no parameter 'm' in its parameters cell \(it declares: n\)",
        ),
        ("default:\n  n: 5\n", r"params\.yaml \(default\): notebook cost has no parameter 'n'"),
        ("alpah:\n  n: 5\n", r"params\.yaml: no notebook named 'alpah'"),
    ],
)
def test_unknown_parameter_keys_are_refused_before_anything_runs(tmp_path: Path, content: str, message: str) -> None:
    sources = tmp_path / "nbs"
    sources.mkdir()
    _charts(sources), _cost(sources)
    output = tmp_path / "reports"

    with pytest.raises(ConfigurationError, match=message):
        run_notebooks(sources, output, params_file=_yaml(tmp_path / "params.yaml", content), progress=False)
    assert not output.exists()


@pytest.mark.parametrize("name", ["ci.yaml", "report.yaml"])
def test_the_parameter_files_name_only_parameters_of_the_real_notebooks(name: str) -> None:
    params = load_params(NOTEBOOKS / "params" / name)
    assert params  # a file that names nothing would check nothing
    check_parameters(sorted(NOTEBOOKS.glob("*.ipynb")), params, origin=name)


def test_the_scenario_file_names_a_real_notebook_and_only_its_parameters() -> None:
    scenarios = load_scenarios(NOTEBOOKS / "params" / "scenarios.yaml")
    assert list(scenarios.scenarios) == ["100k", "1M", "10M"]
    check_parameters(sorted(NOTEBOOKS.glob("*.ipynb")), {}, scenarios)


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_every_real_notebook_leads_its_card_with_one_sentence_and_its_figure(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    tagged = [c for c in notebook.cells if "headline" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    headline = read_headline(notebook, path.stem)
    assert headline and headline.text
    # one line (not a table, not a log), with the measured figure in it
    assert "\n" not in headline.text and re.search(r"\d", headline.text), headline.text
    assert not re.search(r" {3,}", headline.text), headline.text  # no column alignment: a sentence


def test_output_folder_must_not_be_the_sources() -> None:
    with pytest.raises(ConfigurationError, match="must not be the notebooks folder"):
        run_notebooks(NOTEBOOKS, NOTEBOOKS)


@pytest.mark.parametrize(
    ("content", "message"),
    [("- just\n- a list\n", "expected a mapping"), ("00_getting_started: 3\n", "expected a mapping")],
)
def test_malformed_parameter_files_are_refused(tmp_path: Path, content: str, message: str) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(content)
    with pytest.raises(ConfigurationError, match=message):
        load_params(params)


def test_missing_parameter_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_params(tmp_path / "nope.yaml")
