"""Deploying ssd_ext detectors whole: pictures in, detections out, outside PyTorch too.

- :func:`to_onnx`: a Detector or checkpoint as one standard-ONNX graph (normalisation,
  network, post-processing; docs/DEPLOY.md has the contract) and :class:`OnnxDetector`, which
  runs such a file in ONNX Runtime behind the ``Detector`` interface.
- :func:`onnx_translation_table` / :func:`register_onnx_translations`: ONNX translations of
  the ``torch.ops.ssd_ext`` inference ops for anyone's ``torch.onnx.export`` (registered when
  this package is imported, so a plain ``torch.onnx.export`` call finds them).
- :func:`export_program`, :func:`save_program`, :func:`load_program`, :func:`aoti_package`:
  the same module through ``torch.export`` and AOTInductor.
- :func:`quantize_onnx`: ONNX Runtime static int8 quantisation of the network part.

onnx, onnxscript and onnxruntime are the ``export`` extra (``pip install ssd_ext[export]``).
"""

from .errors import ExportError
from .module import OUTPUT_NAMES, DeployableSSD, DeployOptions, deployable
from .onnx_export import DEFAULT_OPSET, METADATA_FORMAT, to_onnx
from .onnx_ops import onnx_translation_table, register_onnx_translations
from .program import aoti_package, export_program, load_aoti, load_program, save_program
from .quantize import quantize_onnx
from .runtime import OnnxDetector

register_onnx_translations()

__all__ = [
    "DEFAULT_OPSET", "METADATA_FORMAT", "OUTPUT_NAMES", "DeployOptions", "DeployableSSD", "ExportError",
    "OnnxDetector", "aoti_package", "deployable", "export_program", "load_aoti", "load_program",
    "onnx_translation_table", "quantize_onnx", "register_onnx_translations", "save_program", "to_onnx",
]
