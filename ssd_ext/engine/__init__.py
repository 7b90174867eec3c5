"""Training and evaluation pieces: the MultiBox loss."""

from .loss import MultiBoxLoss

__all__ = ["MultiBoxLoss"]
