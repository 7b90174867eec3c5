"""``to_onnx``: a whole detector (pictures -> detections) as one standard-ONNX file.

The graph is :class:`~ssd_ext.export.module.DeployableSSD` exported by ``torch.onnx.export``
(the dynamo exporter) with our ops' translations (:mod:`ssd_ext.export.onnx_ops`); the batch
axis is dynamic. The file's metadata (``metadata_props``) carries what a runtime needs besides
the graph (:data:`METADATA_FORMAT` and the ``ssd_ext.*`` keys of :func:`onnx_metadata`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from .errors import ExportError
from .module import OUTPUT_NAMES, DeployableSSD, DeployOptions, deployable
from .onnx_ops import onnx_translation_table

__all__ = ["DEFAULT_OPSET", "METADATA_FORMAT", "MIN_OPSET", "check_writable", "onnx_metadata", "to_onnx"]

DEFAULT_OPSET = 18  # the opset torch's ONNX function library is written in (no conversion step)
MIN_OPSET = 17
MAX_OPSET = 23
METADATA_FORMAT = "ssd_ext.detector"


def check_writable(path: str | os.PathLike, what: str = "out") -> Path:
    """``path`` as a Path whose folder exists (created when missing) and takes a new file;
    ExportError naming ``--{what}`` otherwise. Checked before a long export, not after."""
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"--{what} {str(path)!r} is a folder; give a file name such as model.onnx")
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ssd_export_check."):
            pass
    except OSError as error:
        raise ExportError(f"--{what} {str(path)!r} cannot be written: folder {str(folder)!r}: "
                          f"{error.strerror or error}") from None
    return path


def _check_opset(opset: Any) -> int:
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset must be an int from {MIN_OPSET} to {MAX_OPSET} (NonMaxSuppression, TopK "
                          f"and the rest of the graph need {MIN_OPSET}+), got {opset!r}")
    return opset


def onnx_metadata(module: DeployableSSD, detector: Any) -> dict[str, str]:
    """The ``metadata_props`` of an exported detector (all values strings; lists as JSON)."""
    import ssd_ext

    return {
        "ssd_ext.format": METADATA_FORMAT,
        "ssd_ext.format_version": "1",
        "ssd_ext.version": ssd_ext.__version__,
        "ssd_ext.class_names": json.dumps(list(detector.class_names)),
        "ssd_ext.input_size": json.dumps(list(module.image_size)),
        "ssd_ext.mean": json.dumps([float(v) for v in detector.mean]),
        "ssd_ext.std": json.dumps([float(v) for v in detector.std]),
        "ssd_ext.score_threshold": repr(module.score_threshold),
        "ssd_ext.iou_threshold": repr(module.iou_threshold),
        "ssd_ext.max_detections": str(module.max_detections),
        "ssd_ext.candidates_per_class": str(module.candidates_per_class),
        "ssd_ext.fp16": json.dumps(module.fp16),
    }


def _example_batch(module: DeployableSSD) -> torch.Tensor:
    # Batch 2, not 1: an example of size 1 would specialise the batch axis to 1.
    return torch.zeros((2, 3, *module.image_size), dtype=torch.uint8)


def export_onnx_program(module: DeployableSSD, opset: int = DEFAULT_OPSET, verbose: bool = False) -> Any:
    """``torch.onnx.export`` of ``module`` with a dynamic batch axis; the ONNXProgram."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet, warnings.catch_warnings():
        if not verbose:
            warnings.simplefilter("ignore")
        return torch.onnx.export(
            module, (_example_batch(module),), dynamo=True, opset_version=opset,
            custom_translation_table=onnx_translation_table(), input_names=["images"],
            output_names=list(OUTPUT_NAMES), dynamic_shapes={"images": {0: batch}},
            verbose=verbose, optimize=True,
        )


def save_with_metadata(program: Any, metadata: dict[str, str], path: Path) -> None:
    """Write ``program`` (an ONNXProgram) with ``metadata`` to ``path`` through a temporary file
    in the same folder (a killed export leaves no torn file)."""
    program.model.metadata_props.update(metadata)
    program.model.doc_string = ("ssd_ext detector: uint8 images [B,3,H,W] RGB -> boxes [B,K,4] xyxy input "
                                "pixels, scores [B,K], labels [B,K] int64, num_detections [B] int64")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        program.save(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def to_onnx(detector_or_checkpoint: Any, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
            fp16: bool = False, score_threshold: float | None = None, iou_threshold: float | None = None,
            max_detections: int | None = None, candidates_per_class: int = 400) -> Path:
    """Export a detector to ``path`` as ONNX, post-processing included (docs/DEPLOY.md).

    Args:
        detector_or_checkpoint: an ``ssd_ext.engine.inference.Detector``, a checkpoint path
            or a checkpoint dict.
        path: the ``.onnx`` file to write (its folder is created when missing).
        opset: ONNX opset, 17 to 23.
        fp16: float16 network (post-processing in float32); meant for GPU runtimes.
        score_threshold, iou_threshold, max_detections: baked into the graph; ``None`` takes
            the Detector's, or 0.01 / 0.45 / 100 for a checkpoint.
        candidates_per_class: boxes of each class entering NMS (as :func:`ssd_ext.ops.detect`).

    Returns the path written. Raises :class:`ExportError` for an unwritable path or a bad
    option, ``CheckpointError`` for a file that is not an ssd_ext checkpoint.
    """
    opset = _check_opset(opset)
    path = check_writable(path)
    options = DeployOptions(score_threshold=score_threshold, iou_threshold=iou_threshold,
                            max_detections=max_detections, candidates_per_class=candidates_per_class,
                            fp16=bool(fp16))
    module, detector = deployable(detector_or_checkpoint, options)
    program = export_onnx_program(module, opset)
    save_with_metadata(program, onnx_metadata(module, detector), path)
    import onnx

    onnx.checker.check_model(str(path))
    return path
