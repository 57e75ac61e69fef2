#!/usr/bin/env bash
# The shipped Slurm scripts (jobs/slurm/) on a real single-node Slurm cluster
# that this test starts for itself: a private munged, slurmctld and slurmd with
# a configuration, keys, sockets, state and logs in a temporary directory, on
# free ports (nothing of the machine's own Slurm or munge is used or touched).
#
#   run_slurm_test.sh GPFQ_BIN TEST_DATA_BIN SOURCE_DIR
#
# It checks, on a tiny data set and model:
#   - sweep_mpirun.sbatch (and sweep_srun.sbatch when `srun --mpi=list` has
#     pmix): one MPI job of 2 ranks completes the grid;
#   - sweep_array.sbatch as an array of 3 shards plus merge.sbatch behind it
#     (--dependency=afterok): every task once in the merged file; and as an
#     array with more shards than tasks (empty shards run nothing);
#   - stop and resume: a sweep stopped by `scancel --batch --signal=USR1`
#     (mpirun script: the batch shell traps and forwards) or by
#     `scancel --signal=USR1` (srun script: straight to the ranks) exits with
#     code 3, requeues itself and the rerun completes the grid;
#   - the time limit: `--time=2 --signal=B:USR1@60` (mpirun script) and
#     `--signal=USR1@60` (srun script) stop a sweep before its limit, with
#     code 3, and the requeued run resumes it.
# Slurm must be installed (slurm-wlm and munge: scripts/setup.sh) and the test
# run as root; if the cluster cannot start, the test fails and says why. Every
# daemon it started is stopped on exit, whatever happens.
#
# GPFQ_SLURM_TEST_BUDGET (seconds, default 540) bounds the whole run, below
# ctest's timeout; GPFQ_SLURM_KEEP=1 keeps the temporary directory.
set -uo pipefail

if [ $# -ne 3 ]; then
  echo "usage: $0 GPFQ_BIN TEST_DATA_BIN SOURCE_DIR" >&2
  exit 2
fi
gpfq=$(realpath "$1") test_data=$(realpath "$2") src=$(realpath "$3")
scripts=$src/jobs/slurm
started=$(date +%s)
deadline=$((started + ${GPFQ_SLURM_TEST_BUDGET:-540}))

say() { echo "[$(($(date +%s) - started))s] $*"; }
failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
ok() { echo "ok: $*"; }

# ---- prerequisites: missing ones are failures, not skips ----
missing=()
for tool in munged mungekey slurmctld slurmd sbatch squeue scontrol scancel sinfo srun mpirun \
  h5dump; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "FAIL: Slurm test: missing ${missing[*]}: install slurm-wlm, munge (scripts/setup.sh)"
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "FAIL: Slurm test: slurmd must run as root to start jobs; run the test as root"
  exit 1
fi

# A fixed prefix under /tmp: munge's socket path must stay short and every
# directory above it must be searchable by all.
tmp=$(mktemp -d /tmp/gpfq-slurm.XXXXXX)
chmod 755 "$tmp"
mkdir -p "$tmp/munge-key" "$tmp/run" "$tmp/state" "$tmp/spool" "$tmp/log" "$tmp/out" "$tmp/work"
chmod 700 "$tmp/munge-key"
conf=$tmp/slurm.conf
export SLURM_CONF=$conf
host=$(hostname -s)
pids=() # daemons, in start order

# Everything still running that belongs to this test's cluster: job and step
# processes carry SLURM_CONF=$conf in their environment (sbatch passes ours on,
# slurmd passes its own to slurmstepd).
leftovers() {
  local p pid
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ "$pid" = $$ ] && continue
    [ "$pid" = "${BASHPID:-$$}" ] && continue
    if { tr '\0' '\n' <"$p/environ"; } 2>/dev/null | grep -qxF "SLURM_CONF=$conf"; then echo "$pid"; fi
  done
}

stop_pid() { # pid: TERM, then KILL after 10 s
  local pid=$1 i
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  kill -KILL "$pid" 2>/dev/null
}

