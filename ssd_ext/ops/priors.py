"""Prior (default) boxes of SSD, and the paper's rule for their sizes.

Conventions (the contract is ``ssd_reference.priors``; see docs/ARCHITECTURE.md "Priors and box
coding"): priors are ``[P, 4]`` cxcywh, normalised to the image. Order: level, then row i, then
column j, then per cell: the square of side ``min/img``, the square of side
``sqrt(min * max)/img`` (when the level has a max size), then for each aspect ratio r the boxes
``(s sqrt(r), s / sqrt(r))`` and ``(s / sqrt(r), s sqrt(r))``. Sizes are in input pixels and
normalised per axis, so a square prior is square in pixels on a non-square image.
"""

from __future__ import annotations

import math
import numbers
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from . import _checks
from .backend import dispatch

__all__ = ["prior_boxes", "ssd_sizes"]

# Priors depend only on their arguments, and a model asks for the same ones on every forward.
_CACHE: OrderedDict[tuple, Tensor] = OrderedDict()
_CACHE_SIZE = 32


def _real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    return _checks.real_to_float(value, name, "a finite real number")


def _positive(value: object, name: str) -> float:
    number = _real(value, name)
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return number


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return int(value)


def _sequence(value: object, name: str) -> Sequence:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence, got {value!r} ({type(value).__name__})")
    return value


