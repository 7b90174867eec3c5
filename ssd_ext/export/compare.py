"""Do two detectors give the same answers? :func:`compare_detections` pairs the detections of
two runs (eager PyTorch and ONNX Runtime, say) picture by picture under the parity rule of
docs/DEPLOY.md:

every detection scoring above ``min_score`` in either run pairs with one detection of the
other run with the same label, IoU >= ``min_iou`` and a score within ``score_tolerance``;
a detection without a partner is excused only when another detection of the same picture
scores within ``tie_tolerance`` of it (a near tie, whose order the last bits of Softmax may
flip, and with it a greedy-NMS decision or the last place of the top-k).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Comparison", "compare_detections"]


@dataclass
class Comparison:
    """What :func:`compare_detections` found."""

    pairs: int = 0
    """Detections above ``min_score`` that found their partner (counted once per pair)."""
    max_score_difference: float = 0.0
    min_iou: float = 1.0
    excused: list[str] = field(default_factory=list)
    """Unpaired detections excused as near ties."""
    problems: list[str] = field(default_factory=list)
    """Unpaired detections that are not near ties: the runs disagree."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return (f"{self.pairs} pairs, max |score diff| {self.max_score_difference:.2e}, min IoU "
                f"{self.min_iou:.5f}, {len(self.excused)} near-tie exceptions, "
                f"{len(self.problems)} disagreements")


def _arrays(detection: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    def numpy(value: Any) -> np.ndarray:
        return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)

    return (numpy(detection["boxes"]).astype(np.float64).reshape(-1, 4),
            numpy(detection["scores"]).astype(np.float64).reshape(-1),
            numpy(detection["labels"]).astype(np.int64).reshape(-1))


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    top_left = np.maximum(box[:2], boxes[:, :2])
    bottom_right = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    union = area + areas - inter
    # Two identical degenerate boxes (zero area) count as the same box.
    same = np.all(boxes == box, axis=1)
    return np.where(union > 0, inter / np.where(union > 0, union, 1), same.astype(np.float64))


@dataclass
class _Rule:
    min_score: float
    min_iou: float
    score_tolerance: float
    tie_tolerance: float


def _one_way(first: tuple, second: tuple, rule: _Rule, where: str, result: Comparison,
             all_scores: np.ndarray) -> int:
    """Pair each detection of ``first`` above ``min_score`` with one of ``second`` (any
    score); returns the number of pairs, adds the statistics and the unpaired to ``result``."""
    boxes, scores, labels = first
    other_boxes, other_scores, other_labels = second
    used = np.zeros(len(other_scores), dtype=bool)
    pairs = 0
    for index in np.argsort(-scores, kind="stable"):
        if scores[index] <= rule.min_score:
            continue
        ious = _iou(boxes[index], other_boxes) if len(other_scores) else np.zeros(0)
        fits = (~used & (other_labels == labels[index]) & (ious >= rule.min_iou)
                & (np.abs(other_scores - scores[index]) <= rule.score_tolerance))
        if fits.any():
            partner = int(np.argmax(np.where(fits, ious, -1.0)))
            used[partner] = True
            pairs += 1
            result.max_score_difference = max(result.max_score_difference,
                                              float(abs(other_scores[partner] - scores[index])))
            result.min_iou = min(result.min_iou, float(ious[partner]))
            continue
        near = np.abs(all_scores - scores[index]) <= rule.tie_tolerance
        note = (f"{where} detection {int(index)} (label {int(labels[index])}, score {scores[index]:.6f}, box "
                f"{np.round(boxes[index], 2).tolist()})")
        if int(near.sum()) > 1:  # itself and at least one other within the tie tolerance
            result.excused.append(note + " has a near tie")
        else:
            result.problems.append(note + " has no partner")
    return pairs


def compare_detections(reference: Sequence[dict[str, Any]], candidate: Sequence[dict[str, Any]], *,
                       min_score: float = 0.05, min_iou: float = 0.99, score_tolerance: float = 1e-3,
                       tie_tolerance: float = 1e-5) -> Comparison:
    """Compare two runs' detections (one dict per picture with ``boxes [K, 4]``, ``scores``,
    ``labels``; tensors or arrays) under the rule of the module docstring."""
    if len(reference) != len(candidate):
        raise ValueError(f"reference and candidate must hold one result per picture, got {len(reference)} "
                         f"and {len(candidate)}")
    rule = _Rule(min_score, min_iou, score_tolerance, tie_tolerance)
    result = Comparison()
    for picture, (first, second) in enumerate(zip(reference, candidate, strict=True)):
        first_arrays, second_arrays = _arrays(first), _arrays(second)
        all_scores = np.concatenate([first_arrays[1], second_arrays[1]])
        forward = _one_way(first_arrays, second_arrays, rule, f"picture {picture}: reference", result,
                           all_scores)
        backward = _one_way(second_arrays, first_arrays, rule, f"picture {picture}: candidate", result,
                            all_scores)
        result.pairs += max(forward, backward)
    return result
