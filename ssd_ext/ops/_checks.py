"""Argument rules shared by the op wrappers and their fake kernels.

The C++ checks (``csrc/ops/<stem>_checks.h``) are the authority for what reaches a kernel.
Python keeps what C++ cannot do or cannot say in Python terms: non-tensor and Python-number
arguments (TypeError naming the argument), dtype promotion, lists to CSR offsets, None to -1.
Shape rules that a wrapper states before converting its arguments are written once here (or
once in the op's module) and called by both the wrapper and the op's fake kernel, so eager,
meta and torch.compile calls raise the same ValueError/TypeError with the same words.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

_INT64_MAX = 2**63 - 1


def require_tensor(value: object, name: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


SUPPORTED_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def as_float_tensor(value: object, name: str) -> Tensor:
    """A float16/bfloat16/float32/float64 tensor: integer tensors become float32; bool,
    complex and the float8/float4 formats are rejected."""
    tensor = require_tensor(value, name)
    if tensor.dtype in SUPPORTED_FLOAT_DTYPES:
        return tensor
    if tensor.dtype.is_floating_point:
        raise TypeError(
            f"{name} must be float16, bfloat16, float32 or float64, got {tensor.dtype}"
        )
    if tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise TypeError(f"{name} must be a real floating-point tensor, got {tensor.dtype}")
    return tensor.to(torch.float32)


def integer_tensor(value: object, name: str) -> Tensor:
    """An integer tensor of any integer dtype, returned as int64 (bool, floating and complex
    dtypes are rejected)."""
    tensor = require_tensor(value, name)
    if tensor.dtype == torch.bool or tensor.dtype.is_floating_point or tensor.dtype.is_complex:
        raise TypeError(f"{name} must be an integer tensor, got {tensor.dtype}")
    return tensor.to(torch.int64)


def check_int64(tensor: Tensor, name: str) -> None:
    """`tensor` is int64 (what the kernels take; the wrappers convert other integer dtypes)."""
    if tensor.dtype != torch.int64:
        raise TypeError(f"{name} must be an int64 tensor, got {tensor.dtype}")


def check_box_shape(tensor: Tensor, name: str, ndim: int | None = None) -> None:
    """`tensor` is ``[..., 4]`` (with exactly `ndim` dimensions when given)."""
    if tensor.dim() == 0 or tensor.shape[-1] != 4:
        raise ValueError(f"{name} must have a last dimension of size 4, got shape {tuple(tensor.shape)}")
    if ndim is not None and tensor.dim() != ndim:
        raise ValueError(
            f"{name} must be {ndim}-dimensional ([{', '.join(['N'] * (ndim - 1))}, 4]), "
            f"got shape {tuple(tensor.shape)}"
        )


def check_length(tensor: Tensor, name: str, length: int, source: str) -> None:
    """`tensor` is 1-D with `length` elements; `source` says where the length comes from."""
    if tensor.dim() != 1 or tensor.shape[0] != length:
        raise ValueError(
            f"{name} must have shape [N] with N = {length} ({source}), got shape {tuple(tensor.shape)}"
        )


def box_tensor(value: object, name: str, ndim: int | None = None) -> Tensor:
    """A floating [..., 4] tensor (with exactly `ndim` dimensions when given)."""
    tensor = as_float_tensor(value, name)
    check_box_shape(tensor, name, ndim)
    return tensor


def same_device(*named: tuple[str, Tensor]) -> torch.device:
    first_name, first = named[0]
    for name, tensor in named[1:]:
        if tensor.device != first.device:
            raise ValueError(
                f"{first_name} and {name} must be on the same device, "
                f"got {first.device} and {tensor.device}"
            )
    return first.device


def same_dtype(*named: tuple[str, Tensor]) -> None:
    """Every tensor has the first one's dtype (the kernels take one floating dtype)."""
    first_name, first = named[0]
    for name, tensor in named[1:]:
        if tensor.dtype != first.dtype:
            raise TypeError(
                f"{first_name} and {name} must have the same dtype, got {first.dtype} and {tensor.dtype}"
            )


def promote_floats(*tensors: Tensor) -> list[Tensor]:
    """Cast floating tensors to their common promoted dtype (e.g. float16 + float32 -> float32)."""
    dtype = tensors[0].dtype
    for tensor in tensors[1:]:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return [tensor.to(dtype) for tensor in tensors]


def real_to_float(value: numbers.Real, name: str, expected: str) -> float:
    """``float(value)`` of a real number; an int (or Fraction) too large for a float, such as
    ``10**400``, is a ValueError naming `name` and saying what was `expected` (Python's own
    OverflowError names nothing)."""
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} must be {expected}, got {value!r} (too large for a float)") from None


