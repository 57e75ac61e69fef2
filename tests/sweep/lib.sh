# shellcheck shell=bash disable=SC2034,SC2154
# Shared by the sweep test scripts (sourced, not run). Expects gpfq, fixtures,
# test_data, python and mpiexec to be set to absolute paths. Makes a scratch
# directory $tmp (removed at exit, after every process session started with
# start_bg is killed) and provides the checks.
set -uo pipefail

jobs_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
rows_py=$jobs_dir/rows.py
tmp=$(mktemp -d)
failures=0
sessions=()

cleanup() {
  local s
  for s in "${sessions[@]}"; do kill_session "$s"; done
  rm -rf "$tmp"
}
trap cleanup EXIT

. "$jobs_dir/../expect.sh"


lacks() { ! grep -Eq -- "$1" <<<"$2"; }
# matches N PATTERN TEXT: exactly N lines of TEXT match PATTERN
matches() { [ "$(grep -Ec -- "$2" <<<"$3")" -eq "$1" ]; }
# subset A B: every line of file A is a line of file B
subset() { [ -z "$(comm -23 <(sort "$1") <(sort "$2"))" ]; }

# sweep N ARGS...: `gpfq sweep ARGS` on N MPI ranks; N = 0 runs gpfq alone
# (an MPI singleton, no mpirun).
sweep() {
  local n=$1
  shift
  if [ "$n" -eq 0 ]; then
    "$gpfq" sweep "$@"
  else
    "$mpiexec" -n "$n" --oversubscribe "$gpfq" sweep "$@"
  fi
}

# setup DIR: a directory with model.h5 (the LeNet fixture) and a tiny data set
# (600 test, 1200 train images), the paths the job files in tests/sweep use.
setup() {
  mkdir -p "$1"
  ln -s "$fixtures/model_lenet_small.h5" "$1/model.h5"
  "$test_data" --write-idx "$1/data" 600 >/dev/null
  if [ ! -f "$1/data/train-labels-idx1-ubyte" ]; then
    echo "FAIL: $test_data --write-idx did not write the tiny data set"
    exit 1
  fi
}

# task_ids JOB [ARGS...]: the task ids `gpfq sweep --dry-run` lists, one a line
task_ids() { "$gpfq" sweep --dry-run "$@" | awk 'NR > 2 { print $1 }'; }

# rows FILE: row count of /results, read while a sweep may be writing it (HDF5
# file locking would refuse the open); 0 when it cannot be read yet.
rows() {
  local n
  n=$(HDF5_USE_FILE_LOCKING=FALSE h5dump -H -d /results "$1" 2>/dev/null |
    sed -n 's/.*DATASPACE  SIMPLE { ( \([0-9]*\) ).*/\1/p' | head -n 1)
  echo "${n:-0}"
}

# live_in_session SID: processes of session SID that are not yet zombies
live_in_session() { ps -eo pid=,sid=,stat= | awk -v s="$1" '$2 == s && $3 !~ /^Z/ { print $1 }'; }

# kill_session SID: SIGKILL every process of the session, until none is left
# (Open MPI puts every rank in its own process group, so killing mpirun's
# process group would leave the ranks; they share mpirun's session).
kill_session() {
  local i pids
  for i in $(seq 100); do
    pids=$(live_in_session "$1")
    [ -z "$pids" ] && return 0
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null
    sleep 0.1
  done
  echo "FAIL: processes of session $1 survive SIGKILL: $(live_in_session "$1")"
  failures=$((failures + 1))
}

# gone SID [SECONDS]: waits until no live process is left in session SID
gone() {
  local i
  for i in $(seq $((${2:-20} * 10))); do
    [ -z "$(live_in_session "$1")" ] && return 0
    sleep 0.1
  done
  ps -o pid,stat,cmd --sid "$1"
  return 1
}

# start_bg LOG COMMAND...: starts COMMAND in a new session with its output in
# LOG; sets $bg to its process id, which is also the session id.
bg=
start_bg() {
  local log=$1 i
  shift
  setsid "$@" >"$log" 2>&1 &
  bg=$!
  sessions+=("$bg")
  for i in $(seq 100); do
    [ "$(ps -o sid= -p "$bg" | tr -d ' ')" = "$bg" ] && return 0
    kill -0 "$bg" 2>/dev/null || return 0
    sleep 0.05
  done
  echo "FAIL: $* did not become a session leader"
  failures=$((failures + 1))
}

# wait_rows FILE N PID [SECONDS]: waits until FILE has N rows while PID still
# runs; fails when PID ends first or after SECONDS (default 120).
wait_rows() {
  local file=$1 n=$2 pid=$3 i
  for i in $(seq $((${4:-120} * 10))); do
    [ "$(rows "$file")" -ge "$n" ] && kill -0 "$pid" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# wait_exit PID [SECONDS]: waits for a child to end and sets $rc to its exit
# status; kills its session and sets rc=999 after SECONDS (default 120).
rc=
wait_exit() {
  local pid=$1 i
  for i in $(seq $((${2:-120} * 10))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill_session "$pid"
    wait "$pid" 2>/dev/null
    rc=999
    return 1
  fi
  wait "$pid"
  rc=$?
}

finish() {
  if [ "$failures" -ne 0 ]; then
    echo "$failures $1 check(s) failed"
    exit 1
  fi
  echo "all $1 checks passed"
  exit 0
}
