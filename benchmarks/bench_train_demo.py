"""The demo's goal, measured: train the default preset (``synthetic_small``), then report the
COCO AP of the trained detector on the test split and on fresh splits of the same generator
(other seeds, never seen by training or selection), against the time spent training.

Time is reported twice: wall seconds (the goal's clock, meaningful on an idle machine) and
CPU seconds of the training process plus its loader workers (evaluation excluded), which
depend much less on how busy the machine is.

    python -m benchmarks.bench_train_demo [--out DIR] [--fresh-seeds 3 4] [ssd train overrides...]

Prints a markdown summary (machine, load, numbers) and writes it with every figure to
``<out>/bench.json``; the run folder itself is ``--out`` (default ``runs/bench_train_demo``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import torch

from ssd_ext.bench.harness import cpu_name

GOAL_AP, GOAL_AP50, GOAL_SECONDS = 0.75, 0.98, 300.0


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
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
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = time.process_time() + usage.ru_utime + usage.ru_stime
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in _child_pids(os.getpid()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


class CpuClock:
    """Wraps the trainer's ``evaluate_dataset`` so that every evaluation records the CPU
    seconds spent training so far (evaluations themselves excluded)."""

    def __init__(self) -> None:
        import ssd_ext.engine.train as train_module

        self._module = train_module
        self._evaluate = train_module.evaluate_dataset
        self.eval_cpu = 0.0
        self.at_eval: list[float] = []
        self.start = cpu_seconds()

    def __enter__(self) -> CpuClock:
        def timed(*args: Any, **kwargs: Any) -> Any:
            before = cpu_seconds()
            self.at_eval.append(before - self.start - self.eval_cpu)
            try:
                return self._evaluate(*args, **kwargs)
            finally:
                self.eval_cpu += cpu_seconds() - before

        self._module.evaluate_dataset = timed
        return self

    def __exit__(self, *exc: Any) -> None:
        self._module.evaluate_dataset = self._evaluate


def fresh_split_metrics(checkpoint: str, config: Any, seeds: list[int]) -> dict[int, dict[str, float]]:
    """The checkpoint's detector (EMA weights when kept) on fresh synthetic splits: the test
    split's size and generator settings, other seeds."""
    from ssd_ext.data.build import build_dataset
    from ssd_ext.engine.checkpoint import model_from_checkpoint
    from ssd_ext.engine.evaluation import evaluate_dataset

    model, _ = model_from_checkpoint(checkpoint)
    config = copy.deepcopy(config)
    results = {}
    for seed in seeds:
        config.data.synthetic.test_seed = seed
        dataset = build_dataset(config.data, "test")
        results[seed] = evaluate_dataset(model, dataset, config.eval, "cpu").metrics
    return results


def _verdict(metrics: list[dict[str, float]], seconds: float) -> str:
    met = all(m["AP"] >= GOAL_AP and m["AP50"] >= GOAL_AP50 for m in metrics) and seconds <= GOAL_SECONDS
    return (f"goal (AP >= {GOAL_AP} and AP50 >= {GOAL_AP50} on the test split and every fresh split, within "
            f"{GOAL_SECONDS:.0f} s of training): {'met' if met else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench_train_demo")
    parser.add_argument("--fresh-seeds", type=int, nargs="*", default=[3, 4],
                        help="seeds of the fresh synthetic splits evaluated after training")
    args, overrides = parser.parse_known_args(argv)

    from ssd_ext.engine.config import parse_train_args
    from ssd_ext.engine.presets import get_preset
    from ssd_ext.engine.train import fit

    config, _ = parse_train_args(["--output_dir", args.out, "--overwrite", "true", *overrides],
                                 get_preset("synthetic_small"))
    load_before = _load()
    with CpuClock() as clock:
        summary = fit(config)
    train_cpu = clock.at_eval[-1] if clock.at_eval else float("nan")
    load_after = _load()
    fresh = fresh_split_metrics(summary["checkpoint"], config, args.fresh_seeds)
    test = summary["metrics"]
    lines = [
        f"machine: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}; load average "
        f"{load_before} before, {load_after} after",
        f"config: {' '.join(overrides) or 'the synthetic_small preset as it is'}",
        f"training: {summary['iterations']} iterations of {config.train.batch_size} in "
        f"{summary['train_seconds']:.0f} s wall ({summary['train_images_per_second']:.1f} images/s), "
        f"{train_cpu:.0f} CPU seconds (process + loader workers, evaluation excluded)",
        f"validation split (selects best.pt): AP {summary['val_metrics'].get('AP', float('nan')):.3f}",
        f"test split (seed {config.data.synthetic.test_seed}): AP {test['AP']:.3f}, "
        f"AP50 {test['AP50']:.3f}, AP75 {test['AP75']:.3f}",
        *(f"fresh split (seed {seed}): AP {m['AP']:.3f}, AP50 {m['AP50']:.3f}, AP75 {m['AP75']:.3f}"
          for seed, m in fresh.items()),
        _verdict([test, *fresh.values()], summary["train_seconds"]),
    ]
    text = "\n".join(f"- {line}" for line in lines)
    print(text)
    with open(Path(args.out) / "bench.json", "w") as handle:
        json.dump({"summary": {k: v for k, v in summary.items() if k != "model"}, "fresh": fresh,
                   "train_cpu_seconds": train_cpu, "load_before": load_before, "load_after": load_after,
                   "lines": lines}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
