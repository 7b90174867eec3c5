"""End-to-end benchmark: a whole SSD training step and inference with post-processing, ours
against torchvision's ``ssd300_vgg16`` (its own loss and post-processing), and ours with the
``ssd_reference`` ops swapped in through ``ssd_ext.ops.use_backend("reference")``.

    python -m benchmarks.bench_e2e --device {cpu,cuda} [--amp] [--quick] [--compile] --out DIR

What is timed (every figure a median over repeats after warm-up, CUDA synchronised; the
implementations run interleaved, one repeat of each in turn, so that load on a shared
machine hits them alike). On CUDA the headline figures come from whole runs and the breakdown
from separate staged runs; on the CPU (``--whole-runs auto``) only staged runs are made and
their total is the headline, since a synchronisation between stages costs nothing there:

- data: batches per second of a real loader (``make_loader`` with its default worker count)
  over ``SyntheticShapes`` with the paper's ``train_transform``, measured on its own. The
  training steps then reuse a few prefetched batches, so the step figures exclude data.
- training step (forward, loss with matching and mining, backward, SGD step) at the same batch
  and input size: ``ssd_ext`` (our model + ``MultiBoxLoss`` on the kernels), ``ssd_ext
  (reference ops)`` (the same with the reference ops) and ``torchvision`` (``model(images,
  targets)`` in train mode, its own loss). The headline images/s comes from whole steps; the
  breakdown from separate staged steps with a synchronisation between stages:
  preprocess (torchvision's ``GeneralizedRCNNTransform``: resize + normalise; ours normalises
  in the data pipeline, so 0), forward (backbone + heads), matching (ours: ``ops.match``;
  torchvision: anchor generation + per-image ``box_iou`` + ``SSDMatcher``), loss + mining
  (ours: the rest of ``MultiBoxLoss``, i.e. the loss time minus a separate timing of its
  ``ops.match`` call on the same inputs; torchvision: ``SSD.compute_loss``, which encodes
  the targets, sorts for the hard negatives and sums the losses), backward, optimizer.
  torchvision's stages are its own submodules called in the order of its ``forward``. The
  SSD-specific share is (matching + loss and mining) / the staged step.
- inference at B in {1, 8, 32}: ours ``model.detect`` (forward + ``ops.detect`` + scaling to
  pixels), the same on the reference ops, torchvision's eval-mode ``model(images)`` (transform,
  forward, anchors, ``postprocess_detections``, ``transform.postprocess``); the
  post-processing share from staged runs (ours: ``ops.detect``; torchvision: anchors +
  ``postprocess_detections`` + ``transform.postprocess``). The models are randomly initialised,
  so nearly every prior passes the 0.01 score threshold in every class: the post-processing
  works at its worst case (400 candidates per class), for both.
- ``--compile``: our training step and inference with ``torch.compile(model)`` (the network;
  the loss and the post-processing stay eager, because the ground truth's size changes every
  batch), against eager, with the first call's time (the compilation) reported. On the CPU it
  runs on ``ssd_small`` (compiling SSD300's training graph takes minutes on 2 cores).

Writes ``e2e.json``, ``e2e.md`` and ``e2e.png`` into ``--out``. Both models have 21 classes
(VOC's) and the same 300x300 input; ``--model ssdlite320_mobilenet_v3_large`` compares with
torchvision's model of that name at 320x320 (given ops.detect's default thresholds, which it
does not ship with); ``--model ssd_small`` (160 px) has no torchvision counterpart, so its
torchvision rows are skipped with that reason. ``benchmarks/bench_ssdlite.py`` compares the
SSDLite pair as each ships, with the same weights, and torchvision's after ``accelerate()``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "python")]

import ssd_ext  # noqa: E402
from ssd_ext import ops  # noqa: E402
from ssd_ext.bench.harness import cpu_name  # noqa: E402
from ssd_ext.data import SyntheticShapes, make_loader, train_transform  # noqa: E402
from ssd_ext.engine import MultiBoxLoss  # noqa: E402
from ssd_ext.models import build_model  # noqa: E402

NUM_CLASSES = 21
# Our models with a torchvision counterpart (random weights, NUM_CLASSES classes). Both run at
# ops.detect's default thresholds (score 0.01, NMS 0.45, 400 candidates, 200 detections), which
# are ssd300_vgg16's own; ssdlite320 ships with 0.001 / 0.55 / 300 / 300 and is given these.
TORCHVISION_COUNTERPARTS = {"ssd300": "ssd300_vgg16",
                            "ssdlite320_mobilenet_v3_large": "ssdlite320_mobilenet_v3_large"}
# The reference ops' Python loops take seconds per large batch: they get at most this many
# timed repeats (enough for a median of their much larger times).
REFERENCE_MAX_REPEATS = 3
TRAIN_STAGES = ("preprocess", "forward", "matching", "loss_mining", "backward", "optimizer")
INFER_STAGES = ("preprocess", "forward", "postprocess")


# ----------------------------------------------------------------------------- configuration

@dataclass
class Config:
    device: str
    amp: bool
    quick: bool
    compile: bool
    model: str
    train_batch: int
    train_repeats: int
    infer_batches: tuple[int, ...]
    infer_repeats: int
    data_batches: int
    warmup: int
    torchvision: bool
    reference: bool
    whole_runs: bool
    compile_model: str
    out: Path


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--amp", action="store_true",
                        help="autocast (float16 on CUDA with a GradScaler, bfloat16 on the CPU)")
    parser.add_argument("--quick", action="store_true", help="a short run (a few minutes on 2 CPU cores)")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile of our model")
    parser.add_argument("--model", default="ssd300",
                        choices=["ssd300", "ssd_small", "ssdlite320_mobilenet_v3_large"],
                        help="our model (torchvision's counterparts: ssd300_vgg16, "
                             "ssdlite320_mobilenet_v3_large)")
    parser.add_argument("--train-batch", type=int, default=None, help="training batch size")
    parser.add_argument("--train-repeats", type=int, default=None,
                        help="timed training steps per implementation")
    parser.add_argument("--infer-batches", default=None, help="comma-separated inference batch sizes")
    parser.add_argument("--infer-repeats", type=int, default=None, help="timed inference runs per size")
    parser.add_argument("--data-batches", type=int, default=None, help="loader batches timed")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before timing")
    parser.add_argument("--no-torchvision", action="store_true", help="skip torchvision's rows")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference-ops rows")
    parser.add_argument("--whole-runs", choices=["auto", "on", "off"], default="auto",
                        help="also time whole (unstaged) runs for the headline figure; auto: on CUDA "
                             "only (on the CPU a synchronisation costs nothing, and the staged runs' "
                             "total is the step time)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    gpu = args.device == "cuda"
    if gpu and not (torch.cuda.is_available() and ssd_ext._C.cuda_compiled()):
        parser.error("--device cuda: no CUDA device, or ssd_ext was built without CUDA")
    # Defaults per (device, quick). On a 2-core CPU shared with other jobs one SSD300 image takes
    # seconds forward+backward, so the CPU run stops at B=8 for inference (ask for 32 with
    # --infer-batches 1,8,32) and times few repeats.
    if gpu:
        defaults = (32, 20, "1,8,32", 20, 20) if not args.quick else (32, 8, "1,8,32", 8, 8)
    else:
        defaults = (2, 3, "1,8", 2, 6) if not args.quick else (2, 2, "1,2", 1, 3)
    train_batch = defaults[0] if args.train_batch is None else args.train_batch
    train_repeats = defaults[1] if args.train_repeats is None else args.train_repeats
    try:
        infer_batches = tuple(int(b) for b in (args.infer_batches or defaults[2]).split(","))
    except ValueError:
        parser.error(f"--infer-batches must be comma-separated integers, got {args.infer_batches!r}")
    for name, value in (("--train-batch", train_batch), ("--train-repeats", train_repeats),
                        *(("--infer-batches", b) for b in infer_batches)):
        if value < 1:
            parser.error(f"{name} must be >= 1, got {value}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    return Config(
        device=args.device, amp=args.amp, quick=args.quick, compile=args.compile, model=args.model,
        train_batch=train_batch, train_repeats=train_repeats, infer_batches=infer_batches,
        infer_repeats=args.infer_repeats or defaults[3], data_batches=args.data_batches or defaults[4],
        warmup=args.warmup, torchvision=not args.no_torchvision, reference=not args.no_reference,
        whole_runs=args.whole_runs == "on" or (args.whole_runs == "auto" and gpu),
        compile_model="ssd_small" if not gpu else args.model, out=args.out,
    )


# ----------------------------------------------------------------------------- timing helpers

def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class Stopwatch:
    """Wall time of named stages of one run, synchronising the device around each."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        yield
        synchronize(self.device)
        self.times[name] = self.times.get(name, 0.0) + (time.perf_counter() - start) * 1e3


