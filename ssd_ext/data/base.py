"""What every detection dataset of ``ssd_ext.data`` shares: item format and bad-data log.

An item is ``(image, target)``: ``dataset.get(index, generator)``, where the transform draws
every random number from ``generator`` (see :mod:`ssd_ext.data.sampling` for the per-item
generators of training), or ``dataset[index]`` = ``get(index)`` (torch's global generator).

- With a transform (e.g. :func:`ssd_ext.data.train_transform`): ``image`` is what the transform
  returns (a float32 tensor ``[3, H, W]``) and ``target["boxes"]`` is float32 ``[G, 4]`` xyxy
  NORMALISED to [0, 1] by that image's width and height.
- Without a transform: ``image`` is the RGB ``PIL.Image`` as read and ``target["boxes"]`` is
  float32 ``[G, 4]`` xyxy in PIXELS of that image (continuous coordinates: the image spans
  ``[0, W] x [0, H]``).

A transform is called as ``transform(pil_image, boxes, packed, generator)`` (without the
generator when it is None, so a transform that takes none works too) with ``boxes`` float32
``[G, 4]`` pixels and ``packed`` int64 ``[G, 2]`` = (label, difficult), and must return
``(image, boxes in pixels of that image, packed rows of the kept boxes)``; the dataset then
normalises the boxes (see :mod:`ssd_ext.data.transforms`, whose transforms all do this).

In both cases ``target`` also holds ``"labels"`` int64 ``[G]`` in ``1..num_classes-1``
(0 is the background), ``"difficult"`` bool ``[G]`` (VOC's flag; all False elsewhere),
``"image_id"`` (int or str) and ``"orig_size"`` ``(H, W)`` of the image as read.

Bad data never stops an epoch. Annotations are checked when the dataset is built (one
:class:`AnnotationWarning` per bad file naming it). Images are decoded only when an item is
loaded; then an unreadable image (any error PIL raises: truncated, empty, not an image, a
header claiming a decompression bomb, ...) is replaced by the next image, and the boxes are
checked again against the DECODED size, which wins over the annotated one (a disagreement is
warned once per file). Everything is counted in ``dataset.skipped`` (a ``Counter`` of
reasons) and ``dataset.skipped_files`` (``(file, reasons)`` pairs), load-time problems
included (also those met in DataLoader worker processes: they are logged per item in shared
memory), and :meth:`DetectionDataset.report` says it all in words.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from .images import ImageReadError, read_image, read_image_size
from .transforms.draws import RandomSource

__all__ = [
    "AnnotationWarning", "DetectionDataset", "Record", "positive_size", "read_image_size", "sanitize_boxes",
]

# Reasons counted in ``dataset.skipped``.
MALFORMED_ANNOTATION = "malformed_annotation"  # file (or entry) that cannot be parsed: skipped
MISSING_ANNOTATION = "missing_annotation"  # listed in a split file, absent on disk: skipped
MISSING_IMAGE = "missing_image"  # image file absent: skipped
UNREADABLE_IMAGE = "unreadable_image"  # image PIL cannot open/decode (at build or load): skipped
BAD_SIZE = "bad_size"  # annotated size given but not a positive finite number: real size read
SIZE_MISMATCH = "size_mismatch"  # annotated size != decoded size: boxes re-checked (real wins)
MALFORMED_BOX = "malformed_box"  # object without usable coordinates or flags: box dropped
DEGENERATE_BOX = "degenerate_box"  # x2 <= x1 or y2 <= y1 (or not finite): box dropped
OUTSIDE_BOX = "outside_box"  # entirely outside the image: box dropped
CLIPPED_BOX = "clipped_box"  # partly outside the image: box clipped to it (kept)
UNKNOWN_CLASS = "unknown_class"  # class name / category id not in the label map: box dropped
CROWD_BOX = "crowd_box"  # COCO iscrowd=1: left out of training targets (no warning; normal)
EMPTY_IMAGE = "empty_image"  # no box left and drop_empty=True: image skipped (no warning)

# Counted but normal: never warned about, never listed in ``skipped_files``.
_NOT_PROBLEMS = (CROWD_BOX, EMPTY_IMAGE)

# What can go wrong when an item is loaded, one column each of the shared per-item log.
_LOAD_REASONS = (UNREADABLE_IMAGE, SIZE_MISMATCH, OUTSIDE_BOX, CLIPPED_BOX)


class AnnotationWarning(UserWarning):
    """A bad annotation or image was skipped, dropped or clipped (one warning per file)."""


@dataclass
class Record:
    """One image of an annotated dataset, boxes already sanitised (pixels, continuous xyxy)
    against ``size`` = ``(W, H)``: the annotated size, or the header's when none was given."""

    image_path: str
    image_id: int | str
    boxes: np.ndarray  # float32 [G, 4]
    labels: np.ndarray  # int64 [G]
    difficult: np.ndarray  # bool [G]
    size: tuple[float, float] | None = None  # (W, H) the boxes were checked against


