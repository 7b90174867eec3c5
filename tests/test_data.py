"""ssd_ext.data: VOC and COCO readers on folders made here, the synthetic set, batching, CLI."""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from ssd_ext import cli
from ssd_ext.data import (
    SHAPE_CLASSES,
    VOC_CLASSES,
    AnnotationWarning,
    COCODetection,
    SyntheticShapes,
    VOCDetection,
    collate,
    draw_boxes,
    eval_transform,
    make_loader,
    train_transform,
    write_coco,
    write_voc,
)

# ----------------------------------------------------------------------------- helpers


def save_image(path, width: int, height: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)).save(path)


def voc_xml(filename: str, width: int | None, height: int | None, objects) -> str:
    size = (
        ""
        if width is None
        else f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
    )
    parts = [f"<annotation><folder>VOC</folder><filename>{filename}</filename>{size}"]
    for name, box, difficult in objects:
        coords = "".join(
            f"<{tag}>{value}</{tag}>"
            for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True)
        )
        parts.append(
            f"<object><name>{name}</name><difficult>{int(difficult)}</difficult>"
            f"<bndbox>{coords}</bndbox></object>"
        )
    parts.append("</annotation>")
    return "".join(parts)


def make_voc(root, year: str, split: str, entries: dict) -> str:
    """entries: id -> (width, height, objects) or a raw XML string; writes images for all."""
    base = os.path.join(root, f"VOC{year}")
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    for index, (image_id, entry) in enumerate(entries.items()):
        if isinstance(entry, str):
            text = entry
            save_image(os.path.join(base, "JPEGImages", f"{image_id}.jpg"), 32, 24, index)
        else:
            width, height, objects = entry
            text = voc_xml(f"{image_id}.jpg", width, height, objects)
            save_image(os.path.join(base, "JPEGImages", f"{image_id}.jpg"), width, height, index)
        with open(os.path.join(base, "Annotations", f"{image_id}.xml"), "w") as handle:
            handle.write(text)
    with open(os.path.join(base, "ImageSets", "Main", f"{split}.txt"), "w") as handle:
        handle.writelines(f"{image_id}\n" for image_id in entries)
    return base


def annotation_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, AnnotationWarning)]


# ----------------------------------------------------------------------------- VOC


def test_voc_reads_boxes_with_one_based_conversion(tmp_path):
    make_voc(
        tmp_path,
        "2007",
        "trainval",
        {
            "000001": (40, 30, [("dog", (1, 1, 20, 10), False), ("person", (11, 5, 40, 30), True)]),
            "000002": (20, 20, [("tvmonitor", (5, 6, 7, 8), False)]),
        },
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnotationWarning)
        train = VOCDetection(tmp_path, [("2007", "trainval")])
        evaluation = VOCDetection(tmp_path, [("2007", "trainval")], keep_difficult=True)
    assert len(train) == 2 and train.num_classes == 21 and train.class_names[1:] == VOC_CLASSES
    image, target = train[0]
    assert isinstance(image, Image.Image) and image.size == (40, 30)
    assert target["image_id"] == "2007/000001" and target["orig_size"] == (30, 40)
    # (xmin, ymin, xmax, ymax) = (1, 1, 20, 10) covers pixels 1..20 -> continuous [0, 20).
    torch.testing.assert_close(target["boxes"], torch.tensor([[0.0, 0.0, 20.0, 10.0]]))
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog") + 1]
    assert target["difficult"].tolist() == [False]
    _, target = evaluation[0]
    assert target["labels"].tolist() == [12, 15] and target["difficult"].tolist() == [False, True]
    torch.testing.assert_close(target["boxes"][1], torch.tensor([10.0, 4.0, 40.0, 30.0]))
    assert train.skipped == {} and train.skipped_files == []


def test_voc_with_transform_gives_normalised_targets(tmp_path):
    make_voc(tmp_path, "2007", "test", {"a": (40, 20, [("cat", (11, 6, 30, 20), True)])})
    dataset = VOCDetection(tmp_path, [("2007", "test")], transform=eval_transform(50), keep_difficult=True)
    image, target = dataset[0]
    assert image.shape == (3, 50, 50) and image.dtype == torch.float32
    torch.testing.assert_close(target["boxes"], torch.tensor([[10 / 40, 5 / 20, 30 / 40, 1.0]]))
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["difficult"].tolist() == [True] and target["orig_size"] == (20, 40)


def test_voc_concatenates_year_split_pairs(tmp_path):
    make_voc(tmp_path, "2007", "trainval", {"x1": (16, 16, [("cow", (1, 1, 8, 8), False)])})
    make_voc(
        tmp_path,
        "2012",
        "trainval",
        {"y1": (16, 16, [("bus", (2, 2, 9, 9), False)]), "y2": (16, 16, [("car", (3, 3, 9, 9), False)])},
    )
    dataset = VOCDetection(tmp_path, [("2007", "trainval"), ("2012", "trainval")])
    assert [dataset[i][1]["image_id"] for i in range(3)] == ["2007/x1", "2012/y1", "2012/y2"]
    with pytest.raises(FileNotFoundError, match="test.txt"):
        VOCDetection(tmp_path, [("2007", "test")])


def test_voc_drop_empty(tmp_path):
    make_voc(
        tmp_path,
        "2007",
        "trainval",
        {"a": (16, 16, [("cow", (1, 1, 8, 8), True)]), "b": (16, 16, [("cow", (1, 1, 8, 8), False)])},
    )
    assert len(VOCDetection(tmp_path)) == 2
    assert len(VOCDetection(tmp_path, drop_empty=True)) == 1


