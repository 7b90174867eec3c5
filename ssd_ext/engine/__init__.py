"""Training, evaluation and inference.

- :class:`MultiBoxLoss` (``engine/loss.py``): the SSD loss over ``ssd_ext.ops``.
- ``engine/config.py``, ``engine/train.py``, ``engine/checkpoint.py``: typed configs and
  presets, :func:`fit`, checkpoints (imported on use: ``from ssd_ext.engine.train import fit``).
- :func:`predict`, :func:`evaluate`, :func:`evaluate_predictions`, :class:`EvalResult`
  (``engine/evaluate.py``): VOC and COCO metrics in original picture pixels.
- :class:`Detector`, :func:`detect_to_files` (``engine/inference.py``): pictures in,
  detections with class names out.
"""

from .evaluate import EvalResult, evaluate, evaluate_predictions, predict
from .inference import Detector, detect_to_files
from .loss import MultiBoxLoss

__all__ = ["Detector", "EvalResult", "MultiBoxLoss", "detect_to_files", "evaluate", "evaluate_predictions",
           "predict"]
