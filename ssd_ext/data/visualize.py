"""Draw boxes with their labels (and scores) on an image, for looking at data and detections."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from .transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["draw_boxes", "to_pil"]

_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
            (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
            (0, 0, 128), (128, 128, 128)]


def to_pil(image: Image.Image | torch.Tensor | np.ndarray, mean: Sequence[float] | None = IMAGENET_MEAN,
           std: Sequence[float] | None = IMAGENET_STD) -> Image.Image:
    """A PIL RGB image from a PIL image, an ``[H, W, 3]`` uint8 array, or a float ``[3, H, W]``
    tensor normalised with ``mean``/``std`` (pass ``mean=None`` for a tensor in [0, 255])."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).convert("RGB")
    tensor = image.detach().to("cpu", torch.float32)
    if mean is not None and std is not None:
        tensor = tensor * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
        tensor = tensor * 255.0
    array = tensor.clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array)


def _to_cpu(values: Any) -> Any:
    return values.detach().cpu() if isinstance(values, torch.Tensor) else values


def draw_boxes(image: Image.Image | torch.Tensor | np.ndarray, boxes: torch.Tensor | np.ndarray,
               labels: Sequence[int] | torch.Tensor | None = None,
               scores: Sequence[float] | torch.Tensor | None = None,
               class_names: Sequence[str] | None = None, normalized: bool = True,
               path: str | os.PathLike | None = None, width: int = 2) -> Image.Image:
    """Draw ``boxes`` (``[K, 4]`` xyxy; normalised to [0, 1] when ``normalized``, else pixels) on
    a copy of ``image`` (see :func:`to_pil`), each captioned with its class name (``class_names``
    indexed by label, ``[0]`` the background) and score. Saves a PNG to ``path`` when given."""
    canvas = to_pil(image).copy()
    draw = ImageDraw.Draw(canvas)
    boxes_np = np.asarray(torch.as_tensor(boxes).detach().cpu(), dtype=np.float64).reshape(-1, 4)
    if normalized:
        boxes_np = boxes_np * np.array([canvas.width, canvas.height, canvas.width, canvas.height])
    labels_list = [] if labels is None else [int(v) for v in np.asarray(_to_cpu(labels)).reshape(-1)]
    scores_list = [] if scores is None else [float(v) for v in np.asarray(_to_cpu(scores)).reshape(-1)]
    for k, (x1, y1, x2, y2) in enumerate(boxes_np):
        label = labels_list[k] if k < len(labels_list) else None
        colour = _PALETTE[(label or 0) % len(_PALETTE)]
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour, width=width)
        parts = []
        if label is not None:
            parts.append(class_names[label] if class_names is not None and 0 <= label < len(class_names)
                         else str(label))
        if k < len(scores_list):
            parts.append(f"{scores_list[k]:.2f}")
        if parts:
            text = " ".join(parts)
            left, top, right, bottom = draw.textbbox((x1, y1), text)
            text_top = max(0.0, y1 - (bottom - top) - 2)
            text_box = [x1, text_top, x1 + (right - left) + 2, text_top + (bottom - top) + 2]
            draw.rectangle(text_box, fill=colour)
            draw.text((x1 + 1, text_top), text, fill=(0, 0, 0))
    if path is not None:
        canvas.save(os.fspath(path), format="PNG")
    return canvas