BAD_VOC_CASES = {
    # id: (xml entry, expected skipped counts, boxes kept (pixels), image kept)
    # VOC's xmax == xmin is a valid 1-pixel-wide box; xmax < xmin is degenerate.
    "inverted": (
        (
            32,
            24,
            [
                ("dog", (10, 5, 9, 9), False),
                ("dog", (20, 5, 12, 9), False),
                ("cat", (1, 1, 5, 5), False),
                ("cow", (10, 5, 10, 5), False),
            ],
        ),
        {"degenerate_box": 2},
        [[0, 0, 5, 5], [9, 4, 10, 5]],
        True,
    ),
    "partly_out": ((32, 24, [("dog", (-4, 3, 40, 10), False)]), {"clipped_box": 1}, [[0, 2, 32, 10]], True),
    "fully_out": (
        (32, 24, [("dog", (40, 3, 50, 10), False), ("cat", (1, 1, 5, 5), False)]),
        {"outside_box": 1},
        [[0, 0, 5, 5]],
        True,
    ),
    "unknown": (
        (32, 24, [("unicorn", (1, 1, 5, 5), False), ("cat", (2, 2, 6, 6), False)]),
        {"unknown_class": 1},
        [[1, 1, 6, 6]],
        True,
    ),
    "bad_number": ((32, 24, [("dog", ("a", 1, 5, 5), False)]), {"malformed_box": 1}, [], True),
    "malformed": ("<annotation><object><name>dog</name>", {"malformed_annotation": 1}, None, False),
    "unknown_encoding": ('<?xml version="1.0" encoding="foo"?><annotation/>', {"malformed_annotation": 1},
                         None, False),
    "multibyte_encoding": ('<?xml version="1.0" encoding="shift_jis"?><annotation/>',
                           {"malformed_annotation": 1}, None, False),
}


@pytest.mark.parametrize("case", sorted(BAD_VOC_CASES))
def test_voc_bad_annotation_is_skipped_with_one_warning(tmp_path, case):
    entry, counts, kept_boxes, image_kept = BAD_VOC_CASES[case]
    make_voc(tmp_path, "2007", "trainval", {"good": (16, 16, [("cow", (1, 1, 8, 8), False)]), case: entry})
    with pytest.warns(AnnotationWarning) as record:
        dataset = VOCDetection(tmp_path)
    messages = annotation_warnings(record)
    assert len(messages) == 1 and f"{case}.xml" in messages[0]
    assert dict(dataset.skipped) == counts
    assert len(dataset.skipped_files) == 1 and f"{case}.xml" in dataset.skipped_files[0][0]
    assert len(dataset) == (2 if image_kept else 1)
    if image_kept:
        _, target = dataset[1]
        torch.testing.assert_close(
            target["boxes"], torch.tensor(kept_boxes, dtype=torch.float32).reshape(-1, 4)
        )
    for index in range(len(dataset)):  # a whole epoch reads fine
        dataset[index]


def test_voc_missing_image_and_missing_annotation(tmp_path):
    base = make_voc(
        tmp_path,
        "2007",
        "trainval",
        {"ok": (16, 16, [("cow", (1, 1, 8, 8), False)]), "noimage": (16, 16, [("cow", (1, 1, 8, 8), False)])},
    )
    os.remove(os.path.join(base, "JPEGImages", "noimage.jpg"))
    with open(os.path.join(base, "ImageSets", "Main", "trainval.txt"), "a") as handle:
        handle.write("noxml\n")
    with pytest.warns(AnnotationWarning) as record:
        dataset = VOCDetection(tmp_path)
    messages = annotation_warnings(record)
    assert len(messages) == 2
    assert any("noimage.xml" in m for m in messages) and any("noxml.xml" in m for m in messages)
    assert dict(dataset.skipped) == {"missing_image": 1, "missing_annotation": 1}
    assert len(dataset) == 1


def test_voc_size_missing_from_xml_is_read_from_image(tmp_path):
    make_voc(tmp_path, "2007", "trainval", {"a": (20, 10, [])})
    base = os.path.join(tmp_path, "VOC2007")
    with open(os.path.join(base, "Annotations", "a.xml"), "w") as handle:
        handle.write(voc_xml("a.jpg", None, None, [("cow", (1, 1, 30, 8), False)]))
    with pytest.warns(AnnotationWarning, match="clipped"):
        dataset = VOCDetection(tmp_path)
    torch.testing.assert_close(dataset[0][1]["boxes"], torch.tensor([[0.0, 0.0, 20.0, 8.0]]))


def test_unreadable_image_mid_epoch_is_replaced_not_fatal(tmp_path):
    base = make_voc(
        tmp_path,
        "2007",
        "trainval",
        {"a": (16, 16, [("cow", (1, 1, 8, 8), False)]), "b": (16, 16, [("cat", (1, 1, 8, 8), False)])},
    )
    dataset = VOCDetection(tmp_path)
    with open(os.path.join(base, "JPEGImages", "a.jpg"), "wb") as handle:
        handle.write(b"not a jpeg")
    with pytest.warns(AnnotationWarning, match="a.jpg"):
        image, target = dataset[0]
    assert target["image_id"] == "2007/b"
    assert dataset.skipped["unreadable_image"] == 1


# ----------------------------------------------------------------------------- COCO


def make_coco(tmp_path, images, annotations, categories=None) -> tuple[str, str]:
    image_dir = tmp_path / "images"
    image_dir.mkdir(exist_ok=True)
    for entry in images:
        if isinstance(entry, dict) and entry.get("file_name") and not entry.get("_missing"):
            save_image(image_dir / entry["file_name"], entry.get("width", 32), entry.get("height", 24))
    categories = categories or [
        {"id": 1, "name": "person"},
        {"id": 3, "name": "car"},
        {"id": 18, "name": "dog"},
    ]
    clean_images = [
        {k: v for k, v in e.items() if k != "_missing"} if isinstance(e, dict) else e for e in images
    ]
    path = tmp_path / "instances.json"
    path.write_text(
        json.dumps({"images": clean_images, "annotations": annotations, "categories": categories})
    )
    return str(image_dir), str(path)


