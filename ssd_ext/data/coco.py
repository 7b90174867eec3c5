"""COCO reader: an ``instances_*.json`` file (read with pycocotools) and its image folder.

Category ids (1..90 with gaps on COCO) map to contiguous labels 1..K in increasing id order
(``cat_id_to_label`` / ``label_to_cat_id``; K = 80 on COCO, so ``num_classes`` = 81). Boxes are
COCO's ``[x, y, w, h]`` in continuous pixels and become ``[x, y, x + w, y + h]``. Crowd
annotations (``iscrowd`` 1) are left out of the targets (counted as ``crowd_box``) but stay in
``dataset.coco`` for COCOeval, which uses them as ignore regions.

Reading rules for the json's fields (JSON allows any type anywhere, so each is checked):

- ids (``id``, ``image_id``, ``category_id``) are integers in the int64 range; booleans,
  floats and strings are not ids.
- ``bbox`` is a list of four finite numbers (ints or floats; not bools, strings, null, lists,
  NaN/Infinity, nor ints too large for a float): else the annotation is a ``malformed_box``.
- ``iscrowd`` is read as its value: 0/1, ``false``/``true`` or the strings ``"0"``/``"1"``;
  absent means 0; anything else makes the annotation malformed.
- ``area`` that is not a finite number >= 0 is replaced by ``w * h`` (COCOeval needs one).
- image ``width``/``height``: when absent the image header is read (pixels are not decoded);
  when given but not positive finite numbers the entry is counted as ``bad_size`` and the
  header is read too. The decoded size wins anyway when the item is loaded.
- a repeated category, image or annotation id: the FIRST entry in file order is used, each
  repeat is counted as ``malformed_annotation`` and named in the warning. So a category id
  listed twice gives one label (the first name), never a label that no box uses.

A json file that cannot be parsed at all is a ``ValueError`` naming it (there is nothing to
skip to); bad entries inside it are skipped with ONE warning naming the json file (with up to
five examples), and counted in ``dataset.skipped``. ``dataset.coco`` holds the cleaned entries
(ids, bbox, iscrowd, area and sizes as read here), so COCOeval sees what training sees.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from .base import (
    BAD_SIZE,
    CROWD_BOX,
    EMPTY_IMAGE,
    MALFORMED_ANNOTATION,
    MALFORMED_BOX,
    MISSING_IMAGE,
    UNKNOWN_CLASS,
    UNREADABLE_IMAGE,
    DetectionDataset,
    Record,
    positive_size,
    read_image_size,
    sanitize_boxes,
)

__all__ = ["COCODetection"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _as_id(value: Any) -> int | None:
    """``value`` when it is an int in the int64 range (not a bool), else None."""
    return value if type(value) is int and _INT64_MIN <= value <= _INT64_MAX else None


def _as_float(value: Any) -> float | None:
    """``value`` as a finite float when it is an int or float (not a bool); None otherwise,
    also for an int too large for a float and for the NaN/Infinity that Python's json reads."""
    if type(value) is not float and type(value) is not int:  # exact types: a bool is no number
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _as_bbox(value: Any) -> list[float] | None:
    """COCO ``[x, y, w, h]`` as four finite floats, or None when it is not a list of four
    finite numbers. (Written out for speed: it runs once per annotation, 860k on COCO.)"""
    if type(value) is not list or len(value) != 4:
        return None
    x, y, w, h = value
    if not (type(x) is float and type(y) is float and type(w) is float and type(h) is float):
        numbers = [_as_float(v) for v in value]  # ints (maybe too large), or not numbers at all
        return None if None in numbers else numbers  # type: ignore[return-value]
    if math.isfinite(x) and math.isfinite(y) and math.isfinite(w) and math.isfinite(h):
        return value
    return None


_CROWD_VALUES = {0: 0, 1: 1, "0": 0, "1": 1}


