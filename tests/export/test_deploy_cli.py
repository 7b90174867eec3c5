"""``ssd export`` and ``ssd detect --onnx`` through the command line's entry point, and one
``ssd: error:`` line for each kind of bad input."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from _deploy_helpers import onnx_detector, shape_pictures, to_tensors
from PIL import Image

from ssd_ext.cli import main


@pytest.fixture(scope="module")
def picture_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    for index, picture in enumerate(shape_pictures(2, 160, seed=31)):
        Image.fromarray(picture).save(folder / f"picture{index}.png")
    return folder


def test_export_options_reach_the_graph_and_padding_is_zero(tiny_checkpoint, tiny_detector, tmp_path):
    pictures = shape_pictures(4, 160, seed=11)
    # A threshold among the eager scores of picture 0 leaves some of its K = 30 rows empty.
    scores = tiny_detector(pictures[:1])[0]["scores"]
    threshold = round(float(scores[len(scores) // 4]), 6)
    path = tmp_path / "options.onnx"
    assert main(["export", "--checkpoint", tiny_checkpoint, "--out", str(path), "--max-detections", "30",
                 "--score-threshold", str(threshold), "--iou-threshold", "0.3", "--opset", "17"]) == 0
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata["ssd_ext.max_detections"] == "30"
    assert float(metadata["ssd_ext.score_threshold"]) == threshold
    assert float(metadata["ssd_ext.iou_threshold"]) == 0.3
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 17

    outputs = onnx_detector(path, score_threshold=threshold).run(to_tensors(pictures).numpy())
    counts = outputs["num_detections"]
    assert outputs["boxes"].shape == (4, 30, 4) and counts.shape == (4,)
    padding = np.arange(30)[None, :] >= counts[:, None]
    valid = ~padding
    assert padding[0].any() and valid[0].any()
    assert not outputs["boxes"][padding].any() and not outputs["scores"][padding].any()
    assert not outputs["labels"][padding].any()
    assert (outputs["labels"][valid] >= 1).all() and (outputs["scores"][valid] > threshold).all()
    assert (np.diff(np.where(valid, outputs["scores"], -1), axis=1) <= 0).all(), "scores decrease"
    boxes = outputs["boxes"][valid]
    assert (boxes >= 0).all() and (boxes <= 160).all() and (boxes[:, 2:] >= boxes[:, :2]).all()


def test_detect_with_onnx_writes_what_detect_with_the_checkpoint_writes(tiny_onnx, tiny_checkpoint,
                                                                        picture_folder, tmp_path):
    assert main(["detect", str(picture_folder), "--checkpoint", tiny_checkpoint, "--out",
                 str(tmp_path / "ckpt"), "--score-threshold", "0.1"]) == 0
    assert main(["detect", str(picture_folder), "--onnx", tiny_onnx, "--out", str(tmp_path / "onnx"),
                 "--score-threshold", "0.1"]) == 0
    from_checkpoint = json.loads((tmp_path / "ckpt" / "detections.json").read_text())
    from_onnx = json.loads((tmp_path / "onnx" / "detections.json").read_text())
    written = ["detections.json", "picture0.png", "picture1.png"]
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == written
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == written
    assert from_onnx["class_names"] == from_checkpoint["class_names"]
    for mine, theirs in zip(from_onnx["images"], from_checkpoint["images"], strict=True):
        assert (mine["width"], mine["height"]) == (theirs["width"], theirs["height"]) == (160, 160)
        # Same detections: rounded JSON values, so compare with the rounding's tolerance.
        assert len(mine["detections"]) == len(theirs["detections"]) > 0
        for a, b in zip(mine["detections"], theirs["detections"], strict=True):
            assert a["label"] == b["label"] and abs(a["score"] - b["score"]) <= 2e-4
            assert max(abs(x - y) for x, y in zip(a["box"], b["box"], strict=True)) <= 0.02


def _one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ssd: error:"), lines
    return lines[0]


def test_bad_input_gives_one_error_line(tiny_checkpoint, picture_folder, tmp_path, capsys):
    def run(*argv: str) -> str:
        assert main(list(argv)) != 0
        return _one_error_line(capsys)

    assert "--format must be one of" in run("export", "--checkpoint", tiny_checkpoint, "--out",
                                            str(tmp_path / "m.onnx"), "--format", "tflite")
    assert "cannot tell the format" in run("export", "--checkpoint", tiny_checkpoint, "--out",
                                           str(tmp_path / "m.bin"))
    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_text("not a checkpoint")
    assert "notes.pt" in run("export", "--checkpoint", str(not_a_checkpoint), "--out",
                             str(tmp_path / "m.onnx"))
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    assert "cannot be written" in run("export", "--checkpoint", tiny_checkpoint, "--out",
                                      str(blocker / "sub" / "m.onnx"))
    foreign = tmp_path / "foreign.onnx"
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), str(foreign))
    assert "not an ssd_ext detector" in run("detect", str(picture_folder), "--onnx", str(foreign), "--out",
                                            str(tmp_path / "out"))
    assert "cannot be loaded by ONNX Runtime" in run("detect", str(picture_folder), "--onnx",
                                                     str(not_a_checkpoint), "--out", str(tmp_path / "out"))
