"""Colour: Caffe SSD's photometric distortion and the HSV math behind it.

:class:`PhotometricDistort` follows Caffe SSD's ``ssd_pascal.py`` settings: brightness +-32,
contrast and saturation factors in [0.5, 1.5], hue +-18 degrees, each taken with probability
0.5, contrast before or after the HSV steps with probability 0.5. Values are clipped to
[0, 255] after each step, as Caffe's 8-bit OpenCV images saturate. The random channel swap is
available but off by default (Caffe's ``random_order_prob`` is 0; ssd.pytorch uses 0.5).

:meth:`PhotometricDistort.draw` makes the random draws and returns them as a
:class:`Distortion`, a pointwise map of float32 RGB planes; on a LazyImage the map is only
recorded and runs later on the visible pixels (it commutes with expand, crop and flip).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .draws import RandomSource, random_float, random_permutation, random_uniform
from .lazy_image import LazyImage, as_lazy
from .step import Sample, Transform

__all__ = ["Distortion", "PhotometricDistort", "adjust_saturation_hue", "hsv_to_rgb", "rgb_to_hsv"]


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """``[..., 3]`` RGB in [0, 1] -> HSV with hue in [0, 1) (a full turn is 1), S and V in [0, 1]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    maxc = np.maximum(np.maximum(r, g), b)
    delta = maxc - np.minimum(np.minimum(r, g), b)
    with np.errstate(divide="ignore", invalid="ignore"):
        saturation = np.where(maxc > 0, delta / maxc, 0.0)
        hue = np.where(maxc == r, (g - b) / delta,
                       np.where(maxc == g, 2.0 + (b - r) / delta, 4.0 + (r - g) / delta))
    hue = np.where(delta > 0, (hue / 6.0) % 1.0, 0.0)
    return np.stack([hue, saturation, maxc], axis=-1).astype(rgb.dtype, copy=False)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_hsv`."""
    hue6 = (hsv[..., 0] % 1.0) * 6.0
    chroma = hsv[..., 2] * hsv[..., 1]
    channels = []
    # Channel n (R: 5, G: 3, B: 1) is v - c * clip(min(k, 4 - k), 0, 1) with k = (n + 6h) mod 6.
    for n in (5.0, 3.0, 1.0):
        k = (hue6 + n) % 6.0
        channels.append(hsv[..., 2] - chroma * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))
    return np.stack(channels, axis=-1).astype(hsv.dtype, copy=False)


def adjust_saturation_hue(planes: np.ndarray, saturation: float | None,
                          hue_degrees: float | None) -> np.ndarray:
    """float32 RGB planes ``[3, ...]`` in [0, 255]: saturation times ``saturation`` (clipped
    to 1) and hue plus ``hue_degrees``, in HSV, without building the HSV image.

    With V the max channel and C = V - min the chroma, HSV's saturation is C / V and each
    channel is ``V - C * w`` for a weight ``w`` in [0, 1] set by the hue alone. So scaling
    the saturation scales C (to at most V), and a hue shift recomputes the weights: the same
    values as ``hsv_to_rgb`` of ``rgb_to_hsv`` with S and H changed, in fewer passes over
    contiguous planes (numpy's strided and ``mod`` loops are slow)."""
    r, g, b = planes[0], planes[1], planes[2]
    # In place where possible: fresh large arrays cost page faults, masked ufuncs and
    # np.where are slow loops, so the sector choice is arithmetic on 0/1 planes.
    value = np.maximum(r, g)
    np.maximum(value, b, out=value)
    chroma = np.minimum(r, g)
    np.minimum(chroma, b, out=chroma)
    np.subtract(value, chroma, out=chroma)
    new_chroma = chroma
    if saturation is not None:
        new_chroma = chroma * np.float32(saturation)
        np.minimum(new_chroma, value, out=new_chroma)
    out = np.empty_like(planes)
    # 1 / C, with grey pixels (C = 0, every channel equal to V) given any finite value.
    inverse = np.maximum(chroma, np.float32(1e-6))
    np.divide(np.float32(1.0), inverse, out=inverse)
    if hue_degrees is None:
        # Same hue: every channel keeps its weight, so it moves away from V by C' / C.
        np.multiply(new_chroma, inverse, out=inverse)
        for channel in range(3):
            np.subtract(value, planes[channel], out=out[channel])
            np.multiply(out[channel], inverse, out=out[channel])
            np.subtract(value, out[channel], out=out[channel])
        return np.clip(out, 0.0, 255.0, out=out)
    hue6, scratch = _shifted_hue(planes, value, chroma, inverse, hue_degrees, out[0])
    return _channels_at_hue(value, new_chroma, hue6, scratch, out)


def _shifted_hue(planes: np.ndarray, value: np.ndarray, chroma: np.ndarray, inverse: np.ndarray,
                 hue_degrees: float, hue6: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """HSV's hue of ``planes`` plus ``hue_degrees``, in sixths of a turn in [0, 6), written into
    ``hue6``; also two scratch planes for :func:`_channels_at_hue`."""
    r, g, b = planes[0], planes[1], planes[2]
    # Hue in sixths of a turn: (g - b) / C if R is the max, 2 + (b - r) / C if G, else
    # 4 + (r - g) / C; the first max wins ties, as in rgb_to_hsv.
    is_r = (value == r).astype(np.float32)
    is_g = (value == g).astype(np.float32)
    np.multiply(is_g, np.float32(1.0) - is_r, out=is_g)
    np.subtract(r, g, out=hue6)  # sector of B
    hue6 += np.float32(4.0) * chroma
    sector = np.subtract(b, r)  # sector of G
    sector += np.float32(2.0) * chroma
    sector -= hue6
    sector *= is_g
    hue6 += sector
    np.subtract(g, b, out=sector)  # sector of R
    sector -= hue6
    sector *= is_r
    hue6 += sector
    hue6 *= inverse  # in [-1, 5]
    hue6 += np.float32(hue_degrees / 60.0 + 6.0)  # in [0, 12) for |shift| < 180 degrees
    np.multiply(hue6, np.float32(1.0 / 6.0), out=sector)
    np.floor(sector, out=sector)
    sector *= np.float32(6.0)
    hue6 -= sector  # now in [0, 6)
    return hue6, (sector, is_r)


def _channels_at_hue(value: np.ndarray, new_chroma: np.ndarray, hue6: np.ndarray,
                     scratch: tuple[np.ndarray, np.ndarray], out: np.ndarray) -> np.ndarray:
    """RGB planes of value ``value``, chroma ``new_chroma`` and hue ``hue6`` (sixths of a turn,
    in [0, 6)) written into ``out`` (whose channel 0 may be ``hue6``: it is written last)."""
    weight, step = scratch
    for channel, n in ((2, 1.0), (1, 3.0), (0, 5.0)):
        # Channel n (R: 5, G: 3, B: 1): V - C' * clip(min(k, 4 - k), 0, 1), k = (n + h) mod 6.
        np.add(hue6, np.float32(n - 6.0), out=weight)  # k - 6, in [n - 6, n)
        np.multiply(weight, np.float32(1.0 / 6.0), out=step)
        np.floor(step, out=step)  # -1 where k < 6, else 0
        step *= np.float32(6.0)
        weight -= step  # k mod 6
        np.subtract(np.float32(4.0), weight, out=step)
        np.minimum(weight, step, out=weight)
        np.clip(weight, 0.0, 1.0, out=weight)
        weight *= new_chroma
        np.subtract(value, weight, out=out[channel])
    return np.clip(out, 0.0, 255.0, out=out)


@dataclass(frozen=True, eq=False)
class Distortion:
    """One draw of :class:`PhotometricDistort`, and the pointwise colour map it makes.

    Each parameter is ``None`` when its step was not taken: ``brightness`` is added,
    ``contrast`` multiplies, ``saturation`` multiplies HSV's saturation (clipped to 1),
    ``hue`` (degrees) is added to HSV's hue; contrast runs before the two HSV steps when
    ``contrast_first``, after them otherwise; ``permutation`` (int ``[3]``) reorders the
    channels last. Called on float32 RGB planes ``[3, ...]`` in [0, 255] it returns the mapped
    planes (computed in place where it can)."""

    brightness: float | None
    contrast: float | None
    saturation: float | None
    hue: float | None
    contrast_first: bool
    permutation: np.ndarray | None

    def is_identity(self) -> bool:
        return (self.brightness is None and self.contrast is None and self.saturation is None
                and self.hue is None and self.permutation is None)

    def _contrast(self, planes: np.ndarray) -> np.ndarray:
        if self.contrast is None:
            return planes
        planes *= np.float32(self.contrast)
        return np.clip(planes, 0.0, 255.0, out=planes)

    def _hsv(self, planes: np.ndarray) -> np.ndarray:
        if self.saturation is None and self.hue is None:
            return planes
        return adjust_saturation_hue(planes, self.saturation, self.hue)

    def __call__(self, planes: np.ndarray) -> np.ndarray:
        """Map ``planes`` (float32 ``[3, ...]``, which it may overwrite); returns the result."""
        if self.brightness is not None:
            planes += np.float32(self.brightness)
            np.clip(planes, 0.0, 255.0, out=planes)
        if self.contrast_first:
            planes = self._hsv(self._contrast(planes))
        else:
            planes = self._contrast(self._hsv(planes))
        if self.permutation is not None:
            planes = planes[self.permutation]
        return planes


class PhotometricDistort(Transform):
    """Caffe SSD's random brightness, contrast, saturation, hue (and optional channel swap),
    each step taken with probability ``p``, the swap with ``channel_swap_p``.

    The draws are made here (:meth:`draw`); the colour map is recorded on the
    :class:`LazyImage` and runs later on the visible pixels only (a fill colour already
    showing is mapped at once)."""

    def __init__(self, brightness_delta: float = 32.0, contrast_range: tuple[float, float] = (0.5, 1.5),
                 saturation_range: tuple[float, float] = (0.5, 1.5), hue_delta: float = 18.0,
                 p: float = 0.5, channel_swap_p: float = 0.0) -> None:
        self.brightness_delta = brightness_delta
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = hue_delta
        self.p = p
        self.channel_swap_p = channel_swap_p

    def _maybe_uniform(self, generator: RandomSource, low: float, high: float) -> float | None:
        """With probability ``p`` a uniform draw in [low, high), else None (one or two draws)."""
        return random_uniform(generator, low, high) if random_float(generator) < self.p else None

    def _draw_contrast(self, generator: RandomSource) -> float | None:
        return self._maybe_uniform(generator, *self.contrast_range)

    def _draw_hsv(self, generator: RandomSource) -> tuple[float | None, float | None]:
        saturation = self._maybe_uniform(generator, *self.saturation_range)
        hue = self._maybe_uniform(generator, -self.hue_delta, self.hue_delta)
        return saturation, hue

    def draw(self, generator: RandomSource = None) -> Distortion:
        """Make this step's random draws (in the order Caffe makes them)."""
        brightness = self._maybe_uniform(generator, -self.brightness_delta, self.brightness_delta)
        contrast_first = random_float(generator) < 0.5
        if contrast_first:
            contrast = self._draw_contrast(generator)
            saturation, hue = self._draw_hsv(generator)
        else:
            saturation, hue = self._draw_hsv(generator)
            contrast = self._draw_contrast(generator)
        swap = random_float(generator) < self.channel_swap_p
        permutation = random_permutation(generator, 3) if swap else None
        return Distortion(brightness, contrast, saturation, hue, contrast_first, permutation)

    def apply(self, image: np.ndarray | LazyImage, boxes: torch.Tensor, labels: torch.Tensor,
              generator: RandomSource = None) -> Sample:
        distortion = self.draw(generator)
        image = as_lazy(image)
        return (image if distortion.is_identity() else image.distorted(distortion)), boxes, labels

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(brightness_delta={self.brightness_delta}, contrast_range="
                f"{self.contrast_range}, saturation_range={self.saturation_range}, "
                f"hue_delta={self.hue_delta}, p={self.p}, channel_swap_p={self.channel_swap_p})")

