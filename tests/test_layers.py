"""The layer contract of docs/design.md, enforced: every import inside ``src/langfield``
(module-level and inside functions, absolute and relative) points to a row above its own.

A package may import packages of the rows above it, and itself. It fails on
(a) an import of a package in a later row of the table (a higher layer),
(b) an import between two different packages of the same row,
(c) a cycle between packages (implied by (a)/(b), but reported as the cycle it makes),
and on a package that is not in the table at all. ``langfield/__init__.py`` is the
top and may import anything (lazily).
"""

from __future__ import annotations

import ast
import functools
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = SRC / "langfield"

# The layer order (docs/design.md). Row i may import rows < i only.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("types", "configs", "_checks", "_lazy"),
    ("geometry", "io", "kernels"),
    ("ops", "eval"),
    ("pretrained",),
    ("fields", "generation"),
    ("data", "capture"),
    ("methods",),
    ("training",),
    ("language",),  # above training: language distillation runs through the one Trainer
    ("runs",),
    ("viewer",),
    ("cli",),  # above the viewer: `langfield view` and `langfield train --viewer` start it
)
ROW = {package: row for row, packages in enumerate(LAYERS, start=1) for package in packages}

# Imports that break the table, as (file under src/langfield, imported package). Empty since the
# architecture refactor; the test fails when a new violation appears AND when an entry here no
# longer occurs, so an exception added here must be justified and can only be removed.
KNOWN_VIOLATIONS: frozenset[tuple[str, str]] = frozenset()

# Imports of langfield modules inside function bodies (``from langfield...``, ``import
# langfield...`` and relative ones) today. The refactor lowers it as they move to module level;
# a function-level import is only for a heavy optional dependency, and must still point downward.
# The root ``langfield/__init__.py`` is not counted: its lazy ``__getattr__`` imports on purpose.
FUNCTION_LEVEL_IMPORT_CEILING = 0


@dataclass(frozen=True)
class Import:
    file: str  # relative to src/langfield, e.g. "data/samplers.py"
    line: int
    module: str  # the imported module, absolute, e.g. "langfield.methods.base"
    in_function: bool

    @property
    def where(self) -> str:
        return f"src/langfield/{self.file}:{self.line}"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve_relative(path: Path, root: Path, level: int, module: str | None) -> str:
    """The absolute module of ``from <level dots><module> import ...`` written in ``path``."""
    package = _module_name(path, root).split(".")
    if path.name != "__init__.py":
        package.pop()  # a module's relative imports start from its package
    if level > 1:
        package = package[: len(package) - (level - 1)]
    return ".".join(package + ([module] if module else []))


