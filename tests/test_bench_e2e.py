"""Smoke test of the end-to-end benchmark (benchmarks/bench_e2e.py) in its smallest
configuration: ssd_small, batch 1, one timed repeat, no warm-up. Checks that every output file
is written and that the JSON holds the fields the docs and the GPU check read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_e2e

SMALLEST = ["--device", "cpu", "--model", "ssd_small", "--train-batch", "1", "--train-repeats", "1",
            "--infer-batches", "1", "--infer-repeats", "1", "--data-batches", "1", "--warmup", "0"]


def test_smallest_run_writes_every_output(tmp_path: Path) -> None:
    assert bench_e2e.main([*SMALLEST, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "e2e.json").read_text())
    assert (tmp_path / "e2e.png").stat().st_size > 1000
    markdown = (tmp_path / "e2e.md").read_text()
    assert "### Training step" in markdown and "### Inference" in markdown

    machine = result["machine"]
    for key in ("device", "cpu", "torch", "ssd_ext", "amp", "load_average_start"):
        assert key in machine
    assert machine["device"] == "cpu"
    assert result["data"]["batch"] == 1 and result["data"]["images_per_s"] > 0
    assert isinstance(result["data"]["bounds_the_step"], bool)

    training = {row["impl"]: row for row in result["training"]}
    assert set(training) == {"ssd_ext", "ssd_ext (reference ops)"}
    for row in training.values():
        assert row["model"] == "ssd_small" and row["batch"] == 1 and row["images_per_s"] > 0
        assert set(row["stages_ms"]) == set(bench_e2e.TRAIN_STAGES)
        assert all(value >= 0 for value in row["stages_ms"].values())
        assert 0 <= row["ssd_specific_share"] <= 1
        assert row["ssd_specific_ms"] == pytest.approx(row["stages_ms"]["matching"]
                                                       + row["stages_ms"]["loss_mining"])
    assert training["ssd_ext (reference ops)"]["ssd_ext_speedup"] > 0

    inference = result["inference"]
    assert [row["batch"] for row in inference] == [1, 1]
    for row in inference:
        assert set(row["stages_ms"]) == set(bench_e2e.INFER_STAGES)
        assert 0 <= row["postprocess_share"] <= 1
    # ssd_small has no torchvision counterpart: skipped with that reason, never silently.
    assert "counterpart" in result["skipped"]["training"]["torchvision"]
    assert "counterpart" in result["skipped"]["inference"]["torchvision"]
    assert "skipped" in markdown


def test_torchvision_absent_is_a_reason_not_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_torchvision(name: str, *args: object, **kwargs: object) -> object:
        if name == "torchvision" or name.startswith("torchvision."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchvision)
    config = bench_e2e.parse_args(["--device", "cpu", "--out", "unused"])
    assert bench_e2e.torchvision_unavailable(config, "ssd300") == "torchvision is not installed"


@pytest.mark.parametrize("argv", [["--train-batch", "0"], ["--infer-batches", "1,x"], ["--warmup", "-1"]])
def test_bad_arguments_exit_with_a_message(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as raised:
        bench_e2e.parse_args(["--device", "cpu", *argv])
    assert raised.value.code == 2
    assert argv[0] in capsys.readouterr().err
