#!/usr/bin/env bash
# gpfq against a PyTorch GPFQ written the way the research code runs it
# (bench/torch_gpfq.py, "the peer"), every figure measured side by side in this
# run, printed as one table of ratios. See bench/README.md and docs/performance.md.
#
#   bench/run.sh [--quick]
#
# --quick: mlp and lenet5 only (default: also resnet20 and resnet18).
# Environment: PYTHON (default /usr/bin/python3, needs torch, numpy, h5py),
# GPFQ (default build/gpfq), GPFQ_FORMS (default build/bench/gpfq_forms, for the
# sgemm peak; skipped when missing), CONV_KERNELS (default build/bench/conv_kernels,
# for the cores' FMA peak and the passes' floors; skipped when missing),
# DATA_DIR (default /usr/share/datasets/fashion-mnist),
# SMALL_REPEATS (default 3: mlp, lenet5 and resnet20 single runs, best of that many per side).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-/usr/bin/python3}
GPFQ=${GPFQ:-$ROOT/build/gpfq}
GPFQ_FORMS=${GPFQ_FORMS:-$ROOT/build/bench/gpfq_forms}
CONV_KERNELS=${CONV_KERNELS:-$ROOT/build/bench/conv_kernels}
DATA_DIR=${DATA_DIR:-/usr/share/datasets/fashion-mnist}
TUNABLES=glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=68719476736
THREADS=2
SMALL_REPEATS=${SMALL_REPEATS:-3}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

quick=0
while [ $# -gt 0 ]; do
    case $1 in
    --quick) quick=1 ;;
    -h | --help)
        sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "run.sh: unknown option '$1' (see --help)" >&2
        exit 2
        ;;
    esac
    shift
done
models=(mlp lenet5)
[ "$quick" -eq 1 ] || models+=(resnet20 resnet18)

die() {
    echo "run.sh: $*" >&2
    exit 1
}
"$PYTHON" -c 'import torch, numpy, h5py' 2>/dev/null || die "$PYTHON cannot import torch, numpy, h5py"
[ -x "$GPFQ" ] || die "no $GPFQ (build first: cmake -S . -B build && cmake --build build -j2)"
[ -x /usr/bin/time ] || die "needs /usr/bin/time (Debian package 'time')"
[ -d "$DATA_DIR" ] || die "no data directory $DATA_DIR"
command -v mpirun >/dev/null || die "no mpirun"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gpfq-run.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
load_start=$(loadavg)
started=$(date +%s)
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
gpfq_env=$("$GPFQ" env) # one run: gpfq env starts MPI, half a second
blas=$(sed -n 's/^blas *//p' <<<"$gpfq_env")
conv=$(sed -n 's/^conv *//p' <<<"$gpfq_env")
gemm=$(sed -n 's/^gemm *//p' <<<"$gpfq_env")
winograd=$(sed -n 's/^winograd *//p' <<<"$gpfq_env")
interleave=$(sed -n 's/^interleave *//p' <<<"$gpfq_env")
memory=$(sed -n 's/^memory *//p' <<<"$gpfq_env")

echo "bench/run.sh$([ "$quick" -eq 1 ] && echo " --quick"), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine   $(nproc) CPUs, ${cpu:-unknown CPU}, Linux $(uname -r)"
echo "gpfq      $GPFQ, git $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src include 2>/dev/null || echo ' + uncommitted changes in src/include')"
echo "OpenBLAS  $blas; OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE-(unset)}"
echo "conv      $conv"
echo "winograd  $winograd"
echo "interleave $interleave"
echo "memory    $memory"
echo "torch     $("$PYTHON" -c 'import torch; print(torch.__version__)'), torch.set_num_threads($THREADS); the peer runs with and without GLIBC_TUNABLES=$TUNABLES OPENBLAS_THREAD_TIMEOUT=4; gpfq with GLIBC_TUNABLES=${GLIBC_TUNABLES-(unset)} (and sets OPENBLAS_THREAD_TIMEOUT=4 itself)"
# the cores' FMA peak now: this VM's clock, and with it the peak, varies from hour to hour
fma=
[ -x "$CONV_KERNELS" ] && fma=$("$CONV_KERNELS" --fma-peak --threads $THREADS |
    sed -n 's/^fma peak [0-9]* threads \([0-9.]*\) GFLOP\/s.*/\1/p')
