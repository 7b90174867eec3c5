"""Write any :class:`~ssd_ext.data.base.DetectionDataset` to disk in VOC or COCO layout.

Both writers read the dataset's raw items (``dataset.load_raw(i)``: PIL image, pixel boxes,
labels, difficult flags), ignoring its transform, so what they write reads back exactly with
:class:`~ssd_ext.data.VOCDetection` / :class:`~ssd_ext.data.COCODetection`.
"""

from __future__ import annotations

import json
import numbers
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import DetectionDataset

__all__ = ["write_coco", "write_voc"]


def _check_dataset(dataset: Any) -> None:
    if not (hasattr(dataset, "load_raw") and hasattr(dataset, "class_names") and hasattr(dataset, "__len__")):
        raise TypeError("dataset must be a DetectionDataset (with load_raw, class_names and a length), "
                        f"got {type(dataset).__name__}")


def _raw_item(dataset: Any, index: int) -> tuple[Any, np.ndarray, Any, Any]:
    """``(image, boxes [G, 4] float64 pixels, labels, difficult)`` of item ``index``, checked
    writable: a box that is not finite has no file representation."""
    image, boxes, labels, difficult, _ = dataset.load_raw(index)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not np.isfinite(boxes).all():
        raise ValueError(f"item {index} of the dataset has a non-finite box, which cannot be written: "
                         f"{boxes[~np.isfinite(boxes).all(axis=1)][0].tolist()}")
    return image, boxes, labels, difficult


def _check_name(argument: str, value: Any) -> None:
    """A name that becomes part of a path: a non-empty string without path separators."""
    if not isinstance(value, str) or not value or value in (".", "..") or "/" in value or os.sep in value \
            or "\x00" in value:
        raise ValueError(f"{argument} must be a non-empty name without path separators, got {value!r}")


def _voc_xml(filename: str, folder: str, width: int, height: int,
             objects: list[tuple[str, Sequence[float], bool]]) -> ET.ElementTree:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(width)
    ET.SubElement(size, "height").text = str(height)
    ET.SubElement(size, "depth").text = "3"
    for name, (x1, y1, x2, y2), difficult in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "1" if difficult else "0"
        bndbox = ET.SubElement(obj, "bndbox")
        # Continuous xyxy -> VOC's 1-based inclusive pixel indices (inverse of the reader).
        for tag, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(bndbox, tag).text = str(int(round(value)))
    ET.indent(root)
    return ET.ElementTree(root)


def write_voc(dataset: DetectionDataset, root: str | os.PathLike, year: str = "2007", split: str = "trainval",
              test_fraction: float = 0.0, image_format: str = "jpg", jpeg_quality: int = 95,
              progress: bool = False) -> list[str]:
    """Write ``dataset`` (its raw items, ignoring its transform) to ``<root>/VOC<year>`` in VOC layout.

    Images go to ``JPEGImages/<id>.<image_format>`` ("jpg" or "png"), annotations to
    ``Annotations/<id>.xml`` (1-based inclusive coordinates) with ids ``000000, 000001, ...``.
    The ids are listed in ``ImageSets/Main/<split>.txt``, except the last
    ``round(test_fraction * N)`` which go to ``test.txt``. Read it back with
    ``VOCDetection(root, [(year, split)], class_names=dataset.class_names[1:])``.
    Returns the ids written.
    """
    _check_dataset(dataset)
    _check_name("year", year)
    _check_name("split", split)
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real) \
            or not 0.0 <= float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be a number in [0, 1), got {test_fraction!r}")
    if isinstance(jpeg_quality, bool) or not isinstance(jpeg_quality, numbers.Integral) \
            or not 1 <= int(jpeg_quality) <= 100:
        raise ValueError(f"jpeg_quality must be an integer in 1..100, got {jpeg_quality!r}")
    base = os.path.join(os.fspath(root), f"VOC{year}")
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    indices: Any = range(len(dataset))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"writing VOC{year}", unit="img")
    width_digits = max(6, len(str(max(len(dataset) - 1, 0))))
    ids = []
    for index in indices:
        image, boxes, labels, difficult = _raw_item(dataset, index)
        image_id = f"{index:0{width_digits}d}"
        filename = f"{image_id}.{image_format}"
        image_path = os.path.join(base, "JPEGImages", filename)
        if image_format == "jpg":
            image.save(image_path, quality=jpeg_quality)
        else:
            image.save(image_path)
        objects = [(dataset.class_names[int(label)], box.tolist(), bool(flag))
                   for box, label, flag in zip(boxes, labels, difficult, strict=True)]
        _voc_xml(filename, f"VOC{year}", image.width, image.height, objects).write(
            os.path.join(base, "Annotations", f"{image_id}.xml"), encoding="utf-8")
        ids.append(image_id)
    num_test = int(round(test_fraction * len(ids)))
    splits = {split: ids[:len(ids) - num_test]}
    if num_test:
        splits["test"] = ids[len(ids) - num_test:]
    for name, members in splits.items():
        with open(os.path.join(base, "ImageSets", "Main", f"{name}.txt"), "w") as handle:
            handle.writelines(f"{i}\n" for i in members)
    return ids


def write_coco(dataset: DetectionDataset, image_dir: str | os.PathLike, annotation_file: str | os.PathLike,
               category_ids: Sequence[int] | None = None, progress: bool = False) -> None:
    """Write ``dataset`` (its raw items) as PNG images in ``image_dir`` and a COCO instances json.

    Label ``l`` gets category id ``category_ids[l - 1]`` (default ``l``); image ids are the
    indices. Boxes are written as ``[x, y, w, h]``, so ``COCODetection`` reads them back exactly.
    """
    _check_dataset(dataset)
    image_dir = os.fspath(image_dir)
    names = dataset.class_names[1:]
    category_ids = list(category_ids) if category_ids is not None else list(range(1, len(names) + 1))
    if len(category_ids) != len(names) or len(set(category_ids)) != len(names) or not all(
            isinstance(c, numbers.Integral) and not isinstance(c, bool) for c in category_ids):
        raise ValueError(f"category_ids must be {len(names)} distinct integers, got {category_ids!r}")
    category_ids = [int(c) for c in category_ids]
    os.makedirs(image_dir, exist_ok=True)
    indices: Any = range(len(dataset))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="writing COCO", unit="img")
    images, annotations = [], []
    for index in indices:
        image, boxes, labels, _ = _raw_item(dataset, index)
        file_name = f"{index:06d}.png"
        image.save(os.path.join(image_dir, file_name))
        images.append({"id": index, "file_name": file_name, "width": image.width, "height": image.height})
        for (x1, y1, x2, y2), label in zip(boxes, labels,
                                           strict=True):
            width, height = float(x2 - x1), float(y2 - y1)
            annotations.append({"id": len(annotations) + 1, "image_id": index,
                                "category_id": category_ids[int(label) - 1], "iscrowd": 0,
                                "bbox": [float(x1), float(y1), width, height], "area": width * height})
    categories = [{"id": cat_id, "name": name, "supercategory": "shape"}
                  for cat_id, name in zip(category_ids, names, strict=True)]
    with open(annotation_file, "w") as handle:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, handle)