def timed(fn: Callable[[], object], device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3


def autocast(config: Config) -> contextlib.AbstractContextManager:
    if not config.amp:
        return contextlib.nullcontext()
    dtype = torch.float16 if config.device == "cuda" else torch.bfloat16
    return torch.autocast(config.device, dtype=dtype)


def progress(message: str) -> None:
    print(f"[bench_e2e {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ----------------------------------------------------------------------------- machine

def machine_description(config: Config) -> dict[str, object]:
    cpu = cpu_name()
    info: dict[str, object] = {
        "device": config.device,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "ssd_ext": ssd_ext.__version__,
        "python": platform.python_version(),
        "amp": config.amp,
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        info["torchvision"] = None
    if config.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    with contextlib.suppress(OSError):
        info["load_average_start"] = [round(v, 2) for v in os.getloadavg()]
    return info


def torchvision_unavailable(config: Config, model_name: str) -> str | None:
    """Why torchvision's rows cannot run, or None."""
    if not config.torchvision:
        return "--no-torchvision"
    if model_name not in TORCHVISION_COUNTERPARTS:
        return (f"torchvision has no counterpart of {model_name} (compared: "
                f"{', '.join(TORCHVISION_COUNTERPARTS)})")
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return "torchvision is not installed"
    return None


# ----------------------------------------------------------------------------- data

def image_size(model_name: str) -> int:
    return {"ssd_small": 160, "ssdlite320_mobilenet_v3_large": 320}.get(model_name, 300)


def measure_data(config: Config, batch: int, size: int) -> tuple[dict[str, object], list]:
    """Time a real loader; return its row and a few batches to reuse in the steps."""
    dataset = SyntheticShapes(num_images=batch * (config.data_batches + 2), image_size=size,
                              transform=train_transform(size), seed=0)
    loader = make_loader(dataset, batch_size=batch, shuffle=True, seed=0)
    iterator = iter(loader)
    start = time.perf_counter()
    first = next(iterator)  # worker start-up, when the loader has workers
    startup_ms = (time.perf_counter() - start) * 1e3
    batches = [first]
    samples = []
    for _ in range(config.data_batches):
        start = time.perf_counter()
        batches.append(next(iterator))
        samples.append((time.perf_counter() - start) * 1e3)
    del iterator
    ms = median(samples)
    row = {"batch": batch, "image_size": size, "num_workers": loader.num_workers,
           "median_ms_per_batch": ms, "images_per_s": batch / ms * 1e3, "first_batch_ms": startup_ms,
           "repeats": len(samples)}
    return row, batches[: max(1, min(3, len(batches)))]


def to_device(batch: tuple, device: str) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    images, targets = batch
    return images.to(device), [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)}
                               for t in targets]


# ----------------------------------------------------------------------------- implementations

class OursTrain:
    """Our SSD + MultiBoxLoss + SGD; ``backend`` picks the kernels or the reference ops."""

    def __init__(self, config: Config, model_name: str, backend: str = "ssd_ext",
                 compiled: bool = False) -> None:
        torch.manual_seed(0)
        self.config = config
        self.backend = backend
        self.model = build_model(model_name, NUM_CLASSES).to(config.device).train()
        self.network = torch.compile(self.model) if compiled else self.model
        self.criterion = MultiBoxLoss(self.model.priors, NUM_CLASSES).to(config.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp and config.device == "cuda")

    def _backward_and_step(self, loss: torch.Tensor, watch: Stopwatch | None) -> None:
        with watch.stage("backward") if watch else contextlib.nullcontext():
            self.scaler.scale(loss).backward()
        with watch.stage("optimizer") if watch else contextlib.nullcontext():
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)

    def step(self, batch: tuple) -> None:
        images, targets = batch
        with ops.use_backend(self.backend):
            with autocast(self.config):
                loc, conf = self.network(images)
                loss = self.criterion(loc, conf, targets)["loss"]
            self._backward_and_step(loss, None)

    def staged_step(self, batch: tuple) -> dict[str, float]:
        images, targets = batch
        watch = Stopwatch(self.config.device)
        watch.times["preprocess"] = 0.0
        with ops.use_backend(self.backend):
            with autocast(self.config):
                with watch.stage("forward"):
                    loc, conf = self.network(images)
                # MultiBoxLoss's own ops.match call, on the same inputs, timed apart.
                with watch.stage("matching"), torch.no_grad():
                    ops.match([t["boxes"].float() for t in targets], [t["labels"] for t in targets],
                              self.criterion.priors.float(), self.criterion.iou_threshold,
                              self.criterion.variances, num_classes=NUM_CLASSES)
                with watch.stage("loss_total"):
                    loss = self.criterion(loc, conf, targets)["loss"]
            self._backward_and_step(loss, watch)
        times = watch.times
        times["loss_mining"] = max(0.0, times.pop("loss_total") - times["matching"])
        return times


