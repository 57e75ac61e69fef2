#!/usr/bin/python3
"""Write the model-file test fixtures in tests/fixtures/.

Every fixture is a small gpfq model file (docs/model-format.md) written by
tools/export_torch.py from a PyTorch module with random weights, with a /check
group holding a random input batch and the logits PyTorch computed for it.
Single-op fixtures end in a `flatten` node, so `num_classes` is the flattened
per-image size of the op's output.

    /usr/bin/python3 tools/make_fixtures.py [--out DIR] [--only NAME ...]

The output is deterministic: each fixture seeds torch from its own name.
"""

import argparse
import os
import sys
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_torch import export_model  # noqa: E402
from models_torch import LeNet5  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "tests", "fixtures")


# ---------------------------------------------------------------------------
# Modules


class Seq(nn.Module):
    """Layers applied in order, then flattened (so the output is N x K)."""

    def __init__(self, *layers, flatten=True):
        super().__init__()
        self.body = nn.Sequential(*layers)
        self.flatten = flatten

    def forward(self, x):
        x = self.body(x)
        if self.flatten:
            x = torch.flatten(x, 1)
        return x


class FlattenLinear(nn.Module):
    def __init__(self, fin, fout, bias=True):
        super().__init__()
        self.fc = nn.Linear(fin, fout, bias=bias)

    def forward(self, x):
        return self.fc(x.view(x.size(0), -1))


class Residual(nn.Module):
    """a = conv(x); b = relu(a + x); out = b + a (two adds, one reading the
    graph input)."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        a = self.conv(x)
        b = F.relu(a + x)
        out = b + a
        return torch.flatten(out, 1)


class AddSame(nn.Module):
    """input + input: an add whose two inputs are the same tensor."""

    def forward(self, x):
        y = x + x
        return y.reshape(y.shape[0], -1)


class NoOps(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.ident = nn.Identity()
        self.drop = nn.Dropout(0.5)
        self.drop2d = nn.Dropout2d(0.25)

    def forward(self, x):
        x = self.ident(self.conv(x))
        x = self.drop(x)
        x = self.drop2d(x)
        x = F.dropout(x, 0.3, training=self.training)
        return x.flatten(1)


class FunctionalPools(nn.Module):
    """Functional forms: F.relu, F.max_pool2d, F.avg_pool2d,
    F.adaptive_avg_pool2d."""

    def forward(self, x):
        x = F.relu(x)
        x = F.max_pool2d(x, 3, stride=1, padding=1)
        x = F.avg_pool2d(x, 2, ceil_mode=True)
        x = F.adaptive_avg_pool2d(x, (2, 3))
        return torch.flatten(x, 1)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNetSmall(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = BasicBlock(8, 8, 1)
        self.layer2 = BasicBlock(8, 16, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


def randomize_bn(module, var_scale=1.0):
    """Non-trivial BatchNorm: random gamma, beta, running mean and variance."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(c) * 0.5)
                m.running_var.copy_((torch.rand(c) * 1.5 + 0.25) * var_scale)
                if m.affine:
                    m.weight.copy_(torch.rand(c) * 1.5 + 0.25)
                    m.bias.copy_(torch.randn(c) * 0.3)
    return module


def bn(c, **kw):
    return nn.BatchNorm2d(c, **kw)


# ---------------------------------------------------------------------------
# Fixture table: name -> (builder, input_shape (C,H,W), batch, export options)
#
# Builders run after torch.manual_seed(crc32(name)), so each fixture is
# independent of the others.


def _conv(*a, **kw):
    return lambda: Seq(nn.Conv2d(*a, **kw))


