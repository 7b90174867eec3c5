"""Pictures in: which files are pictures, folders expanded to them, reading, and any picture
as a uint8 RGB array. Every place that takes pictures (the datasets, ``ToLazyImage``, the
``Detector``, ``ssd detect``) goes through these.

EXIF orientation. :func:`read_image` turns a picture upright by its EXIF orientation tag by
default (``exif_transpose=True``), as picture viewers show it: what ``ssd detect`` and the
``Detector`` want for people's photos. The datasets read the STORED pixels
(``exif_transpose=False``): VOC and COCO annotations (boxes and the annotated width/height)
refer to the pixels as stored, which is how torchvision's ``VOCDetection``/``CocoDetection``
and pycocotools read them; turning the picture would move it away from its boxes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = [
    "IMAGE_SUFFIXES", "ImageReadError", "expand_image_entries", "expand_image_paths", "is_image_file",
    "read_image", "read_image_size", "to_rgb_array",
]

# The picture files PIL reads (lower case; the check ignores case).
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")

PathLike = str | os.PathLike


class ImageReadError(ValueError):
    """A picture file that is missing or cannot be decoded; ``path`` and ``reason`` say which
    and why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot read image {path!r}: {reason}")
        self.path = path
        self.reason = reason


def is_image_file(path: PathLike) -> bool:
    """Whether ``path`` names a picture by its suffix (:data:`IMAGE_SUFFIXES`, any case)."""
    return os.fspath(path).lower().endswith(IMAGE_SUFFIXES)


def _folder_pictures(folder: str) -> list[str] | dict[str, str]:
    """The pictures directly in ``folder`` in name order, or a failure entry."""
    try:
        names = os.listdir(folder)
    except OSError as error:
        return {"path": folder, "error": f"cannot list folder: {error.strerror or error}"}
    found = sorted(os.path.join(folder, name) for name in names
                   if is_image_file(name) and os.path.isfile(os.path.join(folder, name)))
    if not found:
        return {"path": folder, "error": f"no pictures ({', '.join(IMAGE_SUFFIXES)}) in this folder"}
    return found


def expand_image_entries(paths: Iterable[PathLike] | PathLike) -> list[str | dict[str, str]]:
    """The inputs in order: a file as given (a str), a folder as its pictures (name order, not
    recursive), and ``{"path", "error"}`` in place of a missing path or a folder without
    pictures (so results can be reported in input order)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    entries: list[str | dict[str, str]] = []
    for entry in paths:
        path = os.fspath(entry)
        if os.path.isdir(path):
            found = _folder_pictures(path)
            if isinstance(found, list):
                entries.extend(found)
            else:
                entries.append(found)
        elif os.path.isfile(path):
            entries.append(path)
        else:
            entries.append({"path": path, "error": "no such file or folder"})
    return entries


def expand_image_paths(paths: Iterable[PathLike] | PathLike) -> tuple[list[str], list[dict[str, str]]]:
    """``(files, failures)``: each path as given when it is a file, each folder's pictures
    (:data:`IMAGE_SUFFIXES`, any case, not recursive) in name order; ``failures`` holds
    ``{"path", "error"}`` for paths that do not exist and folders without pictures."""
    entries = expand_image_entries(paths)
    return ([e for e in entries if isinstance(e, str)], [e for e in entries if isinstance(e, dict)])


def read_image(path: PathLike, *, exif_transpose: bool = True) -> Image.Image:
    """The picture at ``path`` as a decoded RGB PIL image; upright by its EXIF orientation when
    ``exif_transpose`` (see the module docstring). Raises :class:`ImageReadError` (a
    ``ValueError``) naming the file when it is missing or not a readable picture (truncated,
    empty, not a picture, a header over PIL's decompression-bomb limit, ...)."""
    name = os.fspath(path)
    try:
        with Image.open(name) as image:
            # An RGB file (every VOC/COCO JPEG: libjpeg decodes straight to RGB) is only
            # loaded; convert() would copy its pixels once more. Other modes are converted.
            image.load()
            if exif_transpose:
                ImageOps.exif_transpose(image, in_place=True)  # no copy when already upright
            return image if image.mode == "RGB" else image.convert("RGB")
    except Exception as error:  # noqa: BLE001 - decoders raise many kinds (OSError, SyntaxError,
        # EOFError, struct.error, DecompressionBombError, ...): all mean "not a readable picture".
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ImageReadError(name, reason or type(error).__name__) from None


def read_image_size(path: PathLike) -> tuple[int, int] | None:
    """``(W, H)`` of the stored pixels from the file's header (pixels are not decoded; no EXIF
    turn, as the datasets read), or None when PIL cannot open it or the header is unusable
    (zero size, or over PIL's decompression-bomb limit)."""
    try:
        with Image.open(os.fspath(path)) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - PIL raises many kinds on bad files (OSError,
        # SyntaxError, struct.error, DecompressionBombError, ...): all mean "unreadable".
        return None
    return (int(width), int(height)) if width > 0 and height > 0 else None


def _tensor_to_rgb(tensor: torch.Tensor, name: str) -> np.ndarray:
    """``[3, H, W]`` uint8, or float in [0, 1] -> uint8 ``[H, W, 3]`` (floats rounded)."""
    if tensor.dim() != 3 or tensor.shape[0] != 3:
        raise ValueError(f"{name}: image tensors must be [3, H, W] (RGB), got shape {tuple(tensor.shape)}")
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.uint8:
        return tensor.permute(1, 2, 0).numpy()
    if not tensor.is_floating_point():
        raise TypeError(f"{name}: image tensors must be uint8 or floating point, got {tensor.dtype}")
    tensor = tensor.float()
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name}: image tensor has non-finite values")
    low, high = (float(tensor.min()), float(tensor.max())) if tensor.numel() else (0.0, 0.0)
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(f"{name}: float image tensors must hold values in [0, 1], got "
                         f"[{low:.3g}, {high:.3g}] (pass uint8 for 0..255)")
    return (tensor.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()


def to_rgb_array(image: Any, name: str = "image") -> np.ndarray:
    """Any picture as uint8 RGB ``[H, W, 3]``: a PIL image (converted to RGB), a uint8 numpy
    array ``[H, W, 3]`` (returned as is, not copied), a tensor ``[3, H, W]`` of uint8 or of
    floats in [0, 1] (rounded to 0..255), or a path (read with :func:`read_image`, upright).

    Raises ``TypeError`` for another type or dtype and ``ValueError`` for a wrong shape, an
    empty picture, float values outside [0, 1] or an unreadable file; each message starts
    with ``name``."""
    if isinstance(image, (str, os.PathLike)):
        image = read_image(image)
    if isinstance(image, Image.Image):
        array = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"{name}: numpy images must be uint8 [H, W, 3] RGB, got dtype {image.dtype} "
                            "(for floats in [0, 1] pass a tensor [3, H, W])")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{name}: numpy images must be [H, W, 3] RGB, got shape {image.shape}")
        array = image
    elif isinstance(image, torch.Tensor):
        array = _tensor_to_rgb(image, name)
    else:
        raise TypeError(f"{name}: expected a PIL image, numpy array, tensor or path, "
                        f"got {type(image).__name__}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name}: image is empty ({array.shape[0]}x{array.shape[1]} pixels)")
    return array
