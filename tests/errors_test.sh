#!/usr/bin/env bash
# Every row of tests/errors/cases.tsv: a bad input, the command, the exit code
# and (a part of) the message the user sees. Each row is run and checked, and
# docs/errors.md, which shows the full messages, must be what this script writes
# with --doc (regenerate: tests/errors_test.sh --doc GPFQ FIXTURES TEST_DATA > docs/errors.md).
#
#   errors_test.sh [--doc] GPFQ_BIN FIXTURES_DIR TEST_DATA_BIN
set -uo pipefail
doc=0
if [ "${1:-}" = --doc ]; then doc=1; shift; fi
gpfq=$(realpath "$1") fix=$(realpath "$2") test_data=$(realpath "$3")
here=$(cd "$(dirname "$0")" && pwd)
err=$here/errors
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# ---- the scratch files the cases use ----
"$test_data" --write-idx "$tmp/data" 20
mkdir -p "$tmp/bad"
echo "this is not a model" >"$tmp/bad/text.h5"
head -c 3000 "$fix/model_lenet_small.h5" >"$tmp/bad/cut.h5"
be32() { printf "\\x$(printf %02x $(($1 >> 24 & 255)))\\x$(printf %02x $(($1 >> 16 & 255)))\\x$(printf %02x $(($1 >> 8 & 255)))\\x$(printf %02x $(($1 & 255)))"; }
idx_images() { # dir magic count bytes
  mkdir -p "$1"
  { be32 "$2"; be32 "$3"; be32 28; be32 28; head -c "$4" /dev/zero; } >"$1/t10k-images-idx3-ubyte"
}
idx_labels() { # dir count [bad_index]
  { be32 $((0x801)); be32 "$2"; for i in $(seq 0 $(($2 - 1))); do
      if [ "$i" = "${3:-x}" ]; then printf '\x0c'; else printf "\\x0$((i % 10))"; fi
    done; } >"$1/t10k-labels-idx1-ubyte"
}
idx_images "$tmp/bad/magic" $((0x801)) 10 7840 && idx_labels "$tmp/bad/magic" 10
idx_images "$tmp/bad/short" $((0x803)) 10 7000 && idx_labels "$tmp/bad/short" 10
idx_images "$tmp/bad/label" $((0x803)) 10 7840 && idx_labels "$tmp/bad/label" 10 3
mkdir -p "$tmp/bad/cifar"
{ printf '\x01'; head -c 3072 /dev/zero; printf '\x02'; head -c 999 /dev/zero; } >"$tmp/bad/cifar/test_batch.bin"

job() { # file images output [grid lines...]
  local file=$1 images=$2 output=$3
  shift 3
  {
    echo "model: $fix/model_lenet_small.h5"
    echo "dataset: {name: fashion-mnist, data_dir: $tmp/data}"
    echo "calibration: {images: $images}"
    echo "output: $output"
    echo "eval: {limit: 10}"
    echo "grid:"
    for line in "$@"; do echo "  $line"; done
  } >"$file"
}
job "$tmp/a.yaml" 8 "$tmp/a.h5" "method: msq" "bits: 4"
job "$tmp/b.yaml" 9 "$tmp/b.h5" "method: msq" "bits: 4"
job "$tmp/bad/other_job.yaml" 9 "$tmp/a.h5" "method: msq" "bits: 4"
job "$tmp/bad/unknown_key.yaml" 8 "$tmp/u.h5" "method: msq" "bitz: 4"
job "$tmp/bad/empty_range.yaml" 8 "$tmp/u.h5" "method: msq" "scalar: {start: 2, stop: 1, step: 0.1}"
job "$tmp/bad/bits0.yaml" 8 "$tmp/u.h5" "method: msq" "bits: 0"
job "$tmp/bad/no_model.yaml" 8 "$tmp/u.h5" "method: msq"
sed -i "s#^model: .*#model: $tmp/absent.h5#" "$tmp/bad/no_model.yaml"
printf 'model: x\ndataset: fashion-mnist\ngrid: [unclosed\n' >"$tmp/bad/notyaml.yaml"
"$gpfq" sweep "$tmp/a.yaml" >/dev/null 2>&1 && "$gpfq" sweep "$tmp/b.yaml" >/dev/null 2>&1 || {
  echo "could not prepare the results files"
  exit 1
}

# ---- the cases ----
normalize() { sed -e "s#$tmp#TMP#g" -e "s#$fix#tests/fixtures#g" -e "s#$err#tests/errors#g" -e "s#$gpfq#gpfq#g"; }
failures=0 rows=0
if [ $doc = 1 ]; then
  cat <<'HEAD'
# Bad inputs and what gpfq says

Each row is a bad input, the command, the exit code (0 success, 1 runtime
error, 2 bad input) and the message printed on stderr. `tests/errors_test.sh`
runs every row in ctest and checks the exit code and the message; this page is
what it writes with `--doc`, so it cannot drift from the program. `TMP` is a
scratch directory of broken files the test makes; `tests/errors/*.h5` are
committed broken model files.

