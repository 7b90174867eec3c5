"""Detections of a model over a loader, in original picture pixels, on one rank or gathered from all."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator
from typing import Any, TypedDict

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, RandomSampler, SubsetRandomSampler, WeightedRandomSampler

from ..distributed import gather_to_main
from ..wrappers import unwrap_model

__all__ = ["Prediction", "predict", "predict_gathered"]

_RANDOM_SAMPLERS = (RandomSampler, SubsetRandomSampler, WeightedRandomSampler)


class Prediction(TypedDict):
    """One image's detections: boxes xyxy in ORIGINAL picture pixels (the picture spans
    ``[0, W] x [0, H]``), by decreasing score."""

    index: int  # the dataset index
    image_id: int | str
    boxes: Tensor  # float32 [K, 4]
    scores: Tensor  # float32 [K]
    labels: Tensor  # int64 [K], in 1..C-1


def _model_device(model: nn.Module) -> torch.device:
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _loader_order(loader: DataLoader) -> Iterable[int]:
    """The dataset indices a loader visits, in order, for targets without ``"index"``."""
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, _RANDOM_SAMPLERS):
        raise ValueError(
            "predict: the loader shuffles and its targets carry no 'index', so the dataset index of "
            "each image is unknown; use an unshuffled loader (shuffle=False) for evaluation"
        )
    batch_sampler = getattr(loader, "batch_sampler", None)
    if batch_sampler is not None:
        # Deterministic samplers (sequential, DistributedSampler with its seed and epoch) give
        # the same order again when iterated anew.
        return itertools.chain.from_iterable(iter(batch_sampler))
    if sampler is not None:
        return iter(sampler)
    return itertools.count()


class _LoaderOrder:
    """Iterates the loader's dataset indices, made on first use (only targets without an index need it)."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self.indices: Iterator[int] | None = None

    def __next__(self) -> int:
        if self.indices is None:
            self.indices = iter(_loader_order(self.loader))
        return int(next(self.indices))


def _progress_total(loader: DataLoader) -> int | None:
    try:
        return len(loader.sampler) if getattr(loader, "batch_sampler", None) is not None else len(loader)
    except TypeError:
        return None


def _original_sizes(images: Any, targets: Any) -> list[tuple[int, int]]:
    """``(H, W)`` of every picture of a batch, from the targets' ``orig_size``."""
    if not isinstance(images, Tensor) or images.dim() != 4 or len(targets) != images.shape[0]:
        raise ValueError("predict: the loader must yield (images [B, 3, H, W], [target] * B) batches "
                         "(use ssd_ext.data.collate)")
    sizes = []
    for target in targets:
        if "orig_size" not in target:
            raise ValueError("predict: targets need 'orig_size' (H, W) to map boxes back to the original "
                             "pictures (ssd_ext.data datasets provide it)")
        sizes.append(tuple(int(v) for v in target["orig_size"]))
    return sizes


def _as_prediction(target: dict[str, Any], detection: dict[str, Tensor], order: _LoaderOrder) -> Prediction:
    index = int(target["index"]) if "index" in target else int(next(order))
    image_id = target.get("image_id", index)
    if isinstance(image_id, Tensor):
        image_id = image_id.item()
    return Prediction(index=index, image_id=image_id,
                      boxes=detection["boxes"].detach().to("cpu", torch.float32),
                      scores=detection["scores"].detach().to("cpu", torch.float32),
                      labels=detection["labels"].detach().to("cpu", torch.int64))


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, *, device: torch.device | str | None = None,
            score_threshold: float = 0.01, iou_threshold: float = 0.45, max_detections: int = 200,
            progress: bool = True, autocast_dtype: torch.dtype | None = None) -> list[Prediction]:
    """Run ``model.detect`` over ``loader``; one :class:`Prediction` per image, in loader order.

    ``model`` is an SSD (anything with SSD's ``detect(images, ..., image_sizes=...)``), possibly
    wrapped (:func:`~ssd_ext.engine.wrappers.unwrap_model`); it runs in eval mode and is left in
    the mode it had. ``loader`` yields ``(images [B, 3, H, W], targets)`` as
    :func:`ssd_ext.data.collate` makes them, each target with ``"orig_size"`` ``(H, W)`` and
    ``"image_id"``; the dataset index is ``target["index"]`` when present, otherwise the
    loader's (unshuffled) order. ``device``: where the images go (the model's by default);
    ``score_threshold``, ``iou_threshold``, ``max_detections``: as :func:`ssd_ext.ops.detect`;
    ``autocast_dtype``: run the forward pass under ``torch.autocast``. Tensors come back on the CPU.
    """
    net = unwrap_model(model)
    if not callable(getattr(net, "detect", None)):
        raise TypeError(f"model must have a detect() method (an SSD), got {type(net).__name__}")
    device = torch.device(device) if device is not None else _model_device(net)
    from tqdm.auto import tqdm

    order = _LoaderOrder(loader)
    predictions: list[Prediction] = []
    was_training = model.training
    model.eval()
    try:
        with tqdm(total=_progress_total(loader), desc="predict", unit="img", disable=not progress,
                  dynamic_ncols=True, leave=False) as bar:
            for images, targets in loader:
                sizes = _original_sizes(images, targets)
                autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
                            else contextlib.nullcontext())
                with autocast:
                    detections = net.detect(images.to(device, non_blocking=True),
                                            score_threshold=score_threshold, iou_threshold=iou_threshold,
                                            max_detections=max_detections, image_sizes=sizes)
                predictions += [_as_prediction(t, d, order) for t, d in zip(targets, detections, strict=True)]
                bar.update(images.shape[0])
    finally:
        model.train(was_training)
    return predictions


def predict_gathered(model: nn.Module, loader: DataLoader, **predict_kwargs: Any) -> list[Prediction] | None:
    """:func:`predict` over this rank's shard (``loader`` should hold a ``DistributedSampler``),
    gathered on rank 0: every dataset index once, in index order (a sampler's padding repeats
    some); None on the other ranks."""
    gathered = gather_to_main(predict(model, loader, **predict_kwargs))
    if gathered is None:
        return None
    unique: dict[int, Prediction] = {}
    for prediction in gathered:
        unique.setdefault(int(prediction["index"]), prediction)
    return [unique[index] for index in sorted(unique)]
