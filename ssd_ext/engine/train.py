"""The training loop: ``fit(config)`` builds everything from a :class:`Config` and trains.

Reproducibility and resume: every training item is augmented with its own generator seeded
from ``(seed, epoch, index)`` (:class:`SeededItems`), and the data order of an epoch is a
permutation seeded from ``(seed, epoch)`` (:class:`ResumableSampler`, a DistributedSampler
that can start mid-epoch). So the batches do not depend on the number of loader workers or on
where a run was interrupted, and a run resumed from a checkpoint continues with exactly the
batches, weights, optimiser and scheduler states of an uninterrupted one (bit for bit on the CPU).

Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in
DistributedDataParallel (gloo on the CPU, nccl on CUDA), each rank reads its shard, logged
metrics are averaged over ranks, evaluation predictions are gathered on rank 0, and only rank
0 writes checkpoints, metrics, curves and pictures.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .. import __version__
from .checkpoint import (
    CheckpointError,
    atomic_save,
    capture_rng,
    latest_checkpoint,
    load_checkpoint,
    load_model_state,
    prune_checkpoints,
    restore_rng,
)
from .config import Config, ConfigError, config_from_dict, config_to_dict, save_config, validate
from .loss import MultiBoxLoss

__all__ = ["ResumableSampler", "SeededItems", "TrainingError", "build_datasets", "fit", "plot_curves",
           "train_one_epoch"]


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a run of non-finite losses); the message says why."""


# --------------------------------------------------------------------------------------------
# data


class SeededItems(Dataset):
    """``dataset[(epoch, index)]``: item ``index`` augmented with a generator seeded from
    ``(seed, epoch, index)``; the target also gets ``"index"``. A plain int key means epoch 0."""

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, dict[str, Any]]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        generator = torch.Generator()
        generator.manual_seed(int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0]))
        transform = self.dataset.transform
        if transform is not None:
            self.dataset.transform = _WithGenerator(transform, generator)
        try:
            image, target = self.dataset[index]
        finally:
            self.dataset.transform = transform
        target["index"] = int(index)
        return image, target


class _WithGenerator:
    def __init__(self, transform: Callable[..., Any], generator: torch.Generator) -> None:
        self.transform, self.generator = transform, generator

    def __call__(self, image: Any, boxes: Tensor, labels: Tensor) -> Any:
        return self.transform(image, boxes, labels, self.generator)


