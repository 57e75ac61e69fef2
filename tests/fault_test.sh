#!/usr/bin/env bash
# Faults injected into `gpfq sweep` (tests/fault/grid.yaml: 336 tasks of a few
# milliseconds on the small LeNet fixture). Each case checks for a clear
# message, a non-zero exit where the run cannot go on, that no result saved
# before the fault is lost, and prints what survived:
#
#   1. full disk      the results file on a small tmpfs that fills mid-sweep
#   2. file events    mid-sweep, the results file made immutable (chattr +i),
#                     removed, moved away, or its directory and itself made
#                     read-only (no effect on an open file, as root or not)
#   3. truncation     a results file cut at 10%, 50%, 90% and 5 bytes short,
#                     then resumed, then restarted with --fresh
#   4. NaN and Inf    models with finite but huge weights (1e38)
#   5. data           the data directory missing before the start, and
#                     removed mid-sweep (the data is in memory by then)
#   6. lost rank      SIGKILL to rank 1 of `mpirun -n 2`
#
# Mid-sweep events are injected while every process of the sweep is stopped
# (SIGSTOP), after the file has a few rows and before the grid is done, so
# that they do not depend on timing. Cases 1 and 2 (chattr) need root; they
# are skipped otherwise.
#
#   fault_test.sh GPFQ_BIN FIXTURES_DIR TEST_DATA_BIN PYTHON MPIEXEC
if [ $# -ne 5 ]; then
  echo "usage: $0 GPFQ_BIN FIXTURES_DIR TEST_DATA_BIN PYTHON MPIEXEC"
  exit 2
fi
gpfq=$(realpath "$1") fixtures=$(realpath "$2") test_data=$(realpath "$3")
python=$4 mpiexec=$5
# shellcheck source=sweep/lib.sh
. "$(dirname "$0")/sweep/lib.sh"
fault_dir=$(cd "$(dirname "$0")/fault" && pwd)
faults_py=$fault_dir/faults.py
grid=$fault_dir/grid.yaml
started=$(date +%s)

# the tmpfs and the immutable flag must not outlive the test (rm -rf would fail)
mounted=
fault_cleanup() {
  chattr -i "$tmp"/*/*.h5 2>/dev/null
  [ -n "$mounted" ] && umount "$mounted"
  cleanup
}
trap fault_cleanup EXIT
trap 'exit 1' TERM INT HUP # a timeout's signal must run the cleanup too

setup "$tmp"
cd "$tmp" || exit 1
task_ids "$grid" >ids
total=$(wc -l <ids)
if [ "$total" -ne 336 ]; then
  echo "FAIL: grid.yaml should have 336 tasks, the dry run lists $total"
  exit 1
fi
root=0
[ "$(id -u)" -eq 0 ] && root=1

opens() { h5dump -H "$1" >/dev/null; }

# survived WHAT N: prints what survived a fault
survived() { echo "   SURVIVED ($1): $2"; }

# freeze SID / thaw SID: stop or continue every live process of the session
freeze() {
  # shellcheck disable=SC2046
  kill -STOP $(live_in_session "$1") 2>/dev/null
}
thaw() {
  # shellcheck disable=SC2046
  kill -CONT $(live_in_session "$1") 2>/dev/null
}

# start_frozen LOG FILE ROWS COMMAND...: starts COMMAND (a sweep writing FILE)
# in its own session and stops all of it once FILE has ROWS rows; sets $bg and
# $at (rows when stopped). Fails when the sweep ends first or is already done.
at=0
start_frozen() {
  local log=$1 file=$2 n=$3
  shift 3
  start_bg "$log" "$@"
  if ! wait_rows "$file" "$n" "$bg"; then
    echo "FAIL: $* ended or stalled before $n rows; its output:"
    sed 's/^/    /' "$log"
    failures=$((failures + 1))
    return 1
  fi
  freeze "$bg"
  at=$(rows "$file")
  if [ "$at" -ge "$total" ]; then
    echo "FAIL: the sweep finished ($at rows) before the fault could be injected"
    failures=$((failures + 1))
    return 1
  fi
  echo "   stopped the sweep at $at rows"
}

# resumes FILE LOG SURVIVORS [RANKS]: a rerun into FILE completes the grid
# without redoing any row of the stamps file SURVIVORS
resumes() {
  local file=$1 log=$2 stamps=$3 n=${4:-0} have
  have=$(wc -l <"$stamps")
  expect 0 "336 tasks, $have already done, $((total - have)) to run" -- \
    sweep "$n" --output "$file" "$grid"
  echo "$out" >"$log"
  check "$file: after the rerun, all $total tasks, each once, all done" \
    "$python" "$rows_py" check "$file" ids --stamps "$stamps.final"
  check "$file: the $have surviving rows were not redone" subset "$stamps" "$stamps.final"
  check "$file: /layers matches /results" "$python" "$faults_py" layers "$file"
}

# ---- 1. a full disk ----

# full_disk NAME RANKS: the grid on RANKS ranks (0: alone) into full/NAME.h5
# until the disk is full; then the file, copied off, is checked and resumed
full_disk() {
  local name=$1 n=$2 rows_done
  expect 1 "full/$name.h5: cannot flush the results: No space left on device" -- \
    sweep "$n" --output "full/$name.h5" "$grid"
  echo "$out" >"$name.log"
  check "$name: the stop and the way to resume are printed" \
    grep -q "stopped early: no result after that error is saved" "$name.log"
  check "$name: a task that could not be written is reported as not saved" \
    grep -Eq "task [0-9a-f]{16} finished, but its result is not saved" "$name.log"
  cp "full/$name.h5" "roomy/$name.h5"
  rm "full/$name.h5"
  check "$name: h5dump opens the file copied off the full disk" opens "roomy/$name.h5"
  check "$name: its rows are done, each task once" \
    "$python" "$rows_py" check "roomy/$name.h5" --stamps "$name.stamps"
  rows_done=$(wc -l <"$name.stamps")
  check "$name: stopped mid-sweep ($rows_done of $total rows)" \
    [ "$rows_done" -gt 0 -a "$rows_done" -lt "$total" ]
  check "$name: as many rows as results reported done" \
    [ "$(grep -Ec '^\[[0-9]+/' "$name.log")" -eq "$rows_done" ]
  survived "$name" "$rows_done of $total rows, readable once copied off the full disk"
  resumes "roomy/$name.h5" "${name}_resume.log" "$name.stamps" "$n"
}

case_full_disk() {
  echo "== 1. full disk: the results file on a 300 kB tmpfs"
  if [ "$root" -eq 0 ]; then
    echo "skip: mounting a tmpfs needs root"
    return
  fi
  mkdir -p full roomy
  if ! err=$(mount -t tmpfs -o size=300k tmpfs full 2>&1); then
    echo "FAIL: cannot mount a tmpfs: $err"
    failures=$((failures + 1))
    return
  fi
  mounted=$tmp/full
  full_disk alone 0
  full_disk mpi2 2
  umount full && mounted=
}

# ---- 2. the results file made read-only, removed or moved mid-sweep ----
case_file_events() {
  echo "== 2. the results file made read-only, removed or moved mid-sweep"
  mkdir -p events
  local f
  # 2a. chattr +i: writes through the open descriptor fail with EPERM (a chmod
  # does nothing to an open file, even for users other than root)
  f=events/immutable.h5
  if [ "$root" -eq 0 ] || ! command -v chattr >/dev/null; then
    echo "skip: chattr +i needs root and chattr"
  elif start_frozen immutable.log "$f" 3 "$gpfq" sweep --output "$f" "$grid"; then
    cp "$f" immutable_before.h5
    if chattr +i "$f" 2>/dev/null; then
      thaw "$bg"
      wait_exit "$bg" 120
      check "immutable: exit 1 (got $rc)" [ "$rc" -eq 1 ]
      check "immutable: says the flush failed: Operation not permitted" \
        grep -q "$f: cannot flush the results: Operation not permitted" immutable.log
      check "immutable: the file is as it was when made immutable" cmp -s immutable_before.h5 "$f"
      chattr -i "$f"
      check "immutable: its rows are done, each once" \
        "$python" "$rows_py" check "$f" --stamps immutable.stamps
      survived "immutable" "all $(wc -l <immutable.stamps) rows written before chattr +i"
      resumes "$f" immutable_resume.log immutable.stamps
    else
      thaw "$bg"
      wait_exit "$bg" 120
      echo "skip: chattr +i is not supported on $tmp's file system"
    fi
  fi

  # 2b. removed: rank 0 notices before its next write, writes the file's
  # content (as of its last flush) back to the path and stops
  f=events/removed.h5
  if start_frozen removed.log "$f" 3 "$gpfq" sweep --output "$f" "$grid"; then
    rm "$f"
    thaw "$bg"
    wait_exit "$bg" 120
    check "removed: exit 1 (got $rc)" [ "$rc" -eq 1 ]
    check "removed: says the file was removed and written back" \
      grep -Eq "$f was removed during the sweep; the [0-9]+ results it held are written back" \
      removed.log
    check "removed: the file is back, its rows done, each once" \
      "$python" "$rows_py" check "$f" --stamps removed.stamps
    check "removed: no row written before the removal is lost ($at)" \
      [ "$(wc -l <removed.stamps)" -ge "$at" ]
    survived "removed" "$(wc -l <removed.stamps) rows, written back to the path"
    resumes "$f" removed_resume.log removed.stamps
  fi

  # 2c. moved away: the rows are in the moved file; the sweep stops
  f=events/moved.h5
  if start_frozen moved.log "$f" 3 "$gpfq" sweep --output "$f" "$grid"; then
    mv "$f" events/moved_away.h5
    thaw "$bg"
    wait_exit "$bg" 120
    check "moved: exit 1 (got $rc)" [ "$rc" -eq 1 ]
    check "moved: says the file was moved" \
      grep -q "$f was moved or replaced during the sweep; the results are in the moved file" \
      moved.log
    check "moved: nothing is created at the old path" [ ! -e "$f" ]
    check "moved: the moved file's rows are done, each once" \
      "$python" "$rows_py" check events/moved_away.h5 --stamps moved.stamps
    survived "moved" "$(wc -l <moved.stamps) rows, in the moved file"
  fi

  # 2d. read-only directory and file: the open file is written on; completes
  f=events/readonly.h5
  if start_frozen readonly.log "$f" 3 "$gpfq" sweep --output "$f" "$grid"; then
    chmod 0444 "$f"
    chmod 0555 events
    thaw "$bg"
    wait_exit "$bg" 120
    chmod 0755 events
    check "read-only: the sweep completes (exit $rc)" [ "$rc" -eq 0 ]
    check "read-only: all $total tasks, each once, all done" \
      "$python" "$rows_py" check "$f" ids
    survived "read-only" "$(rows "$f") of $total rows: chmod does not reach an open file"
  fi
}

# ---- 3. a truncated results file ----
case_truncated() {
  echo "== 3. a results file cut short, then resumed"
  local whole=events/removed.h5 size cut name pad eoa_at counts
  if [ ! -f "$whole" ] || [ "$(rows "$whole")" -ne "$total" ]; then
    "$gpfq" sweep --output whole.h5 "$grid" >/dev/null 2>&1
    whole=whole.h5
  fi
  size=$(stat -c %s "$whole")
  eoa_at=$("$python" "$faults_py" eoa "$whole")
  check "the complete file ends where its superblock says ($size)" [ "$eoa_at" = "$size" ]
  for cut in 10 50 90 short; do
    name=cut$cut.h5
    if [ "$cut" = short ]; then
      head -c $((size - 5)) "$whole" >"$name"
    else
      head -c $((size * cut / 100)) "$whole" >"$name"
    fi
    cp "$name" "$name.orig"
    expect 2 "$name: HDF5 cannot open it: the file is truncated or corrupt; move it away, or use --fresh" \
      -- sweep 0 --output "$name" "$grid"
    check "cut $cut: nothing computed" lacks "^(\[[0-9]+/|finished)" "$out"
    check "cut $cut: the file is left as it was" cmp -s "$name.orig" "$name"
    if h5dump -H "$name" >/dev/null 2>&1; then
      echo "   cut $cut: h5dump opens the truncated file"
    else
      echo "   cut $cut: h5dump cannot open the truncated file either"
    fi
    # what is left: padded back to the recorded end, HDF5 opens it again
    pad=pad$cut.h5
    cp "$name" "$pad"
    truncate -s "$size" "$pad"
    counts=$("$python" "$faults_py" same "$whole" "$pad" 2>/dev/null)
    if [ -n "$counts" ]; then
      survived "cut $cut" "nothing readable as is; padded with zeros to the recorded end, \
${counts% *} of $total rows read back intact (${counts#* } damaged)"
    else
      survived "cut $cut" "nothing readable, even padded back to the recorded end"
    fi
    if [ "$cut" = short ]; then
      check "cut short by 5 bytes and padded back: every row intact" [ "$counts" = "$total 0" ]
    fi
  done
  # --fresh moves the cut file aside (kept, printed) and runs the grid again
  expect 0 "--fresh: moved the old results to cut50.h5.old-" -- \
    sweep 0 --fresh --output cut50.h5 "$grid"
  check "--fresh: the grid runs from the start" \
    grep -q "336 tasks, 0 already done, 336 to run" <<<"$out"
  check "--fresh: all $total tasks, each once, all done" "$python" "$rows_py" check cut50.h5 ids
  check "--fresh: the cut file is kept unchanged" cmp -s cut50.h5.orig cut50.h5.old-*
  # the same for a file cut at its first bytes, on a part of the grid
  expect 0 "--fresh: moved the old results to cut10.h5.old-" -- \
    sweep 0 --fresh -b 2 --output cut10.h5 "$grid"
  check "--fresh on cut10.h5: done" "$python" "$rows_py" check cut10.h5
}

# ---- 4. numbers that go NaN or Inf ----
case_nan() {
  echo "== 4. NaN and Inf: finite weights of 1e38"
  local job=$fault_dir/huge.yaml st
  "$python" "$faults_py" scale "$fixtures/model_lenet_small.h5" huge_fc2.h5 0009 1e38 &&
    "$python" "$faults_py" scale "$fixtures/model_lenet_small.h5" huge_conv1.h5 0000 1e38 ||
    failures=$((failures + 1))
  # fc2 scaled: the float model is finite, some quantized ones overflow
  ln -sf huge_fc2.h5 huge.h5
  expect 0 "finished  [1-9][0-9]* done, [1-9][0-9]* failed of 8 pending" -- \
    sweep 0 --output huge_fc2_results.h5 "$job"
  st=$("$python" "$faults_py" statuses huge_fc2_results.h5)
  sed 's/^/   /' <<<"$st"
  check "fc2: 8 rows" [ "$(wc -l <<<"$st")" -eq 8 ]
  check "fc2: every failure says the numbers are not finite" \
    [ -z "$(grep " failed " <<<"$st" | grep -Ev "not finite|step is inf")" ]
  check "fc2: a quantized model's outputs overflow and its task fails" \
    grep -q " failed the quantized model's outputs are not finite (NaN or Inf) on test image" \
    <<<"$st"
  check "fc2: a GPFQ task fails on the non-finite quantization error" \
    grep -q " failed layer 'fc2': the quantization error is not finite" <<<"$st"
  check "fc2: done rows have a finite top-1 and top-5" \
    "$python" "$faults_py" finite huge_fc2_results.h5 quant_top1 quant_top5
  expect 0 "failed tasks:" -- "$gpfq" report --top 10 huge_fc2_results.h5
  local id missing=0
  for id in $(awk '$2 == "failed" { print $1 }' <<<"$st"); do
    grep -q "^  $id .*not finite\|^  $id .*step is inf" <<<"$out" || missing=$((missing + 1))
  done
  check "fc2: gpfq report lists every failed task with its message" [ "$missing" -eq 0 ]
  survived "NaN/Inf, fc2" "$(grep -c " done " <<<"$st") done and \
$(grep -c " failed " <<<"$st") failed rows, each with its message"

  # conv1 scaled: the float model itself overflows: a warning, every task fails
  ln -sf huge_conv1.h5 huge.h5
  expect 0 "warning: the float model's outputs are not finite \(NaN or Inf\)" -- \
    sweep 0 --output huge_conv1_results.h5 "$job"
  check "conv1: all 8 tasks failed, the sweep went through them" \
    grep -q "finished  0 done, 8 failed of 8 pending" <<<"$out"
  st=$("$python" "$faults_py" statuses huge_conv1_results.h5)
  check "conv1: 8 failed rows, each saying why" \
    [ "$(grep -Ec " failed .*(not finite|step is inf)" <<<"$st")" -eq 8 ]
}

# ---- 5. the data directory vanishes ----
case_data() {
  echo "== 5. the data directory vanishes"
  cp -r data data_gone
  sed 's#^  data_dir: .*#  data_dir: data_gone#' "$grid" >gone.yaml
  rm -r data_gone
  expect 1 "data directory data_gone: No such file or directory" -- \
    sweep 0 --output gone.h5 gone.yaml
  check "data missing at the start: no results file created" [ ! -e gone.h5 ]
  # removed mid-sweep: every rank loaded it before the first task
  cp -r data data_gone
  if start_frozen gone_mid.log gone_mid.h5 3 "$gpfq" sweep --output gone_mid.h5 gone.yaml; then
    rm -r data_gone
    thaw "$bg"
    wait_exit "$bg" 120
    check "data removed mid-sweep: the sweep completes (exit $rc)" [ "$rc" -eq 0 ]
    check "data removed mid-sweep: all $total tasks, each once, all done" \
      "$python" "$rows_py" check gone_mid.h5 ids
    survived "data removed mid-sweep" "$(rows gone_mid.h5) of $total rows: the data is in memory"
  fi
}

# ---- 6. SIGKILL to one worker rank ----
case_rank() {
  echo "== 6. SIGKILL to rank 1 of mpirun -n 2"
  local p r victim='' n
  start_frozen rank.log rank.h5 3 "$mpiexec" -n 2 --oversubscribe "$gpfq" sweep \
    --output rank.h5 "$grid" || return
  for p in $(live_in_session "$bg"); do
    r=$(tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
    [ "$r" = 1 ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = gpfq ] && victim=$p
  done
  check "rank 1 found (pid ${victim:-none})" [ -n "$victim" ]
  [ -n "$victim" ] && kill -KILL "$victim"
  thaw "$bg"
  wait_exit "$bg" 120
  echo "   mpirun exit status $rc"
  check "lost rank: mpirun exits non-zero (got $rc)" [ "$rc" -ne 0 -a "$rc" -ne 999 ]
  if gone "$bg" 30; then
    echo "ok: lost rank: no process of the sweep is left"
  else
    echo "FAIL: lost rank: processes of the sweep survive"
    failures=$((failures + 1))
    kill_session "$bg"
  fi
  grep -E "exited on signal|noticed" rank.log | sed 's/^/   mpirun: /'
  check "lost rank: h5dump opens the file" opens rank.h5
  check "lost rank: its rows are done, each once" \
    "$python" "$rows_py" check rank.h5 --stamps rank.stamps
  n=$(wc -l <rank.stamps)
  check "lost rank: no row written before the kill is lost ($at <= $n < $total)" \
    [ "$n" -ge "$at" -a "$n" -lt "$total" ]
  survived "lost rank" "$n of $total rows"
  resumes rank.h5 rank_resume.log rank.stamps 2
}

case_full_disk
case_file_events
case_truncated
case_nan
case_data
case_rank
echo "runtime $(($(date +%s) - started)) s"
finish "fault"
