"""Errors shared by the package's layers."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration value that cannot work (named in the message)."""
