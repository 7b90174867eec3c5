"""SSD detectors: a backbone giving feature maps, 3x3 loc/conf heads, and priors.

``model(images)`` returns raw head outputs ``(loc [B, P, 4], conf_logits [B, P, C])`` whose
prior axis follows ``model.priors`` (level, row, column, box of the cell): each head's
``(B, A*K, H, W)`` output is permuted to ``(B, H, W, A*K)`` and flattened, so channel
``a*K + k`` of cell (i, j) is value k of the cell's a-th prior. ``model.detect(images)``
post-processes with ``ssd_ext.ops.detect`` and returns torchvision-style dicts with boxes in
input pixel coordinates.

Inputs are normalised images as the backbone's weights expect (see docs/ARCHITECTURE.md,
"Models and weights"); the model does no resizing or normalisation itself.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .head import SSDHead
from .priors import SSD300_VOC, SSD512_VOC, SSD_SMALL_160, PriorConfig, get_preset
from .registry import build_model, check_num_classes, list_models, register_model
from .small import SmallBackbone
from .switches import check_atrous, check_levels, derive_prior_config
from .vgg import VGG16Backbone

__all__ = ["SSD", "SSDHead", "ssd300", "ssd512", "ssd_small", "build_model", "resolve_priors", "assemble_ssd"]


def _check_variances(variances: object) -> tuple[float, float]:
    """Two positive finite numbers (center, size), or a clear error."""
    values = tuple(variances) if isinstance(variances, (tuple, list)) else None
    if (values is None or len(values) != 2
            or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)
            or not all(math.isfinite(v) and v > 0 for v in values)):
        raise ValueError(f"variances must be two positive finite numbers (center, size) such as "
                         f"(0.1, 0.2), got {variances!r}")
    return (float(values[0]), float(values[1]))


class SSD(nn.Module):
    """Single Shot MultiBox Detector over any backbone returning a list of feature maps.

    A detector is three parts: a backbone (images -> one feature map per level), a head
    (:class:`SSDHead`, or any module with the same interface) and a :class:`PriorConfig`.
    A new family (RFB Net, ``models/rfb.py``) brings its own backbone and prior preset and
    reuses this class.

    Args:
        backbone: module mapping ``[B, 3, H, W]`` to one feature map per prior level.
        in_channels: channels of each feature map.
        prior_config: the priors; its ``boxes_per_location`` sets the heads' anchors per cell and
            its ``feature_map_sizes`` must be what the backbone produces at ``image_size``.
        num_classes: classes including background (VOC 21, COCO 81).
        variances: the box coding variances used by ``detect`` (and the loss).
        head: the multibox head; ``None`` builds ``SSDHead(in_channels,
            prior_config.boxes_per_location, num_classes)``.

    Attributes:
        priors: ``[P, 4]`` cxcywh non-persistent buffer (follows ``.to(device)``, not saved).
        head: the :class:`SSDHead`. Its ``loc`` and ``conf`` ``nn.ModuleList`` s are registered
            on the detector itself as ``loc`` / ``conf``, so state-dict keys stay ``loc.N.*`` /
            ``conf.N.*`` (every checkpoint and converter written before the head was a separate
            part keeps loading); ``head`` holds the same modules and is not registered twice.
    """

    #: The layout inference on a CPU runs fastest in for this network (``Detector`` uses it):
    #: measured per model (docs/BENCHMARKS.md); factories of models faster in channels_last set it.
    cpu_inference_memory_format: torch.memory_format = torch.contiguous_format

    def __init__(self, backbone: nn.Module, in_channels: Sequence[int], prior_config: PriorConfig,
                 num_classes: int, variances: tuple[float, float] = (0.1, 0.2),
                 head: SSDHead | None = None) -> None:
        super().__init__()
        num_classes = check_num_classes(num_classes)
        if not isinstance(prior_config, PriorConfig):
            raise TypeError(f"prior_config must be a PriorConfig, got {type(prior_config).__name__}")
        if len(in_channels) != prior_config.num_levels:
            raise ValueError(
                f"backbone gives {len(in_channels)} feature maps but the prior config has "
                f"{prior_config.num_levels} levels"
            )
        anchors = prior_config.boxes_per_location
        if head is None:
            head = SSDHead(in_channels, anchors, num_classes)
        elif (list(head.boxes_per_location) != anchors or head.num_classes != num_classes):
            raise ValueError(f"head has boxes_per_location {list(head.boxes_per_location)} and "
                             f"{head.num_classes} classes; the priors need {anchors} and num_classes "
                             f"is {num_classes}")
        self.backbone = backbone
        self.prior_config = prior_config
        self.num_classes = num_classes
        self.variances = _check_variances(variances)
        self.loc = head.loc
        self.conf = head.conf
        object.__setattr__(self, "head", head)  # a plain attribute: its modules are registered above
        self.register_buffer("priors", prior_config.build(), persistent=False)

    @property
    def image_size(self) -> tuple[int, int]:
        """The ``(h, w)`` input size the priors were made for."""
        size = self.prior_config.image_size
        return (size, size) if isinstance(size, int) else tuple(size)

    @property
    def num_priors(self) -> int:
        return int(self.priors.shape[0])

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module's own signature
        # Priors stay float32 (or float64) when the model is cast to half precision: the
        # decode in detect needs them exact, and they are not a learned tensor.
        priors = self.priors
        result = super()._apply(fn, recurse)
        if self.priors.dtype in (torch.float16, torch.bfloat16):
            self.priors = priors.to(device=self.priors.device)
        return result

    def head_outputs(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Flatten per-level head outputs into ``(loc [B, P, 4], conf [B, P, C])``."""
        expected = self.prior_config.feature_map_hw
        sizes = [tuple(f.shape[-2:]) for f in features]
        if sizes != expected:
            raise ValueError(
                f"the backbone produced feature maps {sizes} but the priors expect {expected}; "
                f"feed images of size {self.image_size} (h, w) or use a matching PriorConfig"
            )
        return self.head(features)

    def check_images(self, images: object) -> None:
        """Raise a TypeError/ValueError naming ``images``, what was expected and what came,
        unless ``images`` is a ``[B, 3, H, W]`` floating-point tensor on the model's device with
        the model's dtype (any floating dtype under autocast)."""
        if not isinstance(images, Tensor):
            kind = type(images)
            raise TypeError(f"images must be a torch.Tensor [B, 3, H, W], got "
                            f"{kind.__module__}.{kind.__qualname__}")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got shape {tuple(images.shape)}")
        parameter = next(self.parameters(), None)
        expected_dtype = parameter.dtype if parameter is not None else torch.float32
        if not images.is_floating_point():
            raise TypeError(f"images must be a floating-point tensor ({expected_dtype}, the model's dtype), "
                            f"got {images.dtype}")
        if parameter is None:
            return
        if images.device != parameter.device:
            raise ValueError(f"images are on {images.device} but the model is on {parameter.device}; "
                             f"move one of them (images.to({str(parameter.device)!r}))")
        if images.dtype != expected_dtype and not torch.is_autocast_enabled(images.device.type):
            raise TypeError(f"images have dtype {images.dtype} but the model's parameters are "
                            f"{expected_dtype}; cast the images (images.to({expected_dtype})) or the model "
                            f"(model.to({images.dtype})), or run under torch.autocast")

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``images [B, 3, H, W]`` -> ``(loc [B, P, 4], conf_logits [B, P, C])``.

        ``B`` may be 0 (empty outputs ``[0, P, 4]`` / ``[0, P, C]``).
        """
        self.check_images(images)
        size = tuple(images.shape[-2:])
        if size == self.image_size:
            features = self.backbone(images)
        else:
            # Another size may still give the priors' feature maps (head_outputs checks); one
            # too small for the backbone's strides fails inside a pooling or conv layer.
            try:
                features = self.backbone(images)
            except RuntimeError as error:
                raise ValueError(f"images of size {size} (h, w) do not fit this model: the priors "
                                 f"were made for {self.image_size} ({error})") from error
        return self.head_outputs(features)

    @torch.no_grad()
    def detect(self, images: Tensor, score_threshold: float = 0.01, iou_threshold: float = 0.45,
               candidates_per_class: int = 400, max_detections: int = 200,
               image_sizes: Sequence[tuple[int, int]] | None = None) -> list[dict[str, Tensor]]:
        """Run the model and post-process (softmax, decode, per-class NMS, top-k).

        Returns one dict per image: ``boxes [K, 4]`` xyxy in input pixel coordinates
        (x in [0, W], y in [0, H]), ``scores [K]``, ``labels [K]`` int64 (1..C-1), sorted by
        decreasing score. With ``image_sizes`` (one ``(H, W)`` per image: the sizes of the
        original pictures that were resized to the input), the boxes are in those pictures'
        pixels instead (x in [0, W_i], y in [0, H_i]). Runs in eval mode and restores the
        previous mode.
        """
        self.check_images(images)
        scales = self._output_scales(images, image_sizes)  # checked before the forward pass
        was_training = self.training
        self.eval()
        try:
            loc, conf = self(images)
        finally:
            self.train(was_training)
        return self.postprocess(loc, conf, scales, score_threshold=score_threshold,
                                iou_threshold=iou_threshold, candidates_per_class=candidates_per_class,
                                max_detections=max_detections)

    def _output_scales(self, images: Tensor, image_sizes: Sequence[tuple[int, int]] | None
                       ) -> list[tuple[float, float]]:
        """``(width, height)`` each image's boxes are scaled to: its picture's, or the input's."""
        if image_sizes is None:
            height, width = images.shape[-2:]
            return [(float(width), float(height))] * int(images.shape[0])
        sizes = list(image_sizes)
        if len(sizes) != images.shape[0]:
            raise ValueError(f"image_sizes must give one (H, W) per image ({images.shape[0]}), "
                             f"got {len(sizes)}")
        scales = []
        for size in sizes:
            try:
                pair = [float(v) for v in size]
            except (TypeError, ValueError):
                pair = []
            if len(pair) != 2 or not all(0 < v < float("inf") for v in pair):
                raise ValueError(f"image_sizes entries must be positive (H, W) pairs, got {size!r}")
            scales.append((pair[1], pair[0]))
        return scales

    @torch.no_grad()
    def postprocess(self, loc: Tensor, conf: Tensor, scales: Sequence[tuple[float, float]],
                    score_threshold: float = 0.01, iou_threshold: float = 0.45,
                    candidates_per_class: int = 400, max_detections: int = 200) -> list[dict[str, Tensor]]:
        """:func:`ssd_ext.ops.detect` on raw head outputs, boxes scaled by each image's
        ``(width, height)`` in ``scales`` (what :meth:`detect` does after its forward pass)."""
        from .. import ops

        results = ops.detect(
            loc.float(), conf.float(), self.priors.float(), score_threshold=score_threshold,
            iou_threshold=iou_threshold, candidates_per_class=candidates_per_class,
            max_detections=max_detections, variances=self.variances,
        )
        detections = []
        for result, (width, height) in zip(results, scales, strict=True):
            scale = result["boxes"].new_tensor([width, height, width, height])
            detections.append({"boxes": result["boxes"] * scale, "scores": result["scores"],
                               "labels": result["labels"]})
        return detections


