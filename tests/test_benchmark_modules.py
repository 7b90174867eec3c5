"""Every benchmark module imports: a renamed module or name in the package cannot leave a
benchmark broken until someone runs it. The op benchmark is part of the package (`ssd bench`)
and runs from an installed copy."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
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



def test_bench_cases_are_found_in_the_package():
    from ssd_ext.bench import bench_ops

    ops_benchmarked = {case.op for case in bench_ops.load_cases()}
    assert {"box_iou", "encode", "decode", "nms", "batched_nms", "match", "hard_negative_mining", "detect",
            "prior_boxes"} <= ops_benchmarked


def test_ssd_bench_runs_from_an_installed_copy_outside_the_source_tree(tmp_path):
    """`ssd bench` with the package (and its .so) copied to a folder that is the only path to
    ssd_ext, started elsewhere: the benchmark and its cases come from the package, not from
    the source tree's benchmarks/."""
    site = tmp_path / "site"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "ssd_ext", site / "ssd_ext", ignore=ignore)
    shutil.copytree(ROOT / "python" / "ssd_reference", site / "ssd_reference", ignore=ignore)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}

    def ssd(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ssd_ext", *args], cwd=work, env=env,
                              capture_output=True, text=True, timeout=300)

    where = subprocess.run([sys.executable, "-c", "import ssd_ext.bench; print(ssd_ext.bench.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(site)
    usage = ssd("bench", "--help")
    assert usage.returncode == 0, usage.stderr
    assert "--quick" in usage.stdout and "--ops" in usage.stdout
    run = ssd("bench", "--quick", "--device", "cpu", "--ops", "encode", "--out", "results")
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((work / "results" / "ops.json").read_text())
    assert {row["impl"] for row in result["results"]} >= {"ssd_ext", "reference"}
    assert all(row["op"] == "encode" for row in result["results"])
