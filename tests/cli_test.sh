#!/usr/bin/env bash
# The gpfq command's behaviour: --help everywhere, exit codes (0 ok, 1 runtime
# error, 2 usage error) and messages for bad input, and an end-to-end eval on a
# tiny data set written by test_data.
#
#   cli_test.sh GPFQ_BIN FIXTURES_DIR TEST_DATA_BIN
set -uo pipefail
gpfq=$1 fixtures=$2 test_data=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

. "$(dirname "$0")/expect.sh"


model=$fixtures/model_lenet_small.h5

for cmd in eval info env; do
  expect 0 "usage: gpfq $cmd" -- "$gpfq" "$cmd" --help
done
expect 0 "commands:" -- "$gpfq" help
expect 2 "usage: gpfq" -- "$gpfq"
expect 2 "unknown command 'frobnicate'" -- "$gpfq" frobnicate
expect 0 "^gpfq [0-9]" -- "$gpfq" version
# OpenBLAS's idle threads sleep at once: gpfq sets the variable and has OpenBLAS read it
# (gpfq env prints the value OpenBLAS read), or keeps the user's
expect 0 "OPENBLAS_THREAD_TIMEOUT=4$" -- env -u OPENBLAS_THREAD_TIMEOUT "$gpfq" env
expect 0 "OPENBLAS_THREAD_TIMEOUT=12$" -- env OPENBLAS_THREAD_TIMEOUT=12 "$gpfq" env
# empty or 0 is OpenBLAS's default (2^28 cycles of spinning), as if unset
expect 0 "OPENBLAS_THREAD_TIMEOUT=4$" -- env OPENBLAS_THREAD_TIMEOUT= "$gpfq" env
expect 0 "OPENBLAS_THREAD_TIMEOUT=4$" -- env OPENBLAS_THREAD_TIMEOUT=0 "$gpfq" env
expect 0 "OPENBLAS_THREAD_TIMEOUT=4$" -- env OPENBLAS_THREAD_TIMEOUT=abc "$gpfq" env
# OpenBLAS 0.3 reads no GOTO_THREAD_TIMEOUT: it leaves the spinning as it is
expect 0 "OPENBLAS_THREAD_TIMEOUT=4$" -- env -u OPENBLAS_THREAD_TIMEOUT GOTO_THREAD_TIMEOUT=12 "$gpfq" env
expect 0 "OPENBLAS_THREAD_TIMEOUT=\(unset" -- \
  env -u OPENBLAS_THREAD_TIMEOUT GPFQ_NO_REEXEC=1 "$gpfq" env
# huge pages asked for with GPFQ_HUGEPAGES=1, off with 0, else as the kernel's THP mode has it
default_pages="^memory +(4 kB pages \(THP: |huge pages where the kernel gives them unasked)"
expect 0 "$default_pages" -- env -u GPFQ_HUGEPAGES "$gpfq" env
expect 0 "^memory +transparent huge pages asked for" -- env GPFQ_HUGEPAGES=1 "$gpfq" env
expect 0 "^memory +4 kB pages: transparent huge pages off" -- env GPFQ_HUGEPAGES=0 "$gpfq" env
expect 0 "GPFQ_HUGEPAGES='yes' is not 0 or 1; ignored" -- env GPFQ_HUGEPAGES=yes "$gpfq" env
check "GPFQ_HUGEPAGES=yes: the default pages" grep -Eq "$default_pages" <<<"$out"

# usage errors
expect 2 "--model FILE is required" -- "$gpfq" eval
expect 2 "unknown option '--bogus'" -- "$gpfq" eval --model "$model" --bogus
expect 2 "--batch expects a whole number from 1" -- "$gpfq" eval --model "$model" --batch 0
expect 2 "--batch expects a whole number" -- "$gpfq" eval --model "$model" --batch 12x
expect 2 "option '--model' needs a value" -- "$gpfq" eval --model
expect 2 "expects exactly one model FILE" -- "$gpfq" info

# runtime errors: missing, non-HDF5 and truncated model files, bad data
expect 1 "nope.h5: cannot open: No such file" -- "$gpfq" info "$tmp/nope.h5"
echo "not a model" >"$tmp/text.h5"
expect 1 "not an HDF5 file" -- "$gpfq" info "$tmp/text.h5"
head -c 3000 "$model" >"$tmp/cut.h5"
expect 1 "cut.h5: .*(truncated|corrupt|cannot be read)" -- "$gpfq" info "$tmp/cut.h5"
expect 1 "unknown data set 'imagenet'" -- "$gpfq" eval --model "$model" --dataset imagenet
expect 1 "data directory $tmp/none: No such file" -- \
  "$gpfq" eval --model "$model" --data-dir "$tmp/none"
expect 1 "has no default location; give its directory with --data-dir" -- \
  "$gpfq" eval --model "$model" --dataset cifar10

# a model whose input does not fit the data: the ResNet fixture takes 3x16x16
"$test_data" --write-idx "$tmp/fashion" 50
expect 1 "takes 3x16x16 images but the data set has 1x28x28" -- \
  "$gpfq" eval --model "$fixtures/model_resnet_small.h5" --data-dir "$tmp/fashion"

# a bad data file
printf '\0\0\x08\x01\0\0\0\x02' >"$tmp/fashion/t10k-labels-idx1-ubyte"
expect 1 "holds 2 labels but the image file has 50 images" -- \
  "$gpfq" eval --model "$model" --data-dir "$tmp/fashion"

# end to end: info, --check against torch, eval on the tiny set
"$test_data" --write-idx "$tmp/fashion" 50
expect 0 "total +12 nodes, 8042 parameters" -- "$gpfq" info "$model"
expect 0 "check +4 images: max abs error" -- "$gpfq" info --check "$model"
expect 0 "top-1 +[0-9.]+%  \([0-9]+/50\)" -- \
  "$gpfq" eval --model "$model" --data-dir "$tmp/fashion" --batch 7
expect 0 "top-5 .*\([0-9]+/20\)" -- \
  "$gpfq" eval --model "$model" --data-dir "$tmp/fashion" --limit 20 --threads 1

if [ "$failures" -ne 0 ]; then
  echo "$failures CLI check(s) failed"
  exit 1
fi
echo "all CLI checks passed"
