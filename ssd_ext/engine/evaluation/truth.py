"""What is scored: each evaluated image's ground truth (pixels) and its checked detections."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset

from .predict import Prediction

__all__ = ["Detections", "ImageTruth", "base_dataset", "check_predictions", "image_truth"]


@dataclass
class ImageTruth:
    """One image's ground truth in pixels (continuous xyxy)."""

    image_id: int | str
    boxes: np.ndarray  # float64 [G, 4]
    labels: np.ndarray  # int64 [G]
    difficult: np.ndarray  # bool [G]


@dataclass
class Detections:
    """One image's detections, checked and as float64/int64 arrays."""

    boxes: np.ndarray  # float64 [K, 4]
    scores: np.ndarray  # float64 [K]
    labels: np.ndarray  # int64 [K]


def base_dataset(dataset: Any) -> tuple[Any, list[int] | None]:
    """``(innermost dataset, index map or None)`` through ``torch.utils.data.Subset`` layers."""
    mapping: list[int] | None = None
    while isinstance(dataset, Subset):
        indices = [int(i) for i in dataset.indices]
        mapping = indices if mapping is None else [indices[i] for i in mapping]
        dataset = dataset.dataset
    return dataset, mapping


def image_truth(dataset: Any, index: int) -> ImageTruth:
    """Item ``index``'s ground truth from ``dataset.records`` or, without records, ``load_raw``."""
    records = getattr(dataset, "records", None)
    if records:
        record = records[index]
        boxes, labels, difficult, image_id = record.boxes, record.labels, record.difficult, record.image_id
    elif callable(getattr(dataset, "load_raw", None)):
        _, boxes, labels, difficult, image_id = dataset.load_raw(index)
    else:
        raise TypeError(f"cannot read ground truth from {type(dataset).__name__}: it needs the "
                        "DetectionDataset interface (records or load_raw)")
    return ImageTruth(image_id, np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                      np.asarray(labels, dtype=np.int64).reshape(-1),
                      np.asarray(difficult, dtype=bool).reshape(-1))


def _as_array(value: Any, name: str, dtype: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(f"prediction {name} cannot be read as {np.dtype(dtype).name}: {error}") from None


def _checked(prediction: Any, position: int, num_classes: int) -> Detections:
    boxes = _as_array(prediction["boxes"], "boxes", np.float64)
    scores = _as_array(prediction["scores"], "scores", np.float64).reshape(-1)
    labels = _as_array(prediction["labels"], "labels", np.int64).reshape(-1)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not len(boxes) == len(scores) == len(labels):
        raise ValueError(f"predictions[{position}]: boxes must be [K, 4] with K scores and labels, got "
                         f"boxes {boxes.shape}, scores {scores.shape}, labels {labels.shape}")
    if len(labels) and (labels.min() < 1 or labels.max() >= num_classes):
        raise ValueError(f"predictions[{position}]: labels must be in 1..{num_classes - 1}, got "
                         f"{labels.min()}..{labels.max()}")
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise ValueError(f"predictions[{position}]: boxes and scores must be finite")
    return Detections(boxes, scores, labels)


def check_predictions(predictions: Sequence[Prediction], length: int, num_classes: int
                      ) -> dict[int, Detections]:
    """Validated detections by dataset index, in first-seen order (duplicates, e.g. the padding
    of a DistributedSampler, keep their first copy)."""
    out: dict[int, Detections] = {}
    for position, prediction in enumerate(predictions):
        required = {"index", "boxes", "scores", "labels"}
        if not isinstance(prediction, dict) or not required <= prediction.keys():
            raise ValueError(f"predictions[{position}] must be a dict with 'index', 'boxes', 'scores' and "
                             f"'labels', got {type(prediction).__name__}")
        index = int(prediction["index"])
        if not 0 <= index < length:
            raise ValueError(f"predictions[{position}]['index'] = {index} is outside the dataset "
                             f"(0..{length - 1})")
        if index not in out:
            out[index] = _checked(prediction, position, num_classes)
    return out
