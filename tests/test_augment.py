"""The SSD augmentation (ssd_ext.data.transforms): invariants of every step and of the pipelines,
on the production (lazy uint8) path. The comparison with the float reference is in
test_augment_reference.py, the Augmentation switches in test_augment_switches.py."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from augment_helpers import assert_valid, gen, samples
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ssd_ext.data import transforms as T
from ssd_ext.data.transforms import colour, geometry, lazy_image, pipelines

SETTINGS = settings(max_examples=40, deadline=None)


@SETTINGS
@given(samples())
def test_photometric_distort_keeps_boxes_and_range(sample):
    image, boxes, labels, seed = sample
    distort = T.PhotometricDistort(p=1.0, channel_swap_p=0.5)
    out, out_boxes, out_labels = distort(image, boxes, labels, gen(seed))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert torch.equal(out_boxes, boxes) and torch.equal(out_labels, labels)


def test_photometric_distort_p0_is_identity():
    image = np.random.default_rng(0).integers(0, 256, size=(9, 7, 3), dtype=np.uint8)
    boxes, labels = torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)
    out, _, _ = T.PhotometricDistort(p=0.0)(image, boxes, labels, gen(0))
    np.testing.assert_array_equal(out, image)


def test_photometric_draws_follow_caffe_order_and_ranges():
    draws = [T.PhotometricDistort(p=1.0).draw(gen(seed)) for seed in range(200)]
    assert all(-32 <= d.brightness <= 32 and 0.5 <= d.contrast <= 1.5 and 0.5 <= d.saturation <= 1.5
               and -18 <= d.hue <= 18 and d.permutation is None for d in draws)
    assert {d.contrast_first for d in draws} == {True, False}
    # p = 0.5: each of the four steps is taken in about half of the draws.
    half = [T.PhotometricDistort().draw(gen(seed)) for seed in range(400)]
    for name in ("brightness", "contrast", "saturation", "hue"):
        taken = sum(getattr(d, name) is not None for d in half)
        assert 140 < taken < 260, name


def test_hsv_round_trip_and_agrees_with_colorsys():
    rgb = np.random.default_rng(1).uniform(0, 1, size=(50, 3)).astype(np.float32)
    rgb[:3] = [[0.5, 0.5, 0.5], [0, 0, 0], [1, 0, 0]]  # grey, black, pure red
    hsv = T.rgb_to_hsv(rgb)
    expected = np.array([colorsys.rgb_to_hsv(*map(float, px)) for px in rgb])
    np.testing.assert_allclose(hsv, expected, atol=1e-5)
    np.testing.assert_allclose(T.hsv_to_rgb(hsv), rgb, atol=1e-5)


def test_hue_shift_of_a_half_turn_complements():
    rgb = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=np.float32)
    hsv = T.rgb_to_hsv(rgb)
    hsv[..., 0] = (hsv[..., 0] + 0.5) % 1.0
    np.testing.assert_allclose(T.hsv_to_rgb(hsv), [[[0, 1, 1], [1, 0, 1]]], atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.one_of(st.none(), st.floats(0.0, 3.0)),
       st.one_of(st.none(), st.floats(-179.0, 179.0)))
def test_saturation_hue_matches_hsv_round_trip(seed, saturation, hue):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(64, 3)).astype(np.float32)
    rgb[:4] = [[7, 7, 7], [0, 0, 0], [255, 9, 255], [30, 30, 200]]  # grey, black, ties
    hsv = T.rgb_to_hsv(rgb / 255)
    if saturation is not None:
        hsv[:, 1] = np.clip(hsv[:, 1] * saturation, 0, 1)
    if hue is not None:
        hsv[:, 0] = (hsv[:, 0] + hue / 360) % 1.0
    expected = np.clip(T.hsv_to_rgb(hsv) * 255, 0, 255)
    out = colour.adjust_saturation_hue(np.ascontiguousarray(rgb.T), saturation, hue).T
    np.testing.assert_allclose(out, expected, atol=2e-3)


@SETTINGS
@given(samples())
def test_expand_places_the_image_where_the_boxes_moved(sample):
    image, boxes, labels, seed = sample
    fill = (10.0, 20.0, 30.0)
    out, out_boxes, out_labels = T.Expand(fill=fill, max_ratio=4.0, p=1.0)(image, boxes, labels, gen(seed))
    height, width, _ = image.shape
    assert height <= out.shape[0] <= 4 * height and width <= out.shape[1] <= 4 * width
    assert_valid(out, out_boxes, out_labels, labels)
    placement = T.Expand(fill=fill, max_ratio=4.0, p=1.0).draw(gen(seed), height, width)
    top, left = placement.top, placement.left
    torch.testing.assert_close(out_boxes, boxes + torch.tensor([left, top, left, top], dtype=torch.float32))
    np.testing.assert_array_equal(out[top:top + height, left:left + width], image)
    outside = np.ones(out.shape[:2], dtype=bool)
    outside[top:top + height, left:left + width] = False
    assert (out[outside] == [10, 20, 30]).all()


def test_expand_p0_and_max_ratio_1_keep_the_image():
    image = np.zeros((5, 6, 3), np.uint8)
    boxes, labels = torch.tensor([[1.0, 1.0, 3.0, 4.0]]), torch.tensor([1])
    assert T.Expand(p=0.0).draw(gen(0), 5, 6) is None
    out, out_boxes, _ = T.Expand(max_ratio=1.0, p=1.0)(image, boxes, labels, gen(0))
    assert out.shape == image.shape and torch.equal(out_boxes, boxes)


@SETTINGS
@given(samples())
def test_min_iou_crop_matches_its_sampled_rectangle(sample):
    image, boxes, labels, seed = sample
    out, out_boxes, out_labels = T.MinIoURandomCrop()(image, boxes, labels, gen(seed))
    assert_valid(out, out_boxes, out_labels, labels)
    # Replaying the same generator gives the rectangle the transform used.
    choice, rect, keep = T.sample_min_iou_crop(boxes, image.shape[1], image.shape[0], gen(seed))
    if rect is None:
        np.testing.assert_array_equal(out, image)
        assert torch.equal(out_boxes, boxes)
        return
    x1, y1, x2, y2 = rect
    np.testing.assert_array_equal(out, image[y1:y2, x1:x2])
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    inside = (centres[:, 0] > x1) & (centres[:, 0] < x2) & (centres[:, 1] > y1) & (centres[:, 1] < y2)
    assert torch.equal(keep, inside) and bool(inside.any())
    expected = boxes[inside].clone()
    expected[:, 0::2] = expected[:, 0::2].clamp(x1, x2) - x1
    expected[:, 1::2] = expected[:, 1::2].clamp(y1, y2) - y1
    torch.testing.assert_close(out_boxes, expected)
    assert torch.equal(out_labels, labels[inside])


@settings(max_examples=60, deadline=None)
@given(samples(max_side=64))
def test_min_iou_crop_constraint(sample):
    image, boxes, _, seed = sample
    height, width, _ = image.shape
    choice, rect, keep = T.sample_min_iou_crop(boxes, width, height, gen(seed))
    assert choice in T.CROP_MIN_IOUS
    if rect is None:
        return
    assert choice is not None and boxes.shape[0] > 0
    x1, y1, x2, y2 = rect
    crop_w, crop_h = x2 - x1, y2 - y1
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    # Sides in [0.3, 1] of the image's (up to integer truncation); aspect in [0.5, 2].
    assert crop_w >= int(0.3 * width) and crop_h >= int(0.3 * height)
    assert crop_h / (crop_w + 1) <= 2.0 and (crop_h + 1) / crop_w >= 0.5
    ious = geometry.iou_with_rect(boxes, rect)
    assert float(ious.max()) >= choice  # SOME box satisfies the minimum IoU
    assert bool(keep.any())


def test_min_iou_crop_needs_only_some_box_to_pass():
    # A box covering the image and a tiny one: every crop has IoU < 0.5 with the tiny box,
    # so ssd.pytorch's "all boxes" rule would never crop; the paper's "some box" rule does.
    boxes = torch.tensor([[0.0, 0.0, 100.0, 100.0], [0.0, 0.0, 2.0, 2.0]])
    rects = [T.sample_min_iou_crop(boxes, 100, 100, gen(seed), min_ious=(0.5,))[1] for seed in range(20)]
    accepted = [r for r in rects if r is not None]
    assert accepted
    for rect in accepted:
        assert float(geometry.iou_with_rect(boxes, rect).max()) >= 0.5
        assert float(geometry.iou_with_rect(boxes[1:], rect).max()) < 0.5


def test_min_iou_crop_options_include_half_and_are_all_drawn():
    assert T.CROP_MIN_IOUS == (None, 0.1, 0.3, 0.5, 0.7, 0.9, 0.0)
    boxes = torch.tensor([[10.0, 10.0, 90.0, 90.0]])
    g = gen(0)
    seen = {T.sample_min_iou_crop(boxes, 100, 100, g, max_trials=1)[0] for _ in range(300)}
    assert seen == set(T.CROP_MIN_IOUS)


def test_min_iou_crop_gives_up_after_bounded_tries():
    # No crop can reach IoU 0.9 with a 1-pixel box in a 100x100 image (crops are >= 30x30).
    boxes = torch.tensor([[50.0, 50.0, 51.0, 51.0]])
    choice, rect, keep = T.sample_min_iou_crop(boxes, 100, 100, gen(0), min_ious=(0.9,), max_trials=7)
    assert choice == 0.9 and rect is None and keep is None
    assert T.MinIoURandomCrop(min_ious=(0.9,), max_trials=7).draw(gen(0), boxes, 100, 100) is None


@SETTINGS
@given(samples())
def test_flip_twice_is_identity(sample):
    image, boxes, labels, seed = sample
    flip = T.RandomHorizontalFlip(p=1.0)
    once = flip(image, boxes, labels, gen(seed))
    assert_valid(*once, labels)
    np.testing.assert_array_equal(once[0], image[:, ::-1])
    twice = flip(*once, gen(seed))
    np.testing.assert_array_equal(twice[0], image)
    torch.testing.assert_close(twice[1], boxes)


@SETTINGS
@given(samples(), st.integers(8, 40), st.integers(8, 40))
def test_resize_scales_boxes(sample, new_h, new_w):
    image, boxes, labels, seed = sample
    out, out_boxes, out_labels = T.Resize((new_h, new_w))(image, boxes, labels)
    assert out.shape == (new_h, new_w, 3) and out.dtype == np.uint8
    assert_valid(out, out_boxes, out_labels, labels)
    scale = torch.tensor([new_w / image.shape[1], new_h / image.shape[0]] * 2)
    torch.testing.assert_close(out_boxes, boxes * scale)


def test_resize_of_constant_image_is_constant():
    image = np.full((30, 50, 3), 77, dtype=np.uint8)
    out, _, _ = T.Resize(20)(image, torch.zeros(0, 4), torch.zeros(0))
    assert (out == 77).all()


def test_normalize_and_to_tensor():
    mean = np.array(T.IMAGENET_MEAN, dtype=np.float32) * 255
    std = np.array(T.IMAGENET_STD, dtype=np.float32) * 255
    image = np.broadcast_to(np.rint(mean + std), (4, 5, 3)).astype(np.uint8)
    out, _, _ = T.Compose([T.Normalize(), T.ToTensor()])(image, torch.zeros(0, 4), torch.zeros(0))
    assert isinstance(out, torch.Tensor) and out.shape == (3, 4, 5) and out.dtype == torch.float32
    expected = (torch.from_numpy(np.rint(mean + std)) - torch.from_numpy(mean)) / torch.from_numpy(std)
    torch.testing.assert_close(out, expected.view(3, 1, 1).expand(3, 4, 5))


@settings(max_examples=30, deadline=None)
@given(samples(max_side=40))
def test_train_pipeline_invariants(sample):
    image, boxes, labels, seed = sample
    out, out_boxes, out_labels = T.train_transform(32)(image, boxes, labels, gen(seed))
    assert isinstance(out, torch.Tensor) and out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert_valid(out, out_boxes, out_labels, labels)


def test_train_pipeline_is_reproducible_with_a_generator():
    image = np.random.default_rng(0).integers(0, 255, size=(60, 80, 3), dtype=np.uint8)
    boxes = torch.tensor([[5.0, 5.0, 40.0, 50.0], [30.0, 10.0, 75.0, 30.0]])
    labels = torch.tensor([3, 7])
    pipeline = T.train_transform((48, 64))
    runs = [pipeline(image, boxes, labels, gen(seed)) for seed in (5, 5, 6)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    numpy_runs = [pipeline(image, boxes, labels, np.random.default_rng(5)) for _ in range(2)]
    assert torch.equal(numpy_runs[0][0], numpy_runs[1][0]) and torch.equal(numpy_runs[0][1], numpy_runs[1][1])
    outputs = [pipeline(image, boxes, labels, gen(seed))[0] for seed in range(6)]
    assert any(not torch.equal(outputs[0], other) for other in outputs[1:])


def test_eval_pipeline_is_deterministic_and_keeps_all_boxes():
    image = np.random.default_rng(0).integers(0, 255, size=(60, 80, 3), dtype=np.uint8)
    boxes = torch.tensor([[5.0, 5.0, 40.0, 50.0], [30.0, 10.0, 75.0, 30.0]])
    out, out_boxes, _ = T.eval_transform(40)(image, boxes, torch.tensor([1, 2]))
    assert out.shape == (3, 40, 40)
    assert torch.equal(out, T.eval_transform(40)(image, boxes, torch.tensor([1, 2]))[0])
    torch.testing.assert_close(out_boxes, boxes * torch.tensor([0.5, 40 / 60, 0.5, 40 / 60]))


def test_bad_inputs_are_reported():
    with pytest.raises(TypeError, match="ToLazyImage first"):
        T.RandomHorizontalFlip()(torch.zeros(3, 4, 4), torch.zeros(0, 4), torch.zeros(0))
    with pytest.raises(TypeError, match="ToLazyImage first"):  # float pixels are no longer a path
        T.Resize(4)(np.zeros((4, 4, 3), np.float32), torch.zeros(0, 4), torch.zeros(0))
    with pytest.raises(ValueError, match="first dimension"):
        T.ToLazyImage()(np.zeros((4, 4, 3), np.uint8), torch.zeros(2, 4), torch.zeros(3))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        T.ToLazyImage()(np.zeros((4, 4), np.uint8), torch.zeros(0, 4), torch.zeros(0))
    with pytest.raises(ValueError):
        T.Expand(max_ratio=0.5)
    with pytest.raises(ValueError):
        T.Resize(0)


# ----------------------------------------------------------------------------- the lazy image


def random_lazy_steps(draw_rng: np.random.Generator, image: T.LazyImage, eager: np.ndarray, steps: int):
    """Random expand / crop / flip on a LazyImage and on a float array alike."""
    for _ in range(steps):
        kind = draw_rng.integers(3)
        height, width = eager.shape[:2]
        if kind == 0:
            new_h, new_w = height + int(draw_rng.integers(0, 9)), width + int(draw_rng.integers(0, 9))
            top = int(draw_rng.integers(0, new_h - height + 1))
            left = int(draw_rng.integers(0, new_w - width + 1))
            fill = (10.0, 200.0, 77.0) if draw_rng.random() < 0.5 else (1.0, 2.0, 3.0)
            image = image.expanded(new_h, new_w, top, left, fill)
            canvas = np.empty((new_h, new_w, 3), np.float32)
            canvas[...] = fill
            canvas[top:top + height, left:left + width] = eager
            eager = canvas
        elif kind == 1:
            x1, y1 = int(draw_rng.integers(0, width)), int(draw_rng.integers(0, height))
            x2, y2 = int(draw_rng.integers(x1 + 1, width + 1)), int(draw_rng.integers(y1 + 1, height + 1))
            image, eager = image.cropped(x1, y1, x2, y2), eager[y1:y2, x1:x2]
        else:
            image, eager = image.flipped(), eager[:, ::-1]
    return image, eager


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 6), st.integers(2, 40), st.integers(2, 40))
def test_lazy_geometry_is_the_eager_geometry(seed, steps, out_h, out_w):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(2, 24)), int(rng.integers(2, 24)), 3)
    source = rng.integers(0, 256, size=shape, dtype=np.uint8)
    lazy, eager = random_lazy_steps(rng, T.LazyImage(source), source.astype(np.float32), steps)
    assert lazy.shape == eager.shape
    expected = np.rint(eager).astype(np.uint8)
    np.testing.assert_array_equal(lazy.to_array(), expected)
    # Resizing only the visible part (plus the filter's reach) = resizing the whole canvas.
    resized = lazy.resized(out_h, out_w).astype(np.int16)
    whole = lazy_image.resample(expected, (out_h, out_w)).astype(np.int16)
    assert int(np.abs(resized - whole).max()) <= 1


def test_lazy_resize_of_a_large_zoom_out_reads_only_the_source():
    # 4x zoom out of a 300x200 image to 300 px: the canvas (1200x800) is never built, and the
    # pixels far from the pasted image are exactly the fill.
    source = np.full((200, 300, 3), 200, np.uint8)
    lazy = T.LazyImage(source).expanded(800, 1200, 500, 10, (124.0, 116.0, 104.0))
    out = lazy.resized(300, 300)
    whole = lazy_image.resample(lazy.to_array(), (300, 300))
    assert int(np.abs(out.astype(int) - whole).max()) <= 1
    assert (out[:150] == [124, 116, 104]).all() and (out[230:, 100:] == [124, 116, 104]).all()


def test_lazy_crop_of_the_fill_only_then_zoom_out_stays_fill():
    source = np.full((4, 4, 3), 250, np.uint8)
    lazy = T.LazyImage(source).expanded(20, 20, 0, 0, (1.0, 2.0, 3.0)).cropped(10, 10, 16, 16)
    lazy = lazy.expanded(12, 12, 6, 6, (7.0, 8.0, 9.0))
    out = lazy.to_array()
    assert (out[6:, 6:] == [1, 2, 3]).all() and (out[:6] == [7, 8, 9]).all()
    assert (lazy.resized(5, 5) < 250).all()


def test_compose_checks_a_sample_once(monkeypatch):
    calls = []
    check = pipelines.check_sample
    monkeypatch.setattr(pipelines, "check_sample", lambda *args: calls.append(1) or check(*args))
    image = np.zeros((20, 30, 3), np.uint8)
    boxes, labels = torch.tensor([[2.0, 2.0, 12.0, 15.0]]), torch.tensor([1])
    T.train_transform(16)(image, boxes, labels, gen(0))
    assert len(calls) == 1  # by ToLazyImage, none by the seven steps after it
    calls.clear()
    # After a callable that is not a Transform, the next step checks again.
    steps = [T.ToLazyImage(), lambda *s: s[:3], T.RandomHorizontalFlip(), T.Resize(8)]
    T.Compose(steps)(image, boxes, labels)
    assert len(calls) == 2
    # ... and reports a bad sample with the message a lone step gives.
    to_tensor = lambda image, boxes, labels, g: (torch.zeros(3, 4, 4), boxes, labels)  # noqa: E731
    with pytest.raises(TypeError, match="ToLazyImage first"):
        T.Compose([T.ToLazyImage(), to_tensor, T.RandomHorizontalFlip()])(image, boxes, labels)
    with pytest.raises(ValueError, match="first dimension"):
        drop_labels = lambda image, boxes, labels, g: (image, boxes, labels[:0])  # noqa: E731
        T.Compose([T.ToLazyImage(), drop_labels, T.Resize(8)])(image, boxes, labels)
    with pytest.raises(TypeError, match="ToLazyImage first"):
        T.Compose([T.ToLazyImage(), T.ToTensor(), T.Resize(8)])(image, boxes, labels)


def test_steps_take_uint8_arrays_and_give_arrays_back():
    image = np.random.default_rng(0).integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
    boxes, labels = torch.tensor([[1.0, 1.0, 6.0, 8.0]]), torch.tensor([4])
    flipped, _, _ = T.RandomHorizontalFlip(p=1.0)(image, boxes, labels)
    assert isinstance(flipped, np.ndarray) and flipped.dtype == np.uint8
    np.testing.assert_array_equal(flipped, image[:, ::-1])
    resized, _, _ = T.Resize((5, 6))(image, boxes, labels)
    assert resized.shape == (5, 6, 3) and resized.dtype == np.uint8
    normalized, _, _ = T.Normalize()(image, boxes, labels)
    mean, std = np.array(T.IMAGENET_MEAN, np.float32), np.array(T.IMAGENET_STD, np.float32)
    np.testing.assert_allclose(normalized, (image / np.float32(255) - mean) / std, atol=1e-5)
    tensor, _, _ = T.ToTensor()(image, boxes, labels)
    assert tensor.dtype == torch.float32
    assert torch.equal(tensor, torch.from_numpy(image).permute(2, 0, 1).float())


def test_to_lazy_image_accepts_pil_uint8_and_tensors():
    array = np.random.default_rng(0).integers(0, 255, size=(6, 5, 3), dtype=np.uint8)
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    for image in (Image.fromarray(array), array, tensor, tensor.float() / 255):
        out, boxes, _ = T.ToLazyImage()(image, [], [])
        assert isinstance(out, T.LazyImage) and boxes.shape == (0, 4)
        np.testing.assert_array_equal(out.to_array(), array)
    assert T.ToLazyImage()(array, [], [])[0].source is array  # not copied
    grey = T.ToLazyImage()(Image.fromarray(array[..., 0]), [], [])[0].to_array()
    assert grey.shape == (6, 5, 3) and (grey == array[..., :1]).all()
    rounded = T.ToLazyImage()(array.astype(np.float64) + 0.4, [], [])[0]  # 0..255 values, rounded
    np.testing.assert_array_equal(rounded.to_array(), array)
    with pytest.raises(ValueError, match="non-finite"):
        T.ToLazyImage()(np.full((2, 2, 3), np.nan), [], [])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        T.ToLazyImage()(tensor.float(), [], [])
    with pytest.raises(TypeError, match="read_image"):
        T.ToLazyImage()("image.jpg", [], [])
    with pytest.raises(TypeError, match="uint8"):
        T.LazyImage(np.zeros((4, 4, 3), np.float32))
