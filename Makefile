# One-command entry points. `make demo` and `make test` set everything up first.
#
# PYTHON is the interpreter you start with. When it is an "externally managed" system Python
# (PEP 668, e.g. Debian's /usr/bin/python3) and no virtual environment is active, `make setup`
# makes the project's own .venv and every target below runs with .venv/bin/python (PY).
PYTHON ?= python3
PY := $(shell $(PYTHON) scripts/ensure_deps.py --print-python 2>/dev/null || echo $(PYTHON))
export MAX_JOBS ?= 2

.PHONY: setup build test test-ops demo bench lint cmake gpu-check sanitize clean

setup:
	$(PYTHON) scripts/ensure_deps.py

# Incremental (ninja) in-place build of ssd_ext._C; CUDA kernels when torch and nvcc have CUDA.
build: setup
	$(PY) setup.py -q build_ext --inplace

test: build
	$(PY) -m pytest -q tests

test-ops: build
	$(PY) -m pytest -q tests/ops

# Train the default preset (small SSD, synthetic shapes) on whatever device there is, evaluate
# it on the held-out split, write detection pictures and curves to runs/demo and say where.
demo: build
	$(PY) -m ssd_ext train --output_dir runs/demo --overwrite true
	@case "$(PY)" in *.venv/*) echo "(the project's virtual environment: source .venv/bin/activate, then python -m ssd_ext --help)";; esac

bench: build
	$(PY) -m benchmarks.bench_ops

lint: setup
	$(PY) -m ruff check ssd_ext python tests benchmarks scripts setup.py

# LibTorch C++ library, its example and ctest (needs a torch with CMake files).
cmake: setup
	cmake -S . -B build/cmake -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')"
	cmake --build build/cmake -j $(MAX_JOBS)
	cd build/cmake && ctest --output-on-failure

# The C++ kernels built with AddressSanitizer + UndefinedBehaviorSanitizer (build/sanitize/),
# then the op tests against that build (see docs/RELIABILITY.md; the first build takes long).
sanitize: setup
	PYTHON=$(PY) bash scripts/sanitize.sh

# On a machine with a GPU: build, CUDA tests and GPU benchmarks, results into $$OUT.
gpu-check:
	bash scripts/gpu_check.sh

clean:
	rm -rf build ssd_ext/*.so
