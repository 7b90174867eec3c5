"""Benchmark cases of the matching family: match (ours, the reference, torchvision's
per-image SSD matching), hard negative mining (ours, the reference, a double argsort) and the
MultiBox loss forward + backward (ours, the reference loss)."""

from __future__ import annotations

import ssd_reference as ref
import torch
from ssd_reference.testing import random_boxes

from ssd_ext import ops
from ssd_ext.bench.harness import Case, thread_rows
from ssd_ext.engine import MultiBoxLoss
from ssd_ext.models import SSD300_VOC, SSD512_VOC

_PRESETS = {"SSD300": SSD300_VOC, "SSD512": SSD512_VOC}
_PRIORS: dict[str, torch.Tensor] = {}


def _priors(name: str, device: str) -> torch.Tensor:
    if name not in _PRIORS:
        _PRIORS[name] = _PRESETS[name].build()
    return _PRIORS[name].to(device)


def _ground_truth(batch: int, count: int, device: str, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    boxes, labels = [], []
    for _ in range(batch):
        boxes.append(random_boxes(count, generator, min_size=0.03, max_size=0.53).to(device))
        labels.append(torch.randint(1, 21, (count,), generator=generator).to(device))
    return boxes, labels


def _torchvision_match(boxes, labels, priors):
    """torchvision's SSD matching, per image exactly as its SSD loss does it: box_iou of the
    ground truth with the anchors, SSDMatcher(0.5), and BoxCoder.encode_single of the matched
    boxes against their anchors (weights 10, 10, 5, 5 = 1 / variances). Nothing else is timed:
    the dense per-prior targets and labels our match also returns are not built here."""
    from torchvision.models.detection._utils import BoxCoder, SSDMatcher
    from torchvision.ops import box_iou

    matcher = SSDMatcher(0.5)
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    anchors = ref.cxcywh_to_xyxy(priors)

    def run():
        targets = []
        for gt_boxes in boxes:
            matched = matcher(box_iou(gt_boxes, anchors))
            foreground = torch.where(matched >= 0)[0]
            targets.append(coder.encode_single(gt_boxes[matched[foreground]], anchors[foreground]))
        return targets

    return run


def _match_case(batch: int, count: int, prior_name: str, quick: bool, scaling: bool = False) -> Case:
    def ours(device):
        boxes, labels = _ground_truth(batch, count, device)
        priors = _priors(prior_name, device)
        return lambda: ops.match(boxes, labels, priors)

    def reference(device):
        boxes, labels = _ground_truth(batch, count, device)
        priors = _priors(prior_name, device)
        return lambda: ref.match(boxes, labels, priors)

    def torchvision_impl(device):
        boxes, labels = _ground_truth(batch, count, device)
        return _torchvision_match(boxes, labels, _priors(prior_name, device))

    impls = {"ssd_ext": ours, "reference": reference, "torchvision loop": torchvision_impl}
    threads = thread_rows(ours) if scaling else {}
    return Case("match", f"B={batch} G={count} {prior_name}", {**impls, **threads}, quick=quick,
                impl_devices=dict.fromkeys(threads, ("cpu",)))


def _mining_inputs(batch: int, num_priors: int, device: str):
    generator = torch.Generator().manual_seed(1)
    loss = torch.rand(batch, num_priors, generator=generator) * 4
    labels = torch.where(torch.rand(batch, num_priors, generator=generator) < 0.005,
                         torch.randint(1, 21, (batch, num_priors), generator=generator), 0)
    return loss.to(device), labels.to(device)


def _double_argsort_mining(loss: torch.Tensor, labels: torch.Tensor, neg_pos_ratio: int = 3) -> torch.Tensor:
    """ssd.pytorch / torchvision style: rank of every prior by a double argsort."""
    positive = labels > 0
    num_neg = (neg_pos_ratio * positive.sum(dim=1, keepdim=True)).clamp(max=labels.shape[1] - 1)
    masked = loss.masked_fill(positive, 0.0)
    _, order = masked.sort(dim=1, descending=True)
    _, rank = order.sort(dim=1)
    return positive | (rank < num_neg)


def _mining_case(batch: int, num_priors: int, quick: bool, scaling: bool = False) -> Case:
    def ours(device):
        loss, labels = _mining_inputs(batch, num_priors, device)
        return lambda: ops.hard_negative_mining(loss, labels)

    def reference(device):
        loss, labels = _mining_inputs(batch, num_priors, device)
        return lambda: ref.hard_negative_mining(loss, labels)

    def double_argsort(device):
        loss, labels = _mining_inputs(batch, num_priors, device)
        return lambda: _double_argsort_mining(loss, labels)

    impls = {"ssd_ext": ours, "reference": reference, "double argsort": double_argsort}
    threads = thread_rows(ours) if scaling else {}
    return Case("hard_negative_mining", f"{batch}x{num_priors}", {**impls, **threads}, quick=quick,
                impl_devices=dict.fromkeys(threads, ("cpu",)))


def _loss_case(batch: int, count: int, prior_name: str, quick: bool) -> Case:
    num_classes = 21

    def inputs(device):
        priors = _priors(prior_name, device)
        generator = torch.Generator().manual_seed(2)
        num_priors = priors.shape[0]
        loc = torch.randn(batch, num_priors, 4, generator=generator).to(device).requires_grad_(True)
        conf = torch.randn(batch, num_priors, num_classes, generator=generator).to(device)
        conf.requires_grad_(True)
        boxes, labels = _ground_truth(batch, count, device)
        return priors, loc, conf, boxes, labels

    def ours(device):
        priors, loc, conf, boxes, labels = inputs(device)
        module = MultiBoxLoss(priors, num_classes).to(device)
        targets = [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels, strict=True)]

        def run():
            module(loc, conf, targets)["loss"].backward()

        return run

    def reference(device):
        priors, loc, conf, boxes, labels = inputs(device)

        def run():
            loc_loss, conf_loss = ref.multibox_loss(loc, conf, boxes, labels, priors)
            (loc_loss + conf_loss).backward()

        return run

    return Case("multibox_loss", f"fwd+bwd B={batch} G={count} {prior_name}",
                {"ssd_ext": ours, "reference": reference}, quick=quick)


CASES = [
    _match_case(8, 2, "SSD300", quick=True),
    _match_case(8, 8, "SSD300", quick=True),
    _match_case(8, 32, "SSD300", quick=False),
    _match_case(32, 2, "SSD300", quick=False),
    _match_case(32, 8, "SSD300", quick=True, scaling=True),
    _match_case(32, 32, "SSD300", quick=False),
    _match_case(8, 2, "SSD512", quick=False),
    _match_case(8, 8, "SSD512", quick=False),
    _match_case(8, 32, "SSD512", quick=False),
    _match_case(32, 2, "SSD512", quick=False),
    _match_case(32, 8, "SSD512", quick=False),
    _match_case(32, 32, "SSD512", quick=False),
    _mining_case(32, 8732, quick=True, scaling=True),
    _mining_case(32, 24564, quick=False),
    _loss_case(32, 8, "SSD300", quick=True),
]
