"""SSDLite320-MobileNetV3-Large on the CPU: our model and torchvision's with the same weights, and
torchvision's before and after ``ssd_ext.integrations.torchvision.accelerate``.

    python -m benchmarks.bench_ssdlite [--batches 1,8] [--repeats 5] [--train-batch 8]
        [--train-repeats 3] [--threads 1] [--conflict-images 512] --out DIR

One run, every implementation interleaved repeat by repeat (so that load from other processes
hits them alike), medians after one warm-up call each:

- **Inference with post-processing**, the same decoded pictures (480x640 RGB, uint8 numpy
  arrays, as read from files): ``torchvision`` (its eval-mode ``model(images)`` after the
  conversion to float tensors in [0, 1] that its input needs, as its weights' preset transform
  does: the conversion, resize and normalisation are its preprocessing; contiguous, as it
  ships), ``torchvision + accelerate`` (the same model after ``accelerate()``) and ``ssd_ext``
  (our ``ssdlite320_mobilenet_v3_large`` with torchvision's weights through
  ``from_torchvision_ssdlite``, run by ``ssd_ext.engine.Detector``, which takes the arrays as
  they are: resize + normalise per picture, ``model.detect``; in the model's declared
  ``cpu_inference_memory_format``, channels_last, and eval mode's folded BatchNorms).
  Thresholds: torchvision's for all (score 0.001, NMS 0.55, 300 detections per picture; 300
  candidates per class for torchvision, 400 for ours, the ``model.detect`` default the Detector
  uses). The weights are torchvision's own
  random initialisation, whose activations vanish: every class of every prior scores 1/91 and
  passes the 0.001 threshold, so post-processing runs at its worst case for all three. A
  staged run (fewer repeats) splits each into preprocess, forward and post-processing.
- **Memory format**: the network alone (backbone + heads) at the largest batch, contiguous
  against channels_last, ours and torchvision's.
- **Training step** (forward, loss, backward, SGD step; 320x320 images, COCO-like random
  targets): ours (``model`` + ``MultiBoxLoss``), torchvision (``model(images, targets)``) and
  torchvision after ``accelerate()``, each staged; the SSD-specific share is (anchors and
  matching + loss with encoding and mining) / step.
- **Matching conflicts**: on COCO-like random targets (objects per picture, sizes and shapes
  drawn to resemble COCO's statistics), how often two ground truths of a picture have the same
  best prior (where torchvision's matcher and ours differ, docs/ARCHITECTURE.md "Matching"),
  and how far the accelerated loss is from torchvision's on the same head outputs.

Writes ``ssdlite.json`` and ``ssdlite.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "python")]

from ssd_ext import ops  # noqa: E402
from ssd_ext.engine import Detector  # noqa: E402
from ssd_ext.engine.loss import MultiBoxLoss  # noqa: E402
from ssd_ext.integrations.torchvision import accelerate  # noqa: E402
from ssd_ext.models import build_model  # noqa: E402
from ssd_ext.models.ssdlite import SSDLITE_MEAN, SSDLITE_STD  # noqa: E402
from ssd_ext.models.weights import load_weights  # noqa: E402

NAME = "ssdlite320_mobilenet_v3_large"
NUM_CLASSES = 91
PICTURE_HW = (480, 640)
THRESHOLDS = {"score": 0.001, "nms": 0.55, "detections": 300, "candidates_torchvision": 300}


def progress(message: str) -> None:
    print(f"[bench_ssdlite {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_average() -> list[float]:
    with contextlib.suppress(OSError):
        return [round(v, 2) for v in os.getloadavg()]
    return []


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Wall times (ms) of each callable, one call of each in turn, after one warm-up call each."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) * 1e3)
    return samples


class Stages:
    """Wall time (ms) of named stages of one run (CPU: no synchronisation needed)."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str):  # noqa: ANN201 - a context manager
        start = time.perf_counter()
        yield
        self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1e3


# ----------------------------------------------------------------------------- models


