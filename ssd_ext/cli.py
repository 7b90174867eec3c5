"""The ``ssd`` command line (also ``ssd-ext`` and ``python -m ssd_ext``).

    ssd train [--preset P] [--resume [CKPT_OR_RUN]] [--config FILE] [--section.field VALUE ...]
    ssd eval --checkpoint C [--data PATH] [--split S] [--images DIR]
    ssd detect IMAGES_OR_FOLDERS... (--checkpoint C | --onnx MODEL) --out DIR
    ssd export --checkpoint C --out model.onnx [options: ssd export --help]
    ssd data synth --out DIR [--layout voc|coco] [--num-images N] ...
    ssd bench [bench_ops options]
    ssd info

Wrong input (unknown preset, missing dataset path, a checkpoint of another model, unreadable
images) ends with one ``ssd: error: ...`` line and a nonzero exit status, never a traceback;
set ``SSD_DEBUG=1`` to see the traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


class UsageError(ValueError):
    """Wrong command line input (printed as one line, exit status 2)."""


def _parallel_backend(extension) -> str:  # noqa: ANN001 - the compiled module
    """The parallel backend the CPU kernels were compiled with, next to torch's, and the
    threads they may use now (``torch.set_num_threads``)."""
    info = extension.parallel_info()
    note = "" if info["backend"] == info["torch_backend"] else f" (torch: {info['torch_backend']})"
    return f"{info['backend']}{note}, {info['num_threads']} threads"


def build_info() -> dict[str, object]:
    """What was compiled and what this process can see."""
    import torch

    import ssd_ext
    from ssd_ext import _C

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [
            f"cuda:{i} ({torch.cuda.get_device_name(i)}, "
            f"sm_{''.join(map(str, torch.cuda.get_device_capability(i)))})"
            for i in range(torch.cuda.device_count())
        ]
    from ssd_ext.engine.config import PRESETS
    from ssd_ext.models import MODEL_NAMES

    return {
        "ssd_ext": ssd_ext.__version__,
        "torch": torch.__version__,
        "torch CUDA": torch.version.cuda or "none (CPU-only build)",
        "python": f"{platform.python_version()} ({sys.executable})",
        "CUDA kernels compiled": _C.cuda_compiled(),
        "CUDA architectures": _C.cuda_archs() or "-",
        "CPU parallel backend": _parallel_backend(_C),
        "devices": ", ".join(devices),
        "ops": ", ".join(sorted(registered_ops())),
        "models": ", ".join(MODEL_NAMES),
        "presets": ", ".join(PRESETS),
    }


def registered_ops() -> list[str]:
    import torch

    prefix = "ssd_ext::"
    return sorted(
        {s.name[len(prefix):] for s in torch._C._jit_get_all_schemas() if s.name.startswith(prefix)}
    )


# --------------------------------------------------------------------------------------------
# commands


def cmd_info(_: argparse.Namespace) -> int:
    for key, value in build_info().items():
        print(f"{key:>22}: {value}")
    return 0


def cmd_train(argv: Sequence[str]) -> int:
    """``ssd train``: the options come from the config dataclasses (see ssd_ext.engine.config)."""
    from ssd_ext.engine.config import get_preset, parse_train_args
    from ssd_ext.engine.train import config_of_checkpoint, fit, resolve_resume

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default="synthetic_small")
    pre.add_argument("--resume", nargs="?", const="auto", default=None)
    known, rest = pre.parse_known_args(list(argv))
    defaults = get_preset(known.preset)
    resume_path = None
    if known.resume is not None:
        # output_dir (for a bare --resume) may itself be overridden on the command line.
        provisional, _ = parse_train_args(rest, defaults)
        resume_path = resolve_resume(known.resume, provisional)
        defaults = config_of_checkpoint(resume_path)
    config, _ = parse_train_args(rest, defaults)
    if resume_path is not None:
        config.overwrite = False
    summary = fit(config, resume=resume_path)
    if summary.get("checkpoint"):  # rank 0
        _print_summary(summary)
    return 0


def _print_summary(summary: dict) -> None:
    metrics = summary.get("metrics") or {}
    print(f"trained {summary['iterations']} iterations in {summary['train_seconds']:.0f} s "
          f"({summary['train_images_per_second']:.1f} images/s, {summary['world_size']} process(es))")
    if metrics:
        shown = ", ".join(f"{k} {metrics[k]:.3f}" for k in ("AP", "AP50", "AP75") if k in metrics)
        print(f"held-out split: {shown}")
    if summary.get("nonfinite_skipped"):
        print(f"skipped steps with a non-finite loss: {summary['nonfinite_skipped']}")
    print(f"run folder:  {summary['output_dir']}")
    print(f"checkpoint:  {summary['checkpoint']}")
    if summary.get("best_checkpoint"):
        print(f"best (AP):   {summary['best_checkpoint']}")
    if summary.get("curves"):
        print(f"curves:      {summary['curves']}")
    if summary.get("pictures"):
        print(f"detections:  {summary['pictures']}/*.png")


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from ssd_ext.engine.checkpoint import model_from_checkpoint
    from ssd_ext.engine.config import config_from_dict
    from ssd_ext.engine.train import build_datasets, evaluate_model

    model, ckpt = model_from_checkpoint(args.checkpoint, use_ema=not args.no_ema)
    config = config_from_dict(ckpt["config"])
    if args.data is not None:
        data = Path(args.data)
        if data.suffix == ".json":
            if args.images is None:
                raise UsageError("--data FILE.json (COCO) needs --images DIR, the folder of its images")
            config.data.kind = "coco"
            config.data.val_split = [args.images, str(data)]
            config.data.train_split = config.data.val_split
        else:
            config.data.kind = "voc"
            config.data.root = str(data)
            config.data.val_split = [args.split]
            config.data.train_split = [args.split]
            config.data.class_names = list(ckpt["class_names"][1:])
    _, held_out = build_datasets(config)
    names = tuple(ckpt["class_names"])
    if tuple(held_out.class_names) != names:
        raise UsageError(f"the data's classes {list(held_out.class_names[1:])} differ from the checkpoint's "
                         f"{list(names[1:])}")
    config.eval.batch_size = args.batch_size
    device = torch.device(args.device if args.device != "auto" else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    result = evaluate_model(model, held_out, config, device, progress=True)
    print(result.table())
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "eval.json", "w") as handle:
            json.dump(result.to_json(), handle, indent=2)
        written = [out / "eval.json"]
        if hasattr(result, "plot_pr"):
            result.plot_pr(out / "precision_recall.png")
            written.append(out / "precision_recall.png")
        print("wrote " + ", ".join(str(p) for p in written))
    return 0


def expand_images(inputs: Sequence[str]) -> list[str]:
    """Files as given, folders as their image files (sorted); UsageError for a missing path."""
    paths: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UsageError(f"folder {item!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            paths += found
        elif path.is_file():
            paths.append(str(path))
        else:
            raise UsageError(f"{item!r} is neither an image file nor a folder")
    return paths


def _check_images_readable(paths: Sequence[str]) -> None:
    from PIL import Image, UnidentifiedImageError

    for path in paths:
        try:
            with Image.open(path) as image:
                image.verify()
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
            raise UsageError(f"cannot read image {path!r}: {error}") from None


def cmd_detect(args: argparse.Namespace) -> int:
    paths = expand_images(args.images)
    _check_images_readable(paths)
    try:
        from ssd_ext.engine.inference import Detector, detect_to_files
    except ImportError as error:  # pragma: no cover - until the inference module is present
        raise UsageError(f"ssd detect needs ssd_ext.engine.inference, which this build lacks "
                         f"({error})") from None
    device = None if args.device == "auto" else args.device
    if args.onnx:
        from ssd_ext.export import OnnxDetector

        detector = OnnxDetector(args.onnx, score_threshold=args.score_threshold)
    else:
        detector = Detector.from_checkpoint(args.checkpoint, device=device,
                                            score_threshold=args.score_threshold)
    results = detect_to_files(paths, detector, args.out)
    total = sum(len(r.get("boxes", [])) for r in results)
    print(f"{len(results)} image(s), {total} detection(s) above {args.score_threshold}: pictures and "
          f"detections.json in {args.out}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from ssd_ext.data import SyntheticShapes, write_coco, write_voc

    if args.num_images < 1:
        raise UsageError(f"--num-images must be >= 1, got {args.num_images}")
    dataset = SyntheticShapes(num_images=args.num_images, image_size=args.image_size, seed=args.seed,
                              min_objects=args.min_objects, max_objects=args.max_objects)
    if args.layout == "coco":
        image_dir = os.path.join(args.out, "images")
        annotations = os.path.join(args.out, "annotations.json")
        os.makedirs(args.out, exist_ok=True)
        write_coco(dataset, image_dir, annotations, progress=not args.quiet)
        if not args.quiet:
            print(f"wrote {len(dataset)} images to {image_dir} and {annotations}")
        return 0
    ids = write_voc(dataset, args.out, year=args.year, split=args.split, test_fraction=args.test_fraction,
                    image_format=args.format, progress=not args.quiet)
    if not args.quiet:
        print(f"wrote {len(ids)} images to {args.out}/VOC{args.year} (classes: "
              f"{', '.join(dataset.class_names[1:])})")
    return 0


def cmd_bench(argv: Sequence[str]) -> int:
    try:
        from benchmarks import bench_ops
    except ImportError:
        raise UsageError("ssd bench runs the op benchmark of the source tree (benchmarks/bench_ops.py); "
                         "run it from the repository root") from None
    result = bench_ops.main(list(argv))
    return int(result or 0)


# --------------------------------------------------------------------------------------------
# parser


def _add_synth_arguments(parser: argparse.ArgumentParser, with_layout: bool) -> None:
    parser.add_argument("--out", required=True, help="the folder to write into")
    if with_layout:
        parser.add_argument("--layout", choices=("voc", "coco"), default="voc",
                            help="voc: OUT/VOC<year>/...; coco: OUT/images/*.png + OUT/annotations.json")
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-objects", type=int, default=1)
    parser.add_argument("--max-objects", type=int, default=4)
    parser.add_argument("--year", default="2007", help="voc layout: the VOC<year> folder")
    parser.add_argument("--split", default="trainval", help="voc layout: the ImageSets/Main split name")
    parser.add_argument("--test-fraction", type=float, default=0.0,
                        help="voc layout: share of the images listed in test.txt instead of the split")
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg", help="voc layout: image format")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=cmd_synth, layout="voc")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssd", description="SSD detectors: train, evaluate, detect.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="ssd train --help lists every training option.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("train", help="train a detector (options: ssd train --help)", add_help=False)

    ev = commands.add_parser("eval", help="evaluate a checkpoint on a held-out set (COCO AP and VOC mAP)")
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--data", help="a VOCdevkit folder or a COCO json "
                    "(default: the checkpoint's held-out split)")
    ev.add_argument("--images", help="with a COCO json: the folder of its images")
    ev.add_argument("--split", default="2007:test", help="with a VOC folder: year:split (default 2007:test)")
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--device", default="auto")
    ev.add_argument("--no-ema", action="store_true", help="evaluate the raw weights, not the EMA ones")
    ev.add_argument("--out", help="write eval.json there")
    ev.set_defaults(func=cmd_eval)

    de = commands.add_parser("detect", help="draw a checkpoint's detections on pictures (PNG + JSON)")
    de.add_argument("images", nargs="+", metavar="IMAGES_OR_FOLDERS")
    source = de.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint")
    source.add_argument("--onnx", help="a model written by ssd export, run by ONNX Runtime")
    de.add_argument("--out", required=True, help="folder for the pictures and detections.json")
    de.add_argument("--score-threshold", type=float, default=0.3)
    de.add_argument("--device", default="auto")
    de.set_defaults(func=cmd_detect)

    data = commands.add_parser("data", help="dataset tools")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    synth = data_commands.add_parser("synth", help="write the synthetic shapes set in VOC or COCO layout")
    _add_synth_arguments(synth, with_layout=True)
    legacy = commands.add_parser("synth-voc", help="alias of 'data synth --layout voc'")
    _add_synth_arguments(legacy, with_layout=False)

    commands.add_parser("bench", help="the op benchmark (options: ssd bench --help)", add_help=False)
    commands.add_parser("export", help="export a checkpoint to ONNX, torch.export or AOTInductor "
                        "(options: ssd export --help)", add_help=False)
    info = commands.add_parser("info", help="version, build, devices, models and presets")
    info.set_defaults(func=cmd_info)
    return parser


def _run(argv: list[str]) -> int:
    parser = make_parser()
    if argv and argv[0] == "train":
        return cmd_train(argv[1:])
    if argv and argv[0] == "bench":
        return cmd_bench(argv[1:])
    if argv and argv[0] == "export":
        from ssd_ext.export.cli import main as export_main

        return export_main(argv[1:])
    args = parser.parse_args(argv)
    return args.func(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 success, 1 failure, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from ssd_ext.engine.checkpoint import CheckpointError
    from ssd_ext.engine.config import ConfigError
    from ssd_ext.engine.train import TrainingError

    try:
        return _run(argv)
    except (UsageError, ConfigError) as error:
        print(f"ssd: error: {error}", file=sys.stderr)
        return 2
    except (CheckpointError, TrainingError) as error:
        print(f"ssd: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ssd: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, TypeError, RuntimeError) as error:
        if os.environ.get("SSD_DEBUG"):
            raise
        print(f"ssd: error: {type(error).__name__}: {error} (SSD_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
