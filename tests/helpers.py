"""What several test files share: the devices to test on, reference tolerances, random inputs
(boxes, scores, head outputs, mining problems, SSD300/SSD512 priors), detection comparison, a
few optimiser steps on one batch, and the check that head outputs follow the prior order.

Test files import these by name (``from helpers import DEVICES``); ``conftest.py`` only holds
fixtures, and test files never import from each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import ssd_reference as ref
import torch
from ssd_reference.testing import random_boxes, random_priors
from torch import Tensor, nn

import ssd_ext
from ssd_ext.engine import MultiBoxLoss
from ssd_ext.engine.config import Config
from ssd_ext.engine.presets import get_preset

__all__ = [
    "CUDA_AVAILABLE", "DEVICES", "SMALL_PRIORS", "assert_close_to_reference", "assert_same_detections",
    "check_head_order", "cuda_only", "flat_tensors", "head_outputs", "mining_problem", "overfit_losses",
    "he_init", "order_ties", "random_boxes", "random_ground_truth", "random_priors", "seeded", "ssd_priors",
    "tiny_config",
    "unique_scores",
]

CUDA_AVAILABLE = torch.cuda.is_available() and ssd_ext._C.cuda_compiled()

# CPU always; CUDA whenever a GPU and the CUDA kernels are both present. The CUDA parameter
# is not generated at all otherwise, so nothing skips silently: `python -m ssd_ext info`
# and tests/test_build.py say which devices were covered.
DEVICES = ["cpu"] + (["cuda"] if CUDA_AVAILABLE else [])


def cuda_only(test: Callable) -> Callable:
    """Marked `cuda`; skipped with the reason when no GPU (or no CUDA kernels) is present."""
    skip = pytest.mark.skipif(not CUDA_AVAILABLE, reason="needs a CUDA device and the CUDA kernels")
    return pytest.mark.cuda(skip(test))


def seeded(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed` (inputs are drawn on the CPU, then moved)."""
    return torch.Generator().manual_seed(seed)


def flat_tensors(value: object) -> list[Tensor]:
    """The tensors of an op's output (a tensor, or nested tuples / lists of them), in order."""
    if isinstance(value, Tensor):
        return [value]
    return [t for item in value for t in flat_tensors(item)]


# SSD300 / SSD512 prior configurations with the default steps (image / feature map).
SSD300_CONFIG = dict(
    feature_map_sizes=[38, 19, 10, 5, 3, 1], image_size=300,
    min_sizes=[30, 60, 111, 162, 213, 264], max_sizes=[60, 111, 162, 213, 264, 315],
    aspect_ratios=[[2], [2, 3], [2, 3], [2, 3], [2], [2]],
)
SSD512_CONFIG = dict(
    feature_map_sizes=[64, 32, 16, 8, 4, 2, 1], image_size=512,
    min_sizes=[20.48, 51.2, 133.12, 215.04, 296.96, 378.88, 460.8],
    max_sizes=[51.2, 133.12, 215.04, 296.96, 378.88, 460.8, 542.72],
    aspect_ratios=[[2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]],
)
_SSD_PRIORS: dict[str, Tensor] = {}


def ssd_priors(name: str) -> Tensor:
    """The reference's priors of ``"ssd300"`` (8732) or ``"ssd512"`` (24564), built once."""
    if name not in _SSD_PRIORS:
        _SSD_PRIORS[name] = ref.prior_boxes(**(SSD300_CONFIG if name == "ssd300" else SSD512_CONFIG))
    return _SSD_PRIORS[name]


# A small SSD-like prior set: a 10x10 and a 5x5 grid with 3 shapes per cell (375 priors).
SMALL_PRIORS = ref.prior_boxes([10, 5], 100, [20, 45], [45, 80], [[2], [2]])


def head_outputs(batch: int, num_classes: int, seed: int, num_priors: int | None = None,
                 dtype: torch.dtype = torch.float32, sharp: float = 3.0) -> tuple[Tensor, Tensor]:
    """Random ``loc [B, P, 4]`` and ``conf_logits [B, P, C]`` (logits scaled by `sharp`) for
    `num_priors` priors (default: those of SMALL_PRIORS)."""
    generator = seeded(seed)
    num_priors = num_priors or SMALL_PRIORS.shape[0]
    loc = torch.randn(batch, num_priors, 4, generator=generator)
    conf = sharp * torch.randn(batch, num_priors, num_classes, generator=generator)
    return loc.to(dtype), conf.to(dtype)


def random_ground_truth(counts: list[int], generator: torch.Generator, min_size: float = 0.01,
                        max_size: float = 0.6, num_classes: int = 21) -> tuple[list[Tensor], list[Tensor]]:
    """A batch of ground truth for ``match``: per image ``counts[i]`` valid xyxy boxes (sides in
    [min_size, max_size]) and labels in 1..num_classes-1."""
    boxes = [random_boxes(g, generator, min_size=min_size, max_size=max_size) for g in counts]
    labels = [torch.randint(1, num_classes, (g,), generator=generator) for g in counts]
    return boxes, labels


def unique_scores(count: int, generator: torch.Generator) -> Tensor:
    """`count` distinct scores in (0, 1), in random order: no ties."""
    return (torch.randperm(count, generator=generator).to(torch.float32) + 1) / (count + 1)


