"""prior_boxes and ssd_sizes against the reference, hand-worked SSD300/SSD512 values, the
paper's size rule, caching, dtypes and bad input."""

from __future__ import annotations

import math

import pytest
import ssd_reference as ref
import torch
from helpers import DEVICES, assert_close_to_reference
from hypothesis import given, settings
from hypothesis import strategies as st

from ssd_ext import ops
from ssd_ext.ops import priors as priors_module

SSD300 = dict(
    feature_map_sizes=[38, 19, 10, 5, 3, 1],
    image_size=300,
    min_sizes=[30, 60, 111, 162, 213, 264],
    max_sizes=[60, 111, 162, 213, 264, 315],
    aspect_ratios=[[2], [2, 3], [2, 3], [2, 3], [2], [2]],
    steps=[8, 16, 32, 64, 100, 300],
)
SSD512 = dict(
    feature_map_sizes=[64, 32, 16, 8, 4, 2, 1],
    image_size=512,
    min_sizes=[35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8],
    max_sizes=[76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6],
    aspect_ratios=[[2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]],
    steps=[8, 16, 32, 64, 128, 256, 512],
)


def test_ssd300_hand_worked(device):
    priors = ops.prior_boxes(**SSD300, device=device)
    assert priors.shape == (8732, 4)
    assert priors.dtype == torch.float32
    assert priors.device.type == device
    c = 0.5 * 8 / 300
    s, big = 0.1, math.sqrt(30 * 60) / 300
    wide, tall = 0.1 * math.sqrt(2), 0.1 / math.sqrt(2)
    expected = torch.tensor([[c, c, s, s], [c, c, big, big], [c, c, wide, tall], [c, c, tall, wide]])
    assert_close_to_reference(priors[:4], expected)
    reference = ref.prior_boxes(**SSD300)
    assert reference.shape == (8732, 4)
    assert_close_to_reference(reference[:4], expected)
    assert_close_to_reference(expected[:, 2:], torch.tensor([[0.1, 0.1], [0.141421, 0.141421],
                                                             [0.141421, 0.070711], [0.070711, 0.141421]]),
                              rtol=1e-5, atol=1e-6)
    # The second cell of the first row moves by one step (8 px) in x only.
    assert_close_to_reference(priors[4], torch.tensor([1.5 * 8 / 300, c, s, s]))
    # The last level: one 1x1 cell centred in the image; its sqrt(264 * 315) square is clipped to 1.
    last = priors[-4:]
    assert_close_to_reference(last[:, :2], torch.full((4, 2), 0.5))
    assert last[1, 2].item() == pytest.approx(min(1.0, math.sqrt(264 * 315) / 300))
    assert_close_to_reference(priors, reference)


def test_ssd512_count_and_reference(device):
    priors = ops.prior_boxes(**SSD512, device=device)
    assert priors.shape == (24564, 4)
    reference = ref.prior_boxes(**SSD512)
    assert reference.shape == (24564, 4)
    for boxes in (priors, reference):
        assert_close_to_reference(boxes[0], torch.tensor([4 / 512, 4 / 512, 0.07, 0.07]))
        assert_close_to_reference(boxes[1, 2:], torch.full((2,), math.sqrt(35.84 * 76.8) / 512))
    assert_close_to_reference(priors, reference)


def test_non_square_image_and_feature_maps(device):
    config = dict(feature_map_sizes=[(4, 6), (2, 3), 1], image_size=(240, 320), min_sizes=[40, 90, 200],
                  max_sizes=[90, None, 290], aspect_ratios=[[2], [2, 3], []], offset=0.25, clip=False)
    priors = ops.prior_boxes(**config, device=device)
    assert priors.shape == (4 * 6 * 4 + 2 * 3 * 5 + 1 * 2, 4)
    # The min square is square in pixels: w * 320 == h * 240.
    first = priors[0].cpu()
    assert first[2].item() * 320 == pytest.approx(40) and first[3].item() * 240 == pytest.approx(40)
    # Default steps are image / feature map per axis: 60 px in y, 53.3 px in x.
    assert_close_to_reference(first[:2], torch.tensor([0.25 * (320 / 6) / 320, 0.25 * 60 / 240]))
    assert_close_to_reference(priors, ref.prior_boxes(**config))
    stepped = dict(config, steps=[(60, 50), 110, (240, 320)])
    assert_close_to_reference(ops.prior_boxes(**stepped, device=device), ref.prior_boxes(**stepped))