def torchvision_model(model_name: str) -> torch.nn.Module:
    """torchvision's counterpart of our ``model_name`` (random weights, NUM_CLASSES classes)."""
    from torchvision.models import detection

    builder = getattr(detection, TORCHVISION_COUNTERPARTS[model_name])
    return builder(weights=None, weights_backbone=None, num_classes=NUM_CLASSES, score_thresh=0.01,
                   nms_thresh=0.45, detections_per_img=200, topk_candidates=400)


class TorchvisionTrain:
    """torchvision's counterpart of our model (random weights, 21 classes) with its own loss, + SGD."""

    def __init__(self, config: Config) -> None:
        torch.manual_seed(0)
        self.config = config
        self.model = torchvision_model(config.model)
        self.model.to(config.device).train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp and config.device == "cuda")

    @staticmethod
    def inputs(batch: tuple) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        """torchvision's form of a batch: a list of images, boxes in pixels."""
        images, targets = batch
        height, width = images.shape[-2:]
        scale = images.new_tensor([width, height, width, height])
        return list(images.unbind(0)), [{"boxes": t["boxes"] * scale, "labels": t["labels"]} for t in targets]

    def _backward_and_step(self, loss: torch.Tensor, watch: Stopwatch | None) -> None:
        with watch.stage("backward") if watch else contextlib.nullcontext():
            self.scaler.scale(loss).backward()
        with watch.stage("optimizer") if watch else contextlib.nullcontext():
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)

    def step(self, batch: tuple) -> None:
        images, targets = batch
        with autocast(self.config):
            losses = self.model(images, targets)
            loss = sum(losses.values())
        self._backward_and_step(loss, None)

    def staged_step(self, batch: tuple) -> dict[str, float]:
        """SSD.forward's training path, stage by stage, through its own submodules."""
        from torchvision.ops import boxes as box_ops

        model = self.model
        images, targets = batch
        watch = Stopwatch(self.config.device)
        with autocast(self.config):
            with watch.stage("preprocess"):
                image_list, targets = model.transform(images, targets)
            with watch.stage("forward"):
                features = list(model.backbone(image_list.tensors).values())
                head_outputs = model.head(features)
            with watch.stage("matching"):
                anchors = model.anchor_generator(image_list, features)
                matched = [model.proposal_matcher(box_ops.box_iou(t["boxes"], a))
                           for a, t in zip(anchors, targets, strict=True)]
            with watch.stage("loss_mining"):
                losses = model.compute_loss(targets, head_outputs, anchors, matched)
                loss = sum(losses.values())
        self._backward_and_step(loss, watch)
        return watch.times