def positive_size(value: Any) -> float | None:
    """``value`` as a float when it is a finite number > 0 (not a bool, not a string), else None.
    Integers too large for a float give None, not ``OverflowError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) and number > 0 else None


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
    """Base class: subclasses fill ``self.records`` (or override :meth:`load_raw`), then call
    :meth:`_start_load_log` so that load-time problems are shared with DataLoader workers."""

    def __init__(self, class_names: tuple[str, ...], transform: Callable[..., Any] | None = None) -> None:
        self.class_names: tuple[str, ...] = tuple(class_names)  # [0] is "__background__"
        self.transform = transform
        self.records: list[Record] = []
        self._build_skipped: Counter = Counter()
        self._build_skipped_files: list[tuple[str, str]] = []
        self._load_log: torch.Tensor | None = None  # int32 [len(self), len(_LOAD_REASONS)]

    # -- bookkeeping for bad data ----------------------------------------------------------
    def _report(self, file: str, counts: Counter, warn: bool = True,
                examples: list[str] | None = None) -> None:
        """Count ``counts`` (build time) and, when any is a real problem, warn once naming
        ``file`` (and up to five ``examples`` of the bad entries inside it)."""
        counts = +counts
        if not counts:
            return
        self._build_skipped.update(counts)
        problems = Counter({k: v for k, v in counts.items() if k not in _NOT_PROBLEMS})
        if problems:
            self._build_skipped_files.append((file, _describe(problems)))
            if warn:
                detail = f" (e.g. {'; '.join(examples[:5])})" if examples else ""
                warnings.warn(f"{file}: {_describe(problems)}{detail}", AnnotationWarning, stacklevel=3)

    def _start_load_log(self) -> None:
        """(Re)create the per-item log of load-time problems in shared memory, so that what
        DataLoader workers (forked or spawned) find is seen by the main process too. Rows are
        overwritten, not added to, so every epoch reports the same counts."""
        self._load_log = torch.zeros(len(self), len(_LOAD_REASONS), dtype=torch.int32).share_memory_()

    def _load_log_table(self) -> torch.Tensor:
        if self._load_log is None or self._load_log.shape[0] != len(self):
            # A subclass that never called _start_load_log: logged in this process only.
            self._load_log = torch.zeros(len(self), len(_LOAD_REASONS), dtype=torch.int32)
        return self._load_log

    def _log_load_problem(self, index: int, counts: Counter, message: str) -> None:
        """Log ``counts`` for item ``index``; warn with ``message`` the first time only."""
        table = self._load_log_table()
        row = torch.tensor([counts.get(reason, 0) for reason in _LOAD_REASONS], dtype=torch.int32)
        first_time = not bool(table[index].any())
        table[index] = row
        if first_time:
            warnings.warn(message, AnnotationWarning, stacklevel=4)

    def _item_name(self, index: int) -> str:
        record = self.records[index] if index < len(self.records) else None
        return str(record.image_path) if record is not None else f"item {index}"

    @property
    def skipped(self) -> Counter:
        """Every problem met so far, by reason: when the dataset was built and when items
        were loaded (in any process). A ``Counter``; a copy, so changing it changes nothing."""
        total = Counter(self._build_skipped)
        if self._load_log is not None:
            sums = self._load_log.sum(dim=0).tolist()
            total.update({reason: int(n) for reason, n in zip(_LOAD_REASONS, sums, strict=True) if n})
        return total

    @property
    def skipped_files(self) -> list[tuple[str, str]]:
        """``(file, reasons)`` for every file with a problem (crowd boxes and dropped empty
        images are not problems), build-time first, then load-time in item order."""
        files = list(self._build_skipped_files)
        if self._load_log is not None:
            for index in torch.nonzero(self._load_log.any(dim=1)).flatten().tolist():
                row = self._load_log[index].tolist()
                counts = Counter({r: int(n) for r, n in zip(_LOAD_REASONS, row, strict=True) if n})
                files.append((self._item_name(index), _describe(counts)))
        return files

    def report(self, max_files: int = 20) -> str:
        """A summary for people: images used, problems by reason, and the files that had them
        (at most ``max_files``). Call it after an epoch to include what loading found."""
        lines = [f"{type(self).__name__}: {len(self)} images"]
        skipped = self.skipped
        if not skipped:
            lines.append("no bad annotations or images found")
            return "\n".join(lines)
        lines.append(f"skipped, dropped or fixed: {_describe(skipped)}")
        files = self.skipped_files
        for file, reasons in files[:max_files]:
            lines.append(f"  {file}: {reasons}")
        if len(files) > max_files:
            lines.append(f"  ... and {len(files) - max_files} more files")
        return "\n".join(lines)

    @property
    def num_classes(self) -> int:
        """Number of classes counting the background."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.records)

    # -- items -----------------------------------------------------------------------------
    def load_raw(self, index: int) -> tuple[Image.Image, np.ndarray, np.ndarray, np.ndarray, int | str]:
        """``(RGB PIL image, boxes [G,4] pixels, labels [G], difficult [G], image_id)``; the
        image's stored pixels (no EXIF turn: see :mod:`ssd_ext.data.images`)."""
        record = self.records[index]
        image = read_image(record.image_path, exif_transpose=False)
        return image, record.boxes, record.labels, record.difficult, record.image_id

    def _load_raw_robust(self, index: int) -> tuple[int, tuple[Any, ...]]:
        """``(index served, load_raw(index served))``. An image that cannot be read (vanished,
        truncated, not an image, a decompression bomb...) is logged and the next one served."""
        length = len(self)
        last_error: Exception | None = None
        for attempt in range(min(length, 16)):
            current = (index + attempt) % length
            try:
                return current, self.load_raw(current)
            except Exception as error:  # noqa: BLE001 - decoders raise many kinds (OSError,
                # SyntaxError, EOFError, struct.error, PIL's DecompressionBombError, ...)
                last_error = error
                reason = (error.reason if isinstance(error, ImageReadError)
                          else f"{type(error).__name__}: {error}")
                self._log_load_problem(current, Counter({UNREADABLE_IMAGE: 1}),
                                       f"{self._item_name(current)}: cannot read image ({reason}); "
                                       "serving the next one instead")
        raise RuntimeError(f"{type(self).__name__}: {min(length, 16)} images in a row from index {index} "
                           "could not be read") from last_error

    def _fit_to_image(self, index: int, width: int, height: int, boxes: Any, labels: Any,
                      difficult: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (pixels) checked against the DECODED ``width`` x ``height``, which wins over
        the size the annotation gave; a disagreement is logged and warned once per file."""
        boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)  # a copy: records stay as built
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        difficult = np.asarray(difficult, dtype=bool).reshape(-1)
        keep, counts = sanitize_boxes(boxes, float(width), float(height))
        record = self.records[index] if index < len(self.records) else None
        annotated = record.size if record is not None else None
        if annotated is not None and (float(annotated[0]), float(annotated[1])) != (width, height):
            counts[SIZE_MISMATCH] += 1
        if counts:
            said = f"annotated size {annotated[0]:g}x{annotated[1]:g} but " if annotated is not None else ""
            self._log_load_problem(index, counts, f"{self._item_name(index)}: {said}the image is "
                                   f"{width}x{height}; boxes checked against the real size "
                                   f"({_describe(counts)})")
        return boxes[keep], labels[keep], difficult[keep]

    def _transformed(self, image: Any, boxes: torch.Tensor, labels: torch.Tensor, difficult: torch.Tensor,
                     generator: RandomSource) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``self.transform`` applied; boxes normalised by the output's size, boxes left with
        no area dropped with their labels and flags."""
        # Labels and difficult flags travel as the two columns of one tensor, so the
        # transforms' box dropping keeps them paired with their boxes.
        packed = torch.stack([labels, difficult.long()], dim=1)
        if generator is None:  # also serves transforms that take no generator
            image, boxes, packed = self.transform(image, boxes, packed)
        else:
            image, boxes, packed = self.transform(image, boxes, packed, generator)
        height, width = _image_size(image)
        boxes = (boxes / boxes.new_tensor([width, height, width, height])).clamp_(0, 1)
        positive = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, packed = boxes[positive], packed[positive]
        return image, boxes, packed[:, 0].contiguous(), packed[:, 1].bool()

    def get(self, index: int, generator: RandomSource = None) -> tuple[Any, dict[str, Any]]:
        """Item ``index`` (see the module docstring), its transform drawing from ``generator``
        (a ``torch.Generator`` or ``numpy.random.Generator``; None: torch's global one)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index %= len(self)
        served, (image, boxes, labels, difficult, image_id) = self._load_raw_robust(index)
        orig_size = _image_size(image)  # (H, W); load_raw may give a PIL image, array or tensor
        boxes, labels, difficult = self._fit_to_image(served, orig_size[1], orig_size[0],
                                                      boxes, labels, difficult)
        boxes_t, labels_t = torch.from_numpy(boxes), torch.from_numpy(labels)
        difficult_t = torch.from_numpy(difficult)
        if self.transform is not None:
            image, boxes_t, labels_t, difficult_t = self._transformed(
                image, boxes_t, labels_t, difficult_t, generator)
        target = {
            "boxes": boxes_t.to(torch.float32).contiguous(),
            "labels": labels_t.to(torch.int64),
            "difficult": difficult_t.to(torch.bool),
            "image_id": image_id,
            "orig_size": orig_size,
        }
        return image, target

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        """``get(index)``: the transform draws from torch's global generator."""
        return self.get(index)

    def __repr__(self) -> str:
        skipped = self.skipped
        text = f", skipped={dict(skipped)}" if skipped else ""
        return f"{type(self).__name__}({len(self)} images, {self.num_classes} classes{text})"
