"""One epoch of training: steps, the non-finite-loss policy and the logged windows.

A step whose loss is not finite (on any rank) is skipped: no backward, no weight update; it is
counted and logged, and ``max_nonfinite`` of them in a row raise :class:`TrainingError`. The
scheduler steps every iteration, skipped ones included, so the schedule follows the iteration
count.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .config import Config
from .distributed import all_reduce_min, all_reduce_sum, rank_and_world

__all__ = ["LoopOptions", "LoopState", "TrainingError", "TrainingParts", "train_one_epoch", "train_step"]

LOSS_KEYS = ("loss", "loc_loss", "conf_loss")


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a run of non-finite losses); the message says why."""


@dataclass
class LoopState:
    """Counters the loop carries across epochs and checkpoints."""

    iteration: int = 0
    epoch: int = 0
    nonfinite_total: int = 0
    nonfinite_streak: int = 0
    best_ap: float = -1.0


@dataclass
class TrainingParts:
    """Everything a training step touches. ``model`` may be wrapped in DistributedDataParallel."""

    model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    scaler: torch.amp.GradScaler | None = None
    ema: nn.Module | None = None  # torch.optim.swa_utils.AveragedModel
    device: torch.device = torch.device("cpu")
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False


@dataclass
class LoopOptions:
    """How the loop behaves (from ``config.optim`` and ``config.train``)."""

    clip_grad_norm: float | None = None
    max_nonfinite: int = 10
    log_every: int = 10
    total_iterations: int | None = None
    progress: bool = True

    @classmethod
    def from_config(cls, config: Config, total_iterations: int) -> LoopOptions:
        return cls(clip_grad_norm=config.optim.clip_grad_norm, max_nonfinite=config.train.max_nonfinite,
                   log_every=config.train.log_every, total_iterations=total_iterations,
                   progress=config.train.progress)


def _to_device(parts: TrainingParts, images: Tensor, targets: list[dict[str, Any]]
               ) -> tuple[Tensor, list[dict[str, Tensor]]]:
    images = images.to(parts.device, non_blocking=True)
    if parts.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, [{"boxes": t["boxes"].to(parts.device, non_blocking=True),
                     "labels": t["labels"].to(parts.device, non_blocking=True)} for t in targets]


def _update(parts: TrainingParts, loss: Tensor, clip_grad_norm: float | None) -> None:
    """Backward, clip, optimiser (and grad scaler) step, EMA."""
    if parts.scaler is not None:
        parts.scaler.scale(loss).backward()
        parts.scaler.unscale_(parts.optimizer)
    else:
        loss.backward()
    if clip_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(parts.model.parameters(), clip_grad_norm)
    if parts.scaler is not None:
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
    else:
        parts.optimizer.step()
    if parts.ema is not None:
        parts.ema.update_parameters(parts.model)


def train_step(parts: TrainingParts, images: Tensor, targets: list[dict[str, Any]],
               clip_grad_norm: float | None = None) -> tuple[bool, dict[str, float]]:
    """Forward, loss and (when the loss is finite on every rank) the update.

    Returns ``(stepped, losses)``: whether the weights were updated, and the loss parts."""
    images, targets = _to_device(parts, images, targets)
    with torch.autocast(parts.device.type, dtype=parts.autocast_dtype or torch.float32,
                        enabled=parts.autocast_dtype is not None):
        loc, conf = parts.model(images)
    losses = parts.criterion(loc.float(), conf.float(), targets)
    finite = all_reduce_min(torch.isfinite(losses["loss"].detach()).to(torch.float32))
    parts.optimizer.zero_grad(set_to_none=True)
    stepped = finite.item() == 1
    if stepped:
        _update(parts, losses["loss"], clip_grad_norm)
    return stepped, {key: float(losses[key].detach()) for key in LOSS_KEYS}


def _skipped(state: LoopState, losses: dict[str, float], options: LoopOptions,
             log: Callable[[dict[str, Any]], None] | None) -> None:
    """Count a skipped step, warn and log it; stop after ``max_nonfinite`` in a row."""
    state.nonfinite_total += 1
    state.nonfinite_streak += 1
    message = (f"non-finite loss at iteration {state.iteration} (loc {losses['loc_loss']:.4g}, "
               f"conf {losses['conf_loss']:.4g}): step skipped ({state.nonfinite_streak} in a row, "
               f"{state.nonfinite_total} in all)")
    if rank_and_world()[0] == 0:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        if log is not None:
            log({"iter": state.iteration, "epoch": state.epoch, "event": "nonfinite_loss_skipped",
                 "nonfinite_total": state.nonfinite_total})
    if state.nonfinite_streak >= options.max_nonfinite:
        raise TrainingError(
            f"stopped at iteration {state.iteration}: {state.nonfinite_streak} non-finite losses in a row "
            f"(limit train.max_nonfinite={options.max_nonfinite}). Lower optim.lr, set optim.clip_grad_norm, "
            "use a longer schedule.warmup_iters, or check the data for bad boxes.")


