#!/usr/bin/env bash
# A sweep on this machine: one MPI rank per core, BLAS single-threaded in each.
# Rerunning the same command resumes. Ctrl-C or SIGTERM stops it with every
# finished result kept (mpirun exits with 1 and may not wait for the running
# tasks); `kill -USR1 MPIRUN_PID` lets them finish and exits with gpfq's 3.
#
#   jobs/local.sh                                  # jobs/fashion_lenet5_scalar.yaml
#   jobs/local.sh jobs/fashion_bits.yaml -b 2,3,4  # the job file first, then gpfq sweep options
#   RANKS=3 GPFQ=/opt/gpfq/bin/gpfq jobs/local.sh JOB.yaml
#
# Watch it from another terminal: build/gpfq report --follow RESULTS.h5
set -uo pipefail

GPFQ=${GPFQ:-build/gpfq}
JOB=${1:-${JOB:-jobs/fashion_lenet5_scalar.yaml}}
shift $(($# > 0 ? 1 : 0))
cores=$(nproc) # before OMP_NUM_THREADS is set: nproc honours it
RANKS=${RANKS:-$cores}

export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
if [ "$(id -u)" -eq 0 ]; then
  # Open MPI refuses to run as root without these
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
extra=()
if [ "$RANKS" -gt "$cores" ]; then extra=(--oversubscribe); fi

cmd=(mpirun -n "$RANKS" "${extra[@]}" "$GPFQ" sweep "$@" "$JOB")
echo "local: ${cmd[*]}"
# exec: mpirun itself takes Ctrl-C and forwards SIGUSR1/SIGTERM to the ranks
exec "${cmd[@]}"
