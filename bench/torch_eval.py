#!/usr/bin/python3
"""PyTorch peer of `gpfq eval`, for bench/eval_throughput.sh.

    ${PYTHON:-/usr/bin/python3} bench/torch_eval.py --model FILE.h5 --arch NAME \
        [--images N] [--batch B] [--threads T] [--data-dir DIR]

Builds the nn.Module of tools/models_torch.py `NAME` (nn.Conv2d, nn.Linear,
nn.BatchNorm2d, ...) and loads into it the weights of the gpfq model file FILE.h5,
mapped back by node name (the exporter names nodes after the torch.fx graph of
the same module), so torch and gpfq evaluate identical weights. The mapping is
checked: every parameter and buffer must be filled with the right shape, and the
module's logits are compared with tools/export_torch.py:reference_forward on the
file's nodes for a few images.

Timing mirrors gpfq_evaluate (src/eval/eval.c): the data set is read before the
clock starts; the timed loop covers, per batch, normalizing the uint8 images to
float ((x/255 - mean)/std with the file's mean/std), the forward pass, and the
top-1/top-5 count. One untimed warm-up batch runs first, then the clock covers
all N images. Runs under torch.inference_mode() with model.eval() and
torch.set_num_threads(T).

Prints lines `key value` for bench/eval_throughput.sh to read (see the end of
main()).
"""

import argparse
import ctypes
import gzip
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torch.fx

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_ROOT, "tools"))

import export_torch  # noqa: E402
import models_torch  # noqa: E402

DATA_DIR_DEFAULT = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    """An IDX file (gzip or plain) as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError("%s: not an unsigned-byte IDX file" % path)
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find_idx(data_dir, stem):
    for name in (stem + ".gz", stem):
        p = os.path.join(data_dir, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError("%s: no %s[.gz]" % (data_dir, stem))


def load_module(arch, path):
    """nn.Module `arch` with the weights of gpfq model file `path`."""
    net = models_torch.build(arch)
    nodes = export_torch.read_model(path)
    by_name = {d["name"]: d for d in nodes}
    gm = torch.fx.symbolic_trace(net)
    filled = set()
    with torch.no_grad():
        for n in gm.graph.nodes:
            if n.op != "call_module":
                continue
            mod = net.get_submodule(n.target)
            d = by_name.get(n.name)
            if d is None:
                continue  # e.g. an elided identity / flatten
            for key, arr in d["data"].items():
                if key == "weight_codes":
                    continue  # read_model already decoded it into "weight"
                t = getattr(mod, key, None)
                if not isinstance(t, torch.Tensor):
                    raise ValueError("%s: node '%s' has dataset '%s' that %s (%s) lacks"
                                     % (path, n.name, key, n.target, type(mod).__name__))
                src = torch.from_numpy(np.asarray(arr, dtype=np.float32))
                if tuple(src.shape) != tuple(t.shape):
                    raise ValueError("%s: node '%s' dataset '%s' has shape %s, module wants %s"
                                     % (path, n.name, key, tuple(src.shape), tuple(t.shape)))
                t.copy_(src)
                filled.add("%s.%s" % (n.target, key))
    wanted = {k for k, _ in net.named_parameters()}
    wanted |= {k for k, _ in net.named_buffers() if not k.endswith("num_batches_tracked")}
    missing = sorted(wanted - filled)
    if missing:
        raise ValueError("%s: no weights in the file for %s" % (path, ", ".join(missing[:5])))
    net.eval()
    return net, nodes


def openblas_core():
    """Name of the OpenBLAS kernel torch's BLAS calls use, if torch uses OpenBLAS."""
    for lib in ("libopenblas.so.0", "libblas.so.3"):
        try:
            h = ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
            f = h.openblas_get_corename
        except (OSError, AttributeError):
            continue
        f.restype = ctypes.c_char_p
        return f().decode()
    return "none"


