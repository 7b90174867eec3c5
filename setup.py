"""Build of the ssd_ext._C extension (C++ kernels always, CUDA kernels when available).

Environment:
  SSD_EXT_WITH_CUDA=1/0   force the CUDA kernels on or off (default: on when the installed
                          torch has CUDA and nvcc is found).
  TORCH_CUDA_ARCH_LIST    architectures to compile for; without a visible GPU it defaults
                          to "9.0" (Hopper) to keep builds short.
  CUDA_HOME               the CUDA toolkit; found from nvcc (through wrapper scripts) if unset.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
VERSION = re.search(
    r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M
).group(1)


def _toolkit_from_nvcc_wrapper(nvcc: str) -> str | None:
    """Follow symlinks and `exec /path/bin/nvcc` shell wrappers to the real toolkit root."""
    real = os.path.realpath(nvcc)
    try:
        with open(real, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return None
    if head.startswith(b"#!"):
        match = re.search(rb"(/\S+)/bin/nvcc\b", head)
        if match:
            return match.group(1).decode()
        return None
    return str(Path(real).parent.parent)


def find_cuda_home() -> str | None:
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        home = _toolkit_from_nvcc_wrapper(nvcc)
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
            return home
    for candidate in ["/usr/local/cuda", *sorted(glob.glob("/usr/local/cuda-*"), reverse=True)]:
        if os.path.exists(os.path.join(candidate, "bin", "nvcc")):
            return candidate
    return None


# torch.utils.cpp_extension reads CUDA_HOME when it is imported: settle it first.
_cuda_home = find_cuda_home()
if _cuda_home:
    os.environ["CUDA_HOME"] = _cuda_home

import torch  # noqa: E402
from torch.utils.cpp_extension import (  # noqa: E402
    BuildExtension,
    CppExtension,
    CUDAExtension,
)


def want_cuda() -> bool:
    forced = os.environ.get("SSD_EXT_WITH_CUDA")
    if forced is not None and forced.strip() != "":
        on = forced.strip().lower() in ("1", "true", "yes", "on")
        if on and (torch.version.cuda is None or _cuda_home is None):
            sys.exit(
                "SSD_EXT_WITH_CUDA=1 but "
                + ("the installed torch has no CUDA" if torch.version.cuda is None
                   else "no CUDA toolkit (nvcc) was found; set CUDA_HOME")
            )
        return on
    return torch.version.cuda is not None and _cuda_home is not None


def wheel_cuda_includes() -> list[str]:
    """cuSPARSE/cuBLAS headers that ATen's CUDA headers include ship in nvidia wheels."""
    found = []
    for entry in sys.path:
        for sub in ("nvidia/cu13/include", "nvidia/cu12/include"):
            path = os.path.join(entry, sub)
            if os.path.isdir(path):
                found.append(path)
    return sorted(set(found))


def torch_parallel_backend() -> str:
    """ATen's intra-op backend ("OpenMP" or "native"), read from torch's own ATen/Config.h.

    at::parallel_for is header-inline: it runs on OpenMP threads only in a translation unit
    compiled with OpenMP when torch itself was; otherwise it runs serially (OpenMP torch) or
    on torch's native pool (native torch). So our flags must follow torch's build.
    """
    from torch.utils.cpp_extension import include_paths

    for folder in include_paths():
        config = Path(folder) / "ATen" / "Config.h"
        if config.exists():
            text = config.read_text()
            if re.search(r"#define\s+AT_PARALLEL_OPENMP\s+1\b", text):
                return "OpenMP"
            return "native"
    return "OpenMP" if "parallel backend: OpenMP" in torch.__config__.parallel_info() else "native"


def openmp_link_args() -> list[str]:
    """Link the OpenMP runtime torch ships (torch/lib/libgomp*.so*) by path, so that the
    extension needs the very library libtorch_cpu already loaded and never a second runtime;
    fall back to the compiler's -fopenmp (the system libgomp torch then also uses)."""
    torch_lib = Path(torch.__file__).resolve().parent / "lib"
    shipped = sorted(torch_lib.glob("libgomp*.so*")) + sorted(torch_lib.glob("libiomp5*.so"))
    return [str(shipped[0])] if shipped else ["-fopenmp"]


def extension():
    with_cuda = want_cuda()
    sources = sorted(
        glob.glob("csrc/*.cpp") + glob.glob("csrc/ops/*.cpp") + glob.glob("csrc/cpu/*.cpp")
    )
    define_macros = [("SSD_EXT_VERSION", f'"{VERSION}"')]
    # The C++ standard is left to torch (C++20 since torch 2.10); our sources are C++17-clean.
    # -ffp-contract=off: no FMA contraction on the host either (e.g. aarch64, -march=native),
    # so IoU and box values round as in the reference and the CUDA kernels.
    cxx_flags = ["-O3", "-Wall", "-ffp-contract=off"]
    link_args: list[str] = []
    backend = torch_parallel_backend()
    define_macros.append(("SSD_EXT_PARALLEL_BACKEND", f'"{backend}"'))
    if backend == "OpenMP" and sys.platform.startswith("linux"):
        # Host C++ only: .cu files run no at::parallel_for, and nvcc must not see -fopenmp.
        cxx_flags.append("-fopenmp")
        link_args = openmp_link_args()
    print(f"ssd_ext: CPU kernels use ATen's {backend} parallel backend")
    if with_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
        if not archs:
            archs = ";".join(
                f"{major}.{minor}"
                for major, minor in sorted(
                    {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
                )
            )
        define_macros += [("SSD_EXT_WITH_CUDA", None), ("SSD_EXT_CUDA_ARCHS", f'"{archs}"')]
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        print(f"ssd_ext: building CUDA kernels for {archs} with {_cuda_home}")
        return CUDAExtension(
            "ssd_ext._C",
            sources,
            include_dirs=wheel_cuda_includes(),
            define_macros=define_macros,
            extra_link_args=link_args,
            extra_compile_args={
                "cxx": cxx_flags,
                "nvcc": ["-O3", "--expt-relaxed-constexpr", "-lineinfo"],
            },
        )
    print("ssd_ext: building the C++ kernels only (no CUDA)")
    return CppExtension(
        "ssd_ext._C",
        sources,
        define_macros=define_macros,
        extra_link_args=link_args,
        extra_compile_args={"cxx": cxx_flags},
    )


setup(
    packages=find_packages(include=["ssd_ext", "ssd_ext.*"])
    + find_packages("python", include=["ssd_reference", "ssd_reference.*"]),
    package_dir={"ssd_reference": "python/ssd_reference"},
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
