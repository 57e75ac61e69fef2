#!/usr/bin/env bash
# Rewrites the seed corpus fuzz/corpus/<harness>/ from the files the tests make:
# model fixtures (most without their /check group, some in HDF5's newest
# layout, one quantized by `gpfq quantize`), IDX files from test_data, CIFAR-10
# batches, the shipped job files, and the results file of a tiny sweep.
#
#   fuzz/make_corpus.sh [BUILD_DIR]     # a normal build (default: build)
#
# Needs /usr/bin/python3 with h5py and numpy. The seeds are committed; rerun
# only when a format changes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
gpfq=$build/gpfq test_data=$build/tests/test_data
fixtures=$root/tests/fixtures corpus=$root/fuzz/corpus
python=${GPFQ_PYTHON:-/usr/bin/python3}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

rm -rf "$corpus"
mkdir -p "$corpus"/{model,idx,cifar,job,results}

# ---- data: IDX (tiny, plain and gzip) and CIFAR-10 ----
"$test_data" --write-idx "$tmp/data" 2
"$python" - "$tmp/data" "$corpus" <<'PY'
import gzip, struct, sys
data, corpus = sys.argv[1], sys.argv[2]
def idx_images(n, h, w):
    return struct.pack(">IIII", 0x803, n, h, w) + bytes((k * 7) % 256 for k in range(n * h * w))
def idx_labels(n):
    return struct.pack(">II", 0x801, n) + bytes(k % 10 for k in range(n))
def put(name, blob):
    open(f"{corpus}/{name}", "wb").write(blob)
img, lab = idx_images(3, 4, 5), idx_labels(3)
put("idx/images_plain", b"\0" + img)
put("idx/images_gz", b"\0" + gzip.compress(img, mtime=0))
put("idx/labels_plain", b"\1" + lab)
put("idx/labels_gz", b"\1" + gzip.compress(lab, mtime=0))
put("idx/both_plain", b"\2" + img + b"IDX-LABELS" + lab)
put("idx/both_gz", b"\2" + gzip.compress(img, mtime=0) + b"IDX-LABELS" + gzip.compress(lab, mtime=0))
test_img = open(f"{data}/t10k-images-idx3-ubyte.gz", "rb").read()
test_lab = open(f"{data}/t10k-labels-idx1-ubyte", "rb").read()
put("idx/test_data_split", b"\2" + test_img + b"IDX-LABELS" + test_lab)
def cifar(n, first_label=0):
    return b"".join(bytes([(first_label + i) % 10]) + bytes((i + k) % 256 for k in range(3072))
                    for i in range(n))
put("cifar/one_record", cifar(1))
put("cifar/two_records_gz", gzip.compress(cifar(2, 3), mtime=0))
put("cifar/two_files", cifar(1, 7) + b"CIFAR-NEXT" + gzip.compress(cifar(1, 9), mtime=0))
PY

# ---- models ----
"$python" - "$fixtures" "$corpus/model" <<'PY'
import h5py, sys
fixtures, out = sys.argv[1], sys.argv[2]
def copy(src, dst, keep_check, libver):
    with h5py.File(src, "r") as f, h5py.File(dst, "w", libver=libver) as g:
        for k, v in f.attrs.items():
            g.attrs[k] = v
        for name in f:
            if name != "check" or keep_check:
                f.copy(f[name], g, name)
plain = ["op_linear", "op_flatten", "op_conv2d_3x3", "op_conv2d_groups2", "op_batchnorm2d",
         "op_maxpool2d_k2s2", "op_avgpool2d_k3s2p1_excpad", "op_adaptive_avgpool2d_2x2",
         "op_add", "op_identity_dropout", "op_defaults", "model_lenet_small",
         "model_resnet_small"]
for name in plain:
    copy(f"{fixtures}/{name}.h5", f"{out}/{name}.h5", False, "earliest")
for name in ["op_linear_nobias", "op_conv2d_dilation2", "op_maxpool2d_ceil_pad1"]:
    copy(f"{fixtures}/{name}.h5", f"{out}/{name}_latest.h5", False, "latest")
copy(f"{fixtures}/op_relu.h5", f"{out}/op_relu_check.h5", True, "latest")
PY
# relative paths: the files keep them in their provenance
cd "$root"
"$gpfq" quantize --model tests/fixtures/model_lenet_small.h5 --data-dir "$tmp/data" -b 3 -bs 4 \
  --limit 4 --out "$corpus/model/lenet_small_quantized.h5" >/dev/null

# ---- jobs ----
cp "$root"/jobs/*.yaml "$corpus/job/"
cat >"$corpus/job/tiny_sweep.yaml" <<YAML
model: tests/fixtures/model_lenet_small.h5
dataset: {name: fashion-mnist, data_dir: data}
calibration: {images: 16, mode: per-layer, unfold: kernel, replacement: true}
output: out.h5
cache: cache.h5
eval: {batch: 8, limit: 20}
options: {fold_bn: false, bias_correction: true, form: gram, ignore: [fc1, fc2]}
grid:
  method: [gpfq, msq]
  bits: [2, 4]
  regularizer: [none, L1]
  lambda: {start: 0.1, stop: 0.3, step: 0.1}
  stochastic: false
  seed: [0, 1]
YAML
printf '%s\n' "model: lenet5" "output: r.h5" "grid: {mlp_scalar: 1.5, cnn_scalar: [1, 2]}" \
  "#overrides" "bits=2:6:2" "scalar=1.1,1.2" "method=msq" "percentile=0.99" "seed=3" \
  >"$corpus/job/with_overrides.yaml"

# ---- results: a two-task sweep ----
cat >"$tmp/job.yaml" <<YAML
model: tests/fixtures/model_lenet_small.h5
dataset: {name: fashion-mnist, data_dir: $tmp/data}
calibration: {images: 4}
output: $tmp/out.h5
eval: {limit: 4}
grid:
  method: [gpfq, msq]
  bits: 2
YAML
"$gpfq" sweep "$tmp/job.yaml" >/dev/null
cp "$tmp/out.h5" "$corpus/results/two_tasks.h5"

# ---- the same with fixed-length string attributes ----
# gpfq and h5py write variable-length strings, which libhdf5 reads from a global
# heap whose corruption it often does not survive; these copies let the fuzzers
# get past the strings to the rest of the readers
"$python" - "$corpus" <<'PY'
import h5py, numpy as np, sys
corpus = sys.argv[1]
def fixed(v):
    return np.bytes_(v.encode() if isinstance(v, str) else v) if isinstance(v, (str, bytes)) else v
def copy_fixed(src, dst):
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        for k, v in f.attrs.items():
            g.attrs[k] = fixed(v)
        def visit(name, obj):
            new = g.require_group(name) if isinstance(obj, h5py.Group) else \
                g.create_dataset(name, data=obj[...])
            for k, v in obj.attrs.items():
                new.attrs[k] = fixed(v)
        f.visititems(visit)
for name in ["op_linear", "op_conv2d_3x3", "op_batchnorm2d", "op_maxpool2d_k2s2", "op_add",
             "op_adaptive_avgpool2d_2x2", "lenet_small_quantized"]:
    copy_fixed(f"{corpus}/model/{name}.h5", f"{corpus}/model/{name}_fixedstr.h5")
copy_fixed(f"{corpus}/results/two_tasks.h5", f"{corpus}/results/two_tasks_fixedstr.h5")
PY
du -sh "$corpus"
