#!/usr/bin/env bash
# `gpfq sweep` on the small LeNet fixture and a tiny data set, with the job
# files of tests/sweep. One part per run:
#
#   ranks   the same grid on 1 (alone and under mpirun), 2 and 3 ranks gives
#           the same rows: per task id the same top-1, top-5, sparsity and
#           weight-code hash, every task exactly once, all done
#   resume  a rerun finds everything done and changes nothing; a grown grid
#           (-b override, a second job file) runs only the new points;
#           --dry-run lists the tasks and computes nothing
#   errors  bad job files, a missing model or data directory, unwritable
#           outputs and a results file of another job: a clear message printed
#           once, a non-zero exit, and an existing results file left byte for
#           byte
#   errors_mpi  the same for one case of each kind under mpirun -n 2
#   no_threads  every thread gpfq starts itself refused (GPFQ_NO_THREADS: the
#           shim tests/sweep/no_threads.c): quantize, eval and a sweep on 1
#           and 2 ranks give the results of a run with threads
#   no_memory  memory runs out (GPFQ_NO_MEMORY: the shim
#           tests/sweep/no_memory.c fails gpfq's allocations from the k-th
#           on, or only the k-th), for k over the whole of a resumed sweep,
#           alone and on 2 ranks: no crash or hang, a message, the file's
#           rows kept, no row but the right results, and a rerun completes
#
#   sweep_test.sh GPFQ_BIN FIXTURES_DIR TEST_DATA_BIN PYTHON MPIEXEC PART
if [ $# -ne 6 ]; then
  echo "usage: $0 GPFQ_BIN FIXTURES_DIR TEST_DATA_BIN PYTHON MPIEXEC ranks|resume|errors|errors_mpi|no_threads|no_memory"
  exit 2
fi
gpfq=$(realpath "$1") fixtures=$(realpath "$2") test_data=$(realpath "$3")
python=$4 mpiexec=$5 part=$6
# shellcheck source=sweep/lib.sh
. "$(dirname "$0")/sweep/lib.sh"
grid=$jobs_dir/grid.yaml extra=$jobs_dir/extra.yaml
setup "$tmp"
cd "$tmp" || exit 1

# ---- 1. the same rows on any number of ranks ----
part_ranks() {
  task_ids "$grid" >ids
  task_ids "$extra" >>ids
  sort -u -o ids ids
  check "grid.yaml and extra.yaml: 14 distinct tasks" [ "$(wc -l <ids)" -eq 14 ]
  local n name runs=(0 1 2 3)
  for n in "${runs[@]}"; do
    name=ranks$n
    expect 0 "12 tasks, 0 already done, 12 to run on $((n > 0 ? n : 1)) rank" -- \
      sweep "$n" --output "$name.h5" "$grid"
    expect 0 "3 tasks, 1 already done, 2 to run on $((n > 0 ? n : 1)) rank" -- \
      sweep "$n" --output "$name.h5" "$extra"
    check "$n rank(s): every task once, all done" \
      "$python" "$rows_py" check "$name.h5" ids --results "$name.txt"
    check "$n rank(s): 14 result rows" [ "$(wc -l <"$name.txt")" -eq 14 ]
  done
  for n in 0 2 3; do
    if cmp -s ranks1.txt "ranks$n.txt"; then
      echo "ok: $n rank(s) and 1 rank: identical results per task"
    else
      echo "FAIL: $n rank(s) and 1 rank differ (task status float and quantized top1 top5, sparsity, codes_hash):"
      diff ranks1.txt "ranks$n.txt" | sed 's/^/    /'
      failures=$((failures + 1))
    fi
  done
  # the runs did spread over the ranks, and the results are not all alike
  "$python" "$rows_py" dump ranks3.h5 >ranks3.dump
  check "3 ranks: tasks ran on more than one rank" \
    [ "$(grep -o " rank=[0-9]* " ranks3.dump | sort -u | wc -l)" -gt 1 ]
  check "one stochastic row" [ "$(grep -c " stochastic=1 " ranks3.dump)" -eq 1 ]
  check "one L0 row" [ "$(grep -c " regularizer=L0 " ranks3.dump)" -eq 1 ]
  check "weight-code hashes differ between tasks (at least 12 distinct)" \
    [ "$(awk '{ print $NF }' ranks1.txt | sort -u | wc -l)" -ge 12 ]
}

# ---- 2. resume, grown grids, --dry-run ----
part_resume() {
  expect 0 "12 tasks, 0 already done, 12 to run on 1 rank" -- sweep 0 "$grid"
  check "12 rows" [ "$(rows results.h5)" -eq 12 ]
  check "images 32 of 1200 training images: no warning" lacks "warning" "$out"
  task_ids "$grid" >ids12
  check "the 12 tasks of the dry run, each once, all done" \
    "$python" "$rows_py" check results.h5 ids12
  cp results.h5 first.h5
  "$python" "$rows_py" dump results.h5 >first.txt

  # a rerun: nothing to do, nothing changed
  expect 0 "12 tasks, 12 already done, 0 to run" -- sweep 0 "$grid"
  check "rerun: nothing computed" lacks "^(float|cache|\[[0-9]+/)" "$out"
  check "rerun: still 12 rows" [ "$(rows results.h5)" -eq 12 ]
  check "rerun: the results file is unchanged, byte for byte" cmp -s first.h5 results.h5
  expect 0 "12 tasks, 12 already done, 0 to run on 2 rank" -- sweep 2 "$grid"
  check "rerun on 2 ranks: the summary printed once" matches 1 "12 already done" "$out"
  check "rerun on 2 ranks: the results file is unchanged" cmp -s first.h5 results.h5

  # a grown grid: only the new bit width runs
  expect 0 "16 tasks, 12 already done, 4 to run" -- sweep 0 -b 2,3,4,5 "$grid"
  check "-b 2,3,4,5: 4 tasks ran" matches 4 "^\[[0-9]+/4\] " "$out"
  check "-b 2,3,4,5: only 5-bit tasks ran" lacks "^\[[0-9]+/4\] [0-9a-f]+ [a-z]+ +b[234] " "$out"
  check "-b 2,3,4,5: 16 rows" [ "$(rows results.h5)" -eq 16 ]
  "$python" "$rows_py" dump results.h5 >grown.txt
  check "-b 2,3,4,5: the 12 earlier rows are unchanged" subset first.txt grown.txt
  check "-b 2,3,4,5: the new rows have 5 bits" [ "$(grep -c " bits=5 " grown.txt)" -eq 4 ]
  task_ids -b 2,3,4,5 "$grid" >ids16
  check "-b 2,3,4,5: the 16 tasks of the dry run, each once, all done" \
    "$python" "$rows_py" check results.h5 ids16
  expect 0 "16 tasks, 16 already done, 0 to run" -- sweep 0 -b 2:5:1 "$grid"

  # more calibration images than the training set: said, and all of them calibrate
  sed 's/^  images: 32$/  images: 2000/' "$grid" >many_images.yaml
  expect 0 "warning: many_images.yaml: images 2000 is more than the 1200 training images; all of them calibrate" -- \
    sweep 0 --output many.h5 -b 4 -s 1.0 many_images.yaml
  check "images 2000: the warning printed once" matches 1 "warning" "$out"
  check "images 2000: the rows keep the number asked" \
    [ "$("$python" "$rows_py" column many.h5 calib_images | awk '{ print $2 }' | sort -u)" = 2000 ]

  # a second job file of the same job context into the same file
  expect 0 "3 tasks, 1 already done, 2 to run" -- sweep 0 "$extra"
  check "extra.yaml: 18 rows" [ "$(rows results.h5)" -eq 18 ]
  "$python" "$rows_py" dump results.h5 >extra.txt
  check "extra.yaml: the 16 earlier rows are unchanged" subset grown.txt extra.txt
  expect 0 "3 tasks, 3 already done, 0 to run" -- sweep 2 "$extra"
  expect 0 "12 tasks, 12 already done, 0 to run" -- sweep 0 "$grid"
  check "18 rows at the end" [ "$(rows results.h5)" -eq 18 ]

  # --dry-run: the count and the list, no work, no file
  cp results.h5 before_dry.h5
  expect 0 "^12 tasks \(model model.h5, fashion-mnist, output fresh.h5\)" -- \
    sweep 0 --dry-run --output fresh.h5 "$grid"
  check "--dry-run: lists 12 tasks" matches 12 "^[0-9a-f]{16} +(gpfq|msq) " "$out"
  check "--dry-run: nothing computed" lacks "^(sweep|float|cache|finished|\[[0-9]+/)" "$out"
  check "--dry-run: no results file created" [ ! -e fresh.h5 ]
  expect 0 "^28 tasks " -- sweep 0 --dry-run -b 2:8:1 --output fresh.h5 "$grid"
  check "--dry-run -b 2:8:1: lists 28 tasks" matches 28 "^[0-9a-f]{16} +(gpfq|msq) " "$out"
  check "--dry-run -b 2:8:1: no results file created" [ ! -e fresh.h5 ]
  expect 0 "^16 tasks " -- sweep 2 --dry-run -b 2,3,4,5 "$grid"
  check "--dry-run on 2 ranks: the list printed once" matches 16 "^[0-9a-f]{16} +(gpfq|msq) " "$out"
  check "--dry-run: the existing results file is unchanged" cmp -s before_dry.h5 results.h5
}

# ---- 5. bad input ----

# refuse CODE PATTERN ARGS...: `gpfq sweep ARGS` exits CODE with PATTERN
# printed exactly once, leaves results.h5 byte for byte and computes nothing.
# In the errors part it runs alone; refuse_mpi cases run on 2 ranks instead in
# the errors_mpi part (where plain refuse cases are skipped).
errors_ranks=0
refuse_on() {
  local n=$1 code=$2 pattern=$3
  shift 3
  expect "$code" "$pattern" -- sweep "$n" "$@"
  if matches 1 "$pattern" "$out" && matches 1 "error" "$out"; then
    echo "ok:   the message printed once ($n rank(s))"
  else
    echo "FAIL:   the message is not printed exactly once ($n rank(s)):"
    grep -E -- "error|$pattern" <<<"$out" | sed 's/^/      /'
    failures=$((failures + 1))
  fi
  check "  nothing computed ($n rank(s))" lacks "^(\[[0-9]+/|finished)" "$out"
  check "  results.h5 unchanged ($n rank(s))" cmp -s pristine.h5 results.h5
}
refuse() { [ "$errors_ranks" -eq 0 ] && refuse_on 0 "$@"; }
refuse_mpi() { refuse_on "$errors_ranks" "$@"; }

part_errors() {
  expect 0 "12 tasks, 0 already done, 12 to run" -- sweep 0 "$grid"
  cp results.h5 pristine.h5

  # job files: each error names the file, the line and the key
  cat >bad_yaml.yaml <<'EOF'
model: model.h5
output: results.h5
grid:
  bits: [2, 3
  method: gpfq
EOF
  refuse_mpi 2 "bad_yaml.yaml:5: not valid YAML" bad_yaml.yaml
  sed 's/^output:/outptu:/' "$grid" >bad_top_key.yaml
  refuse 2 "bad_top_key.yaml:12: outptu: unknown key in the job file" bad_top_key.yaml
  sed 's/^  seed: 1$/  seed: 1\n  imagez: 64/' "$grid" >bad_key.yaml
  refuse_mpi 2 "bad_key.yaml:12: imagez: unknown key in calibration" bad_key.yaml
  sed 's/^  scalar: .*/  scalar: {start: 2, stop: 1, step: 0.1}/' "$grid" >bad_range.yaml
  refuse_mpi 2 "bad_range.yaml:19: scalar: the range is empty" bad_range.yaml
  sed 's/^  scalar: .*/  scalar: {start: 1, stop: 2, step: 0}/' "$grid" >bad_step.yaml
  refuse 2 "bad_step.yaml:19: scalar: step must be > 0" bad_step.yaml
  sed 's/^  bits: .*/  bits: 0/' "$grid" >bad_bits.yaml
  refuse 2 "bad_bits.yaml:18: bits: expects a whole number from 1 to 16, got 0" bad_bits.yaml
  sed 's/^  bits: .*/  bits: [2, 0]/' "$grid" >bad_bits_list.yaml
  refuse 2 "bad_bits_list.yaml:18: bits: expects a whole number from 1 to 16, got 0" \
    bad_bits_list.yaml
  refuse 2 "bits: 0 is outside 1..16" -b 0 "$grid"
  sed 's/^  method: .*/  method: [gpfq, rtn]/' "$grid" >bad_method.yaml
  refuse 2 "bad_method.yaml:17: method: expects one of gpfq, msq, got 'rtn'" bad_method.yaml
  refuse 2 "method: 'rtn' is not a valid value; use gpfq, msq" --method rtn "$grid"
  refuse 2 "nosuch.yaml: cannot open the job file" nosuch.yaml

  # a missing model
  sed 's#^model: .*#model: absent/model.h5#' "$grid" >no_model.yaml
  refuse_mpi 2 "absent/model.h5: cannot open: No such file" no_model.yaml
  # a missing data directory (with tasks to run: -b 5 is not in results.h5)
  sed 's#^  data_dir: .*#  data_dir: absent#' "$grid" >no_data.yaml
  # printed once, by rank 0, however many ranks run
  refuse_mpi 1 "data directory absent: No such file" -b 5 no_data.yaml
  # the data is checked before the results file is created
  if [ "$errors_ranks" -eq 0 ]; then
    expect 1 "data directory absent: No such file" -- sweep 0 --output fresh.h5 no_data.yaml
    check "a missing data directory leaves no new results file" [ ! -e fresh.h5 ]
  fi

  # unwritable outputs (a missing directory of the output is created, so the
  # way to it must be blocked: a regular file, or a directory under /proc)
  echo "not a directory" >afile
  refuse_mpi 2 "afile is not a directory" --output afile/r.h5 "$grid"
  refuse 2 "afile is not a directory" --output afile/sub/r.h5 "$grid"
  refuse 2 "cannot create directory /proc/gpfq-sweep-test: " \
    --output /proc/gpfq-sweep-test/r.h5 "$grid"
  # (as root the directory check passes and the create fails: an error, 1;
  # otherwise the directory check refuses it: bad input, 2)
  refuse "$([ "$(id -u)" -eq 0 ] && echo 1 || echo 2)" \
    "/proc/gpfq-sweep-test.h5: cannot create the results file" \
    --output /proc/gpfq-sweep-test.h5 "$grid"
  refuse 2 "data: not an HDF5 file" --output data "$grid"
  cp "$fixtures/model_lenet_small.h5" not_results.h5
  refuse 2 "not_results.h5: not a gpfq results file" --output not_results.h5 "$grid"
  check "a model given as the output is unchanged" \
    cmp -s "$fixtures/model_lenet_small.h5" not_results.h5

  # results of a different job: another calibration, another model
  sed 's/^  seed: 1$/  seed: 2/' "$grid" >other_calibration.yaml
  refuse_mpi 2 "results.h5: holds results of a different job" other_calibration.yaml
  sed 's/^  images: 32$/  images: 48/' "$grid" >other_images.yaml
  refuse 2 "results.h5: holds results of a different job" other_images.yaml
  sed "s#^model: .*#model: $fixtures/model_resnet_small.h5#" "$grid" >other_model.yaml
  refuse 2 "results.h5: holds results of a different job" other_model.yaml

  # and after all that, the file still resumes
  expect 0 "12 tasks, 12 already done, 0 to run" -- sweep 0 "$grid"
  check "results.h5 unchanged at the end" cmp -s pristine.h5 results.h5
}

# ---- 4. no threads of gpfq's own ----
# With the shim of $GPFQ_NO_THREADS (tests/sweep/no_threads.c) preloaded, every thread gpfq
# starts itself is refused, as under a thread limit: the quantization's helper, an
# evaluation's workers, rank 0's worker in a sweep. Each has a fallback on the calling thread,
# and results must be those of a run with threads.
part_no_threads() {
  local shim=${GPFQ_NO_THREADS:?set GPFQ_NO_THREADS to the path of the no_threads shim}
  # the sanitizers' runtime asks to come first in the list of libraries; the shim does
  local asan="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
  local refused="no_threads: refused [1-9][0-9]* thread"
  task_ids "$grid" >ids

  # a quantization and an evaluation on two threads
  local q=(quantize -model model.h5 -ds fashion-mnist --data-dir data -b 3 -bs 64 --threads 2)
  expect 0 "saved +q_threads.h5" -- "$gpfq" "${q[@]}" --out q_threads.h5
  local with=$out
  expect 0 "saved +q_alone.h5" -- env LD_PRELOAD="$shim" ASAN_OPTIONS="$asan" \
    "$gpfq" "${q[@]}" --out q_alone.h5
  check "quantize: threads were refused" grep -Eq "$refused" <<<"$out"
  # the lines of the layers and the accuracies, without their times
  accuracies() { grep -E "^(  \[|float|quantized top|sparsity)" <<<"$1" | sed 's/ *[0-9.]* s)*$//'; }
  check "quantize: 5 layers, 2 accuracies and the sparsity compared" \
    [ "$(accuracies "$with" | wc -l)" -eq 8 ]
  check "quantize without threads: the same layers and accuracies" \
    [ "$(accuracies "$with")" = "$(accuracies "$out")" ]
  check "quantize without threads: the same quantized model" h5diff q_threads.h5 q_alone.h5
  expect 0 "top-1" -- "$gpfq" eval --model q_threads.h5 --data-dir data \
    --threads 2
  with=$(grep "top-1" <<<"$out" | sed 's/ *[0-9.]* s)*$//')
  expect 0 "top-1" -- env LD_PRELOAD="$shim" ASAN_OPTIONS="$asan" \
    "$gpfq" eval --model q_threads.h5 --data-dir data --threads 2
  check "eval: threads were refused" grep -Eq "$refused" <<<"$out"
  check "eval without threads: the same accuracy" \
    [ "$with" = "$(grep "top-1" <<<"$out" | sed 's/ *[0-9.]* s)*$//')" ]

  # a sweep alone, then on two ranks, against one with threads
  expect 0 "12 tasks, 0 already done, 12 to run on 1 rank" -- \
    sweep 0 --output threads.h5 "$grid"
  check "with threads: every task once, all done" \
    "$python" "$rows_py" check threads.h5 ids --results threads.txt
  expect 0 "cannot start rank 0's worker thread \(Resource temporarily unavailable\); rank 0 runs the tasks itself" -- \
    timeout 120 env LD_PRELOAD="$shim" ASAN_OPTIONS="$asan" "$gpfq" sweep --output alone.h5 "$grid"
  check "sweep alone: threads were refused" grep -Eq "$refused" <<<"$out"
  check "sweep alone without threads: every task once, all done" \
    "$python" "$rows_py" check alone.h5 ids --results alone.txt
  check "sweep alone without threads: the results of the sweep with threads" \
    cmp -s threads.txt alone.txt
  expect 0 "cannot start rank 0's worker thread .*; the other ranks run the tasks" -- \
    timeout 120 "$mpiexec" -n 2 --oversubscribe -x LD_PRELOAD="$shim" -x ASAN_OPTIONS="$asan" \
    "$gpfq" sweep --output two.h5 "$grid"
  check "sweep on 2 ranks without threads: every task once, all done" \
    "$python" "$rows_py" check two.h5 ids --results two.txt
  check "sweep on 2 ranks without threads: the results of the sweep with threads" \
    cmp -s threads.txt two.txt
  check "sweep on 2 ranks without threads: rank 1 ran every task" \
    [ "$("$python" "$rows_py" column two.h5 rank | awk '{ print $2 }' | sort -u)" = 1 ]
}

# ---- 7. memory runs out ----

# counted: the largest count of allocations the shim reports in $out
counted() { sed -n 's/^no_memory: counted \([0-9]*\) allocation.*/\1/p' <<<"$out" | sort -n | tail -n 1; }

# oom_run FILE K [ONCE] [RANKS] [RANK]: the grid into FILE (resumed) with
# gpfq's allocations failing from the K-th on (ONCE=1: only the K-th), alone
# or on RANKS ranks (every rank counts its own; with RANK, only that rank's
# fail); sets $rc and $out.
oom_run() {
  local file=$1 k=$2 once=${3:-0} ranks=${4:-0} rank=${5:-}
  if [ "$ranks" -eq 0 ]; then
    out=$(NO_MEMORY_AT=$k NO_MEMORY_ONCE=$once LD_PRELOAD=$shim timeout 120 \
      "$gpfq" sweep --output "$file" "$grid" 2>&1)
  else
    out=$(timeout 120 "$mpiexec" -n "$ranks" --oversubscribe -x LD_PRELOAD="$shim" \
      -x NO_MEMORY_AT="$k" -x NO_MEMORY_ONCE="$once" -x NO_MEMORY_RANK="$rank" \
      "$gpfq" sweep --output "$file" "$grid" 2>&1)
  fi
  rc=$?
}

# oom_verdict WHAT FILE: what a run out of memory must leave, as lines in the
# file $problems: an exit of 0, 1 or 2 (no signal, no hang), a message naming
# the memory when it fails, a file that reads, the base file's rows unchanged,
# and every row done with the results of the run with memory (a task that ran
# out of memory is not recorded, and the run exits 1); after an exit 0, all of
# them. Counts the runs in which the shim failed an allocation in $hit.
problems=
hit=0
oom_verdict() {
  local what=$1 file=$2
  grep -Eq "^no_memory: counted [0-9]+ allocation\(s\), failed [1-9]" <<<"$out" && hit=$((hit + 1))
  {
    ! grep -q "not recorded: a rerun retries it" <<<"$out" || [ "$rc" -eq 1 ] ||
      echo "$what: a task not recorded, and exit $rc"
    [ "$rc" -le 2 ] || echo "$what: exit $rc: $(tail -n 3 <<<"$out" | tr '\n' '|')"
    ! grep -Eq "Segmentation|received signal|Assertion|Aborted|AddressSanitizer" <<<"$out" ||
      echo "$what: crashed: $(grep -E "signal|Assertion" <<<"$out" | head -n 2 | tr '\n' '|')"
    [ "$rc" -eq 0 ] || grep -Eq "gpfq sweep: .*(out of memory|memory ran out)" <<<"$out" ||
      echo "$what: exit $rc without a word of memory: $(grep "gpfq sweep" <<<"$out" | tr '\n' '|')"
    if "$python" "$rows_py" results "$file" >got.txt 2>/dev/null; then
      subset base.txt got.txt || echo "$what: rows of the base file changed or lost"
      subset got.txt ref.txt || echo "$what: a row that is not the result of the run with memory"
      [ "$rc" -ne 0 ] || cmp -s got.txt ref.txt || echo "$what: exit 0 without every result"
      local id
      for id in $(sed -n 's/^gpfq sweep: task \([0-9a-f]*\) finished, but its result is not saved$/\1/p' <<<"$out"); do
        ! grep -q "^$id " got.txt || echo "$what: task $id is in the file, said not to be saved"
      done
    else
      echo "$what: the results file does not read"
    fi
  } >>"$problems"
}

# none_in DESCRIPTION: checks that $problems is empty, and shows it if not
none_in() {
  check "$1: $(wc -l <"$problems") problem(s)" [ ! -s "$problems" ]
  head -n 20 "$problems"
}

part_no_memory() {
  shim=${GPFQ_NO_MEMORY:?set GPFQ_NO_MEMORY to the path of the no_memory shim}
  task_ids "$grid" >ids
  # the results with memory, and a base file that holds the 2-bit tasks
  expect 0 "12 tasks, 0 already done" -- sweep 0 --output ref.h5 "$grid"
  check "with memory: every task once, all done" \
    "$python" "$rows_py" check ref.h5 ids --results ref.txt
  expect 0 "4 tasks, 0 already done" -- sweep 0 -b 2 --output base.h5 "$grid"
  "$python" "$rows_py" results base.h5 >base.txt
  check "base file: 4 rows" [ "$(wc -l <base.txt)" -eq 4 ]

  # how many allocations gpfq makes when none fails: the shim's count
  cp base.h5 count.h5
  expect 0 "12 tasks, 4 already done, 8 to run" -- \
    env LD_PRELOAD="$shim" "$gpfq" sweep --output count.h5 "$grid"
  local total
  total=$(counted)
  check "the shim counts gpfq's allocations (${total:-none})" [ "${total:-0}" -gt 100 ]
  [ "${total:-0}" -gt 100 ] || return

  # memory out from the k-th allocation on: every k of the set-up, then a
  # spread over the tasks; every fourth file is then resumed with memory
  problems=sticky.txt
  : >"$problems"
  local k n=0 resumed=0 failed_runs=0
  hit=0
  for k in $(seq 0 59) $(seq 60 "$((total / 120 + 1))" "$((total + 10))"); do
    cp base.h5 run.h5
    oom_run run.h5 "$k"
    oom_verdict "from allocation $k" run.h5
    n=$((n + 1))
    [ "$rc" -ne 0 ] && failed_runs=$((failed_runs + 1))
    [ $((n % 4)) -eq 0 ] || continue
    resumed=$((resumed + 1))
    "$gpfq" sweep --output run.h5 "$grid" >/dev/null 2>&1 ||
      echo "from allocation $k, resumed with memory: exit $?" >>"$problems"
    "$python" "$rows_py" check run.h5 ids --results got.txt >/dev/null && cmp -s got.txt ref.txt ||
      echo "from allocation $k, resumed with memory: not the results of the run with memory" \
        >>"$problems"
  done
  none_in "$n sweeps out of memory from an allocation on ($failed_runs failed), $resumed resumed"
  check "most of them fail" [ "$failed_runs" -gt $((n / 2)) ]
  check "the shim failed allocations in $hit of them" [ "$hit" -gt $((n / 2)) ]

  # one allocation failing, the rest going through: the run takes its
  # fallback, or fails and leaves the task to a rerun
  problems=once.txt
  : >"$problems"
  n=0 hit=0
  for k in $(seq 0 "$((total / 40 + 1))" "$total"); do
    cp base.h5 run.h5
    oom_run run.h5 "$k" 1
    oom_verdict "allocation $k alone" run.h5
    n=$((n + 1))
  done
  none_in "$n sweeps with one failed allocation"
  check "the shim failed an allocation in $hit of them" [ "$hit" -gt $((n / 2)) ]

  # on two ranks, each running out at its own k-th allocation; then only one
  # rank, through the allocations before the file opens (the other ranks must
  # hear of it rather than wait)
  problems=ranks.txt
  : >"$problems"
  n=0 hit=0
  for k in 0 20 40 60 80 100 $((total / 4)) $((total / 2)) $((3 * total / 4)); do
    cp base.h5 run.h5
    oom_run run.h5 "$k" 0 2
    oom_verdict "2 ranks, from allocation $k" run.h5
    n=$((n + 1))
  done
  for k in $(seq 26 3 44); do
    for rank in 0 1; do
      cp base.h5 run.h5
      oom_run run.h5 "$k" 1 2 "$rank"
      oom_verdict "2 ranks, allocation $k of rank $rank alone" run.h5
      n=$((n + 1))
    done
  done
  none_in "$n sweeps on 2 ranks out of memory"
  check "the shim failed allocations in $hit of them" [ "$hit" -gt $((n / 2)) ]

  # gpfq quantize: fails with a message, or saves the model of the run with
  # memory (its settings included) and its log row
  problems=quantize.txt
  : >"$problems"
  local q=(quantize -model model.h5 -ds fashion-mnist --data-dir data -b 3 -bs 64)
  expect 0 "saved +q_ref.h5" -- "$gpfq" "${q[@]}" --out q_ref.h5
  expect 0 "saved +q_count.h5" -- env LD_PRELOAD="$shim" "$gpfq" "${q[@]}" --out q_count.h5
  total=$(counted)
  check "quantize: the shim counts its allocations (${total:-none})" [ "${total:-0}" -gt 100 ]
  n=0
  for k in $(seq 0 "$((${total:-0} / 60 + 1))" "$((${total:-0} + 5))"); do
    rm -f q.h5 q.csv
    out=$(NO_MEMORY_AT=$k LD_PRELOAD=$shim timeout 120 "$gpfq" "${q[@]}" --out q.h5 --log q.csv 2>&1)
    rc=$?
    n=$((n + 1))
    {
      [ "$rc" -le 2 ] || echo "quantize from allocation $k: exit $rc"
      [ "$rc" -eq 0 ] || grep -Eq "gpfq quantize: .*out of memory" <<<"$out" ||
        echo "quantize from allocation $k: exit $rc without a word of memory"
      if [ "$rc" -eq 0 ]; then
        h5diff q_ref.h5 q.h5 >/dev/null || echo "quantize from allocation $k: another model saved"
        [ -s q.csv ] || echo "quantize from allocation $k: no log row"
      fi
    } >>"$problems"
  done
  none_in "$n quantize runs out of memory from an allocation on"
}

case $part in
ranks) part_ranks ;;
resume) part_resume ;;
errors) part_errors ;;
errors_mpi)
  errors_ranks=2
  part_errors
  ;;
no_threads) part_no_threads ;;
no_memory) part_no_memory ;;
*)
  echo "unknown part '$part'"
  exit 2
  ;;
esac
finish "sweep $part"
