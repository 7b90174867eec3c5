"""The demo's goal, measured: train the default preset (``synthetic_small``) and report the
held-out COCO AP against the time spent training, the training images/s, and the data
loader's images/s alone (so a starving loader shows).

Time is reported twice: wall seconds (meaningless on a shared machine) and CPU seconds of the
training process plus its loader workers (evaluation excluded), which do not depend on how
busy the machine is. The goal's 5 minutes on an idle 2-core machine are taken as 600 CPU
seconds (``--cpu-budget``).

    python -m benchmarks.bench_train_demo [--out DIR] [ssd train overrides...]

Prints a markdown summary (machine, load, numbers); the run folder (metrics.jsonl with
``train_time_s`` at every evaluation, curves.png, detections/) is ``--out`` (default
``runs/bench_train_demo``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import time
from pathlib import Path

import torch

from ssd_ext.bench.harness import cpu_name


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "n/a"


def _child_pids(pid: int) -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return pids + [grand for child in pids for grand in _child_pids(child)]


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process, its exited children, and its live children
    (the persistent DataLoader workers) read from /proc."""
    total = time.process_time() + sum(
        getattr(resource.getrusage(resource.RUSAGE_CHILDREN), k) for k in ("ru_utime", "ru_stime"))
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in _child_pids(os.getpid()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


class CpuClock:
    """Wraps ``ssd_ext.engine.train.evaluate_model`` so that every evaluation records the CPU
    seconds spent training so far (evaluations themselves excluded)."""

    def __init__(self) -> None:
        import ssd_ext.engine.train as train_module

        self._module = train_module
        self._evaluate = train_module.evaluate_model
        self.eval_cpu = 0.0
        self.at_eval: list[float] = []
        self.start = cpu_seconds()

    def __enter__(self) -> CpuClock:
        def timed(*args, **kwargs):
            before = cpu_seconds()
            self.at_eval.append(before - self.start - self.eval_cpu)
            try:
                return self._evaluate(*args, **kwargs)
            finally:
                self.eval_cpu += cpu_seconds() - before

        self._module.evaluate_model = timed
        return self

    def __exit__(self, *exc) -> None:
        self._module.evaluate_model = self._evaluate


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
    parser.add_argument("--budget", type=float, default=300.0,
                        help="the goal's training time, wall seconds on an idle machine")
    parser.add_argument("--cpu-budget", type=float, default=600.0,
                        help="the goal's training time in CPU seconds (5 minutes x 2 cores)")
    parser.add_argument("--loader-only", action="store_true", help="measure the data pipeline alone")
    parser.add_argument("--skip-loader", action="store_true", help="do not measure the data pipeline alone")
    args, overrides = parser.parse_known_args(argv)

    from ssd_ext.engine.config import get_preset, parse_train_args
    from ssd_ext.engine.train import fit, read_metrics

    config, _ = parse_train_args(["--output_dir", args.out, "--overwrite", "true", *overrides],
                                 get_preset("synthetic_small"))
    load_before = _load()
    print(f"uptime before: {_uptime()}", flush=True)
    fresh, cached = (float("nan"),) * 2 if args.skip_loader else loader_images_per_second(config)
    if args.loader_only:
        print(f"- data pipeline alone (one process): {fresh:.0f} images/s rendering fresh pictures, "
              f"{cached:.0f} images/s on cached ones; load average {load_before}")
        return 0
    with CpuClock() as clock:
        summary = fit(config)
    load_after = _load()
    evals = [r for r in read_metrics(Path(args.out) / "metrics.jsonl") if "AP" in r]
    for record, cpu in zip(evals, clock.at_eval, strict=False):
        record["train_cpu_s"] = cpu
    train_cpu = clock.at_eval[-1] if clock.at_eval else float("nan")
    within = [r for r in evals if r.get("train_cpu_s", float("inf")) <= args.cpu_budget]
    best_within = max(within, key=lambda r: r["AP"]) if within else None
    final = summary["metrics"]
    lines = [
        f"machine: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads by default; load average {load_before} before, "
        f"{load_after} after",
        f"config: {' '.join(overrides) or 'the synthetic_small preset as it is'}",
        f"data pipeline alone (one process, as in the loader worker): {fresh:.0f} images/s rendering "
        f"fresh pictures, {cached:.0f} images/s on cached ones",
        f"training: {summary['iterations']} iterations of {config.train.batch_size} in "
        f"{summary['train_seconds']:.0f} s wall = {summary['train_images_per_second']:.1f} images/s; "
        f"{train_cpu:.0f} CPU seconds (process + loader workers, evaluation excluded) = "
        f"{summary['iterations'] * config.train.batch_size / train_cpu:.1f} images per CPU second",
        f"held-out ({config.data.synthetic_val_images} images) at the end: AP {final['AP']:.3f}, "
        f"AP50 {final['AP50']:.3f}, AP75 {final['AP75']:.3f}",
        "evaluations (training CPU s / wall s -> AP / AP50 / AP75): "
        + ", ".join(f"{r.get('train_cpu_s', float('nan')):.0f} / {r['train_time_s']:.0f} s -> "
                    f"{r['AP']:.3f} / {r['AP50']:.3f} / {r['AP75']:.3f}" for r in evals),
    ]
    if best_within is not None:
        lines.append(f"best within {args.cpu_budget:.0f} CPU s of training: AP {best_within['AP']:.3f}, "
                     f"AP50 {best_within['AP50']:.3f} (at {best_within['train_cpu_s']:.0f} CPU s)")
    goal = final["AP"] >= 0.70 and final["AP50"] >= 0.95 and train_cpu <= args.cpu_budget
    verdict = "met" if goal else "NOT met"
    lines.append(f"goal (AP >= 0.70 and AP50 >= 0.95 within {args.cpu_budget:.0f} CPU s, i.e. "
                 f"{args.budget:.0f} s on an idle 2-core machine): {verdict}")
    lines.append(f"uptime after: {_uptime()}")
    text = "\n".join(f"- {line}" for line in lines)
    print(text)
    with open(Path(args.out) / "bench.json", "w") as handle:
        json.dump({"summary": {k: v for k, v in summary.items() if k != "model"}, "loader_fresh": fresh,
                   "loader_cached": cached, "train_cpu_seconds": train_cpu,
                   "evaluations": evals, "uptime": _uptime(), "load_before": load_before,
                   "load_after": load_after,
                   "lines": lines}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
