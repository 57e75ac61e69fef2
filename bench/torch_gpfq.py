#!/usr/bin/python3
"""PyTorch GPFQ, written the way the research code runs it: the peer of
`gpfq quantize --reference` in bench/run.sh.

    ${PYTHON:-/usr/bin/python3} bench/torch_gpfq.py --model FILE.h5 --arch NAME \
        -b 4 -bs 256 -s 1.16 [--seed N] [--eval-images N] [--threads T]

The model: the nn.Module of tools/models_torch.py `NAME` with the weights of the
gpfq model file FILE.h5, loaded by bench/torch_eval.py's load_module (by node
name, every parameter and buffer checked).

The algorithm (docs/gpfq.md), with the reference's options, i.e. what
`gpfq quantize --reference` does:

- every nn.Linear and nn.Conv2d in network order (the torch.fx graph order,
  which is the model file's node order), first and last included, biases
  untouched;
- per layer, a fresh batch of bs training images (a seeded shuffle of the
  training set), normalized with the file's mean/std; the float network and the
  partly quantized one are both run from the input, and a forward pre-hook on the
  layer captures its input and stops the pass (X: float, Y: quantized);
- a conv input is unfolded with F.unfold(kernel, dilation, padding,
  stride = kernel size); per image int(rr * L + 1) of its L patches are drawn with
  replacement (the same patches in X and Y), rr = 0.25;
- the alphabet: K = 2^(b-1), rad = mean over the rows of max |W[i,:]| (or their
  p-quantile with -p), delta = C rad / K; nearest code
  sign(z) min(|floor(z/delta + 0.5)|, K);
- the U form over all neurons at once, one input coordinate t at a time:
      U += W[:,t] X[:,t]^T
      Q[:,t] = delta * code(U Y[:,t] / ||Y[:,t]||^2)     (0 when ||Y[:,t]|| = 0)
      U -= Q[:,t] Y[:,t]^T
  in float32 torch tensors (X and Y stored transposed, so that column t is
  contiguous).

Then both networks are evaluated on the test split (batch 256): top-1/top-5.

Timing: "quantize" covers the whole loop over the layers (image draws, forward
passes, unfolding, the GPFQ loop, writing the weights) and not the loading of the
model and the data set; of it, "forward passes" is each layer's image draw and its
two passes from the input to the layer (the float and the partly quantized
network), as gpfq reports its own; "eval" is the float plus the quantized evaluation
(normalization per batch, forward, top-k). The random draws come from torch's
generator seeded with --seed, so they differ from gpfq's: compare accuracies,
not codes.

Prints human-readable lines and, last, one line `json {...}` for scripts.
"""

import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from torch_eval import DATA_DIR_DEFAULT, find_idx, load_module, read_idx  # noqa: E402
import models_torch  # noqa: E402  (on sys.path through torch_eval)


class _Captured(Exception):
    """Raised by the forward pre-hook once the layer's input is captured."""


def layer_input(net, module, images):
    """The input of `module` when `net` runs on `images`; the pass stops there."""
    box = []

    def hook(_mod, inputs):  # before the module runs: its own output is not computed
        box.append(inputs[0].detach())
        raise _Captured

    h = module.register_forward_pre_hook(hook)
    try:
        net(images)
    except _Captured:
        pass
    finally:
        h.remove()
    if not box:
        raise RuntimeError("the layer was not reached in the forward pass")
    return box[0]


def quantizable(net):
    """(qualified name, module) of every Linear and Conv2d, in graph order."""
    gm = torch.fx.symbolic_trace(net)
    out = []
    for n in gm.graph.nodes:
        if n.op == "call_module":
            mod = net.get_submodule(n.target)
            if isinstance(mod, (nn.Linear, nn.Conv2d)):
                out.append((n.target, mod))
    return out


def alphabet_step(W, bits, scalar, percentile):
    """delta = C rad / K, rad = mean over rows of max |W[i,:]| (or the p-quantile)."""
    A = W.abs()
    if percentile >= 1.0:
        per_row = A.max(dim=1).values
    else:
        per_row = torch.quantile(A, percentile, dim=1)
    K = 2 ** (bits - 1)
    rad = per_row.mean()
    return float(scalar * rad / K), K


def nearest(z, delta, K):
    """delta * sign(z) min(|floor(z/delta + 0.5)|, K)."""
    k = torch.floor(z / delta + 0.5).abs().clamp_(max=K)
    return torch.sign(z) * k * delta


def gpfq_u_form(W, Xt, Yt, delta, K):
    """The GPFQ loop for all N neurons. W: N x d, Xt/Yt: d x m. Returns Q (N x d)."""
    N, d = W.shape
    m = Xt.shape[1]
    U = torch.zeros(N, m, dtype=torch.float32)
    Q = torch.zeros(N, d, dtype=torch.float32)
    norms = (Yt * Yt).sum(dim=1)
    for t in range(d):
        U.addr_(W[:, t], Xt[t])
        nrm = float(norms[t])
        if nrm > 0:
            q = nearest(U.mv(Yt[t]) / nrm, delta, K)
            Q[:, t] = q
            U.addr_(q, Yt[t], alpha=-1.0)
    return Q


