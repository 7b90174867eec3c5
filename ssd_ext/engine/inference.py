"""Pictures in, detections out: :class:`Detector` and :func:`detect_to_files` (``ssd detect``).

A :class:`Detector` wraps a trained SSD with its input size, normalisation and class names.
It takes pictures of any size as PIL images, numpy arrays (``[H, W, 3]`` uint8 RGB), tensors
(``[3, H, W]`` uint8, or float in [0, 1]; ``[B, 3, H, W]`` for several) or file paths, prepares
each exactly as :func:`ssd_ext.data.eval_transform` does (bilinear resize to the input size,
``(x / 255 - mean) / std``), runs the model and :func:`ssd_ext.ops.detect`, and returns boxes in
each picture's own pixels (continuous xyxy: a picture spans ``[0, W] x [0, H]``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor, nn

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from ..data.visualize import draw_boxes

__all__ = ["IMAGE_EXTENSIONS", "Detector", "detect_to_files", "draw_detections", "expand_image_paths",
           "read_image"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")
_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def read_image(path: str | os.PathLike) -> Image.Image:
    """The RGB picture at ``path``, turned upright by its EXIF orientation (as viewers show it).
    Raises ``ValueError`` naming the file when it is missing or not a readable image."""
    try:
        with Image.open(os.fspath(path)) as image:
            image.load()
            upright = ImageOps.exif_transpose(image)
            return upright.convert("RGB")
    except _READ_ERRORS as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ValueError(f"cannot read image {os.fspath(path)!r}: {reason}") from None


def _as_rgb_array(image: Any, name: str) -> np.ndarray:
    """One picture as a float32 ``[H, W, 3]`` array of RGB values in [0, 255]."""
    if isinstance(image, (str, os.PathLike)):
        image = read_image(image)
    if isinstance(image, Image.Image):
        array = np.asarray(image.convert("RGB"), dtype=np.float32)
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"{name}: numpy images must be uint8 [H, W, 3] RGB, got dtype {image.dtype} "
                            "(for floats in [0, 1] pass a tensor [3, H, W])")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{name}: numpy images must be [H, W, 3] RGB, got shape {image.shape}")
        array = image.astype(np.float32)
    elif isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"{name}: image tensors must be [3, H, W] (RGB), got shape {tuple(image.shape)}")
        tensor = image.detach().cpu()
        if tensor.dtype == torch.uint8:
            tensor = tensor.float()
        elif tensor.is_floating_point():
            tensor = tensor.float()
            if not torch.isfinite(tensor).all():
                raise ValueError(f"{name}: image tensor has non-finite values")
            low, high = (float(tensor.min()), float(tensor.max())) if tensor.numel() else (0.0, 0.0)
            if low < -1e-3 or high > 1 + 1e-3:
                raise ValueError(f"{name}: float image tensors must hold values in [0, 1], got "
                                 f"[{low:.3g}, {high:.3g}] (pass uint8 for 0..255)")
            tensor = tensor.clamp(0, 1) * 255.0
        else:
            raise TypeError(f"{name}: image tensors must be uint8 or floating point, got {tensor.dtype}")
        array = tensor.permute(1, 2, 0).numpy()
    else:
        raise TypeError(f"{name}: expected a PIL image, numpy array, tensor or path, "
                        f"got {type(image).__name__}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name}: image is empty ({array.shape[0]}x{array.shape[1]} pixels)")
    return np.ascontiguousarray(array)


def _size_pair(size: Any) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        pair = (size, size)
    else:
        try:
            pair = tuple(int(v) for v in size)
        except (TypeError, ValueError):
            pair = ()
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"image_size must be a positive int or (height, width), got {size!r}")
    return pair  # type: ignore[return-value]


def _triple(values: Any, name: str, positive: bool = False) -> tuple[float, float, float]:
    try:
        triple = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        triple = ()
    if len(triple) != 3 or (positive and min(triple) <= 0):
        kind = "three positive numbers" if positive else "three numbers"
        raise ValueError(f"{name} must be {kind} (r, g, b on the [0, 1] scale), got {values!r}")
    return triple  # type: ignore[return-value]


class Detector:
    """A trained SSD ready for pictures of any size.

    Args:
        model: an SSD (anything with SSD's ``detect(images, ..., image_sizes=...)``); moved to
            ``device`` and used in eval mode.
        class_names: names by label, ``[0]`` the background (as in a checkpoint's "class_names").
        image_size: the model's input, an int or ``(height, width)``.
        mean, std: the normalisation of the training data, RGB on the [0, 1] scale.
        device: where to run; the model's device by default.
        score_threshold: the lowest score returned (0.3 suits looking at pictures; evaluation
            uses 0.01).
        iou_threshold, max_detections: as :func:`ssd_ext.ops.detect`.
        batch_size: pictures per forward pass.
        autocast_dtype: run the model under ``torch.autocast`` with this dtype.

    ``detector(images)`` takes one picture or a list of them and returns one dict per picture:
    ``"boxes"`` float32 ``[K, 4]`` xyxy in that picture's pixels, ``"scores"`` float32 ``[K]``
    (decreasing), ``"labels"`` int64 ``[K]``, ``"names"`` (``K`` class names) and
    ``"image_size"`` ``(H, W)``; tensors on the CPU.
    """

    def __init__(self, model: nn.Module, class_names: Sequence[str], image_size: int | Sequence[int],
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 device: torch.device | str | None = None, score_threshold: float = 0.3,
                 iou_threshold: float = 0.45, max_detections: int = 100, batch_size: int = 8,
                 autocast_dtype: torch.dtype | None = None) -> None:
        if not callable(getattr(model, "detect", None)):
            raise TypeError(f"model must have a detect() method (an SSD), got {type(model).__name__}")
        if isinstance(class_names, str) or len(class_names) < 2:
            raise ValueError("class_names must list the background then at least one class, got "
                             f"{class_names!r}")
        num_classes = getattr(model, "num_classes", None)
        if num_classes is not None and int(num_classes) != len(class_names):
            raise ValueError(f"the model predicts {num_classes} classes (with the background) but "
                             f"class_names has {len(class_names)}")
        self.image_size = _size_pair(image_size)
        model_size = getattr(model, "image_size", None)
        if model_size is not None and _size_pair(model_size) != self.image_size:
            raise ValueError(f"image_size {self.image_size} differs from the model's input "
                             f"{_size_pair(model_size)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.mean = _triple(mean, "mean")
        self.std = _triple(std, "std", positive=True)
        if device is None:
            first = next(iter(model.parameters()), None)
            device = first.device if first is not None else "cpu"
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.class_names = [str(name) for name in class_names]
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        self.batch_size = int(batch_size)
        self.autocast_dtype = autocast_dtype
        self._transform = eval_transform(self.image_size, self.mean, self.std)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike | dict, device: torch.device | str | None = None,
                        *, use_ema: bool = True, **kwargs: Any) -> Detector:
        """A detector from a checkpoint of :mod:`ssd_ext.engine.checkpoint` (its model, class
        names, input size and normalisation); ``kwargs`` go to :class:`Detector`."""
        from .checkpoint import model_from_checkpoint

        model, checkpoint = model_from_checkpoint(path, use_ema=use_ema, device=device)
        preprocessing = checkpoint.get("input") or {}
        return cls(model, checkpoint["class_names"], preprocessing["size"],
                   preprocessing.get("mean", IMAGENET_MEAN), preprocessing.get("std", IMAGENET_STD),
                   device=device, **kwargs)

    def preprocess(self, image: Any, name: str = "image") -> tuple[Tensor, tuple[int, int]]:
        """``(input [3, h, w] float32, (H, W) of the picture)`` for one picture."""
        array = _as_rgb_array(image, name)
        size = (int(array.shape[0]), int(array.shape[1]))
        tensor, _, _ = self._transform(array, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
        return tensor, size

    @staticmethod
    def _as_list(images: Any) -> list[Any]:
        if isinstance(images, Tensor) and images.dim() == 4:
            return list(images.unbind(0))
        if isinstance(images, (list, tuple)):
            return list(images)
        return [images]

    @torch.no_grad()
    def __call__(self, images: Any) -> list[dict[str, Any]]:
        """Detections for one picture or a list (see the class docstring)."""
        pictures = self._as_list(images)
        results: list[dict[str, Any]] = []
        for start in range(0, len(pictures), self.batch_size):
            chunk = pictures[start:start + self.batch_size]
            prepared = [self.preprocess(image, f"images[{start + k}]") for k, image in enumerate(chunk)]
            batch = torch.stack([tensor for tensor, _ in prepared]).to(self.device)
            sizes = [size for _, size in prepared]
            autocast = (torch.autocast(self.device.type, dtype=self.autocast_dtype)
                        if self.autocast_dtype is not None else contextlib.nullcontext())
            with autocast:
                detections = self.model.detect(batch, score_threshold=self.score_threshold,
                                               iou_threshold=self.iou_threshold,
                                               max_detections=self.max_detections, image_sizes=sizes)
            for detection, size in zip(detections, sizes, strict=True):
                labels = detection["labels"].detach().to("cpu", torch.int64)
                results.append({
                    "boxes": detection["boxes"].detach().to("cpu", torch.float32),
                    "scores": detection["scores"].detach().to("cpu", torch.float32),
                    "labels": labels,
                    "names": [self.class_names[int(label)] for label in labels],
                    "image_size": size,
                })
        return results

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({type(self.model).__name__}, {len(self.class_names) - 1} classes, "
                f"image_size={self.image_size}, device={self.device}, "
                f"score_threshold={self.score_threshold})")


def draw_detections(image: Image.Image, detection: dict[str, Any], class_names: Sequence[str],
                    path: str | os.PathLike | None = None) -> Image.Image:
    """``image`` with the boxes, class names and scores of ``detection`` (one result of a
    :class:`Detector`, boxes in the picture's pixels) drawn on a copy; saved as PNG to ``path``."""
    line = max(2, round(min(image.width, image.height) / 200))
    return draw_boxes(image, detection["boxes"], detection["labels"], detection["scores"],
                      class_names=class_names, normalized=False, path=path, width=line)


def _expand(paths: Iterable[str | os.PathLike] | str | os.PathLike) -> list[str | dict[str, str]]:
    """Picture files (str) and failures (``{"path", "error"}``) in input order."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    entries: list[str | dict[str, str]] = []
    for entry in paths:
        path = os.fspath(entry)
        if os.path.isdir(path):
            try:
                names = os.listdir(path)
            except OSError as error:
                entries.append({"path": path, "error": f"cannot list folder: {error.strerror or error}"})
                continue
            found = sorted(os.path.join(path, name) for name in names
                           if name.lower().endswith(IMAGE_EXTENSIONS)
                           and os.path.isfile(os.path.join(path, name)))
            if not found:
                entries.append({"path": path, "error": "no .jpg/.jpeg/.png/.bmp pictures in this folder"})
            entries.extend(found)
        elif os.path.isfile(path):
            entries.append(path)
        else:
            entries.append({"path": path, "error": "no such file or folder"})
    return entries


def expand_image_paths(paths: Iterable[str | os.PathLike] | str | os.PathLike
                       ) -> tuple[list[str], list[dict[str, str]]]:
    """``(files, failures)``: each path as given when it is a file, each folder's pictures
    (``IMAGE_EXTENSIONS``, any case, not recursive) in name order; ``failures`` holds
    ``{"path", "error"}`` for paths that do not exist and folders without pictures."""
    entries = _expand(paths)
    return ([e for e in entries if isinstance(e, str)], [e for e in entries if isinstance(e, dict)])


def _output_name(path: str, used: set[str], inputs: set[str], out_dir: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0] or "image"
    candidate, count = f"{stem}.png", 1
    while (candidate in used
           or os.path.realpath(os.path.join(out_dir, candidate)) in inputs):  # never overwrite an input
        count += 1
        candidate = f"{stem}_{count}.png"
    used.add(candidate)
    return candidate


def detect_to_files(paths: Iterable[str | os.PathLike] | str | os.PathLike, detector: Detector,
                    out_dir: str | os.PathLike, *, progress: bool = False,
                    json_name: str = "detections.json") -> list[dict[str, Any]]:
    """Detect objects in pictures and write one PNG per picture (boxes, names and scores drawn)
    and one JSON of every detection to ``out_dir`` (what ``ssd detect`` does).

    Args:
        paths: picture files and/or folders (see :func:`expand_image_paths`).
        detector: the :class:`Detector` to run.
        out_dir: created when missing; output pictures are named after the inputs
            (``<stem>.png``, ``<stem>_2.png`` on a clash; never an input file).

    Returns:
        One dict per picture, in input order: ``{"path", "output", "width", "height",
        "detections": [{"box": [x1, y1, x2, y2] pixels, "score", "label", "name"}]}``, or
        ``{"path", "error"}`` for a path that is missing, a folder without pictures or a file
        that cannot be read. The JSON (``out_dir/json_name``) holds ``"images"`` (the
        successes), ``"failures"``, ``"class_names"`` and ``"score_threshold"``.
    """
    out_dir = os.fspath(out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create output folder {out_dir!r}: {error.strerror or error}") from None
    entries = _expand(paths)
    results: list[dict[str, Any]] = [e if isinstance(e, dict) else {} for e in entries]
    files = [(slot, e) for slot, e in enumerate(entries) if isinstance(e, str)]
    inputs = {os.path.realpath(path) for _, path in files}
    used: set[str] = set()
    from tqdm.auto import tqdm

    bar = tqdm(total=len(files), desc="detect", unit="img", disable=not progress, dynamic_ncols=True)
    with bar:
        for start in range(0, len(files), detector.batch_size):
            readable: list[tuple[int, str, Image.Image]] = []
            for slot, path in files[start:start + detector.batch_size]:
                try:
                    readable.append((slot, path, read_image(path)))
                except ValueError as error:
                    results[slot] = {"path": path, "error": str(error)}
            detections = detector([image for _, _, image in readable]) if readable else []
            for (slot, path, image), detection in zip(readable, detections, strict=True):
                name = _output_name(path, used, inputs, out_dir)
                output = os.path.join(out_dir, name)
                draw_detections(image, detection, detector.class_names, path=output)
                results[slot] = {
                    "path": path, "output": output, "width": image.width, "height": image.height,
                    "detections": [
                        {"box": [round(float(v), 2) for v in box], "score": round(float(score), 4),
                         "label": int(label), "name": name_}
                        for box, score, label, name_ in zip(detection["boxes"].tolist(),
                                                            detection["scores"].tolist(),
                                                            detection["labels"].tolist(),
                                                            detection["names"], strict=True)
                    ],
                }
            bar.update(len(files[start:start + detector.batch_size]))
    summary = {
        "class_names": detector.class_names,
        "score_threshold": detector.score_threshold,
        "images": [r for r in results if "error" not in r],
        "failures": [r for r in results if "error" in r],
    }
    with open(os.path.join(out_dir, json_name), "w") as handle:
        json.dump(summary, handle, indent=1)
    return results
