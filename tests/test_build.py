"""The build reports what it compiled, and every registered op has a kernel for the CPU and,
when compiled, CUDA."""

from __future__ import annotations

import subprocess
import sys

import torch

import ssd_ext
from ssd_ext import _C
from ssd_ext.cli import build_info, registered_ops


def test_version_matches_package_metadata():
    assert ssd_ext.__version__ == _C.version()
    assert ssd_ext.__version__.count(".") >= 2


def test_cuda_flag_matches_torch():
    if torch.version.cuda is None:
        assert not _C.cuda_compiled()
    if _C.cuda_compiled():
        assert _C.cuda_archs() != ""


def test_registered_ops_have_kernels_for_built_backends():
    ops = registered_ops()
    assert "box_iou" in ops
    for name in ops:
        op = getattr(torch.ops.ssd_ext, name).default
        # "computed": a CompositeExplicitAutograd kernel (prior_boxes) serves every backend.
        assert torch._C._dispatch_has_computed_kernel_for_dispatch_key(op.name(), "CPU"), name
        if _C.cuda_compiled():
            assert torch._C._dispatch_has_computed_kernel_for_dispatch_key(op.name(), "CUDA"), name


def test_info_command_runs():
    result = subprocess.run([sys.executable, "-m", "ssd_ext", "info"], capture_output=True,
                            text=True, check=True)
    assert "CUDA kernels compiled" in result.stdout
    assert build_info()["ssd_ext"] == ssd_ext.__version__


def test_info_states_the_cpu_parallel_backend_torch_uses():
    # The kernels must be compiled with torch's own parallel backend: otherwise
    # at::parallel_for runs serially whatever torch.set_num_threads says.
    info = _C.parallel_info()
    assert info["backend"] == info["torch_backend"]
    line = build_info()["CPU parallel backend"]
    assert line.startswith(info["backend"]) and f"{torch.get_num_threads()} threads" in line
