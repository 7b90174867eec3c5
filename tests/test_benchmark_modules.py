"""Every benchmark module imports: a renamed module or name in the package cannot leave a
benchmark broken until someone runs it."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(path.stem for path in (ROOT / "benchmarks").glob("bench_*.py"))


def test_there_are_benchmark_scripts():
    assert {"bench_ops", "bench_data", "bench_e2e", "bench_train_demo"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", sorted(path.stem for path in (ROOT / "benchmarks").glob("*.py")
                                        if path.stem != "__init__"))
def test_benchmark_module_imports(name):
    module = importlib.import_module(f"benchmarks.{name}")
    assert module.__name__ == f"benchmarks.{name}"

