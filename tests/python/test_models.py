"""The model architectures and the shipped models, checked end to end against
the gpfq binary (GPFQ_BIN, set by ctest; build/gpfq otherwise).

    GPFQ_BIN=build/gpfq /usr/bin/python3 -m pytest -q tests/python/test_models.py

1. Export round trip: every architecture of tools/models_torch.py and
   torchvision's ImageNet ResNet-18, randomly initialised (seeded), exported
   with a check batch; `gpfq info --check` must reproduce PyTorch's logits.
2. Shipped models (data/models/*_fashion.h5): `gpfq eval` must reproduce the
   float accuracy recorded in the file (measured by PyTorch at training time),
   and PyTorch running the file's own weights must agree with gpfq, both in
   top-1/top-5 counts and in the logits.

Refusing unsupported layers (a message naming the node and the op) is tested
in test_export.py: test_unsupported_module_gelu, test_unsupported_* and
test_cli_module_and_error.

`gpfq eval` against the recorded accuracy always runs on all 10,000 test images
(ResNet-18: a few minutes on two cores). PyTorch's side costs more: models over
FULL_EVAL_MACS for the whole test split are compared with PyTorch on a prefix
of it unless GPFQ_TEST_FULL_EVAL=1.
"""

import functools
import glob
import gzip
import os
import re
import shutil
import subprocess
import sys

import pytest

np = pytest.importorskip("numpy")
h5py = pytest.importorskip("h5py")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")
MODELS_DIR = os.path.join(ROOT, "data", "models")
DATA_DIR = "/usr/share/datasets/fashion-mnist"
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

try:
    import torch
    import export_torch
    import models_torch
    TORCH_ERROR = None
except ImportError as e:  # numpy/h5py-only machines still run the gpfq checks
    torch = export_torch = models_torch = None
    TORCH_ERROR = "PyTorch is not importable (%s)" % e

needs_torch = pytest.mark.skipif(torch is None, reason=TORCH_ERROR or "")

# float32 logits computed by two implementations that sum in different orders
# (OpenBLAS GEMM blocks vs PyTorch's conv/linear kernels, batchnorm applied
# separately): rounding errors of a few ulps per reduction of up to 4608
# terms, over up to 20 layers, stay near 1e-7..1e-6 of the largest logit. A
# real mistake (wrong padding, stride, weight layout, missing bias) is of the
# order of the logits themselves, so 1e-5 separates the two with margin.
REL_TOL = 1e-5

# gpfq and PyTorch may disagree on images whose two best logits tie within
# rounding error, and the input normalisation may round differently in the
# last bit: at most 3 of 10,000 predictions may differ.
COUNT_TOL = 3

FULL_EVAL_MACS = 5e10   # for all 10,000 images; above it, a prefix
PREFIX_MACS = 2e10      # budget of the prefix
FULL_EVAL = os.environ.get("GPFQ_TEST_FULL_EVAL", "") not in ("", "0")
TEST_IMAGES = 10000


def gpfq_bin():
    path = os.environ.get("GPFQ_BIN")
    if path:
        assert os.access(path, os.X_OK), "GPFQ_BIN=%s is not an executable" % path
        return path
    path = os.path.join(ROOT, "build", "gpfq")
    if not os.access(path, os.X_OK):
        pytest.skip("no gpfq binary: set GPFQ_BIN or build %s" % path)
    return path


