"""Typed training configuration: dataclasses, named presets, and their command line.

A :class:`Config` is plain data (dataclasses of numbers, strings, lists and dicts), so it is
saved as JSON beside every run (``<run>/config.json``) and inside every checkpoint, and
rebuilt with :func:`config_from_dict`. The command line ``ssd train`` is derived from these
dataclasses by jsonargparse (see :func:`make_train_parser`): every field is an option
(``--optim.lr 0.01``, ``--data.image_size 128``), ``--config file.yaml|json`` reads a file of
the same nesting, and ``--print_config`` shows the resolved result. Precedence, lowest first:
the preset (``--preset``, default ``synthetic_small``), the checkpoint's own config when
resuming, ``--config`` files and options in the order given.

Why jsonargparse: it reads the dataclasses' type hints (and field docstrings when
docstring-parser is installed), so the CLI, its help text, the YAML/JSON files and their
validation cannot drift from the code; it is a maintained
library used by LightningCLI, and it needs no decorators or changes to the dataclasses.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "CheckpointConfig", "Config", "ConfigError", "DataConfig", "EvalConfig", "ModelConfig",
    "OptimConfig", "PRESETS", "ScheduleConfig", "TrainConfig", "config_from_dict", "config_to_dict",
    "get_preset", "make_train_parser", "save_config",
]


class ConfigError(ValueError):
    """A configuration value that cannot work (named in the message)."""


@dataclass
class ModelConfig:
    """The network: ``ssd_ext.models.build_model(name, num_classes, priors=priors, **kwargs)``."""

    name: str = "ssd_small"
    """Model name in ssd_ext.models' registry (ssd_small, ssd300, ssd512, ...)."""
    priors: str | None = None
    """Prior preset name (ssd_ext.models.PRESETS); None: the model's own default."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments of the model factory (e.g. {"width": 32} for ssd_small)."""
    backbone_weights: str | None = None
    """Optional local file of ImageNet VGG16 weights for ssd300/ssd512 (see models.weights)."""


@dataclass
class DataConfig:
    """Where the images come from and how they are augmented."""

    kind: Literal["synthetic", "voc", "coco"] = "synthetic"
    """synthetic: the procedural shapes set; voc: a VOCdevkit folder; coco: a json + image folder."""
    root: str | None = None
    """voc: the VOCdevkit folder (holding VOC2007/...); unused otherwise."""
    train_split: list[str] = field(default_factory=lambda: ["2007:trainval"])
    """voc: "year:split" entries; coco: [image_dir, annotation_json] of the training set."""
    val_split: list[str] = field(default_factory=lambda: ["2007:test"])
    """voc: "year:split" entries; coco: [image_dir, annotation_json] of the held-out set."""
    class_names: list[str] | None = None
    """voc: the class names (default: the 20 VOC classes)."""
    image_size: int = 160
    """Network input size (square), in pixels."""
    augment: Literal["ssd", "light", "none"] = "ssd"
    """ssd: the paper's full augmentation; light: flip + mild zoom out/crop; none: resize only."""
    expand_max_ratio: float = 4.0
    """Largest zoom-out ratio of the ssd augmentation."""
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    num_workers: int = 0
    """DataLoader worker processes (0: load in the training process)."""
    # The synthetic set (kind="synthetic"): sizes and seeds of the two splits, shapes per image.
    synthetic_train_images: int = 2000
    synthetic_val_images: int = 200
    synthetic_train_seed: int = 0
    synthetic_val_seed: int = 2
    synthetic_source_size: int = 128
    """Side of the synthetic pictures before the resize to image_size."""
    synthetic_max_objects: int = 4
    synthetic_cache: bool = True
    """Render each synthetic picture once and keep it in memory (the set is small)."""


