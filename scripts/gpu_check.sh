#!/usr/bin/env bash
# The whole GPU check in one call, for a machine with a CUDA device (e.g. the device tool):
# build with CUDA for the visible GPU, run every test (CUDA parameters included), run the op
# benchmark on CPU and CUDA, and copy logs and results into $OUT (or ./gpu_check_out).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 MAX_JOBS="${MAX_JOBS:-16}"
status=0

{
  nvidia-smi || true
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
} 2>&1 | tee "$out/env.log"

echo "=== build" | tee "$out/build.log"
SSD_EXT_WITH_CUDA=1 python3 setup.py -q build_ext --inplace 2>&1 | tail -30 | tee -a "$out/build.log"
python3 -m ssd_ext info 2>&1 | tee -a "$out/build.log" || status=1

echo "=== tests" | tee "$out/tests.log"
python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tee -a "$out/tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "=== benchmarks" | tee "$out/bench.log"
python3 -m benchmarks.bench_ops --device all --out "$out" --update-docs 2>&1 | tee -a "$out/bench.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
cp docs/BENCHMARKS.md "$out/BENCHMARKS.md"

echo "gpu_check: exit status $status (results in $out)"
exit $status
