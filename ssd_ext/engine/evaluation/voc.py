"""PASCAL VOC average precision at one IoU threshold (0.5 for VOC), 11-point and area.

Detections of a class are taken by decreasing score; each is matched to the ground-truth box
of its image and class with the highest IoU (as the VOC devkit does): IoU >= the threshold and
that box not yet taken is a true positive, already taken is a false positive (duplicate), and a
``difficult`` box makes the detection neither (nor does it count among the positives). The
mean is over the classes that have ground truth.
"""

from __future__ import annotations

import numpy as np

from .truth import Detections, ImageTruth

__all__ = ["voc_ap", "voc_metrics"]

Curve = tuple[np.ndarray, np.ndarray]  # (recall [N], precision [N])


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = False) -> float:
    """PASCAL VOC average precision of one class from its cumulative ``recall`` / ``precision``
    (``[N]``, detections by decreasing score).

    ``use_07_metric``: VOC2007's 11-point mean of the best precision at recall >= 0, 0.1, ..., 1
    (thresholds exactly ``k / 10``; 0 where that recall is never reached). Otherwise the area
    under the precision envelope (precision made non-increasing from the right), integrated over
    all recall steps (VOC2010 and later).
    """
    recall = np.asarray(recall, dtype=np.float64).reshape(-1)
    precision = np.asarray(precision, dtype=np.float64).reshape(-1)
    if use_07_metric:
        total = 0.0
        for k in range(11):
            reached = recall >= k / 10
            total += float(precision[reached].max()) if reached.any() else 0.0
        return total / 11
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[N, M]`` IoU of xyxy boxes in continuous coordinates (no VOC "+1")."""
    wh = np.clip(np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2]),
                 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _voc_class(label: int, order: list[int], truth: dict[int, ImageTruth],
               detections: dict[int, Detections], iou_threshold: float
               ) -> tuple[np.ndarray, np.ndarray, int]:
    """``(recall [N], precision [N], positives)`` of one class over the evaluated images."""
    scores, image_pos, best_iou, best_gt = [], [], [], []
    gt_difficult: list[np.ndarray] = []
    positives = 0
    for pos, index in enumerate(order):
        gt = truth[index]
        in_class = gt.labels == label
        gt_boxes, difficult = gt.boxes[in_class], gt.difficult[in_class]
        gt_difficult.append(difficult)
        positives += int((~difficult).sum())
        det = detections[index]
        mine = det.labels == label
        if not mine.any():
            continue
        det_boxes = det.boxes[mine]
        scores.append(det.scores[mine])
        image_pos.append(np.full(len(det_boxes), pos))
        if len(gt_boxes):
            iou = _pairwise_iou(det_boxes, gt_boxes)
            best_gt.append(iou.argmax(axis=1))  # first of equal IoUs, as the devkit
            best_iou.append(iou.max(axis=1))
        else:
            best_gt.append(np.full(len(det_boxes), -1))
            best_iou.append(np.zeros(len(det_boxes)))
    if not scores:
        return np.zeros(0), np.zeros(0), positives
    score = np.concatenate(scores)
    ranked = np.argsort(-score, kind="stable")  # ties: image order, then the image's own order
    image_of, gt_of = np.concatenate(image_pos)[ranked], np.concatenate(best_gt)[ranked]
    iou_of = np.concatenate(best_iou)[ranked]
    taken = [np.zeros(len(d), dtype=bool) for d in gt_difficult]
    outcome = np.zeros(len(ranked), dtype=np.int8)  # 1 TP, 0 FP, -1 ignored
    for k in range(len(ranked)):
        if gt_of[k] < 0 or iou_of[k] < iou_threshold:
            continue
        pos, g = image_of[k], gt_of[k]
        if gt_difficult[pos][g]:
            outcome[k] = -1
        elif not taken[pos][g]:
            taken[pos][g] = True
            outcome[k] = 1
    kept = outcome >= 0
    tp = np.cumsum(outcome[kept] == 1)
    fp = np.cumsum(outcome[kept] == 0)
    recall = tp / positives if positives else np.full(len(tp), np.nan)
    precision = tp / np.maximum(tp + fp, 1)
    return recall, precision, positives



def voc_metrics(labels: list[int], order: list[int], truth: dict[int, ImageTruth],
                detections: dict[int, Detections], iou_threshold: float = 0.5
                ) -> tuple[dict[str, float], dict[int, dict[str, float]], dict[int, Curve]]:
    """``({"mAP_voc07", "mAP_voc"}, per label {"AP_voc07", "AP_voc"}, per label PR curve)`` over
    the images ``order``; a label without positives gets ``nan`` and no curve."""
    per_label: dict[int, dict[str, float]] = {}
    curves: dict[int, Curve] = {}
    for label in labels:
        recall, precision, positives = _voc_class(label, order, truth, detections, iou_threshold)
        if positives == 0:
            per_label[label] = {"AP_voc07": float("nan"), "AP_voc": float("nan")}
            continue
        per_label[label] = {"AP_voc07": voc_ap(recall, precision, use_07_metric=True),
                            "AP_voc": voc_ap(recall, precision)}
        curves[label] = (recall, precision)
    ap07 = [v["AP_voc07"] for label, v in per_label.items() if label in curves]
    ap_area = [v["AP_voc"] for label, v in per_label.items() if label in curves]
    metrics = {"mAP_voc07": float(np.mean(ap07)) if ap07 else float("nan"),
               "mAP_voc": float(np.mean(ap_area)) if ap_area else float("nan")}
    return metrics, per_label, curves
