"""SHIM (replaced by the data branch): the data part of the training config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError


@dataclass
class Augmentation:
    photometric: bool = True
    expand: bool = True
    expand_max_ratio: float = 4.0
    expand_p: float = 0.5
    crop: bool = True
    flip: bool = True


@dataclass
class SyntheticData:
    train_images: int = 2000
    val_images: int = 200
    test_images: int = 200
    train_seed: int = 0
    val_seed: int = 1
    test_seed: int = 2
    source_size: int = 128
    max_objects: int = 4
    cache: bool = True


@dataclass
class VOCData:
    root: str = "data/VOCdevkit"
    train: list[str] = field(default_factory=lambda: ["2007:trainval", "2012:trainval"])
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=lambda: ["2007:test"])
    class_names: list[str] | None = None


@dataclass
class COCOSplit:
    images: str = ""
    annotations: str = ""


@dataclass
class COCOData:
    train: COCOSplit = field(default_factory=lambda: COCOSplit(
        "data/coco/train2017", "data/coco/annotations/instances_train2017.json"))
    val: COCOSplit | None = None
    test: COCOSplit | None = field(default_factory=lambda: COCOSplit(
        "data/coco/val2017", "data/coco/annotations/instances_val2017.json"))


@dataclass
class DataConfig:
    kind: Literal["synthetic", "voc", "coco"] = "synthetic"
    image_size: int = 160
    augment: Augmentation = field(default_factory=Augmentation)
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    num_workers: int | None = None
    synthetic: SyntheticData = field(default_factory=SyntheticData)
    voc: VOCData = field(default_factory=VOCData)
    coco: COCOData = field(default_factory=COCOData)


def validate_data(data: DataConfig) -> DataConfig:
    if not data.image_size > 0:
        raise ConfigError(f"data.image_size must be > 0, got {data.image_size}")
    return data
