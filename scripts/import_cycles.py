"""Report import cycles between the modules of a package (exit 1 if there is one).

Every import counts, also those under ``if TYPE_CHECKING:`` and inside
functions: a cycle hidden there is still two modules that each need the
other. Usage: ``python scripts/import_cycles.py [PACKAGE_DIR]`` (default:
``streamkit`` next to this script's parent).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Dict, List, Set


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(root: Path, path: Path, modules: Set[str]) -> Set[str]:
    """The package modules ``path`` imports (``from . import x`` resolved to ``pkg.x``)."""
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from pkg import mod`` imports the submodule ``pkg.mod``; ``from
            # mod import name`` imports ``mod`` (parents are initialised first
            # either way, which never makes a cycle of its own).
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        for target in targets:
            # "a.b.c" counts as an import of the longest package module it names.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main(argv: List[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "streamkit"
    files = sorted(root.rglob("*.py"))
    modules = {module_name(root, f) for f in files}
    graph = {module_name(root, f): imports_of(root, f, modules) for f in files}
    found = cycles(graph)
    for component in found:
        print("import cycle:", " <-> ".join(component))
    if not found:
        print(f"no import cycle among {len(modules)} modules of {root.name}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
