#!/usr/bin/env bash
# The `gpfq quantize` command: usage errors caught before any work (exit 2, a
# message naming the flag), runtime errors (exit 1), and real runs on the small
# LeNet fixture with a tiny data set written by test_data: per-layer output, the
# saved model evaluated back, research and long flag names, seeds, the CSV log,
# MSQ without calibration data, the reference's choices, regularizers, -sq,
# --no-save, --ignore and atomic replacement of the output file.
#
#   cli_quantize_test.sh GPFQ_BIN FIXTURES_DIR TEST_DATA_BIN
set -uo pipefail
gpfq=$(realpath "$1") fixtures=$(realpath "$2") test_data=$(realpath "$3")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/expect.sh" # before the cd: $0 may be relative
cd "$tmp" || exit 1
failures=0



differ() { ! cmp -s "$1" "$2"; }
lacks() { ! grep -Eq -- "$1" <<<"$2"; }

model=$fixtures/model_lenet_small.h5
data=$tmp/fashion
"$test_data" --write-idx "$data" 50
if [ ! -f "$data/train-labels-idx1-ubyte" ]; then
  echo "FAIL: $test_data --write-idx did not write the tiny data set"
  exit 1
fi
q=("$gpfq" quantize)

# expect_usage PATTERN -- quantize args...: exit 2 with PATTERN, before any
# work: nothing evaluated or quantized, no output file.
expect_usage() {
  local pattern=$1
  shift 2
  rm -f "$tmp/never.h5"
  expect 2 "$pattern" -- "${q[@]}" "$@" --out "$tmp/never.h5"
  if grep -Eq '^(float|quantizing|model) ' <<<"$out" || [ -e "$tmp/never.h5" ]; then
    echo "FAIL: $* did work before rejecting its arguments"
    failures=$((failures + 1))
  fi
}

# codes FILE: every /nodes/*/weight_codes dataset of FILE, data only.
codes() {
  local name
  for name in $(h5ls -r "$1" | awk '/\/weight_codes /{print $1}'); do
    echo "$name"
    h5dump -d "$name" -y -w0 "$1" | sed -n '/DATA {/,$p'
  done
}

# field LINE_PREFIX N: the Nth whitespace field of the first output line starting with LINE_PREFIX
field() { awk -v p="$1" -v n="$2" 'index($0, p) == 1 { print $n; exit }' <<<"$out"; }

# ---- help ----
expect 0 "usage: gpfq quantize -model NAME\|FILE" -- "${q[@]}" --help
expect 0 "usage: gpfq quantize -model NAME\|FILE" -- "${q[@]}" -h

# ---- usage errors, each before any work ----
base=(-model "$model" --data-dir "$data")
expect_usage "-model NAME\|FILE is required" -- --data-dir "$data"
expect_usage "-b/--bits expects a whole number from 1 to 16, got '0'" -- "${base[@]}" -b 0
expect_usage "-b/--bits expects a whole number from 1 to 16, got '17'" -- "${base[@]}" -b 17
expect_usage "-b/--bits expects a whole number" -- "${base[@]}" --bits 4x
expect_usage "-s/--scalar.*> 0" -- "${base[@]}" -s 0
expect_usage "-s/--scalar.*> 0" -- "${base[@]}" -s -1
expect_usage "-p/--percentile.*\(0, 1\]" -- "${base[@]}" -p 1.5
expect_usage "-rr/--retain-rate.*\(0, 1\]" -- "${base[@]}" -rr 0
expect_usage "-rr/--retain-rate.*\(0, 1\]" -- "${base[@]}" --retain-rate 1.5
# (end of the open bug's checks)
expect_usage "-s/--scalar expects a number, got 'abc'" -- "${base[@]}" -s abc
expect_usage "-l/--lambda must be >= 0, got -0.1" -- "${base[@]}" -reg L1 -l -0.1
expect_usage "-l/--lambda 0.1 needs -reg L1 or -reg L0" -- "${base[@]}" -l 0.1
expect_usage "-reg/--regularizer must be one of none, L1, L0, got 'L2'" -- "${base[@]}" -reg L2
expect_usage "-sq \(stochastic rounding\) takes no regularizer" -- "${base[@]}" -sq -reg L1
expect_usage "-sq \(stochastic rounding\) takes no regularizer" -- \
  "${base[@]}" -reg L1 -l 0.05 --stochastic
