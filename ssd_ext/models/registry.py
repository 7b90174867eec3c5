"""The model registry: names -> factories, and the argument checks every factory shares.

A detector family registers each of its models with :func:`register_model`::

    @register_model("rfb300")
    def rfb300(num_classes: int = 21, priors: PriorConfig | str | None = None) -> SSD: ...

:func:`build_model` looks the name up (case-insensitive) and calls the factory with
``num_classes``, ``priors`` and any extra keyword arguments; :func:`list_models` gives the
registered names in registration order.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["register_model", "list_models", "build_model", "check_num_classes", "check_width"]

Factory = TypeVar("Factory", bound=Callable[..., nn.Module])

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Factory], Factory]:
    """Decorator registering a model factory under ``name`` (stored lower-case).

    The factory must accept ``num_classes`` and ``priors`` keyword arguments. Registering a
    name twice is an error (a second family must pick its own names).
    """
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"register_model: name must be a non-empty str, got {name!r}")
    key = name.lower()

    def decorator(factory: Factory) -> Factory:
        if key in _REGISTRY and _REGISTRY[key] is not factory:
            raise ValueError(f"register_model: a model named {key!r} is already registered "
                             f"({_REGISTRY[key].__module__}.{_REGISTRY[key].__qualname__})")
        _REGISTRY[key] = factory
        return factory

    return decorator


def list_models() -> list[str]:
    """The registered model names, in registration order."""
    return list(_REGISTRY)


def check_num_classes(num_classes: Any) -> int:
    """``num_classes`` as an int >= 2 (classes including background), or a clear error."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        if isinstance(num_classes, float) and math.isfinite(num_classes) and num_classes.is_integer():
            hint = f" (pass {int(num_classes)})"
        else:
            hint = ""
        raise TypeError(f"num_classes must be an int >= 2 (classes including background), got "
                        f"{num_classes!r} of type {type(num_classes).__name__}{hint}")
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    return int(num_classes)


def check_width(width: Any, minimum: int, model: str) -> int:
    """A channel-width argument as an int >= ``minimum``, or a clear error."""
    if isinstance(width, bool) or not isinstance(width, numbers.Integral):
        raise TypeError(f"{model}: width must be an int >= {minimum}, got {width!r} of type "
                        f"{type(width).__name__}")
    if width < minimum:
        raise ValueError(f"{model}: width must be an int >= {minimum}, got {width}")
    return int(width)


def build_model(name: str, num_classes: int, priors: Any = None, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` (case-insensitive) with ``num_classes`` classes
    (including background; VOC 21, COCO 81).

    ``priors`` is a ``PriorConfig``, a preset name (``ssd_ext.models.PRESETS``) or ``None``
    (the model's own default); other keyword arguments go to the factory.

    Raises:
        TypeError: ``name`` is not a str, or ``num_classes`` is not an int.
        ValueError: unknown ``name`` (the message lists the known ones), ``num_classes < 2``.
    """
    if not isinstance(name, str):
        raise TypeError(f"build_model: name must be a str, one of {list_models()}; got {name!r} of type "
                        f"{type(name).__name__}")
    factory = _REGISTRY.get(name.lower())
    if factory is None:
        raise ValueError(f"unknown model {name!r}; known: {list_models()}")
    num_classes = check_num_classes(num_classes)
    return factory(num_classes=num_classes, priors=priors, **kwargs)
