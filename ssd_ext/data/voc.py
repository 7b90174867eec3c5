"""PASCAL VOC reader (VOCdevkit layout).

``<root>/VOC<year>/Annotations/<id>.xml``, ``<root>/VOC<year>/JPEGImages/<id>.jpg`` (or the
file the XML's ``<filename>`` names there) and ``<root>/VOC<year>/ImageSets/Main/<split>.txt``.

Coordinates: VOC's ``xmin..xmax`` are 1-based INCLUSIVE pixel indices. Pixel ``i`` (1-based)
covers ``[i-1, i)`` in continuous coordinates, so a box becomes ``(xmin-1, ymin-1, xmax, ymax)``:
the left/top edges get the ``-1`` that Caffe SSD and ssd.pytorch apply, and the width
``xmax - xmin + 1`` equals VOC's own "+1" area convention. :func:`ssd_ext.data.write_voc`
writes the inverse (``xmin = x1 + 1``, ``xmax = x2``), so integer boxes round-trip exactly.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from .base import (
    MALFORMED_ANNOTATION,
    MALFORMED_BOX,
    MISSING_ANNOTATION,
    MISSING_IMAGE,
    UNKNOWN_CLASS,
    DetectionDataset,
    Record,
    sanitize_boxes,
)

__all__ = ["VOC_CLASSES", "VOCDetection", "parse_voc_xml"]

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def _int_text(node: ET.Element | None, tag: str) -> float:
    child = node.find(tag) if node is not None else None
    if child is None or child.text is None:
        raise ValueError(f"missing <{tag}>")
    return float(child.text.strip())


def parse_voc_xml(path: str) -> dict[str, Any]:
    """Parse one VOC annotation. Returns ``filename``, ``size`` ``(W, H)`` or ``None``, and
    ``objects``: dicts with ``name`` (lower-cased), ``difficult`` and ``bbox`` (continuous pixel
    xyxy, see the module docstring) or ``None`` when the box cannot be read.
    Raises ``ET.ParseError`` on malformed XML."""
    root = ET.parse(path).getroot()
    filename = (root.findtext("filename") or "").strip() or None
    size = None
    try:
        width, height = _int_text(root.find("size"), "width"), _int_text(root.find("size"), "height")
        if width > 0 and height > 0:
            size = (width, height)
    except ValueError:
        pass
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip().lower()
        difficult_text = (obj.findtext("difficult") or "0").strip()
        difficult = difficult_text not in ("", "0")
        try:
            bndbox = obj.find("bndbox")
            xmin, ymin, xmax, ymax = (_int_text(bndbox, tag) for tag in ("xmin", "ymin", "xmax", "ymax"))
            bbox = (xmin - 1.0, ymin - 1.0, xmax, ymax)
        except ValueError:
            bbox = None
        objects.append({"name": name, "difficult": difficult, "bbox": bbox})
    return {"filename": filename, "size": size, "objects": objects}


class VOCDetection(DetectionDataset):
    """VOC detection dataset over one or more ``(year, split)`` pairs, concatenated.

    Args:
        root: the ``VOCdevkit`` folder (holding ``VOC2007``, ``VOC2012``, ...).
        image_sets: ``(year, split)`` pairs, e.g. ``[("2007", "trainval"), ("2012", "trainval")]``.
        transform: see :mod:`ssd_ext.data.transforms`; ``None`` gives PIL images and pixel boxes.
        keep_difficult: keep objects marked difficult (for evaluation); dropped by default for
            training. Kept ones are flagged in ``target["difficult"]``.
        class_names: the object classes (labels 1..len); VOC's 20 by default.
        drop_empty: skip images left with no box (e.g. only difficult objects).

    ``image_id`` is ``"<year>/<id>"``. Annotations are read when the dataset is built; bad ones
    are handled as described in :mod:`ssd_ext.data.base`.
    """

    def __init__(self, root: str | os.PathLike,
                 image_sets: Iterable[tuple[str, str]] = (("2007", "trainval"),),
                 transform: Callable[..., Any] | None = None, keep_difficult: bool = False,
                 class_names: Sequence[str] = VOC_CLASSES, drop_empty: bool = False) -> None:
        super().__init__(("__background__", *class_names), transform)
        self.root = os.fspath(root)
        self.image_sets = [(str(year), str(split)) for year, split in image_sets]
        self.keep_difficult = keep_difficult
        self.drop_empty = drop_empty
        self.class_to_label = {name.lower(): label for label, name in enumerate(class_names, start=1)}
        for year, split in self.image_sets:
            self._read_split(year, split)

    def _read_split(self, year: str, split: str) -> None:
        base = os.path.join(self.root, f"VOC{year}")
        split_file = os.path.join(base, "ImageSets", "Main", f"{split}.txt")
        if not os.path.isfile(split_file):
            raise FileNotFoundError(f"VOC split file not found: {split_file}")
        with open(split_file) as handle:
            ids = [line.split()[0] for line in handle if line.strip()]
        for image_id in ids:
            record = self._read_annotation(base, year, image_id)
            if record is not None:
                self.records.append(record)

    def _read_annotation(self, base: str, year: str, image_id: str) -> Record | None:
        xml_path = os.path.join(base, "Annotations", f"{image_id}.xml")
        if not os.path.isfile(xml_path):
            self._report(xml_path, Counter({MISSING_ANNOTATION: 1}))
            return None
        try:
            parsed = parse_voc_xml(xml_path)
        except (ET.ParseError, OSError, ValueError) as error:
            self._report(xml_path + f" ({error})", Counter({MALFORMED_ANNOTATION: 1}))
            return None
        image_path = os.path.join(base, "JPEGImages", parsed["filename"] or f"{image_id}.jpg")
        if not os.path.isfile(image_path):
            fallback = os.path.join(base, "JPEGImages", f"{image_id}.jpg")
            if not os.path.isfile(fallback):
                self._report(f"{xml_path} (image {image_path})", Counter({MISSING_IMAGE: 1}))
                return None
            image_path = fallback
        size = parsed["size"]
        if size is None:
            try:
                with Image.open(image_path) as image:  # reads the header only
                    size = image.size
            except OSError:
                self._report(f"{xml_path} (image {image_path})", Counter({MISSING_IMAGE: 1}))
                return None
        counts: Counter = Counter()
        boxes, labels, difficult = [], [], []
        for obj in parsed["objects"]:
            if obj["bbox"] is None:
                counts[MALFORMED_BOX] += 1
                continue
            label = self.class_to_label.get(obj["name"])
            if label is None:
                counts[UNKNOWN_CLASS] += 1
                continue
            if obj["difficult"] and not self.keep_difficult:
                continue
            boxes.append(obj["bbox"])
            labels.append(label)
            difficult.append(obj["difficult"])
        boxes_np = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        keep, box_counts = sanitize_boxes(boxes_np, size[0], size[1])
        counts.update(box_counts)
        record = Record(image_path, f"{year}/{image_id}", boxes_np[keep],
                        np.asarray(labels, dtype=np.int64).reshape(-1)[keep],
                        np.asarray(difficult, dtype=bool).reshape(-1)[keep])
        self._report(xml_path, counts)
        if self.drop_empty and len(record.labels) == 0:
            self._report(xml_path, Counter({"empty_image": 1}))
            return None
        return record
