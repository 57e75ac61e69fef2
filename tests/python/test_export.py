"""Tests of tools/export_torch.py and the committed fixtures in tests/fixtures/.

    /usr/bin/python3 -m pytest -q tests/python
"""

import glob
import json
import math
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
sys.path.insert(0, TOOLS)

import export_torch  # noqa: E402
from export_torch import ExportError, export_model, read_model, reference_forward  # noqa: E402

torch.set_num_threads(1)


def export(module, tmp_path, input_shape=(3, 8, 8), num_classes=None, **kw):
    """Export with defaults suitable for tests; returns the read-back model."""
    module.eval()
    if num_classes is None:
        with torch.no_grad():
            num_classes = module(torch.zeros((2,) + tuple(input_shape))).shape[1]
    path = str(tmp_path / "m.h5")
    kw.setdefault("mean", [0.0])
    kw.setdefault("std", [1.0])
    kw.setdefault("source", "test")
    export_model(module, path, input_shape=input_shape, num_classes=num_classes, **kw)
    return read_model(path)


def ops(model):
    return [d["op"] for d in model]


# ---------------------------------------------------------------------------
# Modules used below (also importable by the CLI tests via --module)


class TinyNet(nn.Module):
    def __init__(self, num_classes=5):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 4 * 4, num_classes)

    def forward(self, x):
        x = self.pool(F.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(x, 1))


class GeluNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.gelu = nn.GELU()
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.gelu(self.conv(x)), 1))


class SigmoidNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 3)

    def forward(self, x):
        return torch.sigmoid(self.fc(torch.flatten(x, 1)))


class LSTMNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 4, batch_first=True)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        seq = x.view(x.size(0), -1, 8)
        out, _ = self.lstm(seq)
        return self.fc(out[:, -1])


def make(fn, **mods):
    """A module class whose forward is fn (fx traces forward, not a lambda
    attribute, so build a fresh subclass)."""
    cls = type("M", (nn.Module,), {"forward": lambda self, x: fn(self, x)})

    def init(self):
        nn.Module.__init__(self)
        for k, v in mods.items():
            setattr(self, k, v)
    cls.__init__ = init
    return cls()


# ---------------------------------------------------------------------------
# Unsupported layers are refused with the node and the op named


def test_unsupported_module_gelu(tmp_path):
    with pytest.raises(ExportError) as e:
        export(GeluNet(), tmp_path, num_classes=3)
    msg = str(e.value)
    assert "unsupported op at node 'gelu'" in msg
    assert "torch.nn.GELU" in msg
    assert "supported ops are" in msg
    assert not os.path.exists(tmp_path / "m.h5")


def test_unsupported_function_sigmoid(tmp_path):
    with pytest.raises(ExportError, match=r"node 'sigmoid' \(torch\.sigmoid\)"):
        export(SigmoidNet(), tmp_path, num_classes=3)


def test_unsupported_lstm(tmp_path):
    with pytest.raises(ExportError, match=r"node 'lstm' \(torch\.nn\.LSTM\)"):
        export(LSTMNet(), tmp_path, num_classes=3)


def test_unsupported_method_and_functional(tmp_path):
    m = make(lambda s, x: torch.flatten(x.sigmoid(), 1))
    with pytest.raises(ExportError, match=r"Tensor\.sigmoid"):
        export(m, tmp_path, num_classes=192)
    m = make(lambda s, x: torch.flatten(F.gelu(x), 1))
    with pytest.raises(ExportError, match=r"node 'gelu' \(torch\.nn\.functional\.gelu\)"):
        export(m, tmp_path, num_classes=192)


