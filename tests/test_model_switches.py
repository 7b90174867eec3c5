"""The model switches of the SSD paper's analysis (aspect_ratios, levels, atrous): what each does to
the priors, the heads and the backbone, and the errors of switches that do not fit a model."""

from __future__ import annotations

import itertools

import pytest
import torch
from helpers import check_head_order
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ssd_ext.models import SSD300_VOC, SSD_SMALL_160, PriorConfig, build_model, ssd300, ssd_small
from ssd_ext.models import weights as W
from ssd_ext.models.priors import PriorScale
from ssd_ext.models.switches import derive_prior_config, prior_count_text
from ssd_ext.models.vgg import CONV5_3_RELU_INDEX, VGG16Backbone


def _meta(name: str, **kwargs) -> nn.Module:
    """The model with its parameters on the meta device (no memory, no init cost); the priors
    are real tensors (built on the CPU by the op)."""
    with torch.device("meta"):
        return build_model(name, 21, **kwargs)


# ---------------------------------------------------------------------------- prior counts

# SSD300: the paper's Table 2 (box shapes) and Table 3 (output layers) settings.
SSD300_COUNTS = [
    ({}, 8732, [4, 6, 6, 6, 4, 4]),
    ({"aspect_ratios": [[2]] * 6}, 7760, [4] * 6),  # Table 2: without the {1/3, 3} boxes
    ({"aspect_ratios": [[]] * 6}, 3880, [2] * 6),  # Table 2: without {1/2, 2} either
    ({"levels": [0, 1, 2, 3, 4]}, 8764, [4, 6, 6, 6, 8]),  # Table 3 row 2: the paper's 8764 too
    ({"levels": [0, 1, 2, 3]}, 8892, [4, 6, 6, 14]),  # paper 8942
    ({"levels": [0, 1, 2]}, 9942, [4, 6, 20]),  # paper 9864
    ({"levels": [0, 1]}, 15162, [4, 26]),  # paper 9025
    ({"levels": [1]}, 10830, [30]),  # paper 8664 (conv7 only)
    ({"atrous": False}, 8732, [4, 6, 6, 6, 4, 4]),  # Table 2: same priors, other base
]


@pytest.mark.parametrize(("switches", "count", "boxes"), SSD300_COUNTS)
def test_ssd300_prior_counts_and_heads_follow_the_switches(switches, count, boxes):
    model = _meta("ssd300", **switches)
    assert model.num_priors == count == model.prior_config.num_priors
    assert model.prior_config.boxes_per_location == boxes
    assert [conv.out_channels for conv in model.loc] == [4 * a for a in boxes]
    assert [conv.out_channels for conv in model.conf] == [21 * a for a in boxes]
    assert prior_count_text(model.prior_config).endswith(f"= {count}")


SMALL_COUNTS = [
    ({}, 2408), ({"aspect_ratios": [[2]] * 5}, 2140), ({"aspect_ratios": [[]] * 5}, 1070),
    ({"levels": [0, 1, 2, 3]}, 2440), ({"levels": [0, 1, 2]}, 2600), ({"levels": [0, 1]}, 3800),
    ({"levels": [1]}, 2600),
]


@pytest.mark.parametrize(("switches", "count"), SMALL_COUNTS)
def test_ssd_small_prior_counts(switches, count):
    assert _meta("ssd_small", **switches).num_priors == count


def test_defaults_are_the_presets():
    assert ssd_small(3).prior_config is SSD_SMALL_160
    assert _meta("ssd300").prior_config is SSD300_VOC
    assert derive_prior_config(SSD300_VOC, levels=list(range(6))) is SSD300_VOC


def test_removed_levels_are_stacked_on_the_nearest_kept_level():
    config = derive_prior_config(SSD300_VOC, levels=[0, 3])
    assert config.feature_map_sizes == (38, 5)
    # level 1 goes to 0 (distance 1), 2 to 3 (distance 1), 4 and 5 to 3.
    moved = [[scale.min_size for scale in scales] for scales in config.stacked_scales]
    assert moved == [[60.0], [111.0, 213.0, 264.0]]
    assert config.stacked_scales[1][1] == PriorScale(213.0, 264.0, (2.0,))
    # a tie goes to the finer level: level 1 between kept 0 and 2
    tie = derive_prior_config(SSD300_VOC, levels=[0, 2])
    assert [s.min_size for s in tie.stacked_scales[0]] == [60.0]


