"""The production (lazy uint8) augmentation against its float reference (ssd_reference.transforms):
same generator, same draws, so identical boxes and labels and pixels equal up to uint8 rounding."""

from __future__ import annotations

import numpy as np
import torch
from augment_helpers import gen, samples
from hypothesis import given, settings
from hypothesis import strategies as st
from ssd_reference import transforms as R

from ssd_ext.data import transforms as T

STD_255 = torch.tensor(T.IMAGENET_STD).view(3, 1, 1) * 255

augmentations = st.builds(T.Augmentation, photometric=st.booleans(), expand=st.booleans(),
                          expand_max_ratio=st.floats(1.0, 4.0), expand_p=st.sampled_from([0.0, 0.5, 1.0]),
                          crop=st.booleans(), flip=st.booleans())


def levels(normalised: torch.Tensor) -> torch.Tensor:
    """A difference of normalised tensors in 0..255 levels."""
    return normalised.abs() * STD_255


@settings(max_examples=60, deadline=None)
@given(samples(max_side=40), st.integers(8, 48), augmentations)
def test_train_transform_matches_the_float_reference(sample, size, augmentation):
    # Pixels differ by one rounding of the colour maps, PIL's 8-bit resampling and the fill's.
    image, boxes, labels, seed = sample
    production = T.train_transform(size, augmentation=augmentation)
    reference = R.train_transform(size, augmentation=augmentation)
    out, out_boxes, out_labels = production(image, boxes, labels, gen(seed))
    ref, ref_boxes, ref_labels = reference(image, boxes, labels, gen(seed))
    assert torch.equal(out_boxes, ref_boxes) and torch.equal(out_labels, ref_labels)
    assert out.shape == ref.shape == (3, size, size)
    diff = levels(out - ref)
    assert float(diff.max()) <= 2.5 and float(diff.mean()) <= 0.75


def test_the_paper_recipe_matches_the_reference_on_voc_sized_pictures():
    # The default Augmentation() at 300 px, numpy generators too: boxes exactly the reference's.
    rng = np.random.default_rng(7)
    for seed in range(6):
        image = rng.integers(0, 256, size=(375, 500, 3), dtype=np.uint8)
        boxes = torch.tensor([[20.0, 30.0, 200.0, 300.0], [250.0, 40.0, 480.0, 200.0], [10, 10, 40, 60]])
        labels = torch.tensor([1, 2, 3])
        for make in (gen, np.random.default_rng):
            out = T.train_transform(300)(image, boxes, labels, make(seed))
            ref = R.train_transform(300)(image, boxes, labels, make(seed))
            assert torch.equal(out[1], ref[1]) and torch.equal(out[2], ref[2])
            assert float(levels(out[0] - ref[0]).max()) <= 2.5


@settings(max_examples=30, deadline=None)
@given(samples(max_side=40), st.integers(8, 48))
def test_eval_transform_matches_the_float_reference(sample, size):
    image, boxes, labels, _ = sample
    out, out_boxes, out_labels = T.eval_transform(size)(image, boxes, labels)
    ref, ref_boxes, ref_labels = R.eval_transform(size)(image, boxes, labels)
    assert torch.equal(out_boxes, ref_boxes) and torch.equal(out_labels, ref_labels)
    assert float(levels(out - ref).max()) <= 1.0 + 1e-4  # PIL's 8-bit resample: within one level


@settings(max_examples=40, deadline=None)
@given(samples(), st.floats(0.0, 1.0))
def test_photometric_distort_matches_the_hsv_reference(sample, channel_swap_p):
    image, boxes, labels, seed = sample
    step = T.PhotometricDistort(p=1.0, channel_swap_p=channel_swap_p)
    out, _, _ = step(image, boxes, labels, gen(seed))
    ref = R.distort_colours(image.astype(np.float32), step.draw(gen(seed)))
    assert int(np.abs(out.astype(int) - np.rint(ref).astype(int)).max()) <= 1


@settings(max_examples=40, deadline=None)
@given(samples())
def test_geometry_steps_match_the_reference(sample):
    image, boxes, labels, seed = sample
    height, width, _ = image.shape
    pixels = image.astype(np.float32)
    expand = T.Expand(fill=(10.0, 20.0, 30.0), p=1.0)
    out, out_boxes, _ = expand(image, boxes, labels, gen(seed))
    ref, ref_boxes = R.expand(pixels, boxes, expand.draw(gen(seed), height, width), expand.fill)
    np.testing.assert_array_equal(out, ref.astype(np.uint8))
    assert torch.equal(out_boxes, ref_boxes)
    crop = T.MinIoURandomCrop()
    out, out_boxes, out_labels = crop(image, boxes, labels, gen(seed))
    drawn = crop.draw(gen(seed), boxes, width, height)
    ref, ref_boxes, ref_labels = pixels, boxes, labels
    if drawn is not None:
        ref, ref_boxes, ref_labels = R.crop(pixels, boxes, labels, *drawn)
    np.testing.assert_array_equal(out, ref.astype(np.uint8))
    assert torch.equal(out_boxes, ref_boxes) and torch.equal(out_labels, ref_labels)
    out, out_boxes, _ = T.RandomHorizontalFlip(p=1.0)(image, boxes, labels)
    ref, ref_boxes = R.flip(pixels, boxes)
    np.testing.assert_array_equal(out, ref.astype(np.uint8))
    assert torch.equal(out_boxes, ref_boxes)


def test_distortion_of_the_fill_after_zoom_out():
    # A colour map after the zoom out maps the fill too, as on float pixels.
    image = np.random.default_rng(3).integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    expand = T.Expand(fill=(100.0, 50.0, 25.0), p=1.0)
    distort = T.PhotometricDistort(p=1.0)
    boxes, labels = torch.zeros(0, 4), torch.zeros(0)
    for seed in range(5):
        lazy = T.Compose([T.ToLazyImage(), expand, distort])(image, boxes, labels, gen(seed))[0]
        generator = gen(seed)
        canvas, _ = R.expand(image.astype(np.float32), boxes, expand.draw(generator, 6, 5), expand.fill)
        ref = R.distort_colours(canvas, distort.draw(generator))
        assert lazy.dtype == np.uint8
        assert int(np.abs(lazy.astype(int) - np.rint(ref).astype(int)).max()) <= 1
