"""The ``ssd`` command line (also ``ssd-ext`` and ``python -m ssd_ext``).

    ssd train [--preset P] [--resume [CKPT_OR_RUN]] [--config FILE] [--section.field VALUE ...]
    ssd eval --checkpoint C [--data PATH] [--split S] [--images DIR]
    ssd detect IMAGES_OR_FOLDERS... (--checkpoint C | --onnx MODEL) --out DIR
    ssd export --checkpoint C --out model.onnx [options: ssd export --help]
    ssd data synth --out DIR [--layout voc|coco] [--num-images N] ...
    ssd bench [bench_ops options]
    ssd ablate [--preset P] [--study paper|FILE] [--seeds N] --out DIR [--epochs N] [--dry-run]
    ssd info

Wrong input (unknown preset, missing dataset path, a checkpoint of another model, unreadable
pictures) ends with one ``ssd: error: ...`` line and a nonzero exit status, never a traceback;
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
from typing import Any

__all__ = ["UsageError", "build_info", "main", "make_parser"]


class UsageError(ValueError):
    """Wrong command line input (printed as one line, exit status 2)."""


class PartialFailure(RuntimeError):
    """Some of the work failed, the rest was done (printed as one line, exit status 1)."""


# --------------------------------------------------------------------------------------------
# ssd info


def _parallel_backend(extension: Any) -> str:
    """The CPU kernels' parallel backend, next to torch's, and the threads they may use now."""
    info = extension.parallel_info()
    note = "" if info["backend"] == info["torch_backend"] else f" (torch: {info['torch_backend']})"
    return f"{info['backend']}{note}, {info['num_threads']} threads"


def registered_ops() -> list[str]:
    import torch

    prefix = "ssd_ext::"
    schemas = torch._C._jit_get_all_schemas()
    return sorted({s.name[len(prefix):] for s in schemas if s.name.startswith(prefix)})


def build_info() -> dict[str, object]:
    """What was compiled and what this process can see."""
    import torch

    import ssd_ext
    from ssd_ext import _C
    from ssd_ext.engine.presets import PRESETS
    from ssd_ext.models import MODEL_NAMES

    devices = ["cpu"]
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        capability = "".join(map(str, torch.cuda.get_device_capability(i)))
        devices.append(f"cuda:{i} ({torch.cuda.get_device_name(i)}, sm_{capability})")
    return {
        "ssd_ext": ssd_ext.__version__,
        "torch": torch.__version__,
        "torch CUDA": torch.version.cuda or "none (CPU-only build)",
        "python": f"{platform.python_version()} ({sys.executable})",
        "CUDA kernels compiled": _C.cuda_compiled(),
        "CUDA architectures": _C.cuda_archs() or "-",
        "CPU parallel backend": _parallel_backend(_C),
        "devices": ", ".join(devices),
        "ops": ", ".join(registered_ops()),
        "models": ", ".join(MODEL_NAMES),
        "presets": ", ".join(PRESETS),
    }


def cmd_info(_: argparse.Namespace) -> int:
    for key, value in build_info().items():
        print(f"{key:>22}: {value}")
    return 0


# --------------------------------------------------------------------------------------------
# ssd train


def cmd_train(argv: Sequence[str]) -> int:
    """``ssd train``: the options come from the config dataclasses (see ssd_ext.engine.config)."""
    from ssd_ext.engine.checkpoint import config_of_checkpoint, resolve_resume
    from ssd_ext.engine.config import parse_train_args
    from ssd_ext.engine.presets import get_preset
    from ssd_ext.engine.train import fit

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default="synthetic_small")
    pre.add_argument("--resume", nargs="?", const="auto", default=None)
    known, rest = pre.parse_known_args(list(argv))
    defaults = get_preset(known.preset)
    resume_path = None
    if known.resume is not None:
        # output_dir (for a bare --resume) may itself be overridden on the command line.
        provisional, _ = parse_train_args(rest, defaults)
        resume_path = resolve_resume(known.resume, provisional.output_dir)
        defaults = config_of_checkpoint(resume_path)
    config, _ = parse_train_args(rest, defaults)
    if resume_path is not None:
        config.overwrite = False
    summary = fit(config, resume=resume_path)
    if summary.get("checkpoint"):  # rank 0
        _print_summary(summary)
    return 0


def _metrics_line(metrics: dict[str, float]) -> str:
    return ", ".join(f"{key} {metrics[key]:.3f}" for key in ("AP", "AP50", "AP75") if key in metrics)


def _print_summary(summary: dict[str, Any]) -> None:
    print(f"trained {summary['iterations']} iterations in {summary['train_seconds']:.0f} s "
          f"({summary['train_images_per_second']:.1f} images/s, {summary['world_size']} process(es))")
    if summary.get("val_metrics"):
        print(f"validation split (selects best.pt): {_metrics_line(summary['val_metrics'])}")
    if summary.get("metrics"):
        print(f"held-out test split: {_metrics_line(summary['metrics'])}")
    if summary.get("nonfinite_skipped"):
        print(f"skipped steps with a non-finite loss: {summary['nonfinite_skipped']}")
    shown = (("run folder", "output_dir"), ("checkpoint", "checkpoint"), ("best (val AP)", "best_checkpoint"),
             ("curves", "curves"), ("detections", "pictures"))
    for title, key in shown:
        if summary.get(key):
            print(f"{title + ':':<15}{summary[key]}{'/*.png' if key == 'pictures' else ''}")


# --------------------------------------------------------------------------------------------
# ssd eval


def _eval_config(checkpoint: dict[str, Any], args: argparse.Namespace) -> Any:
    """The checkpoint's config, its test split replaced by ``--data`` when given."""
    from ssd_ext.data.config import COCOSplit
    from ssd_ext.engine.config import config_from_dict

    config = config_from_dict(checkpoint["config"])
    config.eval.batch_size = args.batch_size
    if args.data is None:
        return config
    if Path(args.data).suffix == ".json":
        if args.images is None:
            raise UsageError("--data FILE.json (COCO) needs --images DIR, the folder of its images")
        config.data.kind = "coco"
        config.data.coco.test = COCOSplit(images=args.images, annotations=args.data)
    else:
        config.data.kind = "voc"
        config.data.voc.root, config.data.voc.test = args.data, [args.split]
        config.data.voc.class_names = list(checkpoint["class_names"][1:])
    return config


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from ssd_ext.engine.checkpoint import load_checkpoint, model_from_checkpoint
    from ssd_ext.engine.evaluation import build_eval_dataset, evaluate_dataset

    checkpoint = load_checkpoint(args.checkpoint)
    model, _ = model_from_checkpoint(checkpoint, use_ema=not args.no_ema)
    config = _eval_config(checkpoint, args)
    dataset = build_eval_dataset(config, "test")
    names = tuple(checkpoint["class_names"])
    if tuple(dataset.class_names) != names:
        raise UsageError(f"the data's classes {list(dataset.class_names[1:])} differ from the checkpoint's "
                         f"{list(names[1:])}")
    device = torch.device(args.device if args.device != "auto" else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    result = evaluate_dataset(model.to(device), dataset, config.eval, device, progress=True)
    print(result.table())
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "eval.json", "w") as handle:
            json.dump(result.to_json(), handle, indent=2)
        result.plot_pr(out / "precision_recall.png")
        print(f"wrote {out / 'eval.json'}, {out / 'precision_recall.png'}")
    return 0