def _pair(value: object, name: str, convert) -> tuple:
    """A scalar (used for both axes) or an (h, w) / (y, x) pair."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        if len(value) != 2:
            raise ValueError(f"{name} must be a number or an (h, w) pair, got {value!r}")
        return convert(value[0], f"{name}[0]"), convert(value[1], f"{name}[1]")
    number = convert(value, name)
    return number, number


def _levels(value: object, name: str, num_levels: int) -> Sequence:
    items = _sequence(value, name)
    if len(items) != num_levels:
        raise ValueError(
            f"{name} must have one entry per level ({num_levels}, as feature_map_sizes), "
            f"got {len(items)}: {value!r}"
        )
    return items


def _device(device: torch.device | str | int | None) -> torch.device:
    if device is None:
        return torch.device("cpu")
    if not isinstance(device, (torch.device, str, int)) or isinstance(device, bool):
        raise TypeError(f"device must be a torch.device, str or None, got {device!r}")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"device must name a torch device (e.g. 'cpu', 'cuda', 'cuda:0'), got {device!r}: "
                         f"{error}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} is a CUDA device, but CUDA is not available here")
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


@dispatch("prior_boxes")
def prior_boxes(
    feature_map_sizes: Sequence[int | Sequence[int]],
    image_size: float | Sequence[float],
    min_sizes: Sequence[float],
    max_sizes: Sequence[float | None] | None,
    aspect_ratios: Sequence[Sequence[float]],
    steps: Sequence[float | Sequence[float]] | None = None,
    offset: float = 0.5,
    clip: bool = True,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """``[P, 4]`` cxcywh prior boxes of an SSD, in the order of the module docstring.

    Args:
        feature_map_sizes: per level, an int (square map) or an ``(h, w)`` pair.
        image_size: the input size in pixels, an int or an ``(h, w)`` pair.
        min_sizes: per level, the side of the small square prior in input pixels.
        max_sizes: per level, the size whose geometric mean with the min size gives the second
            square prior, or None for no such prior on that level; None for no level.
            Must not be smaller than the level's min size.
        aspect_ratios: per level, the ratios r > 0 adding a wide and a tall prior each.
        steps: per level, the distance between cell centres in input pixels (a number or a
            ``(y, x)`` pair); None means ``image_size / feature_map_size`` per axis.
        offset: where in its cell a prior's centre lies, in [0, 1].
        clip: clamp cx, cy, w and h to [0, 1].
        device: where the priors are made (default: the CPU).
        dtype: a floating dtype (default float32); the math runs in float64, then is cast.

    Returns:
        ``[P, 4]`` cxcywh priors. SSD300-VOC gives 8732, SSD512 24564.

    Results are cached by their arguments, device and dtype (the last 32); every call returns
    its own copy of the cached tensor, so callers may modify it freely.

    Raises:
        TypeError / ValueError naming the argument for input outside the above; in particular a
        ValueError naming ``feature_map_sizes`` when the levels give more than 2**40 priors
        (e.g. a side of 2**64, past int64) or more than the device's memory holds.
    """
    args = _normalise_prior_args(feature_map_sizes, image_size, min_sizes, max_sizes,
                                 aspect_ratios, steps, offset, clip, dtype)
    resolved_device = _device(device)
    fmaps, image, _, maxes, _, ratio_counts, flat_steps, offset, _, out_dtype = args
    # The kernels' size rules, checked here on Python ints: a side past int64 (2**64) never
    # reaches the op's schema, and an output past memory is named by the argument it comes from.
    count = _checked_prior_count(fmaps, image, maxes, ratio_counts, flat_steps, offset)
    if torch.compiler.is_compiling():  # the fake kernel checks the memory while tracing
        return _prior_boxes_op(args, resolved_device)
    _check_prior_memory(fmaps, count, out_dtype, resolved_device)
    key = (*args, resolved_device)
    cached = _CACHE.get(key)
    if cached is None:
        with torch.inference_mode(False), torch.no_grad():
            cached = _prior_boxes_op(args, resolved_device)
        if type(cached) is not Tensor:  # a fake or functional tensor of some tracing mode
            return cached
        _CACHE[key] = cached
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return cached.clone()


def _prior_boxes_op(args: tuple, device: torch.device) -> Tensor:
    fmaps, image, mins, maxes, ratios, ratio_counts, steps, offset, clip, dtype = args
    return torch.ops.ssd_ext.prior_boxes.default(
        list(fmaps), list(image), list(mins), list(maxes), list(ratios), list(ratio_counts),
        list(steps), offset, clip, dtype=dtype, device=device)


def _normalise_prior_args(feature_map_sizes, image_size, min_sizes, max_sizes, aspect_ratios,
                          steps, offset, clip, dtype) -> tuple:
    """The op's flattened, hashable arguments, after checking the user's."""
    fmaps: list[int] = []
    for level, fmap in enumerate(_sequence(feature_map_sizes, "feature_map_sizes")):
        fmaps.extend(_pair(fmap, f"feature_map_sizes[{level}]", _positive_int))
    num_levels = len(fmaps) // 2
    image = _pair(image_size, "image_size", _positive)
    mins = tuple(_positive(v, f"min_sizes[{k}]")
                 for k, v in enumerate(_levels(min_sizes, "min_sizes", num_levels)))
    maxes: tuple[float, ...] = ()
    if max_sizes is not None:
        values = []
        for level, value in enumerate(_levels(max_sizes, "max_sizes", num_levels)):
            if value is None:
                values.append(0.0)  # the op's "no max size on this level"
                continue
            max_size = _positive(value, f"max_sizes[{level}]")
            if max_size < mins[level]:
                raise ValueError(f"max_sizes[{level}] = {value!r} is smaller than "
                                 f"min_sizes[{level}] = {min_sizes[level]!r}")
            values.append(max_size)
        maxes = tuple(values)
    ratios: list[float] = []
    ratio_counts: list[int] = []
    for level, level_ratios in enumerate(_levels(aspect_ratios, "aspect_ratios", num_levels)):
        level_ratios = _sequence(level_ratios, f"aspect_ratios[{level}]")
        ratios.extend(_positive(r, f"aspect_ratios[{level}][{k}]") for k, r in enumerate(level_ratios))
        ratio_counts.append(len(level_ratios))
    flat_steps: list[float] = []
    if steps is not None:
        for level, step in enumerate(_levels(steps, "steps", num_levels)):
            flat_steps.extend(_pair(step, f"steps[{level}]", _positive))
    offset = _real(offset, "offset")
    if not 0.0 <= offset <= 1.0:
        raise ValueError(f"offset must be in [0, 1], got {offset!r}")
    if not isinstance(clip, bool):
        raise TypeError(f"clip must be a bool, got {clip!r}")
    if dtype is not None and dtype not in _checks.SUPPORTED_FLOAT_DTYPES:
        raise TypeError(f"dtype must be float16, bfloat16, float32, float64 or None, got {dtype!r}")
    return (tuple(fmaps), image, mins, maxes, tuple(ratios), tuple(ratio_counts),
            tuple(flat_steps), offset, clip, dtype or torch.float32)


def _is_positive_finite(value: float) -> bool:
    return value > 0 and math.isfinite(value)


def _check_prior_box_args(feature_map_sizes, image_size, min_sizes, max_sizes, aspect_ratios,
                          aspect_ratio_counts, steps) -> None:
    """check_prior_box_args of csrc/ops/priors.cpp, in its order and words, for the fake."""
    num_levels = len(min_sizes)
    if len(feature_map_sizes) != 2 * num_levels:
        raise ValueError(f"feature_map_sizes must hold an (h, w) pair for each of the {num_levels} levels "
                         f"of min_sizes, got {len(feature_map_sizes)} values")
    if max_sizes and len(max_sizes) != num_levels:
        raise ValueError(f"max_sizes must be empty or have {num_levels} values (one per level), "
                         f"got {len(max_sizes)}")
    if len(aspect_ratio_counts) != num_levels:
        raise ValueError(f"aspect_ratio_counts must have {num_levels} values (one per level), "
                         f"got {len(aspect_ratio_counts)}")
    if steps and len(steps) != 2 * num_levels:
        raise ValueError(f"steps must be empty or hold a (y, x) pair per level ({2 * num_levels} values), "
                         f"got {len(steps)}")
    ratio_total = 0
    for level in range(num_levels):
        if not _is_positive_finite(min_sizes[level]):
            raise ValueError(f"min_sizes[{level}] must be positive and finite, got {min_sizes[level]}")
        if max_sizes:
            max_size = max_sizes[level]
            if not (max_size == 0.0 or (math.isfinite(max_size) and max_size >= min_sizes[level])):
                raise ValueError(f"max_sizes[{level}] must be 0 (none) or at least min_sizes[{level}] = "
                                 f"{min_sizes[level]}, got {max_size}")
        unclaimed = len(aspect_ratios) - ratio_total
        if not 0 <= aspect_ratio_counts[level] <= unclaimed:
            raise ValueError(f"aspect_ratio_counts[{level}] must be between 0 and {unclaimed} (the "
                             f"aspect_ratios not taken by earlier levels, of {len(aspect_ratios)}), "
                             f"got {aspect_ratio_counts[level]}")
        ratio_total += aspect_ratio_counts[level]
    if len(aspect_ratios) != ratio_total:
        raise ValueError(f"aspect_ratios must hold {ratio_total} values (the sum of aspect_ratio_counts), "
                         f"got {len(aspect_ratios)}")
    for k, ratio in enumerate(aspect_ratios):
        if not _is_positive_finite(ratio):
            raise ValueError(f"aspect_ratios[{k}] must be positive and finite, got {ratio}")
    if len(image_size) != 2 or not all(_is_positive_finite(v) for v in image_size):
        raise ValueError(f"image_size must be a positive finite (h, w) pair, got {list(image_size)}")


_MAX_PRIORS = 2**40


def _prior_count(feature_map_sizes, steps, cell_shapes, shapes_per_level, image_size, offset) -> int:
    """prior_levels of csrc/ops/priors_checks.h, in its order and words: the number of priors,
    after the checks of the out-variant's arguments."""
    num_levels = len(shapes_per_level)
    if len(feature_map_sizes) != 2 * num_levels:
        raise ValueError(f"feature_map_sizes must hold an (h, w) pair per level ({2 * num_levels} values "
                         f"for {num_levels} levels), got {len(feature_map_sizes)} values")
    if len(steps) != 2 * num_levels:
        raise ValueError(f"steps must hold a (y, x) pair per level ({2 * num_levels} values), "
                         f"got {len(steps)} values")
    if len(image_size) != 2 or not all(_is_positive_finite(v) for v in image_size):
        raise ValueError(f"image_size must be a positive finite (h, w) pair, got {list(image_size)}")
    if not (math.isfinite(offset) and 0.0 <= offset <= 1.0):
        raise ValueError(f"offset must be in [0, 1], got {offset}")
    if not all(_is_positive_finite(v) for v in cell_shapes):
        raise ValueError(f"cell_shapes must be positive and finite, got {list(cell_shapes)}")
    total = 0
    shape_begin = 0
    for level in range(num_levels):
        rows, cols = feature_map_sizes[2 * level], feature_map_sizes[2 * level + 1]
        if not (rows > 0 and cols > 0):
            raise ValueError(f"feature_map_sizes[{level}] must be positive, got ({rows}, {cols})")
        if not (_is_positive_finite(steps[2 * level]) and _is_positive_finite(steps[2 * level + 1])):
            raise ValueError(f"steps[{level}] must be positive and finite, got "
                             f"({steps[2 * level]}, {steps[2 * level + 1]})")
        count = shapes_per_level[level]
        unclaimed = len(cell_shapes) // 2 - shape_begin
        if not 0 < count <= unclaimed:
            raise ValueError(f"shapes_per_level[{level}] must be between 1 and {unclaimed} (the (w, h) "
                             f"pairs of cell_shapes not taken by earlier levels), got {count}")
        if rows > _MAX_PRIORS // cols // count:
            raise ValueError(f"feature_map_sizes[{level}] = ({rows}, {cols}) with {count} priors per cell "
                             f"gives {float(rows * cols * count)} priors; at most 2^40 are supported "
                             "(16 TiB as float32)")
        total += rows * cols * count
        shape_begin += count
        if total > _MAX_PRIORS:
            raise ValueError(
                f"feature_map_sizes: the levels up to {level} give {total} priors, more than 2^40"
            )
    if len(cell_shapes) != 2 * shape_begin:
        raise ValueError(f"cell_shapes must hold {2 * shape_begin} values (a (w, h) pair per shape), "
                         f"got {len(cell_shapes)}")
    return total