def test_clip_clamps_all_four_values(device):
    config = dict(feature_map_sizes=[2], image_size=100, min_sizes=[80], max_sizes=[160],
                  aspect_ratios=[[3]], offset=1.0, steps=[70])
    clipped = ops.prior_boxes(**config, device=device)
    unclipped = ops.prior_boxes(**config, clip=False, device=device)
    assert unclipped.max().item() > 1.0
    assert clipped.min().item() >= 0.0 and clipped.max().item() <= 1.0
    assert torch.equal(clipped, unclipped.clamp(0, 1))
    assert_close_to_reference(unclipped, ref.prior_boxes(**config, clip=False))


def test_no_max_sizes_and_empty_levels(device):
    config = dict(feature_map_sizes=[3, 2], image_size=64, min_sizes=[10, 20], max_sizes=None,
                  aspect_ratios=[[], [0.5]])
    priors = ops.prior_boxes(**config, device=device)
    assert priors.shape == (9 * 1 + 4 * 3, 4)
    assert_close_to_reference(priors, ref.prior_boxes(**config))
    empty = ops.prior_boxes([], 300, [], None, [], device=device)
    assert empty.shape == (0, 4)


@settings(max_examples=25, deadline=None)
@given(
    levels=st.lists(
        st.tuples(
            st.integers(1, 7), st.integers(1, 7),  # feature map h, w
            st.floats(1.0, 200.0),  # min size
            st.one_of(st.none(), st.floats(0.0, 150.0)),  # extra over min for max size
            st.lists(st.floats(0.2, 5.0), max_size=3),  # aspect ratios
            st.one_of(st.none(), st.tuples(st.floats(1.0, 80.0), st.floats(1.0, 80.0))),
        ),
        min_size=1, max_size=4),
    image=st.tuples(st.integers(16, 600), st.integers(16, 600)),
    offset=st.floats(0.0, 1.0),
    clip=st.booleans(),
)
def test_matches_reference_random(levels, image, offset, clip):
    use_steps = all(level[5] is not None for level in levels)
    config = dict(
        feature_map_sizes=[(h, w) for h, w, *_ in levels],
        image_size=image,
        min_sizes=[level[2] for level in levels],
        max_sizes=[None if level[3] is None else level[2] + level[3] for level in levels],
        aspect_ratios=[level[4] for level in levels],
        steps=[level[5] for level in levels] if use_steps else None,
        offset=offset,
        clip=clip,
    )
    expected = ref.prior_boxes(**config)
    for device in DEVICES:
        assert_close_to_reference(ops.prior_boxes(**config, device=device), expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(device, dtype):
    priors = ops.prior_boxes(**SSD300, device=device, dtype=dtype)
    assert priors.dtype == dtype
    expected = ref.prior_boxes(**SSD300, dtype=torch.float64)
    if dtype == torch.float64:
        torch.testing.assert_close(priors.cpu(), expected, rtol=1e-12, atol=1e-12)
    else:
        # Computed in float64, rounded once: exactly the reference cast to the dtype.
        assert torch.equal(priors.cpu(), expected.to(dtype))


def test_cache_returns_independent_copies(device):
    priors_module._CACHE.clear()
    first = ops.prior_boxes(**SSD300, device=device)
    assert len(priors_module._CACHE) == 1
    first.zero_()
    second = ops.prior_boxes(**SSD300, device=device)
    assert len(priors_module._CACHE) == 1
    assert_close_to_reference(second, ref.prior_boxes(**SSD300))
    # Equal arguments in another form hit the same entry; another dtype is another entry.
    same = dict(SSD300, image_size=(300, 300),
                feature_map_sizes=[(f, f) for f in SSD300["feature_map_sizes"]],
                min_sizes=[float(v) for v in SSD300["min_sizes"]])
    ops.prior_boxes(**same, device=device)
    assert len(priors_module._CACHE) == 1
    ops.prior_boxes(**SSD300, device=device, dtype=torch.float64)
    assert len(priors_module._CACHE) == 2


def test_cache_is_safe_under_inference_mode_and_grad():
    priors_module._CACHE.clear()
    with torch.inference_mode():
        ops.prior_boxes(**SSD300)
    priors = ops.prior_boxes(**SSD300)
    assert not priors.is_inference()
    assert not priors.requires_grad


def test_ssd_sizes_caffe_rule():
    assert ops.ssd_sizes(300, 6) == ([30, 60, 111, 162, 213, 264], [60, 111, 162, 213, 264, 315])
    mins, maxes = ops.ssd_sizes(512, 7, s_min=0.15, s_max=0.9, first_level_scale=0.07)
    assert mins == SSD512["min_sizes"]
    assert maxes == SSD512["max_sizes"]
    # The sizes feed prior_boxes straight away.
    priors = ops.prior_boxes(SSD300["feature_map_sizes"], 300, *ops.ssd_sizes(300, 6),
                             SSD300["aspect_ratios"], SSD300["steps"])
    assert torch.equal(priors, ops.prior_boxes(**SSD300))


def test_ssd_sizes_paper_rule():
    # s_k = 0.2 + 0.7 (k - 1) / 4 on the five levels after conv4_3 (0.1).
    mins, maxes = ops.ssd_sizes(300, 6, rounding="paper")
    assert mins == pytest.approx([30, 60, 112.5, 165, 217.5, 270])
    assert maxes == pytest.approx([60, 112.5, 165, 217.5, 270, 322.5])
    # Without a separate first level the rule spans all m levels: s_1 = s_min, s_m = s_max.
    mins, maxes = ops.ssd_sizes((300, 400), 5, s_min=0.2, s_max=0.9, first_level_scale=None,
                                rounding="paper")
    scales = [0.2 + 0.7 * k / 4 for k in range(5)]
    assert mins == pytest.approx([300 * s for s in scales])
    assert maxes == pytest.approx([300 * (s + 0.175) for s in scales])
    mins, maxes = ops.ssd_sizes(300, 1, first_level_scale=None, rounding="paper")
    assert mins == pytest.approx([60.0]) and maxes == pytest.approx([270.0])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(num_levels=1), ValueError, "num_levels must be at least 2"),
        (dict(num_levels=6, s_min=0.9, s_max=0.2), ValueError, "s_max"),
        (dict(num_levels=6, s_min=-0.1), ValueError, "s_min must be positive"),
        (dict(num_levels=6, first_level_scale=0.3), ValueError, "first_level_scale"),
        (dict(num_levels=6, rounding="round"), ValueError, "rounding"),
        (dict(num_levels=6.0), TypeError, "num_levels must be an int"),
    ],
)
def test_ssd_sizes_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        ops.ssd_sizes(300, **kwargs)


