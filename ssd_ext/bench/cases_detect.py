"""Benchmark cases of the fused SSD detect against the reference and torchvision's
SSD.postprocess_detections on the same head outputs, priors and thresholds."""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import ssd_reference as ref
import torch

from ssd_ext import ops
from ssd_ext.bench.harness import Case, thread_rows
from ssd_ext.models import SSD300_VOC

IOU_THRESHOLD = 0.45
SCORE_THRESHOLD = 0.01
CANDIDATES_PER_CLASS = 400
MAX_DETECTIONS = 200
VARIANCES = (0.1, 0.2)


@functools.lru_cache(maxsize=1)
def ssd300_priors() -> torch.Tensor:
    """The 8732 SSD300 priors (cxcywh, normalised)."""
    return SSD300_VOC.build()


def _head_outputs(batch: int, num_classes: int, device: str):
    generator = torch.Generator().manual_seed(batch * 1000 + num_classes)
    priors = ssd300_priors()
    loc = torch.randn(batch, priors.shape[0], 4, generator=generator)
    conf = 3 * torch.randn(batch, priors.shape[0], num_classes, generator=generator)
    return loc.to(device), conf.to(device), priors.to(device)


def torchvision_postprocess(device: str, batch: int, num_classes: int):
    """torchvision's SSD.postprocess_detections, called unbound with the attributes it reads,
    on the same head outputs: anchors are our priors as xyxy pixels of a 300x300 image, and the
    box coder's weights (10, 10, 5, 5) are 1 / variances, so it decodes the same boxes."""
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.ssd import SSD

    loc, conf, priors = _head_outputs(batch, num_classes, device)
    anchors = ref.cxcywh_to_xyxy(priors) * 300
    detector = SimpleNamespace(
        box_coder=det_utils.BoxCoder(weights=(1 / VARIANCES[0], 1 / VARIANCES[0],
                                              1 / VARIANCES[1], 1 / VARIANCES[1]),
                                     bbox_xform_clip=math.log(1000.0 / 16)),
        score_thresh=SCORE_THRESHOLD,
        topk_candidates=CANDIDATES_PER_CLASS,
        nms_thresh=IOU_THRESHOLD,
        detections_per_img=MAX_DETECTIONS,
    )
    head_outputs = {"bbox_regression": loc, "cls_logits": conf}
    image_anchors = [anchors] * batch
    image_shapes = [(300, 300)] * batch
    return lambda: SSD.postprocess_detections(detector, head_outputs, image_anchors, image_shapes)


def _detect_case(batch: int, num_classes: int, quick: bool, with_reference: bool,
                 scaling: bool = False) -> Case:
    kwargs = dict(score_threshold=SCORE_THRESHOLD, iou_threshold=IOU_THRESHOLD,
                  candidates_per_class=CANDIDATES_PER_CLASS, max_detections=MAX_DETECTIONS,
                  variances=VARIANCES)

    def ours(device):
        loc, conf, priors = _head_outputs(batch, num_classes, device)
        return lambda: ops.detect(loc, conf, priors, **kwargs)

    def reference(device):
        loc, conf, priors = _head_outputs(batch, num_classes, device)
        return lambda: ref.detect(loc, conf, priors, **kwargs)

    def torchvision_impl(device):
        return torchvision_postprocess(device, batch, num_classes)

    impls = {"ssd_ext": ours, "torchvision SSD postprocess": torchvision_impl}
    if with_reference:
        impls["reference"] = reference
    threads = thread_rows(ours) if scaling else {}
    name = {21: "VOC", 81: "COCO"}[num_classes]
    return Case("detect", f"SSD300, B={batch}, {name} ({num_classes} classes)", {**impls, **threads},
                quick=quick, impl_devices=dict.fromkeys(threads, ("cpu",)))


CASES = [
    _detect_case(1, 21, quick=True, with_reference=True),
    _detect_case(8, 21, quick=True, with_reference=False, scaling=True),
    _detect_case(1, 81, quick=False, with_reference=True),
    _detect_case(8, 81, quick=False, with_reference=False),
    _detect_case(32, 21, quick=False, with_reference=False),
    _detect_case(32, 81, quick=False, with_reference=False),
]
