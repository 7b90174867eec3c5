"""Ablation studies: train named variants of one config for the same budget and seeds, and
tabulate accuracy, prior count and speed beside the paper's figures.

    ssd ablate --preset synthetic_small --study paper --seeds 3 --out runs/ablation
    ssd ablate --study my_study.yaml --seeds 2 --epochs 4 --out runs/mine --dry-run

A study is data (see :func:`study_from_dict`): a list of named variants, each a set of config
overrides written as dotted keys (``optim.lr: 0.01``, ``model.levels: [0, 1]``), optionally per
model (``model_overrides: {ssd300: {...}}``), restricted to some models (``models: [...]``)
and with the paper's figures for that row (``paper: {table, mAP, boxes, note}``); ``base`` holds
overrides every variant starts from. ``--study paper`` is the packaged SSD paper study
(:mod:`ssd_ext.engine.ablation_studies`).

A run's config is, in order: the preset, the study's ``base``, the user's ``--set`` overrides
and ``--epochs``, the variant's ``overrides``, its ``model_overrides`` for the config's model,
then ``train.seed`` = the seed and the run's own ``output_dir``. Each run trains with
:func:`ssd_ext.engine.train.fit`, which evaluates on the held-out split; the runner then times the
trained model's ``detect`` on held-out images.

Layout of ``--out DIR``::

    DIR/study.json                          the study, seeds and base config as run
    DIR/runs/<variant>/seed<k>/result.json  one per finished or failed run (written atomically)
    DIR/runs/<variant>/seed<k>/train/       the run's training folder (config, metrics, checkpoints)
    DIR/runs/<variant>/seed<k>/train.log    the run's console output
    DIR/results.md, results.json, results.png

Rerunning the same command resumes: finished runs (``status: ok``) are reused, failed or
missing ones are trained (an interrupted run starts over). A finished run whose config differs
from the planned one (another budget, say) stops the study with the differing keys named: use
another ``--out``. A run that fails is recorded with its error, and the study goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import json
import math
import os
import re
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .config import Config, ConfigError, config_from_dict, config_to_dict
from .files import atomic_write

__all__ = [
    "StudyError", "Variant", "Study", "PlannedRun", "TimingOptions", "StudyOptions", "StudyResult",
    "load_study", "study_from_dict", "study_to_dict", "apply_overrides", "parse_override", "plan_study",
    "model_arguments", "count_priors", "measure_inference", "run_study", "dry_run_rows",
    "add_ablate_arguments", "cmd_ablate",
]

RESULT_FILE = "result.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_VARIANT_KEYS = {"name", "description", "overrides", "model_overrides", "models", "paper"}
_STUDY_KEYS = {"name", "description", "reference", "paper_metric", "base", "variants"}
# Keys of a run's config that name where it ran, not what it trained.
_VOLATILE_KEYS = ("output_dir",)


class StudyError(ConfigError):
    """A study file, an override or an output folder that cannot work (named in the message)."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of a study: config overrides (dotted keys) and the paper's figures for it."""

    name: str
    description: str = ""
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    model_overrides: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    models: tuple[str, ...] | None = None
    paper: Mapping[str, Any] | None = None

    def overrides_for(self, model: str) -> dict[str, Any]:
        """The variant's overrides for a config whose model is ``model``."""
        return {**self.overrides, **self.model_overrides.get(model, {})}


@dataclasses.dataclass(frozen=True)
class Study:
    """A named list of variants and the overrides they all start from."""

    name: str
    variants: tuple[Variant, ...]
    description: str = ""
    reference: str = ""
    paper_metric: str = ""
    base: Mapping[str, Any] = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------------------- study files


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and k for k in value):
        raise StudyError(f"{where} must be a mapping of dotted config keys to values, got {value!r}")
    return dict(value)