def mining_problem(batch: int, num_priors: int, generator: torch.Generator, positive_rate: float = 0.1,
                   distinct_values: int | None = None) -> tuple[Tensor, Tensor]:
    """``(conf_loss, labels)`` of hard negative mining: losses in [0, 5) (or, with
    `distinct_values`, that many integer values: many ties) and a `positive_rate` share of
    labels in 1..20, the rest 0."""
    if distinct_values is None:
        loss = torch.rand(batch, num_priors, generator=generator) * 5
    else:
        loss = torch.randint(0, distinct_values, (batch, num_priors), generator=generator).float()
    labels = torch.where(torch.rand(batch, num_priors, generator=generator) < positive_rate,
                         torch.randint(1, 21, (batch, num_priors), generator=generator), 0)
    return loss, labels


def assert_same_detections(actual: list[dict], expected: list[dict], rtol: float = 1e-5,
                           atol: float = 1e-6) -> None:
    """Per image: the same labels in the same order, scores and boxes within the tolerance."""
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert got["labels"].dtype == torch.int64
        assert torch.equal(got["labels"].cpu(), want["labels"])
        assert_close_to_reference(got["scores"], want["scores"], rtol=rtol, atol=atol)
        assert_close_to_reference(got["boxes"], want["boxes"], rtol=rtol, atol=atol)


def assert_close_to_reference(actual: Tensor, expected: Tensor, rtol: float = 1e-5,
                              atol: float = 1e-6) -> None:
    """Float outputs within 1e-5 relative of the reference (docs/ARCHITECTURE.md "Testing")."""
    torch.testing.assert_close(actual.cpu(), expected.cpu(), rtol=rtol, atol=atol, equal_nan=True)


def overfit_losses(model: nn.Module, images: Tensor, targets: list[dict], steps: int,
                   lr: float = 3e-3) -> list[float]:
    """The MultiBox loss of ``model`` at each of ``steps`` Adam steps on the same batch."""
    criterion = MultiBoxLoss(model.priors, model.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loc, conf = model(images)
        loss = criterion(loc, conf, targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def check_head_order(model: nn.Module, features: list[Tensor], loc: Tensor, conf: Tensor) -> None:
    """Every checked (level, row, column, anchor) of the raw head maps of an SSD ``model``
    (its ``loc``/``conf`` convs per level) lands on the prior at that position of
    ``model.priors``, and the flattened ``loc``/``conf`` cover every prior once."""
    priors = model.priors.double()
    config = model.prior_config
    image_h, image_w = model.image_size
    offset = 0
    with torch.no_grad():
        for level, feature in enumerate(features):
            raw_loc, raw_conf = model.loc[level](feature), model.conf[level](feature)
            anchors = config.boxes_per_location[level]
            height, width = feature.shape[-2:]
            step_y, step_x = image_h / height, image_w / width
            if config.steps is not None:
                step_y = step_x = config.steps[level]
            for i, j, a in [(0, 0, 0), (height - 1, width - 1, anchors - 1), (height // 2, width - 1, 1)]:
                index = offset + (i * width + j) * anchors + a
                torch.testing.assert_close(loc[0, index], raw_loc[0, a * 4:(a + 1) * 4, i, j])
                classes = model.num_classes
                torch.testing.assert_close(conf[0, index], raw_conf[0, a * classes:(a + 1) * classes, i, j])
                assert priors[index, 0].item() == pytest.approx(min(1.0, (j + 0.5) * step_x / image_w))
                assert priors[index, 1].item() == pytest.approx(min(1.0, (i + 0.5) * step_y / image_h))
            offset += height * width * anchors
    assert offset == loc.shape[1] == conf.shape[1] == priors.shape[0]


def tiny_config(output_dir: str, **changes) -> Config:
    """ssd_small of width 8 on 48 synthetic 64-pixel pictures, 2 epochs of 6 iterations; 16
    validation and 16 test pictures. ``section__field=value`` changes a field."""
    config = get_preset("synthetic_small")
    config.output_dir = str(output_dir)
    config.model.kwargs = {"width": 8}
    synthetic = config.data.synthetic
    synthetic.train_images, synthetic.val_images, synthetic.test_images = 48, 16, 16
    synthetic.source_size = 64
    config.train.batch_size = 8
    config.train.progress = False
    config.train.tensorboard = False
    config.train.log_every = 2
    config.train.num_threads = 1
    config.data.num_workers = 0
    config.schedule.epochs = 2
    config.schedule.warmup_iters = 3
    config.checkpoint.every = 4
    config.checkpoint.keep_last = 10
    config.eval.every_epochs = 0
    config.eval.at_end = False
    config.eval.num_pictures = 0
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            setattr(getattr(config, section), field, value)
        else:
            setattr(config, section, value)
    return config


def he_init(model: nn.Module, batchnorm: bool = False) -> nn.Module:
    """He-normal convs and random biases (seed 0), so that activations neither vanish (torchvision's
    SSDLite init gives all-equal scores at random weights) nor tie; with ``batchnorm`` also random
    BatchNorm affine parameters and running statistics. Returns ``model``."""
    torch.manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / module.weight[0].numel()))
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.1)
            elif batchnorm and isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.8, 1.2)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.8, 1.25)
    return model


def order_ties(result: dict[str, Tensor]) -> Tensor:
    """A detection result's boxes sorted by (score desc, label, x1, y1): runs of equal scores in
    one canonical order, so two implementations that order exact ties differently compare."""
    boxes, scores, labels = result["boxes"], result["scores"], result["labels"]
    order = torch.arange(boxes.shape[0])
    for key in (boxes[:, 1], boxes[:, 0], labels.double(), -scores.double()):
        order = order[torch.sort(key[order], stable=True).indices]
    return boxes[order]