FIXTURES = {
    # linear
    "op_linear": (lambda: FlattenLinear(24, 7), (1, 1, 24), 3, {}),
    "op_linear_nobias": (lambda: FlattenLinear(24, 7, bias=False), (1, 1, 24), 3, {}),
    "op_linear_4d": (lambda: FlattenLinear(48, 10), (3, 4, 4), 3, {}),
    # linear reading the 4-D graph input directly (flatten node elided)
    "op_linear_4d_direct": (lambda: FlattenLinear(48, 10), (3, 4, 4), 3,
                            {"elide_flatten": True}),
    # conv2d
    "op_conv2d_3x3": (_conv(3, 4, 3), (3, 8, 8), 2, {}),
    "op_conv2d_stride2": (_conv(3, 4, 3, stride=2), (3, 9, 9), 2, {}),
    "op_conv2d_pad1": (_conv(3, 4, 3, padding=1), (3, 6, 6), 2, {}),
    "op_conv2d_pad1x2": (_conv(3, 4, 3, padding=(1, 2)), (3, 6, 6), 2, {}),
    "op_conv2d_dilation2": (_conv(3, 4, 3, dilation=2, padding=1), (3, 9, 9), 2, {}),
    "op_conv2d_groups2": (_conv(4, 6, 3, groups=2, padding=1), (4, 6, 6), 2, {}),
    "op_conv2d_depthwise": (_conv(4, 4, 3, groups=4, padding=1), (4, 6, 6), 2, {}),
    "op_conv2d_depthwise_mult2": (_conv(3, 6, 3, groups=3), (3, 7, 7), 2, {}),
    "op_conv2d_1x1": (_conv(5, 3, 1), (5, 6, 6), 2, {}),
    "op_conv2d_1x1_stride2": (_conv(5, 3, 1, stride=2), (5, 7, 7), 2, {}),
    "op_conv2d_3x5": (_conv(3, 4, (3, 5)), (3, 7, 9), 2, {}),
    "op_conv2d_3x5_stride1x2": (_conv(3, 4, (3, 5), stride=(1, 2), padding=(0, 1)),
                                (3, 7, 10), 2, {}),
    "op_conv2d_nobias": (_conv(3, 4, 3, padding=1, bias=False), (3, 5, 5), 2, {}),
    "op_conv2d_k5s3p1": (_conv(3, 4, 5, stride=3, padding=1), (3, 11, 13), 2, {}),
    "op_conv2d_k7s2p3": (_conv(3, 4, 7, stride=2, padding=3), (3, 15, 15), 2, {}),
    "op_conv2d_same": (_conv(3, 4, 3, padding="same", dilation=2), (3, 7, 7), 2, {}),
    # batchnorm2d
    "op_batchnorm2d": (lambda: randomize_bn(Seq(bn(4))), (4, 5, 5), 3, {}),
    "op_batchnorm2d_eps1e-3": (lambda: randomize_bn(Seq(bn(4, eps=1e-3)), 1e-3),
                               (4, 5, 5), 3, {}),
    "op_batchnorm2d_noaffine_eps0.1": (lambda: randomize_bn(Seq(bn(4, eps=0.1, affine=False))),
                                       (4, 5, 5), 3, {}),
    # relu
    "op_relu": (lambda: Seq(nn.ReLU()), (3, 4, 5), 3, {}),
    # maxpool2d
    "op_maxpool2d_k2s2": (lambda: Seq(nn.MaxPool2d(2, 2)), (3, 8, 8), 2, {}),
    "op_maxpool2d_k3s2p1": (lambda: Seq(nn.MaxPool2d(3, 2, 1)), (3, 9, 9), 2, {}),
    "op_maxpool2d_ceil": (lambda: Seq(nn.MaxPool2d(3, 2, ceil_mode=True)), (3, 8, 8), 2, {}),
    "op_maxpool2d_ceil_pad1": (lambda: Seq(nn.MaxPool2d(3, 2, 1, ceil_mode=True)),
                               (3, 8, 8), 2, {}),
    "op_maxpool2d_dilation2": (lambda: Seq(nn.MaxPool2d(3, 1, dilation=2)), (3, 8, 8), 2, {}),
    "op_maxpool2d_k2x3s1x2": (lambda: Seq(nn.MaxPool2d((2, 3), (1, 2))), (3, 5, 9), 2, {}),
    # avgpool2d
    "op_avgpool2d_k2": (lambda: Seq(nn.AvgPool2d(2)), (3, 8, 8), 2, {}),
    "op_avgpool2d_k3s2p1_incpad": (lambda: Seq(nn.AvgPool2d(3, 2, 1, count_include_pad=True)),
                                   (3, 9, 9), 2, {}),
    "op_avgpool2d_k3s2p1_excpad": (lambda: Seq(nn.AvgPool2d(3, 2, 1, count_include_pad=False)),
                                   (3, 9, 9), 2, {}),
    "op_avgpool2d_ceil": (lambda: Seq(nn.AvgPool2d(3, 2, ceil_mode=True)), (3, 8, 8), 2, {}),
    "op_avgpool2d_ceil_pad1_incpad": (
        lambda: Seq(nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=True)),
        (3, 8, 8), 2, {}),
    "op_avgpool2d_ceil_pad1_excpad": (
        lambda: Seq(nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)),
        (3, 8, 8), 2, {}),
    # adaptive_avgpool2d
    "op_adaptive_avgpool2d_1x1": (lambda: Seq(nn.AdaptiveAvgPool2d(1)), (4, 5, 5), 2, {}),
    "op_adaptive_avgpool2d_2x2": (lambda: Seq(nn.AdaptiveAvgPool2d((2, 2))), (3, 5, 5), 2, {}),
    "op_adaptive_avgpool2d_3x3": (lambda: Seq(nn.AdaptiveAvgPool2d(3)), (3, 7, 7), 2, {}),
    "op_adaptive_avgpool2d_3xnone": (lambda: Seq(nn.AdaptiveAvgPool2d((3, None))),
                                     (3, 7, 5), 2, {}),
    "op_adaptive_avgpool2d_4x3_up": (lambda: Seq(nn.AdaptiveAvgPool2d((4, 3))),
                                     (2, 3, 2), 2, {}),
    # flatten
    "op_flatten": (lambda: Seq(nn.Flatten(), flatten=False), (2, 3, 4), 3, {}),
    # add
    "op_add": (lambda: Residual(3), (3, 5, 5), 2, {}),
    "op_add_same": (lambda: AddSame(), (2, 3, 3), 2, {}),
    # identity and dropout (kept as nodes)
    "op_identity_dropout": (lambda: NoOps(), (2, 5, 5), 2, {}),
    # functional forms of the ops
    "op_functional": (lambda: FunctionalPools(), (2, 6, 7), 2, {}),
    # every optional attribute that equals its default is left out
    "op_defaults": (lambda: randomize_bn(Seq(nn.Conv2d(3, 4, 3), bn(4), nn.ReLU(),
                                             nn.MaxPool2d(2), nn.AvgPool2d(2))),
                    (3, 10, 10), 2, {"write_defaults": False}),
    # whole models
    "model_lenet_small": (lambda: LeNet5(num_classes=10, widths=(4, 8, 32, 16)), (1, 28, 28), 4,
                          {}),
    "model_resnet_small": (lambda: randomize_bn(ResNetSmall()), (3, 16, 16), 4, {}),
}