def ann(ann_id, image_id, bbox, category_id=3, iscrowd=0):
    area = bbox[2] * bbox[3] if isinstance(bbox, list) and len(bbox) == 4 else 0
    return {
        "id": ann_id,
        "image_id": image_id,
        "bbox": bbox,
        "category_id": category_id,
        "iscrowd": iscrowd,
        "area": area,
    }


def test_coco_reads_boxes_and_maps_categories(tmp_path):
    pytest.importorskip("pycocotools")  # COCODetection / COCOeval need it
    images = [
        {"id": 7, "file_name": "a.jpg", "width": 32, "height": 24},
        {"id": 9, "file_name": "b.jpg", "width": 32, "height": 24},
    ]
    annotations = [
        ann(1, 7, [2.0, 3.0, 10.0, 5.0], 18),
        ann(2, 7, [0.5, 0.5, 4.0, 4.0], 1),
        ann(3, 7, [0.0, 0.0, 30.0, 20.0], 3, iscrowd=1),
        ann(4, 9, [1.0, 1.0, 2.0, 2.0], 3),
    ]
    image_dir, path = make_coco(tmp_path, images, annotations)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnotationWarning)
        dataset = COCODetection(image_dir, path)
    assert dataset.cat_id_to_label == {1: 1, 3: 2, 18: 3}
    assert dataset.label_to_cat_id == {1: 1, 2: 3, 3: 18}
    assert dataset.class_names == ("__background__", "person", "car", "dog") and dataset.num_classes == 4
    image, target = dataset[0]
    assert isinstance(image, Image.Image) and target["image_id"] == 7 and target["orig_size"] == (24, 32)
    torch.testing.assert_close(target["boxes"], torch.tensor([[2.0, 3.0, 12.0, 8.0], [0.5, 0.5, 4.5, 4.5]]))
    assert target["labels"].tolist() == [3, 1] and target["difficult"].tolist() == [False, False]
    assert dataset.skipped == {"crowd_box": 1}
    assert sorted(dataset.coco.getAnnIds(imgIds=[7])) == [1, 2, 3]  # crowd kept for COCOeval

    dataset = COCODetection(image_dir, path, transform=eval_transform(16))
    image, target = dataset[1]
    assert image.shape == (3, 16, 16)
    torch.testing.assert_close(target["boxes"], torch.tensor([[1 / 32, 1 / 24, 3 / 32, 3 / 24]]))


def test_coco_80_categories_give_81_classes(tmp_path):
    pytest.importorskip("pycocotools")  # COCODetection / COCOeval need it
    categories = [{"id": cat_id, "name": f"c{cat_id}"} for cat_id in range(1, 91) if cat_id % 9 != 0][:80]
    image_dir, path = make_coco(
        tmp_path,
        [{"id": 1, "file_name": "a.jpg"}],
        [ann(1, 1, [1, 1, 5, 5], categories[-1]["id"])],
        categories,
    )
    dataset = COCODetection(image_dir, path)
    assert dataset.num_classes == 81
    assert dataset[0][1]["labels"].tolist() == [80]
    assert dataset.label_to_cat_id[80] == categories[-1]["id"]


def test_coco_drop_empty(tmp_path):
    pytest.importorskip("pycocotools")  # COCODetection / COCOeval need it
    images = [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}]
    image_dir, path = make_coco(
        tmp_path, images, [ann(1, 1, [1, 1, 5, 5]), ann(2, 2, [1, 1, 5, 5], iscrowd=1)]
    )
    assert len(COCODetection(image_dir, path)) == 2
    assert len(COCODetection(image_dir, path, drop_empty=True)) == 1


def test_coco_bad_entries_are_skipped_with_one_warning(tmp_path):
    pytest.importorskip("pycocotools")  # COCODetection / COCOeval need it
    images = [
        {"id": 1, "file_name": "a.jpg", "width": 32, "height": 24},
        {"id": 2, "file_name": "gone.jpg", "_missing": True},
        {"id": 3},  # no file_name
        "nonsense",
    ]
    annotations = [
        ann(1, 1, [2, 2, 5, 5]),  # good
        ann(2, 1, [5, 5, 0, 4]),  # zero width
        ann(3, 1, [5, 5, -3, 4]),  # negative width
        ann(4, 1, [20, 20, 30, 30]),  # partly outside: clipped
        ann(5, 1, [40, 2, 5, 5]),  # fully outside
        ann(6, 1, [1, 1, 3, 3], category_id=99),  # unknown category
        ann(7, 1, [1, 1, "x", 3]),  # malformed bbox
        ann(8, 1, None),  # no bbox
        ann(9, 2, [1, 1, 3, 3]),  # its image is missing: skipped with the image
        ann(10, 55, [1, 1, 3, 3]),  # unknown image id
        {"image_id": 1, "bbox": [1, 1, 2, 2]},  # no id
    ]
    image_dir, path = make_coco(tmp_path, images, annotations)
    with pytest.warns(AnnotationWarning) as record:
        dataset = COCODetection(image_dir, path)
    messages = annotation_warnings(record)
    assert len(messages) == 1 and "instances.json" in messages[0]
    assert dict(dataset.skipped) == {
        "degenerate_box": 2,
        "clipped_box": 1,
        "outside_box": 1,
        "unknown_class": 1,
        "malformed_box": 2,
        "missing_image": 1,
        "malformed_annotation": 4,
    }
    assert len(dataset) == 1
    _, target = dataset[0]
    torch.testing.assert_close(
        target["boxes"], torch.tensor([[2.0, 2.0, 7.0, 7.0], [20.0, 20.0, 32.0, 24.0]])
    )


