"""The shape of `lasagna_core`, read from its source with `ast`: rooms import each other without a cycle, never
reach into another module's private names, never import the CLI, and stay small.

How imports are read (one walker for the whole package):
- every `import` and `from ... import` counts, at module level, inside functions (a lazy import is still a
  dependency: it runs the first time the function does) and under `if TYPE_CHECKING:` (a room whose
  annotations need a higher room is coupled to it all the same);
- relative imports are resolved to module names; `from P import name` is an edge to the module `P.name`
  when there is one, else to `P` itself;
- a package is its `__init__.py`: importing `a.b.c` runs `a/__init__.py` and `a/b/__init__.py` first, so it
  is also an edge to each of those packages, except the importer's own ancestors, which Python has
  initialised before the importer starts (an edge to them could never change the import order). Naming
  an own ancestor explicitly (`from lasagna_core.batch import X` inside the batch package) is an edge.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO

MAX_LINES = 500
LONG_MODULE_REASON = "longer than 500 lines because"
"""The size convention: a module of `lasagna_core` has at most MAX_LINES lines, or its module docstring holds a
sentence containing these words that says why it must be longer."""

ALLOWED_EDGES: dict[tuple[str, str], str] = {}
"""Import edges the cycle check leaves out, each with its reason; an entry whose import is gone fails the test."""


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # the module the statement names (resolved), or the submodule a `from` import picks
    names: tuple[str, ...]  # what a `from` import takes from `target`; () for `import x` or a submodule
    line: int


def modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of `package` (a folder under `root`) by dotted name; a package is named by its __init__."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, *([module] if module else [])])


def read_imports(root: Path, package: str) -> list[Import]:
    """Every import statement anywhere in each module of `package`, resolved to module names."""
    known = modules(root, package)
    found = []
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                found += [Import(name, alias.name, (), node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(name, is_package, node.level, node.module) if node.level else str(node.module)
                taken = []
                for alias in node.names:
                    if f"{source}.{alias.name}" in known:
                        found.append(Import(name, f"{source}.{alias.name}", (), node.lineno))
                    else:
                        taken.append(alias.name)
                if taken or not node.names:
                    found.append(Import(name, source, tuple(taken), node.lineno))
    return found


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module -> the modules of `package` its imports run (see the module doc), without ALLOWED_EDGES."""
    known = modules(root, package)
    graph: dict[str, set[str]] = {name: set() for name in known}
    for imp in read_imports(root, package):
        own = set(_ancestors(imp.importer))
        for target in [a for a in _ancestors(imp.target) if a not in own] + [imp.target]:
            if target in known and target != imp.importer and (imp.importer, target) not in ALLOWED_EDGES:
                graph[imp.importer].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> ... -> a) per strongly connected group of modules that import each other (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_cycle_in(graph, group) for group in groups]


def _cycle_in(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, staying inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & group):
                if nxt == start:
                    return paths[node] + [start]
                if nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def private_reaches(root: Path, package: str) -> list[str]:
    """Places where one module uses another module's private name: `from m import _x`, or `m._x` on a module
    bound by an import. Dunder names (`__version__`) are public."""
    known = modules(root, package)
    found = []

    def private(name: str) -> bool:
        return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))

    for imp in read_imports(root, package):
        if imp.target != imp.importer and imp.target.startswith(package):
            found += [f"{imp.importer}:{imp.line} imports {name} from {imp.target}" for name in imp.names if private(name)]
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bound: dict[str, str] = {}  # local name -> the lasagna_core module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                bound.update({a.asname: a.name for a in node.names if a.asname and a.name in known})
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(name, path.name == "__init__.py", node.level, node.module) if node.level else str(node.module)
                bound.update({a.asname or a.name: f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in known})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                    and private(node.attr) and bound[node.value.id] != name):
                found.append(f"{name}:{node.lineno} uses {bound[node.value.id]}.{node.attr}")
    return found


def long_modules(root: Path, package: str) -> list[str]:
    """Modules over MAX_LINES lines whose docstring doesn't say why (see LONG_MODULE_REASON)."""
    found = []
    for name, path in modules(root, package).items():
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if lines > MAX_LINES and LONG_MODULE_REASON not in (ast.get_docstring(ast.parse(text)) or ""):
            found.append(f"{path.relative_to(root)}: {lines} lines")
    return found


# ------------------------------------------------------------------------------------------ lasagna_core itself


def test_lasagna_core_has_no_import_cycle() -> None:
    cycles = find_cycles(import_graph(REPO, "lasagna_core"))
    assert not cycles, "import cycles in lasagna_core:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_allowed_edges_still_exist() -> None:
    """An allow-list entry outliving its import would hide the next cycle through it."""
    present = {(imp.importer, imp.target) for imp in read_imports(REPO, "lasagna_core")}
    assert not set(ALLOWED_EDGES) - present, sorted(set(ALLOWED_EDGES) - present)