class _ImportCollector(ast.NodeVisitor):
    def __init__(self, path: Path, root: Path):
        self.path, self.root = path, root
        self.file = path.relative_to(root).as_posix()
        self.depth = 0  # > 0 inside a function body
        self.imports: list[Import] = []

    def _visit_function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _visit_function

    def _add(self, node: ast.stmt, module: str) -> None:
        if module == "langfield" or module.startswith("langfield."):
            self.imports.append(Import(self.file, node.lineno, module, self.depth > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = _resolve_relative(self.path, self.root, node.level, node.module)
        else:
            base = node.module or ""
        if base == "langfield" or (node.level and node.module is None):
            # ``from langfield import ops`` / ``from . import x``: each name may be a submodule
            for alias in node.names:
                self._add(node, f"{base}.{alias.name}")
        else:
            self._add(node, base)


def source_files(root: Path = ROOT) -> list[str]:
    """Every ``.py`` file under ``root`` (the ``langfield`` package directory), relative to it."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py"))


def collect_imports(root: Path = ROOT) -> list[Import]:
    """Every import of a langfield module in the files under ``root``, in file and line order."""
    imports: list[Import] = []
    for file in source_files(root):
        path = root / file
        collector = _ImportCollector(path, root)
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        imports.extend(collector.imports)
    return imports


@functools.lru_cache(maxsize=None)
def _langfield_imports() -> tuple[Import, ...]:
    return tuple(collect_imports(ROOT))


def package_of_file(file: str) -> str | None:
    """``"data/samplers.py"`` -> ``"data"``; ``"types.py"`` -> ``"types"``; the root ``__init__`` -> None."""
    first = file.split("/")[0]
    if first == "__init__.py":
        return None
    return first.removesuffix(".py")


def package_of_module(module: str) -> str | None:
    """``"langfield.methods.base"`` -> ``"methods"``; ``"langfield"`` -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


@dataclass(frozen=True)
class Violation:
    key: tuple[str, str]  # (file, package) as in KNOWN_VIOLATIONS
    message: str


def find_violations(imports: list[Import], files: list[str]) -> list[Violation]:
    """Layer-table violations of ``imports``, and the ``files`` whose package is not in the table."""
    violations: list[Violation] = []
    for file in files:
        own = package_of_file(file)
        if own is not None and own not in ROW:
            violations.append(Violation(
                (file, own),
                f"src/langfield/{file}: package 'langfield.{own}' is not in the layer table: "
                "add it to the layer table (tests/test_layers.py LAYERS and docs/design.md)",
            ))
    for imp in imports:
        own, target = package_of_file(imp.file), package_of_module(imp.module)
        if own is None or own not in ROW or target is None or target == own:
            continue
        if target not in ROW:
            message = (f"{imp.where} imports {imp.module}: package 'langfield.{target}' is not in the "
                       "layer table: add it to the layer table")
        elif ROW[target] > ROW[own]:
            message = (f"{imp.where} imports {imp.module}: 'langfield.{own}' (row {ROW[own]}) may not "
                       f"import 'langfield.{target}' (row {ROW[target]}, a higher layer)")
        elif ROW[target] == ROW[own]:
            message = (f"{imp.where} imports {imp.module}: 'langfield.{own}' and 'langfield.{target}' "
                       f"share row {ROW[own]} and must not import each other")
        else:
            continue
        violations.append(Violation((imp.file, target), message))
    return violations


def find_package_cycles(imports: list[Import], ignore: frozenset[tuple[str, str]]) -> list[str]:
    """Cycles between packages, each as ``a -> b -> a`` with the file:line of every edge."""
    edges: dict[str, dict[str, Import]] = defaultdict(dict)
    for imp in imports:
        own, target = package_of_file(imp.file), package_of_module(imp.module)
        if own is None or target is None or own == target or (imp.file, target) in ignore:
            continue
        edges[own].setdefault(target, imp)

    # Tarjan's strongly connected components; any component with > 1 package holds a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                strongconnect(w)
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
            components.append(component)

    for v in sorted(set(edges) | {w for targets in edges.values() for w in targets}):
        if v not in index:
            strongconnect(v)

    reports = []
    for component in components:
        if len(component) < 2:
            continue
        members = set(component)
        start = min(component)
        path = _shortest_cycle(start, {a: [b for b in sorted(edges[a]) if b in members] for a in members})
        lines = [f"  {a} -> {b}: {edges[a][b].where} imports {edges[a][b].module}" for a, b in zip(path, path[1:])]
        reports.append(" -> ".join(path) + "\n" + "\n".join(lines))
    return reports


def _shortest_cycle(start: str, successors: dict[str, list[str]]) -> list[str]:
    """``[start, ..., start]``: a shortest cycle through ``start`` (breadth-first search)."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for a in frontier:
            for b in successors[a]:
                if b == start:
                    path = [a]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return path[::-1] + [start]
                if b not in parent:
                    parent[b] = a
                    following.append(b)
        frontier = following
    raise AssertionError(f"{start} is on no cycle")


# ----------------------------------------------------------------------------- tests


def layer_problems(violations: list[Violation], known: frozenset[tuple[str, str]]) -> list[str]:
    """New violations, and known ones that no longer occur (so the known list only shrinks)."""
    new = [v.message for v in violations if v.key not in known]
    gone = sorted(known - {v.key for v in violations})
    problems = []
    if new:
        problems.append("imports against the layer table (docs/design.md):\n  " + "\n  ".join(new))
    if gone:
        problems.append("no longer violated, so remove from KNOWN_VIOLATIONS in tests/test_layers.py:\n  "
                        + "\n  ".join(f"{file} -> {package}" for file, package in gone))
    return problems


def test_imports_follow_the_layer_table():
    imports = list(_langfield_imports())
    assert len(imports) > 100, f"only {len(imports)} langfield imports found under {ROOT}"
    problems = layer_problems(find_violations(imports, source_files()), KNOWN_VIOLATIONS)
    assert not problems, "\n".join(problems)


def test_no_cycles_between_packages():
    cycles = find_package_cycles(list(_langfield_imports()), ignore=KNOWN_VIOLATIONS)
    assert not cycles, "cycles between packages:\n" + "\n".join(cycles)


def test_function_level_langfield_imports_do_not_grow():
    inside = [i for i in _langfield_imports() if i.in_function and i.file != "__init__.py"]
    listing = "\n  ".join(f"{i.where} imports {i.module}" for i in inside)
    assert len(inside) <= FUNCTION_LEVEL_IMPORT_CEILING, (
        f"{len(inside)} langfield imports inside functions, the ceiling is {FUNCTION_LEVEL_IMPORT_CEILING}: "
        "import at module level (a function-level import is only for a heavy optional dependency, and "
        f"must still point downward):\n  {listing}"
    )


def test_the_checker_finds_what_it_should(tmp_path):
    """The walker itself, on a synthetic tree: relative and function-level imports, every rule."""
    root = tmp_path / "langfield"
    files = {
        "__init__.py": "from langfield.viewer import app\n",  # the top may import anything
        "types.py": "import langfield.geometry.rays\n",  # (a) row 1 -> row 2
        "geometry/__init__.py": "from . import rays\nfrom .rays import f\n",  # own package: fine
        "geometry/rays.py": "def f():\n    from ..io import images\n",  # (b) same row, relative, in a function
        "io/images.py": "from langfield import geometry, ops\n",  # (b) geometry; (a) ops
        "ops/sampling.py": "from langfield.geometry.rays import f\nfrom ..types import Rays\n",  # downward: fine
        "newpkg/mod.py": "import os\n",  # not in the table
        "data/samplers.py": "async def g():\n    import langfield.newpkg.mod\n",  # unlisted target
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)

    imports = collect_imports(root)
    assert {(i.file, i.line, i.module, i.in_function) for i in imports} == {
        ("__init__.py", 1, "langfield.viewer", False),
        ("types.py", 1, "langfield.geometry.rays", False),
        ("geometry/__init__.py", 1, "langfield.geometry.rays", False),
        ("geometry/__init__.py", 2, "langfield.geometry.rays", False),
        ("geometry/rays.py", 2, "langfield.io", True),
        ("io/images.py", 1, "langfield.geometry", False),
        ("io/images.py", 1, "langfield.ops", False),
        ("ops/sampling.py", 1, "langfield.geometry.rays", False),
        ("ops/sampling.py", 2, "langfield.types", False),
        ("data/samplers.py", 2, "langfield.newpkg.mod", True),
    }
    messages = {v.key: v.message for v in find_violations(imports, source_files(root))}
    assert set(messages) == {
        ("types.py", "geometry"),
        ("geometry/rays.py", "io"),
        ("io/images.py", "geometry"),
        ("io/images.py", "ops"),
        ("newpkg/mod.py", "newpkg"),
        ("data/samplers.py", "newpkg"),
    }
    assert "src/langfield/geometry/rays.py:2 imports langfield.io" in messages[("geometry/rays.py", "io")]
    assert "share row 2" in messages[("io/images.py", "geometry")]
    assert "row 3, a higher layer" in messages[("io/images.py", "ops")]
    assert "add it to the layer table" in messages[("newpkg/mod.py", "newpkg")]
    assert "add it to the layer table" in messages[("data/samplers.py", "newpkg")]

    violations = find_violations(imports, source_files(root))
    assert layer_problems(violations, frozenset(messages)) == []
    stale = layer_problems(violations, frozenset(messages) | {("ops/sampling.py", "data")})
    assert len(stale) == 1 and "remove from KNOWN_VIOLATIONS" in stale[0] and "ops/sampling.py -> data" in stale[0]
    fresh = layer_problems(violations, frozenset(messages) - {("types.py", "geometry")})
    assert len(fresh) == 1 and "src/langfield/types.py:1 imports langfield.geometry.rays" in fresh[0]

    cycles = find_package_cycles(imports, ignore=frozenset())
    assert cycles == [
        "geometry -> io -> geometry\n"
        "  geometry -> io: src/langfield/geometry/rays.py:2 imports langfield.io\n"
        "  io -> geometry: src/langfield/io/images.py:1 imports langfield.geometry"
    ]
    longer = find_package_cycles(imports, ignore=frozenset({("io/images.py", "geometry")}))
    assert [c.splitlines()[0] for c in longer] == ["geometry -> io -> ops -> geometry"]
    assert find_package_cycles(imports, ignore=frozenset({("io/images.py", "geometry"), ("io/images.py", "ops")})) == []