def test_ratios_per_kept_level_apply_to_the_stacked_scales():
    config = derive_prior_config(SSD300_VOC, levels=[0, 1], aspect_ratios=[[2], [3]])
    assert config.aspect_ratios == ((2.0,), (3.0,))
    assert all(scale.aspect_ratios == (3.0,) for scale in config.stacked_scales[1])
    assert config.boxes_per_location == [4, 4 * 5]
    # one list per level of the model instead: the moved scales keep their own shapes
    full = derive_prior_config(SSD300_VOC, levels=[0, 1], aspect_ratios=[[2], [3], [], [], [], [5, 6]])
    assert [s.aspect_ratios for s in full.stacked_scales[1]] == [(), (), (), (5.0, 6.0)]


@settings(max_examples=30, deadline=None)
@given(st.sets(st.integers(0, 5), min_size=1))
def test_every_scale_of_the_full_model_appears_once(kept):
    levels = sorted(kept)
    config = derive_prior_config(SSD300_VOC, levels=levels)
    own = list(zip(config.min_sizes, config.max_sizes, config.aspect_ratios, strict=True))
    stacked_scales = [s for scales in (config.stacked_scales or ()) for s in scales]
    stacked = [(s.min_size, s.max_size, s.aspect_ratios) for s in stacked_scales]
    expected = list(zip(SSD300_VOC.min_sizes, SSD300_VOC.max_sizes, SSD300_VOC.aspect_ratios, strict=True))
    assert sorted(own + stacked) == sorted(expected)
    assert config.feature_map_sizes == tuple(SSD300_VOC.feature_map_sizes[k] for k in levels)
    assert config.build().shape == (config.num_priors, 4)


def test_stacked_priors_interleave_per_cell():
    """In each cell the level's own boxes come first, then each stacked scale's, all centred on
    that cell."""
    base = PriorConfig(feature_map_sizes=(2,), image_size=100, min_sizes=(20,), max_sizes=(40,),
                       aspect_ratios=((2,),), stacked_scales=((PriorScale(60, None, (3,)),),))
    assert base.boxes_per_location == [4 + 3]
    priors = base.build().view(2, 2, 7, 4)
    own = PriorConfig((2,), 100, (20,), (40,), ((2,),)).build().view(2, 2, 4, 4)
    extra = PriorConfig((2,), 100, (60,), None, ((3,),)).build().view(2, 2, 3, 4)
    torch.testing.assert_close(priors, torch.cat([own, extra], dim=2))


# ---------------------------------------------------------------------------- backbones and heads


@pytest.mark.parametrize(("name", "levels"), [("ssd_small", [0, 2, 4]), ("ssd_small", [1, 2]),
                                              ("rfb_small", [1, 3]), ("rfb_small", [0])])
def test_level_selection_runs_and_keeps_head_order(name, levels):
    torch.manual_seed(0)
    model = build_model(name, 3, width=8, levels=levels).eval()
    backbone = model.backbone
    assert len(backbone.stages) == levels[-1] + 1  # no stage past the deepest kept level
    images = torch.randn(1, 3, 160, 160)
    features = backbone(images)
    assert len(features) == len(levels) == len(model.loc)
    assert [f.shape[1] for f in features] == backbone.out_channels
    loc, conf = model(images)
    check_head_order(model, features, loc, conf)


@pytest.mark.parametrize(("name", "levels"), [("ssd_small", [1, 2]), ("rfb_small", [2]), ("rfb_small", [0])])
def test_every_parameter_of_a_level_selected_model_gets_a_gradient(name, levels):
    model = build_model(name, 3, width=8, levels=levels).train()
    loc, conf = model(torch.randn(2, 3, 160, 160))
    (loc.sum() + conf.sum()).backward()
    idle = [n for n, p in model.named_parameters() if p.grad is None]
    assert idle == []


