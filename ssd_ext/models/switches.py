"""The model switches of the SSD paper's analysis: aspect ratios per level, which levels predict,
and (in the factories) atrous or full VGG16.

Every SSD factory (``ssd300``, ``ssd512``, ``ssd_small``, ``rfb300``, ``rfb512``, ``rfb_small``)
takes ``aspect_ratios``, ``levels`` and ``atrous`` keyword arguments; ``None`` keeps the model's
own setting, which is the paper's. This module holds the checks and the prior derivation they
share; a switch that does not fit the model is a ``ValueError``/``TypeError`` naming the model.

``levels`` (increasing indices into the model's prediction levels) keeps those levels' heads.
The priors follow the paper's Table 3 ("every time we remove a layer, we adjust the default box
tiling to keep the total number of boxes similar to the original ... by stacking more scales of
boxes on remaining layers"): each removed level's scale, with its own box shapes, is stacked on
the nearest kept level (the finer one on a tie) as a :class:`~ssd_ext.models.priors.PriorScale`.
This reproduces the paper's box count where one coarse level is removed (SSD300 without
conv11_2: 8764 as in the paper) and stays within about 1 % for two or three removed levels
(8892 and 9942 against the paper's 8942 and 9864). The paper does not give its tilings, and
moving the coarse scales onto the 19x19 conv7 map gives many more boxes than its rows with two
or one output layers (15162 and 10830 against 9025 and 8664); we keep the rule rather than
invent per-row tilings, and the ablation runner reports every variant's prior count.

``aspect_ratios`` has one list per level of the model (applied before ``levels``, so a moved
scale keeps its shapes) or, together with ``levels``, one list per kept level (applied to every
scale stacked on it).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from typing import Any

from .priors import PriorConfig, PriorScale

__all__ = ["check_levels", "check_aspect_ratios", "check_atrous", "derive_prior_config", "prior_count_text"]


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_levels(levels: Any, num_levels: int, model: str) -> tuple[int, ...]:
    """``levels`` as increasing, distinct indices in ``[0, num_levels)``, or an error naming
    ``model``."""
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence):
        raise TypeError(f"{model}: levels must be a list of prediction level indices (0..{num_levels - 1}), "
                        f"got {levels!r} of type {type(levels).__name__}")
    if not levels:
        raise ValueError(f"{model}: levels must keep at least one of its {num_levels} prediction levels, "
                         "got []")
    for position, index in enumerate(levels):
        if not _is_int(index):
            raise TypeError(f"{model}: levels[{position}] must be an int level index, got {index!r}")
        if not 0 <= index < num_levels:
            raise ValueError(f"{model}: levels[{position}] = {index} is out of range: {model} has "
                             f"{num_levels} prediction levels (indices 0..{num_levels - 1})")
    result = tuple(int(i) for i in levels)
    if any(a >= b for a, b in zip(result, result[1:], strict=False)):
        raise ValueError(f"{model}: levels must be distinct indices in increasing order, got {list(levels)}")
    return result


def _ratio(value: object, where: str, model: str) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{model}: {where} must be a number, got {value!r} of type {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{model}: {where} must be a positive finite ratio, got {value!r}")
    return float(value)


def check_aspect_ratios(aspect_ratios: Any, lengths: Sequence[int],
                        model: str) -> tuple[tuple[float, ...], ...]:
    """``aspect_ratios`` as one tuple of positive ratios per level, with one of the ``lengths``
    (level counts the caller accepts), or an error naming ``model``."""
    expected = " or ".join(str(n) for n in sorted(set(lengths)))
    if isinstance(aspect_ratios, (str, bytes)) or not isinstance(aspect_ratios, Sequence):
        raise TypeError(f"{model}: aspect_ratios must be a list with one list of ratios per prediction "
                        f"level ({expected} levels), got {aspect_ratios!r}")
    if len(aspect_ratios) not in lengths:
        raise ValueError(f"{model}: aspect_ratios has {len(aspect_ratios)} entries but must have one list "
                         f"of ratios per prediction level ({expected}), got {list(aspect_ratios)!r}")
    result = []
    for level, ratios in enumerate(aspect_ratios):
        if isinstance(ratios, (str, bytes)) or not isinstance(ratios, Sequence):
            raise TypeError(f"{model}: aspect_ratios[{level}] must be a list of ratios (e.g. [2, 3] or []), "
                            f"got {ratios!r}")
        result.append(tuple(_ratio(r, f"aspect_ratios[{level}][{k}]", model) for k, r in enumerate(ratios)))
    return tuple(result)


def check_atrous(atrous: Any, model: str, supported: Sequence[bool], why: str = "") -> bool | None:
    """``atrous`` if the model offers that choice: ``None`` (the model's default) passes, a
    bool must be in ``supported`` (empty: the model has no such choice; ``why`` says why)."""
    if atrous is None:
        return None
    if not isinstance(atrous, bool):
        raise TypeError(f"{model}: atrous must be True, False or None, got {atrous!r}")
    if atrous not in supported:
        reason = f" ({why})" if why else ""
        if not supported:
            raise ValueError(f"{model}: atrous={atrous} does not apply: {model} has no atrous "
                             f"choice{reason}; leave atrous unset (None)")
        raise ValueError(f"{model}: atrous={atrous} is not available{reason}; {model} supports atrous="
                         f"{' or '.join(str(s) for s in supported)}")
    return atrous


def _nearest(kept: Sequence[int], level: int) -> int:
    """The kept level closest to ``level`` (the finer one on a tie)."""
    return min(kept, key=lambda k: (abs(k - level), k))


def _restack(base: PriorConfig, kept: tuple[int, ...]) -> PriorConfig:
    """``base`` reduced to the ``kept`` levels, each removed level's scales stacked on its
    nearest kept level (in level order, after that level's own scales)."""
    own = base.stacked_scales or ((),) * base.num_levels
    stacks = {k: list(own[k]) for k in kept}
    for level in range(base.num_levels):
        if level in stacks:
            continue
        max_size = base.max_sizes[level] if base.max_sizes is not None else None
        target = stacks[_nearest(kept, level)]
        target.append(PriorScale(base.min_sizes[level], max_size, base.aspect_ratios[level]))
        target.extend(own[level])

    def pick(values: Sequence | None) -> tuple | None:
        return None if values is None else tuple(values[k] for k in kept)

    return PriorConfig(
        feature_map_sizes=pick(base.feature_map_sizes), image_size=base.image_size,
        min_sizes=pick(base.min_sizes), max_sizes=pick(base.max_sizes),
        aspect_ratios=pick(base.aspect_ratios), steps=pick(base.steps), offset=base.offset,
        clip=base.clip, stacked_scales=tuple(tuple(stacks[k]) for k in kept),
    )


def _with_ratios_per_level(config: PriorConfig, ratios: tuple[tuple[float, ...], ...]) -> PriorConfig:
    """``config`` with ``ratios[k]`` for level k's own scale and every scale stacked on it."""
    stacked = None
    if config.stacked_scales is not None:
        stacked = tuple(tuple(dataclasses.replace(scale, aspect_ratios=ratios[k]) for scale in scales)
                        for k, scales in enumerate(config.stacked_scales))
    return dataclasses.replace(config, aspect_ratios=ratios, stacked_scales=stacked)


def derive_prior_config(base: PriorConfig, *, aspect_ratios: Any = None, levels: Any = None,
                        model: str = "model") -> PriorConfig:
    """The priors of a model whose full priors are ``base`` with the switches applied.

    Args:
        base: the model's priors with all its levels.
        aspect_ratios: ``None`` (``base``'s), one list per level of ``base``, or (with
            ``levels``) one per kept level.
        levels: ``None`` (all) or increasing indices of the levels that predict; the removed
            levels' scales are stacked on the nearest kept level (see the module docstring).
        model: the name used in error messages.

    Raises:
        TypeError, ValueError: a switch that does not fit ``base`` (message names ``model``).
    """
    num_levels = base.num_levels
    kept = check_levels(levels, num_levels, model) if levels is not None else None
    per_kept_level = None
    if aspect_ratios is not None:
        lengths = (num_levels,) if kept is None else (num_levels, len(kept))
        ratios = check_aspect_ratios(aspect_ratios, lengths, model)
        if len(ratios) == num_levels:
            base = dataclasses.replace(base, aspect_ratios=ratios)
        else:
            per_kept_level = ratios
    if kept is None or kept == tuple(range(num_levels)):
        return base
    derived = _restack(base, kept)
    return derived if per_kept_level is None else _with_ratios_per_level(derived, per_kept_level)


def prior_count_text(config: PriorConfig) -> str:
    """The prior count as a sum per level, e.g. ``"38x38x4 + 19x19x6 + ... = 8732"``."""
    pairs = zip(config.feature_map_hw, config.boxes_per_location, strict=True)
    terms = [f"{h}x{w}x{a}" for (h, w), a in pairs]
    return f"{' + '.join(terms)} = {config.num_priors}"
