#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/) with clang into build-fuzz/ and runs
# each for SECONDS on a working copy of its seed corpus (build-fuzz/corpus/NAME,
# kept between runs; the committed fuzz/corpus/NAME stays small). Inputs that
# crash, leak, hang or blow the memory limit are saved in fuzz/crashes/NAME/;
# fix the bug, then move the input to fuzz/regressions/NAME/ so that ctest
# (fuzz_regressions) replays it in every build.
#
#   scripts/fuzz.sh [SECONDS] [HARNESS...]   # default: 600 s each, every harness
#   GPFQ_FUZZ_PARALLEL=2 scripts/fuzz.sh 600 model results   # two at a time
#
# Harnesses: model idx cifar job results. Runs under nice (GPFQ_FUZZ_NICE,
# default 19). Extra libFuzzer flags: GPFQ_FUZZ_FLAGS. Logs: build-fuzz/logs/.
# Exits 1 when a harness saved a new crashing input.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
harnesses=("$@")
((${#harnesses[@]})) || harnesses=(model idx cifar job results)
parallel=${GPFQ_FUZZ_PARALLEL:-1}
niceness=${GPFQ_FUZZ_NICE:-19}
build=build-fuzz

for h in "${harnesses[@]}"; do
  [ -d "fuzz/corpus/$h" ] || { echo "fuzz: unknown harness '$h'" >&2; exit 2; }
done
command -v clang >/dev/null || { echo "fuzz: clang is missing (scripts/setup.sh installs it)" >&2; exit 2; }

cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGPFQ_FUZZ=ON \
  -DGPFQ_BUILD_TESTS=OFF -DGPFQ_BUILD_BENCH=OFF >/dev/null
nice -n "$niceness" cmake --build "$build" --target fuzz -j "$(nproc)" >/dev/null
mkdir -p "$build/logs"

# leak checking stays on; fuzz/lsan.supp hides what libhdf5 itself loses
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/fuzz/lsan.supp}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run_one() {
  local h=$1 work=$build/corpus/$1 crashes=fuzz/crashes/$1 log=$build/logs/$1.log
  mkdir -p "$work" "$crashes"
  cp -n "fuzz/corpus/$h"/* "$work/" 2>/dev/null || true
  local dict=()
  [ -f "fuzz/$h.dict" ] && dict=(-dict="fuzz/$h.dict")
  local before
  before=$(find "$crashes" -type f | wc -l)
  : >"$log"
  # the harnesses' scratch files (left behind by inputs that crash)
  local scratch=/tmp
  [ -w /dev/shm ] && scratch=/dev/shm
  export GPFQ_FUZZ_TMP=$scratch/gpfq-fuzz-$h-$$
  mkdir -p "$GPFQ_FUZZ_TMP"
  # libFuzzer stops at the first crash (libhdf5 has its own on corrupt files):
  # start it again on the grown corpus until the time is up; fuzz/triage.sh
  # tells our crashes from libhdf5's
  local end=$((SECONDS + seconds)) left
  while left=$((end - SECONDS)) && ((left > 5)); do
    # shellcheck disable=SC2086
    nice -n "$niceness" "$build/fuzz/fuzz_$h" -max_total_time="$left" -timeout=15 \
      -print_final_stats=1 -artifact_prefix="$crashes/" "${dict[@]}" ${GPFQ_FUZZ_FLAGS:-} \
      "$work" >>"$log" 2>&1 || true
    # an input that crashed while the corpus was read would stop every restart
    local artifact sum
    for artifact in "$crashes"/*; do
      [ -f "$artifact" ] || continue
      sum=$(sha1sum <"$artifact" | cut -c1-40)
      find "$work" -type f -exec sha1sum {} + | awk -v s="$sum" '$1 == s { print $2 }' |
        xargs -r rm -f
    done
  done
  rm -rf "$GPFQ_FUZZ_TMP"
  local after runs
  after=$(find "$crashes" -type f | wc -l)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | awk '{ n += $1 } END { print n + 0 }')
  printf 'fuzz %-8s %6ss  %9s runs  %6s exec/s  corpus %4d  starts %d  new saved inputs %d\n' \
    "$h" "$seconds" "$runs" $((runs / seconds)) "$(find "$work" -type f | wc -l)" \
    "$(grep -c '^INFO: Seed:' "$log")" $((after - before))
  [ "$after" -eq "$before" ]
}

status=0
pids=()
for h in "${harnesses[@]}"; do
  run_one "$h" &
  pids+=($!)
  if ((${#pids[@]} >= parallel)); then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
((status == 0)) || echo "fuzz: new crashing inputs in fuzz/crashes/ (logs in $build/logs/)"
exit $status
