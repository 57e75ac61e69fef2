#!/usr/bin/env bash
# A short sweep (GPFQ and MSQ, cache written, then a rerun that loads it) and a
# quantize run under valgrind memcheck: no invalid reads or writes, no definite
# leaks. tests/valgrind.supp hides what Open MPI allocates in MPI_Init and never
# frees.
#
#   valgrind_test.sh GPFQ_BIN FIXTURES_DIR TEST_DATA_BIN
set -euo pipefail
gpfq=$1 fixtures=$(cd "$2" && pwd) test_data=$3
supp=$(cd "$(dirname "$0")" && pwd)/valgrind.supp
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$test_data" --write-idx "$tmp/data" 60
cat >"$tmp/job.yaml" <<YAML
model: $fixtures/model_lenet_small.h5
dataset: {name: fashion-mnist, data_dir: $tmp/data}
calibration: {images: 16}
output: $tmp/out.h5
cache: $tmp/cache.h5
eval: {limit: 20}
grid:
  method: [gpfq, msq]
  bits: [2, 4]
YAML
vg=(valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=9
    --suppressions="$supp" -q)
run() {
  local name=$1
  shift
  if ! "${vg[@]}" "$@" >"$tmp/$name.log" 2>&1; then
    echo "FAIL: valgrind reports errors for: $*"
    cat "$tmp/$name.log"
    exit 1
  fi
  echo "ok: $*"
}
run sweep "$gpfq" sweep "$tmp/job.yaml"
run grow "$gpfq" sweep -b 2,3,4 "$tmp/job.yaml" # loads the cache file
run quantize "$gpfq" quantize -model "$fixtures/model_lenet_small.h5" --data-dir "$tmp/data" \
  -b 3 -bs 16 --limit 20 --out "$tmp/q.h5" --log "$tmp/log.csv"
run eval "$gpfq" eval --model "$tmp/q.h5" --data-dir "$tmp/data" --limit 20
grep -q "loaded from the cache file" "$tmp/grow.log" || {
  echo "FAIL: the second sweep did not load the cache"
  cat "$tmp/grow.log"
  exit 1
}
echo "valgrind: no invalid accesses, no definite leaks"