expect_usage "--method must be one of gpfq, msq, got 'rtn'" -- "${base[@]}" --method rtn
expect_usage "unknown option '--bogus'" -- "${base[@]}" --bogus
expect_usage "unknown option '-zz'" -- "${base[@]}" -zz
expect_usage "unexpected argument 'extra'" -- "${base[@]}" extra
expect 2 "option '-b' needs a value" -- "${q[@]}" "${base[@]}" -b
expect 2 "option '--log' needs a value" -- "${q[@]}" "${base[@]}" --log
expect_usage "unknown model 'vgg99'.*shipped models: mlp, lenet5, resnet20, resnet18" -- \
  -model vgg99 --data-dir "$data"
expect_usage "-ds/--dataset: unknown data set 'imagenet'; known: fashion-mnist, mnist, cifar10" -- \
  "${base[@]}" -ds imagenet
expect_usage "layer '[a-z0-9]+': L0 lambda 100 .*use a lambda below" -- "${base[@]}" -reg L0 -l 100

# ---- runtime errors ----
expect 1 "$tmp/absent/model.h5: cannot open: No such file" -- \
  "${q[@]}" -model "$tmp/absent/model.h5" --data-dir "$data"
expect 1 "data directory $tmp/none: No such file" -- "${q[@]}" -model "$model" --data-dir "$tmp/none"
# --ignore names are checked against the model before any work: a usage error
rm -f "$tmp/never.h5"
expect 2 "--ignore names 'nosuch', which is not a node of the model" -- \
  "${q[@]}" "${base[@]}" -bs 8 --ignore conv1,nosuch --out "$tmp/never.h5"
check "no output file after a failed --ignore" [ ! -e "$tmp/never.h5" ]
# GPFQ needs the train split; MSQ does not (below)
mkdir "$tmp/testonly"
cp "$data"/t10k-* "$tmp/testonly/"
expect 1 "train-images-idx3-ubyte.*No such file" -- \
  "${q[@]}" -model "$model" --data-dir "$tmp/testonly" --no-save

# ---- a real run ----
expect 0 "saved +$tmp/run.h5" -- "${q[@]}" "${base[@]}" -b 4 -bs 32 --out "$tmp/run.h5" \
  --log "$tmp/run.csv"
run_out=$out
for layer in conv1 conv2 fc1 fc2 fc3; do
  check "per-layer line for $layer" grep -Eq "^  \[[1-5]/5\] $layer .*delta .*zeros .*rel.err" \
    <<<"$run_out"
done
check "float top-1 line" grep -Eq '^float +top-1 +[0-9.]+%  top-5 +[0-9.]+%  \(50 images' \
  <<<"$run_out"
check "quantized top-1 line" grep -Eq '^quantized top-1 +[0-9.]+%  top-5 +[0-9.]+%  \(50 images' \
  <<<"$run_out"
check "5 layers quantized" grep -q '^quantized 5 layers' <<<"$run_out"
# the quantize's time and, of it, the draws and forward passes
passes_within() {
  awk '/^quantized [0-9]+ layers in/ { t = $5; p = $9; ok = $6 == "s" && $7 == "(forward" &&
       $8 == "passes" && $10 == "s)" && p + 0 <= t + 0 } END { exit !ok }' <<<"$1"
}
check "quantize time with its forward passes" passes_within "$run_out"
q_top1=$(awk '/^quantized top-1/ { sub("%", "", $3); print $3; exit }' <<<"$run_out")
q_top5=$(awk '/^quantized top-1/ { sub("%", "", $5); print $5; exit }' <<<"$run_out")
f_top1=$(awk '/^float +top-1/ { sub("%", "", $3); print $3; exit }' <<<"$run_out")

# the saved model evaluates to the same counts
expect 0 "top-1 .*\([0-9]+/50\)" -- "$gpfq" eval --model "$tmp/run.h5" --data-dir "$data"
e_top1=$(field "top-1" 3 | tr -d '()' | cut -d/ -f1)
e_top5=$(field "top-5" 3 | tr -d '()' | cut -d/ -f1)
# quantize prints percentages of 50 images, eval prints counts
count() { awk -v p="$1" 'BEGIN { if (p == "") print "none"; else printf "%d", p * 50 / 100 + 0.5 }'; }
check "eval of the saved model: top-1 ${e_top1:-?}/50 = quantize's ${q_top1:-?}%" \
  [ "$(count "$q_top1")" = "${e_top1:-missing}" ]