def torchvision_ssdlite() -> torch.nn.Module:
    """torchvision's model as it ships without downloaded weights (its own random init)."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    torch.manual_seed(0)
    return ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=NUM_CLASSES)


def our_copy(theirs: torch.nn.Module) -> torch.nn.Module:
    """Our model with torchvision's weights (the converter), in its CPU inference memory format."""
    ours = build_model(NAME, NUM_CLASSES)
    load_weights(ours, theirs.state_dict(), layout="torchvision_ssdlite")
    return ours.to(memory_format=ours.cpu_inference_memory_format)


def detector_for(model: torch.nn.Module, batch: int) -> Detector:
    names = ["__background__"] + [f"class{k}" for k in range(1, NUM_CLASSES)]
    return Detector(model, names, 320, mean=SSDLITE_MEAN, std=SSDLITE_STD,
                    score_threshold=THRESHOLDS["score"], iou_threshold=THRESHOLDS["nms"],
                    max_detections=THRESHOLDS["detections"], batch_size=batch)


# ----------------------------------------------------------------------------- inference


def as_float_images(pictures: list[np.ndarray]) -> list[torch.Tensor]:
    """uint8 [H, W, 3] pictures as the float [3, H, W] tensors in [0, 1] torchvision's models take."""
    return [torch.from_numpy(p).permute(2, 0, 1).float().div_(255.0) for p in pictures]


def torchvision_run(model: torch.nn.Module, pictures: list[np.ndarray]) -> list[dict]:
    return model(as_float_images(pictures))


def torchvision_staged(model: torch.nn.Module, pictures: list[np.ndarray]) -> dict[str, float]:
    """SSD.forward's eval path stage by stage, through its own submodules and methods."""
    watch = Stages()
    sizes = [tuple(p.shape[:2]) for p in pictures]
    with watch.stage("preprocess"):
        batch, _ = model.transform(as_float_images(pictures), None)
    with watch.stage("forward"):
        features = list(model.backbone(batch.tensors).values())
        heads = model.head(features)
    with watch.stage("postprocess"):
        anchors = model.anchor_generator(batch, features)
        detections = model.postprocess_detections(heads, anchors, batch.image_sizes)
        model.transform.postprocess(detections, batch.image_sizes, sizes)
    return watch.ms


def detector_staged(detector: Detector, pictures: list[np.ndarray]) -> dict[str, float]:
    """Detector.__call__ stage by stage: its preprocessing, the network, model.detect's post-processing."""
    watch = Stages()
    model = detector.model
    with watch.stage("preprocess"):
        prepared = [detector.preprocess(p) for p in pictures]
        batch = torch.stack([tensor for tensor, _ in prepared])
    with watch.stage("forward"):
        loc, conf = model(batch)
    with watch.stage("postprocess"):
        results = ops.detect(loc.float(), conf.float(), model.priors, THRESHOLDS["score"], THRESHOLDS["nms"],
                             400, THRESHOLDS["detections"], model.variances)
        for (_, (height, width)), result in zip(prepared, results, strict=True):
            result["boxes"] * result["boxes"].new_tensor([width, height, width, height])
    return watch.ms


