#!/usr/bin/env bash
# Eval throughput of `gpfq eval` next to PyTorch on the same machine, thread count,
# images, batch size and weights, measured in the same run. See bench/README.md.
#
#   bench/eval_throughput.sh [--threads N] [--images N] [--batch B]
#                            [--models lenet5,resnet18] [--repeat R] [--data-dir DIR]
#
# Environment: PYTHON (default /usr/bin/python3, needs torch, numpy, h5py),
# GPFQ (default build/gpfq; built with cmake when missing).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-/usr/bin/python3}
GPFQ=${GPFQ:-$ROOT/build/gpfq}
# glibc's malloc trimming makes torch much slower on small machines; torch runs
# with these tunables (gpfq runs with the environment as it is).
TORCH_TUNABLES=glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=68719476736

threads=2
images=
batch=256
models=lenet5,resnet18
repeat=3
data_dir=/usr/share/datasets/fashion-mnist

usage() {
    cat <<EOF
usage: bench/eval_throughput.sh [--threads N] [--images N] [--batch B]
                                [--models LIST] [--repeat R] [--data-dir DIR]

Prints the eval throughput (images/s) of gpfq and PyTorch for each model, on the
same weights, images, batch size and thread count, and their ratio.

  --threads N     BLAS threads for gpfq, torch.set_num_threads for torch (default 2)
  --images N      first N Fashion-MNIST test images (default 10000 for lenet5 and
                  mlp, 2000 for resnet18 and resnet20)
  --batch B       images per forward pass (default 256)
  --models LIST   comma-separated tools/models_torch.py names (default lenet5,resnet18)
  --repeat R      timed runs per side, alternating gpfq and torch; the best is
                  reported (default 3)
  --data-dir DIR  Fashion-MNIST directory (default $data_dir)

A model uses data/models/<name>_fashion.h5 when it exists, else a random-weight
model exported with tools/export_torch.py --arch <name> (seed 0).
EOF
}

die() {
    echo "eval_throughput.sh: $*" >&2
    exit 2
}

need_int() { # name value
    [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 needs a positive integer, got '$2'"
}

while [ $# -gt 0 ]; do
    case $1 in
    --threads | --images | --batch | --models | --repeat | --data-dir)
        [ $# -ge 2 ] || die "option '$1' needs a value"
        case $1 in
        --threads) need_int "$1" "$2" && threads=$2 ;;
        --images) need_int "$1" "$2" && images=$2 ;;
        --batch) need_int "$1" "$2" && batch=$2 ;;
        --repeat) need_int "$1" "$2" && repeat=$2 ;;
        --models) models=$2 ;;
        --data-dir) data_dir=$2 ;;
        esac
        shift 2
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown option '$1' (see --help)" ;;
    esac
done

"$PYTHON" -c 'import torch, numpy, h5py' 2>/dev/null ||
    die "$PYTHON cannot import torch, numpy and h5py (set PYTHON)"
[ -d "$data_dir" ] || die "no data directory $data_dir"
if [ ! -x "$GPFQ" ]; then
    echo "building $GPFQ ..." >&2
    if ! { cmake -S "$ROOT" -B "$ROOT/build" && cmake --build "$ROOT/build" -j2; } >/dev/null; then
        die "cannot build gpfq"
    fi
fi

for m in ${models//,/ }; do
    case $m in
    mlp | lenet5 | resnet20 | resnet18) ;;
    *) die "unknown model '$m' (mlp, lenet5, resnet20, resnet18)" ;;
    esac
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gpfq-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
load_start=$(loadavg)
load1=${load_start%% *}
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)

torch_env=(env GLIBC_TUNABLES="$TORCH_TUNABLES" OMP_NUM_THREADS="$threads"
    MKL_NUM_THREADS="$threads")

# field KEY FILE: the text after "KEY " on the first line starting with KEY
field() { sed -n "s/^$1[[:space:]]*//p" "$2" | head -n1; }
# seconds FILE: the timed seconds of a "speed" line, "(1.234 s, ..."
seconds() { field speed "$1" | sed -n 's/^[0-9.]* images\/s (\([0-9.]*\) s.*/\1/p'; }
top1() { field top-1 "$1" | cut -d' ' -f1; }

echo "gpfq eval vs PyTorch eval throughput, $(date '+%Y-%m-%d %H:%M %Z')"
echo "machine          $(nproc) CPUs, ${cpu:-unknown CPU}, $(uname -r)"
echo "load average     $load_start at start"
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
    echo "WARNING          the 1-minute load average is $load1 (> 0.5): other processes compete" \
        "for the CPUs and the figures are lower than on an idle machine. Busiest processes" \
        "(pid, %CPU over their lifetime, elapsed, command):"
    ps -eo pid=,pcpu=,etime=,args= --sort=-pcpu |
        awk -v me=$$ '$1 != me && $4 != "ps" && ++k <= 3 { sub(/^ */, ""); print substr($0, 1, 100) }' |
        sed 's/^/                 /'
fi
echo

