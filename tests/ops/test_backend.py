"""The backend switch (ssd_ext/ops/backend.py): under "reference" every public op returns what
ssd_reference returns, shaped like the kernels' output; the switch restores; it is per thread;
bad names raise ValueError."""

from __future__ import annotations

import threading

import pytest
import ssd_reference as ref
import torch
from ssd_reference.testing import random_boxes, random_priors

from ssd_ext import ops


def _assert_same(actual: object, expected: object) -> None:
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor)
        assert actual.dtype == expected.dtype and actual.device == expected.device
        torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys()
        for key in expected:
            _assert_same(actual[key], expected[key])
    else:
        assert isinstance(actual, (list, tuple)) and len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            _assert_same(a, e)


def _inputs(seed: int = 0) -> dict[str, object]:
    g = torch.Generator().manual_seed(seed)
    priors = random_priors(300, g)
    boxes = [random_boxes(n, g, min_size=0.05) for n in (3, 0, 5)]
    labels = [torch.randint(1, 6, (b.shape[0],), generator=g) for b in boxes]
    loc = torch.randn(3, 300, 4, generator=g) * 0.5
    conf = torch.randn(3, 300, 6, generator=g) * 3
    return {"priors": priors, "boxes": boxes, "labels": labels, "loc": loc, "conf": conf, "g": g}


def test_default_backend_is_the_kernels() -> None:
    assert ops.get_backend() == "ssd_ext"
    assert set(ops.BACKENDS) == {"ssd_ext", "reference"}


def test_every_op_matches_the_reference_under_the_switch() -> None:
    x = _inputs()
    priors, boxes, labels, loc, conf = x["priors"], x["boxes"], x["labels"], x["loc"], x["conf"]
    some = random_boxes(40, x["g"])
    scores = torch.rand(40, generator=x["g"])
    classes = torch.randint(0, 3, (40,), generator=x["g"])
    conf_loss = torch.rand(3, 300, generator=x["g"])
    sparse = torch.rand(3, 300, generator=x["g"]) < 0.05
    mining_labels = torch.randint(0, 3, (3, 300), generator=x["g"]) * sparse
    prior_args = ([4, 2], 64, [12.0, 30.0], [30.0, 50.0], [[2.0], [2.0, 3.0]])

    calls = {
        "box_iou": (lambda: ops.box_iou(some, some[:7]), lambda: ref.box_iou(some, some[:7])),
        "encode": (lambda: ops.encode(boxes[0][:, None].expand(3, 300, 4), priors),
                   lambda: ref.encode(boxes[0][:, None].expand(3, 300, 4), priors)),
        "decode": (lambda: ops.decode(loc, priors), lambda: ref.decode(loc, priors)),
        "match": (lambda: ops.match(boxes, labels, priors, 0.5),
                  lambda: ref.match(boxes, labels, priors, 0.5)),
        "hard_negative_mining": (lambda: ops.hard_negative_mining(conf_loss, mining_labels, 3, 2),
                                 lambda: ref.hard_negative_mining(conf_loss, mining_labels, 3, 2)),
        "nms": (lambda: ops.nms(some, scores, 0.3, max_output=5), lambda: ref.nms(some, scores, 0.3, 5)),
        "batched_nms": (lambda: ops.batched_nms(some, scores, classes, 0.3),
                        lambda: ref.batched_nms(some, scores, classes, 0.3)),
        "detect": (lambda: ops.detect(loc, conf, priors, 0.2, 0.45, 50, 20),
                   lambda: ref.detect(loc, conf, priors, 0.2, 0.45, 50, 20)),
        "prior_boxes": (lambda: ops.prior_boxes(*prior_args), lambda: ref.prior_boxes(*prior_args)),
    }
    for name, (ours, reference) in calls.items():
        kernel_result = ours()
        with ops.use_backend("reference") as chosen:
            assert chosen == "reference" and ops.get_backend() == "reference"
            switched = ours()
        _assert_same(switched, reference())
        # The structure (types, shapes, dtypes) is the kernels'.
        flat_switched = switched if isinstance(switched, (list, tuple)) else [switched]
        flat_kernel = kernel_result if isinstance(kernel_result, (list, tuple)) else [kernel_result]
        assert len(flat_switched) == len(flat_kernel), name
        for s, k in zip(flat_switched, flat_kernel, strict=True):
            if isinstance(k, dict):
                assert s.keys() == k.keys(), name
                s, k = s["boxes"], k["boxes"]
            assert s.dtype == k.dtype and s.device == k.device, name
        if name not in ("detect", "nms", "batched_nms"):  # fixed shapes: the values agree too
            for s, k in zip(flat_switched, flat_kernel, strict=True):
                torch.testing.assert_close(s, k, rtol=1e-5, atol=1e-5)
    assert ops.get_backend() == "ssd_ext"


