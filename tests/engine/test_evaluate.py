"""Evaluation: VOC AP against hand-worked cases, COCO numbers against a direct COCOeval run,
predict() in original pixels through a real SSD with fixed head weights."""

from __future__ import annotations

import json
import math
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, DistributedSampler, Subset

from ssd_ext.data import (
    COCODetection,
    SyntheticShapes,
    VOCDetection,
    eval_transform,
    make_loader,
    write_coco,
    write_voc,
)
from ssd_ext.data.base import DetectionDataset, Record
from ssd_ext.engine.evaluation import EvalResult, evaluate, evaluate_predictions, predict, voc_ap
from ssd_ext.models import ssd_small

# --------------------------------------------------------------------------------- helpers


class HandDataset(DetectionDataset):
    """Ground truth written by hand: ``images`` is a list of ``[(x1, y1, x2, y2, label, difficult)]``."""

    def __init__(self, images, class_names=("__background__", "a", "b")):
        super().__init__(tuple(class_names))
        for i, objects in enumerate(images):
            boxes = np.asarray([o[:4] for o in objects], dtype=np.float32).reshape(-1, 4)
            labels = np.asarray([o[4] for o in objects], dtype=np.int64)
            difficult = np.asarray([o[5] for o in objects], dtype=bool)
            self.records.append(Record(f"unused_{i}.png", i, boxes, labels, difficult))


def pred(index, detections):
    """A Prediction from ``[(x1, y1, x2, y2, score, label)]``."""
    rows = np.asarray(detections, dtype=np.float64).reshape(-1, 6)
    return {"index": index, "image_id": index, "boxes": torch.tensor(rows[:, :4], dtype=torch.float32),
            "scores": torch.tensor(rows[:, 4], dtype=torch.float32),
            "labels": torch.tensor(rows[:, 5], dtype=torch.int64)}