def make(name, out_dir):
    build, shape, batch, opts = FIXTURES[name]
    seed = zlib.crc32(name.encode("utf-8"))
    torch.manual_seed(seed)
    module = build()
    check = torch.randn((batch,) + tuple(shape))
    if name.startswith("model_"):
        # Whole models see inputs shaped like normalized images.
        check = check.clamp(-2.5, 2.5)
    with torch.no_grad():
        num_classes = module.eval()(check.clone()).shape[1]
    c = shape[0]
    mean = [round(0.1 * (i + 1), 3) for i in range(c)]
    std = [round(0.2 + 0.05 * i, 3) for i in range(c)]
    path = os.path.join(out_dir, name + ".h5")
    info = export_model(module, path, input_shape=shape, mean=mean, std=std,
                        num_classes=num_classes,
                        source="tools/make_fixtures.py:%s" % name,
                        recipe={"generator": "tools/make_fixtures.py", "seed": seed},
                        check_input=check, **opts)
    return info


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=DEFAULT_OUT, help="output directory (tests/fixtures)")
    p.add_argument("--only", nargs="+", choices=sorted(FIXTURES), help="write only these")
    p.add_argument("--list", action="store_true", help="list fixture names and exit")
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(FIXTURES))
        return 0
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    total = 0
    for name in args.only or FIXTURES:
        info = make(name, args.out)
        total += info["bytes"]
        print("%-34s %-60s %7d bytes" % (name + ".h5", " ".join(info["ops"])[:60],
                                          info["bytes"]))
    print("%d files, %d bytes" % (len(args.only or FIXTURES), total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