def test_no_module_uses_another_modules_private_names() -> None:
    reaches = private_reaches(REPO, "lasagna_core")
    assert not reaches, "\n".join(reaches)


def test_lasagna_core_never_imports_the_cli() -> None:
    cli = [f"{imp.importer}:{imp.line} imports {imp.target}" for imp in read_imports(REPO, "lasagna_core")
           if imp.target.split(".")[0] == "lasagna_cli"]
    assert not cli, "\n".join(cli)


def test_modules_stay_small_or_say_why() -> None:
    long = long_modules(REPO, "lasagna_core")
    assert not long, f"over {MAX_LINES} lines without '{LONG_MODULE_REASON} ...' in the docstring:\n" + "\n".join(long)


def test_batch_rooms_stand_on_types_and_below_run() -> None:
    """The batch rooms' layering: `types` imports no other room; no room imports `run` (the top) or the package's face."""
    graph = import_graph(REPO, "lasagna_core")
    rooms = {m for m in graph if m.startswith("lasagna_core.batch.")}
    assert not graph["lasagna_core.batch.types"] & rooms
    assert not [(m, t) for m in rooms for t in graph[m] & {"lasagna_core.batch", "lasagna_core.batch.run"}]


# ------------------------------------------------------------------------------------------ the walker itself


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_walker_sees_lazy_relative_and_package_imports(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "pkg/__init__.py": "def __getattr__(name):\n    from .low import thing\n    return thing\n",
        "pkg/low.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub.deep import Deep\n",
        "pkg/sub/__init__.py": "from . import deep\n",
        "pkg/sub/deep.py": "def f():\n    from .. import low\n    from ..low import _hidden\n    import pkg.low as L\n    return L._secret\n",
        "pkg/top.py": "from .sub.deep import f\n",
    })
    graph = import_graph(root, "pkg")
    assert graph["pkg"] == {"pkg.low"}  # the lazy __getattr__ import
    assert graph["pkg.low"] == {"pkg.sub", "pkg.sub.deep"}  # TYPE_CHECKING, and the package run first
    assert graph["pkg.sub"] == {"pkg.sub.deep"}
    assert graph["pkg.sub.deep"] == {"pkg.low"}  # its own ancestors pkg, pkg.sub are not edges
    assert graph["pkg.top"] == {"pkg.sub", "pkg.sub.deep"}
    assert find_cycles(graph) == [["pkg.low", "pkg.sub.deep", "pkg.low"]]  # the shortest of the group
    assert private_reaches(root, "pkg") == ["pkg.sub.deep:3 imports _hidden from pkg.low",
                                            "pkg.sub.deep:5 uses pkg.low._secret"]


def test_walker_sees_an_own_package_face_import_and_long_modules(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "pkg/__init__.py": "from .room import work\n",
        "pkg/room.py": "def work():\n    from pkg import helper\n",
        "pkg/long.py": '"""Long."""\n' + "x = 1\n" * MAX_LINES,
        "pkg/explained.py": f'"""Explained: {LONG_MODULE_REASON} it must be."""\n' + "x = 1\n" * MAX_LINES,
    })
    assert find_cycles(import_graph(root, "pkg")) == [["pkg", "pkg.room", "pkg"]]
    assert long_modules(root, "pkg") == [f"pkg/long.py: {MAX_LINES + 1} lines"]


def test_walker_reads_the_real_lazy_imports() -> None:
    """Lazy imports the cycle check must see are in the graph: the priors' `__getattr__`, the edit's prior imports."""
    graph = import_graph(REPO, "lasagna_core")
    assert "lasagna_core.priors.base" in graph["lasagna_core.priors"]
    assert {"lasagna_core.priors", "lasagna_core.priors.base"} <= graph["lasagna_core.edit"]


def test_every_package_is_in_the_distribution() -> None:
    """pyproject lists the packages by name (`lasagna_templates` is mapped from templates/): a package missing
    there works in an editable install, the tests included, and is absent from a wheel, so users' installs
    break. Every folder with an __init__.py under lasagna_core, lasagna_cli and lasagna_krita must be listed, and
    the Krita plug-in's .desktop file (which `lasagna krita install` copies) must be package data."""
    import tomllib

    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    on_disk = {".".join(init.parent.relative_to(REPO).parts)
               for root in ("lasagna_core", "lasagna_cli", "lasagna_krita") for init in (REPO / root).rglob("__init__.py")}
    assert on_disk <= listed, f"missing from pyproject's packages: {sorted(on_disk - listed)}"
    assert "*.desktop" in setuptools["package-data"]["lasagna_krita"]
