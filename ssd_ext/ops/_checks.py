"""Argument validation shared by the op wrappers: clear ValueError/TypeError naming the
argument and what was seen, before anything reaches the C++ kernels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def require_tensor(value: object, name: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def as_float_tensor(value: object, name: str) -> Tensor:
    """A floating tensor: integer tensors become float32, bool/complex are rejected."""
    tensor = require_tensor(value, name)
    if tensor.dtype.is_floating_point:
        return tensor
    if tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise TypeError(f"{name} must be a real floating-point tensor, got {tensor.dtype}")
    return tensor.to(torch.float32)


def box_tensor(value: object, name: str, ndim: int | None = None) -> Tensor:
    """A floating [..., 4] tensor (with exactly `ndim` dimensions when given)."""
    tensor = as_float_tensor(value, name)
    if tensor.dim() == 0 or tensor.shape[-1] != 4:
        raise ValueError(f"{name} must have a last dimension of size 4, got shape {tuple(tensor.shape)}")
    if ndim is not None and tensor.dim() != ndim:
        raise ValueError(
            f"{name} must be {ndim}-dimensional ([{', '.join(['N'] * (ndim - 1))}, 4]), "
            f"got shape {tuple(tensor.shape)}"
        )
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


def promote_floats(*tensors: Tensor) -> list[Tensor]:
    """Cast floating tensors to their common promoted dtype (e.g. float16 + float32 -> float32)."""
    dtype = tensors[0].dtype
    for tensor in tensors[1:]:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return [tensor.to(dtype) for tensor in tensors]


def variance_pair(variances: Sequence[float], name: str = "variances") -> tuple[float, float]:
    """Two positive finite floats (centre variance, size variance)."""
    try:
        values = tuple(float(v) for v in variances)
    except TypeError:
        raise TypeError(f"{name} must be a pair of floats, got {variances!r}") from None
    if len(values) != 2:
        raise ValueError(f"{name} must have two values (centre, size), got {variances!r}")
    if not all(v > 0 and v != float("inf") for v in values):
        raise ValueError(f"{name} must be positive and finite, got {variances!r}")
    return values  # type: ignore[return-value]
