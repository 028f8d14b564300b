"""No function in bench/ or rerankers/ is longer than 60 lines (decorators excluded, docstring included)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LONGEST = 60


def function_lengths() -> dict[str, int]:
    lengths = {}
    for package in ("bench", "rerankers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    where = f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
                    lengths[where] = node.end_lineno - node.lineno + 1
    return lengths


def test_the_walk_sees_nested_functions_and_methods():
    names = {where.split()[-1] for where in function_lengths()}
    assert {"run_cell", "on_progress", "after_epoch", "__enter__"} <= names


def test_no_function_is_longer_than_60_lines():
    too_long = {where: n for where, n in function_lengths().items() if n > LONGEST}
    assert not too_long, too_long