def test_detect_padded_reference_pads_like_the_kernel() -> None:
    x = _inputs(1)
    ours = ops.detect_padded(x["loc"], x["conf"], x["priors"], 0.2, 0.45, 50, 20)
    with ops.use_backend("reference"):
        switched = ops.detect_padded(x["loc"], x["conf"], x["priors"], 0.2, 0.45, 50, 20)
    expected = ref.detect(x["loc"], x["conf"], x["priors"], 0.2, 0.45, 50, 20)
    boxes, scores, labels, counts = switched
    for s, k in zip(switched, ours, strict=True):
        assert s.shape == k.shape and s.dtype == k.dtype
    assert counts.tolist() == [e["scores"].shape[0] for e in expected]
    for image, e in enumerate(expected):
        count = int(counts[image])
        torch.testing.assert_close(boxes[image, :count], e["boxes"])
        assert (labels[image, count:] == -1).all() and (scores[image, count:] == 0).all()


def test_reference_match_applies_the_invalid_rule() -> None:
    priors = random_priors(50, torch.Generator().manual_seed(2))
    boxes = [torch.tensor([[0.1, 0.1, 0.1, 0.4], [0.2, 0.2, 0.6, 0.6]])]
    labels = [torch.tensor([1, 2])]
    with ops.use_backend("reference"):
        with pytest.raises(ValueError, match="invalid"):
            ops.match(boxes, labels, priors)
        with pytest.warns(UserWarning, match="dropping"):
            loc, lab = ops.match(boxes, labels, priors, invalid="drop")
    expected_loc, expected_lab = ref.match([boxes[0][1:]], [labels[0][1:]], priors)
    torch.testing.assert_close(loc, expected_loc)
    assert torch.equal(lab, expected_lab)


def test_the_switch_restores_after_an_exception_and_nests() -> None:
    with pytest.raises(RuntimeError, match="inside"):
        with ops.use_backend("reference"):
            raise RuntimeError("inside")
    assert ops.get_backend() == "ssd_ext"
    with ops.use_backend("reference"):
        with ops.use_backend("ssd_ext"):
            assert ops.get_backend() == "ssd_ext"
        assert ops.get_backend() == "reference"
    assert ops.get_backend() == "ssd_ext"


def test_set_backend_is_the_process_default_and_use_backend_is_per_thread() -> None:
    seen: dict[str, str] = {}
    try:
        ops.set_backend("reference")
        assert ops.get_backend() == "reference"
        with ops.use_backend("ssd_ext"):
            thread = threading.Thread(target=lambda: seen.update(other=ops.get_backend()))
            thread.start()
            thread.join()
            assert ops.get_backend() == "ssd_ext"
        assert seen["other"] == "reference"  # the other thread sees the default, not the override
    finally:
        ops.set_backend("ssd_ext")
    assert ops.get_backend() == "ssd_ext"


@pytest.mark.parametrize("name", ["torch", "", "Reference", None, 1])
def test_bad_backend_names_raise_value_error(name: object) -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.set_backend(name)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backend must be one of"):
        with ops.use_backend(name):  # type: ignore[arg-type]
            pass
    assert ops.get_backend() == "ssd_ext"


def test_a_whole_loss_runs_on_the_reference() -> None:
    """MultiBoxLoss through the switch equals ssd_reference.multibox_loss (the step the end-to-end
    benchmark times)."""
    from ssd_ext.engine import MultiBoxLoss

    x = _inputs(3)
    criterion = MultiBoxLoss(x["priors"], num_classes=6)
    targets = [{"boxes": b, "labels": lab} for b, lab in zip(x["boxes"], x["labels"], strict=True)]
    with ops.use_backend("reference"):
        losses = criterion(x["loc"], x["conf"], targets)
    loc_loss, conf_loss = ref.multibox_loss(x["loc"], x["conf"], x["boxes"], x["labels"], x["priors"])
    torch.testing.assert_close(losses["loc_loss"], loc_loss)
    torch.testing.assert_close(losses["conf_loss"], conf_loss)