def _resolve(priors: PriorConfig | str | None, default: PriorConfig) -> PriorConfig:
    """``priors`` as a PriorConfig: itself, the preset of that name, or ``default`` for None."""
    if priors is None:
        return default
    if isinstance(priors, str):
        return get_preset(priors)
    if not isinstance(priors, PriorConfig):
        raise TypeError(f"priors must be a PriorConfig, a preset name or None, got {type(priors).__name__}")
    return priors


resolve_priors = _resolve  # the public name, for other families' factories


def assemble_ssd(model: str, backbone: nn.Module, priors: PriorConfig, num_classes: int, *,
                 aspect_ratios: Sequence[Sequence[float]] | None = None,
                 levels: Sequence[int] | None = None) -> SSD:
    """An :class:`SSD` of ``backbone`` and ``priors`` (all the backbone's levels) with the
    ``aspect_ratios`` and ``levels`` switches applied (see ``ssd_ext.models.switches``): the
    backbone keeps only the chosen levels (``backbone.select_levels``), the priors are derived,
    and the heads follow the derived priors. Errors name ``model``.
    """
    num_levels = len(backbone.out_channels)
    if priors.num_levels != num_levels:
        raise ValueError(f"{model}: the priors have {priors.num_levels} levels but the backbone gives "
                         f"{num_levels} feature maps")
    derived = derive_prior_config(priors, aspect_ratios=aspect_ratios, levels=levels, model=model)
    if levels is not None and derived.num_levels != num_levels:
        select = getattr(backbone, "select_levels", None)
        if select is None:
            raise ValueError(f"{model}: levels is not supported: its backbone {type(backbone).__name__} "
                             "cannot leave out levels")
        select(check_levels(levels, num_levels, model))
    return SSD(backbone, backbone.out_channels, derived, num_classes)


