"""Detector on pictures of several sizes and types; detect_to_files writes PNGs and a JSON and
reports unreadable inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ssd_ext.data import eval_transform
from ssd_ext.data.images import expand_image_paths, read_image
from ssd_ext.engine.inference import Detector, detect_to_files
from ssd_ext.models import ssd_small

NAMES = ["__background__", "apple", "pear"]


def fixed_head_model():
    """ssd_small whose heads ignore the picture: loc 0 (boxes = priors); the last level's single
    cell says "apple" for anchor 0 and "pear" for anchor 2, every other prior the background."""
    torch.manual_seed(0)
    model = ssd_small(num_classes=3)
    with torch.no_grad():
        for loc, conf in zip(model.loc, model.conf, strict=True):
            for tensor in (loc.weight, loc.bias, conf.weight, conf.bias):
                tensor.zero_()
            conf.bias[0::3] = 10.0
        model.conf[-1].bias[0 * 3 + 1] = 20.0
        model.conf[-1].bias[2 * 3 + 2] = 20.0
    last = model.priors[-model.prior_config.boxes_per_location[-1]:]
    xyxy = torch.cat([last[:, :2] - last[:, 2:] / 2, last[:, :2] + last[:, 2:] / 2], 1).clamp(0, 1)
    return model, torch.stack([xyxy[0], xyxy[2]])


def noise(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def test_detector_returns_boxes_in_each_pictures_pixels_for_every_input_type(tmp_path):
    model, expected = fixed_head_model()
    detector = Detector(model, NAMES, 160, score_threshold=0.5, batch_size=2)
    path = tmp_path / "photo.png"
    Image.fromarray(noise(33, 77, 4)).save(path)
    pictures = [
        Image.fromarray(noise(90, 120, 1)),  # PIL
        noise(50, 200, 2),  # numpy uint8 HWC
        torch.from_numpy(noise(64, 64, 3)).permute(2, 0, 1),  # uint8 tensor CHW
        torch.rand(3, 100, 30),  # float tensor in [0, 1]
        path,  # a path
        str(path),
    ]
    sizes = [(90, 120), (50, 200), (64, 64), (100, 30), (33, 77), (33, 77)]
    results = detector(pictures)
    assert len(results) == len(pictures)
    for result, (height, width) in zip(results, sizes, strict=True):
        assert result["image_size"] == (height, width)
        assert result["labels"].tolist() == [1, 2] and result["names"] == ["apple", "pear"]
        torch.testing.assert_close(result["boxes"], expected * torch.tensor([width, height, width, height]))
        assert result["boxes"].dtype == torch.float32 and (result["scores"] > 0.99).all()
    # One picture alone gives a list of one; a [B, 3, H, W] batch gives B results.
    assert len(detector(pictures[0])) == 1
    assert len(detector(torch.rand(3, 3, 40, 50))) == 3


def test_detector_preprocessing_is_eval_transform_and_matches_the_manual_pipeline():
    torch.manual_seed(2)
    model = ssd_small(num_classes=3)  # random weights: many detections
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    detector = Detector(model, NAMES, (160, 160), mean, std, score_threshold=0.05)
    picture = noise(70, 130, 5)
    tensor, size = detector.preprocess(Image.fromarray(picture))
    reference, _, _ = eval_transform(160, mean, std)(Image.fromarray(picture), torch.zeros(0, 4),
                                                    torch.zeros(0, dtype=torch.int64))
    assert size == (70, 130) and torch.equal(tensor, reference)
    as_float, _ = detector.preprocess(torch.from_numpy(picture).permute(2, 0, 1).float() / 255)
    torch.testing.assert_close(as_float, reference, rtol=0, atol=1e-4)

    result = detector([picture])[0]
    manual = model.detect(reference[None], score_threshold=0.05, max_detections=100,
                          image_sizes=[(70, 130)])[0]
    assert len(result["boxes"]) > 0
    torch.testing.assert_close(result["boxes"], manual["boxes"])
    torch.testing.assert_close(result["scores"], manual["scores"])
    assert result["names"] == [NAMES[int(label)] for label in manual["labels"]]
    assert (result["boxes"][:, 0::2] <= 130).all() and (result["boxes"][:, 1::2] <= 70).all()


def test_detector_input_errors_are_clear(tmp_path):
    model, _ = fixed_head_model()
    detector = Detector(model, NAMES, 160)
    cases = [
        (noise(10, 10).astype(np.float64), TypeError, "uint8"),
        (noise(10, 10)[..., :2], ValueError, r"\[H, W, 3\]"),
        (torch.zeros(10, 10, 3), ValueError, r"\[3, H, W\]"),
        (torch.full((3, 8, 8), 200.0), ValueError, r"\[0, 1\]"),
        (torch.zeros(3, 8, 8, dtype=torch.int64), TypeError, "uint8 or floating"),
        (torch.full((3, 8, 8), float("nan")), ValueError, "non-finite"),
        (np.zeros((0, 5, 3), dtype=np.uint8), ValueError, "empty"),
        (tmp_path / "missing.jpg", ValueError, "cannot read image"),
        (object(), TypeError, "PIL image, numpy array, tensor or path"),
    ]
    (tmp_path / "text.png").write_text("not a picture")
    cases.append((tmp_path / "text.png", ValueError, "cannot read image"))
    for picture, error, message in cases:
        with pytest.raises(error, match=message):
            detector([noise(8, 8), picture])
    with pytest.raises(ValueError, match="class_names has 2"):
        Detector(model, NAMES[:2], 160)
    with pytest.raises(ValueError, match="differs from the model's input"):
        Detector(model, NAMES, 300)
    with pytest.raises(ValueError, match="std must be three positive"):
        Detector(model, NAMES, 160, std=(0.2, 0.0, 0.2))
    with pytest.raises(TypeError, match="detect"):
        Detector(torch.nn.Linear(2, 2), NAMES, 160)


def test_detect_to_files_writes_pngs_and_json_and_reports_unreadable(tmp_path):
    model, expected = fixed_head_model()
    detector = Detector(model, NAMES, 160, batch_size=2)
    folder = tmp_path / "pictures"
    folder.mkdir()
    Image.fromarray(noise(40, 60, 1)).save(folder / "a.png")
    Image.fromarray(noise(80, 50, 2)).save(folder / "a.jpg")  # same stem: output a_2.png
    Image.fromarray(noise(30, 30, 3)).save(folder / "c.BMP")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("ignored: not a picture extension")
    (tmp_path / "empty").mkdir()
    single = tmp_path / "single.png"
    Image.fromarray(noise(25, 45, 4)).save(single)
    out = tmp_path / "out"

    results = detect_to_files([single, tmp_path / "nope.png", folder, tmp_path / "empty"], detector, out)
    paths = [r["path"] for r in results]
    assert paths == [str(single), str(tmp_path / "nope.png"), str(folder / "a.jpg"), str(folder / "a.png"),
                     str(folder / "broken.jpg"), str(folder / "c.BMP"), str(tmp_path / "empty")]
    errors = {r["path"]: r["error"] for r in results if "error" in r}
    assert set(errors) == {str(tmp_path / "nope.png"), str(folder / "broken.jpg"), str(tmp_path / "empty")}
    assert "no such file" in errors[str(tmp_path / "nope.png")]
    assert "cannot read image" in errors[str(folder / "broken.jpg")]
    assert "pictures" in errors[str(tmp_path / "empty")]

    done = [r for r in results if "error" not in r]
    assert [r["output"] for r in done] == [str(out / n) for n in ("single.png", "a.png", "a_2.png", "c.png")]
    for r in done:
        with Image.open(r["output"]) as drawn:
            assert drawn.format == "PNG" and drawn.size == (r["width"], r["height"])
            with Image.open(r["path"]) as source:
                # Boxes were drawn: the picture changed.
                assert not np.array_equal(np.asarray(drawn.convert("RGB")), np.asarray(source.convert("RGB")))
        boxes = torch.tensor([d["box"] for d in r["detections"]])
        scale = torch.tensor([r["width"], r["height"], r["width"], r["height"]])
        torch.testing.assert_close(boxes, expected * scale, rtol=0, atol=0.01)
        assert [d["name"] for d in r["detections"]] == ["apple", "pear"]

    summary = json.loads((out / "detections.json").read_text())
    assert summary["class_names"] == NAMES and summary["score_threshold"] == detector.score_threshold
    assert summary["images"] == done and len(summary["failures"]) == 3


def test_expand_and_read_image_helpers(tmp_path):
    Image.fromarray(noise(5, 6)).convert("L").save(tmp_path / "grey.png")  # greyscale -> RGB
    image = read_image(tmp_path / "grey.png")
    assert image.mode == "RGB" and image.size == (6, 5)
    files, failures = expand_image_paths(tmp_path)
    assert files == [str(tmp_path / "grey.png")] and failures == []


def test_detect_to_files_never_overwrites_an_input(tmp_path):
    model, _ = fixed_head_model()
    Image.fromarray(noise(20, 30)).save(tmp_path / "x.png")
    before = (tmp_path / "x.png").read_bytes()
    results = detect_to_files(tmp_path, Detector(model, NAMES, 160), tmp_path)
    assert results[0]["output"] == str(tmp_path / "x_2.png")
    assert (tmp_path / "x.png").read_bytes() == before and (tmp_path / "detections.json").is_file()


def test_memory_format_follows_the_model_on_the_cpu_unless_forced():
    from ssd_ext.engine.inference import DetectorSettings

    torch.manual_seed(0)
    small = ssd_small(num_classes=3, width=8)
    assert Detector(small, NAMES, 160).memory_format == torch.contiguous_format
    small.cpu_inference_memory_format = torch.channels_last  # what the VGG/RFB/SSDLite factories set
    detector = Detector(small, NAMES, 160)
    assert detector.memory_format == torch.channels_last
    assert small.conf[0].weight.is_contiguous(memory_format=torch.channels_last)
    forced = Detector(small, NAMES, 160, memory_format="contiguous")
    assert forced.memory_format == torch.contiguous_format and small.conf[0].weight.is_contiguous()
    from ssd_ext.models import ssd300

    assert ssd300(num_classes=3).cpu_inference_memory_format == torch.channels_last
    with pytest.raises(ValueError, match="memory_format"):
        DetectorSettings(memory_format="nchw")


def test_memory_format_and_compile_give_the_eager_detections():
    model, _ = fixed_head_model()
    with torch.no_grad():  # let the network's output depend on the picture
        for conv in model.conf:
            conv.weight.normal_(0, 0.05)
    pictures = [noise(90, 120, 1), noise(60, 60, 2), noise(40, 100, 3)]
    settings = {"score_threshold": 0.05, "batch_size": 3}
    eager = Detector(model, NAMES, 160, memory_format="contiguous", **settings)(pictures)
    for other in (Detector(model, NAMES, 160, memory_format="channels_last", **settings),
                  Detector(model, NAMES, 160, compile=True, **settings)):
        for found, expected in zip(other(pictures), eager, strict=True):
            assert torch.equal(found["labels"], expected["labels"])
            torch.testing.assert_close(found["boxes"], expected["boxes"], rtol=1e-4, atol=1e-3)
            torch.testing.assert_close(found["scores"], expected["scores"], rtol=1e-4, atol=1e-5)
