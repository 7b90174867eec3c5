"""Packaged ablation studies (``ssd ablate --study NAME``), written as the same plain data a
study file holds (``ssd ablate --study paper --print-study`` prints one as YAML to start from).

``paper``: the SSD paper's model analysis (Liu et al., "SSD: Single Shot MultiBox Detector",
ECCV 2016, arXiv:1512.02325v5, Sec. 3.2, Tables 2 and 3, and Table 6 for the expansion
augmentation). All the paper's figures are SSD300 on VOC2007 test (mAP %, IoU 0.5, trained on
VOC07+12 trainval). The study's base sets the paper's augmentation (photometric distortions,
zoom-out expansion, IoU-constrained crops, flips), so its baseline is the paper's SSD300*
setting whatever the preset; each variant then changes one thing:

Table 2 (columns, left to right; "more data augmentation", "include {1/2, 2} box",
"include {1/3, 3} box", "use atrous"): 65.5 (no extra augmentation: original image and flip
only, as Fast/Faster R-CNN), 71.6 (neither ratio pair), 73.7 (no {1/3, 3}), 74.2 (not
atrous: "the full VGG16, keeping pool5 with 2x2-s2 and not subsampling parameters from fc6
and fc7, and add conv5_3 for prediction ... about 20% slower"), 74.3 (all).

Table 3 (prediction source layers, "use boundary boxes? Yes / No" mAP, number of boxes):
all six 74.3 / 63.4 (8732); without conv11_2 74.6 / 63.1 (8764); without conv10_2 too
73.8 / 68.4 (8942); conv4_3, conv7 and conv8_2 70.7 / 69.2 (9864); conv4_3 and conv7
64.2 / 64.4 (9025); conv7 only 62.4 / 64.0 (8664). We keep boundary boxes (the "Yes" column).

Table 6: SSD300 74.3 without, SSD300* 77.2 with the zoom-out expansion (VOC2007 test, 07+12).

The level lists are the paper's rows for the 6-level models (ssd300, rfb300); the 7-level
models (ssd512, rfb512) drop the same number of coarsest levels; the 5-level small models
(ssd_small, rfb_small) drop one, two and three coarsest levels, and ``drop_coarsest_3`` does not
apply to them (it would equal ``first_two_levels``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["PAPER", "STUDIES"]

_LEVEL_COUNTS = {"ssd300": 6, "rfb300": 6, "ssd512": 7, "rfb512": 7, "ssd_small": 5, "rfb_small": 5}
_PAPER_AUGMENTATION = {"data.augment.photometric": True, "data.augment.expand": True,
                       "data.augment.crop": True, "data.augment.flip": True}


def _ratios_per_model(ratios: list[float]) -> dict[str, dict[str, Any]]:
    """``model.aspect_ratios`` with ``ratios`` on every level, for each known model."""
    return {name: {"model.aspect_ratios": [list(ratios) for _ in range(count)]}
            for name, count in _LEVEL_COUNTS.items()}


def _drop_coarsest(count: int, keep_at_least: int = 2) -> dict[str, dict[str, Any]]:
    """``model.levels`` without the ``count`` coarsest levels, for each model left with
    ``keep_at_least`` levels or more."""
    return {name: {"model.levels": list(range(levels - count))}
            for name, levels in _LEVEL_COUNTS.items() if levels - count >= keep_at_least}


def _paper(table: str, value: float, boxes: int | None = None, note: str = "") -> dict[str, Any]:
    entry: dict[str, Any] = {"table": table, "mAP": value}
    if boxes is not None:
        entry["boxes"] = boxes
    if note:
        entry["note"] = note
    return entry


def _level_variant(name: str, levels_by_model: dict[str, dict[str, Any]], paper: dict[str, Any],
                   description: str) -> dict[str, Any]:
    return {"name": name, "description": description, "model_overrides": levels_by_model,
            "models": sorted(levels_by_model), "paper": paper}


PAPER: dict[str, Any] = {
    "name": "paper",
    "description": "The SSD paper's model analysis: augmentation, default box shapes, atrous VGG16, "
                   "output layers; one change per variant from the paper's SSD300* setting.",
    "reference": "Liu et al., SSD: Single Shot MultiBox Detector, ECCV 2016 (arXiv:1512.02325v5), "
                 "Sec. 3.2, Tables 2, 3 and 6",
    "paper_metric": "SSD300, VOC2007 test mAP % (trained on VOC07+12)",
    "base": dict(_PAPER_AUGMENTATION),
    "variants": [
        {"name": "baseline", "description": "the paper's defaults (SSD300*: with zoom-out expansion)",
         "paper": _paper("Table 6, SSD300*", 77.2, 8732)},
        {"name": "no_expand", "description": "without the zoom-out expansion (Tables 2 and 3's setting)",
         "overrides": {"data.augment.expand": False},
         "paper": _paper("Table 2, last column; Table 3, row 1", 74.3, 8732)},
        {"name": "flip_only", "description": "no photometric distortion, expansion or crops; flips only",
         "overrides": {"data.augment.photometric": False, "data.augment.expand": False,
                       "data.augment.crop": False, "data.augment.flip": True},
         "paper": _paper("Table 2, column 1 (no extra augmentation)", 65.5, 8732,
                         "compare with no_expand: the paper's 8.8 points")},
        {"name": "no_ratio_3", "description": "default boxes without the {1/3, 3} aspect ratios",
         "model_overrides": _ratios_per_model([2.0]), "models": sorted(_LEVEL_COUNTS),
         "paper": _paper("Table 2, column 3", 73.7, None, "0.6 below the paper's 74.3")},
        {"name": "no_ratio_2_3", "description": "only the two square default boxes per cell",
         "model_overrides": _ratios_per_model([]), "models": sorted(_LEVEL_COUNTS),
         "paper": _paper("Table 2, column 2", 71.6, None, "2.1 below no_ratio_3")},
        {"name": "no_atrous", "description": "full VGG16: pool5 2x2-s2, whole fc6/fc7, conv5_3 predicts",
         "overrides": {"model.atrous": False}, "models": ["ssd300", "ssd512"],
         "paper": _paper("Table 2, column 4", 74.2, 8732, "about 20% slower")},
        _level_variant("drop_coarsest_1", _drop_coarsest(1),
                       _paper("Table 3, row 2 (no conv11_2)", 74.6, 8764, "no boundary boxes: 63.1"),
                       "without the coarsest level; its scale stacked on the next"),
        _level_variant("drop_coarsest_2", _drop_coarsest(2),
                       _paper("Table 3, row 3 (no conv10_2, conv11_2)", 73.8, 8942,
                              "no boundary boxes: 68.4"),
                       "without the two coarsest levels"),
        _level_variant("drop_coarsest_3", _drop_coarsest(3, keep_at_least=3),
                       _paper("Table 3, row 4 (conv4_3, conv7, conv8_2)", 70.7, 9864,
                              "no boundary boxes: 69.2"),
                       "without the three coarsest levels"),
        _level_variant("first_two_levels", {name: {"model.levels": [0, 1]} for name in _LEVEL_COUNTS},
                       _paper("Table 3, row 5 (conv4_3, conv7)", 64.2, 9025, "no boundary boxes: 64.4"),
                       "only the two finest levels predict"),
        _level_variant("second_level_only", {name: {"model.levels": [1]} for name in _LEVEL_COUNTS},
                       _paper("Table 3, row 6 (conv7 only)", 62.4, 8664, "no boundary boxes: 64.0"),
                       "only the second level (SSD300's conv7) predicts"),
    ],
}

STUDIES: dict[str, dict[str, Any]] = {"paper": PAPER}
