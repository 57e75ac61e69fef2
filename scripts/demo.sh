#!/usr/bin/env bash
# Sets up (packages + build), then runs the main job: the scalar sweep of the
# shipped LeNet-5 on Fashion-MNIST (GPFQ and MSQ, 4 bits, scalar 1.0..2.0) on
# every local core, then prints the summary and writes the plots (analysis/).
# Rerunning resumes; --fresh starts over.
#
#   scripts/demo.sh [JOB.yaml] [extra gpfq sweep options]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
job=${1:-jobs/fashion_lenet5_scalar.yaml}
shift || true
ranks=${GPFQ_RANKS:-$(nproc)}
echo "demo: mpirun -n $ranks build/gpfq sweep $job $*"
mpirun -n "$ranks" --oversubscribe build/gpfq sweep "$job" "$@"
output=$(sed -n 's/^output: *\([^ #]*\).*/\1/p' "$job")
plots=results/plots/$(basename "$job" .yaml)
echo
"${PYTHON:-/usr/bin/python3}" -m analysis summary "$output"
"${PYTHON:-/usr/bin/python3}" -m analysis plot all -o "$plots" "$output"
echo "demo: plots in $plots/, analysis walkthrough in analysis/walkthrough.md"