echo "FMA peak  ${fma:-not measured (no $CONV_KERNELS)}${fma:+ GFLOP/s, $THREADS threads ($CONV_KERNELS --fma-peak)}"
echo "load      $load_start at start"
echo

# ---- helpers ----

# timed OUT CMD...: runs CMD, stdout+stderr to OUT; wall seconds and peak RSS (MB)
# of the process tree's largest process to OUT.time as "WALL RSS_MB".
timed() {
    local out=$1
    shift
    if ! /usr/bin/time -f '%e %M' -o "$out.time" "$@" >"$out" 2>&1; then
        cat "$out" >&2
        die "failed: $*"
    fi
    awk '{ printf "%s %.0f\n", $1, $2 / 1024 }' "$out.time" >"$out.t"
    mv "$out.t" "$out.time"
}
wall() { cut -d' ' -f1 "$1.time"; }
rss() { cut -d' ' -f2 "$1.time"; }
# The peer's tuned environment: glibc's malloc keeps freed memory, and OpenBLAS's idle
# threads sleep at once, as gpfq sets for itself (torch calls OpenBLAS too).
peer() { # OUT yes|no CMD...: timed, in the tuned environment or in a plain one
    local out=$1 tun=$2
    shift 2
    if [ "$tun" = yes ]; then
        timed "$out" env GLIBC_TUNABLES="$TUNABLES" OPENBLAS_THREAD_TIMEOUT=4 "$@"
    else
        timed "$out" env -u GLIBC_TUNABLES -u OPENBLAS_THREAD_TIMEOUT "$@"
    fi
}

# gpfq quantize output
g_quant() { sed -n 's/^quantized [0-9]* layers in \([0-9.]*\) s.*/\1/p' "$1"; }
g_eval() {
    sed -n 's/^\(float\|quantized\) *top-1.*images, \([0-9.]*\) s).*/\2/p' "$1" |
        awk '{ s += $1 } END { printf "%.3f", s }'
}
g_top1() { sed -n 's/^quantized *top-1 *\([0-9.]*\)%.*/\1/p' "$1"; }
# of the quantize, the image draws and the forward passes to the layers' inputs (both tools
# print it in the same form)
passes() { sed -n 's/^quantized [0-9]* layers in [0-9.]* s (forward passes \([0-9.]*\) s).*/\1/p' "$1"; }
minus() { # A B: A - B, or - when either is missing
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-") print "-"; else printf "%.4f", a - b }'
}
# the least time the --reference passes' multiply-adds take at the FMA peak (bench/pass_floor.py)
floor_of() { # ARCH
    [ -n "$fma" ] || return 0
    "$PYTHON" bench/pass_floor.py --arch "$1" -bs 256 --fma-gflops "$fma" |
        sed -n 's/^json .*"floor_s": \([0-9.e-]*\).*/\1/p' | awk '{ printf "%.6f", $1 }'
}
# torch_gpfq.py output
p_quant() { sed -n 's/^seconds  quantize \([0-9.]*\),.*/\1/p' "$1"; }
p_eval() { sed -n 's/^seconds  .*, eval \([0-9.]*\) .*/\1/p' "$1"; }
p_top1() { sed -n 's/^quantized top-1 *\([0-9.]*\)%.*/\1/p' "$1"; }
# eval speed lines: "speed    N images/s (S s, ..."
ips() { sed -n 's/^speed *\([0-9.]*\) images\/s.*/\1/p' "$1"; }

