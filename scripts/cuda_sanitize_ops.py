"""Every ssd_ext op once on CUDA, small and at its edges, for compute-sanitizer (memcheck and
racecheck): `compute-sanitizer --tool memcheck python3 scripts/cuda_sanitize_ops.py`.

Exits 0 after a device synchronise when every op ran; without a GPU it says so and exits 0
(scripts/gpu_check.sh only calls it on a GPU machine).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "python")]

import ssd_reference as ref  # noqa: E402
from ssd_reference.testing import random_boxes, random_priors  # noqa: E402

import ssd_ext  # noqa: E402
from ssd_ext import ops  # noqa: E402


def main() -> int:
    if not (torch.cuda.is_available() and ssd_ext._C.cuda_compiled()):
        print("cuda_sanitize_ops: no CUDA device or no CUDA kernels; nothing to check")
        return 0
    dev = torch.device("cuda")
    generator = torch.Generator().manual_seed(0)
    priors = random_priors(1000, generator).to(dev)
    counts = [3, 0, 70, 1100 // 100]
    gt = random_boxes(sum(counts), generator, min_size=0.05).to(dev)
    labels = torch.randint(1, 21, (sum(counts),), generator=generator).to(dev)
    offsets = torch.tensor([0, 3, 3, 73, 84], device=dev)
    for dtype in (torch.float32, torch.float16, torch.float64):
        loc_t, lab_t = torch.ops.ssd_ext.match(gt.to(dtype), labels, offsets, priors.to(dtype),
                                               0.5, 0.1, 0.2)
    # Unordered and out-of-range offsets: ordered on the device, nothing out of bounds.
    torch.ops.ssd_ext.match(gt, labels, torch.tensor([0, 50, 3, 200, 84], device=dev), priors,
                            0.5, 0.1, 0.2)
    # More ground truths than priors: every prior forced.
    torch.ops.ssd_ext.match(gt, labels, offsets, priors[:5], 0.5, 0.1, 0.2)
    for num_priors in (256, 257, 700):
        loss = torch.randint(0, 3, (3, num_priors), generator=generator).float().to(dev)
        loss[0, 5] = float("nan")
        mined_labels = torch.randint(-1, 2, (3, num_priors), generator=generator).to(dev)
        ops.hard_negative_mining(loss, mined_labels)
    ops.hard_negative_mining(torch.rand(2, 300, dtype=torch.float64, device=dev), lab_t[:2, :300])
    for n, m in ((1, 1), (33, 65), (300, 31)):
        ops.box_iou(random_boxes(n, generator).to(dev), random_boxes(m, generator).to(dev))
    ops.box_iou(random_boxes(40, generator).to(dev).half(), random_boxes(7, generator).to(dev).half())
    boxes = random_boxes(4097, generator, max_size=0.2).to(dev)
    scores = torch.randint(0, 4, (4097,), generator=generator).float().to(dev)
    scores[[70, 4096]] = float("nan")
    ops.nms(boxes, scores, 0.5)
    ops.nms(boxes, scores, 0.5, max_output=100)
    ops.batched_nms(boxes, scores, (torch.arange(4097, device=dev) % 5), 0.5)
    ops.encode(ref.cxcywh_to_xyxy(priors), priors)
    ops.decode(torch.randn(2, 1000, 4, generator=generator).to(dev), priors)
    loc = torch.randn(3, 1000, 4, generator=generator).to(dev)
    conf = torch.randint(0, 3, (3, 1000, 6), generator=generator).float().to(dev)
    for candidates, max_detections in ((7, 50), (400, 200), (3, 500)):
        ops.detect_padded(loc, conf, priors, candidates_per_class=candidates,
                          max_detections=max_detections)
    ops.detect_padded(loc.bfloat16(), conf.bfloat16(), priors.bfloat16())
    ops.prior_boxes([38, 19, 10], 300, [30, 60, 111], [60, 111, 162], [[2], [2, 3], [2, 3]],
                    steps=[8, 16, 32], device=dev)
    torch.cuda.synchronize()
    print("cuda_sanitize_ops: every op ran")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
