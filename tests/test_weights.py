"""Weight loading: torchvision ssd300_vgg16 equivalence, ssd.pytorch round trip, VGG16 ImageNet
backbones (torchvision layout with reduced fc, and vgg16_reducedfc.pth), clear errors."""

from __future__ import annotations

import pytest
import torch
import torchvision
from helpers import order_ties
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList

import ssd_ext
from ssd_ext.models import SSD300_TORCHVISION, ssd300, ssd512, ssd_small
from ssd_ext.models.weights import (
    WeightLoadError,
    detect_format,
    from_ssd_pytorch,
    from_torchvision_ssd300,
    load_state_dict_checked,
    load_vgg16_backbone,
    load_weights,
    read_state_dict,
    to_ssd_pytorch,
    to_torchvision_ssd300,
    vgg16_backbone_state_dict,
)

NUM_CLASSES = 5  # small, to keep the heads cheap; the mapping does not depend on it


def _normalised_input(generator: torch.Generator) -> torch.Tensor:
    """A 300x300 image normalised as torchvision's ssd300_vgg16 transform does ((x - mean) * 255)."""
    image = torch.rand(1, 3, 300, 300, generator=generator)
    mean = torch.tensor([0.48235, 0.45882, 0.40784]).view(1, 3, 1, 1)
    return (image - mean) * 255.0


