"""Benchmark cases of encode / decode against the reference and torchvision's BoxCoder
(weights (10, 10, 5, 5) = variances (0.1, 0.2))."""

from __future__ import annotations

import ssd_reference as ref
import torch
from ssd_reference.testing import random_boxes, random_priors

from ssd_ext import ops
from ssd_ext.bench.harness import Case


def _coding_inputs(batch: int, num_priors: int, device: str):
    generator = torch.Generator().manual_seed(0)
    priors = random_priors(num_priors, generator, min_size=0.05, max_size=0.55)
    boxes = random_boxes(batch * num_priors, generator, min_size=0.02, max_size=0.32)
    boxes = boxes.reshape(batch, num_priors, 4)
    loc = torch.randn(batch, num_priors, 4, generator=generator)
    return boxes.to(device), loc.to(device), priors.to(device)


def _box_coder_inputs(batch: int, num_priors: int, device: str):
    """torchvision's BoxCoder wants [N, 4] xyxy priors of the boxes' own length: expanded once."""
    from torchvision.models.detection._utils import BoxCoder
    from torchvision.ops import box_convert

    boxes, loc, priors = _coding_inputs(batch, num_priors, device)
    priors_xyxy = box_convert(priors, "cxcywh", "xyxy").expand(batch, -1, -1).reshape(-1, 4).contiguous()
    return BoxCoder(weights=(10.0, 10.0, 5.0, 5.0)), boxes.reshape(-1, 4), loc.reshape(-1, 4), priors_xyxy


def _coding_cases(batch: int, num_priors: int, quick: bool) -> list[Case]:
    params = f"{batch}x{num_priors}x4"

    def encode_ours(device):
        boxes, _, priors = _coding_inputs(batch, num_priors, device)
        return lambda: ops.encode(boxes, priors)

    def encode_reference(device):
        boxes, _, priors = _coding_inputs(batch, num_priors, device)
        return lambda: ref.encode(boxes, priors)

    def encode_torchvision(device):
        coder, boxes, _, priors_xyxy = _box_coder_inputs(batch, num_priors, device)
        return lambda: coder.encode_single(boxes, priors_xyxy)

    def decode_ours(device):
        _, loc, priors = _coding_inputs(batch, num_priors, device)
        return lambda: ops.decode(loc, priors)

    def decode_reference(device):
        _, loc, priors = _coding_inputs(batch, num_priors, device)
        return lambda: ref.decode(loc, priors)

    def decode_torchvision(device):
        coder, _, loc, priors_xyxy = _box_coder_inputs(batch, num_priors, device)
        return lambda: coder.decode_single(loc, priors_xyxy)

    return [
        Case("encode", params, {"ssd_ext": encode_ours, "reference": encode_reference,
                                "torchvision BoxCoder": encode_torchvision}, quick=quick),
        Case("decode", params, {"ssd_ext": decode_ours, "reference": decode_reference,
                                "torchvision BoxCoder": decode_torchvision}, quick=quick),
    ]


CASES = [
    *_coding_cases(32, 8732, quick=True),
]
