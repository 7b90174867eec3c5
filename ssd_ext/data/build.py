"""Datasets from a :class:`~ssd_ext.data.config.DataConfig`: ``build_dataset(data, split)``.

- ``train``: ``train_transform(image_size, mean, std, data.augment)``; VOC and COCO drop
  pictures with no box left (nothing to learn from), VOC drops difficult objects.
- ``val`` / ``test``: ``eval_transform(image_size, mean, std)``; VOC keeps difficult objects
  (flagged, for the VOC metric).
- A split that is not configured gives None (see :mod:`ssd_ext.data.config`).
- ``transform=False``: raw items (PIL image, pixel boxes).

A missing folder or file, a split file or annotation file that cannot be read, is a
:class:`~ssd_ext.errors.ConfigError` naming the config field (e.g.
``data.voc.root 'x' is not a folder ...``, ``data.coco.test.images: folder 'x' does not exist``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

from ..errors import ConfigError
from .base import DetectionDataset
from .coco import COCODetection
from .config import COCOSplit, DataConfig, validate_data
from .synthetic import SyntheticShapes
from .transforms import eval_transform, train_transform
from .voc import VOC_CLASSES, VOCDetection

__all__ = ["SPLITS", "Split", "build_dataset"]

Split = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = ("train", "val", "test")


def _transform(data: DataConfig, split: str) -> Callable[..., Any]:
    size, mean, std = data.image_size, tuple(data.mean), tuple(data.std)
    if split == "train":
        return train_transform(size, mean, std, data.augment)
    return eval_transform(size, mean, std)


def _synthetic(data: DataConfig, split: str, transform: Callable[..., Any] | None) -> SyntheticShapes | None:
    config = data.synthetic
    num_images, seed = getattr(config, f"{split}_images"), getattr(config, f"{split}_seed")
    if num_images == 0:
        return None
    return SyntheticShapes(num_images=num_images, image_size=config.source_size,
                           max_objects=config.max_objects, seed=seed, transform=transform, cache=config.cache)


def _voc_image_sets(root: str, entries: list[str], where: str) -> list[tuple[str, str]]:
    """``(year, split)`` pairs of ``entries``, each checked on disk."""
    pairs = []
    for entry in entries:
        year, _, name = entry.partition(":")
        year, name = year.strip(), name.strip()
        folder = os.path.join(root, f"VOC{year}")
        if not os.path.isdir(folder):
            raise ConfigError(f"{where}: {folder!r} does not exist (entry {entry!r})")
        split_file = os.path.join(folder, "ImageSets", "Main", f"{name}.txt")
        if not os.path.isfile(split_file):
            raise ConfigError(f"{where}: split file {split_file!r} does not exist (entry {entry!r})")
        pairs.append((year, name))
    return pairs


def _voc(data: DataConfig, split: str, transform: Callable[..., Any] | None) -> VOCDetection | None:
    config = data.voc
    entries = getattr(config, split)
    if not entries:
        return None
    if not os.path.isdir(config.root):
        raise ConfigError(f"data.voc.root {config.root!r} is not a folder; it must be the VOCdevkit folder "
                          "holding VOC2007/ (and VOC2012/)")
    where = f"data.voc.{split}"
    image_sets = _voc_image_sets(config.root, entries, where)
    names = tuple(config.class_names) if config.class_names else VOC_CLASSES
    training = split == "train"
    try:
        return VOCDetection(config.root, image_sets, transform=transform, class_names=names,
                            keep_difficult=not training, drop_empty=training)
    except ValueError as error:  # a split file that is not text
        raise ConfigError(f"{where}: {error}") from None


def _coco(data: DataConfig, split: str, transform: Callable[..., Any] | None) -> COCODetection | None:
    config: COCOSplit | None = getattr(data.coco, split)
    if config is None:
        return None
    where = f"data.coco.{split}"
    if not os.path.isdir(config.images):
        raise ConfigError(f"{where}.images: folder {config.images!r} does not exist")
    if not os.path.isfile(config.annotations):
        raise ConfigError(f"{where}.annotations: file {config.annotations!r} does not exist")
    try:
        return COCODetection(config.images, config.annotations, transform=transform,
                             drop_empty=split == "train")
    except ValueError as error:  # not a COCO instances json
        raise ConfigError(f"{where}.annotations: {error}") from None


def build_dataset(data: DataConfig, split: Split, *, transform: bool = True) -> DetectionDataset | None:
    """The ``split`` ("train", "val" or "test") of ``data`` with its transform (none when
    ``transform`` is False), or None when that split is not configured. Raises ConfigError
    naming the field for a bad value, a missing path or an unreadable annotation file."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    validate_data(data)
    item_transform = _transform(data, split) if transform else None
    builders = {"synthetic": _synthetic, "voc": _voc, "coco": _coco}
    return builders[data.kind](data, split, item_transform)