def patches(x, conv, keep_idx):
    """Unfold x (n, C, H, W) with stride = kernel and keep the drawn patches:
    (n * keep, C kh kw), image-major."""
    cols = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=conv.padding,
                    stride=conv.kernel_size)                      # n, d, L
    n, d, _ = cols.shape
    picked = cols.gather(2, keep_idx.unsqueeze(1).expand(n, d, keep_idx.shape[1]))  # n, d, keep
    return picked.permute(0, 2, 1).reshape(-1, d)


def quantize_network(fnet, qnet, train_x, mean, std, args, gen, log):
    """GPFQ over every layer of qnet (a copy of fnet); returns per-layer reports."""
    flayers = quantizable(fnet)
    qlayers = dict(quantizable(qnet))
    reports = []
    for li, (name, fmod) in enumerate(flayers):
        t0 = time.perf_counter()
        qmod = qlayers[name]
        idx = torch.randperm(train_x.shape[0], generator=gen)[:args.batch_size]
        images = (train_x[idx].to(torch.float32).div_(255.0) - mean).div_(std)
        X = layer_input(fnet, fmod, images)
        Y = layer_input(qnet, qmod, images)
        passes = time.perf_counter() - t0
        W = fmod.weight.detach().reshape(fmod.weight.shape[0], -1)
        linear = isinstance(fmod, nn.Linear)
        scalar = args.mlp_scalar if linear else args.cnn_scalar
        pct = args.mlp_percentile if linear else args.cnn_percentile
        delta, K = alphabet_step(W, args.bits, scalar, pct)
        if linear:
            groups = [(W, X.reshape(X.shape[0], -1), Y.reshape(Y.shape[0], -1))]
        else:
            g = fmod.groups
            L = F.unfold(X[:1, : X.shape[1] // g], fmod.kernel_size, dilation=fmod.dilation,
                         padding=fmod.padding, stride=fmod.kernel_size).shape[2]
            keep = int(args.retain_rate * L + 1)
            keep_idx = torch.randint(L, (X.shape[0], keep), generator=gen)
            cin, cout = X.shape[1] // g, W.shape[0] // g
            groups = [(W[k * cout:(k + 1) * cout],
                       patches(X[:, k * cin:(k + 1) * cin], fmod, keep_idx),
                       patches(Y[:, k * cin:(k + 1) * cin], fmod, keep_idx))
                      for k in range(g)]
        Qs, err2, ref2 = [], 0.0, 0.0
        for Wg, Xg, Yg in groups:
            Q = gpfq_u_form(Wg, Xg.t().contiguous(), Yg.t().contiguous(), delta, K)
            Qs.append(Q)
            ref = Xg @ Wg.t()
            err2 += float(((ref - Yg @ Q.t()) ** 2).sum())
            ref2 += float((ref ** 2).sum())
        Q = torch.cat(Qs, 0)
        with torch.no_grad():
            qmod.weight.copy_(Q.reshape(qmod.weight.shape))
        secs = time.perf_counter() - t0
        rep = {"layer": name, "rows": W.shape[0], "cols": W.shape[1],
               "m": groups[0][1].shape[0], "delta": delta,
               "zeros": float((Q == 0).float().mean()),
               "rel_err": (err2 / ref2) ** 0.5 if ref2 > 0 else 0.0, "seconds": secs,
               "pass_seconds": passes}
        reports.append(rep)
        log("  [%d/%d] %-22s %5dx%-5d delta %.4g  zeros %5.1f%%  rel.err %.4f  m %d  %.2f s"
            % (li + 1, len(flayers), name, rep["rows"], rep["cols"], delta,
               100 * rep["zeros"], rep["rel_err"], rep["m"], secs))
    return reports


def evaluate(net, images, labels, mean, std, batch):
    top1 = top5 = 0
    with torch.inference_mode():
        for first in range(0, images.shape[0], batch):
            xb = (images[first:first + batch].to(torch.float32).div_(255.0) - mean).div_(std)
            top = net(xb).topk(5, dim=1).indices
            lab = labels[first:first + batch]
            top1 += int((top[:, 0] == lab).sum())
            top5 += int((top == lab[:, None]).any(dim=1).sum())
    n = images.shape[0]
    return 100.0 * top1 / n, 100.0 * top5 / n


def main(argv=None):
    p = argparse.ArgumentParser(prog="torch_gpfq.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", "-model", required=True, help="gpfq model file (.h5)")
    p.add_argument("--arch", required=True, choices=models_torch.MODEL_NAMES)
    p.add_argument("-b", "--bits", type=int, default=4)
    p.add_argument("-bs", "--batch-size", type=int, default=256)
    p.add_argument("-s", "--scalar", type=float, default=1.16)
    p.add_argument("--mlp-scalar", type=float)
    p.add_argument("--cnn-scalar", type=float)
    p.add_argument("-p", "--percentile", type=float, default=1.0)
    p.add_argument("-rr", "--retain-rate", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-images", type=int, default=0, help="first N test images (0: all)")
    p.add_argument("--eval-batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--data-dir", default=DATA_DIR_DEFAULT)
    p.add_argument("--quiet", action="store_true", help="no per-layer lines")
    args = p.parse_args(argv)
    if not 1 <= args.bits <= 16:
        p.error("bits must be from 1 to 16")
    if not 0 < args.retain_rate <= 1 or not 0 < args.percentile <= 1:
        p.error("the retain rate and the percentile must be in (0, 1]")
    args.mlp_scalar = args.mlp_scalar or args.scalar
    args.cnn_scalar = args.cnn_scalar or args.scalar
    args.mlp_percentile = args.cnn_percentile = args.percentile

    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    tunables = os.environ.get("GLIBC_TUNABLES", "")

    def log(s):
        if not args.quiet:
            print(s, flush=True)

    train_x = torch.from_numpy(read_idx(find_idx(args.data_dir, "train-images-idx3-ubyte"))
                               .copy()).unsqueeze(1)
    test_x = read_idx(find_idx(args.data_dir, "t10k-images-idx3-ubyte"))
    test_y = read_idx(find_idx(args.data_dir, "t10k-labels-idx1-ubyte"))
    n = min(args.eval_images, len(test_x)) if args.eval_images > 0 else len(test_x)
    test_x = torch.from_numpy(test_x[:n].copy()).unsqueeze(1)
    test_y = torch.from_numpy(test_y[:n].astype(np.int64))

    fnet, nodes = load_module(args.arch, args.model)
    mean = torch.tensor(np.asarray(nodes.attrs["mean"], dtype=np.float32)).view(1, -1, 1, 1)
    std = torch.tensor(np.asarray(nodes.attrs["std"], dtype=np.float32)).view(1, -1, 1, 1)
    qnet, _ = load_module(args.arch, args.model)
    setup = time.perf_counter() - t_start

    print("model    %s (%s, %d parameters)" % (args.model, args.arch,
                                                sum(t.numel() for t in fnet.parameters())))
    print("config   GPFQ (torch peer, reference options), %d bits, scalar %g/%g (mlp/cnn), "
          "bs %d, per-layer calibration, kernel unfold, with replacement, retain %g, seed %d"
          % (args.bits, args.mlp_scalar, args.cnn_scalar, args.batch_size, args.retain_rate,
             args.seed))
    print("torch    %s, %d threads, GLIBC_TUNABLES %s"
          % (torch.__version__, torch.get_num_threads(), tunables or "(unset)"))

    t0 = time.perf_counter()
    f1, f5 = evaluate(fnet, test_x, test_y, mean, std, args.eval_batch)
    ef = time.perf_counter() - t0
    print("float    top-1 %6.2f%%  top-5 %6.2f%%  (%d images, %.2f s)" % (f1, f5, n, ef))

    log("quantizing")
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    with torch.no_grad():
        reports = quantize_network(fnet, qnet, train_x, mean, std, args, gen, log)
    qs = time.perf_counter() - t0
    passes = sum(r["pass_seconds"] for r in reports)
    print("quantized %d layers in %.2f s (forward passes %.3f s)" % (len(reports), qs, passes))

    t0 = time.perf_counter()
    q1, q5 = evaluate(qnet, test_x, test_y, mean, std, args.eval_batch)
    eq = time.perf_counter() - t0
    print("quantized top-1 %6.2f%%  top-5 %6.2f%%  (%d images, %.2f s)" % (q1, q5, n, eq))
    total = time.perf_counter() - t_start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("seconds  quantize %.3f, eval %.3f (float %.3f + quantized %.3f), setup %.3f, "
          "in process %.3f; peak RSS %.0f MB" % (qs, ef + eq, ef, eq, setup, total, rss_mb))
    print("json " + json.dumps({
        "model": args.model, "arch": args.arch, "bits": args.bits, "bs": args.batch_size,
        "scalar": args.scalar, "seed": args.seed, "threads": torch.get_num_threads(),
        "glibc_tunables": tunables, "eval_images": n,
        "float_top1": f1, "float_top5": f5, "quant_top1": q1, "quant_top5": q5,
        "quantize_s": qs, "pass_s": passes,
        "eval_s": ef + eq, "eval_float_s": ef, "eval_quant_s": eq,
        "setup_s": setup, "in_process_s": total, "peak_rss_mb": rss_mb,
        "layers": reports}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
