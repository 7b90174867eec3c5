"""The cost of the SSD paper's model switches: prior count, parameters, convolution MACs and the
forward time of each variant of one model, side by side in one run.

    python -m benchmarks.bench_switches [--model ssd300] [--device cpu] [--batch 1] [--threads 2]
                                        [--no-time] [--out DIR]

Variants: the model's defaults, the non-atrous base (``atrous=False``; SSD300/SSD512 only), the
aspect-ratio switches of the paper's Table 2 and the level switches of its Table 3 (as in the
``paper`` ablation study). Parameters and MACs (multiply-accumulates of every convolution, one
image) are counted on the meta device, so they cost no memory; the forward times (median
over repeats after warm-up, the variants interleaved so that load on a shared machine hits them
alike) run the backbone and heads on random weights at the model's input size, without the
post-processing. Writes ``switches.json`` and ``switches.md`` into ``--out`` when given.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssd_ext.bench.harness import cpu_name, time_interleaved
from ssd_ext.models import build_model

_LEVELS = {"ssd300": 6, "ssd512": 7, "ssd_small": 5, "rfb300": 6, "rfb512": 7, "rfb_small": 5}


def variants(model: str) -> dict[str, dict[str, Any]]:
    """Switch sets of the paper's Tables 2 and 3 for ``model``."""
    levels = _LEVELS[model]
    out: dict[str, dict[str, Any]] = {"default": {}}
    if model in ("ssd300", "ssd512"):
        out["no_atrous"] = {"atrous": False}
    out["no_ratio_3"] = {"aspect_ratios": [[2.0]] * levels}
    out["no_ratio_2_3"] = {"aspect_ratios": [[]] * levels}
    for dropped in range(1, levels - 1):
        out[f"drop_coarsest_{dropped}"] = {"levels": list(range(levels - dropped))}
    out["second_level_only"] = {"levels": [1]}
    return out


def conv_macs(model: nn.Module, size: int) -> int:
    """Multiply-accumulates of every Conv2d for one ``size`` x ``size`` image (meta tensors)."""
    total = 0

    def count(module: nn.Conv2d, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        total += output.numel() * per_output

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        model(torch.empty(1, 3, size, size, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def describe(model_name: str, switches: dict[str, Any]) -> dict[str, Any]:
    """Priors, parameters and MACs of one variant (built on the meta device)."""
    with torch.device("meta"):
        model = build_model(model_name, 21, **switches)
        size = model.image_size[0]
        return {"switches": switches, "priors": model.num_priors,
                "boxes_per_location": model.prior_config.boxes_per_location,
                "parameters": sum(p.numel() for p in model.parameters()), "macs": conv_macs(model, size)}


def forward_times(model_name: str, names: list[str], device: str,
                  batch: int) -> dict[str, dict[str, float]]:
    """Median forward time of each variant, interleaved."""
    table = variants(model_name)
    calls = {}
    for name in names:
        torch.manual_seed(0)
        model = build_model(model_name, 21, **table[name]).to(device).eval()
        images = torch.randn(batch, 3, *model.image_size, device=device)

        def call(model: nn.Module = model, images: torch.Tensor = images) -> None:
            with torch.inference_mode():
                model(images)

        calls[name] = call
    return time_interleaved(calls, device, min_time_s=1.0, max_repeats=30)


def _table_line(name: str, row: dict[str, Any], default_forward: dict[str, float] | None) -> str:
    forward = row.get("forward")
    ratio = forward["median_ms"] / default_forward["median_ms"] if forward and default_forward else None
    cells = [name, str(row["priors"]), str(row["boxes_per_location"]), f"{row['parameters'] / 1e6:.1f}",
             f"{row['macs'] / 1e9:.2f}", f"{forward['median_ms']:.1f}" if forward else "-",
             "-" if ratio is None else f"{ratio:.2f}"]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ssd300", choices=sorted(_LEVELS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--only", nargs="*", help="time only these variants (default: all)")
    parser.add_argument("--no-time", action="store_true", help="count only; run nothing")
    parser.add_argument("--out", help="folder for switches.json and switches.md")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = {name: describe(args.model, switches) for name, switches in variants(args.model).items()}
    if not args.no_time:
        timed = forward_times(args.model, args.only or list(rows), args.device, args.batch)
        for name, timing in timed.items():
            rows[name]["forward"] = timing
    lines = [f"{args.model}, batch {args.batch}, {args.device} ({cpu_name()}, "
             f"{torch.get_num_threads()} threads)", "",
             "| variant | priors | boxes per cell | params (M) | GMACs | forward ms (median) | vs default |",
             "|---|---|---|---|---|---|---|"]
    lines += [_table_line(name, row, rows["default"].get("forward")) for name, row in rows.items()]
    text = "\n".join(lines)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "switches.md").write_text(text + "\n")
        (out / "switches.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