@dataclass
class OptimConfig:
    """The optimiser. Weight decay never applies to norm layers and biases."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    clip_grad_norm: float | None = None
    """Clip the global gradient norm to this value (None: no clipping)."""


@dataclass
class ScheduleConfig:
    """Learning rate schedule, stepped every iteration: linear warmup, then multistep or cosine."""

    epochs: int = 10
    warmup_iters: int = 100
    warmup_factor: float = 0.1
    """The warmup starts at lr * warmup_factor."""
    kind: Literal["multistep", "cosine"] = "multistep"
    milestones: list[float] = field(default_factory=lambda: [2 / 3, 5 / 6])
    """multistep: fractions of the total iterations at which lr is multiplied by gamma."""
    gamma: float = 0.1
    min_lr_factor: float = 0.0
    """cosine: the final lr as a fraction of lr."""


@dataclass
class TrainConfig:
    """The training loop."""

    batch_size: int = 32
    """Images per step on each process."""
    seed: int = 0
    device: str = "auto"
    """auto (cuda when available, else cpu), cpu, cuda, cuda:1, ..."""
    amp: Literal["none", "bf16", "fp16"] = "none"
    """Mixed precision: bf16 (CPU or CUDA) or fp16 with a grad scaler (CUDA only)."""
    channels_last: bool = True
    """channels_last memory format on CUDA (ignored on the CPU)."""
    ema: bool = False
    """Keep an exponential moving average of the weights (evaluated and saved as ema_state)."""
    ema_decay: float = 0.999
    max_nonfinite: int = 10
    """Stop after this many non-finite losses in a row (each one's step is skipped)."""
    num_threads: int | None = None
    """torch.set_num_threads for the run (None: torch's default; restored afterwards)."""
    log_every: int = 10
    """Write a metrics line (and TensorBoard scalars) every this many iterations."""
    progress: bool = True
    """Show a tqdm progress bar."""
    tensorboard: bool = True
    """Write TensorBoard scalars when the tensorboard package is installed."""


@dataclass
class CheckpointConfig:
    """Checkpoints under output_dir/checkpoints."""

    every: int = 500
    """Write one every this many iterations (and always at the end of training)."""
    keep_last: int = 3
    """Keep the last this many periodic checkpoints (best.pt is kept besides)."""


@dataclass
class EvalConfig:
    """Evaluation on the held-out split."""

    every_epochs: int = 0
    """Evaluate every this many epochs during training (0: only at the end)."""
    at_end: bool = True
    score_threshold: float = 0.01
    iou_threshold: float = 0.45
    max_detections: int = 100
    batch_size: int = 64
    num_pictures: int = 8
    """Detection pictures of held-out images written at the end."""


@dataclass
class Config:
    """Everything one training run needs."""

    preset: str = "synthetic_small"
    output_dir: str = "runs/synthetic_small"
    """The run folder: config.json, metrics.jsonl, curves.png, checkpoints/, detections/."""
    overwrite: bool = False
    """Start afresh in an output_dir that already holds checkpoints (deletes them)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --------------------------------------------------------------------------------------------
# Presets


def _synthetic_small() -> Config:
    # Tuned for the goal in docs/BENCHMARKS.md (5 minutes on 2 idle cores, ~600 CPU seconds):
    # light augmentation (zoom out <= 1.5x, flip), AdamW with a short cosine schedule. In the
    # measured 4-epoch comparisons width 48 (not 32), batch 8 (not 16 or 32) and pictures
    # rendered at the input size (160, not 128 upsampled) each learned more per CPU second.
    config = Config(preset="synthetic_small", output_dir="runs/synthetic_small")
    config.model = ModelConfig(name="ssd_small", priors=None, kwargs={"width": 48})
    config.data = DataConfig(kind="synthetic", image_size=160, augment="light", expand_max_ratio=1.5,
                             synthetic_source_size=160)
    config.optim = OptimConfig(name="adamw", lr=3e-3, weight_decay=5e-4, clip_grad_norm=10.0)
    config.schedule = ScheduleConfig(epochs=9, warmup_iters=50, kind="cosine", min_lr_factor=0.02)
    # One intra-op thread plus one loader process: on a 2-core machine (above all a shared one)
    # two intra-op threads spin-wait on each other and train many times slower.
    config.data.num_workers = 1
    config.train = TrainConfig(batch_size=8, ema=False, num_threads=1)
    config.checkpoint = CheckpointConfig(every=200, keep_last=2)
    config.eval = EvalConfig(every_epochs=3)
    return config


def _paper(model: str, size: int, dataset: str) -> Config:
    config = Config(preset=f"{model}_{dataset}", output_dir=f"runs/{model}_{dataset}")
    config.model = ModelConfig(name=model, priors=f"{model}_{dataset}")
    if dataset == "voc":
        # VOC07+12 trainval, 120k iterations of batch 32 with lr 1e-3 dropped at 80k and 100k.
        config.data = DataConfig(kind="voc", root="data/VOCdevkit",
                                 train_split=["2007:trainval", "2012:trainval"],
                                 val_split=["2007:test"], image_size=size, num_workers=4)
        iterations, milestones = 120_000, [80_000 / 120_000, 100_000 / 120_000]
        epochs = round(iterations * 32 / 16_551)
    else:
        # COCO trainval35k, 400k iterations of batch 32 with lr 1e-3 dropped at 280k and 360k.
        config.data = DataConfig(kind="coco",
                                 train_split=["data/coco/train2017",
                                              "data/coco/annotations/instances_train2017.json"],
                                 val_split=["data/coco/val2017",
                                            "data/coco/annotations/instances_val2017.json"],
                                 image_size=size, num_workers=4)
        iterations, milestones = 400_000, [280_000 / 400_000, 360_000 / 400_000]
        epochs = round(iterations * 32 / 117_266)
    config.optim = OptimConfig(name="sgd", lr=1e-3, momentum=0.9, weight_decay=5e-4)
    config.schedule = ScheduleConfig(epochs=epochs, warmup_iters=1000, kind="multistep",
                                     milestones=milestones)
    config.train = TrainConfig(batch_size=32, amp="bf16", ema=False)
    config.checkpoint = CheckpointConfig(every=5000, keep_last=3)
    config.eval = EvalConfig(every_epochs=10, max_detections=200, batch_size=32, score_threshold=0.01)
    return config


def _synthetic_rfb_small() -> Config:
    # The default preset with the small RFB model (rfb_small, its own RFB_SMALL_160 priors).
    config = _synthetic_small()
    config.preset, config.output_dir = "synthetic_rfb_small", "runs/synthetic_rfb_small"
    config.model = ModelConfig(name="rfb_small", priors=None, kwargs=dict(config.model.kwargs))
    return config


def _rfb300_voc() -> Config:
    # RFB Net 300 on VOC07+12 as in the authors' train_RFB.py: SGD lr 4e-3, momentum 0.9,
    # weight decay 5e-4, batch 32, 300 epochs; a linear warmup over the first 5 epochs
    # (5 x 16551 // 32 = 2585 iterations) from lr * 2.5e-4 (their 1e-6 / 4e-3); lr x 0.1 at
    # 150, 200 and 250 epochs; evaluated with score 0.005, NMS 0.45 and 300 detections.
    config = _paper("ssd300", 300, "voc")
    config.preset, config.output_dir = "rfb300_voc", "runs/rfb300_voc"
    config.model = ModelConfig(name="rfb300", priors="rfb300_voc")
    config.optim = OptimConfig(name="sgd", lr=4e-3, momentum=0.9, weight_decay=5e-4)
    config.schedule = ScheduleConfig(epochs=300, warmup_iters=5 * (16_551 // 32), warmup_factor=2.5e-4,
                                     kind="multistep", milestones=[1 / 2, 2 / 3, 5 / 6], gamma=0.1)
    config.train = TrainConfig(batch_size=32, amp="bf16", ema=False)
    config.eval = EvalConfig(every_epochs=10, score_threshold=0.005, iou_threshold=0.45,
                             max_detections=300, batch_size=32)
    return config


PRESETS: dict[str, Any] = {
    "synthetic_small": _synthetic_small,
    "synthetic_rfb_small": _synthetic_rfb_small,
    "rfb300_voc": _rfb300_voc,
    "ssd300_voc": lambda: _paper("ssd300", 300, "voc"),
    "ssd512_voc": lambda: _paper("ssd512", 512, "voc"),
    "ssd300_coco": lambda: _paper("ssd300", 300, "coco"),
    "ssd512_coco": lambda: _paper("ssd512", 512, "coco"),
}


def get_preset(name: str) -> Config:
    """A fresh :class:`Config` of the preset ``name``; ConfigError listing the known ones."""
    try:
        factory = PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
    return factory()


# --------------------------------------------------------------------------------------------
# dict <-> dataclass


def config_to_dict(config: Config) -> dict[str, Any]:
    """The config as plain JSON-able data."""
    return dataclasses.asdict(config)


def _fill(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; "
                          f"known in {cls.__name__}: {', '.join(known)}")
    instance = cls()
    for name, value in values.items():
        default = getattr(instance, name)
        if dataclasses.is_dataclass(default):
            value = _fill(type(default), value, f"{where}{name}.")
        setattr(instance, name, copy.deepcopy(value))
    return instance


def config_from_dict(values: dict[str, Any]) -> Config:
    """Rebuild a :class:`Config` from :func:`config_to_dict`'s output (missing keys: defaults)."""
    return _fill(Config, values, "")


def save_config(config: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as indented JSON."""
    with open(path, "w") as handle:
        json.dump(config_to_dict(config), handle, indent=2)
        handle.write("\n")


# --------------------------------------------------------------------------------------------
# The command line (jsonargparse)


def make_train_parser(defaults: Config, prog: str = "ssd train"):
    """A jsonargparse parser with one option per field of :class:`Config`, defaulting to
    ``defaults``; ``--config`` reads YAML/JSON files. ``--preset`` and ``--resume`` are parsed
    before (see :mod:`ssd_ext.cli`) and only listed here for the help text."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog=prog, description="Train an SSD. Every config field is an option; "
                            "--config reads a YAML/JSON file of the same nesting.",
                            exit_on_error=False)
    parser.add_argument("--preset", default=defaults.preset,
                        help=f"named starting config: {', '.join(PRESETS)} (default synthetic_small)")
    parser.add_argument("--resume", default=None,
                        help="continue a run: a checkpoint file, a run folder, or nothing for "
                             "output_dir's latest checkpoint")
    parser.add_argument("--config", action=ActionConfigFile, help="YAML or JSON file of overrides")
    for f in dataclasses.fields(Config):
        value = getattr(defaults, f.name)
        if f.name == "preset":
            continue
        if dataclasses.is_dataclass(value):
            parser.add_class_arguments(type(value), f.name, default=value)
        else:
            parser.add_argument(f"--{f.name}", type=type(value) if value is not None else str | None,
                                default=value)
    return parser


def parse_train_args(argv: Sequence[str], defaults: Config) -> tuple[Config, str | None]:
    """Parse ``ssd train`` options over ``defaults``; returns ``(config, resume)``."""
    from jsonargparse import ArgumentError

    parser = make_train_parser(defaults)
    try:
        namespace = parser.parse_args(list(argv))
    except ArgumentError as error:
        message = " ".join(str(error).split())
        raise ConfigError(f"{message} (ssd train --help lists the options)") from None
    values = namespace.as_dict()
    values.pop("config", None)
    resume = values.pop("resume", None)
    values.pop("__path__", None)
    return config_from_dict(values), resume


def _check_positive(value: float, name: str) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value}")


