"""The one exception type of ``ssd_ext.export`` (defined in :mod:`ssd_ext.errors`, so the
command line can report it without importing ONNX)."""

from __future__ import annotations

from ..errors import ExportError

__all__ = ["ExportError"]
