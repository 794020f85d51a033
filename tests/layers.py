"""The package's import layers, checked over ``ast`` (no dependency): ``make lint`` runs ``python -m tests.layers``.

Every ``import`` in ``payment_examples/`` counts, wherever it is: at the top, inside a function (a lazy import is
still an arrow) or under ``if TYPE_CHECKING:``. An arrow goes from a module's folder (its *unit*: ``core``,
``payments``... or ``cli`` for a module at the package root) to the imported module's folder.

Contracts (``LAYERS``, lowest first):

1. every unit belongs to a layer (a new folder must be placed);
2. no arrow runs up: a unit imports only its own layer or lower ones;
3. siblings in a layer are independent, except for the arrows declared in ``ALLOWED`` (each with its reason);
4. no import circle between modules (a circle between units is an arrow running up, or a declared arrow
   answered by an undeclared one).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

PACKAGE = "payment_examples"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# Lowest first. A layer is a tuple of sibling units.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core",),  # settings, secrets, clients, clock, money, validation, errors, logs, measure: no payment knowledge
    ("tables",),  # every PynamoDB table and create_tables: the shapes, no behaviour
    ("engine",),  # the embedded engine (moto/dynalite processes, the KMS key, the stream poller)
    ("audit",),  # the hash chain over AuditLog and the stream projection: below the domain, which it records
    ("payments",),  # the domain: state machine, PaymentService, batch creation, pagination, seeds
    ("idempotency", "cost", "encryption", "accounts", "reconciliation", "checkout", "webhooks"),  # the patterns
    ("handlers",),  # the Lambda adapters and request auth
    ("harness", "reports"),  # what drives the handlers (consumer, load, cost workload); the papermill runner
    ("cli",),  # the console script: everything
)

# Declared arrows between siblings of one layer: (from, to) -> why.
ALLOWED: Mapping[tuple[str, str], str] = {
    ("checkout", "idempotency"): "checkout and recover run the processor step under the idempotency middleware",
    ("webhooks", "encryption"): "an endpoint's signing secrets are stored encrypted (encryption.FieldEncryptor)",
}


def unit_of(module: str) -> str | None:
    """``payment_examples.core.config`` -> ``core``; ``payment_examples.cli`` -> ``cli``; the package itself: None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the package's modules it imports (``from pkg import mod`` resolves to ``pkg.mod`` when it is one)."""
    package = root.name
    modules = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the module's package
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    candidate = f"{source}.{alias.name}"
                    targets.add(candidate if candidate in modules else source)
        graph[name] = {_known(t, modules) for t in targets if t == package or t.startswith(package + ".")} - {name}
    return graph


def _known(target: str, modules: Iterable[str]) -> str:
    """The longest module of the package that ``target`` names (``a.b.Name`` -> ``a.b``)."""
    known = set(modules)
    while target not in known and "." in target:
        target = target.rsplit(".", 1)[0]
    return target


def circles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The import circles (strongly connected components of more than one module, or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan; the package is small enough for recursion
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def problems(
    graph: Mapping[str, set[str]],
    layers: Sequence[Sequence[str]] = LAYERS,
    allowed: Mapping[tuple[str, str], str] = ALLOWED,
) -> list[str]:
    """Every broken contract, one line each (empty: the layout holds)."""
    level = {unit: i for i, layer in enumerate(layers) for unit in layer}
    found: list[str] = []
    for module in sorted(graph):
        unit = unit_of(module)
        if unit is not None and unit not in level:
            found.append(f"{module}: its folder {unit!r} is in no layer (add it to LAYERS)")
            continue
        for target in sorted(graph[module]):
            to = unit_of(target)
            if unit is None or to is None or to == unit or to not in level:
                continue
            if level[to] > level[unit]:
                found.append(f"{module} -> {target}: runs up ({unit} is below {to})")
            elif level[to] == level[unit] and (unit, to) not in allowed:
                found.append(f"{module} -> {target}: {unit} and {to} are siblings (declare it in ALLOWED, or move it)")
    found.extend("import circle: " + " -> ".join(component) for component in circles(graph))
    return found


def main() -> int:
    graph = import_graph()
    found = problems(graph)
    arrows = sum(len(targets) for targets in graph.values())
    for line in found:
        print(line, file=sys.stderr)
    layers = " <- ".join("(" + ", ".join(layer) + ")" if len(layer) > 1 else layer[0] for layer in LAYERS)
    print(f"layers: {layers}; {len(graph)} modules, {arrows} import arrows, {len(found)} problem(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