def inference_batch(models: dict[str, torch.nn.Module], pictures: list[np.ndarray],
                    repeats: int) -> list[dict[str, Any]]:
    """Whole runs (the headline) and staged runs (the breakdown) of one batch of pictures."""
    theirs, accelerated = models["torchvision"], models["torchvision + accelerate"]
    detector = detector_for(models["ssd_ext"], len(pictures))
    runs = {"torchvision": lambda: torchvision_run(theirs, pictures),
            "torchvision + accelerate": lambda: torchvision_run(accelerated, pictures),
            "ssd_ext (Detector)": lambda: detector(pictures)}
    staged = {"torchvision": lambda: torchvision_staged(theirs, pictures),
              "torchvision + accelerate": lambda: torchvision_staged(accelerated, pictures),
              "ssd_ext (Detector)": lambda: detector_staged(detector, pictures)}
    with torch.no_grad():
        whole = interleaved(runs, repeats)
        stages = {name: [fn() for _ in range(max(1, repeats // 2))] for name, fn in staged.items()}
    rows = []
    for name, samples in whole.items():
        breakdown = {key: statistics.median(run[key] for run in stages[name]) for key in stages[name][0]}
        rows.append({"impl": name, "batch": len(pictures), "median_ms": statistics.median(samples),
                     "min_ms": min(samples), "repeats": len(samples), "stages_ms": breakdown,
                     "postprocess_share": breakdown["postprocess"] / sum(breakdown.values())})
    return rows


def inference_rows(batches: tuple[int, ...], repeats: int) -> list[dict[str, Any]]:
    theirs = torchvision_ssdlite().eval()
    models = {"torchvision": theirs, "torchvision + accelerate": accelerate(copy.deepcopy(theirs)),
              "ssd_ext": our_copy(theirs).eval()}
    generator = torch.Generator().manual_seed(0)
    rows = []
    for batch in batches:
        progress(f"inference, batch {batch}: {repeats} interleaved repeats (load {load_average()})")
        pictures = [torch.randint(0, 256, (*PICTURE_HW, 3), dtype=torch.uint8, generator=generator).numpy()
                    for _ in range(batch)]
        rows += inference_batch(models, pictures, repeats)
    return rows


def memory_format_rows(batch: int, repeats: int) -> list[dict[str, Any]]:
    theirs = torchvision_ssdlite().eval()
    theirs_cl = copy.deepcopy(theirs).to(memory_format=torch.channels_last)
    ours = build_model(NAME, NUM_CLASSES).eval()
    load_weights(ours, theirs.state_dict(), layout="torchvision_ssdlite")
    ours_cl = copy.deepcopy(ours).to(memory_format=torch.channels_last)
    images = torch.rand(batch, 3, 320, 320) * 2 - 1

    def network(model: torch.nn.Module) -> Callable[[], object]:
        return lambda: model.head(list(model.backbone(images).values()))

    runs = {"ssd_ext contiguous": lambda: ours(images), "ssd_ext channels_last": lambda: ours_cl(images),
            "torchvision contiguous": network(theirs), "torchvision channels_last": network(theirs_cl)}
    progress(f"memory format, batch {batch} (load {load_average()})")
    with torch.no_grad():
        samples = interleaved(runs, repeats)
    return [{"impl": name, "batch": batch, "median_ms": statistics.median(v), "min_ms": min(v)}
            for name, v in samples.items()]


# ----------------------------------------------------------------------------- targets


def coco_like_targets(count: int, height: int, width: int, generator: torch.Generator) -> list[dict]:
    """Random boxes (pixels) resembling COCO's statistics: 1-30 objects per picture (mean about
    7), 41 % small (sqrt area < 32 px of a 640 px picture), 34 % medium, 25 % large, aspect
    ratios log-uniform in [1/3, 3], labels 1..90."""
    scale = min(height, width) / 480.0
    bands = torch.tensor([[4.0, 32.0], [32.0, 96.0], [96.0, 400.0]]) * scale
    counts = 0.87 ** torch.arange(30.0)  # a geometric law on 1..30 objects (mean about 6.8)
    targets = []
    for _ in range(count):
        objects = 1 + int(torch.multinomial(counts, 1, generator=generator))
        band = bands[torch.multinomial(torch.tensor([0.41, 0.34, 0.25]), objects, True, generator=generator)]
        side = band[:, 0] + (band[:, 1] - band[:, 0]) * torch.rand(objects, generator=generator)
        ratio = torch.exp((torch.rand(objects, generator=generator) * 2 - 1) * torch.log(torch.tensor(3.0)))
        w, h = side * ratio.sqrt(), side / ratio.sqrt()
        cx = torch.rand(objects, generator=generator) * width
        cy = torch.rand(objects, generator=generator) * height
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        labels = torch.randint(1, NUM_CLASSES, (objects,), generator=generator)
        targets.append({"boxes": boxes[keep], "labels": labels[keep]})
    return targets


# ----------------------------------------------------------------------------- training


def torchvision_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, pictures: list[torch.Tensor],
                     targets: list[dict]) -> dict[str, float]:
    """SSD.forward's training path stage by stage, then backward and an SGD step."""
    from torchvision.ops import box_iou

    watch = Stages()
    with watch.stage("preprocess"):
        batch, resized = model.transform(pictures, [dict(t) for t in targets])
    with watch.stage("forward"):
        features = list(model.backbone(batch.tensors).values())
        heads = model.head(features)
    with watch.stage("matching"):
        anchors = model.anchor_generator(batch, features)
        matched = [model.proposal_matcher(box_iou(t["boxes"], a)) if t["boxes"].numel()
                   else torch.full((a.shape[0],), -1, dtype=torch.int64)
                   for a, t in zip(anchors, resized, strict=True)]
    with watch.stage("loss"):
        loss = sum(model.compute_loss(resized, heads, anchors, matched).values())
    with watch.stage("backward"):
        loss.backward()
    with watch.stage("optimizer"):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return watch.ms


def ours_step(model: torch.nn.Module, criterion: MultiBoxLoss, optimizer: torch.optim.Optimizer,
              images: torch.Tensor, targets: list[dict]) -> dict[str, float]:
    watch = Stages()
    watch.ms["preprocess"] = 0.0  # normalised in the data pipeline
    with watch.stage("forward"):
        loc, conf = model(images)
    watch.ms["matching"] = 0.0  # inside the loss (ops.match)
    with watch.stage("loss"):
        loss = criterion(loc, conf, targets)["loss"]
    with watch.stage("backward"):
        loss.backward()
    with watch.stage("optimizer"):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return watch.ms


def training_rows(batch: int, repeats: int) -> list[dict[str, Any]]:
    theirs = torchvision_ssdlite().train()
    accelerated = accelerate(copy.deepcopy(theirs))
    ours = build_model(NAME, NUM_CLASSES).train()
    load_weights(ours, theirs.state_dict(), layout="torchvision_ssdlite")
    criterion = MultiBoxLoss(ours.priors, NUM_CLASSES)
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(batch, 3, 320, 320, generator=generator)
    targets = coco_like_targets(batch, 320, 320, generator)
    normalised = [{"boxes": t["boxes"] / 320.0, "labels": t["labels"]} for t in targets]
    inputs = (images - 0.5) / 0.5
    pictures = list(images.unbind(0))

    def sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9, weight_decay=4e-5)

    sgd_theirs, sgd_accelerated, sgd_ours = sgd(theirs), sgd(accelerated), sgd(ours)
    steps = {"torchvision": lambda: torchvision_step(theirs, sgd_theirs, pictures, targets),
             "torchvision + accelerate": lambda: torchvision_step(accelerated, sgd_accelerated, pictures,
                                                                  targets),
             "ssd_ext": lambda: ours_step(ours, criterion, sgd_ours, inputs, normalised)}
    progress(f"training, batch {batch}: {repeats} interleaved steps (load {load_average()})")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in steps}
    for fn in steps.values():
        fn()
    for _ in range(repeats):
        for name, fn in steps.items():
            runs[name].append(fn())
    rows = []
    for name, samples in runs.items():
        stages = {key: statistics.median(run[key] for run in samples) for key in samples[0]}
        totals = [sum(run.values()) for run in samples]
        specific = stages["matching"] + stages["loss"]
        rows.append({"impl": name, "batch": batch, "median_ms": statistics.median(totals),
                     "min_ms": min(totals), "repeats": repeats, "stages_ms": stages,
                     "ssd_specific_ms": specific,
                     "ssd_specific_share": specific / sum(stages.values()),
                     "objects": sum(int(t["boxes"].shape[0]) for t in targets)})
    return rows


# ----------------------------------------------------------------------------- matching conflicts


# A ground truth's best prior is "tied" when another prior's IoU is within this relative distance
# of it: then float rounding (ours from cxcywh priors, torchvision's from xyxy anchors) picks one.
TIE_TOLERANCE = 1e-5


def matching_ambiguities(targets: list[dict], anchors: torch.Tensor) -> dict[str, int]:
    """Ground truths whose matching is not determined by the rule alone: ``conflict`` (another
    ground truth of the picture has the same best prior: torchvision gives it to the later one,
    ours to the higher IoU and the other its next best) and ``tie`` (two priors share the best
    IoU up to rounding, typically a small box inside several same-sized priors)."""
    from torchvision.ops import box_iou

    found = {"ground_truths": 0, "conflict": 0, "tie": 0, "pictures_with_conflict": 0, "pictures_with_tie": 0}
    for target in targets:
        if target["boxes"].numel() == 0:
            continue
        iou = box_iou(target["boxes"], anchors)
        best_iou, best = iou.max(dim=1)
        conflict = int((torch.bincount(best)[best] > 1).sum())
        tie = int(((iou >= best_iou[:, None] * (1 - TIE_TOLERANCE)).sum(dim=1) > 1).sum())
        found["ground_truths"] += best.numel()
        found["conflict"] += conflict
        found["tie"] += tie
        found["pictures_with_conflict"] += conflict > 0
        found["pictures_with_tie"] += tie > 0
    return found


def loss_differences(theirs: torch.nn.Module, accelerated: torch.nn.Module, targets: list[dict],
                     anchors: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
    """Relative difference of each loss term, accelerated against torchvision's, on random heads."""
    from torchvision.ops import box_iou

    batch = len(targets)
    heads = {"bbox_regression": torch.randn(batch, anchors.shape[0], 4, generator=generator),
             "cls_logits": torch.randn(batch, anchors.shape[0], NUM_CLASSES, generator=generator)}
    matched = [theirs.proposal_matcher(box_iou(t["boxes"], anchors)) if t["boxes"].numel()
               else torch.full((anchors.shape[0],), -1, dtype=torch.int64) for t in targets]
    reference = theirs.compute_loss(targets, heads, [anchors] * batch, matched)
    fused = accelerated.compute_loss(targets, heads, [anchors] * batch, [])
    return {key: float((fused[key] - reference[key]).abs() / reference[key].abs().clamp(min=1e-12))
            for key in reference}


def conflict_summary(num_images: int) -> dict[str, Any]:
    """How often matching is ambiguous on COCO-like targets, and the loss differences it makes:
    torchvision's compute_loss against the accelerated one on the same random head outputs, one
    picture at a time, grouped by the picture's kind (clean, tie only, conflict)."""
    from torchvision.models.detection.image_list import ImageList

    theirs = torchvision_ssdlite()
    accelerated = accelerate(copy.deepcopy(theirs))
    generator = torch.Generator().manual_seed(2)
    features = [torch.empty(1, 1, s, s) for s in (20, 10, 5, 3, 2, 1)]
    anchors = theirs.anchor_generator(ImageList(torch.empty(1, 3, 320, 320), [(320, 320)]), features)[0]
    totals: dict[str, int] = {}
    differences: dict[str, dict[str, list[float]]] = {
        kind: {"bbox_regression": [], "classification": []} for kind in ("clean", "tie only", "conflict")}
    progress(f"matching ambiguities on {num_images} COCO-like pictures")
    for _ in range(num_images):
        targets = coco_like_targets(1, 320, 320, generator)
        found = matching_ambiguities(targets, anchors)
        totals = {key: totals.get(key, 0) + value for key, value in found.items()}
        kind = "conflict" if found["conflict"] else "tie only" if found["tie"] else "clean"
        for key, value in loss_differences(theirs, accelerated, targets, anchors, generator).items():
            differences[kind][key].append(value)
    summary: dict[str, Any] = {"pictures": num_images, **totals, "tie_tolerance": TIE_TOLERANCE, "kinds": {}}
    for kind, values in differences.items():
        summary["kinds"][kind] = {key: {"count": len(v), "median_rel": statistics.median(v) if v else None,
                                        "max_rel": max(v) if v else None} for key, v in values.items()}
    return summary


# ----------------------------------------------------------------------------- report


def _ratio(rows: list[dict], impl: str, other: str, batch: int | None = None) -> float:
    def pick(name: str) -> float:
        return next(row["median_ms"] for row in rows
                    if row["impl"] == name and (batch is None or row["batch"] == batch))

    return pick(other) / pick(impl)


def _table(header: list[str]) -> list[str]:
    return ["", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]


def _inference_lines(rows: list[dict]) -> list[str]:
    lines = _table(["inference", "batch", "median ms", "images/s", "vs torchvision", "preprocess", "forward",
                    "post-processing", "post-processing share"])
    for row in rows:
        stages = row["stages_ms"]
        speedup = _ratio(rows, row["impl"], "torchvision", row["batch"])
        cells = [row["impl"], row["batch"], f"{row['median_ms']:.0f}",
                 f"{row['batch'] / row['median_ms'] * 1e3:.2f}", f"{speedup:.2f}x",
                 f"{stages['preprocess']:.0f}", f"{stages['forward']:.0f}", f"{stages['postprocess']:.0f}",
                 f"{row['postprocess_share']:.1%}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def _memory_format_lines(rows: list[dict]) -> list[str]:
    lines = _table(["network only (backbone + heads)", "batch", "median ms", "channels_last speedup"])
    for row in rows:
        owner, layout = row["impl"].rsplit(" ", 1)
        speedup = "" if layout == "contiguous" else \
            f"{_ratio(rows, row['impl'], f'{owner} contiguous'):.2f}x"
        lines.append(f"| {row['impl']} | {row['batch']} | {row['median_ms']:.0f} | {speedup} |")
    return lines


def _training_lines(rows: list[dict]) -> list[str]:
    lines = _table(["training step", "batch", "median ms", "vs torchvision", "preprocess", "forward",
                    "matching", "loss", "backward", "optimizer", "SSD-specific ms", "SSD-specific share"])
    for row in rows:
        stages = row["stages_ms"]
        cells = [row["impl"], row["batch"], f"{row['median_ms']:.0f}",
                 f"{_ratio(rows, row['impl'], 'torchvision'):.2f}x", f"{stages['preprocess']:.0f}",
                 f"{stages['forward']:.0f}", f"{stages['matching']:.1f}", f"{stages['loss']:.1f}",
                 f"{stages['backward']:.0f}", f"{stages['optimizer']:.0f}", f"{row['ssd_specific_ms']:.1f}",
                 f"{row['ssd_specific_share']:.1%}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def _conflict_lines(summary: dict) -> list[str]:
    lines = ["", f"Matching on {summary['pictures']} COCO-like pictures ({summary['ground_truths']} ground "
             f"truths): {summary['conflict']} ground truths in {summary['pictures_with_conflict']} pictures "
             f"share their best prior with another (conflict); {summary['tie']} in "
             f"{summary['pictures_with_tie']} pictures have two best priors within "
             f"{summary['tie_tolerance']:g} relative IoU (tie)."]
    lines += _table(["pictures", "loss term", "count", "median relative difference",
                     "max relative difference"])
    for kind, terms in summary["kinds"].items():
        for key, stats in terms.items():
            median = "-" if stats["median_rel"] is None else f"{stats['median_rel']:.2e}"
            largest = "-" if stats["max_rel"] is None else f"{stats['max_rel']:.2e}"
            lines.append(f"| {kind} | {key} | {stats['count']} | {median} | {largest} |")
    return lines


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Load average {result['load_start']} at the start, {result['load_end']} at the end; "
             f"torch threads: {result['threads']}."]
    lines += _inference_lines(result["inference"]) + _memory_format_lines(result["memory_format"])
    lines += _training_lines(result["training"]) + _conflict_lines(result["conflicts"])
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,8", help="comma-separated inference batch sizes")
    parser.add_argument("--repeats", type=int, default=5, help="timed inference runs per implementation")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: two threads spin-wait on a loaded 2-core machine)")
    parser.add_argument("--conflict-images", type=int, default=512,
                        help="COCO-like pictures for the matching check")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    try:
        args.batches = tuple(int(b) for b in args.batches.split(","))
    except ValueError:
        parser.error(f"--batches must be comma-separated integers, got {args.batches!r}")
    for name in ("repeats", "train_batch", "train_repeats", "threads", "conflict_images"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if min(args.batches) < 1:
        parser.error(f"--batches must be >= 1, got {args.batches}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {"command": "python -m benchmarks.bench_ssdlite " + " ".join(argv),
                              "threads": args.threads, "load_start": load_average(), "thresholds": THRESHOLDS,
                              "torch": torch.__version__}
    result["inference"] = inference_rows(args.batches, args.repeats)
    result["memory_format"] = memory_format_rows(max(args.batches), args.repeats)
    result["training"] = training_rows(args.train_batch, args.train_repeats)
    result["conflicts"] = conflict_summary(args.conflict_images)
    result["load_end"] = load_average()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ssdlite.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    (args.out / "ssdlite.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
