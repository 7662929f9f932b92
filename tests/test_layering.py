"""The package's layout stays layered: no import cycles, no lower layer importing a higher one.

Every ``import`` of a ``fedpit`` module counts, function-local ones included (a local
import hides a cycle from Python, not from this test).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS: dict[str, int] = {
    "errors": 0,
    "jsonio": 0,
    "cachedir": 0,
    "config": 1,
    "runs": 2,
    "data": 3,
    "model": 4,
    "adapters": 5,
    "lm": 6,
    "synth": 7,
    "privacy": 8,
    "fed": 9,
    "eval": 9,
    "report": 10,
    "deploy": 10,
    "cli": 11,
    "__main__": 12,
}
"""Rank of each top-level module or package: a module may import from its own package
and from lower ranks only. A leaf module (one importing nothing from ``fedpit``, such as
``privacy.accounting``) may be imported from anywhere."""


def modules(src: Path = SRC) -> dict[str, Path]:
    """Dotted name → file of every module of the package."""
    out = {}
    for path in sorted((src / "fedpit").rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _owner(target: str, known: dict[str, Path]) -> str | None:
    """The module that defines ``target`` (a module or a name inside one)."""
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in known:
            return ".".join(parts[:i])
    return None


def imports(path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The ``fedpit`` modules one file imports, wherever in the file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            if target.startswith("fedpit"):
                owner = _owner(target, known)
                if owner is not None:
                    yield owner


def graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module → the modules it imports (itself and its own package's ``__init__`` excluded)."""
    known = modules(src)
    return {
        name: {m for m in imports(path, known) if m != name and not name.startswith(m + ".")}
        for name, path in known.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def top(module: str) -> str:
    """``fedpit.fed.client`` → ``fed``; ``fedpit`` → ``fedpit``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def violations(edges: dict[str, set[str]], layers: dict[str, int]) -> list[str]:
    """Imports that go up (or sideways into another package of the same rank)."""
    out = []
    for src, targets in sorted(edges.items()):
        for dst in sorted(targets):
            if not edges.get(dst) or top(src) == top(dst) or top(src) == "fedpit":
                continue  # a leaf, the same package, or the package's own __init__
            if layers[top(src)] <= layers[top(dst)]:
                out.append(
                    f"{src} (layer {layers[top(src)]}) imports {dst} (layer {layers[top(dst)]})"
                )
    return out


def test_every_top_level_module_has_a_layer() -> None:
    unranked = {top(m) for m in modules()} - set(LAYERS) - {"fedpit"}
    assert not unranked, f"give these a rank in LAYERS: {sorted(unranked)}"


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_no_lower_layer_imports_a_higher_one() -> None:
    assert violations(graph(), LAYERS) == []


def test_the_checks_see_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    pkg = tmp_path / "fedpit"
    (pkg / "config").mkdir(parents=True)
    (pkg / "fed").mkdir()
    for init in (pkg, pkg / "config", pkg / "fed"):
        (init / "__init__.py").write_text("")
    (pkg / "config" / "schema.py").write_text("def f():\n    from fedpit.fed.client import g\n")
    (pkg / "fed" / "client.py").write_text("from fedpit.config.schema import f\n")
    edges = graph(tmp_path)
    assert cycles(edges) == [["fedpit.config.schema", "fedpit.fed.client"]]
    assert violations(edges, {"config": 1, "fed": 9}) == [
        "fedpit.config.schema (layer 1) imports fedpit.fed.client (layer 9)"
    ]


@pytest.mark.parametrize("leaf", ["fedpit.privacy.accounting", "fedpit.errors", "fedpit.cachedir"])
def test_leaves_import_nothing_from_the_package(leaf: str) -> None:
    assert graph()[leaf] == set()
