"""bench/pass_floor.py: the multiply-adds of the --reference forward passes,
checked against counts done by hand and against the peer's own passes.

    /usr/bin/python3 -m pytest -q tests/python/test_pass_floor.py
"""

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "bench")
sys.path.insert(0, BENCH)
import pass_floor  # noqa: E402
import torch_gpfq  # noqa: E402


def run(*args):
    p = subprocess.run([sys.executable, os.path.join(BENCH, "pass_floor.py"), *args],
                       capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def json_of(stdout):
    line = [x for x in stdout.splitlines() if x.startswith("json ")]
    assert len(line) == 1, stdout
    return json.loads(line[0][5:])


def test_mlp_by_hand():
    # fc2's input: fc1; fc3's: fc1 and fc2
    layers, direct, winograd = pass_floor.count("mlp")
    assert layers == 3
    assert direct == winograd == 784 * 500 + (784 * 500 + 500 * 300)


def test_lenet5_by_hand():
    conv1 = 6 * 28 * 28 * 1 * 25  # pad 2 keeps 28x28
    conv2 = 16 * 10 * 10 * 6 * 25
    fc1, fc2 = 400 * 120, 120 * 84
    layers, direct, winograd = pass_floor.count("lenet5")
    assert layers == 5
    # 5x5 kernels: no Winograd tile applies
    assert direct == winograd == 4 * conv1 + 3 * conv2 + 2 * fc1 + fc2


def test_winograd_tile_choice():
    conv = nn.Conv2d(16, 16, 3, padding=1)
    direct, best = pass_floor.layer_macs(conv, (1, 16, 28, 28))
    assert direct == 16 * 16 * 9 * 28 * 28
    # F(2x2): 16 x 14^2 tiles, F(4x4): 36 x 7^2, F(6x6): 64 x 5^2 (the last tile cut)
    assert best == 16 * 16 * min(16 * 196, 36 * 49, 64 * 25)
    # 7x7 planes: F(4x4) rounds up to 2x2 tiles, F(6x6) too; F(4x4) wins
    direct, best = pass_floor.layer_macs(nn.Conv2d(64, 64, 3, padding=1), (1, 64, 7, 7))
    assert best == 64 * 64 * min(16 * 16, 36 * 4, 64 * 4)
    # stride 2 and 1x1 convs stay direct
    s2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
    assert pass_floor.layer_macs(s2, (1, 32, 14, 14)) == (32 * 196 * 16 * 9,) * 2
    k1 = nn.Conv2d(16, 32, 1, stride=2)
    assert pass_floor.layer_macs(k1, (1, 32, 14, 14)) == (32 * 196 * 16,) * 2


def test_resnet20_at_most_the_peers_passes():
    """The ancestors are a subset of what the peer's pass runs before its pre-hook stops it:
    the shortcut's pass skips its block's two convs. Counted here by the peer's own pass."""
    import models_torch

    net = models_torch.build("resnet20").eval()
    ran = []

    def hook(mod, inputs, output):
        if isinstance(mod, nn.Conv2d):
            ran.append(output.shape[1] * output.shape[2] * output.shape[3] * mod.in_channels
                       * mod.kernel_size[0] * mod.kernel_size[1] // mod.groups)
        elif isinstance(mod, nn.Linear):
            ran.append(mod.in_features * mod.out_features)

    hooks = [m.register_forward_hook(hook) for m in net.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    peer = 0
    with torch.no_grad():
        for _, mod in torch_gpfq.quantizable(net):
            ran.clear()
            torch_gpfq.layer_input(net, mod, torch.zeros(1, 1, 28, 28))
            peer += sum(ran)
    for h in hooks:
        h.remove()
    layers, direct, winograd = pass_floor.count("resnet20")
    assert layers == 22
    # two shortcuts, each skipping its block's two 3x3 convs (the first of stride 2)
    skipped = (16 * 32 + 32 * 32) * 9 * 14 * 14 + (32 * 64 + 64 * 64) * 9 * 7 * 7
    assert direct == peer - skipped
    assert winograd < direct / 3


def test_floor_seconds():
    code, out, err = run("--arch", "mlp", "-bs", "100", "--fma-gflops", "50")
    assert code == 0, err
    j = json_of(out)
    # two networks, 100 images, two flops per multiply-add
    assert j["floor_s"] == pytest.approx(2 * 100 * j["winograd_macs"] * 2 / 50e9, rel=1e-12)
    code, out, err = run("--arch", "lenet5")
    assert code == 0 and "floor_s" not in json_of(out)


@pytest.mark.parametrize("args,what", [
    (["--arch", "mlp", "-bs", "0"], "-bs must be at least 1"),
    (["--arch", "mlp", "--fma-gflops", "0"], "--fma-gflops must be > 0"),
    (["--arch", "vgg"], "invalid choice"),
])
def test_bad_arguments(args, what):
    code, out, err = run(*args)
    assert code == 2 and what in err and out == ""