class OursInfer:
    def __init__(self, config: Config, model_name: str, backend: str = "ssd_ext",
                 compiled: bool = False) -> None:
        torch.manual_seed(0)
        self.config = config
        self.backend = backend
        self.model = build_model(model_name, NUM_CLASSES).to(config.device).eval()
        self.network = torch.compile(self.model) if compiled else self.model

    def _detect(self, loc: torch.Tensor, conf: torch.Tensor, images: torch.Tensor) -> list:
        results = ops.detect(loc.float(), conf.float(), self.model.priors.float(),
                             variances=self.model.variances)
        height, width = images.shape[-2:]
        scale = loc.new_tensor([width, height, width, height], dtype=torch.float32)
        return [{"boxes": r["boxes"] * scale, "scores": r["scores"], "labels": r["labels"]} for r in results]

    @torch.no_grad()
    def run(self, images: torch.Tensor) -> None:
        with ops.use_backend(self.backend), autocast(self.config):
            loc, conf = self.network(images)
            self._detect(loc, conf, images)

    @torch.no_grad()
    def staged(self, images: torch.Tensor) -> dict[str, float]:
        watch = Stopwatch(self.config.device)
        watch.times["preprocess"] = 0.0
        with ops.use_backend(self.backend), autocast(self.config):
            with watch.stage("forward"):
                loc, conf = self.network(images)
            with watch.stage("postprocess"):
                self._detect(loc, conf, images)
        return watch.times


