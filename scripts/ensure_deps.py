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

# module name -> pip requirement
REQUIREMENTS = {
    "numpy": "numpy",
    "PIL": "Pillow",
    "tqdm": "tqdm",
    "matplotlib": "matplotlib",
    "pytest": "pytest",
    "hypothesis": "hypothesis",
    "ninja": "ninja",
    "pybind11": "pybind11",
    "pycocotools": "pycocotools",
    "ruff": "ruff",
}


def missing(module: str) -> bool:
    return importlib.util.find_spec(module) is None


def pip_install(requirements: list[str]) -> None:
    print("ensure_deps: pip install", " ".join(requirements), flush=True)
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *requirements])


def main() -> int:
    if missing("torch"):
        pip_install(os.environ.get("TORCH_SPEC", DEFAULT_TORCH_SPEC).split())
    wanted = [req for module, req in REQUIREMENTS.items() if missing(module)]
    if wanted:
        pip_install(wanted)
    import torch

    print(f"ensure_deps: using torch {torch.__version__} (CUDA {torch.version.cuda})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
