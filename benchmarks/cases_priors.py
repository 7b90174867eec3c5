"""Benchmark cases of prior_boxes (uncached: the dispatcher op itself) and of encode / decode
against the reference and torchvision's BoxCoder (weights (10, 10, 5, 5) = variances
(0.1, 0.2))."""

from __future__ import annotations

import ssd_reference as ref
import torch

from benchmarks.harness import Case
from ssd_ext import ops
from ssd_ext.models import SSD300_VOC, SSD512_VOC, PriorConfig
from ssd_ext.ops.priors import _normalise_prior_args


def _config_kwargs(preset: PriorConfig) -> dict:
    """The preset's arguments of prior_boxes (its offset and clip are the defaults)."""
    fields = ("feature_map_sizes", "image_size", "min_sizes", "max_sizes", "aspect_ratios", "steps")
    return {name: getattr(preset, name) for name in fields}


SSD300 = _config_kwargs(SSD300_VOC)
SSD512 = _config_kwargs(SSD512_VOC)


def _prior_boxes_case(name: str, config: dict) -> Case:
    def ours(device):
        # The dispatcher op, not the cached wrapper: every call builds the priors.
        fmaps, image, mins, maxes, ratios, counts, steps, offset, clip, dtype = _normalise_prior_args(
            config["feature_map_sizes"], config["image_size"], config["min_sizes"], config["max_sizes"],
            config["aspect_ratios"], config["steps"], 0.5, True, None)
        op = torch.ops.ssd_ext.prior_boxes.default
        args = (list(fmaps), list(image), list(mins), list(maxes), list(ratios), list(counts), list(steps),
                offset, clip)
        return lambda: op(*args, dtype=dtype, device=torch.device(device))

    def reference(device):
        return lambda: ref.prior_boxes(**config, device=device)

    return Case("prior_boxes", name, {"ssd_ext": ours, "reference": reference})


def _coding_inputs(batch: int, num_priors: int, device: str):
    generator = torch.Generator().manual_seed(0)
    centres = torch.rand(num_priors, 2, generator=generator)
    sizes = 0.05 + 0.5 * torch.rand(num_priors, 2, generator=generator)
    priors = torch.cat([centres, sizes], dim=1)
    xy = torch.rand(batch, num_priors, 2, generator=generator)
    wh = 0.02 + 0.3 * torch.rand(batch, num_priors, 2, generator=generator)
    boxes = torch.cat([xy, xy + wh], dim=-1)
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
    _prior_boxes_case("SSD300", SSD300),
    _prior_boxes_case("SSD512", SSD512),
    *_coding_cases(32, 8732, quick=True),
]
