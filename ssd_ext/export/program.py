"""The deployable detector through ``torch.export`` (pictures -> padded detections; our ops
go in as they are, traced through their fake kernels) and AOTInductor.

A saved program (``.pt2``) holds calls to ``torch.ops.ssd_ext.*``: loading it needs
``import ssd_ext`` first (which registers the ops), in Python or, for an AOTInductor package,
in the process that runs it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .module import DeployOptions, deployable
from .onnx_export import check_writable

__all__ = ["aoti_package", "export_program", "load_aoti", "load_program", "save_program"]


def export_program(detector_or_checkpoint: Any, options: DeployOptions | None = None,
                   dynamic_batch: bool = True) -> torch.export.ExportedProgram:
    """``torch.export.export`` of :func:`~ssd_ext.export.deployable` (uint8 images
    ``[B, 3, H, W]`` -> ``(boxes, scores, labels, num_detections)``), batch axis dynamic
    unless ``dynamic_batch`` is False (then batch 1)."""
    import ssd_ext  # noqa: F401  (the ops the program calls)

    module, _ = deployable(detector_or_checkpoint, options)
    batch = 2 if dynamic_batch else 1  # an example of 1 would specialise the axis
    example = torch.zeros((batch, 3, *module.image_size), dtype=torch.uint8)
    dynamic = {"images": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic_batch else None
    with torch.no_grad():
        return torch.export.export(module, (example,), dynamic_shapes=dynamic)


def save_program(program: torch.export.ExportedProgram, path: str | os.PathLike) -> Path:
    """``torch.export.save`` to ``path`` (``.pt2``); ExportError when it cannot be written."""
    path = check_writable(path)
    torch.export.save(program, str(path))
    return path


def load_program(path: str | os.PathLike) -> torch.export.ExportedProgram:
    """``torch.export.load`` after registering our ops; ``program.module()(images)`` runs it."""
    import ssd_ext  # noqa: F401

    return torch.export.load(str(path))


def aoti_package(program: torch.export.ExportedProgram, path: str | os.PathLike) -> Path:
    """Compile ``program`` ahead of time with AOTInductor into the package ``path`` (``.pt2``):
    C++ generated and compiled for this machine's CPU (or GPU, for a program on CUDA). Needs a
    C++ compiler; takes minutes for SSD300-sized networks."""
    path = check_writable(path)
    from torch._inductor import aoti_compile_and_package

    return Path(aoti_compile_and_package(program, package_path=str(path)))


def load_aoti(path: str | os.PathLike) -> Any:
    """A callable running the AOTInductor package at ``path``: ``runner(images)`` returns the
    four outputs."""
    from torch._inductor import aoti_load_package

    import ssd_ext  # noqa: F401

    return aoti_load_package(str(path))
