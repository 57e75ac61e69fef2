#!/usr/bin/python3
"""The multiply-adds of the forward passes of a quantize with the reference's
options, and the least time they can take on the machine.

    ${PYTHON:-/usr/bin/python3} bench/pass_floor.py --arch NAME [-bs 256] [--fma-gflops G]

With the reference's options every Linear and Conv2d gets a fresh batch, and
both networks (the float one and the partly quantized one) run from the input to
the layer. Whatever the implementation, a pass must run every Conv2d and Linear
the layer's input depends on (its ancestors in the torch.fx graph of
tools/models_torch.py NAME). This counts their multiply-adds per image and
network, summed over the layers:

- direct: as a direct or im2col convolution does them;
- winograd: with each 3x3 stride-1 conv on the best of Winograd F(2x2, 3x3),
  F(4x4, 3x3) and F(6x6, 3x3), (t+2)^2 products per t x t output tile and
  channel pair, the tiles rounded up at the plane's edge, the transforms free.

With --fma-gflops (the cores' FMA peak in GFLOP/s, e.g. from
`build/bench/conv_kernels --fma-peak`), also the seconds the winograd count
takes for two networks on a batch of bs images at that peak: no implementation
of the passes with these convolution algorithms runs faster on the machine.

Prints one line `json {...}`.
"""

import argparse
import json
import math
import os
import sys

import torch
import torch.fx
import torch.nn as nn
from torch.fx.passes.shape_prop import ShapeProp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import models_torch  # noqa: E402

WINOGRAD_TILES = (2, 4, 6)


def layer_macs(mod, out_shape):
    """(direct, winograd) multiply-adds of one image through `mod`."""
    if isinstance(mod, nn.Linear):
        n = mod.in_features * mod.out_features
        return n, n
    kh, kw = mod.kernel_size
    c_in = mod.in_channels // mod.groups
    _, c_out, h, w = out_shape
    direct = c_out * h * w * c_in * kh * kw
    best = direct
    if (kh, kw) == (3, 3) and mod.stride == (1, 1) and mod.dilation == (1, 1):
        for t in WINOGRAD_TILES:
            tiles = math.ceil(h / t) * math.ceil(w / t)
            best = min(best, c_out * c_in * (t + 2) ** 2 * tiles)
    return direct, best


def count(arch):
    net = models_torch.build(arch).eval()
    gm = torch.fx.symbolic_trace(net)
    with torch.no_grad():
        ShapeProp(gm).propagate(torch.zeros(1, *models_torch.INPUT_SHAPE))
    macs, layers = {}, []
    for n in gm.graph.nodes:
        if n.op != "call_module":
            continue
        mod = net.get_submodule(n.target)
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            macs[n] = layer_macs(mod, tuple(n.meta["tensor_meta"].shape))
            layers.append(n)
    direct = winograd = 0
    for layer in layers:
        seen, todo = set(), list(layer.all_input_nodes)
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            todo.extend(n.all_input_nodes)
        for n in seen:
            if n in macs:
                direct += macs[n][0]
                winograd += macs[n][1]
    return len(layers), direct, winograd


def main(argv=None):
    p = argparse.ArgumentParser(prog="pass_floor.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", required=True, choices=models_torch.MODEL_NAMES)
    p.add_argument("-bs", "--batch-size", type=int, default=256)
    p.add_argument("--fma-gflops", type=float, help="the cores' FMA peak, GFLOP/s")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error("-bs must be at least 1")
    if args.fma_gflops is not None and not args.fma_gflops > 0:
        p.error("--fma-gflops must be > 0")
    layers, direct, winograd = count(args.arch)
    out = {"arch": args.arch, "layers": layers, "direct_macs": direct, "winograd_macs": winograd}
    if args.fma_gflops:
        # two networks, bs images, two flops per multiply-add
        out["floor_s"] = 2 * args.batch_size * winograd * 2 / (args.fma_gflops * 1e9)
    print("json " + json.dumps(out))


if __name__ == "__main__":
    main()
