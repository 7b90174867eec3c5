"""The random draws of the augmentation: every step draws through these four functions.

A ``generator`` is a ``torch.Generator``, a ``numpy.random.Generator`` or ``None`` (torch's
global generator). Each function consumes the same number of values from it on every call,
so a pipeline's draws depend only on the generator's state and the order of the calls. The
steps expose their decisions as ``draw`` methods built on these (``PhotometricDistort.draw``,
``Expand.draw``, ``MinIoURandomCrop.draw``, ``RandomHorizontalFlip.draw``); the float
reference (``ssd_reference.transforms``) calls those same methods, which is what makes it
draw exactly what the production path draws.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["RandomSource", "random_float", "random_int", "random_permutation", "random_uniform"]

RandomSource = torch.Generator | np.random.Generator | None


def random_float(generator: RandomSource) -> float:
    """Uniform float in [0, 1) (a float64 draw)."""
    if isinstance(generator, np.random.Generator):
        return float(generator.random())
    return float(torch.rand((), generator=generator, dtype=torch.float64))


def random_uniform(generator: RandomSource, low: float, high: float) -> float:
    """Uniform float in [low, high): one :func:`random_float` draw."""
    return low + (high - low) * random_float(generator)


def random_int(generator: RandomSource, high: int) -> int:
    """Uniform integer in [0, high] (inclusive)."""
    if isinstance(generator, np.random.Generator):
        return int(generator.integers(0, high + 1))
    return int(torch.randint(0, high + 1, (), generator=generator))


def random_permutation(generator: RandomSource, n: int) -> np.ndarray:
    """A uniformly random permutation of ``range(n)`` (int64 ``[n]``)."""
    if isinstance(generator, np.random.Generator):
        return generator.permutation(n)
    return torch.randperm(n, generator=generator).numpy()