class TorchvisionInfer:
    def __init__(self, config: Config) -> None:
        torch.manual_seed(0)
        self.config = config
        self.model = torchvision_model(config.model)
        self.model.to(config.device).eval()

    @torch.no_grad()
    def run(self, images: torch.Tensor) -> None:
        with autocast(self.config):
            self.model(list(images.unbind(0)))

    @torch.no_grad()
    def staged(self, images: torch.Tensor) -> dict[str, float]:
        model = self.model
        watch = Stopwatch(self.config.device)
        image_list = list(images.unbind(0))
        original_sizes = [tuple(image.shape[-2:]) for image in image_list]
        with autocast(self.config):
            with watch.stage("preprocess"):
                batch, _ = model.transform(image_list, None)
            with watch.stage("forward"):
                features = list(model.backbone(batch.tensors).values())
                head_outputs = model.head(features)
            with watch.stage("postprocess"):
                anchors = model.anchor_generator(batch, features)
                detections = model.postprocess_detections(head_outputs, anchors, batch.image_sizes)
                model.transform.postprocess(detections, batch.image_sizes, original_sizes)
        return watch.times


# ----------------------------------------------------------------------------- runs

def row_model(impl: str, model_name: str) -> str:
    """The model a row measured: ours, or torchvision's counterpart of it."""
    return f"torchvision {TORCHVISION_COUNTERPARTS[model_name]}" if impl == "torchvision" else model_name


def capped(name: str, index: int) -> bool:
    """Whether repeat ``index`` of implementation ``name`` is past the reference's cap."""
    return "reference" in name and index >= REFERENCE_MAX_REPEATS


def training_rows(config: Config, model_name: str, batches: list, impls: dict[str, Any],
                  repeats: int) -> list[dict[str, object]]:
    """Whole and staged steps of every implementation, interleaved."""
    device_batches = [to_device(b, config.device) for b in batches]
    tv_batches = [TorchvisionTrain.inputs(b) for b in device_batches]
    whole: dict[str, list[float]] = {name: [] for name in impls}
    stages: dict[str, list[dict[str, float]]] = {name: [] for name in impls}
    first_ms: dict[str, float] = {}

    def batch_for(name: str, index: int) -> tuple:
        source = tv_batches if name == "torchvision" else device_batches
        return source[index % len(source)]

    progress(f"training step: {', '.join(impls)}; {config.warmup} warm-up + {repeats} repeats")
    for name, impl in impls.items():  # warm-up (and, compiled, the compilation)
        for index in range(config.warmup):
            elapsed = timed(functools.partial(impl.step, batch_for(name, index)), config.device)
            first_ms.setdefault(name, elapsed)
    for index in range(repeats):
        for name, impl in impls.items():
            if capped(name, index):
                continue
            if config.whole_runs:
                whole[name].append(timed(functools.partial(impl.step, batch_for(name, index)), config.device))
        for name, impl in impls.items():
            if capped(name, index):
                continue
            stages[name].append(impl.staged_step(batch_for(name, index)))
            if not config.whole_runs:
                whole[name].append(sum(stages[name][-1].get(stage, 0.0) for stage in TRAIN_STAGES))

    rows = []
    batch_size = device_batches[0][0].shape[0]
    for name in impls:
        step_ms = median(whole[name])
        breakdown = {stage: median([s.get(stage, 0.0) for s in stages[name]]) for stage in TRAIN_STAGES}
        staged_total = sum(breakdown.values())
        ssd_specific = breakdown["matching"] + breakdown["loss_mining"]
        rows.append({
            "impl": name, "model": row_model(name, model_name),
            "batch": batch_size, "median_ms": step_ms, "min_ms": min(whole[name]),
            "images_per_s": batch_size / step_ms * 1e3, "repeats": len(whole[name]),
            "timing": "whole runs" if config.whole_runs else "staged runs' total",
            "first_call_ms": first_ms.get(name), "stages_ms": breakdown, "staged_total_ms": staged_total,
            "ssd_specific_ms": ssd_specific, "ssd_specific_share": ssd_specific / staged_total,
        })
    return rows