@pytest.mark.parametrize("fn, mods, pattern", [
    (lambda s, x: torch.flatten(s.c(x), 1),
     {"c": nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")}, "padding_mode"),
    (lambda s, x: torch.flatten(s.c(x), 1),
     {"c": nn.Conv2d(3, 4, 4, padding="same")}, "asymmetrically"),
    (lambda s, x: torch.flatten(s.p(x)[0], 1),
     {"p": nn.MaxPool2d(2, return_indices=True)}, "return_indices"),
    (lambda s, x: torch.flatten(F.max_pool2d(x, 2, return_indices=True)[0], 1),
     {}, "return_indices"),
    (lambda s, x: torch.flatten(s.p(x), 1),
     {"p": nn.AvgPool2d(2, divisor_override=3)}, "divisor_override"),
    (lambda s, x: torch.flatten(F.avg_pool2d(x, 2, divisor_override=3), 1),
     {}, "divisor_override"),
    (lambda s, x: torch.flatten(torch.add(x, x, alpha=2), 1), {}, "alpha"),
    (lambda s, x: torch.flatten(x + 1.0, 1), {}, "two tensors"),
    (lambda s, x: torch.flatten(x + s.b, 1), {"b": nn.Parameter(torch.ones(3, 8, 8))},
     "parameter"),
    (lambda s, x: torch.flatten(x, 0).view(2, -1), {}, "flatten"),
    (lambda s, x: x.view(2, -1), {}, "reshape"),
    (lambda s, x: x.reshape(x.size(0), 3, -1).sum(1), {}, "reshape"),
    (lambda s, x: torch.flatten(x, 2).view(x.size(0), -1), {}, "flatten"),
    (lambda s, x: s.fc(x), {"fc": nn.Linear(8, 8)}, "2-D"),
    (lambda s, x: torch.flatten(s.bn(x), 1),
     {"bn": nn.BatchNorm2d(3, track_running_stats=False)}, "running statistics"),
    (lambda s, x: torch.flatten(x[:, :2], 1), {}, "indexing"),
    (lambda s, x: torch.flatten(F.dropout(x, 0.5, training=True), 1), {}, "training"),
])
def test_refused_variants(tmp_path, fn, mods, pattern):
    m = make(fn, **mods)
    with pytest.raises(ExportError, match=pattern):
        export(m, tmp_path, num_classes=128)


def test_num_classes_mismatch(tmp_path):
    with pytest.raises(ExportError, match="num_classes"):
        export(TinyNet(), tmp_path, num_classes=7)


def test_inplace_aliasing_detected(tmp_path):
    def fn(s, x):
        y = F.relu(x)
        z = y
        y += z          # in eager, y and z are the same tensor (2 * relu)
        return torch.flatten(torch.add(y, z), 1)   # eager: 4 * relu, fx graph: 3 * relu
    with pytest.raises(ExportError, match="does not reproduce"):
        export(make(fn), tmp_path, num_classes=192)


# ---------------------------------------------------------------------------
# Supported spellings


@pytest.mark.parametrize("fn, mods", [
    (lambda s, x: torch.flatten(x, 1), {}),
    (lambda s, x: torch.flatten(x, start_dim=1, end_dim=-1), {}),
    (lambda s, x: x.flatten(1), {}),
    (lambda s, x: s.f(x), {"f": nn.Flatten()}),
    (lambda s, x: x.view(x.size(0), -1), {}),
    (lambda s, x: x.view(x.shape[0], -1), {}),
    (lambda s, x: x.reshape(x.size()[0], -1), {}),
    (lambda s, x: torch.reshape(x, (-1, 192)), {}),
    (lambda s, x: x.view(-1, 192), {}),
    (lambda s, x: x.contiguous().view(x.size(0), 192), {}),
])
def test_flatten_spellings(tmp_path, fn, mods):
    assert ops(export(make(fn, **mods), tmp_path, num_classes=192)) == ["flatten"]


@pytest.mark.parametrize("fn", [
    lambda s, x: torch.flatten(F.relu(x), 1),
    lambda s, x: torch.flatten(torch.relu(x), 1),
    lambda s, x: torch.flatten(x.relu(), 1),
    lambda s, x: torch.flatten(torch.relu_(x), 1),
    lambda s, x: torch.flatten(F.relu(x, inplace=True), 1),
    lambda s, x: torch.flatten(s.r(x), 1),
])
def test_relu_spellings(tmp_path, fn):
    m = make(fn, r=nn.ReLU(inplace=True))
    assert ops(export(m, tmp_path, num_classes=192)) == ["relu", "flatten"]


def test_add_spellings_and_noops(tmp_path):
    def fn(s, x):
        a = s.c(x)
        b = a + x
        c = torch.add(b, a)
        c += x
        d = s.drop(s.ident(c))
        return torch.flatten(d, 1)
    m = make(fn, c=nn.Conv2d(3, 3, 3, padding=1), drop=nn.Dropout(), ident=nn.Identity())
    model = export(m, tmp_path, num_classes=192)
    assert ops(model) == ["conv2d", "add", "add", "add", "identity", "dropout", "flatten"]
    assert model[1]["inputs"] == ["c", "input"]
    model = export(m, tmp_path, num_classes=192, keep_noops=False)
    assert ops(model) == ["conv2d", "add", "add", "add", "flatten"]
    assert model[-1]["inputs"] == [model[3]["name"]]


def test_pool_attributes(tmp_path):
    def fn(s, x):
        x = s.mp(x)
        x = F.max_pool2d(x, (2, 3), stride=1, padding=(1, 1), dilation=(1, 2), ceil_mode=True)
        x = s.ap(x)
        x = F.avg_pool2d(x, 2, 1, 1, False, False)
        x = s.gap(x)
        return torch.flatten(x, 1)
    m = make(fn, mp=nn.MaxPool2d(3, 2, 1), ap=nn.AvgPool2d(3, stride=1, ceil_mode=True,
                                                              count_include_pad=False),
             gap=nn.AdaptiveAvgPool2d((None, 2)))
    model = export(m, tmp_path, input_shape=(3, 11, 13))
    a = [d["attrs"] for d in model]
    assert a[0] == {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1],
                    "dilation": [1, 1], "ceil_mode": 0}
    assert a[1] == {"kernel": [2, 3], "stride": [1, 1], "padding": [1, 1],
                    "dilation": [1, 2], "ceil_mode": 1}
    assert a[2] == {"kernel": [3, 3], "stride": [1, 1], "padding": [0, 0],
                    "ceil_mode": 1, "count_include_pad": 0}
    assert a[3] == {"kernel": [2, 2], "stride": [1, 1], "padding": [1, 1],
                    "ceil_mode": 0, "count_include_pad": 0}
    assert a[4]["output_size"][1] == 2 and a[4]["output_size"][0] > 0


def test_conv_same_and_subclass(tmp_path):
    class MyConv(nn.Conv2d):
        pass
    m = make(lambda s, x: torch.flatten(s.b(s.a(x)), 1),
             a=nn.Conv2d(3, 4, (3, 5), padding="same", dilation=(1, 2)),
             b=MyConv(4, 2, 1, padding="valid", bias=False))
    model = export(m, tmp_path)
    assert ops(model) == ["conv2d", "conv2d", "flatten"]
    assert model[0]["attrs"]["padding"] == [1, 4]
    assert model[1]["attrs"]["padding"] == [0, 0]
    assert "bias" not in model[1]["data"]


def test_dead_code_pruned_and_name_input(tmp_path):
    def fn(s, x):
        s.c(x)  # result unused: pruned
        return torch.flatten(F.relu(x), 1)
    model = export(make(fn, c=nn.Conv2d(3, 3, 1)), tmp_path, num_classes=192)
    assert ops(model) == ["relu", "flatten"]

    class Named(nn.Module):
        def __init__(self):
            super().__init__()
            self.input = nn.ReLU()

        def forward(self, x):
            return torch.flatten(self.input(x), 1)
    model = export(Named(), tmp_path, num_classes=192)
    assert model[0]["name"] != "input" and model[0]["inputs"] == ["input"]
    names = [d["name"] for d in model]
    assert len(set(names)) == len(names)


# ---------------------------------------------------------------------------
# torchvision ResNet-18 (ImageNet layout, 3x224x224)


def test_torchvision_resnet18(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    path = str(tmp_path / "r18.h5")
    info = export_model(net, path, input_shape=(3, 224, 224),
                        mean=export_torch.IMAGENET_MEAN, std=export_torch.IMAGENET_STD,
                        num_classes=1000, source="torchvision.models.resnet18")
    model = read_model(path)
    o = ops(model)
    # stem 4 + 8 blocks x 7 + 3 downsamples x 2 + avgpool, flatten, fc
    assert len(model) == info["nodes"] == 69
    assert o.count("conv2d") == 20 and o.count("batchnorm2d") == 20
    assert o.count("add") == 8 and o.count("relu") == 17
    assert o[:4] == ["conv2d", "batchnorm2d", "relu", "maxpool2d"]
    assert o[-3:] == ["adaptive_avgpool2d", "flatten", "linear"]
    assert model[0]["attrs"]["stride"] == [2, 2] and model[0]["attrs"]["padding"] == [3, 3]
    mp = model[3]["attrs"]
    assert mp["kernel"] == [3, 3] and mp["stride"] == [2, 2] and mp["padding"] == [1, 1]
    assert model[-3]["attrs"]["output_size"] == [1, 1]
    assert model[-1]["data"]["weight"].shape == (1000, 512)
    assert info["params"] == sum(p.numel() for p in net.parameters()) + \
        sum(b.numel() for n, b in net.named_buffers() if "running" in n)
    # every node reads only the input or earlier nodes
    seen = {"input"}
    for d in model:
        assert set(d["inputs"]) <= seen
        seen.add(d["name"])


# ---------------------------------------------------------------------------
# read_model round trip


def test_read_model_round_trip(tmp_path):
    torch.manual_seed(1)
    net = TinyNet()
    x = torch.randn(3, 3, 8, 8)
    recipe = {"epochs": 3, "lr": 0.1, "seed": 1}
    path = str(tmp_path / "tiny.h5")
    export_model(net, path, input_shape=[3, 8, 8], mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3],
                 num_classes=5, source="unit test", float_top1=0.9125, recipe=recipe,
                 dataset="cifar10", check_input=x)
    m = read_model(path)
    a = m.attrs
    assert a["gpfq_format"] == "gpfq-model" and a["format_version"] == 1
    assert a["input_shape"] == [3, 8, 8] and a["num_classes"] == 5
    assert np.allclose(a["mean"], [0.5, 0.4, 0.3]) and np.allclose(a["std"], [0.2, 0.25, 0.3])
    assert a["source"] == "unit test" and a["dataset"] == "cifar10"
    assert a["float_top1"] == 0.9125 and math.isnan(a["float_top5"])
    assert json.loads(a["recipe"]) == recipe
    assert ops(m) == ["conv2d", "batchnorm2d", "relu", "maxpool2d", "flatten", "linear"]
    assert [d["inputs"] for d in m] == [["input"], ["conv"], ["bn"], ["relu"], ["pool"],
                                        ["flatten"]]
    assert np.array_equal(m[0]["data"]["weight"], net.conv.weight.detach().numpy())
    assert np.array_equal(m[1]["data"]["running_var"], net.bn.running_var.numpy())
    assert m[1]["attrs"]["eps"] == 1e-5
    with torch.no_grad():
        want = net(x).numpy()
    assert np.array_equal(m.check_input, x.numpy())
    assert np.array_equal(m.check_output, want)
    assert np.allclose(reference_forward(m, m.check_input).numpy(), want, atol=1e-5)

    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"].dtype == np.int32
        assert f.attrs["input_shape"].dtype == np.int32
        assert f.attrs["mean"].dtype == np.float32
        assert f.attrs["float_top1"].dtype == np.float64
        assert int(f["nodes"].attrs["count"]) == 6
        for i in range(6):
            g = f["nodes/%04d" % i]
            for k in g.keys():
                assert g[k].dtype == np.float32
                assert g[k].chunks is None  # contiguous
        assert f["check/output"].shape == (3, 5)


def test_read_model_decodes_quantized_weights(tmp_path):
    path = str(tmp_path / "q.h5")
    export_model(TinyNet(), path, input_shape=(3, 8, 8), mean=0, std=1, num_classes=5,
                 source="t")
    codes = np.array([[0, 1, -2, 3]], dtype=np.int8)
    with h5py.File(path, "a") as f:
        g = f["nodes/0005"]
        del g["weight"]
        g.create_dataset("weight_codes", data=np.zeros((5, 64), np.int8))
        g["weight_codes"][0, :4] = codes[0]
        g.attrs["weight_step"] = 0.5
        g.attrs["weight_offset"] = 0.25
    m = read_model(path)
    assert m[5]["data"]["weight"][0, :4].tolist() == [0.0, 0.25, -0.75, 1.25]


# ---------------------------------------------------------------------------
# Committed fixtures: valid and consistent with their check data


FIXTURE_FILES = sorted(glob.glob(os.path.join(FIXTURES, "*.h5")))


def test_fixtures_present():
    names = {os.path.basename(p) for p in FIXTURE_FILES}
    assert {"model_lenet_small.h5", "model_resnet_small.h5", "op_linear.h5",
            "op_conv2d_3x3.h5", "op_add.h5"} <= names
    all_ops = set()
    for p in FIXTURE_FILES:
        all_ops.update(ops(read_model(p)))
    assert all_ops == set(export_torch.OPS)
    assert sum(os.path.getsize(p) for p in FIXTURE_FILES) < 2 * 1024 * 1024


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=os.path.basename)
def test_fixture(path):
    m = read_model(path)
    a = m.attrs
    assert a["gpfq_format"] == "gpfq-model" and a["format_version"] == 1
    assert m.check_input is not None and m.check_output is not None
    n = m.check_input.shape[0]
    assert m.check_input.shape == (n,) + tuple(a["input_shape"])
    assert m.check_output.shape == (n, a["num_classes"])
    names = [d["name"] for d in m]
    assert len(set(names)) == len(names) and "input" not in names
    y = reference_forward(m, m.check_input).numpy()
    assert y.shape == m.check_output.shape
    assert np.allclose(y, m.check_output, rtol=1e-5, atol=1e-5)


