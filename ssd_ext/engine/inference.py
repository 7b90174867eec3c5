"""Pictures in, detections out: :class:`Detector`, :func:`detect_to_files` (``ssd detect``) and
the detection pictures of a run (:func:`draw_dataset_detections`).

A :class:`Detector` wraps a trained SSD with its input size, normalisation and class names. It
takes pictures of any size (anything :func:`ssd_ext.data.images.to_rgb_array` reads: PIL
images, uint8 arrays ``[H, W, 3]``, tensors ``[3, H, W]`` uint8 or float in [0, 1], or paths),
prepares each exactly as :func:`ssd_ext.data.eval_transform` does (bilinear resize to the input
size, ``(x / 255 - mean) / std``), runs the model and :func:`ssd_ext.ops.detect`, and returns
boxes in each picture's own pixels (continuous xyxy: a picture spans ``[0, W] x [0, H]``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from torch import Tensor, nn

from ..data.images import expand_image_entries, read_image, to_rgb_array
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from ..data.visualize import draw_boxes

__all__ = ["Detector", "DetectorSettings", "detect_to_files", "draw_dataset_detections", "draw_detections"]

MemoryFormat = Literal["auto", "channels_last", "contiguous"]


@dataclass
class DetectorSettings:
    """How a :class:`Detector` runs (each is also a keyword argument of the Detector)."""

    score_threshold: float = 0.3
    """The lowest score returned (0.3 suits looking at pictures; evaluation uses 0.01)."""
    iou_threshold: float = 0.45
    max_detections: int = 100
    batch_size: int = 8
    """Pictures per forward pass."""
    autocast_dtype: torch.dtype | None = None
    """Run the network under ``torch.autocast`` with this dtype."""
    memory_format: MemoryFormat = "auto"
    """auto: on the CPU the model's ``cpu_inference_memory_format`` (measured per model), on
    CUDA channels_last; or force one."""
    compile: bool = False
    """Run the network through ``torch.compile`` (the first batch of each size compiles)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.memory_format not in ("auto", "channels_last", "contiguous"):
            raise ValueError("memory_format must be auto, channels_last or contiguous, got "
                             f"{self.memory_format!r}")


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


def _check_model(model: nn.Module, class_names: Sequence[str], image_size: tuple[int, int]) -> None:
    if not callable(getattr(model, "detect", None)):
        raise TypeError(f"model must have a detect() method (an SSD), got {type(model).__name__}")
    if isinstance(class_names, str) or len(class_names) < 2:
        raise ValueError(f"class_names must list the background then at least one class, got {class_names!r}")
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and int(num_classes) != len(class_names):
        raise ValueError(f"the model predicts {num_classes} classes (with the background) but class_names "
                         f"has {len(class_names)}")
    model_size = getattr(model, "image_size", None)
    if model_size is not None and _size_pair(model_size) != image_size:
        raise ValueError(f"image_size {image_size} differs from the model's input {_size_pair(model_size)}")


def _memory_format(model: nn.Module, device: torch.device, choice: MemoryFormat) -> torch.memory_format:
    if choice == "channels_last":
        return torch.channels_last
    if choice == "contiguous":
        return torch.contiguous_format
    if device.type == "cuda":
        return torch.channels_last
    return getattr(model, "cpu_inference_memory_format", torch.contiguous_format)


