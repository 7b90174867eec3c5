"""What the augmentation tests share: random samples (hypothesis), generators and the box checks."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

__all__ = ["assert_valid", "gen", "image_hw", "samples"]


@st.composite
def samples(draw, max_side: int = 48, max_boxes: int = 6):
    """(uint8 image [H,W,3], boxes [G,4] pixels inside it, labels [G,2] = (class, id), seed)."""
    height = draw(st.integers(4, max_side))
    width = draw(st.integers(4, max_side))
    count = draw(st.integers(0, max_boxes))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    x = np.sort(rng.uniform(0, width, size=(count, 2)), axis=1)
    y = np.sort(rng.uniform(0, height, size=(count, 2)), axis=1)
    x[:, 1] = np.maximum(x[:, 1], x[:, 0] + 0.5).clip(max=width)
    x[:, 0] = np.minimum(x[:, 0], x[:, 1] - 0.5)
    y[:, 1] = np.maximum(y[:, 1], y[:, 0] + 0.5).clip(max=height)
    y[:, 0] = np.minimum(y[:, 0], y[:, 1] - 0.5)
    boxes = torch.tensor(np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1), dtype=torch.float32)
    classes = torch.from_numpy(rng.integers(1, 21, size=count))
    labels = torch.stack([classes, torch.arange(count)], dim=1)
    return image, boxes.reshape(-1, 4), labels.reshape(-1, 2), seed


def image_hw(image) -> tuple[int, int]:
    """(H, W) of a tensor [..., H, W] or an array [H, W, 3]."""
    if isinstance(image, torch.Tensor):
        return image.shape[-2], image.shape[-1]
    return image.shape[0], image.shape[1]


def assert_valid(image, boxes: torch.Tensor, labels: torch.Tensor, original_labels: torch.Tensor) -> None:
    """Boxes inside the image with positive area, paired with their labels (ids carried along)."""
    height, width = image_hw(image)
    assert boxes.dtype == torch.float32 and boxes.shape == (labels.shape[0], 4)
    tol = 1e-3
    assert bool((boxes[:, 0] >= -tol).all() and (boxes[:, 1] >= -tol).all())
    assert bool((boxes[:, 2] <= width + tol).all() and (boxes[:, 3] <= height + tol).all())
    assert bool((boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all())
    ids = labels[:, 1]
    assert bool((ids[1:] > ids[:-1]).all()), "boxes were reordered or duplicated"
    assert torch.equal(labels, original_labels[ids]), "a label lost its box"


def gen(seed: int) -> torch.Generator:
    """A torch generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)