@torch.library.register_fake("ssd_ext::prior_boxes")
def _prior_boxes_fake(feature_map_sizes, image_size, min_sizes, max_sizes, aspect_ratios,
                      aspect_ratio_counts, steps, offset=0.5, clip=True, *, dtype=None, device=None):
    _check_prior_box_args(feature_map_sizes, image_size, min_sizes, max_sizes, aspect_ratios,
                          aspect_ratio_counts, steps)
    out_dtype = dtype or torch.float32
    if out_dtype not in _checks.SUPPORTED_FLOAT_DTYPES:
        raise TypeError(f"dtype must be float16, bfloat16, float32 or float64, got {out_dtype}")
    count = _checked_prior_count(feature_map_sizes, image_size, max_sizes, aspect_ratio_counts, steps,
                                 offset)
    out_device = torch.device(device or "cpu")
    _check_prior_memory(feature_map_sizes, count, out_dtype, out_device)
    return torch.empty((count, 4), dtype=out_dtype, device=out_device)


def _checked_prior_count(feature_map_sizes, image_size, max_sizes, aspect_ratio_counts, steps,
                         offset) -> int:
    """The number of priors of prior_boxes' flat arguments (after check_prior_box_args), with
    the checks of prior_levels (csrc/ops/priors_checks.h) that the op runs before allocating."""
    num_levels = len(aspect_ratio_counts)
    if not steps:
        steps = []
        for level in range(num_levels):
            # The op's default step is image / feature map; only its sign and finiteness matter here.
            steps += [image_size[0] / feature_map_sizes[2 * level] if feature_map_sizes[2 * level] else -1.0,
                      image_size[1] / feature_map_sizes[2 * level + 1] if feature_map_sizes[2 * level + 1]
                      else -1.0]
    shapes_per_level = []
    for level in range(num_levels):
        per_cell = 1 + 2 * aspect_ratio_counts[level]
        if max_sizes and max_sizes[level] > 0:
            per_cell += 1
        shapes_per_level.append(per_cell)
    cell_shapes = [1.0] * (2 * sum(shapes_per_level))  # sizes/image: positive once checked above
    return _prior_count(feature_map_sizes, steps, cell_shapes, shapes_per_level, image_size, offset)


