"""Our kernels inside other libraries' models.

- :mod:`ssd_ext.integrations.torchvision`: ``accelerate(model)`` runs a torchvision ``SSD``'s
  post-processing and its loss's matching, encoding and hard negative mining on ``ssd_ext.ops``;
  ``restore(model)`` undoes it. torchvision is imported only when one of them is called.
"""

__all__ = ["torchvision"]


def __getattr__(name: str) -> object:
    # Imported on first use, so that ``import ssd_ext.integrations`` does not need torchvision.
    if name == "torchvision":
        from . import torchvision

        return torchvision
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
