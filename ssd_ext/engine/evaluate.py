"""TEMPORARY evaluation stub (replaced at merge by the evaluate branch's module).

Only what the trainer calls, per the agreed interface: ``predict`` and
``evaluate_predictions`` (COCO-style metrics through pycocotools' COCOeval).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch


@torch.no_grad()
def predict(model, loader, *, device=None, score_threshold: float = 0.01, iou_threshold: float = 0.45,
            max_detections: int = 200, progress: bool = True, autocast_dtype=None) -> list[dict]:
    device = torch.device(device) if device is not None else next(model.parameters()).device
    out, position = [], 0
    for images, targets in loader:
        results = model.detect(images.to(device), score_threshold=score_threshold,
                               iou_threshold=iou_threshold, max_detections=max_detections)
        height, width = images.shape[-2:]
        for result, target in zip(results, targets, strict=True):
            oh, ow = target["orig_size"]
            scale = torch.tensor([ow / width, oh / height, ow / width, oh / height])
            out.append({"index": int(target.get("index", position)), "image_id": target["image_id"],
                        "boxes": (result["boxes"].cpu() * scale).float(), "scores": result["scores"].cpu(),
                        "labels": result["labels"].cpu()})
            position += 1
    return out


@dataclass
class EvalResult:
    metrics: dict[str, float]
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)

    def table(self) -> str:
        return "\n".join(f"{k}: {v:.4f}" for k, v in self.metrics.items())

    def to_json(self) -> dict:
        return {"metrics": self.metrics, "per_class": self.per_class}


def evaluate_predictions(predictions: list[dict], dataset, *, metrics: Sequence[str] = ("coco",),
                         progress: bool = False) -> EvalResult:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, detections = [], [], []
    for pred in predictions:
        index = pred["index"]
        image, boxes, labels, _, _ = dataset.load_raw(index)
        images.append({"id": index, "width": image.width, "height": image.height})
        for box, label in zip(np.asarray(boxes).reshape(-1, 4), labels, strict=True):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            annotations.append({"id": len(annotations) + 1, "image_id": index, "category_id": int(label),
                                "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h, "iscrowd": 0})
        for box, score, label in zip(pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist(),
                                     strict=True):
            detections.append({"image_id": index, "category_id": int(label), "score": float(score),
                               "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    names = dataset.class_names
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": i, "name": n} for i, n in enumerate(names) if i > 0]}
        gt.createIndex()
        dt = gt.loadRes(detections) if detections else COCO()
        if not detections:
            return EvalResult({k: 0.0 for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")})
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [max(float(s), 0.0) for s in evaluator.stats[:6]]
    return EvalResult(dict(zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), stats, strict=True)))
