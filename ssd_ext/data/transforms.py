"""The SSD paper's data augmentation, as composable transforms.

Every transform is a callable ``t(image, boxes, labels, generator=None) -> (image, boxes, labels)``:

- ``image``: one of two pixel representations, chosen by the first step.

  * :class:`ToLazyImage` (the presets' first step): a :class:`LazyImage`, uint8 RGB kept as a
    recipe. The geometric steps only update where the source image sits on the canvas, the
    photometric step only records its drawn parameters; the pixels are computed once, by
    :class:`Resize`, for the part of the source that is still visible and straight at the
    output size (the expanded canvas is never built). :class:`Normalize` then writes float32
    ``(x / 255 - mean) / std`` and :class:`ToTensor` (the last step) gives a float32 tensor
    ``[3, H, W]``. A uint8 numpy array ``[H, W, 3]`` is accepted wherever a LazyImage is.
  * :class:`ToFloatImage`: a float32 numpy array ``[H, W, 3]`` of RGB values in [0, 255] that
    every step computes on eagerly (the reference the lazy path is tested against).

  Pixels are numpy arrays (and PIL for resampling) because their elementwise math is
  single-threaded: torch's intra-op threads only slow small images down, above all on a
  loaded machine.
- ``boxes``: float32 ``[G, 4]`` xyxy in PIXELS of the current image, continuous coordinates:
  the image spans ``[0, W] x [0, H]`` and pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``.
- ``labels``: any tensor whose first dimension is ``G`` (``[G]`` class labels, or ``[G, k]``
  when extra per-box columns such as VOC's ``difficult`` flag or a test's box id must stay
  paired with their box). Transforms that drop boxes index ``boxes`` and ``labels`` alike.
- ``generator``: a ``torch.Generator`` (or ``numpy.random.Generator``) for every random draw,
  or ``None`` for torch's global generator (which a DataLoader worker seeds from the loader's seed, see
  :func:`ssd_ext.data.make_loader`). :class:`Compose` hands the same generator to every step.
  Both representations make the same draws in the same order: the same generator gives the
  same boxes, and images equal up to uint8 rounding.

A step called on its own checks its sample; inside :class:`Compose` the sample is checked
once, after the first step (and again only after a callable that is not one of these steps).

The photometric distortion follows Caffe SSD's ``ssd_pascal.py`` settings (brightness +-32,
contrast and saturation in [0.5, 1.5], hue +-18 degrees, each with probability 0.5, contrast
before or after the HSV steps with probability 0.5); pixel values are clipped to [0, 255]
after each step, as Caffe's 8-bit OpenCV images saturate. The random channel swap is
available but off by default (Caffe's ``random_order_prob`` is 0; ssd.pytorch uses 0.5).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CROP_MIN_IOUS",
    "Compose",
    "Transform",
    "LazyImage",
    "ToLazyImage",
    "ToFloatImage",
    "PhotometricDistort",
    "Expand",
    "MinIoURandomCrop",
    "RandomHorizontalFlip",
    "Resize",
    "Normalize",
    "ToTensor",
    "sample_min_iou_crop",
    "train_transform",
    "eval_transform",
    "rgb_to_hsv",
    "hsv_to_rgb",
]

# ImageNet statistics of RGB values scaled to [0, 1] (those torchvision's pretrained VGG16 and
# ResNet backbones were trained with).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# The paper's crop options: ``None`` keeps the whole image, a float is the minimum IoU that
# SOME ground-truth box must have with the crop, ``0.0`` is "any patch" (no IoU constraint).
CROP_MIN_IOUS: tuple[float | None, ...] = (None, 0.1, 0.3, 0.5, 0.7, 0.9, 0.0)

Sample = tuple[Any, torch.Tensor, torch.Tensor]


RandomSource = torch.Generator | np.random.Generator | None


def _rand(generator: RandomSource) -> float:
    """Uniform float in [0, 1)."""
    if isinstance(generator, np.random.Generator):
        return float(generator.random())
    return float(torch.rand((), generator=generator, dtype=torch.float64))


def _uniform(generator: RandomSource, low: float, high: float) -> float:
    return low + (high - low) * _rand(generator)


def _randint(generator: RandomSource, high: int) -> int:
    """Uniform integer in [0, high]."""
    if isinstance(generator, np.random.Generator):
        return int(generator.integers(0, high + 1))
    return int(torch.randint(0, high + 1, (), generator=generator))


def _permutation(generator: RandomSource, n: int) -> np.ndarray:
    if isinstance(generator, np.random.Generator):
        return generator.permutation(n)
    return torch.randperm(n, generator=generator).numpy()


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """float values in [0, 255] -> uint8, rounded half up."""
    return (image + np.float32(0.5)).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# The lazy uint8 image
# ---------------------------------------------------------------------------------------------

def _resample(array: np.ndarray, size: tuple[int, int],
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
        return _to_uint8(np.clip(np.asarray(self.fill, dtype=np.float32), 0, 255))

    def _patch(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """uint8 pixels of the canvas rectangle ``[x0, x1) x [y0, y1)`` inside the source."""
        source = self.source[:, ::-1] if self.mirrored else self.source
        patch = source[y0 - self.top:y1 - self.top, x0 - self.left:x1 - self.left]
        if not self.pointwise:
            return patch
        planes = _planes(patch)
        for op in self.pointwise:
            planes = op(planes)
        return _interleave(_to_uint8(planes), np.uint8)

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
            return _resample(self._patch(y0, y1, x0, x1), (height, width))
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
        out[oy0:oy1, ox0:ox1] = _resample(region, (oy1 - oy0, ox1 - ox0), box)
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


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------

_IMAGE_TYPE_ERROR = ("image must be a float32 array [H, W, 3] (put ToFloatImage first) or a uint8 "
                     "array [H, W, 3] / LazyImage (put ToLazyImage first), got ")


def _check_sample(image: Any, boxes: torch.Tensor, labels: torch.Tensor) -> None:
    if not (isinstance(image, LazyImage)
            or (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
                and image.dtype in (np.float32, np.uint8))):
        raise TypeError(
            f"{_IMAGE_TYPE_ERROR}{type(image).__name__} {getattr(image, 'shape', '')} "
            f"{getattr(image, 'dtype', '')}"
        )
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be a tensor [G, 4], got {tuple(getattr(boxes, 'shape', ()))}")
    if not isinstance(labels, torch.Tensor) or labels.shape[:1] != boxes.shape[:1]:
        raise ValueError(f"labels' first dimension must match boxes' ({boxes.shape[0]}), "
                         f"got {tuple(getattr(labels, 'shape', ()))}")


def _lazy(image: np.ndarray | LazyImage) -> LazyImage:
    return image if isinstance(image, LazyImage) else LazyImage(image)


class Transform:
    """Base of the steps. Calling one checks the sample, then runs :meth:`apply`, which
    assumes a checked sample (what :class:`Compose` calls after checking once)."""

    #: Takes raw input (PIL image, any array, tensor) and checks its own output.
    converts_input = False
    #: Returns a sample the next step accepts (False for :class:`ToTensor`).
    returns_sample = True

    def __call__(self, image: Any, boxes: torch.Tensor, labels: torch.Tensor,
                 generator: RandomSource = None) -> Sample:
        _check_sample(image, boxes, labels)
        out = self.apply(image, boxes, labels, generator)
        if isinstance(image, np.ndarray) and isinstance(out[0], LazyImage):
            return (out[0].to_array(), *out[1:])  # arrays in, arrays out
        return out

    def apply(self, image: Any, boxes: torch.Tensor, labels: torch.Tensor,
              generator: RandomSource = None) -> Sample:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Compose:
    """Apply transforms in order, handing each the same ``generator``.

    The sample is checked once, before the first step that needs a checked one, and again
    only after a callable that is not a :class:`Transform` (whose output nothing vouches
    for). A :class:`LazyImage` left at the end is returned as its uint8 array."""

    def __init__(self, transforms: Sequence[Callable[..., Sample]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Any, boxes: torch.Tensor, labels: torch.Tensor,
                 generator: RandomSource = None) -> Sample:
        checked = False
        for transform in self.transforms:
            if isinstance(transform, Transform) and not transform.converts_input:
                if not checked:
                    _check_sample(image, boxes, labels)
                image, boxes, labels = transform.apply(image, boxes, labels, generator)
            else:
                image, boxes, labels = transform(image, boxes, labels, generator)
            checked = isinstance(transform, Transform) and transform.returns_sample
        if isinstance(image, LazyImage):
            image = image.to_array()
        return image, boxes, labels

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"{type(self).__name__}([{inner}\n])"


def _as_box_tensors(boxes: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.as_tensor(labels)


class ToFloatImage(Transform):
    """PIL image / array ``[H, W, 3]`` / tensor ``[3, H, W]`` / :class:`LazyImage` (RGB,
    0..255) -> float32 array ``[H, W, 3]``. Also makes ``boxes`` a float32 ``[G, 4]`` tensor
    and ``labels`` a tensor."""

    converts_input = True

    def __call__(self, image: Any, boxes: Any, labels: Any,
                 generator: RandomSource = None) -> Sample:
        if isinstance(image, Image.Image):
            array = np.asarray(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.float32)
        elif isinstance(image, LazyImage):
            array = image.to_array().astype(np.float32)
        elif isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"image array must be [H, W, 3], got {image.shape}")
            array = image.astype(np.float32)
        elif isinstance(image, torch.Tensor):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"image tensor must be [3, H, W], got {tuple(image.shape)}")
            array = image.detach().cpu().permute(1, 2, 0).numpy().astype(np.float32)
        else:
            raise TypeError(f"image must be a PIL image, numpy array or tensor, got {type(image).__name__}")
        array = np.ascontiguousarray(array)
        boxes, labels = _as_box_tensors(boxes, labels)
        _check_sample(array, boxes, labels)
        return array, boxes, labels


class ToLazyImage(Transform):
    """PIL image / array ``[H, W, 3]`` / tensor ``[3, H, W]`` (RGB, 0..255) -> :class:`LazyImage`
    (no pixel is copied for a uint8 array or an RGB PIL image beyond reading it as an
    array; other dtypes are rounded and clipped to uint8). Also makes ``boxes`` a float32
    ``[G, 4]`` tensor and ``labels`` a tensor."""

    converts_input = True

    def __call__(self, image: Any, boxes: Any, labels: Any,
                 generator: RandomSource = None) -> Sample:
        if isinstance(image, LazyImage):
            lazy = image
        else:
            if isinstance(image, Image.Image):
                array = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
            elif isinstance(image, np.ndarray):
                if image.ndim != 3 or image.shape[2] != 3:
                    raise ValueError(f"image array must be [H, W, 3], got {image.shape}")
                array = image
            elif isinstance(image, torch.Tensor):
                if image.dim() != 3 or image.shape[0] != 3:
                    raise ValueError(f"image tensor must be [3, H, W], got {tuple(image.shape)}")
                array = image.detach().cpu().permute(1, 2, 0).numpy()
            else:
                raise TypeError("image must be a PIL image, numpy array or tensor, got "
                                f"{type(image).__name__}")
            if array.dtype != np.uint8:
                array = np.clip(np.rint(array.astype(np.float32)), 0, 255).astype(np.uint8)
            lazy = LazyImage(array)
        boxes, labels = _as_box_tensors(boxes, labels)
        _check_sample(lazy, boxes, labels)
        return lazy, boxes, labels


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


def _adjust_saturation_hue(planes: np.ndarray, saturation: float | None,
                           hue_degrees: float | None) -> np.ndarray:
    """float32 RGB planes ``[3, ...]`` in [0, 255]: saturation times ``saturation`` (clipped
    to 1) and hue plus ``hue_degrees``, in HSV, without building the HSV image.

    With V the max channel and C = V - min the chroma, HSV's saturation is C / V and each
    channel is ``V - C * w`` for a weight ``w`` in [0, 1] set by the hue alone. So scaling
    the saturation scales C (to at most V), and a hue shift recomputes the weights: the same
    values as ``hsv_to_rgb`` of ``rgb_to_hsv`` with S and H changed, in fewer passes over
    contiguous planes (numpy's strided and ``mod`` loops are many times slower)."""
    r, g, b = planes[0], planes[1], planes[2]
    # In place where possible: fresh large arrays cost page faults, masked ufuncs and
    # np.where are slow loops, so the sector choice below is arithmetic on 0/1 planes.
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
    # Hue in sixths of a turn: (g - b) / C if R is the max, 2 + (b - r) / C if G, else
    # 4 + (r - g) / C; the first max wins ties, as in rgb_to_hsv.
    is_r = (value == r).astype(np.float32)
    is_g = (value == g).astype(np.float32)
    np.multiply(is_g, np.float32(1.0) - is_r, out=is_g)
    hue6 = out[0]  # scratch: out[0] is written last
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
    weight = sector
    for channel, n in ((2, 1.0), (1, 3.0), (0, 5.0)):
        # Channel n (R: 5, G: 3, B: 1): V - C' * clip(min(k, 4 - k), 0, 1), k = (n + h) mod 6.
        np.add(hue6, np.float32(n - 6.0), out=weight)  # k - 6, in [n - 6, n)
        np.multiply(weight, np.float32(1.0 / 6.0), out=is_r)
        np.floor(is_r, out=is_r)  # -1 where k < 6, else 0
        is_r *= np.float32(6.0)
        weight -= is_r  # k mod 6
        np.subtract(np.float32(4.0), weight, out=is_r)
        np.minimum(weight, is_r, out=weight)
        np.clip(weight, 0.0, 1.0, out=weight)
        weight *= new_chroma
        np.subtract(value, weight, out=out[channel])
    return np.clip(out, 0.0, 255.0, out=out)


def _planes(image: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` -> contiguous float32 planes ``[3, H, W]`` (one strided pass per channel)."""
    planes = np.empty((3, *image.shape[:2]), dtype=np.float32)
    for channel in range(3):
        planes[channel] = image[..., channel]
    return planes


def _interleave(planes: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Inverse of :func:`_planes` (to ``dtype``)."""
    image = np.empty((*planes.shape[1:], 3), dtype=dtype)
    for channel in range(3):
        image[..., channel] = planes[channel]
    return image


class _Distortion:
    """One draw of :class:`PhotometricDistort`: a pointwise map of float32 RGB planes
    ``[3, ...]`` in [0, 255], computed in place (``None`` marks a step not taken)."""

    __slots__ = ("brightness", "contrast", "saturation", "hue", "contrast_first", "permutation")

    def __init__(self, brightness: float | None, contrast: float | None, saturation: float | None,
                 hue: float | None, contrast_first: bool, permutation: np.ndarray | None) -> None:
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation
        self.hue = hue
        self.contrast_first = contrast_first
        self.permutation = permutation

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
        return _adjust_saturation_hue(planes, self.saturation, self.hue)

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
    """Caffe SSD's random brightness, contrast, saturation, hue (and optional channel swap).

    On a :class:`LazyImage` the draws are made here and the colour maps run later, on the
    visible pixels only (the maps are pointwise, so they commute with expand, crop and flip;
    a fill colour already showing is mapped at once)."""

    def __init__(self, brightness_delta: float = 32.0, contrast_range: tuple[float, float] = (0.5, 1.5),
                 saturation_range: tuple[float, float] = (0.5, 1.5), hue_delta: float = 18.0,
                 p: float = 0.5, channel_swap_p: float = 0.0) -> None:
        self.brightness_delta = brightness_delta
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = hue_delta
        self.p = p
        self.channel_swap_p = channel_swap_p

    def _draw_contrast(self, generator: RandomSource) -> float | None:
        return _uniform(generator, *self.contrast_range) if _rand(generator) < self.p else None

    def _draw_hsv(self, generator: RandomSource) -> tuple[float | None, float | None]:
        saturation = _uniform(generator, *self.saturation_range) if _rand(generator) < self.p else None
        hue = _uniform(generator, -self.hue_delta, self.hue_delta) if _rand(generator) < self.p else None
        return saturation, hue

    def draw(self, generator: RandomSource = None) -> _Distortion:
        """Make this step's random draws (in the order Caffe makes them)."""
        brightness = None
        if _rand(generator) < self.p:
            brightness = _uniform(generator, -self.brightness_delta, self.brightness_delta)
        contrast_first = _rand(generator) < 0.5
        if contrast_first:
            contrast = self._draw_contrast(generator)
            saturation, hue = self._draw_hsv(generator)
        else:
            saturation, hue = self._draw_hsv(generator)
            contrast = self._draw_contrast(generator)
        permutation = _permutation(generator, 3) if _rand(generator) < self.channel_swap_p else None
        return _Distortion(brightness, contrast, saturation, hue, contrast_first, permutation)

    def apply(self, image: np.ndarray | LazyImage, boxes: torch.Tensor, labels: torch.Tensor,
              generator: RandomSource = None) -> Sample:
        distortion = self.draw(generator)
        if isinstance(image, np.ndarray) and image.dtype == np.float32:
            if distortion.is_identity():
                return image, boxes, labels
            return _interleave(distortion(_planes(image))), boxes, labels
        image = _lazy(image)
        return (image if distortion.is_identity() else image.distorted(distortion)), boxes, labels

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(brightness_delta={self.brightness_delta}, contrast_range="
                f"{self.contrast_range}, saturation_range={self.saturation_range}, "
                f"hue_delta={self.hue_delta}, p={self.p}, channel_swap_p={self.channel_swap_p})")


class Expand(Transform):
    """Zoom out: with probability ``p`` place the image at a random spot of a canvas up to
    ``max_ratio`` times larger per side, filled with ``fill`` (the mean pixel, in [0, 255])."""

    def __init__(self, fill: Sequence[float] = tuple(255.0 * m for m in IMAGENET_MEAN),
                 max_ratio: float = 4.0, p: float = 0.5) -> None:
        if max_ratio < 1:
            raise ValueError(f"max_ratio must be >= 1, got {max_ratio}")
        self.fill = tuple(float(v) for v in fill)
        self.max_ratio = max_ratio
        self.p = p

    def apply(self, image: np.ndarray | LazyImage, boxes: torch.Tensor, labels: torch.Tensor,
              generator: RandomSource = None) -> Sample:
        if _rand(generator) >= self.p:
            return image, boxes, labels
        height, width, _ = image.shape
        ratio = _uniform(generator, 1.0, self.max_ratio)
        new_h, new_w = int(height * ratio), int(width * ratio)
        top = _randint(generator, new_h - height)
        left = _randint(generator, new_w - width)
        shift = torch.tensor([left, top, left, top], dtype=boxes.dtype)
        if not (isinstance(image, np.ndarray) and image.dtype == np.float32):
            return _lazy(image).expanded(new_h, new_w, top, left, self.fill), boxes + shift, labels
        canvas = np.empty((new_h, new_w, 3), dtype=np.float32)
        canvas[...] = np.asarray(self.fill, dtype=np.float32)
        canvas[top:top + height, left:left + width] = image
        return canvas, boxes + shift, labels

    def __repr__(self) -> str:
        return f"{type(self).__name__}(fill={self.fill}, max_ratio={self.max_ratio}, p={self.p})"


def _iou_with_rect(boxes: torch.Tensor | np.ndarray, rect: Sequence[float]) -> np.ndarray:
    """IoU ``[G]`` (float64) of each of ``boxes`` (``[G, 4]``) with the rectangle ``rect``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = (float(v) for v in rect)
    iw = np.minimum(boxes[:, 2], x2) - np.maximum(boxes[:, 0], x1)
    ih = np.minimum(boxes[:, 3], y2) - np.maximum(boxes[:, 1], y1)
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + (x2 - x1) * (y2 - y1) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _max_iou_with_rect(boxes: list[tuple[float, float, float, float, float]],
                       rect: tuple[int, int, int, int]) -> float:
    """The largest IoU of ``(x1, y1, x2, y2, area)`` boxes with ``rect``, as :func:`_iou_with_rect`."""
    rx1, ry1, rx2, ry2 = rect
    rect_area = (rx2 - rx1) * (ry2 - ry1)
    best = 0.0
    for x1, y1, x2, y2, area in boxes:
        inter = max(min(x2, rx2) - max(x1, rx1), 0.0) * max(min(y2, ry2) - max(y1, ry1), 0.0)
        union = area + rect_area - inter
        if union > 0:
            best = max(best, inter / union)
    return best


def sample_min_iou_crop(
    boxes: torch.Tensor, width: int, height: int, generator: RandomSource = None,
    min_ious: Sequence[float | None] = CROP_MIN_IOUS, min_scale: float = 0.3,
    aspect_range: tuple[float, float] = (0.5, 2.0), max_trials: int = 50,
) -> tuple[float | None, tuple[int, int, int, int] | None, torch.Tensor | None]:
    """Draw the paper's min-IoU crop for ``boxes`` (``[G, 4]`` pixels) in a ``width x height`` image.

    Picks one of ``min_ious`` uniformly. ``None`` means keep the whole image; otherwise up to
    ``max_trials`` integer rectangles are drawn with sides in ``[min_scale, 1]`` of the image's
    and height/width in ``aspect_range``; a rectangle is accepted when SOME box has IoU >= the
    chosen minimum with it (not all boxes, as ssd.pytorch requires by mistake) and at least one
    box centre lies strictly inside it. Returns ``(min_iou, rect or None, keep mask or None)``;
    ``rect`` is ``(x1, y1, x2, y2)`` and is ``None`` when the whole image is kept (chosen, no
    boxes to constrain the crop, or every trial failed).
    """
    choice = min_ious[_randint(generator, len(min_ious) - 1)]
    if choice is None or boxes.shape[0] == 0:
        return choice, None, None
    boxes_np = boxes.detach().cpu().numpy().astype(np.float64)
    cx = (boxes_np[:, 0] + boxes_np[:, 2]) / 2
    cy = (boxes_np[:, 1] + boxes_np[:, 3]) / 2
    # Plain floats: for the few boxes of an image, numpy's per-call cost dominates the trials.
    box_list = [(x1, y1, x2, y2, (x2 - x1) * (y2 - y1)) for x1, y1, x2, y2 in boxes_np.tolist()]
    for _ in range(max_trials):
        crop_w = _uniform(generator, min_scale * width, width)
        crop_h = _uniform(generator, min_scale * height, height)
        if not aspect_range[0] <= crop_h / crop_w <= aspect_range[1]:
            continue
        crop_w_int = max(1, min(width, int(crop_w)))
        crop_h_int = max(1, min(height, int(crop_h)))
        left = _randint(generator, width - crop_w_int)
        top = _randint(generator, height - crop_h_int)
        rect = (left, top, left + crop_w_int, top + crop_h_int)
        if _max_iou_with_rect(box_list, rect) < choice:
            continue
        keep = (cx > rect[0]) & (cx < rect[2]) & (cy > rect[1]) & (cy < rect[3])
        if not keep.any():
            continue
        return choice, rect, torch.from_numpy(keep)
    return choice, None, None


class MinIoURandomCrop(Transform):
    """The paper's random crop (see :func:`sample_min_iou_crop`): keep the boxes whose centre
    lies inside the crop, clipped to it, in the crop's pixel coordinates."""

    def __init__(self, min_ious: Sequence[float | None] = CROP_MIN_IOUS, min_scale: float = 0.3,
                 aspect_range: tuple[float, float] = (0.5, 2.0), max_trials: int = 50) -> None:
        self.min_ious = tuple(min_ious)
        self.min_scale = min_scale
        self.aspect_range = aspect_range
        self.max_trials = max_trials

    def apply(self, image: np.ndarray | LazyImage, boxes: torch.Tensor, labels: torch.Tensor,
              generator: RandomSource = None) -> Sample:
        height, width, _ = image.shape
        _, rect, keep = sample_min_iou_crop(boxes, width, height, generator, self.min_ious,
                                            self.min_scale, self.aspect_range, self.max_trials)
        if rect is None:
            return image, boxes, labels
        x1, y1, x2, y2 = rect
        if isinstance(image, LazyImage):
            image = image.cropped(x1, y1, x2, y2)
        else:
            image = image[y1:y2, x1:x2]  # a view: the next steps copy anyway
        boxes = boxes[keep]
        offset = boxes.new_tensor([x1, y1, x1, y1])
        boxes = torch.stack([
            boxes[:, 0].clamp(min=x1), boxes[:, 1].clamp(min=y1),
            boxes[:, 2].clamp(max=x2), boxes[:, 3].clamp(max=y2),
        ], dim=1) - offset
        return image, boxes, labels[keep]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(min_ious={self.min_ious}, min_scale={self.min_scale}, "
                f"aspect_range={self.aspect_range}, max_trials={self.max_trials})")


class RandomHorizontalFlip(Transform):
    """Mirror the image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def apply(self, image: np.ndarray | LazyImage, boxes: torch.Tensor, labels: torch.Tensor,
              generator: RandomSource = None) -> Sample:
        if _rand(generator) >= self.p:
            return image, boxes, labels
        width = image.shape[1]
        flipped = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
        if isinstance(image, LazyImage):
            return image.flipped(), flipped, labels
        return image[:, ::-1], flipped, labels  # a view: the next steps copy anyway

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class Resize(Transform):
    """Resize to ``size`` (an int for a square image, or ``(height, width)``) with PIL's
    bilinear filter (antialiased when shrinking), scaling the boxes alike: per float channel
    for a float image; for a :class:`LazyImage`, on uint8 RGB, once, from the visible source
    pixels (see :meth:`LazyImage.resized`)."""

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if min(self.size) < 1:
            raise ValueError(f"size must be positive, got {size}")

    def apply(self, image: np.ndarray | LazyImage, boxes: torch.Tensor, labels: torch.Tensor,
              generator: RandomSource = None) -> Sample:
        height, width, _ = image.shape
        new_h, new_w = self.size
        scale = boxes.new_tensor([new_w / width, new_h / height, new_w / width, new_h / height])
        if not (isinstance(image, np.ndarray) and image.dtype == np.float32):
            return LazyImage(_lazy(image).resized(new_h, new_w)), boxes * scale, labels
        if (height, width) != (new_h, new_w):
            image = np.stack([
                np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c]), mode="F")
                           .resize((new_w, new_h), Image.Resampling.BILINEAR))
                for c in range(3)
            ], axis=-1)
        return image, boxes * scale, labels

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class Normalize(Transform):
    """``(image / 255 - mean) / std`` per channel (ImageNet statistics by default) -> float32
    ``[H, W, 3]``. From uint8 pixels the result is laid out channel-first in memory (a
    transposed view), so :class:`ToTensor` after it copies nothing."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        # (v - mean) / std for every uint8 value v, per channel: [3, 256].
        values = np.arange(256, dtype=np.float32) / np.float32(255.0)
        self._table = np.stack([(values - np.float32(m)) / np.float32(s)
                                for m, s in zip(self.mean, self.std, strict=True)])

    def apply(self, image: np.ndarray | LazyImage, boxes: torch.Tensor, labels: torch.Tensor,
              generator: RandomSource = None) -> Sample:
        if isinstance(image, np.ndarray) and image.dtype == np.float32:
            mean = np.asarray(self.mean, dtype=np.float32) * np.float32(255.0)
            inv_std = np.float32(1.0) / (np.asarray(self.std, dtype=np.float32) * np.float32(255.0))
            return (image - mean) * inv_std, boxes, labels
        pixels = _lazy(image).to_array()
        planes = np.empty((3, *pixels.shape[:2]), dtype=np.float32)
        for channel in range(3):
            np.take(self._table[channel], pixels[..., channel], out=planes[channel])
        return planes.transpose(1, 2, 0), boxes, labels

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"


class ToTensor(Transform):
    """float32 array ``[H, W, 3]`` (or uint8 pixels, as 0..255) -> float32 tensor ``[3, H, W]``
    (the last step)."""

    returns_sample = False

    def apply(self, image: np.ndarray | LazyImage, boxes: torch.Tensor, labels: torch.Tensor,
              generator: RandomSource = None) -> Sample:
        if not (isinstance(image, np.ndarray) and image.dtype == np.float32):
            image = _lazy(image).to_array().transpose(2, 0, 1).astype(np.float32, order="C")
            return torch.from_numpy(image), boxes, labels
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), boxes, labels


def train_transform(size: int | tuple[int, int], mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD, expand_max_ratio: float = 4.0,
                    channel_swap_p: float = 0.0) -> Compose:
    """The paper's training augmentation: photometric distortion, zoom out (up to 4x, filled
    with the mean), min-IoU crop, horizontal flip, resize to ``size``, normalise, to tensor.

    Runs on a :class:`LazyImage`: the pixels are computed once, at the output size."""
    return Compose([
        ToLazyImage(),
        PhotometricDistort(channel_swap_p=channel_swap_p),
        Expand(fill=tuple(255.0 * m for m in mean), max_ratio=expand_max_ratio),
        MinIoURandomCrop(),
        RandomHorizontalFlip(),
        Resize(size),
        Normalize(mean, std),
        ToTensor(),
    ])


def eval_transform(size: int | tuple[int, int], mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD) -> Compose:
    """Deterministic evaluation preprocessing: resize to ``size``, normalise, to tensor."""
    return Compose([ToLazyImage(), Resize(size), Normalize(mean, std), ToTensor()])
