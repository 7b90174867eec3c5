"""The data section of a training config: which pictures, at what size, augmented how.

Plain dataclasses (every field has a one-line docstring, which ``ssd train --help`` shows):
they round-trip through ``dataclasses.asdict`` and :func:`data_config_from_dict`, and work as
nested command-line arguments (``--data.synthetic.train_images 64``,
``--data.augment.crop false``, ``--data.coco.val.images DIR``). :func:`validate_data` checks
the values that can be checked without touching the disk (a :class:`~ssd_ext.errors.ConfigError`
naming the field, e.g. ``data.image_size``); :func:`ssd_ext.data.build.build_dataset` checks
the paths when it builds a split.

Splits: ``train`` is trained on, ``val`` selects the model (the best checkpoint), ``test`` is
the final held-out report. A split that is not configured (VOC ``val == []``, COCO
``val is None``, synthetic ``val_images == 0``) is built as None.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Literal

from ..errors import ConfigError
from .transforms.pipelines import Augmentation, check_augmentation

__all__ = [
    "DATA_KINDS", "Augmentation", "COCOData", "COCOSplit", "DataConfig", "SyntheticData", "VOCData",
    "data_config_from_dict", "validate_data",
]

DATA_KINDS: tuple[str, ...] = ("synthetic", "voc", "coco")


@dataclass
class SyntheticData:
    """The procedural shapes set (:class:`~ssd_ext.data.SyntheticShapes`), three disjoint splits."""

    train_images: int = 2000
    """Pictures in the training split."""
    val_images: int = 200
    """Pictures in the selection split (picks best.pt); 0: no selection split."""
    test_images: int = 200
    """Pictures in the held-out test split (the final report); 0: no test split."""
    train_seed: int = 0
    """Seed of the training split's pictures."""
    val_seed: int = 1
    """Seed of the selection split's pictures."""
    test_seed: int = 2
    """Seed of the test split's pictures."""
    source_size: int = 128
    """Side of the rendered pictures, in pixels, before the resize to image_size."""
    max_objects: int = 4
    """Most shapes in one picture (at least one)."""
    cache: bool = True
    """Render each picture once and keep it in memory."""


@dataclass
class VOCData:
    """PASCAL VOC in the VOCdevkit layout."""

    root: str = "data/VOCdevkit"
    """The VOCdevkit folder (holding VOC2007/, VOC2012/)."""
    train: list[str] = field(default_factory=lambda: ["2007:trainval", "2012:trainval"])
    """Training image sets, as year:split entries."""
    val: list[str] = field(default_factory=list)
    """Selection image sets (picks best.pt); empty: no selection split."""
    test: list[str] = field(default_factory=lambda: ["2007:test"])
    """Held-out test image sets, as year:split entries; empty: no test split."""
    class_names: list[str] | None = None
    """Object class names; default: the 20 VOC classes."""


@dataclass
class COCOSplit:
    """One COCO-format split: an image folder and its instances json."""

    images: str = ""
    """Folder holding the pictures named by the json's file_name."""
    annotations: str = ""
    """The instances json file."""


@dataclass
class COCOData:
    """COCO-format data (any instances json with its image folder)."""

    train: COCOSplit = field(default_factory=lambda: COCOSplit(
        "data/coco/train2017", "data/coco/annotations/instances_train2017.json"))
    """Training split."""
    val: COCOSplit | None = None
    """Selection split (picks best.pt); none by default."""
    test: COCOSplit | None = field(default_factory=lambda: COCOSplit(
        "data/coco/val2017", "data/coco/annotations/instances_val2017.json"))
    """Held-out test split."""


@dataclass
class DataConfig:
    """Where the pictures come from, their size on the network's input, and the augmentation."""

    kind: Literal["synthetic", "voc", "coco"] = "synthetic"
    """Which data: synthetic shapes, PASCAL VOC or COCO-format."""
    image_size: int = 160
    """Network input side, in pixels."""
    augment: Augmentation = field(default_factory=Augmentation)
    """Which parts of the paper's training augmentation run."""
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    """Per-channel RGB mean on the [0, 1] scale (normalisation and the zoom-out fill)."""
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    """Per-channel RGB standard deviation on the [0, 1] scale."""
    num_workers: int | None = None
    """DataLoader worker processes; None: chosen from the CPU cores."""
    synthetic: SyntheticData = field(default_factory=SyntheticData)
    """Settings of kind=synthetic."""
    voc: VOCData = field(default_factory=VOCData)
    """Settings of kind=voc."""
    coco: COCOData = field(default_factory=COCOData)
    """Settings of kind=coco."""


# -- validation ------------------------------------------------------------------------------

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(where: str, value: Any, minimum: int) -> None:
    if not (_is_int(value) and value >= minimum):
        raise ConfigError(f"{where} must be an integer >= {minimum}, got {value!r}")


def _check_triple(where: str, values: Any, positive: bool) -> None:
    ok = isinstance(values, (list, tuple)) and len(values) == 3 and all(_is_number(v) for v in values)
    if not ok or (positive and min(values) <= 0):
        kind = "three positive numbers" if positive else "three numbers"
        raise ConfigError(f"{where} must be {kind} (r, g, b on the [0, 1] scale), got {values!r}")


