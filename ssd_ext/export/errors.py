"""The one exception type of ``ssd_ext.export``."""

from __future__ import annotations

__all__ = ["ExportError"]


class ExportError(ValueError):
    """Input the export tools cannot work with: an unknown format, an output path that cannot be
    written, an ONNX file without ssd_ext metadata, an option out of range. The message names
    the argument, what was expected and what came (``ssd`` prints it as one error line)."""
