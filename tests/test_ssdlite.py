"""SSDLite320-MobileNetV3-Large: the prior preset against torchvision's DefaultBoxGenerator, the
published structure and parameter count, shapes, taps and prior order, backward, bf16 autocast,
channels_last, a short training run, and the converter from/to torchvision's checkpoints (head
outputs and detections against torchvision's own model)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torchvision
from helpers import check_head_order, he_init, overfit_losses
from torch import nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

from ssd_ext.models import PRESETS, SSDLITE320, SSDLiteHead, build_model, list_models, ssd300
from ssd_ext.models.mobilenet_v3 import (
    ConvNormActivation,
    InvertedResidual,
    SqueezeExcitation,
    make_divisible,
    set_batchnorm_folding,
)
from ssd_ext.models.ssdlite import SSDLITE_MEAN, SSDLITE_STD
from ssd_ext.models.weights import (
    WeightLoadError,
    detect_format,
    from_torchvision_ssdlite,
    load_weights,
    to_torchvision_ssdlite,
)

NAME = "ssdlite320_mobilenet_v3_large"
# torchvision's ssdlite320_mobilenet_v3_large: 6 boxes per cell at 20, 10, 5, 3, 2, 1.
TORCHVISION_FMAPS = [[20, 20], [10, 10], [5, 5], [3, 3], [2, 2], [1, 1]]
# 128 and 64 px variants of the preset (maps 8, 4, 2, 1, 1, 1 and 4, 2, 1, 1, 1, 1) keep the
# CPU tests cheap.
SMALL_PRIORS = dataclasses.replace(SSDLITE320, feature_map_sizes=(8, 4, 2, 1, 1, 1), image_size=128)
TINY_PRIORS = dataclasses.replace(SSDLITE320, feature_map_sizes=(4, 2, 1, 1, 1, 1), image_size=64)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a small shared machine two threads spin-wait on each other and
    these convolution-heavy tests run several times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _torchvision_generator() -> DefaultBoxGenerator:
    """torchvision's own anchor generator of this model (ssdlite.py)."""
    return DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)


# ---------------------------------------------------------------------------- priors


def test_preset_is_torchvisions_default_boxes():
    assert PRESETS["ssdlite320"] is SSDLITE320
    assert SSDLITE320.num_priors == 3234 == 6 * (20 ** 2 + 10 ** 2 + 5 ** 2 + 3 ** 2 + 2 ** 2 + 1)
    assert SSDLITE320.boxes_per_location == [6] * 6 and SSDLITE320.clip == "wh"
    expected = _torchvision_generator()._grid_default_boxes(TORCHVISION_FMAPS, [320, 320])
    torch.testing.assert_close(SSDLITE320.build(), expected, rtol=1e-6, atol=1e-7)
    # The last level's 3:1 boxes are clamped to the image in w/h only (centres stay at 0.5).
    last = SSDLITE320.build()[-6:]
    assert last[:, 2:].max() == 1.0 and torch.all(last[:, :2] == 0.5)


# ---------------------------------------------------------------------------- structure


def test_registered_and_parameter_count():
    assert NAME in list_models()
    with torch.device("meta"):
        model = build_model(NAME, 91)
        counts = {classes: sum(p.numel() for p in build_model(NAME, classes).parameters())
                  for classes in (81, 21)}
    # torchvision's published figure for ssdlite320_mobilenet_v3_large (91 classes).
    assert sum(p.numel() for p in model.parameters()) == 3_440_060
    assert counts == {81: 3_301_460, 21: 2_469_860}
    # Only the six class layers change with the classes: (3x3 depthwise kept) 1x1 c -> 6 * C.
    channels = [672, 480, 512, 256, 256, 128]
    assert counts[21] == 3_440_060 - sum(6 * (91 - 21) * (c + 1) for c in channels)
    assert model.prior_config is SSDLITE320 and model.num_priors == 3234
    assert model.variances == (0.1, 0.2)  # torchvision's box coder weights (10, 10, 5, 5)
    assert model.cpu_inference_memory_format == torch.channels_last


