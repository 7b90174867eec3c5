"""A procedural, seeded detection set of coloured shapes (written to disk by :mod:`.writers`).

Image ``i`` of ``SyntheticShapes(seed=s)`` is drawn from ``numpy.random.default_rng([s, i])``
alone, so the same index always gives the same image and boxes, whatever the call order or
DataLoader worker. Each image has a textured background (noisy flat colour, linear gradient
or stripes, all with pixel noise) and ``min_objects..max_objects`` shapes of
:data:`SHAPE_CLASSES` with random size, aspect and colour (kept well apart from the
background's). Shapes may overlap earlier ones, but never hide more than ``max_occlusion``
of an earlier shape's box, so every object stays recognisable. Boxes are integer pixel
xyxy (continuous coordinates) that bound the drawn shape.

The defaults are the demo set: 128x128 images, 1-4 shapes each with sides 20-60% of the
image, five classes (``num_classes`` = 6), which a small SSD learns in a few CPU minutes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .base import DetectionDataset

__all__ = ["SHAPE_CLASSES", "SyntheticShapes"]

SHAPE_CLASSES: tuple[str, ...] = ("rectangle", "ellipse", "triangle", "cross", "star")


def _whole_number(argument: str, value: Any, minimum: int, expected: str | None = None) -> int:
    """``value`` as an int when it is an integer (Python or numpy, not a bool) >= ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{argument} must be {expected or f'an integer >= {minimum}'}, got {value!r}")
    return int(value)


