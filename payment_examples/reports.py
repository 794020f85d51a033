"""Run the notebooks with papermill into a reports folder (never over the sources), and render them to HTML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from payment_examples.errors import ConfigurationError


def load_params(params_file: str | Path | None) -> dict[str, dict[str, Any]]:
    """Read a parameters YAML file: ``{notebook stem or "default": {name: value}}``."""
    if params_file is None:
        return {}
    import yaml

    path = Path(params_file)
    if not path.is_file():
        raise ConfigurationError(f"parameters file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigurationError(f"{path}: expected a mapping of notebook name -> mapping of parameters")
    return data


def run_notebooks(
    notebooks: str | Path,
    output: str | Path,
    *,
    params_file: str | Path | None = None,
    html: bool = True,
) -> list[Path]:
    """Execute each ``*.ipynb`` in ``notebooks`` into ``output`` with papermill; returns the files written."""
    import papermill

    source_dir = Path(notebooks).resolve()
    output_dir = Path(output).resolve()
    if output_dir == source_dir:
        raise ConfigurationError("the output folder must not be the notebooks folder (sources are never overwritten)")
    sources = sorted(source_dir.glob("*.ipynb"))
    if not sources:
        raise ConfigurationError(f"no notebooks in {source_dir}")
    params = load_params(params_file)
    output_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for source in sources:
        target = output_dir / source.name
        parameters = {**params.get("default", {}), **params.get(source.stem, {})}
        papermill.execute_notebook(
            str(source),
            str(target),
            parameters=parameters,
            cwd=str(source_dir),
            progress_bar=False,
            kernel_name="python3",
        )
        written.append(target)
        if html:
            written.append(_to_html(target))
    return written


def _to_html(notebook: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    target = notebook.with_suffix(".html")
    target.write_text(body, encoding="utf-8")
    return target
