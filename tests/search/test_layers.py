"""The import graph of funnelbench has no circle, and funnelbench.search imports only downwards
(vocabulary, storage, liveness, the search, results: each floor imports only the floors below
it or its own).

Module-level imports only: an import inside a function, or under ``if TYPE_CHECKING:``, runs
after every module has loaded (or never), so it cannot close a circle at import time. Relative
imports are resolved against the importing module; ``from pkg import name`` is an edge to
``pkg.name`` where that is a module, else to ``pkg``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "funnelbench"

# funnelbench.search's floors, bottom first. A module imports only modules of its own floor or below.
FLOORS = [
    [
        "vocabulary",
        "space",
        "budget",
        "feasible",
        "asha",
        "samplers",
    ],  # words, the space and budgets it searches, the rungs
    ["faults", "journal", "storage", "locks", "folders", "readonly"],  # storage
    ["accounting", "signals", "liveness"],  # liveness
    ["pruners", "settings", "studies", "trial", "plan", "loop", "workers", "run"],  # the search
    ["records", "importances", "summary", "plots", "compare"],  # results
    ["report", "study"],  # one import each for the reader and for the search (they define nothing)
]


def module_files(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of the package: dotted name -> file (a package's name -> its __init__.py)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(tree: ast.Module):
    """The import statements that run when the module is imported (not in functions or classes'
    methods, not under ``if TYPE_CHECKING:``)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop(0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node):
                todo[:0] = node.body + node.orelse
        elif isinstance(node, (ast.Try, ast.With)):
            todo[:0] = [
                *node.body,
                *getattr(node, "orelse", []),
                *getattr(node, "finalbody", []),
                *[n for h in getattr(node, "handlers", []) for n in h.body],
            ]


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the package's modules it imports at module level."""
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets = []
        for node in _module_level_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets += [a.name for a in node.names]
                continue
            base = node.module or ""
            if node.level:  # relative: from the importing module's package, one level up per extra dot
                base = ".".join(here[: len(here) - (node.level - 1)] + ([node.module] if node.module else []))
            # "from pkg import name": the module pkg.name where there is one, else pkg
            targets += [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
        edges = set()
        for target in targets:
            while target and target not in files:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The circles of the graph: its strongly connected components of more than one module (and
    any module that imports itself), by Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_funnelbench_has_no_import_circle():
    graph = import_graph(module_files())
    assert "funnelbench.search.study" in graph and graph["funnelbench.search.run"]  # the walk found the modules
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_circle_it_is_given(tmp_path):
    pkg = tmp_path / "funnelbench"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .a import x\n")
    (pkg / "sub" / "a.py").write_text("from .b import y\nx = 1\n")
    (pkg / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import z\n"
        "def f():\n    from .a import x\n\nfrom .. import other\ny = 2\n"
    )
    (pkg / "sub" / "c.py").write_text("from . import b\nz = 3\n")
    (pkg / "other.py").write_text("")
    graph = import_graph(module_files(tmp_path))
    assert graph["funnelbench.sub.b"] == {"funnelbench.other"}  # nothing from a function or TYPE_CHECKING
    assert cycles(graph) == []
    (pkg / "other.py").write_text("from .sub.c import z\n")  # other -> c -> b -> other
    assert cycles(import_graph(module_files(tmp_path))) == [
        ["funnelbench.other", "funnelbench.sub.b", "funnelbench.sub.c"]
    ]


def _floor(module: str) -> int | None:
    parts = module.split(".")
    if parts[:2] != [PACKAGE, "search"] or len(parts) < 3:
        return None
    return next((i for i, floor in enumerate(FLOORS) if parts[2] in floor), None)


def test_every_search_module_has_a_floor():
    names = {m.split(".")[2] for m in module_files() if m.startswith("funnelbench.search.")}
    assert sorted(n for n in names if _floor(f"funnelbench.search.{n}") is None) == []


@pytest.mark.parametrize("module", sorted(m for m in module_files() if _floor(m) is not None))
def test_search_modules_import_only_downwards(module):
    graph = import_graph(module_files())
    upward = [t for t in graph[module] if _floor(t) is not None and _floor(t) > _floor(module)]
    assert upward == [], f"{module} (floor {_floor(module)}) imports from a higher floor: {upward}"


def test_no_search_module_is_over_600_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / PACKAGE / "search").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 600
    }
    assert long == {}
