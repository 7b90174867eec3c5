"""The ONNX translations of our ops follow the kernels (run op by op in ONNX Runtime through
onnxscript's eager mode, so many cases cost no export), and a user's own torch.onnx.export of
a module calling ops.detect / ops.detect_padded works."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ssd_ext.export  # noqa: F401  (registers the translations for plain torch.onnx.export calls)
from ssd_ext import ops
from ssd_ext.export.onnx_ops import box_iou_onnx, decode_onnx, detect_onnx, nms_onnx, onnx_translation_table


def _numpy(value) -> np.ndarray:
    return np.asarray(value.value if hasattr(value, "value") else value)


def _random_case(seed: int, batch: int, priors: int, classes: int):
    """Continuous random logits: distinct scores (two within a few ulps are improbable; such
    near ties may be ordered differently, see docs/DEPLOY.md, and are tested on their own)."""
    generator = torch.Generator().manual_seed(seed)
    prior_boxes = torch.rand(priors, 4, generator=generator) * 0.4 + torch.tensor([0.3, 0.3, 0.05, 0.05])
    loc = torch.randn(batch, priors, 4, generator=generator) * 0.5
    conf = torch.randn(batch, priors, classes, generator=generator) * 2
    return loc, conf, prior_boxes


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), batch=st.integers(1, 3), priors=st.integers(1, 60),
       classes=st.integers(2, 6), score_threshold=st.sampled_from([0.0, 0.05, 0.3, 0.9]),
       iou_threshold=st.sampled_from([0.0, 0.3, 0.45, 1.0]), candidates=st.integers(1, 70),
       max_detections=st.integers(1, 40))
def test_detect_translation_matches_the_kernel(seed, batch, priors, classes, score_threshold, iou_threshold,
                                               candidates, max_detections):
    loc, conf, prior_boxes = _random_case(seed, batch, priors, classes)
    args = (score_threshold, iou_threshold, candidates, max_detections)
    expected = ops.detect_padded(loc, conf, prior_boxes, *args, variances=(0.1, 0.2))
    actual = [_numpy(v) for v in detect_onnx(loc.numpy(), conf.numpy(), prior_boxes.numpy(), *args, 0.1, 0.2)]
    boxes, scores, labels, counts = (e.numpy() for e in expected)
    np.testing.assert_array_equal(actual[3], counts)
    np.testing.assert_array_equal(actual[2], labels)  # padding -1, as the op returns
    np.testing.assert_allclose(actual[1], scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(actual[0], boxes, rtol=0, atol=1e-6)
    assert actual[0].shape == (batch, max_detections, 4) and actual[0].dtype == np.float32


@pytest.mark.parametrize("candidates, max_detections", [(3, 7), (16, 40), (5, 3)])
def test_detect_translation_breaks_exact_ties_like_the_kernel(candidates, max_detections):
    """Every prior has the logits [0, 2, 2, 0]: classes 1 and 2 tie everywhere, so the
    candidates (lowest priors), the NMS order (lowest prior first) and the final top-k (lower
    class, then lower prior) all come from the tie rules."""
    generator = torch.Generator().manual_seed(5)
    centres = torch.rand(16, 2, generator=generator) * 0.6 + 0.2
    prior_boxes = torch.cat([centres, torch.full((16, 2), 0.2)], dim=1)
    loc = torch.zeros(1, 16, 4)
    conf = torch.tensor([0.0, 2.0, 2.0, 0.0]).repeat(1, 16, 1)
    scores = torch.softmax(conf, dim=-1)
    assert scores[..., 1].unique().numel() == 1 and torch.equal(scores[..., 1], scores[..., 2]), \
        "precondition: exact ties in PyTorch's softmax"
    expected = ops.detect_padded(loc, conf, prior_boxes, 0.1, 0.3, candidates, max_detections)
    actual = [_numpy(v) for v in detect_onnx(loc.numpy(), conf.numpy(), prior_boxes.numpy(), 0.1, 0.3,
                                             candidates, max_detections, 0.1, 0.2)]
    assert expected[3].item() > 2, "NMS keeps several of the tied boxes"
    np.testing.assert_array_equal(actual[2], expected[2].numpy())
    np.testing.assert_array_equal(actual[3], expected[3].numpy())
    np.testing.assert_allclose(actual[0], expected[0].numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("candidates, max_detections", [(0, 5), (5, 0)])
def test_detect_translation_without_room_gives_only_padding(candidates, max_detections):
    loc, conf, prior_boxes = _random_case(0, 2, 10, 3)
    boxes, scores, labels, counts = (_numpy(v) for v in detect_onnx(
        loc.numpy(), conf.numpy(), prior_boxes.numpy(), 0.01, 0.45, candidates, max_detections, 0.1, 0.2))
    assert boxes.shape == (2, max_detections, 4) and not boxes.any() and not scores.any()
    assert (labels == -1).all() and counts.tolist() == [0, 0]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), count=st.integers(1, 50), iou_threshold=st.sampled_from([0.0, 0.5, 1.0]),
       max_output=st.integers(-1, 10), grid=st.booleans())
def test_nms_translation_matches_the_kernel(seed, count, iou_threshold, max_output, grid):
    """Given scores (no softmax in between), exact ties too follow the index rule."""
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(count, 2, generator=generator)
    boxes = torch.cat([corner, corner + torch.rand(count, 2, generator=generator) * 0.5], dim=1)
    scores = torch.rand(count, generator=generator)
    if grid:
        scores = (scores * 4).round() / 4
    expected = ops.nms(boxes, scores, iou_threshold, max_output if max_output >= 0 else None)
    actual = _numpy(nms_onnx(boxes.numpy(), scores.numpy(), iou_threshold, max_output))
    np.testing.assert_array_equal(actual, expected.numpy())


def test_decode_and_box_iou_translations_match_the_kernels():
    loc, _, prior_boxes = _random_case(3, 2, 30, 2)
    np.testing.assert_allclose(_numpy(decode_onnx(loc.numpy(), prior_boxes.numpy(), [0.1, 0.2])),
                               ops.decode(loc, prior_boxes, (0.1, 0.2)).numpy(), rtol=0, atol=1e-6)
    first, second = ops.decode(loc[0], prior_boxes), ops.decode(loc[1, :7], prior_boxes[:7])
    second[0] = second[0, [0, 1, 0, 1]]  # an empty box: IoU 0 with everything
    np.testing.assert_allclose(_numpy(box_iou_onnx(first.numpy(), second.numpy())),
                               ops.box_iou(first, second).numpy(), rtol=0, atol=1e-6)


class _UserModule(torch.nn.Module):
    """What a user may write: their own head outputs through ops.detect and ops.detect_padded."""

    def __init__(self, priors: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("priors", priors)

    def forward(self, loc: torch.Tensor, conf: torch.Tensor):
        padded = ops.detect_padded(loc, conf, self.priors, score_threshold=0.05, max_detections=20)
        first = ops.detect(loc[:1], conf[:1], self.priors, score_threshold=0.05, max_detections=20)[0]
        return (*padded, first["boxes"], first["labels"])


@pytest.mark.parametrize("opset, table", [(18, False), (17, True)], ids=["plain-call", "table-opset17"])
def test_users_torch_onnx_export_of_detect(tmp_path, opset, table):
    """The plain call finds our translations (registered on import of ssd_ext.export); the
    documented custom_translation_table route works too, here converted down to opset 17."""
    loc, conf, prior_boxes = _random_case(7, 3, 80, 4)
    module = _UserModule(prior_boxes).eval()
    extra = {"custom_translation_table": onnx_translation_table()} if table else {}
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.onnx.export(module, (loc, conf), dynamo=True, opset_version=opset, verbose=False,
                                dynamic_shapes=({0: batch}, {0: batch}), **extra)
    path = tmp_path / "user.onnx"
    program.save(str(path))
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert {o.domain for o in model.opset_import if o.domain in ("", "ai.onnx")} and \
        next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == opset
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}, "only standard ONNX operators"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for rows in (3, 1):
        feeds = dict(zip([i.name for i in session.get_inputs()], (loc[:rows].numpy(), conf[:rows].numpy()),
                         strict=True))
        actual = session.run(None, feeds)
        expected = module(loc[:rows], conf[:rows])
        for got, want in zip(actual, expected, strict=True):
            np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-6)
