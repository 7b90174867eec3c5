"""Checkpoints: the schema (written and read only here), atomic writes, safe loading, random
states, models rebuilt from a file, and the files of a run's ``checkpoints/`` folder.

Format (a dict saved with ``torch.save``; only tensors, numbers, strings, lists, dicts and
``None``, so ``torch.load(weights_only=True)`` reads it without running any code)::

    {"format": "ssd_ext.checkpoint", "format_version": 1, "ssd_ext_version": str,
     "model": {"name": str, "num_classes": int, "kwargs": dict, "design": dict},
         # build_model(name, num_classes, priors=prior_preset, **design, **kwargs)
     "class_names": list[str],            # [0] is "__background__"
     "prior_preset": str | None,
     "input": {"size": [h, w], "mean": [r, g, b], "std": [r, g, b]},  # mean/std on the [0, 1] scale
     "model_state", "ema_state" | None, "optimizer_state", "scheduler_state", "scaler_state",
     "iteration": int, "epoch": int, "loop": {"nonfinite_total", "nonfinite_streak", "best_ap"},
     "rng": {...}, "config": dict, "metrics": {"val": dict, "test": dict}}

Writes go through :func:`ssd_ext.engine.files.atomic_write`: a process killed at any moment
leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import __version__
from .config import Config, config_from_dict, config_to_dict
from .files import atomic_write
from .loop import LoopState, TrainingParts
from .wrappers import unwrap_model

__all__ = [
    "CHECKPOINT_FORMAT", "CheckpointError", "atomic_save", "capture_rng", "config_of_checkpoint",
    "latest_checkpoint", "list_checkpoints", "load_checkpoint", "model_from_checkpoint", "prune_checkpoints",
    "resolve_resume", "restore_rng", "restore_training", "training_checkpoint",
]

CHECKPOINT_FORMAT = "ssd_ext.checkpoint"
FORMAT_VERSION = 1
_PERIODIC = re.compile(r"^checkpoint_(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint file that is missing, truncated, foreign or does not fit the model."""


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` through a temporary file, fsync and rename (:mod:`.files`)."""
    atomic_write(path, lambda stream: torch.save(obj, stream))


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read an ssd_ext checkpoint with ``weights_only=True``.

    Raises :class:`CheckpointError` with one clear message when the file is missing, truncated
    or corrupt, holds anything but plain data, or is not an ssd_ext checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist or is not a file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: it is truncated or not a torch "
                              "checkpoint file at all")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(f"checkpoint {str(path)!r} holds objects other than plain data and tensors"
                              f"{what}; refusing to load it, since unpickling them could run code") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read (truncated or not a torch file): "
                              f"{first}") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an ssd_ext checkpoint (no 'format': "
                              f"{CHECKPOINT_FORMAT!r} entry); it may be a bare state_dict or another "
                              "program's file")
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {str(path)!r} has format version {data['format_version']}, newer "
                              f"than this ssd_ext reads ({FORMAT_VERSION}); upgrade ssd_ext")
    for key in ("model", "model_state", "class_names", "input"):
        if key not in data:
            raise CheckpointError(f"checkpoint {str(path)!r} lacks its {key!r} entry")
    return data


def model_from_checkpoint(ckpt_or_path: dict[str, Any] | str | os.PathLike, use_ema: bool = True,
                          device: torch.device | str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build the checkpoint's model, load its weights (the EMA ones when present and
    ``use_ema``), move it to ``device`` and put it in eval mode. Returns ``(model, checkpoint)``."""
    from ..models import build_model

    ckpt = ckpt_or_path if isinstance(ckpt_or_path, dict) else load_checkpoint(ckpt_or_path)
    spec = ckpt["model"]
    try:
        model = build_model(spec["name"], int(spec["num_classes"]), priors=ckpt.get("prior_preset"),
                            **dict(spec.get("design") or {}), **dict(spec.get("kwargs") or {}))
    except (ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"cannot build the checkpoint's model {spec.get('name')!r}: {error}") from None
    state = ckpt.get("ema_state") if use_ema and ckpt.get("ema_state") is not None else ckpt["model_state"]
    load_model_state(model, state, f"model {spec['name']!r}")
    if device is not None:
        model.to(device)
    model.eval()
    return model, ckpt


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``model.load_state_dict(state)`` with one clear CheckpointError when they do not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            key = wrong[0]
            parts.append(f"{len(wrong)} of another shape (e.g. {key}: {tuple(state[key].shape)} in the file, "
                         f"{tuple(own[key].shape)} in the model)")
        raise CheckpointError(f"the checkpoint's weights do not fit {what}: " + "; ".join(parts)
                              + " - is it a checkpoint of another model?")
    model.load_state_dict(state)


# --------------------------------------------------------------------------------------------
# random states


def capture_rng() -> dict[str, Any]:
    """Every global random state the training loop draws from, as plain data."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_to_plain(np.random.get_state()),
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng` captured."""
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(_numpy_state_from_plain(state["numpy"]))
    random.setstate(_python_state_from_plain(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


def _numpy_state_to_plain(state: tuple) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = state
    return {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _numpy_state_from_plain(state: dict[str, Any]) -> tuple:
    keys = state["keys"].numpy().astype(np.uint32)
    return (state["kind"], keys, state["pos"], state["has_gauss"], state["cached"])


def _python_state_to_plain(state: tuple) -> dict[str, Any]:
    version, internal, gauss = state
    return {"version": version, "internal": list(internal), "gauss": gauss}


def _python_state_from_plain(state: dict[str, Any]) -> tuple:
    return (state["version"], tuple(state["internal"]), state["gauss"])


# --------------------------------------------------------------------------------------------
# files of a run


def list_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """``checkpoint_<iteration>.pt`` files of ``folder``, oldest first (temporary files ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _PERIODIC.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The newest periodic checkpoint of ``folder`` (or ``last.pt``), None when there is none."""
    found = list_checkpoints(folder)
    if found:
        return found[-1]
    last = Path(folder) / "last.pt"
    return last if last.is_file() else None


def prune_checkpoints(folder: str | os.PathLike, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` periodic checkpoints (and stale temporary files)."""
    found = list_checkpoints(folder)
    stale = [p for p in Path(folder).glob(".*.pt.*.tmp")] if Path(folder).is_dir() else []
    for old in [*(found[:-keep_last] if keep_last > 0 else found), *stale]:
        with contextlib.suppress(OSError):
            old.unlink()


def resolve_resume(resume: str | os.PathLike, output_dir: str | os.PathLike) -> Path:
    """The checkpoint file ``--resume`` names: a file, a run folder (its newest checkpoint), or
    "auto"/"" for ``output_dir``'s newest."""
    target = Path(output_dir) if str(resume) in ("auto", "") else Path(resume)
    if target.is_dir():
        folder = target / "checkpoints" if (target / "checkpoints").is_dir() else target
        found = latest_checkpoint(folder)
        if found is None:
            raise CheckpointError(f"no checkpoint to resume from in {str(folder)!r}")
        return found
    if not target.exists():
        raise CheckpointError(f"--resume: {str(target)!r} does not exist")
    return target


# --------------------------------------------------------------------------------------------
# the training checkpoint: schema


def training_checkpoint(config: Config, parts: TrainingParts, class_names: tuple[str, ...], state: LoopState,
                        metrics: dict[str, Any]) -> dict[str, Any]:
    """Everything a run needs to go on, and a model needs to be used alone (the module docstring
    lists the keys). ``metrics``: the last ``{"val": ..., "test": ...}`` evaluations."""
    net = unwrap_model(parts.model)
    ema = parts.ema
    return {
        "format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, "ssd_ext_version": __version__,
        "model": {"name": config.model.name, "num_classes": len(class_names),
                  "kwargs": dict(config.model.kwargs), "design": config.model.design()},
        "class_names": list(class_names),
        "prior_preset": config.model.priors,
        "input": {"size": list(getattr(net, "image_size", (config.data.image_size,) * 2)),
                  "mean": list(config.data.mean), "std": list(config.data.std)},
        "model_state": net.state_dict(),
        "ema_state": unwrap_model(ema).state_dict() if ema is not None else None,
        "ema_averaging_state": ema.state_dict() if ema is not None else None,
        "optimizer_state": parts.optimizer.state_dict(),
        "scheduler_state": parts.scheduler.state_dict() if parts.scheduler is not None else None,
        "scaler_state": parts.scaler.state_dict() if parts.scaler is not None else None,
        "iteration": state.iteration, "epoch": state.epoch,
        "loop": {"nonfinite_total": state.nonfinite_total, "nonfinite_streak": state.nonfinite_streak,
                 "best_ap": state.best_ap},
        "rng": capture_rng(),
        "config": config_to_dict(config),
        "metrics": metrics,
    }


def restore_training(ckpt: dict[str, Any], parts: TrainingParts, what: str) -> LoopState:
    """Load a :func:`training_checkpoint` into ``parts`` (weights, optimiser, scheduler, scaler,
    EMA) and the global random states; returns the loop's counters. CheckpointError when the
    file does not fit ``what`` (a model description)."""
    load_model_state(unwrap_model(parts.model), ckpt["model_state"], what)
    try:
        parts.optimizer.load_state_dict(ckpt["optimizer_state"])
        if parts.scheduler is not None:
            parts.scheduler.load_state_dict(ckpt["scheduler_state"])
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"the checkpoint's optimizer does not fit this config ({error})") from None
    if parts.scaler is not None and ckpt.get("scaler_state"):
        parts.scaler.load_state_dict(ckpt["scaler_state"])
    if parts.ema is not None and ckpt.get("ema_averaging_state") is not None:
        parts.ema.load_state_dict(ckpt["ema_averaging_state"])
    restore_rng(ckpt["rng"])
    return LoopState(iteration=int(ckpt["iteration"]), epoch=int(ckpt["epoch"]), **ckpt.get("loop", {}))


def config_of_checkpoint(path: str | os.PathLike) -> Config:
    """The :class:`~ssd_ext.engine.config.Config` a checkpoint was trained with."""
    return config_from_dict(load_checkpoint(path)["config"])
