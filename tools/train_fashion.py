#!/usr/bin/python3
"""Train the shipped Fashion-MNIST reference models (float, PyTorch).

Usage:
    ${PYTHON:-/usr/bin/python3} tools/train_fashion.py \
        [--models mlp,lenet5,resnet20,resnet18] [--ckpt-dir build/checkpoints] \
        [--epochs-mlp N] [--epochs-lenet5 N] [--epochs-resnet20 N] [--epochs-resnet18 N] \
        [--lr-<name> LR] [--seed S] [--limit-batches K] [--export] [--export-only]

For every model it writes <ckpt-dir>/<name>.pt (state_dict) and <ckpt-dir>/<name>.json
(recipe + float test accuracy). With --export (after training) or --export-only
(from existing checkpoints) it also writes <export-dir>/<name>_fashion.h5 through
tools/export_torch.py:export_model.

Training is deterministic for a given seed, thread count and torch build:
every model is trained from torch.manual_seed(seed) independently of the
other models in the same run.
"""

import os
import sys

_TUNABLES = ("glibc.malloc.mmap_threshold=4294967296:"
             "glibc.malloc.trim_threshold=68719476736")

# glibc's malloc trimming makes torch several times slower on small VMs: re-exec
# with the tunables set before torch is imported.
if "glibc.malloc.trim_threshold" not in os.environ.get("GLIBC_TUNABLES", ""):
    _env = dict(os.environ)
    _env["GLIBC_TUNABLES"] = _TUNABLES
    _env.setdefault("OMP_NUM_THREADS", "2")
    os.execve(sys.executable, [sys.executable] + sys.argv, _env)

import argparse
import gzip
import json
import math
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import models_torch  # noqa: E402

DATA_DIR_DEFAULT = "/usr/share/datasets/fashion-mnist"
NUM_THREADS = 2

AUG_RESNET = "random-crop 28x28 from zero-padded (pad=2) image + random horizontal flip (p=0.5)"

# Default per-model recipe: SGD(momentum 0.9, nesterov), OneCycle LR (cosine
# annealing, 25% warm-up), batch 128, weight decay 5e-4 on all parameters.
RECIPES = {
    "mlp":      dict(epochs=10, lr=0.05, weight_decay=5e-4, augment=False),
    "lenet5":   dict(epochs=15, lr=0.1, weight_decay=5e-4, augment=False),
    "resnet20": dict(epochs=10, lr=0.2, weight_decay=5e-4, augment=True),
    "resnet18": dict(epochs=3, lr=0.1, weight_decay=5e-4, augment=True),
}
BATCH_SIZE = 128
EVAL_BATCH = 1000
MOMENTUM = 0.9
PCT_START = 0.25


def log(msg):
    print(time.strftime("%H:%M:%S ") + msg, flush=True)


# --------------------------------------------------------------------------- data

