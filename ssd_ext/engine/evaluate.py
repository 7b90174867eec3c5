"""Evaluation: run a detector over a loader, then score its detections VOC- and COCO-style.

:func:`predict` turns a loader into :data:`Prediction` dicts with boxes in ORIGINAL image pixels
(continuous xyxy: an image spans ``[0, W] x [0, H]``, the frame of ``dataset.records`` and of
raw items); :func:`evaluate_predictions` scores them against the dataset's own ground truth;
:func:`evaluate` does both. See docs/ARCHITECTURE.md, "Evaluation and inference".

Metrics (all in ``EvalResult.metrics``):

- ``"mAP_voc07"`` / ``"mAP_voc"``: PASCAL VOC AP at IoU >= 0.5, 11-point (VOC2007) and
  all-points area (VOC2010+) interpolation, mean over the classes that have ground truth.
  Detections of a class are taken by decreasing score; each is matched to the ground-truth box
  of its image and class with the highest IoU (as the VOC devkit does): IoU >= 0.5 and that box
  not yet taken is a true positive, already taken is a false positive (duplicate), and a
  ``difficult`` box makes the detection neither (nor does it count among the positives).
- ``"AP"``, ``"AP50"``, ``"AP75"``, ``"APs"``, ``"APm"``, ``"APl"``: pycocotools' COCOeval
  (101-point interpolation, up to 100 detections per image), on the dataset's own json for a
  :class:`~ssd_ext.data.COCODetection` (crowd regions as COCO defines them), otherwise on a
  json built in memory from the ground truth, where ``difficult`` boxes carry COCO's
  ``ignore`` flag (see :class:`_DifficultAwareCOCOeval`). Skipped with a warning (and a note in
  ``EvalResult.notes``) when pycocotools is not installed.

A value that is undefined (a class without ground truth; COCO's ``-1``, e.g. ``APs`` without
small objects) is ``nan``; means skip it.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Subset, SubsetRandomSampler, WeightedRandomSampler

__all__ = [
    "COCO_METRICS",
    "EvalResult",
    "Prediction",
    "VOC_METRICS",
    "evaluate",
    "evaluate_predictions",
    "predict",
    "voc_ap",
]

# {"index": int (dataset index), "image_id": int | str,
#  "boxes": float32 [K, 4] xyxy in ORIGINAL image pixels, "scores": float32 [K] (decreasing),
#  "labels": int64 [K] in 1..C-1}
Prediction = dict

COCO_METRICS: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl")
VOC_METRICS: tuple[str, ...] = ("mAP_voc07", "mAP_voc")
_METRIC_FAMILIES = ("coco", "voc")
_RANDOM_SAMPLERS = (RandomSampler, SubsetRandomSampler, WeightedRandomSampler)
_Curve = tuple[np.ndarray, np.ndarray]  # (recall [N], precision [N])


# ----------------------------------------------------------------------------------- predict


def _unwrap(model: nn.Module) -> nn.Module:
    """The detector inside DDP / DataParallel / AveragedModel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel,
                              torch.optim.swa_utils.AveragedModel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile
            model = model._orig_mod
        else:
            return model


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


