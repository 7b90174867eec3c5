"""A uint8 RGB image kept as a recipe (:class:`LazyImage`), and the pixel helpers it uses.

The geometric steps (expand, crop, flip) only move the source on a canvas and the colour
step only records pointwise colour maps; :meth:`LazyImage.resized` computes pixels once, at
the output size, from the part of the source that is still visible. Pixels are numpy arrays
(and PIL for resampling) because their elementwise math is single-threaded: torch's
intra-op threads only slow small images down.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["LazyImage", "as_lazy", "from_planes", "resample", "to_planes", "to_uint8"]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float values in [0, 255] -> uint8, rounded half up."""
    return (image + np.float32(0.5)).astype(np.uint8)


def resample(array: np.ndarray, size: tuple[int, int],
             box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """uint8 ``[h, w, 3]`` -> uint8 ``[size[0], size[1], 3]`` with PIL's bilinear filter
    (antialiased when shrinking); ``box`` is the region of ``array`` mapped to the output, in
    its pixels (PIL's ``resize(box=...)``: the filter may read outside the box, up to the
    array's edges)."""
    height, width = size
    image = Image.fromarray(np.ascontiguousarray(array), mode="RGB")
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR, box=box))


class LazyImage:
    """A uint8 RGB image ``[height, width, 3]`` kept as a recipe instead of pixels.

    The image is a ``height x width`` canvas of colour ``fill`` (RGB floats in [0, 255]) on
    which ``source`` (uint8 ``[h, w, 3]``, read only), mirrored left-right when ``mirrored``,
    with the pointwise maps ``pointwise`` applied in order (each takes and returns float32
    RGB planes ``[3, ...]`` in [0, 255]), has its top-left pixel at row ``top``, column ``left``
    (either may be negative: a crop can cut the source). Integer placement makes expand, crop
    and flip exact index arithmetic, so composing them here and computing pixels once gives
    the pixels of doing them one after another.

    Instances are never changed in place: the steps return new ones sharing ``source``.
    """

    __slots__ = ("source", "height", "width", "top", "left", "mirrored", "fill", "pointwise")
    dtype = np.dtype(np.uint8)

    def __init__(self, source: np.ndarray) -> None:
        if not (isinstance(source, np.ndarray) and source.dtype == np.uint8 and source.ndim == 3
                and source.shape[2] == 3):
            raise TypeError(f"LazyImage source must be a uint8 array [H, W, 3], got "
                            f"{type(source).__name__} {getattr(source, 'shape', '')} "
                            f"{getattr(source, 'dtype', '')}")
        self.source = source
        self.height, self.width = int(source.shape[0]), int(source.shape[1])
        self.top = 0
        self.left = 0
        self.mirrored = False
        self.fill: tuple[float, float, float] = (0.0, 0.0, 0.0)
        self.pointwise: tuple[Callable[[np.ndarray], np.ndarray], ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.height, self.width, 3

    def _replace(self, **changes: Any) -> LazyImage:
        out = LazyImage.__new__(LazyImage)
        for name in self.__slots__:
            setattr(out, name, changes.get(name, getattr(self, name)))
        return out

    def _visible(self) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)``: the canvas rectangle the source covers (may be empty)."""
        h, w = self.source.shape[:2]
        return (max(self.top, 0), min(self.top + h, self.height),
                max(self.left, 0), min(self.left + w, self.width))

    def covers_canvas(self) -> bool:
        """Whether the source covers the whole canvas (no fill shows)."""
        return self._visible() == (0, self.height, 0, self.width)

    # -- the steps ------------------------------------------------------------------------
    def distorted(self, op: Callable[[np.ndarray], np.ndarray]) -> LazyImage:
        """Apply a pointwise colour map (float32 RGB planes ``[3, ...]`` -> same, which may
        overwrite its input) to every pixel."""
        fill = self.fill
        if not self.covers_canvas():  # the fill shows, so it changes too
            fill = tuple(float(v) for v in op(np.array(fill, dtype=np.float32).reshape(3, 1))[:, 0])
        return self._replace(pointwise=self.pointwise + (op,), fill=fill)

    def expanded(self, height: int, width: int, top: int, left: int,
                 fill: Sequence[float]) -> LazyImage:
        """Place this image at ``(top, left)`` of a ``height x width`` canvas of ``fill``."""
        fill = tuple(float(v) for v in fill)
        image = self._clipped()  # what a crop cut off must stay off on the larger canvas
        if fill != self.fill and not self.covers_canvas():
            image = LazyImage(self.to_array())  # two fill colours would show: compute pixels now
        return image._replace(height=height, width=width, top=image.top + top,
                              left=image.left + left, fill=fill)

    def _clipped(self) -> LazyImage:
        """The same image with ``source`` cut (as a view) to the part on the canvas."""
        h, w = self.source.shape[:2]
        y0, y1, x0, x1 = self._visible()
        if y1 <= y0 or x1 <= x0:  # all fill
            return self._replace(source=self.source[:0, :0], top=0, left=0, mirrored=False)
        if (y0, y1, x0, x1) == (self.top, self.top + h, self.left, self.left + w):
            return self
        source = self.source[:, ::-1] if self.mirrored else self.source
        source = source[y0 - self.top:y1 - self.top, x0 - self.left:x1 - self.left]
        return self._replace(source=source, top=y0, left=x0, mirrored=False)

    def cropped(self, x1: int, y1: int, x2: int, y2: int) -> LazyImage:
        """The canvas rectangle ``[x1, x2) x [y1, y2)``."""
        return self._replace(height=y2 - y1, width=x2 - x1, top=self.top - y1, left=self.left - x1)

    def flipped(self) -> LazyImage:
        """Mirrored left-right."""
        w = self.source.shape[1]
        return self._replace(left=self.width - (self.left + w), mirrored=not self.mirrored)

    # -- pixels ---------------------------------------------------------------------------
    def _fill_uint8(self) -> np.ndarray:
        return to_uint8(np.clip(np.asarray(self.fill, dtype=np.float32), 0, 255))

    def _patch(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """uint8 pixels of the canvas rectangle ``[x0, x1) x [y0, y1)`` inside the source."""
        source = self.source[:, ::-1] if self.mirrored else self.source
        patch = source[y0 - self.top:y1 - self.top, x0 - self.left:x1 - self.left]
        if not self.pointwise:
            return patch
        planes = to_planes(patch)
        for op in self.pointwise:
            planes = op(planes)
        return from_planes(to_uint8(planes), np.uint8)

    def to_array(self) -> np.ndarray:
        """The pixels: uint8 ``[height, width, 3]`` (may share memory with ``source``)."""
        y0, y1, x0, x1 = self._visible()
        if (y0, y1, x0, x1) == (0, self.height, 0, self.width):
            return self._patch(y0, y1, x0, x1)
        out = _filled((self.height, self.width), self._fill_uint8())
        if y1 > y0 and x1 > x0:
            out[y0:y1, x0:x1] = self._patch(y0, y1, x0, x1)
        return out

    def resized(self, height: int, width: int) -> np.ndarray:
        """The pixels resized to ``height x width`` with PIL's bilinear filter (antialiased
        when shrinking), as :class:`Resize` does: uint8 ``[height, width, 3]``.

        Only the visible part of the source (plus a margin of fill as wide as the filter
        reaches) is computed and resampled; output pixels that the filter keeps wholly in the
        fill are the fill colour. Equal to resizing :meth:`to_array` up to uint8 rounding."""
        if (height, width) == (self.height, self.width):
            return self.to_array()
        y0, y1, x0, x1 = self._visible()
        if (y0, y1, x0, x1) == (0, self.height, 0, self.width):
            return resample(self._patch(y0, y1, x0, x1), (height, width))
        fill = self._fill_uint8()
        out = _filled((height, width), fill)
        if y1 <= y0 or x1 <= x0:
            return out
        ys = _resample_window(y0, y1, self.height, height)
        xs = _resample_window(x0, x1, self.width, width)
        (oy0, oy1, ry0, ry1), (ox0, ox1, rx0, rx1) = ys, xs
        region = _filled((ry1 - ry0, rx1 - rx0), fill)
        region[y0 - ry0:y1 - ry0, x0 - rx0:x1 - rx0] = self._patch(y0, y1, x0, x1)
        # Output pixel o covers canvas [o * n / m, (o + 1) * n / m): the box of [o0, o1).
        box = (ox0 * self.width / width - rx0, oy0 * self.height / height - ry0,
               ox1 * self.width / width - rx0, oy1 * self.height / height - ry0)
        box = (max(box[0], 0.0), max(box[1], 0.0), min(box[2], rx1 - rx0), min(box[3], ry1 - ry0))
        out[oy0:oy1, ox0:ox1] = resample(region, (oy1 - oy0, ox1 - ox0), box)
        return out

    def __repr__(self) -> str:
        return (f"LazyImage({self.height}x{self.width}, source {self.source.shape[0]}x"
                f"{self.source.shape[1]} at ({self.top}, {self.left}), mirrored={self.mirrored}, "
                f"{len(self.pointwise)} colour maps)")


def _filled(size: tuple[int, int], colour: np.ndarray) -> np.ndarray:
    """uint8 ``[h, w, 3]`` of one RGB colour (row by row: numpy's broadcast of a 3-vector
    runs an inner loop of length 3)."""
    out = np.empty((*size, 3), dtype=np.uint8)
    if size[0] and size[1]:
        out[0] = colour
        out[1:] = out[0]
    return out


def _resample_window(v0: int, v1: int, size: int, out_size: int) -> tuple[int, int, int, int]:
    """Along one axis, for a source covering canvas ``[v0, v1)`` of ``size`` resized to
    ``out_size``: the output range ``[o0, o1)`` whose bilinear filter can read the source, and
    the canvas range ``[r0, r1)`` holding every pixel the filter reads for those outputs."""
    scale = size / out_size  # canvas pixels per output pixel
    support = max(1.0, scale)  # the bilinear filter's half width, in canvas pixels
    # Output o reads canvas pixels within ``support`` of its centre ``(o + 0.5) * scale``.
    o0 = max(0, math.floor((v0 - support) / scale) - 1)
    o1 = min(out_size, math.ceil((v1 + support) / scale) + 1)
    r0 = max(0, math.floor(o0 * scale - support) - 2)
    r1 = min(size, math.ceil(o1 * scale + support) + 2)
    return o0, o1, r0, r1


def to_planes(image: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` -> contiguous float32 planes ``[3, H, W]`` (one strided pass per channel)."""
    planes = np.empty((3, *image.shape[:2]), dtype=np.float32)
    for channel in range(3):
        planes[channel] = image[..., channel]
    return planes


def from_planes(planes: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Inverse of :func:`to_planes` (to ``dtype``)."""
    image = np.empty((*planes.shape[1:], 3), dtype=dtype)
    for channel in range(3):
        image[..., channel] = planes[channel]
    return image


def as_lazy(image: np.ndarray | LazyImage) -> LazyImage:
    """``image`` itself when it is a :class:`LazyImage`, else a new one over the uint8 array."""
    return image if isinstance(image, LazyImage) else LazyImage(image)