def _config(**changes):
    config = dict(SSD300)
    config.update(changes)
    return config


@pytest.mark.parametrize(
    "config, error, match",
    [
        (_config(feature_map_sizes=[38, 0, 10, 5, 3, 1]), ValueError,
         r"feature_map_sizes\[1\] must be positive"),
        (_config(feature_map_sizes=[38, 19.0, 10, 5, 3, 1]), TypeError,
         r"feature_map_sizes\[1\] must be an int"),
        (_config(feature_map_sizes=[(38, 38, 1), 19, 10, 5, 3, 1]), ValueError, r"feature_map_sizes\[0\]"),
        (_config(feature_map_sizes=38), TypeError, "feature_map_sizes must be a sequence"),
        (_config(image_size=-300), ValueError, "image_size must be positive"),
        (_config(image_size=(300, 0)), ValueError, r"image_size\[1\] must be positive"),
        (_config(min_sizes=[30, 60, 111, 162, 213]), ValueError, "min_sizes must have one entry per level"),
        (_config(min_sizes=[30, 0, 111, 162, 213, 264]), ValueError, r"min_sizes\[1\] must be positive"),
        (_config(min_sizes=[30, float("nan"), 111, 162, 213, 264]), ValueError, r"min_sizes\[1\]"),
        (_config(min_sizes=[30, "60", 111, 162, 213, 264]), TypeError, r"min_sizes\[1\] must be a real"),
        (_config(max_sizes=[60, 50, 162, 213, 264, 315]), ValueError, r"max_sizes\[1\] = 50 is smaller"),
        (_config(max_sizes=[60, 111]), ValueError, "max_sizes must have one entry per level"),
        (_config(aspect_ratios=[[2], [2, 0], [2, 3], [2, 3], [2], [2]]), ValueError,
         r"aspect_ratios\[1\]\[1\] must be positive"),
        (_config(aspect_ratios=[[2], [2, -3], [2, 3], [2, 3], [2], [2]]), ValueError,
         r"aspect_ratios\[1\]\[1\]"),
        (_config(aspect_ratios=[2, [2, 3], [2, 3], [2, 3], [2], [2]]), TypeError,
         r"aspect_ratios\[0\] must be a sequence"),
        (_config(steps=[8, 16, 32]), ValueError, "steps must have one entry per level"),
        (_config(steps=[8, 0, 32, 64, 100, 300]), ValueError, r"steps\[1\] must be positive"),
        (_config(offset=1.5), ValueError, r"offset must be in \[0, 1\]"),
        (_config(offset=-0.1), ValueError, "offset"),
        (_config(clip=1), TypeError, "clip must be a bool"),
    ],
)
def test_bad_input(config, error, match):
    with pytest.raises(error, match=match):
        ops.prior_boxes(**config)