# --------------------------------------------------------------------------------------------
# ssd detect


def cmd_detect(args: argparse.Namespace) -> int:
    from ssd_ext.engine.inference import Detector, detect_to_files

    device = None if args.device == "auto" else args.device
    if args.onnx:
        from ssd_ext.export import OnnxDetector

        detector = OnnxDetector(args.onnx, score_threshold=args.score_threshold)
    else:
        detector = Detector.from_checkpoint(args.checkpoint, device=device,
                                            score_threshold=args.score_threshold)
    results = detect_to_files(args.images, detector, args.out)
    done = [r for r in results if "error" not in r]
    failed = [r for r in results if "error" in r]
    if not done:
        raise UsageError(_failure_text(failed))
    found = sum(len(r["detections"]) for r in done)
    print(f"{len(done)} image(s), {found} detection(s) above {args.score_threshold}: pictures and "
          f"detections.json in {args.out}")
    if failed:
        raise PartialFailure(f"{len(failed)} of {len(results)} input(s) failed ({_failure_text(failed)}); "
                             "the failures are listed in detections.json")
    return 0


def _failure_text(failed: list[dict[str, str]]) -> str:
    first = failed[0]["error"]
    if failed[0]["path"] not in first:
        first = f"{failed[0]['path']!r}: {first}"
    return first + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else "")


# --------------------------------------------------------------------------------------------
# ssd data synth, ssd bench