def test_vgg_level_selection_drops_unused_parts():
    model = _meta("ssd300", levels=[1, 2])
    assert isinstance(model.backbone.l2norm, nn.Identity)  # conv4_3 does not predict
    assert len(model.backbone.extras) == 1  # conv8_2 is the deepest kept level
    only_conv4_3 = _meta("ssd300", levels=[0])
    assert all(isinstance(layer, nn.Identity) for layer in only_conv4_3.backbone.vgg[23:])
    assert len(only_conv4_3.backbone.extras) == 0
    features = only_conv4_3.backbone(torch.empty(1, 3, 300, 300, device="meta"))
    assert [tuple(f.shape[1:]) for f in features] == [(512, 38, 38)]


@pytest.mark.parametrize(("variant", "size", "maps"), [
    ("ssd300", 300, [(512, 38), (512, 19), (4096, 10), (256, 5), (256, 3), (256, 1)]),
    ("ssd512", 512, [(512, 64), (512, 32), (4096, 16), (256, 8), (256, 4), (256, 2), (256, 1)]),
])
def test_non_atrous_base_is_the_full_vgg16_with_conv5_3_predicting(variant, size, maps):
    with torch.device("meta"):
        backbone = VGG16Backbone(variant, atrous=False)
        features = backbone(torch.empty(1, 3, size, size))
    assert [(f.shape[1], f.shape[-1]) for f in features] == maps
    assert backbone.out_channels == [c for c, _ in maps]
    pool5, fc6, fc7 = backbone.vgg[30], backbone.vgg[31], backbone.vgg[33]
    assert (pool5.kernel_size, pool5.stride) == (2, 2)
    assert (fc6.out_channels, fc6.kernel_size, fc6.dilation) == (4096, (7, 7), (1, 1))
    assert (fc7.in_channels, fc7.out_channels) == (4096, 4096)
    atrous = _meta(variant)
    assert atrous.backbone.vgg[31].dilation == (6, 6) and atrous.backbone.vgg[31].out_channels == 1024
    assert _meta(variant, atrous=True).backbone.atrous and not _meta(variant, atrous=False).backbone.atrous


def test_non_atrous_taps_are_conv4_3_normalised_conv5_3_and_fc7():
    torch.manual_seed(0)
    backbone = VGG16Backbone("ssd300", atrous=False)
    backbone.select_levels([0, 1, 2])  # no extras: a small input suffices
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        conv4_3, conv5_3, fc7 = backbone(images)
        conv5_3_direct = backbone.vgg[:CONV5_3_RELU_INDEX + 1](images.clone())
        fc7_direct = backbone.vgg(images.clone())
    torch.testing.assert_close(conv5_3, conv5_3_direct)
    torch.testing.assert_close(fc7, fc7_direct)
    assert conv4_3.shape == (1, 512, 8, 8)
    torch.testing.assert_close(conv4_3.norm(dim=1), torch.full((1, 8, 8), 20.0), rtol=1e-4, atol=1e-3)


def test_non_atrous_loads_imagenet_fc_without_subsampling():
    classifier = {
        "classifier.0.weight": torch.zeros(4096, 512 * 7 * 7), "classifier.0.bias": torch.arange(4096.0),
        "classifier.3.weight": torch.zeros(4096, 4096), "classifier.3.bias": torch.arange(4096.0),
    }
    classifier["classifier.0.weight"][:, :8] = 1.5
    classifier["classifier.0.weight"][:, 8:] = 0.0
    classifier["classifier.3.weight"].fill_(0.25)
    fc = W._reduce_fc(classifier, atrous=False)
    assert fc["31.weight"].shape == (4096, 512, 7, 7) and fc["33.weight"].shape == (4096, 4096, 1, 1)
    assert fc["31.weight"][5, 0, 1, 0].item() == 1.5  # flat index 7: not a subsampled tap
    torch.testing.assert_close(fc["31.bias"], classifier["classifier.0.bias"])
    reduced = W._reduce_fc(classifier, atrous=True)
    assert reduced["31.weight"].shape == (1024, 512, 3, 3) and reduced["31.bias"][1].item() == 4.0
    with pytest.raises(W.WeightLoadError, match="non-atrous"):
        W.vgg16_backbone_state_dict({"0.weight": torch.zeros(1), "31.weight": torch.zeros(1)}, atrous=False)


