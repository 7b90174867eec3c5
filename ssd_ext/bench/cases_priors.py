"""Benchmark cases of prior_boxes (uncached: the dispatcher op itself) against the reference."""

from __future__ import annotations

import ssd_reference as ref
import torch

from ssd_ext.bench.harness import Case
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


CASES = [
    _prior_boxes_case("SSD300", SSD300),
    _prior_boxes_case("SSD512", SSD512),
]
