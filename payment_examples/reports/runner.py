"""Run the notebooks with papermill into a reports folder (never over the sources): executed notebooks, HTML, every
chart as a PNG file, optionally one notebook once per scenario with a comparison chart, and ``index.html``.

Parameters are checked against each notebook's parameters cell before anything runs. A notebook that fails does
not stop the others: its partial output is still rendered, its card on the index is marked failed, and the run
raises ``NotebookRunError`` (or, with ``raise_on_failure=False``, reports it in ``ReportRun.failures``)."""

from __future__ import annotations

import multiprocessing
import re
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from payment_examples.core import Clock, SystemClock
from payment_examples.core import ConfigurationError, PaymentExamplesError
from payment_examples.reports.index import (
    NotebookFailure,
    NotebookReport,
    compare_scenarios,
    draw_comparison,
    notebook_title,
    read_headline,
    write_figures,
    write_index,
)

# A scenario name becomes part of file names: letters, digits, '.', '_', '-', starting with a letter or digit.
SCENARIO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Scenarios:
    """A scenarios file: the notebook (file stem) to render once per scenario, and each scenario's parameters."""

    source: Path
    notebook: str
    scenarios: dict[str, dict[str, Any]]  # in file order


@dataclass(frozen=True)
class ReportRun:
    """What a run wrote: the notebooks' reports, the scenarios' reports and chart, the index, every file."""

    reports: list[NotebookReport]
    scenarios: list[NotebookReport]
    comparison: Path | None
    index: Path
    written: list[Path]
    seconds: float = 0.0  # the whole run, wall clock
    jobs: int = 1  # notebooks run at a time

    @property
    def failed(self) -> list[NotebookReport]:
        return [r for r in [*self.reports, *self.scenarios] if r.failure]

    @property
    def failures(self) -> list[NotebookFailure]:
        return [r.failure for r in self.failed if r.failure]


class NotebookRunError(PaymentExamplesError):
    """One or more notebooks raised; every other report and the index were still written (``run``)."""

    title = "Notebook failed"

    def __init__(self, run: ReportRun) -> None:
        failures = "; ".join(str(f) for f in run.failures)
        super().__init__(f"{len(run.failures)} notebook run(s) failed: {failures} (index: {run.index})")
        self.run = run


@dataclass(frozen=True)
class _Job:
    name: str
    source: Path
    parameters: dict[str, Any]
    folder: Path
    scenario: str | None = None


def load_params(params_file: str | Path | None) -> dict[str, dict[str, Any]]:
    """Read a parameters YAML file: ``{notebook stem or "default": {name: value}}``."""
    if params_file is None:
        return {}
    path = Path(params_file)
    data = _read_yaml(path) or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigurationError(f"{path}: expected a mapping of notebook name -> mapping of parameters")
    return data


def load_scenarios(scenarios_file: str | Path) -> Scenarios:
    """Read and check a scenarios file (``notebook: <stem>``, ``scenarios: {name: {parameter: value}}``)."""
    path = Path(scenarios_file)
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: expected a mapping with 'notebook' and 'scenarios'")
    if unknown := sorted(set(map(str, data)) - {"notebook", "scenarios"}):
        raise ConfigurationError(f"{path}: unknown key(s) {', '.join(unknown)} (expected 'notebook' and 'scenarios')")
    notebook = data.get("notebook")
    if not isinstance(notebook, str) or not notebook:
        raise ConfigurationError(
            f"{path}: 'notebook' is missing (the file stem of the notebook, e.g. 04_cost_estimation)"
        )
    scenarios = data.get("scenarios")
    if not isinstance(scenarios, dict) or not scenarios:
        raise ConfigurationError(f"{path}: 'scenarios' is missing or empty (a mapping of name -> parameters)")
    for name, parameters in scenarios.items():
        if not SCENARIO_NAME.fullmatch(str(name)):
            raise ConfigurationError(
                f"{path}: scenario name {str(name)!r} is not filename-safe "
                "(letters, digits, '.', '_' and '-', starting with a letter or digit)"
            )
        if not isinstance(parameters, dict):
            raise ConfigurationError(f"{path}: scenario {name!s} must be a mapping of parameters, got {parameters!r}")
    return Scenarios(path, notebook, {str(name): dict(parameters) for name, parameters in scenarios.items()})