pick_best() { # BASE PARSER N: copies the one of BASE.1 .. BASE.N whose PARSER value is least to BASE
    local best="" v r
    for r in $(seq "$3"); do
        v=$("$2" "$1.$r")
        [ -n "$v" ] || continue
        if [ -z "$best" ] || awk -v a="$v" -v b="$best" 'BEGIN { exit !(a < b) }'; then
            best=$v
            cp "$1.$r" "$1"
            cp "$1.$r.time" "$1.time"
        fi
    done
    [ -n "$best" ] || { cp "$1.1" "$1" && cp "$1.1.time" "$1.time"; }
}

ratio() { # A B: A / B, or - when either is missing
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.1f", a / b }'
}

rows=()
row() { # label gpfq peer_tun peer_notun  (ratio = peer / gpfq: > 1 means gpfq is ahead)
    rows+=("$(printf '%-46s %12s %12s %12s %7s %7s' "$1" "$2" "$3" "$4" "$(ratio "$3" "$2")" "$(ratio "$4" "$2")")")
}
rrow() { # label gpfq peer_tun peer_notun  (rates: ratio = gpfq / peer)
    rows+=("$(printf '%-46s %12s %12s %12s %7s %7s' "$1" "$2" "$3" "$4" "$(ratio "$2" "$3")" "$(ratio "$2" "$4")")")
}
notes=()

model_file() { # NAME: prints the model file, exports random weights when none is shipped
    local f=$ROOT/data/models/$1_fashion.h5
    if [ ! -f "$f" ]; then
        f=$tmp/$1_random.h5
        if [ ! -f "$f" ]; then
            "$PYTHON" tools/export_torch.py --arch "$1" --seed 0 --out "$f" >"$tmp/export.log" 2>&1 ||
                {
                    cat "$tmp/export.log" >&2
                    die "export of $1 failed"
                }
        fi
    fi
    echo "$f"
}
weights_note() {
    if [ -f "$ROOT/data/models/$1_fashion.h5" ]; then echo "trained, data/models/$1_fashion.h5"; else echo "RANDOM weights (no data/models/$1_fashion.h5; tools/export_torch.py --arch $1 --seed 0): accuracies are chance level, timings are valid"; fi
}
images_for() { case $1 in mlp | lenet5) echo 10000 ;; *) echo 2000 ;; esac; }
# eval throughput: all test images but on resnet18, so that a first batch (gpfq's is timed,
# torch's warm-up batch is not) weighs little
eval_images_for() { case $1 in resnet18) echo 2000 ;; *) echo 10000 ;; esac; }

# ---- 1. one configuration per model: quantize and eval ----