def _device_memory_bytes(device: torch.device) -> int:
    """What a tensor on `device` can use at most: the machine's physical memory for the CPU,
    the GPU's for CUDA; 0 (no check) for meta and devices of unknown size."""
    if device.type == "cpu":
        return _HOST_MEMORY_BYTES
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device).total_memory
    return 0


def _host_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        return 0


_HOST_MEMORY_BYTES = _host_memory_bytes()


def _check_prior_memory(feature_map_sizes, count: int, dtype: torch.dtype, device: torch.device) -> None:
    """The ``[count, 4]`` priors fit in the memory of `device` (ValueError naming
    feature_map_sizes, the bytes and the memory otherwise). The C++ op checks the CPU case
    too, in terms of its output; this states it in terms of the argument to change."""
    available = _device_memory_bytes(device)
    needed = count * 4 * dtype.itemsize
    if available and needed > available:
        pairs = [tuple(feature_map_sizes[k:k + 2]) for k in range(0, len(feature_map_sizes), 2)]
        raise ValueError(
            f"feature_map_sizes {pairs} give {count} priors: the priors [P, 4] ({dtype}) needs {needed} "
            f"bytes ({needed / 2**30:.1f} GiB), more than the {available / 2**30:.1f} GiB of memory of "
            f"{'this machine' if device.type == 'cpu' else device}"
        )


