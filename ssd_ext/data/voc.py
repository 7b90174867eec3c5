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

from .base import (
    BAD_SIZE,
    EMPTY_IMAGE,
    MALFORMED_ANNOTATION,
    MALFORMED_BOX,
    MISSING_ANNOTATION,
    MISSING_IMAGE,
    UNKNOWN_CLASS,
    UNREADABLE_IMAGE,
    DetectionDataset,
    Record,
    positive_size,
    read_image_size,
    sanitize_boxes,
)

__all__ = ["VOC_CLASSES", "VOCDetection", "parse_voc_xml", "read_split_ids"]

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def _number_text(node: ET.Element | None, tag: str) -> float:
    """The number in ``<tag>`` under ``node`` (may be inf/nan: the callers check). Raises
    ``ValueError`` when the tag is missing or holds no number."""
    child = node.find(tag) if node is not None else None
    if child is None or child.text is None or not child.text.strip():
        raise ValueError(f"missing <{tag}>")
    return float(child.text.strip())


def _read_size(root: ET.Element) -> tuple[tuple[float, float] | None, bool]:
    """``((W, H) or None, bad)``: None with ``bad=False`` when ``<size>`` or its width/height
    is absent; None with ``bad=True`` when given but not positive finite numbers."""
    size = root.find("size")
    texts = [(size.findtext(tag) or "").strip() if size is not None else "" for tag in ("width", "height")]
    if not any(texts):
        return None, False
    try:
        values = [positive_size(_number_text(size, tag)) for tag in ("width", "height")]
    except ValueError:
        return None, True
    if values[0] is None or values[1] is None:
        return None, True
    return (values[0], values[1]), False


# VOC writes 0/1; words some tools write are accepted too. Anything else is a malformed object.
_DIFFICULT_VALUES = {"": False, "0": False, "1": True, "false": False, "true": True}


def parse_voc_xml(path: str) -> dict[str, Any]:
    """Parse one VOC annotation. Returns ``filename``, ``size`` ``(W, H)`` or ``None`` (absent
    or unusable), ``bad_size`` (a size was given but is not two positive finite numbers) and
    ``objects``: dicts with ``name`` (lower-cased), ``difficult`` and ``bbox`` (continuous pixel
    xyxy, see the module docstring) or ``None`` when the box or its flag cannot be read.
    Raises ``ET.ParseError`` on malformed XML (``LookupError``/``ValueError`` for an encoding
    that cannot be decoded)."""
    root = ET.parse(path).getroot()
    filename = (root.findtext("filename") or "").strip() or None
    size, bad_size = _read_size(root)
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip().lower()
        difficult = _DIFFICULT_VALUES.get((obj.findtext("difficult") or "").strip().lower())
        try:
            bndbox = obj.find("bndbox")
            xmin, ymin, xmax, ymax = (_number_text(bndbox, tag) for tag in ("xmin", "ymin", "xmax", "ymax"))
            bbox = (xmin - 1.0, ymin - 1.0, xmax, ymax)
        except ValueError:
            bbox = None
        if difficult is None:
            bbox = None
        objects.append({"name": name, "difficult": bool(difficult), "bbox": bbox})
    return {"filename": filename, "size": size, "bad_size": bad_size, "objects": objects}


def read_split_ids(split_file: str) -> list[str]:
    """The image ids of a VOC split file: the first word of each non-blank line.

    Raises ``FileNotFoundError`` when it is absent and ``ValueError`` naming it when it is not
    UTF-8 text."""
    if not os.path.isfile(split_file):
        raise FileNotFoundError(f"VOC split file not found: {split_file}")
    with open(split_file, "rb") as handle:
        data = handle.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"VOC split file {split_file}: expected UTF-8 text with one image id per line, "
                         f"got byte 0x{data[error.start]:02x} at offset {error.start} that is not UTF-8"
                         ) from None
    if "\x00" in text:
        raise ValueError(f"VOC split file {split_file}: expected text with one image id per line, "
                         "got NUL bytes (a binary file?)")
    return [line.split()[0] for line in text.splitlines() if line.strip()]


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
        self._start_load_log()

    def _read_split(self, year: str, split: str) -> None:
        base = os.path.join(self.root, f"VOC{year}")
        for image_id in read_split_ids(os.path.join(base, "ImageSets", "Main", f"{split}.txt")):
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
        except (SyntaxError, OSError, ValueError, LookupError, RecursionError) as error:
            # ET.ParseError is a SyntaxError; an unknown or multi-byte declared encoding is a
            # LookupError or ValueError: all mean the file cannot be read as an annotation.
            self._report(xml_path + f" ({error})", Counter({MALFORMED_ANNOTATION: 1}))
            return None
        image_path = os.path.join(base, "JPEGImages", parsed["filename"] or f"{image_id}.jpg")
        if not os.path.isfile(image_path):
            fallback = os.path.join(base, "JPEGImages", f"{image_id}.jpg")
            if not os.path.isfile(fallback):
                self._report(f"{xml_path} (image {image_path})", Counter({MISSING_IMAGE: 1}))
                return None
            image_path = fallback
        counts: Counter = Counter({BAD_SIZE: 1} if parsed["bad_size"] else {})
        size = parsed["size"]
        if size is None:
            size = read_image_size(image_path)  # the header only; pixels are decoded when loaded
            if size is None:
                counts[UNREADABLE_IMAGE] += 1
                self._report(f"{xml_path} (image {image_path})", counts)
                return None
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
                        np.asarray(difficult, dtype=bool).reshape(-1)[keep], size=size)
        self._report(xml_path, counts)
        if self.drop_empty and len(record.labels) == 0:
            self._report(xml_path, Counter({EMPTY_IMAGE: 1}))
            return None
        return record
