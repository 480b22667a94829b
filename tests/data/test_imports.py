"""Imports inside ``langfield.data``: downward only, module level only, and no cycle between its modules."""

from __future__ import annotations

import ast
from pathlib import Path

import langfield.data

DATA = Path(langfield.data.__file__).parent
#: Packages that ``data`` may import (the rows above it in docs/design.md), and ``data`` itself.
ALLOWED = {"types", "configs", "_checks", "geometry", "io", "kernels", "ops", "eval", "pretrained", "fields", "generation", "data"}


def _module_name(path: Path) -> str:
    parts = ("langfield", "data", *path.relative_to(DATA).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _langfield_imports(tree: ast.AST):
    """``(node, imported module)`` of every ``langfield`` import, at any depth."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("langfield"):
                    yield node, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("langfield"):
            yield node, node.module


def _graph():
    modules = {_module_name(p): p for p in DATA.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges[name] = (tree, [target for _, target in _langfield_imports(tree)])
    return modules, edges


def test_data_imports_point_downward_only():
    _, edges = _graph()
    for name, (_, targets) in edges.items():
        for target in targets:
            package = target.split(".")[1] if target.count(".") else target
            assert package in ALLOWED, f"{name} imports {target}: 'data' may only import {sorted(ALLOWED)}"


def test_no_function_level_langfield_imports_in_data():
    modules, edges = _graph()
    for name, (tree, _) in edges.items():
        top_level = {id(node) for node in tree.body}
        for node, target in _langfield_imports(tree):
            assert id(node) in top_level, f"{modules[name]}:{node.lineno} imports {target} inside a function or block"


def test_no_import_cycle_between_data_modules():
    _, edges = _graph()
    graph = {name: {t for t in targets if t in edges and t != name} for name, (_, targets) in edges.items()}
    state: dict = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError(f"import cycle inside langfield.data: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
