"""Which implementation the public ops run: our kernels (``"ssd_ext"``, the default) or the
plain-PyTorch reference (``"reference"``, the ``ssd_reference`` package).

The switch exists so that a whole training or inference step can be measured with the
reference ops in place of the kernels (``benchmarks/bench_e2e.py``), and so that a user can
check a suspicious result against the reference without editing code::

    from ssd_ext import ops

    with ops.use_backend("reference"):     # this thread only, restored on exit
        loss = criterion(loc, conf, targets)
    ops.set_backend("reference")           # the process-wide default
    ops.get_backend()                      # -> "reference"

Scope (a choice): ``set_backend`` sets the process-wide default; ``use_backend`` overrides it
for the calling thread only, for the duration of its ``with`` block (nested blocks restore
the outer choice; an exception restores it too). A thread-local override keeps a benchmark
or a test in one thread from changing what a data-loader thread or another test runs.

How the ops consult it: every public wrapper in ``ssd_ext/ops/*.py`` carries the
``@dispatch("<op>")`` decorator of this module (its one dispatch line). With the ``"ssd_ext"``
backend the wrapper runs unchanged (one thread-local read per call). With ``"reference"`` the
call goes, with the same arguments, to this module's adapter of the reference function, which
gives the same output structure as the wrapper (dtypes promoted like the wrappers, results on
the inputs' device, ``detect_padded``'s padding, ``match``'s ``num_classes`` / ``invalid``
rules). The reference validates less than the wrappers do: it is meant for inputs the kernels
accept. Under ``torch.compile`` the switch is read at trace time (a recompile is not forced when
it changes later); the reference's Python loops break the graph where the kernels would not.

``ssd_reference`` lives in ``python/`` of the source tree and is installed alongside
``ssd_ext``; if it cannot be imported, selecting ``"reference"`` raises ``ImportError``.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

__all__ = ["BACKENDS", "dispatch", "get_backend", "reference_ops", "set_backend", "use_backend"]

BACKENDS = ("ssd_ext", "reference")

_default = "ssd_ext"
_local = threading.local()

F = TypeVar("F", bound=Callable[..., Any])


def _check_name(name: object) -> str:
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {name!r}")
    if name == "reference":
        _reference()  # fail now, not at the first op call, when ssd_reference is missing
    return name


def get_backend() -> str:
    """The backend the calling thread's op calls use now: its ``use_backend`` override, or
    the process-wide default (``"ssd_ext"`` unless :func:`set_backend` changed it)."""
    return getattr(_local, "name", None) or _default


def set_backend(name: str) -> None:
    """Set the process-wide default backend (``"ssd_ext"`` or ``"reference"``). Threads inside
    a :func:`use_backend` block keep their override."""
    global _default
    _default = _check_name(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Run the ops of the calling thread on backend ``name`` inside the ``with`` block; the
    previous choice is restored on exit (also on an exception). Yields ``name``."""
    name = _check_name(name)
    previous = getattr(_local, "name", None)
    _local.name = name
    try:
        yield name
    finally:
        _local.name = previous


def dispatch(op: str) -> Callable[[F], F]:
    """Decorator of a public op wrapper: route its calls to the reference adapter ``op``
    when the calling thread's backend is ``"reference"``."""
    if op not in _ADAPTERS:
        raise ValueError(f"no reference adapter for op {op!r}; known: {sorted(_ADAPTERS)}")
    adapter = _ADAPTERS[op]

    def decorate(wrapper: F) -> F:
        @functools.wraps(wrapper)
        def dispatched(*args: Any, **kwargs: Any) -> Any:
            if get_backend() == "ssd_ext":
                return wrapper(*args, **kwargs)
            return adapter(wrapper, *args, **kwargs)

        return dispatched  # type: ignore[return-value]

    return decorate


# ---------------------------------------------------------------------------------------------
# Adapters: the reference functions called with the wrappers' arguments and results shaped
# like the wrappers'. Each takes the wrapper itself first, for its signature's defaults.


@functools.cache
def _reference() -> Any:
    import ssd_reference

    return ssd_reference


def _bind(wrapper: Callable[..., Any], args: tuple, kwargs: dict) -> dict[str, Any]:
    """The wrapper's arguments by name, defaults applied (the same TypeError as a call)."""
    import inspect

    bound = inspect.signature(wrapper).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _float_dtype(*tensors: Tensor) -> torch.dtype:
    """The wrappers' promotion: the promoted dtype of the inputs, float32 when none is floating."""
    dtype = tensors[0].dtype
    for tensor in tensors[1:]:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype if dtype.is_floating_point else torch.float32


def _as_tensor(value: object) -> Tensor:
    return value if isinstance(value, Tensor) else torch.as_tensor(value)


def _box_iou(wrapper: Callable[..., Any], *args: Any, **kwargs: Any) -> Tensor:
    a = _bind(wrapper, args, kwargs)
    boxes1, boxes2 = _as_tensor(a["boxes1"]), _as_tensor(a["boxes2"])
    dtype = _float_dtype(boxes1, boxes2)
    return _reference().box_iou(boxes1.to(dtype), boxes2.to(dtype))


def _coding(name: str, first: str) -> Callable[..., Tensor]:
    def adapter(wrapper: Callable[..., Any], *args: Any, **kwargs: Any) -> Tensor:
        a = _bind(wrapper, args, kwargs)
        values, priors = _as_tensor(a[first]), _as_tensor(a["priors"])
        dtype = _float_dtype(values, priors)
        return getattr(_reference(), name)(values.to(dtype), priors.to(dtype), tuple(a["variances"]))

    return adapter


