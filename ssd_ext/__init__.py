"""ssd_ext: SSD (Single Shot MultiBox Detector) for PyTorch with C++/CUDA kernels.

The ops are registered in the PyTorch dispatcher as ``torch.ops.ssd_ext.*`` when the
extension module ``ssd_ext._C`` loads; ``ssd_ext.ops`` holds their typed wrappers.
"""

import torch  # noqa: F401  (libtorch must be loaded before the extension)

try:
    from . import _C
except ImportError as error:  # pragma: no cover - only without a build
    raise ImportError(
        "ssd_ext's compiled extension (ssd_ext._C) could not be loaded: "
        f"{error}. Build it with `pip install --no-build-isolation -e .` "
        "or `python setup.py build_ext --inplace` from the source tree."
    ) from error

from . import ops  # noqa: E402

__version__: str = _C.version()

__all__ = ["ops", "__version__"]
