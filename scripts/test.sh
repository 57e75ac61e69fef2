#!/usr/bin/env bash
# Sets up (packages + build), then runs every test: the ctest suite (C unit tests,
# PyTorch-fixture checks, CLI error cases, MPI sweeps, the Python tests, the
# Slurm test), then the C suite once more built with AddressSanitizer and
# UndefinedBehaviorSanitizer (GPFQ_SANITIZE_TESTS=0 skips that second pass).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
scripts/setup.sh
build_dir=${GPFQ_BUILD_DIR:-build}
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)"

if [ "${GPFQ_SANITIZE_TESTS:-1}" != 0 ]; then
  echo "test: the suite again under ASan + UBSan (build-asan/)"
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DGPFQ_SANITIZE=ON -DGPFQ_BUILD_BENCH=OFF \
    >/dev/null
  cmake --build build-asan -j "$(nproc)"
  # Open MPI's own allocations at exit are not ours: leaks are checked by the
  # valgrind test, ASan checks every access
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure -j "$(nproc)" -E 'slurm|python|valgrind'
fi