def _progress_total(loader: DataLoader) -> int | None:
    try:
        return len(loader.sampler) if getattr(loader, "batch_sampler", None) is not None else len(loader)
    except TypeError:
        return None


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, *, device: torch.device | str | None = None,
            score_threshold: float = 0.01, iou_threshold: float = 0.45, max_detections: int = 200,
            progress: bool = True, autocast_dtype: torch.dtype | None = None) -> list[Prediction]:
    """Run ``model.detect`` over ``loader`` and return one :data:`Prediction` per image.

    Args:
        model: an SSD (or any module with SSD's ``detect(images, ..., image_sizes=...)``), also
            wrapped in DDP, DataParallel, ``AveragedModel`` or ``torch.compile``. It is run in
            eval mode and left in the mode it had.
        loader: yields ``(images [B, 3, H, W], targets)`` as :func:`ssd_ext.data.collate` makes
            them; each target carries ``"orig_size"`` ``(H, W)`` of the picture as read and
            ``"image_id"``. The dataset index is ``target["index"]`` when present, otherwise
            the loader's sampling order (which must then not be random). Any rank's shard works.
        device: where the images go; the model's own device by default.
        score_threshold, iou_threshold, max_detections: as :func:`ssd_ext.ops.detect`.
        progress: show a tqdm bar (images).
        autocast_dtype: run the forward pass under ``torch.autocast`` with this dtype.

    Returns:
        ``[{"index", "image_id", "boxes" float32 [K, 4] xyxy in ORIGINAL image pixels,
        "scores" float32 [K], "labels" int64 [K]}]`` on the CPU, in loader order.
    """
    net = _unwrap(model)
    if not callable(getattr(net, "detect", None)):
        raise TypeError(f"model must have a detect() method (an SSD), got {type(net).__name__}")
    device = torch.device(device) if device is not None else _model_device(net)
    from tqdm.auto import tqdm

    order: Iterable[int] | None = None
    predictions: list[Prediction] = []
    was_training = model.training
    model.eval()
    try:
        with tqdm(total=_progress_total(loader), desc="predict", unit="img", disable=not progress,
                  dynamic_ncols=True, leave=False) as bar:
            for images, targets in loader:
                if (not isinstance(images, torch.Tensor) or images.dim() != 4
                        or len(targets) != images.shape[0]):
                    raise ValueError("predict: the loader must yield (images [B, 3, H, W], [target] * B) "
                                     "batches (use ssd_ext.data.collate)")
                sizes = []
                for target in targets:
                    if "orig_size" not in target:
                        raise ValueError("predict: targets need 'orig_size' (H, W) to map boxes back to "
                                         "the original pictures (ssd_ext.data datasets provide it)")
                    sizes.append(tuple(int(v) for v in target["orig_size"]))
                autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
                            else contextlib.nullcontext())
                with autocast:
                    detections = net.detect(images.to(device, non_blocking=True),
                                            score_threshold=score_threshold, iou_threshold=iou_threshold,
                                            max_detections=max_detections, image_sizes=sizes)
                for target, detection in zip(targets, detections, strict=True):
                    if "index" in target:
                        index = int(target["index"])
                    else:
                        if order is None:
                            order = iter(_loader_order(loader))
                        index = int(next(order))
                    image_id = target.get("image_id", index)
                    if isinstance(image_id, torch.Tensor):
                        image_id = image_id.item()
                    predictions.append({
                        "index": index,
                        "image_id": image_id,
                        "boxes": detection["boxes"].detach().to("cpu", torch.float32),
                        "scores": detection["scores"].detach().to("cpu", torch.float32),
                        "labels": detection["labels"].detach().to("cpu", torch.int64),
                    })
                bar.update(images.shape[0])
    finally:
        model.train(was_training)
    return predictions


# ----------------------------------------------------------------------------- ground truth


@dataclass
class _ImageTruth:
    image_id: int | str
    boxes: np.ndarray  # float64 [G, 4] pixels xyxy
    labels: np.ndarray  # int64 [G]
    difficult: np.ndarray  # bool [G]


def _base_dataset(dataset: Any) -> tuple[Any, list[int] | None]:
    """``(innermost dataset, index map or None)`` through ``torch.utils.data.Subset`` layers."""
    mapping: list[int] | None = None
    while isinstance(dataset, Subset):
        indices = [int(i) for i in dataset.indices]
        mapping = indices if mapping is None else [indices[i] for i in mapping]
        dataset = dataset.dataset
    return dataset, mapping


def _image_truth(dataset: Any, index: int) -> _ImageTruth:
    records = getattr(dataset, "records", None)
    if records:
        record = records[index]
        boxes, labels, difficult, image_id = record.boxes, record.labels, record.difficult, record.image_id
    elif callable(getattr(dataset, "load_raw", None)):
        _, boxes, labels, difficult, image_id = dataset.load_raw(index)
    else:
        raise TypeError(f"cannot read ground truth from {type(dataset).__name__}: it needs the "
                        "DetectionDataset interface (records or load_raw)")
    return _ImageTruth(image_id, np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                       np.asarray(labels, dtype=np.int64).reshape(-1),
                       np.asarray(difficult, dtype=bool).reshape(-1))