def read_idx(path):
    """Read a gzip-compressed IDX file into a numpy array (uint8 data)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = data[0] << 8 | data[1], data[2], data[3]
    if zero != 0 or dtype != 0x08:
        raise ValueError("%s: not an unsigned-byte IDX file" % path)
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    off = 4 + 4 * ndim
    arr = np.frombuffer(data, dtype=np.uint8, offset=off)
    if arr.size != int(np.prod(dims)):
        raise ValueError("%s: size mismatch" % path)
    return arr.reshape(dims)


def load_split(data_dir, split):
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(data_dir, "%s-images-idx3-ubyte.gz" % prefix))
    y = read_idx(os.path.join(data_dir, "%s-labels-idx1-ubyte.gz" % prefix))
    assert x.shape[0] == y.shape[0]
    return torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64))


def normalize(x_u8):
    """uint8 [N,28,28] or [N,1,28,28] -> float32 [N,1,28,28], (x/255-mean)/std."""
    x = x_u8.float().div_(255.0)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return x.sub_(models_torch.FASHION_MEAN).div_(models_torch.FASHION_STD)


def augment_batch(x_u8, gen, pad=2):
    """Random crop (zero padding `pad`) + random horizontal flip, on uint8 [B,28,28]."""
    b, h, w = x_u8.shape
    padded = F.pad(x_u8, (pad, pad, pad, pad))  # zeros = black background
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    flip = torch.rand(b, generator=gen) < 0.5
    rows = dy[:, None] + torch.arange(h)[None, :]               # [B,H]
    cols = dx[:, None] + torch.arange(w)[None, :]               # [B,W]
    cols = torch.where(flip[:, None], cols.flip(1), cols)       # mirrored crop
    bi = torch.arange(b)[:, None, None]
    return padded[bi, rows[:, :, None], cols[:, None, :]]


# --------------------------------------------------------------------------- eval

@torch.no_grad()
def evaluate(model, x_u8, y, batch=EVAL_BATCH):
    model.eval()
    top1 = top5 = 0
    loss_sum = 0.0
    for i in range(0, x_u8.shape[0], batch):
        xb = normalize(x_u8[i:i + batch])
        yb = y[i:i + batch]
        out = model(xb)
        loss_sum += F.cross_entropy(out, yb, reduction="sum").item()
        pred5 = out.topk(5, dim=1).indices
        top1 += (pred5[:, 0] == yb).sum().item()
        top5 += (pred5 == yb[:, None]).any(dim=1).sum().item()
    n = x_u8.shape[0]
    return dict(top1_count=top1, top5_count=top5, top1=top1 / n, top5=top5 / n,
                loss=loss_sum / n, n=n)


# --------------------------------------------------------------------------- train

def measure_epoch_time(name, n_train, batch_size, seed, nbatches=6):
    """Time a few training steps on random data and extrapolate to one epoch."""
    torch.manual_seed(seed)
    model = models_torch.build(name).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=MOMENTUM)
    x = torch.randn(batch_size, 1, 28, 28)
    y = torch.randint(0, 10, (batch_size,))
    warm = 3
    for i in range(warm + nbatches):
        if i == warm:
            t0 = time.time()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    per_batch = (time.time() - t0) / nbatches
    return per_batch, per_batch * math.ceil(n_train / batch_size)


def train_one(name, args, data):
    x_train, y_train, x_test, y_test = data
    rec = dict(RECIPES[name])
    ep_over = getattr(args, "epochs_" + name)
    lr_over = getattr(args, "lr_" + name)
    if ep_over is not None:
        rec["epochs"] = ep_over
    if lr_over is not None:
        rec["lr"] = lr_over
    epochs, lr, wd, augment = rec["epochs"], rec["lr"], rec["weight_decay"], rec["augment"]
    seed = args.seed
    n_train = x_train.shape[0]
    steps_per_epoch = math.ceil(n_train / BATCH_SIZE)
    if args.limit_batches:
        steps_per_epoch = min(steps_per_epoch, args.limit_batches)

    per_batch, est_epoch = measure_epoch_time(name, n_train, BATCH_SIZE, seed)
    log("[%s] measured %.3f s/batch -> estimated %.1f s per full epoch (%d batches)"
        % (name, per_batch, est_epoch, math.ceil(n_train / BATCH_SIZE)))

    torch.manual_seed(seed)
    np.random.seed(seed)
    gen = torch.Generator().manual_seed(seed)  # data order + augmentation
    model = models_torch.build(name)
    nparams = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=MOMENTUM, nesterov=True,
                          weight_decay=wd)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch,
        pct_start=PCT_START, anneal_strategy="cos", div_factor=25.0,
        final_div_factor=1e4)
    log("[%s] %d params, %d epochs x %d steps, batch %d, OneCycle max_lr %g, wd %g, aug %s"
        % (name, nparams, epochs, steps_per_epoch, BATCH_SIZE, lr, wd,
           "yes" if augment else "no"))

    x_train_norm = None if augment else normalize(x_train)
    t_start = time.time()
    epoch_log = []
    print_every = max(1, steps_per_epoch // 10)
    for epoch in range(1, epochs + 1):
        model.train()
        t_ep = time.time()
        perm = torch.randperm(n_train, generator=gen)
        loss_sum = 0.0
        correct = seen = 0
        for step in range(steps_per_epoch):
            idx = perm[step * BATCH_SIZE:(step + 1) * BATCH_SIZE]
            if augment:
                xb = normalize(augment_batch(x_train[idx], gen))
            else:
                xb = x_train_norm[idx]
            yb = y_train[idx]
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step_lr = sched.get_last_lr()[0]
            if sched.last_epoch + 1 < sched.total_steps:
                sched.step()
            loss_sum += loss.item() * yb.shape[0]
            correct += (out.argmax(1) == yb).sum().item()
            seen += yb.shape[0]
            if (step + 1) % print_every == 0 or step + 1 == steps_per_epoch:
                el = time.time() - t_ep
                log("[%s] epoch %d/%d step %d/%d loss %.4f acc %.4f lr %.4g  "
                    "epoch %.0fs (eta %.0fs) total %.0fs"
                    % (name, epoch, epochs, step + 1, steps_per_epoch, loss_sum / seen,
                       correct / seen, step_lr, el,
                       el / (step + 1) * (steps_per_epoch - step - 1),
                       time.time() - t_start))
        ep_time = time.time() - t_ep
        ev = evaluate(model, x_test, y_test)
        log("[%s] epoch %d/%d done in %.1fs: train loss %.4f acc %.4f | test loss %.4f "
            "top1 %.4f top5 %.4f"
            % (name, epoch, epochs, ep_time, loss_sum / seen, correct / seen, ev["loss"],
               ev["top1"], ev["top5"]))
        epoch_log.append(dict(epoch=epoch, seconds=round(ep_time, 2),
                              train_loss=loss_sum / seen, train_acc=correct / seen,
                              test_loss=ev["loss"], test_top1=ev["top1"],
                              test_top5=ev["top5"]))
    train_seconds = time.time() - t_start

    # `ev` is the evaluation (eval mode) after the last epoch: the final model.
    mean = [models_torch.FASHION_MEAN]
    std = [models_torch.FASHION_STD]
    info = {
        "arch": name,
        "dataset": "fashion-mnist",
        "epochs": epochs,
        "lr": lr,
        "lr_schedule": "OneCycleLR(max_lr=%g, pct_start=%g, anneal=cos, div_factor=25, "
                       "final_div_factor=1e4), stepped per batch" % (lr, PCT_START),
        "optimizer": "SGD(momentum=%g, nesterov=True, weight_decay=%g)" % (MOMENTUM, wd),
        "momentum": MOMENTUM,
        "nesterov": True,
        "weight_decay": wd,
        "batch_size": BATCH_SIZE,
        "seed": seed,
        "augmentation": AUG_RESNET if augment else "none",
        "loss": "cross-entropy",
        "train_images": n_train,
        "steps_per_epoch": steps_per_epoch,
        "limit_batches": args.limit_batches,
        "train_seconds": round(train_seconds, 2),
        "seconds_per_epoch": [e["seconds"] for e in epoch_log],
        "estimated_seconds_per_epoch": round(est_epoch, 1),
        "num_threads": torch.get_num_threads(),
        "deterministic": args.deterministic_ok,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "num_params": nparams,
        "float_top1": ev["top1"],
        "float_top5": ev["top5"],
        "float_top1_count": ev["top1_count"],
        "float_top5_count": ev["top5_count"],
        "float_test_loss": ev["loss"],
        "test_images": ev["n"],
        "input_shape": list(models_torch.INPUT_SHAPE),
        "num_classes": models_torch.NUM_CLASSES,
        "mean": mean,
        "std": std,
        "normalization": "x = (byte/255 - mean) / std",
        "class_names": list(models_torch.CLASS_NAMES),
        "history": epoch_log,
    }
    os.makedirs(args.ckpt_dir, exist_ok=True)
    pt_path = os.path.join(args.ckpt_dir, name + ".pt")
    js_path = os.path.join(args.ckpt_dir, name + ".json")
    torch.save(model.state_dict(), pt_path + ".tmp")
    os.replace(pt_path + ".tmp", pt_path)
    with open(js_path + ".tmp", "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    os.replace(js_path + ".tmp", js_path)
    log("[%s] FINAL test top1 %.4f (%d/%d) top5 %.4f (%d/%d), train %.1fs -> %s"
        % (name, ev["top1"], ev["top1_count"], ev["n"], ev["top5"], ev["top5_count"],
           ev["n"], train_seconds, pt_path))
    return model, info


# --------------------------------------------------------------------------- export

def export_one(name, args, model=None, info=None):
    """Write <export-dir>/<name>_fashion.h5 via tools/export_torch.py (lazy import)."""
    import export_torch  # noqa: imported lazily so training works without it

    if info is None:
        with open(os.path.join(args.ckpt_dir, name + ".json")) as f:
            info = json.load(f)
    if model is None:
        model = models_torch.build(name)
        sd = torch.load(os.path.join(args.ckpt_dir, name + ".pt"), map_location="cpu")
        model.load_state_dict(sd)
    model.eval()
    recipe_keys = ("arch", "epochs", "lr", "lr_schedule", "optimizer", "batch_size", "seed",
                   "augmentation", "train_seconds", "torch_version", "float_top1",
                   "float_top5", "float_top1_count", "float_top5_count", "test_images")
    recipe = {k: info[k] for k in recipe_keys if k in info}
    os.makedirs(args.export_dir, exist_ok=True)
    path = os.path.join(args.export_dir, name + "_fashion.h5")
    export_torch.export_model(
        model, path,
        input_shape=tuple(info.get("input_shape", models_torch.INPUT_SHAPE)),
        mean=info.get("mean", [models_torch.FASHION_MEAN]),
        std=info.get("std", [models_torch.FASHION_STD]),
        num_classes=info.get("num_classes", models_torch.NUM_CLASSES),
        source="tools/train_fashion.py (PyTorch %s, Fashion-MNIST)" % info.get(
            "torch_version", torch.__version__),
        float_top1=info["float_top1"],
        float_top5=info["float_top5"],
        recipe=recipe,
        dataset="fashion-mnist",
    )
    log("[%s] exported -> %s" % (name, path))


# --------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(models_torch.MODEL_NAMES),
                   help="comma-separated list (default: %(default)s)")
    p.add_argument("--ckpt-dir", default="build/checkpoints")
    p.add_argument("--data-dir", default=DATA_DIR_DEFAULT)
    p.add_argument("--export-dir", default="data/models")
    p.add_argument("--seed", type=int, default=0)
    for n in models_torch.MODEL_NAMES:
        p.add_argument("--epochs-" + n, type=int, default=None,
                       help="epochs for %s (default %d)" % (n, RECIPES[n]["epochs"]))
        p.add_argument("--lr-" + n, type=float, default=None,
                       help="OneCycle max LR for %s (default %g)" % (n, RECIPES[n]["lr"]))
    p.add_argument("--limit-batches", type=int, default=0,
                   help="debug: cap the number of training batches per epoch")
    p.add_argument("--export", action="store_true",
                   help="export each trained model to <export-dir>/<name>_fashion.h5")
    p.add_argument("--export-only", action="store_true",
                   help="do not train; export from existing checkpoints")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in args.models:
        if m not in models_torch.MODEL_NAMES:
            p.error("unknown model %r" % m)
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(NUM_THREADS)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    try:
        torch.use_deterministic_algorithms(True)
        args.deterministic_ok = True
    except Exception:  # pragma: no cover - older/odd builds
        args.deterministic_ok = False

    if args.export_only:
        for name in args.models:
            export_one(name, args)
        return 0

    log("torch %s, %d threads, deterministic=%s, models %s"
        % (torch.__version__, torch.get_num_threads(), args.deterministic_ok,
           ",".join(args.models)))
    x_train, y_train = load_split(args.data_dir, "train")
    x_test, y_test = load_split(args.data_dir, "test")
    log("data: train %s test %s" % (tuple(x_train.shape), tuple(x_test.shape)))
    data = (x_train, y_train, x_test, y_test)
    summary = []
    for name in args.models:
        model, info = train_one(name, args, data)
        summary.append(info)
        if args.export:
            try:
                export_one(name, args, model, info)
            except Exception as e:  # keep training the remaining models
                log("[%s] export FAILED (%s: %s); the checkpoint is kept, retry with "
                    "--export-only" % (name, type(e).__name__, e))
    log("summary:")
    for info in summary:
        log("  %-9s epochs %2d  top1 %.4f  top5 %.4f  train %.0fs"
            % (info["arch"], info["epochs"], info["float_top1"], info["float_top5"],
               info["train_seconds"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