def variance_pair(variances: Sequence[float], name: str = "variances") -> tuple[float, float]:
    """Two positive finite floats (centre variance, size variance): a sequence of two real
    numbers (Python or numpy numbers, or a 2-element tensor); strings, bools and other
    objects are a TypeError naming `name`."""
    expected = f"{name} must be a pair of real numbers (centre, size), e.g. (0.1, 0.2)"
    if isinstance(variances, Tensor) or type(variances).__module__ == "numpy":
        # A 1-D tensor or numpy array of numbers reads as its list.
        variances = variances.tolist() if getattr(variances, "ndim", 0) == 1 else variances
    if isinstance(variances, (str, bytes)) or not isinstance(variances, Sequence):
        raise TypeError(f"{expected}, got {variances!r} ({type(variances).__name__})")
    for value in variances:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{expected}, got {variances!r} (an element of type {type(value).__name__})")
    values = tuple(real_to_float(v, name, "positive and finite") for v in variances)
    if len(values) != 2:
        raise ValueError(f"{name} must have two values (centre, size), got {variances!r}")
    if not all(v > 0 and v != float("inf") for v in values):
        raise ValueError(f"{name} must be positive and finite, got {variances!r}")
    return values  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------
# The C++ checks of csrc/ops/common_checks.h, for the fake kernels: the same conditions, in
# the same order and words, so that an argument the kernel refuses is refused by its fake
# (meta tensors, torch.compile) with the same exception type.

def check_floating(tensor: Tensor, name: str) -> None:
    """C++ check_floating: one of the four dtypes the kernels dispatch on (TypeError)."""
    if tensor.dtype not in SUPPORTED_FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), "
            f"got {tensor.dtype}"
        )


def check_box_tensor(tensor: Tensor, name: str, ndim: int) -> None:
    """C++ check_box_tensor: exactly `ndim` dimensions, the last of size 4 (ValueError, in the
    wrappers' words), then a supported floating dtype (TypeError)."""
    check_box_shape(tensor, name, ndim)
    check_floating(tensor, name)


def check_unit_interval(value: float, name: str, open_at_zero: bool = False) -> None:
    """A threshold in [0, 1] (or (0, 1]); NaN fails (ValueError)."""
    low_ok = value > 0.0 if open_at_zero else value >= 0.0
    if not (low_ok and value <= 1.0):
        interval = "(0, 1]" if open_at_zero else "[0, 1]"
        raise ValueError(f"{name} must be in {interval}, got {value}")


def check_non_negative(value: int, name: str) -> None:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def check_variance_values(variance_center: float, variance_size: float) -> None:
    """Both variances positive and finite (ValueError), as the kernels require."""
    if not all(v > 0 and math.isfinite(v) for v in (variance_center, variance_size)):
        raise ValueError(f"variances must be positive and finite, got ({variance_center}, {variance_size})")


def check_byte_count(what: str, sizes: Sequence[int], dtype: torch.dtype) -> None:
    """The byte-count half of C++ check_allocation, for the fakes: a ValueError when an output of
    `sizes` and `dtype` would need 2**63 bytes or more (torch's own error for that is a
    RuntimeError naming no argument). The other half, the machine's memory, stays in C++: a
    fake allocates nothing."""
    needed = dtype.itemsize
    for size in sizes:  # C++ multiplies in this order and checks every partial product
        needed *= size
        if needed > _INT64_MAX:
            raise ValueError(f"{what} of shape {list(sizes)} ({dtype}) would need more than 2^63 bytes")


INT32_MAX = 2**31 - 1


def check_int32_rows(count: int, name: str, what: str = "rows") -> None:
    """The kernels keep these indices in int32 scratch buffers."""
    if count >= INT32_MAX:
        raise ValueError(f"{name} has {count} {what}; at most {INT32_MAX - 1} are supported")


def threshold_value(value: object, name: str) -> float:
    """A real number in [0, 1] (bool and NaN rejected; numpy scalars accepted)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float in [0, 1], got {type(value).__name__}")
    value = real_to_float(value, name, "in [0, 1]")
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def count_value(value: object, name: str, allow_none: bool = False) -> int:
    """A non-negative int that fits the ops' int64 (None -> -1, the ops' 'no limit', when
    allowed; numpy integers accepted)."""
    if value is None and allow_none:
        return -1
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        kind = "an int >= 0 or None" if allow_none else "an int >= 0"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__}")
    value = int(value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    if value > _INT64_MAX:
        raise ValueError(f"{name} must be < 2**63, got {value}")
    return value
