"""Timing harness shared by the benchmarks: a Case names an op, its parameters and the
implementations to time side by side in one run (ours, the reference, peers)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

# An implementation is built for a device and returns a zero-argument callable to time.
ImplFactory = Callable[[str], Callable[[], object]]


@dataclass
class Case:
    op: str
    params: str
    impls: dict[str, ImplFactory]
    devices: tuple[str, ...] = ("cpu", "cuda")
    quick: bool = True  # part of the short run (`--quick`, `make demo`)
    # implementations that only make sense on some devices, e.g. {"torchvision loop": ("cuda",)}
    impl_devices: dict[str, tuple[str, ...]] = field(default_factory=dict)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_callable(fn: Callable[[], object], device: str, min_time_s: float = 0.2,
                  max_repeats: int = 50, warmup: int = 2) -> dict[str, float]:
    """Median and min wall time (ms) over repeats, after warm-up; CUDA is synchronised."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    samples: list[float] = []
    budget_start = time.perf_counter()
    while len(samples) < max_repeats:
        start = time.perf_counter()
        fn()
        synchronize(device)
        samples.append((time.perf_counter() - start) * 1e3)
        if len(samples) >= 3 and time.perf_counter() - budget_start > min_time_s:
            break
    return {"median_ms": statistics.median(samples), "min_ms": min(samples),
            "repeats": len(samples)}