check "eval of the saved model: top-5 ${e_top5:-?}/50 = quantize's ${q_top5:-?}%" \
  [ "$(count "$q_top5")" = "${e_top5:-missing}" ]
expect 0 "top-1 +$f_top1%" -- "$gpfq" eval --model "$model" --data-dir "$data"

expect 0 "total +12 nodes, 8042 parameters" -- "$gpfq" info "$tmp/run.h5"
for layer in conv1 conv2 fc1 fc2 fc3; do
  check "info marks $layer quantized" grep -Eq "^ +[0-9]+  $layer +(conv2d|linear) \(q\)" <<<"$out"
done
check "info shows the quantization settings" grep -q '"method": "gpfq", "bits": 4' <<<"$out"

# ---- the CSV log: the header once, a row per run ----
expect 0 "logged +$tmp/run.csv" -- "${q[@]}" "${base[@]}" -b 4 -bs 32 --no-save --log "$tmp/run.csv"
check "log has a header and 2 rows" [ "$(wc -l <"$tmp/run.csv")" -eq 3 ]
check "log header has the research columns" grep -q "^Model Name,Dataset,Quantization Batch Size,Original Top1 Accuracy,Quantized Top1 Accuracy,Original Top5 Accuracy,Quantized Top5 Accuracy,Bits,MLP_Alphabet_Scalar,CNN_Alphabet_Scalar,MLP_Percentile,CNN_Percentile,Stochastic Quantization,Regularizer,Lambda,Original Sparsity,Quantized Sparsity,Retain_rate,Fusion,Seed$" "$tmp/run.csv"
check "log header written once" [ "$(grep -c '^Model Name,' "$tmp/run.csv")" -eq 1 ]
row=$(sed -n 2p "$tmp/run.csv")
check "log row: model, data set, bs, bits ($row)" \
  grep -q "^model_lenet_small,fashion-mnist,32,[0-9.]*,[0-9.]*,[0-9.]*,[0-9.]*,4,1.16,1.16,1,1,False,None,0," <<<"$row"
check "log row's quantized top-1 = $e_top1/50" \
  [ "$(cut -d, -f5 <<<"$row")" = "$(awk -v c="$e_top1" 'BEGIN { printf "%.4f", c / 50 }')" ]
check "the same run twice logs the same row" [ "$(sed -n 2p "$tmp/run.csv")" = "$(sed -n 3p "$tmp/run.csv")" ]

# ---- research flag names and long names give the same result ----
expect 0 "saved" -- "${q[@]}" -ds fashion-mnist -model "$model" --data-dir "$data" -b 3 -bs 24 \
  -s 1.3 -p 0.95 -reg L1 -l 0.02 -rr 0.5 --seed 7 --out "$tmp/short.h5" --log "$tmp/short.csv"
expect 0 "saved" -- "${q[@]}" --dataset fashion-mnist --model "$model" --data-dir "$data" \
  --bits 3 --batch-size 24 --scalar 1.3 --percentile 0.95 --regularizer L1 --lambda 0.02 \
  --retain-rate 0.5 --seed 7 --out "$tmp/long.h5" --log "$tmp/long.csv"
check "short and long names: same CSV row" cmp -s "$tmp/short.csv" "$tmp/long.csv"
check "short and long names: CSV row has the settings" \
  grep -q ",3,1.3,1.3,0.95,0.95,False,L1,0.02,.*,0.5,False,7$" "$tmp/short.csv"
codes "$tmp/short.h5" >"$tmp/short.codes"
codes "$tmp/long.h5" >"$tmp/long.codes"
check "short and long names: same weight codes" cmp -s "$tmp/short.codes" "$tmp/long.codes"
check "weight codes were extracted (5 datasets)" [ "$(grep -c weight_codes "$tmp/short.codes")" -eq 5 ]
expect 0 "saved" -- "${q[@]}" "${base[@]}" -bs 16 -sq --seed 3 --out "$tmp/sq_short.h5"
expect 0 "saved" -- "${q[@]}" "${base[@]}" -bs 16 --stochastic --seed 3 --out "$tmp/sq_long.h5"
codes "$tmp/sq_short.h5" >"$tmp/sq_short.codes"
codes "$tmp/sq_long.h5" >"$tmp/sq_long.codes"
check "-sq and --stochastic: same weight codes" cmp -s "$tmp/sq_short.codes" "$tmp/sq_long.codes"
check "-sq codes extracted" [ "$(grep -c weight_codes "$tmp/sq_short.codes")" -eq 5 ]
h5dump -d /nodes/0000/weight_codes -y -w0 "$tmp/short.h5" | sed -n '/DATA {/,$p' >"$tmp/a"
h5dump -d /nodes/0000/weight_codes -y -w0 "$tmp/long.h5" | sed -n '/DATA {/,$p' >"$tmp/b"
check "h5dump -d /nodes/0000/weight_codes: data extracted" grep -q 'DATA {' "$tmp/a"
check "h5dump -d /nodes/0000/weight_codes: same for short and long names" cmp -s "$tmp/a" "$tmp/b"