class _Window:
    """Loss sums and images since the last logged iteration, and the epoch's loss sums."""

    def __init__(self) -> None:
        self.epoch_sums = dict.fromkeys(LOSS_KEYS, 0.0)
        self.epoch_steps = 0
        self._reset()

    def _reset(self) -> None:
        self.sums = dict.fromkeys(LOSS_KEYS, 0.0)
        self.steps, self.images, self.started = 0, 0, time.perf_counter()

    def add(self, losses: dict[str, float] | None, images: int) -> None:
        self.images += images
        if losses is not None:
            for key in LOSS_KEYS:
                self.sums[key] += losses[key]
                self.epoch_sums[key] += losses[key]
            self.steps += 1
            self.epoch_steps += 1

    def mean_loss(self) -> float | None:
        return self.sums["loss"] / self.steps if self.steps else None

    def record(self, device: torch.device) -> dict[str, float]:
        """The window's mean losses over every rank and images/s; starts a new window."""
        values = torch.tensor([*(self.sums[k] for k in LOSS_KEYS), self.steps], dtype=torch.float64,
                              device=device if device.type == "cuda" else "cpu")
        values = all_reduce_sum(values)
        steps = float(values[-1])
        record = {key: float(values[i]) / steps for i, key in enumerate(LOSS_KEYS)} if steps else {}
        record["img_s"] = self.images / max(time.perf_counter() - self.started, 1e-9)
        self._reset()
        return record

    def epoch_means(self) -> dict[str, float]:
        return {key: value / max(self.epoch_steps, 1) for key, value in self.epoch_sums.items()}


def _progress_bar(loader: DataLoader, state: LoopState, options: LoopOptions) -> Any:
    if not options.progress or rank_and_world()[0] != 0:
        return None
    from tqdm import tqdm

    return tqdm(total=len(loader), desc=f"epoch {state.epoch + 1}", unit="it", dynamic_ncols=True,
                leave=False)


def train_one_epoch(parts: TrainingParts, loader: DataLoader, state: LoopState,
                    options: LoopOptions | None = None, log: Callable[[dict[str, Any]], None] | None = None,
                    on_iteration: Callable[[LoopState], None] | None = None) -> dict[str, float]:
    """Train over ``loader`` once (or until ``options.total_iterations``); returns the epoch's
    mean losses. ``loader`` yields ``(images [B, 3, H, W], targets)``, the targets' boxes
    normalised xyxy. ``log`` gets a record every ``log_every`` iterations (losses averaged over
    ranks; rank 0 only); ``on_iteration`` runs after every iteration (checkpointing)."""
    options = options or LoopOptions()
    world = rank_and_world()[1]
    parts.model.train()
    window = _Window()
    bar = _progress_bar(loader, state, options)
    try:
        for images, targets in loader:
            if options.total_iterations is not None and state.iteration >= options.total_iterations:
                break
            stepped, losses = train_step(parts, images, targets, options.clip_grad_norm)
            if stepped:
                state.nonfinite_streak = 0
            else:
                _skipped(state, losses, options, log)
            window.add(losses if stepped else None, images.shape[0] * world)
            if parts.scheduler is not None:
                parts.scheduler.step()
            state.iteration += 1
            _after_iteration(parts, state, window, options, bar, log)
            if on_iteration is not None:
                on_iteration(state)
    finally:
        if bar is not None:
            bar.close()
    return window.epoch_means()


def _after_iteration(parts: TrainingParts, state: LoopState, window: _Window, options: LoopOptions, bar: Any,
                     log: Callable[[dict[str, Any]], None] | None) -> None:
    """Tick the progress bar; every ``log_every`` iterations write a record and start a new window."""
    lr = parts.optimizer.param_groups[0]["lr"]
    if bar is not None:
        bar.update(1)
        if window.mean_loss() is not None:
            bar.set_postfix(loss=f"{window.mean_loss():.3f}", lr=f"{lr:.2e}", refresh=False)
    if state.iteration % options.log_every:
        return
    record = {**window.record(parts.device), "iter": state.iteration, "epoch": state.epoch, "lr": lr,
              "nonfinite_total": state.nonfinite_total}
    if bar is not None:
        bar.set_postfix(loss=f"{record.get('loss', float('nan')):.3f}", lr=f"{lr:.2e}",
                        img_s=f"{record['img_s']:.0f}", refresh=False)
    if log is not None and rank_and_world()[0] == 0:
        log(record)
