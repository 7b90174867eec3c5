"""Timing harness shared by the benchmarks: a Case names an op, its parameters and the
implementations to time side by side in one run (ours, the reference, peers)."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


def time_interleaved(fns: dict[str, Callable[[], object]], device: str, min_time_s: float = 0.2,
                     max_repeats: int = 50, warmup: int = 2) -> dict[str, dict[str, float]]:
    """time_callable for several implementations at once, interleaved: each round calls once
    every implementation that still wants samples (fewer than 3, or less than min_time_s spent,
    and fewer than max_repeats), so that load from other processes hits them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    spent = dict.fromkeys(fns, 0.0)

    def wants_more(name: str) -> bool:
        count = len(samples[name])
        return count < 3 or (spent[name] < min_time_s and count < max_repeats)

    while any(wants_more(name) for name in fns):
        for name, fn in fns.items():
            if not wants_more(name):
                continue
            start = time.perf_counter()
            fn()
            synchronize(device)
            elapsed = time.perf_counter() - start
            samples[name].append(elapsed * 1e3)
            spent[name] += elapsed
    return {name: {"median_ms": statistics.median(values), "min_ms": min(values),
                   "repeats": len(values)} for name, values in samples.items()}


def at_threads(factory: ImplFactory, count: int) -> ImplFactory:
    """The implementation run with `count` intra-op threads (torch.set_num_threads), the
    previous count restored after every call; for 1-thread vs n-thread rows in one run."""

    def build(device: str) -> Callable[[], object]:
        fn = factory(device)

        def run() -> object:
            previous = torch.get_num_threads()
            torch.set_num_threads(count)
            try:
                return fn()
            finally:
                torch.set_num_threads(previous)

        return run

    return build


def thread_rows(factory: ImplFactory, counts: tuple[int, ...] = (1, 2)) -> dict[str, ImplFactory]:
    """Rows "ssd_ext 1 thread", "ssd_ext 2 threads", ... of one implementation (CPU only)."""
    return {f"ssd_ext {n} thread{'s' if n > 1 else ''}": at_threads(factory, n) for n in counts}