# ---- seeds: the same seed repeats exactly, another seed differs ----
for s in 1 1b 2; do
  expect 0 "saved" -- "${q[@]}" "${base[@]}" -bs 32 --seed "${s%b}" --out "$tmp/seed$s.h5"
  codes "$tmp/seed$s.h5" >"$tmp/seed$s.codes"
done
check "same --seed: identical weight codes" cmp -s "$tmp/seed1.codes" "$tmp/seed1b.codes"
check "different --seed: different weight codes" differ "$tmp/seed1.codes" "$tmp/seed2.codes"
check "seed runs extracted codes" [ "$(grep -c weight_codes "$tmp/seed1.codes")" -eq 5 ]

# ---- huge pages change where buffers live, not what is computed ----
for huge in 0 1; do
  expect 0 "saved" -- env GPFQ_HUGEPAGES=$huge "${q[@]}" "${base[@]}" -bs 32 --out "$tmp/huge$huge.h5"
  codes "$tmp/huge$huge.h5" >"$tmp/huge$huge.codes"
done
check "GPFQ_HUGEPAGES=0 and 1 give identical weight codes" cmp -s "$tmp/huge0.codes" "$tmp/huge1.codes"
check "huge-page runs extracted codes" [ "$(grep -c weight_codes "$tmp/huge1.codes")" -eq 5 ]

# ---- thread counts: with two BLAS threads the float and the quantized passes run at once,
# each single-threaded; the codes must not depend on it ----
for mode in shared reference; do
  flags=(); [ "$mode" = reference ] && flags=(--reference)
  for t in 1 2; do
    expect 0 "saved" -- "${q[@]}" "${base[@]}" -bs 32 "${flags[@]}" --threads "$t" \
      --out "$tmp/threads$t.h5"
    codes "$tmp/threads$t.h5" >"$tmp/threads$t.codes"
  done
  check "$mode calibration: --threads 1 and 2 give identical weight codes" \
    cmp -s "$tmp/threads1.codes" "$tmp/threads2.codes"
  check "$mode calibration: thread runs extracted codes" \
    [ "$(grep -c weight_codes "$tmp/threads1.codes")" -eq 5 ]
done

# ---- MSQ needs no calibration data ----
expect 0 "config +MSQ, 4 bits" -- "${q[@]}" -model "$model" --data-dir "$tmp/testonly" --method msq \
  --out "$tmp/msq.h5"
check "MSQ quantized 5 layers" grep -q '^quantized 5 layers' <<<"$out"
check "MSQ makes no forward pass" grep -Eq '^quantized 5 layers in [0-9.]+ s$' <<<"$out"
expect 0 "\"method\": \"msq\"" -- "$gpfq" info "$tmp/msq.h5"
check "MSQ model marks 5 layers (q)" [ "$(grep -c ' (q) ' <<<"$out")" -eq 5 ]

# ---- the reference's choices ----
# more calibration images than the data set has (100 training images): a warning, and all of
# them calibrate (a Linear layer's m is the image count)
expect 0 "warning: -bs 128 is more than the 100 training images; all of them calibrate" -- \
  "${q[@]}" "${base[@]}" -bs 128 --no-save
check "-bs 128 of 100 images calibrates on 100" grep -Eq "fc1 .* m 100 " <<<"$out"
expect 0 "per-layer calibration" -- "${q[@]}" "${base[@]}" -bs 16 --reference --no-save
check "--reference quantized 5 layers" grep -q '^quantized 5 layers' <<<"$out"
check "--reference time with its forward passes" passes_within "$out"

