"""Every op on CUDA beyond its own file: non-default streams, no host syncs, prior_boxes under
CUDA-graph capture (its tables as a kernel argument, and staged in pinned memory when too large
for one), MultiBoxLoss and model.detect at SSD300 size. Marked `cuda`; skipped with the reason
when no GPU (or no CUDA kernels) is present."""

from __future__ import annotations

import pytest
import ssd_reference as ref
import torch
from helpers import CUDA_AVAILABLE, flat_tensors, random_boxes, ssd_priors

from ssd_ext import ops
from ssd_ext.engine import MultiBoxLoss
from ssd_ext.models import build_model
from ssd_ext.models.priors import SSD300_VOC

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not CUDA_AVAILABLE, reason="needs a CUDA device and the CUDA kernels"),
]


def workload():
    """Inputs for every op on the GPU, and a function running all of them."""
    generator = torch.Generator().manual_seed(0)
    priors = ssd_priors("ssd300").cuda()
    counts = [3, 0, 12, 7]
    gt = random_boxes(sum(counts), generator, min_size=0.05).cuda()
    labels = torch.randint(1, 21, (sum(counts),), generator=generator).cuda()
    offsets = torch.tensor([0, 3, 3, 15, 22]).cuda()
    loc = torch.randn(4, priors.shape[0], 4, generator=generator).cuda()
    conf = (3 * torch.randn(4, priors.shape[0], 21, generator=generator)).cuda()
    loss = torch.rand(4, priors.shape[0], generator=generator).cuda()
    boxes = random_boxes(500, generator).cuda()
    scores = torch.rand(500, generator=generator).cuda()

    def run_all(with_host_sync_ops: bool = True):
        out = {}
        out["match"] = torch.ops.ssd_ext.match(gt, labels, offsets, priors, 0.5, 0.1, 0.2)
        out["mining"] = ops.hard_negative_mining(loss, out["match"][1])
        out["detect"] = ops.detect_padded(loc, conf, priors)
        out["encode"] = ops.encode(ref.cxcywh_to_xyxy(priors), priors)
        out["decode"] = ops.decode(loc, priors)
        out["box_iou"] = ops.box_iou(boxes, gt)
        out["priors"] = torch.ops.ssd_ext.prior_boxes.default(
            [38, 38, 19, 19], [300.0, 300.0], [30.0, 60.0], [60.0, 111.0], [2.0, 2.0, 3.0],
            [1, 2], [8.0, 8.0, 16.0, 16.0], 0.5, True, dtype=torch.float32,
            device=torch.device("cuda"))
        if with_host_sync_ops:  # their output size is data-dependent: one sync each
            out["nms"] = ops.nms(boxes, scores, 0.5)
            out["batched_nms"] = ops.batched_nms(boxes, scores, (scores * 5).long(), 0.5)
        return out

    return run_all


def test_every_op_on_a_non_default_stream_equals_the_default_stream():
    run_all = workload()
    expected = run_all()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        actual = run_all()
    stream.synchronize()
    for name, value in expected.items():
        for want, got in zip(flat_tensors(value), flat_tensors(actual[name]), strict=True):
            assert torch.equal(got, want), name


def test_no_host_sync_in_match_mining_detect_padded_coding_iou_priors():
    run_all = workload()
    run_all(with_host_sync_ops=False)  # warm-up: allocator, lazy init
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run_all(with_host_sync_ops=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


def test_prior_boxes_can_be_captured_in_a_cuda_graph():
    args = ([38, 38, 19, 19, 10, 10], [300.0, 300.0], [30.0, 60.0, 111.0], [60.0, 111.0, 162.0],
            [2.0, 2.0, 3.0, 2.0, 3.0], [1, 2, 2], [8.0, 8.0, 16.0, 16.0, 32.0, 32.0], 0.5, True)
    eager = torch.ops.ssd_ext.prior_boxes.default(*args, dtype=torch.float32,
                                                   device=torch.device("cuda"))
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        torch.ops.ssd_ext.prior_boxes.default(*args, dtype=torch.float32, device=torch.device("cuda"))
        with torch.cuda.graph(graph, stream=stream):
            captured = torch.ops.ssd_ext.prior_boxes.default(
                *args, dtype=torch.float32, device=torch.device("cuda"))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured, eager)
    assert torch.equal(eager.cpu(), torch.ops.ssd_ext.prior_boxes.default(
        *args, dtype=torch.float32, device=torch.device("cpu")))


