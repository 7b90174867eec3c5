"""The run folder and what is written into it while training: ``metrics.jsonl`` (one JSON
object per logged iteration or evaluation), TensorBoard scalars, ``curves.png``, ``config.json``
and ``summary.json``. Checkpoints live in ``checkpoints/`` (:mod:`.checkpoint`), detection
pictures in ``detections/`` (:mod:`.inference`).

Only rank 0 writes; on other ranks every method does nothing.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .config import Config, save_config

__all__ = ["RunLog", "plot_curves", "read_metrics"]


class RunLog:
    """The files of one run folder (``config.output_dir``)."""

    def __init__(self, config: Config, rank: int = 0) -> None:
        self.dir = Path(config.output_dir)
        self.checkpoints = self.dir / "checkpoints"
        self.metrics = self.dir / "metrics.jsonl"
        self.writes = rank == 0
        self.tensorboard = config.train.tensorboard
        self._writer: Any = None

    def refuse_previous_run(self, overwrite: bool) -> None:
        """ConfigError when a fresh run would start in a folder that holds another run's
        checkpoints and ``overwrite`` is not set (checked before anything is built or deleted)."""
        if self.writes and not overwrite and list(self.checkpoints.glob("checkpoint_*.pt")):
            raise ConfigError(f"{str(self.dir)!r} already holds checkpoints; pass --resume to continue "
                              "that run or --overwrite true to start over there")

    def start(self, config: Config, resumed_at: int | None) -> None:
        """Make the folder and write ``config.json``. A fresh run removes a previous run's
        checkpoints and metrics (see :meth:`refuse_previous_run`); a resumed run keeps the
        metrics up to ``resumed_at`` and rewrites the rest."""
        if not self.writes:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if resumed_at is None:
            self._clear_previous_run()
        else:
            self._truncate_metrics(resumed_at)
        save_config(config, self.dir / "config.json")
        if self.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                return
            self._writer = SummaryWriter(str(self.dir / "tensorboard"))

    def _clear_previous_run(self) -> None:
        if self.checkpoints.is_dir():
            shutil.rmtree(self.checkpoints)
        for stale in ("metrics.jsonl", "summary.json"):
            (self.dir / stale).unlink(missing_ok=True)

    def _truncate_metrics(self, iteration: int) -> None:
        if not self.metrics.exists():
            return
        kept = [r for r in read_metrics(self.metrics) if r.get("iter", 0) <= iteration]
        with open(self.metrics, "w") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in kept)

    def log(self, record: dict[str, Any]) -> None:
        """Append one record to ``metrics.jsonl`` and its numbers to TensorBoard (at ``record["iter"]``)."""
        if not self.writes:
            return
        with open(self.metrics, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._writer is None or "iter" not in record:
            return
        group = record.get("split", "train")
        for key, value in record.items():
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if numeric and key not in ("iter", "epoch"):
                self._writer.add_scalar(f"{group}/{key}", value, record["iter"])

    def write_curves(self) -> Path | None:
        """``curves.png`` from the metrics so far (None when there are none)."""
        if not self.writes or not self.metrics.exists():
            return None
        return plot_curves(self.metrics, self.dir / "curves.png")

    def write_summary(self, summary: dict[str, Any]) -> None:
        """``summary.json``: what the run reports (JSON-able values only)."""
        if self.writes:
            with open(self.dir / "summary.json", "w") as handle:
                json.dump(summary, handle, indent=2)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file."""
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def plot_curves(metrics_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """PNG of the loss parts, the learning rate and the validation (and test) AP over iterations."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    records = read_metrics(metrics_path)
    train = [r for r in records if "loss" in r]
    figure = Figure(figsize=(12, 3.4))
    losses, rate, precision = figure.subplots(1, 3)
    iterations = [r["iter"] for r in train]
    for key, label in (("loss", "total"), ("loc_loss", "localisation"), ("conf_loss", "confidence")):
        losses.plot(iterations, [r[key] for r in train], label=label)
    losses.set_title("training loss")
    losses.legend()
    rate.plot(iterations, [r["lr"] for r in train])
    rate.set_title("learning rate")
    _plot_ap(precision, records)
    for axes in (losses, rate, precision):
        axes.set_xlabel("iteration")
    figure.tight_layout()
    figure.savefig(out_path, dpi=80)
    return Path(out_path)


def _plot_ap(axes: Any, records: list[dict[str, Any]]) -> None:
    """AP, AP50 and AP75 per evaluated split: lines for the validation split, markers for test."""
    for split, style in (("val", "-o"), ("test", "s")):
        evaluations = [r for r in records if r.get("split") == split and "AP" in r]
        for key in ("AP", "AP50", "AP75") if evaluations else ():
            axes.plot([r["iter"] for r in evaluations], [r.get(key, float("nan")) for r in evaluations],
                      style, label=f"{split} {key}")
    if axes.lines:
        axes.legend(fontsize="small")
        axes.set_ylim(0, 1)
    axes.set_title("held-out AP")
