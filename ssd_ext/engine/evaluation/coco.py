"""COCO-style AP through pycocotools' COCOeval (101-point interpolation, up to 100 detections
per image): ``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl``.

A :class:`~ssd_ext.data.COCODetection` is scored against its own json (crowd regions as COCO
defines them); any other dataset against a json built in memory from its ground truth, where
a ``difficult`` box is COCO's ``ignore`` (see :func:`_difficult_aware_cocoeval`). A value COCO
reports as -1 (e.g. ``APs`` without small objects) is ``nan``.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from .truth import Detections, ImageTruth

__all__ = ["COCO_METRICS", "coco_metrics"]

COCO_METRICS: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl")
Curve = tuple[np.ndarray, np.ndarray]  # (recall [N], precision [N])


def _difficult_aware_cocoeval() -> type:
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


def _coco_from_dict(data: dict[str, Any]) -> Any:
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


@dataclass
class _GroundTruth:
    coco: Any  # pycocotools COCO
    image_ids: list[int | str]  # per evaluated image, in order
    category_of: dict[int, int]  # our label -> the json's category id


def _dataset_json(base: Any, order: list[int], truth: dict[int, ImageTruth],
                  labels: list[int]) -> _GroundTruth:
    """A COCODetection's own json; annotations are copied because COCOeval writes into them,
    and given an area where the json has none."""
    source = base.coco.dataset
    annotations = [{**ann, "area": ann.get("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))}
                   for ann in source["annotations"]]
    return _GroundTruth(_coco_from_dict({**source, "annotations": annotations}),
                        [truth[i].image_id for i in order],
                        {label: base.label_to_cat_id[label] for label in labels})


def _built_json(order: list[int], truth: dict[int, ImageTruth], labels: list[int]) -> _GroundTruth:
    """A json of the ground truth, images numbered by dataset index, difficult boxes flagged."""
    images, annotations = [], []
    for index in order:
        images.append({"id": index})
        image = truth[index]
        for box, label, difficult in zip(image.boxes, image.labels, image.difficult, strict=True):
            x, y, w, h = _xywh(box)
            annotations.append({"id": len(annotations) + 1, "image_id": index, "category_id": int(label),
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
                                "difficult": int(bool(difficult))})
    categories = [{"id": label, "name": str(label)} for label in labels]
    coco = _coco_from_dict({"images": images, "annotations": annotations, "categories": categories})
    return _GroundTruth(coco, list(order), {label: label for label in labels})


def _results_json(gt: _GroundTruth, order: list[int], detections: dict[int, Detections]) -> Any:
    results = []
    for index, image_id in zip(order, gt.image_ids, strict=True):
        found = detections[index]
        for box, score, label in zip(found.boxes, found.scores, found.labels, strict=True):
            x, y, w, h = _xywh(box)
            results.append({"id": len(results) + 1, "image_id": image_id,
                            "category_id": gt.category_of[int(label)], "bbox": [x, y, w, h],
                            "area": w * h, "score": float(score), "iscrowd": 0})
    # Built directly rather than with COCO.loadRes, which fails on an empty list.
    return _coco_from_dict({"images": gt.coco.dataset["images"], "categories": gt.coco.dataset["categories"],
                            "annotations": results})


def _run_cocoeval(gt: _GroundTruth, results: Any, progress: bool) -> Any:
    from tqdm.auto import tqdm

    coco_eval = _difficult_aware_cocoeval()(gt.coco, results, iouType="bbox")
    coco_eval.params.imgIds = list(gt.image_ids)
    total = len(coco_eval.params.catIds) * len(coco_eval.params.areaRng) * len(set(gt.image_ids))
    with tqdm(total=total, desc="COCOeval", disable=not progress, leave=False, dynamic_ncols=True) as bar, \
            contextlib.redirect_stdout(io.StringIO()):
        coco_eval.progress = bar
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def _per_label(coco_eval: Any, gt: _GroundTruth, labels: list[int]
               ) -> tuple[dict[int, dict[str, float]], dict[int, Curve]]:
    """Per label ``{"AP", "AP50"}`` (all areas, 100 detections) and the PR curve at IoU .5."""
    precision = coco_eval.eval["precision"]  # [T, R, K, A, M]: IoU, recall, class, area, max dets
    cat_ids = list(coco_eval.params.catIds)
    per_label, curves = {}, {}
    for label in labels:
        k = cat_ids.index(gt.category_of[label])
        all_ious, at_50 = precision[:, :, k, 0, -1], precision[0, :, k, 0, -1]
        per_label[label] = {
            "AP": float(all_ious[all_ious > -1].mean()) if (all_ious > -1).any() else float("nan"),
            "AP50": float(at_50[at_50 > -1].mean()) if (at_50 > -1).any() else float("nan"),
        }
        if (at_50 > -1).any():
            curves[label] = (np.asarray(coco_eval.params.recThrs, dtype=np.float64), at_50.astype(np.float64))
    return per_label, curves


def coco_metrics(base: Any, order: list[int], truth: dict[int, ImageTruth], detections: dict[int, Detections],
                 labels: list[int], progress: bool = False
                 ) -> tuple[dict[str, float], dict[int, dict[str, float]], dict[int, Curve]]:
    """COCOeval's summary (:data:`COCO_METRICS`), per-label ``{"AP", "AP50"}`` and per-label PR
    curves at IoU .5, over the images ``order`` of ``base``."""
    from ...data.coco import COCODetection

    if isinstance(base, COCODetection):
        gt = _dataset_json(base, order, truth, labels)
    else:
        gt = _built_json(order, truth, labels)
    coco_eval = _run_cocoeval(gt, _results_json(gt, order, detections), progress)
    summary = zip(COCO_METRICS, coco_eval.stats[:6], strict=True)
    metrics = {name: _nan_if_negative(value) for name, value in summary}
    return (metrics, *_per_label(coco_eval, gt, labels))
