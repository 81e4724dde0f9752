"""The package's floor plan: no import cycle anywhere, and the layers of the README's architecture screen
(also checked by `lint-imports` in `make test`, from the contracts in pyproject.toml)."""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest

LAYERS = ("common", "strategies", "server|client", "app|simulations")  # bottom to top


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("fedcurate")  # every import, at module level or inside a function


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_in_the_package(graph):
    # Execute
    cycles = _cycles(graph)

    # Assert: each cycle is listed with the imports that close it
    detail = [" -> ".join(c) for c in cycles]
    assert cycles == [], "import cycles:\n" + "\n".join(detail)


def test_the_cycle_finder_finds_a_cycle():
    # Prepare: a graph with one known cycle a -> b -> c -> a, and a tail d -> a
    g = grimp.ImportGraph()
    for m in "abcd":
        g.add_module(m)
    for a, b in [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]:
        g.add_import(importer=a, imported=b)

    # Execute / Assert
    assert _cycles(g) == [["a", "b", "c"]]


def test_each_layer_imports_only_the_layers_below(graph):
    # Prepare
    level = {pkg: i for i, names in enumerate(LAYERS) for pkg in names.split("|")}
    bad = []
    # Execute
    for module in sorted(graph.modules):
        parts = module.split(".")
        if len(parts) < 2 or parts[1] not in level:
            continue
        for imported in graph.find_modules_directly_imported_by(module):
            other = imported.split(".")
            if len(other) < 2 or other[0] != "fedcurate" or other[1] not in level or other[1] == parts[1]:
                continue
            if level[other[1]] >= level[parts[1]] and not {parts[1], other[1]} <= {"app", "simulations"}:
                bad.append(f"{module} -> {imported}")
    # Assert
    assert bad == []


def test_no_module_below_the_application_layer_has_several_jobs_in_one_long_file():
    # Prepare
    root = Path(__file__).parents[1] / "fedcurate"
    lengths = {str(p.relative_to(root)): len(p.read_text(encoding="utf-8").splitlines())
               for layer in ("common", "client", "server", "strategies") for p in (root / layer).rglob("*.py")}
    # Assert
    assert {p: n for p, n in lengths.items() if n > 400} == {}
    assert lengths["server/orchestrator.py"] < 250
