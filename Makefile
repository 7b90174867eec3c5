# One-command entry points. `make test` and `make demo` set everything up first.
PYTHON ?= python3
export MAX_JOBS ?= 2

.PHONY: setup build test test-ops demo bench lint cmake gpu-check clean

setup:
	$(PYTHON) scripts/ensure_deps.py

# Incremental (ninja) in-place build of ssd_ext._C; CUDA kernels when torch and nvcc have CUDA.
build: setup
	$(PYTHON) setup.py -q build_ext --inplace

test: build
	$(PYTHON) -m pytest -q tests

test-ops: build
	$(PYTHON) -m pytest -q tests/ops

demo: build
	$(PYTHON) -m benchmarks.bench_ops --quick

bench: build
	$(PYTHON) -m benchmarks.bench_ops

lint: setup
	$(PYTHON) -m ruff check ssd_ext python tests benchmarks scripts setup.py

# LibTorch C++ library, its example and ctest (needs a torch with CMake files).
cmake: setup
	cmake -S . -B build/cmake -DCMAKE_PREFIX_PATH="$$($(PYTHON) -c 'import torch; print(torch.utils.cmake_prefix_path)')"
	cmake --build build/cmake -j $(MAX_JOBS)
	cd build/cmake && ctest --output-on-failure

# On a machine with a GPU: build, CUDA tests and GPU benchmarks, results into $$OUT.
gpu-check:
	bash scripts/gpu_check.sh

clean:
	rm -rf build ssd_ext/*.so
