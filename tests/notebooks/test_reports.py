"""The main job's machinery: every notebook runs under papermill with the CI parameters into a separate folder,
without errors, and is rendered to HTML; bad parameter files and unsafe output folders are refused."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from payment_examples.errors import ConfigurationError
from payment_examples.reports import load_params, run_notebooks

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def test_every_notebook_runs_with_ci_parameters(tmp_path: Path) -> None:
    written = run_notebooks(NOTEBOOKS, tmp_path, params_file=NOTEBOOKS / "params" / "ci.yaml")

    sources = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert sorted(p.name for p in written if p.suffix == ".ipynb") == sources
    for source in sources:
        executed = nbformat.read(tmp_path / source, as_version=4)
        code = [cell for cell in executed.cells if cell.cell_type == "code"]
        assert all(cell.execution_count for cell in code), f"{source}: a cell did not run"
        assert not [o for cell in code for o in cell.outputs if o.output_type == "error"]
        # papermill injected the CI parameters after the tagged cell
        injected = [cell for cell in code if "injected-parameters" in cell.metadata.get("tags", [])]
        assert len(injected) == 1
        html = (tmp_path / source).with_suffix(".html").read_text()
        assert "<html" in html and len(html) > 10_000


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