def check_parameters(
    notebooks: Sequence[Path],
    params: Mapping[str, Mapping[str, Any]],
    scenarios: Scenarios | None = None,
    *,
    origin: str = "parameters",
) -> None:
    """Refuse (ConfigurationError) a parameter that a notebook's parameters cell does not declare, a params key that
    names no notebook, and a scenarios file whose notebook is not among ``notebooks``."""
    import papermill

    by_stem = {path.stem: path for path in notebooks}
    for key in params:
        if key != "default" and key not in by_stem:
            raise ConfigurationError(f"{origin}: no notebook named {key!r} (notebooks: {', '.join(by_stem)})")
    if scenarios is not None and scenarios.notebook not in by_stem:
        raise ConfigurationError(
            f"{scenarios.source}: notebook {scenarios.notebook!r} does not exist (notebooks: {', '.join(by_stem)})"
        )
    declared: dict[str, set[str]] = {}

    def check(stem: str, names: Sequence[str], where: str) -> None:
        if not names:
            return
        if stem not in declared:
            declared[stem] = set(papermill.inspect_notebook(str(by_stem[stem])))
        for name in names:
            if name not in declared[stem]:
                known = ", ".join(sorted(declared[stem])) or "none"
                raise ConfigurationError(
                    f"{where}: notebook {stem} has no parameter {name!r} in its parameters cell (it declares: {known})"
                )

    for stem in by_stem:
        check(stem, list(params.get("default", {})), f"{origin} (default)")
        check(stem, list(params.get(stem, {})), origin)
    if scenarios is not None:
        for name, values in scenarios.scenarios.items():
            check(scenarios.notebook, list(values), f"{scenarios.source} (scenario {name})")


def run_notebooks(
    notebooks: str | Path,
    output: str | Path,
    *,
    params_file: str | Path | None = None,
    html: bool = True,
    scenarios_file: str | Path | None = None,
    clock: Clock | None = None,
    progress: bool = True,
    raise_on_failure: bool = True,
    jobs: int = 1,
) -> ReportRun:
    """Execute each ``*.ipynb`` in ``notebooks`` into ``output`` with papermill (and the scenarios' notebook once
    per scenario into ``output/scenarios``), write the PNGs, HTML and ``output/index.html``.

    ``jobs`` notebooks run at a time, each in a process of its own with its own kernel and engine (the index says
    how many shared the machine: their timings did). ``progress`` prints a line to stderr as each one starts and
    ends, with its duration."""
    if jobs < 1:
        raise ConfigurationError(f"jobs must be at least 1, got {jobs}")
    started = time.perf_counter()
    run_at = (clock or SystemClock()).now()
    source_dir, output_dir = Path(notebooks).resolve(), Path(output).resolve()
    if output_dir == source_dir:
        raise ConfigurationError("the output folder must not be the notebooks folder (sources are never overwritten)")
    sources = sorted(source_dir.glob("*.ipynb"))
    if not sources:
        raise ConfigurationError(f"no notebooks in {source_dir}")
    params = load_params(params_file)
    scenarios = load_scenarios(scenarios_file) if scenarios_file is not None else None
    check_parameters(sources, params, scenarios, origin=str(params_file or "parameters"))
    jobs_list = _jobs(sources, params, scenarios, output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    say = _Progress(len(jobs_list), enabled=progress)
    workers = min(jobs, len(jobs_list))
    say(f"running {len(jobs_list)} notebook(s), {workers} at a time, into {output_dir}")
    if workers == 1:
        results = []
        for job in jobs_list:
            say(f"{job.name}: running")
            results.append(say.done(_timed_run(job, source_dir, html)))
    else:
        # spawn, not fork: each worker starts clean (no copy of this process's threads, sockets or engines)
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_timed_run, job, source_dir, html) for job in jobs_list]
            for future in as_completed(futures):
                say.done(future.result())
            results = [future.result() for future in futures]  # in job order, whichever ended first
    reports = [report for report, _ in results]
    regular = [r for r in reports if r.scenario is None]
    scenario_reports = [r for r in reports if r.scenario is not None]
    chart = _comparison_chart(scenarios, scenario_reports, output_dir / "scenarios") if scenarios else None
    index = write_index(output_dir, regular, run_at=run_at, scenarios=scenario_reports, comparison=chart, jobs=workers)
    written = [p for r in reports for p in (r.notebook, r.html, *r.figures) if p]
    written += [chart, index] if chart else [index]
    run = ReportRun(regular, scenario_reports, chart, index, written, time.perf_counter() - started, workers)
    if run.failures and raise_on_failure:
        raise NotebookRunError(run)
    return run


def duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"``: how long a notebook or a whole run took, for people."""
    whole = round(seconds)
    return f"{whole} s" if whole < 60 else f"{whole // 60} min {whole % 60:02d} s"


class _Progress:
    """One line per event on stderr: a notebook starts, a notebook ends (with its duration and the count so far)."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total, self.finished, self.enabled = total, 0, enabled

    def __call__(self, line: str) -> None:
        if self.enabled:
            print(f"payment-examples reports: {line}", file=sys.stderr, flush=True)

    def done(self, result: tuple[NotebookReport, float]) -> tuple[NotebookReport, float]:
        report, seconds = result
        self.finished += 1
        state = "ran" if report.ok else "FAILED"
        self(f"{report.name}: {state} in {duration(seconds)} ({self.finished}/{self.total} done)")
        return result


def _timed_run(job: _Job, cwd: Path, html: bool) -> tuple[NotebookReport, float]:
    started = time.perf_counter()
    report = _run(job, cwd, html=html)
    return report, time.perf_counter() - started


def _jobs(
    sources: Sequence[Path], params: Mapping[str, Mapping[str, Any]], scenarios: Scenarios | None, output: Path
) -> list[_Job]:
    def merged(stem: str) -> dict[str, Any]:
        return {**params.get("default", {}), **params.get(stem, {})}

    jobs = [_Job(source.stem, source, merged(source.stem), output) for source in sources]
    if scenarios is not None:
        source = next(s for s in sources if s.stem == scenarios.notebook)
        jobs += [
            _Job(f"{source.stem}-{name}", source, {**merged(source.stem), **values}, output / "scenarios", name)
            for name, values in scenarios.scenarios.items()
        ]
    return jobs


def _comparison_chart(scenarios: Scenarios, reports: Sequence[NotebookReport], folder: Path) -> Path | None:
    comparison = compare_scenarios(reports)
    if comparison is None:
        return None
    target = folder / f"{scenarios.notebook}-comparison.png"
    return draw_comparison(comparison, target, title=f"{scenarios.notebook}: scenarios compared")


def _run(job: _Job, cwd: Path, *, html: bool) -> NotebookReport:
    """Execute one job; a failure is recorded (with its partial output), never raised."""
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from payment_examples.reports.kernels import AsyncIpcKernelManager

    target = job.folder / f"{job.name}.ipynb"
    target.unlink(missing_ok=True)
    target.with_suffix(".html").unlink(missing_ok=True)
    job.folder.mkdir(parents=True, exist_ok=True)
    failure = None
    try:
        papermill.execute_notebook(
            str(job.source),
            str(target),
            parameters=job.parameters,
            cwd=str(cwd),
            progress_bar=False,
            kernel_name="python3",
            kernel_manager_class=AsyncIpcKernelManager,  # over IPC: no TCP port, no unencrypted-TCP warning
        )
    except PapermillExecutionError as error:
        first_line = next(iter(error.source.strip().splitlines()), "")
        failure = NotebookFailure(job.name, error.ename, error.evalue, error.cell_index, error.exec_count, first_line)
    except Exception as error:  # a dead kernel, a timeout: still reported on the index, and the others still run
        failure = NotebookFailure(job.name, type(error).__name__, str(error))
    title = notebook_title(nbformat.read(job.source, as_version=4), job.source.stem)
    if not target.is_file():
        return NotebookReport(job.name, title, job.parameters, None, None, failure=failure, scenario=job.scenario)
    executed = nbformat.read(target, as_version=4)
    headline = None
    try:
        headline = read_headline(executed, job.name)
    except ConfigurationError as error:
        failure = failure or NotebookFailure(job.name, "ConfigurationError", str(error))
    return NotebookReport(
        job.name,
        title,
        job.parameters,
        target,
        _to_html(executed, target) if html else None,
        write_figures(executed, job.folder / job.name),
        headline,
        failure,
        job.scenario,
    )


def _read_yaml(path: Path) -> Any:
    import yaml

    if not path.is_file():
        raise ConfigurationError(f"file {path} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigurationError(f"{path}: not valid YAML: {error}") from None


def _to_html(notebook: Any, path: Path) -> Path:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(notebook)
    target = path.with_suffix(".html")
    target.write_text(body, encoding="utf-8")
    return target
