"""ONNX translations of the ``torch.ops.ssd_ext`` inference ops, in standard ONNX operators.

``torch.onnx.export`` (the dynamo exporter, torch's default) turns every node of the traced
program into ONNX through a registry of onnxscript functions; an op it has no function for
fails with "No ONNX function found for ssd_ext.detect.default". The functions here give our
ops that translation:

==========================  ================================================================
op                          ONNX operators
==========================  ================================================================
``ssd_ext::detect``         Softmax, the decode arithmetic, Clip, TopK (candidates per class),
                            NonMaxSuppression (one batch entry per image and class),
                            ScatterND + TopK (final top-k), GatherND
``ssd_ext::decode``         the decode arithmetic (Slice, Mul, Add, Exp, Concat)
``ssd_ext::box_iou``        Min/Max/Sub/Mul/Div with broadcasting
``ssd_ext::nms``            NonMaxSuppression (one batch entry and class, no score threshold)
==========================  ================================================================

They follow the kernels' rules (docs/ARCHITECTURE.md, "NMS and detection post-processing"):
scores ``> score_threshold``; the first ``candidates_per_class`` of each class by (score desc,
prior asc) -- ONNX TopK breaks ties by the lower index, like the kernels; greedy NMS dropping
IoU ``> iou_threshold`` (ONNX Runtime's CPU NonMaxSuppression visits equal scores lower index
first, like the kernels), at most ``max_detections`` kept per class; then the first
``max_detections`` of all kept detections by (score desc, class asc, prior asc), by one TopK
over ``class * K + rank`` slots. Padding rows are zeros with label -1, as the op returns.

What can differ from the CPU kernel: the last bits of Softmax and Exp (another library's
``exp``), so a decision can differ where two scores, a score and the threshold, or an IoU and
the IoU threshold lie within a few ulps of each other. NonMaxSuppression needs float32, so
float16/float64 inputs are post-processed in float32 and the outputs cast back.

Using them: :func:`onnx_translation_table` for ``torch.onnx.export(...,
custom_translation_table=...)``, or :func:`register_onnx_translations` (run when
``ssd_ext.export`` is imported) so that a plain ``torch.onnx.export`` call finds them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["box_iou_onnx", "decode_onnx", "detect_onnx", "nms_onnx", "onnx_translation_table",
           "register_onnx_translations"]

_INT64_MAX = 2**63 - 1
_FLOAT = 1  # onnx.TensorProto.FLOAT
_INT64 = 7  # onnx.TensorProto.INT64


def _opset() -> Any:
    from onnxscript import opset18

    return opset18


def _constant(values: Any, dtype: Any) -> Any:
    # A ``value`` tensor, not ``value_ints``/``value_float``: onnx's version converter (opset
    # 18 -> 17) reads Reduce axes from a Constant's ``value`` only.
    from onnx import numpy_helper

    return _opset().Constant(value=numpy_helper.from_array(np.asarray(values, dtype=dtype)))


def _ints(*values: int) -> Any:
    """A 1-D int64 constant."""
    return _constant(list(values), np.int64)


def _scalar_float(value: float) -> Any:
    return _constant(float(value), np.float32)


def _scalar_int(value: int) -> Any:
    return _constant(int(value), np.int64)


def _dim(tensor: Any, axis: int) -> Any:
    """Size of ``axis`` of ``tensor`` as a 1-element int64 tensor."""
    return _opset().Shape(tensor, start=axis, end=axis + 1)


def _last_axis(tensor: Any, start: int, end: int) -> Any:
    return _opset().Slice(tensor, _ints(start), _ints(end), _ints(-1))


def _decode(loc: Any, priors: Any, variance_center: float, variance_size: float) -> Any:
    """xyxy boxes from ``loc [..., P, 4]`` and cxcywh ``priors [P, 4]``, float32, in the
    kernels' order of operations (``box_math::decode_box``): each product rounded on its own."""
    op = _opset()
    prior_centre, prior_size = _last_axis(priors, 0, 2), _last_axis(priors, 2, 4)
    offset = op.Mul(op.Mul(_last_axis(loc, 0, 2), _scalar_float(variance_center)), prior_size)
    centre = op.Add(prior_centre, offset)
    size = op.Mul(prior_size, op.Exp(op.Mul(_last_axis(loc, 2, 4), _scalar_float(variance_size))))
    half = op.Mul(_scalar_float(0.5), size)
    return op.Concat(op.Sub(centre, half), op.Add(centre, half), axis=-1)


