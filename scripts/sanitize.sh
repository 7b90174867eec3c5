#!/usr/bin/env bash
# Builds the C++ kernels (CPU only) with AddressSanitizer + UndefinedBehaviorSanitizer into a
# scratch copy of this tree and runs the op tests against that build (`make sanitize`).
#
#   bash scripts/sanitize.sh [pytest args]     (default: tests/ops -q -x)
#
# Environment:
#   SSD_SANITIZE_DIR   scratch folder (default: build/sanitize; kept between runs, so a rebuild
#                      after an edit only recompiles what changed)
#   MAX_JOBS           parallel compile jobs (default 2)
#
# Any ASan report (out-of-bounds, use-after-free, ...) or UBSan report (signed overflow, bad
# shift, misaligned or null access, out-of-range float-to-int, ...) aborts the run with a
# non-zero status; two canaries check that before the tests run. Python and torch themselves are not instrumented: libasan is preloaded so
# that the instrumented extension can load into a normal interpreter; leak checking is off
# because the interpreter keeps its allocations until exit.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
scratch="${SSD_SANITIZE_DIR:-$root/build/sanitize}"
python="${PYTHON:-python3}"

compiler="${CXX:-c++}"
libasan="$("$compiler" -print-file-name=libasan.so)"
libubsan="$("$compiler" -print-file-name=libubsan.so)"
if [[ "$libasan" != /* || ! -e "$libasan" ]]; then
  echo "sanitize.sh: $compiler has no libasan.so (install the compiler's sanitizer runtime)" >&2
  exit 2
fi

# The sources, tests and package, without build outputs (the copy gets its own build).
mkdir -p "$scratch"
( cd "$root" && tar --exclude=./build --exclude='./ssd_ext/_C*.so' --exclude=./.git \
    --exclude='*/__pycache__' --exclude=./.hypothesis --exclude=./runs -cf - \
    setup.py pyproject.toml csrc ssd_ext python tests ) | ( cd "$scratch" && tar -xf - )

sanitizers="-fsanitize=address,undefined -fno-sanitize=vptr -fno-sanitize-recover=all"
# -fno-wrapv: Python's default CFLAGS carry -fwrapv, which would define signed overflow and so
# hide it from UBSan.
start=$(date +%s)
( cd "$scratch" && \
  CFLAGS="$sanitizers -fno-omit-frame-pointer -fno-wrapv -g" \
  LDFLAGS="$sanitizers" \
  SSD_EXT_WITH_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" \
  nice "$python" setup.py -q build_ext --inplace > "$scratch/build.log" 2>&1 ) || {
  tail -n 40 "$scratch/build.log" >&2; echo "sanitize.sh: build failed" >&2; exit 1; }
echo "sanitize.sh: instrumented build in $(( $(date +%s) - start )) s ($scratch)"

# Runs a command the way the tests run: the sanitizer runtimes preloaded, every report fatal
# (the process stops with a non-zero status after printing it to stderr).
sanitized() {
  LD_PRELOAD="$libasan:$libubsan" \
  ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:detect_odr_violation=0:${ASAN_OPTIONS:-}" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}" \
  PYTHONPATH="$scratch:$scratch/python" \
    nice "$@"
}

# Canaries: a heap overflow and a signed overflow, built with the same flags and called from
# Python as the kernels are, must each stop the process with a report. If one runs to the end,
# a finding in the kernels could pass unnoticed, so the run fails here.
canary="$scratch/canary"
mkdir -p "$canary"
cat > "$canary/canary.c" <<'C_SOURCE'
#include <stdlib.h>
int heap_overflow(void) { volatile char *p = malloc(8); p[8] = 1; int v = p[0]; free((void *)p); return v; }
int signed_overflow(int x) { return x + 1; }
C_SOURCE
# shellcheck disable=SC2086  # $sanitizers is a list of flags
"$compiler" -x c -shared -fPIC $sanitizers -O0 -g -o "$canary/libcanary.so" "$canary/canary.c"
for call in "heap_overflow()" "signed_overflow(2147483647)"; do
  if sanitized "$python" -c "import ctypes; ctypes.CDLL('$canary/libcanary.so').$call" 2> "$canary/report.txt" \
      || ! grep -q -e "ERROR: AddressSanitizer" -e "runtime error" "$canary/report.txt"; then
    cat "$canary/report.txt" >&2
    echo "sanitize.sh: the canary $call was not stopped by a sanitizer report; findings would not fail" >&2
    exit 1
  fi
done
echo "sanitize.sh: canaries stopped by ASan and UBSan, as a finding in the kernels would be"

if [[ $# -eq 0 ]]; then
  set -- tests/ops -q -x -p no:cacheprovider
fi
start=$(date +%s)
cd "$scratch"
# The slow torch.compile / opcheck tests add nothing under the sanitizers that the eager ones
# do not (the kernels run the same), but they are kept: the command line decides.
# --capture=sys: pytest's default captures file descriptor 2, and a report written there by a
# process that then aborts would be lost; this way it reaches the console (a later -s wins).
status=0
sanitized "$python" -m pytest --capture=sys "$@" || status=$?
echo "sanitize.sh: tests finished in $(( $(date +%s) - start )) s with status $status"
exit $status
