""":class:`OnnxDetector`: an exported detector run by ONNX Runtime, with the ``Detector``
interface (``detector(images)``, ``class_names``, ``image_size``, ``score_threshold``,
``batch_size``...), so ``ssd_ext.engine.inference.detect_to_files`` (``ssd detect``) serves
both a checkpoint and an ONNX file."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from .errors import ExportError
from .onnx_export import METADATA_FORMAT

__all__ = ["IMAGE_EXTENSIONS", "OnnxDetector", "picture_array", "resized_chw"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
_REQUIRED_KEYS = ("ssd_ext.class_names", "ssd_ext.input_size")


def picture_array(image: Any, name: str = "image") -> np.ndarray:
    """One picture as uint8 ``[H, W, 3]`` RGB: a path (turned upright by its EXIF
    orientation), a PIL image, a uint8 ``[H, W, 3]`` array, or a ``[3, H, W]`` tensor (uint8,
    or float in [0, 1])."""
    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(os.fspath(image)) as opened:
                image = ImageOps.exif_transpose(opened).convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            raise ValueError(f"{name}: cannot read image {os.fspath(image)!r}: {error}") from None
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{name}: numpy pictures must be uint8 [H, W, 3] RGB, got {image.dtype} "
                             f"{image.shape}")
        return image
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"{name}: picture tensors must be [3, H, W], got shape {tuple(image.shape)}")
        tensor = image.detach().cpu()
        if tensor.is_floating_point():
            if not bool(((tensor >= 0) & (tensor <= 1)).all()):
                raise ValueError(f"{name}: float picture tensors must hold values in [0, 1]")
            tensor = (tensor * 255.0).round().to(torch.uint8)
        elif tensor.dtype != torch.uint8:
            raise TypeError(f"{name}: picture tensors must be uint8 or float, got {tensor.dtype}")
        return tensor.permute(1, 2, 0).contiguous().numpy()
    raise TypeError(f"{name}: expected a path, PIL image, numpy array or tensor, got {type(image).__name__}")


def resized_chw(picture: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> uint8 ``[3, h, w]`` at ``image_size = (h, w)`` (Pillow's
    bilinear filter on 8-bit RGB, antialiased when shrinking; untouched at that size)."""
    height, width = image_size
    if picture.shape[:2] != (height, width):
        picture = np.asarray(Image.fromarray(picture).resize((width, height), Image.Resampling.BILINEAR))
    return picture.transpose(2, 0, 1)