@pytest.fixture(scope="module")
def torchvision_pair(tmp_path_factory):
    """A randomly initialised torchvision ssd300_vgg16, our SSD300 loaded from its saved state dict,
    and both models' head outputs on the same normalised input."""
    torch.manual_seed(0)
    # Built on the meta device: ssd300_vgg16 first builds a whole vgg16, whose 120 M-parameter
    # classifier it then drops; initialising that on the CPU would dominate the test's time.
    with torch.device("meta"):
        theirs = torchvision.models.detection.ssd300_vgg16(
            weights=None, weights_backbone=None, num_classes=NUM_CLASSES)
    theirs = theirs.to_empty(device="cpu").eval()
    theirs.anchor_generator = DefaultBoxGenerator(  # its plain-tensor (w, h) table was made on meta
        [[2], [2, 3], [2, 3], [2, 3], [2], [2]], scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],
        steps=[8, 16, 32, 64, 100, 300])
    with torch.no_grad():
        # Xavier weights as torchvision's own init, non-zero biases and a non-constant L2 scale,
        # so a wrong mapping of any of them shows up.
        for name, parameter in theirs.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0.0, 0.05)
            elif parameter.dim() == 4:
                torch.nn.init.xavier_uniform_(parameter)
        theirs.backbone.scale_weight.uniform_(10.0, 30.0)
    assert not any(t.is_meta for t in theirs.state_dict().values())
    path = tmp_path_factory.mktemp("weights") / "ssd300_vgg16_random.pth"
    torch.save(theirs.state_dict(), path)

    ours = ssd300(NUM_CLASSES, priors=SSD300_TORCHVISION).eval()
    assert load_weights(ours, path) == "torchvision_ssd300"
    images = _normalised_input(torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = list(theirs.backbone(images).values())
        their_heads = theirs.head(features)
        loc, conf = ours(images)
    return theirs, ours, images, features, their_heads, loc, conf


def test_torchvision_ssd300_heads_match(torchvision_pair):
    theirs, ours, _, features, their_heads, loc, conf = torchvision_pair
    torch.testing.assert_close(loc, their_heads["bbox_regression"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conf, their_heads["cls_logits"], rtol=1e-5, atol=1e-5)
    assert conf.abs().max() > 1.0  # not a trivially zero comparison
    anchors = theirs.anchor_generator._grid_default_boxes([list(f.shape[-2:]) for f in features], [300, 300])
    torch.testing.assert_close(ours.priors, anchors, rtol=1e-6, atol=1e-7)


def test_torchvision_ssd300_detections_match(torchvision_pair):
    # model.detect == ops.detect on the head outputs, scaled to pixels (tested in test_models);
    # here the same post-processing of the converted model's outputs against torchvision's.
    theirs, ours, images, features, their_heads, loc, conf = torchvision_pair
    anchors = theirs.anchor_generator(ImageList(images, [(300, 300)]), features)
    expected = theirs.postprocess_detections(their_heads, anchors, [(300, 300)])[0]
    got = ssd_ext.ops.detect(loc, conf, ours.priors, score_threshold=0.01, iou_threshold=0.45,
                             candidates_per_class=400, max_detections=200)[0]
    got["boxes"] = got["boxes"] * 300
    assert got["boxes"].shape == expected["boxes"].shape
    assert got["boxes"].shape[0] > 50
    torch.testing.assert_close(got["scores"], expected["scores"], rtol=1e-5, atol=1e-6)
    assert torch.equal(got["labels"], expected["labels"])
    # Exactly equal scores occur (identical inputs at padded borders); we order such ties by
    # prior index, torchvision leaves them to topk. Compare with ties ordered by box instead.
    got_boxes, expected_boxes = order_ties(got), order_ties(expected)
    torch.testing.assert_close(got_boxes, expected_boxes, rtol=1e-4, atol=1e-3)



def test_torchvision_key_map_round_trip(torchvision_pair):
    theirs, ours, *_ = torchvision_pair
    converted = to_torchvision_ssd300(ours.state_dict())
    reference = theirs.state_dict()
    assert set(converted) == set(reference)
    for key, value in reference.items():
        assert torch.equal(converted[key], value), key
    assert set(from_torchvision_ssd300(reference)) == set(ours.state_dict())


def test_ssd_pytorch_round_trip_identical_outputs(torchvision_pair):
    _, ours, images, _, _, loc, conf = torchvision_pair
    legacy = to_ssd_pytorch(ours.state_dict())
    expected_keys = {"L2Norm.weight"}
    for prefix, count in (("vgg", None), ("extras", 8), ("loc", 6), ("conf", 6)):
        indices = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28, 31, 33) if count is None else range(count)
        expected_keys |= {f"{prefix}.{i}.{p}" for i in indices for p in ("weight", "bias")}
    assert set(legacy) == expected_keys
    wrapped = {"state_dict": {f"module.{k}": v.clone() for k, v in legacy.items()}}  # DataParallel-style
    fresh = ssd300(NUM_CLASSES, priors=SSD300_TORCHVISION).eval()
    assert load_weights(fresh, wrapped) == "ssd_pytorch"
    with torch.no_grad():
        loc2, conf2 = fresh(images)
    assert torch.equal(loc2, loc) and torch.equal(conf2, conf)


def test_ssd512_ssd_pytorch_key_map_round_trip():
    model = ssd512(21)
    state = model.state_dict()
    legacy = to_ssd_pytorch(state)
    assert {k for k in legacy if k.startswith("extras.")} == {
        f"extras.{i}.{p}" for i in range(10) for p in ("weight", "bias")}
    back = from_ssd_pytorch(legacy)
    assert set(back) == set(state) and all(back[k] is state[k] for k in state)


# ---------------------------------------------------------------------------- VGG16 backbones


def _fake_torchvision_vgg16_state(with_classifier: bool) -> dict[str, torch.Tensor]:
    """torchvision vgg16's key layout and shapes with structured values (no 500 MB model build)."""
    generator = torch.Generator().manual_seed(3)
    state = {}
    index, channels = 0, 3
    for item in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if item == "M":
            index += 1
            continue
        state[f"features.{index}.weight"] = torch.randn(item, channels, 3, 3, generator=generator) * 0.01
        state[f"features.{index}.bias"] = torch.randn(item, generator=generator) * 0.01
        index, channels = index + 2, item
    if with_classifier:
        out = torch.arange(4096, dtype=torch.float32).view(4096, 1, 1, 1)
        tap = torch.arange(49, dtype=torch.float32).view(1, 1, 7, 7)
        # fc6[o, c, y, x] = 100 o + 7 y + x at the entries the reduction keeps (o % 4 == 0,
        # y and x in 0, 3, 6), and NaN elsewhere: the reduced weight must contain no NaN.
        fc6 = torch.full((4096, 25088), float("nan"))
        fc6.view(4096, 512, 7, 7)[::4, :, ::3, ::3] = (out * 100 + tap)[::4, :, ::3, ::3]
        state["classifier.0.weight"] = fc6
        state["classifier.0.bias"] = torch.arange(4096, dtype=torch.float32)
        state["classifier.3.weight"] = torch.arange(4096.0).view(-1, 1) * 10000 + torch.arange(4096.0)
        state["classifier.3.bias"] = -torch.arange(4096, dtype=torch.float32)
        state["classifier.6.weight"] = torch.zeros(1000, 4096)
        state["classifier.6.bias"] = torch.zeros(1000)
    return state


def test_vgg16_torchvision_layout_with_reduced_fc():
    state = _fake_torchvision_vgg16_state(with_classifier=True)
    converted, has_fc = vgg16_backbone_state_dict(state)
    assert has_fc
    fc6 = converted["31.weight"].double()
    assert fc6.shape == (1024, 512, 3, 3)
    # Output channel 4k, every input channel, spatial taps 0, 3, 6 of the 7x7 window.
    for o, c, y, x in [(0, 0, 0, 0), (5, 17, 2, 1), (1023, 511, 2, 2)]:
        assert fc6[o, c, y, x].item() == 100 * (4 * o) + 7 * (3 * y) + 3 * x
    assert converted["31.bias"][o].item() == 4 * o
    fc7 = converted["33.weight"]
    assert fc7.shape == (1024, 1024, 1, 1)
    assert fc7[3, 7, 0, 0].item() == 12 * 10000 + 28
    assert converted["33.bias"][3].item() == -12

    model = ssd300(3)
    before_extras = model.backbone.extras[0][0].weight.clone()
    assert load_vgg16_backbone(model, state) == {"loaded_fc": True}
    assert torch.equal(model.backbone.vgg[28].bias, state["features.28.bias"])
    assert torch.equal(model.backbone.vgg[31].weight, converted["31.weight"])
    assert torch.equal(model.backbone.extras[0][0].weight, before_extras)  # only the base is loaded


def test_vgg16_features_only_keeps_fc_initialisation():
    state = _fake_torchvision_vgg16_state(with_classifier=False)
    model = ssd300(3)
    fc6_before = model.backbone.vgg[31].weight.clone()
    assert load_vgg16_backbone(model, state) == {"loaded_fc": False}
    assert torch.equal(model.backbone.vgg[31].weight, fc6_before)
    assert torch.equal(model.backbone.vgg[0].weight, state["features.0.weight"])


def test_vgg16_reducedfc_file(tmp_path):
    model = ssd300(3)
    saved = {k: v.clone() for k, v in model.backbone.vgg.state_dict().items()}  # 0.weight ... 33.bias
    path = tmp_path / "vgg16_reducedfc.pth"
    torch.save(saved, path)
    assert detect_format(read_state_dict(path)) == "vgg16_reducedfc"
    model.backbone.reset_parameters()
    assert not torch.equal(model.backbone.vgg[0].weight, saved["0.weight"])
    assert load_weights(model, path) == "vgg16_reducedfc"
    for key, value in saved.items():
        assert torch.equal(model.backbone.vgg.state_dict()[key], value)


# ---------------------------------------------------------------------------- errors and wrappers


def test_own_checkpoint_wrapped_round_trip(tmp_path):
    source = ssd_small(4)
    path = tmp_path / "small.pth"
    torch.save({"model": source.state_dict(), "epoch": torch.tensor(3)}, path)
    target = ssd_small(4)
    assert load_weights(target, path) == "ssd_ext"
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


def test_key_mismatch_lists_missing_unexpected_and_shapes():
    model = ssd_small(4)
    state = dict(model.state_dict())
    del state["loc.0.weight"]
    state["loc.9.weight"] = torch.zeros(1)
    state["conf.1.bias"] = torch.zeros(3)
    with pytest.raises(WeightLoadError) as info:
        load_weights(model, state)
    message = str(info.value)
    assert "missing keys (1): loc.0.weight" in message
    assert "unexpected keys (1): loc.9.weight" in message
    assert "conf.1.bias (file (3,), model (24,))" in message


def test_wrong_num_classes_from_ssd_pytorch_is_a_shape_error(torchvision_pair):
    legacy = to_ssd_pytorch(torchvision_pair[1].state_dict())  # NUM_CLASSES classes
    model = ssd300(81)
    with pytest.raises(WeightLoadError, match=r"shape mismatches \(12\).*conf\.0\.weight"):
        load_weights(model, legacy, layout="ssd_pytorch")


def test_stray_key_in_ssd_pytorch_checkpoint_is_reported():
    model = ssd_small(3)
    with pytest.raises(WeightLoadError, match="no ssd.pytorch equivalent"):
        to_ssd_pytorch(model.state_dict())
    legacy = {"L2Norm.weight": torch.ones(512), "priors": torch.zeros(4, 4)}
    with pytest.raises(WeightLoadError, match=r"unexpected keys \(1\): unmapped\.priors"):
        load_state_dict_checked(ssd300(3), from_ssd_pytorch(legacy), "ssd.pytorch state dict")


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "payload": _Payload()}, path)
    with pytest.raises(WeightLoadError, match="refused to unpickle an arbitrary object"):
        read_state_dict(path)
    assert not _Payload.ran