def test_published_layout():
    with torch.device("meta"):
        model = build_model(NAME, 91)
    backbone = model.backbone
    assert backbone.out_channels == [672, 480, 512, 256, 256, 128]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 70 and all(m.eps == 0.001 and m.momentum == 0.03 for m in norms)
    # 15 bottlenecks, the C4 block split between the two stages (its layers, not the block).
    blocks = [m for m in backbone.trunk.modules() if isinstance(m, InvertedResidual)]
    assert len(blocks) == 14
    c4_rest = dict(backbone.trunk.stage_c5[0].named_children())  # torchvision's names: 1, 2, 3
    assert list(c4_rest) == ["1", "2", "3"] and isinstance(c4_rest["2"], SqueezeExcitation)
    # Reduced tail: C4 projects to 80 (not 160), the last two blocks expand to 480 (not 960).
    assert c4_rest["3"].out_channels == 80 and c4_rest["1"][0].stride == (2, 2)
    assert [b.block[0].out_channels for b in blocks[12:]] == [480, 480]
    assert backbone.trunk.stage_c5[-1].out_channels == 480
    assert sum(isinstance(m, SqueezeExcitation) for m in backbone.modules()) == 8
    assert [make_divisible(c // 4) for c in (72, 120, 480, 672)] == [24, 32, 120, 168]
    # Extras: 1x1 (out/2) -> 3x3 depthwise stride 2 -> 1x1 (out), ReLU6 after each.
    for extra, out in zip(backbone.extras, [512, 256, 256, 128], strict=True):
        convs = [extra[i][0] for i in range(3)]
        assert [c.out_channels for c in convs] == [out // 2, out // 2, out]
        assert convs[1].groups == out // 2 and convs[1].stride == (2, 2)
        assert all(isinstance(extra[i][2], nn.ReLU6) for i in range(3))
    # Heads: 3x3 depthwise + BN + ReLU6, then a 1x1 conv with bias.
    assert isinstance(model.head, SSDLiteHead)
    for loc, channels in zip(model.loc, backbone.out_channels, strict=True):
        assert loc[0][0].groups == channels and loc[0][0].kernel_size == (3, 3)
        assert isinstance(loc[0][2], nn.ReLU6) and loc[1].kernel_size == (1, 1) and loc[1].out_channels == 24


def test_initialisation_is_normal_003():
    torch.manual_seed(0)
    model = build_model(NAME, 91)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    weights = torch.cat([c.weight.detach().flatten() for c in convs])
    assert weights.mean().abs() < 1e-3 and weights.std().item() == pytest.approx(0.03, rel=0.01)
    assert all(c.bias is None or not c.bias.any() for c in convs)


# ---------------------------------------------------------------------------- shapes and order


def test_shapes_taps_and_prior_order():
    # The one 320 px forward of this file: batch 1, no grad.
    torch.manual_seed(0)
    model = build_model(NAME, 5).eval()
    trunk = model.backbone.trunk
    seen = {}
    handles = [trunk.stage_c4[-1].register_forward_hook(lambda m, i, o: seen.update(expansion=o)),
               trunk.stage_c5[0].register_forward_hook(lambda m, i, o: seen.update(depthwise_in=i[0]))]
    try:
        with torch.no_grad():
            features = model.backbone(torch.randn(1, 3, 320, 320))
            loc, conf = model.head_outputs(features)
    finally:
        for handle in handles:
            handle.remove()
    assert [tuple(f.shape[1:]) for f in features] == [
        (672, 20, 20), (480, 10, 10), (512, 5, 5), (256, 3, 3), (256, 2, 2), (128, 1, 1)]
    assert loc.shape == (1, 3234, 4) and conf.shape == (1, 3234, 5)
    # The first map is the C4 block's expansion (after its hard-swish), which the rest of the
    # block continues from.
    assert features[0] is seen["expansion"] and seen["depthwise_in"] is seen["expansion"]
    assert trunk.stage_c4[-1][0].out_channels == 672 and trunk.stage_c5[0][0][0].groups == 672
    check_head_order(model, features, loc, conf)


def test_forward_backward_channels_last_and_bf16():
    torch.manual_seed(0)
    model = build_model(NAME, 4, priors=SMALL_PRIORS)
    images = torch.randn(2, 3, 128, 128)
    loc, conf = model(images)
    assert loc.shape == (2, SMALL_PRIORS.num_priors, 4) and conf.shape == (2, SMALL_PRIORS.num_priors, 4)
    (loc.square().mean() + conf.logsumexp(-1).mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.backbone.trunk.stage_c4[0][0].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        loc, conf = model(images)
        model.to(memory_format=torch.channels_last)
        loc_cl, conf_cl = model(images.to(memory_format=torch.channels_last))
        torch.testing.assert_close(loc_cl, loc, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(conf_cl, conf, rtol=1e-4, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loc_bf, conf_bf = model(images)
    assert loc_bf.dtype == conf_bf.dtype == torch.bfloat16 and model.priors.dtype == torch.float32
    assert (conf_bf.float() - conf).abs().max() < 0.1 * conf.abs().max()
    with pytest.raises(ValueError, match="feature maps"):
        model(torch.randn(1, 3, 320, 320))  # the 128 px priors do not fit a 320 px input


def test_batchnorm_folding_in_eval():
    torch.manual_seed(0)
    model = build_model(NAME, 4, priors=TINY_PRIORS)
    with torch.no_grad():
        for norm in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0.0, 0.2)
            norm.running_mean.normal_(0.0, 0.2)
            norm.running_var.uniform_(0.5, 2.0)
    images = torch.randn(2, 3, 64, 64)
    calls = []
    norm = model.backbone.trunk.stage_c4[1].block[0][1]
    handle = norm.register_forward_hook(lambda *args: calls.append(1))
    try:
        with torch.no_grad():
            folded = model.eval()(images)
            assert calls == []  # folded: the BatchNorm module is not run
            set_batchnorm_folding(model, False)
            unfolded = model(images)
            assert calls == [1]
            set_batchnorm_folding(model, True)
            train_mode = model.train()(images)  # batch statistics: never folded
    finally:
        handle.remove()
    assert all(m.fold_in_eval for m in model.modules() if isinstance(m, ConvNormActivation))
    for got, expected in zip(folded, unfolded, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    assert calls == [1, 1] and not torch.allclose(train_mode[1], unfolded[1], atol=1e-3)


def test_trains_on_the_synthetic_set():
    from ssd_ext.data import SyntheticShapes, collate, eval_transform

    torch.manual_seed(0)
    dataset = SyntheticShapes(num_images=4, seed=5, transform=eval_transform(64, SSDLITE_MEAN, SSDLITE_STD))
    images, targets = collate([dataset[i] for i in range(len(dataset))])
    model = build_model(NAME, len(dataset.class_names), priors=TINY_PRIORS)
    losses = overfit_losses(model, images, targets, steps=8)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0], losses


# ---------------------------------------------------------------------------- torchvision checkpoints

NUM_CLASSES = 7


@pytest.fixture(scope="module")
def torchvision_pair(tmp_path_factory):
    """A torchvision ssdlite320_mobilenet_v3_large with random weights, running statistics and
    biases (He-normal convs, so that the activations neither vanish nor saturate into ties), and
    our model loaded from its saved state dict."""
    theirs = he_init(torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES), batchnorm=True).eval()
    path = tmp_path_factory.mktemp("weights") / "ssdlite320_random.pth"
    torch.save(theirs.state_dict(), path)
    ours = build_model(NAME, NUM_CLASSES).eval()
    assert load_weights(ours, path) == "torchvision_ssdlite"
    return theirs, set_batchnorm_folding(ours, False)  # torchvision's arithmetic, layer by layer


def test_converted_model_gives_torchvisions_heads_and_detections(torchvision_pair):
    theirs, ours = torchvision_pair
    pictures = [torch.rand(3, 320, 320, generator=torch.Generator().manual_seed(1))]
    mean, std = torch.tensor(SSDLITE_MEAN).view(3, 1, 1), torch.tensor(SSDLITE_STD).view(3, 1, 1)
    images = ((pictures[0] - mean) / std).unsqueeze(0)
    with torch.no_grad():
        batch, _ = theirs.transform(pictures)  # a 320x320 picture is not resized
        torch.testing.assert_close(batch.tensors, images)
        features = list(theirs.backbone(batch.tensors).values())
        heads = theirs.head(features)
        loc, conf = ours(images)
        expected = theirs(pictures)[0]
        # torchvision's thresholds: score 0.001, 300 candidates per class, NMS 0.55, 300 detections.
        got = ours.detect(images, score_threshold=0.001, iou_threshold=0.55, candidates_per_class=300,
                          max_detections=300)[0]
    assert (loc - heads["bbox_regression"]).abs().max() <= 1e-5
    assert (conf - heads["cls_logits"]).abs().max() <= 1e-5 and conf.std() > 1.0
    # With the BatchNorms folded (the default) the outputs move by float rounding only.
    with torch.no_grad():
        folded_loc, folded_conf = set_batchnorm_folding(ours, True)(images)
    set_batchnorm_folding(ours, False)
    for folded, reference in ((folded_loc, loc), (folded_conf, conf)):
        torch.testing.assert_close(folded, reference, rtol=1e-4, atol=1e-4 * reference.abs().max().item())
    anchors = theirs.anchor_generator._grid_default_boxes(TORCHVISION_FMAPS, [320, 320])
    torch.testing.assert_close(ours.priors, anchors, rtol=1e-6, atol=1e-7)
    assert got["boxes"].shape == expected["boxes"].shape == (300, 4)
    torch.testing.assert_close(got["scores"], expected["scores"], rtol=1e-5, atol=1e-6)
    assert torch.equal(got["labels"], expected["labels"])
    torch.testing.assert_close(got["boxes"], expected["boxes"], rtol=1e-4, atol=1e-3)


def test_key_map_round_trip(torchvision_pair):
    theirs, ours = torchvision_pair
    reference = theirs.state_dict()
    converted = to_torchvision_ssdlite(ours.state_dict())
    assert set(converted) == set(reference)
    assert all(torch.equal(converted[k], v) for k, v in reference.items())
    assert set(from_torchvision_ssdlite(reference)) == set(ours.state_dict())
    # A few named places, by hand from the two layouts.
    mapped = from_torchvision_ssdlite(reference)
    assert mapped["backbone.trunk.stage_c4.13.0.weight"] is reference["backbone.features.0.13.0.weight"]
    assert mapped["backbone.trunk.stage_c5.0.2.fc1.weight"] is reference["backbone.features.1.0.2.fc1.weight"]
    assert mapped["backbone.extras.3.2.1.running_var"] is reference["backbone.extra.3.2.1.running_var"]
    assert mapped["conf.5.1.bias"] is reference["head.classification_head.module_list.5.1.bias"]
    assert detect_format(reference) == "torchvision_ssdlite" and detect_format(ours.state_dict()) == "ssd_ext"
    fresh = build_model(NAME, NUM_CLASSES)
    assert load_weights(fresh, ours.state_dict()) == "ssd_ext"
    ours_state = ours.state_dict()
    assert all(torch.equal(value, ours_state[key]) for key, value in fresh.state_dict().items())


def test_converter_errors(torchvision_pair):
    theirs, _ = torchvision_pair
    with torch.device("meta"):  # the checks run before anything is copied
        coco = build_model(NAME, 91)
    with pytest.raises(WeightLoadError, match=r"shape mismatches \(12\).*conf\.0\.1\.weight"):
        load_weights(coco, theirs.state_dict())
    stray = dict(theirs.state_dict())
    stray["anchor_generator.scales"] = torch.zeros(7)
    with pytest.raises(WeightLoadError, match=r"unexpected keys \(1\): unmapped\.anchor_generator\.scales"):
        load_weights(build_model(NAME, NUM_CLASSES), stray, layout="torchvision_ssdlite")
    partial = {k: v for k, v in theirs.state_dict().items() if not k.startswith("backbone.extra.3.")}
    with pytest.raises(WeightLoadError, match=r"missing keys \(18\): backbone\.extras\.3\."):
        load_weights(build_model(NAME, NUM_CLASSES), partial, layout="torchvision_ssdlite")
    with pytest.raises(WeightLoadError, match="no torchvision ssdlite320_mobilenet_v3_large equivalent"):
        to_torchvision_ssdlite(ssd300(3).state_dict())
