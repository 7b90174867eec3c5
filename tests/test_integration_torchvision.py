"""ssd_ext.integrations.torchvision: accelerate() keeps torchvision SSDs' detections and losses
(ssdlite320_mobilenet_v3_large, ssd300_vgg16 and a user-built SSD), documents where matching
differs, restore() undoes it, and the errors are clear."""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch
import torchvision
from helpers import he_init, order_ties
from torch import nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD as TorchvisionSSD

from ssd_ext import ops
from ssd_ext.integrations.torchvision import accelerate, is_accelerated, restore
from ssd_ext.models import build_model


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread (two spin-wait on each other on a small shared machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)



@pytest.fixture(scope="module")
def ssdlite():
    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=6)
    return he_init(model).eval()


def _pictures(seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(3, 320, 320, generator=generator), torch.rand(3, 240, 360, generator=generator)]



def _assert_same_detections(got: list[dict], expected: list[dict], minimum: int) -> None:
    for mine, theirs in zip(got, expected, strict=True):
        assert mine["boxes"].shape == theirs["boxes"].shape and mine["boxes"].shape[0] >= minimum
        torch.testing.assert_close(mine["scores"], theirs["scores"], rtol=1e-5, atol=1e-6)
        assert torch.equal(mine["labels"], theirs["labels"])
        torch.testing.assert_close(order_ties(mine), order_ties(theirs), rtol=1e-4, atol=1e-3)


def test_ssdlite_detections_unchanged_and_restore(ssdlite):
    pictures = _pictures()
    with torch.no_grad():
        expected = ssdlite(pictures)
        assert accelerate(ssdlite) is ssdlite and is_accelerated(ssdlite)
        assert accelerate(ssdlite) is ssdlite  # a second call changes nothing
        got = ssdlite(pictures)
        restore(ssdlite)
        again = ssdlite(pictures)
    # torchvision's thresholds (score 0.001, 300 candidates, NMS 0.55, 300 per image) fill all 300.
    _assert_same_detections(got, expected, minimum=300)
    assert not is_accelerated(ssdlite) and "postprocess_detections" not in vars(ssdlite)
    assert type(ssdlite.proposal_matcher) is det_utils.SSDMatcher
    assert all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(again, expected, strict=True))
    assert restore(ssdlite) is ssdlite  # restoring a model that is not accelerated is a no-op


def test_ssd300_vgg16_detections_unchanged():
    # Built on the meta device: ssd300_vgg16 first builds a whole vgg16 and drops its classifier.
    with torch.device("meta"):
        model = torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None, num_classes=5)
    model = model.to_empty(device="cpu").eval()
    model.anchor_generator = DefaultBoxGenerator(  # its (w, h) table was made on meta
        [[2], [2, 3], [2, 3], [2, 3], [2], [2]], scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],
        steps=[8, 16, 32, 64, 100, 300])
    torch.manual_seed(0)
    with torch.no_grad():  # Xavier as torchvision's own init (no BatchNorm here), random biases
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0.0, 0.05)
            elif parameter.dim() == 4:
                nn.init.xavier_uniform_(parameter)
        model.backbone.scale_weight.uniform_(10.0, 30.0)
        # One network pass; torchvision's own post-processing (the class's method) and the
        # accelerated one (the instance's) on the same head outputs.
        batch, _ = model.transform(_pictures()[:1])
        features = list(model.backbone(batch.tensors).values())
        heads = model.head(features)
        anchors = model.anchor_generator(batch, features)
        expected = TorchvisionSSD.postprocess_detections(model, heads, anchors, batch.image_sizes)
        got = accelerate(model).postprocess_detections(heads, anchors, batch.image_sizes)
    _assert_same_detections(got, expected, minimum=50)