def _variant_from_dict(data: Any, where: str) -> Variant:
    if not isinstance(data, Mapping):
        raise StudyError(f"{where} must be a mapping with a name and overrides, got {data!r}")
    unknown = sorted(set(data) - _VARIANT_KEYS)
    if unknown:
        raise StudyError(f"{where}: unknown key(s) {unknown}; a variant has {sorted(_VARIANT_KEYS)}")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise StudyError(f"{where}: name must be letters, digits and _ . + - (it names a folder), "
                         f"got {name!r}")
    models = data.get("models")
    if models is not None and (isinstance(models, str) or not all(isinstance(m, str) for m in models)):
        raise StudyError(f"{where} ({name}): models must be a list of model names, got {models!r}")
    per_model = _mapping(data.get("model_overrides"), f"{where} ({name}): model_overrides")
    paper = data.get("paper")
    if paper is not None and not isinstance(paper, Mapping):
        raise StudyError(f"{where} ({name}): paper must be a mapping (table, mAP, boxes, note), "
                         f"got {paper!r}")
    return Variant(
        name=name, description=str(data.get("description", "")),
        overrides=_mapping(data.get("overrides"), f"{where} ({name}): overrides"),
        model_overrides={model: _mapping(values, f"{where} ({name}): model_overrides.{model}")
                         for model, values in per_model.items()},
        models=None if models is None else tuple(models), paper=None if paper is None else dict(paper),
    )


def study_from_dict(data: Any, source: str = "study") -> Study:
    """A :class:`Study` from plain data: a list of variants, or a mapping with ``variants`` and
    optionally ``name``, ``description``, ``reference``, ``paper_metric`` and ``base``.

    Raises:
        StudyError: naming ``source`` and the offending entry.
    """
    if isinstance(data, list):
        data = {"variants": data}
    if not isinstance(data, Mapping):
        raise StudyError(f"{source}: a study is a list of variants or a mapping with 'variants', got "
                         f"{type(data).__name__}")
    unknown = sorted(set(data) - _STUDY_KEYS)
    if unknown:
        raise StudyError(f"{source}: unknown key(s) {unknown}; a study has {sorted(_STUDY_KEYS)}")
    entries = data.get("variants")
    if not isinstance(entries, list) or not entries:
        raise StudyError(f"{source}: 'variants' must be a non-empty list, got {entries!r}")
    variants = tuple(_variant_from_dict(entry, f"{source}: variants[{i}]") for i, entry in enumerate(entries))
    names = [v.name for v in variants]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise StudyError(f"{source}: variant names must be unique; repeated: {duplicates}")
    default_name = Path(source).stem if source != "study" else "study"
    return Study(name=str(data.get("name", default_name)), variants=variants,
                 description=str(data.get("description", "")), reference=str(data.get("reference", "")),
                 paper_metric=str(data.get("paper_metric", "")),
                 base=_mapping(data.get("base"), f"{source}: base"))


def study_to_dict(study: Study) -> dict[str, Any]:
    """The study as plain data (what :func:`study_from_dict` reads back)."""
    variants = []
    for variant in study.variants:
        entry: dict[str, Any] = {"name": variant.name}
        if variant.description:
            entry["description"] = variant.description
        if variant.overrides:
            entry["overrides"] = dict(variant.overrides)
        if variant.model_overrides:
            entry["model_overrides"] = {m: dict(o) for m, o in variant.model_overrides.items()}
        if variant.models is not None:
            entry["models"] = list(variant.models)
        if variant.paper is not None:
            entry["paper"] = dict(variant.paper)
        variants.append(entry)
    return {"name": study.name, "description": study.description, "reference": study.reference,
            "paper_metric": study.paper_metric, "base": dict(study.base), "variants": variants}


def load_study(spec: str | os.PathLike) -> Study:
    """A packaged study by name (``"paper"``) or a ``.yaml``/``.yml``/``.json`` study file."""
    from .ablation_studies import STUDIES

    if isinstance(spec, str) and spec in STUDIES:
        return study_from_dict(copy.deepcopy(STUDIES[spec]), spec)
    path = Path(spec)
    if not path.is_file():
        raise StudyError(f"--study {str(spec)!r} is neither a packaged study ({', '.join(STUDIES)}) "
                         "nor a file")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (ValueError, ImportError) as error:  # json.JSONDecodeError and yaml.YAMLError are ValueErrors
        raise StudyError(f"{path}: not a readable study file: {error}") from None
    except Exception as error:  # noqa: BLE001 - yaml's errors derive from its own base class
        raise StudyError(f"{path}: not a readable study file: {error}") from None
    return study_from_dict(data, str(path))


