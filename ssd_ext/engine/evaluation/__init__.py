"""Evaluation: a detector's predictions in original picture pixels, scored VOC- and COCO-style.

- :func:`predict` (``predict.py``): a loader in, one :class:`Prediction` per image out;
  :func:`predict_gathered` gathers every rank's shard on rank 0.
- :func:`evaluate_predictions` (``scoring.py``): predictions against a dataset's ground truth,
  with :func:`voc_metrics` (``voc.py``: VOC07 11-point and area AP at IoU .5) and
  :func:`coco_metrics` (``coco.py``: pycocotools' COCOeval); :func:`evaluate` does both steps;
  :func:`evaluate_dataset` evaluates a model on a dataset (sharded under ``torchrun``);
  :func:`build_eval_dataset` builds a config's held-out split for ``ssd eval``.
- :class:`EvalResult` (``result.py``): metrics, per-class table, PR curves, JSON.

docs/ARCHITECTURE.md, "Evaluation and inference", states the matching rules and frames.
"""

from .coco import COCO_METRICS, coco_metrics
from .predict import Prediction, predict, predict_gathered
from .result import EvalResult
from .scoring import METRIC_FAMILIES, build_eval_dataset, evaluate, evaluate_dataset, evaluate_predictions
from .voc import voc_ap, voc_metrics

VOC_METRICS: tuple[str, ...] = ("mAP_voc07", "mAP_voc")

__all__ = ["COCO_METRICS", "METRIC_FAMILIES", "VOC_METRICS", "EvalResult", "Prediction",
           "build_eval_dataset", "coco_metrics", "evaluate", "evaluate_dataset", "evaluate_predictions",
           "predict", "predict_gathered", "voc_ap", "voc_metrics"]