class ResumableSampler(DistributedSampler):
    """DistributedSampler yielding ``(epoch, index)`` keys for :class:`SeededItems`; ``start``
    skips the first samples of this rank's share of the epoch (a mid-epoch resume)."""

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.start = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())[self.start:]
        return iter([(self.epoch, int(i)) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start


def _transforms(config: Config) -> tuple[Callable, Callable]:
    from ..data import transforms as T

    data = config.data
    size, mean, std = data.image_size, tuple(data.mean), tuple(data.std)
    if data.augment == "ssd":
        train = T.train_transform(size, mean, std, T.Augmentation(expand_max_ratio=data.expand_max_ratio))
    elif data.augment == "light":
        light = T.Augmentation(photometric=False, expand_max_ratio=data.expand_max_ratio, crop=False)
        train = T.train_transform(size, mean, std, light)
    else:
        train = T.eval_transform(size, mean, std)
    return train, T.eval_transform(size, mean, std)


def build_datasets(config: Config, transforms: bool = True) -> tuple[Any, Any]:
    """``(train, held-out)`` datasets of ``config.data`` (with their transforms when ``transforms``).

    Raises ConfigError naming a missing path or an unreadable annotation file."""
    from .. import data as D

    data = config.data
    train_tf, eval_tf = _transforms(config) if transforms else (None, None)
    if data.kind == "synthetic":
        common = {"image_size": data.synthetic_source_size, "max_objects": data.synthetic_max_objects,
                  "cache": data.synthetic_cache}
        train = D.SyntheticShapes(num_images=data.synthetic_train_images, seed=data.synthetic_train_seed,
                                  transform=train_tf, **common)
        val = D.SyntheticShapes(num_images=data.synthetic_val_images, seed=data.synthetic_val_seed,
                                transform=eval_tf, **common)
        return train, val
    if data.kind == "voc":
        root = data.root or ""
        if not os.path.isdir(root):
            raise ConfigError(f"data.root {root!r} is not a folder; it must be the VOCdevkit folder "
                              "holding VOC2007/ (and VOC2012/)")
        names = tuple(data.class_names) if data.class_names else D.VOC_CLASSES

        def sets(entries: list[str], what: str) -> list[tuple[str, str]]:
            pairs = []
            for entry in entries:
                year, sep, split = entry.partition(":")
                if not sep:
                    raise ConfigError(f"{what} entries are 'year:split' (e.g. 2007:trainval), got {entry!r}")
                if not os.path.isdir(os.path.join(root, f"VOC{year}")):
                    raise ConfigError(f"{what}: {os.path.join(root, f'VOC{year}')!r} does not exist")
                pairs.append((year, split))
            return pairs

        train = D.VOCDetection(root, sets(data.train_split, "data.train_split"), transform=train_tf,
                               class_names=names, drop_empty=True)
        val = D.VOCDetection(root, sets(data.val_split, "data.val_split"), transform=eval_tf,
                             class_names=names, keep_difficult=True)
        return train, val
    if data.kind == "coco":
        out = []
        for split, tf, what in ((data.train_split, train_tf, "data.train_split"),
                                (data.val_split, eval_tf, "data.val_split")):
            image_dir, annotations = split
            if not os.path.isdir(image_dir):
                raise ConfigError(f"{what}: image folder {image_dir!r} does not exist")
            if not os.path.isfile(annotations):
                raise ConfigError(f"{what}: annotation file {annotations!r} does not exist")
            try:
                out.append(D.COCODetection(image_dir, annotations, transform=tf, drop_empty=tf is train_tf))
            except ValueError as error:
                raise ConfigError(str(error)) from None
        return out[0], out[1]
    raise ConfigError(f"data.kind must be synthetic, voc or coco, got {data.kind!r}")


# --------------------------------------------------------------------------------------------
# model, optimiser, schedule


def build_model_from_config(config: Config, num_classes: int) -> nn.Module:
    from ..models import build_model

    try:
        model = build_model(config.model.name, num_classes, priors=config.model.priors, **config.model.kwargs)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"model: {error}") from None
    if config.model.backbone_weights:
        from ..models import weights

        if not os.path.isfile(config.model.backbone_weights):
            raise ConfigError(f"model.backbone_weights {config.model.backbone_weights!r} does not exist")
        weights.load_vgg16_backbone(model, config.model.backbone_weights)
    return model


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: weights of convs/linears with ``weight_decay``; norms' parameters and all
    biases (any parameter of fewer than 2 dimensions, e.g. L2Norm's scale) without."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.dim() > 1 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(config: Config, model: nn.Module) -> torch.optim.Optimizer:
    o = config.optim
    groups = parameter_groups(model, o.weight_decay)
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas))
    raise ConfigError(f"optim.name must be sgd or adamw, got {o.name!r}")


def lr_factor(config: Config, iteration: int, total: int) -> float:
    """The lr multiplier at ``iteration`` (0-based) of ``total``: linear warmup from
    ``warmup_factor``, then multistep or cosine."""
    s = config.schedule
    if iteration < s.warmup_iters:
        alpha = iteration / max(1, s.warmup_iters)
        warm = s.warmup_factor + (1 - s.warmup_factor) * alpha
    else:
        warm = 1.0
    if s.kind == "multistep":
        drops = sum(iteration >= int(m * total) for m in s.milestones)
        return warm * s.gamma ** drops
    progress = min(1.0, max(0.0, (iteration - s.warmup_iters) / max(1, total - s.warmup_iters)))
    return warm * (s.min_lr_factor + (1 - s.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress)))


# --------------------------------------------------------------------------------------------
# the loop