class Detector:
    """A trained SSD ready for pictures of any size.

    Args:
        model: an SSD (anything with SSD's ``detect(images, ..., image_sizes=...)``; with
            ``compile=True`` also its ``postprocess``); moved to ``device``, put in eval mode
            and in the chosen memory format.
        class_names: names by label, ``[0]`` the background (as in a checkpoint's "class_names").
        image_size: the model's input, an int or ``(height, width)``.
        mean, std: the normalisation of the training data, RGB on the [0, 1] scale.
        device: where to run; the model's device by default.
        settings: a :class:`DetectorSettings`; ``overrides`` (its field names) change single fields.

    ``detector(images)`` takes one picture or a list of them and returns one dict per picture:
    ``"boxes"`` float32 ``[K, 4]`` xyxy in that picture's pixels, ``"scores"`` float32 ``[K]``
    (decreasing), ``"labels"`` int64 ``[K]``, ``"names"`` (``K`` class names) and
    ``"image_size"`` ``(H, W)``; tensors on the CPU.
    """

    def __init__(self, model: nn.Module, class_names: Sequence[str], image_size: int | Sequence[int],
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 device: torch.device | str | None = None, settings: DetectorSettings | None = None,
                 **overrides: Any) -> None:
        self.image_size = _size_pair(image_size)
        _check_model(model, class_names, self.image_size)
        self.settings = dataclasses.replace(settings or DetectorSettings(), **overrides)
        self.mean = _triple(mean, "mean")
        self.std = _triple(std, "std", positive=True)
        if device is None:
            first = next(iter(model.parameters()), None)
            device = first.device if first is not None else "cpu"
        self.device = torch.device(device)
        self.memory_format = _memory_format(model, self.device, self.settings.memory_format)
        self.model = model.to(self.device, memory_format=self.memory_format).eval()
        self._network = torch.compile(self.model) if self.settings.compile else None
        self.class_names = [str(name) for name in class_names]
        self._transform = eval_transform(self.image_size, self.mean, self.std)

    # The settings read as attributes, as detect_to_files and the CLI use them.
    score_threshold = property(lambda self: self.settings.score_threshold)
    iou_threshold = property(lambda self: self.settings.iou_threshold)
    max_detections = property(lambda self: self.settings.max_detections)
    batch_size = property(lambda self: self.settings.batch_size)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike | dict, device: torch.device | str | None = None,
                        *, use_ema: bool = True, **overrides: Any) -> Detector:
        """A detector from a checkpoint of :mod:`ssd_ext.engine.checkpoint` (its model, class
        names, input size and normalisation); ``overrides`` are :class:`DetectorSettings` fields."""
        from .checkpoint import model_from_checkpoint

        model, checkpoint = model_from_checkpoint(path, use_ema=use_ema, device=device)
        preprocessing = checkpoint.get("input") or {}
        return cls(model, checkpoint["class_names"], preprocessing["size"],
                   preprocessing.get("mean", IMAGENET_MEAN), preprocessing.get("std", IMAGENET_STD),
                   device=device, **overrides)

    def preprocess(self, image: Any, name: str = "image") -> tuple[Tensor, tuple[int, int]]:
        """``(input [3, h, w] float32, (H, W) of the picture)`` for one picture."""
        array = to_rgb_array(image, name)
        if array.shape[0] < 1 or array.shape[1] < 1:
            raise ValueError(f"{name}: image is empty ({array.shape[0]}x{array.shape[1]} pixels)")
        tensor, _, _ = self._transform(array, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
        return tensor, (int(array.shape[0]), int(array.shape[1]))

    @staticmethod
    def _as_list(images: Any) -> list[Any]:
        if isinstance(images, Tensor) and images.dim() == 4:
            return list(images.unbind(0))
        if isinstance(images, (list, tuple)):
            return list(images)
        return [images]

    def _detect_batch(self, batch: Tensor, sizes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        settings = self.settings
        thresholds = {"score_threshold": settings.score_threshold, "iou_threshold": settings.iou_threshold,
                      "max_detections": settings.max_detections}
        autocast = (torch.autocast(self.device.type, dtype=settings.autocast_dtype)
                    if settings.autocast_dtype is not None else contextlib.nullcontext())
        batch = batch.to(self.device).contiguous(memory_format=self.memory_format)
        if self._network is None:
            with autocast:
                return self.model.detect(batch, image_sizes=sizes, **thresholds)
        with autocast:
            loc, conf = self._network(batch)
        scales = [(float(width), float(height)) for height, width in sizes]
        return self.model.postprocess(loc, conf, scales, **thresholds)

    @torch.inference_mode()
    def __call__(self, images: Any) -> list[dict[str, Any]]:
        """Detections for one picture or a list (see the class docstring)."""
        pictures = self._as_list(images)
        results: list[dict[str, Any]] = []
        for start in range(0, len(pictures), self.batch_size):
            chunk = pictures[start:start + self.batch_size]
            prepared = [self.preprocess(image, f"images[{start + k}]") for k, image in enumerate(chunk)]
            sizes = [size for _, size in prepared]
            detections = self._detect_batch(torch.stack([tensor for tensor, _ in prepared]), sizes)
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


def _output_name(path: str, used: set[str], inputs: set[str], out_dir: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0] or "image"
    candidate, count = f"{stem}.png", 1
    while (candidate in used
           or os.path.realpath(os.path.join(out_dir, candidate)) in inputs):  # never overwrite an input
        count += 1
        candidate = f"{stem}_{count}.png"
    used.add(candidate)
    return candidate


def _file_result(path: str, output: str, image: Image.Image, detection: dict[str, Any]) -> dict[str, Any]:
    found = zip(detection["boxes"].tolist(), detection["scores"].tolist(), detection["labels"].tolist(),
                detection["names"], strict=True)
    return {"path": path, "output": output, "width": image.width, "height": image.height,
            "detections": [{"box": [round(float(v), 2) for v in box], "score": round(float(score), 4),
                            "label": int(label), "name": name} for box, score, label, name in found]}


def detect_to_files(paths: Iterable[str | os.PathLike] | str | os.PathLike, detector: Any,
                    out_dir: str | os.PathLike, *, progress: bool = False,
                    json_name: str = "detections.json") -> list[dict[str, Any]]:
    """Detect objects in pictures and write one PNG per picture (boxes, names and scores drawn)
    and one JSON of every detection to ``out_dir`` (what ``ssd detect`` does).

    ``paths``: picture files and/or folders (:func:`ssd_ext.data.images.expand_image_entries`).
    ``detector``: a :class:`Detector` (or anything with its call, ``batch_size``,
    ``class_names`` and ``score_threshold``). ``out_dir`` is created when missing; pictures are
    named after the inputs (``<stem>.png``, ``<stem>_2.png`` on a clash; never an input file).
    Returns one dict per picture in input order: ``{"path", "output", "width", "height",
    "detections": [{"box": [x1, y1, x2, y2] pixels, "score", "label", "name"}]}``, or ``{"path",
    "error"}`` for a missing path, a folder without pictures or an unreadable file. The JSON
    holds ``"images"`` (the successes), ``"failures"``, ``"class_names"`` and ``"score_threshold"``.
    """
    out_dir = os.fspath(out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create output folder {out_dir!r}: {error.strerror or error}") from None
    entries = expand_image_entries(paths)
    results: list[dict[str, Any]] = [e if isinstance(e, dict) else {} for e in entries]
    files = [(slot, e) for slot, e in enumerate(entries) if isinstance(e, str)]
    inputs, used = {os.path.realpath(path) for _, path in files}, set()
    from tqdm.auto import tqdm

    with tqdm(total=len(files), desc="detect", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(files), detector.batch_size):
            chunk = files[start:start + detector.batch_size]
            readable = []
            for slot, path in chunk:
                try:
                    readable.append((slot, path, read_image(path)))
                except ValueError as error:
                    results[slot] = {"path": path, "error": str(error)}
            detections = detector([image for _, _, image in readable]) if readable else []
            for (slot, path, image), detection in zip(readable, detections, strict=True):
                output = os.path.join(out_dir, _output_name(path, used, inputs, out_dir))
                draw_detections(image, detection, detector.class_names, path=output)
                results[slot] = _file_result(path, output, image, detection)
            bar.update(len(chunk))
    summary = {"class_names": list(detector.class_names), "score_threshold": detector.score_threshold,
               "images": [r for r in results if "error" not in r],
               "failures": [r for r in results if "error" in r]}
    with open(os.path.join(out_dir, json_name), "w") as handle:
        json.dump(summary, handle, indent=1)
    return results


@torch.no_grad()
def draw_dataset_detections(model: nn.Module, dataset: Any, out_dir: str | os.PathLike,
                            device: torch.device, count: int, max_detections: int = 100,
                            score_threshold: float = 0.5) -> list[Path]:
    """Draw ``model``'s detections on the first ``count`` pictures of ``dataset`` (a dataset of
    ``ssd_ext.data`` with its evaluation transform) as ``out_dir/0000.png``, ...; boxes are drawn
    on the pictures as read, at their own size."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    paths = []
    for index in range(min(count, len(dataset))):
        image, target = dataset[index]
        picture = dataset.load_raw(index)[0]
        found = model.detect(image.unsqueeze(0).to(device), score_threshold=score_threshold,
                             max_detections=max_detections,
                             image_sizes=[(picture.height, picture.width)])[0]
        path = out_dir / f"{index:04d}.png"
        draw_boxes(picture, found["boxes"].cpu(), found["labels"].cpu(), found["scores"].cpu(),
                   class_names=dataset.class_names, normalized=False, path=path)
        paths.append(path)
    return paths
