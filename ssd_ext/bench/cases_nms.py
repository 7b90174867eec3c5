"""Benchmark cases of nms and batched_nms against the reference and torchvision.ops.nms /
batched_nms."""

from __future__ import annotations

import ssd_reference as ref
import torch
from ssd_reference.testing import random_boxes

from ssd_ext import ops
from ssd_ext.bench.harness import Case

IOU_THRESHOLD = 0.45


def _random_boxes(count: int, seed: int) -> torch.Tensor:
    return random_boxes(count, torch.Generator().manual_seed(seed), min_size=0.02, max_size=0.32)


def _unique_scores(count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randperm(count, generator=generator).float() + 1) / (count + 1)


def _nms_case(n: int, quick: bool, with_reference: bool) -> Case:
    def inputs(device):
        return _random_boxes(n, 0).to(device), _unique_scores(n, 1).to(device)

    def ours(device):
        boxes, scores = inputs(device)
        return lambda: ops.nms(boxes, scores, IOU_THRESHOLD)

    def reference(device):
        boxes, scores = inputs(device)
        return lambda: ref.nms(boxes, scores, IOU_THRESHOLD)

    def torchvision_impl(device):
        import torchvision

        boxes, scores = inputs(device)
        return lambda: torchvision.ops.nms(boxes, scores, IOU_THRESHOLD)

    impls = {"ssd_ext": ours, "torchvision": torchvision_impl}
    if with_reference:
        impls["reference"] = reference
    return Case("nms", f"N={n}", impls, quick=quick)


def _batched_nms_case(n: int, classes: int, quick: bool, with_reference: bool) -> Case:
    def inputs(device):
        idxs = torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(2))
        return _random_boxes(n, 0).to(device), _unique_scores(n, 1).to(device), idxs.to(device)

    def ours(device):
        boxes, scores, idxs = inputs(device)
        return lambda: ops.batched_nms(boxes, scores, idxs, IOU_THRESHOLD)

    def reference(device):
        boxes, scores, idxs = inputs(device)
        return lambda: ref.batched_nms(boxes, scores, idxs, IOU_THRESHOLD)

    def torchvision_impl(device):
        import torchvision

        boxes, scores, idxs = inputs(device)
        return lambda: torchvision.ops.batched_nms(boxes, scores, idxs, IOU_THRESHOLD)

    impls = {"ssd_ext": ours, "torchvision": torchvision_impl}
    if with_reference:
        impls["reference"] = reference
    return Case("batched_nms", f"N={n}, {classes} classes", impls, quick=quick)


CASES = [
    _nms_case(1000, quick=True, with_reference=True),
    _nms_case(5000, quick=True, with_reference=True),
    _nms_case(20000, quick=False, with_reference=False),
    _batched_nms_case(5000, 20, quick=True, with_reference=True),
    _batched_nms_case(20000, 80, quick=False, with_reference=False),
]