def test_make_fixtures_deterministic(tmp_path):
    import make_fixtures
    for name in ("op_conv2d_groups2", "model_resnet_small"):
        make_fixtures.make(name, str(tmp_path))
        with open(tmp_path / (name + ".h5"), "rb") as f1, \
                open(os.path.join(FIXTURES, name + ".h5"), "rb") as f2:
            assert f1.read() == f2.read(), name


# ---------------------------------------------------------------------------
# Command line


def run_cli(*args, cwd=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.abspath(__file__))
    return subprocess.run([sys.executable, os.path.join(TOOLS, "export_torch.py")] + list(args),
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def test_cli_module_and_error(tmp_path):
    out = str(tmp_path / "tiny.h5")
    r = run_cli("--module", "test_export:TinyNet", "--kwargs", '{"num_classes": 4}',
                "--input-shape", "3,8,8", "--num-classes", "4", "--mean", "0.5,0.5,0.5",
                "--std", "0.25", "--dataset", "cifar10", "--check", "2",
                "--recipe", '{"epochs": 1}', "--out", out)
    assert r.returncode == 0, r.stderr
    assert "6 nodes" in r.stdout and "params" in r.stdout
    m = read_model(out)
    assert m.attrs["num_classes"] == 4 and m.attrs["dataset"] == "cifar10"
    assert np.allclose(m.attrs["std"], [0.25] * 3)
    assert m.check_output.shape == (2, 4)

    bad = str(tmp_path / "bad.h5")
    r = run_cli("--module", "test_export:GeluNet", "--input-shape", "3,8,8",
                "--num-classes", "3", "--out", bad)
    assert r.returncode != 0
    assert "unsupported op at node 'gelu' (torch.nn.GELU)" in r.stderr
    assert not os.path.exists(bad)
