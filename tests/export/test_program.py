"""torch.export of the whole detector (pictures -> padded detections), saved and loaded back,
and the same program compiled ahead of time by AOTInductor."""

from __future__ import annotations

import pytest
import torch
from _deploy_helpers import shape_pictures, to_tensors

from ssd_ext.export import aoti_package, deployable, export_program, load_aoti, load_program, save_program


@pytest.fixture(scope="module")
def program(tiny_detector):
    return export_program(tiny_detector)


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return to_tensors(shape_pictures(3, 160, seed=21))


def _assert_same_outputs(actual, expected) -> None:
    boxes, scores, labels, counts = actual
    assert torch.equal(counts, expected[3]) and torch.equal(labels, expected[2])
    torch.testing.assert_close(scores, expected[1], rtol=0, atol=1e-5)
    torch.testing.assert_close(boxes, expected[0], rtol=0, atol=1e-3)  # input pixels


def test_exported_program_saved_and_loaded_gives_the_same_detections(program, tiny_detector, batch, tmp_path):
    module, _ = deployable(tiny_detector)
    ops_called = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "ssd_ext.detect.default" in ops_called, "our op stays one node of the program"
    path = save_program(program, tmp_path / "detector.pt2")
    loaded = load_program(path).module()
    with torch.no_grad():
        for rows in (1, 3):  # dynamic batch
            _assert_same_outputs(loaded(batch[:rows]), module(batch[:rows]))


@pytest.mark.slow
def test_aoti_package_gives_the_same_detections(program, tiny_detector, batch, tmp_path):
    """AOTInductor compiles C++ for this CPU (about a minute here); our op is called through
    the dispatcher from the compiled code."""
    module, _ = deployable(tiny_detector)
    runner = load_aoti(aoti_package(program, tmp_path / "detector_aoti.pt2"))
    with torch.no_grad():
        for rows in (1, 3):
            _assert_same_outputs(runner(batch[:rows]), module(batch[:rows]))
