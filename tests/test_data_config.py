"""Datasets from a config (ssd_ext.data.config, ssd_ext.data.build): defaults, round trips,
validation naming the field, and build_dataset for every kind and split."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from ssd_ext.data import (
    SHAPE_CLASSES,
    Augmentation,
    COCODetection,
    COCOSplit,
    DataConfig,
    SyntheticShapes,
    VOCDetection,
    build_dataset,
    data_config_from_dict,
    validate_data,
    write_coco,
    write_voc,
)
from ssd_ext.data import (
    transforms as T,
)
from ssd_ext.errors import ConfigError


def test_defaults():
    data = DataConfig()
    assert (data.kind, data.image_size, data.num_workers) == ("synthetic", 160, None)
    assert data.augment == Augmentation()
    assert data.mean == [0.485, 0.456, 0.406] and data.std == [0.229, 0.224, 0.225]
    s = data.synthetic
    assert (s.train_images, s.val_images, s.test_images, s.train_seed, s.val_seed, s.test_seed) == (
        2000, 200, 200, 0, 1, 2)
    assert (s.source_size, s.max_objects, s.cache) == (128, 4, True)
    assert data.voc.train == ["2007:trainval", "2012:trainval"] and data.voc.val == []
    assert data.voc.test == ["2007:test"] and data.voc.class_names is None
    assert data.coco.train == COCOSplit("data/coco/train2017",
                                        "data/coco/annotations/instances_train2017.json")
    assert data.coco.val is None and data.coco.test.images == "data/coco/val2017"
    assert DataConfig().voc.train is not data.voc.train  # no shared mutable defaults
    assert validate_data(data) is data


def test_round_trip_through_json():
    data = DataConfig(kind="coco", image_size=300, augment=Augmentation(crop=False, expand_max_ratio=2.0))
    data.coco.val = COCOSplit("v", "v.json")
    data.voc.class_names = ["cat", "dog"]
    text = json.dumps(dataclasses.asdict(data))
    assert data_config_from_dict(json.loads(text)) == data
    assert data_config_from_dict({"synthetic": {"train_images": 8}}).synthetic.train_images == 8
    with pytest.raises(ConfigError, match=r"data\.synthetic\.train_imgs"):
        data_config_from_dict({"synthetic": {"train_imgs": 8}})
    with pytest.raises(ConfigError, match=r"data\.augment\.expand_p must be a probability"):
        data_config_from_dict({"augment": {"expand_p": 3}})


@pytest.mark.parametrize(("change", "field"), [
    (lambda d: setattr(d, "kind", "imagenet"), "data.kind"),
    (lambda d: setattr(d, "image_size", 0), "data.image_size"),
    (lambda d: setattr(d, "image_size", 160.5), "data.image_size"),
    (lambda d: setattr(d.augment, "crop", "no"), "data.augment.crop"),
    (lambda d: setattr(d.augment, "expand_max_ratio", 0.9), "data.augment.expand_max_ratio"),
    (lambda d: setattr(d, "mean", [0.5, 0.5]), "data.mean"),
    (lambda d: setattr(d, "std", [0.2, 0.0, 0.2]), "data.std"),
    (lambda d: setattr(d, "num_workers", -1), "data.num_workers"),
    (lambda d: setattr(d.synthetic, "train_images", 0), "data.synthetic.train_images"),
    (lambda d: setattr(d.synthetic, "source_size", 8), "data.synthetic.source_size"),
    (lambda d: setattr(d.synthetic, "cache", "yes"), "data.synthetic.cache"),
])
def test_validate_data_names_the_field(change, field):
    data = DataConfig()
    change(data)
    with pytest.raises(ConfigError, match=rf"^{field} "):
        validate_data(data)


@pytest.mark.parametrize(("change", "field"), [
    (lambda d: setattr(d.voc, "train", []), "data.voc.train"),
    (lambda d: setattr(d.voc, "test", ["2007"]), "data.voc.test"),
    (lambda d: setattr(d.voc, "class_names", ["cat", "Cat"]), "data.voc.class_names"),
    (lambda d: setattr(d.voc, "root", ""), "data.voc.root"),
])
def test_validate_voc_names_the_field(change, field):
    data = DataConfig(kind="voc")
    change(data)
    with pytest.raises(ConfigError, match=rf"^{field} "):
        validate_data(data)


def test_validate_coco_names_the_field():
    data = DataConfig(kind="coco")
    data.coco.val = COCOSplit(images="DIR")  # as --data.coco.val.images DIR alone makes it
    with pytest.raises(ConfigError, match=r"^data\.coco\.val\.annotations must name"):
        validate_data(data)


def synthetic_config() -> DataConfig:
    data = DataConfig(image_size=32)
    data.synthetic = dataclasses.replace(data.synthetic, train_images=6, val_images=3, test_images=4,
                                         source_size=40, max_objects=2)
    return data


def test_build_synthetic_splits():
    data = synthetic_config()
    train, val, test = (build_dataset(data, split) for split in ("train", "val", "test"))
    assert [len(d) for d in (train, val, test)] == [6, 3, 4]
    assert [d.seed for d in (train, val, test)] == [0, 1, 2]
    for dataset in (train, val, test):
        assert isinstance(dataset, SyntheticShapes) and dataset.cache and dataset.image_size == (40, 40)
    assert [type(t) for t in train.transform.transforms][1:5] == [
        T.PhotometricDistort, T.Expand, T.MinIoURandomCrop, T.RandomHorizontalFlip]
    assert [type(t) for t in test.transform.transforms] == [T.ToLazyImage, T.Resize, T.Normalize, T.ToTensor]
    assert train[0][0].shape == (3, 32, 32)
    raw = build_dataset(data, "test", transform=False)
    assert raw.transform is None and raw[0][0].size == (40, 40)
    data.synthetic.val_images = 0
    assert build_dataset(data, "val") is None
    data.augment = Augmentation(photometric=False, crop=False)
    assert [type(t) for t in build_dataset(data, "train").transform.transforms][1:3] == [
        T.Expand, T.RandomHorizontalFlip]
    with pytest.raises(ValueError, match="split must be one of train, val, test"):
        build_dataset(data, "validation")


def write_voc_root(tmp_path):
    root = tmp_path / "VOCdevkit"
    write_voc(SyntheticShapes(num_images=5, image_size=40, seed=3), root, year="2007", split="trainval",
              test_fraction=0.4)
    data = DataConfig(kind="voc", image_size=32)
    data.voc = dataclasses.replace(data.voc, root=str(root), train=["2007:trainval"], val=[],
                                   test=["2007:test"], class_names=list(SHAPE_CLASSES))
    return data


def test_build_voc(tmp_path):
    data = write_voc_root(tmp_path)
    train, test = build_dataset(data, "train"), build_dataset(data, "test")
    assert isinstance(train, VOCDetection) and (len(train), len(test)) == (3, 2)
    assert train.drop_empty and not train.keep_difficult and test.keep_difficult and not test.drop_empty
    assert train.class_names[1:] == SHAPE_CLASSES
    assert build_dataset(data, "val") is None
    data.voc.val = ["2007:test"]
    assert len(build_dataset(data, "val")) == 2


@pytest.mark.parametrize(("change", "message"), [
    (lambda v, root: setattr(v, "root", str(root / "missing")),
     r"data\.voc\.root '.*missing' is not a folder"),
    (lambda v, root: setattr(v, "train", ["2012:trainval"]), r"data\.voc\.train: '.*VOC2012' does not exist"),
    (lambda v, root: setattr(v, "test", ["2007:val"]), r"data\.voc\.test: split file '.*val\.txt' does not"),
])
def test_build_voc_names_the_missing_path(tmp_path, change, message):
    data = write_voc_root(tmp_path)
    change(data.voc, tmp_path)
    split = "test" if "test" in message else "train"
    with pytest.raises(ConfigError, match=message):
        build_dataset(data, split)


def write_coco_config(tmp_path) -> DataConfig:
    shapes = SyntheticShapes(num_images=4, image_size=40, seed=3)
    write_coco(shapes, tmp_path / "images", tmp_path / "shapes.json")
    data = DataConfig(kind="coco", image_size=32)
    split = COCOSplit(str(tmp_path / "images"), str(tmp_path / "shapes.json"))
    data.coco = dataclasses.replace(data.coco, train=split, val=None, test=dataclasses.replace(split))
    return data


def test_build_coco(tmp_path):
    pytest.importorskip("pycocotools")  # COCODetection needs it
    data = write_coco_config(tmp_path)
    train, test = build_dataset(data, "train"), build_dataset(data, "test")
    assert isinstance(train, COCODetection) and train.drop_empty and not test.drop_empty
    assert len(train) == len(test) == 4
    assert build_dataset(data, "val") is None
    image, target = test[0]
    assert image.shape == (3, 32, 32) and target["boxes"].dtype == torch.float32


def test_build_coco_names_the_missing_path(tmp_path):
    pytest.importorskip("pycocotools")  # COCODetection needs it
    data = write_coco_config(tmp_path)
    data.coco.test = COCOSplit(str(tmp_path / "nowhere"), data.coco.test.annotations)
    with pytest.raises(ConfigError, match=r"^data\.coco\.test\.images: folder '.*nowhere' does not exist"):
        build_dataset(data, "test")
    data.coco.test = COCOSplit(data.coco.train.images, str(tmp_path / "none.json"))
    with pytest.raises(ConfigError, match=r"^data\.coco\.test\.annotations: file '.*none\.json' does not"):
        build_dataset(data, "test")
    (tmp_path / "broken.json").write_text("{not json")
    data.coco.test = COCOSplit(data.coco.train.images, str(tmp_path / "broken.json"))
    with pytest.raises(ConfigError, match=r"^data\.coco\.test\.annotations: cannot read COCO annotation"):
        build_dataset(data, "test")


def test_nested_command_line_arguments():
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--data", type=DataConfig, default=DataConfig())
    arguments = ["--data.synthetic.train_images", "64", "--data.augment.crop", "false",
                 "--data.coco.val.images", "DIR"]
    parsed = parser.instantiate(parser.parse_args(arguments))
    assert parsed.data.synthetic.train_images == 64 and parsed.data.augment.crop is False
    assert parsed.data.augment == Augmentation(crop=False) and parsed.data.coco.val == COCOSplit("DIR", "")
