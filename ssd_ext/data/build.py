"""SHIM (replaced by the data branch): datasets from the data config."""

from __future__ import annotations

import os
from typing import Any, Literal

from ..errors import ConfigError
from .config import DataConfig

Split = Literal["train", "val", "test"]


class _CachedSynthetic:
    def load_raw(self, index: int):  # noqa: ANN201
        cache = self.__dict__.setdefault("_raw_cache", {})
        if index not in cache:
            cache[index] = super().load_raw(index)  # type: ignore[misc]
        image, boxes, labels, difficult, image_id = cache[index]
        return image.copy(), boxes, labels, difficult, image_id


def _transform(data: DataConfig, split: Split) -> Any:
    from . import transforms as T

    size, mean, std = data.image_size, tuple(data.mean), tuple(data.std)
    a = data.augment
    if split != "train":
        return T.eval_transform(size, mean, std)
    if a.photometric and a.crop and a.expand and a.flip:
        return T.train_transform(size, mean, std, expand_max_ratio=a.expand_max_ratio)
    if not (a.photometric or a.crop or a.expand or a.flip):
        return T.eval_transform(size, mean, std)
    fill = tuple(255.0 * m for m in mean)
    return T.Compose([T.ToFloatImage(), T.Expand(fill=fill, max_ratio=a.expand_max_ratio, p=a.expand_p),
                      T.RandomHorizontalFlip(), T.Resize(size), T.Normalize(mean, std), T.ToTensor()])


def build_dataset(data: DataConfig, split: Split, *, transform: bool = True) -> Any:
    from . import SyntheticShapes, VOCDetection, COCODetection, VOC_CLASSES

    tf = _transform(data, split) if transform else None
    if data.kind == "synthetic":
        s = data.synthetic
        cls = type("CachedSyntheticShapes", (_CachedSynthetic, SyntheticShapes), {}) if s.cache else SyntheticShapes
        count = {"train": s.train_images, "val": s.val_images, "test": s.test_images}[split]
        seed = {"train": s.train_seed, "val": s.val_seed, "test": s.test_seed}[split]
        if count == 0:
            return None
        return cls(num_images=count, seed=seed, transform=tf, image_size=s.source_size,
                   max_objects=s.max_objects)
    if data.kind == "voc":
        entries = getattr(data.voc, split)
        if not entries:
            return None
        root = data.voc.root
        if not os.path.isdir(root):
            raise ConfigError(f"data.voc.root {root!r} is not a folder")
        sets = [tuple(e.split(":")) for e in entries]
        names = tuple(data.voc.class_names) if data.voc.class_names else VOC_CLASSES
        if split == "train":
            return VOCDetection(root, sets, transform=tf, class_names=names, drop_empty=True)
        return VOCDetection(root, sets, transform=tf, class_names=names, keep_difficult=True)
    entry = getattr(data.coco, split)
    if entry is None:
        return None
    if not os.path.isdir(entry.images):
        raise ConfigError(f"data.coco.{split}.images: folder {entry.images!r} does not exist")
    if not os.path.isfile(entry.annotations):
        raise ConfigError(f"data.coco.{split}.annotations: file {entry.annotations!r} does not exist")
    return COCODetection(entry.images, entry.annotations, transform=tf, drop_empty=split == "train")