def test_synthetic_coco_round_trip_and_cocoeval_of_the_ground_truth(tmp_path):
    pytest.importorskip("pycocotools")  # COCODetection / COCOeval need it
    from pycocotools.cocoeval import COCOeval

    dataset = SyntheticShapes(num_images=8, image_size=64, seed=5)
    category_ids = [2, 4, 8, 16, 32]  # non-contiguous, like COCO's
    write_coco(dataset, tmp_path / "images", tmp_path / "shapes.json", category_ids=category_ids)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnotationWarning)
        coco = COCODetection(tmp_path / "images", tmp_path / "shapes.json", transform=eval_transform(32))
    assert coco.class_names == dataset.class_names
    detections = []
    for index in range(len(dataset)):
        _, expected = dataset[index]
        _, target = coco[index]
        assert target["image_id"] == index and target["orig_size"] == (64, 64)
        assert torch.equal(target["labels"], expected["labels"])
        torch.testing.assert_close(target["boxes"] * 64, expected["boxes"])
        # The ground truth as detections, mapped back to category ids: a perfect score.
        for box, label in zip(target["boxes"] * 64, target["labels"], strict=True):
            x1, y1, x2, y2 = box.tolist()
            detections.append(
                {
                    "image_id": index,
                    "category_id": coco.label_to_cat_id[int(label)],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": 1.0,
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco.coco, coco.coco.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_coco_unreadable_json_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [')
    with pytest.raises(ValueError, match="broken.json"):
        COCODetection(tmp_path, path)
    path.write_text('{"images": []}')
    with pytest.raises(ValueError, match="not a COCO instances file"):
        COCODetection(tmp_path, path)


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_items_are_deterministic_per_index():
    first = SyntheticShapes(num_images=20, seed=3)
    second = SyntheticShapes(num_images=20, seed=3)
    order = [5, 0, 19, 5]
    items = [first[i] for i in order]
    for index, (image, target) in zip(reversed(order), reversed(items), strict=True):
        other_image, other_target = second[index]
        assert np.array_equal(np.asarray(image), np.asarray(other_image))
        assert torch.equal(target["boxes"], other_target["boxes"])
        assert torch.equal(target["labels"], other_target["labels"])
    different = SyntheticShapes(num_images=20, seed=4)[5]
    assert not np.array_equal(np.asarray(items[0][0]), np.asarray(different[0]))


def test_synthetic_boxes_are_valid_and_varied():
    dataset = SyntheticShapes(num_images=40, image_size=(96, 128), min_objects=1, max_objects=5)
    assert dataset.num_classes == 6 and dataset.class_names[1:] == SHAPE_CLASSES
    labels_seen, counts = set(), []
    for index in range(len(dataset)):
        image, target = dataset[index]
        boxes = target["boxes"]
        assert image.size == (128, 96) and target["orig_size"] == (96, 128)
        assert 1 <= len(boxes) <= 5
        assert bool((boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 128).all() and (boxes[:, 3] <= 96).all())
        sides = boxes[:, 2:] - boxes[:, :2]
        assert bool((sides >= 8).all())  # shapes are reasonably large
        assert torch.equal(boxes, boxes.round())  # integer pixel boxes
        labels_seen.update(target["labels"].tolist())
        counts.append(len(boxes))
    assert labels_seen == {1, 2, 3, 4, 5}
    assert len(set(counts)) > 2


def test_synthetic_shape_is_drawn_inside_its_box():
    # The pixels inside each box differ from the background just outside it (on average).
    dataset = SyntheticShapes(num_images=10, max_objects=1, seed=1)
    for index in range(len(dataset)):
        image, target = dataset[index]
        pixels = np.asarray(image, dtype=np.float32)
        x1, y1, x2, y2 = (int(v) for v in target["boxes"][0])
        inside = pixels[y1 + (y2 - y1) // 3 : y2 - (y2 - y1) // 3, x1 + (x2 - x1) // 3 : x2 - (x2 - x1) // 3]
        mask = np.ones(pixels.shape[:2], dtype=bool)
        mask[max(0, y1 - 2) : y2 + 2, max(0, x1 - 2) : x2 + 2] = False
        assert np.linalg.norm(inside.reshape(-1, 3).mean(0) - pixels[mask].mean(0)) > 25


def test_synthetic_demo_splits_are_disjoint():
    train, test = SyntheticShapes.demo("train"), SyntheticShapes.demo("test", transform=eval_transform(64))
    assert len(train) == 2000 and len(test) == 200 and train.seed != test.seed
    assert test[0][0].shape == (3, 64, 64)
    assert SyntheticShapes.demo("val", num_images=5).num_images == 5
    with pytest.raises(ValueError):
        SyntheticShapes.demo("holdout")


def test_synthetic_cache_renders_once_and_serves_copies():
    import pickle

    plain = SyntheticShapes(num_images=3, image_size=32, seed=4)
    cached = SyntheticShapes(num_images=3, image_size=32, seed=4, cache=True)
    renders = []
    original_render = cached.render
    cached.render = lambda index: renders.append(index) or original_render(index)
    for _ in range(2):
        for index in range(3):
            image, target = cached[index]
            expected_image, expected = plain[index]
            assert np.array_equal(np.asarray(image), np.asarray(expected_image))
            assert torch.equal(target["boxes"], expected["boxes"])
            image.paste((0, 0, 0), (0, 0, 32, 32))  # drawing on an item leaves the cache alone
    assert renders == [0, 1, 2]
    filled = SyntheticShapes(num_images=3, cache=True)
    filled[0]
    assert len(filled._rendered) == 1
    assert pickle.loads(pickle.dumps(filled))._rendered == {}  # each process renders its own
    with pytest.raises(ValueError, match="cache"):
        SyntheticShapes(cache="yes")


def test_synthetic_rejects_bad_configuration():
    with pytest.raises(ValueError):
        SyntheticShapes(min_objects=3, max_objects=2)
    with pytest.raises(ValueError):
        SyntheticShapes(min_size=0.0)
    with pytest.raises(IndexError):
        SyntheticShapes(num_images=3)[3]


@pytest.mark.parametrize("image_format", ["jpg", "png"])
def test_write_voc_round_trips_through_the_voc_reader(tmp_path, image_format):
    dataset = SyntheticShapes(num_images=12, image_size=64, seed=2)
    ids = write_voc(
        dataset, tmp_path, year="2007", split="trainval", test_fraction=0.25, image_format=image_format
    )
    assert ids == [f"{i:06d}" for i in range(12)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnotationWarning)
        trainval = VOCDetection(tmp_path, [("2007", "trainval")], class_names=SHAPE_CLASSES)
        test = VOCDetection(tmp_path, [("2007", "test")], class_names=SHAPE_CLASSES)
    assert len(trainval) == 9 and len(test) == 3
    for index in range(12):
        image, target = trainval[index] if index < 9 else test[index - 9]
        expected_image, expected = dataset[index]
        assert target["image_id"] == f"2007/{index:06d}"
        assert torch.equal(target["boxes"], expected["boxes"])
        assert torch.equal(target["labels"], expected["labels"])
        if image_format == "png":
            assert np.array_equal(np.asarray(image), np.asarray(expected_image))


def test_cli_synth_voc(tmp_path, capsys):
    out = tmp_path / "synth"
    assert (
        cli.main(["synth-voc", "--out", str(out), "--num-images", "5", "--image-size", "48", "--seed", "9"])
        == 0
    )
    captured = capsys.readouterr()
    assert "5/5" in captured.err  # the tqdm progress bar
    assert "wrote 5 images" in captured.out
    dataset = VOCDetection(out, [("2007", "trainval")], class_names=SHAPE_CLASSES)
    expected = SyntheticShapes(num_images=5, image_size=48, seed=9)
    assert len(dataset) == 5
    for index in range(5):
        assert torch.equal(dataset[index][1]["boxes"], expected[index][1]["boxes"])


# ----------------------------------------------------------------------------- batching


def test_collate_stacks_images_and_lists_targets():
    dataset = SyntheticShapes(num_images=3, transform=eval_transform(40))
    images, targets = collate([dataset[i] for i in range(3)])
    assert images.shape == (3, 3, 40, 40) and images.dtype == torch.float32
    assert [t["image_id"] for t in targets] == [0, 1, 2]
    with pytest.raises(ValueError, match="one size"):
        collate([dataset[0], SyntheticShapes(num_images=1, transform=eval_transform(20))[0]])
    with pytest.raises(TypeError, match="transform"):
        collate([SyntheticShapes(num_images=1)[0]])
    with pytest.raises(ValueError):
        collate([])


def test_loader_with_workers_is_reproducible_and_matches_direct_items():
    dataset = SyntheticShapes(num_images=12, image_size=64, transform=train_transform(48))

    def epoch(seed):
        loader = make_loader(dataset, batch_size=4, shuffle=True, num_workers=2, pin_memory=True, seed=seed)
        return list(loader)

    first, again, other = epoch(1), epoch(1), epoch(2)
    assert len(first) == 3
    for (images, targets), (images2, targets2) in zip(first, again, strict=True):
        assert images.shape == (4, 3, 48, 48)
        assert torch.equal(images, images2)
        for target, target2 in zip(targets, targets2, strict=True):
            assert target["image_id"] == target2["image_id"]
            assert torch.equal(target["boxes"], target2["boxes"])
            boxes = target["boxes"]
            assert bool(((boxes >= 0) & (boxes <= 1)).all())
            assert bool((boxes[:, 2:] > boxes[:, :2]).all())
            assert target["labels"].dtype == torch.int64 and target["labels"].shape == boxes.shape[:1]
    ids = sorted(t["image_id"] for _, targets in first for t in targets)
    assert ids == list(range(12))
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=True))

    # Without augmentation the workers serve exactly the items the dataset gives directly.
    plain = SyntheticShapes(num_images=6, image_size=64, transform=eval_transform(32))
    loader = make_loader(plain, batch_size=3, num_workers=2)
    for batch_index, (images, targets) in enumerate(loader):
        for k in range(3):
            image, target = plain[3 * batch_index + k]
            assert torch.equal(images[k], image) and torch.equal(targets[k]["boxes"], target["boxes"])


def test_make_loader_rejects_bad_batch_size():
    with pytest.raises(ValueError):
        make_loader(SyntheticShapes(num_images=2), batch_size=0)


# ----------------------------------------------------------------------------- drawing


def test_draw_boxes_writes_a_png(tmp_path):
    dataset = SyntheticShapes(num_images=1, transform=eval_transform(64))
    image, target = dataset[0]
    path = tmp_path / "boxes.png"
    drawn = draw_boxes(
        image,
        target["boxes"],
        target["labels"],
        scores=torch.ones(len(target["labels"])),
        class_names=dataset.class_names,
        path=path,
    )
    assert path.exists() and Image.open(path).size == (64, 64)
    from ssd_ext.data import to_pil

    assert not np.array_equal(np.asarray(drawn), np.asarray(to_pil(image)))


def test_draw_boxes_accepts_numpy_labels_and_scores():
    image = Image.new("RGB", (32, 32))
    drawn = draw_boxes(image, np.array([[2, 2, 20, 20], [5, 5, 30, 30]]), np.array([1, 2]),
                       scores=np.array([0.9, 0.5]))
    assert drawn.size == (32, 32)


def test_targets_without_transform_do_not_alias_the_dataset(tmp_path):
    make_voc(tmp_path, "2007", "trainval", {"000001": (40, 30, [("dog", (1, 1, 20, 10), False)])})
    dataset = VOCDetection(tmp_path, [("2007", "trainval")])
    _, target = dataset[0]
    expected = target["boxes"].clone()
    target["boxes"] /= 1000.0
    target["labels"].zero_()
    _, again = dataset[0]
    assert torch.equal(again["boxes"], expected)
    assert again["labels"].tolist() == [VOC_CLASSES.index("dog") + 1]


# ----------------------------------------------------------------------------- issue 12: bad inputs


def bomb_png(path, claimed: int = 65500) -> None:
    """A tiny PNG whose IHDR claims ``claimed`` x ``claimed`` pixels (CRC recomputed), so PIL
    refuses it as a decompression bomb without anything large being allocated."""
    import struct
    import zlib

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", claimed, claimed)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    with open(path, "wb") as handle:
        handle.write(bytes(data))


def bomb_jpeg(path, claimed: int = 65500) -> None:
    """A tiny baseline JPEG whose SOF0 header claims ``claimed`` x ``claimed`` pixels."""
    import struct

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 10)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", claimed, claimed)  # height, width
    with open(path, "wb") as handle:
        handle.write(bytes(data))


def truncated_jpeg(path) -> None:
    buffer = io.BytesIO()
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    with open(path, "wb") as handle:  # the header intact, the pixel data cut short
        handle.write(buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3])


