"""Install what the project needs, skipping what is already there.

torch is taken as it is when importable (a GPU machine with its own CUDA build and no
network keeps its torch); otherwise TORCH_SPEC (default: the CUDA 13 build pinned below) is
installed. Every other requirement is installed only when its module cannot be imported.

PEP 668: a system Python that is "externally managed" (Debian's /usr/bin/python3) refuses pip
installs. With such a Python (and no virtual environment active) the project's own virtual
environment ``.venv`` is made and used instead, with ``--system-site-packages`` when that
Python already imports torch (so a machine with a system torch keeps it). ``--print-python``
prints the interpreter the Makefile must use (this one, or ``.venv/bin/python``).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

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
    "jsonargparse": "jsonargparse",  # the `ssd train` command line, derived from the config dataclasses
    "yaml": "PyYAML",  # --config files in YAML
    "pycocotools": "pycocotools",  # COCO AP of the demo and of `ssd eval`
    # The `export` extra (ssd_ext.export, `ssd export`, tests/export): installed for the tests.
    "onnx": "onnx",
    "onnxscript": "onnxscript",  # torch.onnx.export's dynamo exporter and our ops' translations
    "onnxruntime": "onnxruntime",
}
OPTIONAL = {
    "pybind11": "pybind11",
    "ruff": "ruff",
}

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"


def in_virtualenv() -> bool:
    return sys.prefix != sys.base_prefix


def externally_managed() -> bool:
    """PEP 668: the interpreter's stdlib folder holds an EXTERNALLY-MANAGED marker."""
    return (Path(sysconfig.get_path("stdlib")) / "EXTERNALLY-MANAGED").is_file()


def wanted_python() -> str:
    """The interpreter to install into and run with: this one, or the project's .venv."""
    if in_virtualenv() or not externally_managed():
        return sys.executable
    return str(VENV / "bin" / "python")


def make_venv() -> bool:
    system_torch = not missing("torch")
    command = [sys.executable, "-m", "venv", *(["--system-site-packages"] if system_torch else []), str(VENV)]
    print(f"ensure_deps: {sys.executable} is externally managed (PEP 668); making the project's "
          f"virtual environment {VENV}" + (" (reusing the system torch)" if system_torch else ""), flush=True)
    if subprocess.run(command).returncode != 0:
        print("ensure_deps: could not make the virtual environment; on Debian/Ubuntu install the venv "
              "module first: apt install python3-venv", file=sys.stderr)
        return False
    return True


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
    if "--print-python" in sys.argv[1:]:
        print(wanted_python())
        return 0
    target = wanted_python()
    if target != sys.executable:
        if not Path(target).exists() and not make_venv():
            return 1
        # Continue inside the virtual environment.
        return subprocess.run([target, os.path.abspath(__file__), *sys.argv[1:]]).returncode
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
    if in_virtualenv() and Path(sys.prefix).resolve() == VENV.resolve():
        print(f"ensure_deps: using the project's virtual environment; activate it with "
              f"`source {os.path.relpath(VENV)}/bin/activate` (make finds it by itself)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
