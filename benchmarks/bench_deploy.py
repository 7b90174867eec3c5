"""Deployment speed and accuracy: eager, torch.compile, ONNX Runtime float32 and int8.

    python -m benchmarks.bench_deploy [--checkpoint CKPT] [--models small,ssd300] [--batches 1,8]
                                      [--threads 1] [--min-time 3] [--out benchmarks/results]
                                      [--update-docs]

For each model (``small``: the ``--checkpoint`` when given, else a random-weight ssd_small;
``ssd300``: random weights, 21 classes) and batch size it times, interleaved in one run, the
whole detector on uint8 pictures at the input size, post-processing included:

- ``eager``: :class:`ssd_ext.export.DeployableSSD` in PyTorch;
- ``compiled``: the same module under ``torch.compile`` (compiled once per batch size first);
- ``onnx fp32`` / ``onnx int8``: the exported graph and its static int8 quantisation
  (calibrated on 64 training pictures, or on synthetic ones without a checkpoint) in ONNX
  Runtime's CPU provider, ``--threads`` intra-op threads, spinning off (see the docs).

It also profiles the float32 graph in ONNX Runtime to give the post-processing's share of its
time (``ssd_ext.export.graph_parts.post_processing_node_names``), and, with
``--checkpoint``, the held-out AP (COCO AP and AP50, pycocotools) of eager, ONNX float32 and
ONNX int8 on the checkpoint's held-out split. The load average is recorded at the start and end.
``--update-docs`` rewrites the section between ``<!-- deploy-bench:begin/end -->`` in
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssd_ext.bench.harness import cpu_name, time_interleaved

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "BENCHMARKS.md"
BEGIN, END = "<!-- deploy-bench:begin -->", "<!-- deploy-bench:end -->"
IMPLS = ("eager", "compiled", "onnx fp32", "onnx int8")


@dataclass
class Config:
    checkpoint: str | None
    models: tuple[str, ...]
    batches: tuple[int, ...]
    threads: int
    min_time: float
    calibration: int
    out: Path
    update_docs: bool


def parse_args(argv: list[str]) -> Config:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_deploy",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="a trained ssd_small checkpoint (AP rows need it)")
    parser.add_argument("--models", default="small,ssd300")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads of PyTorch and ONNX Runtime (1: see docs/BENCHMARKS.md)")
    parser.add_argument("--min-time", type=float, default=3.0, help="seconds of samples per implementation")
    parser.add_argument("--calibration", type=int, default=64, help="int8 calibration pictures")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args(argv)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    unknown = [m for m in models if m not in ("small", "ssd300")]
    if unknown:
        parser.error(f"--models takes small and/or ssd300, got {unknown}")
    return Config(args.checkpoint, models, tuple(int(b) for b in args.batches.split(",")), args.threads,
                  args.min_time, args.calibration, Path(args.out), args.update_docs)


def progress(message: str) -> None:
    print(f"[bench_deploy {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_average() -> list[float]:
    with contextlib.suppress(OSError):
        return [round(v, 2) for v in os.getloadavg()]
    return []


# ------------------------------------------------------------------------------ the models


def held_out_and_training(checkpoint: str) -> tuple[Any, Any]:
    """The checkpoint's (test, training) datasets without transforms (raw pictures)."""
    from ssd_ext.data.build import build_dataset
    from ssd_ext.engine.checkpoint import load_checkpoint
    from ssd_ext.engine.config import config_from_dict

    config = config_from_dict(load_checkpoint(checkpoint)["config"])
    return (build_dataset(config.data, "test", transform=False),
            build_dataset(config.data, "train", transform=False))