BAD_IMAGE_WRITERS = {
    "bomb_png": bomb_png,
    "bomb_jpeg": bomb_jpeg,
    "truncated": truncated_jpeg,
    "zero_bytes": lambda path: open(path, "wb").close(),
    "not_an_image": lambda path: open(path, "w").write("<annotation/>"),
}


def test_bomb_helpers_claim_a_huge_size_without_allocating(tmp_path):
    for name in ("bomb_png", "bomb_jpeg"):
        BAD_IMAGE_WRITERS[name](tmp_path / name)
        assert os.path.getsize(tmp_path / name) < 2000
        with pytest.raises(Image.DecompressionBombError):
            Image.open(tmp_path / name)


@pytest.mark.parametrize("kind", sorted(BAD_IMAGE_WRITERS))
@pytest.mark.parametrize("source", ["voc", "coco"])
def test_unreadable_image_of_any_kind_is_skipped_and_counted(tmp_path, kind, source):
    # Annotated with a size: built fine, found when loaded -> the next image is served, through
    # the dataset, the train transform and the loader; counted once per file, every epoch alike.
    pytest.importorskip("pycocotools")  # COCODetection / COCOeval need it
    if source == "voc":
        base = make_voc(tmp_path, "2007", "trainval", {
            "bad": (32, 24, [("cow", (1, 1, 8, 8), False)]),
            "good": (32, 24, [("cat", (1, 1, 8, 8), False)]),
        })
        bad_path = os.path.join(base, "JPEGImages", "bad.jpg")

        def build(**kwargs):
            return VOCDetection(tmp_path, **kwargs)
    else:
        images = [{"id": 1, "file_name": "bad.jpg", "width": 32, "height": 24},
                  {"id": 2, "file_name": "good.jpg", "width": 32, "height": 24}]
        image_dir, path = make_coco(tmp_path, images, [ann(1, 1, [1, 1, 5, 5]), ann(2, 2, [1, 1, 5, 5])])
        bad_path = os.path.join(image_dir, "bad.jpg")

        def build(**kwargs):
            return COCODetection(image_dir, path, **kwargs)
    BAD_IMAGE_WRITERS[kind](bad_path)
    dataset = build(transform=train_transform(32))
    with pytest.warns(AnnotationWarning, match="bad.jpg"):
        image, target = dataset[0]
    assert image.shape == (3, 32, 32) and target["image_id"] in ("2007/good", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnotationWarning)  # warned once per file
        batches = list(make_loader(dataset, batch_size=2))
    assert len(batches) == 1 and [t["image_id"] for t in batches[0][1]] == [target["image_id"]] * 2
    assert dataset.skipped == {"unreadable_image": 1}
    assert [f for f, _ in dataset.skipped_files] == [bad_path]
    assert "bad.jpg" in dataset.report() and "1 unreadable image" in dataset.report()

    # No size in the annotation: the header is read when building, so the image is skipped there.
    if source == "voc":
        with open(os.path.join(base, "Annotations", "bad.xml"), "w") as handle:
            handle.write(voc_xml("bad.jpg", None, None, [("cow", (1, 1, 8, 8), False)]))
    else:
        images[0] = {"id": 1, "file_name": "bad.jpg"}
        make_coco(tmp_path, images, [ann(1, 1, [1, 1, 5, 5]), ann(2, 2, [1, 1, 5, 5])])
        BAD_IMAGE_WRITERS[kind](bad_path)
    header_ok = kind == "truncated"  # its header is intact: caught when loaded instead
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        dataset = build()
        assert len(dataset) == (2 if header_ok else 1)
        assert {dataset[i][1]["image_id"] for i in range(len(dataset))} == {target["image_id"]}
    assert dataset.skipped == {"unreadable_image": 1}