@dataclass
class LoopState:
    """Counters the loop carries across epochs (and checkpoints)."""

    iteration: int = 0
    epoch: int = 0
    nonfinite_total: int = 0
    nonfinite_streak: int = 0
    best_ap: float = -1.0


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train_one_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    loader: DataLoader, *, device: torch.device, state: LoopState,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                    scaler: torch.amp.GradScaler | None = None, ema: nn.Module | None = None,
                    autocast_dtype: torch.dtype | None = None, clip_grad_norm: float | None = None,
                    channels_last: bool = False, max_nonfinite: int = 10, total_iterations: int | None = None,
                    log: Callable[[dict[str, Any]], None] | None = None, log_every: int = 10,
                    on_iteration: Callable[[LoopState], None] | None = None,
                    progress: bool = True) -> dict[str, float]:
    """Train over ``loader`` once (or until ``total_iterations``); returns the epoch's mean losses.

    ``loader`` yields ``(images [B,3,H,W], targets)`` (targets' boxes normalised xyxy). A step
    whose loss is not finite (on any rank) is skipped: no backward, no weight update; it is
    counted in ``state.nonfinite_total`` and logged, and ``max_nonfinite`` of them in a row raise
    :class:`TrainingError`. The scheduler steps every iteration, skipped ones included, so the
    schedule follows the iteration count. ``log`` gets a metrics dict every ``log_every``
    iterations (losses averaged over ranks); ``on_iteration`` runs after every iteration
    (checkpointing).
    """
    rank, world = _distributed()
    model.train()
    sums = {"loss": 0.0, "loc_loss": 0.0, "conf_loss": 0.0}
    counted = 0
    window = {"loss": 0.0, "loc_loss": 0.0, "conf_loss": 0.0, "n": 0}
    window_start, window_images = time.perf_counter(), 0
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=len(loader), desc=f"epoch {state.epoch + 1}", unit="it", dynamic_ncols=True,
                   leave=False)
    try:
        for images, targets in loader:
            if total_iterations is not None and state.iteration >= total_iterations:
                break
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = [{"boxes": t["boxes"].to(device, non_blocking=True),
                        "labels": t["labels"].to(device, non_blocking=True)} for t in targets]
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None):
                loc, conf = model(images)
            losses = criterion(loc.float(), conf.float(), targets)
            loss = losses["loss"]
            finite = torch.isfinite(loss.detach()).to(torch.float32)
            if world > 1:
                dist.all_reduce(finite, op=dist.ReduceOp.MIN)
            optimizer.zero_grad(set_to_none=True)
            if finite.item() < 1:
                state.nonfinite_total += 1
                state.nonfinite_streak += 1
                message = (f"non-finite loss at iteration {state.iteration} "
                           f"(loc {losses['loc_loss'].item():.4g}, conf {losses['conf_loss'].item():.4g}): "
                           "step skipped "
                           f"({state.nonfinite_streak} in a row, {state.nonfinite_total} in all)")
                if rank == 0:
                    warnings.warn(message, RuntimeWarning, stacklevel=2)
                    if log is not None:
                        log({"iter": state.iteration, "epoch": state.epoch, "event": "nonfinite_loss_skipped",
                             "nonfinite_total": state.nonfinite_total})
                if state.nonfinite_streak >= max_nonfinite:
                    raise TrainingError(
                        f"stopped at iteration {state.iteration}: {state.nonfinite_streak} non-finite "
                        f"losses in a row (limit train.max_nonfinite={max_nonfinite}). Lower optim.lr, "
                        "set optim.clip_grad_norm, use a longer schedule.warmup_iters, or check the data "
                        "for bad boxes.")
            else:
                state.nonfinite_streak = 0
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                if clip_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                if ema is not None:
                    ema.update_parameters(model)
                values = {k: float(losses[k].detach()) for k in sums}
                for k in sums:
                    sums[k] += values[k]
                    window[k] += values[k]
                counted += 1
                window["n"] += 1
            window_images += images.shape[0] * world
            if scheduler is not None:
                scheduler.step()
            state.iteration += 1
            if bar is not None:
                bar.update(1)
                if window["n"]:
                    bar.set_postfix(loss=f"{window['loss'] / window['n']:.3f}",
                                    lr=f"{optimizer.param_groups[0]['lr']:.2e}", refresh=False)
            if state.iteration % log_every == 0:
                elapsed = time.perf_counter() - window_start
                record = _reduced_window(window, device, world)
                record.update({"iter": state.iteration, "epoch": state.epoch,
                               "lr": optimizer.param_groups[0]["lr"],
                               "img_s": window_images / max(elapsed, 1e-9),
                               "nonfinite_total": state.nonfinite_total})
                if bar is not None:
                    bar.set_postfix(loss=f"{record.get('loss', float('nan')):.3f}", lr=f"{record['lr']:.2e}",
                                    img_s=f"{record['img_s']:.0f}", refresh=False)
                if log is not None and rank == 0:
                    log(record)
                window = {"loss": 0.0, "loc_loss": 0.0, "conf_loss": 0.0, "n": 0}
                window_start, window_images = time.perf_counter(), 0
            if on_iteration is not None:
                on_iteration(state)
    finally:
        if bar is not None:
            bar.close()
    return {k: v / max(counted, 1) for k, v in sums.items()}