def _invalid_ground_truth(boxes: Tensor, labels: Tensor, num_classes: int | None) -> Tensor:
    """bool ``[G]``: rows ``ssd_ext.ops.match`` refuses (non-finite, empty, label out of range)."""
    ok = torch.isfinite(boxes).all(dim=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    ok &= labels >= 1
    if num_classes is not None:
        ok &= labels < num_classes
    return ~ok


def _match(wrapper: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
    a = _bind(wrapper, args, kwargs)
    if a["invalid"] not in ("raise", "drop"):
        raise ValueError(f"invalid must be 'raise' or 'drop', got {a['invalid']!r}")
    priors = _as_tensor(a["priors"])
    boxes_list = [_as_tensor(b) for b in a["gt_boxes"]]
    labels_list = [_as_tensor(labels).to(torch.int64) for labels in a["gt_labels"]]
    dtype = _float_dtype(priors, *boxes_list)
    kept_boxes, kept_labels = [], []
    for image, (boxes, labels) in enumerate(zip(boxes_list, labels_list, strict=True)):
        boxes = boxes.to(dtype).reshape(-1, 4)
        bad = _invalid_ground_truth(boxes, labels, a["num_classes"])
        if bool(bad.any()):
            message = f"ground truth of image {image}: {int(bad.sum())} invalid row(s) (reference backend)"
            if a["invalid"] == "raise":
                raise ValueError(message)
            warnings.warn(f"match: dropping invalid ground truth ({message})", stacklevel=3)
            boxes, labels = boxes[~bad], labels[~bad]
        kept_boxes.append(boxes)
        kept_labels.append(labels)
    return _reference().match(kept_boxes, kept_labels, priors.to(dtype), float(a["iou_threshold"]),
                              tuple(a["variances"]))


def _hard_negative_mining(wrapper: Callable[..., Any], *args: Any, **kwargs: Any) -> Tensor:
    a = _bind(wrapper, args, kwargs)
    return _reference().hard_negative_mining(_as_tensor(a["conf_loss"]), _as_tensor(a["labels"]),
                                             int(a["neg_pos_ratio"]), int(a["min_negatives"]))


def _nms(wrapper: Callable[..., Any], *args: Any, **kwargs: Any) -> Tensor:
    a = _bind(wrapper, args, kwargs)
    boxes, scores = _as_tensor(a["boxes"]), _as_tensor(a["scores"])
    kept = _reference().nms(boxes, scores, float(a["iou_threshold"]), a["max_output"])
    return kept.to(boxes.device)


def _batched_nms(wrapper: Callable[..., Any], *args: Any, **kwargs: Any) -> Tensor:
    a = _bind(wrapper, args, kwargs)
    boxes, scores = _as_tensor(a["boxes"]), _as_tensor(a["scores"])
    kept = _reference().batched_nms(boxes, scores, _as_tensor(a["idxs"]), float(a["iou_threshold"]),
                                    a["max_output"])
    return kept.to(boxes.device)


def _detect_lists(a: dict[str, Any]) -> tuple[list[dict[str, Tensor]], torch.device, torch.dtype]:
    """The reference's per-image dicts, computed on the CPU (its loops build CPU index tensors)
    in the wrappers' promoted dtype; returns them with the inputs' device and that dtype."""
    loc, conf, priors = _as_tensor(a["loc"]), _as_tensor(a["conf_logits"]), _as_tensor(a["priors"])
    dtype = _float_dtype(loc, conf, priors)
    results = _reference().detect(
        loc.to("cpu", dtype), conf.to("cpu", dtype), priors.to("cpu", dtype), float(a["score_threshold"]),
        float(a["iou_threshold"]), int(a["candidates_per_class"]), int(a["max_detections"]),
        tuple(a["variances"]),
    )
    return results, loc.device, dtype


def _detect(wrapper: Callable[..., Any], *args: Any, **kwargs: Any) -> list[dict[str, Tensor]]:
    results, device, _ = _detect_lists(_bind(wrapper, args, kwargs))
    return [{key: value.to(device) for key, value in result.items()} for result in results]


def _detect_padded(wrapper: Callable[..., Any], *args: Any,
                   **kwargs: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    a = _bind(wrapper, args, kwargs)
    results, device, dtype = _detect_lists(a)
    batch, width = len(results), int(a["max_detections"])
    boxes = torch.zeros(batch, width, 4, dtype=dtype)
    scores = torch.zeros(batch, width, dtype=dtype)
    labels = torch.full((batch, width), -1, dtype=torch.int64)
    counts = torch.zeros(batch, dtype=torch.int64)
    for image, result in enumerate(results):
        count = result["scores"].shape[0]
        boxes[image, :count] = result["boxes"]
        scores[image, :count] = result["scores"]
        labels[image, :count] = result["labels"]
        counts[image] = count
    return boxes.to(device), scores.to(device), labels.to(device), counts.to(device)


def _prior_boxes(wrapper: Callable[..., Any], *args: Any, **kwargs: Any) -> Tensor:
    a = _bind(wrapper, args, kwargs)
    return _reference().prior_boxes(
        a["feature_map_sizes"], a["image_size"], a["min_sizes"], a["max_sizes"], a["aspect_ratios"],
        a["steps"], a["offset"], a["clip"], device=a["device"], dtype=a["dtype"],
    )


_ADAPTERS: dict[str, Callable[..., Any]] = {
    "box_iou": _box_iou,
    "encode": _coding("encode", "boxes"),
    "decode": _coding("decode", "loc"),
    "match": _match,
    "hard_negative_mining": _hard_negative_mining,
    "nms": _nms,
    "batched_nms": _batched_nms,
    "detect": _detect,
    "detect_padded": _detect_padded,
    "prior_boxes": _prior_boxes,
}


def reference_ops() -> Sequence[str]:
    """The ops that the ``"reference"`` backend replaces (every public op with a kernel)."""
    return tuple(_ADAPTERS)