def run_gpfq(*args, timeout=900):
    r = subprocess.run([gpfq_bin()] + [str(a) for a in args], capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, "gpfq %s failed (%d):\n%s%s" % (
        " ".join(map(str, args)), r.returncode, r.stdout, r.stderr)
    return r.stdout


CHECK_RE = re.compile(r"check\s+(\d+) images: max abs error (\S+), "
                      r"relative to max \|logit\| (\S+)")


def gpfq_check(path):
    """(images, max abs error, relative error) of `gpfq info --check path`."""
    out = run_gpfq("info", "--check", path)
    m = CHECK_RE.search(out)
    assert m, "no check line in:\n" + out
    return int(m.group(1)), float(m.group(2)), float(m.group(3))


@functools.lru_cache(maxsize=None)
def gpfq_eval(path, limit=TEST_IMAGES):
    """(top-1 count, top-5 count, images) of `gpfq eval`."""
    args = ["eval", "--model", path]
    if limit < TEST_IMAGES:
        args += ["--limit", limit]
    out = run_gpfq(*args)
    got = {}
    for k in ("top-1", "top-5"):
        m = re.search(r"^%s\s+\S+%%\s+\((\d+)/(\d+)\)" % k, out, re.M)
        assert m, "no %s line in:\n%s" % (k, out)
        got[k] = (int(m.group(1)), int(m.group(2)))
    assert got["top-1"][1] == got["top-5"][1] == limit, out
    return got["top-1"][0], got["top-5"][0], limit


@functools.lru_cache(maxsize=None)
def macs_per_image(path):
    """Multiply-adds of one forward pass, from `gpfq info`: a linear node's
    parameters, a conv2d node's parameters times its output positions."""
    total = 0
    for line in run_gpfq("info", path).splitlines():
        m = re.match(r"\s*\d+\s+\S+\s+(linear|conv2d)\S*(?: \(q\))?\s+\S+\s+(\S+)\s+(\d+)\s*$",
                     line)
        if m:
            shape = [int(v) for v in m.group(2).split("x")]
            spatial = shape[1] * shape[2] if m.group(1) == "conv2d" and len(shape) == 3 else 1
            total += int(m.group(3)) * spatial
    assert total > 0, path
    return total


def prefix_images(path):
    """How many test images the PyTorch-vs-gpfq comparison uses."""
    if FULL_EVAL or macs_per_image(path) * TEST_IMAGES <= FULL_EVAL_MACS:
        return TEST_IMAGES
    n = int(PREFIX_MACS // macs_per_image(path)) // 100 * 100
    return max(100, min(TEST_IMAGES, n))


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@functools.lru_cache(maxsize=1)
def fashion_test():
    files = [os.path.join(DATA_DIR, "t10k-%s-idx%d-ubyte.gz" % (k, d))
             for k, d in (("images", 3), ("labels", 1))]
    for f in files:
        if not os.path.exists(f):
            pytest.skip("Fashion-MNIST is not installed (%s)" % f)
    return read_idx(files[0]), read_idx(files[1]).astype(np.int64)


def root_attrs(path):
    with h5py.File(path, "r") as f:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}


# ---------------------------------------------------------------------------
# 1. Export round trip of every architecture


def randomize_batchnorm(net, gen):
    """Give every BatchNorm2d non-trivial statistics and affine parameters, so
    that the round trip exercises them (fresh ones are the identity)."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.2 * torch.randn(c, generator=gen))


def round_trip(net, path, input_shape, num_classes, mean, std, batch):
    gen = torch.Generator().manual_seed(1234)
    randomize_batchnorm(net, gen)
    x = torch.randn((batch,) + tuple(input_shape), generator=gen)
    export_torch.export_model(net, path, input_shape=input_shape, mean=mean, std=std,
                              num_classes=num_classes, source="tests/python/test_models.py",
                              check_input=x)
    n, max_abs, rel = gpfq_check(path)
    assert n == batch
    assert rel <= REL_TOL, "max abs error %g, relative %g" % (max_abs, rel)
    return rel


@needs_torch
@pytest.mark.parametrize("arch", ["mlp", "lenet5", "resnet20", "resnet18"])
def test_round_trip_architecture(tmp_path, arch):
    torch.manual_seed(0)
    net = models_torch.build(arch).eval()
    round_trip(net, str(tmp_path / (arch + ".h5")), models_torch.INPUT_SHAPE,
               models_torch.NUM_CLASSES, [models_torch.FASHION_MEAN],
               [models_torch.FASHION_STD], batch=4)


@needs_torch
def test_round_trip_torchvision_resnet18(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    round_trip(net, str(tmp_path / "resnet18_imagenet.h5"), (3, 224, 224), 1000,
               export_torch.IMAGENET_MEAN, export_torch.IMAGENET_STD, batch=2)


# ---------------------------------------------------------------------------
# 2. Shipped models


SHIPPED = sorted(glob.glob(os.path.join(MODELS_DIR, "*_fashion.h5")))


def recorded_counts(path):
    """Top-1/top-5 counts of 10,000 recorded in the file (PyTorch, training)."""
    a = root_attrs(path)
    top1, top5 = float(a["float_top1"]), float(a["float_top5"])
    if np.isnan(top1) or np.isnan(top5):
        pytest.fail("%s records no float accuracy" % path)
    return round(top1 * TEST_IMAGES), round(top5 * TEST_IMAGES)


def test_shipped_models_present():
    names = {os.path.basename(p) for p in SHIPPED}
    assert {"mlp_fashion.h5", "lenet5_fashion.h5", "resnet20_fashion.h5",
            "resnet18_fashion.h5"} <= names, names


@pytest.mark.parametrize("path", SHIPPED, ids=os.path.basename)
def test_shipped_eval_matches_recorded(path):
    """The main check: gpfq's float accuracy on the whole test split is
    PyTorch's, as recorded in the file."""
    fashion_test()  # skips without the data set
    want1, want5 = recorded_counts(path)
    got1, got5, _ = gpfq_eval(path)
    assert abs(got1 - want1) <= COUNT_TOL and abs(got5 - want5) <= COUNT_TOL, \
        "gpfq %d/%d, recorded %d/%d" % (got1, got5, want1, want5)


@needs_torch
@pytest.mark.parametrize("path", SHIPPED, ids=os.path.basename)
def test_shipped_torch_vs_gpfq(tmp_path, path):
    """PyTorch running the file's weights (export_torch.reference_forward)
    against gpfq: top-1/top-5 counts on the same images, and the logits of
    (up to) the first 1,000 of them through `gpfq info --check`."""
    images, labels = fashion_test()
    n = prefix_images(path)
    model = export_torch.read_model(path)
    a = model.attrs
    assert tuple(a["input_shape"]) == (1, 28, 28)
    mean = np.float32(a["mean"][0])
    std = np.float32(a["std"][0])
    x = ((images[:n].astype(np.float32) / np.float32(255) - mean) / std)[:, None]
    y = torch.from_numpy(labels[:n])
    logits = []
    with torch.no_grad():
        for i in range(0, n, 500):
            logits.append(export_torch.reference_forward(model, x[i:i + 500]))
    logits = torch.cat(logits)
    top5 = logits.topk(5, dim=1).indices
    t1 = int((top5[:, 0] == y).sum())
    t5 = int((top5 == y[:, None]).any(dim=1).sum())

    g1, g5, _ = gpfq_eval(path, n)
    assert abs(g1 - t1) <= COUNT_TOL and abs(g5 - t5) <= COUNT_TOL, \
        "%d images: gpfq %d/%d, PyTorch %d/%d" % (n, g1, g5, t1, t5)
    if n == TEST_IMAGES:
        want1, want5 = recorded_counts(path)
        assert abs(t1 - want1) <= COUNT_TOL and abs(t5 - want5) <= COUNT_TOL, \
            "PyTorch on the file's weights %d/%d, recorded at training %d/%d" % (
                t1, t5, want1, want5)

    k = min(n, 1000)
    copy = str(tmp_path / os.path.basename(path))
    shutil.copyfile(path, copy)
    with h5py.File(copy, "a") as f:
        if "check" in f:
            del f["check"]
        g = f.create_group("check")
        g.create_dataset("input", data=np.ascontiguousarray(x[:k]))
        g.create_dataset("output", data=logits[:k].numpy())
    got_n, max_abs, rel = gpfq_check(copy)
    assert got_n == k
    assert rel <= REL_TOL, "max abs error %g, relative %g" % (max_abs, rel)
