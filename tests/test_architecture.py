"""The layering of ``src/patchcfg``: no import cycles, no module too long to read.

The import rule: the modules of patchcfg and their imports form a graph without cycles. Every
import counts, at module level and inside a function alike; a function-level import that keeps
TensorFlow out of ``import patchcfg`` is fine, but it hides a cycle rather than removing one, so
it counts like any other. Imports under ``if TYPE_CHECKING:`` never run and do not count. An
import names the module it reads from (``from patchcfg.a import b`` is ``patchcfg.a.b`` when that
is a module, else ``patchcfg.a``); the parent packages Python runs along the way are not edges.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SOURCE / "patchcfg"
#: lines a module may have; the training loop is one piece of control flow, read top to bottom
MAX_LINES = 600
LONGER_ALLOWED = {"patchcfg.train.loop"}


def module_files() -> dict[str, Path]:
    """Every module of patchcfg by dotted name (a package by its own name, not ``__init__``)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SOURCE).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """The import statements of a module, leaving out ``if TYPE_CHECKING:`` blocks."""
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node):
            pending.extend(node.orelse)
        else:
            pending.extend(ast.iter_child_nodes(node))


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The patchcfg modules that module ``name`` (at ``path``) imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            found.add(submodule if submodule in known else base)
    return {module for module in found if module in known and module != name}


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imported_modules(name, path, set(files)) for name, path in files.items()}


def _shortest_cycle(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """The shortest chain ``start -> ... -> start`` (breadth first), or None."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in sorted(graph[node]):
            if target == start:
                chain = [node]
                while chain[-1] != start:
                    chain.append(came_from[chain[-1]])
                return [*reversed(chain), start]
            if target not in came_from:
                came_from[target] = node
                queue.append(target)
    return None


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle through each module that lies on one, each cycle listed once."""
    cycles, seen = [], set()
    for module in sorted(graph):
        cycle = _shortest_cycle(graph, module)
        if cycle and frozenset(cycle) not in seen:
            seen.add(frozenset(cycle))
            cycles.append(cycle)
    return cycles


def test_the_modules_import_one_another_without_a_cycle():
    cycles = import_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_no_module_is_over_the_line_limit():
    offenders = []
    for name, path in module_files().items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES and name not in LONGER_ALLOWED:
            offenders.append(f"{path.relative_to(SOURCE.parent)}: {lines} lines")
    assert not offenders, f"modules over {MAX_LINES} lines (split them):\n" + "\n".join(offenders)


def test_the_cycle_finder_names_each_cycle_as_a_chain():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_cycles(graph) == [["a", "b", "c", "a"]]