def validate(config: Config) -> Config:
    """Cheap consistency checks with messages naming the field; returns ``config``."""
    _check_positive(config.train.batch_size, "train.batch_size")
    _check_positive(config.schedule.epochs, "schedule.epochs")
    _check_positive(config.optim.lr, "optim.lr")
    _check_positive(config.data.image_size, "data.image_size")
    _check_positive(config.checkpoint.every, "checkpoint.every")
    if config.schedule.warmup_iters < 0:
        raise ConfigError(f"schedule.warmup_iters must be >= 0, got {config.schedule.warmup_iters}")
    if any(not 0 < m < 1 for m in config.schedule.milestones):
        raise ConfigError(f"schedule.milestones are fractions in (0, 1), got {config.schedule.milestones}")
    if config.data.kind == "voc" and not config.data.root:
        raise ConfigError("data.root must name the VOCdevkit folder for data.kind=voc")
    if config.data.kind == "coco" and (len(config.data.train_split) != 2 or len(config.data.val_split) != 2):
        raise ConfigError("data.train_split and data.val_split must be [image_dir, annotation_json] "
                          "for data.kind=coco")
    if config.checkpoint.keep_last < 1:
        raise ConfigError(f"checkpoint.keep_last must be >= 1, got {config.checkpoint.keep_last}")
    return config
