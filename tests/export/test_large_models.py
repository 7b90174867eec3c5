"""SSD300 and RFB300 (random weights) exported whole give the eager detections in ONNX
Runtime at batch 1 and 4 (one export per model, shared by the module's tests)."""

from __future__ import annotations

import pytest
import torch
from _deploy_helpers import onnx_detector, shape_pictures

from ssd_ext.engine.inference import Detector
from ssd_ext.export import to_onnx
from ssd_ext.export.compare import compare_detections
from ssd_ext.models import build_model

VOC_NAMES = ["__background__"] + [f"class{k}" for k in range(1, 21)]


@pytest.fixture(scope="module", params=["ssd300", "rfb300"])
def runs(request, tmp_path_factory):
    """(eager detections of 4 pictures, ONNX Runtime at batch 4, ONNX Runtime at batch 1 of the first)."""
    torch.manual_seed(0)
    model = build_model(request.param, 21).eval()
    detector = Detector(model, VOC_NAMES, 300, score_threshold=0.01, max_detections=100, batch_size=4)
    path = to_onnx(detector, tmp_path_factory.mktemp(request.param) / f"{request.param}.onnx")
    pictures = shape_pictures(4, 300, seed=1)
    eager = detector(pictures)
    return (eager, onnx_detector(path, score_threshold=0.01, batch_size=4)(pictures),
            onnx_detector(path, score_threshold=0.01, batch_size=1)(pictures[:1]))


@pytest.mark.parametrize("batch", [4, 1])
def test_same_detections_as_eager(runs, batch):
    eager, onnx_batch4, onnx_batch1 = runs
    comparison = compare_detections(eager[:batch], onnx_batch4 if batch == 4 else onnx_batch1, min_score=0.05)
    assert comparison.ok, comparison.problems
    assert comparison.pairs >= 20 * batch, comparison.summary()
    assert len(comparison.excused) <= comparison.pairs // 20, comparison.summary()
