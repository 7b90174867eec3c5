"""Training: ``fit(config)`` reads top to bottom as setup → resume → epochs (train, validate,
checkpoint) → finish.

Reproducibility and resume: the data order of an epoch is a permutation seeded from
``(seed, epoch)`` and every item is augmented with its own generator seeded from
``(seed, epoch, index)`` (:mod:`ssd_ext.data.sampling`), so the batches depend neither on the
number of loader workers nor on where a run was interrupted; a run resumed from a checkpoint
continues with exactly the batches, weights, optimiser and scheduler states of an
uninterrupted one (bit for bit on the CPU).

Held-out data: the validation split is evaluated every ``eval.every_epochs`` epochs and selects
``best.pt``; the test split, which nothing selects on, is evaluated once at the end and is what
the run reports. Under ``torchrun`` each rank trains on its shard (DistributedDataParallel) and
rank 0 alone writes files (:mod:`.run_log`, :mod:`.checkpoint`).
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data import collate, default_num_workers
from ..data.build import build_dataset
from ..data.sampling import AugmentedItems, EpochSampler
from ..errors import ConfigError
from .checkpoint import (
    atomic_save,
    load_checkpoint,
    prune_checkpoints,
    restore_training,
    training_checkpoint,
)
from .config import Config, ModelConfig, validate
from .distributed import barrier, broadcast_buffers, resolve_device, setup_distributed
from .evaluation import evaluate_dataset
from .loop import LoopOptions, LoopState, TrainingError, TrainingParts, train_one_epoch
from .loss import MultiBoxLoss
from .optim import build_optimizer, build_scheduler
from .run_log import RunLog
from .wrappers import unwrap_model

__all__ = ["TrainingError", "build_model_from_config", "fit"]


@dataclass
class Datasets:
    train: Any
    val: Any | None
    test: Any | None

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.train.class_names)


@dataclass
class _Clock:
    """Seconds spent training, i.e. since the start minus the time spent evaluating."""

    started: float = field(default_factory=time.perf_counter)
    evaluating: float = 0.0

    def training_seconds(self) -> float:
        return time.perf_counter() - self.started - self.evaluating


@dataclass
class TrainingRun:
    """One run in progress: what :func:`fit`'s steps share."""

    config: Config
    rank: int
    world: int
    datasets: Datasets
    parts: TrainingParts
    sampler: EpochSampler
    loader: DataLoader
    log: RunLog
    state: LoopState
    iterations_per_epoch: int
    threads_before: int
    metrics: dict[str, dict[str, float]] = field(default_factory=lambda: {"val": {}, "test": {}})
    clock: _Clock = field(default_factory=_Clock)
    start_iteration: int = 0

    @property
    def total_iterations(self) -> int:
        return self.iterations_per_epoch * self.config.schedule.epochs

    @property
    def eval_model(self) -> nn.Module:
        """The weights evaluated and drawn: the EMA ones when kept."""
        return unwrap_model(self.parts.ema if self.parts.ema is not None else self.parts.model)