def _as_iscrowd(value: Any) -> int | None:
    """0 or 1 for ``iscrowd`` (absent -> 0, see the module docstring), None when invalid."""
    if type(value) is int:
        return _CROWD_VALUES.get(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        value = value.strip()
    elif isinstance(value, float) and value in (0.0, 1.0):
        value = int(value)
    return _CROWD_VALUES.get(value) if isinstance(value, (int, str)) else None


class _EntryLog:
    """Counts of bad entries of one json file and the first few of them, for one warning."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.examples: list[str] = []

    def bad(self, reason: str, what: str) -> None:
        self.counts[reason] += 1
        if len(self.examples) < 5:
            self.examples.append(what)


class COCODetection(DetectionDataset):
    """COCO-format detection dataset.

    Args:
        image_dir: folder holding the images named by ``file_name``.
        annotation_file: the instances json.
        transform: see :mod:`ssd_ext.data.transforms`; ``None`` gives PIL images and pixel boxes.
        drop_empty: skip images without any (non-crowd) box, as training usually does.

    Attributes: ``coco`` (a ``pycocotools.coco.COCO`` over the valid entries), ``cat_id_to_label``,
    ``label_to_cat_id``, ``class_names`` (``[0]`` is the background). ``image_id`` is COCO's id.
    """

    def __init__(self, image_dir: str | os.PathLike, annotation_file: str | os.PathLike,
                 transform: Callable[..., Any] | None = None, drop_empty: bool = False) -> None:
        self.image_dir = os.fspath(image_dir)
        self.annotation_file = os.fspath(annotation_file)
        self.drop_empty = drop_empty
        data = self._read_json()
        log = _EntryLog()
        categories = self._read_categories(data["categories"], log)
        self.cat_id_to_label: dict[int, int] = {c["id"]: i for i, c in enumerate(categories, start=1)}
        self.label_to_cat_id: dict[int, int] = {i: c for c, i in self.cat_id_to_label.items()}
        super().__init__(("__background__", *(c["name"] for c in categories)), transform)
        images = self._read_images(data["images"], log)
        annotations, objects = self._read_annotations(data["annotations"], data["images"], images, log)
        self._build_records(images, objects, log)
        self._report(self.annotation_file, log.counts, examples=log.examples)
        self._start_load_log()
        self.coco = self._index_for_cocoeval(data, categories, images, annotations)

    # -- the steps, in order ----------------------------------------------------------------
    def _read_json(self) -> dict[str, Any]:
        """The parsed json; ``ValueError`` naming the file when it is not a COCO instances file."""
        try:
            with open(self.annotation_file, "rb") as handle:
                data = json.loads(handle.read())  # bytes: UTF-8/16/32 detected as JSON allows
        except (OSError, ValueError, RecursionError) as error:
            raise ValueError(f"cannot read COCO annotation file {self.annotation_file}: {error}") from error
        if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                                 for k in ("images", "annotations", "categories")):
            raise ValueError(f"{self.annotation_file}: not a COCO instances file "
                             "(needs 'images', 'annotations' and 'categories' lists)")
        return data

    @staticmethod
    def _read_categories(entries: list[Any], log: _EntryLog) -> list[dict[str, Any]]:
        """Valid categories sorted by id; a repeated id keeps its first entry."""
        first: dict[int, dict[str, Any]] = {}
        for cat in entries:
            cat_id = _as_id(cat.get("id")) if isinstance(cat, dict) else None
            if cat_id is None or not isinstance(cat.get("name"), str):
                log.bad(MALFORMED_ANNOTATION, f"category {cat!r:.60}")
            elif cat_id in first:
                log.bad(MALFORMED_ANNOTATION, f"category id {cat_id} listed again as {cat['name']!r}; "
                        f"the first, {first[cat_id]['name']!r}, is used")
            else:
                first[cat_id] = {**cat, "id": cat_id}
        return [first[cat_id] for cat_id in sorted(first)]

    def _read_images(self, entries: list[Any], log: _EntryLog) -> dict[int, dict[str, Any]]:
        """Image id -> entry (with a usable ``width``/``height``) for images present on disk."""
        images: dict[int, dict[str, Any]] = {}
        for entry in entries:
            image_id = _as_id(entry.get("id")) if isinstance(entry, dict) else None
            if image_id is None or not (isinstance(entry.get("file_name"), str) and entry["file_name"]):
                log.bad(MALFORMED_ANNOTATION, f"image {entry!r:.60}")
                continue
            if image_id in images:
                log.bad(MALFORMED_ANNOTATION, f"image id {image_id} listed again; the first is used")
                continue
            path = os.path.join(self.image_dir, entry["file_name"])
            if not os.path.isfile(path):
                log.bad(MISSING_IMAGE, f"image {path}")
                continue
            width, height = positive_size(entry.get("width")), positive_size(entry.get("height"))
            if width is None or height is None:
                if "width" in entry or "height" in entry:
                    log.bad(BAD_SIZE, f"image {image_id} (size {entry.get('width')!r:.20} x "
                            f"{entry.get('height')!r:.20})")
                header = read_image_size(path)  # header only: pixels are decoded when loaded
                if header is None:
                    log.bad(UNREADABLE_IMAGE, f"image {path}")
                    continue
                width, height = header
            images[image_id] = {**entry, "id": image_id, "width": width, "height": height}
        return images

    def _read_annotations(self, entries: list[Any], listed: list[Any], images: dict[int, dict[str, Any]],
                          log: _EntryLog) -> tuple[list[dict[str, Any]], dict[int, list[tuple]]]:
        """``(clean annotations for COCOeval, image id -> [(xyxy box, label), ...])``; crowd
        annotations are in the first, not in the second."""
        listed_ids = {e.get("id") for e in listed if isinstance(e, dict)}
        seen: set[int] = set()
        clean: list[dict[str, Any]] = []
        objects: dict[int, list[tuple[list[float], int]]] = defaultdict(list)
        for ann in entries:
            is_dict = isinstance(ann, dict)
            ann_id = _as_id(ann.get("id")) if is_dict else None
            image_id = _as_id(ann.get("image_id")) if is_dict else None
            if ann_id is None or image_id is None:
                log.bad(MALFORMED_ANNOTATION, f"annotation {ann!r:.60}")
                continue
            if ann_id in seen:
                log.bad(MALFORMED_ANNOTATION, f"annotation id {ann_id} listed again; the first is used")
                continue
            seen.add(ann_id)
            if image_id not in images:
                # Its image was skipped (counted there already) or was never listed.
                if image_id not in listed_ids:
                    log.bad(MALFORMED_ANNOTATION, f"annotation {ann_id} (unknown image_id {image_id})")
                continue
            bbox = _as_bbox(ann.get("bbox"))
            if bbox is None:
                log.bad(MALFORMED_BOX, f"annotation {ann_id} (bbox {ann.get('bbox')!r:.40})")
                continue
            iscrowd = _as_iscrowd(ann.get("iscrowd", 0))
            if iscrowd is None:
                log.bad(MALFORMED_ANNOTATION, f"annotation {ann_id} (iscrowd {ann.get('iscrowd')!r:.20})")
                continue
            label = self.cat_id_to_label.get(_as_id(ann.get("category_id")))  # type: ignore[arg-type]
            if label is None:
                log.bad(UNKNOWN_CLASS, f"annotation {ann_id} (category_id {ann.get('category_id')!r:.20})")
                continue
            x, y, w, h = bbox
            area = _as_float(ann.get("area"))
            if area is None or area < 0:
                area = w * h
            clean.append({**ann, "id": ann_id, "image_id": image_id, "category_id": ann["category_id"],
                          "bbox": bbox, "iscrowd": iscrowd, "area": area})
            if iscrowd:
                log.counts[CROWD_BOX] += 1
                continue
            objects[image_id].append(([x, y, x + w, y + h], label))
        return clean, objects

    def _build_records(self, images: dict[int, dict[str, Any]], objects: dict[int, list[tuple]],
                       log: _EntryLog) -> None:
        """One :class:`Record` per image, boxes sanitised against its (annotated) size."""
        for image_id in sorted(images):
            entry = images[image_id]
            found = objects.get(image_id, [])
            with np.errstate(over="ignore"):  # 1e300 -> inf in float32: degenerate, counted
                boxes = np.asarray([o[0] for o in found], dtype=np.float32).reshape(-1, 4)
            labels = np.asarray([o[1] for o in found], dtype=np.int64).reshape(-1)
            keep, box_counts = sanitize_boxes(boxes, entry["width"], entry["height"])
            for reason, count in box_counts.items():
                for _ in range(count):
                    log.bad(reason, f"image {image_id}")
            if self.drop_empty and not keep.any():
                log.counts[EMPTY_IMAGE] += 1
                continue
            self.records.append(Record(os.path.join(self.image_dir, entry["file_name"]), image_id,
                                       boxes[keep], labels[keep], np.zeros(int(keep.sum()), dtype=bool),
                                       size=(entry["width"], entry["height"])))

    @staticmethod
    def _index_for_cocoeval(data: dict[str, Any], categories: list[dict[str, Any]],
                            images: dict[int, dict[str, Any]], annotations: list[dict[str, Any]]) -> Any:
        """A ``pycocotools.coco.COCO`` over the cleaned entries."""
        from pycocotools.coco import COCO

        coco = COCO()
        coco.dataset = {**data, "images": list(images.values()), "annotations": annotations,
                        "categories": categories}
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco.createIndex()
        return coco