echo "== single runs: -b 4 -bs 256 -s 1.16 (peer: bench/torch_gpfq.py, reference options) =="
for m in "${models[@]}"; do
    f=$(model_file "$m")
    n=$(images_for "$m")
    echo "$m: $(weights_note "$m"); evaluation on $n test images"
    [ "$n" = 10000 ] || notes+=("$m: float and quantized evaluation on the first $n test images on both sides")
    o=$tmp/$m
    # mlp, lenet5, resnet20: best of $SMALL_REPEATS runs per side (interleaved): single runs
    # vary with the machine's state (the peer's resnet20 quantize: 3.4-8.3 s in one hour)
    reps=1
    case $m in mlp | lenet5 | resnet20) reps=$SMALL_REPEATS ;; esac
    [ "$reps" -eq 1 ] || notes+=("$m single runs: best of $reps per side (by quantize time), the four commands interleaved")
    for r in $(seq "$reps"); do
        timed "$o.gref.$r" "$GPFQ" quantize -model "$f" -b 4 -bs 256 -s 1.16 --reference --threads $THREADS \
            --limit "$n" --no-save
        timed "$o.gdef.$r" "$GPFQ" quantize -model "$f" -b 4 -bs 256 -s 1.16 --limit "$n" --no-save
        for tun in yes no; do
            peer "$o.p$tun.$r" $tun "$PYTHON" bench/torch_gpfq.py --model "$f" --arch "$m" \
                -b 4 -bs 256 -s 1.16 --threads $THREADS --eval-images "$n" --quiet
        done
    done
    pick_best "$o.gref" g_quant "$reps"
    pick_best "$o.gdef" g_quant "$reps"
    pick_best "$o.pyes" p_quant "$reps"
    pick_best "$o.pno" p_quant "$reps"
    printf '  %-34s quantize %8s s  eval %7s s  wall %7s s  top-1 %6s%%  RSS %5s MB\n' \
        "gpfq --reference --threads 2" "$(g_quant "$o.gref")" "$(g_eval "$o.gref")" "$(wall "$o.gref")" "$(g_top1 "$o.gref")" "$(rss "$o.gref")" \
        "gpfq (defaults)" "$(g_quant "$o.gdef")" "$(g_eval "$o.gdef")" "$(wall "$o.gdef")" "$(g_top1 "$o.gdef")" "$(rss "$o.gdef")" \
        "peer, tuned environment" "$(p_quant "$o.pyes")" "$(p_eval "$o.pyes")" "$(wall "$o.pyes")" "$(p_top1 "$o.pyes")" "$(rss "$o.pyes")" \
        "peer, plain environment" "$(p_quant "$o.pno")" "$(p_eval "$o.pno")" "$(wall "$o.pno")" "$(p_top1 "$o.pno")" "$(rss "$o.pno")"
    row "$m quantize s, --reference --threads 2" "$(g_quant "$o.gref")" "$(p_quant "$o.pyes")" "$(p_quant "$o.pno")"
    # the same split into the passes both tools make and the rest (patches, GPFQ, weights):
    # the quantize's ratio lies between the two parts' ratios
    row "  of it, draws and forward passes s" "$(passes "$o.gref")" "$(passes "$o.pyes")" "$(passes "$o.pno")"
    row "  of it, the rest (patches, GPFQ loops) s" "$(minus "$(g_quant "$o.gref")" "$(passes "$o.gref")")" \
        "$(minus "$(p_quant "$o.pyes")" "$(passes "$o.pyes")")" "$(minus "$(p_quant "$o.pno")" "$(passes "$o.pno")")"
    # how far ahead gpfq could be with the rest at no cost: the peer's quantize / gpfq's passes
    row "  ceiling: peer quantize / gpfq passes" "$(passes "$o.gref")" "$(p_quant "$o.pyes")" "$(p_quant "$o.pno")"
    # and with the passes' products at the FMA peak (best Winograd tile, transforms free):
    # what no implementation of the reference's options passes on this machine
    fl=$(floor_of "$m")
    row "  floor: peer quantize / passes at FMA peak" "${fl:--}" "$(p_quant "$o.pyes")" "$(p_quant "$o.pno")"
    row "$m quantize s, gpfq defaults" "$(g_quant "$o.gdef")" "$(p_quant "$o.pyes")" "$(p_quant "$o.pno")"
    row "$m eval s, float + quantized, $n img" "$(g_eval "$o.gref")" "$(p_eval "$o.pyes")" "$(p_eval "$o.pno")"
    row "$m whole process s, --reference" "$(wall "$o.gref")" "$(wall "$o.pyes")" "$(wall "$o.pno")"
    row "$m peak RSS MB, --reference" "$(rss "$o.gref")" "$(rss "$o.pyes")" "$(rss "$o.pno")"
done
echo

# ---- 2. the studies: gpfq sweep against a loop of single peer runs ----