def _reduced_window(window: dict[str, float], device: torch.device, world: int) -> dict[str, float]:
    values = torch.tensor([window["loss"], window["loc_loss"], window["conf_loss"], window["n"]],
                          dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
    if world > 1:
        dist.all_reduce(values)
    n = float(values[3])
    if n == 0:
        return {}
    return {"loss": float(values[0]) / n, "loc_loss": float(values[1]) / n, "conf_loss": float(values[2]) / n}


# --------------------------------------------------------------------------------------------
# evaluation, pictures, curves


def _unwrap(model: nn.Module) -> nn.Module:
    while hasattr(model, "module"):
        model = model.module
    return model


def evaluate_model(model: nn.Module, dataset: Any, config: Config, device: torch.device,
                   progress: bool = False) -> Any:
    """Predict on this rank's shard of ``dataset``, gather on rank 0 and evaluate there.
    Returns the ``EvalResult`` of ``ssd_ext.engine.evaluate`` on rank 0, None on the others."""
    from .evaluate import evaluate_predictions, predict

    rank, world = _distributed()
    sampler = DistributedSampler(SeededItems(dataset, 0), num_replicas=world, rank=rank, shuffle=False)
    loader = DataLoader(SeededItems(dataset, 0), batch_size=config.eval.batch_size, sampler=sampler,
                        num_workers=0, collate_fn=_collate())
    was_training = model.training
    model.eval()
    try:
        predictions = predict(model, loader, device=device, score_threshold=config.eval.score_threshold,
                              iou_threshold=config.eval.iou_threshold,
                              max_detections=config.eval.max_detections, progress=progress and rank == 0)
    finally:
        model.train(was_training)
    if world > 1:
        gathered: list[Any] | None = [None] * world if rank == 0 else None
        dist.gather_object(predictions, gathered, dst=0)
        if rank != 0:
            return None
        unique: dict[int, Any] = {}
        for part in gathered or []:
            for p in part:
                unique.setdefault(int(p["index"]), p)
        predictions = [unique[i] for i in sorted(unique)]
    return evaluate_predictions(predictions, dataset, progress=progress)


def _collate() -> Callable:
    from ..data import collate

    return collate


def write_detection_pictures(model: nn.Module, dataset: Any, config: Config, out_dir: Path,
                             device: torch.device, count: int, score_threshold: float = 0.5) -> list[Path]:
    """Draw the model's detections on the first ``count`` images of ``dataset`` (PNG files)."""
    from ..data import draw_boxes

    out_dir.mkdir(parents=True, exist_ok=True)
    model = _unwrap(model)
    model.eval()
    paths = []
    for index in range(min(count, len(dataset))):
        image, target = dataset[index]
        raw = dataset.load_raw(index)[0]
        result = model.detect(image.unsqueeze(0).to(device), score_threshold=score_threshold,
                              max_detections=config.eval.max_detections)[0]
        h, w = image.shape[-2:]
        scale = torch.tensor([raw.width / w, raw.height / h, raw.width / w, raw.height / h])
        path = out_dir / f"{index:04d}.png"
        draw_boxes(raw, result["boxes"].cpu() * scale, result["labels"].cpu(), result["scores"].cpu(),
                   class_names=dataset.class_names, normalized=False, path=path)
        paths.append(path)
    return paths


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file."""
    records = []
    with open(path) as handle:
        for line in handle:
            line = line.strip()
            if line:
                records.append(json.loads(line))
    return records


def plot_curves(metrics_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """PNG of the loss parts, the learning rate and the held-out AP over iterations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "AP" in r]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    iters = [r["iter"] for r in train]
    for key, label in (("loss", "total"), ("loc_loss", "localisation"), ("conf_loss", "confidence")):
        axes[0].plot(iters, [r[key] for r in train], label=label)
    axes[0].set_title("training loss")
    axes[0].set_xlabel("iteration")
    axes[0].legend()
    axes[1].plot(iters, [r["lr"] for r in train])
    axes[1].set_title("learning rate")
    axes[1].set_xlabel("iteration")
    if evals:
        e_iters = [r["iter"] for r in evals]
        for key in ("AP", "AP50", "AP75"):
            axes[2].plot(e_iters, [r.get(key, float("nan")) for r in evals], marker="o", label=key)
        axes[2].legend()
        axes[2].set_ylim(0, 1)
    axes[2].set_title("held-out AP")
    axes[2].set_xlabel("iteration")
    fig.tight_layout()
    fig.savefig(out_path, dpi=80)
    plt.close(fig)
    return Path(out_path)