def fit(config: Config, resume: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train ``config`` (resuming from the checkpoint file ``resume`` when given), evaluate on the
    held-out splits and write the run folder.

    Returns a summary on every rank: "metrics" (the test split's, {} when not evaluated),
    "val_metrics", "iterations", "train_seconds", "train_images_per_second", ..., the paths
    written (rank 0; also in ``<output_dir>/summary.json``), and "model", this rank's trained
    model (unwrapped from DDP)."""
    validate(config)
    run = _setup(config, resume)
    try:
        while run.state.iteration < run.total_iterations:
            _train_epoch(run)
            if _validation_due(run):
                _validate(run)
        return _finish(run)
    finally:
        run.log.close()
        torch.set_num_threads(run.threads_before)


# --------------------------------------------------------------------------------------------
# setup


def _setup(config: Config, resume: str | os.PathLike | None) -> TrainingRun:
    """Process group, device, data, model and optimiser, restored from ``resume`` when given."""
    rank, world, local_rank = setup_distributed(config.train.device)
    device = resolve_device(config.train.device, local_rank, world)
    threads_before = torch.get_num_threads()
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    checkpoint = load_checkpoint(resume) if resume is not None else None
    datasets = _build_datasets(config)
    log = RunLog(config, rank)
    if checkpoint is None:
        log.refuse_previous_run(config.overwrite)
    _seed_everything(config.train.seed)
    parts = _build_parts(config, device, len(datasets.class_names))
    sampler, loader = _build_loader(config, datasets.train, rank, world, device)
    iterations_per_epoch = sampler.num_samples // config.train.batch_size
    if iterations_per_epoch == 0:
        raise ConfigError(f"train.batch_size={config.train.batch_size} is larger than this rank's "
                          f"{sampler.num_samples} training images")
    total_iterations = iterations_per_epoch * config.schedule.epochs
    parts.scheduler = build_scheduler(config.schedule, parts.optimizer, total_iterations)
    state = LoopState()
    if checkpoint is not None:
        state = restore_training(checkpoint, parts, f"model {config.model.name!r}")
    log.start(config, resumed_at=state.iteration if checkpoint is not None else None)
    barrier()
    if world > 1:
        parts.model = nn.parallel.DistributedDataParallel(
            parts.model, device_ids=[device.index] if device.type == "cuda" else None)
    run = TrainingRun(config, rank, world, datasets, parts, sampler, loader, log, state, iterations_per_epoch,
                      threads_before, start_iteration=state.iteration)
    if checkpoint is not None:
        run.metrics.update(checkpoint.get("metrics") or {})
    return run


def _build_datasets(config: Config) -> Datasets:
    datasets = Datasets(*(build_dataset(config.data, split) for split in ("train", "val", "test")))
    if datasets.train is None or len(datasets.train) == 0:
        raise ConfigError("the training set is empty")
    for split, dataset in (("val", datasets.val), ("test", datasets.test)):
        if dataset is not None and tuple(dataset.class_names) != datasets.class_names:
            raise ConfigError(f"the {split} split's classes {list(dataset.class_names[1:])} differ from the "
                              f"training split's {list(datasets.class_names[1:])}")
    return datasets


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def build_model_from_config(model: ModelConfig, num_classes: int) -> nn.Module:
    """``build_model`` with the config's name, priors, design switches and kwargs, and the
    backbone's ImageNet weights when ``model.backbone_weights`` names a file."""
    from ..models import build_model

    try:
        network = build_model(model.name, num_classes, priors=model.priors, **model.design(), **model.kwargs)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"model: {error}") from None
    if model.backbone_weights:
        from ..models import weights

        if not os.path.isfile(model.backbone_weights):
            raise ConfigError(f"model.backbone_weights {model.backbone_weights!r} does not exist")
        weights.load_vgg16_backbone(network, model.backbone_weights)
    return network


def _autocast_dtype(config: Config, device: torch.device) -> torch.dtype | None:
    if config.train.amp == "none":
        return None
    if config.train.amp == "fp16":
        if device.type != "cuda":
            raise ConfigError("train.amp=fp16 needs CUDA (the grad scaler is CUDA-only); use bf16 on the CPU")
        return torch.float16
    return torch.bfloat16


def _build_parts(config: Config, device: torch.device, num_classes: int) -> TrainingParts:
    autocast_dtype = _autocast_dtype(config, device)
    model = build_model_from_config(config.model, num_classes).to(device)
    channels_last = device.type == "cuda" and config.train.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = None
    if config.train.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        average = get_ema_multi_avg_fn(config.train.ema_decay)
        ema = AveragedModel(model, multi_avg_fn=average, use_buffers=True)
    return TrainingParts(
        model=model, criterion=MultiBoxLoss(model.priors, num_classes).to(device),
        optimizer=build_optimizer(config.optim, model), ema=ema, device=device, autocast_dtype=autocast_dtype,
        scaler=torch.amp.GradScaler("cuda") if autocast_dtype == torch.float16 else None,
        channels_last=channels_last)


def _build_loader(config: Config, train_set: Any, rank: int, world: int,
                  device: torch.device) -> tuple[EpochSampler, DataLoader]:
    seed = config.train.seed
    items = AugmentedItems(train_set, seed)
    sampler = EpochSampler(items, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    workers = config.data.num_workers if config.data.num_workers is not None else default_num_workers()
    # Its own generator: creating an epoch's iterator draws a worker seed, which must not move
    # the global RNG (a resumed run creates one iterator more than an uninterrupted one).
    generator = torch.Generator()
    generator.manual_seed(seed)
    loader = DataLoader(items, batch_size=config.train.batch_size, sampler=sampler, num_workers=workers,
                        generator=generator, collate_fn=collate, drop_last=True,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    return sampler, loader


# --------------------------------------------------------------------------------------------
# epochs


def _train_epoch(run: TrainingRun) -> None:
    """Train from the current iteration to the end of its epoch (a resumed run starts mid-epoch)."""
    state, batch = run.state, run.config.train.batch_size
    state.epoch = state.iteration // run.iterations_per_epoch
    run.sampler.set_epoch(state.epoch)
    run.sampler.start = (state.iteration - state.epoch * run.iterations_per_epoch) * batch
    options = LoopOptions.from_config(run.config, run.total_iterations)
    train_one_epoch(run.parts, run.loader, state, options, log=run.log.log,
                    on_iteration=lambda s: _checkpoint_if_due(run, s))
    run.sampler.start = 0


def _checkpoint_if_due(run: TrainingRun, state: LoopState) -> None:
    if state.iteration % run.config.checkpoint.every == 0 and state.iteration < run.total_iterations:
        _save(run, "periodic")


def _validation_due(run: TrainingRun) -> bool:
    every = run.config.eval.every_epochs
    finished_epochs = run.state.iteration // run.iterations_per_epoch
    return (run.datasets.val is not None and every > 0 and finished_epochs % every == 0
            and run.state.iteration < run.total_iterations)


def _evaluate(run: TrainingRun, dataset: Any, split: str) -> dict[str, float] | None:
    """Evaluate the current weights on ``split``; its metrics (rank 0; None elsewhere), logged."""
    started = time.perf_counter()
    trained_for = run.clock.training_seconds()
    result = evaluate_dataset(run.eval_model, dataset, run.config.eval, run.parts.device,
                              progress=run.config.train.progress)
    run.clock.evaluating += time.perf_counter() - started
    if result is None:
        return None
    metrics = {key: float(value) for key, value in result.metrics.items()}
    run.log.log({"iter": run.state.iteration, "epoch": run.state.epoch, "split": split,
                 "train_time_s": trained_for, **metrics})
    return metrics


def _validate(run: TrainingRun) -> None:
    """Evaluate on the validation split; a better AP than any before is saved as best.pt."""
    metrics = _evaluate(run, run.datasets.val, "val")
    if metrics is None:
        return
    run.metrics["val"] = metrics
    if metrics.get("AP", -1.0) > run.state.best_ap:
        run.state.best_ap = float(metrics["AP"])
        _save(run, "best")


def _save(run: TrainingRun, kind: str) -> None:
    """Rank 0 writes ``checkpoint_<iteration>.pt`` (keeping the last few) or ``<kind>.pt``."""
    if run.rank != 0:
        return
    data = training_checkpoint(run.config, run.parts, run.datasets.class_names, run.state, run.metrics)
    if kind == "periodic":
        atomic_save(data, run.log.checkpoints / f"checkpoint_{run.state.iteration:08d}.pt")
        prune_checkpoints(run.log.checkpoints, run.config.checkpoint.keep_last)
    else:
        atomic_save(data, run.log.checkpoints / f"{kind}.pt")


# --------------------------------------------------------------------------------------------
# finish


def _finish(run: TrainingRun) -> dict[str, Any]:
    """Evaluate on the test split, write the last checkpoint, curves, pictures and summary."""
    train_seconds = run.clock.training_seconds()
    run.state.epoch = run.config.schedule.epochs
    broadcast_buffers(run.parts.model, run.parts.ema)
    if run.config.eval.at_end and run.datasets.test is not None:
        run.metrics["test"] = _evaluate(run, run.datasets.test, "test") or {}
    _save(run, "periodic")
    trained_images = (run.state.iteration - run.start_iteration) * run.config.train.batch_size * run.world
    summary: dict[str, Any] = {
        "output_dir": str(run.log.dir), "iterations": run.state.iteration, "world_size": run.world,
        "train_seconds": train_seconds, "train_images_per_second": trained_images / max(train_seconds, 1e-9),
        "nonfinite_skipped": run.state.nonfinite_total, "metrics": run.metrics["test"],
        "val_metrics": run.metrics["val"],
    }
    if run.rank == 0:
        summary.update(_write_outputs(run))
        run.log.write_summary(summary)
    summary["model"] = unwrap_model(run.parts.model)
    return summary


def _write_outputs(run: TrainingRun) -> dict[str, str]:
    """The last checkpoint's path, best.pt, curves.png and the detection pictures (rank 0)."""
    from .inference import draw_dataset_detections

    paths = {"checkpoint": str(run.log.checkpoints / f"checkpoint_{run.state.iteration:08d}.pt")}
    if (run.log.checkpoints / "best.pt").exists():
        paths["best_checkpoint"] = str(run.log.checkpoints / "best.pt")
    curves = run.log.write_curves()
    if curves is not None:
        paths["curves"] = str(curves)
    pictures_of = run.datasets.test if run.datasets.test is not None else run.datasets.val
    if run.config.eval.num_pictures and pictures_of is not None:
        folder = run.log.dir / "detections"
        draw_dataset_detections(run.eval_model, pictures_of, folder, run.parts.device,
                                count=run.config.eval.num_pictures,
                                max_detections=run.config.eval.max_detections)
        paths["pictures"] = str(folder)
    return paths
