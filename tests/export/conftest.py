"""Fixtures of the export tests: a tiny trained ssd_small (a real checkpoint) and its ONNX
export, made once per session (helpers are in ``_deploy_helpers.py``)."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_config

from ssd_ext.engine.inference import Detector
from ssd_ext.engine.train import fit


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """PyTorch on one intra-op thread: on a shared 2-core machine two threads wait on each
    other at every parallel region (several times slower); ONNX Runtime sessions of these
    tests are made with threads=1 too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    """A checkpoint of ssd_small (width 8) trained for a few seconds by the engine's tiny config."""
    threads = torch.get_num_threads()
    summary = fit(tiny_config(str(tmp_path_factory.mktemp("tiny_run"))))
    torch.set_num_threads(threads)
    return str(summary["checkpoint"])


@pytest.fixture(scope="session")
def tiny_detector(tiny_checkpoint) -> Detector:
    return Detector.from_checkpoint(tiny_checkpoint, device="cpu", score_threshold=0.01, max_detections=100)


@pytest.fixture(scope="session")
def tiny_onnx(tiny_checkpoint, tmp_path_factory) -> str:
    """The tiny checkpoint exported by ``ssd export`` with the defaults (score 0.01, IoU 0.45,
    K = 100, opset 18): what ``tiny_detector`` does."""
    from ssd_ext.cli import main

    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    assert main(["export", "--checkpoint", tiny_checkpoint, "--out", str(path)]) == 0
    return str(path)
