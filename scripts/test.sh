#!/usr/bin/env bash
# Sets up (packages + build), then runs every test: the ctest suite (C unit tests,
# PyTorch-fixture checks, CLI error cases, MPI runs) and the Python tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
scripts/setup.sh
build_dir=${GPFQ_BUILD_DIR:-build}
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)"
