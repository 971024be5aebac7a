"""The packages' layering (docs/ARCHITECTURE.md): nothing in daemon, model or training imports
ripieno.bench, except `ripieno bench`'s handler, which imports the bench it runs inside itself."""

from __future__ import annotations

import ast

from peers import REPO

ALLOWED = {("daemon/cli.py", "_cmd_bench")}


def bench_imports(path) -> list[tuple[str, int]]:
    """(enclosing function or "<module>", line) of every import of ripieno.bench in a source file."""
    found = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else where
            names = [a.name for a in child.names] if isinstance(child, ast.Import) else []
            if isinstance(child, ast.ImportFrom):  # `from ..bench import x` and `from .. import bench` are ripieno.bench too
                top = "ripieno." if child.level >= 2 else ""
                names = [top + child.module] if child.module else [top + a.name for a in child.names]
            if any(n == "ripieno.bench" or n.startswith("ripieno.bench.") for n in names):
                found.append((where, child.lineno))
            visit(child, inner)

    visit(ast.parse(path.read_text()), "<module>")
    return found


def test_only_the_bench_command_imports_bench_and_only_inside_itself():
    offending = []
    for pkg in ("daemon", "model", "training"):
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            offending += [f"{rel}:{line} ({where})" for where, line in bench_imports(path) if (rel, where) not in ALLOWED]
    assert not offending, offending


def test_the_check_sees_an_import():
    """The scan is a real test: the allowed imports in _cmd_bench are found."""
    assert {where for where, _ in bench_imports(REPO / "daemon" / "cli.py")} == {"_cmd_bench"}