def _prior_table_args(levels: int, ratios_per_level: int) -> tuple:
    """Flat prior_boxes arguments of `levels` levels of small feature maps, each with a max size
    and `ratios_per_level` aspect ratios: 2 + 2 * ratios_per_level cell shapes per level. The
    CUDA kernel takes its level table and shapes as a kernel argument up to 12 levels and 96
    shapes (2 * levels + 2 * shapes <= 216 doubles); past that it stages them in pinned memory."""
    fmaps = [v for level in range(levels) for v in (1 + level % 3, 2 + level % 2)]
    mins = [20.0 + 10.0 * level for level in range(levels)]
    maxes = [m + 15.0 for m in mins]
    ratios = [1.5 + 0.25 * k for _ in range(levels) for k in range(ratios_per_level)]
    steps = [v for level in range(levels) for v in (40.0 + level, 30.0 + level)]
    return (fmaps, [300.0, 240.0], mins, maxes, ratios, [ratios_per_level] * levels, steps, 0.5, True)


PRIOR_TABLES = {
    "largest-inline-12-levels-96-shapes": _prior_table_args(12, 3),
    "pinned-13-levels": _prior_table_args(13, 1),
    "pinned-110-shapes": _prior_table_args(1, 54),
}


def _cuda_priors(args: tuple) -> torch.Tensor:
    return torch.ops.ssd_ext.prior_boxes.default(*args, dtype=torch.float32, device=torch.device("cuda"))


@pytest.mark.parametrize("name", sorted(PRIOR_TABLES))
def test_prior_boxes_tables_of_any_size_replay_from_a_cuda_graph(name):
    """Captured, then replayed after other pinned-memory traffic: the replay's copies read the
    tables of the capture (pinned blocks used in a capture are kept for the graph), and the
    result is the CPU kernel's, bit for bit."""
    args = PRIOR_TABLES[name]
    expected = torch.ops.ssd_ext.prior_boxes.default(*args, dtype=torch.float32, device=torch.device("cpu"))
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        _cuda_priors(args)  # warm-up outside the capture
        with torch.cuda.graph(graph, stream=stream):
            captured = _cuda_priors(args)
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    assert torch.equal(captured.cpu(), expected)
    captured.zero_()
    # Other configurations staged through pinned memory in between, eagerly.
    for other in PRIOR_TABLES.values():
        if other is not args:
            _cuda_priors(other)
    torch.cuda.synchronize()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured.cpu(), expected)


def test_multibox_loss_and_model_detect_at_ssd300_on_cuda():
    torch.manual_seed(0)
    model = build_model("ssd300", 21).eval().cuda()
    images = torch.randn(2, 3, 300, 300, device="cuda")
    with torch.no_grad():
        loc, conf = model(images)
    # The loss from the same head outputs on both devices (cuDNN's convolutions differ from
    # the CPU's, so the network itself runs once, on the GPU).
    targets = [{"boxes": random_boxes(n, torch.Generator().manual_seed(n), min_size=0.05),
                "labels": torch.randint(1, 21, (n,))} for n in (4, 9)]
    priors = SSD300_VOC.build()
    cpu_loss = MultiBoxLoss(priors, 21)(loc.cpu(), conf.cpu(), targets)
    gpu_loss = MultiBoxLoss(priors.cuda(), 21).cuda()(
        loc, conf, [{k: v.cuda() for k, v in t.items()} for t in targets])
    for key, value in cpu_loss.items():
        torch.testing.assert_close(gpu_loss[key].cpu(), value, rtol=1e-4, atol=1e-4)
    # model.detect on CUDA is ops.detect of its own head outputs, scaled to input pixels.
    detections = model.detect(images)
    direct = ops.detect(loc, conf, model.priors)
    for got, want in zip(detections, direct, strict=True):
        assert got["boxes"].is_cuda
        assert torch.equal(got["labels"], want["labels"])
        assert torch.equal(got["boxes"], want["boxes"] * 300.0)