lenet=$(model_file lenet5)
study_job() { # NAME MODE(reference|defaults) GRID-LINES...
    local name=$1 mode=$2
    shift 2
    {
        echo "model: $lenet"
        echo "dataset: fashion-mnist"
        if [ "$mode" = reference ]; then
            echo "calibration: {images: 256, mode: per-layer, unfold: kernel, replacement: true, retain_rate: 0.25, seed: 0}"
        else
            echo "calibration: {images: 256, seed: 0}"
        fi
        echo "output: $tmp/$name.h5"
        echo "grid:"
        echo "  method: gpfq"
        printf '  %s\n' "$@"
    } >"$tmp/$name.yaml"
}
sweep_mem() { sed -n 's/^memory *peak RSS \/ PSS per rank (MB): *//p' "$1"; }

# study NAME COUNT "GRID..." PEER_FLAG "PEER VALUES" LABEL "GRID TEXT"
study() {
    local name=$1 count=$2 grid=$3 flag=$4 values=$5 label=$6 all=$7
    local -a gridlines
    IFS='|' read -r -a gridlines <<<"$grid"
    echo "$label ($flag $all): $count configurations, lenet5 ($(weights_note lenet5 | cut -d, -f1))"
    for mode in reference defaults; do
        study_job "$name-$mode" "$mode" "${gridlines[@]}"
        local got
        got=$("$GPFQ" sweep --dry-run "$tmp/$name-$mode.yaml" | sed -n '1s/^\([0-9]*\) tasks.*/\1/p')
        [ "$got" = "$count" ] || echo "  (warning: the job has $got tasks, expected $count)"
        timed "$tmp/$name-$mode.out" mpirun -n 2 "$GPFQ" sweep "$tmp/$name-$mode.yaml"
        echo "  mpirun -n 2 gpfq sweep, $([ "$mode" = reference ] && echo "the reference's options" || echo "gpfq's defaults"): $(wall "$tmp/$name-$mode.out") s wall;" \
            "memory per rank (RSS/PSS MB): $(sweep_mem "$tmp/$name-$mode.out")"
    done
    local k=0 tun v sum est peer_yes peer_no
    for tun in yes no; do
        sum=0 k=0
        for v in $values; do
            peer "$tmp/$name-p$tun-$v" $tun "$PYTHON" bench/torch_gpfq.py --model "$lenet" \
                --arch lenet5 -bs 256 "$flag" "$v" --threads $THREADS --quiet
            sum=$(awk -v a="$sum" -v b="$(wall "$tmp/$name-p$tun-$v")" 'BEGIN { print a + b }')
            k=$((k + 1))
        done
        est=$(awk -v s="$sum" -v k=$k -v n="$count" 'BEGIN { printf "%.1f", s / k * n }')
        if [ $tun = yes ]; then peer_yes=$est; else peer_no=$est; fi
        echo "  peer loop, $([ $tun = yes ] && echo tuned || echo plain) environment: $k runs ($flag $values) in $sum s, extrapolated x$count/$k"
    done
    row "$label, sweep --reference, s" "$(wall "$tmp/$name-reference.out")" "$peer_yes" "$peer_no"
    row "$label, sweep defaults, s" "$(wall "$tmp/$name-defaults.out")" "$peer_yes" "$peer_no"
    notes+=("$label: peer loop = separate torch_gpfq.py processes (each loads, evaluates float and quantized on 10000 images); timed on $k of $count configurations ($flag $values) and extrapolated linearly; sweep = wall time of mpirun -n 2 gpfq sweep (1 BLAS thread per rank), GPFQ only")
    notes+=("$label memory per rank (RSS/PSS MB): --reference options $(sweep_mem "$tmp/$name-reference.out"); defaults $(sweep_mem "$tmp/$name-defaults.out")")
}

echo "== studies: mpirun -n 2 gpfq sweep against a loop of peer runs =="
study scalar 21 "bits: 4|scalar: {start: 1.0, stop: 2.0, step: 0.05}" -s "1.0 1.5 2.0" "scalar study 21 cfg" "1.0:2.0:0.05, 4 bits"
study bits 8 "bits: {start: 1, stop: 8, step: 1}|scalar: 1.16" -b "1 4 8" "bits study 8 cfg" "1..8, scalar 1.16"
echo

