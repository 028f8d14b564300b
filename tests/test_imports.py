"""The house's import rules: no import circles in bench/ and rerankers/ (function-level imports included),
and rerankers/ never imports bench/."""

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "rerankers")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its source (top level or inside functions)."""
    modules = {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from bench import measure` imports the module bench.measure
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]  # fmt: skip
            else:
                continue
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def test_graph_sees_function_level_imports():
    graph = import_graph()
    assert "bench.cell" in graph["bench.executor"]  # imported inside InlineExecutor.run


def test_no_import_circles():
    graph = import_graph()
    # A package's __init__ re-exporting its modules is not a circle through the package.
    for name in graph:
        graph[name] = {t for t in graph[name] if not (t in PACKAGES and name.startswith(t + "."))}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        raise AssertionError(f"import circle: {' -> '.join(error.args[1])}") from None


def test_rerankers_never_import_bench():
    graph = import_graph()
    offenders = {
        m: sorted(t for t in ts if t.startswith("bench")) for m, ts in graph.items() if m.startswith("rerankers")
    }
    assert not any(offenders.values()), offenders