def inference_rows(config: Config, model_name: str, batch_sizes: tuple[int, ...], impls: dict[str, Any],
                   repeats: int) -> list[dict[str, object]]:
    size = image_size(model_name)
    rows = []
    for batch_size in batch_sizes:
        generator = torch.Generator().manual_seed(batch_size)
        images = torch.rand(batch_size, 3, size, size, generator=generator).to(config.device)
        progress(f"inference B={batch_size}: {', '.join(impls)}")
        whole: dict[str, list[float]] = {name: [] for name in impls}
        stages: dict[str, list[dict[str, float]]] = {name: [] for name in impls}
        first_ms: dict[str, float] = {}
        for name, impl in impls.items():
            for _ in range(config.warmup):
                first_ms.setdefault(name, timed(functools.partial(impl.run, images), config.device))
        for index in range(repeats):
            for name, impl in impls.items():
                if capped(name, index):
                    continue
                if config.whole_runs:
                    whole[name].append(timed(functools.partial(impl.run, images), config.device))
            for name, impl in impls.items():
                if capped(name, index):
                    continue
                stages[name].append(impl.staged(images))
                if not config.whole_runs:
                    whole[name].append(sum(stages[name][-1].get(stage, 0.0) for stage in INFER_STAGES))
        for name in impls:
            ms = median(whole[name])
            breakdown = {stage: median([s.get(stage, 0.0) for s in stages[name]]) for stage in INFER_STAGES}
            staged_total = sum(breakdown.values())
            rows.append({
                "impl": name, "model": row_model(name, model_name),
                "batch": batch_size, "median_ms": ms, "min_ms": min(whole[name]),
                "images_per_s": batch_size / ms * 1e3, "repeats": len(whole[name]),
                "timing": "whole runs" if config.whole_runs else "staged runs' total",
            "first_call_ms": first_ms.get(name), "stages_ms": breakdown, "staged_total_ms": staged_total,
                "postprocess_share": breakdown["postprocess"] / staged_total,
            })
        if config.device == "cuda":
            torch.cuda.empty_cache()
    return rows


def add_ratios(rows: list[dict[str, object]], ours: str = "ssd_ext") -> None:
    """``ssd_ext_speedup``: images/s of ours over each other implementation at the same batch."""
    reference = {row["batch"]: row["images_per_s"] for row in rows if row["impl"] == ours}
    for row in rows:
        if row["impl"] != ours and row["batch"] in reference:
            row["ssd_ext_speedup"] = reference[row["batch"]] / row["images_per_s"]


# ----------------------------------------------------------------------------- output