# ---- 3. eval throughput and GFLOP/s of the forward pass ----

peak=
peak_note="no $GPFQ_FORMS: sgemm peak not measured, no %-of-peak figures"
if [ -x "$GPFQ_FORMS" ]; then
    if "$GPFQ_FORMS" --models mlp --forms gram --threads $THREADS >"$tmp/forms.out" 2>&1; then
        peak=$(sed -n 's/.*sgemm \([0-9]*\)^3 peak \([0-9.]*\) GFLOP\/s.*/\2/p' "$tmp/forms.out" | head -n1)
        pn=$(sed -n 's/.*sgemm \([0-9]*\)^3 peak \([0-9.]*\) GFLOP\/s.*/\1/p' "$tmp/forms.out" | head -n1)
        if [ -n "$peak" ]; then
            peak_note="sgemm peak $peak GFLOP/s (cblas_sgemm ${pn}^3, $THREADS threads, $GPFQ_FORMS, measured in this run)"
        else
            peak_note="$GPFQ_FORMS printed no sgemm peak: no %-of-peak figures"
        fi
    else
        peak_note="$GPFQ_FORMS failed: no %-of-peak figures"
    fi
fi

flops_of() { # ARCH: forward flops per image (2 x multiply-adds of Conv2d and Linear)
    "$PYTHON" - "$1" <<'PY'
import sys
sys.path.insert(0, "tools")
import torch, models_torch
net = models_torch.build(sys.argv[1]).eval()
tot = [0]
def hook(m, i, o):
    if isinstance(m, torch.nn.Conv2d):
        tot[0] += 2 * (o.numel() // o.shape[0]) * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
    elif isinstance(m, torch.nn.Linear):
        tot[0] += 2 * m.in_features * m.out_features
for mod in net.modules():
    mod.register_forward_hook(hook)
with torch.no_grad():
    net(torch.zeros(1, 1, 28, 28))
print(tot[0])
PY
}
gflops() { # FLOPS_PER_IMAGE IMAGES_PER_S
    awk -v f="$1" -v r="$2" 'BEGIN { if (r == "") print "-"; else printf "%.2f", f * r / 1e9 }'
}
pct() { awk -v g="$1" -v p="$peak" 'BEGIN { if (p == "" || g == "-") print ""; else printf " (%.0f%%)", 100 * g / p }'; }

echo "== eval throughput: gpfq eval vs bench/torch_eval.py, batch 256, $THREADS threads, one timed run each =="
for m in "${models[@]}"; do
    f=$(model_file "$m")
    n=$(eval_images_for "$m")
    o=$tmp/$m.ev
    "$GPFQ" eval --model "$f" --data-dir "$DATA_DIR" --limit 256 --batch 256 --threads $THREADS >/dev/null 2>&1 || true
    timed "$o.g" "$GPFQ" eval --model "$f" --data-dir "$DATA_DIR" --limit "$n" --batch 256 --threads $THREADS
    peer "$o.tyes" yes "$PYTHON" bench/torch_eval.py --model "$f" --arch "$m" --images "$n" \
        --batch 256 --threads $THREADS --data-dir "$DATA_DIR"
    peer "$o.tno" no "$PYTHON" bench/torch_eval.py --model "$f" --arch "$m" --images "$n" \
        --batch 256 --threads $THREADS --data-dir "$DATA_DIR" --no-check
    # the same with gpfq's GEMMs on OpenBLAS, with the kernel the environment gives it
    timed "$o.gblas" env GPFQ_GEMM=openblas "$GPFQ" eval --model "$f" --data-dir "$DATA_DIR" \
        --limit "$n" --batch 256 --threads $THREADS
    blas_kernel=$(sed -n 's/^speed .* \([A-Za-z0-9]*\) kernel).*/\1/p' "$o.gblas")
    fl=$(flops_of "$m")
    g=$(ips "$o.g") ty=$(ips "$o.tyes") tn=$(ips "$o.tno") gb=$(ips "$o.gblas")
    echo "  $m ($n images, $(awk -v f="$fl" 'BEGIN { printf "%.2f", f / 1e6 }') MFLOP/image): gpfq $g img/s ($gb with its GEMMs on OpenBLAS's $blas_kernel kernel), torch $ty img/s (tunables) / $tn img/s (none); torch: $(sed -n 's/^torch *//p' "$o.tyes")"
    rrow "$m eval images/s" "$g" "$ty" "$tn"
    rrow "$m eval images/s, GEMMs on OpenBLAS ($blas_kernel)" "$gb" "$ty" "$tn"
    gg=$(gflops "$fl" "$g") gy=$(gflops "$fl" "$ty") gn=$(gflops "$fl" "$tn")
    # the cells carry the share of the sgemm peak; the ratios are of the bare numbers
    rows+=("$(printf '%-46s %12s %12s %12s %7s %7s' "$m forward GFLOP/s (% of sgemm peak)" \
        "$gg$(pct "$gg")" "$gy$(pct "$gy")" "$gn$(pct "$gn")" "$(ratio "$gg" "$gy")" "$(ratio "$gg" "$gn")")")
done
echo "  $peak_note"
echo

load_end=$(loadavg)
elapsed=$(($(date +%s) - started))

# ---- the table ----
echo "== ratios (load average $load_start at start, $load_end at end; $elapsed s) =="
printf '%-46s %12s %12s %12s %7s %7s\n' "figure" "gpfq" "peer tun" "peer none" "x tun" "x none"
printf '%s\n' "${rows[@]}"
echo
echo "peer tun / peer none: torch with GLIBC_TUNABLES=$TUNABLES OPENBLAS_THREAD_TIMEOUT=4 / without them."
echo "x: how many times gpfq is ahead (peer time / gpfq time, gpfq rate / peer rate,"
echo "   peer RSS / gpfq RSS); > 1 means gpfq is faster or smaller."
echo "quantize s: the loop over the layers as each tool reports it (image draws, forward"
echo "   passes, patches, GPFQ, weights), without loading model and data; the peer runs"
echo "   the reference's options, gpfq --reference the same, gpfq defaults its own"
echo "   (shared calibration, layer-stride unfolding, no replacement)."
echo "ceiling: the ratio were gpfq's rest free; floor: were also its passes' multiply-adds"
echo "   (bench/pass_floor.py: the layers' ancestors, 3x3 stride-1 convs on the best of"
echo "   Winograd F(2x2), F(4x4), F(6x6), transforms free) run at the FMA peak (${fma:-not measured})."
echo "eval: images/s over the whole timed loop (normalize, forward, top-k), one run per"
echo "   side; GFLOP/s = Conv2d+Linear flops per image x images/s; $peak_note."
echo "OpenBLAS kernel (gpfq): $blas"
echo "GEMM kernel (gpfq): $gemm"
echo "conv kernel (gpfq): $conv"
echo "winograd (gpfq): $winograd"
echo "interleave (gpfq): $interleave"
echo "memory (gpfq): $memory"
for n in "${notes[@]}"; do echo "note: $n"; done
for m in "${models[@]}"; do echo "weights: $m: $(weights_note "$m")"; done
echo "load average: $load_start at start, $load_end at end ($(nproc) CPUs)"
if awk -v a="${load_start%% *}" -v b="${load_end%% *}" -v c="$(nproc)" 'BEGIN { exit !(a > 0.5 || b > 0.5) }'; then
    echo "WARNING: the machine was not idle (1-minute load average above 0.5): other processes"
    echo "         competed for the CPUs, and figures taken under load are not representative."
fi