def _as_float32(tensor: Any) -> Any:
    return _opset().Cast(tensor, to=_FLOAT)


def _static_dim(tensor: Any, axis: int) -> int | None:
    """The size of ``axis`` when the exporter knows it (an int), else None (a symbolic size)."""
    try:
        value = tensor.shape[axis]
    except (AttributeError, IndexError, TypeError):
        return None
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else None


def _size(value: int | Any) -> Any:
    """A size as a 1-element int64 tensor (a constant when it is known at export time)."""
    return _ints(value) if isinstance(value, int) else value


def _class_candidates(scores: Any, boxes: Any, candidates: int | Any) -> tuple[Any, Any]:
    """Per (image, class >= 1): the first ``K = candidates`` priors by (score desc, prior asc).
    Returns ``(scores [B, C-1, K], boxes [B, (C-1)*K, 4])``."""
    op = _opset()
    class_scores = op.Transpose(_last_axis(scores, 1, _INT64_MAX), perm=[0, 2, 1])  # [B, C-1, P]
    # A NaN score never passes the threshold; -1 keeps it from taking a candidate's place.
    class_scores = op.Where(op.IsNaN(class_scores), _scalar_float(-1.0), class_scores)
    top_scores, top_priors = op.TopK(class_scores, _size(candidates), axis=-1, largest=1, sorted=1)
    flat_priors = op.Reshape(top_priors, op.Concat(_dim(boxes, 0), _ints(-1, 1), axis=0))
    return top_scores, op.GatherND(boxes, flat_priors, batch_dims=1)


def _nms_kept_scores(top_scores: Any, candidate_boxes: Any, candidates: int | Any, options: tuple) -> Any:
    """Greedy NMS of every (image, class) segment; ``[B, (C-1)*K]`` holding the kept
    candidates' scores and -1 elsewhere."""
    op = _opset()
    score_threshold, iou_threshold, max_detections = options
    count = _size(candidates)
    batch = _dim(top_scores, 0)
    segments = op.Mul(batch, _dim(top_scores, 1))  # B * (C-1)
    segment_boxes = op.Reshape(candidate_boxes, op.Concat(segments, count, _ints(4), axis=0))
    segment_scores = op.Reshape(top_scores, op.Concat(segments, _ints(1), count, axis=0))
    selected = op.NonMaxSuppression(segment_boxes, segment_scores, _scalar_int(max_detections),
                                    _scalar_float(iou_threshold), _scalar_float(score_threshold))
    segment_and_rank = op.Gather(selected, _ints(0, 2), axis=1)  # [N, 2]: (b * (C-1) + c - 1, rank)
    flat_shape = op.Concat(segments, count, axis=0)
    kept = op.GatherND(op.Reshape(top_scores, flat_shape), segment_and_rank)
    dense = op.ScatterND(op.Expand(_scalar_float(-1.0), flat_shape), segment_and_rank, kept)
    return op.Reshape(dense, op.Concat(batch, _ints(-1), axis=0))


def _padded(tensor: Any, trailing: list[int], missing: int | Any, value: Any) -> Any:
    """``tensor [B, D', *trailing]`` extended with ``missing`` rows of ``value`` on axis 1 (a
    Concat, not Pad, whose form changed in opset 18 and has no converter down to 17)."""
    if isinstance(missing, int) and missing == 0:
        return tensor
    op = _opset()
    shape = op.Concat(_dim(tensor, 0), _size(missing), *([_ints(*trailing)] if trailing else []), axis=0)
    return op.Concat(tensor, op.Expand(value, shape), axis=1)