def conv_backend(net, x):
    """The convolution kernels torch dispatches to for input x, e.g.
    'aten::mkldnn_convolution (oneDNN jit:avx512_core)'."""
    from torch.autograd import profiler
    with profiler.profile() as prof:
        net(x)
    names = sorted({e.key for e in prof.key_averages()
                    if "conv" in e.key and e.key not in ("aten::conv2d", "aten::convolution",
                                                         "aten::_convolution")})
    if not names:
        return "none"
    impls = set()
    if any("mkldnn" in k for k in names):
        # oneDNN's verbose mode prints one line per primitive to the C stdout.
        libc = ctypes.CDLL(None)
        sys.stdout.flush()
        saved = os.dup(1)
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 1)
            try:
                with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                    net(x)
            finally:
                libc.fflush(None)
                os.dup2(saved, 1)
                os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode(errors="replace").splitlines():
                f = line.split(",")
                if len(f) > 5 and f[1] == "exec" and f[3] == "convolution":
                    impls.add(f[4])
    text = ",".join(names)
    if impls:
        text += " (oneDNN %s)" % ",".join(sorted(impls))
    return text


def main(argv=None):
    p = argparse.ArgumentParser(prog="torch_eval.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="gpfq model file (.h5)")
    p.add_argument("--arch", required=True, choices=models_torch.MODEL_NAMES,
                   help="tools/models_torch.py architecture of the file")
    p.add_argument("--images", type=int, default=0, help="first N test images (0: all)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir", default=DATA_DIR_DEFAULT)
    p.add_argument("--no-check", action="store_true",
                   help="skip the comparison with reference_forward and the probe of "
                   "torch's convolution kernels (both run outside the timed loop)")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    # Not the exporter's seed (0): a weight left unmapped would keep a different
    # random init and fail the check against reference_forward.
    torch.manual_seed(12345)

    images = read_idx(find_idx(args.data_dir, "t10k-images-idx3-ubyte"))
    labels = read_idx(find_idx(args.data_dir, "t10k-labels-idx1-ubyte"))
    n = min(args.images, len(images)) if args.images > 0 else len(images)
    images = torch.from_numpy(images[:n].copy()).unsqueeze(1)  # N,1,28,28 uint8
    labels = torch.from_numpy(labels[:n].astype(np.int64))

    net, nodes = load_module(args.arch, args.model)
    attrs = nodes.attrs
    mean = torch.tensor(np.asarray(attrs["mean"], dtype=np.float32)).view(1, -1, 1, 1)
    std = torch.tensor(np.asarray(attrs["std"], dtype=np.float32)).view(1, -1, 1, 1)
    batch = min(args.batch, n)

    def normalize(xb):
        return (xb.to(torch.float32).div_(255.0) - mean).div_(std)

    with torch.inference_mode():
        max_rel = float("nan")
        if not args.no_check:
            xc = normalize(images[:4])
            ref = export_torch.reference_forward(nodes, xc)
            out = net(xc)
            max_rel = float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
            if not max_rel < 1e-3:
                print("torch_eval.py: error: module and reference_forward disagree "
                      "(max rel err %.3g): weights were not mapped correctly" % max_rel,
                      file=sys.stderr)
                return 1

        t0 = time.perf_counter()
        net(normalize(images[:batch]))
        warm = time.perf_counter() - t0

        top1 = top5 = 0
        t0 = time.perf_counter()
        for first in range(0, n, batch):
            logits = net(normalize(images[first:first + batch]))
            lab = labels[first:first + batch]
            top = logits.topk(5, dim=1).indices
            top1 += int((top[:, 0] == lab).sum())
            top5 += int((top == lab[:, None]).any(dim=1).sum())
        seconds = time.perf_counter() - t0

        backend = "not probed" if args.no_check else conv_backend(net, normalize(images[:batch]))

    print("weights  %s -> tools/models_torch.py:%s nn.Module (by node name; max rel "
          "err vs reference_forward %.2g)" % (args.model, args.arch, max_rel))
    print("top-1    %.2f%%  (%d/%d)" % (100.0 * top1 / n, top1, n))
    print("top-5    %.2f%%  (%d/%d)" % (100.0 * top5 / n, top5, n))
    print("warmup   %.3f s (1 batch of %d, untimed)" % (warm, batch))
    print("speed    %.0f images/s (%.3f s, batch %d, %d threads)"
          % (n / seconds, seconds, batch, torch.get_num_threads()))
    print("torch    %s, conv: %s, BLAS: OpenBLAS %s kernel, parallel: %s"
          % (torch.__version__, backend, openblas_core(),
             torch.__config__.parallel_info().split("ATen parallel backend: ")[-1].strip()
             or "?"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
