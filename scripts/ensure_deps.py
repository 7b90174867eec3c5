"""Install what the project needs into the active Python, skipping what is already there.

torch is taken as it is when importable (a GPU machine with its own CUDA build and no
network keeps its torch); otherwise TORCH_SPEC (default: the CUDA 13 build pinned below) is
installed. Every other requirement is installed only when its module cannot be imported.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

DEFAULT_TORCH_SPEC = "torch==2.14.1 torchvision==0.29.1"

# module name -> pip requirement. Required ones must be importable for the build, the tests
# and the demo; optional ones (COCO reading, lint) are installed when possible, so that a
# machine without network but with torch and the required packages still builds and tests.
REQUIRED = {
    "numpy": "numpy",
    "PIL": "Pillow",
    "tqdm": "tqdm",
    "matplotlib": "matplotlib",
    "pytest": "pytest",
    "hypothesis": "hypothesis",
    "ninja": "ninja",
}
OPTIONAL = {
    "pybind11": "pybind11",
    "pycocotools": "pycocotools",
    "ruff": "ruff",
}


def missing(module: str) -> bool:
    return importlib.util.find_spec(module) is None


def pip_install(requirements: list[str]) -> bool:
    print("ensure_deps: pip install", " ".join(requirements), flush=True)
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", *requirements])
    return result.returncode == 0


def install_missing(requirements: dict[str, str]) -> list[str]:
    """Install what is missing (all at once, then one by one); return what still is."""
    wanted = [req for module, req in requirements.items() if missing(module)]
    if wanted and not pip_install(wanted):
        for req in wanted:
            pip_install([req])
    importlib.invalidate_caches()
    return [req for module, req in requirements.items() if missing(module)]


def main() -> int:
    if missing("torch"):
        if not pip_install(os.environ.get("TORCH_SPEC", DEFAULT_TORCH_SPEC).split()):
            print("ensure_deps: could not install torch; install it first", file=sys.stderr)
            return 1
    still_required = install_missing(REQUIRED)
    still_optional = install_missing(OPTIONAL)
    import torch

    print(f"ensure_deps: using torch {torch.__version__} (CUDA {torch.version.cuda})")
    if still_optional:
        print(f"ensure_deps: optional packages unavailable: {', '.join(still_optional)}")
    if still_required:
        print(f"ensure_deps: required packages missing: {', '.join(still_required)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
