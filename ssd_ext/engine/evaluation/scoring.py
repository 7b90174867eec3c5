"""Scoring: predictions against a dataset's ground truth (VOC and COCO metrics), and a model
evaluated on a dataset, on one process or sharded over ``torchrun`` ranks."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ...errors import ConfigError
from ..config import Config, EvalConfig
from ..distributed import rank_and_world
from .coco import coco_metrics
from .predict import Prediction, predict, predict_gathered
from .result import EvalResult
from .truth import base_dataset, check_predictions, image_truth
from .voc import voc_metrics

__all__ = ["METRIC_FAMILIES", "build_eval_dataset", "evaluate", "evaluate_dataset", "evaluate_predictions"]

METRIC_FAMILIES = ("coco", "voc")


def _families(metrics: Sequence[str] | str) -> tuple[str, ...]:
    families = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if not families or any(m not in METRIC_FAMILIES for m in families):
        raise ValueError(f"metrics must name some of {list(METRIC_FAMILIES)}, got {list(families)}")
    return families


def _empty_result(base: Any, truth: dict, detections: dict, names: dict[int, str]) -> EvalResult:
    num_gt = dict.fromkeys(names.values(), 0)
    for gt in truth.values():
        for label, difficult in zip(gt.labels, gt.difficult, strict=True):
            if not difficult and int(label) in names:
                num_gt[names[int(label)]] += 1
    result = EvalResult(metrics={}, per_class={name: {} for name in names.values()}, num_gt=num_gt,
                        num_images=len(truth), num_detections=sum(len(d.scores) for d in detections.values()))
    if getattr(base, "keep_difficult", None) is False:
        note = ("the dataset was built with keep_difficult=False: detections of difficult objects count as "
                "false positives (build evaluation sets with keep_difficult=True)")
        warnings.warn(note, RuntimeWarning, stacklevel=3)
        result.notes.append(note)
    return result


def _add_coco(result: EvalResult, base: Any, scored: tuple, names: dict[int, str], progress: bool,
              with_curves: bool) -> None:
    try:
        import pycocotools  # noqa: F401
    except ImportError:
        note = "COCO metrics skipped: pycocotools is not installed (pip install pycocotools)"
        warnings.warn(note, RuntimeWarning, stacklevel=3)
        result.notes.append(note)
        return
    metrics, per_label, curves = coco_metrics(base, *scored, list(names), progress)
    result.metrics.update(metrics)
    for label, values in per_label.items():
        result.per_class[names[label]].update(values)
    if with_curves:
        result.pr_curves = {names[label]: curve for label, curve in curves.items()}


def _add_voc(result: EvalResult, scored: tuple, names: dict[int, str], iou_threshold: float) -> None:
    metrics, per_label, curves = voc_metrics(list(names), *scored, iou_threshold)
    result.metrics.update(metrics)
    for label, values in per_label.items():
        result.per_class[names[label]].update(values)
    result.pr_curves.update({names[label]: curve for label, curve in curves.items()})


def evaluate_predictions(predictions: Sequence[Prediction], dataset: Any, *,
                         metrics: Sequence[str] = METRIC_FAMILIES, progress: bool = False,
                         iou_threshold: float = 0.5) -> EvalResult:
    """Score ``predictions`` (from :func:`predict`, boxes in original pixels) against ``dataset``.

    ``predictions``: one per evaluated image; exactly the images listed are evaluated (a
    repeated index, e.g. a DistributedSampler's padding, counts once). ``dataset``: the
    :class:`~ssd_ext.data.DetectionDataset` the indices refer to (or a ``Subset`` of one); its
    ground truth comes from ``dataset.records`` or, for sets without records such as
    ``SyntheticShapes``, ``dataset.load_raw(i)``, in pixels. ``metrics``: ``"coco"`` and/or
    ``"voc"``; ``iou_threshold``: the VOC metrics' (0.5 for PASCAL VOC).
    """
    families = _families(metrics)
    if not predictions:
        raise ValueError("evaluate_predictions: no predictions to evaluate (empty dataset or loader?)")
    base, mapping = base_dataset(dataset)
    class_names = getattr(base, "class_names", None)
    if not class_names or len(class_names) < 2:
        raise TypeError(f"dataset must have class_names (background first), got {type(base).__name__}")
    detections = check_predictions(predictions, len(dataset), len(class_names))
    if mapping is not None:  # keyed by the index in the innermost dataset from here on
        detections = {mapping[i]: d for i, d in detections.items()}
    order = list(detections)
    from tqdm.auto import tqdm

    truth = {index: image_truth(base, index)
             for index in tqdm(order, desc="ground truth", unit="img", disable=not progress, leave=False)}
    names = {label: str(class_names[label]) for label in range(1, len(class_names))}
    result = _empty_result(base, truth, detections, names)
    scored = (order, truth, detections)
    if "coco" in families:
        _add_coco(result, base, scored, names, progress, with_curves="voc" not in families)
    if "voc" in families:
        _add_voc(result, scored, names, iou_threshold)
    return result


def evaluate(model: nn.Module, loader: DataLoader, dataset: Any = None, *,
             metrics: Sequence[str] = METRIC_FAMILIES, progress: bool = True, **predict_kwargs: Any
             ) -> EvalResult:
    """:func:`predict` over ``loader`` then :func:`evaluate_predictions` against ``dataset``
    (``loader.dataset`` by default). ``predict_kwargs`` go to :func:`predict`."""
    predictions = predict(model, loader, progress=progress, **predict_kwargs)
    return evaluate_predictions(predictions, loader.dataset if dataset is None else dataset,
                                metrics=metrics, progress=progress)


def evaluate_dataset(model: nn.Module, dataset: Any, options: EvalConfig, device: torch.device | str,
                     progress: bool = False) -> EvalResult | None:
    """Evaluate ``model`` on ``dataset`` with ``options``' thresholds and batch size: each rank
    predicts its shard, rank 0 gathers and scores. The :class:`EvalResult` on rank 0, None on
    the others (one process: always the result)."""
    from ...data import collate
    from ...data.sampling import AugmentedItems

    rank, world = rank_and_world()
    items = AugmentedItems(dataset, 0)  # targets carry their dataset index
    sampler = DistributedSampler(items, num_replicas=world, rank=rank, shuffle=False)
    loader = DataLoader(items, batch_size=options.batch_size, sampler=sampler, num_workers=0,
                        collate_fn=collate)
    predictions = predict_gathered(model, loader, device=device, score_threshold=options.score_threshold,
                                   iou_threshold=options.iou_threshold, max_detections=options.max_detections,
                                   progress=progress and rank == 0)
    if predictions is None:
        return None
    return evaluate_predictions(predictions, dataset, progress=progress)


def build_eval_dataset(config: Config, split: str = "test") -> Any:
    """The held-out dataset ``split`` ("test" or "val") of ``config.data``, with the evaluation
    transform; ConfigError when that split is not configured."""
    from ...data.build import build_dataset

    if split not in ("val", "test"):
        raise ConfigError(f"the evaluation split must be 'val' or 'test', got {split!r}")
    dataset = build_dataset(config.data, split)
    if dataset is None:
        raise ConfigError(f"data.{config.data.kind}.{split}: no {split} split is configured")
    return dataset
