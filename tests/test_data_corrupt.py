"""Corrupt data never stops training (issue 12, "Datasets" defence).

A VOC folder and a COCO json full of corrupt images (truncated, zero bytes, text named .jpg,
decompression-bomb headers, missing files, PNG named .jpg) and corrupt annotations (bad
numbers, missing fields, wrong types, boxes outside, sizes that lie) train a tiny SSD for an
epoch through the real loader and train transform: every bad item is skipped or fixed, counted
exactly once, and named in ``dataset.report()`` at the end, load-time problems found in
DataLoader worker processes included.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from test_data import bomb_jpeg, bomb_png, save_image, truncated_jpeg, voc_xml

from ssd_ext.data import COCODetection, VOCDetection, make_loader, train_transform
from ssd_ext.engine.loss import MultiBoxLoss
from ssd_ext.models import ssd_small

SIZE = (64, 48)  # (W, H) of every real picture here
GOOD_OBJECTS = [("dog", (5, 5, 30, 40), False), ("cat", (33, 10, 60, 44), False)]


def write_bad_image(path: str, kind: str) -> None:
    if kind == "truncated":
        truncated_jpeg(path)
    elif kind == "zero_bytes":
        open(path, "wb").close()
    elif kind == "text":
        with open(path, "w") as handle:
            handle.write("this is not an image\n")
    elif kind == "bomb_jpeg":
        bomb_jpeg(path)
    elif kind == "bomb_png":
        bomb_png(path)
    elif kind == "png_named_jpg":  # readable: PIL goes by content, so it is NOT skipped
        Image.fromarray(np.full((SIZE[1], SIZE[0], 3), 90, dtype=np.uint8)).save(path, format="PNG")
    else:
        raise AssertionError(kind)


# ----------------------------------------------------------------------------- VOC

# id: (how the XML is written, how the image is written); None = as a good one.
VOC_ITEMS = {
    "good0": (None, None), "good1": (None, None), "good2": (None, None), "good3": (None, None),
    "good4": (None, None), "good5": (None, None), "good6": (None, None), "good7": (None, None),
    "truncated": (None, "truncated"),
    "zero_bytes": (None, "zero_bytes"),
    "text_jpg": (None, "text"),
    "bomb": (None, "bomb_jpeg"),
    "bomb_nosize": ("nosize", "bomb_png"),
    "png_as_jpg": (None, "png_named_jpg"),
    "missing_image": (None, "missing"),
    "bad_number": ("bad_number", None),
    "inf_size": ("inf_size", None),
    "no_size": ("nosize", None),
    "outside": ("outside", None),
    "unknown": ("unknown", None),
    "no_bndbox": ("no_bndbox", None),
    "size_lie": ("size_lie", None),
    "broken_xml": ("broken_xml", None),
    "not_utf8_xml": ("not_utf8_xml", None),
    "no_xml": ("no_xml", None),
}

VOC_EXPECTED = {
    # when built
    "missing_image": 1, "malformed_box": 2, "bad_size": 1, "unknown_class": 1,
    "malformed_annotation": 2, "missing_annotation": 1,
    # bomb_nosize when built (no size: the header is read), the 4 others when loaded
    "unreadable_image": 5,
    # outside: one when built; size_lie: one when loaded (the real 64x48 wins over 640x480)
    "outside_box": 2, "clipped_box": 2, "size_mismatch": 1,
}


def voc_annotation(image_id: str, how: str | None) -> bytes | None:
    name = f"{image_id}.png" if image_id == "bomb_nosize" else f"{image_id}.jpg"
    width, height = SIZE
    objects = list(GOOD_OBJECTS)
    if how == "nosize":
        width = height = None
    elif how == "bad_number":
        objects.append(("cow", ("abc", 1, "1e", 5), False))
    elif how == "inf_size":
        width = "inf"
    elif how == "outside":
        objects += [("cow", (80, 60, 90, 70), False), ("cow", (50, 40, 100, 90), False)]
    elif how == "unknown":
        objects.append(("unicorn", (1, 1, 5, 5), False))
    elif how == "size_lie":
        width, height = 640, 480
        objects += [("cow", (101, 101, 300, 300), False), ("horse", (40, 30, 200, 100), False)]
    elif how == "broken_xml":
        return b"<annotation><object><name>dog"
    elif how == "not_utf8_xml":
        return voc_xml(name, width, height, objects).replace("dog", "d\xf6g").encode("latin-1")
    elif how == "no_xml":
        return None
    text = voc_xml(name, width, height, objects)
    if how == "no_bndbox":
        text = text.replace("<object><name>cow</name>", "")
        text = text.replace("</annotation>", "<object><name>cow</name></object></annotation>")
    return text.encode("utf-8")


def make_corrupt_voc(root: str) -> str:
    base = os.path.join(root, "VOC2007")
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    for index, (image_id, (xml_how, image_how)) in enumerate(VOC_ITEMS.items()):
        xml = voc_annotation(image_id, xml_how)
        if xml is not None:
            with open(os.path.join(base, "Annotations", f"{image_id}.xml"), "wb") as handle:
                handle.write(xml)
        extension = "png" if image_id == "bomb_nosize" else "jpg"
        image_path = os.path.join(base, "JPEGImages", f"{image_id}.{extension}")
        if image_how is None:
            save_image(image_path, *SIZE, seed=index)
        elif image_how != "missing":
            write_bad_image(image_path, image_how)
    with open(os.path.join(base, "ImageSets", "Main", "trainval.txt"), "w") as handle:
        handle.writelines(f"{image_id}\n" for image_id in VOC_ITEMS)
    return base


def train_one_epoch(dataset, num_workers: int, steps: int) -> int:
    """One epoch of the real loader; the first ``steps`` batches train a tiny SSD."""
    torch.manual_seed(0)
    model = ssd_small(num_classes=dataset.num_classes, width=8)
    criterion = MultiBoxLoss(model.priors, dataset.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    loader = make_loader(dataset, batch_size=4, shuffle=True, num_workers=num_workers, seed=0)
    served = 0
    for step, (images, targets) in enumerate(loader):
        assert images.shape[1:] == (3, 160, 160) and torch.isfinite(images).all()
        for target in targets:
            boxes, labels = target["boxes"], target["labels"]
            assert ((boxes >= 0) & (boxes <= 1)).all()
            assert (boxes[:, 2:] > boxes[:, :2]).all()
            assert ((labels >= 1) & (labels < dataset.num_classes)).all()
        served += len(targets)
        if step < steps:
            loc, conf = model(images)
            losses = criterion(loc, conf, targets)
            assert torch.isfinite(losses["loss"])
            optimizer.zero_grad()
            losses["loss"].backward()
            optimizer.step()
    return served


def test_corrupt_voc_trains_for_an_epoch_and_reports_every_bad_item(tmp_path):
    base = make_corrupt_voc(str(tmp_path))
    with warnings.catch_warnings(record=True) as built:
        warnings.simplefilter("always")
        dataset = VOCDetection(tmp_path, transform=train_transform(160))
    bad_at_build = {"bomb_nosize", "missing_image", "broken_xml", "not_utf8_xml", "no_xml"}
    assert len(dataset) == len(VOC_ITEMS) - len(bad_at_build)
    bad_annotations = {"bad_number", "inf_size", "outside", "unknown", "no_bndbox"}
    warned = sorted(str(w.message).split(f"{os.sep}Annotations{os.sep}")[1].split(".xml")[0] for w in built)
    assert warned == sorted(bad_at_build | bad_annotations)  # one warning per bad file

    # Workers find the unreadable images and the lying size; the main process sees the counts.
    assert train_one_epoch(dataset, num_workers=2, steps=2) == len(dataset)
    assert dict(dataset.skipped) == VOC_EXPECTED

    report = dataset.report(max_files=100)
    print(report)  # what a person reads at the end of the epoch
    named = {image_id for image_id in VOC_ITEMS if f"{os.sep}{image_id}." in report}
    expected_named = {image_id for image_id, (xml_how, image_how) in VOC_ITEMS.items()
                      if (xml_how, image_how) != (None, None) and xml_how != "nosize"
                      and image_how != "png_named_jpg"} | {"bomb_nosize"}
    assert named == expected_named
    assert len(dataset.skipped_files) == len(expected_named)
    assert os.path.join(base, "JPEGImages", "size_lie.jpg") in dict(dataset.skipped_files)


# ----------------------------------------------------------------------------- COCO


def make_corrupt_coco(root) -> tuple[str, str, dict]:
    image_dir = os.path.join(root, "images")
    os.makedirs(image_dir)
    images, annotations = [], []

    def image(image_id, kind=None, **fields):
        name = f"{image_id}.png" if kind == "bomb_png" else f"{image_id}.jpg"
        entry = {"id": image_id, "file_name": name, "width": SIZE[0], "height": SIZE[1], **fields}
        images.append({k: v for k, v in entry.items() if v is not None})
        path = os.path.join(image_dir, name)
        if kind is None:
            save_image(path, *SIZE, seed=image_id)
        elif kind != "missing":
            write_bad_image(path, kind)

    def annotation(image_id, bbox, category_id=1, **fields):
        annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                            "bbox": bbox, "iscrowd": 0, "area": 1.0, **fields})

    for image_id in range(1, 9):  # good ones
        image(image_id)
        annotation(image_id, [5, 5, 25, 35])
        annotation(image_id, [33, 10, 27, 34], category_id=7)
    for image_id, kind in ((20, "truncated"), (21, "zero_bytes"), (22, "text"), (23, "bomb_jpeg"),
                           (25, "png_named_jpg")):
        image(image_id, kind)
        annotation(image_id, [5, 5, 25, 35])
    image(24, "bomb_png", width=None, height=None)  # no size: the header is read when built
    image(26, "missing")
    image(27, width="64", height=None)  # bad size: the header is read
    image(28, width=640, height=480)  # the size lies
    annotation(28, [100, 100, 200, 200])
    annotation(28, [5, 5, 25, 35])
    for bbox in ([10**400, 1, 2, 2], ["1", 1, 2, 2], None, [[1], 1, 2, 2], [True, 1, 2, 2], [1, 2, 3]):
        annotation(1, bbox)  # malformed boxes
    annotation(2, [70, 50, 10, 10])  # outside
    annotation(2, [50, 40, 30, 30])  # clipped
    annotation(3, [1, 1, 5, 5], category_id=99)  # unknown category
    annotation(3, [1, 1, 5, 5], category_id="1")  # a string is not an id
    annotation(4, [1, 1, 5, 5], iscrowd="0")  # a string crowd flag: its value, not crowd
    annotation(4, [1, 1, 5, 5], iscrowd="yes")  # malformed
    annotation(5, [1, 1, 5, 5], iscrowd=1)  # crowd: not a problem
    annotation(999, [1, 1, 5, 5])  # unknown image id
    annotations.append({"id": 500, "bbox": [1, 1, 2, 2]})  # no image_id
    images.append({"id": "30", "file_name": "30.jpg"})  # a string id
    images.append({"file_name": "31.jpg"})  # no id
    categories = [{"id": 1, "name": "dog"}, {"id": 7, "name": "cat"}, {"id": 7, "name": "cow"},
                  {"id": None, "name": "x"}]
    path = os.path.join(root, "instances.json")
    with open(path, "w") as handle:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, handle)
    expected = {
        # when built
        "missing_image": 1, "malformed_box": 6, "bad_size": 1, "unknown_class": 2,
        "malformed_annotation": 7,  # iscrowd "yes", unknown image, no image_id, 2 images, 2 categories
        "outside_box": 2, "clipped_box": 1, "crowd_box": 1,
        # 24 when built, 20..23 when loaded
        "unreadable_image": 5, "size_mismatch": 1,
    }
    return image_dir, path, expected


def test_corrupt_coco_trains_for_an_epoch_and_reports_every_bad_item(tmp_path):
    pytest.importorskip("pycocotools")  # COCODetection / COCOeval need it
    image_dir, path, expected = make_corrupt_coco(str(tmp_path))
    with warnings.catch_warnings(record=True) as built:
        warnings.simplefilter("always")
        dataset = COCODetection(image_dir, path, transform=train_transform(160))
    assert len(built) == 1 and "instances.json" in str(built[0].message)  # one per json file
    assert "category id 7 listed again as 'cow'" in str(built[0].message)
    assert dataset.class_names == ("__background__", "dog", "cat")
    assert len(dataset) == 8 + 5 + 2  # good, bad images found when loaded, 27 and 28

    assert train_one_epoch(dataset, num_workers=0, steps=1) == len(dataset)
    assert dict(dataset.skipped) == expected
    # A second epoch finds the same problems: counted once per file, not once per read.
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and warned about once per file
        assert train_one_epoch(dataset, num_workers=0, steps=0) == len(dataset)
    assert dict(dataset.skipped) == expected
    report = dataset.report(max_files=100)
    for name in ("instances.json", "20.jpg", "21.jpg", "22.jpg", "23.jpg", "28.jpg"):
        assert name in report
    assert "5 unreadable image" in report and "1 size mismatch" in report