rows=()
kernel=unknown
torch_version=unknown
for m in ${models//,/ }; do
    case $m in
    mlp | lenet5) n=${images:-10000} ;;
    *) n=${images:-2000} ;;
    esac
    file=$ROOT/data/models/${m}_fashion.h5
    if [ -f "$file" ]; then
        weights="trained, data/models/${m}_fashion.h5"
    else
        file=$tmp/$m.h5
        "${torch_env[@]}" "$PYTHON" "$ROOT/tools/export_torch.py" --arch "$m" --out "$file" \
            >"$tmp/export.log" 2>&1 || {
            cat "$tmp/export.log" >&2
            die "export of $m failed"
        }
        weights="random init (seed 0), tools/export_torch.py --arch $m"
    fi
    echo "$m: $weights"
    b=$((batch < n ? batch : n))

    # Warm-up: one batch in a separate process (page cache, CPU clock); the
    # timed gpfq process still pays for its own first batch, see below.
    "$GPFQ" eval --model "$file" --data-dir "$data_dir" --limit "$b" --batch "$b" \
        --threads "$threads" >"$tmp/gpfq.out" 2>&1 || {
        cat "$tmp/gpfq.out" >&2
        die "gpfq eval failed"
    }
    gpfq_cold=$(seconds "$tmp/gpfq.out")

    best_g=0 best_t=0 g_top1='' t_top1='' t_warm=''
    for ((r = 1; r <= repeat; r++)); do
        check=()
        [ "$r" -eq 1 ] || check=(--no-check) # compare with reference_forward once
        "$GPFQ" eval --model "$file" --data-dir "$data_dir" --limit "$n" --batch "$b" \
            --threads "$threads" >"$tmp/gpfq.out" 2>&1 || {
            cat "$tmp/gpfq.out" >&2
            die "gpfq eval failed"
        }
        "${torch_env[@]}" "$PYTHON" "$ROOT/bench/torch_eval.py" --model "$file" --arch "$m" \
            --images "$n" --batch "$b" --threads "$threads" --data-dir "$data_dir" \
            "${check[@]}" >"$tmp/torch.out" 2>&1 || {
            cat "$tmp/torch.out" >&2
            die "torch_eval.py failed"
        }
        if [ "$r" -eq 1 ]; then
            field weights "$tmp/torch.out" | sed 's/^/  torch weights: /'
            cp "$tmp/torch.out" "$tmp/torch1.out"
        fi
        gs=$(seconds "$tmp/gpfq.out")
        ts=$(seconds "$tmp/torch.out")
        g=$(awk -v n="$n" -v s="$gs" 'BEGIN { printf "%.0f", n / s }')
        t=$(awk -v n="$n" -v s="$ts" 'BEGIN { printf "%.0f", n / s }')
        echo "  run $r: gpfq $g images/s ($gs s), torch $t images/s ($ts s)"
        [ "$g" -gt "$best_g" ] && best_g=$g
        [ "$t" -gt "$best_t" ] && best_t=$t
        g_top1=$(top1 "$tmp/gpfq.out")
        t_top1=$(top1 "$tmp/torch.out")
        t_warm=$(field warmup "$tmp/torch.out" | cut -d' ' -f1)
        kernel=$(field speed "$tmp/gpfq.out" | sed -n 's/.*, \([^,]*\) kernel)$/\1/p')
    done
    echo "  torch $(field torch "$tmp/torch1.out")"
    torch_version=$(field torch "$tmp/torch1.out" | cut -d, -f1)
    echo "  warm-up batch of $b: gpfq ${gpfq_cold} s (fresh process), torch ${t_warm} s (in process)"
    ratio=$(awk -v g="$best_g" -v t="$best_t" 'BEGIN { printf "%.2f", g / t }')
    rows+=("$(printf '%-9s %6d %6d %7d %11d %12d %6s %11s %12s' "$m" "$n" "$b" "$threads" \
        "$best_g" "$best_t" "$ratio" "$g_top1" "$t_top1")")
done

echo
printf '%-9s %6s %6s %7s %11s %12s %6s %11s %12s\n' model images batch threads "gpfq img/s" \
    "torch img/s" ratio "gpfq top-1" "torch top-1"
printf '%s\n' "${rows[@]}"
echo
echo "img/s: best of $repeat alternating runs per side; ratio = gpfq / torch."
echo "timed: the batched loop over all images, on both sides including per-batch"
echo "       normalization (uint8 -> float, (x/255 - mean)/std) and the top-1/top-5 count;"
echo "       not timed: process start, model and data loading, torch's warm-up batch."
echo "       gpfq eval has no in-process warm-up, so its timed loop includes its first"
echo "       (cold) batch; torch's excludes one untimed warm-up batch."
echo "torch: nn.Module from tools/models_torch.py, weights loaded from the same .h5 file,"
echo "       model.eval(), torch.inference_mode(), torch.set_num_threads($threads)"
echo "       (torch $torch_version; conv kernels and torch's BLAS per model above)"
echo "OpenBLAS kernel  $kernel (gpfq eval)"
if [ -n "${OPENBLAS_CORETYPE+set}" ]; then
    auto=$(env -u OPENBLAS_CORETYPE "$GPFQ" env 2>/dev/null |
        sed -n 's/^blas.*, \([^,]*\) kernel,.*/\1/p')
    echo "OPENBLAS_CORETYPE ${OPENBLAS_CORETYPE:-(set, empty)} (OpenBLAS's own choice here would be ${auto:-unknown})"
else
    echo "OPENBLAS_CORETYPE (unset)"
fi
echo "GLIBC_TUNABLES   $TORCH_TUNABLES (set for torch; gpfq: ${GLIBC_TUNABLES-(unset)})"
echo "machine          nproc $(nproc), ${cpu:-unknown CPU}"
echo "load average     $load_start at start, $(loadavg) at end"
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
    echo "WARNING          the machine was not idle (1-minute load average $load1 > 0.5 at start)"
fi