# ---------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[str, Any]:
    """``"section.field=value"`` -> ``(key, value)``; the value is read as YAML (``3``, ``true``,
    ``[0, 1]``, ``null``; anything else stays a string)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise StudyError(f"--set expects KEY=VALUE (e.g. optim.lr=0.01), got {text!r}")
    import yaml

    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def apply_overrides(values: Mapping[str, Any], overrides: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A copy of the config dict ``values`` with each dotted ``key: value`` of ``overrides`` set.

    Every section on a key's path must exist; the last part may be new (a free-form dict such
    as ``model.kwargs`` takes any key, and :func:`~ssd_ext.engine.config.config_from_dict`
    refuses unknown fields of a dataclass section). Errors name ``where`` and the key.
    """
    result = copy.deepcopy(dict(values))
    for key, value in overrides.items():
        parts = key.split(".") if isinstance(key, str) else [""]
        if not all(parts):
            raise StudyError(f"{where}: override key {key!r} must be dotted names such as 'optim.lr'")
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if not isinstance(child, dict):
                section = ".".join(parts[:depth + 1])
                known = ", ".join(k for k, v in node.items() if isinstance(v, dict))
                raise StudyError(f"{where}: override {key!r}: {section!r} is not a config section "
                                 f"(sections here: {known or 'none'})")
            node = child
        node[parts[-1]] = copy.deepcopy(value)
    return result