def direct_cocoeval(gt_json, detections):
    """pycocotools' own numbers: stats[:6] with -1 as nan, and its precision array."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_json) if isinstance(gt_json, str) else _coco(gt_json)
        dt = gt.loadRes(detections)
        coco_eval = COCOeval(gt, dt, iouType="bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    stats = [float("nan") if s < 0 else float(s) for s in coco_eval.stats[:6]]
    return stats, coco_eval


def _coco(data):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    coco.createIndex()
    return coco


COCO_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")

# ------------------------------------------------------------------------- VOC, by hand


def test_voc_ap_function_hand_values():
    # One point (recall 0.3, precision 1): 11-point thresholds 0, .1, .2, .3 reach it -> 4/11
    # (0.3 counts for the threshold 0.3: thresholds are exactly k/10); the area is 0.3 * 1.
    assert voc_ap(np.array([0.3]), np.array([1.0]), use_07_metric=True) == pytest.approx(4 / 11)
    assert voc_ap(np.array([0.3]), np.array([1.0])) == pytest.approx(0.3)
    # Recall (0.5, 0.5, 1), precision (1, 0.5, 2/3): envelope 1 up to 0.5, then 2/3 -> area
    # 0.5 + 0.5 * 2/3 = 5/6; 11-point: 6 thresholds (0..0.5) at 1, 5 (0.6..1) at 2/3 -> (6 + 10/3) / 11.
    recall, precision = np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])
    assert voc_ap(recall, precision) == pytest.approx(5 / 6)
    assert voc_ap(recall, precision, use_07_metric=True) == pytest.approx((6 + 10 / 3) / 11)
    # No detection at all: AP 0.
    assert voc_ap(np.zeros(0), np.zeros(0)) == 0.0
    assert voc_ap(np.zeros(0), np.zeros(0), use_07_metric=True) == 0.0


def test_voc_ranked_tp_fp_duplicate_hand_worked():
    # Class "a" (label 1). Image 0: g1 = (0,0,10,10), g2 = (20,20,30,30); image 1: g3 = (0,0,10,10).
    # Positives: 3. Detections by score:
    #   .9 img0 (0,0,10,10)    IoU 1 with g1                -> TP  tp=1 fp=0  R=1/3 P=1
    #   .8 img0 (1,0,11,10)    IoU 90/110 with g1 (taken)   -> FP  tp=1 fp=1  R=1/3 P=1/2
    #   .7 img1 (50,50,60,60)  no overlap                   -> FP  tp=1 fp=2  R=1/3 P=1/3
    #   .6 img1 (0,0,10,10)    g3                           -> TP  tp=2 fp=2  R=2/3 P=1/2
    #   .5 img0 (20,20,30,30)  g2                           -> TP  tp=3 fp=2  R=1   P=3/5
    # Area: envelope 1 on (0, 1/3], 3/5 on (1/3, 1] -> 1/3 + 2/3 * 3/5 = 11/15.
    # 11-point: t = 0, .1, .2, .3 -> 1 (R=1/3 >= .3); t = .4 ... 1 -> 3/5 -> (4 + 7 * 0.6) / 11 = 8.2/11.
    data = HandDataset([[(0, 0, 10, 10, 1, 0), (20, 20, 30, 30, 1, 0)], [(0, 0, 10, 10, 1, 0)]])
    predictions = [
        pred(0, [(0, 0, 10, 10, .9, 1), (1, 0, 11, 10, .8, 1), (20, 20, 30, 30, .5, 1)]),
        pred(1, [(50, 50, 60, 60, .7, 1), (0, 0, 10, 10, .6, 1)]),
    ]
    result = evaluate_predictions(predictions, data, metrics=("voc",))
    assert result.per_class["a"]["AP_voc"] == pytest.approx(11 / 15)
    assert result.per_class["a"]["AP_voc07"] == pytest.approx(8.2 / 11)
    # Class "b" has no ground truth: undefined and left out of the mean.
    assert math.isnan(result.per_class["b"]["AP_voc"])
    assert result.metrics["mAP_voc"] == pytest.approx(11 / 15)
    assert result.metrics["mAP_voc07"] == pytest.approx(8.2 / 11)
    assert result.num_gt == {"a": 3, "b": 0} and result.num_images == 2 and result.num_detections == 5
    recall, precision = result.pr_curves["a"]
    np.testing.assert_allclose(recall, [1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(precision, [1, 1 / 2, 1 / 3, 1 / 2, 3 / 5])


def test_voc_difficult_is_neither_tp_nor_fp_nor_positive():
    # Image 0: n = (0,0,10,10) normal, d = (40,40,50,50) difficult. Positives: 1 (d not counted).
    #   .95 (40,40,50,50)   best GT is d (difficult)      -> ignored
    #   .90 (41,40,51,50)   best GT is d again            -> ignored (duplicates on d too)
    #   .80 (100,100,110,110) nothing                     -> FP  R=0 P=0
    #   .70 (0,0,10,10)     n                             -> TP  R=1 P=1/2
    # Area: envelope 1/2 over (0, 1] -> 0.5. 11-point: every threshold's best precision is 1/2 -> 0.5.
    # (Were d an ordinary box: TP, FP, FP, TP of 2 positives -> area 1/2 * 1 + 1/2 * 1/2 = 0.75.)
    data = HandDataset([[(0, 0, 10, 10, 1, 0), (40, 40, 50, 50, 1, 1)]])
    predictions = [pred(0, [(40, 40, 50, 50, .95, 1), (41, 40, 51, 50, .9, 1), (100, 100, 110, 110, .8, 1),
                            (0, 0, 10, 10, .7, 1)])]
    result = evaluate_predictions(predictions, data, metrics=("voc",))
    assert result.per_class["a"]["AP_voc"] == pytest.approx(0.5)
    assert result.per_class["a"]["AP_voc07"] == pytest.approx(0.5)
    assert result.num_gt["a"] == 1
    ordinary = HandDataset([[(0, 0, 10, 10, 1, 0), (40, 40, 50, 50, 1, 0)]])
    assert evaluate_predictions(predictions, ordinary, metrics=("voc",)).per_class["a"]["AP_voc"] == \
        pytest.approx(0.75)


def test_voc_matches_the_best_iou_box_like_the_devkit_and_iou_half_counts():
    # g1 = (0,0,10,10), g2 = (0,2,10,12). Detections:
    #   .9 (0,0,10,10)      -> g1, TP.
    #   .8 (0,.8,10,10.8)   IoU 92/108 with g1 (taken), 88/112 with g2: the devkit takes the best-IoU
    #                         box, g1, already matched -> FP (COCO would match g2 instead).
    # R = (1/2, 1/2), P = (1, 1/2): area 1/2; 11-point: t = 0..0.5 -> 1, t = 0.6..1 -> 0 -> 6/11.
    pytest.importorskip("pycocotools")  # COCODetection / COCOeval need it
    data = HandDataset([[(0, 0, 10, 10, 1, 0), (0, 2, 10, 12, 1, 0)]])
    predictions = [pred(0, [(0, 0, 10, 10, .9, 1), (0, .8, 10, 10.8, .8, 1)])]
    result = evaluate_predictions(predictions, data)
    assert result.per_class["a"]["AP_voc"] == pytest.approx(0.5)
    assert result.per_class["a"]["AP_voc07"] == pytest.approx(6 / 11)
    # COCOeval matches the second detection to g2: every recall reached at precision 1.
    assert result.per_class["a"]["AP50"] == pytest.approx(1.0)
    # IoU exactly 0.5 is a match (>=, as the devkit and COCO): (0,0,10,10) vs (0,0,10,20) = 100/200.
    half = HandDataset([[(0, 0, 10, 20, 1, 0)]])
    assert evaluate_predictions([pred(0, [(0, 0, 10, 10, .9, 1)])], half,
                                metrics=("voc",)).metrics["mAP_voc"] == 1.0


def test_voc_images_without_detections_and_labels_checked():
    data = HandDataset([[(0, 0, 10, 10, 1, 0)], [(0, 0, 10, 10, 2, 0)]])
    # Image 1 listed without detections: its box is a miss. Class b: recall 0 -> AP 0.
    result = evaluate_predictions([pred(0, [(0, 0, 10, 10, .9, 1)]), pred(1, [])], data, metrics=("voc",))
    assert result.per_class["a"]["AP_voc"] == 1.0 and result.per_class["b"]["AP_voc"] == 0.0
    assert result.metrics["mAP_voc"] == 0.5
    with pytest.raises(ValueError, match="labels must be in 1..2"):
        evaluate_predictions([pred(0, [(0, 0, 10, 10, .9, 3)])], data)
    with pytest.raises(ValueError, match="outside the dataset"):
        evaluate_predictions([pred(5, [])], data)
    with pytest.raises(ValueError, match="no predictions"):
        evaluate_predictions([], data)
    with pytest.raises(ValueError, match="metrics must name"):
        evaluate_predictions([pred(0, [])], data, metrics=("map",))


# ---------------------------------------------------------------------- COCO vs COCOeval


def _make_coco_folder(tmp_path):
    """Three images, categories 3 and 7 (not 1..K), a crowd region, all area ranges."""
    sizes = {10: (128, 128), 20: (64, 48), 30: (50, 40)}  # id -> (width, height)
    images = []
    for image_id, (width, height) in sizes.items():
        Image.new("RGB", (width, height), (90, 90, 90)).save(tmp_path / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": width, "height": height})

    def ann(i, image_id, cat, box, crowd=0):
        return {"id": i, "image_id": image_id, "category_id": cat, "bbox": box, "area": box[2] * box[3],
                "iscrowd": crowd}

    annotations = [
        ann(1, 10, 3, [4, 4, 100, 100]),  # large
        ann(2, 10, 7, [10, 110, 16, 14]),  # small
        ann(3, 10, 7, [60, 20, 40, 40]),  # medium
        ann(4, 20, 3, [2, 3, 30, 30]),  # small-ish (900)
        ann(5, 20, 3, [30, 10, 30, 35], crowd=1),  # crowd region
        ann(6, 30, 7, [5, 5, 40, 30]),  # medium
    ]
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_metrics_equal_direct_cocoeval_on_the_datasets_own_json(tmp_path):
    pytest.importorskip("pycocotools")
    path = _make_coco_folder(tmp_path)
    dataset = COCODetection(tmp_path, path)
    assert [r.image_id for r in dataset.records] == [10, 20, 30]
    # (image_id, category_id, [x, y, w, h], score): good, shifted, duplicate, crowd hits, misses.
    raw = [
        (10, 3, [6, 5, 98, 97], .95), (10, 3, [4, 4, 100, 100], .5), (10, 7, [12, 110, 15, 14], .6),
        (10, 7, [62, 24, 40, 40], .8), (10, 7, [0, 0, 20, 20], .85), (20, 3, [2, 3, 28, 31], .7),
        (20, 3, [32, 12, 20, 20], .9), (20, 3, [34, 14, 20, 20], .65), (20, 7, [1, 1, 10, 10], .3),
        (30, 7, [8, 6, 40, 30], .4), (30, 3, [5, 5, 40, 30], .55),
    ]
    index_of = {r.image_id: i for i, r in enumerate(dataset.records)}
    predictions = []
    for image_id in (10, 20, 30):
        rows = [(x, y, x + w, y + h, s, dataset.cat_id_to_label[c])
                for i, c, (x, y, w, h), s in raw if i == image_id]
        rows.sort(key=lambda r: -r[4])
        predictions.append(pred(index_of[image_id], rows))
    result = evaluate_predictions(predictions, dataset, metrics=("coco",))

    detections = [{"image_id": i, "category_id": c, "bbox": b, "score": s} for i, c, b, s in raw]
    stats, coco_eval = direct_cocoeval(str(path), detections)
    np.testing.assert_allclose([result.metrics[k] for k in COCO_NAMES], stats, rtol=1e-12, equal_nan=True)
    assert 0 < result.metrics["AP"] < result.metrics["AP50"] < 1  # a case that exercises something
    precision = coco_eval.eval["precision"]
    for k, name in enumerate(("cat", "dog")):  # catIds sorted: 3, 7 -> labels 1, 2
        p = precision[:, :, k, 0, -1]
        assert result.per_class[name]["AP"] == pytest.approx(p[p > -1].mean(), rel=1e-12)
        assert result.per_class[name]["AP50"] == pytest.approx(p[0][p[0] > -1].mean(), rel=1e-12)
    assert "mAP_voc" not in result.metrics


def test_coco_metrics_from_memory_json_equal_direct_cocoeval_on_written_json(tmp_path):
    pytest.importorskip("pycocotools")
    data = SyntheticShapes(num_images=4, image_size=(64, 80), seed=5)
    write_coco(data, tmp_path / "img", tmp_path / "gt.json")  # image id = index, category = label
    generator = np.random.default_rng(0)
    predictions, detections = [], []
    for index in range(len(data)):
        _, boxes, labels, _, _ = data.load_raw(index)
        rows = []
        for box, label in zip(boxes, labels, strict=True):
            jitter = generator.uniform(-6, 6, size=4)
            rows.append((*(box + jitter), generator.uniform(0.2, 1), label))
            rows.append((*(box + 2 * jitter), generator.uniform(0, 0.5), generator.integers(1, 6)))
        rows.sort(key=lambda r: -r[4])
        predictions.append(pred(index, rows))
        detections += [{"image_id": index, "category_id": int(r[5]), "score": float(np.float32(r[4])),
                        "bbox": [float(np.float32(r[0])), float(np.float32(r[1])),
                                 float(np.float32(r[2])) - float(np.float32(r[0])),
                                 float(np.float32(r[3])) - float(np.float32(r[1]))]} for r in rows]
    result = evaluate_predictions(predictions, data)
    stats, _ = direct_cocoeval(str(tmp_path / "gt.json"), detections)
    np.testing.assert_allclose([result.metrics[k] for k in COCO_NAMES], stats, rtol=1e-9, equal_nan=True)
    assert 0 < result.metrics["AP"] < 1


def test_coco_difficult_boxes_are_ignored_not_crowd():
    pytest.importorskip("pycocotools")
    # n = (0,0,10,10) normal, d = (40,40,50,50) difficult. Detections: .95 on d (ignored: takes
    # d), .8 nowhere (FP), .7 on n (TP) -> precision 1/2 at recall 1 -> AP50 = 0.5 over all 101
    # recall points. Same as COCOeval on a json without d and without the detection on d.
    data = HandDataset([[(0, 0, 10, 10, 1, 0), (40, 40, 50, 50, 1, 1)]])
    predictions = [pred(0, [(40, 40, 50, 50, .95, 1), (100, 100, 110, 110, .8, 1), (0, 0, 10, 10, .7, 1)])]
    result = evaluate_predictions(predictions, data, metrics=("coco",))
    assert result.metrics["AP50"] == pytest.approx(0.5)
    gt = {"images": [{"id": 0}], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
          "annotations": [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100,
                           "iscrowd": 0}]}
    dets = [{"image_id": 0, "category_id": 1, "bbox": [100, 100, 10, 10], "score": .8},
            {"image_id": 0, "category_id": 1, "bbox": [0, 0, 10, 10], "score": .7}]
    stats, _ = direct_cocoeval(gt, dets)
    np.testing.assert_allclose([result.metrics[k] for k in COCO_NAMES], stats, equal_nan=True)
    # Without the flag the detection on d is a false positive ranked first: precision 1/3.
    plain = HandDataset([[(0, 0, 10, 10, 1, 0)]])
    assert evaluate_predictions(predictions, plain, metrics=("coco",)).metrics["AP50"] == \
        pytest.approx(1 / 3)


def test_coco_with_no_detections_is_zero_and_missing_pycocotools_leaves_voc(monkeypatch):
    data = HandDataset([[(0, 0, 10, 10, 1, 0)]])
    if "pycocotools" not in sys.modules:
        pytest.importorskip("pycocotools")
    result = evaluate_predictions([pred(0, [])], data)
    assert result.metrics["AP"] == 0.0 and result.metrics["mAP_voc"] == 0.0
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # import fails
    with pytest.warns(RuntimeWarning, match="pycocotools is not installed"):
        result = evaluate_predictions([pred(0, [(0, 0, 10, 10, .9, 1)])], data)
    assert set(result.metrics) == {"mAP_voc07", "mAP_voc"} and result.metrics["mAP_voc"] == 1.0
    assert "COCO metrics skipped" in result.notes[0]


# ------------------------------------------------------------------ predict, original pixels


def fixed_head_model(num_classes=3):
    """ssd_small whose heads ignore the image: loc 0 (boxes = priors), and of the last level's
    single cell, anchor 0 says class 1 and anchor 2 class 2 (probability ~1); every other prior
    says background (class scores ~4.5e-5, under any usual threshold)."""
    torch.manual_seed(0)
    model = ssd_small(num_classes=num_classes)
    classes = model.num_classes
    with torch.no_grad():
        for loc, conf in zip(model.loc, model.conf, strict=True):
            loc.weight.zero_()
            loc.bias.zero_()
            conf.weight.zero_()
            conf.bias.zero_()
            conf.bias[0::classes] = 10.0  # background of every anchor
        model.conf[-1].bias[0 * classes + 1] = 20.0
        model.conf[-1].bias[2 * classes + 2] = 20.0
    last = model.priors[-model.prior_config.boxes_per_location[-1]:]  # the 1x1 level's priors
    xyxy = torch.cat([last[:, :2] - last[:, 2:] / 2, last[:, :2] + last[:, 2:] / 2], 1).clamp(0, 1)
    return model, {1: xyxy[0], 2: xyxy[2]}


def test_predict_gives_boxes_in_each_original_image_pixels():
    model, expected = fixed_head_model()
    model.train()
    parts = [SyntheticShapes(num_images=2, image_size=size, seed=s, transform=eval_transform(160))
             for s, size in enumerate([(96, 128), (200, 64), (160, 160)])]
    dataset = ConcatDataset(parts)
    predictions = predict(model, make_loader(dataset, batch_size=4), progress=False)
    assert model.training  # mode restored
    assert [p["index"] for p in predictions] == list(range(6))
    for p in predictions:
        height, width = dataset[p["index"]][1]["orig_size"]
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        assert p["labels"].tolist() == [1, 2] and p["boxes"].dtype == torch.float32
        torch.testing.assert_close(p["boxes"], torch.stack([expected[1], expected[2]]) * scale)
        assert (p["scores"] > 0.99).all()
        assert p["image_id"] == p["index"] % 2  # SyntheticShapes' image id is its own index


def test_predict_on_a_distributed_shard_and_duplicates_counted_once():
    model, _ = fixed_head_model()
    dataset = SyntheticShapes(num_images=5, image_size=64, seed=1, transform=eval_transform(160))
    shards = []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=3)
        loader = make_loader(dataset, batch_size=2, sampler=sampler)
        shards.append(predict(model, loader, progress=False))
        assert [p["index"] for p in shards[-1]] == list(sampler)
    gathered = shards[0] + shards[1]
    assert len(gathered) == 6  # the sampler pads 5 images to 2 x 3
    result = evaluate_predictions(gathered, SyntheticShapes(num_images=5, image_size=64, seed=1),
                                  metrics=("voc",))
    assert result.num_images == 5
    with pytest.raises(ValueError, match="shuffles"):
        predict(model, make_loader(dataset, batch_size=2, shuffle=True), progress=False)


def test_ssd_detect_image_sizes_scales_each_image():
    torch.manual_seed(1)
    model = ssd_small(num_classes=4)
    images = torch.randn(2, 3, 160, 160)
    plain = model.detect(images)
    sized = model.detect(images, image_sizes=[(320, 80), (40, 640)])
    for p, s, (h, w) in zip(plain, sized, [(320, 80), (40, 640)], strict=True):
        assert len(p["boxes"]) > 0
        torch.testing.assert_close(s["boxes"], p["boxes"] * torch.tensor([w, h, w, h]) / 160)
        torch.testing.assert_close(s["scores"], p["scores"])
        assert torch.equal(s["labels"], p["labels"])
    with pytest.raises(ValueError, match="one \\(H, W\\) per image"):
        model.detect(images, image_sizes=[(10, 10)])
    with pytest.raises(ValueError, match="positive"):
        model.detect(images, image_sizes=[(10, 10), (0, 5)])


def test_evaluate_end_to_end_table_plot_json(tmp_path):
    pytest.importorskip("pycocotools")  # COCODetection / COCOeval need it
    model, _ = fixed_head_model(num_classes=6)
    shapes = SyntheticShapes(num_images=6, image_size=(72, 90), seed=2, transform=eval_transform(160))
    dataset = Subset(shapes, [5, 1, 3])
    result = evaluate(model, make_loader(dataset, batch_size=3), progress=False,
                      autocast_dtype=torch.bfloat16)
    assert isinstance(result, EvalResult) and result.num_images == 3 and result.num_detections == 6
    assert set(result.metrics) == {*COCO_NAMES, "mAP_voc07", "mAP_voc"}
    assert all(math.isnan(v) or 0 <= v <= 1 for v in result.metrics.values())
    table = result.table()
    assert table.splitlines()[0].startswith("| class | GT |")
    assert "| rectangle |" in table and "**mean**" in table
    result.plot_pr(tmp_path / "curves" / "pr.png")
    assert (tmp_path / "curves" / "pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = json.dumps(result.to_json(), allow_nan=False)
    assert json.loads(text)["num_images"] == 3


def test_voc_dataset_without_difficult_objects_is_flagged(tmp_path):
    shapes = SyntheticShapes(num_images=1, image_size=32, seed=0)
    write_voc(shapes, tmp_path, image_format="png")
    _, boxes, labels, _, _ = shapes.load_raw(0)
    rows = [(*box, 0.9, label) for box, label in zip(boxes, labels, strict=True)]
    for keep, flagged in ((False, True), (True, False)):
        data = VOCDetection(tmp_path, [("2007", "trainval")], keep_difficult=keep,
                            class_names=shapes.class_names[1:])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = evaluate_predictions([pred(0, rows)], data, metrics=("voc",))
        assert result.metrics["mAP_voc"] == 1.0
        assert any("keep_difficult=False" in str(w.message) for w in caught) == flagged
        assert any("keep_difficult" in note for note in result.notes) == flagged
