"""Pictures and runs shared by the export tests (imported by name; fixtures are in conftest)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

__all__ = ["onnx_detector", "shape_pictures", "to_tensors"]


def shape_pictures(count: int, size: int | tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """``count`` uint8 ``[H, W, 3]`` RGB pictures of a few filled rectangles and ellipses on a
    noisy background (what the synthetic training set looks like), ``size`` = side or (H, W)."""
    height, width = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    pictures = []
    for _ in range(count):
        background = rng.integers(60, 200, size=3)
        noise = rng.normal(0, 12, size=(height, width, 3))
        image = Image.fromarray(np.clip(background + noise, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = rng.uniform(0, 0.7, size=2) * (width, height)
            w, h = rng.uniform(0.15, 0.3, size=2) * (width, height)
            colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
            shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
            shape([x0, y0, x0 + w, y0 + h], fill=colour)
        pictures.append(np.asarray(image))
    return pictures


def onnx_detector(path, **options):
    """An OnnxDetector on one ONNX Runtime thread (see conftest's one_thread)."""
    from ssd_ext.export import OnnxDetector

    return OnnxDetector(path, threads=1, **options)


def to_tensors(pictures: list[np.ndarray]) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` from ``[H, W, 3]`` pictures."""
    return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).contiguous()
