"""Benchmark cases of box_iou against the reference and torchvision."""

from __future__ import annotations

import ssd_reference as ref
import torch
from ssd_reference.testing import random_boxes

from ssd_ext import ops
from ssd_ext.bench.harness import Case, thread_rows


def _random_boxes(count: int, device: str, seed: int) -> torch.Tensor:
    return random_boxes(count, torch.Generator().manual_seed(seed), min_size=0.02, max_size=0.32).to(device)


def _box_iou_case(n: int, m: int, quick: bool, scaling: bool = False) -> Case:
    """With `scaling`, also ssd_ext on 1 and 2 threads and the bound of writing the output:
    a fill of a float32 [n, m] tensor (allocated each call, as the op allocates its output)."""

    def inputs(device):
        return _random_boxes(n, device, 0), _random_boxes(m, device, 1)

    def ours(device):
        a, b = inputs(device)
        return lambda: ops.box_iou(a, b)

    def reference(device):
        a, b = inputs(device)
        return lambda: ref.box_iou(a, b)

    def torchvision_impl(device):
        import torchvision

        a, b = inputs(device)
        return lambda: torchvision.ops.box_iou(a, b)

    def fill_output(device):
        return lambda: torch.full((n, m), 0.5, device=device)

    impls = {"ssd_ext": ours, "reference": reference, "torchvision": torchvision_impl}
    cpu_only: dict[str, tuple[str, ...]] = {}
    if scaling:
        extra = {**thread_rows(ours), "fill of the output (bound)": fill_output}
        impls.update(extra)
        cpu_only = dict.fromkeys(extra, ("cpu",))
    return Case("box_iou", f"{n}x{m}", impls, quick=quick, impl_devices=cpu_only)


CASES = [
    _box_iou_case(8732, 50, quick=True),
    _box_iou_case(5000, 5000, quick=True, scaling=True),
    _box_iou_case(24564, 200, quick=False),
]
