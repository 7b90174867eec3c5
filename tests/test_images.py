"""Picture input (ssd_ext.data.images): suffixes, folder expansion, reading (EXIF orientation),
and any picture as a uint8 RGB array."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from ssd_ext.data import images as I
from ssd_ext.data.base import DetectionDataset, Record

# EXIF orientation 6: the stored pixels must be turned 90 degrees clockwise to be upright.
ROTATE_90_CW = 6


def save_with_orientation(path, array: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(array).save(path, exif=exif)


def stored_picture() -> np.ndarray:
    """40 wide, 20 high; the top-left quarter red, the rest black."""
    array = np.zeros((20, 40, 3), np.uint8)
    array[:10, :20] = (255, 0, 0)
    return array


def test_suffixes_are_what_pil_reads():
    assert I.IMAGE_SUFFIXES == (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
    assert I.is_image_file("a/B.JPG") and I.is_image_file("x.webp") and not I.is_image_file("notes.txt")


def test_expand_image_paths(tmp_path):
    folder = tmp_path / "pics"
    (folder / "nested").mkdir(parents=True)
    for name in ("b.png", "A.JPG", "c.webp", "readme.txt", "nested/d.png"):
        (folder / name).write_bytes(b"x")
    single = tmp_path / "single.anything"
    single.write_bytes(b"x")
    empty = tmp_path / "empty"
    empty.mkdir()
    inputs = [single, folder, tmp_path / "missing.jpg", empty]
    files, failures = I.expand_image_paths(inputs)
    assert files == [str(single), *(str(folder / n) for n in ("A.JPG", "b.png", "c.webp"))]
    assert [f["path"] for f in failures] == [str(tmp_path / "missing.jpg"), str(empty)]
    assert "no such file" in failures[0]["error"] and "no pictures" in failures[1]["error"]
    entries = I.expand_image_entries(inputs)  # the same, in input order
    assert [e if isinstance(e, str) else e["path"] for e in entries] == [
        files[0], *files[1:], failures[0]["path"], failures[1]["path"]]
    assert I.expand_image_paths(str(single)) == ([str(single)], [])


def test_read_image_converts_to_rgb(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(np.zeros((3, 4, 4), np.uint8)).save(tmp_path / "rgba.png")
    image = I.read_image(tmp_path / "grey.png")
    assert image.mode == "RGB" and image.size == (4, 3)
    assert (np.asarray(image) == grey[..., None]).all()
    assert I.read_image(str(tmp_path / "rgba.png")).mode == "RGB"


def test_read_image_turns_pictures_upright_unless_told_not_to(tmp_path):
    path = tmp_path / "phone.jpg"
    save_with_orientation(path, stored_picture(), ROTATE_90_CW)
    upright = np.asarray(I.read_image(path))
    assert upright.shape == (40, 20, 3)  # turned: 20 wide, 40 high
    assert upright[5, 15, 0] > 200 and upright[5, 5, 0] < 50  # the red quarter is now top-right
    stored = np.asarray(I.read_image(path, exif_transpose=False))
    assert stored.shape == (20, 40, 3) and stored[5, 5, 0] > 200
    assert np.asarray(I.to_rgb_array(path)).shape == (40, 20, 3)  # a path is a user's picture


def test_datasets_read_the_stored_pixels(tmp_path):
    # Annotations refer to the stored pixels: a box on the red quarter stays on it.
    path = tmp_path / "phone.jpg"
    save_with_orientation(path, stored_picture(), ROTATE_90_CW)

    class OnePicture(DetectionDataset):
        def __init__(self):
            super().__init__(("__background__", "red"))
            self.records = [Record(str(path), 0, np.array([[0, 0, 20, 10]], np.float32), np.array([1]),
                                   np.array([False]), size=(40.0, 20.0))]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no size mismatch
        image, target = OnePicture()[0]
    assert image.size == (40, 20) and target["orig_size"] == (20, 40)
    assert np.asarray(image)[5, 5, 0] > 200
    assert target["boxes"].tolist() == [[0.0, 0.0, 20.0, 10.0]]


@pytest.mark.parametrize("content", [None, b"", b"not a picture", b"\xff\xd8\xff\xe0 truncated jpeg"])
def test_read_image_errors_name_the_file(tmp_path, content):
    path = tmp_path / "bad.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=r"cannot read image '.*bad\.jpg': ") as info:
        I.read_image(path)
    assert isinstance(info.value, I.ImageReadError) and info.value.path == str(path)


def test_to_rgb_array_accepts_every_picture_form(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    Image.fromarray(array).save(tmp_path / "a.png")
    assert I.to_rgb_array(array) is array
    for picture in (Image.fromarray(array), tensor, tensor.double() / 255, tmp_path / "a.png",
                    str(tmp_path / "a.png")):
        out = I.to_rgb_array(picture)
        assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
        np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize(("picture", "error", "message"), [
    (np.zeros((4, 4, 3), np.float32), TypeError, "numpy images must be uint8"),
    (np.zeros((4, 4), np.uint8), ValueError, r"must be \[H, W, 3\]"),
    (np.zeros((0, 4, 3), np.uint8), ValueError, "empty"),
    (torch.zeros(4, 4, 3, dtype=torch.uint8), ValueError, r"must be \[3, H, W\]"),
    (torch.full((3, 2, 2), 2.0), ValueError, r"in \[0, 1\]"),
    (torch.full((3, 2, 2), float("nan")), ValueError, "non-finite"),
    (torch.zeros(3, 2, 2, dtype=torch.int32), TypeError, "uint8 or floating point"),
    ([[0, 0, 0]], TypeError, "expected a PIL image, numpy array, tensor or path"),
])
def test_to_rgb_array_errors_name_the_argument(picture, error, message):
    with pytest.raises(error, match=f"^picture 3: .*{message}"):
        I.to_rgb_array(picture, name="picture 3")
