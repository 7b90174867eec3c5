"""Static int8 quantisation of the exported network, post-processing left in float."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from _deploy_helpers import onnx_detector, shape_pictures

from ssd_ext.export import ExportError, quantize_onnx
from ssd_ext.export.graph_parts import network_node_names, post_processing_node_names


@pytest.fixture(scope="module")
def int8_path(tiny_onnx, tmp_path_factory) -> str:
    calibration = shape_pictures(8, (120, 200), seed=3)  # resized to the input size on the way
    return str(quantize_onnx(tiny_onnx, tmp_path_factory.mktemp("int8") / "tiny_int8.onnx", calibration))


def test_network_quantised_post_processing_untouched(tiny_onnx, int8_path):
    float_model, int8_model = onnx.load(tiny_onnx), onnx.load(int8_path)
    onnx.checker.check_model(int8_model)
    network = set(network_node_names(float_model))
    float_rest = {(n.name, n.op_type) for n in float_model.graph.node if n.name not in network}
    int8_names = {n.name: n.op_type for n in int8_model.graph.node}
    assert all(int8_names.get(name) == kind for name, kind in float_rest), \
        "normalisation and post-processing nodes are kept as they were"
    producers = {out: n.op_type for n in int8_model.graph.node for out in n.output}
    convs = [n for n in int8_model.graph.node if n.op_type == "Conv"]
    assert convs and all(producers.get(n.input[0]) == "DequantizeLinear" for n in convs), \
        "every convolution reads quantised activations"
    assert all(producers.get(n.input[1]) == "DequantizeLinear" for n in convs), "and int8 weights"
    post_names = set(post_processing_node_names(float_model))
    assert {"Softmax", "TopK", "NonMaxSuppression"} <= {n.op_type for n in float_model.graph.node
                                                        if n.name in post_names}
    assert not network & post_names
    metadata = {p.key: p.value for p in int8_model.metadata_props}
    assert json.loads(metadata["ssd_ext.class_names"])[0] and "int8" in metadata["ssd_ext.quantization"]


def test_int8_model_runs_behind_the_detector_interface(int8_path):
    pictures = shape_pictures(2, 160, seed=8)
    results = onnx_detector(int8_path, score_threshold=0.01)(pictures)
    for result in results:
        assert len(result["scores"]) > 0 and result["boxes"].shape[1] == 4
        assert (np.diff(result["scores"].numpy()) <= 0).all()


def test_quantize_refuses_foreign_models_and_empty_calibration(tiny_onnx, tmp_path):
    foreign = tmp_path / "foreign.onnx"
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), str(foreign))
    with pytest.raises(ExportError, match="not an ssd_ext detector"):
        quantize_onnx(foreign, tmp_path / "q.onnx", shape_pictures(1, 160))
    with pytest.raises(ExportError, match="at least one picture"):
        quantize_onnx(tiny_onnx, tmp_path / "q.onnx", [])
    with pytest.raises(ExportError, match="not a folder"):
        quantize_onnx(tiny_onnx, tmp_path / "q.onnx", tmp_path / "missing")