def _as_array(value: Any, name: str, dtype: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(f"prediction {name} cannot be read as {np.dtype(dtype).name}: {error}") from None


@dataclass
class _Detections:
    boxes: np.ndarray  # float64 [K, 4]
    scores: np.ndarray  # float64 [K]
    labels: np.ndarray  # int64 [K]


def _check_predictions(predictions: Sequence[Prediction], length: int, num_classes: int
                       ) -> dict[int, _Detections]:
    """Validated detections by dataset index, in first-seen order (duplicates, e.g. the padding
    of a DistributedSampler, keep their first copy)."""
    out: dict[int, _Detections] = {}
    for position, prediction in enumerate(predictions):
        required = {"index", "boxes", "scores", "labels"}
        if not isinstance(prediction, dict) or not required <= prediction.keys():
            raise ValueError(f"predictions[{position}] must be a dict with 'index', 'boxes', 'scores' and "
                             f"'labels', got {type(prediction).__name__}")
        index = int(prediction["index"])
        if not 0 <= index < length:
            raise ValueError(f"predictions[{position}]['index'] = {index} is outside the dataset "
                             f"(0..{length - 1})")
        if index in out:
            continue
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
        out[index] = _Detections(boxes, scores, labels)
    return out


# ----------------------------------------------------------------------------------- VOC AP


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


def _voc_class(label: int, order: list[int], truth: dict[int, _ImageTruth],
               detections: dict[int, _Detections], iou_threshold: float
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


# ---------------------------------------------------------------------------------- COCO AP


def _coco_eval_class():
    """COCOeval that honours a ground-truth ``"difficult"`` flag as COCO's ``ignore``.

    pycocotools' ``_prepare`` overwrites every ground truth's ``ignore`` with its ``iscrowd``,
    so an ``ignore`` key in the json has no effect; this subclass sets it again afterwards. An
    ignored box is matched like any other (same IoU, one detection at most), and the detection
    it takes is neither a true nor a false positive; unlike ``iscrowd=1`` it does not absorb
    any number of detections nor use intersection over the detection's area. ``progress``, when
    set to a tqdm bar, ticks once per (class, area range, image) evaluation, the slow part.
    """
    from pycocotools.cocoeval import COCOeval

    class DifficultAwareCOCOeval(COCOeval):
        progress: Any = None

        def _prepare(self) -> None:
            super()._prepare()
            for gts in self._gts.values():
                for gt in gts:
                    if gt.get("difficult"):
                        gt["ignore"] = 1

        def evaluateImg(self, imgId, catId, aRng, maxDet):  # COCOeval's names
            if self.progress is not None:
                self.progress.update(1)
            return super().evaluateImg(imgId, catId, aRng, maxDet)

    return DifficultAwareCOCOeval


def _coco_from_dict(data: dict[str, Any]):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _xywh(box: np.ndarray) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def _nan_if_negative(value: float) -> float:
    return float("nan") if value < 0 else float(value)


def _coco_metrics(base: Any, order: list[int], truth: dict[int, _ImageTruth],
                  detections: dict[int, _Detections], labels: list[int], progress: bool = False
                  ) -> tuple[dict[str, float], dict[int, dict[str, float]], dict[int, _Curve]]:
    """COCOeval's summary, per-label ``{"AP", "AP50"}`` and per-label PR curves at IoU .5."""
    from ..data.coco import COCODetection

    if isinstance(base, COCODetection):
        # The dataset's own json (crowd regions included); annotations are copied because
        # COCOeval writes into them, and given an area where the json has none.
        source = base.coco.dataset
        annotations = [{**ann, "area": ann.get("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))}
                       for ann in source["annotations"]]
        gt = _coco_from_dict({**source, "annotations": annotations})
        image_ids = [truth[i].image_id for i in order]
        cat_of = {label: base.label_to_cat_id[label] for label in labels}
    else:
        images, annotations = [], []
        for index in order:
            images.append({"id": index})
            gt_image = truth[index]
            for box, label, difficult in zip(gt_image.boxes, gt_image.labels, gt_image.difficult,
                                             strict=True):
                x, y, w, h = _xywh(box)
                annotations.append({"id": len(annotations) + 1, "image_id": index, "category_id": int(label),
                                    "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
                                    "difficult": int(bool(difficult))})
        categories = [{"id": label, "name": str(label)} for label in labels]
        gt = _coco_from_dict({"images": images, "annotations": annotations, "categories": categories})
        image_ids = list(order)
        cat_of = {label: label for label in labels}

    results = []
    for index, image_id in zip(order, image_ids, strict=True):
        det = detections[index]
        for box, score, label in zip(det.boxes, det.scores, det.labels, strict=True):
            x, y, w, h = _xywh(box)
            results.append({"id": len(results) + 1, "image_id": image_id, "category_id": cat_of[int(label)],
                            "bbox": [x, y, w, h], "area": w * h, "score": float(score), "iscrowd": 0})
    # Built directly rather than with COCO.loadRes, which fails on an empty list.
    dt = _coco_from_dict({"images": gt.dataset["images"], "categories": gt.dataset["categories"],
                          "annotations": results})
    coco_eval = _coco_eval_class()(gt, dt, iouType="bbox")
    coco_eval.params.imgIds = list(image_ids)
    from tqdm.auto import tqdm

    total = len(coco_eval.params.catIds) * len(coco_eval.params.areaRng) * len(set(image_ids))
    with tqdm(total=total, desc="COCOeval", disable=not progress, leave=False, dynamic_ncols=True) as bar, \
            contextlib.redirect_stdout(io.StringIO()):
        coco_eval.progress = bar
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    metrics = {name: _nan_if_negative(value)
               for name, value in zip(COCO_METRICS, coco_eval.stats[:6], strict=True)}
    precision = coco_eval.eval["precision"]  # [T, R, K, A, M]: IoU, recall, class, area, max dets
    cat_ids = list(coco_eval.params.catIds)
    per_label, curves = {}, {}
    for label in labels:
        k = cat_ids.index(cat_of[label])
        all_ious = precision[:, :, k, 0, -1]
        at_50 = precision[0, :, k, 0, -1]
        per_label[label] = {
            "AP": float(all_ious[all_ious > -1].mean()) if (all_ious > -1).any() else float("nan"),
            "AP50": float(at_50[at_50 > -1].mean()) if (at_50 > -1).any() else float("nan"),
        }
        if (at_50 > -1).any():
            curves[label] = (np.asarray(coco_eval.params.recThrs, dtype=np.float64), at_50.astype(np.float64))
    return metrics, per_label, curves


# ------------------------------------------------------------------------------- the result


def _fmt(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def _json_number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


@dataclass
class EvalResult:
    """Scores of one evaluation.

    Attributes:
        metrics: flat ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` (COCO-style, pycocotools)
            and ``{"mAP_voc07", "mAP_voc"}`` (VOC, IoU .5), the families that were computed.
        per_class: class name -> ``{"AP_voc07", "AP_voc"}`` (VOC) and ``{"AP50", "AP"}``
            (COCO-style, at IoU .5 and over .5:.95), for every object class.
        num_gt: class name -> number of ground-truth boxes (difficult ones not counted).
        pr_curves: class name -> ``(recall [N], precision [N])`` at IoU .5 (the VOC curve, or
            COCO's 101-point one when VOC was not computed).
        num_images, num_detections: what was evaluated.
        notes: messages such as a skipped metric family.
    """

    metrics: dict[str, float]
    per_class: dict[str, dict[str, float]]
    num_gt: dict[str, int] = field(default_factory=dict)
    pr_curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    num_images: int = 0
    num_detections: int = 0
    notes: list[str] = field(default_factory=list)

    _COLUMNS = (("AP_voc07", "AP VOC07"), ("AP_voc", "AP VOC"), ("AP50", "AP50"), ("AP", "AP"))
    _MEANS = {"AP_voc07": "mAP_voc07", "AP_voc": "mAP_voc", "AP50": "AP50", "AP": "AP"}

    def table(self) -> str:
        """Per-class table in markdown (columns: the metrics that were computed)."""
        present = [(key, title) for key, title in self._COLUMNS
                   if any(key in values for values in self.per_class.values())]
        lines = ["| class | GT | " + " | ".join(title for _, title in present) + " |",
                 "|---|---:|" + "---:|" * len(present)]
        for name, values in self.per_class.items():
            cells = [_fmt(values.get(key, float("nan"))) for key, _ in present]
            lines.append(f"| {name} | {self.num_gt.get(name, 0)} | " + " | ".join(cells) + " |")
        means = [_fmt(self.metrics.get(self._MEANS[key], float("nan"))) for key, _ in present]
        lines.append(f"| **mean** | {sum(self.num_gt.values())} | " + " | ".join(means) + " |")
        return "\n".join(lines)

    def plot_pr(self, path: str | os.PathLike) -> None:
        """Write the precision/recall curves at IoU .5, one per class, as a PNG at ``path``."""
        from matplotlib.figure import Figure  # no pyplot: no global backend state

        figure = Figure(figsize=(7, 5), dpi=100)
        axes = figure.add_subplot()
        for name, (recall, precision) in self.pr_curves.items():
            values = self.per_class.get(name, {})
            ap = values.get("AP_voc", values.get("AP50", float("nan")))
            axes.plot(np.concatenate([[0.0], recall]) if len(recall) else recall,
                      np.concatenate([[precision[0]], precision]) if len(precision) else precision,
                      label=f"{name} ({_fmt(ap)})", linewidth=1.5)
        mean = self.metrics.get("mAP_voc", self.metrics.get("AP50", float("nan")))
        axes.set_title(f"Precision / recall at IoU 0.5 (mean AP {_fmt(mean)})")
        axes.set_xlabel("recall")
        axes.set_ylabel("precision")
        axes.set_xlim(0, 1.01)
        axes.set_ylim(0, 1.01)
        axes.grid(alpha=0.3)
        if 0 < len(self.pr_curves) <= 25:
            axes.legend(loc="lower left", fontsize="small")
        folder = os.path.dirname(os.fspath(path))
        if folder:
            os.makedirs(folder, exist_ok=True)
        figure.savefig(os.fspath(path), format="png", bbox_inches="tight")

    def to_json(self) -> dict:
        """A JSON-ready dict (``nan`` becomes ``None``; the curves are left out)."""
        return {
            "metrics": {k: _json_number(v) for k, v in self.metrics.items()},
            "per_class": {name: {k: _json_number(v) for k, v in values.items()}
                          for name, values in self.per_class.items()},
            "num_gt": dict(self.num_gt),
            "num_images": self.num_images,
            "num_detections": self.num_detections,
            "notes": list(self.notes),
        }


# ------------------------------------------------------------------------------ evaluation


def evaluate_predictions(predictions: Sequence[Prediction], dataset: Any, *,
                         metrics: Sequence[str] = _METRIC_FAMILIES, progress: bool = False,
                         iou_threshold: float = 0.5) -> EvalResult:
    """Score ``predictions`` (from :func:`predict`, boxes in original pixels) against ``dataset``.

    Args:
        predictions: one per evaluated image; the images evaluated are exactly those listed
            (a repeated index, e.g. a DistributedSampler's padding, counts once).
        dataset: the :class:`~ssd_ext.data.DetectionDataset` the indices refer to (or a
            ``Subset`` of one); its ground truth comes from ``dataset.records`` or, for sets
            without records such as ``SyntheticShapes``, ``dataset.load_raw(i)``, in pixels.
        metrics: ``"coco"`` and/or ``"voc"``.
        progress: tqdm bar while reading the ground truth and matching.
        iou_threshold: the VOC metrics' IoU threshold (0.5 for PASCAL VOC).
    """
    families = tuple(metrics) if not isinstance(metrics, str) else (metrics,)
    unknown = [m for m in families if m not in _METRIC_FAMILIES]
    if unknown or not families:
        raise ValueError(f"metrics must name some of {list(_METRIC_FAMILIES)}, got {list(families)}")
    if not predictions:
        raise ValueError("evaluate_predictions: no predictions to evaluate (empty dataset or loader?)")
    base, mapping = _base_dataset(dataset)
    class_names = getattr(base, "class_names", None)
    if not class_names or len(class_names) < 2:
        raise TypeError(f"dataset must have class_names (background first), got {type(base).__name__}")
    length = len(dataset)
    detections = _check_predictions(predictions, length, len(class_names))
    # Keyed by the index in the innermost dataset from here on.
    if mapping is not None:
        detections = {mapping[i]: d for i, d in detections.items()}
    order = list(detections)
    from tqdm.auto import tqdm

    truth = {index: _image_truth(base, index)
             for index in tqdm(order, desc="ground truth", unit="img", disable=not progress, leave=False)}
    labels = list(range(1, len(class_names)))
    names = {label: str(class_names[label]) for label in labels}
    per_class: dict[str, dict[str, float]] = {names[label]: {} for label in labels}
    num_gt = {names[label]: 0 for label in labels}
    for gt in truth.values():
        for label, difficult in zip(gt.labels, gt.difficult, strict=True):
            if not difficult and int(label) in names:
                num_gt[names[int(label)]] += 1
    result = EvalResult(metrics={}, per_class=per_class, num_gt=num_gt, num_images=len(order),
                        num_detections=sum(len(d.scores) for d in detections.values()))

    if getattr(base, "keep_difficult", None) is False:
        note = ("the dataset was built with keep_difficult=False: detections of difficult objects count as "
                "false positives (build evaluation sets with keep_difficult=True)")
        warnings.warn(note, RuntimeWarning, stacklevel=2)
        result.notes.append(note)
    if "coco" in families:
        try:
            import pycocotools  # noqa: F401
        except ImportError:
            note = "COCO metrics skipped: pycocotools is not installed (pip install pycocotools)"
            warnings.warn(note, RuntimeWarning, stacklevel=2)
            result.notes.append(note)
        else:
            coco, coco_per_label, coco_curves = _coco_metrics(base, order, truth, detections, labels,
                                                                   progress)
            result.metrics.update(coco)
            for label, values in coco_per_label.items():
                per_class[names[label]].update(values)
            if "voc" not in families:
                result.pr_curves = {names[label]: curve for label, curve in coco_curves.items()}

    if "voc" in families:
        ap07, ap_area = [], []
        for label in tqdm(labels, desc="VOC AP", unit="class", disable=not progress, leave=False):
            recall, precision, positives = _voc_class(label, order, truth, detections, iou_threshold)
            if positives == 0:
                values = {"AP_voc07": float("nan"), "AP_voc": float("nan")}
            else:
                values = {"AP_voc07": voc_ap(recall, precision, use_07_metric=True),
                          "AP_voc": voc_ap(recall, precision)}
                ap07.append(values["AP_voc07"])
                ap_area.append(values["AP_voc"])
                result.pr_curves[names[label]] = (recall, precision)
            per_class[names[label]].update(values)
        result.metrics["mAP_voc07"] = float(np.mean(ap07)) if ap07 else float("nan")
        result.metrics["mAP_voc"] = float(np.mean(ap_area)) if ap_area else float("nan")
    return result


def evaluate(model: nn.Module, loader: DataLoader, dataset: Any = None, *,
             metrics: Sequence[str] = _METRIC_FAMILIES, progress: bool = True, **predict_kwargs: Any
             ) -> EvalResult:
    """:func:`predict` over ``loader`` then :func:`evaluate_predictions` against ``dataset``
    (``loader.dataset`` by default). ``predict_kwargs`` go to :func:`predict`."""
    predictions = predict(model, loader, progress=progress, **predict_kwargs)
    return evaluate_predictions(predictions, loader.dataset if dataset is None else dataset,
                                metrics=metrics, progress=progress)
