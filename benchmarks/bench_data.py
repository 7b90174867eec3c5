"""Data pipeline benchmark: our train transform vs torchvision's transforms.v2 SSD pipeline, and
the loader vs the small model's training step.

    python -m benchmarks.bench_data [--images 24] [--rounds 4] [--steps 6] [--out benchmarks/results]

1. Transform, per core: the same decoded VOC-sized JPEGs (500x375, synthetic shapes) go
   through ``train_transform(300)`` and through torchvision's SSD recipe (``ToImage``,
   ``RandomPhotometricDistort``, ``RandomZoomOut`` with the mean fill, ``RandomIoUCrop``,
   ``RandomHorizontalFlip``, ``Resize(300)``, ``SanitizeBoundingBoxes``, ``ToDtype`` and
   ``Normalize``, so both give the same normalised float tensor), image by image,
   interleaved, in one thread. Time is the process's CPU time (``time.process_time``), so
   it is per core and other load on the machine inflates it less than wall time would. The
   float reference (``ssd_reference.transforms.train_transform``: every step computed eagerly
   on float32, the oracle of the tests) is timed alongside.
2. Loader vs step: the small model (``ssd_small``, 160 px, batch 32) trains from a
   ``VOCDetection`` over the same kind of JPEGs with ``train_transform(160)``. Reported: the
   loader alone (decode + augmentation + collate) with the worker count ``make_loader``
   picks, the step alone (forward + MultiBoxLoss + backward + SGD step on a fixed batch),
   and loader + step together for 0, 1 and 2 workers (wall time, medians; and the CPU time
   of the main process and its workers together, which on a shared machine says more about
   what workers cost than wall time: an extra process also wins a larger share of a
   contended CPU).

JSON and markdown go to ``--out`` (``data.json``, ``data.md``).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "python")]

from ssd_reference import transforms as reference_transforms  # noqa: E402

import ssd_ext  # noqa: E402
from ssd_ext.bench.harness import cpu_name  # noqa: E402
from ssd_ext.data import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    SHAPE_CLASSES,
    SyntheticShapes,
    VOCDetection,
    make_loader,
    train_transform,
    write_voc,
)
from ssd_ext.data.loader import available_cores, default_num_workers  # noqa: E402


def torchvision_ssd_pipeline(size: int):
    """torchvision's SSD training recipe (references/detection, "ssd") plus the resize and
    normalisation our transform includes."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    fill = {tv_tensors.Image: tuple(round(255 * m) for m in IMAGENET_MEAN), "others": 0}
    return v2.Compose([
        v2.ToImage(),
        v2.RandomPhotometricDistort(p=0.5),
        v2.RandomZoomOut(fill=fill, side_range=(1.0, 4.0), p=0.5),
        v2.RandomIoUCrop(),
        v2.RandomHorizontalFlip(p=0.5),
        v2.Resize((size, size)),
        v2.SanitizeBoundingBoxes(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def make_jpegs(root: Path, count: int) -> VOCDetection:
    """``count`` synthetic 500x375 images with 1-4 shapes, written as VOC JPEGs and read back."""
    shapes = SyntheticShapes(num_images=count, image_size=(375, 500), seed=11)
    write_voc(shapes, root)
    return VOCDetection(root, [("2007", "trainval")], class_names=SHAPE_CLASSES)


def bench_transforms(items: list, size: int, rounds: int) -> dict[str, object]:
    """``items``: ``(PIL image, target with pixel boxes)`` pairs, decoded once."""
    from torchvision import tv_tensors

    ours = train_transform(size)
    reference = reference_transforms.train_transform(size)
    theirs = torchvision_ssd_pipeline(size)

    def run_ours(image, target):
        packed = torch.stack([target["labels"], target["difficult"].long()], dim=1)
        return ours(image, target["boxes"], packed)

    def run_reference(image, target):
        packed = torch.stack([target["labels"], target["difficult"].long()], dim=1)
        return reference(image, target["boxes"], packed)

    def run_theirs(image, target):
        boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY",
                                         canvas_size=(image.height, image.width))
        return theirs(image, {"boxes": boxes, "labels": target["labels"]})

    runners = {"ssd_ext train_transform": run_ours, "ssd_reference float transforms (oracle)": run_reference,
               "torchvision transforms.v2": run_theirs}
    cpu_s = {name: 0.0 for name in runners}
    torch.manual_seed(0)
    for image, target in items[:2]:  # warm-up
        for run in runners.values():
            run(image, target)
    for _ in range(rounds):
        for image, target in items:
            for name, run in runners.items():  # interleaved: same image, same moment
                start = time.process_time()
                run(image, target)
                cpu_s[name] += time.process_time() - start
    count = rounds * len(items)
    rows = {name: {"ms_per_image_cpu": 1e3 * total / count, "images_per_s_per_core": count / total}
            for name, total in cpu_s.items()}
    ours_rate = rows["ssd_ext train_transform"]["images_per_s_per_core"]
    for row in rows.values():
        row["ssd_ext speedup"] = ours_rate / row["images_per_s_per_core"]
    return {"size": size, "images": len(items), "rounds": rounds, "results": rows}


def bench_step(dataset_root: Path, size: int, batch_size: int, steps: int,
               rounds: int) -> dict[str, object]:
    from ssd_ext.engine import MultiBoxLoss
    from ssd_ext.models import ssd_small

    dataset = VOCDetection(dataset_root, [("2007", "trainval")], class_names=SHAPE_CLASSES,
                           transform=train_transform(size))
    model = ssd_small(num_classes=len(SHAPE_CLASSES) + 1)
    criterion = MultiBoxLoss(model.priors, len(SHAPE_CLASSES) + 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def train_step(images, targets):
        loc, conf = model(images)
        loss = criterion(loc, conf, targets)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    out: dict[str, object] = {"size": size, "batch_size": batch_size, "steps": steps,
                              "torch_threads": torch.get_num_threads()}

    # The step alone, on one fixed batch.
    loader = make_loader(dataset, batch_size, shuffle=True, num_workers=0, drop_last=True, seed=0)
    images, targets = next(iter(loader))
    for _ in range(2):
        train_step(images, targets)
    step_ms = []
    for _ in range(steps):
        start = time.perf_counter()
        train_step(images, targets)
        step_ms.append(1e3 * (time.perf_counter() - start))
    out["step_ms"] = statistics.median(step_ms)
    out["step_images_per_s"] = batch_size * 1e3 / out["step_ms"]

    def loader_batches(num_workers: int, with_step: bool) -> tuple[list[float], float]:
        """Wall ms of each timed batch, and CPU seconds per batch of this process and its
        workers together (workers are counted once they exit, so the loader is shut down
        before reading the clock; the warm-up batch is included)."""
        cpu_start = _cpu_seconds_with_children()
        loader = make_loader(dataset, batch_size, shuffle=True, num_workers=num_workers,
                             drop_last=True, seed=0)
        times = []
        iterator = iter(loader)
        next(iterator)  # workers started and warm
        for _ in range(steps):
            start = time.perf_counter()
            try:
                images, targets = next(iterator)
            except StopIteration:
                iterator = iter(loader)
                images, targets = next(iterator)
            if with_step:
                train_step(images, targets)
            times.append(1e3 * (time.perf_counter() - start))
        del iterator, loader
        gc.collect()  # shuts persistent workers down and reaps them
        return times, (_cpu_seconds_with_children() - cpu_start) / (steps + 1)

    chosen = default_num_workers()
    loader_ms = statistics.median(loader_batches(chosen, with_step=False)[0])
    out["default_num_workers"] = chosen
    out["loader_ms_per_batch"] = loader_ms
    out["loader_images_per_s"] = batch_size * 1e3 / loader_ms
    # Interleaved rounds, so that the machine's load drifts over every setting alike.
    wall: dict[int, list[float]] = {workers: [] for workers in (0, 1, 2)}
    cpu: dict[int, list[float]] = {workers: [] for workers in wall}
    for _ in range(rounds):
        for workers in wall:
            times, cpu_s = loader_batches(workers, with_step=True)
            wall[workers] += times
            cpu[workers].append(cpu_s)
    combined = {}
    for workers in wall:
        ms = statistics.median(wall[workers])
        combined[str(workers)] = {"ms_per_step": ms, "images_per_s": batch_size * 1e3 / ms,
                                  "cpu_s_per_step": statistics.median(cpu[workers])}
    out["rounds"] = rounds
    out["loader_plus_step"] = combined
    return out


def _cpu_seconds_with_children() -> float:
    """User + system CPU seconds of this process and of its exited, reaped children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def machine_description() -> dict[str, object]:
    cpu = cpu_name()
    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        uptime = "n/a"
    import PIL
    import torchvision
    return {"cpu": cpu, "cores": available_cores(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "pillow": PIL.__version__,
            "ssd_ext": ssd_ext.__version__, "python": platform.python_version(), "uptime": uptime}


def markdown(result: dict[str, object]) -> str:
    machine = result["machine"]
    transforms = result["transforms"]
    lines = [
        f"Machine: {machine['cpu']}, {machine['cores']} cores; torch {machine['torch']}, "
        f"torchvision {machine['torchvision']}, Pillow {machine['pillow']}; `uptime` at the end: "
        f"`{machine['uptime']}`.",
        "",
        f"Transform to {transforms['size']} px, {transforms['images']} VOC-sized JPEGs (500x375) x "
        f"{transforms['rounds']} rounds, interleaved, one thread, CPU time:",
        "",
        "| pipeline | ms / image (CPU) | images/s per core | ssd_ext speedup |",
        "|---|---|---|---|",
    ]
    for name, row in transforms["results"].items():
        lines.append(f"| {name} | {row['ms_per_image_cpu']:.2f} | {row['images_per_s_per_core']:.1f} | "
                     f"{row['ssd_ext speedup']:.2f}x |")
    step = result.get("step")
    if step:
        lines += [
            "",
            f"Loader vs training step: ssd_small at {step['size']} px, batch {step['batch_size']}, "
            f"{step['torch_threads']} torch threads, wall-time medians of {step['steps']} batches "
            f"(loader + step: x {step['rounds']} interleaved rounds):",
            "",
            "| what | ms / batch (wall) | images/s | CPU s / batch (all processes) |",
            "|---|---|---|---|",
            f"| loader alone, default workers ({step['default_num_workers']}) | "
            f"{step['loader_ms_per_batch']:.0f} | {step['loader_images_per_s']:.0f} | |",
            f"| step alone (forward + loss + backward + SGD) | {step['step_ms']:.0f} | "
            f"{step['step_images_per_s']:.0f} | |",
        ]
        for workers, row in step["loader_plus_step"].items():
            lines.append(f"| loader + step, {workers} workers | {row['ms_per_step']:.0f} | "
                         f"{row['images_per_s']:.0f} | {row['cpu_s_per_step']:.2f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=24, help="distinct JPEGs")
    parser.add_argument("--rounds", type=int, default=4, help="passes over them per pipeline")
    parser.add_argument("--size", type=int, default=300, help="transform output size")
    parser.add_argument("--steps", type=int, default=6, help="timed batches per loader/step setting")
    parser.add_argument("--step-rounds", type=int, default=2,
                        help="interleaved rounds of loader + step over 0, 1, 2 workers")
    parser.add_argument("--skip-step", action="store_true", help="transform comparison only")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    for name in ("images", "rounds", "size", "steps", "step_rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "voc"
        dataset = make_jpegs(root, args.images if args.skip_step else max(args.images, 64))
        items = [dataset[i] for i in range(args.images)]
        torch.set_num_threads(1)  # per core
        result["transforms"] = bench_transforms(items, args.size, args.rounds)
        torch.set_num_threads(threads)
        if not args.skip_step:
            result["step"] = bench_step(root, 160, 32, args.steps, args.step_rounds)
    result["machine"] = machine_description()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "data.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    (args.out / "data.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
