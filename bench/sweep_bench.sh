#!/usr/bin/env bash
# Sweep benchmark, measured in one run:
#  - throughput (tasks/min) of the same grid with 1 rank and with 2 ranks;
#  - the shared float-activation cache against recomputing the activations in
#    every task (--no-shared-cache), with 2 ranks;
#  - peak RSS and PSS per rank with 1 and 2 ranks on a large model, and the
#    size of the shared cache.
#
#   bench/sweep_bench.sh [--model NAME|FILE] [--big NAME|FILE] [--tasks-scalars LIST]
#
# Defaults: throughput on lenet5 (GPFQ, bits 2-4 x 4 scalars = 12 tasks), memory
# on resnet18 (falls back to resnet20 when resnet18 is not shipped).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
gpfq=${GPFQ:-build/gpfq}
model=lenet5
big=resnet18
scalars=1.0,1.1,1.2,1.3
while [ $# -gt 0 ]; do
  case $1 in
    --model) model=$2; shift 2 ;;
    --big) big=$2; shift 2 ;;
    --tasks-scalars) scalars=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "sweep_bench: unknown option $1" >&2; exit 2 ;;
  esac
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
big_note=""
if [ ! -f "data/models/${big}_fashion.h5" ] && [ ! -f "$big" ]; then
  # memory does not depend on the weights: a random-weight export of the same
  # architecture measures the same
  GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=68719476736 \
    "${PYTHON:-/usr/bin/python3}" tools/export_torch.py --arch "$big" --out "$tmp/${big}_random.h5" >/dev/null
  big_note=" (random weights: data/models/${big}_fashion.h5 is not shipped)"
  big=$tmp/${big}_random.h5
fi

job() { # job NAME MODEL IMAGES
  cat >"$tmp/$1.yaml" <<YAML
model: $2
dataset: fashion-mnist
calibration: {images: $3, seed: 0}
output: $tmp/$1.h5
grid:
  method: gpfq
  bits: [2, 3, 4]
  scalar: [$scalars]
YAML
}

# run NAME RANKS [extra]: prints "tasks/min seconds memory-line cache-line"
run() {
  local name=$1 ranks=$2
  shift 2
  rm -f "$tmp/$name.h5"
  local start end
  start=$(date +%s.%N)
  mpirun -n "$ranks" --oversubscribe "$gpfq" sweep "$@" "$tmp/$name.yaml" >"$tmp/$name.$ranks.log" 2>&1
  end=$(date +%s.%N)
  local rate mem cache
  rate=$(sed -n 's/.*(\([0-9.]*\) tasks\/min).*/\1/p' "$tmp/$name.$ranks.log" | tail -1)
  mem=$(sed -n 's/^memory *//p' "$tmp/$name.$ranks.log")
  cache=$(sed -n 's/^cache *//p' "$tmp/$name.$ranks.log")
  echo "$rate|$(awk "BEGIN{print $end - $start}")|$mem|$cache"
}

field() { echo "$1" | cut -d'|' -f"$2"; }

echo "gpfq sweep benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg))"
echo "OpenBLAS: $("$gpfq" env | sed -n 's/^blas *//p'), OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}; 1 BLAS thread per rank"
echo

job tput "$model" 256
r1=$(run tput 1)
r2=$(run tput 2)
n2=$(run tput 2 --no-shared-cache)
t1=$(field "$r1" 1) t2=$(field "$r2" 1) tn=$(field "$n2" 1)
n_tasks=$((3 * $(echo "$scalars" | tr ',' '\n' | wc -l)))
printf '%-44s %12s %12s\n' "throughput, $model, $n_tasks GPFQ tasks" "tasks/min" "wall s"
printf '%-44s %12s %12.1f\n' "1 rank" "$t1" "$(field "$r1" 2)"
printf '%-44s %12s %12.1f\n' "2 ranks" "$t2" "$(field "$r2" 2)"
printf '%-44s %12s\n' "ratio 2 ranks / 1 rank" "$(awk "BEGIN{printf \"%.2f\", $t2 / $t1}")"
printf '%-44s %12s %12.1f\n' "2 ranks, activations recomputed per task" "$tn" "$(field "$n2" 2)"
printf '%-44s %12s\n' "ratio shared cache / recomputed" "$(awk "BEGIN{printf \"%.2f\", $t2 / $tn}")"
echo "  cache: $(field "$r2" 4)"
echo

job mem "$big" 256
sed -i 's/bits: \[2, 3, 4\]/bits: [4]/; s/scalar: .*/scalar: [1.16, 1.2]/' "$tmp/mem.yaml"
printf 'eval: {limit: 500}\n' >>"$tmp/mem.yaml"
m1=$(run mem 1)
m2=$(run mem 2)
echo "memory, $(basename "$big" .h5)$big_note, bs 256 (peak RSS / PSS per rank, MB; PSS splits shared pages)"
echo "  1 rank:  $(field "$m1" 3)"
echo "  2 ranks: $(field "$m2" 3)"
echo "  cache:   $(field "$m2" 4)"
