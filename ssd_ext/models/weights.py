"""Loading weights from local files into our SSD models.

Every file is read with ``torch.load(..., map_location="cpu", weights_only=True)``: a file that
holds anything but tensors and plain containers (an arbitrary pickled object) is refused.
Key mismatches raise :class:`WeightLoadError` listing the missing, unexpected and
wrong-shape keys.

Key maps (ours on the left; ``N`` is the same index on both sides unless noted):

ssd.pytorch SSD300 checkpoints::

    backbone.vgg.N.*          <- vgg.N.*            (N = 0..33: conv1_1 ... fc6 = 31, fc7 = 33)
    backbone.l2norm.weight    <- L2Norm.weight
    backbone.extras.K.0.*     <- extras.{2K}.*      (the 1x1 conv of extra level K)
    backbone.extras.K.2.*     <- extras.{2K+1}.*    (its 3x3 conv)
    loc.L.*, conf.L.*         <- loc.L.*, conf.L.*

torchvision ``ssd300_vgg16``::

    backbone.vgg.N.*          <- backbone.features.N.*      (N = 0..21: conv1_1 ... conv4_3)
    backbone.vgg.{23+N}.*     <- backbone.extra.0.N.*       (N = 1, 3, 5: conv5_1 ... conv5_3)
    backbone.vgg.31.*         <- backbone.extra.0.7.1.*     (fc6)
    backbone.vgg.33.*         <- backbone.extra.0.7.3.*     (fc7)
    backbone.l2norm.weight    <- backbone.scale_weight
    backbone.extras.K.{0,2}.* <- backbone.extra.{K+1}.{0,2}.*
    loc.L.*                   <- head.regression_head.module_list.L.*
    conf.L.*                  <- head.classification_head.module_list.L.*

torchvision ``ssdlite320_mobilenet_v3_large`` (our module names inside the blocks are its own)::

    backbone.trunk.stage_c4.*   <- backbone.features.0.*    (stem ... the C4 block's expansion)
    backbone.trunk.stage_c5.*   <- backbone.features.1.*    (the C4 block's depthwise ... last conv)
    backbone.extras.K.*         <- backbone.extra.K.*
    loc.L.*                     <- head.regression_head.module_list.L.*
    conf.L.*                    <- head.classification_head.module_list.L.*

RFBNet (the authors' ``RFB_Net_vgg.py``; see :func:`from_rfbnet`)::

    backbone.vgg.N.*                    <- base.N.*
    backbone.rfb_s.*                    <- Norm.*            (RFB-s on conv4_3)
    backbone.fc7_part.*                 <- extras.0.*        (the RFB on fc7)
    backbone.extras.{K}.*               <- extras.{K+1}.*    (strided RFBs, K < R-1)
    backbone.extras.{R-1+P}.{0,1}.*     <- extras.{R+2P}.*, extras.{R+2P+1}.*   (1x1 / kxk conv pairs)
    (inside blocks) branches.K.J, merge <- branchK.J, ConvLinear
    loc.L.*, conf.L.*                   <- loc.L.*, conf.L.*

VGG16 ImageNet backbones (only ``backbone.vgg`` is loaded):

- torchvision ``vgg16`` (``features.N.*`` for N = 0..28, ``classifier.{0,3}.*``): conv layers keep
  their index. fc6/fc7 are the paper's "reduced fc" made from the classifier by subsampling
  ("decimation", as Caffe SSD's VGG_ILSVRC_16_layers_fc_reduced): fc6's ``[4096, 25088]``
  weight is viewed as ``[4096, 512, 7, 7]`` and we keep every 4th output channel (0, 4, ...,
  4092) and every 3rd spatial tap (0, 3, 6) in each direction, giving ``[1024, 512, 3, 3]`` for a
  3x3 conv with dilation 6 (3 taps spaced 6 apart cover about the 7x7 window's span at twice
  the resolution); fc7's ``[4096, 4096]`` keeps every 4th output and input channel, giving
  ``[1024, 1024, 1, 1]``; biases keep every 4th entry. When the classifier is missing or not
  finite (torchvision's ``IMAGENET1K_FEATURES`` file has a NaN classifier), fc6/fc7 keep their
  initialisation and the returned report says so.
- The non-atrous base (``ssd300(atrous=False)``, the SSD paper's full-VGG16 variant) takes the
  classifier without subsampling: fc6's weight viewed as ``[4096, 512, 7, 7]`` (a 7x7 conv) and
  fc7's as ``[4096, 4096, 1, 1]``. A reduced-fc file has no such weights; loading one into a
  non-atrous model is an error.
- ``vgg16_reducedfc.pth`` (ssd.pytorch, keys ``N.weight`` / ``N.bias`` for N = 0..33 with fc6/fc7
  already reduced): loaded index for index.

Checkpoints wrapped as ``{"model": ...}``, ``{"state_dict": ...}`` or ``{"model_state_dict": ...}``
and keys prefixed ``module.`` (DataParallel) are accepted.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "WeightLoadError",
    "read_state_dict",
    "load_state_dict_checked",
    "detect_format",
    "vgg16_backbone_state_dict",
    "load_vgg16_backbone",
    "from_ssd_pytorch",
    "to_ssd_pytorch",
    "from_torchvision_ssd300",
    "to_torchvision_ssd300",
    "from_torchvision_ssdlite",
    "to_torchvision_ssdlite",
    "from_rfbnet",
    "to_rfbnet",
    "load_weights",
]

StateDict = dict[str, Tensor]


class WeightLoadError(ValueError):
    """A weight file could not be read, or its keys/shapes do not fit the model."""


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """Read a state dict from ``path`` safely (``weights_only=True``) and unwrap it.

    Raises:
        FileNotFoundError: no such file.
        WeightLoadError: the file is not a torch file, holds a pickled object other than
            tensors and containers, or does not contain a ``str -> Tensor`` mapping.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weight file not found: {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        message = str(error)
        if "allowed global" in message or "Unsupported global" in message:
            blocked = re.search(r"GLOBAL (\S+) was not an allowed global", message)
            what = f" ({blocked.group(1)})" if blocked else ""
            raise WeightLoadError(
                f"{path}: refused to unpickle an arbitrary object{what}; weight files are read with "
                "torch.load(weights_only=True), which allows only tensors and plain containers"
            ) from error
        raise WeightLoadError(f"{path}: not a readable torch weight file (corrupt, or not written by "
                              "torch.save)") from error
    except Exception as error:  # noqa: BLE001 - torch raises several types for a corrupt file
        raise WeightLoadError(f"{path}: not a readable torch weight file: {type(error).__name__}: {error}") \
            from error
    return _unwrap(loaded, path)


def _unwrap(loaded: Any, source: str) -> StateDict:
    if isinstance(loaded, Mapping):
        for key in ("model", "state_dict", "model_state_dict"):
            inner = loaded.get(key)
            if isinstance(inner, Mapping):
                loaded = inner
                break
    if not isinstance(loaded, Mapping) or not loaded:
        raise WeightLoadError(f"{source}: expected a non-empty state dict (str -> Tensor), "
                              f"got {type(loaded).__name__}")
    state: StateDict = {}
    for key, value in loaded.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise WeightLoadError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor")
        _check_tensor_kind(key, value, source)
        state[key[len("module."):] if key.startswith("module.") else key] = value
    return state


def _check_tensor_kind(key: str, value: Tensor, source: str) -> None:
    """Refuse tensors that cannot be copied into a parameter as they are: sparse (or any
    non-strided layout), meta (no data), quantized."""
    if value.layout != torch.strided:
        raise WeightLoadError(f"{source}: {key} is a {value.layout} tensor; weights must be dense "
                              "(torch.strided); convert it with .to_dense() first")
    if value.is_meta:
        raise WeightLoadError(f"{source}: {key} is a meta tensor (a shape without data); the file "
                              "was saved from a model that was never materialised")
    if value.is_quantized:
        raise WeightLoadError(f"{source}: {key} is a quantized tensor ({value.dtype}); dequantize it first")


def _as_state_dict(source: str | os.PathLike | Mapping[str, Tensor]) -> StateDict:
    if isinstance(source, Mapping):
        return _unwrap(source, "state dict")
    return read_state_dict(source)


def _describe(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_checked(module: nn.Module, state: Mapping[str, Tensor], source: str = "state dict",
                            allow_missing: tuple[str, ...] = ()) -> None:
    """``module.load_state_dict(state)`` with one clear error for every kind of mismatch.

    All or nothing: every entry is checked (keys, shapes, tensor kinds and dtypes) before
    anything is copied, so a failed load leaves the module as it was. Keys starting with a
    prefix in ``allow_missing`` may be absent (they keep their values).

    Raises:
        WeightLoadError: listing missing keys, unexpected keys, shape mismatches and entries
            that cannot be copied (not tensors, sparse/meta/quantized, complex into real).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(allow_missing)]
    unexpected = [k for k in state if k not in own]
    wrong_shape, wrong_kind = [], []
    for key, value in state.items():
        if key not in own:
            continue
        if not isinstance(value, Tensor):
            wrong_kind.append(f"{key} (a {type(value).__name__}, not a tensor)")
            continue
        try:
            _check_tensor_kind(key, value, source)
        except WeightLoadError as error:
            wrong_kind.append(str(error).split(": ", 1)[1])
            continue
        if value.shape != own[key].shape:
            wrong_shape.append(f"{key} (file {tuple(value.shape)}, model {tuple(own[key].shape)})")
        elif value.is_complex() and not own[key].is_complex():
            wrong_kind.append(f"{key} is complex ({value.dtype}) but the model's is {own[key].dtype}; "
                              "copying would drop the imaginary part")
    if missing or unexpected or wrong_shape or wrong_kind:
        parts = [f"{source} does not fit {type(module).__name__}:"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_describe(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_describe(unexpected)}")
        if wrong_shape:
            parts.append(f"shape mismatches ({len(wrong_shape)}): {_describe(wrong_shape)}")
        if wrong_kind:
            parts.append(f"tensors that cannot be loaded ({len(wrong_kind)}): {_describe(wrong_kind)}")
        raise WeightLoadError("\n  ".join(parts))
    try:
        module.load_state_dict(state, strict=False)
    except RuntimeError as error:  # not expected after the checks above; never a bare RuntimeError
        raise WeightLoadError(f"{source}: loading into {type(module).__name__} failed: {error}") from error


# ---------------------------------------------------------------------------- format detection

def detect_format(state: Mapping[str, Tensor]) -> str:
    """Which layout a state dict has: ``"ssd_ext"``, ``"ssd_pytorch"``, ``"torchvision_ssd300"``,
    ``"torchvision_ssdlite"``, ``"rfbnet"``, ``"torchvision_vgg16"`` or ``"vgg16_reducedfc"``."""
    keys = {k[len("module."):] if k.startswith("module.") else k for k in state}
    if any(k.startswith(("backbone.vgg.", "backbone.stem.", "backbone.trunk.")) for k in keys):
        return "ssd_ext"
    if any(k.startswith(("base.", "Norm.branch")) for k in keys):
        return "rfbnet"
    if any(k.startswith("head.regression_head.module_list.0.0.") for k in keys):
        return "torchvision_ssdlite"  # its heads are Sequentials (depthwise block, 1x1 conv)
    if "backbone.scale_weight" in keys or any(k.startswith("head.regression_head.") for k in keys):
        return "torchvision_ssd300"
    if "L2Norm.weight" in keys or any(k.startswith("vgg.") for k in keys):
        return "ssd_pytorch"
    if any(k.startswith("features.") for k in keys):
        return "torchvision_vgg16"
    if keys and all(re.fullmatch(r"\d+\.(weight|bias)", k) for k in keys):
        return "vgg16_reducedfc"
    raise WeightLoadError(f"unrecognised state dict layout (first keys: {_describe(sorted(keys), 8)})")


# ---------------------------------------------------------------------------- VGG16 backbone

_VGG_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_FC6, _FC7 = 31, 33


def _reduce_fc(state: Mapping[str, Tensor], atrous: bool = True) -> StateDict | None:
    """fc6/fc7 of the SSD base from torchvision vgg16's classifier (see the module docstring):
    subsampled for the atrous base, whole (as convolutions) for the non-atrous one."""
    needed = ("classifier.0.weight", "classifier.0.bias", "classifier.3.weight", "classifier.3.bias")
    if not all(k in state for k in needed):
        return None
    fc6_w, fc6_b = state["classifier.0.weight"], state["classifier.0.bias"]
    fc7_w, fc7_b = state["classifier.3.weight"], state["classifier.3.bias"]
    if fc6_w.shape != (4096, 512 * 7 * 7) or fc7_w.shape != (4096, 4096):
        raise WeightLoadError(
            f"vgg16 classifier has shapes {tuple(fc6_w.shape)} / {tuple(fc7_w.shape)}; expected "
            "(4096, 25088) / (4096, 4096)"
        )
    if atrous:
        reduced = {
            f"{_FC6}.weight": fc6_w.reshape(4096, 512, 7, 7)[::4, :, ::3, ::3].contiguous(),
            f"{_FC6}.bias": fc6_b[::4].contiguous(),
            f"{_FC7}.weight": fc7_w[::4, ::4].reshape(1024, 1024, 1, 1).contiguous(),
            f"{_FC7}.bias": fc7_b[::4].contiguous(),
        }
    else:
        reduced = {f"{_FC6}.weight": fc6_w.reshape(4096, 512, 7, 7), f"{_FC6}.bias": fc6_b,
                   f"{_FC7}.weight": fc7_w.reshape(4096, 4096, 1, 1), f"{_FC7}.bias": fc7_b}
    # Only the kept entries matter (and checking 4.7 M instead of 120 M values is cheaper).
    if not all(torch.isfinite(t).all() for t in reduced.values()):
        return None
    return reduced


def vgg16_backbone_state_dict(source: str | os.PathLike | Mapping[str, Tensor],
                              atrous: bool = True) -> tuple[StateDict, bool]:
    """State dict for ``backbone.vgg`` (keys ``N.weight``/``N.bias``) from an ImageNet VGG16 file.

    Accepts torchvision's ``vgg16`` layout or the ``vgg16_reducedfc.pth`` layout. Returns the
    state dict and whether it includes fc6/fc7. ``atrous=False``: fc6/fc7 for the non-atrous
    base (whole, not subsampled); a reduced-fc file cannot give them (WeightLoadError).
    """
    state = _as_state_dict(source)
    layout = detect_format(state)
    if layout == "vgg16_reducedfc":
        if not atrous:
            raise WeightLoadError("a vgg16_reducedfc file holds subsampled fc6/fc7 (1024 channels), which "
                                  "do not fit the non-atrous base (4096); use torchvision's vgg16 weights")
        return dict(state), f"{_FC6}.weight" in state
    if layout != "torchvision_vgg16":
        raise WeightLoadError(f"expected a VGG16 ImageNet state dict, got the {layout!r} layout")
    converted: StateDict = {}
    for index in _VGG_CONV_INDICES:
        for name in ("weight", "bias"):
            key = f"features.{index}.{name}"
            if key not in state:
                raise WeightLoadError(f"VGG16 state dict lacks {key}")
            converted[f"{index}.{name}"] = state[key]
    stray = [k for k in state if not k.startswith(("features.", "classifier."))]
    if stray:
        raise WeightLoadError(f"unexpected keys in VGG16 state dict: {_describe(stray)}")
    fc = _reduce_fc(state, atrous)
    if fc is not None:
        converted.update(fc)
    return converted, fc is not None


def load_vgg16_backbone(model: nn.Module, source: str | os.PathLike | Mapping[str, Tensor]) -> dict[str, Any]:
    """Load ImageNet VGG16 weights into ``model.backbone.vgg`` (an SSD300/SSD512, atrous or not).

    Returns ``{"loaded_fc": bool}``; without usable fc weights fc6/fc7
    keep their initialisation.
    """
    vgg = getattr(getattr(model, "backbone", None), "vgg", None)
    if not isinstance(vgg, nn.Sequential):
        raise WeightLoadError(f"{type(model).__name__} has no VGG16 backbone (model.backbone.vgg)")
    atrous = bool(getattr(model.backbone, "atrous", True))
    state, has_fc = vgg16_backbone_state_dict(source, atrous=atrous)
    fc_prefixes = () if has_fc else (f"{_FC6}.", f"{_FC7}.")
    load_state_dict_checked(vgg, state, "VGG16 weights", allow_missing=fc_prefixes)
    return {"loaded_fc": has_fc}


# ---------------------------------------------------------------------------- ssd.pytorch

_SSD_PYTORCH_EXTRAS = re.compile(r"extras\.(\d+)\.(weight|bias)")
_OURS_EXTRAS = re.compile(r"backbone\.extras\.(\d+)\.([02])\.(weight|bias)")


def from_ssd_pytorch(state: Mapping[str, Tensor]) -> StateDict:
    """Rename an ssd.pytorch SSD state dict's keys to ours (values are shared, not copied)."""
    state = _unwrap(state, "ssd.pytorch state dict")
    converted: StateDict = {}
    for key, value in state.items():
        if key.startswith("vgg."):
            new = "backbone." + key
        elif key == "L2Norm.weight":
            new = "backbone.l2norm.weight"
        elif match := _SSD_PYTORCH_EXTRAS.fullmatch(key):
            index = int(match.group(1))
            new = f"backbone.extras.{index // 2}.{0 if index % 2 == 0 else 2}.{match.group(2)}"
        elif key.startswith(("loc.", "conf.")):
            new = key
        else:
            new = "unmapped." + key  # reported as unexpected by load_state_dict_checked
        converted[new] = value
    return converted


def to_ssd_pytorch(state: Mapping[str, Tensor]) -> StateDict:
    """Our SSD300/SSD512 state dict in ssd.pytorch's key layout (inverse of ``from_ssd_pytorch``)."""
    converted: StateDict = {}
    for key, value in state.items():
        if key.startswith("backbone.vgg."):
            new = key[len("backbone."):]
        elif key == "backbone.l2norm.weight":
            new = "L2Norm.weight"
        elif match := _OURS_EXTRAS.fullmatch(key):
            index = 2 * int(match.group(1)) + (0 if match.group(2) == "0" else 1)
            new = f"extras.{index}.{match.group(3)}"
        elif key.startswith(("loc.", "conf.")):
            new = key
        else:
            raise WeightLoadError(f"key {key!r} has no ssd.pytorch equivalent (is this a VGG16 SSD?)")
        converted[new] = value
    return converted


# ---------------------------------------------------------------------------- torchvision ssd300_vgg16

def _torchvision_pairs(num_extras: int, num_levels: int) -> list[tuple[str, str]]:
    """(torchvision prefix, our prefix) for every conv / parameter holder."""
    pairs = [(f"backbone.features.{i}.", f"backbone.vgg.{i}.") for i in _VGG_CONV_INDICES if i < 23]
    pairs += [(f"backbone.extra.0.{i - 23}.", f"backbone.vgg.{i}.") for i in _VGG_CONV_INDICES if i > 23]
    pairs += [("backbone.extra.0.7.1.", f"backbone.vgg.{_FC6}."),
              ("backbone.extra.0.7.3.", f"backbone.vgg.{_FC7}.")]
    for k in range(num_extras):
        for j in (0, 2):
            pairs.append((f"backbone.extra.{k + 1}.{j}.", f"backbone.extras.{k}.{j}."))
    for level in range(num_levels):
        pairs.append((f"head.regression_head.module_list.{level}.", f"loc.{level}."))
        pairs.append((f"head.classification_head.module_list.{level}.", f"conf.{level}."))
    return pairs


def _rename(state: Mapping[str, Tensor], pairs: list[tuple[str, str]], exact: dict[str, str]) -> StateDict:
    converted: StateDict = {}
    for key, value in state.items():
        if key in exact:
            converted[exact[key]] = value
            continue
        for old, new in pairs:
            if key.startswith(old):
                converted[new + key[len(old):]] = value
                break
        else:
            converted["unmapped." + key] = value
    return converted


def _count_levels(state: Mapping[str, Tensor], pattern: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def from_torchvision_ssd300(state: Mapping[str, Tensor]) -> StateDict:
    """Rename a torchvision ``ssd300_vgg16`` state dict's keys to ours.

    Load the result into ``ssd300(num_classes, priors=SSD300_TORCHVISION)`` (torchvision's COCO
    model has 91 classes) for the same head outputs and priors as torchvision.
    """
    state = _unwrap(state, "torchvision ssd300_vgg16 state dict")
    extras = _count_levels(state, r"backbone\.extra\.(\d+)\.") - 1
    levels = _count_levels(state, r"head\.regression_head\.module_list\.(\d+)\.")
    return _rename(state, _torchvision_pairs(max(extras, 0), levels),
                   {"backbone.scale_weight": "backbone.l2norm.weight"})


def to_torchvision_ssd300(state: Mapping[str, Tensor]) -> StateDict:
    """Our SSD300 state dict in torchvision ``ssd300_vgg16``'s key layout."""
    extras = _count_levels(state, r"backbone\.extras\.(\d+)\.")
    levels = _count_levels(state, r"loc\.(\d+)\.")
    pairs = [(ours, theirs) for theirs, ours in _torchvision_pairs(extras, levels)]
    converted = _rename(state, pairs, {"backbone.l2norm.weight": "backbone.scale_weight"})
    unmapped = [k for k in converted if k.startswith("unmapped.")]
    if unmapped:
        raise WeightLoadError(f"keys with no torchvision equivalent: {_describe(unmapped)}")
    return converted


# ---------------------------------------------------------------------------- torchvision ssdlite320

def _ssdlite_pairs() -> list[tuple[str, str]]:
    """(torchvision prefix, our prefix): whole subtrees, whose inner names are the same."""
    return [
        ("backbone.features.0.", "backbone.trunk.stage_c4."),
        ("backbone.features.1.", "backbone.trunk.stage_c5."),
        ("backbone.extra.", "backbone.extras."),
        ("head.regression_head.module_list.", "loc."),
        ("head.classification_head.module_list.", "conf."),
    ]


def from_torchvision_ssdlite(source: str | os.PathLike | Mapping[str, Tensor]) -> StateDict:
    """Rename a torchvision ``ssdlite320_mobilenet_v3_large`` state dict's keys to ours
    (values shared, not copied); a path or a state dict.

    Load the result into ``ssdlite320_mobilenet_v3_large(num_classes)`` (torchvision's COCO
    model: 91 classes) for the same head outputs and priors as torchvision; feed it images as
    torchvision's transform does (RGB in [0, 1], ``(x - 0.5) / 0.5``, resized to 320x320).
    Keys that map nowhere come back prefixed ``unmapped.``, so that loading reports them.
    """
    state = _as_state_dict(source)
    return _rename(state, _ssdlite_pairs(), {})


def to_torchvision_ssdlite(state: Mapping[str, Tensor]) -> StateDict:
    """Our ``ssdlite320_mobilenet_v3_large`` state dict in torchvision's key layout (inverse of
    :func:`from_torchvision_ssdlite`); loads into torchvision's model with ``load_state_dict``.

    Raises:
        WeightLoadError: a key with no torchvision equivalent (not an SSDLite state dict).
    """
    pairs = [(ours, theirs) for theirs, ours in _ssdlite_pairs()]
    converted = _rename(_unwrap(state, "ssd_ext state dict"), pairs, {})
    unmapped = [k[len("unmapped."):] for k in converted if k.startswith("unmapped.")]
    if unmapped:
        raise WeightLoadError(f"keys with no torchvision ssdlite320_mobilenet_v3_large equivalent (is this "
                              f"an ssdlite320_mobilenet_v3_large?): {_describe(unmapped)}")
    return converted


# ---------------------------------------------------------------------------- RFBNet (the authors' code)

_RFB_BLOCK_RENAMES = ((re.compile(r"branch(\d+)\."), r"branches.\1."),
                      (re.compile(r"ConvLinear\."), "merge."))
_RFB_BLOCK_RENAMES_BACK = ((re.compile(r"branches\.(\d+)\."), r"branch\1."),
                           (re.compile(r"merge\."), "ConvLinear."))


def _rename_block(rest: str, renames: tuple) -> str:
    for pattern, replacement in renames:
        if pattern.match(rest):
            return pattern.sub(replacement, rest, count=1)
    return rest


def _rfbnet_block_count(keys, pattern: str) -> int:
    """How many leading extras entries are RFB blocks (they hold branches; the rest are convs)."""
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def from_rfbnet(source: str | os.PathLike | Mapping[str, Tensor]) -> StateDict:
    """Convert a checkpoint of the authors' RFB Net (``models/RFB_Net_vgg.py``, RFB Net300 or
    RFB Net512) to our ``rfb300`` / ``rfb512`` state dict (values shared, not copied).

    Accepts a path or a state dict, with or without DataParallel's ``module.`` prefix. Their
    layout: ``base.N`` (the VGG16 layers), ``Norm`` (RFB-s on conv4_3), ``extras.0`` (the RFB on
    fc7), ``extras.1 .. extras.{R-1}`` (the strided RFBs; R = 3 at 300 px, 5 at 512), then single
    ``BasicConv`` layers in 1x1 / kxk pairs, ``loc.L`` and ``conf.L``. Inside a block
    ``branchK.J`` is our ``branches.K.J`` and ``ConvLinear`` our ``merge``; ``conv`` and ``bn``
    keep their names. Checkpoints from PyTorch 0.4.0 lack BatchNorm's ``num_batches_tracked``:
    it is filled with 0 (it only matters for ``momentum=None``). Keys that map nowhere come
    back prefixed ``unmapped.`` so that loading reports them.

    Raises:
        FileNotFoundError, WeightLoadError: unreadable file or not a state dict.
    """
    state = _as_state_dict(source)
    blocks = _rfbnet_block_count([k for k in state if ".branch" in k], r"extras\.(\d+)\.branch")
    converted: StateDict = {}
    for key, value in state.items():
        if key.startswith("base."):
            new = "backbone.vgg." + key[len("base."):]
        elif key.startswith("Norm."):
            new = "backbone.rfb_s." + _rename_block(key[len("Norm."):], _RFB_BLOCK_RENAMES)
        elif match := re.fullmatch(r"extras\.(\d+)\.(.+)", key):
            index, rest = int(match.group(1)), match.group(2)
            if index < blocks:
                where = "backbone.fc7_part." if index == 0 else f"backbone.extras.{index - 1}."
                new = where + _rename_block(rest, _RFB_BLOCK_RENAMES)
            else:
                pair, position = divmod(index - blocks, 2)
                new = f"backbone.extras.{blocks - 1 + pair}.{position}.{rest}"
        elif key.startswith(("loc.", "conf.")):
            new = key
        else:
            new = "unmapped." + key
        converted[new] = value
    for key in list(converted):
        if key.endswith(".bn.running_mean"):
            tracked = key[: -len("running_mean")] + "num_batches_tracked"
            converted.setdefault(tracked, torch.tensor(0, dtype=torch.long))
    return converted


def to_rfbnet(state: Mapping[str, Tensor]) -> StateDict:
    """Our ``rfb300`` / ``rfb512`` state dict in the authors' key layout (inverse of :func:`from_rfbnet`)."""
    blocks = 1 + _rfbnet_block_count([k for k in state if ".branches." in k],
                                     r"backbone\.extras\.(\d+)\.branches")
    converted: StateDict = {}
    for key, value in state.items():
        if key.startswith("backbone.vgg."):
            new = "base." + key[len("backbone.vgg."):]
        elif key.startswith("backbone.rfb_s."):
            new = "Norm." + _rename_block(key[len("backbone.rfb_s."):], _RFB_BLOCK_RENAMES_BACK)
        elif key.startswith("backbone.fc7_part."):
            new = "extras.0." + _rename_block(key[len("backbone.fc7_part."):], _RFB_BLOCK_RENAMES_BACK)
        elif match := re.fullmatch(r"backbone\.extras\.(\d+)\.(.+)", key):
            index, rest = int(match.group(1)), match.group(2)
            if index < blocks - 1:
                new = f"extras.{index + 1}." + _rename_block(rest, _RFB_BLOCK_RENAMES_BACK)
            else:
                position, _, rest = rest.partition(".")
                new = f"extras.{blocks + 2 * (index - blocks + 1) + int(position)}.{rest}"
        elif key.startswith(("loc.", "conf.")):
            new = key
        else:
            raise WeightLoadError(f"key {key!r} has no RFBNet equivalent (is this an rfb300/rfb512 model?)")
        converted[new] = value
    return converted


# ---------------------------------------------------------------------------- entry point

def load_weights(model: nn.Module, source: str | os.PathLike | Mapping[str, Tensor],
                 layout: str = "auto") -> str:
    """Load a local weight file (or state dict) into ``model``, converting known layouts.

    ``layout``: ``"auto"`` (detect), ``"ssd_ext"`` (our own ``model.state_dict()``),
    ``"ssd_pytorch"``, ``"torchvision_ssd300"``, ``"torchvision_ssdlite"`` (its
    ``ssdlite320_mobilenet_v3_large``), ``"rfbnet"`` (the authors' RFB Net300/512),
    ``"torchvision_vgg16"`` or ``"vgg16_reducedfc"`` (the last two load only the VGG16 base).
    Returns the layout used.

    Raises:
        FileNotFoundError, WeightLoadError (unreadable/unsafe file, unknown layout, or keys and
        shapes that do not fit, each listed).
    """
    state = _as_state_dict(source)
    name = detect_format(state) if layout == "auto" else layout
    if name == "ssd_ext":
        load_state_dict_checked(model, state, "ssd_ext state dict")
    elif name == "ssd_pytorch":
        load_state_dict_checked(model, from_ssd_pytorch(state), "ssd.pytorch state dict")
    elif name == "torchvision_ssd300":
        load_state_dict_checked(model, from_torchvision_ssd300(state), "torchvision ssd300_vgg16 state dict")
    elif name == "torchvision_ssdlite":
        load_state_dict_checked(model, from_torchvision_ssdlite(state),
                                "torchvision ssdlite320_mobilenet_v3_large state dict")
    elif name == "rfbnet":
        load_state_dict_checked(model, from_rfbnet(state), "RFBNet state dict")
    elif name in ("torchvision_vgg16", "vgg16_reducedfc"):
        load_vgg16_backbone(model, state)
    else:
        raise WeightLoadError(f"unknown layout {layout!r}")
    return name