cleanup() {
  local rc=$? i p
  trap - EXIT INT TERM
  if [ -f "$conf" ] && ((${#pids[@]})) && kill -0 "${pids[-1]}" 2>/dev/null; then
    # cancel every job, give the steps a moment to end cleanly
    scancel --quiet --user="$(id -un)" 2>/dev/null
    for ((i = 0; i < 30; i++)); do
      [ -z "$(squeue -h 2>/dev/null)" ] && break
      sleep 1
    done
  fi
  # daemons in reverse order: slurmd, slurmctld, munged
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[i]}"; done
  for p in $(leftovers); do kill -KILL "$p" 2>/dev/null; done
  if [ "${GPFQ_SLURM_KEEP:-0}" = 1 ]; then
    echo "kept $tmp"
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "interrupted"; exit 1' INT TERM

show_logs() {
  local f
  for f in "$tmp"/log/*; do
    echo "---- $f (last 25 lines)"
    tail -n 25 "$f"
  done
}

abort() { # a failure the rest cannot go on from
  echo "FAIL: $*"
  show_logs
  exit 1
}

time_left() { echo $((deadline - $(date +%s))); }

# ---- munge: a private daemon with its own key and socket ----
key=$tmp/munge-key/munge.key
if ! mungekey --create --keyfile="$key" 2>"$tmp/log/mungekey.err"; then
  dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
fi
chmod 400 "$key"
sock=$tmp/run/munge.sock
munged --foreground --socket="$sock" --key-file="$key" --pid-file="$tmp/run/munged.pid" \
  --log-file="$tmp/log/munged.log" --seed-file="$tmp/run/munged.seed" \
  >"$tmp/log/munged.out" 2>&1 &
pids+=($!)
for ((i = 0; i < 100; i++)); do
  munge -S "$sock" -n 2>/dev/null | unmunge -S "$sock" >/dev/null 2>&1 && break
  kill -0 "${pids[0]}" 2>/dev/null || break
  sleep 0.2
done
munge -S "$sock" -n 2>/dev/null | unmunge -S "$sock" >/dev/null 2>&1 ||
  abort "munged did not start (a credential could not be encoded and decoded)"
say "munged running (pid ${pids[0]})"

# ---- slurm.conf: one node, this host, free ports ----
port_free() { ! (: <>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; } # nothing listens there
# below the kernel's ephemeral range: a port there can be the local end of another
# process's connection (mpirun's, in a parallel ctest run), which no listen check sees
# and which makes slurmd's bind fail
pick_ports() {
  local p low=32768 span
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || low=32768
  span=$((low - 2 - 20000))
  [ "$span" -ge 1000 ] || span=30000 # a range that starts low: fall back to chance
  for ((tries = 0; tries < 200; tries++)); do
    p=$((20000 + RANDOM % span))
    if port_free "$p" && port_free $((p + 1)); then
      echo "$p"
      return 0
    fi
  done
  return 1
}
port=$(pick_ports) || abort "no two free TCP ports"
cat >"$conf" <<EOF
ClusterName=gpfqtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again
# (120 s by default)
AuthInfo=socket=$sock,cred_expire=10
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/run/slurmctld.pid
SlurmdPidFile=$tmp/run/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$tmp/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$tmp/log/jobcomp.txt
MpiDefault=none
ReturnToService=2
MinJobAge=3600
KillWait=10
InactiveLimit=0
MessageTimeout=30
SlurmdTimeout=300
MailProg=/bin/true
# 6 CPUs whatever the machine has, so that the stop and time-limit jobs all
# run side by side (the work is small; their waits overlap)
SlurmdParameters=config_overrides
NodeName=$host NodeAddr=127.0.0.1 CPUs=6 State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
: >"$tmp/plugstack.conf"

slurmctld -D -c -f "$conf" >"$tmp/log/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$conf" >"$tmp/log/slurmd.out" 2>&1 &
pids+=($!)

# the node must come up idle
state=
for ((i = 0; i < 120; i++)); do
  state=$(sinfo -h -n "$host" -o %T 2>/dev/null)
  [ "$state" = idle ] && break
  kill -0 "${pids[1]}" 2>/dev/null || abort "slurmctld exited"
  kill -0 "${pids[2]}" 2>/dev/null || abort "slurmd exited"
  sleep 1
done
[ "$state" = idle ] || abort "node $host is not idle after 120 s (state '${state:-none}')"
say "slurmctld and slurmd running (ports $port, $((port + 1))), node $host idle"

pmix=0
if srun --mpi=list 2>&1 | grep -qw pmix; then pmix=1; fi
say "srun --mpi=pmix: $([ $pmix = 1 ] && echo available || echo 'NOT available: sweep_srun.sbatch is not tested')"

# ---- data and job files ----
"$test_data" --write-idx "$tmp/data" 300 >/dev/null || abort "test_data --write-idx failed"
export GPFQ=$gpfq
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# write_job NAME SCALARS EVAL_IMAGES [BITS] [CALIBRATION_IMAGES]: a job file with its own results
# file
write_job() {
  cat >"$tmp/work/$1.yaml" <<EOF
model: $src/tests/fixtures/model_lenet_small.h5
dataset: {name: fashion-mnist, data_dir: $tmp/data}
calibration: {images: ${5:-64}}
output: $tmp/work/results/$1.h5
eval: {limit: $3}
grid:
  method: [gpfq, msq]
  bits: ${4:-[2, 3, 4]}
  scalar: $2
EOF
}
write_job small "[1.0, 1.5]" 50                                # 12 tasks
write_job array "{start: 1.0, stop: 2.0, step: 0.25}" 50      # 30 tasks
write_job sparse "[1.0]" 50                                    # 6 tasks
write_job stop_b "{start: 1.0, stop: 2.0, step: 0.008}" 300   # 756 tasks
write_job stop_s "{start: 1.0, stop: 2.0, step: 0.008}" 300
# the time-limit sweeps must outlast the 60 s before their signal, and a job holds at most 20000
# tasks: 19992, of 256 calibration images (11100 tasks/min on one rank here, so 108 s alone;
# 12006 tasks of 64 images once took 40 s)
write_job limit_b "{start: 1.0, stop: 2.6655, step: 0.001}" 300 "[2, 3, 4, 5, 6, 7]" 256
write_job limit_s "{start: 1.0, stop: 2.6655, step: 0.001}" 300 "[2, 3, 4, 5, 6, 7]" 256

# submit NAME SCRIPT [sbatch options] -- [script arguments]: prints the job id;
# the job file is NAME.yaml (JOBFILE=OTHER picks OTHER.yaml), the output NAME-ID.out
submit() {
  local name=$1 script=$2 opts=() id
  shift 2
  while (($#)) && [ "$1" != -- ]; do
    opts+=("$1")
    shift
  done
  shift
  id=$(JOB=$tmp/work/${JOBFILE:-$name}.yaml sbatch --parsable --chdir="$tmp/work" \
    --output="$tmp/out/$name-%j.out" "${opts[@]}" "$scripts/$script" "$@") || return 1
  echo "${id%%;*}"
}

field() { # JOBID FIELD: a field of `scontrol show job`
  scontrol show job "$1" 2>/dev/null | grep -oE "(^| )$2=[^ ]*" | head -1 | cut -d= -f2
}

finished() { # JOBID: true once the job has ended for good
  case $(field "$1" JobState) in
  COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE | \
    PREEMPTED) return 0 ;;
  *) return 1 ;;
  esac
}

wait_jobs() { # JOBID...: until all have ended, or the budget runs out
  local j
  for j in "$@"; do
    while ! finished "$j"; do
      if [ "$(time_left)" -le 0 ]; then
        fail "job $j still $(field "$j" JobState) when the time budget ran out"
        return 1
      fi
      sleep 2
    done
  done
}

wait_until() { # DESCRIPTION COMMAND...: until COMMAND succeeds, or the budget runs out
  local what=$1
  shift
  until "$@"; do
    if [ "$(time_left)" -le 0 ]; then
      fail "timed out waiting for $what"
      return 1
    fi
    sleep 0.5
  done
}

has_line() { grep -qE "$2" "$1" 2>/dev/null; } # FILE REGEX

# FILE: how many tasks the second run of a job found done ("N tasks, D already done")
resumed_after() { sed -n 's/.* tasks, \([0-9]*\) already done, .*/\1/p' "$1" | sed -n 2p; }
second_run_started() { [ -n "$(resumed_after "$1")" ]; }

out_of() { # NAME: the output file of the (first) job of that name
  local f
  for f in "$tmp/out/$1"-*.out; do
    echo "$f"
    return
  done
}

dump_job() { # NAME JOBID
  local f
  echo "---- job $2 ($1): $(scontrol show job "$2" 2>/dev/null | grep -oE 'JobState=[^ ]*|ExitCode=[^ ]*|Restarts=[^ ]*' | tr '\n' ' ')"
  for f in "$tmp/out/$1"-*.out; do
    echo "---- $f"
    grep -vE '^\[[0-9]+/' "$f" 2>/dev/null | tail -n 40
  done
}

task_ids_of_grid() { # NAME [sweep options]: the task ids, sorted
  local name=$1
  shift
  "$gpfq" sweep --dry-run "$@" "$tmp/work/$name.yaml" | awk 'NR > 2 { print $1 }' | sort
}

task_ids_in_file() { # FILE: the task ids of /results, sorted (duplicates kept)
  h5dump -d /results -y "$1" 2>/dev/null | grep -oE '"[0-9a-f]{16}"' | tr -d '"' | sort
}

check_complete() { # WHAT NAME FILE: FILE holds every task of the grid exactly once, all done
  local what=$1 name=$2 file=$3 want have report
  want=$(task_ids_of_grid "$name")
  have=$(task_ids_in_file "$file")
  report=$("$gpfq" report "$file" 2>&1)
  if [ -z "$want" ]; then
    fail "$what: the dry run of $name listed no tasks"
  elif [ "$want" != "$have" ]; then
    fail "$what: $file holds $(wc -l <<<"$have") row(s) ($(uniq -d <<<"$have" | wc -l) duplicated); the grid has $(wc -l <<<"$want") task(s)"
  elif ! grep -qE ": $(wc -l <<<"$want") task\(s\), $(wc -l <<<"$want") done, 0 failed" <<<"$report"; then
    fail "$what: gpfq report disagrees: $(head -1 <<<"$report")"
  else
    ok "$what: $(head -1 <<<"$report" | sed 's/^results *//')"
    return 0
  fi
  return 1
}

check_exit() { # WHAT JOBID STATE EXITCODE
  local state code
  state=$(field "$2" JobState) code=$(field "$2" ExitCode)
  if [ "$state" = "$3" ] && [ "$code" = "$4" ]; then
    ok "$1: job $2 $state, exit code $code"
  else
    fail "$1: job $2 $state with exit code $code (want $3, $4)"
    return 1
  fi
}

# ---- 1. whole sweeps, one MPI job each; 2. array of shards + merge ----
say "submitting: one MPI job (mpirun$([ $pmix = 1 ] && echo ', srun')), an array of 3 shards + merge"
j_mpirun=$(submit small sweep_mpirun.sbatch --ntasks=2 --time=10 --) ||
  abort "sbatch sweep_mpirun.sbatch failed"
jobs=("$j_mpirun")
if [ $pmix = 1 ]; then
  write_job small_srun "[1.0, 1.5]" 50
  j_srun=$(submit small_srun sweep_srun.sbatch --ntasks=2 --time=10 --) ||
    abort "sbatch sweep_srun.sbatch failed"
  jobs+=("$j_srun")
fi
j_array=$(submit array sweep_array.sbatch --array=0-2 --ntasks=1 --time=10 --) ||
  abort "sbatch sweep_array.sbatch failed"
j_merge=$(JOBFILE=array submit merge merge.sbatch --dependency=afterok:"$j_array" --time=10 --) ||
  abort "sbatch merge.sbatch failed"
# more shards than a 6-task grid fills: some are empty
j_sparse=$(submit sparse sweep_array.sbatch --array=0-7 --ntasks=1 --time=10 --) ||
  abort "sbatch sweep_array.sbatch failed"
j_sparse_merge=$(JOBFILE=sparse submit sparse_merge merge.sbatch --dependency=afterok:"$j_sparse" \
  --time=10 --) || abort "sbatch merge.sbatch failed"
wait_jobs "${jobs[@]}" "$j_merge" "$j_sparse_merge"

if ! { check_exit "sweep_mpirun.sbatch" "$j_mpirun" COMPLETED 0:0 &&
  check_complete "sweep_mpirun.sbatch" small "$tmp/work/results/small.h5"; }; then
  dump_job small "$j_mpirun"
fi
if [ $pmix = 1 ]; then
  if ! { check_exit "sweep_srun.sbatch" "$j_srun" COMPLETED 0:0 &&
    check_complete "sweep_srun.sbatch" small_srun "$tmp/work/results/small_srun.h5"; }; then
    dump_job small_srun "$j_srun"
  fi
  grep -q "on 2 rank(s)" "$(out_of small_srun)" ||
    fail "sweep_srun.sbatch: the sweep did not run on 2 ranks"
fi
grep -q "on 2 rank(s)" "$(out_of small)" || fail "sweep_mpirun.sbatch: the sweep did not run on 2 ranks"

# every shard ran its own share, into its own file, then the merge
shard_sum=0
for i in 0 1 2; do
  f=$tmp/work/results/array.shard-$i-of-3.h5
  n=$(task_ids_in_file "$f" | wc -l)
  want=$(task_ids_of_grid array --shard "$i/3" | wc -l)
  if [ "$n" -eq "$want" ] && [ "$n" -gt 0 ]; then
    ok "sweep_array.sbatch: shard $i/3 holds its $n task(s)"
  else
    fail "sweep_array.sbatch: shard $i/3: $f holds $n row(s), want $want"
    dump_job array "${j_array}_$i"
  fi
  shard_sum=$((shard_sum + n))
done
if ! { check_exit "merge.sbatch" "$j_merge" COMPLETED 0:0 &&
  check_complete "merge.sbatch (gpfq merge)" array "$tmp/work/results/array.h5"; }; then
  dump_job merge "$j_merge"
fi
[ "$shard_sum" -eq "$(task_ids_of_grid array | wc -l)" ] ||
  fail "the shards hold $shard_sum rows in all, the grid has $(task_ids_of_grid array | wc -l) tasks"
empty=$(grep -l "has no tasks (the grid is smaller than the shards); nothing to do" "$tmp"/out/sparse-*.out 2>/dev/null | wc -l)
if ! { check_exit "merge.sbatch, 6 tasks in 8 shards ($empty empty)" "$j_sparse_merge" COMPLETED 0:0 &&
  check_complete "merge.sbatch, 6 tasks in 8 shards" sparse "$tmp/work/results/sparse.h5"; }; then
  dump_job sparse_merge "$j_sparse_merge"
  dump_job sparse "$j_sparse"
fi
[ "$empty" -ge 2 ] || fail "sweep_array.sbatch: $empty empty shard(s) of 8 for 6 tasks, want 2 or more"

# ---- 3. stop early and resume: scancel --signal=USR1; 4. the time limit ----
say "submitting: sweeps to stop with scancel --signal=USR1, then with their time limit"
j_stop_b=$(submit stop_b sweep_mpirun.sbatch --ntasks=2 --time=10 --) ||
  abort "sbatch sweep_mpirun.sbatch failed"
stop_jobs=("$j_stop_b")
if [ $pmix = 1 ]; then
  j_stop_s=$(submit stop_s sweep_srun.sbatch --ntasks=2 --time=10 --) ||
    abort "sbatch sweep_srun.sbatch failed"
  stop_jobs+=("$j_stop_s")
fi
# Time limits of 2 minutes with the signal 60 s before: Slurm checks limits
# every 30 s or so, and sends the signal at the first check that finds less
# than 60 + 30 s left, i.e. 30 to 60 s after the start (not while the sweep
# starts up). One rank each: they only have to be running when it comes.
j_limit_b=$(submit limit_b sweep_mpirun.sbatch --ntasks=1 --time=2 --signal=B:USR1@60 --) ||
  abort "sbatch sweep_mpirun.sbatch --time=2 failed"
limit_jobs=("$j_limit_b")
if [ $pmix = 1 ]; then
  j_limit_s=$(submit limit_s sweep_srun.sbatch --ntasks=1 --time=2 --signal=USR1@60 --) ||
    abort "sbatch sweep_srun.sbatch --time=2 failed"
  limit_jobs+=("$j_limit_s")
fi

# stop each as soon as it has written its first result
wait_until "a first result of job $j_stop_b" has_line "$tmp/out/stop_b-$j_stop_b.out" '^\[1/' &&
  scancel --batch --signal=USR1 "$j_stop_b"
if [ $pmix = 1 ]; then
  wait_until "a first result of job $j_stop_s" has_line "$tmp/out/stop_s-$j_stop_s.out" '^\[1/' &&
    scancel --signal=USR1 "$j_stop_s"
fi
wait_jobs "${stop_jobs[@]}"

check_stopped() { # WHAT NAME JOBID: stopped with 3, requeued, resumed, completed
  local what=$1 name=$2 job=$3 out good=1 resumed total
  out=$tmp/out/$name-$job.out
  resumed=$(resumed_after "$out")
  total=$(task_ids_of_grid "$name" | wc -l)
  if ! grep -q "received signal 10" "$out"; then
    fail "$what: the sweep never received SIGUSR1"
    good=0
  elif ! grep -q "gpfq sweep exit code 3" "$out"; then
    fail "$what: no 'exit code 3' in the job's output"
    good=0
  elif ! grep -q "requeueing to resume" "$out"; then
    fail "$what: the job did not requeue itself"
    good=0
  elif [ -z "$resumed" ] || [ "$resumed" -le 0 ] || [ "$resumed" -ge "$total" ]; then
    fail "$what: the requeued run found ${resumed:-no} task(s) of $total done, want a partial file"
    good=0
  elif [ "$(field "$job" Restarts)" != 1 ]; then
    fail "$what: Restarts=$(field "$job" Restarts), want 1"
    good=0
  else
    ok "$what: exit code 3 after $resumed of $total tasks, requeued, the rerun resumed"
  fi
  check_exit "$what" "$job" COMPLETED 0:0 || good=0
  check_complete "$what: after the resume" "$name" "$tmp/work/results/$name.h5" || good=0
  [ $good = 1 ] || dump_job "$name" "$job"
}
check_stopped "scancel --batch --signal=USR1, sweep_mpirun.sbatch" stop_b "$j_stop_b"
[ $pmix = 1 ] && check_stopped "scancel --signal=USR1, sweep_srun.sbatch" stop_s "$j_stop_s"

check_limit() { # WHAT NAME JOBID: stopped by the --signal before the limit, requeued, resumed
  local what=$1 name=$2 job=$3 out resumed
  out=$tmp/out/$name-$job.out
  if wait_until "job $job to be requeued and resume" second_run_started "$out"; then
    resumed=$(resumed_after "$out")
    if grep -q "received signal 10" "$out" && grep -q "gpfq sweep exit code 3" "$out" &&
      grep -q "requeueing to resume" "$out" && [ "$resumed" -gt 0 ]; then
      ok "$what: stopped before the limit with exit code 3, requeued, resumed after $resumed task(s)"
      return 0
    fi
    fail "$what: no clean stop before the limit, or no resume"
  fi
  dump_job "$name" "$job"
}
check_limit "--time=2 --signal=B:USR1@60, sweep_mpirun.sbatch" limit_b "$j_limit_b"
[ $pmix = 1 ] && check_limit "--time=2 --signal=USR1@60, sweep_srun.sbatch" limit_s "$j_limit_s"
# no need to sweep on: the grid's completion after a resume is checked above
scancel "${limit_jobs[@]}" 2>/dev/null

say "done in $(($(date +%s) - started)) s"
if [ "$failures" -ne 0 ]; then
  echo "$failures Slurm check(s) failed"
  show_logs
  exit 1
fi
echo "all Slurm checks passed"
