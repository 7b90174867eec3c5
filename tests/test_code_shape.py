"""The engine and the command line stay readable: no function longer than 60 lines or with more
than 8 parameters (group options in the config dataclass they come from)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = sorted([*(ROOT / "ssd_ext" / "engine").rglob("*.py"), ROOT / "ssd_ext" / "cli.py"])
MAX_LINES, MAX_PARAMETERS = 60, 8


def _functions(path: Path) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _parameters(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    arguments = function.args
    names = [a.arg for a in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]]
    names += [a.arg for a in (arguments.vararg, arguments.kwarg) if a is not None]
    return [name for name in names if name not in ("self", "cls")]


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_functions_are_short_and_take_few_parameters(path):
    too_long, too_wide = [], []
    for function in _functions(path):
        length = function.end_lineno - function.lineno + 1
        if length > MAX_LINES:
            too_long.append(f"{function.name} ({length} lines)")
        if len(_parameters(function)) > MAX_PARAMETERS:
            too_wide.append(f"{function.name} ({len(_parameters(function))} parameters)")
    assert not too_long and not too_wide, f"{path.name}: {too_long + too_wide}"
