"""Command line: ``python -m ssd_ext <command>`` (also installed as ``ssd-ext``)."""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence


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
    return {
        "ssd_ext": ssd_ext.__version__,
        "torch": torch.__version__,
        "torch CUDA": torch.version.cuda or "none (CPU-only build)",
        "python": platform.python_version(),
        "CUDA kernels compiled": _C.cuda_compiled(),
        "CUDA architectures": _C.cuda_archs() or "-",
        "devices": ", ".join(devices),
        "ops": ", ".join(sorted(registered_ops())),
    }


def registered_ops() -> list[str]:
    import torch

    prefix = "ssd_ext::"
    return sorted(
        {s.name[len(prefix):] for s in torch._C._jit_get_all_schemas() if s.name.startswith(prefix)}
    )


def cmd_info(_: argparse.Namespace) -> int:
    for key, value in build_info().items():
        print(f"{key:>22}: {value}")
    return 0


def cmd_synth_voc(args: argparse.Namespace) -> int:
    from ssd_ext.data import SyntheticShapes, write_voc

    dataset = SyntheticShapes(num_images=args.num_images, image_size=args.image_size, seed=args.seed,
                              min_objects=args.min_objects, max_objects=args.max_objects)
    ids = write_voc(dataset, args.out, year=args.year, split=args.split, test_fraction=args.test_fraction,
                    image_format=args.format, progress=not args.quiet)
    if not args.quiet:
        print(f"wrote {len(ids)} images to {args.out}/VOC{args.year} (classes: "
              f"{', '.join(dataset.class_names[1:])})")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ssd_ext", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="version, build and devices")
    info.set_defaults(func=cmd_info)
    synth = commands.add_parser(
        "synth-voc", help="write the synthetic shapes set to disk in VOC layout",
        description="Write SyntheticShapes to OUT/VOC<year> (JPEGImages, Annotations, ImageSets/Main). "
                    "Read it back with ssd_ext.data.VOCDetection(OUT, [(year, split)], "
                    "class_names=ssd_ext.data.SHAPE_CLASSES).")
    synth.add_argument("--out", required=True, help="the VOCdevkit-like folder to write into")
    synth.add_argument("--num-images", type=int, required=True)
    synth.add_argument("--image-size", type=int, default=128)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--min-objects", type=int, default=1)
    synth.add_argument("--max-objects", type=int, default=4)
    synth.add_argument("--year", default="2007")
    synth.add_argument("--split", default="trainval")
    synth.add_argument("--test-fraction", type=float, default=0.0,
                       help="share of the images listed in test.txt instead of the split")
    synth.add_argument("--format", choices=("jpg", "png"), default="jpg")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=cmd_synth_voc)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