def test_unreadable_files_and_bad_contents(tmp_path):
    with pytest.raises(FileNotFoundError, match="weight file not found"):
        read_state_dict(tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a torch file\n" * 4)
    with pytest.raises(WeightLoadError, match="not a readable torch weight file"):
        load_weights(ssd_small(3), garbage)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(WeightLoadError, match="expected a non-empty state dict"):
        read_state_dict(listed)
    mixed = tmp_path / "mixed.pth"
    torch.save({"a.weight": torch.zeros(1), "note": "hello"}, mixed)
    with pytest.raises(WeightLoadError, match="'note' is a str, not a tensor"):
        read_state_dict(mixed)
    with pytest.raises(WeightLoadError, match="unrecognised state dict layout"):
        load_weights(ssd_small(3), {"something.else": torch.zeros(1)})
    with pytest.raises(WeightLoadError, match="unknown layout"):
        load_weights(ssd_small(3), ssd_small(3).state_dict(), layout="caffe")
    with pytest.raises(WeightLoadError, match="no VGG16 backbone"):
        load_vgg16_backbone(ssd_small(3), {"0.weight": torch.zeros(1)})


class _Payload:
    """Pickles as a call to a function; weights_only loading must never make that call."""

    ran = False

    def __reduce__(self):
        return (_mark_ran, ())


def _mark_ran():
    _Payload.ran = True
    return None


# ---------------------------------------------------------------------------- all-or-nothing loading


def _shifted_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() + 1 if v.is_floating_point() else v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind", ["sparse", "meta", "complex", "not_a_tensor"])
def test_failed_load_changes_nothing(kind):
    model = ssd_small(3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = _shifted_state(model)
    last = "conf.4.weight"  # the last entry: a copy in key order would have done all the others first
    assert list(state)[-1] == "conf.4.bias" and last in state
    if kind == "sparse":
        state[last] = state[last].to_sparse()
        pattern = "sparse_coo tensor; weights must be dense"
    elif kind == "meta":
        state[last] = torch.empty(state[last].shape, device="meta")
        pattern = "meta tensor"
    elif kind == "complex":
        state[last] = torch.complex(state[last], state[last])
        pattern = "complex .* drop the imaginary part"
    else:
        state[last] = [1.0, 2.0]
        pattern = "not a tensor"
    with pytest.raises(WeightLoadError, match=pattern):
        load_state_dict_checked(model, state)
    with pytest.raises(WeightLoadError, match=pattern):
        load_weights(model, state)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")
def test_sparse_tensor_in_a_file_is_refused(tmp_path):
    model = ssd_small(3)
    state = _shifted_state(model)
    state["loc.0.bias"] = state["loc.0.bias"].to_sparse()
    path = tmp_path / "sparse.pth"
    torch.save(state, path)
    before = model.loc[0].weight.detach().clone()
    with pytest.raises(WeightLoadError, match=r"loc\.0\.bias is a torch.sparse_coo tensor"):
        load_weights(model, path)
    assert torch.equal(model.loc[0].weight, before)