def test_coco_numbers_of_any_type_or_size_skip_only_their_entry(tmp_path):
    pytest.importorskip("pycocotools")  # COCODetection / COCOeval need it
    huge = 10**400  # too large for a float: OverflowError if converted blindly
    images = [
        {"id": 1, "file_name": "a.jpg", "width": 32, "height": 24},
        {"id": 2, "file_name": "b.jpg", "width": huge, "height": 24, "_missing": True},  # bad size
        {"id": 3, "file_name": "c.jpg", "width": "32", "height": None, "_missing": True},  # bad size
        {"id": True, "file_name": "d.jpg"},  # a bool is not an id
        {"id": 2**70, "file_name": "e.jpg"},  # outside int64
        {"id": 6.0, "file_name": "f.jpg"},
    ]
    bad_bboxes = [[huge, 1, 2, 2], [1, 1, huge, 2], ["1", 1, 2, 2], [None, 1, 2, 2], [True, 1, 2, 2],
                  [[1], 1, 2, 2], [1, 1, 2], {"x": 1}, "1,1,2,2", [float("nan"), 1, 2, 2],
                  [float("inf"), 1, 2, 2]]
    annotations = [ann(1, 1, [1, 1, 4, 4]), ann(2, 2, [1, 1, 40, 4]), ann(3, 3, [2, 2, 3, 3])]
    annotations += [ann(10 + i, 1, bbox) for i, bbox in enumerate(bad_bboxes)]
    annotations += [ann(30, 1, [1, 1, 4, 4], category_id=huge), ann(31, 1, [1, 1, 4, 4], category_id="3"),
                    ann(32, huge, [1, 1, 4, 4]), ann(huge, 1, [1, 1, 4, 4]),
                    {**ann(34, 1, [1, 1, 4, 4]), "area": huge}, {**ann(35, 1, [1, 1, 4, 4]), "area": "x"}]
    image_dir, path = make_coco(tmp_path, images, annotations)
    for name, size in (("b.jpg", (20, 10)), ("c.jpg", (16, 12))):  # sizes read from the headers
        save_image(os.path.join(image_dir, name), *size)
    # Python's json reads and writes NaN/Infinity and huge ints, as other writers may.
    with pytest.warns(AnnotationWarning, match="instances.json") as record:
        dataset = COCODetection(image_dir, path)
    assert len(annotation_warnings(record)) == 1
    assert dataset.skipped == {"malformed_box": len(bad_bboxes), "unknown_class": 2, "bad_size": 2,
                               "malformed_annotation": 5, "clipped_box": 1}
    assert [r.image_id for r in dataset.records] == [1, 2, 3]
    assert dataset.records[1].size == (20, 10) and dataset.records[2].size == (16, 12)
    torch.testing.assert_close(dataset[1][1]["boxes"], torch.tensor([[1.0, 1.0, 20.0, 5.0]]))
    areas = {a["id"]: a["area"] for a in dataset.coco.dataset["annotations"]}
    assert areas[34] == 16.0 and areas[35] == 16.0  # replaced by w*h for COCOeval
    assert len(dataset[0][1]["boxes"]) == 3