def model_arguments(values: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(name, keyword arguments)`` of ``build_model`` for a config dict: ``priors``, the
    model's ``kwargs``, and ``aspect_ratios``/``levels``/``atrous`` when set (not None)."""
    model = values.get("model") or {}
    arguments: dict[str, Any] = {"priors": model.get("priors"), **(model.get("kwargs") or {})}
    for key in ("aspect_ratios", "levels", "atrous"):
        if model.get(key) is not None:
            arguments[key] = model[key]
    return str(model.get("name")), arguments


def count_priors(values: Mapping[str, Any]) -> int:
    """The prior count of the config dict's model (built without memory on the meta device)."""
    from ..models import build_model

    name, arguments = model_arguments(values)
    with torch.device("meta"):
        model = build_model(name, 2, **arguments)
    return int(model.num_priors)


# ---------------------------------------------------------------------------- planning


@dataclasses.dataclass
class PlannedRun:
    """One (variant, seed) of a study.

    Attributes:
        config_dict: the run's config as plain data (None when the overrides do not apply).
        not_applicable: why the variant does not apply to the config's model, or None.
        error: why the config could not be built (bad override), or None.
    """

    variant: Variant
    seed: int
    run_dir: Path
    config_dict: dict[str, Any] | None = None
    config: Config | None = None
    not_applicable: str | None = None
    error: str | None = None

    @property
    def result_path(self) -> Path:
        return self.run_dir / RESULT_FILE


def _base_dict(base: Config, study: Study, user_overrides: Mapping[str, Any], epochs: int | None) -> dict:
    values = apply_overrides(config_to_dict(base), study.base, f"study {study.name!r}: base")
    values = apply_overrides(values, user_overrides, "--set")
    if epochs is not None:
        values = apply_overrides(values, {"schedule.epochs": epochs}, "--epochs")
    return values


def _plan_one(variant: Variant, seed: int, base_values: dict, out_dir: Path) -> PlannedRun:
    planned = PlannedRun(variant, seed, out_dir / "runs" / variant.name / f"seed{seed}")
    model = str((base_values.get("model") or {}).get("name"))
    if variant.models is not None and model not in variant.models:
        planned.not_applicable = f"applies to {', '.join(variant.models)}; the config's model is {model}"
        return planned
    try:
        values = apply_overrides(base_values, variant.overrides_for(model), f"variant {variant.name!r}")
        run_fields = {"train.seed": seed, "output_dir": str(planned.run_dir / "train"), "overwrite": True}
        if isinstance(values.get("train"), dict) and "progress" in values["train"]:
            run_fields["train.progress"] = False  # the study shows one bar over runs
        values = apply_overrides(values, run_fields, f"variant {variant.name!r}")
        planned.config = config_from_dict(values)
        planned.config_dict = config_to_dict(planned.config)
    except (ValueError, TypeError) as error:
        planned.error = f"{type(error).__name__}: {error}"
    return planned


def plan_study(study: Study, base: Config, seeds: Sequence[int], out_dir: str | os.PathLike,
               user_overrides: Mapping[str, Any] | None = None,
               epochs: int | None = None) -> list[PlannedRun]:
    """Every (variant, seed) of ``study`` on the preset config ``base``, in variant order then
    seed order. Overrides that do not fit make that variant's runs carry ``error``; a variant
    restricted to other models carries ``not_applicable``.

    Raises:
        StudyError: a bad seed list, or the study's base, ``user_overrides`` or ``epochs`` do
            not fit the config (these would fail every run).
    """
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise StudyError(f"seeds must be distinct non-negative ints, got {seeds}")
    if epochs is not None and (isinstance(epochs, bool) or int(epochs) != epochs or epochs < 1):
        raise StudyError(f"--epochs must be a positive int, got {epochs!r}")
    base_values = _base_dict(base, study, user_overrides or {}, epochs)
    try:
        config_from_dict(base_values)
    except ValueError as error:
        raise StudyError(f"the study's base or --set overrides do not fit the config: {error}") from None
    out = Path(out_dir)
    return [_plan_one(variant, seed, base_values, out) for variant in study.variants for seed in seeds]


def _comparable(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in _VOLATILE_KEYS}


def _flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(values, Mapping):
        return {prefix: values}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return {k.rstrip("."): v for k, v in flat.items()}


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"key: old -> new"`` for every dotted key whose value differs (volatile keys ignored)."""
    before, after = _flatten(_comparable(old)), _flatten(_comparable(new))
    return [f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in sorted(set(before) | set(after))
            if before.get(k) != after.get(k)]


def read_result(planned: PlannedRun) -> dict[str, Any] | None:
    """The run's saved result, or None when there is none (or it cannot be read: it is redone)."""
    try:
        with open(planned.result_path) as handle:
            result = json.load(handle)
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def stale_runs(planned_runs: Sequence[PlannedRun]) -> list[str]:
    """Finished runs whose saved config differs from the planned one, with the differences."""
    stale = []
    for planned in planned_runs:
        result = read_result(planned)
        if result is None or result.get("status") != "ok" or planned.config_dict is None:
            continue
        differences = config_differences(result.get("config") or {}, planned.config_dict)
        if differences:
            shown = "; ".join(differences[:4]) + (" ..." if len(differences) > 4 else "")
            stale.append(f"{planned.variant.name} seed {planned.seed}: {shown}")
    return stale


# ---------------------------------------------------------------------------- running


@dataclasses.dataclass(frozen=True)
class TimingOptions:
    """How the trained model's ``detect`` is timed on held-out images.

    ``batches`` batches of ``batch_size`` images after ``warmup_batches`` untimed ones, with the
    paper's post-processing (score 0.01, NMS 0.45, top 200); images/s = images / seconds.
    """

    batch_size: int = 8
    warmup_batches: int = 2
    batches: int = 5
    score_threshold: float = 0.01
    iou_threshold: float = 0.45
    max_detections: int = 200


@dataclasses.dataclass(frozen=True)
class StudyOptions:
    """Everything :func:`run_study` needs besides the study and the preset config.

    Attributes:
        seeds: ``train.seed`` of each run of every variant.
        out_dir: the study folder (see the module docstring).
        epochs: ``schedule.epochs`` of every run (None: the preset's).
        overrides: dotted ``key: value`` overrides of every run (``--set``).
        dry_run: plan and count priors; train nothing.
        progress: show a tqdm bar over the runs.
        timing: the inference timing.
        fit: the training function (default :func:`ssd_ext.engine.train.fit`).
    """

    seeds: tuple[int, ...] = (0,)
    out_dir: str | os.PathLike = "runs/ablation"
    epochs: int | None = None
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    dry_run: bool = False
    progress: bool = True
    timing: TimingOptions = TimingOptions()
    fit: Callable[[Config], dict[str, Any]] | None = None


def write_json_atomic(data: Any, path: str | os.PathLike) -> None:
    """JSON to ``path`` through a temporary file, fsync and rename (a reader sees the old file
    or the whole new one). NaN and infinities are written as null."""

    def write(stream: Any) -> None:
        json.dump(_json_safe(data), stream, indent=2, allow_nan=False)
        stream.write("\n")

    atomic_write(path, write, binary=False)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def held_out_images(config: Config, count: int) -> torch.Tensor:
    """The first ``count`` held-out images of ``config`` as the network sees them ``[N, 3, H, W]``
    (cycled when the split is smaller)."""
    from .evaluation import build_eval_dataset

    held_out = build_eval_dataset(config, "test")
    if len(held_out) == 0:
        raise StudyError("the held-out split is empty: no images to time detect on")
    images = [held_out[i % len(held_out)][0] for i in range(count)]
    return torch.stack(images)


def measure_inference(model: torch.nn.Module, images: torch.Tensor, timing: TimingOptions) -> float:
    """Images per second of ``model.detect`` over ``images`` in batches (see
    :class:`TimingOptions`), on the model's device and dtype."""
    parameter = next(model.parameters())
    device = parameter.device
    batches = images.to(device=device, dtype=parameter.dtype).split(timing.batch_size)
    needed = timing.warmup_batches + timing.batches
    batches = [batches[i % len(batches)] for i in range(needed)]

    def run(batch: torch.Tensor) -> None:
        model.detect(batch, score_threshold=timing.score_threshold, iou_threshold=timing.iou_threshold,
                     max_detections=timing.max_detections)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.inference_mode():
        for batch in batches[:timing.warmup_batches]:
            run(batch)
        synchronize()
        started = time.perf_counter()
        for batch in batches[timing.warmup_batches:]:
            run(batch)
        synchronize()
        seconds = time.perf_counter() - started
    timed = sum(len(b) for b in batches[timing.warmup_batches:])
    return timed / max(seconds, 1e-9)


def _train_and_time(planned: PlannedRun, options: StudyOptions) -> dict[str, Any]:
    """Train one run (its console output to ``train.log``) and time its model; the measured
    part of its result."""
    from .train import fit as default_fit

    fit = options.fit or default_fit
    planned.run_dir.mkdir(parents=True, exist_ok=True)
    with open(planned.run_dir / "train.log", "w") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        summary = fit(planned.config)
    model = summary.get("model")
    measured: dict[str, Any] = {
        "metrics": dict(summary.get("metrics") or {}),
        "num_priors": int(model.num_priors) if model is not None else count_priors(planned.config_dict),
        "train_images_per_second": summary.get("train_images_per_second"),
        "train_seconds": summary.get("train_seconds"), "iterations": summary.get("iterations"),
        "train_dir": summary.get("output_dir"),
    }
    threads_before = torch.get_num_threads()
    try:
        threads = (planned.config_dict.get("train") or {}).get("num_threads")
        if threads:
            torch.set_num_threads(int(threads))  # as during training, so the speeds compare
        timing = options.timing
        images = held_out_images(planned.config, timing.batch_size * timing.batches)
        measured["inference_images_per_second"] = measure_inference(model, images, timing)
    except Exception as error:  # noqa: BLE001 - the training result stands; the timing says why not
        measured["inference_images_per_second"] = None
        measured["inference_error"] = f"{type(error).__name__}: {error}"
    finally:
        torch.set_num_threads(threads_before)
    return measured


def execute_run(planned: PlannedRun, options: StudyOptions) -> dict[str, Any]:
    """Train, evaluate and time one planned run and save its result (``status`` ``"ok"`` or
    ``"failed"`` with the error); returns the result. An exception of the run is caught and
    recorded (its traceback in ``train.log``); KeyboardInterrupt stops the study."""
    result: dict[str, Any] = {"variant": planned.variant.name, "seed": planned.seed,
                              "config": planned.config_dict}
    started = time.perf_counter()
    try:
        if planned.error is not None:
            raise StudyError(planned.error)
        result.update(_train_and_time(planned, options))
        result["status"] = "ok"
    except Exception as error:  # noqa: BLE001 - one failed run must not stop the study
        result["status"] = "failed"
        result["error"] = f"{type(error).__name__}: {error}" if planned.error is None else planned.error
        planned.run_dir.mkdir(parents=True, exist_ok=True)
        with open(planned.run_dir / "train.log", "a") as log:
            log.write(traceback.format_exc())
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    result["wall_seconds"] = time.perf_counter() - started
    result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json_atomic(result, planned.result_path)
    return result


def _run_status(planned: PlannedRun) -> str:
    if planned.not_applicable is not None:
        return "n/a"
    if planned.error is not None:
        return "invalid"
    result = read_result(planned)
    if result is None:
        return "pending"
    return "done" if result.get("status") == "ok" else "failed before (rerun)"


def dry_run_rows(planned_runs: Sequence[PlannedRun]) -> list[dict[str, Any]]:
    """One row per variant: seeds, each run's status, the prior count (or why none) and the
    overrides, for ``--dry-run``."""
    rows: dict[str, dict[str, Any]] = {}
    for planned in planned_runs:
        row = rows.get(planned.variant.name)
        if row is None:
            row = {"variant": planned.variant.name, "runs": [], "overrides": {}, "num_priors": None,
                   "note": ""}
            rows[planned.variant.name] = row
            if planned.not_applicable is not None:
                row["note"] = planned.not_applicable
            elif planned.error is not None:
                row["note"] = planned.error
            else:
                model = str(planned.config_dict["model"]["name"])
                row["overrides"] = planned.variant.overrides_for(model)
                try:
                    row["num_priors"] = count_priors(planned.config_dict)
                except (ValueError, TypeError) as error:
                    row["note"] = f"{type(error).__name__}: {error}"
        row["runs"].append(f"seed {planned.seed}: {_run_status(planned)}")
    return list(rows.values())


@dataclasses.dataclass
class StudyResult:
    """What :func:`run_study` did: every run's result and the report files (None for a dry run)."""

    planned: list[PlannedRun]
    results: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    report: dict[str, Path] | None = None


def _run_all(planned_runs: Sequence[PlannedRun], options: StudyOptions) -> list[dict[str, Any]]:
    from tqdm import tqdm

    results = []
    bar = tqdm(total=len(planned_runs), desc="ablation", unit="run", disable=not options.progress,
               dynamic_ncols=True)
    try:
        for planned in planned_runs:
            bar.set_postfix_str(f"{planned.variant.name} seed {planned.seed}")
            if planned.not_applicable is None:
                previous = read_result(planned)
                if previous is not None and previous.get("status") == "ok":
                    results.append(previous)  # finished before: reused
                else:
                    results.append(execute_run(planned, options))
            bar.update(1)
    finally:
        bar.close()
    return results


def run_study(study: Study, base: Config, options: StudyOptions) -> StudyResult:
    """Run (or, with ``options.dry_run``, plan) every variant of ``study`` on the preset config
    ``base`` for every seed, then write the report (``results.md``, ``results.json``,
    ``results.png``) into ``options.out_dir``.

    Raises:
        StudyError: bad seeds/epochs/overrides, or finished runs in ``out_dir`` whose config
            differs from the planned one (nothing is trained then).
    """
    from .ablation_report import summarize, write_report

    out = Path(options.out_dir)
    planned = plan_study(study, base, options.seeds, out, options.overrides, options.epochs)
    if options.dry_run:
        return StudyResult(planned, [], dry_run_rows(planned))
    stale = stale_runs(planned)
    if stale:
        raise StudyError(f"{out} holds finished runs trained with another config; use another --out (or "
                         f"delete those run folders) to run this one: " + " | ".join(stale))
    write_json_atomic({"study": study_to_dict(study), "seeds": list(options.seeds), "epochs": options.epochs,
                       "overrides": dict(options.overrides), "preset": base.preset}, out / "study.json")
    results = _run_all(planned, options)
    rows = summarize(study, planned, results)
    report = write_report(study, rows, out, _report_header(study, base, planned, options))
    return StudyResult(planned, results, rows, report)


def _report_header(study: Study, base: Config, planned: Sequence[PlannedRun], options: StudyOptions) -> dict:
    configured = next((p.config_dict for p in planned if p.config_dict is not None), None) or {}
    return {"study": study.name, "preset": base.preset, "seeds": list(options.seeds),
            "model": (configured.get("model") or {}).get("name"),
            "epochs": (configured.get("schedule") or {}).get("epochs"),
            "reference": study.reference, "paper_metric": study.paper_metric,
            "timing": dataclasses.asdict(options.timing)}


# ---------------------------------------------------------------------------- command line


def parse_seeds(text: str) -> tuple[int, ...]:
    """``--seeds``: one number N means seeds 0..N-1; a comma list (``0,3,7`` or ``5,``) names them."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        if len(parts) == 1:
            count = int(parts[0])
            if count < 1:
                raise ValueError
            return tuple(range(count))
        return tuple(int(p) for p in parts if p)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes a count (3) or a comma list of seeds (0,3,7), "
                                         f"got {text!r}") from None


def add_ablate_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``ssd ablate``."""
    parser.add_argument("--preset", default="synthetic_small", help="the training preset every variant "
                        "starts from (default synthetic_small)")
    parser.add_argument("--study", default="paper", help="a packaged study (paper) or a .yaml/.json file "
                        "of named variants with config overrides (default paper)")
    parser.add_argument("--seeds", type=parse_seeds, default=(0,), help="N (seeds 0..N-1) or a comma list "
                        "of train.seed values (default 1)")
    parser.add_argument("--out", help="the study folder; rerunning with the same folder resumes")
    parser.add_argument("--epochs", type=int, help="schedule.epochs of every run (default: the preset's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a dotted config override for every run, e.g. --set "
                        "data.synthetic.train_images=500 (repeatable; the value is read as YAML)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the runs and prior counts; train nothing")
    parser.add_argument("--print-study", action="store_true", help="print the study as YAML and exit")
    parser.add_argument("--timing-batches", type=int, default=TimingOptions.batches,
                        help="timed detect batches per run (default %(default)s)")
    parser.add_argument("--timing-batch-size", type=int, default=TimingOptions.batch_size,
                        help="images per detect batch (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _print_dry_run(study: Study, rows: Sequence[Mapping[str, Any]], options: StudyOptions) -> None:
    print(f"study {study.name}: {len(study.variants)} variants x {len(options.seeds)} seed(s), "
          f"out {options.out_dir}")
    width = max(len(row["variant"]) for row in rows)
    for row in rows:
        priors = "-" if row["num_priors"] is None else str(row["num_priors"])
        detail = row["note"] or json.dumps(row["overrides"])
        print(f"  {row['variant']:<{width}}  priors {priors:>6}  {'; '.join(row['runs'])}  {detail}")


def cmd_ablate(args: argparse.Namespace) -> int:
    """``ssd ablate``: run a study and print where its report is. Exit status 0 when every run
    finished, 1 when some failed (they are in the report); StudyError (a ConfigError) for wrong
    input."""
    from .presets import get_preset

    study = load_study(args.study)
    if args.print_study:
        import yaml

        print(yaml.safe_dump(study_to_dict(study), sort_keys=False), end="")
        return 0
    if not args.out:
        raise StudyError("ssd ablate needs --out DIR (the study folder)")
    if args.timing_batches < 1 or args.timing_batch_size < 1:
        raise StudyError("--timing-batches and --timing-batch-size must be >= 1")
    options = StudyOptions(
        seeds=tuple(args.seeds), out_dir=args.out, epochs=args.epochs,
        overrides=dict(parse_override(text) for text in args.overrides), dry_run=args.dry_run,
        progress=not args.no_progress,
        timing=TimingOptions(batch_size=args.timing_batch_size, batches=args.timing_batches),
    )
    result = run_study(study, get_preset(args.preset), options)
    if args.dry_run:
        _print_dry_run(study, result.rows, options)
        return 0
    print(result.report["markdown"].read_text(), end="")
    print(f"report: {', '.join(str(p) for p in result.report.values())}")
    failed = [r for r in result.results if r.get("status") != "ok"]
    if failed:
        print(f"{len(failed)} run(s) failed; see the report's 'Failed runs'")
    return 1 if failed else 0