def _fraction(argument: str, value: Any) -> float:
    """``value`` as a float when it is a real number in [0, 1]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0 <= value <= 1:
        raise ValueError(f"{argument} must be a number in [0, 1], got {value!r}")
    return float(value)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """``[H, W, 3]`` float background in [0, 255]."""
    base = rng.uniform(30, 225, size=3)
    kind = rng.integers(0, 3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == 0:  # flat colour, heavy noise
        image = np.broadcast_to(base, (height, width, 3)).astype(np.float32)
        sigma = rng.uniform(8, 20)
    else:
        other = np.clip(base + rng.uniform(-70, 70, size=3), 0, 255)
        angle = rng.uniform(0, np.pi)
        along = xx * np.cos(angle) + yy * np.sin(angle)
        if kind == 1:  # linear gradient
            span = np.abs(width * np.cos(angle)) + np.abs(height * np.sin(angle))
            t = (along - along.min()) / max(span, 1.0)
        else:  # soft stripes
            period = rng.uniform(6, 24)
            t = 0.5 + 0.5 * np.sin(2 * np.pi * along / period)
        image = base * (1 - t[..., None]) + other * t[..., None]
        sigma = rng.uniform(3, 10)
    return image + rng.normal(0, sigma, size=(height, width, 3))


def _shape_colour(rng: np.random.Generator, background: np.ndarray) -> tuple[int, int, int]:
    mean = background.reshape(-1, 3).mean(0)
    best, best_distance = None, -1.0
    for _ in range(20):
        colour = rng.uniform(0, 255, size=3)
        distance = float(np.linalg.norm(colour - mean))
        if distance > best_distance:
            best, best_distance = colour, distance
        if distance >= 120:
            break
    return tuple(int(c) for c in best)  # type: ignore[return-value]


def _star(x1: int, y1: int, x2: int, y2: int, rotation: float) -> list[tuple[float, float]]:
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    points = []
    for k in range(10):
        radius = 1.0 if k % 2 == 0 else 0.45
        angle = rotation + k * np.pi / 5
        points.append((cx + rx * radius * np.cos(angle), cy + ry * radius * np.sin(angle)))
    return points


def _draw(draw: ImageDraw.ImageDraw, kind: str, box: Sequence[int], colour: tuple[int, int, int],
          rng: np.random.Generator) -> tuple[int, int, int, int]:
    """Draw a shape filling ``box`` (continuous xyxy, integers); return its exact pixel box."""
    x1, y1, x2, y2 = box
    last_x, last_y = x2 - 1, y2 - 1  # PIL coordinates are inclusive pixel indices
    if kind == "rectangle":
        draw.rectangle([x1, y1, last_x, last_y], fill=colour)
    elif kind == "ellipse":
        draw.ellipse([x1, y1, last_x, last_y], fill=colour)
    elif kind == "triangle":
        apex = x1 + rng.uniform(0.2, 0.8) * (last_x - x1)
        if rng.random() < 0.5:  # apex up or down
            draw.polygon([(x1, last_y), (last_x, last_y), (apex, y1)], fill=colour)
        else:
            draw.polygon([(x1, y1), (last_x, y1), (apex, last_y)], fill=colour)
    elif kind == "cross":
        arm_w = max(2, int(round((x2 - x1) * rng.uniform(0.25, 0.4))))
        arm_h = max(2, int(round((y2 - y1) * rng.uniform(0.25, 0.4))))
        mx, my = x1 + ((x2 - x1) - arm_w) // 2, y1 + ((y2 - y1) - arm_h) // 2
        draw.rectangle([mx, y1, mx + arm_w - 1, last_y], fill=colour)
        draw.rectangle([x1, my, last_x, my + arm_h - 1], fill=colour)
    elif kind == "star":
        points = _star(x1, y1, last_x, last_y, rotation=-np.pi / 2 + rng.uniform(-0.3, 0.3))
        draw.polygon(points, fill=colour)
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        # The tight box of the drawn points (their rounded pixel positions, inclusive).
        return (int(np.floor(min(xs) + 0.5)), int(np.floor(min(ys) + 0.5)),
                int(np.floor(max(xs) + 0.5)) + 1, int(np.floor(max(ys) + 0.5)) + 1)
    else:  # pragma: no cover - guarded by the class list
        raise ValueError(kind)
    return x1, y1, x2, y2


def _covered_fraction(earlier: np.ndarray, new: Sequence[int]) -> float:
    iw = min(earlier[2], new[2]) - max(earlier[0], new[0])
    ih = min(earlier[3], new[3]) - max(earlier[1], new[1])
    inter = max(iw, 0) * max(ih, 0)
    return inter / max((earlier[2] - earlier[0]) * (earlier[3] - earlier[1]), 1)


class SyntheticShapes(DetectionDataset):
    """Procedural shapes detection set (see the module docstring).

    Args:
        num_images: length of the dataset.
        image_size: ``S`` for ``S x S`` images, or ``(height, width)``.
        min_objects, max_objects: shapes per image (inclusive range).
        min_size, max_size: shape size (geometric mean of its sides) as a fraction of the
            image's shorter side.
        max_occlusion: the most of an earlier shape's box that later shapes may cover.
        seed: selects the whole set; item ``i`` depends on ``(seed, i)`` only.
        transform: see :mod:`ssd_ext.data.transforms`; ``None`` gives PIL images and pixel boxes.
        cache: keep each rendered picture (in this process; a pickled copy, e.g. for a spawned
            DataLoader worker, starts with an empty cache), so later epochs only pay for the
            augmentation. Items are the same with or without it; each load returns a copy.

    ``image_id`` is the index.
    """

    def __init__(self, num_images: int = 2000, image_size: int | tuple[int, int] = 128,
                 min_objects: int = 1, max_objects: int = 4, min_size: float = 0.2, max_size: float = 0.6,
                 max_occlusion: float = 0.35, seed: int = 0,
                 transform: Callable[..., Any] | None = None, cache: bool = False) -> None:
        super().__init__(("__background__", *SHAPE_CLASSES), transform)
        self.num_images = _whole_number("num_images", num_images, 0)
        if isinstance(image_size, (tuple, list)) and len(image_size) == 2:
            self.image_size = (_whole_number("image_size[0]", image_size[0], 16),
                               _whole_number("image_size[1]", image_size[1], 16))
        else:
            side = _whole_number("image_size", image_size, 16, "an integer >= 16 or a (height, width) pair")
            self.image_size = (side, side)
        self.min_objects = _whole_number("min_objects", min_objects, 1)
        self.max_objects = _whole_number("max_objects", max_objects, 1)
        if self.min_objects > self.max_objects:
            raise ValueError(f"need min_objects <= max_objects, got {min_objects}, {max_objects}")
        self.min_size = _fraction("min_size", min_size)
        self.max_size = _fraction("max_size", max_size)
        if not 0 < self.min_size <= self.max_size:
            raise ValueError(f"need 0 < min_size <= max_size <= 1, got {min_size}, {max_size}")
        self.max_occlusion = _fraction("max_occlusion", max_occlusion)
        self.seed = _whole_number("seed", seed, 0)
        if not isinstance(cache, bool):
            raise ValueError(f"cache must be True or False, got {cache!r}")
        self.cache = cache
        self._rendered: dict[int, tuple[Image.Image, np.ndarray, np.ndarray]] = {}

    # The demo's splits: (num_images, seed); distinct seeds make them disjoint.
    DEMO_SPLITS: dict[str, tuple[int, int]] = {"train": (2000, 0), "val": (200, 1), "test": (200, 2)}

    @classmethod
    def demo(cls, split: str = "train", transform: Callable[..., Any] | None = None,
             **overrides: Any) -> SyntheticShapes:
        """The demo set's ``split`` ("train": 2000 images, seed 0; "val"/"test": 200 images,
        seeds 1/2), default shapes and 128x128 images; ``overrides`` replace any argument."""
        if split not in cls.DEMO_SPLITS:
            raise ValueError(f"split must be one of {sorted(cls.DEMO_SPLITS)}, got {split!r}")
        num_images, seed = cls.DEMO_SPLITS[split]
        arguments = {"num_images": num_images, "seed": seed, "transform": transform, **overrides}
        return cls(**arguments)

    def __len__(self) -> int:
        return self.num_images

    def render(self, index: int) -> tuple[Image.Image, np.ndarray, np.ndarray]:
        """``(RGB image, boxes [G,4] float32 pixels, labels [G] int64 in 1..5)`` of item ``index``."""
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        rng = np.random.default_rng([self.seed, index])
        height, width = self.image_size
        background = _background(rng, height, width)
        image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        short = min(height, width)
        boxes: list[tuple[int, int, int, int]] = []
        labels: list[int] = []
        coverage: list[float] = []
        for _ in range(int(rng.integers(self.min_objects, self.max_objects + 1))):
            kind_index = int(rng.integers(0, len(SHAPE_CLASSES)))
            colour = _shape_colour(rng, background)
            for _attempt in range(30):
                size = rng.uniform(self.min_size, self.max_size) * short
                aspect = rng.uniform(0.6, 1.6)
                box_w = int(np.clip(round(size * np.sqrt(aspect)), 8, width))
                box_h = int(np.clip(round(size / np.sqrt(aspect)), 8, height))
                x1 = int(rng.integers(0, width - box_w + 1))
                y1 = int(rng.integers(0, height - box_h + 1))
                candidate = (x1, y1, x1 + box_w, y1 + box_h)
                extra = [_covered_fraction(np.asarray(b), candidate) for b in boxes]
                if all(c + e <= self.max_occlusion for c, e in zip(coverage, extra, strict=True)):
                    break
            else:
                continue  # no room left for this shape
            coverage = [c + e for c, e in zip(coverage, extra, strict=True)] + [0.0]
            boxes.append(_draw(draw, SHAPE_CLASSES[kind_index], candidate, colour, rng))
            labels.append(kind_index + 1)
        # Light noise over everything, so shapes are textured too.
        array = np.asarray(image, dtype=np.float32) + rng.normal(0, 4, size=(height, width, 3))
        image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
        return (image, np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                np.asarray(labels, dtype=np.int64).reshape(-1))

    def load_raw(self, index: int) -> tuple[Image.Image, np.ndarray, np.ndarray, np.ndarray, int]:
        """``(RGB image, boxes [G, 4] pixels, labels [G], difficult [G] all False, index)``."""
        if not self.cache:
            image, boxes, labels = self.render(index)
        else:
            if index not in self._rendered:
                self._rendered[index] = self.render(index)
            image, boxes, labels = self._rendered[index]
            image = image.copy()  # the caller may draw on it
        return image, boxes, labels, np.zeros(len(labels), dtype=bool), index

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_rendered"] = {}  # each process renders (and keeps) its own pictures
        return state

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_images={self.num_images}, image_size={self.image_size}, "
                f"objects={self.min_objects}..{self.max_objects}, seed={self.seed}, "
                f"cache={self.cache})")
