"""The exported graph of a trained detector: its contract (input, outputs, metadata, standard
operators only) and the same answers as the eager Detector in ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from _deploy_helpers import onnx_detector, shape_pictures, to_tensors

import ssd_ext
from ssd_ext.export import ExportError, to_onnx
from ssd_ext.export.compare import compare_detections


@pytest.fixture(scope="module")
def pictures() -> list[np.ndarray]:
    return shape_pictures(4, 160, seed=11)


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_graph_contract(tiny_onnx, tiny_detector):
    model = onnx.load(tiny_onnx)
    onnx.checker.check_model(model, full_check=True)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 17
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}, "standard ONNX operators only"
    assert not model.functions, "no custom functions"
    kinds = {n.op_type for n in model.graph.node}
    assert {"Softmax", "TopK", "NonMaxSuppression", "GatherND", "Exp"} <= kinds

    (images,) = model.graph.input
    assert images.name == "images" and images.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    batch = _dims(images)[0]
    assert isinstance(batch, str), "dynamic batch axis"
    assert _dims(images)[1:] == [3, 160, 160]
    outputs = {o.name: o for o in model.graph.output}
    assert list(outputs) == ["boxes", "scores", "labels", "num_detections"]
    types = {name: o.type.tensor_type.elem_type for name, o in outputs.items()}
    assert types == {"boxes": onnx.TensorProto.FLOAT, "scores": onnx.TensorProto.FLOAT,
                     "labels": onnx.TensorProto.INT64, "num_detections": onnx.TensorProto.INT64}
    assert _dims(outputs["boxes"]) == [batch, 100, 4] and _dims(outputs["scores"]) == [batch, 100]
    assert _dims(outputs["num_detections"]) == [batch]

    metadata = {p.key: p.value for p in model.metadata_props}
    assert json.loads(metadata["ssd_ext.class_names"]) == tiny_detector.class_names
    assert json.loads(metadata["ssd_ext.input_size"]) == [160, 160]
    assert metadata["ssd_ext.version"] == ssd_ext.__version__
    assert float(metadata["ssd_ext.score_threshold"]) == 0.01 and metadata["ssd_ext.max_detections"] == "100"


@pytest.mark.parametrize("batch", [1, 4])
def test_onnx_runtime_gives_the_eager_detections(tiny_onnx, tiny_detector, pictures, batch):
    runtime = onnx_detector(tiny_onnx, score_threshold=0.01, batch_size=batch)
    chosen = pictures[:batch]
    eager = tiny_detector(chosen)
    exported = runtime(chosen)
    comparison = compare_detections(eager, exported, min_score=0.05)
    assert comparison.ok, comparison.problems
    assert comparison.pairs >= 10 * batch, comparison.summary()  # a real check: many detections above 0.05
    assert len(comparison.excused) <= comparison.pairs // 20, comparison.summary()
    for result, picture in zip(exported, chosen, strict=True):
        assert result["image_size"] == picture.shape[:2]
        assert result["names"] == [tiny_detector.class_names[int(k)] for k in result["labels"]]


def test_pictures_of_other_sizes_come_back_in_their_own_pixels(tiny_onnx, pictures):
    runtime = onnx_detector(tiny_onnx, score_threshold=0.05)
    wide = np.asarray(torch.nn.functional.interpolate(
        to_tensors(pictures[:1]).float(), size=(240, 480), mode="nearest")[0].permute(1, 2, 0).byte())
    (result,) = runtime([wide])
    (at_input_size,) = runtime([pictures[0]])
    assert result["image_size"] == (240, 480)
    assert len(result["boxes"]) > 0
    assert float(result["boxes"][:, 0::2].max()) <= 480 and float(result["boxes"][:, 1::2].max()) <= 240
    # A nearest-neighbour 2x/1.5x enlargement resized back gives nearly the same picture.
    top = result["boxes"][0] / torch.tensor([3.0, 1.5, 3.0, 1.5])
    assert torch.allclose(top, at_input_size["boxes"][0], atol=3.0)


def test_fp16_export_keeps_float32_outputs(tiny_detector, tmp_path):
    path = to_onnx(tiny_detector, tmp_path / "half.onnx", fp16=True)
    model = onnx.load(str(path))
    weights = [t for t in model.graph.initializer if t.name.startswith("model.") and len(t.dims) == 4]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    assert [o.type.tensor_type.elem_type for o in model.graph.output][:2] == [onnx.TensorProto.FLOAT] * 2
    assert json.loads({p.key: p.value for p in model.metadata_props}["ssd_ext.fp16"]) is True
    # ONNX Runtime's CPU runs it too; float16 activations move scores by far less than 1e-2.
    pictures = shape_pictures(2, 160, seed=5)
    exported = onnx_detector(path, score_threshold=0.01)(pictures)
    comparison = compare_detections(tiny_detector(pictures), exported, min_score=0.1, min_iou=0.9,
                                    score_tolerance=1e-2)
    assert comparison.ok, comparison.problems


def test_bad_options_and_paths(tiny_detector, tmp_path):
    with pytest.raises(ExportError, match="opset must be an int from 17"):
        to_onnx(tiny_detector, tmp_path / "a.onnx", opset=13)
    with pytest.raises(ExportError, match="is a folder"):
        to_onnx(tiny_detector, tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ExportError, match="cannot be written"):
        to_onnx(tiny_detector, blocker / "model.onnx")
    with pytest.raises(ExportError, match="score_threshold"):
        to_onnx(tiny_detector, tmp_path / "a.onnx", score_threshold=1.5)
    with pytest.raises(TypeError, match="detector_or_checkpoint"):
        to_onnx(42, tmp_path / "a.onnx")
