"""Every named training preset builds, validates, survives the JSON round trip and the
command line, and names a model and a prior preset that exist."""

from __future__ import annotations

import pytest

from ssd_ext import models
from ssd_ext.engine.config import config_from_dict, config_to_dict, parse_train_args, validate
from ssd_ext.engine.presets import PRESETS, get_preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_parses_and_names_what_exists(name):
    config = validate(get_preset(name))
    assert config.preset == name
    assert config.model.name in models.list_models()
    assert config.model.priors is None or config.model.priors in models.PRESETS
    assert config_to_dict(config_from_dict(config_to_dict(config))) == config_to_dict(config)
    parsed, resume = parse_train_args(["--optim.lr", "0.5"], config)
    assert resume is None and parsed.optim.lr == 0.5
    parsed.optim.lr = config.optim.lr
    assert config_to_dict(parsed) == config_to_dict(config)


def test_rfb300_voc_follows_the_authors_recipe():
    config = get_preset("rfb300_voc")
    assert (config.model.name, config.model.priors, config.data.kind, config.data.image_size) == (
        "rfb300", "rfb300_voc", "voc", 300)
    assert config.data.voc.train == ["2007:trainval", "2012:trainval"]
    assert (config.optim.name, config.optim.lr, config.optim.momentum, config.optim.weight_decay) == (
        "sgd", 4e-3, 0.9, 5e-4)
    assert (config.train.batch_size, config.train.amp) == (32, "bf16")
    s = config.schedule
    assert (s.epochs, s.warmup_iters, s.warmup_factor, s.kind, s.gamma) == (
        300, 2585, 2.5e-4, "multistep", 0.1)
    assert s.milestones == pytest.approx([0.5, 2 / 3, 5 / 6])
    e = config.eval
    assert (e.every_epochs, e.score_threshold, e.iou_threshold, e.max_detections) == (10, 0.005, 0.45, 300)


def test_synthetic_rfb_small_is_the_default_with_the_rfb_model():
    small = config_to_dict(get_preset("synthetic_small"))
    rfb = config_to_dict(get_preset("synthetic_rfb_small"))
    assert rfb["model"]["name"] == "rfb_small" and rfb["model"]["priors"] is None
    for section in ("data", "optim", "schedule", "train", "checkpoint", "eval"):
        assert rfb[section] == small[section]


def test_ssdlite320_coco_follows_torchvisions_reference_recipe():
    config = get_preset("ssdlite320_coco")
    assert (config.model.name, config.model.priors, config.data.kind, config.data.image_size) == (
        "ssdlite320_mobilenet_v3_large", "ssdlite320", "coco", 320)
    assert config.data.mean == config.data.std == [0.5, 0.5, 0.5]
    augment = config.data.augment
    assert (augment.photometric, augment.expand, augment.crop, augment.flip) == (False, False, True, True)
    assert (config.optim.name, config.optim.lr, config.optim.momentum, config.optim.weight_decay) == (
        "sgd", 0.15, 0.9, 4e-5)
    schedule, evaluation = config.schedule, config.eval
    assert (schedule.epochs, schedule.warmup_iters, schedule.warmup_factor, schedule.kind,
            schedule.min_lr_factor) == (660, 1000, 1e-3, "cosine", 0.0)
    assert config.train.batch_size == 24
    assert (evaluation.score_threshold, evaluation.iou_threshold, evaluation.max_detections) == (
        0.001, 0.55, 300)