def test_boxes_are_clipped_to_the_decoded_size_not_the_annotated_one(tmp_path):
    # <size> says 640x480, the picture is 64x48: the real size wins, warned once per file.
    base = make_voc(tmp_path, "2007", "trainval", {"a": (64, 48, []), "b": (64, 48, [])})
    objects = [("cow", (101, 101, 300, 300), False), ("cat", (11, 11, 100, 30), False),
               ("dog", (2, 2, 20, 20), False)]
    with open(os.path.join(base, "Annotations", "a.xml"), "w") as handle:
        handle.write(voc_xml("a.jpg", 640, 480, objects))
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnotationWarning)  # nothing wrong seen when building
        dataset = VOCDetection(tmp_path)
    with pytest.warns(AnnotationWarning, match=r"a\.jpg: annotated size 640x480 but the image is 64x48"):
        _, target = dataset[0]
    torch.testing.assert_close(target["boxes"], torch.tensor([[10.0, 10.0, 64.0, 30.0], [1, 1, 20, 20.0]]))
    assert target["labels"].tolist() == [VOC_CLASSES.index("cat") + 1, VOC_CLASSES.index("dog") + 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnotationWarning)
        dataset[0]
        dataset[1]
    assert dataset.skipped == {"size_mismatch": 1, "outside_box": 1, "clipped_box": 1}
    assert dataset.skipped_files == [(os.path.join(base, "JPEGImages", "a.jpg"),
                                      "1 clipped box, 1 outside box, 1 size mismatch")]
    # Through the train transform too: every box inside the image, never the outside one.
    dataset.transform = train_transform(32)
    torch.manual_seed(0)
    for _ in range(20):
        _, target = dataset[0]
        assert ((target["boxes"] >= 0) & (target["boxes"] <= 1)).all()
        assert VOC_CLASSES.index("cow") + 1 not in target["labels"].tolist()


def test_coco_boxes_are_clipped_to_the_decoded_size(tmp_path):
    pytest.importorskip("pycocotools")  # COCODetection / COCOeval need it
    images = [{"id": 1, "file_name": "a.jpg", "width": 640, "height": 480}]
    image_dir, path = make_coco(tmp_path, images, [ann(1, 1, [100, 100, 200, 200]), ann(2, 1, [1, 1, 4, 4])])
    save_image(os.path.join(image_dir, "a.jpg"), 64, 48)
    dataset = COCODetection(image_dir, path, transform=train_transform(32))
    with pytest.warns(AnnotationWarning, match="640x480 but the image is 64x48"):
        _, target = dataset[0]
    assert len(target["boxes"]) <= 1
    assert dataset.skipped == {"size_mismatch": 1, "outside_box": 1}


@pytest.mark.parametrize("width", ["inf", "nan", "-64", "0", "abc", "1e400"])
def test_voc_unusable_size_is_a_bad_annotation_and_the_real_size_is_used(tmp_path, width):
    base = make_voc(tmp_path, "2007", "trainval", {"a": (64, 48, [])})
    with open(os.path.join(base, "Annotations", "a.xml"), "w") as handle:
        handle.write(voc_xml("a.jpg", width, 48, [("cow", (11, 11, 100, 30), False)]))
    with pytest.warns(AnnotationWarning, match="a.xml: 1 bad size, 1 clipped box"):
        dataset = VOCDetection(tmp_path)
    assert dataset.records[0].size == (64, 48)
    torch.testing.assert_close(dataset[0][1]["boxes"], torch.tensor([[10.0, 10.0, 64.0, 30.0]]))


def test_voc_difficult_flag_of_another_value_is_a_malformed_object(tmp_path):
    base = make_voc(tmp_path, "2007", "trainval", {"a": (32, 24, [])})
    xml = voc_xml("a.jpg", 32, 24, [("cow", (1, 1, 8, 8), False), ("cat", (1, 1, 8, 8), False)])
    xml = xml.replace("<difficult>0</difficult>", "<difficult>maybe</difficult>", 1)
    with open(os.path.join(base, "Annotations", "a.xml"), "w") as handle:
        handle.write(xml)
    with pytest.warns(AnnotationWarning, match="1 malformed box"):
        dataset = VOCDetection(tmp_path)
    assert dataset[0][1]["labels"].tolist() == [VOC_CLASSES.index("cat") + 1]