def _final_top(kept_scores: Any, candidate_boxes: Any, sizes: tuple, max_detections: int) -> tuple:
    """The first ``max_detections`` kept detections of each image by (score desc, class asc,
    prior asc), padded: ``(boxes [B, D, 4], scores [B, D], labels [B, D], counts [B])``.
    ``sizes``: ``(K, (C-1) * K)``, ints when known at export time."""
    op = _opset()
    candidates, slots = sizes
    taken = min(max_detections, slots) if isinstance(slots, int) else op.Min(_ints(max_detections), slots)
    scores, slot = op.TopK(kept_scores, _size(taken), axis=-1, largest=1, sorted=1)
    valid = op.Greater(scores, _scalar_float(-0.5))  # kept scores are > score_threshold >= 0
    labels = op.Add(op.Div(slot, _size(candidates)), _scalar_int(1))
    boxes = op.GatherND(candidate_boxes, op.Unsqueeze(slot, _ints(-1)), batch_dims=1)
    zero = _scalar_float(0.0)
    boxes = op.Where(op.Unsqueeze(valid, _ints(-1)), boxes, zero)
    scores = op.Where(valid, scores, zero)
    labels = op.Where(valid, labels, _scalar_int(-1))
    counts = op.ReduceSum(op.Cast(valid, to=_INT64), _ints(1), keepdims=0)
    missing = max_detections - taken if isinstance(taken, int) else op.Sub(_ints(max_detections), taken)
    return (_padded(boxes, [4], missing, zero), _padded(scores, [], missing, zero),
            _padded(labels, [], missing, _scalar_int(-1)), counts)


def _sizes(conf_logits: Any, candidates_per_class: int) -> tuple[int | Any, int | Any]:
    """``(K, (C-1) * K)`` with ``K = min(candidates_per_class, P)``: ints when the exporter
    knows P and C (every SSD: fixed input size), so that TopK's k is a constant (runtimes
    such as TensorRT want that); tensors otherwise."""
    op = _opset()
    priors, classes = _static_dim(conf_logits, 1), _static_dim(conf_logits, 2)
    if priors is not None:
        candidates: int | Any = min(candidates_per_class, priors)
    else:
        candidates = op.Min(_ints(candidates_per_class), _dim(conf_logits, 1))
    if classes is not None and isinstance(candidates, int):
        return candidates, (classes - 1) * candidates
    foreground = op.Sub(_dim(conf_logits, 2), _ints(1))
    return candidates, op.Mul(foreground, _size(candidates))


def _empty_detections(loc: Any, max_detections: int) -> tuple:
    """All-padding outputs (no candidate can pass): zeros, labels -1, counts 0."""
    op = _opset()
    batch = _dim(loc, 0)
    shape = op.Concat(batch, _ints(max_detections), axis=0)
    return (op.Expand(_scalar_float(0.0), op.Concat(shape, _ints(4), axis=0)),
            op.Expand(_scalar_float(0.0), shape), op.Expand(_scalar_int(-1), shape),
            op.Expand(_scalar_int(0), batch))


def detect_onnx(loc: Any, conf_logits: Any, priors: Any, score_threshold: float, iou_threshold: float,
                candidates_per_class: int, max_detections: int, variance_center: float,
                variance_size: float) -> tuple[Any, Any, Any, Any]:
    """ONNX translation of ``ssd_ext::detect`` (the schema's arguments, in order): padded
    ``boxes [B, D, 4]`` xyxy in [0, 1], ``scores [B, D]``, ``labels [B, D]`` int64 (padding
    -1) and ``counts [B]`` int64, floats in ``loc``'s dtype."""
    op = _opset()
    if candidates_per_class == 0 or max_detections == 0:
        boxes, scores, labels, counts = _empty_detections(loc, max_detections)
    else:
        scores_all = op.Softmax(_as_float32(conf_logits), axis=-1)
        boxes_all = op.Clip(_decode(_as_float32(loc), _as_float32(priors), variance_center, variance_size),
                            _scalar_float(0.0), _scalar_float(1.0))
        sizes = _sizes(conf_logits, candidates_per_class)
        top_scores, candidate_boxes = _class_candidates(scores_all, boxes_all, sizes[0])
        kept = _nms_kept_scores(top_scores, candidate_boxes, sizes[0],
                                (score_threshold, iou_threshold, max_detections))
        boxes, scores, labels, counts = _final_top(kept, candidate_boxes, sizes, max_detections)
    return op.CastLike(boxes, loc), op.CastLike(scores, loc), labels, counts


def decode_onnx(loc: Any, priors: Any, variances: list[float]) -> Any:
    """ONNX translation of ``ssd_ext::decode``: ``loc [..., P, 4]`` -> xyxy boxes (not clipped)."""
    op = _opset()
    boxes = _decode(_as_float32(loc), _as_float32(priors), variances[0], variances[1])
    return op.CastLike(boxes, loc)


