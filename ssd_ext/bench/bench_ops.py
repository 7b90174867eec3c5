"""Op benchmark: every op of ssd_ext timed side by side with the plain-PyTorch reference and
the peers (torchvision) in one run, on the CPU and on CUDA when present.

    ssd bench [--quick] [--device cpu|cuda|all] [--ops box_iou,nms] [--out DIR]
              [--update-docs [--docs PATH]]
    python -m ssd_ext.bench.bench_ops [same options]
    python -m benchmarks.bench_ops [same options]        (from the source tree)

Writes ``ops.json``, ``ops.md`` (a markdown table) and ``ops.png`` (speedups of ssd_ext
over each other implementation) into ``--out`` (default ``ssd_bench`` in the current folder;
``benchmarks/results`` for the source tree's script); ``--update-docs`` also rewrites this
machine's table in ``--docs`` (default ``docs/BENCHMARKS.md`` under the current folder, the
source tree's docs for its script). Cases live in the ``cases_*`` modules of this package (a
``CASES`` list each); adding a module there adds its cases.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import platform
from pathlib import Path

import torch
from tqdm import tqdm

import ssd_ext
from ssd_ext import bench
from ssd_ext.bench.harness import Case, cpu_name, time_interleaved

DOCS_START = "<!-- ops-table:start -->"
DOCS_END = "<!-- ops-table:end -->"


def load_cases() -> list[Case]:
    """The CASES of every ``cases_*`` module of ssd_ext.bench, in module-name order."""
    cases: list[Case] = []
    names = [info.name for info in pkgutil.iter_modules(bench.__path__)]
    for name in sorted(name for name in names if name.startswith("cases_")):
        cases.extend(importlib.import_module(f"{bench.__name__}.{name}").CASES)
    return cases


def machine_description() -> dict[str, object]:
    info: dict[str, object] = {
        "cpu": cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "ssd_ext": ssd_ext.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def run_cases(cases: list[Case], devices: list[str], quick: bool) -> list[dict[str, object]]:
    """Times every implementation of a case interleaved: one call of each in turn, round after
    round, so that load from other processes on a shared machine hits them all alike."""
    work = [(case, device) for case in cases if case.quick or not quick
            for device in devices if device in case.devices]
    rows = []
    min_time = 0.1 if quick else 0.3
    for case, device in tqdm(work, desc="benchmark", unit="case"):
        timed: dict[str, object] = {}
        case_rows: dict[str, dict[str, object]] = {}
        for impl_name, factory in case.impls.items():
            if device not in case.impl_devices.get(impl_name, (device,)):
                continue
            row: dict[str, object] = {"op": case.op, "params": case.params, "device": device,
                                      "impl": impl_name}
            case_rows[impl_name] = row
            try:
                timed[impl_name] = factory(device)
            except ImportError as error:  # a peer that is not installed here
                row["error"] = f"not installed: {error.name}"
        for impl_name, timing in time_interleaved(timed, device, min_time_s=min_time).items():
            case_rows[impl_name].update(timing)
        rows.extend(case_rows.values())
        if device == "cuda":
            torch.cuda.empty_cache()
    add_speedups(rows)
    return rows


def add_speedups(rows: list[dict[str, object]]) -> None:
    """speedup = other implementation's median / ssd_ext's median, per (op, params, device)."""
    ours = {(r["op"], r["params"], r["device"]): r["median_ms"]
            for r in rows if r["impl"] == "ssd_ext" and "median_ms" in r}
    for row in rows:
        key = (row["op"], row["params"], row["device"])
        if row["impl"] != "ssd_ext" and "median_ms" in row and key in ours:
            row["ssd_ext_speedup"] = row["median_ms"] / ours[key]


def markdown_table(rows: list[dict[str, object]], machine: dict[str, object]) -> str:
    lines = [
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()),
        "",
        "| op | params | device | implementation | median ms | ssd_ext speedup |",
        "|---|---|---|---|---:|---:|",
    ]
    for row in rows:
        time_text = f"{row['median_ms']:.3f}" if "median_ms" in row else row.get("error", "-")
        speed = row.get("ssd_ext_speedup")
        speed_text = f"**{speed:.2f}x**" if speed is not None else ""
        lines.append(f"| {row['op']} | {row['params']} | {row['device']} | {row['impl']} "
                     f"| {time_text} | {speed_text} |")
    return "\n".join(lines) + "\n"


def speedup_chart(rows: list[dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [(f"{r['op']} {r['params']} [{r['device']}] vs {r['impl']}", r["ssd_ext_speedup"])
            for r in rows if "ssd_ext_speedup" in r]
    if not bars:
        return
    labels, values = zip(*bars, strict=True)
    fig, axis = plt.subplots(figsize=(10, 0.32 * len(bars) + 1.2))
    colors = ["tab:green" if v >= 1 else "tab:red" for v in values]
    axis.barh(range(len(bars)), values, color=colors)
    axis.set_yticks(range(len(bars)), labels, fontsize=8)
    axis.invert_yaxis()
    axis.set_xscale("log")
    axis.axvline(1.0, color="black", linewidth=0.8)
    axis.set_xlabel("ssd_ext speedup (other implementation's time / ours), log scale")
    axis.set_title("ssd_ext op speed, measured side by side in one run")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def update_docs(docs: Path, table: str, machine_label: str) -> None:
    """Replaces this machine's table in `docs` (an existing markdown file), or appends one."""
    if not docs.is_file():
        raise SystemExit(f"--update-docs: no {docs} (run from the repository root, or pass --docs)")
    text = docs.read_text()
    start = f"{DOCS_START} {machine_label}"
    block = f"{start}\n{table}{DOCS_END}"
    if start in text:
        head, rest = text.split(start, 1)
        tail = rest.split(DOCS_END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + f"\n\n## {machine_label}\n\n{block}\n"
    docs.write_text(text)


def parse_args(argv: list[str] | None, out: Path, docs: Path) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ssd bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the short set of cases")
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--ops", default="", help="comma-separated op names to run")
    parser.add_argument("--out", type=Path, default=out, help=f"the folder to write into (default {out})")
    parser.add_argument("--update-docs", action="store_true",
                        help="rewrite this machine's table in --docs")
    parser.add_argument("--docs", type=Path, default=docs, help=f"the markdown file of --update-docs "
                        f"(default {docs})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, out: Path = Path("ssd_bench"),
         docs: Path = Path("docs") / "BENCHMARKS.md") -> int:
    """Runs the benchmark with command-line arguments `argv`; `out` and `docs` are the defaults
    of ``--out`` and ``--docs``. Returns the exit status."""
    args = parse_args(argv, out, docs)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not (torch.cuda.is_available() and ssd_ext._C.cuda_compiled()):
        if args.device == "cuda":
            raise SystemExit("--device cuda: no CUDA device, or ssd_ext was built without CUDA")
        devices.remove("cuda")
    cases = load_cases()
    if args.ops:
        wanted = {name.strip() for name in args.ops.split(",")}
        unknown = wanted - {case.op for case in cases}
        if unknown:
            raise SystemExit(f"--ops: unknown op(s) {sorted(unknown)}")
        cases = [case for case in cases if case.op in wanted]
    machine = machine_description()
    rows = run_cases(cases, devices, quick=args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ops.json").write_text(json.dumps({"machine": machine, "results": rows}, indent=2))
    table = markdown_table(rows, machine)
    (args.out / "ops.md").write_text(table)
    speedup_chart(rows, args.out / "ops.png")
    print(table)
    print(f"wrote {args.out / 'ops.json'}, ops.md, ops.png")
    if args.update_docs:
        label = "GPU: " + str(machine["gpu"]) if "gpu" in machine else "CPU: " + str(machine["cpu"])
        update_docs(args.docs, table, label + (" (quick)" if args.quick else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
