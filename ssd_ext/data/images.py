"""SHIM (replaced by the data branch): the one picture-input module."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def read_image(path, *, exif_transpose: bool = True) -> Image.Image:
    try:
        with Image.open(os.fspath(path)) as image:
            image.load()
            upright = ImageOps.exif_transpose(image) if exif_transpose else image
            return upright.convert("RGB")
    except _READ_ERRORS as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ValueError(f"cannot read image {os.fspath(path)!r}: {reason}") from None


def expand_image_paths(paths: Iterable[Any] | str | os.PathLike) -> tuple[list[str], list[dict[str, str]]]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files, failures = [], []
    for entry in paths:
        path = os.fspath(entry)
        if os.path.isdir(path):
            found = sorted(os.path.join(path, n) for n in os.listdir(path)
                           if n.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(path, n)))
            if not found:
                failures.append({"path": path, "error": "no pictures in this folder"})
            files.extend(found)
        elif os.path.isfile(path):
            files.append(path)
        else:
            failures.append({"path": path, "error": "no such file or folder"})
    return files, failures


def to_rgb_array(image: Any, name: str = "image") -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        image = read_image(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"{name}: numpy images must be uint8 [H, W, 3] RGB, got dtype {image.dtype}")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{name}: numpy images must be [H, W, 3] RGB, got shape {image.shape}")
        return image
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"{name}: image tensors must be [3, H, W] (RGB), got shape {tuple(image.shape)}")
        tensor = image.detach().cpu()
        if tensor.is_floating_point():
            if not torch.isfinite(tensor).all():
                raise ValueError(f"{name}: image tensor has non-finite values")
            low, high = float(tensor.min()), float(tensor.max())
            if low < -1e-3 or high > 1 + 1e-3:
                raise ValueError(f"{name}: float image tensors must hold values in [0, 1], got [{low:.3g}, {high:.3g}]")
            tensor = (tensor.clamp(0, 1) * 255).round().to(torch.uint8)
        elif tensor.dtype != torch.uint8:
            raise TypeError(f"{name}: image tensors must be uint8 or floating point, got {tensor.dtype}")
        return tensor.permute(1, 2, 0).contiguous().numpy()
    raise TypeError(f"{name}: expected a PIL image, numpy array, tensor or path, got {type(image).__name__}")
