"""The package's layers: imports run downwards only, and no module imports itself back through others.

    foundations (errors, atomic, locks, ...) < config < models < runs < data < train, eval
        < strategies, rag, export, serve, ui < cli

Every import counts, including those inside functions (a lazy import is still a dependency; it only
hides a cycle until the day it bites). ``train`` and ``eval`` sit side by side and import neither
other; what composes them is a strategy.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tuneforge"

RANK = {
    "config": 1, "models": 2, "runs": 3, "data": 4, "train": 5, "eval": 5,
    "strategies": 6, "rag": 6, "export": 6, "serve": 6, "ui": 6, "cli": 8,
}
FOUNDATION = 0  # top-level helper modules: tuneforge.errors, tuneforge.atomic, tuneforge.locks, ...
# Same-rank imports that are part of the design: the server can serve an int8 export; the browser UI
# lists, asks and deletes through the CLI's own RAG functions and reads an export's report.
ALLOWED_SIDEWAYS = {("serve", "export"), ("ui", "rag"), ("ui", "export")}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target not in files and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in files and target != mod and target.startswith("tuneforge"):
                    graph[mod].add(target)
    return graph


def layer(mod: str) -> str:
    """The stage package (or ``runs``) a module belongs to; ``foundation`` for the other top-level ones."""
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else "foundation"


def rank(mod: str) -> int:
    return RANK.get(layer(mod), FOUNDATION)


def test_every_module_belongs_to_a_layer():
    top_level = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "runs"}
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages <= set(RANK), f"new package(s) without a layer: {packages - set(RANK)}"
    # Top-level modules are foundations: they may import nothing from a stage package.
    graph = import_graph()
    for name in top_level:
        ups = {t for t in graph[f"tuneforge.{name}"] if rank(t) > FOUNDATION}
        assert not ups, f"tuneforge.{name} is a foundation module but imports {sorted(ups)}"


def test_imports_run_downwards_only():
    back_edges = []
    for mod, targets in import_graph().items():
        for target in targets:
            a, b = layer(mod), layer(target)
            if a == b or (a, b) in ALLOWED_SIDEWAYS:
                continue
            if rank(target) >= rank(mod):
                back_edges.append(f"{mod} -> {target}")
    assert not back_edges, "imports that run up or sideways:\n" + "\n".join(sorted(back_edges))


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(mod: str) -> None:
        state[mod] = 1
        stack.append(mod)
        for target in sorted(graph[mod]):
            if target.startswith(mod + ".") or mod == "tuneforge":
                continue  # a package's __init__ re-exporting its own modules is not a cycle
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_loading_a_recipe_imports_no_stage_package():
    import subprocess
    import sys

    code = ("import sys, tuneforge.config; "
            "print(' '.join(m for m in sys.modules if m.startswith('tuneforge.')), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[-1] == "False", "loading a recipe imported torch"
    assert {layer(m) for m in out[:-1]} == {"config", "foundation"}
