"""``ssd export``: a checkpoint to a deployable file.

    ssd export --checkpoint C --out model.onnx [--format F] [--opset N] [--fp16]
               [--max-detections K] [--score-threshold T] [--iou-threshold T]
               [--calibration DIR]

Formats (``--format``, else from the suffix of ``--out``: ``.onnx`` -> onnx, ``.pt2`` -> pt2):
``onnx`` (the whole detector in standard ONNX), ``onnx-int8`` (the same with an int8 network,
calibrated on ``--calibration`` pictures), ``pt2`` (a ``torch.export`` program) and ``aoti``
(an AOTInductor package compiled for this machine). Wrong input raises :class:`ExportError`
(or ``CheckpointError``), which ``ssd`` prints as one error line.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .errors import ExportError

__all__ = ["FORMATS", "export_checkpoint", "main", "make_parser"]

FORMATS = ("onnx", "onnx-int8", "pt2", "aoti")
_BY_SUFFIX = {".onnx": "onnx", ".pt2": "pt2"}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssd export", description="Export a checkpoint for deployment: "
                                     "pictures in, detections out (docs/DEPLOY.md).")
    parser.add_argument("--checkpoint", required=True, help="an ssd_ext checkpoint (.pt)")
    parser.add_argument("--out", required=True, help="the file to write (model.onnx, model.pt2)")
    parser.add_argument("--format", default=None,
                        help=f"one of {', '.join(FORMATS)} (default: from the suffix of --out)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset, 17 or later (default 18)")
    parser.add_argument("--fp16", action="store_true", help="float16 network (for GPU runtimes)")
    parser.add_argument("--max-detections", type=int, default=None, help="K, detections per picture (100)")
    parser.add_argument("--score-threshold", type=float, default=None, help="lowest score kept (0.01)")
    parser.add_argument("--iou-threshold", type=float, default=None, help="NMS IoU threshold (0.45)")
    parser.add_argument("--calibration", default=None,
                        help="onnx-int8: a folder of calibration pictures (training pictures)")
    return parser


def resolve_format(fmt: str | None, out: str) -> str:
    """The export format: ``fmt`` when given, else the one the suffix of ``out`` names."""
    if fmt is None:
        suffix = Path(out).suffix.lower()
        if suffix not in _BY_SUFFIX:
            raise ExportError(f"cannot tell the format from --out {out!r} (suffix {suffix or 'none'!r}); "
                              f"name a .onnx or .pt2 file or give --format ({', '.join(FORMATS)})")
        return _BY_SUFFIX[suffix]
    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


def export_checkpoint(args: argparse.Namespace) -> Path:
    """Run the export ``args`` describe (the parsed options of :func:`make_parser`)."""
    from . import to_onnx
    from .module import DeployOptions
    from .onnx_export import DEFAULT_OPSET, check_writable

    fmt = resolve_format(args.format, args.out)
    if fmt == "onnx-int8" and not args.calibration:
        raise ExportError("--format onnx-int8 needs --calibration DIR, a folder of training pictures")
    if fmt != "onnx-int8" and args.calibration:
        raise ExportError(f"--calibration is for --format onnx-int8, not {fmt}")
    if fmt == "onnx-int8" and args.fp16:
        raise ExportError("--fp16 and --format onnx-int8 exclude each other (int8 quantises a float32 "
                          "network)")
    if fmt in ("pt2", "aoti") and args.opset is not None:
        raise ExportError(f"--opset is for the ONNX formats, not {fmt}")
    out = check_writable(args.out)
    settings = {"score_threshold": args.score_threshold, "iou_threshold": args.iou_threshold,
                "max_detections": args.max_detections}
    if fmt in ("pt2", "aoti"):
        from .program import aoti_package, export_program, save_program

        program = export_program(args.checkpoint, DeployOptions(fp16=args.fp16, **settings))
        return save_program(program, out) if fmt == "pt2" else aoti_package(program, out)
    opset = args.opset if args.opset is not None else DEFAULT_OPSET
    if fmt == "onnx":
        return to_onnx(args.checkpoint, out, opset=opset, fp16=args.fp16, **settings)
    from .quantize import quantize_onnx

    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".ssd_export.") as folder:
        float_model = to_onnx(args.checkpoint, os.path.join(folder, "float.onnx"), opset=opset,
                              fp16=args.fp16, **settings)
        return quantize_onnx(float_model, out, args.calibration)


def main(argv: Sequence[str]) -> int:
    """``ssd export ARGS``; returns the exit status (errors are raised for ``ssd`` to print)."""
    args = make_parser().parse_args(list(argv))
    path = export_checkpoint(args)
    size = path.stat().st_size / 2**20
    print(f"wrote {path} ({size:.1f} MiB)")
    return 0