def test_bad_dtype_and_device():
    with pytest.raises(TypeError, match="dtype must be float16, bfloat16, float32, float64"):
        ops.prior_boxes(**SSD300, dtype=torch.int64)
    with pytest.raises(TypeError, match="dtype must be float16, bfloat16, float32, float64"):
        ops.prior_boxes(**SSD300, dtype=torch.float8_e4m3fn)
    with pytest.raises(TypeError, match="device must be"):
        ops.prior_boxes(**SSD300, device=3.0)


def test_kernel_checks_reach_python_as_value_errors():
    # The dispatcher op directly, skipping the wrapper: the C++ checks name the argument.
    op = torch.ops.ssd_ext.prior_boxes.default
    with pytest.raises(ValueError, match="feature_map_sizes must hold an"):
        op([38, 38, 19], [300.0, 300.0], [30.0, 60.0], [], [], [0, 0], [])
    with pytest.raises(ValueError, match=r"max_sizes\[0\] must be 0 \(none\) or at least"):
        op([2, 2], [300.0, 300.0], [30.0], [20.0], [], [0], [])
    with pytest.raises(ValueError, match=r"aspect_ratios\[0\] must be positive"):
        op([2, 2], [300.0, 300.0], [30.0], [], [0.0], [1], [])
    with pytest.raises(ValueError, match="offset must be in"):
        op([2, 2], [300.0, 300.0], [30.0], [], [], [0], [], 2.0)
    with pytest.raises(ValueError, match=r"feature_map_sizes\[0\] must be positive"):
        op([0, 2], [300.0, 300.0], [30.0], [], [], [0], [])
    with pytest.raises(TypeError, match="dtype must be float16, bfloat16, float32 or float64"):
        op([2, 2], [300.0, 300.0], [30.0], [], [], [0], [], dtype=torch.int32)
    out = torch.empty(3, 4)
    with pytest.raises(ValueError, match=r"out must have shape \[4, 4\]"):
        torch.ops.ssd_ext._prior_boxes_out(out, [2, 2], [1.0, 1.0], [0.1, 0.1], [1], [2.0, 2.0], 0.5, True)



def test_meta_device_gives_shape_only():
    priors = ops.prior_boxes(**SSD300, device="meta")
    assert priors.shape == (8732, 4) and priors.device.type == "meta"