# --------------------------------------------------------------------------------------------
# fit


def _setup_distributed(device_name: str) -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        rank, world = _distributed()
        return rank, world, int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))


def _device(name: str, local_rank: int, world: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={name!r} but no CUDA device is available; use cpu or auto")
        if world > 1 and device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def _autocast_dtype(config: Config, device: torch.device) -> torch.dtype | None:
    if config.train.amp == "none":
        return None
    if config.train.amp == "fp16":
        if device.type != "cuda":
            raise ConfigError("train.amp=fp16 needs CUDA (the grad scaler is CUDA-only); use bf16 on the CPU")
        return torch.float16
    return torch.bfloat16


class _Run:
    """The files of one run folder (rank 0 only writes)."""

    def __init__(self, config: Config, rank: int) -> None:
        self.dir = Path(config.output_dir)
        self.checkpoints = self.dir / "checkpoints"
        self.metrics = self.dir / "metrics.jsonl"
        self.rank = rank
        self.writer = None
        if rank == 0:
            self.dir.mkdir(parents=True, exist_ok=True)
            if config.train.tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:
                    pass
                else:
                    self.writer = SummaryWriter(str(self.dir / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        with open(self.metrics, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None and "iter" in record:
            for key, value in record.items():
                if key not in ("iter", "epoch") and isinstance(value, (int, float)):
                    group = "eval" if "AP" in key else "train"
                    self.writer.add_scalar(f"{group}/{key}", value, record["iter"])

    def truncate_metrics(self, iteration: int) -> None:
        """Drop records past ``iteration`` (a resumed run rewrites them)."""
        if self.rank != 0 or not self.metrics.exists():
            return
        kept = [r for r in read_metrics(self.metrics) if r.get("iter", 0) <= iteration]
        with open(self.metrics, "w") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in kept)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _checkpoint_dict(config: Config, model: nn.Module, class_names: tuple[str, ...], optimizer, scheduler,
                     scaler, ema, state: LoopState, metrics: dict[str, Any]) -> dict[str, Any]:
    net = _unwrap(model)
    prior_preset = config.model.priors
    return {
        "format": "ssd_ext.checkpoint", "format_version": 1, "ssd_ext_version": __version__,
        "model": {"name": config.model.name, "num_classes": len(class_names),
                  "kwargs": dict(config.model.kwargs)},
        "class_names": list(class_names),
        "prior_preset": prior_preset,
        "input": {"size": list(getattr(net, "image_size", (config.data.image_size,) * 2)),
                  "mean": list(config.data.mean), "std": list(config.data.std)},
        "model_state": net.state_dict(),
        "ema_state": _unwrap(ema.module).state_dict() if ema is not None else None,
        "ema_averaging_state": ema.state_dict() if ema is not None else None,
        "optimizer_state": optimizer.state_dict(),
        "scheduler_state": scheduler.state_dict(),
        "scaler_state": scaler.state_dict() if scaler is not None else None,
        "iteration": state.iteration, "epoch": state.epoch,
        "loop": {"nonfinite_total": state.nonfinite_total, "nonfinite_streak": state.nonfinite_streak,
                 "best_ap": state.best_ap},
        "rng": capture_rng(),
        "config": config_to_dict(config),
        "metrics": metrics,
    }


def resolve_resume(resume: str, config: Config) -> Path:
    """A checkpoint file from ``--resume``'s value: a file, a run folder, or "auto" (output_dir)."""
    target = Path(config.output_dir) if resume in ("auto", "") else Path(resume)
    if target.is_dir():
        folder = target / "checkpoints" if (target / "checkpoints").is_dir() else target
        found = latest_checkpoint(folder)
        if found is None:
            raise CheckpointError(f"no checkpoint to resume from in {str(folder)!r}")
        return found
    if not target.exists():
        raise CheckpointError(f"--resume: {str(target)!r} does not exist")
    return target


def fit(config: Config, resume: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train ``config`` (resuming from the checkpoint ``resume`` when given), evaluate on the
    held-out split and write the run folder. Returns a summary dict on every rank: "metrics"
    and the paths (rank 0 only; also in ``<output_dir>/summary.json``), and "model", this
    rank's trained model (unwrapped from DDP)."""
    validate(config)
    rank, world, local_rank = _setup_distributed(config.train.device)
    device = _device(config.train.device, local_rank, world)
    threads_before = torch.get_num_threads()
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    autocast_dtype = _autocast_dtype(config, device)
    ckpt = load_checkpoint(resume) if resume is not None else None
    train_set, val_set = build_datasets(config)
    if len(train_set) == 0:
        raise ConfigError("the training set is empty")
    run = _Run(config, rank)
    if rank == 0 and ckpt is None and list(run.checkpoints.glob("checkpoint_*.pt")):
        if not config.overwrite:
            raise ConfigError(f"{str(run.dir)!r} already holds checkpoints; pass --resume to continue that "
                              "run or --overwrite true to start over there")
        shutil.rmtree(run.checkpoints)
        for stale in ("metrics.jsonl", "best.json"):
            (run.dir / stale).unlink(missing_ok=True)
    if rank == 0 and ckpt is None and run.metrics.exists():
        run.metrics.unlink()
    if world > 1:
        dist.barrier()

    torch.manual_seed(config.train.seed)
    np.random.seed(config.train.seed % 2**32)
    import random

    random.seed(config.train.seed)

    class_names = tuple(train_set.class_names)
    model = build_model_from_config(config, len(class_names)).to(device)
    if device.type == "cuda" and config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    channels_last = device.type == "cuda" and config.train.channels_last
    criterion = MultiBoxLoss(_unwrap(model).priors, len(class_names)).to(device)
    optimizer = build_optimizer(config, model)

    items = SeededItems(train_set, config.train.seed)
    sampler = ResumableSampler(items, num_replicas=world, rank=rank, shuffle=True, seed=config.train.seed)
    batch = config.train.batch_size
    iters_per_epoch = sampler.num_samples // batch
    if iters_per_epoch == 0:
        raise ConfigError(f"train.batch_size={batch} is larger than this rank's {sampler.num_samples} "
                          "training images")
    total = iters_per_epoch * config.schedule.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(config, it, total))
    scaler = torch.amp.GradScaler("cuda") if autocast_dtype == torch.float16 else None
    ema = None
    if config.train.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(_unwrap(model), multi_avg_fn=get_ema_multi_avg_fn(config.train.ema_decay),
                            use_buffers=True)
    state = LoopState()
    if ckpt is not None:
        load_model_state(model, ckpt["model_state"], f"model {config.model.name!r}")
        try:
            optimizer.load_state_dict(ckpt["optimizer_state"])
            scheduler.load_state_dict(ckpt["scheduler_state"])
        except (ValueError, KeyError) as error:
            raise CheckpointError(f"the checkpoint's optimizer does not fit this config ({error})") from None
        if scaler is not None and ckpt.get("scaler_state"):
            scaler.load_state_dict(ckpt["scaler_state"])
        if ema is not None and ckpt.get("ema_averaging_state") is not None:
            ema.load_state_dict(ckpt["ema_averaging_state"])
        state = LoopState(iteration=int(ckpt["iteration"]), epoch=int(ckpt["epoch"]), **ckpt.get("loop", {}))
        restore_rng(ckpt["rng"])
        run.truncate_metrics(state.iteration)
    ddp_model: nn.Module = model
    if world > 1:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    # Its own generator: creating an epoch's iterator draws a worker seed, which must not move
    # the global RNG (a resumed run creates one iterator more than an uninterrupted one).
    loader_generator = torch.Generator()
    loader_generator.manual_seed(config.train.seed)
    loader = DataLoader(items, batch_size=batch, sampler=sampler, num_workers=config.data.num_workers,
                        generator=loader_generator,
                        collate_fn=_collate(), drop_last=True, pin_memory=device.type == "cuda",
                        persistent_workers=config.data.num_workers > 0)
    if rank == 0:
        save_config(config, run.dir / "config.json")
    last_metrics: dict[str, Any] = dict(ckpt.get("metrics", {})) if ckpt is not None else {}

    def save(kind: str) -> None:
        if rank != 0:
            return
        data = _checkpoint_dict(config, model, class_names, optimizer, scheduler, scaler, ema, state,
                                last_metrics)
        if kind == "periodic":
            atomic_save(data, run.checkpoints / f"checkpoint_{state.iteration:08d}.pt")
            prune_checkpoints(run.checkpoints, config.checkpoint.keep_last)
        else:
            atomic_save(data, run.checkpoints / f"{kind}.pt")

    def on_iteration(s: LoopState) -> None:
        if s.iteration % config.checkpoint.every == 0 and s.iteration < total:
            save("periodic")

    eval_seconds = 0.0

    def run_eval() -> None:
        nonlocal last_metrics, eval_seconds
        eval_started = time.perf_counter()
        # Seconds spent training (not evaluating) in this process so far.
        train_time = eval_started - started - eval_seconds
        eval_model = ema.module if ema is not None else _unwrap(model)
        result = evaluate_model(eval_model, val_set, config, device, progress=config.train.progress)
        eval_seconds += time.perf_counter() - eval_started
        if rank == 0 and result is not None:
            last_metrics = {k: float(v) for k, v in result.metrics.items()}
            run.log({"iter": state.iteration, "epoch": state.epoch, "train_time_s": train_time,
                     **last_metrics})
            if last_metrics.get("AP", -1.0) > state.best_ap:
                state.best_ap = float(last_metrics["AP"])
                save("best")

    started = time.perf_counter()
    start_iteration = state.iteration
    try:
        while state.iteration < total:
            state.epoch = state.iteration // iters_per_epoch
            sampler.set_epoch(state.epoch)
            sampler.start = (state.iteration - state.epoch * iters_per_epoch) * batch
            train_one_epoch(ddp_model, criterion, optimizer, loader, device=device, state=state,
                            scheduler=scheduler, scaler=scaler, ema=ema, autocast_dtype=autocast_dtype,
                            clip_grad_norm=config.optim.clip_grad_norm, channels_last=channels_last,
                            max_nonfinite=config.train.max_nonfinite, total_iterations=total,
                            log=run.log, log_every=config.train.log_every, on_iteration=on_iteration,
                            progress=config.train.progress)
            sampler.start = 0
            epoch_done = state.iteration // iters_per_epoch
            every = config.eval.every_epochs
            if every and epoch_done % every == 0 and state.iteration < total:
                run_eval()
        train_seconds = time.perf_counter() - started - eval_seconds
        state.epoch = config.schedule.epochs
        if world > 1:
            _sync_buffers(model, ema)
        if config.eval.at_end:
            run_eval()
        save("periodic")
        summary: dict[str, Any] = {
            "output_dir": str(run.dir), "iterations": state.iteration, "world_size": world,
            "train_seconds": train_seconds,
            "train_images_per_second":
                (state.iteration - start_iteration) * batch * world / max(train_seconds, 1e-9),
            "nonfinite_skipped": state.nonfinite_total, "metrics": last_metrics,
        }
        if rank == 0:
            summary["checkpoint"] = str(run.checkpoints / f"checkpoint_{state.iteration:08d}.pt")
            if (run.checkpoints / "best.pt").exists():
                summary["best_checkpoint"] = str(run.checkpoints / "best.pt")
            if run.metrics.exists():
                summary["curves"] = str(plot_curves(run.metrics, run.dir / "curves.png"))
            if config.eval.num_pictures:
                eval_model = ema.module if ema is not None else model
                pictures = write_detection_pictures(eval_model, val_set, config, run.dir / "detections",
                                                    device, config.eval.num_pictures)
                summary["pictures"] = str(run.dir / "detections") if pictures else None
            with open(run.dir / "summary.json", "w") as handle:
                json.dump(summary, handle, indent=2)
        summary["model"] = _unwrap(model)
        return summary
    finally:
        run.close()
        torch.set_num_threads(threads_before)


def _sync_buffers(model: nn.Module, ema: nn.Module | None) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics): DDP broadcasts them at the
    start of each forward, so after the last step each rank still holds its own."""
    for module in (_unwrap(model), ema):
        if module is None:
            continue
        for buffer in module.buffers():
            if buffer.is_floating_point() or buffer.dtype in (torch.int64, torch.int32):
                dist.broadcast(buffer.data, src=0)


def config_of_checkpoint(path: str | os.PathLike) -> Config:
    """The :class:`Config` a checkpoint was trained with."""
    return config_from_dict(load_checkpoint(path)["config"])
