"""COCO reader: an ``instances_*.json`` file (read with pycocotools) and its image folder.

Category ids (1..90 with gaps on COCO) map to contiguous labels 1..K in increasing id order
(``cat_id_to_label`` / ``label_to_cat_id``; K = 80 on COCO, so ``num_classes`` = 81). Boxes are
COCO's ``[x, y, w, h]`` in continuous pixels and become ``[x, y, x + w, y + h]``. Crowd
annotations (``iscrowd=1``) are left out of the targets (counted as ``crowd_box``) but stay in
``dataset.coco`` for COCOeval, which uses them as ignore regions.

A json file that cannot be parsed at all is a ``ValueError`` naming it (there is nothing to
skip to); bad entries inside it (annotation without a usable ``bbox``, unknown ``category_id``
or ``image_id``, image entry without ``file_name``, image file missing) are skipped with ONE
warning naming the json file, and counted in ``dataset.skipped``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from .base import (
    CROWD_BOX,
    EMPTY_IMAGE,
    MALFORMED_ANNOTATION,
    MALFORMED_BOX,
    MISSING_IMAGE,
    UNKNOWN_CLASS,
    AnnotationWarning,
    DetectionDataset,
    Record,
    _describe,
    sanitize_boxes,
)

__all__ = ["COCODetection"]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
        from pycocotools.coco import COCO

        self.image_dir = os.fspath(image_dir)
        self.annotation_file = os.fspath(annotation_file)
        self.drop_empty = drop_empty
        try:
            with open(self.annotation_file) as handle:
                data = json.load(handle)
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read COCO annotation file {self.annotation_file}: {error}") from error
        if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                                 for k in ("images", "annotations", "categories")):
            raise ValueError(f"{self.annotation_file}: not a COCO instances file "
                             "(needs 'images', 'annotations' and 'categories' lists)")

        counts: Counter = Counter()
        examples: list[str] = []

        def bad(reason: str, what: str) -> None:
            counts[reason] += 1
            if len(examples) < 5:
                examples.append(what)

        categories = []
        for cat in data["categories"]:
            if isinstance(cat, dict) and isinstance(cat.get("id"), int) and isinstance(cat.get("name"), str):
                categories.append(cat)
            else:
                bad(MALFORMED_ANNOTATION, f"category {cat!r:.60}")
        categories.sort(key=lambda c: c["id"])
        self.cat_id_to_label: dict[int, int] = {c["id"]: i for i, c in enumerate(categories, start=1)}
        self.label_to_cat_id: dict[int, int] = {i: c for c, i in self.cat_id_to_label.items()}
        super().__init__(("__background__", *(c["name"] for c in categories)), transform)

        images: dict[int, dict[str, Any]] = {}
        for entry in data["images"]:
            if not (isinstance(entry, dict) and isinstance(entry.get("id"), int)
                    and isinstance(entry.get("file_name"), str) and entry["file_name"]):
                bad(MALFORMED_ANNOTATION, f"image {entry!r:.60}")
                continue
            path = os.path.join(self.image_dir, entry["file_name"])
            if not os.path.isfile(path):
                bad(MISSING_IMAGE, f"image {path}")
                continue
            if not (_is_number(entry.get("width")) and _is_number(entry.get("height"))
                    and entry["width"] > 0 and entry["height"] > 0):
                try:
                    with Image.open(path) as image:  # header only
                        entry = {**entry, "width": image.width, "height": image.height}
                except OSError:
                    bad(MISSING_IMAGE, f"image {path}")
                    continue
            images[entry["id"]] = entry

        valid_annotations = []
        per_image: dict[int, list[tuple[list[float], int]]] = defaultdict(list)
        listed_ids = {e.get("id") for e in data["images"] if isinstance(e, dict)}
        for ann in data["annotations"]:
            if not (isinstance(ann, dict) and isinstance(ann.get("image_id"), int)
                    and isinstance(ann.get("id"), int)):
                bad(MALFORMED_ANNOTATION, f"annotation {ann!r:.60}")
                continue
            ann_id = ann["id"]
            if ann["image_id"] not in images:
                # Its image was skipped (counted there already) or was never listed.
                if ann["image_id"] not in listed_ids:
                    bad(MALFORMED_ANNOTATION, f"annotation {ann_id} (unknown image_id {ann['image_id']})")
                continue
            bbox = ann.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
                bad(MALFORMED_BOX, f"annotation {ann_id} (bbox {bbox!r:.40})")
                continue
            if ann.get("category_id") not in self.cat_id_to_label:
                bad(UNKNOWN_CLASS, f"annotation {ann_id} (category_id {ann.get('category_id')!r})")
                continue
            valid_annotations.append(ann)
            if ann.get("iscrowd", 0):
                counts[CROWD_BOX] += 1
                continue
            x, y, w, h = (float(v) for v in bbox)
            label = self.cat_id_to_label[ann["category_id"]]
            per_image[ann["image_id"]].append(([x, y, x + w, y + h], label))

        for image_id in sorted(images):
            entry = images[image_id]
            objects = per_image.get(image_id, [])
            boxes = np.asarray([o[0] for o in objects], dtype=np.float32).reshape(-1, 4)
            labels = np.asarray([o[1] for o in objects], dtype=np.int64).reshape(-1)
            keep, box_counts = sanitize_boxes(boxes, float(entry["width"]), float(entry["height"]))
            for reason, count in box_counts.items():
                for _ in range(count):
                    bad(reason, f"image {image_id}")
            if self.drop_empty and not keep.any():
                counts[EMPTY_IMAGE] += 1
                continue
            self.records.append(Record(os.path.join(self.image_dir, entry["file_name"]), image_id,
                                       boxes[keep], labels[keep], np.zeros(int(keep.sum()), dtype=bool)))

        self.skipped.update(+counts)
        problems = Counter({k: v for k, v in counts.items() if k not in (CROWD_BOX, EMPTY_IMAGE)})
        if problems:
            self.skipped_files.append((self.annotation_file, _describe(problems)))
            warnings.warn(f"{self.annotation_file}: {_describe(problems)} (e.g. {'; '.join(examples)})",
                          AnnotationWarning, stacklevel=2)

        clean = {**data, "images": list(images.values()), "annotations": valid_annotations,
                 "categories": categories}
        self.coco = COCO()
        self.coco.dataset = clean
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco.createIndex()
