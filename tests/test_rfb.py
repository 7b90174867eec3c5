"""RFB Net: presets, block structure, shapes and prior order of rfb300/rfb512, the small RFB model
(backward, autocast, channels_last, a short training run), the registry and head parts, and the
converter from the authors' checkpoint layout."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import check_head_order, overfit_losses
from ssd_reference.priors import prior_boxes as reference_prior_boxes
from torch import nn

from ssd_ext.models import (
    PRESETS,
    RFB300_COCO,
    RFB300_VOC,
    RFB512_COCO,
    RFB512_VOC,
    RFB_SMALL_160,
    SSD,
    SSD_SMALL_160,
    L2Norm,
    RFBBlock,
    RFBsBlock,
    SmallBackbone,
    SSDHead,
    build_model,
    list_models,
    register_model,
    rfb300,
    rfb512,
    rfb_small,
    ssd300,
)
from ssd_ext.models import registry as registry_module
from ssd_ext.models.rfb import ConvBN
from ssd_ext.models.weights import WeightLoadError, detect_format, from_rfbnet, load_weights, to_rfbnet

# ---------------------------------------------------------------------------- presets

# The authors' data/config.py, written out: (feature maps, steps, min sizes, max sizes, ratios).
_AUTHORS_CONFIGS = {
    "RFB300_VOC": ([38, 19, 10, 5, 3, 1], [8, 16, 32, 64, 100, 300], [30, 60, 111, 162, 213, 264],
                   [60, 111, 162, 213, 264, 315], 4),
    "RFB300_COCO": ([38, 19, 10, 5, 3, 1], [8, 16, 32, 64, 100, 300], [21, 45, 99, 153, 207, 261],
                    [45, 99, 153, 207, 261, 315], 4),
    "RFB512_VOC": ([64, 32, 16, 8, 4, 2, 1], [8, 16, 32, 64, 128, 256, 512],
                   [35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8],
                   [76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6], 5),
    "RFB512_COCO": ([64, 32, 16, 8, 4, 2, 1], [8, 16, 32, 64, 128, 256, 512],
                    [20.48, 51.2, 133.12, 215.04, 296.96, 378.88, 460.8],
                    [51.2, 133.12, 215.04, 296.96, 378.88, 460.8, 542.72], 5),
}
_PRESETS = {"RFB300_VOC": RFB300_VOC, "RFB300_COCO": RFB300_COCO, "RFB512_VOC": RFB512_VOC,
            "RFB512_COCO": RFB512_COCO}


@pytest.mark.parametrize("name", sorted(_AUTHORS_CONFIGS))
def test_rfb_presets_match_the_authors_configs(name):
    preset = _PRESETS[name]
    fmaps, steps, mins, maxs, six_box_levels = _AUTHORS_CONFIGS[name]
    assert PRESETS[name.lower()] is preset
    assert preset.feature_map_sizes == tuple(fmaps) and preset.steps == tuple(steps)
    assert preset.min_sizes == pytest.approx(mins) and preset.max_sizes == pytest.approx(maxs)
    levels = len(fmaps)
    assert preset.aspect_ratios == ((2.0, 3.0),) * six_box_levels + ((2.0,),) * (levels - six_box_levels)
    assert preset.clip is True and preset.image_size == (300 if levels == 6 else 512)
    expected = reference_prior_boxes(fmaps, preset.image_size, mins, maxs, preset.aspect_ratios, steps,
                                     0.5, True)
    torch.testing.assert_close(preset.build(), expected, rtol=1e-6, atol=1e-7)


def test_every_rfb_preset_count():
    counts = {"rfb300_voc": 11_620, "rfb300_coco": 11_620, "rfb512_voc": 32_756, "rfb512_coco": 32_756,
              "rfb_small_160": 3208}
    for name, count in counts.items():
        preset = PRESETS[name]
        assert preset.num_priors == count, name
        assert preset.build().shape == (count, 4), name
    # 38^2*6 + 19^2*6 + 10^2*6 + 5^2*6 + 3^2*4 + 1*4, spelled out once.
    assert 6 * (38 ** 2 + 19 ** 2 + 10 ** 2 + 5 ** 2) + 4 * (3 ** 2 + 1) == 11_620
    assert RFB_SMALL_160.min_sizes == SSD_SMALL_160.min_sizes


# ---------------------------------------------------------------------------- block structure


def _last_dilations(block: nn.Module) -> list[int]:
    return [branch[-1].conv.dilation[0] for branch in block.branches]


def test_rfb_blocks_structure():
    block = RFBBlock(64, 32, stride=2, dilation=2)
    assert _last_dilations(block) == [2, 3, 5]
    # Inner width in/8 = 8: branch outputs 2w each, merged 6w -> out.
    assert [b[-1].out_channels for b in block.branches] == [16, 16, 16]
    assert block.merge.conv.in_channels == 48 and block.merge.out_channels == 32
    assert [tuple(c.conv.kernel_size) for c in block.branches[2]] == [(1, 1), (3, 3), (3, 3), (3, 3)]
    assert block.branches[2][1].out_channels == 12  # (w // 2) * 3
    # No ReLU on the last conv of a branch, the merge and the shortcut; no conv bias; BN momentum 0.01.
    assert [c.relu for c in block.branches[2]] == [True, True, True, False]
    assert not block.merge.relu and not block.shortcut.relu
    convs = [m for m in block.modules() if isinstance(m, ConvBN)]
    assert all(c.conv.bias is None and c.bn.momentum == 0.01 for c in convs)
    x = torch.randn(2, 64, 9, 9)
    assert block(x).shape == (2, 32, 5, 5)
    assert (block(x) >= 0).all()

    small = RFBsBlock(64, 64)
    assert _last_dilations(small) == [1, 3, 3, 5]
    assert [tuple(c.conv.kernel_size) for c in small.branches[3]] == [(1, 1), (1, 3), (3, 1), (3, 3)]
    assert [tuple(c.conv.kernel_size) for c in small.branches[1]] == [(1, 1), (3, 1), (3, 3)]
    assert [c.out_channels for c in small.branches[3]] == [8, 12, 16, 16]  # w/2, 3w/4, w, w (w = 16)
    assert small(torch.randn(1, 64, 7, 5)).shape == (1, 64, 7, 5)
    with pytest.raises(ValueError, match="multiple of 8"):
        RFBBlock(20, 8)


def test_block_forward_is_scaled_merge_plus_shortcut():
    torch.manual_seed(0)
    block = RFBBlock(32, 16, dilation=1, scale=0.5).eval()
    x = torch.randn(1, 32, 6, 6)
    merged = block.merge(torch.cat([b(x) for b in block.branches], dim=1))
    torch.testing.assert_close(block(x), torch.relu(0.5 * merged + block.shortcut(x)))


def test_published_layout_of_rfb300_and_rfb512():
    with torch.device("meta"):  # structure only
        models = [(rfb300(21), [2, 2], [2, 2]), (rfb512(21), [2, 2, 1, 1], [2, 2, 2, 2])]
    for model, dilations, strides in models:
        backbone = model.backbone
        assert isinstance(backbone.rfb_s, RFBsBlock) and not hasattr(backbone, "l2norm")
        assert isinstance(backbone.fc7_part, RFBBlock) and backbone.fc7_part.stride == 1
        assert backbone.fc7_part.dilation == 2
        blocks = [b for b in backbone.extras if isinstance(b, RFBBlock)]
        assert [b.dilation for b in blocks] == dilations and [b.stride for b in blocks] == strides
        # Every block the authors' models build uses scale 1.0 (not the class default 0.1).
        all_blocks = [m for m in model.modules() if isinstance(m, (RFBBlock, RFBsBlock))]
        assert all(b.scale == 1.0 for b in all_blocks)
        assert [c.out_channels for c in model.loc] == [a * 4 for a in model.prior_config.boxes_per_location]


# ---------------------------------------------------------------------------- shapes and order


def test_rfb300_shapes_taps_and_prior_order():
    # The one real-size forward of this file: batch 1, no grad.
    torch.manual_seed(0)
    model = rfb300(num_classes=6).eval()
    backbone = model.backbone
    seen = {}

    def keep(name):
        def hook(module, inputs, output):
            seen[name] = (inputs[0], output)
        return hook

    handles = [backbone.vgg[22].register_forward_hook(keep("conv4_3_relu")),
               backbone.vgg[23].register_forward_hook(keep("pool4")),
               backbone.rfb_s.register_forward_hook(keep("rfb_s")),
               backbone.fc7_part.register_forward_hook(keep("fc7_part")),
               backbone.extras[0].register_forward_hook(keep("extras0"))]
    try:
        with torch.no_grad():
            features = backbone(torch.randn(1, 3, 300, 300))
            loc, conf = model.head_outputs(features)
    finally:
        for handle in handles:
            handle.remove()
    assert [tuple(f.shape[1:]) for f in features] == [
        (512, 38, 38), (1024, 19, 19), (512, 10, 10), (256, 5, 5), (256, 3, 3), (256, 1, 1)]
    assert loc.shape == (1, 11_620, 4) and conf.shape == (1, 11_620, 6)
    # RFB-s reads conv4_3 after its ReLU, and the trunk continues from the raw conv4_3 ...
    assert seen["rfb_s"][0] is seen["conv4_3_relu"][1] and seen["pool4"][0] is seen["conv4_3_relu"][1]
    assert features[0] is seen["rfb_s"][1]
    # ... but from the fc7 RFB's output, which is also the second feature map.
    assert seen["extras0"][0] is seen["fc7_part"][1] is features[1]
    check_head_order(model, features, loc, conf)


def test_rfb512_shapes_on_meta_device():
    model = build_model("RFB512", 81, priors="rfb512_coco").to("meta")
    assert model.prior_config is RFB512_COCO and model.num_priors == 32_756
    images = torch.empty(2, 3, 512, 512, device="meta")
    features = model.backbone(images)
    assert [tuple(f.shape[1:]) for f in features] == [
        (512, 64, 64), (1024, 32, 32), (512, 16, 16), (256, 8, 8), (256, 4, 4), (256, 2, 2), (256, 1, 1)]
    loc, conf = model(images)
    assert loc.shape == (2, 32_756, 4) and conf.shape == (2, 32_756, 81)


# Parameter counts (weights and biases; BatchNorm running statistics are buffers, not counted).
# The authors publish none for the VGG models (their README gives 7.4 M only for RFB MobileNet,
# which is not built here); for comparison our SSD300 (21 classes) has 26,285,486.
PARAMETER_COUNTS = {("rfb300", 21): 36_531_296, ("rfb300", 81): 45_104_096,
                    ("rfb512", 21): 37_417_910, ("rfb512", 81): 46_820_510,
                    ("rfb_small", 21): 1_044_756, ("ssd300", 21): 26_285_486}


@pytest.mark.parametrize("name,classes", sorted(PARAMETER_COUNTS))
def test_parameter_counts(name, classes):
    with torch.device("meta"):
        model = build_model(name, classes)
    assert sum(p.numel() for p in model.parameters()) == PARAMETER_COUNTS[(name, classes)]
    if name.startswith("rfb") and name != "rfb_small":
        # The same total from the authors' layout, derived independently below.
        size = int(name[3:])
        theirs = _authors_shapes(size, classes)
        counted = sum(math.prod(s) for k, s in theirs.items() if not k.endswith(_BN_BUFFERS))
        assert counted == PARAMETER_COUNTS[(name, classes)]


# ---------------------------------------------------------------------------- small RFB model


def test_rfb_small_forward_backward_channels_last_and_bf16():
    torch.manual_seed(0)
    model = rfb_small(num_classes=4, width=16)
    images = torch.randn(4, 3, 160, 160)
    loc, conf = model(images)
    assert loc.shape == (4, 3208, 4) and conf.shape == (4, 3208, 4)
    (loc.square().mean() + conf.logsumexp(-1).mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.backbone.rfb_s.merge.conv.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        loc, conf = model(images[:2])
        features = model.backbone(images[:1])
        check_head_order(model, features, *model.head_outputs(features))
        model.to(memory_format=torch.channels_last)
        loc_cl, conf_cl = model(images[:2].to(memory_format=torch.channels_last))
        torch.testing.assert_close(loc_cl, loc, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(conf_cl, conf, rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loc_bf, conf_bf = model(images[:2].to(memory_format=torch.channels_last))
    assert loc_bf.dtype == conf_bf.dtype == torch.bfloat16 and model.priors.dtype == torch.float32
    assert (conf_bf.float() - conf).abs().max() < 0.1 * conf.abs().max()
    assert (loc_bf.float() - loc).abs().max() < 0.1 * loc.abs().max()


def test_rfb_small_trains_on_the_synthetic_set():
    # A few steps on one fixed batch of the synthetic shapes set must cut the MultiBox loss.
    from ssd_ext.data import SyntheticShapes, collate, eval_transform

    torch.manual_seed(0)
    dataset = SyntheticShapes(num_images=4, seed=5, transform=eval_transform(160))
    images, targets = collate([dataset[i] for i in range(len(dataset))])
    model = build_model("rfb_small", len(dataset.class_names), width=16)
    losses = overfit_losses(model, images, targets, steps=8)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.4 * losses[0], losses


# ---------------------------------------------------------------------------- registry and parts


def test_registry_lists_and_builds_every_family(monkeypatch):
    from ssd_ext import models

    names = list_models()
    assert names[:3] == ["ssd300", "ssd512", "ssd_small"] and {"rfb300", "rfb512", "rfb_small"} <= set(names)
    assert models.MODEL_NAMES == tuple(names)
    with pytest.raises(ValueError, match=r"unknown model 'yolo'; known: \[.*'rfb300'.*'rfb_small'"):
        build_model("yolo", 21)

    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))

    @register_model("Tiny_Test")
    def tiny(num_classes: int = 21, priors=None, width: int = 8) -> SSD:
        backbone = SmallBackbone(width)
        return SSD(backbone, backbone.out_channels, SSD_SMALL_160, num_classes)

    assert "tiny_test" in list_models() and "tiny_test" in models.MODEL_NAMES
    model = build_model("tiny_test", 3, width=4)
    assert model.num_classes == 3 and model.backbone.out_channels[0] == 8
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny_test")(rfb300)


def test_head_is_a_part_and_keys_stay_flat():
    head = SSDHead([64, 128, 128, 128, 128], SSD_SMALL_160.boxes_per_location, 3)
    model = SSD(SmallBackbone(), [64, 128, 128, 128, 128], SSD_SMALL_160, 3, head=head)
    assert model.head is head and model.loc is head.loc and model.conf is head.conf
    keys = list(model.state_dict())
    assert "loc.0.weight" in keys and "conf.4.bias" in keys and not any(k.startswith("head.") for k in keys)
    assert len(list(model.parameters())) == len(set(model.parameters()))  # nothing registered twice
    with pytest.raises(ValueError, match="head has boxes_per_location"):
        SSD(SmallBackbone(), [64, 128, 128, 128, 128], SSD_SMALL_160, 4, head=head)
    # The SSD backbone's parts: L2Norm on conv4_3 (state key unchanged), nothing on fc7.
    backbone = ssd300(3).backbone
    assert isinstance(backbone.conv4_3_part, L2Norm) and backbone.conv4_3_part is backbone.l2norm
    assert isinstance(backbone.fc7_part, nn.Identity)


# ---------------------------------------------------------------------------- the authors' checkpoints

_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
_VGG_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
              (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512),
              (26, 512, 512), (28, 512, 512)]


def _authors_shapes(size: int, num_classes: int) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of the authors' RFBNet (RFB_Net_vgg.build_net(size, num_classes)),
    written from their code: BasicConv = conv (no bias) + bn; BasicRFB with branch0..2,
    ConvLinear and shortcut; BasicRFB_a (``Norm``) with branch0..3."""
    shapes: dict[str, tuple[int, ...]] = {}
    for index, cin, cout in _VGG_CONVS:
        shapes[f"base.{index}.weight"], shapes[f"base.{index}.bias"] = (cout, cin, 3, 3), (cout,)
    shapes.update({"base.31.weight": (1024, 512, 3, 3), "base.31.bias": (1024,),
                   "base.33.weight": (1024, 1024, 1, 1), "base.33.bias": (1024,)})

    def basic_conv(prefix, cin, cout, kernel):
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        shapes[f"{prefix}.conv.weight"] = (cout, cin, kh, kw)
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.bn.{name}"] = (cout,)
        shapes[f"{prefix}.bn.num_batches_tracked"] = ()

    def block(prefix, cin, cout, branches, merged):
        for b, layers in enumerate(branches):
            for j, (ci, co, k) in enumerate(layers):
                basic_conv(f"{prefix}.branch{b}.{j}", ci, co, k)
        basic_conv(f"{prefix}.ConvLinear", merged, cout, 1)
        basic_conv(f"{prefix}.shortcut", cin, cout, 1)

    def basic_rfb(prefix, cin, cout):
        i = cin // 8
        block(prefix, cin, cout, [
            [(cin, 2 * i, 1), (2 * i, 2 * i, 3)],
            [(cin, i, 1), (i, 2 * i, 3), (2 * i, 2 * i, 3)],
            [(cin, i, 1), (i, i // 2 * 3, 3), (i // 2 * 3, 2 * i, 3), (2 * i, 2 * i, 3)],
        ], 6 * i)

    i = 512 // 4
    block("Norm", 512, 512, [
        [(512, i, 1), (i, i, 3)],
        [(512, i, 1), (i, i, (3, 1)), (i, i, 3)],
        [(512, i, 1), (i, i, (1, 3)), (i, i, 3)],
        [(512, i // 2, 1), (i // 2, i // 4 * 3, (1, 3)), (i // 4 * 3, i, (3, 1)), (i, i, 3)],
    ], 4 * i)
    rfbs = [(1024, 1024), (1024, 512), (512, 256)] + ([(256, 256), (256, 256)] if size == 512 else [])
    for k, (cin, cout) in enumerate(rfbs):
        basic_rfb(f"extras.{k}", cin, cout)
    convs = [(256, 128, 1), (128, 256, 3), (256, 128, 1), (128, 256, 3)] if size == 300 else \
        [(256, 128, 1), (128, 256, 4)]
    for k, (cin, cout, kernel) in enumerate(convs):
        basic_conv(f"extras.{len(rfbs) + k}", cin, cout, kernel)
    channels = [512, 1024, 512, 256, 256, 256] + ([256] if size == 512 else [])
    boxes = [6, 6, 6, 6, 4, 4] if size == 300 else [6, 6, 6, 6, 6, 4, 4]
    for level, (c, a) in enumerate(zip(channels, boxes, strict=True)):
        for head, k in (("loc", 4), ("conf", num_classes)):
            shapes[f"{head}.{level}.weight"], shapes[f"{head}.{level}.bias"] = (a * k, c, 3, 3), (a * k,)
    return shapes


def _authors_state(size: int, num_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in _authors_shapes(size, num_classes).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.randint(0, 1000, (), generator=generator)
        else:
            state[key] = torch.randn(shape, generator=generator)
    return state


@pytest.mark.parametrize("size", [300, 512])
def test_from_rfbnet_maps_every_authors_key(size):
    classes = 5
    theirs = _authors_state(size, classes)
    with torch.device("meta"):
        model = build_model(f"rfb{size}", classes)
    converted = from_rfbnet(theirs)
    ours = model.state_dict()
    assert set(converted) == set(ours)
    assert all(converted[k].shape == ours[k].shape for k in ours)
    assert to_rfbnet(converted).keys() == theirs.keys()
    assert all(to_rfbnet(converted)[k] is theirs[k] for k in theirs)
    # A few named places, by hand from the two layouts.
    assert converted["backbone.rfb_s.branches.3.2.conv.weight"] is theirs["Norm.branch3.2.conv.weight"]
    assert converted["backbone.rfb_s.merge.bn.running_var"] is theirs["Norm.ConvLinear.bn.running_var"]
    assert converted["backbone.fc7_part.shortcut.conv.weight"] is theirs["extras.0.shortcut.conv.weight"]
    assert converted["backbone.extras.0.branches.2.3.bn.weight"] is theirs["extras.1.branch2.3.bn.weight"]
    last_pair = "backbone.extras.3" if size == 300 else "backbone.extras.4"
    assert converted[f"{last_pair}.1.conv.weight"] is theirs["extras.6.conv.weight"]
    assert converted["backbone.vgg.31.weight"] is theirs["base.31.weight"]


def test_rfbnet_checkpoint_loads_with_prefix_and_old_batchnorm(tmp_path):
    theirs = _authors_state(300, 5)
    # Saved from DataParallel by PyTorch 0.4.0 (no num_batches_tracked yet).
    old = {f"module.{k}": v for k, v in theirs.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "RFB_vgg_VOC.pth"
    torch.save(old, path)
    model = rfb300(5)
    assert detect_format(old) == "rfbnet"
    assert load_weights(model, path) == "rfbnet"
    state = model.state_dict()
    assert torch.equal(state["backbone.rfb_s.branches.0.1.conv.weight"], theirs["Norm.branch0.1.conv.weight"])
    assert torch.equal(state["conf.5.bias"], theirs["conf.5.bias"])
    assert int(state["backbone.rfb_s.merge.bn.num_batches_tracked"]) == 0
    # And back: our state dict in their layout holds the same tensors.
    back = to_rfbnet(state)
    assert all(torch.equal(back[k], v) for k, v in theirs.items() if not k.endswith("num_batches_tracked"))


def test_rfbnet_errors():
    with torch.device("meta"):  # the checks run before anything is copied
        model300, model512 = rfb300(5), rfb512(5)
    theirs = _authors_state(300, 21)
    with pytest.raises(WeightLoadError, match=r"shape mismatches \(12\).*conf\.0\.weight"):
        load_weights(model300, theirs)  # a VOC checkpoint into a 5-class model
    theirs_stray = dict(_authors_state(300, 5))
    theirs_stray["priors"] = torch.zeros(4)
    with pytest.raises(WeightLoadError, match=r"unexpected keys \(1\): unmapped\.priors"):
        load_weights(model300, theirs_stray, layout="rfbnet")
    with pytest.raises(WeightLoadError, match="missing keys"):
        load_weights(model512, _authors_state(300, 5), layout="rfbnet")
    with pytest.raises(WeightLoadError, match="no RFBNet equivalent"):
        to_rfbnet(rfb_small(3).state_dict())
