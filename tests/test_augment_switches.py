"""The Augmentation switches: train_transform builds only the enabled steps, in the paper's order,
a step that is off makes no draw, and bad values are rejected naming the field."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from augment_helpers import gen

from ssd_ext.data import transforms as T

PAPER_ORDER = [T.ToLazyImage, T.PhotometricDistort, T.Expand, T.MinIoURandomCrop, T.RandomHorizontalFlip,
               T.Resize, T.Normalize, T.ToTensor]
SWITCH_STEPS = {"photometric": T.PhotometricDistort, "expand": T.Expand, "crop": T.MinIoURandomCrop,
                "flip": T.RandomHorizontalFlip}


def step_types(compose: T.Compose) -> list[type]:
    return [type(step) for step in compose.transforms]


def test_the_default_is_the_paper_recipe_in_order():
    assert T.Augmentation() == T.Augmentation(photometric=True, expand=True, expand_max_ratio=4.0,
                                              expand_p=0.5, crop=True, flip=True)
    pipeline = T.train_transform(300)
    assert step_types(pipeline) == PAPER_ORDER
    expand = pipeline.transforms[2]
    assert (expand.max_ratio, expand.p) == (4.0, 0.5)
    assert expand.fill == tuple(255.0 * m for m in T.IMAGENET_MEAN)


@pytest.mark.parametrize("mask", range(16))
def test_only_the_enabled_steps_are_built_in_the_paper_order(mask):
    switches = {name: bool(mask >> bit & 1) for bit, name in enumerate(SWITCH_STEPS)}
    pipeline = T.train_transform(32, augmentation=T.Augmentation(**switches))
    disabled = {step for name, step in SWITCH_STEPS.items() if not switches[name]}
    expected = [step for step in PAPER_ORDER if step not in disabled]
    assert step_types(pipeline) == expected


def test_expand_settings_reach_the_step_and_the_mean_fills():
    aug = T.Augmentation(photometric=False, expand_max_ratio=1.5, expand_p=0.25, crop=False)
    mean = (0.5, 0.25, 0.0)
    expand = T.train_transform(32, mean, (1.0, 1.0, 1.0), aug).transforms[1]
    assert isinstance(expand, T.Expand)
    assert (expand.max_ratio, expand.p, expand.fill) == (1.5, 0.25, (127.5, 63.75, 0.0))


def test_all_off_makes_no_draw_and_equals_the_eval_transform():
    image = np.random.default_rng(0).integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    boxes, labels = torch.tensor([[2.0, 3.0, 20.0, 25.0]]), torch.tensor([1])
    off = T.Augmentation(photometric=False, expand=False, crop=False, flip=False)
    generator = gen(3)
    state = generator.get_state()
    out = T.train_transform(24, augmentation=off)(image, boxes, labels, generator)
    assert torch.equal(generator.get_state(), state)
    expected = T.eval_transform(24)(image, boxes, labels)
    assert torch.equal(out[0], expected[0]) and torch.equal(out[1], expected[1])


def test_a_step_that_is_off_leaves_the_others_draws_unchanged():
    # Without the photometric step, the zoom out draws first: the same values a lone Expand draws.
    image = np.zeros((20, 30, 3), np.uint8)
    boxes, labels = torch.tensor([[2.0, 3.0, 12.0, 15.0]]), torch.tensor([1])
    aug = T.Augmentation(photometric=False, crop=False, flip=False, expand_p=1.0)
    _, out_boxes, _ = T.train_transform((20, 30), augmentation=aug)(image, boxes, labels, gen(9))
    placement = T.Expand(max_ratio=4.0, p=1.0).draw(gen(9), 20, 30)
    scale = torch.tensor([30 / placement.width, 20 / placement.height] * 2)
    shifted = boxes + torch.tensor([placement.left, placement.top] * 2, dtype=torch.float32)
    assert torch.equal(out_boxes, shifted * scale)


@pytest.mark.parametrize(("changes", "error", "field"), [
    ({"expand_max_ratio": 0.5}, ValueError, "expand_max_ratio"),
    ({"expand_max_ratio": float("nan")}, ValueError, "expand_max_ratio"),
    ({"expand_max_ratio": "2"}, ValueError, "expand_max_ratio"),
    ({"expand_p": 1.5}, ValueError, "expand_p"),
    ({"expand_p": -0.1}, ValueError, "expand_p"),
    ({"expand_p": True}, ValueError, "expand_p"),
    ({"photometric": "yes"}, TypeError, "photometric"),
    ({"expand": 1}, TypeError, "expand"),
    ({"crop": None}, TypeError, "crop"),
    ({"flip": "false"}, TypeError, "flip"),
])
def test_bad_values_name_the_field(changes, error, field):
    with pytest.raises(error, match=rf"augmentation\.{field} "):
        T.Augmentation(**changes)
    mutated = T.Augmentation()
    for name, value in changes.items():
        setattr(mutated, name, value)
    with pytest.raises(error, match=rf"augmentation\.{field} "):
        T.train_transform(32, augmentation=mutated)


def test_train_transform_rejects_what_is_not_an_augmentation():
    with pytest.raises(TypeError, match="augmentation must be an Augmentation"):
        T.train_transform(32, augmentation={"crop": False})


def test_augmentation_round_trips_through_a_dict():
    aug = T.Augmentation(photometric=False, expand_max_ratio=2, expand_p=1, flip=False)
    assert isinstance(aug.expand_max_ratio, float) and isinstance(aug.expand_p, float)
    assert T.Augmentation(**dataclasses.asdict(aug)) == aug
