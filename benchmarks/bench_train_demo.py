"""The demo's goal, measured: train the default preset (``synthetic_small``) and report the
held-out COCO AP against the time spent training, the training images/s, and the data
loader's images/s alone (so a starving loader shows).

    python -m benchmarks.bench_train_demo [--out DIR] [ssd train overrides...]

Prints a markdown summary (machine, load, numbers); the run folder (metrics.jsonl with
``train_time_s`` at every evaluation, curves.png, detections/) is ``--out`` (default
``runs/bench_train_demo``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def loader_images_per_second(config, batches: int = 20) -> tuple[float, float]:
    """Images/s of the preset's data pipeline alone, in this process (what one loader worker
    does): (a first pass rendering fresh pictures, a second pass over the same, now cached,
    pictures with the next epoch's augmentation)."""
    from torch.utils.data import DataLoader

    from ssd_ext.data import collate
    from ssd_ext.engine.train import ResumableSampler, SeededItems, build_datasets

    train_set, _ = build_datasets(config)
    items = SeededItems(train_set, config.train.seed)
    rates = []
    for epoch in (0, 1):
        sampler = ResumableSampler(items, shuffle=False)
        sampler.set_epoch(epoch)
        loader = DataLoader(items, batch_size=config.train.batch_size, sampler=sampler, collate_fn=collate,
                            num_workers=0)
        started, count = time.perf_counter(), 0
        for k, (images, _) in enumerate(loader):
            count += images.shape[0]
            if k + 1 == batches:
                break
        rates.append(count / (time.perf_counter() - started))
    return rates[0], rates[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench_train_demo")
    parser.add_argument("--budget", type=float, default=300.0, help="the goal's training time, seconds")
    parser.add_argument("--loader-only", action="store_true", help="measure the data pipeline alone")
    args, overrides = parser.parse_known_args(argv)

    from ssd_ext.engine.config import get_preset, parse_train_args
    from ssd_ext.engine.train import fit, read_metrics

    config, _ = parse_train_args(["--output_dir", args.out, "--overwrite", "true", *overrides],
                                 get_preset("synthetic_small"))
    load_before = _load()
    fresh, cached = loader_images_per_second(config)
    if args.loader_only:
        print(f"- data pipeline alone (one process): {fresh:.0f} images/s rendering fresh pictures, "
              f"{cached:.0f} images/s on cached ones; load average {load_before}")
        return 0
    summary = fit(config)
    load_after = _load()
    evals = [r for r in read_metrics(Path(args.out) / "metrics.jsonl") if "AP" in r]
    within = [r for r in evals if r["train_time_s"] <= args.budget]
    best_within = max(within, key=lambda r: r["AP"]) if within else None
    final = summary["metrics"]
    lines = [
        f"machine: {_cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads by default; load average {load_before} before, "
        f"{load_after} after",
        f"config: {' '.join(overrides) or 'the synthetic_small preset as it is'}",
        f"data pipeline alone (one process, as in the loader worker): {fresh:.0f} images/s rendering "
        f"fresh pictures, {cached:.0f} images/s on cached ones",
        f"training: {summary['iterations']} iterations of {config.train.batch_size} in "
        f"{summary['train_seconds']:.0f} s = {summary['train_images_per_second']:.1f} images/s",
        f"held-out ({config.data.synthetic_val_images} images) at the end: AP {final['AP']:.3f}, "
        f"AP50 {final['AP50']:.3f}, AP75 {final['AP75']:.3f}",
        "evaluations (training seconds -> AP / AP50): "
        + ", ".join(f"{r['train_time_s']:.0f} s -> {r['AP']:.3f} / {r['AP50']:.3f}" for r in evals),
    ]
    if best_within is not None:
        lines.append(f"best within {args.budget:.0f} s of training: AP {best_within['AP']:.3f}, "
                     f"AP50 {best_within['AP50']:.3f} (at {best_within['train_time_s']:.0f} s)")
    goal = final["AP"] >= 0.70 and final["AP50"] >= 0.95 and summary["train_seconds"] <= args.budget
    verdict = "met" if goal else "NOT met"
    lines.append(f"goal (AP >= 0.70 and AP50 >= 0.95 within {args.budget:.0f} s): {verdict}")
    text = "\n".join(f"- {line}" for line in lines)
    print(text)
    with open(Path(args.out) / "bench.json", "w") as handle:
        json.dump({"summary": {k: v for k, v in summary.items() if k != "model"}, "loader_fresh": fresh,
                   "loader_cached": cached, "load_before": load_before, "load_after": load_after,
                   "lines": lines}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
