"""The op benchmark (``ssd_ext.bench.bench_ops``) run from the source tree: results into
benchmarks/results, ``--update-docs`` into this tree's docs/BENCHMARKS.md.

    python -m benchmarks.bench_ops [--quick] [--device cpu|cuda|all] [--ops box_iou,nms]
                                   [--out DIR] [--update-docs]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "python")]

from ssd_ext.bench import bench_ops  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return bench_ops.main(argv, out=ROOT / "benchmarks" / "results", docs=ROOT / "docs" / "BENCHMARKS.md")


if __name__ == "__main__":
    sys.exit(main())