# ---- regularizers and stochastic rounding ----
sparsity() { sed -n 's/^sparsity  float [0-9.]*%, quantized \([0-9.]*\)%$/\1/p' <<<"$out"; }
expect 0 "^sparsity  float [0-9.]+%, quantized [0-9.]+%" -- "${q[@]}" "${base[@]}" -bs 32 --no-save
sp_none=$(sparsity)
expect 0 "config .*L1 lambda" -- "${q[@]}" "${base[@]}" -bs 32 -reg L1 -l 0.05 --no-save
sp_l1=$(sparsity)
check "L1 sparsity $sp_l1% > none $sp_none%" \
  awk -v a="$sp_l1" -v b="$sp_none" 'BEGIN { exit !(a != "" && b != "" && a + 0 > b + 0) }'
expect 0 "config .*L0 lambda" -- "${q[@]}" "${base[@]}" -bs 32 -reg L0 -l 0.01 --no-save
check "L0 run reports sparsity" [ -n "$(sparsity)" ]
expect 0 "config .*stochastic" -- "${q[@]}" "${base[@]}" -bs 32 -sq --no-save
check "-sq quantized 5 layers" grep -q '^quantized 5 layers' <<<"$out"

# ---- --ignore keeps a layer in float ----
expect 0 "\[1/5\] conv1 +kept in float" -- "${q[@]}" "${base[@]}" -bs 16 --ignore conv1 \
  --out "$tmp/ign.h5"
expect 0 "total +12 nodes" -- "$gpfq" info "$tmp/ign.h5"
check "--ignore conv1: 4 layers (q)" [ "$(grep -c ' (q) ' <<<"$out")" -eq 4 ]
check "--ignore conv1: conv1 in float" grep -Eq "^ +0  conv1 +conv2d +input " <<<"$out"

# ---- --no-save and the default output name ----
mkdir "$tmp/nosave" "$tmp/default"
in_dir() { (cd "$1" && shift && exec "$@"); }
expect 0 "drop +top-1" -- in_dir "$tmp/nosave" "${q[@]}" "${base[@]}" -bs 16 --no-save
check "--no-save: no file written" [ -z "$(ls -A "$tmp/nosave")" ]
check "--no-save: no 'saved' line" lacks '^saved' "$out"
expect 0 "saved +model_lenet_small_gpfq3.h5" -- in_dir "$tmp/default" "${q[@]}" "${base[@]}" \
  -bs 16 -b 3
check "default output name in the current directory" \
  [ "$(ls -A "$tmp/default")" = "model_lenet_small_gpfq3.h5" ]

# ---- an existing output file survives a failed run byte for byte ----
cp "$tmp/run.h5" "$tmp/keep.h5"
echo "not a model" >"$tmp/bad.h5"
expect 1 "bad.h5: not an HDF5 file" -- "${q[@]}" -model "$tmp/bad.h5" --data-dir "$data" \
  --out "$tmp/keep.h5"
check "bad model: existing output untouched" cmp -s "$tmp/run.h5" "$tmp/keep.h5"
expect 2 "-b/--bits" -- "${q[@]}" "${base[@]}" -b 0 --out "$tmp/keep.h5"
check "usage error: existing output untouched" cmp -s "$tmp/run.h5" "$tmp/keep.h5"
expect 2 "nosuch" -- "${q[@]}" "${base[@]}" -bs 8 --ignore nosuch --out "$tmp/keep.h5"
check "failed quantization: existing output untouched" cmp -s "$tmp/run.h5" "$tmp/keep.h5"
# the save itself fails (its temporary name is taken by a directory)
mkdir "$tmp/keep.h5.tmp"
expect 1 "keep.h5.tmp: cannot create the file" -- "${q[@]}" "${base[@]}" -bs 8 -b 2 \
  --out "$tmp/keep.h5" --log "$tmp/fail.csv"
check "failed save: existing output untouched" cmp -s "$tmp/run.h5" "$tmp/keep.h5"
check "failed save: no log row" [ ! -e "$tmp/fail.csv" ]
rmdir "$tmp/keep.h5.tmp"
expect 0 "saved" -- "${q[@]}" "${base[@]}" -bs 8 -b 2 --out "$tmp/keep.h5"
check "a successful run replaces it" differ "$tmp/run.h5" "$tmp/keep.h5"
check "no temporary file left" [ ! -e "$tmp/keep.h5.tmp" ]

if [ "$failures" -ne 0 ]; then
  echo "$failures quantize CLI check(s) failed"
  exit 1
fi
echo "all quantize CLI checks passed"
