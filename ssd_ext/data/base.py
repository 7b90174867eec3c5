"""What every detection dataset of ``ssd_ext.data`` shares: item format and bad-annotation log.

An item is ``(image, target)``.

- With a transform (e.g. :func:`ssd_ext.data.train_transform`): ``image`` is what the transform
  returns (a float32 tensor ``[3, H, W]``) and ``target["boxes"]`` is float32 ``[G, 4]`` xyxy
  NORMALISED to [0, 1] by that image's width and height.
- Without a transform: ``image`` is the RGB ``PIL.Image`` as read and ``target["boxes"]`` is
  float32 ``[G, 4]`` xyxy in PIXELS of that image (continuous coordinates: the image spans
  ``[0, W] x [0, H]``).

A transform is called as ``transform(pil_image, boxes, packed)`` with ``boxes`` float32
``[G, 4]`` pixels and ``packed`` int64 ``[G, 2]`` = (label, difficult), and must return
``(image, boxes in pixels of that image, packed rows of the kept boxes)``; the dataset then
normalises the boxes (see :mod:`ssd_ext.data.transforms`, whose transforms all do this).

In both cases ``target`` also holds ``"labels"`` int64 ``[G]`` in ``1..num_classes-1``
(0 is the background), ``"difficult"`` bool ``[G]`` (VOC's flag; all False elsewhere),
``"image_id"`` (int or str) and ``"orig_size"`` ``(H, W)`` of the image as read.

Bad annotations never stop an epoch: they are dealt with when the dataset is built, with one
:class:`AnnotationWarning` per bad file naming it, and counted in ``dataset.skipped``
(a ``Counter`` of reasons) and ``dataset.skipped_files`` (``(file, reason)`` pairs).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["AnnotationWarning", "DetectionDataset", "Record", "sanitize_boxes"]

# Reasons counted in ``dataset.skipped``.
MALFORMED_ANNOTATION = "malformed_annotation"  # file (or entry) that cannot be parsed: skipped
MISSING_ANNOTATION = "missing_annotation"  # listed in a split file, absent on disk: skipped
MISSING_IMAGE = "missing_image"  # image file absent (or unreadable when loaded): skipped
MALFORMED_BOX = "malformed_box"  # object without usable coordinates: box dropped
DEGENERATE_BOX = "degenerate_box"  # x2 <= x1 or y2 <= y1 (or not finite): box dropped
OUTSIDE_BOX = "outside_box"  # entirely outside the image: box dropped
CLIPPED_BOX = "clipped_box"  # partly outside the image: box clipped to it (kept)
UNKNOWN_CLASS = "unknown_class"  # class name / category id not in the label map: box dropped
CROWD_BOX = "crowd_box"  # COCO iscrowd=1: left out of training targets (no warning; normal)
EMPTY_IMAGE = "empty_image"  # no box left and drop_empty=True: image skipped (no warning)


class AnnotationWarning(UserWarning):
    """A bad annotation was skipped, dropped or clipped (one warning per file)."""


@dataclass
class Record:
    """One image of an annotated dataset, boxes already sanitised (pixels, continuous xyxy)."""

    image_path: str
    image_id: int | str
    boxes: np.ndarray  # float32 [G, 4]
    labels: np.ndarray  # int64 [G]
    difficult: np.ndarray  # bool [G]


def sanitize_boxes(boxes: np.ndarray, width: float, height: float) -> tuple[np.ndarray, Counter]:
    """Which of ``boxes`` (``[G, 4]`` pixel xyxy) to keep, and the boxes clipped to the image.

    Degenerate boxes (non-finite, ``x2 <= x1`` or ``y2 <= y1``) and boxes entirely outside
    ``[0, width] x [0, height]`` are dropped; boxes partly outside are clipped. Returns
    ``(keep [G] bool, counts)`` and clips ``boxes`` in place.
    """
    counts: Counter = Counter()
    boxes = boxes.reshape(-1, 4)
    finite = np.isfinite(boxes).all(axis=1)
    with np.errstate(invalid="ignore"):
        degenerate = ~finite | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        outside = ~degenerate & ((boxes[:, 2] <= 0) | (boxes[:, 0] >= width)
                                 | (boxes[:, 3] <= 0) | (boxes[:, 1] >= height))
        keep = ~degenerate & ~outside
        partly = keep & ((boxes[:, 0] < 0) | (boxes[:, 1] < 0)
                         | (boxes[:, 2] > width) | (boxes[:, 3] > height))
    counts[DEGENERATE_BOX] += int(degenerate.sum())
    counts[OUTSIDE_BOX] += int(outside.sum())
    counts[CLIPPED_BOX] += int(partly.sum())
    np.clip(boxes[:, 0::2], 0, width, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, height, out=boxes[:, 1::2])
    return keep, +counts


def _image_size(image: Any) -> tuple[int, int]:
    """``(H, W)`` of a tensor ``[..., H, W]``, an array ``[H, W, C]`` or a PIL image."""
    if isinstance(image, torch.Tensor):
        return int(image.shape[-2]), int(image.shape[-1])
    if isinstance(image, np.ndarray):
        return int(image.shape[0]), int(image.shape[1])
    return int(image.height), int(image.width)


def _describe(counts: Counter) -> str:
    return ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in sorted(counts.items()))


class DetectionDataset(torch.utils.data.Dataset):
    """Base class: subclasses fill ``self.records`` (or override :meth:`load_raw`)."""

    def __init__(self, class_names: tuple[str, ...], transform: Callable[..., Any] | None = None) -> None:
        self.class_names: tuple[str, ...] = tuple(class_names)  # [0] is "__background__"
        self.transform = transform
        self.records: list[Record] = []
        self.skipped: Counter = Counter()
        self.skipped_files: list[tuple[str, str]] = []

    # -- bookkeeping for bad annotations ---------------------------------------------------
    def _report(self, file: str, counts: Counter, warn: bool = True) -> None:
        """Count ``counts`` and, when any is a real problem, warn once naming ``file``."""
        counts = +counts
        if not counts:
            return
        self.skipped.update(counts)
        problems = Counter({k: v for k, v in counts.items() if k not in (CROWD_BOX, EMPTY_IMAGE)})
        if problems:
            self.skipped_files.append((file, _describe(problems)))
            if warn:
                warnings.warn(f"{file}: {_describe(problems)}", AnnotationWarning, stacklevel=3)

    @property
    def num_classes(self) -> int:
        """Number of classes counting the background."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.records)

    # -- items -----------------------------------------------------------------------------
    def load_raw(self, index: int) -> tuple[Image.Image, np.ndarray, np.ndarray, np.ndarray, int | str]:
        """``(RGB PIL image, boxes [G,4] pixels, labels [G], difficult [G], image_id)``."""
        record = self.records[index]
        with Image.open(record.image_path) as image:
            # An RGB file (every VOC/COCO JPEG: libjpeg decodes straight to RGB) is only
            # loaded; convert() would copy its pixels once more. Other modes are converted.
            if image.mode == "RGB":
                image.load()
            else:
                image = image.convert("RGB")
        return image, record.boxes, record.labels, record.difficult, record.image_id

    def _load_raw_robust(self, index: int):
        # An image that vanished or got corrupted after the dataset was built: warn, count it,
        # and serve the next image instead of crashing mid-epoch.
        length = len(self)
        for attempt in range(min(length, 16)):
            current = (index + attempt) % length
            try:
                return self.load_raw(current)
            except (OSError, ValueError, SyntaxError) as error:
                record = self.records[current] if self.records else None
                path = getattr(record, "image_path", str(current))
                self._report(str(path), Counter({MISSING_IMAGE: 1}), warn=False)
                warnings.warn(f"{path}: cannot read image ({error}); serving the next one instead",
                              AnnotationWarning, stacklevel=3)
        raise RuntimeError(f"{type(self).__name__}: 16 images in a row from index {index} could not be read")

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index %= len(self)
        image, boxes, labels, difficult, image_id = self._load_raw_robust(index)
        orig_size = (image.height, image.width)
        # torch.tensor copies: the records stay untouched by whatever callers do to targets.
        boxes_t = torch.tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
        labels_t = torch.tensor(np.asarray(labels, dtype=np.int64).reshape(-1))
        difficult_t = torch.tensor(np.asarray(difficult, dtype=bool).reshape(-1))
        if self.transform is None:
            out_image: Any = image
        else:
            # Labels and difficult flags travel as the two columns of one tensor, so the
            # transforms' box dropping keeps them paired with their boxes.
            packed = torch.stack([labels_t, difficult_t.long()], dim=1)
            out_image, boxes_t, packed = self.transform(image, boxes_t, packed)
            height, width = _image_size(out_image)
            boxes_t = (boxes_t / boxes_t.new_tensor([width, height, width, height])).clamp_(0, 1)
            positive = (boxes_t[:, 2] > boxes_t[:, 0]) & (boxes_t[:, 3] > boxes_t[:, 1])
            boxes_t, packed = boxes_t[positive], packed[positive]
            labels_t, difficult_t = packed[:, 0].contiguous(), packed[:, 1].bool()
        target = {
            "boxes": boxes_t.to(torch.float32).contiguous(),
            "labels": labels_t.to(torch.int64),
            "difficult": difficult_t.to(torch.bool),
            "image_id": image_id,
            "orig_size": orig_size,
        }
        return out_image, target

    def __repr__(self) -> str:
        skipped = f", skipped={dict(self.skipped)}" if self.skipped else ""
        return f"{type(self).__name__}({len(self)} images, {self.num_classes} classes{skipped})"