def random_pictures(count: int, size: int, seed: int) -> list[np.ndarray]:
    """Smooth random colour fields (uint8 [H, W, 3]): calibration stand-ins without a dataset."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 8, 8, generator=generator)
    fields = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return list((fields * 255).round().byte().permute(0, 2, 3, 1).numpy())


def make_detector(name: str, config: Config) -> Any:
    from ssd_ext.engine.inference import Detector
    from ssd_ext.models import build_model

    if name == "small" and config.checkpoint:
        return Detector.from_checkpoint(config.checkpoint, device="cpu", score_threshold=0.01,
                                        max_detections=100)
    torch.manual_seed(0)
    model = build_model("ssd_small" if name == "small" else "ssd300", 21).eval()
    names = ["__background__"] + [f"class{k}" for k in range(1, 21)]
    return Detector(model, names, model.image_size, score_threshold=0.01, max_detections=100)


def calibration_pictures(name: str, config: Config, size: int) -> list[Any]:
    if name == "small" and config.checkpoint:
        _, train = held_out_and_training(config.checkpoint)
        return [train[index][0] for index in range(config.calibration)]
    return random_pictures(config.calibration, size, seed=1)


@dataclass
class Prepared:
    detector: Any
    module: torch.nn.Module
    fp32: Path
    int8: Path
    export_s: float
    quantize_s: float


def prepare(name: str, config: Config, folder: Path) -> Prepared:
    from ssd_ext.export import deployable, quantize_onnx, to_onnx

    detector = make_detector(name, config)
    module, _ = deployable(detector)
    start = time.perf_counter()
    fp32 = to_onnx(detector, folder / f"{name}.onnx")
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    int8 = quantize_onnx(fp32, folder / f"{name}_int8.onnx",
                         calibration_pictures(name, config, module.image_size[0]))
    return Prepared(detector, module, fp32, int8, export_s, time.perf_counter() - start)


def ort_session(path: Path, threads: int, profile_prefix: str | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # No spin-waiting after a run: on a shared 2-core machine a spinning pool steals the cores
    # of whatever runs next (here: the interleaved PyTorch rows).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------- speed


def benchmark_pictures(config: Config, size: tuple[int, int], count: int) -> torch.Tensor:
    """uint8 ``[count, 3, H, W]``: held-out pictures of the checkpoint when there is one (the
    post-processing's work depends on how many scores pass the threshold), else smooth random
    fields; resized to ``size``."""
    from ssd_ext.export.runtime import picture_array, resized_chw

    if config.checkpoint:
        held_out, _ = held_out_and_training(config.checkpoint)
        pictures = [picture_array(held_out[index][0]) for index in range(count)]
    else:
        pictures = random_pictures(count, size[0], seed=2)
    return torch.from_numpy(np.stack([resized_chw(p, size) for p in pictures]))


def _runners(prepared: Prepared, sessions: tuple[Any, Any], images: torch.Tensor) -> tuple[dict, float]:
    """The four implementations on ``images`` (zero-argument callables), and the seconds the
    first call of the compiled module took (its compilation)."""
    compiled = torch.compile(prepared.module, dynamic=False)
    start = time.perf_counter()
    with torch.no_grad():
        compiled(images)
    first_call_s = time.perf_counter() - start
    feed = {"images": images.numpy()}

    def in_torch(module: Any) -> Any:
        def run() -> object:
            with torch.no_grad():
                return module(images)

        return run

    return {"eager": in_torch(prepared.module), "compiled": in_torch(compiled),
            "onnx fp32": lambda: sessions[0].run(None, feed), "onnx int8": lambda: sessions[1].run(None, feed)
            }, first_call_s


def speed_rows(name: str, prepared: Prepared, config: Config) -> list[dict[str, Any]]:
    rows = []
    sessions = (ort_session(prepared.fp32, config.threads), ort_session(prepared.int8, config.threads))
    pictures = benchmark_pictures(config, prepared.module.image_size, max(config.batches))
    for batch in config.batches:
        runners, first_call_s = _runners(prepared, sessions, pictures[:batch].contiguous())
        progress(f"{name} batch {batch}: timing {', '.join(IMPLS)} interleaved")
        load_before = load_average()
        times = time_interleaved(runners, "cpu", min_time_s=config.min_time, max_repeats=200, warmup=2)
        eager_ms = times["eager"]["median_ms"]
        for impl in IMPLS:
            median_ms = times[impl]["median_ms"]
            rows.append({"model": name, "batch": batch, "impl": impl, "median_ms": median_ms,
                         "images_per_s": batch * 1e3 / median_ms, "repeats": times[impl]["repeats"],
                         "vs_eager": eager_ms / median_ms, "load": [load_before, load_average()],
                         "compile_first_call_s": first_call_s if impl == "compiled" else None})
    return rows


def post_processing_share(prepared: Prepared, images: np.ndarray, threads: int,
                          runs: int = 20) -> dict[str, float]:
    """ONNX Runtime's own profile of the float32 graph: the share of node time spent outside
    the network and the normalisation (softmax, decode, TopK, NMS, gathers); each node's
    median time over ``runs`` runs."""
    import onnx

    from ssd_ext.export.graph_parts import post_processing_node_names

    post_nodes = set(post_processing_node_names(onnx.load(str(prepared.fp32), load_external_data=False)))
    with tempfile.TemporaryDirectory() as folder:
        session = ort_session(prepared.fp32, threads, profile_prefix=os.path.join(folder, "profile"))
        for _ in range(runs):
            session.run(None, {"images": images})
        events = json.loads(Path(session.end_profiling()).read_text())
    durations: dict[str, list[float]] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            durations.setdefault(event["name"][: -len("_kernel_time")], []).append(float(event["dur"]))
    # Each node's median over the runs: a run slowed by another process counts like the rest.
    by_node = {node: statistics.median(values) for node, values in durations.items()}
    total = sum(by_node.values())
    post = sum(us for node, us in by_node.items() if node in post_nodes)
    return {"batch": len(images), "post_processing_ms_per_run": post / 1e3, "graph_ms_per_run": total / 1e3,
            "share": post / total if total else float("nan")}


# --------------------------------------------------------------------------------- AP


def ap_rows(prepared: Prepared, config: Config) -> list[dict[str, Any]]:
    """COCO AP / AP50 of eager, ONNX float32 and ONNX int8 on the checkpoint's held-out split."""
    from ssd_ext.engine.evaluation import evaluate_predictions
    from ssd_ext.export import OnnxDetector

    held_out, _ = held_out_and_training(config.checkpoint)
    pictures = [held_out[index][0] for index in range(len(held_out))]
    settings = {"score_threshold": 0.01, "batch_size": 8, "threads": config.threads}
    runners = {"eager": prepared.detector, "onnx fp32": OnnxDetector(prepared.fp32, **settings),
               "onnx int8": OnnxDetector(prepared.int8, **settings)}
    rows = []
    for impl, runner in runners.items():
        progress(f"held-out AP: {impl} over {len(pictures)} pictures")
        results = []
        for start in range(0, len(pictures), 8):
            results += runner(pictures[start:start + 8])
        predictions = [{"index": index, "boxes": r["boxes"], "scores": r["scores"], "labels": r["labels"]}
                       for index, r in enumerate(results)]
        with contextlib.redirect_stdout(sys.stderr):
            metrics = evaluate_predictions(predictions, held_out, metrics=("coco",)).metrics
        rows.append({"impl": impl, "AP": metrics["AP"], "AP50": metrics["AP50"], "pictures": len(pictures)})
    return rows


# ------------------------------------------------------------------------------ report


def markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    lines = [f"CPU: {machine['cpu']} ({machine['cores']} cores, shared), {machine['threads']} thread(s) for "
             f"PyTorch and ONNX Runtime (spinning off), torch {machine['torch']}, onnxruntime "
             f"{machine['onnxruntime']}; load average {machine['load_start']} at the start, "
             f"{machine['load_end']} at the end. `{result['command']}`", "",
             "| model | batch | eager img/s | compiled img/s | ONNX fp32 img/s | ONNX int8 img/s | "
             "fp32 / eager | int8 / fp32 |", "|---|---|---|---|---|---|---|---|"]
    rows = {(r["model"], r["batch"], r["impl"]): r for r in result["speed"]}
    for model, batch in dict.fromkeys((r["model"], r["batch"]) for r in result["speed"]):
        speed = {impl: rows[(model, batch, impl)]["images_per_s"] for impl in IMPLS}
        fp32_vs_eager = speed["onnx fp32"] / speed["eager"]
        int8_vs_fp32 = speed["onnx int8"] / speed["onnx fp32"]
        cells = " | ".join(f"{speed[i]:.1f}" for i in IMPLS)
        lines.append(f"| {model} | {batch} | {cells} | {fp32_vs_eager:.2f}x | {int8_vs_fp32:.2f}x |")
    lines += ["", "| model | batch | post-processing in the ONNX graph (ORT profile) | share of the graph's "
              "node time |", "|---|---|---|---|"]
    for share in result["post_processing"]:
        lines.append(f"| {share['model']} | {share['batch']} | {share['post_processing_ms_per_run']:.2f} ms "
                     f"of {share['graph_ms_per_run']:.2f} ms | {100 * share['share']:.1f}% |")
    if result.get("ap"):
        lines += ["", f"Held-out AP ({result['ap'][0]['pictures']} pictures of the checkpoint's held-out "
                  "split, pycocotools):", "", "| run | AP | AP50 |", "|---|---|---|"]
        lines += [f"| {r['impl']} | {r['AP']:.3f} | {r['AP50']:.3f} |" for r in result["ap"]]
    compile_s = {(r["model"], r["batch"]): r["compile_first_call_s"] for r in result["speed"]
                 if r["impl"] == "compiled"}
    exports = [f"{m} {p['export_s']:.0f} s (int8 quantisation {p['quantize_s']:.0f} s)"
               for m, p in result["prepare"].items()]
    compiles = [f"{m} batch {b}: {s:.0f} s" for (m, b), s in compile_s.items()]
    lines += ["", f"First call of `torch.compile` (compilation): {', '.join(compiles)}; export: "
              f"{', '.join(exports)}."]
    return "\n".join(lines) + "\n"


def update_docs(table: str) -> None:
    text = DOCS.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOCS} has no {BEGIN} ... {END} section to rewrite")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOCS.write_text(f"{head}{BEGIN}\n{table}{END}{tail}")


