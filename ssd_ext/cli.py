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


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ssd_ext", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="version, build and devices")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