def _session(path: Path, providers: Sequence[str] | None, threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as error:  # onnxruntime raises its own classes (Fail, InvalidGraph, ...)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"--onnx {str(path)!r} cannot be loaded by ONNX Runtime: {first}") from None


def _metadata(session: Any, path: Path) -> dict[str, str]:
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    if metadata.get("ssd_ext.format") != METADATA_FORMAT or any(k not in metadata for k in _REQUIRED_KEYS):
        raise ExportError(f"--onnx {str(path)!r} is not an ssd_ext detector: it lacks the ssd_ext metadata "
                          "(class names, input size); export one with `ssd export --checkpoint C --out "
                          "model.onnx`")
    return metadata


class OnnxDetector:
    """A detector exported by :func:`ssd_ext.export.to_onnx`, run by ONNX Runtime.

    Args:
        path: the ``.onnx`` file; ExportError when it is missing, not ONNX, or has no ssd_ext
            metadata.
        score_threshold: the lowest score returned; not below the threshold baked into the
            graph (its detections stop there).
        batch_size: pictures per run.
        providers: ONNX Runtime execution providers (default: the CPU).
        threads: ONNX Runtime intra-op threads (default: its own choice).

    ``detector(images)`` takes what ``Detector`` takes (one picture or a list: paths, PIL
    images, uint8 ``[H, W, 3]`` arrays, ``[3, H, W]`` / ``[B, 3, H, W]`` tensors), resizes
    each to the input size with Pillow's bilinear filter on 8-bit RGB, and returns one dict per
    picture: ``boxes`` float32 ``[K, 4]`` xyxy in that picture's pixels, ``scores``, ``labels``
    int64, ``names``, ``image_size`` ``(H, W)``.
    """

    def __init__(self, path: str | os.PathLike, *, score_threshold: float = 0.3, batch_size: int = 8,
                 providers: Sequence[str] | None = None, threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError(f"--onnx {str(self.path)!r} does not exist or is not a file")
        self.session = _session(self.path, providers, threads)
        self.metadata = _metadata(self.session, self.path)
        self.class_names = [str(n) for n in json.loads(self.metadata["ssd_ext.class_names"])]
        height, width = (int(v) for v in json.loads(self.metadata["ssd_ext.input_size"]))
        self.image_size = (height, width)
        self.mean = tuple(json.loads(self.metadata.get("ssd_ext.mean", "[0, 0, 0]")))
        self.std = tuple(json.loads(self.metadata.get("ssd_ext.std", "[1, 1, 1]")))
        self.graph_score_threshold = float(self.metadata.get("ssd_ext.score_threshold", "0"))
        self.iou_threshold = float(self.metadata.get("ssd_ext.iou_threshold", "nan"))
        self.max_detections = int(self.metadata.get("ssd_ext.max_detections", "0"))
        self.version = self.metadata.get("ssd_ext.version", "")
        if not score_threshold >= self.graph_score_threshold:
            raise ExportError(f"score_threshold {score_threshold} is below the {self.graph_score_threshold} "
                              f"baked into {str(self.path)!r}; export again with a lower --score-threshold")
        self.score_threshold = float(score_threshold)
        if batch_size < 1:
            raise ExportError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.model = None  # no torch module: the graph is the model

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """The raw graph: uint8 ``[B, 3, H, W]`` -> ``{"boxes", "scores", "labels",
        "num_detections"}`` (padded, boxes in input pixels)."""
        names = [output.name for output in self.session.get_outputs()]
        return dict(zip(names, self.session.run(None, {"images": np.ascontiguousarray(images)}), strict=True))

    @staticmethod
    def _as_list(images: Any) -> list[Any]:
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            return list(images.unbind(0))
        return list(images) if isinstance(images, (list, tuple)) else [images]

    def _results(self, outputs: dict[str, np.ndarray], sizes: list[tuple[int, int]]) -> list[dict[str, Any]]:
        height, width = self.image_size
        results = []
        for index, (picture_h, picture_w) in enumerate(sizes):
            count = int(outputs["num_detections"][index])
            scores = outputs["scores"][index, :count]
            keep = scores > self.score_threshold
            scale = np.array([picture_w / width, picture_h / height] * 2, dtype=np.float32)
            labels = torch.from_numpy(outputs["labels"][index, :count][keep].astype(np.int64))
            results.append({
                "boxes": torch.from_numpy((outputs["boxes"][index, :count][keep] * scale).astype(np.float32)),
                "scores": torch.from_numpy(scores[keep].astype(np.float32)),
                "labels": labels,
                "names": [self.class_names[int(label)] for label in labels],
                "image_size": (picture_h, picture_w),
            })
        return results

    def __call__(self, images: Any) -> list[dict[str, Any]]:
        """Detections for one picture or a list (see the class docstring)."""
        pictures = self._as_list(images)
        results: list[dict[str, Any]] = []
        for start in range(0, len(pictures), self.batch_size):
            arrays = [picture_array(p, f"images[{start + k}]")
                      for k, p in enumerate(pictures[start:start + self.batch_size])]
            batch = np.stack([resized_chw(a, self.image_size) for a in arrays])
            results += self._results(self.run(batch), [a.shape[:2] for a in arrays])
        return results

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, {len(self.class_names) - 1} classes, "
                f"image_size={self.image_size}, score_threshold={self.score_threshold})")
