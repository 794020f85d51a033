"""The import-layer check (tests/layers.py, run by ``make lint``) holds for the package and catches a circle, an
arrow running up, an undeclared arrow between siblings and a folder in no layer, on a synthetic package."""

from __future__ import annotations

from pathlib import Path

from tests import layers

LAYERS = (("core",), ("domain",), ("left", "right"), ("top",))


def package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = pkg / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(pkg).parents:
            (pkg / parent / "__init__.py").touch()
        path.write_text(text)
    return pkg


def found(root: Path, files: dict[str, str], allowed: dict[tuple[str, str], str] | None = None) -> list[str]:
    return layers.problems(layers.import_graph(package(root, files)), LAYERS, allowed or {})


def test_the_package_keeps_its_layers() -> None:
    graph = layers.import_graph()
    assert "payment_examples.core.config" in graph and "payment_examples.cli" in graph
    assert layers.problems(graph) == []
    # every folder of the package is placed, and the Keyring circle is gone: settings import no pattern
    assert not {t for t in graph["payment_examples.core.config"] if not t.startswith("payment_examples.core.")}


def test_a_clean_synthetic_package_passes(tmp_path: Path) -> None:
    assert found(tmp_path, {
        "core/a.py": "import os\n",
        "domain/b.py": "from pkg.core import a\n",
        "left/c.py": "from pkg.domain.b import thing\nfrom . import d\n",
        "left/d.py": "",
        "top/e.py": "import pkg.left.c\nimport pkg.right\n",
    }) == []  # fmt: skip


def test_an_arrow_running_up_is_caught_even_when_lazy_or_type_only(tmp_path: Path) -> None:
    problems = found(tmp_path, {
        "core/a.py": "def f():\n    from pkg.domain.b import thing\n",
        "domain/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.top import e\n",
        "top/e.py": "",
    })  # fmt: skip
    assert "pkg.core.a -> pkg.domain.b: runs up (core is below domain)" in problems
    assert "pkg.domain.b -> pkg.top.e: runs up (domain is below top)" in problems


def test_a_circle_is_caught(tmp_path: Path) -> None:
    files = {"left/c.py": "from pkg.left import d\n", "left/d.py": "from .c import x\n"}
    assert found(tmp_path, files) == ["import circle: pkg.left.c -> pkg.left.d"]
    files = {"left/c.py": "import pkg.right.d\n", "right/d.py": "from pkg.left.c import y\n"}
    circle = found(tmp_path / "two", files, allowed={("left", "right"): "why", ("right", "left"): "why"})
    assert circle == ["import circle: pkg.left.c -> pkg.right.d"]  # declared both ways, still a circle


def test_siblings_need_a_declared_arrow_and_a_new_folder_needs_a_layer(tmp_path: Path) -> None:
    files = {"left/c.py": "from pkg.right.d import z\n", "right/d.py": "", "extra/f.py": ""}
    assert found(tmp_path, files) == [
        "pkg.extra: its folder 'extra' is in no layer (add it to LAYERS)",
        "pkg.extra.f: its folder 'extra' is in no layer (add it to LAYERS)",
        "pkg.left.c -> pkg.right.d: left and right are siblings (declare it in ALLOWED, or move it)",
    ]
    assert found(tmp_path / "declared", files, allowed={("left", "right"): "why"})[-1].startswith("pkg.extra.f")