@torch.library.register_fake("ssd_ext::_prior_boxes_out")
def _prior_boxes_out_fake(out, feature_map_sizes, steps, cell_shapes, shapes_per_level,
                          image_size, offset, clip) -> None:
    count = _prior_count(feature_map_sizes, steps, cell_shapes, shapes_per_level, image_size, offset)
    if out.dim() != 2 or out.shape[0] != count or out.shape[1] != 4:
        raise ValueError(f"out must have shape [{count}, 4], got {list(out.shape)}")
    _checks.check_floating(out, "out")
    if not out.is_contiguous():
        raise ValueError("out must be contiguous")


# ssd_sizes builds one size per level: far past any SSD (6 or 7 levels), and a bound that keeps
# a mistyped count (2**64) from building a list of that length.
_MAX_SIZE_LEVELS = 1024


def ssd_sizes(
    image_size: float | Sequence[float],
    num_levels: int,
    s_min: float = 0.2,
    s_max: float = 0.9,
    first_level_scale: float | None = 0.1,
    rounding: Literal["caffe", "paper"] = "caffe",
) -> tuple[list[float], list[float]]:
    """``(min_sizes, max_sizes)`` in pixels from the SSD paper's linear scale rule.

    The scales ``s_k`` of the levels grow linearly from ``s_min`` to ``s_max``; a level's
    min size is ``s_k * dim`` and its max size ``s_{k+1} * dim`` (one step past ``s_max`` for
    the last level), where ``dim`` is the smaller side of ``image_size``. With
    ``first_level_scale`` (Caffe SSD's conv4_3), the first level instead gets
    ``first_level_scale * dim`` / ``s_min * dim`` and the rule spans the other levels.

    ``rounding="caffe"`` is Caffe SSD's and ssd.pytorch's rule: scales are whole percentages
    and the step is ``floor((s_max - s_min) / (n - 1))`` percent over the n levels the rule
    spans (``num_levels - 1`` with a separate first level), which gives SSD300's
    ``[30, 60, 111, 162, 213, 264]`` / ``[60, 111, 162, 213, 264, 315]`` (s_min 0.2,
    s_max 0.9, first 0.1) and SSD512's ``[35.84, 76.8, ...]`` (0.15, 0.9, first 0.07).
    ``rounding="paper"`` is the continuous ``s_k = s_min + (s_max - s_min)(k - 1)/(m - 1)``.
    ``num_levels`` is at most 1024.
    """
    dim = min(_pair(image_size, "image_size", _positive))
    if isinstance(num_levels, bool) or not isinstance(num_levels, numbers.Integral):
        raise TypeError(f"num_levels must be an int, got {num_levels!r}")
    if num_levels > _MAX_SIZE_LEVELS:
        raise ValueError(f"num_levels must be at most {_MAX_SIZE_LEVELS}, got {num_levels}")
    s_min = _positive(s_min, "s_min")
    s_max = _positive(s_max, "s_max")
    if s_max < s_min:
        raise ValueError(f"s_max ({s_max}) must not be smaller than s_min ({s_min})")
    if rounding not in ("caffe", "paper"):
        raise ValueError(f"rounding must be 'caffe' or 'paper', got {rounding!r}")
    rule_levels = num_levels - (0 if first_level_scale is None else 1)
    if rule_levels < 1:
        raise ValueError(f"num_levels must be at least {num_levels - rule_levels + 1}, got {num_levels}")
    if first_level_scale is not None:
        first_level_scale = _positive(first_level_scale, "first_level_scale")
        if first_level_scale > s_min:
            raise ValueError(f"first_level_scale ({first_level_scale}) must not exceed s_min ({s_min})")

    if rounding == "caffe":
        # Whole percentages, and dim * percent / 100 so that e.g. 300 * 37 / 100 is exactly 111.
        low, high = round(s_min * 100), round(s_max * 100)
        step = (high - low) // (rule_levels - 1) if rule_levels > 1 else high - low
        percents = [low + k * step for k in range(rule_levels)]
        mins = [dim * p / 100 for p in percents]
        maxes = [dim * (p + step) / 100 for p in percents]
        if first_level_scale is not None:
            mins.insert(0, dim * round(first_level_scale * 100) / 100)
            maxes.insert(0, dim * low / 100)
    else:
        step = (s_max - s_min) / (rule_levels - 1) if rule_levels > 1 else s_max - s_min
        scales = [s_min + k * step for k in range(rule_levels)]
        mins = [dim * s for s in scales]
        maxes = [dim * (s + step) for s in scales]
        if first_level_scale is not None:
            mins.insert(0, dim * first_level_scale)
            maxes.insert(0, dim * s_min)
    return mins, maxes