An existing results file is never modified by a run that fails validation:
`tests/sweep_test.sh` checks that byte for byte.

Out of memory in a forward pass, a quantization or an evaluation is a runtime
error (exit 1) with a message that says what could not be allocated; it does not
abort. `tests/test_alloc_failures.c` (ctest's `alloc_failures`) makes the
library's allocations fail (malloc, calloc, realloc, aligned_alloc,
posix_memalign and strdup, wrapped at link time), in runs of a conv's fallback
path, a forward pass, a whole quantization (with the defaults and with
`--reference`) and an evaluation on two workers, of the small LeNet and ResNet
fixtures. For each k, one run fails the k-th allocation alone and another every
allocation from the k-th on; where helper threads allocate at the same time,
which allocation is the k-th can vary between runs. Each run must end with
GPFQ_ERR_NOMEM and a message, or finish on a fallback (a GEMM without its packs
runs on OpenBLAS, a direct conv kernel without its buffer on im2col) with the
same results: a forward pass's logits within 1e-4, an evaluation's counts within
one image (a quantization's codes are counted, not compared: a product on
OpenBLAS may round differently). New blocks are filled with NaNs, so a buffer
read before it is written shows. Under AddressSanitizer no run may leak or touch
freed memory. Allocations made inside other libraries (threads, OpenBLAS, HDF5)
are not failed.

The command line and the sweep around the library are checked the same way
from outside: ctest's `sweep_no_memory` preloads `tests/sweep/no_memory.c`, a
shim that fails the allocations called from the gpfq executable (malloc,
calloc, realloc, aligned_alloc, posix_memalign, strdup and strndup; not those
made inside other libraries: libyaml, zlib, Open MPI, HDF5, OpenBLAS, or the C
library's other functions) from the k-th on, or the k-th alone. On a results
file that already holds 4 of the grid's 12 tasks it runs `gpfq sweep` with
memory out from the k-th allocation on for every k from 0 to 59 (the job, the
model and the data) and about 115 more spread over the rest of the run (about
1600 allocations); 40 sweeps with the k-th allocation alone failing; 9 on 2
ranks that both run out at the same k, and 14 on 2 ranks where one rank alone
meets a failure around the allocations made before the results file opens;
and `gpfq quantize` for about 60 values of k. Every run must end with exit 0,
1 or 2, never a signal or a hang; a failing run must say that memory ran out;
the results file must read, keep its earlier rows, and hold no row but the
results of a run with memory, all of them after an exit 0; a run that leaves
a task unrecorded must exit 1. Every fourth file of the first series is then
resumed with memory and must hold exactly the results of that run. A quantize
that exits 0 must have saved the same model, its settings included, and its
log row. The shim allocates behind the sanitizers' back, so the test is in the
plain build only.

| bad input | command | exit | message |
|---|---|---|---|
HEAD
fi
while IFS=$'\t' read -r what cmd code expect; do
  [ -z "$what" ] || [ "${what:0:1}" = "#" ] && continue
  rows=$((rows + 1))
  line=${cmd//@GPFQ@/$gpfq}
  line=${line//@FIX@/$fix}
  line=${line//@ERR@/$err}
  line=${line//@TMP@/$tmp}
  want=${expect//@TMP@/$tmp}
  # shellcheck disable=SC2086
  out=$(cd "$tmp" && eval "$line" 2>&1 >/dev/null)
  rc=$?
  first=$(grep -m1 -F -- "$want" <<<"$out" || head -1 <<<"$out")
  if [ "$rc" != "$code" ] || ! grep -qF -- "$want" <<<"$out"; then
    echo "FAIL: $what: $line -> exit $rc (want $code)" >&2
    sed 's/^/    /' <<<"$out" >&2
    echo "    wanted: $want" >&2
    failures=$((failures + 1))
  elif [ $doc = 0 ]; then
    echo "ok: $what"
  fi
  if [ $doc = 1 ]; then
    shown=$(normalize <<<"$first" | sed 's/|/\\|/g')
    printf '| %s | `%s` | %s | %s |\n' "$what" "$(normalize <<<"$line" | sed 's/|/\\|/g')" "$rc" "$shown"
  fi
done <"$err/cases.tsv"
if [ $doc = 0 ]; then
  repo=$(cd "$here/.." && pwd)
  if ! diff -u "$repo/docs/errors.md" <("$0" --doc "$gpfq" "$fix" "$test_data" 2>/dev/null) >"$tmp/doc.diff"; then
    echo "FAIL: docs/errors.md is not what the program prints now; regenerate it:" >&2
    echo "  tests/errors_test.sh --doc build/gpfq tests/fixtures build/tests/test_data > docs/errors.md" >&2
    head -40 "$tmp/doc.diff" >&2
    failures=$((failures + 1))
  fi
fi
if [ "$failures" -ne 0 ]; then
  echo "$failures of $rows error case(s) failed" >&2
  exit 1
fi
[ $doc = 1 ] || echo "all $rows error cases behave as documented"