@pytest.mark.parametrize("value, crowd", [(0, False), (1, True), ("0", False), ("1", True), (" 1 ", True),
                                          (False, False), (True, True), (0.0, False), (1.0, True)])
def test_coco_iscrowd_is_read_as_its_value(tmp_path, value, crowd):
    pytest.importorskip("pycocotools")  # COCODetection / COCOeval need it
    image_dir, path = make_coco(tmp_path, [{"id": 1, "file_name": "a.jpg"}],
                                [ann(1, 1, [1, 1, 5, 5], iscrowd=value), ann(2, 1, [2, 2, 5, 5])])
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnotationWarning)
        dataset = COCODetection(image_dir, path)
    assert len(dataset[0][1]["boxes"]) == (1 if crowd else 2)
    assert dataset.skipped == ({"crowd_box": 1} if crowd else {})
    assert [a["iscrowd"] for a in dataset.coco.dataset["annotations"]] == [int(crowd), 0]  # for COCOeval


@pytest.mark.parametrize("value", [2, -1, "yes", "", None, [0], 0.5, {"crowd": 0}])
def test_coco_invalid_iscrowd_is_a_malformed_annotation(tmp_path, value):
    pytest.importorskip("pycocotools")  # COCODetection / COCOeval need it
    image_dir, path = make_coco(tmp_path, [{"id": 1, "file_name": "a.jpg"}],
                                [ann(1, 1, [1, 1, 5, 5], iscrowd=value), ann(2, 1, [2, 2, 5, 5])])
    with pytest.warns(AnnotationWarning, match="iscrowd"):
        dataset = COCODetection(image_dir, path)
    assert dataset.skipped == {"malformed_annotation": 1}
    assert len(dataset[0][1]["boxes"]) == 1


def test_coco_repeated_ids_keep_the_first_with_a_warning(tmp_path):
    pytest.importorskip("pycocotools")  # COCODetection / COCOeval need it
    categories = [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}, {"id": 3, "name": "truck"}]
    images = [{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}]
    annotations = [ann(1, 1, [1, 1, 5, 5], 3), ann(1, 1, [2, 2, 5, 5], 1), ann(2, 1, [3, 3, 5, 5], 1)]
    image_dir, path = make_coco(tmp_path, images, annotations, categories)
    with pytest.warns(AnnotationWarning, match="category id 3 listed again as 'truck'; the first, 'car'"):
        dataset = COCODetection(image_dir, path)
    assert dataset.class_names == ("__background__", "person", "car")
    assert dataset.cat_id_to_label == {1: 1, 3: 2}
    assert dataset.skipped == {"malformed_annotation": 3}
    assert len(dataset) == 1 and dataset[0][1]["labels"].tolist() == [2, 1]
    assert sorted(a["id"] for a in dataset.coco.dataset["annotations"]) == [1, 2]


@pytest.mark.parametrize("content", [b"000001\n\xff\xfe000002\n", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_voc_split_file_that_is_not_utf8_text_is_a_clear_error(tmp_path, content):
    base = make_voc(tmp_path, "2007", "trainval", {"a": (16, 16, [])})
    split_file = os.path.join(base, "ImageSets", "Main", "trainval.txt")
    with open(split_file, "wb") as handle:
        handle.write(content)
    with pytest.raises(ValueError, match=r"VOC split file .*trainval\.txt: expected (UTF-8 )?text"):
        VOCDetection(tmp_path)


def test_coco_json_in_utf16_is_read(tmp_path):
    pytest.importorskip("pycocotools")  # COCODetection / COCOeval need it
    image_dir, path = make_coco(tmp_path, [{"id": 1, "file_name": "a.jpg"}], [ann(1, 1, [1, 1, 5, 5])])
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    with open(path, "w", encoding="utf-16") as handle:
        handle.write(text)
    assert len(COCODetection(image_dir, path)[0][1]["boxes"]) == 1


@pytest.mark.parametrize("argument, value", [
    ("num_images", -1), ("num_images", 2.5), ("num_images", "10"), ("num_images", True), ("num_images", None),
    ("seed", -3), ("seed", 1.5), ("image_size", -8), ("image_size", (16, 8)), ("image_size", "64"),
    ("min_objects", 0), ("max_objects", -2), ("max_occlusion", 1.5), ("max_size", float("nan")),
])
def test_synthetic_rejects_bad_arguments_naming_them(argument, value):
    with pytest.raises(ValueError, match=rf"^{argument.split('[')[0]}"):
        SyntheticShapes(**{argument: value})


def test_synthetic_accepts_numpy_integers():
    dataset = SyntheticShapes(num_images=np.int64(3), image_size=np.int32(32), seed=np.uint8(4))
    assert len(dataset) == 3 and dataset[2][0].size == (32, 32)


@pytest.mark.parametrize("kwargs, match", [
    ({"test_fraction": -0.5}, "test_fraction"), ({"test_fraction": "0.1"}, "test_fraction"),
    ({"jpeg_quality": 0}, "jpeg_quality"), ({"year": "../x"}, "year"), ({"split": ""}, "split"),
    ({"image_format": "gif"}, "image_format"),
])
def test_write_voc_rejects_bad_arguments_before_writing(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_voc(SyntheticShapes(num_images=2), tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_writers_live_in_their_own_module_and_take_any_dataset(tmp_path):
    from ssd_ext.data import writers

    assert write_voc is writers.write_voc and write_coco is writers.write_coco
    with pytest.raises(TypeError, match="dataset"):
        write_voc([1, 2], tmp_path)
    with pytest.raises(ValueError, match="category_ids"):
        write_coco(SyntheticShapes(num_images=1), tmp_path, tmp_path / "a.json", category_ids=[1, 2, 3, 4, 4])


def test_the_package_exports_resolve():
    import ssd_ext.data as data

    assert all(hasattr(data, name) for name in data.__all__)
    assert "ToFloatImage" not in data.__all__ and not hasattr(data.transforms, "ToFloatImage")
