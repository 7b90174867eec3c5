"""The scores of one evaluation: metrics, a per-class table, PR curves as a picture, JSON."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

__all__ = ["EvalResult"]


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

