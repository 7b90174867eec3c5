"""SSD models and prior presets: shapes, head order vs priors, presets vs hand values,
channels_last, autocast, detect."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import check_head_order, overfit_losses
from ssd_reference.priors import prior_boxes as reference_prior_boxes
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

import ssd_ext
from ssd_ext.models import (
    SSD,
    SSD300_COCO,
    SSD300_TORCHVISION,
    SSD300_VOC,
    SSD512_COCO,
    SSD512_VOC,
    SSD_SMALL_160,
    L2Norm,
    PriorConfig,
    SmallBackbone,
    build_model,
    config_from_scales,
    get_preset,
    paper_sizes,
    ssd300,
    ssd_small,
)

# ---------------------------------------------------------------------------- presets


def test_ssd300_voc_and_coco_match_ssd_pytorch_configs():
    assert SSD300_VOC.min_sizes == (30, 60, 111, 162, 213, 264)
    assert SSD300_VOC.max_sizes == (60, 111, 162, 213, 264, 315)
    assert SSD300_COCO.min_sizes == (21, 45, 99, 153, 207, 261)
    assert SSD300_COCO.max_sizes == (45, 99, 153, 207, 261, 315)
    for preset in (SSD300_VOC, SSD300_COCO):
        assert preset.feature_map_sizes == (38, 19, 10, 5, 3, 1)
        assert preset.steps == (8, 16, 32, 64, 100, 300)
        assert preset.boxes_per_location == [4, 6, 6, 6, 4, 4]
        assert preset.num_priors == 8732
        assert preset.build().shape == (8732, 4)


def test_ssd512_presets_match_caffe_rule():
    expected_voc_min = (35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8)
    expected_coco_min = (20.48, 51.2, 133.12, 215.04, 296.96, 378.88, 460.8)
    assert SSD512_VOC.min_sizes == pytest.approx(expected_voc_min)
    assert SSD512_VOC.max_sizes == pytest.approx(expected_voc_min[1:] + (537.6,))
    assert SSD512_COCO.min_sizes == pytest.approx(expected_coco_min)
    assert SSD512_COCO.max_sizes == pytest.approx(expected_coco_min[1:] + (542.72,))
    for preset in (SSD512_VOC, SSD512_COCO):
        assert preset.feature_map_sizes == (64, 32, 16, 8, 4, 2, 1)
        assert preset.boxes_per_location == [4, 6, 6, 6, 6, 4, 4]
        assert preset.num_priors == 24564
        assert preset.build().shape == (24564, 4)


def test_first_cell_of_ssd300_voc_by_hand():
    priors = SSD300_VOC.build(dtype=torch.float64)
    c = 4 / 300  # (0 + 0.5) * 8 / 300
    s = 30 / 300
    big = math.sqrt(30 * 60) / 300
    r = math.sqrt(2)
    expected = torch.tensor([[c, c, s, s], [c, c, big, big], [c, c, s * r, s / r], [c, c, s / r, s * r]],
                            dtype=torch.float64)
    torch.testing.assert_close(priors[:4], expected)
    # The second cell moves one step right (x), the 39th one step down (y).
    assert priors[4, 0].item() == pytest.approx(12 / 300) and priors[4, 1].item() == pytest.approx(c)
    assert priors[38 * 4, 1].item() == pytest.approx(12 / 300)
    assert priors[38 * 4, 0].item() == pytest.approx(c)
    # The last prior: the 1x1 level's tall ratio-2 box, clipped to 1.
    last_side = 264 / 300
    assert priors[-1].tolist() == pytest.approx([0.5, 0.5, last_side / r, min(1.0, last_side * r)])


def test_presets_equal_the_reference_generator():
    for preset in (SSD300_VOC, SSD512_COCO, SSD_SMALL_160):
        expected = reference_prior_boxes(
            preset.feature_map_sizes, preset.image_size, preset.min_sizes, preset.max_sizes,
            preset.aspect_ratios, preset.steps, preset.offset, preset.clip)
        torch.testing.assert_close(preset.build(), expected, rtol=1e-6, atol=1e-7)


def test_torchvision_preset_reproduces_default_box_generator():
    generator = DefaultBoxGenerator(
        [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
        scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],
        steps=[8, 16, 32, 64, 100, 300],
    )
    grids = [[s, s] for s in SSD300_TORCHVISION.feature_map_sizes]
    # torchvision builds its (w, h) pairs in float32, so compare at float32 precision.
    theirs = generator._grid_default_boxes(grids, [300, 300], dtype=torch.float64)
    ours = SSD300_TORCHVISION.build(dtype=torch.float64)
    assert ours.shape == theirs.shape == (8732, 4)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    # torchvision leaves centres unclipped (the 10x10 level at step 32 reaches x = 1.0133) but
    # clamps w and h; full clipping would change those priors, hence clip="wh".
    assert theirs[:, :2].max().item() > 1.0
    assert theirs[:, 2:].max().item() == 1.0


def test_paper_size_rule_and_custom_configs():
    mins, maxs = paper_sizes(300, 6, 0.2, 0.9)
    assert mins == pytest.approx([60, 102, 144, 186, 228, 270])
    assert maxs == pytest.approx([102, 144, 186, 228, 270, 312])
    custom = config_from_scales((38, 19, 10, 5, 3, 1), 300, [[2]] * 6, s_min=0.2, s_max=0.9,
                                first_level_scale=0.1)
    assert custom.min_sizes == pytest.approx((30, 60, 112.5, 165, 217.5, 270))
    assert custom.max_sizes == pytest.approx((60, 112.5, 165, 217.5, 270, 322.5))
    assert custom.num_priors == 4 * (38 * 38 + 19 * 19 + 10 * 10 + 5 * 5 + 3 * 3 + 1)
    caffe = config_from_scales((38, 19, 10, 5, 3, 1), 300, SSD300_VOC.aspect_ratios, 0.2, 0.9,
                               SSD300_VOC.steps, first_level_scale=0.1, rounding="caffe")
    assert caffe == SSD300_VOC
    with pytest.raises(ValueError, match="s_min"):
        paper_sizes(300, 6, 0.9, 0.2)


def test_prior_config_validation_and_lookup():
    with pytest.raises(ValueError, match="min_sizes has 1 entries"):
        PriorConfig((38, 19), 300, (30,), (60, 111), ((2,), (2,)))
    with pytest.raises(ValueError, match="clip"):
        PriorConfig((38,), 300, (30,), (60,), ((2,),), clip="xy")
    # 1 == True, but an int would silently turn clipping off in build(): rejected.
    with pytest.raises(ValueError, match="clip"):
        PriorConfig((38,), 300, (30,), (60,), ((2,),), clip=1)
    with pytest.raises(ValueError, match="unknown prior preset"):
        get_preset("ssd1000")
    assert get_preset("SSD300_VOC") is SSD300_VOC
    no_max = PriorConfig((2,), 10, (3,), None, ((2, 3),))
    assert no_max.boxes_per_location == [5] and no_max.build().shape == (20, 4)
    # Hashable and equal by value (lists are normalised to tuples).
    assert PriorConfig([38], 300, [30], [60], [[2]]) == PriorConfig((38,), 300, (30,), (60,), ((2,),))


# ---------------------------------------------------------------------------- head order vs priors


@pytest.fixture(scope="module")
def ssd300_run():
    torch.manual_seed(0)
    model = ssd300(num_classes=7).eval()
    images = torch.randn(1, 3, 300, 300)
    with torch.no_grad():
        features = model.backbone(images)
        loc, conf = model.head_outputs(features)
    return model, images, features, loc, conf


def test_ssd300_shapes_feature_maps_and_head_order(ssd300_run):
    model, _, features, loc, conf = ssd300_run
    assert loc.shape == (1, 8732, 4) and conf.shape == (1, 8732, 7)
    assert model.priors.shape == (8732, 4)
    assert [tuple(f.shape[-2:]) for f in features] == SSD300_VOC.feature_map_hw
    assert [f.shape[1] for f in features] == [512, 1024, 512, 256, 256, 256]
    check_head_order(model, features, loc, conf)


def test_ssd300_channels_last_matches(ssd300_run):
    model, images, _, loc, conf = ssd300_run
    try:
        model.to(memory_format=torch.channels_last)
        assert model.backbone.vgg[0].weight.is_contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            loc_cl, conf_cl = model(images.to(memory_format=torch.channels_last))
    finally:
        model.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(loc_cl, loc, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(conf_cl, conf, rtol=1e-4, atol=1e-4)


def test_ssd512_shapes_on_meta_device():
    # Shapes only: the meta device propagates them without the ~90 GFLOP forward.
    model = build_model("SSD512", 21)
    assert model.prior_config is SSD512_VOC
    assert model.num_priors == 24564
    assert model.prior_config.boxes_per_location == [4, 6, 6, 6, 6, 4, 4]
    meta = model.to("meta")
    images = torch.empty(2, 3, 512, 512, device="meta")
    features = meta.backbone(images)
    assert [tuple(f.shape[-2:]) for f in features] == SSD512_VOC.feature_map_hw
    loc, conf = meta(images)
    assert loc.shape == (2, 24564, 4) and conf.shape == (2, 24564, 21)


def test_wrong_input_size_is_a_clear_error():
    model = ssd_small(num_classes=3).eval()
    with pytest.raises(ValueError, match="priors expect"):
        model(torch.randn(1, 3, 192, 192))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.randn(3, 160, 160))
    with pytest.raises(ValueError, match="num_classes"):
        ssd_small(num_classes=1)


# ---------------------------------------------------------------------------- small model, factory


def test_small_model_shapes_order_and_backward():
    torch.manual_seed(0)
    model = ssd_small(num_classes=4)
    assert isinstance(model.backbone, SmallBackbone)
    images = torch.randn(8, 3, 160, 160)
    loc, conf = model(images)
    assert loc.shape == (8, 2408, 4) and conf.shape == (8, 2408, 4)
    (loc.square().mean() + conf.logsumexp(-1).mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        features = model.backbone(images[:1])
        loc1, conf1 = model.head_outputs(features)
    assert [tuple(f.shape[-2:]) for f in features] == SSD_SMALL_160.feature_map_hw
    check_head_order(model, features, loc1, conf1)


def test_small_fitted_prior_preset_covers_the_synthetic_shapes():
    # ssd_small_160_fit: sizes 0.2-0.8 of 160 px, one 1.6 ratio pair per level, 4 boxes per cell.
    config = get_preset("ssd_small_160_fit")
    assert config.min_sizes == pytest.approx((32, 56, 80, 104, 128))
    assert config.max_sizes == pytest.approx((56, 80, 104, 128, 152))
    assert config.boxes_per_location == [4] * 5
    assert config.num_priors == 4 * (20 * 20 + 10 * 10 + 5 * 5 + 3 * 3 + 1) == 2140
    loc, conf = ssd_small(num_classes=6, priors="ssd_small_160_fit", width=8)(torch.randn(2, 3, 160, 160))
    assert loc.shape == (2, 2140, 4) and conf.shape == (2, 2140, 6)


def test_non_square_input_with_matching_priors():
    config = PriorConfig(((20, 28), (10, 14), (5, 7), (3, 4), (1, 2)), (160, 224), (16, 48, 80, 112, 144),
                         (48, 80, 112, 144, 176), ((2,), (2, 3), (2, 3), (2, 3), (2,)))
    model = ssd_small(num_classes=3, priors=config).eval()
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 160, 224))
        loc, conf = model.head_outputs(features)
    assert loc.shape[1] == config.num_priors
    check_head_order(model, features, loc, conf)


def test_small_model_channels_last_and_bf16_autocast():
    torch.manual_seed(0)
    model = ssd_small(num_classes=5).eval()
    images = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        loc, conf = model(images)
        model_cl = model.to(memory_format=torch.channels_last)
        loc_cl, conf_cl = model_cl(images.to(memory_format=torch.channels_last))
        torch.testing.assert_close(loc_cl, loc, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(conf_cl, conf, rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loc_bf, conf_bf = model_cl(images.to(memory_format=torch.channels_last))
    assert loc_bf.dtype == torch.bfloat16 and conf_bf.dtype == torch.bfloat16
    assert model.priors.dtype == torch.float32
    # bf16 keeps ~3 significant digits; errors compound over the layers.
    scale = conf.abs().max()
    assert (conf_bf.float() - conf).abs().max() < 0.1 * scale
    assert (loc_bf.float() - loc).abs().max() < 0.1 * loc.abs().max()


def test_autocast_training_step_small():
    # Batch size 1 on purpose: the 1x1 level has no BatchNorm, so training at batch 1 works.
    torch.manual_seed(0)
    model = ssd_small(num_classes=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loc, conf = model(torch.randn(1, 3, 160, 160))
        loss = loc.float().square().mean() + conf.float().logsumexp(-1).mean()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)


def test_l2norm_scale_init_and_autocast_precision():
    norm = L2Norm(8)
    assert torch.equal(norm.weight.detach(), torch.full((8,), 20.0))
    x = torch.randn(2, 8, 3, 3) * 100
    expected = 20 * x / x.norm(dim=1, keepdim=True)
    torch.testing.assert_close(norm(x), expected)
    out = norm(x.bfloat16())
    assert out.dtype == torch.bfloat16
    x16 = x.bfloat16().float()
    torch.testing.assert_close(out.float(), 20 * x16 / x16.norm(dim=1, keepdim=True), rtol=1e-2, atol=1e-2)
    assert torch.equal(norm(torch.zeros(1, 8, 2, 2)), torch.zeros(1, 8, 2, 2))


def test_half_cast_keeps_float32_priors():
    model = ssd_small(num_classes=3).to(torch.bfloat16)
    assert model.priors.dtype == torch.float32
    assert next(model.parameters()).dtype == torch.bfloat16
    assert "priors" not in model.state_dict()


def test_build_model_factory():
    assert build_model("ssd_small", 5).num_classes == 5
    model = build_model("ssd300", 81, priors="ssd300_coco")
    assert model.prior_config is SSD300_COCO and model.conf[0].out_channels == 4 * 81
    with pytest.raises(ValueError, match="unknown model"):
        build_model("yolo", 21)
    with pytest.raises(TypeError, match="PriorConfig"):
        build_model("ssd_small", 3, priors=42)
    with pytest.raises(ValueError, match="feature maps but the prior config"):
        SSD(SmallBackbone(), [64, 128], SSD_SMALL_160, 3)


# ---------------------------------------------------------------------------- detect


def test_detect_scales_boxes_to_input_pixels_and_keeps_mode():
    torch.manual_seed(0)
    config = PriorConfig(((20, 28), (10, 14), (5, 7), (3, 4), (1, 2)), (160, 224), (16, 48, 80, 112, 144),
                         (48, 80, 112, 144, 176), ((2,), (2, 3), (2, 3), (2, 3), (2,)))
    model = ssd_small(num_classes=4, priors=config)
    model.train()
    images = torch.randn(2, 3, 160, 224)
    results = model.detect(images, score_threshold=0.2, max_detections=50)
    assert model.training
    model.eval()
    with torch.no_grad():
        loc, conf = model(images)
    expected = ssd_ext.ops.detect(loc, conf, model.priors, score_threshold=0.2, iou_threshold=0.45,
                                  candidates_per_class=400, max_detections=50)
    scale = torch.tensor([224.0, 160.0, 224.0, 160.0])
    assert len(results) == 2
    for ours, ref in zip(results, expected, strict=True):
        assert 0 < ours["boxes"].shape[0] <= 50
        torch.testing.assert_close(ours["boxes"], ref["boxes"] * scale)
        torch.testing.assert_close(ours["scores"], ref["scores"])
        assert torch.equal(ours["labels"], ref["labels"]) and ours["labels"].dtype == torch.int64
        assert ours["boxes"][:, 0::2].max() <= 224 and ours["boxes"][:, 1::2].max() <= 160
        assert (ours["labels"] >= 1).all()


def test_small_model_fits_a_synthetic_batch_with_multibox_loss():
    # Integration with the data pipeline and the loss: a few steps on one fixed batch of the
    # synthetic shapes set must cut the MultiBox loss well down (the model can learn it).
    from ssd_ext.data import SyntheticShapes, collate, eval_transform

    torch.manual_seed(0)
    dataset = SyntheticShapes(num_images=8, seed=5, transform=eval_transform(160))
    images, targets = collate([dataset[i] for i in range(len(dataset))])
    model = ssd_small(num_classes=len(dataset.class_names))
    losses = overfit_losses(model, images, targets, steps=12)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.3 * losses[0], losses


# ---------------------------------------------------------------------------- bad input, named


@pytest.mark.parametrize("name,error,pattern", [
    (None, TypeError, "name must be a str.*got None of type NoneType"),
    (123, TypeError, "name must be a str.*got 123 of type int"),
    ("yolo", ValueError, "unknown model 'yolo'; known"),
])
def test_build_model_bad_names(name, error, pattern):
    with pytest.raises(error, match=pattern):
        build_model(name, 21)


@pytest.mark.parametrize("num_classes,error,pattern", [
    (2.5, TypeError, "num_classes must be an int >= 2.*got 2.5 of type float"),
    (21.0, TypeError, r"got 21.0 of type float \(pass 21\)"),
    ("21", TypeError, "num_classes must be an int.*got '21' of type str"),
    (None, TypeError, "num_classes must be an int.*got None"),
    (float("nan"), TypeError, "num_classes must be an int.*got nan"),
    (True, TypeError, "num_classes must be an int.*of type bool"),
    (1, ValueError, "num_classes counts the background and must be >= 2, got 1"),
])
def test_build_model_bad_num_classes(num_classes, error, pattern):
    with pytest.raises(error, match=pattern):
        build_model("ssd_small", num_classes)


@pytest.mark.parametrize("name", ["ssd_small", "rfb_small"])
@pytest.mark.parametrize("width,error", [(0, ValueError), (-8, ValueError), (2.5, TypeError),
                                         ("32", TypeError)])
def test_bad_width_is_named(name, width, error):
    with pytest.raises(error, match=r"width must be an int >= \d+, got"):
        build_model(name, 3, width=width)


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return ssd_small(num_classes=3).eval()


@pytest.mark.parametrize("images,error,pattern", [
    (torch.zeros(1, 3, 160, 160, dtype=torch.float64), TypeError,
     r"images have dtype torch.float64 but the model's parameters are torch.float32"),
    (torch.zeros(1, 3, 160, 160, dtype=torch.float16), TypeError,
     r"images have dtype torch.float16 but the model's parameters are torch.float32"),
    (torch.zeros(1, 3, 160, 160, dtype=torch.uint8), TypeError, r"floating-point tensor .* got torch.uint8"),
    (torch.zeros(1, 3, 160, 160, dtype=torch.int64), TypeError, r"floating-point tensor .* got torch.int64"),
    (torch.zeros(1, 3, 160, 160, dtype=torch.bool), TypeError, r"floating-point tensor .* got torch.bool"),
    (torch.zeros(1, 3, 160, 160, dtype=torch.complex64), TypeError, r"floating-point .* got torch.complex64"),
    ([[0.0]], TypeError, r"images must be a torch.Tensor \[B, 3, H, W\], got builtins.list"),
    (np.zeros((1, 3, 160, 160), dtype=np.float32), TypeError, r"torch.Tensor .* got numpy.ndarray"),
    (torch.zeros(1, 3, 8, 8), ValueError,
     r"images of size \(8, 8\) \(h, w\) do not fit .* made for \(160, 160\)"),
    (torch.zeros(1, 4, 160, 160), ValueError, r"images must be \[B, 3, H, W\], got shape \(1, 4, 160, 160\)"),
])
def test_bad_images_are_named_in_forward_and_detect(small_model, images, error, pattern):
    with pytest.raises(error, match=pattern):
        small_model(images)
    with pytest.raises(error, match=pattern):
        small_model.detect(images)


@pytest.mark.parametrize("variances", ["ab", (0.1,), (0.1, -0.2), (0.1, float("nan")), None])
def test_bad_variances_are_named(variances):
    with pytest.raises(ValueError, match="variances must be two positive finite numbers"):
        SSD(SmallBackbone(8), SmallBackbone(8).out_channels, SSD_SMALL_160, 3, variances=variances)


def test_too_small_images_for_vgg_are_named():
    with torch.device("meta"):
        model = ssd300(3)
    with pytest.raises(ValueError, match=r"images of size \(8, 8\) \(h, w\) do not fit"):
        model(torch.zeros(1, 3, 8, 8, device="meta"))


def test_float64_model_runs_float64_and_autocast_accepts_float32(small_model):
    images = torch.randn(1, 3, 160, 160)
    model64 = ssd_small(num_classes=3).double().eval()
    loc, conf = model64(images.double())
    assert loc.dtype == conf.dtype == torch.float64
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        loc_bf, _ = small_model(images)
    assert loc_bf.dtype == torch.bfloat16


def test_empty_batch_gives_empty_outputs():
    for model in (ssd_small(num_classes=3), build_model("rfb_small", 3, width=8)):
        for training in (True, False):
            model.train(training)
            loc, conf = model(torch.zeros(0, 3, 160, 160))
            assert loc.shape == (0, model.num_priors, 4) and conf.shape == (0, model.num_priors, 3)
        assert model.detect(torch.zeros(0, 3, 160, 160)) == []


def test_l2norm_computes_float64_in_float64():
    torch.manual_seed(0)
    norm = L2Norm(512).double()
    x = torch.randn(2, 512, 3, 3, dtype=torch.float64) * 10
    expected = 20 * x / x.norm(dim=1, keepdim=True)
    out = norm(x)
    assert out.dtype == torch.float64
    # float32 math would be off by ~1e-6 here.
    torch.testing.assert_close(out, expected, rtol=1e-13, atol=1e-13)


def test_prior_config_accepts_numpy_numbers_and_names_bad_ones():
    plain = PriorConfig((38, 19), 300, (30, 60), (60, 111), ((2,), (2, 3)), steps=(8, 16))
    numpy_config = PriorConfig(np.array([38, 19]), np.int64(300), np.array([30.0, 60.0]),
                               (np.float64(60), np.int32(111)), ((np.int64(2),), np.array([2, 3])),
                               steps=(np.int64(8), np.int16(16)))
    assert numpy_config == plain
    assert type(numpy_config.feature_map_sizes[0]) is int and type(numpy_config.image_size) is int
    torch.testing.assert_close(numpy_config.build(), plain.build())
    pairs = PriorConfig([(np.int64(20), 28)], (np.int64(160), np.int64(224)), (16,), None, ((2,),))
    assert pairs.feature_map_sizes == ((20, 28),) and pairs.image_size == (160, 224)
    with pytest.raises(TypeError, match=r"PriorConfig.feature_map_sizes\[1\] must be an int .* got 19.5"):
        PriorConfig((38, 19.5), 300, (30, 60), None, ((2,), (2,)))
    with pytest.raises(ValueError, match=r"PriorConfig.image_size must be >= 1, got 0"):
        PriorConfig((38,), 0, (30,), None, ((2,),))
    with pytest.raises(TypeError, match=r"PriorConfig.min_sizes\[0\] must be a number, got '30'"):
        PriorConfig((38,), 300, ("30",), None, ((2,),))
    with pytest.raises(TypeError, match="prior preset name must be a str"):
        get_preset(3)