def cmd_synth(args: argparse.Namespace) -> int:
    from ssd_ext.data import SyntheticShapes, write_coco, write_voc

    if args.num_images < 1:
        raise UsageError(f"--num-images must be >= 1, got {args.num_images}")
    dataset = SyntheticShapes(num_images=args.num_images, image_size=args.image_size, seed=args.seed,
                              min_objects=args.min_objects, max_objects=args.max_objects)
    if args.layout == "coco":
        image_dir, annotations = os.path.join(args.out, "images"), os.path.join(args.out, "annotations.json")
        os.makedirs(args.out, exist_ok=True)
        write_coco(dataset, image_dir, annotations, progress=not args.quiet)
        written = f"wrote {len(dataset)} images to {image_dir} and {annotations}"
    else:
        ids = write_voc(dataset, args.out, year=args.year, split=args.split, test_fraction=args.test_fraction,
                        image_format=args.format, progress=not args.quiet)
        written = (f"wrote {len(ids)} images to {args.out}/VOC{args.year} (classes: "
                   f"{', '.join(dataset.class_names[1:])})")
    if not args.quiet:
        print(written)
    return 0


def cmd_bench(argv: Sequence[str]) -> int:
    from ssd_ext.bench import bench_ops  # installed with the package; imports the cases lazily

    return int(bench_ops.main(list(argv)) or 0)


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


def _add_eval_parser(commands: Any) -> None:
    parser = commands.add_parser("eval", help="evaluate a checkpoint on a held-out set (COCO AP and VOC mAP)")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", help="a VOCdevkit folder or a COCO json "
                        "(default: the checkpoint's test split)")
    parser.add_argument("--images", help="with a COCO json: the folder of its images")
    parser.add_argument("--split", default="2007:test",
                        help="with a VOC folder: year:split (default 2007:test)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-ema", action="store_true", help="evaluate the raw weights, not the EMA ones")
    parser.add_argument("--out", help="write eval.json and precision_recall.png there")
    parser.set_defaults(func=cmd_eval)


def _add_detect_parser(commands: Any) -> None:
    parser = commands.add_parser("detect", help="draw a checkpoint's detections on pictures (PNG + JSON)")
    parser.add_argument("images", nargs="+", metavar="IMAGES_OR_FOLDERS")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a checkpoint of ssd train")
    source.add_argument("--onnx", help="a model written by ssd export, run by ONNX Runtime")
    parser.add_argument("--out", required=True, help="folder for the pictures and detections.json")
    parser.add_argument("--score-threshold", type=float, default=0.3)
    parser.add_argument("--device", default="auto", help="with --checkpoint: where to run")
    parser.set_defaults(func=cmd_detect)


def _add_ablate_parser(commands: Any) -> None:
    from ssd_ext.engine.ablation import add_ablate_arguments, cmd_ablate

    parser = commands.add_parser("ablate", help="train design variants over seeds and tabulate them "
                                 "(the SSD paper's analysis, or your own study)")
    add_ablate_arguments(parser)
    parser.set_defaults(func=cmd_ablate)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssd", description="SSD detectors: train, evaluate, detect.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="ssd train --help lists every training option.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("train", help="train a detector (options: ssd train --help)", add_help=False)
    _add_eval_parser(commands)
    _add_detect_parser(commands)
    commands.add_parser("export", help="export a checkpoint to ONNX, torch.export or AOTInductor "
                        "(options: ssd export --help)", add_help=False)
    data = commands.add_parser("data", help="dataset tools")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    synth = data_commands.add_parser("synth", help="write the synthetic shapes set in VOC or COCO layout")
    _add_synth_arguments(synth, with_layout=True)
    _add_synth_arguments(commands.add_parser("synth-voc", help="alias of 'data synth --layout voc'"),
                         with_layout=False)
    _add_ablate_parser(commands)
    commands.add_parser("bench", help="the op benchmark (options: ssd bench --help)", add_help=False)
    info = commands.add_parser("info", help="version, build, devices, models and presets")
    info.set_defaults(func=cmd_info)
    return parser


# --------------------------------------------------------------------------------------------
# entry point

# Commands that parse their own options (a different parser library or a forwarded benchmark).
def cmd_export(argv: Sequence[str]) -> int:
    """``ssd export``: its options are parsed by ssd_ext.export.cli (ONNX Runtime is imported there)."""
    from ssd_ext.export.cli import main as export_main

    return export_main(argv)


_OWN_PARSERS = {"train": cmd_train, "bench": cmd_bench, "export": cmd_export}


def _run(argv: list[str]) -> int:
    if argv and argv[0] in _OWN_PARSERS:
        return _OWN_PARSERS[argv[0]](argv[1:])
    args = make_parser().parse_args(argv)
    return args.func(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 success, 1 failure, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from ssd_ext.engine.checkpoint import CheckpointError
    from ssd_ext.engine.loop import TrainingError
    from ssd_ext.errors import ConfigError, ExportError

    try:
        return _run(argv)
    except (UsageError, ConfigError, ExportError) as error:
        print(f"ssd: error: {error}", file=sys.stderr)
        return 2
    except (CheckpointError, TrainingError, PartialFailure) as error:
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