def run(config: Config, command: str) -> dict[str, Any]:
    import onnxruntime

    torch.set_num_threads(config.threads)
    machine = {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": config.threads,
               "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
               "load_start": load_average()}
    result: dict[str, Any] = {"command": command, "speed": [], "post_processing": [], "prepare": {}, "ap": [],
                              "machine": machine}
    with tempfile.TemporaryDirectory() as folder:
        for name in config.models:
            progress(f"{name}: export and int8 quantisation")
            prepared = prepare(name, config, Path(folder))
            result["prepare"][name] = {"export_s": prepared.export_s, "quantize_s": prepared.quantize_s}
            result["speed"] += speed_rows(name, prepared, config)
            pictures = benchmark_pictures(config, prepared.module.image_size, max(config.batches)).numpy()
            for batch in config.batches:
                share = post_processing_share(prepared, pictures[:batch], config.threads)
                result["post_processing"].append({"model": name, **share})
            if name == "small" and config.checkpoint:
                result["ap"] = ap_rows(prepared, config)
    result["machine"]["load_end"] = load_average()
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    config = parse_args(args)
    result = run(config, "python -m benchmarks.bench_deploy " + " ".join(args))
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "deploy.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    (config.out / "deploy.md").write_text(table)
    print(table)
    if config.update_docs:
        update_docs(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
