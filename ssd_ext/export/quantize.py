"""ONNX Runtime static int8 quantisation of an exported detector's network.

Only the network's nodes (the ``model`` part of :class:`~ssd_ext.export.module.DeployableSSD`,
found by the exporter's name scopes) are quantised: their activations are calibrated on
pictures (min/max over the calibration set), weights int8 per output channel, activations
uint8 (QDQ format, which ONNX Runtime fuses into QLinearConv). The normalisation and the
post-processing (Softmax, decode, TopK, NonMaxSuppression...) stay float32, so scores are
still probabilities and NMS sees float boxes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ExportError
from .graph_parts import network_node_names
from .onnx_export import METADATA_FORMAT, check_writable

__all__ = ["calibration_batches", "quantize_onnx"]

def _expand_pictures(pictures: Iterable[Any] | str | os.PathLike) -> list[Any]:
    from .runtime import IMAGE_EXTENSIONS

    if isinstance(pictures, (str, os.PathLike)):
        folder = Path(pictures)
        if not folder.is_dir():
            raise ExportError(f"calibration {str(folder)!r} is not a folder of pictures")
        pictures = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    found = list(pictures)
    if not found:
        raise ExportError("calibration needs at least one picture, got none")
    return found


def calibration_batches(pictures: Iterable[Any],
                        image_size: tuple[int, int]) -> Iterator[dict[str, np.ndarray]]:
    """``{"images": uint8 [1, 3, H, W]}`` per picture, resized like :class:`OnnxDetector` does."""
    from .runtime import picture_array, resized_chw

    for index, picture in enumerate(pictures):
        yield {"images": resized_chw(picture_array(picture, f"calibration[{index}]"), image_size)[None]}


class _Reader:
    """The ``CalibrationDataReader`` interface over :func:`calibration_batches`."""

    def __init__(self, batches: Iterator[dict[str, np.ndarray]]) -> None:
        self._batches = batches

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # pragma: no cover - calibration reads once
        raise RuntimeError("the calibration reader reads its pictures once")


def _read_ours(path: Path) -> Any:
    import onnx

    if not path.is_file():
        raise ExportError(f"model {str(path)!r} does not exist or is not a file")
    try:
        model = onnx.load(str(path))
    except Exception as error:  # onnx raises DecodeError and others for a foreign file
        raise ExportError(f"model {str(path)!r} is not an ONNX file: {error}") from None
    metadata = {p.key: p.value for p in model.metadata_props}
    if metadata.get("ssd_ext.format") != METADATA_FORMAT:
        raise ExportError(f"model {str(path)!r} is not an ssd_ext detector (no ssd_ext metadata)")
    return model


def quantize_onnx(model_path: str | os.PathLike, out_path: str | os.PathLike,
                  calibration: Iterable[Any] | str | os.PathLike, per_channel: bool = True) -> Path:
    """Write an int8 copy of the exported detector ``model_path`` to ``out_path``.

    Args:
        model_path: a float32 model written by :func:`ssd_ext.export.to_onnx`.
        out_path: the quantised model (same inputs, outputs and metadata, plus
            ``ssd_ext.quantization``).
        calibration: pictures (paths, PIL images, uint8 ``[H, W, 3]`` arrays) or a folder of
            them; a few hundred training pictures are typical, tens work.
        per_channel: one weight scale per output channel (more accurate, as fast).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = _read_ours(Path(model_path))
    out_path = check_writable(out_path)
    metadata = {p.key: p.value for p in model.metadata_props}
    import json

    image_size = tuple(int(v) for v in json.loads(metadata["ssd_ext.input_size"]))
    pictures = _expand_pictures(calibration)
    nodes = network_node_names(model)
    if not nodes:
        raise ExportError(f"model {str(model_path)!r} has no node in the network's name scope; export it "
                          "again with ssd_ext.export.to_onnx")
    handle, temporary = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    os.close(handle)
    try:
        with _without_preprocessing_advice():
            quantize_static(model, temporary, _Reader(calibration_batches(pictures, image_size)),
                            quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_quantize=nodes, calibrate_method=CalibrationMethod.MinMax)
        _write_metadata(temporary, metadata, f"int8 static QDQ (network only), {len(pictures)} calibration "
                        f"pictures, per_channel={per_channel}")
        os.replace(temporary, out_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return out_path


class _DropAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


@contextlib.contextmanager
def _without_preprocessing_advice() -> Iterator[None]:
    """Silence quantize_static's generic advice to run its pre-processing (shape inference and
    graph optimisation for image classifiers); the network part here is plain convolutions."""
    advice = _DropAdvice()
    logging.getLogger().addFilter(advice)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(advice)


def _write_metadata(path: str, metadata: dict[str, str], note: str) -> None:
    import onnx

    model = onnx.load(path)
    del model.metadata_props[:]
    for key, value in {**metadata, "ssd_ext.quantization": note}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, path)