@register_model("ssd300")
def ssd300(num_classes: int = 21, priors: PriorConfig | str | None = None, *,
           aspect_ratios: Sequence[Sequence[float]] | None = None, levels: Sequence[int] | None = None,
           atrous: bool | None = None) -> SSD:
    """SSD300 with the paper's VGG16 base (6 levels, [4, 6, 6, 6, 4, 4] boxes; 8732 priors).

    ``aspect_ratios``, ``levels``: see ``ssd_ext.models.switches``. ``atrous=False``: the full
    VGG16 fc6/fc7 with conv5_3 predicting (``vgg.py``); same priors.
    """
    atrous = check_atrous(atrous, "ssd300", (True, False))
    backbone = VGG16Backbone("ssd300", atrous=atrous is not False)
    model = assemble_ssd("ssd300", backbone, resolve_priors(priors, SSD300_VOC), num_classes,
                         aspect_ratios=aspect_ratios, levels=levels)
    model.cpu_inference_memory_format = torch.channels_last
    return model


@register_model("ssd512")
def ssd512(num_classes: int = 21, priors: PriorConfig | str | None = None, *,
           aspect_ratios: Sequence[Sequence[float]] | None = None, levels: Sequence[int] | None = None,
           atrous: bool | None = None) -> SSD:
    """SSD512 with the paper's VGG16 base (7 levels, [4, 6, 6, 6, 6, 4, 4] boxes; 24564 priors).

    Switches as :func:`ssd300`.
    """
    atrous = check_atrous(atrous, "ssd512", (True, False))
    backbone = VGG16Backbone("ssd512", atrous=atrous is not False)
    model = assemble_ssd("ssd512", backbone, resolve_priors(priors, SSD512_VOC), num_classes,
                         aspect_ratios=aspect_ratios, levels=levels)
    model.cpu_inference_memory_format = torch.channels_last
    return model


@register_model("ssd_small")
def ssd_small(num_classes: int = 21, priors: PriorConfig | str | None = None, width: int = 32, *,
              aspect_ratios: Sequence[Sequence[float]] | None = None, levels: Sequence[int] | None = None,
              atrous: bool | None = None) -> SSD:
    """Small CPU-friendly SSD: 160 px input, 5 levels, 2408 priors (``SSD_SMALL_160``).

    ``aspect_ratios`` and ``levels`` as :func:`ssd300` (5 levels: 20, 10, 5, 3, 1 at 160 px).
    It has no atrous choice (no fc6/fc7): ``atrous`` must stay ``None``.
    """
    check_atrous(atrous, "ssd_small", (), "its depthwise-separable backbone has no fc6/fc7 to make atrous")
    backbone = SmallBackbone(width)
    return assemble_ssd("ssd_small", backbone, resolve_priors(priors, SSD_SMALL_160), num_classes,
                        aspect_ratios=aspect_ratios, levels=levels)


def __getattr__(name: str) -> object:
    # MODEL_NAMES is derived from the registry on every access, so it lists every family
    # registered so far (models/__init__.py imports them all).
    if name == "MODEL_NAMES":
        return tuple(list_models())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
