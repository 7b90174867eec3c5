"""Errors shared by the package's layers (the ``ssd`` command prints each as one line)."""

from __future__ import annotations

__all__ = ["ConfigError", "ExportError"]


class ConfigError(ValueError):
    """A configuration value that cannot work (named in the message)."""


class ExportError(ValueError):
    """Input the export tools (``ssd_ext.export``) cannot work with: an unknown format, an output
    path that cannot be written, an ONNX file without ssd_ext metadata, an option out of range.
    The message names the argument, what was expected and what came."""