def _check_synthetic(synthetic: SyntheticData) -> None:
    for name, minimum in (("train_images", 1), ("val_images", 0), ("test_images", 0), ("train_seed", 0),
                          ("val_seed", 0), ("test_seed", 0), ("source_size", 16), ("max_objects", 1)):
        _check_int(f"data.synthetic.{name}", getattr(synthetic, name), minimum)
    if not isinstance(synthetic.cache, bool):
        raise ConfigError(f"data.synthetic.cache must be true or false, got {synthetic.cache!r}")


def _check_image_sets(where: str, entries: Any, required: bool) -> None:
    if not isinstance(entries, (list, tuple)) or (required and not entries):
        raise ConfigError(f"{where} must list 'year:split' entries (e.g. 2007:trainval), got {entries!r}")
    for entry in entries:
        year, sep, split = entry.partition(":") if isinstance(entry, str) else ("", "", "")
        if not (sep and year.strip() and split.strip()):
            raise ConfigError(f"{where} entries are 'year:split' (e.g. 2007:trainval), got {entry!r}")


def _check_voc(voc: VOCData) -> None:
    if not (isinstance(voc.root, str) and voc.root):
        raise ConfigError(f"data.voc.root must name the VOCdevkit folder, got {voc.root!r}")
    _check_image_sets("data.voc.train", voc.train, required=True)
    _check_image_sets("data.voc.val", voc.val, required=False)
    _check_image_sets("data.voc.test", voc.test, required=False)
    names = voc.class_names
    if names is not None and (not isinstance(names, (list, tuple)) or not names
                              or not all(isinstance(n, str) and n for n in names)
                              or len({n.lower() for n in names}) != len(names)):
        raise ConfigError(f"data.voc.class_names must be null or distinct non-empty names, got {names!r}")


def _check_coco(coco: COCOData) -> None:
    for split in ("train", "val", "test"):
        value = getattr(coco, split)
        if value is None and split != "train":
            continue
        if not isinstance(value, COCOSplit):
            raise ConfigError(f"data.coco.{split} must have images and annotations, got {value!r}")
        for name, what in (("images", "an image folder"), ("annotations", "an instances json file")):
            path = getattr(value, name)
            if not (isinstance(path, str) and path):
                raise ConfigError(f"data.coco.{split}.{name} must name {what}, got {path!r}")


def validate_data(data: DataConfig) -> DataConfig:
    """``data`` itself when every value can work; else a ConfigError naming the first bad
    field (``data.<field>``). Only the section of ``data.kind`` is checked; paths are checked
    by :func:`~ssd_ext.data.build.build_dataset`."""
    if not isinstance(data, DataConfig):
        raise ConfigError(f"data must be a DataConfig, got {type(data).__name__}")
    if data.kind not in DATA_KINDS:
        raise ConfigError(f"data.kind must be one of {', '.join(DATA_KINDS)}, got {data.kind!r}")
    _check_int("data.image_size", data.image_size, 1)
    if not isinstance(data.augment, Augmentation):
        raise ConfigError(f"data.augment must be an Augmentation, got {type(data.augment).__name__}")
    try:
        check_augmentation(data.augment, "data.augment")
    except (TypeError, ValueError) as error:
        raise ConfigError(str(error)) from None
    _check_triple("data.mean", data.mean, positive=False)
    _check_triple("data.std", data.std, positive=True)
    if data.num_workers is not None:
        _check_int("data.num_workers", data.num_workers, 0)
    if data.kind == "synthetic":
        _check_synthetic(data.synthetic)
    elif data.kind == "voc":
        _check_voc(data.voc)
    else:
        _check_coco(data.coco)
    return data


# -- from plain dicts ---------------------------------------------------------------------------

# The dataclass of each nested field.
_NESTED: dict[type, dict[str, type]] = {
    DataConfig: {"augment": Augmentation, "synthetic": SyntheticData, "voc": VOCData, "coco": COCOData},
    COCOData: {"train": COCOSplit, "val": COCOSplit, "test": COCOSplit},
}


def _from_dict(cls: type, values: Any, where: str) -> Any:
    """An instance of the dataclass ``cls`` from a mapping (nested dataclasses from nested
    mappings); ConfigError naming unknown keys and bad values."""
    if isinstance(values, cls):
        return values
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(values).__name__}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'{where}.{k}' for k in unknown)}; "
                          f"known: {', '.join(known)}")
    nested = _NESTED.get(cls, {})
    arguments = {name: value if name not in nested or value is None
                 else _from_dict(nested[name], value, f"{where}.{name}")
                 for name, value in values.items()}
    try:
        if cls is Augmentation:  # its own check, with this field's name in the message
            check_augmentation(SimpleNamespace(**{**dataclasses.asdict(Augmentation()), **arguments}), where)
        return cls(**arguments)
    except (TypeError, ValueError) as error:
        raise ConfigError(str(error) if cls is Augmentation else f"{where}: {error}") from None


def data_config_from_dict(values: Mapping[str, Any]) -> DataConfig:
    """A :class:`DataConfig` from ``dataclasses.asdict``'s output (or any part of it: missing
    keys keep their defaults); ConfigError for unknown keys or bad augmentation values."""
    return _from_dict(DataConfig, values, "data")
