"""The typed training configuration: one dataclass per concern, plain data throughout.

A :class:`Config` holds only numbers, strings, lists, dicts and nested dataclasses, so it is
saved as JSON beside every run (``<run>/config.json``) and inside every checkpoint, and rebuilt
with :func:`config_from_dict`. The data section is :class:`ssd_ext.data.config.DataConfig`
(datasets, splits, augmentation switches); everything else is defined here. Named presets are
in :mod:`ssd_ext.engine.presets`; the ``ssd train`` command line is derived from these
dataclasses by jsonargparse (:func:`parse_train_args`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..data.config import DataConfig, validate_data
from ..errors import ConfigError

__all__ = [
    "CheckpointConfig", "Config", "ConfigError", "DataConfig", "EvalConfig", "ModelConfig", "OptimConfig",
    "ScheduleConfig", "TrainConfig", "config_from_dict", "config_to_dict", "make_train_parser",
    "parse_train_args", "save_config", "validate",
]


@dataclass
class ModelConfig:
    """The network: ``ssd_ext.models.build_model(name, num_classes, priors=priors, **kwargs)``."""

    name: str = "ssd_small"
    """Model name in ssd_ext.models' registry (ssd_small, ssd300, ssd512, rfb300, ...)."""
    priors: str | None = None
    """Prior preset name (ssd_ext.models.PRESETS); None: the model's own default."""
    aspect_ratios: list[list[float]] | None = None
    """Aspect ratios of every prediction level (each r adds an r:1 and a 1:r box); None: the priors'."""
    levels: list[int] | None = None
    """Which of the model's feature levels predict (indices); None: all of them."""
    atrous: bool | None = None
    """VGG models: dilated fc6 (the paper's) or the plain fc6/fc7 layout; None: the model's own."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments of the model factory (e.g. {"width": 32} for ssd_small)."""
    backbone_weights: str | None = None
    """Optional local file of ImageNet VGG16 weights for ssd300/ssd512 (see models.weights)."""

    def design(self) -> dict[str, Any]:
        """The design switches that are set, as ``build_model`` keyword arguments."""
        switches = {"aspect_ratios": self.aspect_ratios, "levels": self.levels, "atrous": self.atrous}
        return {name: value for name, value in switches.items() if value is not None}


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
    """channels_last memory format on CUDA (ignored on the CPU, where it slows training)."""
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
    """Evaluation: the validation split during training (selects best.pt), the test split at the end."""

    every_epochs: int = 0
    """Evaluate on the validation split every this many epochs (0: never during training)."""
    at_end: bool = True
    """Evaluate on the test split when training ends (the reported held-out metrics)."""
    score_threshold: float = 0.01
    iou_threshold: float = 0.45
    max_detections: int = 100
    batch_size: int = 64
    num_pictures: int = 8
    """Detection pictures of test images written at the end."""


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
# dict <-> dataclass


def config_to_dict(config: Config) -> dict[str, Any]:
    """The config as plain JSON-able data."""
    return dataclasses.asdict(config)


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass a field's type names, directly or as one arm of ``X | None``."""
    if dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        found = [arm for arm in typing.get_args(hint) if dataclasses.is_dataclass(arm)]
        return found[0] if len(found) == 1 else None
    return None


def _fill(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where.rstrip('.') or 'config'} must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; "
                          f"known in {cls.__name__}: {', '.join(known)}")
    instance = cls()
    for name, value in values.items():
        nested = _dataclass_of(hints[name])
        if nested is not None and value is not None:
            value = _fill(nested, value, f"{where}{name}.")
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

    from .presets import PRESETS

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
    for extra in ("config", "__path__"):
        values.pop(extra, None)
    resume = values.pop("resume", None)
    values["preset"] = values.get("preset", defaults.preset)
    return config_from_dict(values), resume


# --------------------------------------------------------------------------------------------
# validation


def _check_positive(value: float, name: str) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value}")


def _check_schedule(schedule: ScheduleConfig) -> None:
    _check_positive(schedule.epochs, "schedule.epochs")
    if schedule.warmup_iters < 0:
        raise ConfigError(f"schedule.warmup_iters must be >= 0, got {schedule.warmup_iters}")
    if any(not 0 < m < 1 for m in schedule.milestones):
        raise ConfigError(f"schedule.milestones are fractions in (0, 1), got {schedule.milestones}")


def validate(config: Config) -> Config:
    """Cheap consistency checks with messages naming the field; returns ``config``."""
    _check_positive(config.train.batch_size, "train.batch_size")
    _check_positive(config.optim.lr, "optim.lr")
    _check_positive(config.checkpoint.every, "checkpoint.every")
    _check_schedule(config.schedule)
    if config.checkpoint.keep_last < 1:
        raise ConfigError(f"checkpoint.keep_last must be >= 1, got {config.checkpoint.keep_last}")
    if config.eval.every_epochs < 0:
        raise ConfigError(f"eval.every_epochs must be >= 0, got {config.eval.every_epochs}")
    validate_data(config.data)
    return config
