"""Training, evaluation and inference: one module per concern.

- ``config.py`` / ``presets.py``: the typed :class:`~.config.Config` and named presets.
- ``train.py``: :func:`~.train.fit` (setup → resume → epochs → finish); ``loop.py``: one epoch
  (:func:`~.loop.train_one_epoch`); ``optim.py``: optimiser and lr schedule;
  ``distributed.py``: ``torchrun`` helpers; ``wrappers.py``: :func:`~.wrappers.unwrap_model`.
- ``run_log.py``: the run folder, ``metrics.jsonl``, TensorBoard, ``curves.png``.
- ``checkpoint.py``: the checkpoint schema, atomic writes, safe loading, models from a file.
- ``evaluation/``: :func:`predict`, VOC and COCO metrics, :class:`EvalResult`.
- ``inference.py``: :class:`Detector`, :func:`detect_to_files`.
- ``loss.py``: :class:`MultiBoxLoss`, the SSD loss over ``ssd_ext.ops``.

The heavy modules (``train``, ``checkpoint``) are imported on use:
``from ssd_ext.engine.train import fit``.
"""

from .evaluation import EvalResult, evaluate, evaluate_predictions, predict
from .inference import Detector, detect_to_files
from .loss import MultiBoxLoss

__all__ = ["Detector", "EvalResult", "MultiBoxLoss", "detect_to_files", "evaluate", "evaluate_predictions",
           "predict"]