def box_iou_onnx(boxes1: Any, boxes2: Any) -> Any:
    """ONNX translation of ``ssd_ext::box_iou``: ``[N, 4]`` x ``[M, 4]`` xyxy -> IoU ``[N, M]``
    (0 where the union is empty), computed in float32."""
    op = _opset()
    first = op.Unsqueeze(_as_float32(boxes1), _ints(1))  # [N, 1, 4]
    second = op.Unsqueeze(_as_float32(boxes2), _ints(0))  # [1, M, 4]
    top_left = op.Max(_last_axis(first, 0, 2), _last_axis(second, 0, 2))
    bottom_right = op.Min(_last_axis(first, 2, 4), _last_axis(second, 2, 4))
    extent = op.Max(op.Sub(bottom_right, top_left), _scalar_float(0.0))
    inter = op.Mul(_last_axis(extent, 0, 1), _last_axis(extent, 1, 2))

    def area(boxes: Any) -> Any:
        sides = op.Sub(_last_axis(boxes, 2, 4), _last_axis(boxes, 0, 2))
        return op.Mul(_last_axis(sides, 0, 1), _last_axis(sides, 1, 2))

    union = op.Sub(op.Add(area(first), area(second)), inter)
    positive = op.Greater(union, _scalar_float(0.0))
    safe_union = op.Where(positive, union, _scalar_float(1.0))
    iou = op.Where(positive, op.Div(inter, safe_union), _scalar_float(0.0))
    return op.CastLike(op.Squeeze(iou, _ints(-1)), boxes1)


def nms_onnx(boxes: Any, scores: Any, iou_threshold: float, max_output: int = -1) -> Any:
    """ONNX translation of ``ssd_ext::nms``: kept indices ``[K]`` int64 in visiting order
    (score desc, ties lower index). NonMaxSuppression's optional score threshold is left out,
    so every finite score takes part, -inf included."""
    op = _opset()
    float_scores = _as_float32(scores)
    count = _dim(float_scores, 0)
    limit = _scalar_int(max_output if max_output >= 0 else _INT64_MAX)
    if max_output == 0:
        return op.Expand(_scalar_int(0), _ints(0))
    selected = op.NonMaxSuppression(op.Unsqueeze(_as_float32(boxes), _ints(0)),
                                    op.Reshape(float_scores, op.Concat(_ints(1, 1), count, axis=0)),
                                    limit, _scalar_float(iou_threshold))
    return op.Reshape(op.Gather(selected, _ints(2), axis=1), _ints(-1))


def onnx_translation_table() -> dict[torch._ops.OpOverload, Callable[..., Any]]:
    """``{op overload: onnxscript function}`` for ``torch.onnx.export(...,
    custom_translation_table=onnx_translation_table())``."""
    import ssd_ext  # noqa: F401  (registers the ops)

    ops = torch.ops.ssd_ext
    return {
        ops.detect.default: detect_onnx,
        ops.decode.default: decode_onnx,
        ops.box_iou.default: box_iou_onnx,
        ops.nms.default: nms_onnx,
    }


_registered = False


def register_onnx_translations() -> bool:
    """Add :func:`onnx_translation_table` to the registry every ``torch.onnx.export`` call
    starts from, so a plain ``torch.onnx.export(model, args)`` of a model that calls our ops
    works. Returns whether it could: the hook is torch's own registry list
    (``torch.onnx._internal.exporter._torchlib._torchlib_registry``, torch 2.5+), which a
    future torch may move; then pass ``custom_translation_table`` instead."""
    global _registered
    if _registered:
        return True
    try:
        from torch.onnx._internal.exporter import _registration
        from torch.onnx._internal.exporter._torchlib import _torchlib_registry

        registry_list = _torchlib_registry._registry
        entries = [
            _registration.OnnxDecompMeta(onnx_function=function, fx_target=target, signature=None,
                                         is_custom=True)
            for target, function in onnx_translation_table().items()
        ]
    except (ImportError, AttributeError, TypeError) as error:  # pragma: no cover - another torch
        logger.warning("ssd_ext.export: cannot register the ONNX translations of the ssd_ext ops with "
                       "this torch (%s); pass custom_translation_table=onnx_translation_table() to "
                       "torch.onnx.export", error)
        return False
    registry_list.extend(entries)
    _registered = True
    return True