class _TinyBackbone(nn.Module):
    """A user's own backbone: two feature maps (8x8 and 4x4 at 64 px)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Sequential(nn.Conv2d(3, 16, 3, 4, 1), nn.ReLU(),
                                   nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())
        self.second = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())
        self.out_channels = [16, 16]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        first = self.first(x)
        return {"0": first, "1": self.second(first)}


def _user_ssd(**kwargs) -> TorchvisionSSD:
    torch.manual_seed(0)
    model = TorchvisionSSD(_TinyBackbone(), DefaultBoxGenerator([[2], [2, 3]]), (64, 64), num_classes=4,
                           **kwargs)
    return he_init(model)


def _targets(boxes: list[list[list[float]]], labels: list[list[int]]) -> list[dict[str, torch.Tensor]]:
    return [{"boxes": torch.tensor(b, dtype=torch.float32).reshape(-1, 4),
             "labels": torch.tensor(k, dtype=torch.int64)} for b, k in zip(boxes, labels, strict=True)]


def _has_conflict(model: TorchvisionSSD, pictures: list, targets: list) -> bool:
    """Whether two ground truths of an image have the same best prior (torchvision's matcher
    then gives that prior to the last of them; ours gives each its own)."""
    images, resized = model.transform(pictures, [dict(t) for t in targets])
    features = list(model.backbone(images.tensors).values())
    anchors = model.anchor_generator(images, features)
    for anchors_of_image, target in zip(anchors, resized, strict=True):
        best = torchvision.ops.box_iou(target["boxes"], anchors_of_image).argmax(dim=1)
        if best.unique().numel() < best.numel():
            return True
    return False


def test_user_built_ssd_detections_losses_and_gradients():
    model = _user_ssd(score_thresh=0.02, topk_candidates=50, detections_per_img=40)
    pictures = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(k)) for k in range(3)]
    targets = _targets([[[2, 3, 30, 28], [36, 30, 62, 60]], [[10, 12, 50, 44]], []],
                       [[1, 2], [3], []])  # the third picture has no objects
    assert not _has_conflict(model, pictures, targets)
    with torch.no_grad():
        expected = model.eval()(pictures)
    results = {}
    for name in ("torchvision", "ssd_ext"):
        if name == "ssd_ext":
            accelerate(model)
        model.train().zero_grad()
        losses = model(pictures, targets)
        sum(losses.values()).backward()
        results[name] = (losses, [p.grad.clone() for p in model.parameters()])
    with torch.no_grad():
        got = model.eval()(pictures)
    _assert_same_detections(got, expected, minimum=10)
    (theirs, their_grads), (ours, our_grads) = results["torchvision"], results["ssd_ext"]
    assert set(ours) == {"bbox_regression", "classification"} and ours["classification"] > 0
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-6)
    for mine, reference in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-6)


def test_ssdlite_losses_equal_without_conflicts(ssdlite):
    pictures = _pictures(seed=4)
    # Boxes in picture pixels, apart from each other (so no two claim the same prior).
    targets = _targets([[[10, 20, 120, 150], [180, 40, 300, 130], [60, 200, 200, 310]],
                        [[20, 30, 140, 200], [200, 60, 340, 230]]], [[1, 4, 5], [2, 3]])
    assert not _has_conflict(ssdlite, pictures, targets)
    losses = {}
    for name in ("torchvision", "ssd_ext"):
        if name == "ssd_ext":
            accelerate(ssdlite)
        ssdlite.train()
        with torch.no_grad():
            losses[name] = ssdlite(pictures, targets)
    restore(ssdlite).eval()
    for key, value in losses["torchvision"].items():
        torch.testing.assert_close(losses["ssd_ext"][key], value, rtol=1e-5, atol=1e-6)


def test_conflicting_ground_truth_follows_our_matching_rule():
    # Two equal boxes far smaller than any prior: no prior reaches IoU 0.5, so each is matched
    # only through its best prior, and both have the same one. torchvision gives it to the
    # later box (the first is left unmatched); ours gives the first box its best prior and
    # the second its next best (docs/ARCHITECTURE.md "Matching").
    model = _user_ssd()
    pictures = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))]
    targets = _targets([[[20, 20, 23, 23], [20, 20, 23, 23]]], [[1, 2]])
    assert _has_conflict(model, pictures, targets)
    images, resized = model.transform(pictures, [dict(t) for t in targets])
    anchors = model.anchor_generator(images, list(model.backbone(images.tensors).values()))[0]
    matched = model.proposal_matcher(torchvision.ops.box_iou(resized[0]["boxes"], anchors))
    assert matched[matched >= 0].tolist() == [1]
    priors = torch.cat([(anchors[:, :2] + anchors[:, 2:]) / 2, anchors[:, 2:] - anchors[:, :2]], dim=1)
    _, labels = ops.match([resized[0]["boxes"]], [resized[0]["labels"]], priors, 0.5)
    assert sorted(labels[labels > 0].tolist()) == [1, 2]
    model.train()
    with torch.no_grad():
        theirs = model(pictures, targets)
        ours = accelerate(model)(pictures, targets)
    assert not torch.isclose(ours["classification"], theirs["classification"])


def test_errors_and_partial_acceleration():
    with pytest.raises(TypeError, match="torchvision.models.detection.SSD.*ssd_ext.models.ssd.SSD"):
        accelerate(build_model("ssd_small", 3))
    with pytest.raises(TypeError, match="torchvision"):
        restore(nn.Linear(2, 2))
    model = _user_ssd()
    model.box_coder = det_utils.BoxCoder(weights=(10.0, 5.0, 5.0, 5.0))
    with pytest.raises(ValueError, match=r"box_coder\.weights must be \(a, a, b, b\)"):
        accelerate(model)
    assert not is_accelerated(model)
    # A matcher other than SSDMatcher: the loss stays torchvision's, post-processing is ours.
    model = _user_ssd()
    model.proposal_matcher = det_utils.Matcher(0.5, 0.4)
    with pytest.warns(UserWarning, match="loss stays torchvision's because its proposal_matcher is a "
                                         "Matcher"):
        accelerate(model)
    assert "postprocess_detections" in vars(model) and "compute_loss" not in vars(model)
    restore(model)
    assert type(model.proposal_matcher) is det_utils.Matcher
    model = _user_ssd(positive_fraction=0.3)  # neg_to_pos_ratio 7/3
    with pytest.warns(UserWarning, match="neg_to_pos_ratio"):
        accelerate(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        accelerate(_user_ssd())  # the usual case warns about nothing


def test_torchvision_is_imported_only_when_called(monkeypatch):
    import builtins

    from ssd_ext.integrations import torchvision as integration

    real_import = builtins.__import__

    def without_torchvision(name, *args, **kwargs):
        if name == "torchvision" or name.startswith("torchvision."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_torchvision)
    importlib.reload(integration)  # importing the module needs no torchvision ...
    with pytest.raises(ImportError, match="needs torchvision"):  # ... calling it does
        integration.accelerate(nn.Linear(2, 2))
    monkeypatch.undo()
    importlib.reload(integration)