def _fmt(value: object, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    lines = ["Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()), ""]
    config = result["config"]
    lines.append(f"Run: `{config['command']}`")
    lines.append("")
    data = result.get("data")
    if data:
        lines += [
            "### Data (a real loader, measured on its own)", "",
            "| batch | image size | workers | ms per batch | images/s |", "|---:|---:|---:|---:|---:|",
            f"| {data['batch']} | {data['image_size']} | {data['num_workers']} "
            f"| {_fmt(data['median_ms_per_batch'])} | {_fmt(data['images_per_s'])} |", "",
        ]
    for title, key, stages, share_key, share_name in (
        ("Training step", "training", TRAIN_STAGES, "ssd_specific_share", "SSD-specific share"),
        ("Inference (with post-processing)", "inference", INFER_STAGES, "postprocess_share",
         "post-processing share"),
    ):
        rows = result.get(key) or []
        if not rows and not result["skipped"].get(key):
            continue
        lines += [f"### {title}", ""]
        header = ["implementation", "model", "batch", "median ms", "images/s", "ssd_ext speedup",
                  *(f"{s} ms" for s in stages), share_name]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|---|---|" + "---:|" * (len(header) - 2))
        for row in rows:
            speed = row.get("ssd_ext_speedup")
            cells = [row["impl"], row["model"], str(row["batch"]), _fmt(row["median_ms"]),
                     _fmt(row["images_per_s"], 2), f"**{speed:.2f}x**" if speed else "",
                     *(_fmt(row["stages_ms"][s]) for s in stages), f"{100 * row[share_key]:.1f}%"]
            lines.append("| " + " | ".join(cells) + " |")
        for impl, reason in result["skipped"].get(key, {}).items():
            lines.append(f"\n{impl}: skipped ({reason})")
        lines.append("")
    compiled = result.get("compile")
    if compiled:
        lines += ["### torch.compile (our model; loss and post-processing eager)", "",
                  "| what | model | batch | eager ms | compiled ms | compiled speedup "
                  "| first compiled call ms |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for row in compiled["rows"]:
            lines.append(f"| {row['what']} | {row['model']} | {row['batch']} | {_fmt(row['eager_ms'])} "
                         f"| {_fmt(row['compiled_ms'])} | **{row['speedup']:.2f}x** "
                         f"| {_fmt(row['compiled_first_call_ms'], 0)} |")
        lines.append("")
    elif result["skipped"].get("compile"):
        lines.append(f"torch.compile: skipped ({result['skipped']['compile']})\n")
    return "\n".join(lines)


def charts(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    training = result.get("training") or []
    inference = result.get("inference") or []
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    colors = {"ssd_ext": "tab:green", "ssd_ext (reference ops)": "tab:olive", "torchvision": "tab:blue"}
    stage_colors = dict(zip(TRAIN_STAGES, ["tab:gray", "tab:blue", "tab:red", "tab:orange", "tab:purple",
                                           "tab:brown"], strict=True))

    axis = axes[0]
    if training:
        names = [row["impl"] for row in training]
        axis.bar(names, [row["images_per_s"] for row in training],
                 color=[colors.get(n, "tab:gray") for n in names])
        axis.set_ylabel("images/s")
        axis.set_title(f"training step, batch {training[0]['batch']}")
        axis.tick_params(axis="x", labelsize=8)

    axis = axes[1]
    if training:
        bottom = [0.0] * len(training)
        for stage in TRAIN_STAGES:
            values = [row["stages_ms"][stage] for row in training]
            axis.bar([row["impl"] for row in training], values, bottom=bottom, label=stage,
                     color=stage_colors[stage])
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        axis.set_ylabel("ms per step (staged)")
        axis.set_title("training step breakdown")
        axis.legend(fontsize=7)
        axis.tick_params(axis="x", labelsize=8)

    axis = axes[2]
    if inference:
        impls = list(dict.fromkeys(row["impl"] for row in inference))
        batches = sorted({row["batch"] for row in inference})
        width = 0.8 / len(impls)
        for k, impl in enumerate(impls):
            by_batch = {row["batch"]: row["images_per_s"] for row in inference if row["impl"] == impl}
            axis.bar([i + k * width for i in range(len(batches))], [by_batch.get(b, 0.0) for b in batches],
                     width=width, label=impl, color=colors.get(impl, "tab:gray"))
        axis.set_xticks([i + width * (len(impls) - 1) / 2 for i in range(len(batches))],
                        [f"B={b}" for b in batches])
        axis.set_ylabel("images/s (incl. post-processing)")
        axis.set_title("inference")
        axis.legend(fontsize=7)
    machine = result["machine"]
    where = machine.get("gpu") or machine.get("cpu")
    fig.suptitle(f"ssd_ext end to end on {where} ({machine['device']}, torch {machine['torch']}"
                 f"{', AMP' if machine['amp'] else ''})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- compile

def compile_rows(config: Config, data_batches: list) -> list[dict[str, object]]:
    model_name = config.compile_model
    size = image_size(model_name)
    rows = []
    batches = data_batches
    if batches[0][0].shape[-1] != size:
        _, batches = measure_data(config, config.train_batch, size)
    impls = {"eager": OursTrain(config, model_name), "compiled": OursTrain(config, model_name, compiled=True)}
    warm = dict(config.__dict__)
    warm["warmup"] = max(1, config.warmup)
    train = training_rows(Config(**warm), model_name, batches, impls, config.train_repeats)
    by_name = {row["impl"]: row for row in train}
    rows.append({"what": "training step", "model": model_name, "batch": by_name["eager"]["batch"],
                 "eager_ms": by_name["eager"]["median_ms"], "compiled_ms": by_name["compiled"]["median_ms"],
                 "speedup": by_name["eager"]["median_ms"] / by_name["compiled"]["median_ms"],
                 "compiled_first_call_ms": by_name["compiled"]["first_call_ms"]})
    infer_impls = {"eager": OursInfer(config, model_name),
                   "compiled": OursInfer(config, model_name, compiled=True)}
    batch = max(config.infer_batches)
    infer = inference_rows(Config(**warm), model_name, (batch,), infer_impls, config.infer_repeats)
    by_name = {row["impl"]: row for row in infer}
    rows.append({"what": "inference", "model": model_name, "batch": batch,
                 "eager_ms": by_name["eager"]["median_ms"], "compiled_ms": by_name["compiled"]["median_ms"],
                 "speedup": by_name["eager"]["median_ms"] / by_name["compiled"]["median_ms"],
                 "compiled_first_call_ms": by_name["compiled"]["first_call_ms"]})
    return rows


# ----------------------------------------------------------------------------- main

def checkpoint(config: Config, result: dict[str, Any]) -> None:
    """Write what is measured so far to ``e2e.partial.json`` (a long run killed midway keeps it)."""
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "e2e.partial.json").write_text(json.dumps(result, indent=2))


def run(config: Config, command: str) -> dict[str, Any]:
    torch.backends.cudnn.benchmark = config.device == "cuda"
    result: dict[str, Any] = {"machine": machine_description(config), "skipped": {}}
    result["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in config.__dict__.items()}
    result["config"]["command"] = command
    size = image_size(config.model)
    tv_reason = torchvision_unavailable(config, config.model)

    progress(f"data: {config.data_batches} batches of {config.train_batch}")
    data_row, batches = measure_data(config, config.train_batch, size)
    result["data"] = data_row

    train_impls: dict[str, Any] = {"ssd_ext": OursTrain(config, config.model)}
    if config.reference:
        train_impls["ssd_ext (reference ops)"] = OursTrain(config, config.model, backend="reference")
    if tv_reason is None:
        train_impls["torchvision"] = TorchvisionTrain(config)
    else:
        result["skipped"]["training"] = {"torchvision": tv_reason}
    result["training"] = training_rows(config, config.model, batches, train_impls, config.train_repeats)
    add_ratios(result["training"])
    del train_impls
    checkpoint(config, result)

    infer_impls: dict[str, Any] = {"ssd_ext": OursInfer(config, config.model)}
    if config.reference:
        infer_impls["ssd_ext (reference ops)"] = OursInfer(config, config.model, backend="reference")
    if tv_reason is None:
        infer_impls["torchvision"] = TorchvisionInfer(config)
    else:
        result["skipped"]["inference"] = {"torchvision": tv_reason}
    result["inference"] = inference_rows(config, config.model, config.infer_batches, infer_impls,
                                         config.infer_repeats)
    add_ratios(result["inference"])
    del infer_impls
    checkpoint(config, result)

    if config.compile:
        progress(f"torch.compile on {config.compile_model}")
        result["compile"] = {"model": config.compile_model, "rows": compile_rows(config, batches)}
    else:
        result["skipped"]["compile"] = "not requested (--compile)"
    data_ms = data_row["median_ms_per_batch"]
    ours_step = next(row for row in result["training"] if row["impl"] == "ssd_ext")
    result["data"]["bounds_the_step"] = data_ms > ours_step["median_ms"]
    with contextlib.suppress(OSError):
        result["machine"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    config = parse_args(args)
    command = "python -m benchmarks.bench_e2e " + " ".join(args)
    result = run(config, command)
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "e2e.json").write_text(json.dumps(result, indent=2))
    (config.out / "e2e.partial.json").unlink(missing_ok=True)
    table = markdown(result)
    (config.out / "e2e.md").write_text(table)
    charts(result, config.out / "e2e.png")
    print(table)
    print(f"wrote {config.out / 'e2e.json'}, e2e.md, e2e.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