# ---------------------------------------------------------------------------- errors

ERRORS = [
    ("ssd_small", {"atrous": True}, ValueError, r"ssd_small: atrous=True does not apply.*no fc6/fc7"),
    ("ssd_small", {"atrous": False}, ValueError, r"ssd_small: atrous=False does not apply"),
    ("rfb_small", {"atrous": True}, ValueError, r"rfb_small: atrous=True does not apply"),
    ("rfb300", {"atrous": False}, ValueError, r"rfb300: atrous=False is not available.*supports atrous=True"),
    ("ssd300", {"atrous": "no"}, TypeError, r"ssd300: atrous must be True, False or None"),
    ("ssd_small", {"levels": [0, 5]}, ValueError, r"ssd_small: levels\[1\] = 5 is out of range.*5 pred"),
    ("ssd300", {"levels": [2, 1]}, ValueError, r"ssd300: levels must be distinct indices in increasing"),
    ("ssd300", {"levels": [1, 1]}, ValueError, r"ssd300: levels must be distinct"),
    ("ssd300", {"levels": []}, ValueError, r"ssd300: levels must keep at least one"),
    ("ssd300", {"levels": [True]}, TypeError, r"ssd300: levels\[0\] must be an int"),
    ("ssd300", {"levels": 3}, TypeError, r"ssd300: levels must be a list"),
    ("ssd300", {"aspect_ratios": [[2]] * 5}, ValueError, r"ssd300: aspect_ratios has 5 entries.*\(6\)"),
    ("ssd300", {"aspect_ratios": [2, 3]}, ValueError, r"ssd300: aspect_ratios has 2 entries"),
    ("ssd_small", {"aspect_ratios": [2, 3, 4, 5, 6]}, TypeError,
     r"ssd_small: aspect_ratios\[0\] must be a list"),
    ("ssd_small", {"aspect_ratios": [[2]] * 4 + [[-1]]}, ValueError,
     r"ssd_small: aspect_ratios\[4\]\[0\] must be a positive finite ratio"),
    ("ssd_small", {"aspect_ratios": [["2"]] * 5}, TypeError,
     r"ssd_small: aspect_ratios\[0\]\[0\] must be a number"),
    ("ssd_small", {"levels": [0, 1], "aspect_ratios": [[2]] * 3}, ValueError,
     r"ssd_small: aspect_ratios has 3 entries.*\(2 or 5\)"),
]


@pytest.mark.parametrize(("name", "switches", "error", "message"), ERRORS)
def test_switches_that_do_not_fit_the_model_are_errors_naming_it(name, switches, error, message):
    with pytest.raises(error, match=message), torch.device("meta"):
        build_model(name, 3, **switches)


def test_atrous_none_is_every_models_default():
    for name in ("ssd300", "ssd512", "rfb300", "ssd_small", "rfb_small"):
        assert _meta(name, atrous=None).num_priors == _meta(name).num_priors


def test_custom_priors_with_the_wrong_level_count_name_the_model():
    with pytest.raises(ValueError, match="ssd300: the priors have 5 levels but the backbone gives 6"), \
            torch.device("meta"):
        ssd300(3, priors=SSD_SMALL_160, levels=[0, 1])


def test_all_switch_combinations_of_the_paper_build():
    """The switches compose: every Table 2 x Table 3 combination builds with matching heads."""
    ratios = [None, [[2]] * 6, [[]] * 6]
    levels = [None, [0, 1, 2, 3, 4], [1]]
    for aspect_ratios, kept, atrous in itertools.product(ratios, levels, [True, False]):
        model = _meta("ssd300", aspect_ratios=aspect_ratios, levels=kept, atrous=atrous)
        assert [c.out_channels // 4 for c in model.loc] == model.prior_config.boxes_per_location
        assert model.priors.shape == (model.prior_config.num_priors, 4)
